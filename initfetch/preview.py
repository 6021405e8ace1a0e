"""`preview`: what a render would write and export, values masked.

Masking never works by finding values in the real output: a template can
transform a value in ways no lookup recognises (`upper`, `urlencode`,
slicing). Instead the templates are rendered a second time with *shadow*
values: the same shapes (maps, lists, JSON documents stay JSON) with every
leaf replaced by a `<secret:name/key>` placeholder. That render contains no
value at all, and shows where each secret lands and how it is transformed.
An output whose template needs the real content (`b64decode` of a secret,
say) cannot render with placeholders; only its size is shown.
`--offline` renders with placeholders of unknown shape and contacts nothing.

The shadow render is then scrubbed through the redactor as well: a template
can pull a secret in without going through `secrets` (`{% include %}` of the
very file a `file://` secret reads), and that content is a registered value.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, TextIO

from initfetch.manifest import Manifest
from initfetch.redact import FIELD_MIN_LEN, Redactor, mask
from initfetch.resolve.resolver import Resolution, Resolved
from initfetch.templating.render import Rendered, Renderer

NOT_SHOWN = "<not shown: this template needs the real values to render; use --reveal>"


class Placeholder(str):
    """An offline stand-in for a value whose shape is unknown: any key of it is
    a placeholder too, so `secrets.cfg.host` and `secrets.cfg["a.b"]` render."""

    label: str
    keys_unknown = True  # env_from shows one placeholder line: the keys are known only online

    def __new__(cls, label: str) -> Placeholder:
        self = super().__new__(cls, mask(label))
        self.label = label
        return self

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, int | slice):
            return str.__getitem__(self, key)
        return Placeholder(f"{self.label}/{key}")


def secret_files(manifest: Manifest) -> dict[str, str]:
    """Real path -> secret name of every file:// secret: a template that includes one
    shows its placeholder in a masked preview, offline too (no value to scrub there)."""
    out: dict[str, str] = {}
    for name, spec in manifest.secrets.items():
        conf = manifest.providers.get(spec.ref.scheme) if spec.ref is not None else None
        if spec.ref is None or conf is None or conf.type != "file":
            continue
        path = os.path.join(str(conf.options.get("base_dir", ".")), spec.ref.doc.path)
        out[os.path.realpath(path)] = name
    return out


def shadow(value: Any, label: str) -> Any:
    """The same shape as `value`, with every leaf replaced by a placeholder."""
    if isinstance(value, dict):
        return {k: shadow(v, f"{label}/{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [shadow(v, f"{label}/{i}") for i, v in enumerate(value)]
    if isinstance(value, bytes):
        return mask(label).encode()
    if isinstance(value, str) and value[:1] in "{[":
        try:
            parsed = json.loads(value)
        except ValueError:
            return mask(label)
        return json.dumps(shadow(parsed, label))  # JSON stays JSON, so `fromjson` still works
    return mask(label)


def masked(
    manifest: Manifest, resolution: Resolution, real: Rendered, redactor: Redactor, deadline: float | None
) -> Rendered:
    """What to show for a masked preview of `real`: the shadow render, or masked lines,
    scrubbed through `redactor`."""
    values = resolution.values
    meta = {name: r.meta() for name, r in resolution.info.items()}
    shadows = {name: shadow(value, name) for name, value in values.items()}
    renderer = Renderer(manifest, None, preview=True, hidden=secret_files(manifest))
    attempt = renderer.attempt(shadows, meta, deadline=deadline)
    files = dict(attempt.rendered.files)
    for dest in attempt.failed & set(real.files):
        # Nothing selected from the real render is shown: even which literal lines
        # appear would tell something about the values that chose them.
        lines = real.files[dest].count(b"\n") + (not real.files[dest].endswith(b"\n"))
        files[dest] = f"{NOT_SHOWN} ({lines} lines)\n".encode()
    env = {name: attempt.rendered.env.get(name, NOT_SHOWN) for name in real.env}
    return scrubbed(Rendered({dest: files[dest] for dest in real.files}, env), redactor)


def scrubbed(rendered: Rendered, redactor: Redactor) -> Rendered:
    """`rendered` with every registered value masked; binary files are never printed anyway."""
    files: dict[str, bytes] = {}
    for dest, data in rendered.files.items():
        try:
            files[dest] = redactor.scrub(data.decode("utf-8")).encode("utf-8")
        except UnicodeDecodeError:
            files[dest] = data
    return Rendered(files, {name: redactor.scrub(value) for name, value in rendered.env.items()})


def show(out: TextIO, manifest: Manifest, rendered: Rendered, sizes: Mapping[str, int] | None = None) -> None:
    """Print the files and the environment as given (the caller masks them).

    `sizes`: the real render's file sizes, when `rendered` is a masked one ({} offline).
    """
    modes = {o.dest: o.mode for o in manifest.outputs}
    for dest, data in rendered.files.items():
        if sizes is None:
            size = f"{len(data)} bytes"
        else:  # a masked render: the real file's size, not the placeholders'
            size = f"{sizes[dest]} bytes" if dest in sizes else "size known only online"
        out.write(f"--- file {dest} (mode {modes[dest]:04o}, {size})\n")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            out.write("(binary content not shown)\n")
            continue
        out.write(text if text.endswith("\n") else text + "\n")
    if rendered.env:
        out.write("--- env\n")
        for name, value in rendered.env.items():
            out.write(f"{name}={value}\n")


def show_references(
    out: TextIO, manifest: Manifest, info: Mapping[str, Resolved], redactor: Redactor | None
) -> None:
    """Print where each reference resolved from; `redactor` scrubs the table, which holds
    names, references and versions only."""
    out.write("--- references\n")
    rows: list[list[Any]] = [["SECRET", "REFERENCE", "PROVIDER", "VERSION", "LEASE", "OUTCOME"]]
    for name, spec in manifest.secrets.items():
        r = info.get(name)
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
