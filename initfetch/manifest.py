"""The manifest: what to fetch, from where, and what to write.

`load_manifest` reads and validates the whole file and raises one `BadInput`
listing every problem with its file and line. Nothing here touches the
network; provider classes are loaded only to validate their options and
references (their SDKs are not imported).
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from initfetch import providers, yamlsrc
from initfetch.errors import BadInput, Loc, Problem
from initfetch.limits import Limits
from initfetch.reference import Reference, RefSyntaxError, expand_vars, parse
from initfetch.yamlsrc import LDict, LList

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENV_NAME_RE = NAME_RE
MARKER_NAME = ".initfetch-ready.json"
DEFAULT_MODE = 0o400

TOP_KEYS = {"version", "providers", "secrets", "templates", "files", "env", "env_from"}
SECRET_KEYS = {"ref", "optional", "default"}
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
                self.add(m.at(key), f"unknown key '{key}' in {what} (allowed: {', '.join(sorted(allowed))})")


def load_manifest(
    path: Path,
    environ: Mapping[str, str],
    *,
    lenient_vars: bool = False,
) -> Manifest:
    """Read and validate a manifest; raise BadInput with every problem found."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(Problem(file, "manifest not found")) from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(Problem(file, f"cannot read manifest: {type(e).__name__}")) from None
    data, problems = yamlsrc.load(text, file)
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
    _load_providers(chk, data, manifest, base_dir, environ, lenient_vars)
    _load_secrets(chk, data, manifest, environ, lenient_vars)
    _load_outputs(chk, data, manifest, base_dir)
    _load_env(chk, data, manifest)
    if chk.problems:
        raise BadInput(chk.problems)
    return manifest


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
        if not re.match(r"^[A-Za-z][A-Za-z0-9_.+-]*$", name):
            chk.add(where, f"bad provider name '{name}' (letters, digits, _ . + -; starts with a letter)")
            continue
        conf = chk.mapping(body, where, f"provider '{name}'")
        if conf is None:
            chk.add(where, f"provider '{name}' needs at least 'type'")
            continue
        type_name = conf.get("type")
        if not isinstance(type_name, str) or type_name not in providers.TYPES:
            known = ", ".join(sorted(providers.TYPES))
            chk.add(conf.at("type"), f"provider '{name}': unknown type {type_name!r} (known: {known})")
            continue
        keep = conf.get("keep_credentials", False)
        if not isinstance(keep, bool):
            chk.add(conf.at("keep_credentials"), "keep_credentials must be true or false")
        options = {
            k: _expand_option(chk, v, conf.at(k), environ, lenient, f"provider '{name}'")
            for k, v in conf.items()
            if k not in ("type", "keep_credentials")
        }
        if type_name == "file":
            options.setdefault("base_dir", str(base_dir))
        cls = providers.provider_class(type_name)
        for keypath, message in cls.check_options(options):
            chk.add(_locate(conf, keypath), f"provider '{name}': {message}")
        manifest.providers[name] = ProviderConfig(name, type_name, options, keep is True, where)


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
        if not NAME_RE.match(name):
            chk.add(where, f"bad secret name '{name}' (letters, digits and _; templates use secrets.{name})")
            continue
        optional, default = False, None
        if isinstance(body, LDict):
            chk.keys(body, SECRET_KEYS, f"secret '{name}'")
            ref_text = body.get("ref")
            optional = body.get("optional", False)
            if not isinstance(optional, bool):
                chk.add(body.at("optional"), "optional must be true or false")
            if "default" in body:
                default = body["default"]
                if not isinstance(default, str):
                    chk.add(body.at("default"), "default must be a string (quote it)")
                optional = True  # a default implies the secret may be absent
            ref_where = body.at("ref")
        else:
            ref_text, ref_where = body, where
        if not isinstance(ref_text, str):
            chk.add(
                ref_where, f"secret '{name}': 'ref' must be a reference string like vault://secret/app#key"
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
        expanded = expand_vars(text, environ, lenient=lenient)
        if lenient and "${" in expanded:
            return None  # cannot be checked further without the variables
        ref = parse(expanded)
    except RefSyntaxError as e:
        chk.add(where, f"{what}: {e}")
        return None
    conf = instances.get(ref.scheme)
    if conf is None:
        known = ", ".join(sorted(instances))
        chk.add(where, f"{what}: unknown scheme '{ref.scheme}' (providers: {known})")
        return None
    problem = providers.provider_class(conf.type).check_reference(ref)
    if problem:
        chk.add(where, f"{what}: {problem}")
    return ref


def _load_outputs(chk: _Checker, data: LDict, manifest: Manifest, base_dir: Path) -> None:
    seen: dict[str, Loc] = {}
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
                    f"dest '{out.dest}' is written twice (also at line {seen[out.dest].line})",
                )
                continue
            clash = next(
                (d for d in seen if d.startswith(out.dest + "/") or out.dest.startswith(d + "/")), None
            )
            if clash is not None:
                chk.add(
                    entry.at("dest"),
                    f"dest '{out.dest}' and '{clash}' (line {seen[clash].line}) need the same path "
                    "as a file and as a directory",
                )
                continue
            seen[out.dest] = entry.at("dest")
            manifest.outputs.append(out)


