"""Watch-mode settings in the manifest: `refresh:` and `on_change:`.

    providers:
      vault: {type: vault, refresh: 1m}       # every secret of this instance
    secrets:
      api: {ref: awssm://app/api#key, refresh: 30s}   # the secret's own setting wins
    on_change: {signal: HUP}                  # exec default
    on_change: {restart: true, grace: 10s}    # SIGTERM, grace, SIGKILL, start again
    on_change: {command: [nginx, -s, reload]} # render mode: run a command
    on_change: {command: [...], timeout: 1m}  # killed with its process group after this (30s)

`parse` walks the located YAML tree the manifest loader read and reports
problems through the loader's checker, so a bad duration is one line with its
place, like every other manifest error. Dynamic secrets ignore `refresh:`:
they follow their lease.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from initfetch.errors import Loc

ON_CHANGE_KEYS = {"signal", "restart", "grace", "command", "timeout", "revoke_grace"}

# Static secrets are polled; Vault Agent's default for static secrets is 5 minutes.
DEFAULT_REFRESH = 300.0
# Per provider type; None: never polled (the process environment cannot change under us).
DEFAULT_REFRESH_BY_TYPE: dict[str, float | None] = {"file": 30.0, "env": None}

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """Seconds from `30s`, `5m`, `1h30m`, `500ms` or a bare number of seconds. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30s, 5m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            pos, seconds = 0, 0.0
            for m in _PART.finditer(text):
                if m.start() != pos:
                    break
                seconds += float(m.group(1)) * _UNIT[m.group(2)]
                pos = m.end()
            if pos != len(text) or not text:
                raise ValueError("must be a duration such as 30s, 5m or 1h") from None
    else:
        raise ValueError("must be a duration such as 30s, 5m or 1h")
    if not seconds > 0 or seconds > 366 * 86400:
        raise ValueError("must be a duration between 1ms and 366d")
    return seconds


def signal_number(name: Any) -> int:
    """`HUP`, `SIGHUP`, `usr1` -> the signal number. Raises ValueError."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("must be a signal name such as HUP, USR1 or TERM")
    text = name.strip().upper()
    text = text if text.startswith("SIG") else "SIG" + text
    try:
        return int(signal.Signals[text])
    except KeyError:
        raise ValueError(f"unknown signal '{name}' (e.g. HUP, USR1, USR2, TERM)") from None


@dataclass(frozen=True)
class OnChange:
    """What a change does to the application (exec) or the pod (render)."""

    signal: int | None = None  # None: the mode's default (exec: SIGHUP; render: none)
    restart: bool = False
    grace: float = 10.0  # restart: SIGTERM, then SIGKILL after this long
    command: tuple[str, ...] = ()
    timeout: float = 30.0  # the command (and its process group) is killed after this long
    revoke_grace: float = 30.0  # a replaced lease is revoked this long after the app was told


@dataclass
class WatchConfig:
    providers: dict[str, float] = field(default_factory=dict)  # instance -> refresh seconds
    secrets: dict[str, float] = field(default_factory=dict)  # secret -> refresh seconds
    on_change: OnChange = field(default_factory=OnChange)

    def refresh_for(self, secret: str, instance: str, provider_type: str) -> float | None:
        """Seconds between polls of a static secret, or None for never."""
        if secret in self.secrets:
            return self.secrets[secret]
        if instance in self.providers:
            return self.providers[instance]
        return DEFAULT_REFRESH_BY_TYPE.get(provider_type, DEFAULT_REFRESH)


class Checker(Protocol):
    def add(self, where: Loc, message: str) -> None: ...


def parse(chk: Checker, data: Mapping[str, Any]) -> WatchConfig:
    """`refresh:` of provider instances and secrets, and `on_change:`, from the manifest's tree.

    The loader must also accept these keys: `on_change` at the top, `refresh`
    in a secret's long form, and `refresh` in a provider instance (not passed
    on to the provider as an option).
    """
    config = WatchConfig()
    for section, target in (("providers", config.providers), ("secrets", config.secrets)):
        entries = data.get(section)
        if not isinstance(entries, Mapping):
            continue
        for name, body in entries.items():
            if isinstance(body, Mapping) and "refresh" in body:
                try:
                    target[name] = parse_duration(body["refresh"])
                except ValueError as e:
                    chk.add(_at(body, "refresh"), f"{section[:-1]} '{name}': refresh {e}")
    if "on_change" in data:
        config.on_change = _on_change(chk, data["on_change"], _at(data, "on_change"))
    return config


def _on_change(chk: Checker, body: Any, where: Loc) -> OnChange:
    if not isinstance(body, Mapping):
        chk.add(where, "on_change must be a mapping: {signal: HUP}, {restart: true} or {command: [...]}")
        return OnChange()
    for key in body:
        if key not in ON_CHANGE_KEYS:
            allowed = ", ".join(sorted(ON_CHANGE_KEYS))
            chk.add(_at(body, key), f"unknown key '{key}' in on_change (allowed: {allowed})")
    values: dict[str, Any] = {}
    if "signal" in body:
        try:
            values["signal"] = signal_number(body["signal"])
        except ValueError as e:
            chk.add(_at(body, "signal"), f"on_change: signal {e}")
    restart = body.get("restart", False)
    if not isinstance(restart, bool):
        chk.add(_at(body, "restart"), "on_change: restart must be true or false")
    else:
        values["restart"] = restart
    if restart is True and "signal" in body:
        chk.add(_at(body, "signal"), "on_change: give signal or restart, not both")
    for key in ("grace", "timeout", "revoke_grace"):
        if key in body:
            try:
                values[key] = parse_duration(body[key])
            except ValueError as e:
                chk.add(_at(body, key), f"on_change: {key} {e}")
    if "command" in body:
        command = body["command"]
        if (
            not isinstance(command, list)
            or not command
            or not all(isinstance(a, str) and a and "\0" not in a for a in command)
        ):
            chk.add(_at(body, "command"), "on_change: command must be a non-empty list of strings")
        else:
            values["command"] = tuple(command)
    return OnChange(**values)


def _at(m: Any, key: str) -> Loc:
    at = getattr(m, "at", None)
    return at(key) if callable(at) else Loc("manifest")
