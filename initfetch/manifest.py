"""The manifest: what to fetch, from where, and what to write.

`load_manifest` reads and validates the whole file and raises one `BadInput`
listing every problem with its file and line. Nothing here touches the
network; provider classes are loaded only to validate their options and
references (their SDKs are not imported).
"""

from __future__ import annotations

import datetime
import os
import posixpath
import re
import stat
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from initfetch import limits as _limits
from initfetch import providers, watch_config, yamlsrc
from initfetch.errors import BadInput, Loc, Problem, shown
from initfetch.limits import Limits
from initfetch.outdir.names import NAME_MAX, PATH_MAX, reserved
from initfetch.reference import Reference, RefSyntaxError, expand_reference, expand_vars
from initfetch.yamlsrc import LDict, LList

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENV_NAME_RE = NAME_RE
DEFAULT_MODE = 0o400
MODE_TEXT_RE = re.compile(r"^(0o?)?[0-7]{1,4}$")

TOP_KEYS = {"version", "providers", "secrets", "templates", "files", "env", "env_from", "limits", "on_change"}
SECRET_KEYS = {"ref", "optional", "default", "refresh"}
PROVIDER_KEYS = {"type", "keep_credentials", "refresh"}  # the rest are the provider's own options
OUTPUT_KEYS = {"dest", "mode", "owner", "group"}
TEMPLATE_KEYS = OUTPUT_KEYS | {"src"}
FILE_KEYS = OUTPUT_KEYS | {"secret"}
ENV_FROM_KEYS = {"secret", "prefix"}


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
    watch: watch_config.WatchConfig = field(default_factory=watch_config.WatchConfig)

    def provider_for(self, scheme: str) -> ProviderConfig:
        return self.providers[scheme]


class _Checker:
    """Collects problems while walking the located YAML tree."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def add(self, where: Loc, message: str) -> None:
        self.problems.append(Problem(where, message))

    def mapping(self, value: Any, where: Loc, what: str) -> LDict | None:
        if isinstance(value, LDict):
            return value
        if value is not None:
            self.add(where, f"{what} must be a mapping")
        return None

    def keys(self, m: LDict, allowed: set[str], what: str) -> None:
        for key in m:
            if key not in allowed:
                self.add(
                    m.at(key), f"unknown key {shown(key)} in {what} (allowed: {', '.join(sorted(allowed))})"
                )

    def string(self, value: Any, where: Loc, what: str) -> str | None:
        """`value` if it is a string, else a problem saying what YAML made of it."""
        if isinstance(value, str):
            return value
        self.add(where, f"{what} must be a string, not {type_name(value)}; quote it")
        return None


class _Quoting:
    """The checker as seen by code that quotes what it read: quoted text goes through `shown()`."""

    def __init__(self, chk: _Checker) -> None:
        self.chk = chk

    def add(self, where: Loc, message: str) -> None:
        self.chk.add(where, yamlsrc.clean_quotes(message))


def type_name(value: Any) -> str:
    """What YAML made of an unquoted value, in words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, datetime.date):
        return "a date"
    if isinstance(value, bytes):
        return "binary data"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return "a " + type(value).__name__


def load_manifest(
    path: Path,
    environ: Mapping[str, str],
    *,
    lenient_vars: bool = False,
) -> Manifest:
    """Read and validate a manifest; raise BadInput with every problem found.

    The limits on reading it (size, YAML aliases, depth, values) come from
    INITFETCH_LIMIT_* only; `manifest.limits` is the `limits:` section with
    those variables on top.
    """
    file = str(path)
    try:
        env_limits = Limits().with_env(environ)
    except ValueError as e:
        raise BadInput(Problem(None, str(e))) from None
    text = read_text(path, env_limits.manifest_size)
    data, problems = yamlsrc.load(text, file, env_limits)
    if problems and data is None:
        raise BadInput(problems)
    base_dir = path.resolve().parent
    chk = _Checker(file)
    chk.problems.extend(problems)
    manifest = Manifest(path=path, base_dir=base_dir)
    if not isinstance(data, LDict):
        chk.add(Loc(file, 1), "the manifest must be a mapping with at least 'version: 1' and 'secrets:'")
        raise BadInput(chk.problems)
    chk.keys(data, TOP_KEYS, "the manifest")
    if type(data.get("version")) is not int or data.get("version") != 1:  # `true == 1` in Python
        chk.add(data.at("version"), "'version: 1' is required")
    manifest.limits = _load_limits(chk, data, environ)
    _load_providers(chk, data, manifest, base_dir, environ, lenient_vars)
    _load_secrets(chk, data, manifest, environ, lenient_vars)
    _load_outputs(chk, data, manifest, base_dir)
    _load_env(chk, data, manifest)
    manifest.watch = watch_config.parse(_Quoting(chk), data)
    if chk.problems:
        raise BadInput(chk.problems)
    return manifest


