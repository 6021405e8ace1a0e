"""Rendering: templates and `env:` values, in memory, in a Jinja sandbox.

Undefined names are errors (StrictUndefined), never empty strings. Filters
that derive a new string from a secret (base64, quoting) register their output
with the redactor, so a masked preview and the logs hide the derived form too.
Templates see `secrets` (name -> value) and `meta` (name -> provider, version,
lease; never a value).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import jinja2
import jinja2.nodes
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment

from initfetch.errors import BadInput, Loc, Problem
from initfetch.manifest import EnvFrom, Manifest, env_var_names
from initfetch.redact import Redactor


@dataclass
class Rendered:
    files: dict[str, bytes]  # dest -> content
    env: dict[str, str]


def environment(base_dir: Path, redactor: Redactor | None = None) -> jinja2.Environment:
    env = ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(base_dir)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        auto_reload=False,
        finalize=_finalize,
    )

    def derived(fn: Callable[..., Any], tag: str) -> Callable[..., Any]:
        def wrapper(value: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(value, jinja2.Undefined):
                value._fail_with_undefined_error()  # the undefined name, not a TypeError
            out = fn(value, *args, **kwargs)
            # Output that still contains the input verbatim (quoting) is masked through the input.
            if redactor is not None and not (
                isinstance(value, str) and isinstance(out, str) and value in out
            ):
                label = redactor.label_of(value) if isinstance(value, str) else None
                if label is not None or _contains_secret(redactor, value):
                    redactor.add(out, f"{label or 'derived'}|{tag}")
            return out

        return wrapper

    filters: dict[str, tuple[Callable[..., Any], str]] = {
        "tojson": (to_json, "json"),
        "json": (to_json, "json"),
        "toyaml": (to_yaml, "yaml"),
        "b64encode": (b64encode, "b64"),
        "b64decode": (b64decode, "b64decode"),
        "fromjson": (json.loads, "fromjson"),
        "shquote": (lambda v: shlex.quote(_text(v)), "sh"),
        "dotenv": (dotenv_quote, "dotenv"),
    }
    for name, (fn, tag) in filters.items():
        env.filters[name] = derived(fn, tag)
    return env


def _finalize(value: Any) -> Any:
    """`{{ x }}` of a dict/list prints JSON, of bytes prints UTF-8 text, never a Python repr."""
    if isinstance(value, dict | list | bytes):
        return _text(value)
    return value


def _contains_secret(redactor: Redactor, value: Any) -> bool:
    if isinstance(value, dict):
        return any(_contains_secret(redactor, v) for v in value.values())
    if isinstance(value, list):
        return any(_contains_secret(redactor, v) for v in value)
    return (isinstance(value, str) and redactor.label_of(value) is not None) or isinstance(value, bytes)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return to_json(value)  # dicts, lists, true/false/null as JSON, never a Python repr


def to_json(value: Any, indent: int | None = None) -> str:
    """Plain JSON (Jinja's own tojson HTML-escapes < > & ', which breaks configs)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    return json.dumps(value, indent=indent, ensure_ascii=False)


def to_yaml(value: Any) -> str:
    """A YAML flow scalar or block for any JSON-like value, safe to embed after `key: `."""
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, str):  # always double-quoted, so "yes", "1.0" or "null" stay strings
        dumped = yaml.safe_dump(str(value), default_style='"', width=2**31, allow_unicode=True)
        return dumped.removesuffix("\n...\n").strip()
    if isinstance(value, int | float | bool) or value is None:
        return json.dumps(value)
    return yaml.safe_dump(value, default_flow_style=True, width=2**31, allow_unicode=True).strip()


def b64encode(value: Any) -> str:
    data = value if isinstance(value, bytes) else _text(value).encode("utf-8")
    return base64.b64encode(data).decode("ascii")


def b64decode(value: Any) -> str | bytes:
    data = base64.b64decode(_text(value), validate=True)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def dotenv_quote(value: Any) -> str:
    """Double-quoted dotenv value: backslash, quote, $ and newlines escaped."""
    text = _text(value)
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("\n", "\\n")
    return f'"{escaped}"'


def _template_line(tb: TracebackType | None, name: str) -> int:
    """The template line of a runtime error: Jinja rewrites tracebacks to point at templates."""
    line = 0
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(name):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


