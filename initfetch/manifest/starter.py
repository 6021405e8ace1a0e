"""`initfetch init`: a commented starter manifest and template that work at once.

The starter resolves only an environment variable with a default, so
`check`, `preview --offline` and `render -o /dev/shm/...` run on any machine;
the commented lines show each backend's reference form. Existing files are
never overwritten.
"""

from __future__ import annotations

import os
from pathlib import Path

from initfetch.errors import BadInput, Problem

MANIFEST = """\
# initfetch.yaml: what to fetch, from where, and what to write. Written by `initfetch init`.
# Reference: SCHEME://PATH[?QUERY][#KEY]; the README lists every scheme and option.
version: 1

# providers:                       # optional: the built-in schemes below need no configuration
#   vault:
#     type: vault
#     address: https://vault.example.com:8200         # default: $VAULT_ADDR (or $BAO_ADDR)
#     auth: {method: approle, role_id_file: /run/secrets/role_id, secret_id_file: /run/secrets/secret_id}

secrets:
  # An environment variable, with a default for local runs: works anywhere as it is.
  api_token: {ref: "env://API_TOKEN", default: "dev-token"}
  # db_password: vault://secret/myapp/db#password     # Vault / OpenBao KV (v1 or v2)
  # db_user: vault://database/creds/app#username      # a dynamic credential (one lease per document)
  # api_key: awssm://myapp/api#key                    # AWS Secrets Manager, one key of a JSON secret
  # signing_key: ssm:///myapp/prod/signing_key        # AWS SSM Parameter Store
  # stripe_key: azkv://payments/stripe-key            # Azure Key Vault
  # tls_cert: file:///run/secrets/tls.crt             # a file (Compose/Swarm/Kubernetes secrets)

templates:
  - src: templates/config.json.j2  # relative to this manifest
    dest: config.json              # relative to the output directory (-o), never outside it
    mode: "0400"

# files:                           # a secret's value as a file of its own
#   - {secret: tls_cert, dest: tls.crt, mode: "0440"}

env:                               # what `initfetch exec -- CMD` puts in CMD's environment
  API_TOKEN: "{{ secrets.api_token }}"
"""

TEMPLATE = """\
{# A Jinja template; secrets.NAME is each secret's value. tojson quotes it safely. -#}
{"api_token": {{ secrets.api_token | tojson }}}
"""

FILES = {"initfetch.yaml": MANIFEST, "templates/config.json.j2": TEMPLATE}


def write_starter(directory: Path) -> list[Path]:
    """Write the starter files under `directory`; raise BadInput (nothing written) if any exists."""
    targets = [directory / name for name in FILES]
    existing = [p for p in targets if os.path.lexists(p)]
    if existing:
        raise BadInput(
            [Problem(str(p), "already exists; initfetch init never overwrites a file") for p in existing]
        )
    for path, text in zip(targets, FILES.values(), strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "x", encoding="utf-8") as f:  # "x": a file that appeared meanwhile is kept
            f.write(text)
    return targets
