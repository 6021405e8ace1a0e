"""Vault / OpenBao: the provider (provider.py), its login methods (auth.py), the HTTP
layer under hvac (http.py, transport.py) and lease and token calls (leases.py)."""
