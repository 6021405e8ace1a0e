"""The commands: each runs the pipeline (initfetch.pipeline) in its mode and does one
thing with the result: write it (render), start the application with it (exec),
show it (preview), judge it (check), or watch it (render/exec --watch).

Parsing the command line is initfetch.cli's job; turning errors into exit codes too.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from initfetch.errors import EXIT_UNAVAILABLE, STATIC_KINDS, BadInput, Problem, ResolveFailed, Unavailable
from initfetch.manifest import (
    NO_MANIFEST,
    Manifest,
    default_manifest_path,
    missing_extras,
    missing_sdks,
    searched,
)
from initfetch.outdir.target import check_target
from initfetch.pipeline import Mode, Pipeline, Result, Settings, load
from initfetch.redact import FIELD_MIN_LEN, Redactor

log = logging.getLogger("initfetch")

CHECK_RENDER_TIMEOUT = 30.0  # check has no --timeout; its offline render is still bounded


def _manifest_path(args: argparse.Namespace, env: Mapping[str, str]) -> Path:
    return Path(args.manifest) if args.manifest else default_manifest_path(env)


def _settings(args: argparse.Namespace, *, writes: bool = True, allow_disk: bool | None = None) -> Settings:
    if args.timeout <= 0:
        raise BadInput("--timeout must be a positive number of seconds")
    return Settings(
        timeout=args.timeout,
        concurrency=args.concurrency,
        out_dir=Path(args.out) if writes and getattr(args, "out", None) else None,
        allow_disk=getattr(args, "allow_disk", False) if allow_disk is None else allow_disk,
        allow_writes=getattr(args, "allow_writes", False),
        started=args.started,
    )


def _run(pipeline: Pipeline) -> Result:
    """Resolve and render; a backend that never answered ends with what to check about it."""
    try:
        return pipeline.run()
    except ResolveFailed as e:
        raise _with_hints(e, pipeline) from None


def _with_hints(e: ResolveFailed, pipeline: Pipeline) -> ResolveFailed:
    """The error, ending in one sentence per backend that stayed unavailable until the deadline:
    what to check (its provider says: the variable its address came from, the server, TLS)."""
    down: dict[str, set[str]] = {}  # hint -> the instances it is about (two AWS services, one endpoint)
    for name, (kind, _) in e.failures.items():
        spec = pipeline.manifest.secrets.get(name)
        inst = pipeline.resolver.instances.get(spec.ref.scheme) if spec and spec.ref else None
        hint = inst.unreachable_hint() if inst is not None and kind == Unavailable.kind else None
        if inst is not None and hint:
            down.setdefault(hint, set()).add(inst.name)
    timeout = f"--timeout ({pipeline.settings.timeout:g}s)"
    lines = [
        f"{' and '.join(sorted(names))} did not answer within {timeout}: {hint}"
        for hint, names in sorted(down.items(), key=lambda item: sorted(item[1]))
    ]
    if len(lines) == 1 and e.exit_code == EXIT_UNAVAILABLE:
        e.headline = lines[0]  # the last line says what to do
        return e
    e.problems.extend(Problem(None, line) for line in lines)
    if lines and e.exit_code == EXIT_UNAVAILABLE:
        e.headline = f"{len(lines)} backends did not answer within {timeout}: check what each line above says"
    return e


def _written(pipeline: Pipeline, result: Result) -> None:
    result.written = written = pipeline.write(result.resolution.info, result.rendered)
    log.info("wrote %d file(s) and the completion marker to %s", len(written.files), written.out_dir)


def cmd_render(args: argparse.Namespace, env: Mapping[str, str], redactor: Redactor) -> int:
    if args.listen and not (args.watch or args.hold):
        raise BadInput(
            "--listen (INITFETCH_LISTEN) needs render --watch or --hold: a render that exits serves nothing"
        )
    if args.watch:
        from initfetch.watch.run import guard_first_render

        guard_first_render()
    manifest = load(_manifest_path(args, env), env, Mode.RENDER)
    check_target(Path(args.out), args.allow_disk, manifest.outputs)  # fail before any backend is asked
    with contextlib.ExitStack() as stack:
        listener = _listener(args, Path(args.out), redactor, stack)
        with Pipeline(manifest, env, redactor, _settings(args)) as pipeline:
            _observed(pipeline, listener)
            pipeline.claim("render --watch" if args.watch else "render")
            result = _run(pipeline)
            _written(pipeline, result)
            if args.watch:  # --watch holds too; --hold alone holds and never refreshes
                from initfetch.watch.run import Options, render_watch

                opts = Options(revoke_on_exit=args.revoke_on_exit, wipe_on_exit=args.wipe_on_exit)
                return render_watch(pipeline, result, opts)
        from initfetch.watch import status

        status.remove(Path(args.out))  # not watched: no earlier watcher's status may speak for it
        if args.hold:
            _hold()
    return 0


def _listener(
    args: argparse.Namespace, out_dir: Path | None, redactor: Redactor, stack: contextlib.ExitStack
) -> Any:
    """With --listen: the probes and metrics, served until `stack` closes (the port is taken
    before any backend is asked, so a port in use fails at once); else None."""
    if not args.listen:
        return None
    from initfetch.listen import Listener, parse_address

    address = parse_address(args.listen)
    return stack.enter_context(Listener(address, out_dir, _max_stale(args), redactor))


def _observed(pipeline: Pipeline, listener: Any) -> None:
    if listener is not None:
        pipeline.observer = listener.metrics


def _hold() -> None:
    """Stay up (holding a tmpfs volume mounted for the application) until told to stop."""
    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    log.info("render complete; holding until SIGTERM")
    signum = signal.sigwait(stop)
    log.info("received %s; exiting", signal.Signals(signum).name)


def cmd_exec(args: argparse.Namespace, env: Mapping[str, str], redactor: Redactor) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise BadInput("exec needs a command: initfetch exec [options] -- CMD ARG...")
    from initfetch import execute

    cannot = execute.cannot_run(cmd[0], env)  # before any backend is asked for a secret
    if cannot is not None:
        return cannot
    if args.watch:
        from initfetch.watch.run import guard_first_render

        guard_first_render()
    manifest = _exec_manifest(args, env)
    _unconfigured(args, env, manifest, cmd[0])
    if manifest.outputs:
        check_target(Path(args.out), args.allow_disk, manifest.outputs)
    # exec --watch writes its marker and status even without files, so healthcheck can judge it;
    # they hold no value, so they may go to disk.
    writes = bool(manifest.outputs) or args.watch
    settings = _settings(args, writes=writes, allow_disk=args.allow_disk or not manifest.outputs)
    with contextlib.ExitStack() as stack:
        listener = _listener(args, settings.out_dir, redactor, stack)
        code = _exec(args, (cmd, manifest, env), settings, redactor, listener)
    return code


def _exec(
    args: argparse.Namespace,
    what: tuple[list[str], Manifest, Mapping[str, str]],
    settings: Settings,
    redactor: Redactor,
    listener: Any,
) -> int:
    """exec once the command, the manifest and the settings are known: resolve, render, write,
    then start the application (replacing initfetch, or supervising it)."""
    from initfetch import execute

    cmd, manifest, env = what
    masking = args.mask_output or manifest.mask_output
    writes = settings.out_dir is not None
    with Pipeline(manifest, env, redactor, settings) as pipeline:
        _observed(pipeline, listener)
        if writes:
            pipeline.claim("exec --watch" if args.watch else "exec")
        result = _run(pipeline)
        if writes:
            _written(pipeline, result)
        variables = len(result.rendered.env)
        source = "the manifest" if manifest.path is not None else "initfetch+ references"
        if args.watch:
            from initfetch.watch.run import Options, exec_watch

            log.info(
                "starting %s with %d variable(s) from %s; watching for changes", cmd[0], variables, source
            )
            opts = Options(revoke_on_exit=args.revoke_on_exit, wipe_on_exit=args.wipe_on_exit)
            with _masked(masking, redactor):
                return exec_watch(pipeline, result, cmd, opts)
        child = execute.child_env(env, result.rendered.env, pipeline.credentials(result.resolution))
    log.info("starting %s with %d variable(s) from %s", cmd[0], variables, source)
    if listener is not None:
        listener.started.set()
    if masking:  # initfetch stays the parent: the output goes through it
        with _masked(True, redactor):
            return execute.supervise(cmd, child)
    # --listen: initfetch stays to serve it, as the application's supervisor
    supervised = args.supervise or listener is not None
    return execute.supervise(cmd, child) if supervised else execute.replace(cmd, child)


def _masked(on: bool, redactor: Redactor) -> contextlib.AbstractContextManager[None]:
    """The application's output through initfetch, values masked (exec --mask-output)."""
    if not on:
        return contextlib.nullcontext()
    from initfetch.mask import masked_output

    log.info("masking secret values in the application's output")
    return masked_output(redactor)


