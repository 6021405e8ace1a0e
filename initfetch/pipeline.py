"""The one pipeline: load -> resolve -> render -> write, each stage a call that returns
one value object (Manifest, Resolution, Rendered, Written).

`render`, `exec`, `preview`, `check` and watch mode all run it and differ only
in what they do with its result; the `Mode` says which of them is running,
explicitly, so no stage guesses it from its arguments:

- RENDER: real values; the files go to OUT_DIR (render, exec, watch);
- PREVIEW: real values; nothing is written, and leases the reads created are
  revoked when the pipeline closes (a preview must not leave credentials valid);
- PREVIEW_OFFLINE: placeholders instead of values, nothing contacted, rendered
  as a masked preview shows them;
- CHECK: placeholders, nothing contacted, rendered only to find what is wrong
  whatever the values (`check`).

A Pipeline keeps its provider instances (and their logins) and its compiled
templates, so a watcher re-running the stages on a few due secrets reuses them.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from initfetch.errors import BadInput, SecretError
from initfetch.limits import DEFAULT_CONCURRENCY
from initfetch.manifest import Manifest, load_manifest, missing_sdks
from initfetch.observe import Observer
from initfetch.providers.base import FetchContext
from initfetch.redact import Redactor
from initfetch.resolve.results import Resolution, Resolved

if TYPE_CHECKING:
    from initfetch.outdir.heal import Fingerprint
    from initfetch.outdir.lock import OutDirLock
    from initfetch.resolve.resolver import Resolver
    from initfetch.templating.render import Attempt, Rendered, Renderer

log = logging.getLogger("initfetch")


class Mode(enum.Enum):
    RENDER = "render"
    PREVIEW = "preview"
    PREVIEW_OFFLINE = "preview-offline"
    CHECK = "check"

    @property
    def offline(self) -> bool:
        """Placeholders instead of values; no backend is contacted."""
        return self in (Mode.PREVIEW_OFFLINE, Mode.CHECK)


@dataclass(frozen=True)
class Settings:
    """The options every stage needs, as one value."""

    timeout: float = 60.0  # seconds for resolving and rendering, retries included
    concurrency: int = DEFAULT_CONCURRENCY
    out_dir: Path | None = None  # None: nothing is written (preview, exec without files)
    allow_disk: bool = False
    allow_writes: bool = False  # PREVIEW: make write-style secrets' writes (then revoke what they made)
    started: float = field(default_factory=time.monotonic)

    @property
    def deadline(self) -> float:
        """The command's start + --timeout: resolving and rendering share one deadline."""
        return self.started + self.timeout


@dataclass(frozen=True)
class Written:
    out_dir: Path
    files: list[str]  # the files this write replaced (the marker is always rewritten)
    prints: dict[str, Fingerprint]  # what the writer put in place, the marker included


@dataclass
class Result:
    """One run of resolve and render (and, once written, what the write put in place)."""

    resolution: Resolution
    rendered: Rendered
    written: Written | None = None


def load(path: Path, environ: Mapping[str, str], mode: Mode) -> Manifest:
    """Read and check a manifest and its templates; raise BadInput listing every problem.

    Offline, an unset `${VAR}` stays as written and a missing provider SDK is not
    an error (nothing will be contacted)."""
    manifest = load_manifest(path, environ, lenient_vars=mode.offline)
    from initfetch.templating.render import check_templates

    problems = check_templates(manifest)
    if not mode.offline:
        problems += missing_sdks(manifest)
    if problems:
        raise BadInput(problems)
    return manifest


