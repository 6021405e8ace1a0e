"""Size bounds for template evaluation: upper estimates of what an operation will produce,
computed before it runs.

Every value a template computes is kept under the output limit (a bigger one could
never be written anyway), checked *before* the operations that multiply sizes (`*`,
`**`, `%`, widths, `join`, `replace`, ...) so that nothing huge is ever allocated,
and after every other operation (initfetch.templating.sandbox). Pure functions: no
template engine state, only the values and a budget in bytes.
"""

from __future__ import annotations

import itertools
import math
import re
import string
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jinja2.utils

from initfetch.templating.encoders import TemplateRefused

# Python itself refuses to print an int of more than 4300 digits; there is no use
# for bigger ones in a config, and multiplying them is what makes `9 ** (9 ** 9)` slow.
MAX_INT_DIGITS = 4300
_MAX_INT_BITS = int(MAX_INT_DIGITS * math.log2(10)) + 1


def size(value: Any, budget: int) -> int:
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


def as_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


# printf-style conversions (`%-10.3s`, `%(name)0*d`): the widths are what can blow up
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")


def percent_estimate(fmt: Any, args: Any, budget: int) -> int:
    """An upper bound on the length of `fmt % args`."""
    if not isinstance(fmt, str | bytes):
        return 0
    text = fmt if isinstance(fmt, str) else fmt.decode("latin-1")
    items = (
        list(args.values()) if isinstance(args, dict) else list(args) if isinstance(args, tuple) else [args]
    )
    # %(name)s may repeat one argument many times: count every conversion as the biggest one
    biggest = max((size(a, budget) for a in items), default=0)
    stars = sum(abs(as_int(a)) for a in items)
    total = len(text)
    for m in _PERCENT_SPEC.finditer(text):
        total += biggest
        for width in m.groups():
            total += stars if width == "*" else int(width) if width else 0
        if total > budget:
            break
    return total


def format_estimate(fmt: str, args: Iterable[Any], kwargs: Mapping[str, Any], budget: int) -> int:
    """An upper bound on the length of `fmt.format(*args, **kwargs)`."""
    items = [*args, *kwargs.values()]
    if any(isinstance(a, Mapping) for a in items):  # format_map
        items += [v for a in items if isinstance(a, Mapping) for v in a.values()]
    biggest = max((size(a, budget) for a in items), default=0)
    # a width taken from an argument may be an int or a string of digits
    numbers = sum(abs(as_int(a)) for a in items) + sum(
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


def binop_estimate(operator: str, left: Any, right: Any, budget: int) -> int | None:
    """The size of `left operator right` before computing it, for the operators that multiply."""
    if operator == "*":
        if isinstance(left, int) and not isinstance(left, bool):
            left, right = right, left
        if isinstance(left, str | bytes | list | tuple) and isinstance(right, int):
            return size(left, budget) * max(right, 0)
        if isinstance(left, int) and isinstance(right, int):
            check_int_bits(left.bit_length() + right.bit_length())
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
            check_int_bits(right * math.log2(abs(left)))
    elif operator == "%":
        return percent_estimate(left, right, budget)
    elif operator == "+" and isinstance(left, SEQ) and isinstance(right, SEQ):
        return size(left, budget) + size(right, budget)
    return None


def check_int_bits(bits: float) -> None:
    if bits > _MAX_INT_BITS:
        raise TemplateRefused(f"a number would have more than {MAX_INT_DIGITS} digits")


SEQ = (str, bytes, list, tuple)
_WIDTH_METHODS = {"ljust", "rjust", "center", "zfill"}


def call_estimate(obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], budget: int) -> int | None:
    """The size a call will produce, for the str/bytes methods and globals that can multiply."""
    target = getattr(obj, "__self__", None)
    name = getattr(obj, "__name__", "")
    if isinstance(target, str | bytes):
        n = len(target)
        if name in _WIDTH_METHODS and args:
            return max(n, as_int(args[0]))
        if name == "expandtabs":
            tab = as_int(args[0] if args else kwargs.get("tabsize", 8))
            tabs = target.count("\t") if isinstance(target, str) else target.count(b"\t")
            return n + tabs * tab
        if name == "replace" and len(args) >= 2:
            return replace_estimate(target, args[0], args[1], args[2] if len(args) > 2 else -1)
        if name == "translate" and args and isinstance(args[0], Mapping):
            longest = max((size(v, budget) for v in args[0].values()), default=1)
            return n * max(longest, 1)
        return None
    if obj is jinja2.utils.generate_lorem_ipsum:
        count = as_int(args[0] if args else kwargs.get("n", 5))
        words = as_int(args[3] if len(args) > 3 else kwargs.get("max", 100))
        return count * words * 16  # at most 16 bytes a word, with punctuation
    return None


def replace_estimate(text: Any, old: Any, new: Any, count: Any = -1) -> int:
    if not isinstance(text, str | bytes) or type(old) is not type(text) or type(new) is not type(text):
        return 0
    haystack: Any = text  # str or bytes, with `old` of the same type
    times = haystack.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        times = min(times, count)
    return len(text) + times * max(0, len(new) - len(old))


def join_estimate(items: Any, separator: Any, budget: int) -> int:
    sep = len(separator) if isinstance(separator, str | bytes) else 0
    if isinstance(items, str | bytes):  # joining a string puts the separator between its characters
        return len(items) + sep * max(len(items) - 1, 0)
    total = sep * max(len(items) - 1, 0)
    for item in items:
        total += size(item, budget)
        if total > budget:
            break
    return total


def json_estimate(value: Any, indent: Any, budget: int) -> int:
    """Indentation repeats with depth: a deep value times a wide indent is huge."""
    step = as_int(indent) if not isinstance(indent, str) else len(indent)
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
            total += size(v, budget) * 2  # escapes at most double a string... or \\uXXXX six-fold
    return total


def _est_format(budget: int, value: Any, *args: Any, **kwargs: Any) -> int:
    return percent_estimate(value, kwargs or args, budget)


def _est_center(budget: int, value: Any, width: Any = 80) -> int:
    return max(size(value, budget), as_int(width))


def _est_indent(budget: int, s: Any, width: Any = 4, first: Any = False, blank: Any = False) -> int:
    text = str(s) if isinstance(s, str) else ""
    step = len(width) if isinstance(width, str) else as_int(width)
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
    lines = len(text) // max(as_int(width), 1) + text.count(" ") + text.count("\n") + 1
    return len(text) + lines * wrap


def _est_replace(budget: int, s: Any, old: Any, new: Any, count: Any = None) -> int:
    return replace_estimate(str(s) if not isinstance(s, str) else s, old, new, -1 if count is None else count)


def _est_join(budget: int, value: Any, d: Any = "", attribute: Any = None) -> int:
    return join_estimate(value, d, budget)


def _est_batch(budget: int, value: Any, linecount: Any, fill_with: Any = None) -> int:
    return size(value, budget) + (as_int(linecount) if fill_with is not None else 0)


def _est_slice(budget: int, value: Any, slices: Any, fill_with: Any = None) -> int:
    return size(value, budget) + as_int(slices)


def _est_json(budget: int, value: Any, indent: Any = None) -> int:
    return json_estimate(value, indent, budget) if indent else 0


FILTER_ESTIMATES: dict[str, Callable[..., int]] = {
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
