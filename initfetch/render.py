"""Rendering: every output file, `env:` value and `env_from` spread, in memory.

Files taken from a secret as is (`files:`) and `env_from` need no template
engine; templates and `env:` values render in the bounded Jinja sandbox
(initfetch.sandbox), imported only when a manifest has any. Everything together
stays under `limits.output_size`, within the run's deadline, and nothing is
written here: the writer gets a complete `Rendered` or nothing.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from initfetch.encoders import to_json, to_text
from initfetch.errors import BadInput, Loc, Problem
from initfetch.limits import exceeded, human_size
from initfetch.manifest import EnvFrom, Manifest, env_var_names
from initfetch.redact import Redactor, mask

if TYPE_CHECKING:
    from initfetch.sandbox import Sandbox


@dataclass
class Rendered:
    files: dict[str, bytes]  # dest -> content
    env: dict[str, str]


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
    *,
    deadline: float | None = None,
    timeout: float | None = None,
    hidden: Mapping[str, str] | None = None,
) -> Attempt:
    """Render every output, env value and env_from spread in memory, each on its own.

    Everything together stays under `manifest.limits.output_size`; rendering stops
    at `deadline` (a time.monotonic() value: what is left of `--timeout`).
    """
    limit = manifest.limits.output_size
    env: Sandbox | None = None
    stopped: tuple[type[BaseException], ...] = ()
    if needs_templates(manifest):
        from initfetch import sandbox

        env = sandbox.environment(manifest.base_dir, redactor, limit, hidden)
        env.start_clock(deadline)
        stopped = (sandbox.OutOfTime, sandbox.OutOfMemory)
    context = {"secrets": dict(values), "meta": dict(meta)}
    problems: list[Problem] = []
    failed: set[str] = set()
    files: dict[str, bytes] = {}
    rendered_env: dict[str, str] = {}
    budget = _Budget(limit)
    pending = [o.dest for o in manifest.outputs] + list(manifest.env) + [s.secret for s in manifest.env_from]
    try:
        for out in manifest.outputs:
            if env is not None:
                env.tick()
            if budget.spent:
                break
            pending.remove(out.dest)
            if out.secret is not None:
                if out.secret in values:
                    data = as_bytes(values[out.secret])
                    if budget.take(len(data)):
                        files[out.dest] = data
                    else:
                        failed.add(out.dest)
                        problems.append(Problem(out.loc, f"file {out.dest}: {budget.message}"))
                continue  # an optional secret that is absent writes no file
            assert out.src is not None and out.template_name is not None and env is not None
            try:
                text = budget.collect(env.get_template(out.template_name).generate(context))
                files[out.dest] = text.encode("utf-8")
            except _OutputTooLarge:
                failed.add(out.dest)
                problems.append(Problem(Loc(str(out.src)), f"output {out.dest}: {budget.message}"))
            except Exception as e:
                failed.add(out.dest)
                problems.append(env.error(e, str(out.src), out.template_name, _source(out.src)))
        for name, (source, where) in manifest.env.items():
            assert env is not None
            env.tick()
            if budget.spent:
                break
            pending.remove(name)
            try:
                value = budget.collect(env.from_string(source).generate(context), extra=len(name) + 2)
            except _OutputTooLarge:
                failed.add(name)
                problems.append(Problem(where, f"env {name}: {budget.message}"))
                continue
            except Exception as e:
                failed.add(name)
                problems.append(
                    Problem(where, f"env {name}: {env.error(e, '', '<template>', source).message}")
                )
                continue
            if "\0" in value:
                failed.add(name)
                problems.append(Problem(where, f"env {name}: the value contains a NUL byte"))
            elif not value.isascii() and not _encodable(value):
                failed.add(name)
                problems.append(
                    Problem(where, f"env {name}: the value holds a character that is not valid text")
                )
            rendered_env[name] = value
        for spread in manifest.env_from:
            if budget.spent:
                break
            pending.remove(spread.secret)
            problem = _spread(spread, values.get(spread.secret), rendered_env)
            if problem:
                failed.add(spread.secret)
                problems.append(problem)
    except stopped as e:
        problems.append(_stop_message(e, env, timeout))
    failed.update(pending)  # not rendered: the output limit or the deadline came first
    return Attempt(Rendered(files, rendered_env), problems, failed)


def _stop_message(e: BaseException, env: Sandbox | None, timeout: float | None) -> Problem:
    """The one line for a render the sandbox stopped: out of time, or out of memory."""
    if type(e).__name__ == "OutOfTime" or env is None:
        shown = f" ({timeout:g}s)" if timeout else ""
        return Problem(None, f"rendering did not finish within --timeout{shown}")
    return Problem(
        None,
        f"rendering used more than {human_size(env.memory_budget)} of memory "
        f"(16 times output_size; raise it with limits: {{output_size: ...}} in the manifest "
        "or INITFETCH_LIMIT_OUTPUT_SIZE)",
    )


class _OutputTooLarge(Exception):
    pass


class _Budget:
    """What is left of output_size for all outputs together, counted in UTF-8 bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.left = limit
        self.message = exceeded("output_size", limit)

    @property
    def spent(self) -> bool:
        """Past the limit: one line said so, and nothing more is rendered."""
        return self.left < 0

    def take(self, n: int) -> bool:
        self.left -= n
        return self.left >= 0

    def collect(self, pieces: Iterator[str], extra: int = 0) -> str:
        """Join a template's streamed output, stopping as soon as it passes the limit."""
        if not self.take(extra):
            raise _OutputTooLarge
        buf: list[str] = []
        for piece in pieces:
            n = len(piece) if piece.isascii() else len(piece.encode("utf-8", "surrogatepass"))
            if not self.take(n):
                if isinstance(pieces, Iterator) and hasattr(pieces, "close"):
                    pieces.close()
                raise _OutputTooLarge
            buf.append(piece)
        return "".join(buf)


def _encodable(value: str) -> bool:
    """Whether a value can be written out as UTF-8 (a lone surrogate, made by `fromjson`
    from an escape, cannot: an environment or a terminal would fail on it later)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _source(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _spread(spread: EnvFrom, value: Any, out: dict[str, str]) -> Problem | None:
    """env_from: a map-valued secret becomes PREFIX_KEY variables; `env:` entries win."""
    if value is None:
        return None  # an optional secret that is absent
    if getattr(value, "keys_unknown", False):  # an offline placeholder: keys are known only online
        out.setdefault(f"{spread.prefix}*", mask(f"{getattr(value, 'label', spread.secret)}/*"))
        return None
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
    *,
    deadline: float | None = None,
    timeout: float | None = None,
    hidden: Mapping[str, str] | None = None,
) -> Rendered:
    """Render everything in memory; raise BadInput listing every failure.

    `deadline` (time.monotonic()) bounds rendering time; `timeout` only names it in the error.
    """
    attempt = render_each(manifest, values, meta, redactor, deadline=deadline, timeout=timeout, hidden=hidden)
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
    return to_text(value)


def needs_templates(manifest: Manifest) -> bool:
    """Whether anything must render through Jinja (templates, `env:` values)."""
    return bool(manifest.env) or any(o.src is not None for o in manifest.outputs)


def check_templates(manifest: Manifest) -> list[Problem]:
    """Syntax of every template and env value, and that each secret they use is declared."""
    if not needs_templates(manifest):
        return []
    from initfetch.sandbox import check_templates as check

    return check(manifest)
