"""What a manifest says, as plain data: provider instances, secrets, outputs, env.

Built by initfetch.manifest.load (which checks everything); read by every later
stage. No I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from initfetch.errors import Loc, Problem
from initfetch.limits import Limits
from initfetch.manifest.watch import WatchConfig
from initfetch.reference import Reference

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENV_NAME_RE = NAME_RE
DEFAULT_MODE = 0o400
MODE_TEXT_RE = re.compile(r"^(0o?)?[0-7]{1,4}$")

TOP_KEYS = {
    "version",
    "providers",
    "secrets",
    "templates",
    "files",
    "env",
    "env_from",
    "limits",
    "on_change",
    "mask_output",
}
SECRET_KEYS = {"ref", "optional", "default", "refresh", "write", "revoke_replaced"}
PROVIDER_KEYS = {"type", "keep_credentials", "refresh"}  # the rest are the provider's own options
OUTPUT_KEYS = {"dest", "mode", "owner", "group"}
TEMPLATE_KEYS = OUTPUT_KEYS | {"src"}
FILE_KEYS = OUTPUT_KEYS | {"secret", "format", "password"}
ENV_FROM_KEYS = {"secret", "prefix"}
FILE_FORMATS = ("fullchain", "pem_bundle", "pkcs12")  # files: format (an issued certificate)


@dataclass
class ProviderConfig:
    name: str
    type: str
    options: dict[str, Any]
    keep_credentials: bool = False
    loc: Loc | None = None


@dataclass
class SecretSpec:
    name: str
    ref: Reference | None  # None only when offline checks could not expand a variable
    ref_text: str
    optional: bool = False
    default: str | None = None
    loc: Loc | None = None


@dataclass
class Output:
    """One file in OUT_DIR: from a template (`src`) or a secret's raw value (`secret`)."""

    dest: str
    mode: int = DEFAULT_MODE
    owner: int | str | None = None
    group: int | str | None = None
    src: Path | None = None
    template_name: str | None = None  # loader name, relative to the manifest directory
    secret: str | None = None
    format: str | None = None  # files: the secret's value written as fullchain, pem_bundle or pkcs12
    password: str | None = None  # format pkcs12: the secret holding the keystore's password
    loc: Loc | None = None


@dataclass
class EnvFrom:
    secret: str
    prefix: str = ""
    loc: Loc | None = None


@dataclass
class Manifest:
    path: Path | None
    base_dir: Path
    providers: dict[str, ProviderConfig] = field(default_factory=dict)
    secrets: dict[str, SecretSpec] = field(default_factory=dict)
    outputs: list[Output] = field(default_factory=list)
    env: dict[str, tuple[str, Loc | None]] = field(default_factory=dict)
    env_from: list[EnvFrom] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    watch: WatchConfig = field(default_factory=WatchConfig)
    mask_output: bool = False  # exec: the application's output passes through initfetch, values masked


def default_manifest_path(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("INITFETCH_MANIFEST") or "initfetch.yaml")


def env_var_names(mapping: Mapping[str, Any], prefix: str) -> dict[str, str]:
    """Map document keys to environment names: `db/password` -> `PREFIX_DB_PASSWORD`.

    Upper-cased; `/`, `-`, `.` and spaces become `_`; leading `/` dropped.
    Raises ValueError naming the key that cannot become a variable name.
    """
    out: dict[str, str] = {}
    for key in mapping:
        name = prefix + re.sub(r"[/\-. ]", "_", str(key).strip("/")).upper()
        if not ENV_NAME_RE.match(name):
            raise ValueError(f"key '{key}' does not map to a valid variable name ({name!r})")
        if name in out.values():
            raise ValueError(f"two keys map to the variable name {name}")
        out[str(key)] = name
    return out
