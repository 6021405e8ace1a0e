"""The Jinja sandbox templates render in, bounded in size, memory and time.

Undefined names are errors (StrictUndefined), never empty strings. Filters
that derive a new string from a secret (base64, quoting) register their output
with the redactor, so a masked preview and the logs hide the derived form too.
Templates see `secrets` (name -> value) and `meta` (name -> provider, version,
lease; never a value). Template errors are worded here, quoting only what the
template itself spells out.

Imported only when a manifest has templates or `env:` values: a file-only run
never loads Jinja.
"""

from __future__ import annotations

import binascii
import functools
import itertools
import json
import math
import os
import re
import string
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import jinja2
import jinja2.nodes
import jinja2.utils
from jinja2.compiler import CodeGenerator, Frame
from jinja2.filters import make_attrgetter
from jinja2.sandbox import ImmutableSandboxedEnvironment

from initfetch.encoders import (
    TemplateRefused,
    b64decode,
    b64encode,
    dotenv_quote,
    shell_quote,
    to_json,
    to_text,
    to_yaml,
)
from initfetch.errors import Loc, Problem
from initfetch.limits import Limits, exceeded
from initfetch.manifest import Manifest
from initfetch.redact import Redactor, mask

# --- bounds: no template may take unbounded memory or time ---------------------
#
# Every value a template computes is kept under the output limit (a bigger one could
# never be written anyway), checked *before* the operations that multiply sizes (`*`,
# `**`, `%`, widths, `join`, `replace`, ...) so that nothing huge is ever allocated,
# and after every other operation. Time is bounded by the run's deadline, checked at
# every loop iteration and every call (the only ways a template repeats work), never
# by interrupting Python code from outside.

# Python itself refuses to print an int of more than 4300 digits; there is no use
# for bigger ones in a config, and multiplying them is what makes `9 ** (9 ** 9)` slow.
MAX_INT_DIGITS = 4300
_MAX_INT_BITS = int(MAX_INT_DIGITS * math.log2(10)) + 1
# Above this growth of the process's memory while rendering, give up: a last line of
# defence for amplifications the checks below do not know about.
_MEMORY_FACTOR = 16
_MEMORY_FLOOR = 256 * 1024 * 1024


class OutOfTime(BaseException):
    """The deadline passed: a BaseException, so no `except Exception` can swallow it."""


class OutOfMemory(BaseException):
    """Rendering grew the process past its memory budget."""


def _size(value: Any, budget: int) -> int:
    """Roughly how many bytes `value` renders to; stops counting once over `budget`."""
    total = 0
    stack = [value]
    while stack and total <= budget:
        v = stack.pop()
        if isinstance(v, str | bytes | bytearray):
            total += len(v)
        elif isinstance(v, bool) or v is None:
            total += 1
        elif isinstance(v, int):
            total += v.bit_length() // 3 + 1
        elif isinstance(v, list | tuple | set | frozenset):
            total += len(v) + 1
            stack.extend(itertools.islice(v, budget - total + 1))
        elif isinstance(v, dict):
            total += len(v) + 1
            for k, item in itertools.islice(v.items(), budget - total + 1):
                stack.append(k)
                stack.append(item)
        else:
            total += 1
    return total


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


# printf-style conversions (`%-10.3s`, `%(name)0*d`): the widths are what can blow up
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")


def _percent_estimate(fmt: Any, args: Any, budget: int) -> int:
    """An upper bound on the length of `fmt % args`."""
    if not isinstance(fmt, str | bytes):
        return 0
    text = fmt if isinstance(fmt, str) else fmt.decode("latin-1")
    items = (
        list(args.values()) if isinstance(args, dict) else list(args) if isinstance(args, tuple) else [args]
    )
    # %(name)s may repeat one argument many times: count every conversion as the biggest one
    biggest = max((_size(a, budget) for a in items), default=0)
    stars = sum(abs(_int(a)) for a in items)
    total = len(text)
    for m in _PERCENT_SPEC.finditer(text):
        total += biggest
        for width in m.groups():
            total += stars if width == "*" else int(width) if width else 0
        if total > budget:
            break
    return total