# Jinja's messages for a missing name or attribute, and for a blocked attribute.
_UNDEFINED_NAME = re.compile(r"^'(?P<name>[A-Za-z_][A-Za-z0-9_]*)' is undefined$")
_NO_ATTRIBUTE = re.compile(r"^'[\w ]+ object' has no attribute '(?P<name>[A-Za-z_][A-Za-z0-9_]*)'$")
_UNSAFE_ATTRIBUTE = re.compile(
    r"^access to attribute '(?P<name>[A-Za-z_][A-Za-z0-9_]*)' of '\w+' object is unsafe\.?$"
)
# Exceptions whose messages describe a position or a format, never the content.
_SAFE_MESSAGES = (json.JSONDecodeError, binascii.Error)


def _static_names(source: str, line: int) -> set[str]:
    """Names, attributes and constant keys written literally at one line of a template."""
    try:
        ast = jinja2.Environment().parse(source)  # noqa: S701 - parsed only, never rendered
    except jinja2.TemplateSyntaxError:
        return set()
    names: set[str] = set()
    for node in ast.find_all((jinja2.nodes.Name, jinja2.nodes.Getattr, jinja2.nodes.Getitem)):
        if line and node.lineno != line:
            continue
        if isinstance(node, jinja2.nodes.Name):
            names.add(node.name)
        elif isinstance(node, jinja2.nodes.Getattr):
            names.add(node.attr)
        elif isinstance(node, jinja2.nodes.Getitem):
            arg = node.arg
            if isinstance(arg, jinja2.nodes.Const) and isinstance(arg.value, str):
                names.add(arg.value)
    return names


def _error(e: Exception, file: str, name: str, source: str) -> Problem:
    """One line for a template failure.

    A runtime message may quote a computed value (a key taken from a secret, a
    format string), so a name is repeated only when the message has Jinja's exact
    shape and the name is written literally, as a name, attribute or constant
    key, on the failing line of the template. Anything else gets a generic line.
    """
    if isinstance(e, jinja2.TemplateSyntaxError):
        return Problem(Loc(file, e.lineno or 0), f"template syntax error: {e.message}")
    line = _template_line(e.__traceback__, name)
    where = Loc(file, line)
    message = str(getattr(e, "message", None) or e)
    if isinstance(e, jinja2.UndefinedError | jinja2.sandbox.SecurityError):
        pattern = _UNSAFE_ATTRIBUTE if isinstance(e, jinja2.sandbox.SecurityError) else None
        match = (pattern or _NO_ATTRIBUTE).match(message) or (
            None if pattern else _UNDEFINED_NAME.match(message)
        )
        literal = bool(match) and match.group("name") in _static_names(source, line)  # type: ignore[union-attr]
        if isinstance(e, jinja2.sandbox.SecurityError):
            return Problem(where, f"not allowed in a template: {message if literal else 'unsafe access'}")
        detail = message if literal else "a name or key computed at render time does not exist"
        return Problem(where, f"undefined: {detail}")
    if isinstance(e, _SAFE_MESSAGES):
        return Problem(where, f"template error: {type(e).__name__}: {message}")
    return Problem(where, f"template error: {type(e).__name__} (message not shown: it may quote a value)")


@dataclass
class Attempt:
    """Every output rendered that could be, and the problems of those that could not."""

    rendered: Rendered
    problems: list[Problem]
    failed: set[str]  # dests and env names that did not render


def render_each(
    manifest: Manifest,
    values: Mapping[str, Any],
    meta: Mapping[str, Mapping[str, Any]],
    redactor: Redactor | None,
) -> Attempt:
    """Render every output, env value and env_from spread in memory, each on its own."""
    env = environment(manifest.base_dir, redactor)
    context = {"secrets": dict(values), "meta": dict(meta)}
    problems: list[Problem] = []
    failed: set[str] = set()
    files: dict[str, bytes] = {}
    for out in manifest.outputs:
        if out.secret is not None:
            if out.secret in values:
                files[out.dest] = as_bytes(values[out.secret])
            continue  # an optional secret that is absent writes no file
        assert out.src is not None and out.template_name is not None
        try:
            files[out.dest] = env.get_template(out.template_name).render(context).encode("utf-8")
        except Exception as e:
            failed.add(out.dest)
            problems.append(_error(e, str(out.src), out.template_name, out.src.read_text(errors="replace")))
    rendered_env: dict[str, str] = {}
    for name, (source, where) in manifest.env.items():
        try:
            value = env.from_string(source).render(context)
        except Exception as e:
            failed.add(name)
            problems.append(Problem(where, f"env {name}: {_error(e, '', '<template>', source).message}"))
            continue
        if "\0" in value:
            failed.add(name)
            problems.append(Problem(where, f"env {name}: the value contains a NUL byte"))
        rendered_env[name] = value
    for spread in manifest.env_from:
        problem = _spread(spread, values.get(spread.secret), rendered_env)
        if problem:
            failed.add(spread.secret)
            problems.append(problem)
    return Attempt(Rendered(files, rendered_env), problems, failed)


