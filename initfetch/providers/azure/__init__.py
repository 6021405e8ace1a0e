"""Azure Key Vault: the provider (keyvault.py) and the credential it logs in with
(credentials.py)."""
