"""YAML loading that remembers where every value came from, within limits.

The tree is built from parser events with an explicit stack (never recursion),
so nesting depth, alias count and the size of the tree with aliases expanded
are checked while reading: an alias bomb or a 10,000-level nesting stops at the
first value past its limit, in bounded time and memory. An alias shares the
anchored value (no copy) but counts its full size.

Every value keeps its location (a side table on each mapping and list), and
integers keep their source text, so `mode: 440` (decimal) can be told from
`mode: 0440` (octal). Duplicate keys, merge keys, unknown tags and invalid
dates are problems with a location, never exceptions. Messages never quote
manifest text except short identifier-like tokens (`errors.shown`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from initfetch.errors import Loc, Problem, shown
from initfetch.limits import Limits, exceeded

try:  # the C parser is several times faster; fall back where libyaml is absent
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

_YAML_TAG = "tag:yaml.org,2002:"
_MAP_TAGS = {None, "!", _YAML_TAG + "map"}
_SEQ_TAGS = {None, "!", _YAML_TAG + "seq"}
_SCALAR_KINDS = {"str", "int", "float", "bool", "null", "timestamp", "binary"}
_QUOTED = re.compile(r"'([^']*)'|\"([^\"]*)\"")


class LDict(dict[str, Any]):
    """A mapping with its own location, the location of each key, and integers' source text."""

    loc: Loc
    key_locs: dict[str, Loc]
    texts: dict[str, str]

    def at(self, key: str) -> Loc:
        return self.key_locs.get(key, self.loc)

    def text(self, key: str) -> str | None:
        """How an integer value was written (`0440`, `440`), None for any other value."""
        return getattr(self, "texts", {}).get(key)


class LList(list[Any]):
    loc: Loc
    item_locs: list[Loc]

    def at(self, index: int) -> Loc:
        return self.item_locs[index] if index < len(self.item_locs) else self.loc


class _Stop(Exception):
    """A limit was hit: the rest of the document is not read."""


@dataclass
class _Value:
    value: Any
    loc: Loc
    size: int  # values in it, aliases expanded
    text: str | None = None  # an integer's source text
    is_merge_key: bool = False


@dataclass
class _Open:
    """A mapping or list being built."""

    value: LDict | LList
    anchor: str | None
    start_total: int
    key: _Value | None = None  # a mapping's key waiting for its value


def load(text: str, file: str, limits: Limits | None = None) -> tuple[Any, list[Problem]]:
    """Parse YAML text into located values; problems instead of exceptions.

    A limit that is hit, or a syntax error, gives `(None, [that problem])`.
    """
    return _Builder(text, file, limits or Limits()).run()


