"""The benchmark's workloads and what each contender needs to run them.

A workload is a list of secret documents (`Item`), each feeding one or more
lines `NAME=VALUE` of ONE output file. Every contender must write exactly the
expected text; the bench checks it after every run.

- `vault_workload(n)`: the issue's measurement: n KV v2 secrets of two keys
  (username, password) each, one template, one file.
- `mixed_workload(n)`: n secrets, a third each on Vault (KV v2, two keys),
  AWS Secrets Manager (JSON, two keys) and Azure Key Vault (plain value).
- `large_workload(count, size)`: `count` KV v2 secrets whose one key is a
  certificate bundle of `size` bytes.

For each: an initfetch manifest + template, an OpenBao Agent config + template
(Vault-only workloads), and a spec for bench/sequential.py.
"""

from __future__ import annotations

import base64
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KV_VAULT_NAME = "main"  # azkv references use kv://main/NAME; the instance maps every name to one URL


@dataclass
class Item:
    backend: str  # "vault" | "awssm" | "azkv"
    path: str  # vault: path under the `secret/` mount; awssm: secret name; azkv: secret name
    value: Any  # dict for vault/awssm, str for azkv
    keys: list[tuple[str, str | None]]  # (output name, key of the document or None for the whole value)


@dataclass
class Workload:
    name: str
    items: list[Item]

    @property
    def n(self) -> int:
        return len(self.items)

    def backends(self) -> set[str]:
        return {i.backend for i in self.items}

    def expected(self) -> str:
        out = []
        for item in self.items:
            for name, key in item.keys:
                out.append(f"{name}={item.value if key is None else item.value[key]}\n")
        return "".join(out)


def _password(rng: random.Random, n: int = 24) -> str:
    return "".join(rng.choice("abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(n))


def vault_workload(n: int, seed: int = 1) -> Workload:
    rng = random.Random(seed)
    items = [
        Item(
            "vault",
            f"bench/s{i}",
            {"username": f"user{i}", "password": _password(rng)},
            [(f"s{i}_username", "username"), (f"s{i}_password", "password")],
        )
        for i in range(n)
    ]
    return Workload(f"vault-{n}", items)


def mixed_workload(n: int, seed: int = 2) -> Workload:
    rng = random.Random(seed)
    third = n // 3
    items = []
    for i in range(third):
        items.append(
            Item(
                "vault",
                f"bench/mix{n}/v{i}",
                {"username": f"vuser{i}", "password": _password(rng)},
                [(f"v{i}_username", "username"), (f"v{i}_password", "password")],
            )
        )
    for i in range(third):
        items.append(
            Item(
                "awssm",
                f"bench/mix{n}/a{i}",
                {"username": f"auser{i}", "password": _password(rng)},
                [(f"a{i}_username", "username"), (f"a{i}_password", "password")],
            )
        )
    for i in range(n - 2 * third):
        items.append(Item("azkv", f"mix{n}-z{i}", _password(rng, 32), [(f"z{i}", None)]))
    return Workload(f"mixed-{n}", items)


def certificate_bundle(rng: random.Random, size: int) -> str:
    """PEM-looking text of exactly `size` bytes: several CERTIFICATE blocks."""
    blocks = []
    total = 0
    while total < size:
        body = base64.b64encode(rng.randbytes(1200)).decode()
        lines = [body[i : i + 64] for i in range(0, len(body), 64)]
        block = "-----BEGIN CERTIFICATE-----\n" + "\n".join(lines) + "\n-----END CERTIFICATE-----\n"
        blocks.append(block)
        total += len(block)
    text = "".join(blocks)
    return text[: size - 1] + "\n" if len(text) >= size else text


def large_workload(count: int = 40, size: int = 32 * 1024, seed: int = 3) -> Workload:
    rng = random.Random(seed)
    items = [
        Item("vault", f"bench/cert{i}", {"bundle": certificate_bundle(rng, size)}, [(f"cert{i}", "bundle")])
        for i in range(count)
    ]
    return Workload(f"large-{count}x{size // 1024}k", items)


# --- initfetch -----------------------------------------------------------------------------


def initfetch_files(w: Workload, directory: Path, kv: dict[str, str] | None) -> Path:
    """Write manifest + template for initfetch into `directory`; returns the manifest path.

    The output is OUT_DIR/out.txt. `kv` ({"vault_url", "ca_file"}) configures the
    azure-keyvault instance when the workload has Azure secrets.
    """
    directory.mkdir(parents=True, exist_ok=True)
    secrets: dict[str, str] = {}
    template = []
    for item in w.items:
        for name, key in item.keys:
            if item.backend == "vault":
                ref = f"vault://secret/{item.path}#{key}"
            elif item.backend == "awssm":
                ref = f"awssm://{item.path}#{key}"
            else:
                ref = f"kv://{KV_VAULT_NAME}/{item.path}"
            secrets[name] = ref
            template.append(f"{name}={{{{ secrets.{name} }}}}\n")
    doc: dict[str, Any] = {"version": 1}
    if "azkv" in w.backends():
        assert kv is not None
        doc["providers"] = {
            "kv": {
                "type": "azure-keyvault",
                "vault_url": kv["vault_url"],
                "ca_file": kv["ca_file"],
                "auth": {"method": "managed_identity"},
            }
        }
    doc["secrets"] = secrets
    doc["templates"] = [{"src": "out.txt.j2", "dest": "out.txt"}]
    (directory / "out.txt.j2").write_text("".join(template))
    manifest = directory / "initfetch.yaml"
    manifest.write_text(json.dumps(doc, indent=1))  # JSON is YAML
    return manifest


# --- OpenBao Agent ---------------------------------------------------------------------------


def agent_files(w: Workload, directory: Path, vault_addr: str, token_file: Path, dest: Path) -> Path:
    """Write an Agent config (token_file auto-auth, exit_after_auth, one template) and its template."""
    if w.backends() != {"vault"}:
        raise ValueError("the agent runs Vault-only workloads")
    directory.mkdir(parents=True, exist_ok=True)
    parts = []
    for item in w.items:
        inner = "".join(f"{name}={{{{ .Data.data.{key} }}}}\n" for name, key in item.keys)
        parts.append(f'{{{{ with secret "secret/data/{item.path}" }}}}{inner}{{{{ end }}}}')
    template = directory / "out.txt.ctmpl"
    template.write_text("".join(parts))
    config = directory / "agent.hcl"
    config.write_text(
        f"""exit_after_auth = true
vault {{
  address = "{vault_addr}"
}}
auto_auth {{
  method "token_file" {{
    config {{
      token_file_path = "{token_file}"
    }}
  }}
}}
template {{
  source      = "{template}"
  destination = "{dest}"
}}
"""
    )
    return config


# --- the sequential script -------------------------------------------------------------------


def sequential_spec(w: Workload, path: Path, kv: dict[str, str] | None) -> Path:
    spec: dict[str, Any] = {"vault": [], "awssm": [], "azkv": None}
    az = []
    for item in w.items:
        if item.backend == "azkv":
            az.append([item.path, item.keys[0][0]])
        else:
            spec[item.backend].append([item.path, [[n, k] for n, k in item.keys]])
    if az:
        assert kv is not None
        spec["azkv"] = {"vault_url": kv["vault_url"], "ca_file": kv["ca_file"], "secrets": az}
    path.write_text(json.dumps(spec))
    return path
