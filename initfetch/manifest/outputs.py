"""The `templates:` and `files:` sections: every file written to OUT_DIR, and its dest checked."""

from __future__ import annotations

import posixpath
import re
import unicodedata
from typing import Any

from initfetch.errors import Loc, shown
from initfetch.manifest.checker import Checker, Loading, type_name
from initfetch.manifest.model import (
    DEFAULT_MODE,
    FILE_FORMATS,
    FILE_KEYS,
    MODE_TEXT_RE,
    TEMPLATE_KEYS,
    Manifest,
    Output,
)
from initfetch.manifest.yamlsrc import LDict, LList
from initfetch.outdir.names import NAME_MAX, PATH_MAX, reserved


def load_outputs(ctx: Loading, data: LDict, manifest: Manifest) -> None:
    chk = ctx.chk
    seen: dict[str, Loc] = {}
    dirs: dict[str, str] = {}  # a directory some dest needs -> the first such dest
    for section_name, allowed in (("templates", TEMPLATE_KEYS), ("files", FILE_KEYS)):
        section = data.get(section_name)
        if section is None:
            continue
        if not isinstance(section, LList):
            chk.add(data.at(section_name), f"'{section_name}' must be a list")
            continue
        for i, item in enumerate(section):
            where = section.at(i)
            entry = chk.mapping(item, where, f"{section_name}[{i}]")
            if entry is None:
                continue
            chk.keys(entry, allowed, f"{section_name}[{i}]")
            out = _load_output(ctx, entry, section_name, i, manifest)
            if out is None:
                continue
            if out.dest in seen:
                chk.add(
                    entry.at("dest"),
                    f"dest {shown(out.dest)} is written twice (also at line {seen[out.dest].line})",
                )
                continue
            # A parent of this dest written as a file, or this dest a parent of another:
            # found through the set of every written dest's directories (linear, not n²).
            parents = [posixpath.dirname(out.dest)]
            while parents[-1]:
                parents.append(posixpath.dirname(parents[-1]))
            clash = next((p for p in parents if p in seen), None) or dirs.get(out.dest)
            if clash is not None:
                chk.add(
                    entry.at("dest"),
                    f"dest {shown(out.dest)} and the dest at line {seen[clash].line} need the same path "
                    "as a file and as a directory",
                )
                continue
            seen[out.dest] = entry.at("dest")
            for p in parents[:-1]:
                dirs.setdefault(p, out.dest)
            manifest.outputs.append(out)


def _load_output(ctx: Loading, entry: LDict, section: str, i: int, manifest: Manifest) -> Output | None:
    chk, base_dir = ctx.chk, ctx.base_dir
    what = f"{section}[{i}]"
    dest = normalize_dest(chk, entry.get("dest"), entry.at("dest"), what)
    mode = _mode(chk, entry, what)
    for key in ("owner", "group"):
        v = entry.get(key)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int | str) or v == "" or (isinstance(v, int) and v < 0):
            chk.add(entry.at(key), f"{what}: {key} must be a numeric id or a name, not {type_name(v)}")
        elif isinstance(v, str) and _has_control(v):
            chk.add(entry.at(key), f"{what}: {key} contains control characters")
    out = Output(dest or "", mode, entry.get("owner"), entry.get("group"), loc=entry.loc)
    if section == "templates":
        src = entry.get("src")
        if src is not None and not isinstance(src, str):
            chk.string(src, entry.at("src"), f"{what}: 'src'")
            return None
        if not src:
            chk.add(entry.at("src"), f"{what}: 'src' (a template path relative to the manifest) is required")
            return None
        if _has_control(src):
            chk.add(entry.at("src"), f"{what}: 'src' contains control characters")
            return None
        try:
            path = (base_dir / src).resolve()
            out.template_name = path.relative_to(base_dir).as_posix()
        except (ValueError, OSError):
            chk.add(entry.at("src"), f"{what}: template {shown(src)} is outside the manifest's directory")
            return None
        try:
            found = path.is_file()
        except OSError:
            found = False
        if not found:
            chk.add(entry.at("src"), f"{what}: template file {shown(src)} not found")
            return None
        out.src = path
    else:
        secret = entry.get("secret")
        if not isinstance(secret, str) or secret not in manifest.secrets:
            got = shown(secret) if isinstance(secret, str) else type_name(secret)
            chk.add(entry.at("secret"), f"{what}: 'secret' must name a declared secret, got {got}")
            return None
        out.secret = secret
        if not _file_format(chk, entry, out, manifest, what):
            return None
    return out if dest else None