def _exec_manifest(args: argparse.Namespace, env: Mapping[str, str]) -> Manifest:
    """The manifest, or without one the wrapper mode's: `initfetch+` references in the environment."""
    path = _manifest_path(args, env)
    if args.manifest is not None or env.get("INITFETCH_MANIFEST") or path.exists():
        return load(path, env, Mode.RENDER)
    from initfetch.manifest.zeroconf import manifest_from_env

    return manifest_from_env(env, Path.cwd())


def _unconfigured(args: argparse.Namespace, env: Mapping[str, str], manifest: Manifest, program: str) -> None:
    """exec with nothing to resolve: said at the default level (an image started in the wrong
    directory would otherwise run without its secrets), and an error under --require-secrets."""
    if manifest.secrets:
        return
    if manifest.path is None:
        where = searched(_manifest_path(args, env))
        what = f"no manifest ({where}) and no initfetch+ reference in the environment"
    else:
        what = f"{manifest.path} declares no secrets"
    if args.require_secrets:
        raise BadInput(
            f"{what}; --require-secrets (INITFETCH_REQUIRE_SECRETS) will not start {program} without secrets",
            headline=NO_MANIFEST if manifest.path is None else "nothing to resolve",
        )
    if manifest.path is None:
        log.warning(
            "%s: starting %s without secrets; %s (INITFETCH_REQUIRE_SECRETS=1 makes this an error)",
            what,
            program,
            NO_MANIFEST.removeprefix("no manifest: "),
        )