class _Builder:
    def __init__(self, text: str, file: str, limits: Limits) -> None:
        self.text = text
        self.file = file
        self.limits = limits
        self.problems: list[Problem] = []
        self.stack: list[_Open] = []
        self.anchors: dict[str, _Value] = {}
        self.aliases = 0
        self.total = 0  # values so far, aliases expanded
        self.documents = 0
        self.root: _Value | None = None
        self.helper = _Loader("")  # resolves plain scalars' tags and constructs their values

    def run(self) -> tuple[Any, list[Problem]]:
        loader = None
        try:
            loader = _Loader(self.text)  # the pure-Python reader checks characters here already
            while loader.check_event():
                self.event(loader.get_event())
        except _Stop:
            return None, self.problems[-1:]
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            where = self.loc(mark) if mark else Loc(self.file)
            return None, [
                Problem(where, f"invalid YAML: {clean_quotes(e.problem or e.context or 'syntax error')}")
            ]
        except yaml.reader.ReaderError as e:
            return None, [Problem(self.at_offset(e.position), "invalid YAML: a control character")]
        except yaml.YAMLError as e:
            return None, [Problem(Loc(self.file), f"invalid YAML: {type(e).__name__}")]
        finally:
            if loader is not None:
                loader.dispose()
            self.helper.dispose()
        return (self.root.value if self.root else None), self.problems

    # --- events ---------------------------------------------------------------------

    def event(self, ev: yaml.Event | None) -> None:
        if isinstance(ev, yaml.DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                self.stop(
                    self.loc(ev.start_mark), "a manifest is a single YAML document (found a second '---')"
                )
        elif isinstance(ev, yaml.ScalarEvent):
            self.add(self.scalar(ev), ev.anchor)
        elif isinstance(ev, yaml.AliasEvent):
            self.alias(ev)
        elif isinstance(ev, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            self.start(ev)
        elif isinstance(ev, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            done = self.stack.pop()
            self.add(_Value(done.value, done.value.loc, self.total - done.start_total + 1), done.anchor)

    def start(self, ev: yaml.CollectionStartEvent) -> None:
        where = self.loc(ev.start_mark)
        if len(self.stack) >= self.limits.yaml_depth:
            self.stop(where, exceeded("yaml_depth", self.limits.yaml_depth))
        self.count(1, where)
        is_map = isinstance(ev, yaml.MappingStartEvent)
        value: LDict | LList
        if is_map:
            value = LDict()
            value.key_locs, value.texts = {}, {}
        else:
            value = LList()
            value.item_locs = []
        value.loc = where
        if ev.tag not in (_MAP_TAGS if is_map else _SEQ_TAGS):
            self.problems.append(Problem(where, f"unsupported YAML tag {shown(ev.tag)}"))
        self.stack.append(_Open(value, ev.anchor, self.total))

    def scalar(self, ev: yaml.ScalarEvent) -> _Value:
        where = self.loc(ev.start_mark)
        self.count(1, where)
        tag = ev.tag
        if tag is None or tag == "!":
            tag = self.helper.resolve(yaml.ScalarNode, ev.value, ev.implicit)
        if tag == _YAML_TAG + "str":
            return _Value(ev.value, where, 1)
        if tag == _YAML_TAG + "merge":
            return _Value(ev.value, where, 1, is_merge_key=True)
        kind = tag[len(_YAML_TAG) :] if tag.startswith(_YAML_TAG) else ""
        if kind not in _SCALAR_KINDS:
            self.problems.append(Problem(where, f"unsupported YAML tag {shown(tag)}"))
            return _Value(None, where, 1)
        node = yaml.ScalarNode(tag, ev.value, ev.start_mark, ev.end_mark, ev.style)  # type: ignore[arg-type]
        try:
            value = self.helper.yaml_constructors[tag](self.helper, node)
        except (yaml.YAMLError, ValueError, OverflowError, TypeError):
            # e.g. `2024-02-30`: shaped like a date, but no such day
            what = "date" if kind == "timestamp" else kind
            self.problems.append(Problem(where, f"invalid {what} value (quote it if it is a string)"))
            return _Value(None, where, 1)
        return _Value(value, where, 1, ev.value if kind == "int" else None)

    def alias(self, ev: yaml.AliasEvent) -> None:
        where = self.loc(ev.start_mark)
        self.aliases += 1
        if self.aliases > self.limits.yaml_aliases:
            self.stop(where, exceeded("yaml_aliases", self.limits.yaml_aliases))
        open_ = next((o for o in self.stack if o.anchor == ev.anchor), None)
        if open_ is not None:  # an alias to a collection that contains it
            self.problems.append(Problem(open_.value.loc, "recursive YAML alias"))
            self.add(_Value(None, where, 1), None)
            return
        target = self.anchors.get(ev.anchor or "")
        if target is None:
            self.problems.append(Problem(where, f"undefined YAML alias {shown(ev.anchor)}"))
            self.add(_Value(None, where, 1), None)
            return
        self.count(target.size, where)
        self.add(_Value(target.value, where, target.size, target.text, target.is_merge_key), None)

    # --- building -------------------------------------------------------------------

    def add(self, item: _Value, anchor: str | None) -> None:
        if anchor is not None:
            self.anchors[anchor] = item
        if not self.stack:
            self.root = item
            return
        top = self.stack[-1]
        if isinstance(top.value, LList):
            top.value.append(item.value)
            top.value.item_locs.append(item.loc)
            return
        if top.key is None:
            top.key = item
            return
        key, top.key = top.key, None
        m = top.value
        if key.is_merge_key:
            self.problems.append(Problem(key.loc, "YAML merge keys (<<) are not supported"))
        elif not isinstance(key.value, str):
            self.problems.append(Problem(key.loc, "mapping keys must be strings (quote it)"))
        elif key.value in m:
            first = m.key_locs[key.value].line
            self.problems.append(
                Problem(key.loc, f"duplicate key {shown(key.value)} (first at line {first})")
            )
        else:
            m[key.value] = item.value
            m.key_locs[key.value] = key.loc
            if item.text is not None:
                m.texts[key.value] = item.text

    def count(self, n: int, where: Loc) -> None:
        self.total += n
        if self.total > self.limits.yaml_nodes:
            self.stop(where, exceeded("yaml_nodes", self.limits.yaml_nodes))

    def stop(self, where: Loc, message: str) -> None:
        self.problems.append(Problem(where, message))
        raise _Stop

    def loc(self, mark: Any) -> Loc:
        return Loc(self.file, mark.line + 1, mark.column + 1)

    def at_offset(self, offset: int | None) -> Loc:
        if offset is None or not 0 <= offset <= len(self.text):
            return Loc(self.file)
        before = self.text[:offset]
        return Loc(self.file, before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1)


def clean_quotes(message: str) -> str:
    """A message with each 'quoted' or "quoted" part replaced by `shown()` of it.

    For text built by code that quotes what it read (PyYAML, a provider's checks).
    """
    return _QUOTED.sub(lambda m: shown(m.group(1) if m.group(1) is not None else m.group(2)), message)
