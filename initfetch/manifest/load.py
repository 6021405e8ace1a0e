"""Reading and checking a manifest: `load_manifest` reads and validates the whole file and
raises one `BadInput` listing every problem with its file and line.

Nothing here touches the network; provider classes are loaded only to validate
their options and references (their SDKs are not imported).
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from initfetch import limits as _limits
from initfetch import providers
from initfetch.errors import BadInput, Loc, Problem, shown
from initfetch.limits import Limits
from initfetch.manifest import watch, yamlsrc
from initfetch.manifest.checker import Checker, Loading, Quoting, type_name
from initfetch.manifest.model import (
    ENV_FROM_KEYS,
    ENV_NAME_RE,
    NAME_RE,
    PROVIDER_KEYS,
    SECRET_KEYS,
    TOP_KEYS,
    EnvFrom,
    Manifest,
    ProviderConfig,
    SecretSpec,
)
from initfetch.manifest.outputs import load_outputs
from initfetch.manifest.yamlsrc import LDict, LList
from initfetch.reference import (
    DocKey,
    FromFile,
    Reference,
    RefSyntaxError,
    Write,
    expand_reference,
    expand_vars,
)


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
    chk = Checker(file)
    chk.problems.extend(problems)
    ctx = Loading(chk, environ, lenient_vars, base_dir)
    manifest = Manifest(path=path, base_dir=base_dir)
    if not isinstance(data, LDict):
        chk.add(Loc(file, 1), "the manifest must be a mapping with at least 'version: 1' and 'secrets:'")
        raise BadInput(chk.problems)
    chk.keys(data, TOP_KEYS, "the manifest")
    if type(data.get("version")) is not int or data.get("version") != 1:  # `true == 1` in Python
        chk.add(data.at("version"), "'version: 1' is required")
    manifest.limits = _load_limits(chk, data, environ)
    _load_providers(ctx, data, manifest)
    _load_secrets(ctx, data, manifest)
    load_outputs(ctx, data, manifest)
    _load_env(chk, data, manifest)
    manifest.watch = watch.parse(Quoting(chk), data)
    mask_output = data.get("mask_output", False)
    if not isinstance(mask_output, bool):
        chk.add(data.at("mask_output"), "mask_output must be true or false")
    manifest.mask_output = mask_output is True
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
        raise BadInput(
            Problem(file, f"manifest not found ({searched(path)})"), headline=NO_MANIFEST
        ) from None
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


# What to do when there is no manifest: the last line of that error, and of exec's warning.
NO_MANIFEST = (
    "no manifest: run 'initfetch init' to write a starter one, "
    "or name yours with -m PATH or INITFETCH_MANIFEST=PATH"
)


def searched(path: Path) -> str:
    """Where a manifest was looked for, as the error says it: the directory, absolute."""
    folder = Path(os.path.abspath(path)).parent
    if not folder.is_dir():
        return f"looked in {folder}, which is not a directory"
    return f"looked for {path.name} in {folder}"


def _os_reason(e: OSError) -> str:
    return os.strerror(e.errno) if e.errno else type(e).__name__


def _load_limits(chk: Checker, data: LDict, environ: Mapping[str, str]) -> Limits:
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


def _expand_option(ctx: Loading, value: Any, where: Loc, what: str) -> Any:
    """`${VAR}` in provider options too, so one manifest serves every stage."""
    if isinstance(value, str):
        try:
            return expand_vars(value, ctx.environ, lenient=ctx.lenient)
        except RefSyntaxError as e:
            ctx.chk.add(where, f"{what}: {e}")
            return value
    if isinstance(value, LDict):
        out = LDict({k: _expand_option(ctx, v, value.at(k), what) for k, v in value.items()})
        out.loc, out.key_locs = value.loc, value.key_locs
        return out
    return value


def _load_providers(ctx: Loading, data: LDict, manifest: Manifest) -> None:
    chk = ctx.chk
    manifest.providers = builtin_providers(ctx.base_dir)
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
            options[k] = _expand_option(ctx, v, conf.at(k), f"provider '{name}'")
        if type_ == "file":
            options.setdefault("base_dir", str(ctx.base_dir))
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


def _load_secrets(ctx: Loading, data: LDict, manifest: Manifest) -> None:
    chk = ctx.chk
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
        ref = check_reference(ctx, ref_text, ref_where, manifest.providers, f"secret '{name}'")
        if isinstance(body, LDict) and ("write" in body or "revoke_replaced" in body):
            ref = with_write(ctx, body, ref, manifest.providers, f"secret '{name}'")
        manifest.secrets[name] = SecretSpec(name, ref, ref_text, optional is True, default, where)


def check_reference(
    ctx: Loading, text: str, where: Loc, instances: Mapping[str, ProviderConfig], what: str
) -> Reference | None:
    chk = ctx.chk
    try:
        ref = expand_reference(text, ctx.environ, lenient=ctx.lenient)
    except RefSyntaxError as e:
        chk.add(where, f"{what}: {e}")
        return None
    scheme = ref.scheme if ref else text.partition("://")[0]  # a scheme never holds a variable
    if scheme not in instances:
        known = ", ".join(sorted(instances))
        close = difflib.get_close_matches(scheme.lower(), list(instances), n=1, cutoff=0.6)
        guess = f"did you mean '{close[0]}'? " if close else ""
        chk.add(where, f"{what}: unknown scheme {shown(scheme)} ({guess}providers: {known})")
        return None
    if ref is None:
        return None  # lenient, and a variable is unset: cannot be checked further
    conf = instances[scheme]
    problem = providers.provider_class(conf.type).check_reference(ref)
    if problem:  # it may quote part of the reference: only identifier-like text stays
        chk.add(where, f"{what}: {yamlsrc.clean_quotes(problem)}")
    return ref


def with_write(
    ctx: Loading, body: LDict, ref: Reference | None, instances: Mapping[str, ProviderConfig], what: str
) -> Reference | None:
    """`ref` made a write-style reference by the secret's `write:` parameters (and
    `revoke_replaced`); problems go to the checker."""
    chk = ctx.chk
    if "write" not in body:
        chk.add(body.at("revoke_replaced"), f"{what}: revoke_replaced is for a write-style secret (write:)")
        return ref
    params = body.get("write")
    if not isinstance(params, LDict):
        chk.add(body.at("write"), f"{what}: write must be a mapping of parameters (write: {{}} for none)")
        return None
    revoke = body.get("revoke_replaced", False)
    if not isinstance(revoke, bool):
        chk.add(body.at("revoke_replaced"), f"{what}: revoke_replaced must be true or false")
    pairs = [(k, v) for k, v in ((k, _write_param(ctx, params, k, what)) for k in params) if v is not None]
    if ref is None:
        return None
    conf = instances[ref.scheme]
    if not providers.provider_class(conf.type).writes:
        chk.add(body.at("write"), f"{what}: a {conf.type} provider has no write-style references")
        return None
    write = Write(tuple(sorted(pairs, key=lambda p: p[0])), revoke is True)
    ref = dataclasses.replace(ref, doc=DocKey(ref.doc.path, ref.doc.query, write))
    problem = providers.provider_class(conf.type).check_reference(ref)
    if problem and problem != providers.provider_class(conf.type).check_reference(
        dataclasses.replace(ref, doc=DocKey(ref.doc.path, ref.doc.query))
    ):  # a problem only the write form has (the read form's was reported already)
        chk.add(body.at("write"), f"{what}: {yamlsrc.clean_quotes(problem)}")
    return ref


WRITE_PARAM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")


def _write_param(ctx: Loading, params: LDict, name: str, what: str) -> str | FromFile | None:
    """One write parameter as the text Vault takes: `${VAR}` expanded, numbers and booleans
    as written, a list comma-joined (alt_names, ip_sans), `{file: PATH}` read at write time.
    A value is never quoted in a message: it could be sensitive."""
    chk, where, value = ctx.chk, params.at(name), params[name]
    if not WRITE_PARAM_RE.match(name):
        chk.add(where, f"{what}: bad write parameter name {shown(name)}")
        return None
    if isinstance(value, LDict):
        if set(value) != {"file"} or not isinstance(value["file"], str) or not value["file"]:
            chk.add(where, f"{what}: write parameter {name}: a mapping must be {{file: PATH}}")
            return None
        path = _expand_param(ctx, value["file"], where, f"{what}: write parameter {name}")
        return FromFile(str(ctx.base_dir / path))
    if isinstance(value, LList) and all(_scalar(v) for v in value):
        return ",".join(_expand_param(ctx, _text(v), where, f"{what}: write parameter {name}") for v in value)
    if not _scalar(value):
        chk.add(
            where,
            f"{what}: write parameter {name} must be a string, a number, true/false, a list of "
            f"those or {{file: PATH}}, not {type_name(value)}",
        )
        return None
    return _expand_param(ctx, _text(value), where, f"{what}: write parameter {name}")


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and not isinstance(value, datetime.date)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _expand_param(ctx: Loading, text: str, where: Loc, what: str) -> str:
    try:
        return expand_vars(text, ctx.environ, lenient=ctx.lenient)
    except RefSyntaxError as e:
        ctx.chk.add(where, f"{what}: {e}")
        return text


def _load_env(chk: Checker, data: LDict, manifest: Manifest) -> None:
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


def missing_extras(manifest: Manifest) -> list[str]:
    """The pip extras that would bring the client libraries this manifest's providers lack."""
    used = {manifest.providers[s.ref.scheme].type for s in manifest.secrets.values() if s.ref}
    return sorted({providers.TYPES[t].extra or t for t in used if providers.missing_sdk(t)})


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