def read_text(path: Path, max_size: int) -> str:
    """The manifest's text: a regular file of at most `max_size` bytes of UTF-8. Raises BadInput."""
    file = str(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise BadInput(Problem(file, "manifest not found")) from None
    except OSError as e:
        raise BadInput(Problem(file, f"cannot read the manifest: {_os_reason(e)}")) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BadInput(Problem(file, "the manifest is not a regular file (a directory, FIFO or device)"))
        chunks, size = [], 0
        while size <= max_size:  # read one byte past the limit to know it is exceeded
            chunk = os.read(fd, min(1 << 20, max_size + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise BadInput(Problem(file, f"cannot read the manifest: {_os_reason(e)}")) from None
    finally:
        os.close(fd)
    if size > max_size:
        raise BadInput(Problem(file, _limits.exceeded("manifest_size", max_size)))
    data = b"".join(chunks)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise BadInput(Problem(Loc(file, line, col), "the manifest is not UTF-8 text")) from None


def _os_reason(e: OSError) -> str:
    return os.strerror(e.errno) if e.errno else type(e).__name__


def _load_limits(chk: _Checker, data: LDict, environ: Mapping[str, str]) -> Limits:
    """The `limits:` section (run limits only), with INITFETCH_LIMIT_* variables on top."""
    section = chk.mapping(data.get("limits"), data.at("limits"), "'limits'")
    values: dict[str, int] = {}
    for name, raw in (section or {}).items():
        assert section is not None
        where = section.at(name)
        described = _limits.DESCRIPTIONS.get(name)
        if described is None:
            settable = sorted(n for n, (_, in_manifest) in _limits.DESCRIPTIONS.items() if in_manifest)
            chk.add(where, f"unknown limit {shown(name)} (allowed: {', '.join(settable)})")
        elif not described[1]:
            chk.add(
                where,
                f"limit {name} applies while the manifest is read, so only {_limits.env_name(name)} sets it",
            )
        else:
            try:
                values[name] = _limits.parse_value(name, raw)
            except ValueError as e:
                chk.add(where, f"limits: {name} {e}")
    try:
        return Limits(**values).with_env(environ)
    except ValueError as e:  # reported once already by load_manifest; kept for other callers
        chk.add(Loc(chk.file), str(e))
        return Limits(**values)


def builtin_providers(base_dir: Path) -> dict[str, ProviderConfig]:
    out = {
        name: ProviderConfig(name, type_name, {}) for name, type_name in providers.BUILTIN_INSTANCES.items()
    }
    out["file"].options["base_dir"] = str(base_dir)
    return out


def _expand_option(
    chk: _Checker, value: Any, where: Loc, environ: Mapping[str, str], lenient: bool, what: str
) -> Any:
    """`${VAR}` in provider options too, so one manifest serves every stage."""
    if isinstance(value, str):
        try:
            return expand_vars(value, environ, lenient=lenient)
        except RefSyntaxError as e:
            chk.add(where, f"{what}: {e}")
            return value
    if isinstance(value, LDict):
        out = LDict(
            {k: _expand_option(chk, v, value.at(k), environ, lenient, what) for k, v in value.items()}
        )
        out.loc, out.key_locs = value.loc, value.key_locs
        return out
    return value


def _load_providers(
    chk: _Checker, data: LDict, manifest: Manifest, base_dir: Path, environ: Mapping[str, str], lenient: bool
) -> None:
    manifest.providers = builtin_providers(base_dir)
    section = chk.mapping(data.get("providers"), data.at("providers"), "'providers'")
    if section is None:
        return
    for name, body in section.items():
        where = section.at(name)
        if not re.match(r"^[A-Za-z][A-Za-z0-9_.+-]*$", name) or len(name) > 64:
            chk.add(
                where,
                f"bad provider name {shown(name)} (up to 64 letters, digits, _ . + -; starts with a letter)",
            )
            continue
        conf = chk.mapping(body, where, f"provider '{name}'")
        if conf is None:
            chk.add(where, f"provider '{name}' needs at least 'type'")
            continue
        type_ = conf.get("type")
        if not isinstance(type_, str) or type_ not in providers.TYPES:
            known = ", ".join(sorted(providers.TYPES))
            got = shown(type_) if isinstance(type_, str) else type_name(type_)
            chk.add(conf.at("type"), f"provider '{name}': unknown type {got} (known: {known})")
            continue
        keep = conf.get("keep_credentials", False)
        if not isinstance(keep, bool):
            chk.add(conf.at("keep_credentials"), "keep_credentials must be true or false")
        options = {}
        for k, v in conf.items():
            if k in PROVIDER_KEYS:
                continue
            if shown(k).startswith("(not shown"):  # the provider's own message would quote it
                chk.add(conf.at(k), f"provider '{name}': unknown option {shown(k)}")
                continue
            if isinstance(v, datetime.date | bytes):
                chk.add(conf.at(k), f"provider '{name}': option {k} is {type_name(v)}; quote it")
                continue
            options[k] = _expand_option(chk, v, conf.at(k), environ, lenient, f"provider '{name}'")
        if type_ == "file":
            options.setdefault("base_dir", str(base_dir))
        cls = providers.provider_class(type_)
        for keypath, message in cls.check_options(options):
            # a provider's message may quote an option's value: only identifier-like text stays
            chk.add(_locate(conf, keypath), f"provider '{name}': {yamlsrc.clean_quotes(message)}")
        manifest.providers[name] = ProviderConfig(name, type_, options, keep is True, where)


def _locate(m: Any, keypath: tuple[str, ...]) -> Loc:
    """The location of a nested key, as deep as it exists."""
    where: Loc = m.loc
    for key in keypath:
        if isinstance(m, LDict) and key in m:
            where = m.at(key)
            m = m[key]
        else:
            break
    return where


def _load_secrets(
    chk: _Checker, data: LDict, manifest: Manifest, environ: Mapping[str, str], lenient: bool
) -> None:
    section = chk.mapping(data.get("secrets"), data.at("secrets"), "'secrets'")
    if section is None:
        return
    for name, body in section.items():
        where = section.at(name)
        if not NAME_RE.match(name) or len(name) > 64:
            chk.add(
                where,
                f"bad secret name {shown(name)} (up to 64 letters, digits and _; templates use secrets.NAME)",
            )
            continue
        optional, default = False, None
        if isinstance(body, LDict):
            chk.keys(body, SECRET_KEYS, f"secret '{name}'")
            ref_text = body.get("ref")
            optional = body.get("optional", False)
            if not isinstance(optional, bool):
                chk.add(body.at("optional"), "optional must be true or false")
            if "default" in body:
                default = chk.string(body["default"], body.at("default"), f"secret '{name}': default")
                optional = True  # a default implies the secret may be absent
            ref_where = body.at("ref")
        else:
            ref_text, ref_where = body, where
        if not isinstance(ref_text, str):
            got = "" if ref_text is None else f", not {type_name(ref_text)}; quote it"
            chk.add(
                ref_where,
                f"secret '{name}': 'ref' must be a reference string like vault://secret/app#key{got}",
            )
            continue
        ref = check_reference(
            chk, ref_text, ref_where, manifest.providers, environ, lenient, f"secret '{name}'"
        )
        manifest.secrets[name] = SecretSpec(name, ref, ref_text, optional is True, default, where)


def check_reference(
    chk: _Checker,
    text: str,
    where: Loc,
    instances: Mapping[str, ProviderConfig],
    environ: Mapping[str, str],
    lenient: bool,
    what: str,
) -> Reference | None:
    try:
        ref = expand_reference(text, environ, lenient=lenient)
    except RefSyntaxError as e:
        chk.add(where, f"{what}: {e}")
        return None
    scheme = ref.scheme if ref else text.partition("://")[0]  # a scheme never holds a variable
    if scheme not in instances:
        known = ", ".join(sorted(instances))
        chk.add(where, f"{what}: unknown scheme {shown(scheme)} (providers: {known})")
        return None
    if ref is None:
        return None  # lenient, and a variable is unset: cannot be checked further
    conf = instances[scheme]
    problem = providers.provider_class(conf.type).check_reference(ref)
    if problem:  # it may quote part of the reference: only identifier-like text stays
        chk.add(where, f"{what}: {yamlsrc.clean_quotes(problem)}")
    return ref


def _load_outputs(chk: _Checker, data: LDict, manifest: Manifest, base_dir: Path) -> None:
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
            out = _load_output(chk, entry, section_name, i, manifest, base_dir)
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


def _load_output(
    chk: _Checker, entry: LDict, section: str, i: int, manifest: Manifest, base_dir: Path
) -> Output | None:
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
    return out if dest else None


def normalize_dest(chk: _Checker, dest: Any, where: Loc, what: str) -> str | None:
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


def _mode(chk: _Checker, entry: LDict, what: str) -> int:
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


def _load_env(chk: _Checker, data: LDict, manifest: Manifest) -> None:
    section = chk.mapping(data.get("env"), data.at("env"), "'env'")
    for name, value in (section or {}).items():
        where = section.at(name) if section is not None else None
        if not ENV_NAME_RE.match(name):
            chk.add(where or Loc(chk.file), f"env: {shown(name)} is not a valid variable name")
        elif not isinstance(value, str):
            chk.add(
                where or Loc(chk.file),
                f"env: {shown(name)} must be a string, not {type_name(value)}; quote it "
                '(a template like "{{ secrets.x }}")',
            )
        else:
            manifest.env[name] = (value, where)
    env_from = data.get("env_from")
    if env_from is None:
        return
    if not isinstance(env_from, LList):
        chk.add(data.at("env_from"), "'env_from' must be a list")
        return
    for i, item in enumerate(env_from):
        entry = chk.mapping(item, env_from.at(i), f"env_from[{i}]")
        if entry is None:
            continue
        chk.keys(entry, ENV_FROM_KEYS, f"env_from[{i}]")
        secret, prefix = entry.get("secret"), entry.get("prefix", "")
        if not isinstance(secret, str) or secret not in manifest.secrets:
            got = shown(secret) if isinstance(secret, str) else type_name(secret)
            chk.add(entry.at("secret"), f"env_from[{i}]: 'secret' must name a declared secret, got {got}")
        elif not isinstance(prefix, str) or (prefix and not ENV_NAME_RE.match(prefix)):
            chk.add(entry.at("prefix"), f"env_from[{i}]: prefix must be a valid variable-name start")
        else:
            manifest.env_from.append(EnvFrom(secret, prefix, entry.loc))


def default_manifest_path(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("INITFETCH_MANIFEST") or "initfetch.yaml")


def missing_sdks(manifest: Manifest) -> list[Problem]:
    """One problem per provider in use whose client library is not installed."""
    first_use: dict[str, Loc | None] = {}
    for spec in manifest.secrets.values():
        if spec.ref:
            first_use.setdefault(spec.ref.scheme, spec.loc)
    out = []
    for name, used_at in sorted(first_use.items()):
        conf = manifest.providers[name]
        message = providers.missing_sdk(conf.type)
        if message:  # where the instance is declared, else where a built-in one is first used
            out.append(Problem(conf.loc or used_at, message))
    return out


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


def cwd_relative(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # pragma: no cover - other drive on Windows
        return str(path)
