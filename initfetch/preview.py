"""`preview`: what a render would write and export, values masked.

Masking is done on the real render by the redactor, which also knows the
derived forms that filters produced (base64, quoting). For preview the
redactor masks values of any length, so even a one-character secret is hidden.
`--offline` renders with placeholders instead and contacts nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TextIO

from initfetch.manifest import Manifest
from initfetch.redact import FIELD_MIN_LEN, Redactor, mask
from initfetch.render import Rendered
from initfetch.resolver import Resolved


class Placeholder(str):
    """An offline stand-in for a value whose shape is unknown: any key of it is
    a placeholder too, so `secrets.cfg.host` and `secrets.cfg["a.b"]` render."""

    label: str

    def __new__(cls, label: str) -> Placeholder:
        self = super().__new__(cls, mask(label))
        self.label = label
        return self

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, int | slice):
            return str.__getitem__(self, key)
        return Placeholder(f"{self.label}/{key}")


def placeholders(manifest: Manifest) -> dict[str, str]:
    return {name: Placeholder(name) for name in manifest.secrets}


def show(
    out: TextIO,
    manifest: Manifest,
    rendered: Rendered,
    info: Mapping[str, Resolved] | None,
    redactor: Redactor | None,
) -> None:
    """Print files, env and where each reference resolved from. `redactor=None` reveals."""

    def safe(text: str) -> str:
        return redactor.scrub(text) if redactor is not None else text

    modes = {o.dest: o.mode for o in manifest.outputs}
    for dest, data in rendered.files.items():
        out.write(f"--- file {dest} (mode {modes[dest]:04o}, {len(data)} bytes)\n")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            out.write("(binary content not shown)\n")
            continue
        out.write(safe(text))
        if not text.endswith("\n"):
            out.write("\n")
    if rendered.env:
        out.write("--- env\n")
        for name, value in rendered.env.items():
            out.write(f"{name}={safe(value)}\n")
    out.write("--- references\n")
    rows: list[list[Any]] = [["SECRET", "REFERENCE", "PROVIDER", "VERSION", "LEASE", "OUTCOME"]]
    for name, spec in manifest.secrets.items():
        r = info.get(name) if info else None
        lease = f"{r.lease.duration}s{' renewable' if r.lease.renewable else ''}" if r and r.lease else "-"
        provider = spec.ref.scheme if spec.ref else spec.ref_text.partition("://")[0]
        rows.append(
            [
                name,
                str(spec.ref) if spec.ref else spec.ref_text,
                f"{provider} ({manifest.providers[provider].type})"
                if provider in manifest.providers
                else provider,
                (r.version or "-") if r else "-",
                lease,
                r.outcome if r else "offline",
            ]
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        line = "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        out.write((redactor.scrub(line, FIELD_MIN_LEN) if redactor is not None else line) + "\n")