def _format_estimate(fmt: str, args: Iterable[Any], kwargs: Mapping[str, Any], budget: int) -> int:
    """An upper bound on the length of `fmt.format(*args, **kwargs)`."""
    items = [*args, *kwargs.values()]
    if any(isinstance(a, Mapping) for a in items):  # format_map
        items += [v for a in items if isinstance(a, Mapping) for v in a.values()]
    biggest = max((_size(a, budget) for a in items), default=0)
    # a width taken from an argument may be an int or a string of digits
    numbers = sum(abs(_int(a)) for a in items) + sum(
        int(d[:19]) for a in items if isinstance(a, str) for d in re.findall(r"\d+", a[:1000])
    )
    total = len(fmt)
    try:
        fields = string.Formatter().parse(fmt)
        for _, name, spec, _ in fields:
            if name is None:
                continue
            total += biggest
            if spec and "{" in spec:  # a width taken from the arguments
                total += numbers
            total += sum(int(d) for d in re.findall(r"\d+", spec or ""))
            if total > budget:
                break
    except ValueError:
        return total  # a malformed format fails when it runs
    return total


def _binop_estimate(operator: str, left: Any, right: Any, budget: int) -> int | None:
    """The size of `left operator right` before computing it, for the operators that multiply."""
    if operator == "*":
        if isinstance(left, int) and not isinstance(left, bool):
            left, right = right, left
        if isinstance(left, str | bytes | list | tuple) and isinstance(right, int):
            return _size(left, budget) * max(right, 0)
        if isinstance(left, int) and isinstance(right, int):
            _check_int_bits(left.bit_length() + right.bit_length())
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            _check_int_bits(right * math.log2(abs(left)))
    elif operator == "%":
        return _percent_estimate(left, right, budget)
    elif operator == "+" and isinstance(left, _SEQ) and isinstance(right, _SEQ):
        return _size(left, budget) + _size(right, budget)
    return None


def _check_int_bits(bits: float) -> None:
    if bits > _MAX_INT_BITS:
        raise TemplateRefused(f"a number would have more than {MAX_INT_DIGITS} digits")


_SEQ = (str, bytes, list, tuple)
_WIDTH_METHODS = {"ljust", "rjust", "center", "zfill"}


def _call_estimate(obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], budget: int) -> int | None:
    """The size a call will produce, for the str/bytes methods and globals that can multiply."""
    target = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", "")
    if isinstance(target, str | bytes):
        n = len(target)
        if name in _WIDTH_METHODS and args:
            return max(n, _int(args[0]))
        if name == "expandtabs":
            tab = _int(args[0] if args else kwargs.get("tabsize", 8))
            tabs = target.count("\t") if isinstance(target, str) else target.count(b"\t")
            return n + tabs * tab
        if name == "replace" and len(args) >= 2:
            return _replace_estimate(target, args[0], args[1], args[2] if len(args) > 2 else -1)
        if name == "translate" and args and isinstance(args[0], Mapping):
            longest = max((_size(v, budget) for v in args[0].values()), default=1)
            return n * max(longest, 1)
        return None
    if obj is jinja2.utils.generate_lorem_ipsum:
        count = _int(args[0] if args else kwargs.get("n", 5))
        words = _int(args[3] if len(args) > 3 else kwargs.get("max", 100))
        return count * words * 16  # at most 16 bytes a word, with punctuation
    return None


def _replace_estimate(text: Any, old: Any, new: Any, count: Any = -1) -> int:
    if not isinstance(text, str | bytes) or type(old) is not type(text) or type(new) is not type(text):
        return 0
    haystack: Any = text  # str or bytes, with `old` of the same type
    times = haystack.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        times = min(times, count)
    return len(text) + times * max(0, len(new) - len(old))


def _join_estimate(items: Any, separator: Any, budget: int) -> int:
    sep = len(separator) if isinstance(separator, str | bytes) else 0
    if isinstance(items, str | bytes):  # joining a string puts the separator between its characters
        return len(items) + sep * max(len(items) - 1, 0)
    total = sep * max(len(items) - 1, 0)
    for item in items:
        total += _size(item, budget)
        if total > budget:
            break
    return total


def _json_estimate(value: Any, indent: Any, budget: int) -> int:
    """Indentation repeats with depth: a deep value times a wide indent is huge."""
    step = _int(indent) if not isinstance(indent, str) else len(indent)
    total = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack and total <= budget:
        v, depth = stack.pop()
        total += depth * step + 2
        if isinstance(v, dict):
            stack.extend((item, depth + 1) for item in v.values())
            total += sum(len(str(k)) + 4 for k in v)
        elif isinstance(v, list | tuple):
            stack.extend((item, depth + 1) for item in v)
        else:
            total += _size(v, budget) * 2  # escapes at most double a string... or \\uXXXX six-fold
    return total


