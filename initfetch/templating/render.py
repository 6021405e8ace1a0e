"""Rendering: every output file, `env:` value and `env_from` spread, in memory.

Files taken from a secret as is (`files:`) and `env_from` need no template
engine; templates and `env:` values render in the bounded Jinja sandbox
(initfetch.templating.sandbox), imported only when one of them needs it: those of
text, comments and `{{ secrets.NAME }}` (with at most a quoting filter) render
without it (simple.py).
Everything together stays under `limits.output_size`, within the run's
deadline, and nothing is written here: the writer gets a complete `Rendered`
or nothing.

A `Renderer` belongs to one manifest: its template environment, and with it
every compiled template, is made once and reused by every render (a watcher
renders thousands of times). Templates are read from disk once, when first used.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from initfetch.errors import BadInput, Loc, Problem, ProblemKind
from initfetch.limits import exceeded, human_size
from initfetch.manifest import EnvFrom, Manifest, Output, env_var_names
from initfetch.redact import Redactor, mask
from initfetch.templating.encoders import TemplateRefused, to_json, to_text
from initfetch.templating.simple import SimpleTemplate, parse_simple

if TYPE_CHECKING:
    import jinja2

    from initfetch.templating.sandbox import Sandbox


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


class Renderer:
    """Renders one manifest's outputs in memory, each on its own.

    `preview`: a render of placeholders for a masked preview (encoders mark what they
    derive; `hidden` maps real paths of `file://` secrets to the label an include of
    them shows instead).
    """

    def __init__(
        self,
        manifest: Manifest,
        redactor: Redactor | None,
        *,
        preview: bool = False,
        hidden: Mapping[str, str] | None = None,
    ) -> None:
        self.manifest = manifest
        self.redactor = redactor
        self.preview = preview
        self.hidden = hidden
        self._env: Sandbox | None = None
        self._compiled: dict[str, jinja2.Template] = {}  # env name -> its compiled value
        self._simple: dict[str, SimpleTemplate | None] = {}  # dest -> its template, if simple
        self._simple_env: dict[str, SimpleTemplate | None] = {}  # env name -> the same

    def environment(self) -> Sandbox | None:
        """The template sandbox, made on first use; None when nothing needs Jinja."""
        if self._env is None and needs_templates(self.manifest):
            from initfetch.templating import sandbox

            self._env = sandbox.environment(
                self.manifest.base_dir,
                self.redactor,
                self.manifest.limits.output_size,
                self.hidden,
                preview=self.preview,
            )
        return self._env

    def attempt(
        self,
        values: Mapping[str, Any],
        meta: Mapping[str, Mapping[str, Any]],
        *,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> Attempt:
        """Render every output, env value and env_from spread.

        Everything together stays under `manifest.limits.output_size`; rendering stops
        at `deadline` (a time.monotonic() value: what is left of `--timeout`).
        """
        env = self.environment() if self._jinja_needed(values) else None
        run = _Run(self, env, {"secrets": dict(values), "meta": dict(meta)}, values)
        stopped: tuple[type[BaseException], ...] = ()
        if env is not None:
            from initfetch.templating.sandbox import OutOfMemory, OutOfTime

            env.start_clock(deadline)
            stopped = (OutOfTime, OutOfMemory)
        try:
            run.outputs()
            run.env_values()
            run.spreads()
        except stopped as e:
            run.problems.append(_stop_message(e, env, timeout))
        return run.result()

    def render(
        self,
        values: Mapping[str, Any],
        meta: Mapping[str, Mapping[str, Any]],
        *,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> Rendered:
        """Render everything; raise BadInput listing every failure.

        `deadline` (time.monotonic()) bounds rendering time; `timeout` only names it in the error.
        """
        attempt = self.attempt(values, meta, deadline=deadline, timeout=timeout)
        if attempt.problems:
            raise BadInput(attempt.problems, headline="templates failed to render")
        return attempt.rendered

    def simple(self, out: Output) -> SimpleTemplate | None:
        """The output's template if simple.py renders it (text, comments, `{{ secrets.NAME }}`
        with at most a quoting filter), read once; None for anything Jinja must render (and for a masked
        preview's render)."""
        if self.preview or out.src is None:
            return None
        if out.dest not in self._simple:
            try:
                source: str | None = out.src.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                source = None  # Jinja reports it, with its place
            self._simple[out.dest] = parse_simple(source) if source is not None else None
        return self._simple[out.dest]

    def simple_env(self, name: str, source: str) -> SimpleTemplate | None:
        """An `env:` value's template if simple.py renders it (as `simple`), parsed once."""
        if self.preview:
            return None
        if name not in self._simple_env:
            self._simple_env[name] = parse_simple(source)
        return self._simple_env[name]

    def _jinja_needed(self, values: Mapping[str, Any]) -> bool:
        """Whether this render needs Jinja: a template or an `env:` value simple.py cannot
        render with these values. When not, Jinja is not even imported."""
        for name, (source, _) in self.manifest.env.items():
            simple = self.simple_env(name, source)
            if simple is None or not simple.renders(values):
                return True
        for out in self.manifest.outputs:
            if out.src is not None:
                simple = self.simple(out)
                if simple is None or not simple.renders(values):
                    return True
        return False

    def compiled(self, name: str, source: str) -> jinja2.Template:
        """An `env:` value's template, compiled once."""
        template = self._compiled.get(name)
        if template is None:
            assert self._env is not None
            template = self._compiled[name] = self._env.from_string(source)
        return template


@dataclass
class _Run:
    """One render's progress: what rendered, what failed, and the output budget left."""

    renderer: Renderer
    env: Sandbox | None
    context: dict[str, Any]
    values: Mapping[str, Any]
    problems: list[Problem] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)
    files: dict[str, bytes] = field(default_factory=dict)
    rendered_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        manifest = self.renderer.manifest
        self.budget = _Budget(manifest.limits.output_size)
        self.pending = (
            [o.dest for o in manifest.outputs] + list(manifest.env) + [s.secret for s in manifest.env_from]
        )

    def result(self) -> Attempt:
        self.failed.update(self.pending)  # not rendered: the output limit or the deadline came first
        return Attempt(Rendered(self.files, self.rendered_env), self.problems, self.failed)

    def _fail(self, name: str, problem: Problem) -> None:
        self.failed.add(name)
        self.problems.append(problem)

    def outputs(self) -> None:
        for out in self.renderer.manifest.outputs:
            if self.env is not None:
                self.env.tick()
            if self.budget.spent:
                return
            self.pending.remove(out.dest)
            if out.secret is not None:
                self._secret_file(out)
            else:
                self._template_file(out)

    def _secret_file(self, out: Output) -> None:
        assert out.secret is not None
        if out.secret not in self.values:
            return  # an optional secret that is absent writes no file
        try:
            data = self._file_data(out)
        except TemplateRefused as e:
            self._fail(out.dest, Problem(out.loc, f"file {out.dest}: {e}", ProblemKind.VALUE))
            return
        if self.budget.take(len(data)):
            self.files[out.dest] = data
        else:
            self._fail(
                out.dest, Problem(out.loc, f"file {out.dest}: {self.budget.message}", ProblemKind.LIMIT)
            )

    def _file_data(self, out: Output) -> bytes:
        """A files: entry's bytes: the secret's value, or its certificate in `out.format`."""
        assert out.secret is not None
        value = self.values[out.secret]
        if out.format is None:
            return as_bytes(value)
        from initfetch.templating import encoders

        if out.format == "pkcs12":
            assert out.password is not None
            if out.password not in self.values:
                raise TemplateRefused(f"the password secret {out.password} has no value")
            return encoders.pkcs12(value, self.values[out.password])
        data = encoders.fullchain(value) if out.format == "fullchain" else encoders.pem_bundle(value)
        return data.encode("utf-8")

    def _template_file(self, out: Output) -> None:
        env = self.env
        assert out.src is not None and out.template_name is not None
        simple = self.renderer.simple(out)
        try:
            if simple is not None and simple.renders(self.values):
                pieces: Iterator[str] = simple.pieces(self.values, self.renderer.redactor)
            else:
                assert env is not None  # attempt() made it: _jinja_needed saw this template
                pieces = env.get_template(out.template_name).generate(self.context)
            text = self.budget.collect(pieces)
            self.files[out.dest] = text.encode("utf-8")
        except _OutputTooLarge:
            where = Loc(str(out.src))
            self._fail(
                out.dest, Problem(where, f"output {out.dest}: {self.budget.message}", ProblemKind.LIMIT)
            )
        except Exception as e:
            if env is None:
                raise
            self._fail(out.dest, env.error(e, str(out.src), out.template_name, _source(out.src)))

    def env_values(self) -> None:
        for name, (source, where) in self.renderer.manifest.env.items():
            if self.env is not None:
                self.env.tick()
            if self.budget.spent:
                return
            self.pending.remove(name)
            self._env_value(name, source, where)

    def _env_value(self, name: str, source: str, where: Loc | None) -> None:
        simple = self.renderer.simple_env(name, source)
        try:
            if simple is not None and simple.renders(self.values):
                pieces: Iterator[str] = simple.pieces(self.values, self.renderer.redactor)
            else:
                pieces = self.renderer.compiled(name, source).generate(self.context)
            value = self.budget.collect(pieces, extra=len(name) + 2)
        except _OutputTooLarge:
            self._fail(name, Problem(where, f"env {name}: {self.budget.message}", ProblemKind.LIMIT))
            return
        except Exception as e:
            if self.env is None:
                raise
            error = self.env.error(e, "", "<template>", source)
            self._fail(name, Problem(where, f"env {name}: {error.message}", error.kind))
            return
        if "\0" in value:
            self._fail(name, Problem(where, f"env {name}: the value contains a NUL byte", ProblemKind.VALUE))
        elif not value.isascii() and not _encodable(value):
            message = f"env {name}: the value holds a character that is not valid text"
            self._fail(name, Problem(where, message, ProblemKind.VALUE))
        self.rendered_env[name] = value

    def spreads(self) -> None:
        for spread in self.renderer.manifest.env_from:
            if self.budget.spent:
                return
            self.pending.remove(spread.secret)
            problem = _spread(spread, self.values.get(spread.secret), self.rendered_env)
            if problem:
                self._fail(spread.secret, problem)


def _stop_message(e: BaseException, env: Sandbox | None, timeout: float | None) -> Problem:
    """The one line for a render the sandbox stopped: out of time, or out of memory."""
    if type(e).__name__ == "OutOfTime" or env is None:
        shown = f" ({timeout:g}s)" if timeout else ""
        return Problem(None, f"rendering did not finish within --timeout{shown}", ProblemKind.LIMIT)
    return Problem(
        None,
        f"rendering used more than {human_size(env.memory_budget)} of memory "
        f"(16 times output_size; raise it with limits: {{output_size: ...}} in the manifest "
        "or INITFETCH_LIMIT_OUTPUT_SIZE)",
        ProblemKind.LIMIT,
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
        return Problem(
            spread.loc, f"env_from: secret '{spread.secret}' is not a map of keys", ProblemKind.VALUE
        )
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
    from initfetch.templating.checks import check_templates as check

    return check(manifest)
