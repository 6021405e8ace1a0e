"""Command line: parse flags (each with an INITFETCH_* twin) and run one command.

Every failure ends here as one line per problem and the documented exit code;
no traceback reaches the user, and every line passes through the redactor.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from initfetch import __version__
from initfetch.errors import BadInput, InitfetchError
from initfetch.logs import setup as setup_logging
from initfetch.manifest import Manifest, default_manifest_path, load_manifest, missing_sdks
from initfetch.outdir import marker as outdir_marker
from initfetch.outdir import writer
from initfetch.outdir.target import check_target
from initfetch.redact import Redactor
from initfetch.resolve.resolver import DEFAULT_CONCURRENCY, Resolution, Resolved, Resolver

# Rendering (Jinja), preview and exec are imported where a command needs them:
# start-up time is a feature, and a file-only render never loads Jinja.
if TYPE_CHECKING:
    from initfetch.templating.render import Rendered

log = logging.getLogger("initfetch")

TRUE = {"1", "true", "yes", "on"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"initfetch: error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in TRUE


LOG_FORMATS = ("text", "json")
CHECK_RENDER_TIMEOUT = 30.0  # check has no --timeout; its offline render is still bounded
LOG_LEVELS = ("debug", "info", "warning", "error")

EXAMPLES = {
    "render": """examples:
  initfetch render -o /run/secrets               # init container: write, then exit
  initfetch render --hold                        # sidecar: write, then keep the tmpfs volume mounted
  initfetch render --watch                       # sidecar: keep the files current (docs/watch.md)
  INITFETCH_OUT=/dev/shm/app initfetch render    # every flag has an INITFETCH_* twin""",
    "exec": """examples:
  initfetch exec -- ./server --port 8080         # render, then replace itself with the app
  initfetch exec --supervise -- ./server         # stay as PID 1: forward signals, reap, mirror the exit code
  initfetch exec --watch -- ./server             # supervise, and keep files and environment current
  DB_PASSWORD=initfetch+vault://secret/app#password initfetch exec -- ./server   # no manifest""",
    "preview": """examples:
  initfetch preview                              # resolve, print what would be written, values masked
  initfetch preview --offline                    # no backend, no credentials: placeholders""",
    "check": """examples:
  initfetch check -m deploy/initfetch.yaml       # manifest and templates, offline; exit 2 on a problem""",
    "healthcheck": """examples:
  initfetch healthcheck -o /run/secrets          # exit 0 once a complete render is in place, else 1
  initfetch healthcheck --max-stale 10m          # and not older than 10 minutes (watch mode)""",
    "init": """examples:
  initfetch init                                 # writes ./initfetch.yaml and templates/config.json.j2""",
}


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    def logging_options(defaults: bool) -> _Parser:
        """--log-format/--log-level, on the main parser (with the defaults) and on every command.

        On the commands the default is SUPPRESS: a value given before the command
        (`initfetch --log-level error render`) is not overwritten by a default after it.
        """
        group = _Parser(add_help=False)
        group.add_argument(
            "--log-format",
            choices=LOG_FORMATS,
            default=env.get("INITFETCH_LOG_FORMAT", "text") if defaults else argparse.SUPPRESS,
            help="text or JSON lines on stderr [$INITFETCH_LOG_FORMAT, text]",
        )
        group.add_argument(
            "--log-level",
            choices=LOG_LEVELS,
            default=env.get("INITFETCH_LOG_LEVEL", "info") if defaults else argparse.SUPPRESS,
            help="console level; debug also prints the audit records [$INITFETCH_LOG_LEVEL, info]",
        )
        return group

    def audit_option(defaults: bool) -> _Parser:
        group = _Parser(add_help=False)
        group.add_argument(
            "--audit-file",
            default=env.get("INITFETCH_AUDIT_FILE") if defaults else argparse.SUPPRESS,
            help="append one JSON audit record per reference to this file, whatever the log level "
            "[$INITFETCH_AUDIT_FILE]",
        )
        return group

    manifest = _Parser(add_help=False)
    manifest.add_argument(
        "-m", "--manifest", default=None, help="manifest file [$INITFETCH_MANIFEST, else ./initfetch.yaml]"
    )

    fetching = _Parser(add_help=False)
    fetching.add_argument(
        "--timeout",
        type=float,
        default=env.get("INITFETCH_TIMEOUT", "60"),  # a string default goes through type=
        help="overall deadline in seconds for resolving and rendering, retries included "
        "[$INITFETCH_TIMEOUT, 60]",
    )
    fetching.add_argument(
        "--concurrency",
        type=_positive_int,
        default=env.get("INITFETCH_CONCURRENCY", str(DEFAULT_CONCURRENCY)),
        help="maximum backend calls in flight in all; each provider instance also has its own "
        f"ceiling (concurrency: in the manifest) [$INITFETCH_CONCURRENCY, {DEFAULT_CONCURRENCY}]",
    )

    out_dir = _Parser(add_help=False)
    out_dir.add_argument(
        "-o",
        "--out",
        default=env.get("INITFETCH_OUT", "/run/secrets"),
        help="output directory [$INITFETCH_OUT, /run/secrets]",
    )
    writing = _Parser(add_help=False)
    writing.add_argument(
        "--allow-disk",
        action="store_true",
        default=_flag(env, "INITFETCH_ALLOW_DISK"),
        help="write even if the output directory is not on tmpfs/ramfs [$INITFETCH_ALLOW_DISK=1]",
    )

    parser = _Parser(
        prog="initfetch",
        description="Fetch secrets from Vault/OpenBao, AWS and Azure into tmpfs files or a process "
        "environment: init container, sidecar or ENTRYPOINT wrapper.",
        epilog="Run 'initfetch COMMAND --help' for a command's options and examples.",
        parents=[logging_options(True), audit_option(True)],
    )
    parser.add_argument("--version", action="version", version=f"initfetch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    logs, audits = logging_options(False), audit_option(False)

    def command(name: str, parents: list[_Parser], summary: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            parents=[logs, *parents],
            help=summary,
            description=summary[0].upper() + summary[1:] + ".",
            epilog=EXAMPLES[name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    p = command(
        "render",
        [audits, manifest, fetching, out_dir, writing],
        "resolve, render and write every file, then exit (init container) or hold (sidecar)",
    )
    p.add_argument(
        "--hold",
        action="store_true",
        default=_flag(env, "INITFETCH_HOLD"),
        help="after writing, stay up until SIGTERM (sidecar; keeps a tmpfs volume mounted) "
        "[$INITFETCH_HOLD=1]",
    )
    _watch_flags(p, env)

    p = command(
        "exec",
        [audits, manifest, fetching, out_dir, writing],
        "resolve and render, then run CMD with the secrets in its environment",
    )
    p.add_argument(
        "--supervise",
        action="store_true",
        default=_flag(env, "INITFETCH_SUPERVISE"),
        help="stay as PID 1: forward signals, reap zombies, mirror the exit code [$INITFETCH_SUPERVISE=1]",
    )
    _watch_flags(p, env)
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARG...")

    p = command(
        "preview",
        [audits, manifest, fetching],
        "print what would be written and exported, values masked unless --reveal",
    )
    p.add_argument(
        "--offline",
        action="store_true",
        default=_flag(env, "INITFETCH_OFFLINE"),
        help="contact nothing; render with placeholders [$INITFETCH_OFFLINE=1]",
    )
    p.add_argument(
        "--reveal",
        action="store_true",
        default=_flag(env, "INITFETCH_REVEAL"),
        help="show real values [$INITFETCH_REVEAL=1]",
    )

    command("check", [manifest], "validate the manifest and templates offline, no backend contacted")
    p = command("healthcheck", [out_dir], "exit 0 once a complete render is in place in the output directory")
    p.add_argument(
        "--max-stale",
        default=env.get("INITFETCH_MAX_STALE") or None,
        metavar="DURATION",
        help="unhealthy once the render was last confirmed current longer ago than this (30s, 5m, 1h) "
        "[$INITFETCH_MAX_STALE]",
    )
    p = command("init", [], "write a commented starter manifest and template; never overwrites")
    p.add_argument(
        "--dir", default=".", help="where to write initfetch.yaml and templates/ [current directory]"
    )
    return parser


def _watch_flags(p: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    p.add_argument(
        "--watch",
        action="store_true",
        default=_flag(env, "INITFETCH_WATCH"),
        help="stay up and keep the render current: poll static secrets, renew or replace leases, "
        "apply on_change (exec: supervise the command) [$INITFETCH_WATCH=1]",
    )
    p.add_argument(
        "--revoke-on-exit",
        action="store_true",
        default=_flag(env, "INITFETCH_REVOKE_ON_EXIT"),
        help="with --watch: revoke the leases (and the login token) initfetch created when it stops "
        "[$INITFETCH_REVOKE_ON_EXIT=1]",
    )
    p.add_argument(
        "--wipe-on-exit",
        action="store_true",
        default=_flag(env, "INITFETCH_WIPE_ON_EXIT"),
        help="with --watch: remove the rendered files when it stops [$INITFETCH_WIPE_ON_EXIT=1]",
    )


class Terminated(BaseException):
    """SIGTERM arrived while resolving or writing (as PID 1 nothing else would stop us).

    A BaseException, like KeyboardInterrupt, so no `except Exception` on the way
    (a provider, a template, the logging module) can swallow it.
    """


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = dict(os.environ if environ is None else environ)
    parser = build_parser(env)
    args = parser.parse_args(argv)
    for name, choices in (("log_format", LOG_FORMATS), ("log_level", LOG_LEVELS)):
        if getattr(args, name) not in choices:  # argparse does not check defaults taken from INITFETCH_*
            parser.error(f"INITFETCH_{name.upper()} must be one of {', '.join(choices)}")
    redactor = Redactor()
    try:
        setup_logging(redactor, fmt=args.log_format, level=args.log_level, audit_file=args.audit_file)
    except OSError as e:
        sys.stderr.write(f"initfetch: error: cannot open the audit file: {e.strerror}\n")
        return 2
    try:
        # PID 1 ignores SIGTERM unless it handles it: `docker stop` must not wait out the grace period.
        signal.signal(signal.SIGTERM, _terminate)
        args.started = time.monotonic()
        code = COMMANDS[args.command](args, env, redactor)
        sys.stdout.flush()  # a closed pipe must fail here, not in the interpreter's exit
        return code
    except InitfetchError as e:
        for problem in e.problems:
            log.error("%s", problem)
        log.error("%s (exit %d)", e.headline, e.exit_code)
        return e.exit_code
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # The reader went away (`initfetch preview | head`): stop quietly, as `cat` would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except Terminated:
        log.error("terminated by SIGTERM before finishing; nothing more is written")
        return 128 + signal.SIGTERM
    except Exception as e:  # a bug: say so in one line; a traceback could quote a value
        log.error("internal error: %s: %s (please report this)", type(e).__name__, e)
        return 1


# --- commands -------------------------------------------------------------------


def _manifest_path(args: argparse.Namespace, env: Mapping[str, str]) -> Path:
    return Path(args.manifest) if args.manifest else default_manifest_path(env)


def _load(args: argparse.Namespace, env: Mapping[str, str], *, lenient: bool = False) -> Manifest:
    manifest = load_manifest(_manifest_path(args, env), env, lenient_vars=lenient)
    from initfetch.templating.render import check_templates

    problems = check_templates(manifest)
    if not lenient:
        problems += missing_sdks(manifest)
    if problems:
        raise BadInput(problems)
    return manifest


def _resolver(
    manifest: Manifest, args: argparse.Namespace, env: Mapping[str, str], redactor: Redactor
) -> Resolver:
    """A resolver to close after use; watch mode keeps it open (its instances hold the logins)."""
    if args.timeout <= 0:
        raise BadInput("--timeout must be a positive number of seconds")
    return Resolver(manifest, env, redactor, timeout=args.timeout, concurrency=args.concurrency)


def _resolve(
    manifest: Manifest, args: argparse.Namespace, env: Mapping[str, str], redactor: Redactor
) -> Resolution:
    resolver = _resolver(manifest, args, env, redactor)
    try:
        return resolver.resolve()
    finally:
        resolver.close()


def _credentials(manifest: Manifest, resolution: Resolution) -> set[str]:
    """Login credentials to remove from the application's environment."""
    remove: set[str] = set()
    for name, inst in resolution.instances.items():
        if not manifest.providers[name].keep_credentials:
            remove |= inst.credential_env()
    return remove


def _watch(
    manifest: Manifest,
    args: argparse.Namespace,
    env: Mapping[str, str],
    redactor: Redactor,
    cmd: list[str] | None = None,
) -> int:
    """render --watch / exec --watch: the first render as usual, then the watcher (initfetch.watch_run)."""
    from initfetch import execute, watch_run

    resolver = _resolver(manifest, args, env, redactor)
    try:
        resolution = resolver.resolve()
        rendered = _render(manifest, resolution, redactor, _deadline(args), args.timeout)
        writes = cmd is None or bool(manifest.outputs)
        if writes:
            _write(manifest, resolution, rendered, args)
        opts = watch_run.Options(
            Path(args.out) if writes else None,
            args.allow_disk,
            args.timeout,
            args.concurrency,
            revoke_on_exit=args.revoke_on_exit,
            wipe_on_exit=args.wipe_on_exit,
        )
        remove = _credentials(manifest, resolution)
        common = (manifest, env, redactor, resolver.instances, resolution, rendered, opts)
        if cmd is None:
            return watch_run.render_watch(*common, execute.child_env(env, {}, remove))
        log.info(
            "starting %s with %d variable(s) from the manifest; watching for changes",
            cmd[0],
            len(rendered.env),
        )
        return watch_run.exec_watch(*common, cmd, remove)
    finally:
        resolver.close()


def _deadline(args: argparse.Namespace) -> float:
    """The command's start + --timeout: resolving and rendering share one deadline."""
    return float(args.started + args.timeout)


def _render(
    manifest: Manifest,
    resolution: Resolution,
    redactor: Redactor,
    deadline: float | None = None,
    timeout: float | None = None,
) -> Rendered:
    """`deadline`: the command's start + --timeout (time.monotonic()); `timeout` names it in errors."""
    meta = {name: r.meta() for name, r in resolution.info.items()}
    from initfetch.templating.render import render

    return render(manifest, resolution.values, meta, redactor, deadline=deadline, timeout=timeout)


def _write(manifest: Manifest, resolution: Resolution, rendered: Rendered, args: argparse.Namespace) -> None:
    out_dir = Path(args.out)
    marker = outdir_marker.marker_body(
        {
            name: {"ref": r.ref, "provider": r.provider, "version": r.version, "outcome": r.outcome}
            for name, r in resolution.info.items()
        },
        list(rendered.files),
        list(rendered.env),
    )
    writer.write_all(out_dir, rendered.files, manifest.outputs, marker, allow_disk=args.allow_disk)
    log.info("wrote %d file(s) and the completion marker to %s", len(rendered.files), out_dir)


def cmd_render(args: argparse.Namespace, env: Mapping[str, str], redactor: Redactor) -> int:
    manifest = _load(args, env)
    check_target(Path(args.out), args.allow_disk, manifest.outputs)  # fail before any backend is asked
    if args.watch:  # --watch holds too; --hold alone holds and never refreshes
        return _watch(manifest, args, env, redactor)
    resolution = _resolve(manifest, args, env, redactor)
    rendered = _render(manifest, resolution, redactor, _deadline(args), args.timeout)
    _write(manifest, resolution, rendered, args)
    from initfetch import watch_status

    watch_status.remove(Path(args.out))  # not watched: no earlier watcher's status may speak for it
    if args.hold:
        _hold()
    return 0


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
    path = _manifest_path(args, env)
    if args.manifest is None and not env.get("INITFETCH_MANIFEST") and not path.exists():
        from initfetch.manifest.zeroconf import manifest_from_env  # the wrapper mode, without a manifest

        manifest = manifest_from_env(env, Path.cwd())
        if not manifest.secrets:
            log.info("no manifest (%s) and no initfetch+ references in the environment; starting as is", path)
    else:
        manifest = _load(args, env)
    if manifest.outputs:
        check_target(Path(args.out), args.allow_disk, manifest.outputs)
    if args.watch:
        return _watch(manifest, args, env, redactor, cmd)
    resolution = _resolve(manifest, args, env, redactor)
    rendered = _render(manifest, resolution, redactor, _deadline(args), args.timeout)
    if manifest.outputs:
        _write(manifest, resolution, rendered, args)
    remove = _credentials(manifest, resolution)
    child = execute.child_env(env, rendered.env, remove)
    log.info("starting %s with %d variable(s) from the manifest", cmd[0], len(rendered.env))
    return execute.supervise(cmd, child) if args.supervise else execute.replace(cmd, child)


def cmd_preview(args: argparse.Namespace, env: Mapping[str, str], redactor: Redactor) -> int:

    from initfetch import preview
    from initfetch.templating.render import Renderer

    if args.timeout <= 0:
        raise BadInput("--timeout must be a positive number of seconds")
    deadline = time.monotonic() + args.timeout  # resolving and rendering share --timeout
    manifest = _load(args, env, lenient=args.offline)
    if args.offline:
        values = preview.placeholders(manifest)
        meta = {
            n: Resolved(n, s.ref_text, s.ref_text.partition(":")[0], "offline").meta()
            for n, s in manifest.secrets.items()
        }
        hidden = preview.secret_files(manifest)  # nothing resolved offline, so nothing to scrub with
        renderer = Renderer(manifest, None, preview=True, hidden=hidden)
        rendered = renderer.render(values, meta, deadline=deadline, timeout=args.timeout)
        preview.show(sys.stdout, manifest, rendered, None, None, sizes={})
        return 0
    from initfetch.watch_run import revoke_leases

    resolver = _resolver(manifest, args, env, redactor)
    try:
        resolution = resolver.resolve()
        try:
            # the real render must succeed too
            rendered = _render(manifest, resolution, redactor, deadline, args.timeout)
            sizes = None
            if not args.reveal:
                meta = {name: r.meta() for name, r in resolution.info.items()}
                sizes = {dest: len(data) for dest, data in rendered.files.items()}
                rendered = preview.masked(manifest, resolution.values, meta, rendered, redactor, deadline)
            preview.show(sys.stdout, manifest, rendered, resolution.info, redactor, sizes=sizes)
        finally:
            # A preview minted real dynamic credentials: they must not stay valid for their TTL.
            revoke_leases(resolver.instances, resolution.info, args.timeout)
    finally:
        resolver.close()
    return 0


def cmd_check(args: argparse.Namespace, env: Mapping[str, str], redactor: Redactor) -> int:
    manifest = _load(args, env, lenient=True)
    from initfetch import preview

    # Everything an offline render can find, with placeholders (no value, no backend).
    problems = preview.offline_problems(
        manifest, time.monotonic() + CHECK_RENDER_TIMEOUT, CHECK_RENDER_TIMEOUT
    )
    if problems:
        raise BadInput(problems, headline="templates failed to render")
    for problem in missing_sdks(manifest):
        log.warning("%s", problem)
    unexpanded = [s.name for s in manifest.secrets.values() if s.ref is None]
    if unexpanded:
        log.warning("not checked beyond syntax (unset variables): %s", ", ".join(unexpanded))
    print(
        f"ok: {manifest.path}: {len(manifest.secrets)} secret(s), {len(manifest.outputs)} file(s), "
        f"{len(manifest.env)} env variable(s)"
    )
    return 0


def cmd_healthcheck(args: argparse.Namespace, env: Mapping[str, str], redactor: Redactor) -> int:
    from initfetch.manifest.watch import parse_duration
    from initfetch.outdir import health

    max_stale = None
    if args.max_stale is not None:
        try:
            max_stale = parse_duration(args.max_stale)
        except ValueError as e:
            raise BadInput(f"--max-stale (INITFETCH_MAX_STALE) {e}") from None
    marker = health.healthcheck(Path(args.out))
    health.check(Path(args.out), marker, max_stale)
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
    "healthcheck": cmd_healthcheck,
    "init": cmd_init,
}
