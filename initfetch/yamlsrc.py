"""YAML loading that remembers where every value came from.

PyYAML's composer gives nodes with marks; we convert them to plain dicts,
lists and scalars, and keep a side table of locations so every manifest
problem can name its file and line. Duplicate keys are errors (PyYAML would
silently keep the last one).
"""

from __future__ import annotations

from typing import Any

import yaml

from initfetch.errors import Loc, Problem

try:  # the C loader is several times faster; fall back where libyaml is absent
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]


class LDict(dict[str, Any]):
    """A mapping with its own location and the location of each key."""

    loc: Loc
    key_locs: dict[str, Loc]

    def at(self, key: str) -> Loc:
        return self.key_locs.get(key, self.loc)


class LList(list[Any]):
    loc: Loc
    item_locs: list[Loc]

    def at(self, index: int) -> Loc:
        return self.item_locs[index] if index < len(self.item_locs) else self.loc


def _loc(file: str, node: yaml.Node) -> Loc:
    return Loc(file, node.start_mark.line + 1, node.start_mark.column + 1)


def load(text: str, file: str) -> tuple[Any, list[Problem]]:
    """Parse YAML text into located values; problems instead of exceptions."""
    problems: list[Problem] = []
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = Loc(file, mark.line + 1, mark.column + 1) if mark else Loc(file)
        return None, [Problem(where, f"invalid YAML: {e.problem or e.context}")]
    except yaml.YAMLError as e:
        return None, [Problem(Loc(file), f"invalid YAML: {type(e).__name__}")]
    if node is None:
        return None, problems
    return _convert(node, file, problems), problems


def _convert(
    node: yaml.Node, file: str, problems: list[Problem], active: frozenset[int] = frozenset()
) -> Any:
    if isinstance(node, yaml.MappingNode | yaml.SequenceNode):
        if id(node) in active:  # an alias to a node that contains it
            problems.append(Problem(_loc(file, node), "recursive YAML alias"))
            return None
        active = active | {id(node)}
    if isinstance(node, yaml.MappingNode):
        out = LDict()
        out.loc, out.key_locs = _loc(file, node), {}
        for key_node, value_node in node.value:
            key = _convert(key_node, file, problems, active)
            where = _loc(file, key_node)
            if key_node.tag == "tag:yaml.org,2002:merge":
                problems.append(Problem(where, "YAML merge keys (<<) are not supported"))
                continue
            if not isinstance(key, str):
                problems.append(Problem(where, "mapping keys must be strings"))
                continue
            if key in out:
                problems.append(
                    Problem(where, f"duplicate key '{key}' (first at line {out.key_locs[key].line})")
                )
                continue
            out[key] = _convert(value_node, file, problems, active)
            out.key_locs[key] = where
        return out
    if isinstance(node, yaml.SequenceNode):
        seq = LList()
        seq.loc, seq.item_locs = _loc(file, node), []
        for item in node.value:
            seq.append(_convert(item, file, problems, active))
            seq.item_locs.append(_loc(file, item))
        return seq
    loader = _Loader("")
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as e:
        problems.append(Problem(_loc(file, node), f"invalid value: {getattr(e, 'problem', None) or e}"))
        return None
    finally:
        loader.dispose()