def _file_format(chk: Checker, entry: LDict, out: Output, manifest: Manifest, what: str) -> bool:
    """`format:` (and pkcs12's `password:`) of a files: entry; False on a problem."""
    fmt, password = entry.get("format"), entry.get("password")
    if fmt is None:
        if password is not None:
            chk.add(entry.at("password"), f"{what}: password is for format: pkcs12")
            return False
        return True
    if fmt not in FILE_FORMATS:
        got = shown(fmt) if isinstance(fmt, str) else type_name(fmt)
        chk.add(entry.at("format"), f"{what}: format must be one of {', '.join(FILE_FORMATS)}, got {got}")
        return False
    out.format = fmt
    if fmt != "pkcs12":
        if password is not None:
            chk.add(entry.at("password"), f"{what}: password is for format: pkcs12")
            return False
        return True
    if not isinstance(password, str) or password not in manifest.secrets:
        got = shown(password) if isinstance(password, str) else type_name(password)
        chk.add(
            entry.at("password") if "password" in entry else entry.loc,
            f"{what}: format pkcs12 needs password: naming the secret that holds the keystore's password, "
            f"got {got}",
        )
        return False
    out.password = password
    return True


def normalize_dest(chk: Checker, dest: Any, where: Loc, what: str) -> str | None:
    """A dest is a relative path inside OUT_DIR that can be written and reported safely.

    No absolute path, no '..', no control characters (they would forge lines in
    the report), every name within NAME_MAX, and never a name of initfetch's own
    (the marker, its temp files): the writer's sweep must not mistake a dest for one.
    """
    if dest is None or (isinstance(dest, str) and not dest.strip()):
        chk.add(where, f"{what}: 'dest' (a path relative to the output directory) is required")
        return None
    if chk.string(dest, where, f"{what}: 'dest'") is None:
        return None
    if _has_control(dest):
        chk.add(where, f"{what}: dest contains control characters (a newline, an escape, ...)")
        return None
    if dest.startswith("/") or "\\" in dest:
        chk.add(where, f"{what}: dest {shown(dest)} must be relative to the output directory")
        return None
    parts = dest.split("/")
    if ".." in parts:
        chk.add(where, f"{what}: dest {shown(dest)} escapes the output directory ('..')")
        return None
    norm = posixpath.normpath(dest)
    if norm in (".", "") or dest.endswith("/"):
        chk.add(where, f"{what}: dest {shown(dest)} must name a file")
        return None
    try:
        encoded = [len(part.encode("utf-8")) for part in norm.split("/")]
    except UnicodeEncodeError:  # a lone surrogate from a YAML escape
        chk.add(where, f"{what}: dest is not valid Unicode")
        return None
    if max(encoded) > NAME_MAX:
        chk.add(
            where, f"{what}: a name in dest is {max(encoded)} bytes long; the limit is {NAME_MAX} (NAME_MAX)"
        )
        return None
    if sum(encoded) + len(encoded) >= PATH_MAX:
        chk.add(
            where,
            f"{what}: dest is {sum(encoded) + len(encoded) - 1} bytes long; "
            f"the limit is {PATH_MAX - 1} (PATH_MAX)",
        )
        return None
    for part in norm.split("/"):
        if reserved(part):
            chk.add(
                where,
                f"{what}: dest {shown(dest)} is reserved for initfetch's own files (marker, temp files)",
            )
            return None
    return norm


def _has_control(text: str) -> bool:
    """Control and format characters, line separators, lone surrogates: unsafe in a name or a report."""
    return any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in text)


def _mode(chk: Checker, entry: LDict, what: str) -> int:
    """Permissions: a string of octal digits ("0440", "440") or an integer written in octal (0440).

    An integer written in decimal (`mode: 440`) is refused: YAML reads it as 440, which is 0o670.
    """
    if "mode" not in entry:
        return DEFAULT_MODE
    raw, where = entry["mode"], entry.at("mode")
    bad = (
        f'{what}: mode must be octal permissions: "0440" (a quoted string is read as octal) '
        "or 0440 unquoted; no setuid bits"
    )
    if isinstance(raw, int) and not isinstance(raw, bool):
        text = (entry.text("mode") or "").replace("_", "")
        if not re.match(r"^0[0-7]*$", text):  # decimal, hex, binary or sexagesimal
            if re.match(r"^[0-7]{1,4}$", text):
                chk.add(
                    where,
                    f'{what}: mode {text} is a decimal number; write it as "0{text}" (quoted) or 0{text}',
                )
            else:
                chk.add(where, bad)
            return DEFAULT_MODE
        mode = raw
    elif isinstance(raw, str) and MODE_TEXT_RE.match(raw.strip()):
        mode = int(raw.strip(), 8)
    else:
        chk.add(where, bad)
        return DEFAULT_MODE
    if not 0 <= mode <= 0o777:
        chk.add(where, bad)
        return DEFAULT_MODE
    return mode