class _CodeGenerator(CodeGenerator):
    """Jinja's compiler, plus a deadline check at the start of every block (each loop
    iteration runs one) and a size check on every `~` concatenation."""

    def blockvisit(self, nodes: Iterable[jinja2.nodes.Node], frame: Frame) -> None:
        self.writeline("environment.tick()")
        super().blockvisit(nodes, frame)

    def visit_Concat(self, node: jinja2.nodes.Concat, frame: Frame) -> None:
        self.write("environment.checked(")
        super().visit_Concat(node, frame)
        self.write(")")

    # Literal containers: `[x, x, x, ...]` of a large x is large without any operator.
    def visit_List(self, node: jinja2.nodes.List, frame: Frame) -> None:
        self.write("environment.checked(")
        super().visit_List(node, frame)
        self.write(")")

    def visit_Dict(self, node: jinja2.nodes.Dict, frame: Frame) -> None:
        self.write("environment.checked(")
        super().visit_Dict(node, frame)
        self.write(")")

    def visit_Tuple(self, node: jinja2.nodes.Tuple, frame: Frame) -> None:
        if node.ctx != "load":  # an assignment target (`for a, b in ...`), not a value
            super().visit_Tuple(node, frame)
            return
        self.write("environment.checked(")
        super().visit_Tuple(node, frame)
        self.write(")")


def _statm_rss() -> int | None:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


try:
    _PAGE = os.sysconf("SC_PAGE_SIZE")
except (ValueError, OSError, AttributeError):  # pragma: no cover - not Linux
    _PAGE = 4096