def cmd_preview(args: argparse.Namespace, env: Mapping[str, str], redactor: Redactor) -> int:
    from initfetch import preview

    settings = _settings(args, writes=False)
    mode = Mode.PREVIEW_OFFLINE if args.offline else Mode.PREVIEW
    manifest = load(_manifest_path(args, env), env, mode)
    with Pipeline(manifest, env, redactor, settings, mode) as pipeline:
        result = _run(pipeline)  # the real render must succeed too
        resolution, rendered = result.resolution, result.rendered
        if args.offline:
            preview.show(sys.stdout, manifest, rendered, sizes={})
            preview.show_references(sys.stdout, manifest, resolution.info, None)
            return 0
        sizes = None
        if not args.reveal:
            sizes = {dest: len(data) for dest, data in rendered.files.items()}
            rendered = preview.masked(manifest, resolution, rendered, redactor, settings.deadline)
        preview.show(sys.stdout, manifest, rendered, sizes=sizes)
        preview.show_references(sys.stdout, manifest, resolution.info, redactor)
    return 0


def _looking(args: argparse.Namespace, env: Mapping[str, str], redactor: Redactor) -> Pipeline:
    """The pipeline of a command that only looks (diff, doctor, scan): PREVIEW mode, so
    nothing is written, no write-style secret is written, and the leases the reads create
    are revoked at close."""
    manifest = load(_manifest_path(args, env), env, Mode.PREVIEW)
    return Pipeline(manifest, env, redactor, _settings(args, writes=False), Mode.PREVIEW)


