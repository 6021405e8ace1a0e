"""`preview`: what a render would write and export, values masked.

Masking is by construction, never by finding values in the real output: a
template can transform a value in ways no lookup recognises (`upper`,
`urlencode`, slicing), and a short value found by searching would turn
unrelated text into a placeholder. Instead the templates are rendered a second
time with *shadow* values: the same shapes (maps, lists, JSON documents stay
JSON) with every leaf replaced by a `<secret:name/key>` placeholder, so each
placeholder is produced exactly where a value is inserted. That render contains
no value at all, and shows where each secret lands and how it is transformed.
An output whose template needs the real content (`b64decode` of a secret, say)
cannot render with placeholders; only its size is shown.
`--offline` renders with placeholders of unknown shape and contacts nothing.

The redactor then looks at what the shadow render holds besides placeholders,
for values that reached it some other way (an `{% include %}` of a file that
holds a value). It never rewrites text inside a placeholder, and it skips
values too short to tell from ordinary words (under FIELD_MIN_LEN characters)
and values that occur in the templates' own text, the secret names or the keys
of map values: those are not secret, and masking them would both garble the
preview and hint at the value. The include of a `file://` secret shows its
placeholder whatever its length (the loader hides it, initfetch.templating).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

from initfetch.manifest import Manifest
from initfetch.redact import FIELD_MIN_LEN, Redactor, mask
from initfetch.resolve.results import Resolution, Resolved
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
    """What to show for a masked preview of `real`: the shadow render (or masked lines), with
    values that reached it another way masked too (see `leftovers`)."""
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
    shown = Rendered({dest: files[dest] for dest in real.files}, env)
    return scrubbed(shown, leftovers(manifest, resolution, redactor), placeholders(manifest))


def placeholders(manifest: Manifest) -> re.Pattern[str]:
    """The placeholders a shadow render produces (`<secret:db_pass>`, `<secret:cfg/a.b>`,
    `<secret:tls_key|b64>`, `<SECRET:DB_PASS>` after `upper`): text the scrub never touches."""
    names = "|".join(re.escape(n) for n in sorted(manifest.secrets, key=len, reverse=True)) or "(?!)"
    return re.compile(rf"<secret:(?:{names})(?:[/|][^<>\n]*)?>", re.IGNORECASE)


def leftovers(manifest: Manifest, resolution: Resolution, redactor: Redactor) -> Redactor:
    """The values a masked preview still looks for outside placeholders (see the module's doc)."""
    known = "\n".join(_known_text(manifest, resolution))
    return redactor.subset(lambda form: len(form) >= FIELD_MIN_LEN and form not in known)


def _known_text(manifest: Manifest, resolution: Resolution) -> Iterator[str]:
    """Text that is not a value: the templates' own source, `env:` templates, secret names,
    keys of map values and meta (versions, leases)."""
    hidden = secret_files(manifest)
    for out in manifest.outputs:
        if out.src is not None and os.path.realpath(out.src) not in hidden:
            try:
                yield out.src.read_text(errors="replace")
            except OSError:
                pass
    yield from (source for source, _ in manifest.env.values())
    yield from manifest.secrets
    for value in resolution.values.values():
        yield from _keys(value)
    yield json.dumps({n: r.meta() for n, r in resolution.info.items()}, default=str)


def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, str) and value[:1] in "{[":
        try:
            value = json.loads(value)
        except ValueError:
            return
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _keys(v)
    elif isinstance(value, list):
        for v in value:
            yield from _keys(v)


def scrubbed(rendered: Rendered, redactor: Redactor, keep: re.Pattern[str] | None = None) -> Rendered:
    """`rendered` with every value `redactor` knows masked, except inside what `keep` matches;
    binary files are never printed anyway."""

    def scrub(text: str) -> str:
        if keep is None:
            return redactor.scrub(text)
        out, pos = [], 0
        for m in keep.finditer(text):
            out += [redactor.scrub(text[pos : m.start()]), m.group()]
            pos = m.end()
        out.append(redactor.scrub(text[pos:]))
        return "".join(out)

    files: dict[str, bytes] = {}
    for dest, data in rendered.files.items():
        try:
            files[dest] = scrub(data.decode("utf-8")).encode("utf-8")
        except UnicodeDecodeError:
            files[dest] = data
    return Rendered(files, {name: scrub(value) for name, value in rendered.env.items()})


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