class Sandbox(ImmutableSandboxedEnvironment):
    """The template sandbox, with bounds on size, time and memory (see above)."""

    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, *args: Any, max_size: int = Limits().output_size, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_size = max_size
        self.deadline: float | None = None
        self.memory_budget = max(_MEMORY_FLOOR, _MEMORY_FACTOR * max_size)
        self._rss_start: int | None = None
        self._rss_next = 0.0

    def error(self, e: Exception, file: str, name: str, source: str) -> Problem:
        """The one line for a template that failed (see template_error)."""
        return template_error(e, file, name, source)

    def start_clock(self, deadline: float | None) -> None:
        self.deadline = deadline
        self._rss_start = _statm_rss()

    def tick(self) -> None:
        """Called at every loop iteration, call and template: the deadline and memory budget."""
        now = time.monotonic()
        if self.deadline is not None and now > self.deadline:
            raise OutOfTime
        # memory at most every millisecond: reading it costs a few microseconds, and
        # nothing allocates more than a few MiB in between besides one checked value
        if now >= self._rss_next and self._rss_start is not None:
            self._rss_next = now + 0.001
            rss = _statm_rss()
            if rss is not None and rss - self._rss_start > self.memory_budget:
                raise OutOfMemory

    def too_large(self) -> TemplateRefused:
        return TemplateRefused(
            f"a value computed in the template is too large: {exceeded('output_size', self.max_size)}"
        )

    def refuse_over(self, estimate: int | None) -> None:
        if estimate is not None and estimate > self.max_size:
            raise self.too_large()

    def take(self, iterable: Any) -> list[Any]:
        """A generator's items, refused as soon as together they pass the limit."""
        items: list[Any] = []
        total = 0
        for item in iterable:
            total += _size(item, self.max_size)
            if total > self.max_size:
                raise self.too_large()
            items.append(item)
        return items

    def checked(self, value: Any) -> Any:
        if type(value) is str and len(value) <= self.max_size:  # the common case, kept cheap
            return value
        if _size(value, self.max_size) > self.max_size:
            raise self.too_large()
        return value

    def concat(self, pieces: Iterable[str]) -> str:
        """The join of a macro's, a `{% set %}` block's or a filter block's output."""
        buf = pieces if isinstance(pieces, list) else list(pieces)
        total = 0
        for piece in buf:
            total += len(piece)
            if total > self.max_size:
                raise self.too_large()
        return "".join(buf)

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        self.tick()
        self.refuse_over(_binop_estimate(operator, left, right, self.max_size))
        return self.checked(super().call_binop(context, operator, left, right))

    def call(__self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        __self.tick()  # macros can recurse exponentially without a loop
        target = getattr(__obj, "__self__", None)
        if isinstance(target, str | bytes) and getattr(__obj, "__name__", "") == "join" and args:
            items = args[0]
            if not isinstance(items, _SEQ):  # a generator: read it once, within the limit
                items = __self.take(items)
                args = (items, *args[1:])
            __self.refuse_over(_join_estimate(items, target, __self.max_size))
        __self.refuse_over(_call_estimate(__obj, args, kwargs, __self.max_size))
        return __self.checked(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`str.format` and `format_map`, refused when the widths they ask for are too large."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__

        def bounded(*args: Any, **kwargs: Any) -> str:
            self.refuse_over(_format_estimate(fmt, args, kwargs, self.max_size))
            return wrapped(*args, **kwargs)

        return bounded

    def bound_filters(self) -> None:
        """Wrap every filter: a size estimate first for those that multiply, a size check after."""
        for name, fn in list(self.filters.items()):
            self.filters[name] = self._bounded_filter(name, fn)

    def _bounded_filter(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        skip = 1 if hasattr(fn, "jinja_pass_arg") else 0
        estimate = _FILTER_ESTIMATES.get(name)
        sandbox = self

        is_join = name == "join"

        @functools.wraps(fn)  # keeps jinja_pass_arg, so Jinja still passes the context
        def bounded(*args: Any, **kwargs: Any) -> Any:
            sandbox.tick()  # a loop's condition or a map() can repeat work without a block
            if is_join and len(args) > skip and not isinstance(args[skip], _SEQ):
                args = (*args[:skip], sandbox.take(args[skip]), *args[skip + 1 :])
            # with the value alone, every filter's output is linear in its input
            if estimate is not None and (len(args) > skip + 1 or kwargs or is_join):
                try:
                    guess = estimate(sandbox.max_size, *args[skip:], **kwargs)
                except TypeError:
                    guess = None  # wrong arguments: the filter itself says so
                sandbox.refuse_over(guess)
            return sandbox.checked(fn(*args, **kwargs))

        return bounded


def _est_format(budget: int, value: Any, *args: Any, **kwargs: Any) -> int:
    return _percent_estimate(value, kwargs or args, budget)


def _est_center(budget: int, value: Any, width: Any = 80) -> int:
    return max(_size(value, budget), _int(width))


def _est_indent(budget: int, s: Any, width: Any = 4, first: Any = False, blank: Any = False) -> int:
    text = str(s) if isinstance(s, str) else ""
    step = len(width) if isinstance(width, str) else _int(width)
    return len(text) + (text.count("\n") + 1) * step


def _est_wordwrap(
    budget: int,
    s: Any,
    width: Any = 79,
    break_long_words: Any = True,
    wrapstring: Any = None,
    break_on_hyphens: Any = True,
) -> int:
    text = s if isinstance(s, str) else ""
    wrap = len(wrapstring) if isinstance(wrapstring, str) else 1
    lines = len(text) // max(_int(width), 1) + text.count(" ") + text.count("\n") + 1
    return len(text) + lines * wrap


def _est_replace(budget: int, s: Any, old: Any, new: Any, count: Any = None) -> int:
    return _replace_estimate(
        str(s) if not isinstance(s, str) else s, old, new, -1 if count is None else count
    )


def _est_join(budget: int, value: Any, d: Any = "", attribute: Any = None) -> int:
    return _join_estimate(value, d, budget)


def _est_batch(budget: int, value: Any, linecount: Any, fill_with: Any = None) -> int:
    return _size(value, budget) + (_int(linecount) if fill_with is not None else 0)


def _est_slice(budget: int, value: Any, slices: Any, fill_with: Any = None) -> int:
    return _size(value, budget) + _int(slices)


def _est_json(budget: int, value: Any, indent: Any = None) -> int:
    return _json_estimate(value, indent, budget) if indent else 0


_FILTER_ESTIMATES: dict[str, Callable[..., int]] = {
    "format": _est_format,
    "center": _est_center,
    "indent": _est_indent,
    "wordwrap": _est_wordwrap,
    "replace": _est_replace,
    "join": _est_join,
    "batch": _est_batch,
    "slice": _est_slice,
    "tojson": _est_json,
    "json": _est_json,
}


@jinja2.pass_environment
def _sum(environment: jinja2.Environment, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    """Jinja's `sum`, but lists are chained in linear time (sum() copies them quadratically)."""
    items = list(iterable if attribute is None else map(make_attrgetter(environment, attribute), iterable))
    if isinstance(start, list) and all(isinstance(i, list) for i in items):
        return list(itertools.chain(start, *items))
    return sum(items, start)


class _HidingLoader(jinja2.FileSystemLoader):
    """Templates from the manifest's directory, except that a file which is also a
    secret's source (file://) reads as its placeholder: for masked previews."""

    def __init__(self, base_dir: Path, hidden: Mapping[str, str]) -> None:
        super().__init__(str(base_dir))
        self.hidden = hidden

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str, Callable[[], bool]]:
        source, filename, uptodate = super().get_source(environment, template)
        label = self.hidden.get(os.path.realpath(filename))
        if label is not None:  # the layout stays: the file's own final newline is not a value
            source = mask(label) + ("\n" if source.endswith("\n") else "")
        return source, filename, uptodate


# Encoders whose output does not show their input (quoting ones do): in a preview, applied
# to a placeholder, they give a marked placeholder such as <secret:tls_key|b64>, not the
# base64 of "<secret:tls_key>", which would look like a leaked value. Decoders stay as
# they are: decoding a placeholder fails, so a template that needs real content is hidden.
TRANSFORMING = frozenset({"b64"})


def _is_placeholder(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("<secret:") and value.endswith(">")


def environment(
    base_dir: Path,
    redactor: Redactor | None = None,
    max_size: int = Limits().output_size,
    hidden: Mapping[str, str] | None = None,
) -> Sandbox:
    """The sandbox; `hidden` maps real paths of secret files to the placeholder label
    an `{% include %}` of them shows instead (masked previews)."""
    env = Sandbox(
        loader=_HidingLoader(base_dir, hidden) if hidden else jinja2.FileSystemLoader(str(base_dir)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        auto_reload=False,
        finalize=_finalize,
        max_size=max_size,
    )
    env.filters["sum"] = _sum

    shadow = hidden is not None  # a preview's render of placeholders, not of values

    def derived(fn: Callable[..., Any], tag: str) -> Callable[..., Any]:
        def wrapper(value: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(value, jinja2.Undefined):
                value._fail_with_undefined_error()  # the undefined name, not a TypeError
            if shadow and tag in TRANSFORMING and _is_placeholder(value):
                # base64 of "<secret:x>" would look like a leaked value: say what it stands for.
                return mask(f"{str(value)[len('<secret:') : -1]}|{tag}")
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
        "shquote": (shell_quote, "sh"),
        "dotenv": (dotenv_quote, "dotenv"),
    }
    for name, (fn, tag) in filters.items():
        env.filters[name] = derived(fn, tag)
    env.bound_filters()
    return env


def _finalize(value: Any) -> Any:
    """`{{ x }}` of a dict/list prints JSON, of bytes prints UTF-8 text, never a Python repr."""
    if isinstance(value, dict | list | bytes):
        return to_text(value)
    return value


def _contains_secret(redactor: Redactor, value: Any) -> bool:
    if isinstance(value, dict):
        return any(_contains_secret(redactor, v) for v in value.values())
    if isinstance(value, list):
        return any(_contains_secret(redactor, v) for v in value)
    return (isinstance(value, str) and redactor.label_of(value) is not None) or isinstance(value, bytes)


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
        return Problem(Loc(file, e.lineno or 0), f"template syntax error: {e.message}")
    line = _template_line(e.__traceback__, name)
    where = Loc(file, line)
    if isinstance(e, TemplateRefused):
        return Problem(where, f"template error: {e}")
    if isinstance(e, RecursionError):
        return Problem(where, "template error: nested too deeply (a macro or include that calls itself?)")
    if isinstance(e, UnicodeError):  # its message quotes the bytes around the bad one
        return Problem(where, "template error: a value is binary, not UTF-8 text (b64encode can encode it)")
    if isinstance(e, MemoryError):
        return Problem(where, "template error: out of memory")
    if isinstance(e, jinja2.TemplateNotFound):
        # Only a name written in the template is repeated: a computed one may come from a value.
        quoted = isinstance(e.name, str) and any(q + e.name + q in source for q in "'\"")
        what = repr(e.name) if quoted else "(a name computed at render time)"
        return Problem(
            where,
            f"template error: template {what} not found (templates are read from the manifest's directory)",
        )
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
        except RecursionError:  # the parser recurses once per nesting level
            prefix = f"{label}: " if where else ""
            problems.append(Problem(where or label, f"{prefix}template syntax error: nested too deeply"))
            continue
        for secret, line in sorted(secrets_used(ast)):
            if secret not in manifest.secrets:
                at = where or Loc(label, line)
                prefix = f"{label}: " if where else ""
                problems.append(
                    Problem(at, f"{prefix}uses secrets.{secret}, which the manifest does not declare")
                )
    return problems
