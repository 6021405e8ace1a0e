"""The baseline: the sequential per-secret SDK script of the classic guides.

One client per cloud, then one SDK call per secret in a loop (hvac
`read_secret_version`, boto3 `get_secret_value`, `SecretClient.get_secret`),
then one file written. Each SDK is imported only when the workload has secrets
of that cloud, as a hand-written script would.

    python bench/sequential.py SPEC.json OUT_FILE

SPEC: {"vault": [[path, [[out, key], ...]], ...],
       "awssm": [[name, [[out, key], ...]], ...],
       "azkv": {"vault_url": ..., "ca_file": ..., "secrets": [[name, out], ...]}}
Connection settings come from the standard environment variables (VAULT_ADDR,
VAULT_TOKEN, AWS_ENDPOINT_URL..., IDENTITY_ENDPOINT/IDENTITY_HEADER).
"""

import json
import os
import sys

with open(sys.argv[1]) as f:
    spec = json.load(f)
lines = []

if spec.get("vault"):
    import hvac

    client = hvac.Client(url=os.environ["VAULT_ADDR"], token=os.environ["VAULT_TOKEN"])
    for path, keys in spec["vault"]:
        data = client.secrets.kv.v2.read_secret_version(
            path=path, mount_point="secret", raise_on_deleted_version=True
        )["data"]["data"]
        for out, key in keys:
            lines.append(f"{out}={data[key]}\n")

if spec.get("awssm"):
    import boto3

    sm = boto3.client("secretsmanager")
    for name, keys in spec["awssm"]:
        value = json.loads(sm.get_secret_value(SecretId=name)["SecretString"])
        for out, key in keys:
            lines.append(f"{out}={value[key]}\n")

if spec.get("azkv"):
    from azure.identity import ManagedIdentityCredential
    from azure.keyvault.secrets import SecretClient

    az = spec["azkv"]
    kv = SecretClient(az["vault_url"], ManagedIdentityCredential(), connection_verify=az["ca_file"])
    for name, out in az["secrets"]:
        lines.append(f"{out}={kv.get_secret(name).value}\n")

with open(sys.argv[2], "w") as f:
    f.write("".join(lines))