def cmd_diff(args: argparse.Namespace, env: Mapping[str, str], redactor: Redactor) -> int:
    """What a render would change in OUT_DIR (initfetch.diff): nothing written, leases revoked."""
    from initfetch import diff, preview

    out_dir = Path(args.out)
    with _looking(args, env, redactor) as pipeline:
        manifest = pipeline.manifest
        result = _run(pipeline)
        resolution = result.resolution
        masked = preview.masked(manifest, resolution, result.rendered, redactor, pipeline.settings.deadline)
        inputs = diff.Inputs(result.rendered, masked, resolution.info, preview.placeholders(manifest))
        report = diff.compare(out_dir, inputs)
    diff.show(sys.stdout, report, out_dir)
    if report.differs:
        log.info(
            "a render would change %d file(s) in %s; %d secret(s) changed version",
            len(report.files),
            out_dir,
            len(report.versions),
        )
    else:
        log.info("no difference: %s holds what this render would write", out_dir)
    return 1 if report.differs and args.exit_code else 0


def cmd_doctor(args: argparse.Namespace, env: Mapping[str, str], redactor: Redactor) -> int:
    """Reachability, login and identity, and access to each document, per provider instance."""
    from initfetch import doctor

    with _looking(args, env, redactor) as pipeline:
        table = doctor.run(pipeline)
    doctor.show(sys.stdout, table, redactor)
    code = table.exit_code
    if code:
        log.error("%s (exit %d)", doctor.summary(table), code)
    else:  # every document readable; a failed row left is an endpoint check (a proxy in the way?)
        (log.warning if doctor.failed(table) else log.info)("%s", doctor.summary(table))
    return code


def cmd_check(args: argparse.Namespace, env: Mapping[str, str], redactor: Redactor) -> int:
    manifest = load(_manifest_path(args, env), env, Mode.CHECK)
    # Everything an offline render can find, with placeholders (no value, no backend).
    with Pipeline(manifest, env, redactor, Settings(timeout=CHECK_RENDER_TIMEOUT), Mode.CHECK) as pipeline:
        placeholders = pipeline.resolve()
        attempt = pipeline.attempt(
            placeholders.values, placeholders.info, time.monotonic() + CHECK_RENDER_TIMEOUT
        )
    problems = [p for p in attempt.problems if p.kind in STATIC_KINDS]
    if problems:
        raise BadInput(problems, headline="templates failed to render")
    _judge(manifest, args.strict)
    return 0


def _judge(manifest: Manifest, strict: bool) -> None:
    """check's verdict in its last line: ok, or valid but not renderable by this installation
    (a provider's client library is not installed), which --strict makes an error (exit 2) for
    CI. References left unchecked (unset variables) stay a warning: a CI job need not hold
    every environment's variables."""
    missing = missing_sdks(manifest)
    extras = missing_extras(manifest)
    # initfetch is installed from its repository (README, "Install"), not from an index
    install = (
        f"pip install '.[{','.join(extras)}]' in the initfetch checkout "
        f"(the image: --build-arg EXTRAS={','.join(extras)})"
    )
    unexpanded = [s.name for s in manifest.secrets.values() if s.ref is None]
    unchecked = f"not checked beyond syntax (unset variables): {', '.join(unexpanded)}"
    counts = (
        f"{manifest.path}: {len(manifest.secrets)} secret(s), {len(manifest.outputs)} file(s), "
        f"{len(manifest.env)} env variable(s)"
    )
    if strict and missing:
        raise BadInput(missing, headline=f"this installation cannot render it (--strict): first {install}")
    for problem in missing:
        log.warning("%s", problem)
    if unexpanded:
        log.warning("%s", unchecked)
    if missing:
        print(f"valid, but this installation cannot render it: {counts}; first {install}")
    else:
        print(f"ok: {counts}")