def _spread(spread: EnvFrom, value: Any, out: dict[str, str]) -> Problem | None:
    """env_from: a map-valued secret becomes PREFIX_KEY variables; `env:` entries win."""
    if value is None:
        return None  # an optional secret that is absent
    if not isinstance(value, dict):
        return Problem(spread.loc, f"env_from: secret '{spread.secret}' is not a map of keys")
    try:
        names = env_var_names(value, spread.prefix)
    except ValueError as e:
        return Problem(spread.loc, f"env_from '{spread.secret}': {e}")
    for key, name in names.items():
        try:
            text = as_text(value[key])
        except UnicodeDecodeError:
            return Problem(spread.loc, f"env_from '{spread.secret}': the value of key '{key}' is binary")
        if "\0" in text:
            return Problem(
                spread.loc, f"env_from '{spread.secret}': the value of key '{key}' contains a NUL byte"
            )
        out.setdefault(name, text)
    return None


def render(
    manifest: Manifest,
    values: Mapping[str, Any],
    meta: Mapping[str, Mapping[str, Any]],
    redactor: Redactor | None,
) -> Rendered:
    """Render everything in memory; raise BadInput listing every failure."""
    attempt = render_each(manifest, values, meta, redactor)
    if attempt.problems:
        raise BadInput(attempt.problems, headline="templates failed to render")
    return attempt.rendered


def as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return to_json(value).encode("utf-8")


def as_text(value: Any) -> str:
    """How a non-string value appears in an environment variable."""
    return _text(value)


# --- static checks for `check` (no values needed) -------------------------------


def secrets_used(ast: jinja2.nodes.Template) -> set[tuple[str, int]]:
    """`secrets.X` and `secrets['X']` uses in a template: (name, line)."""
    used: set[tuple[str, int]] = set()
    for node in ast.find_all((jinja2.nodes.Getattr, jinja2.nodes.Getitem)):
        target = getattr(node, "node", None)
        if not (isinstance(target, jinja2.nodes.Name) and target.name in ("secrets", "meta")):
            continue
        if isinstance(node, jinja2.nodes.Getattr):
            used.add((node.attr, node.lineno))
        elif isinstance(node, jinja2.nodes.Getitem):
            arg = node.arg
            if isinstance(arg, jinja2.nodes.Const) and isinstance(arg.value, str):
                used.add((arg.value, node.lineno))
    return used


def check_templates(manifest: Manifest) -> list[Problem]:
    """Syntax of every template and env value, and that each secret they use is declared."""
    env = environment(manifest.base_dir)
    problems: list[Problem] = []
    sources: list[tuple[str, Loc | None, str]] = []
    for out in manifest.outputs:
        if out.src is not None:
            try:
                sources.append((out.src.read_text(encoding="utf-8"), None, str(out.src)))
            except (OSError, UnicodeDecodeError) as e:
                problems.append(Problem(str(out.src), f"cannot read template: {type(e).__name__}"))
    for name, (source, where) in manifest.env.items():
        sources.append((source, where, f"env {name}"))
    for source, where, label in sources:
        try:
            ast = env.parse(source)
        except jinja2.TemplateSyntaxError as e:
            at = where or Loc(label, e.lineno or 0)
            prefix = f"{label}: " if where else ""
            problems.append(Problem(at, f"{prefix}template syntax error: {e.message}"))
            continue
        for secret, line in sorted(secrets_used(ast)):
            if secret not in manifest.secrets:
                at = where or Loc(label, line)
                prefix = f"{label}: " if where else ""
                problems.append(
                    Problem(at, f"{prefix}uses secrets.{secret}, which the manifest does not declare")
                )
    return problems