class Pipeline:
    def __init__(
        self,
        manifest: Manifest,
        environ: Mapping[str, str],
        redactor: Redactor,
        settings: Settings,
        mode: Mode = Mode.RENDER,
    ) -> None:
        if settings.timeout <= 0:
            raise BadInput("--timeout must be a positive number of seconds")
        self.manifest = manifest
        self.environ = environ
        self.redactor = redactor
        self.settings = settings
        self.mode = mode
        self._resolver: Resolver | None = None
        self._renderer: Renderer | None = None
        self._resolved: list[Resolution] = []  # PREVIEW: whose leases to revoke at close
        self._lock: OutDirLock | None = None

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def resolver(self) -> Resolver:
        """Made (and its machinery imported) when first used: `check` and an offline preview
        never resolve anything."""
        if self._resolver is None:
            from initfetch.resolve.resolver import Resolver

            self._resolver = Resolver(
                self.manifest,
                self.environ,
                self.redactor,
                timeout=self.settings.timeout,
                concurrency=self.settings.concurrency,
            )
        return self._resolver

    # --- the stages ---

    def resolve(self, names: Collection[str] | None = None) -> Resolution:
        """Every secret (or those in `names`); offline, placeholders. Raises ResolveFailed."""
        if self.mode.offline:
            return _placeholders(self.manifest)
        skipped: list[str] = []
        if self.mode is Mode.PREVIEW and not self.settings.allow_writes:
            # A preview looks; a write acts (issues a certificate): not unless asked.
            skipped = [n for n, s in self.manifest.secrets.items() if s.ref and s.ref.doc.write is not None]
            wanted = self.manifest.secrets if names is None else names
            names = [n for n in wanted if n not in skipped]
            skipped = [n for n in skipped if n in wanted]
        resolution = self.resolver.resolve(names)
        if self.mode is Mode.PREVIEW:
            self._resolved.append(resolution)
        if skipped:
            resolution = _with_placeholders(resolution, self.manifest, skipped, "skipped: a write")
        return resolution

    def render(
        self, values: Mapping[str, Any], info: Mapping[str, Resolved], deadline: float | None = None
    ) -> Rendered:
        """Every output in memory; raise BadInput listing every failure."""
        return self.renderer.render(values, _meta(info), deadline=deadline, timeout=self.settings.timeout)

    def attempt(
        self, values: Mapping[str, Any], info: Mapping[str, Resolved], deadline: float | None = None
    ) -> Attempt:
        """Every output that renders, and the problems of those that do not (`check`)."""
        return self.renderer.attempt(values, _meta(info), deadline=deadline, timeout=self.settings.timeout)

    def run(self) -> Result:
        """Resolve everything and render it, within the command's deadline."""
        resolution = self.resolve()
        rendered = self.render(resolution.values, resolution.info, self.settings.deadline)
        return Result(resolution, rendered)

    def write(
        self, info: Mapping[str, Resolved], rendered: Rendered, files: Mapping[str, bytes] | None = None
    ) -> Written:
        """Write `files` (all of `rendered`'s by default), then the completion marker. Raises WriteFailed."""
        from initfetch.outdir import writer
        from initfetch.outdir.marker import marker_body

        out_dir = self.settings.out_dir
        assert self.mode is Mode.RENDER and out_dir is not None, "only a render writes"
        if self._lock is not None:
            self._lock.acquire()
        todo = rendered.files if files is None else files
        marker = marker_body(
            {
                name: {"ref": r.ref, "provider": r.provider, "version": r.version, "outcome": r.outcome}
                for name, r in info.items()
            },
            list(rendered.files),
            list(rendered.env),
        )
        prints = writer.write_all(
            out_dir, todo, self.manifest.outputs, marker, allow_disk=self.settings.allow_disk
        )
        self.observer.files_written(len(todo))
        return Written(out_dir, sorted(todo), prints)

    # --- around the stages ---

    @property
    def observer(self) -> Observer:
        """Who is told what the stages do (`--listen`'s metrics); by default no one."""
        return self.resolver.observer

    @observer.setter
    def observer(self, observer: Observer) -> None:
        self.resolver.observer = observer

    def claim(self, holder: str) -> None:
        """Claim OUT_DIR for `holder`: a directory another initfetch writes to (a live watcher's)
        is refused with exit 5 before any backend is asked. The lock itself is taken at the first
        write (nothing is created before) and held until the pipeline closes."""
        from initfetch.outdir.lock import OutDirLock

        assert self.settings.out_dir is not None
        self._lock = OutDirLock(self.settings.out_dir, holder)
        self._lock.check()

    @property
    def renderer(self) -> Renderer:
        """The mode's renderer, made once: every template is compiled once per pipeline."""
        if self._renderer is None:
            from initfetch.templating.render import Renderer

            if self.mode is Mode.PREVIEW_OFFLINE:
                from initfetch.preview import secret_files

                # nothing resolved offline, so nothing to scrub with
                self._renderer = Renderer(
                    self.manifest, None, preview=True, hidden=secret_files(self.manifest)
                )
            elif self.mode is Mode.CHECK:
                self._renderer = Renderer(self.manifest, None)
            else:
                self._renderer = Renderer(self.manifest, self.redactor)
        return self._renderer

    def credentials(self, resolution: Resolution) -> set[str]:
        """Login credentials to remove from the application's environment."""
        remove: set[str] = set()
        for name, inst in resolution.instances.items():
            if not self.manifest.providers[name].keep_credentials:
                remove |= inst.credential_env()
        return remove

    def revoke_leases(self, info: Mapping[str, Resolved]) -> int:
        """Revoke every lease these secrets hold; returns how many were revoked."""
        done: set[str] = set()
        if self._resolver is None:
            return 0  # nothing was resolved here, so no instance holds a lease
        for r in info.values():
            inst = self._resolver.instances.get(r.provider)
            if r.lease is None or r.lease.id in done or inst is None:
                continue
            try:
                inst.revoke(r.lease.id, FetchContext(time.monotonic() + self.settings.timeout))
                done.add(r.lease.id)
            except SecretError as e:
                log.warning("could not revoke lease %s (%s); it ends at its TTL", r.lease.id, e.kind)
        return len(done)

    def close(self) -> None:
        """Close the provider instances; a preview first revokes the leases its reads created."""
        try:
            revoked = sum(self.revoke_leases(r.info) for r in self._resolved)
            if revoked:
                log.info("revoked %d lease(s) this preview created", revoked)
        finally:
            self._resolved = []
            if self._resolver is not None:
                self._resolver.close()
            if self._lock is not None:
                self._lock.release()


def _meta(info: Mapping[str, Resolved]) -> dict[str, dict[str, Any]]:
    return {name: r.meta() for name, r in info.items()}


def _placeholders(manifest: Manifest) -> Resolution:
    """Offline: a placeholder for every value, and where each would have come from."""
    return _with_placeholders(Resolution({}, {}, {}), manifest, list(manifest.secrets), "offline")


def _with_placeholders(resolution: Resolution, manifest: Manifest, names: list[str], why: str) -> Resolution:
    """`resolution` with a placeholder (and an outcome that says why) for each of `names`."""
    from initfetch.preview import Placeholder

    for n in names:
        spec = manifest.secrets[n]
        resolution.values[n] = Placeholder(n)
        resolution.info[n] = Resolved(n, spec.ref_text, spec.ref_text.partition(":")[0], why)
    return resolution
