"""The expert's script: the same SDK calls as sequential.py, 32 at once on a thread pool.

One client per cloud, shared by the threads (hvac over one requests session, a
boto3 client, a SecretClient: each is safe to share), every secret read by its
own call in a ThreadPoolExecutor of 32 workers, then one file written in order.
Each SDK is imported only when the workload has secrets of that cloud.

    python bench/expert.py SPEC.json OUT_FILE      (SPEC: see sequential.py)
"""

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

WORKERS = 32

with open(sys.argv[1]) as f:
    spec = json.load(f)
jobs = []  # (callable, formatter) in output order

if spec.get("vault"):
    import hvac
    from requests.adapters import HTTPAdapter

    client = hvac.Client(url=os.environ["VAULT_ADDR"], token=os.environ["VAULT_TOKEN"])
    client.session.mount("http://", HTTPAdapter(pool_maxsize=WORKERS))  # one connection per worker
    client.session.mount("https://", HTTPAdapter(pool_maxsize=WORKERS))

    def vault_read(path, keys):
        data = client.secrets.kv.v2.read_secret_version(
            path=path, mount_point="secret", raise_on_deleted_version=True
        )["data"]["data"]
        return "".join(f"{out}={data[key]}\n" for out, key in keys)

    jobs += [(vault_read, (path, keys)) for path, keys in spec["vault"]]

if spec.get("awssm"):
    import boto3
    from botocore.config import Config

    sm = boto3.client("secretsmanager", config=Config(max_pool_connections=WORKERS))

    def aws_read(name, keys):
        value = json.loads(sm.get_secret_value(SecretId=name)["SecretString"])
        return "".join(f"{out}={value[key]}\n" for out, key in keys)

    jobs += [(aws_read, (name, keys)) for name, keys in spec["awssm"]]

if spec.get("azkv"):
    from azure.identity import ManagedIdentityCredential
    from azure.keyvault.secrets import SecretClient

    az = spec["azkv"]
    kv = SecretClient(az["vault_url"], ManagedIdentityCredential(), connection_verify=az["ca_file"])

    def az_read(name, out):
        return f"{out}={kv.get_secret(name).value}\n"

    jobs += [(az_read, (name, out)) for name, out in az["secrets"]]

with ThreadPoolExecutor(WORKERS) as pool:
    parts = list(pool.map(lambda job: job[0](*job[1]), jobs))

with open(sys.argv[2], "w") as f:
    f.write("".join(parts))
