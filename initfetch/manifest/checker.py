"""Collecting manifest problems while walking the located YAML tree: every problem is one
line with its place, reported together at the end."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from initfetch.errors import Loc, Problem, shown
from initfetch.manifest import yamlsrc
from initfetch.manifest.yamlsrc import LDict


class Checker:
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


class Quoting:
    """The checker as seen by code that quotes what it read: quoted text goes through `shown()`."""

    def __init__(self, chk: Checker) -> None:
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


@dataclass(frozen=True)
class Loading:
    """What every section's loader needs: where problems go, the environment `${VAR}`s come
    from, whether an unset variable may stay unexpanded (offline checks), and the manifest's
    directory."""

    chk: Checker
    environ: Mapping[str, str]
    lenient: bool
    base_dir: Path