def _load_output(
    chk: _Checker, entry: LDict, section: str, i: int, manifest: Manifest, base_dir: Path
) -> Output | None:
    what = f"{section}[{i}]"
    dest = normalize_dest(chk, entry.get("dest"), entry.at("dest"), what)
    mode = _mode(chk, entry, what)
    for key in ("owner", "group"):
        v = entry.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | str) or v == ""):
            chk.add(entry.at(key), f"{what}: {key} must be a numeric id or a name")
    out = Output(dest or "", mode, entry.get("owner"), entry.get("group"), loc=entry.loc)
    if section == "templates":
        src = entry.get("src")
        if not isinstance(src, str) or not src:
            chk.add(entry.at("src"), f"{what}: 'src' (a template path relative to the manifest) is required")
            return None
        path = (base_dir / src).resolve()
        try:
            out.template_name = path.relative_to(base_dir).as_posix()
        except ValueError:
            chk.add(entry.at("src"), f"{what}: template '{src}' is outside the manifest's directory")
            return None
        if not path.is_file():
            chk.add(entry.at("src"), f"{what}: template file '{src}' not found")
            return None
        out.src = path
    else:
        secret = entry.get("secret")
        if not isinstance(secret, str) or secret not in manifest.secrets:
            chk.add(entry.at("secret"), f"{what}: 'secret' must name a declared secret, got {secret!r}")
            return None
        out.secret = secret
    return out if dest else None


def normalize_dest(chk: _Checker, dest: Any, where: Loc, what: str) -> str | None:
    """A dest is a relative path inside OUT_DIR: no absolute path, no '..'."""
    if not isinstance(dest, str) or not dest.strip():
        chk.add(where, f"{what}: 'dest' (a path relative to the output directory) is required")
        return None
    if dest.startswith("/") or "\\" in dest or "\0" in dest:
        chk.add(where, f"{what}: dest '{dest}' must be relative to the output directory")
        return None
    parts = dest.split("/")
    if ".." in parts:
        chk.add(where, f"{what}: dest '{dest}' escapes the output directory ('..')")
        return None
    norm = posixpath.normpath(dest)
    if norm in (".", "") or dest.endswith("/"):
        chk.add(where, f"{what}: dest '{dest}' must name a file")
        return None
    if norm.split("/")[0].startswith(".initfetch"):
        chk.add(where, f"{what}: dest '{dest}' is reserved for initfetch's own marker")
        return None
    return norm


def _mode(chk: _Checker, entry: LDict, what: str) -> int:
    raw = entry.get("mode", DEFAULT_MODE)
    try:
        mode = raw if isinstance(raw, int) and not isinstance(raw, bool) else int(str(raw), 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        chk.add(entry.at("mode"), f'{what}: mode must be octal permissions like "0400" (no setuid bits)')
        return DEFAULT_MODE
    return mode


def _load_env(chk: _Checker, data: LDict, manifest: Manifest) -> None:
    section = chk.mapping(data.get("env"), data.at("env"), "'env'")
    for name, value in (section or {}).items():
        where = section.at(name) if section is not None else None
        if not ENV_NAME_RE.match(name):
            chk.add(where or Loc(chk.file), f"env: '{name}' is not a valid variable name")
        elif not isinstance(value, str):
            chk.add(
                where or Loc(chk.file),
                f'env: {name} must be a string (a template like "{{{{ secrets.x }}}}")',
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
            chk.add(
                entry.at("secret"), f"env_from[{i}]: 'secret' must name a declared secret, got {secret!r}"
            )
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
