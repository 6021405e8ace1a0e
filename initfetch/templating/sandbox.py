"""The Jinja sandbox templates render in, bounded in size, memory and time.

Undefined names are errors (StrictUndefined), never empty strings. Templates
see `secrets` (name -> value) and `meta` (name -> provider, version, lease;
never a value). Time is bounded by the run's deadline, checked at every loop
iteration and every call (the only ways a template repeats work), never by
interrupting Python code from outside; sizes are bounded through
initfetch.templating.bounds; the value filters are initfetch.templating.helpers.

Imported only when a manifest has templates or `env:` values: a file-only run
never loads Jinja.
"""

from __future__ import annotations

import functools
import itertools
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import jinja2
import jinja2.nodes
import jinja2.utils
from jinja2.compiler import CodeGenerator, Frame
from jinja2.filters import make_attrgetter
from jinja2.sandbox import ImmutableSandboxedEnvironment

from initfetch.errors import Problem
from initfetch.limits import Limits, exceeded
from initfetch.redact import Redactor, mask
from initfetch.templating.bounds import (
    FILTER_ESTIMATES,
    SEQ,
    binop_estimate,
    call_estimate,
    format_estimate,
    join_estimate,
    size,
)
from initfetch.templating.encoders import TemplateRefused, to_text
from initfetch.templating.helpers import add_filters
from initfetch.templating.messages import template_error

# Above this growth of the process's memory while rendering, give up: a last line of
# defence for amplifications the checks below do not know about.
_MEMORY_FACTOR = 16
_MEMORY_FLOOR = 256 * 1024 * 1024

# Templates `check_templates` parsed when the manifest loaded, by source text: the renderer
# compiles the same sources next, and parsing is a third of that work (30 ms of 120 for a
# template of 2000 placeholders). Each is taken once; a source that changed is parsed anew.
_PARSED: dict[str, jinja2.nodes.Template] = {}


class OutOfTime(BaseException):
    """The deadline passed: a BaseException, so no `except Exception` can swallow it."""


class OutOfMemory(BaseException):
    """Rendering grew the process past its memory budget."""


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

    def parse_for_render(self, source: str) -> jinja2.nodes.Template:
        """Parse `source` and keep the tree for the compile of the same text that follows."""
        ast = self.parse(source)
        _PARSED[source] = ast
        return ast

    def _parse(self, source: str, name: str | None, filename: str | None) -> jinja2.nodes.Template:
        # Every environment is made by `environment()` below, with one syntax: a tree parsed
        # by another one is the tree this one would parse.
        ast = _PARSED.pop(source, None)
        return ast if ast is not None else super()._parse(source, name, filename)

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
            total += size(item, self.max_size)
            if total > self.max_size:
                raise self.too_large()
            items.append(item)
        return items

    def checked(self, value: Any) -> Any:
        if type(value) is str and len(value) <= self.max_size:  # the common case, kept cheap
            return value
        if size(value, self.max_size) > self.max_size:
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
        self.refuse_over(binop_estimate(operator, left, right, self.max_size))
        return self.checked(super().call_binop(context, operator, left, right))

    def call(__self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        __self.tick()  # macros can recurse exponentially without a loop
        target = getattr(__obj, "__self__", None)
        if isinstance(target, str | bytes) and getattr(__obj, "__name__", "") == "join" and args:
            items = args[0]
            if not isinstance(items, SEQ):  # a generator: read it once, within the limit
                items = __self.take(items)
                args = (items, *args[1:])
            __self.refuse_over(join_estimate(items, target, __self.max_size))
        __self.refuse_over(call_estimate(__obj, args, kwargs, __self.max_size))
        return __self.checked(super().call(__context, __obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """`str.format` and `format_map`, refused when the widths they ask for are too large."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        fmt = value.__self__

        def bounded(*args: Any, **kwargs: Any) -> str:
            self.refuse_over(format_estimate(fmt, args, kwargs, self.max_size))
            return wrapped(*args, **kwargs)

        return bounded

    def bound_filters(self) -> None:
        """Wrap every filter: a size estimate first for those that multiply, a size check after."""
        for name, fn in list(self.filters.items()):
            self.filters[name] = self._bounded_filter(name, fn)

    def _bounded_filter(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        skip = 1 if hasattr(fn, "jinja_pass_arg") else 0
        estimate = FILTER_ESTIMATES.get(name)
        sandbox = self

        is_join = name == "join"

        @functools.wraps(fn)  # keeps jinja_pass_arg, so Jinja still passes the context
        def bounded(*args: Any, **kwargs: Any) -> Any:
            sandbox.tick()  # a loop's condition or a map() can repeat work without a block
            if is_join and len(args) > skip and not isinstance(args[skip], SEQ):
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


def environment(
    base_dir: Path,
    redactor: Redactor | None = None,
    max_size: int = Limits().output_size,
    hidden: Mapping[str, str] | None = None,
    *,
    preview: bool = False,
) -> Sandbox:
    """The sandbox. `preview`: a render of placeholders for a masked preview, where `hidden`
    maps real paths of secret files to the label an `{% include %}` of them shows instead."""
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

    add_filters(env, redactor, preview)
    env.bound_filters()
    return env


def _finalize(value: Any) -> Any:
    """`{{ x }}` of a dict/list prints JSON, of bytes prints UTF-8 text, never a Python repr."""
    if isinstance(value, dict | list | bytes):
        return to_text(value)
    return value
