"""Template failures worded as one line each, quoting only what the template itself spells out."""

from __future__ import annotations

import binascii
import json
import re
from types import TracebackType

import jinja2
import jinja2.nodes
import jinja2.sandbox

from initfetch.errors import Loc, Problem, ProblemKind
from initfetch.templating.encoders import TemplateRefused


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
    except (jinja2.TemplateSyntaxError, RecursionError):
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


def template_error(e: Exception, file: str, name: str, source: str) -> Problem:
    """One line for a template failure.

    A runtime message may quote a computed value (a key taken from a secret, a
    format string), so a name is repeated only when the message has Jinja's exact
    shape and the name is written literally, as a name, attribute or constant
    key, on the failing line of the template. Anything else gets a generic line.
    """
    if isinstance(e, jinja2.TemplateSyntaxError):
        return Problem(Loc(file, e.lineno or 0), f"template syntax error: {e.message}", ProblemKind.SYNTAX)
    line = _template_line(e.__traceback__, name)
    where = Loc(file, line)
    if isinstance(e, TemplateRefused):
        return Problem(where, f"template error: {e}", ProblemKind.VALUE)
    if isinstance(e, RecursionError):
        return Problem(
            where,
            "template error: nested too deeply (a macro or include that calls itself?)",
            ProblemKind.NESTING,
        )
    if isinstance(e, UnicodeError):  # its message quotes the bytes around the bad one
        return Problem(
            where,
            "template error: a value is binary, not UTF-8 text (b64encode can encode it)",
            ProblemKind.VALUE,
        )
    if isinstance(e, MemoryError):
        return Problem(where, "template error: out of memory", ProblemKind.LIMIT)
    if isinstance(e, jinja2.TemplateNotFound):
        # Only a name written in the template is repeated: a computed one may come from a value.
        quoted = isinstance(e.name, str) and any(q + e.name + q in source for q in "'\"")
        what = repr(e.name) if quoted else "(a name computed at render time)"
        return Problem(
            where,
            f"template error: template {what} not found (templates are read from the manifest's directory)",
            ProblemKind.MISSING_INCLUDE,
        )
    message = str(getattr(e, "message", None) or e)
    if isinstance(e, jinja2.UndefinedError | jinja2.sandbox.SecurityError):
        pattern = _UNSAFE_ATTRIBUTE if isinstance(e, jinja2.sandbox.SecurityError) else None
        match = (pattern or _NO_ATTRIBUTE).match(message) or (
            None if pattern else _UNDEFINED_NAME.match(message)
        )
        literal = bool(match) and match.group("name") in _static_names(source, line)  # type: ignore[union-attr]
        if isinstance(e, jinja2.sandbox.SecurityError):
            return Problem(
                where,
                f"not allowed in a template: {message if literal else 'unsafe access'}",
                ProblemKind.NOT_ALLOWED,
            )
        detail = message if literal else "a name or key computed at render time does not exist"
        return Problem(where, f"undefined: {detail}", ProblemKind.UNDEFINED)
    if isinstance(e, _SAFE_MESSAGES):
        return Problem(where, f"template error: {type(e).__name__}: {message}", ProblemKind.VALUE)
    return Problem(
        where,
        f"template error: {type(e).__name__} (message not shown: it may quote a value)",
        ProblemKind.VALUE,
    )
