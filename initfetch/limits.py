"""Limits on every input: each has a default, a setting to raise it, and a one-line error.

Two kinds:
- limits of the run, set in the manifest's `limits:` section (or its
  INITFETCH_LIMIT_* twin, which wins): the size of one secret document and of
  the whole rendered output. Rendering time has no limit of its own: it runs
  inside the overall `--timeout`.
- limits of parsing the manifest itself, which the manifest cannot raise (it is
  not read yet): its size, YAML aliases, nesting depth and number of values
  (aliases expanded), set only through their INITFETCH_LIMIT_* variables.

Sizes are bytes, written as an integer or with a unit: `512KiB`, `1MiB`, `2MB`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

# Threads for the whole run (`--concurrency`): enough that 300 reads at 20 ms take a
# handful of round trips. Each instance has its own ceiling on top (`concurrency:`).
# Here, not in the resolver, so that the command line is built without importing it.
DEFAULT_CONCURRENCY = 64

KIB = 1024
MIB = 1024 * KIB

_SIZE_RE = re.compile(r"^\s*(\d+)\s*(B|KB|KiB|MB|MiB|GB|GiB)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": KIB, "mb": 1000**2, "mib": MIB, "gb": 1000**3, "gib": 1024**3}

# name -> (what it bounds, whether the manifest's `limits:` may set it)
DESCRIPTIONS: dict[str, tuple[str, bool]] = {
    "secret_size": ("the size of one secret document", True),
    "output_size": ("the total size of the rendered files and environment", True),
    "manifest_size": ("the size of the manifest file", False),
    "yaml_aliases": ("the number of YAML aliases in the manifest", False),
    "yaml_depth": ("the nesting depth of the manifest", False),
    "yaml_nodes": ("the number of values in the manifest, aliases expanded", False),
}


@dataclass(frozen=True)
class Limits:
    secret_size: int = 1 * MIB
    output_size: int = 16 * MIB
    manifest_size: int = 1 * MIB
    yaml_aliases: int = 100
    yaml_depth: int = 64
    # Bounds what an alias bomb expands to (and a huge flat manifest): a real one has a few hundred.
    yaml_nodes: int = 100_000

    def with_env(self, environ: Mapping[str, str]) -> Limits:
        """These limits, overridden by INITFETCH_LIMIT_<NAME> variables.

        Raises ValueError whose message starts with the variable's name.
        """
        changes: dict[str, int] = {}
        for f in fields(self):
            raw = environ.get(env_name(f.name))
            if raw is not None and raw.strip() != "":
                try:
                    changes[f.name] = parse_value(f.name, raw)
                except ValueError as e:
                    raise ValueError(f"{env_name(f.name)} {e}") from None
        return replace(self, **changes) if changes else self


def env_name(name: str) -> str:
    return f"INITFETCH_LIMIT_{name.upper()}"


def parse_size(value: Any) -> int:
    """Bytes from an int or a string like "1MiB". Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError('must be a size such as 1048576 or "1MiB"')
    if isinstance(value, int):
        if value <= 0:
            raise ValueError("must be positive")
        return value
    if isinstance(value, str):
        m = _SIZE_RE.match(value)
        if m:
            # .get: a non-ASCII letter may match a case-insensitive letter
            # (dotless i, U+0131, lowers to itself) and lower() to no known unit
            n = int(m.group(1)) * _UNITS.get((m.group(2) or "").lower(), 0)
            if n > 0:
                return n
    raise ValueError('must be a positive size such as 1048576 or "1MiB"')


def parse_value(name: str, value: Any) -> int:
    """A limit's value: sizes for *_size, positive integers for the others. Raises ValueError."""
    if name.endswith("_size"):
        return parse_size(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError("must be a positive integer")
    return value


def exceeded(name: str, limit: int) -> str:
    """The one-line message for a limit that was hit: which limit, its value, how to raise it."""
    what, in_manifest = DESCRIPTIONS[name]
    shown = human_size(limit) if name.endswith("_size") else str(limit)
    how = f"limits: {{{name}: ...}} in the manifest or {env_name(name)}" if in_manifest else env_name(name)
    return f"{what} exceeds the limit of {shown} ({name}; raise it with {how})"


def human_size(n: int) -> str:
    for unit, size in (("GiB", 1024**3), ("MiB", MIB), ("KiB", KIB)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"