def cmd_scan(args: argparse.Namespace, env: Mapping[str, str], redactor: Redactor) -> int:
    from initfetch import scan
    from initfetch.limits import parse_size

    try:
        max_size = parse_size(args.max_file_size)
    except ValueError as e:
        raise BadInput(f"--max-file-size (INITFETCH_SCAN_MAX_FILE_SIZE) {e}") from None
    opts = scan.Options(args.min_length, max_size, tuple(args.exclude))
    if args.from_out:
        out_dir = Path(args.from_out)
        needles, values = scan.from_out_dir(out_dir, opts)
        for label, value in values.items():  # a label or a path that quotes a value is masked
            redactor.add(value, label)
        opts = dataclasses.replace(opts, skip=frozenset({os.path.abspath(out_dir)}))
        log.info("looking for %d value(s) of the render in %s", len(values), out_dir)
    else:
        with _looking(args, env, redactor) as pipeline:
            resolution = pipeline.resolve()
        # A default is written in the manifest itself: not a secret to look for.
        values = {n: v for n, v in resolution.values.items() if resolution.info[n].outcome == "ok"}
        needles, short = scan.from_values(values, opts.min_length)
        if short:
            log.warning(
                "not searched: %d secret(s) shorter than %d characters: %s (see --min-length)",
                len(short),
                opts.min_length,
                ", ".join(short),
            )
    report = scan.scan([Path(p) for p in args.paths], needles, opts)
    for f in report.findings:
        where = redactor.scrub(_printable(f.path))
        label = redactor.scrub(f.label, FIELD_MIN_LEN)
        print(f"{where}:{f.line}: {label}{' (binary file)' if f.binary else ''}")
    _scan_summary(report)
    return 1 if report.findings else 0


def _printable(path: str) -> str:
    """A path as one safe line: control characters and undecodable bytes escaped."""
    out = []
    for c in path:
        if 0xDC80 <= ord(c) <= 0xDCFF:  # a byte that was not UTF-8 (os.fsdecode)
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        elif not c.isprintable():
            out.append(c.encode("unicode_escape").decode("ascii"))
        else:
            out.append(c)
    return "".join(out)


def _scan_summary(report: Any) -> None:
    files = len({f.path for f in report.findings})
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(report.skipped.items()))
    log.info(
        "scanned %d file(s), %.1f MB in %.1fs: %d finding(s) in %d file(s)%s",
        report.files,
        report.bytes / 1e6,
        report.seconds,
        len(report.findings),
        files,
        f"; skipped: {skipped}" if skipped else "",
    )


def cmd_schema(args: argparse.Namespace, env: Mapping[str, str], redactor: Redactor) -> int:
    from initfetch.manifest.schema import manifest_schema

    print(json.dumps(manifest_schema(), indent=2, ensure_ascii=False))
    return 0


def _max_stale(args: argparse.Namespace) -> float | None:
    from initfetch.manifest.watch import parse_duration

    if args.max_stale is None:
        return None
    try:
        return parse_duration(args.max_stale)
    except ValueError as e:
        raise BadInput(f"--max-stale (INITFETCH_MAX_STALE) {e}") from None


def cmd_healthcheck(args: argparse.Namespace, env: Mapping[str, str], redactor: Redactor) -> int:
    from initfetch.outdir import health

    health.ready(Path(args.out), _max_stale(args))
    return 0


def cmd_init(args: argparse.Namespace, env: Mapping[str, str], redactor: Redactor) -> int:
    from initfetch.manifest.starter import write_starter

    written = write_starter(Path(args.dir))
    for path in written:
        print(f"wrote {path}")
    manifest = written[0]
    print(
        "next:\n"
        f"  initfetch check -m {manifest}\n"
        f"  initfetch preview -m {manifest}\n"
        f"  initfetch render -m {manifest} -o /dev/shm/initfetch-demo"
    )
    return 0


COMMANDS = {
    "render": cmd_render,
    "exec": cmd_exec,
    "preview": cmd_preview,
    "check": cmd_check,
    "diff": cmd_diff,
    "doctor": cmd_doctor,
    "scan": cmd_scan,
    "schema": cmd_schema,
    "healthcheck": cmd_healthcheck,
    "init": cmd_init,
}
