"""Command line: parse flags (each with an INITFETCH_* twin) and run one command
(initfetch.commands).

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
from collections.abc import Callable, Mapping, Sequence
from typing import NoReturn

from initfetch import __version__
from initfetch.commands import COMMANDS
from initfetch.errors import InitfetchError, Terminated
from initfetch.logs import setup as setup_logging
from initfetch.redact import Redactor
from initfetch.resolve.resolver import DEFAULT_CONCURRENCY

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


def _switch(p: argparse.ArgumentParser, env: Mapping[str, str], flag: str, help: str) -> None:
    """An on/off flag whose INITFETCH_* twin (`--allow-disk`: INITFETCH_ALLOW_DISK=1) turns it on."""
    var = "INITFETCH_" + flag.removeprefix("--").upper().replace("-", "_")
    p.add_argument(flag, action="store_true", default=_flag(env, var), help=f"{help} [${var}=1]")


LOG_FORMATS = ("text", "json")
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
  initfetch exec --mask-output -- ./server       # supervise; <secret:NAME> for any value it prints
  DB_PASSWORD=initfetch+vault://secret/app#password initfetch exec -- ./server   # no manifest""",
    "preview": """examples:
  initfetch preview                              # resolve, print what would be written, values masked
  initfetch preview --offline                    # no backend, no credentials: placeholders""",
    "check": """examples:
  initfetch check -m deploy/initfetch.yaml       # manifest and templates, offline; exit 2 on a problem""",
    "healthcheck": """examples:
  initfetch healthcheck -o /run/secrets          # exit 0 once a complete render is in place, else 1
  initfetch healthcheck --max-stale 10m          # and not older than 10 minutes (watch mode)""",
    "scan": """examples:
  initfetch scan .                               # exit 1 if a file holds a value of the manifest's secrets
  initfetch scan --exclude 'tests/fixtures/*' src deploy
  initfetch scan --from /run/secrets .           # the values of a render in OUT_DIR (no backend asked)""",
    "schema": """examples:
  initfetch schema > initfetch.schema.json       # then in initfetch.yaml, for editors:
                                                 # yaml-language-server: $schema=./initfetch.schema.json""",
    "init": """examples:
  initfetch init                                 # writes ./initfetch.yaml and templates/config.json.j2""",
}


def _group(build: Callable[[_Parser], object]) -> _Parser:
    """A parent parser holding one group of options."""
    group = _Parser(add_help=False)
    build(group)
    return group


def _logging_options(env: Mapping[str, str], defaults: bool) -> _Parser:
    """--log-format/--log-level, on the main parser (with the defaults) and on every command.

    On the commands the default is SUPPRESS: a value given before the command
    (`initfetch --log-level error render`) is not overwritten by a default after it.
    """

    def build(g: _Parser) -> None:
        g.add_argument(
            "--log-format",
            choices=LOG_FORMATS,
            default=env.get("INITFETCH_LOG_FORMAT", "text") if defaults else argparse.SUPPRESS,
            help="text or JSON lines on stderr [$INITFETCH_LOG_FORMAT, text]",
        )
        g.add_argument(
            "--log-level",
            choices=LOG_LEVELS,
            default=env.get("INITFETCH_LOG_LEVEL", "info") if defaults else argparse.SUPPRESS,
            help="console level; debug also prints the audit records [$INITFETCH_LOG_LEVEL, info]",
        )

    return _group(build)


def _audit_option(env: Mapping[str, str], defaults: bool) -> _Parser:
    return _group(
        lambda g: g.add_argument(
            "--audit-file",
            default=env.get("INITFETCH_AUDIT_FILE") if defaults else argparse.SUPPRESS,
            help="append one JSON audit record per reference to this file, whatever the log level "
            "[$INITFETCH_AUDIT_FILE]",
        )
    )


def _manifest_option(env: Mapping[str, str]) -> _Parser:
    return _group(
        lambda g: g.add_argument(
            "-m",
            "--manifest",
            default=None,
            help="manifest file [$INITFETCH_MANIFEST, else ./initfetch.yaml]",
        )
    )


def _fetching_options(env: Mapping[str, str]) -> _Parser:
    def build(g: _Parser) -> None:
        g.add_argument(
            "--timeout",
            type=float,
            default=env.get("INITFETCH_TIMEOUT", "60"),  # a string default goes through type=
            help="overall deadline in seconds for resolving and rendering, retries included "
            "[$INITFETCH_TIMEOUT, 60]",
        )
        g.add_argument(
            "--concurrency",
            type=_positive_int,
            default=env.get("INITFETCH_CONCURRENCY", str(DEFAULT_CONCURRENCY)),
            help="maximum backend calls in flight in all; each provider instance also has its own "
            f"ceiling (concurrency: in the manifest) [$INITFETCH_CONCURRENCY, {DEFAULT_CONCURRENCY}]",
        )

    return _group(build)


def _out_dir_option(env: Mapping[str, str]) -> _Parser:
    return _group(
        lambda g: g.add_argument(
            "-o",
            "--out",
            default=env.get("INITFETCH_OUT", "/run/secrets"),
            help="output directory [$INITFETCH_OUT, /run/secrets]",
        )
    )


def _writing_option(env: Mapping[str, str]) -> _Parser:
    return _group(
        lambda g: _switch(g, env, "--allow-disk", "write even if the output directory is not on tmpfs/ramfs")
    )


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="initfetch",
        description="Fetch secrets from Vault/OpenBao, AWS and Azure into tmpfs files or a process "
        "environment: init container, sidecar or ENTRYPOINT wrapper.",
        epilog="Run 'initfetch COMMAND --help' for a command's options and examples.",
        parents=[_logging_options(env, True), _audit_option(env, True)],
    )
    parser.add_argument("--version", action="version", version=f"initfetch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    logs, audits = _logging_options(env, False), _audit_option(env, False)
    manifest, fetching = _manifest_option(env), _fetching_options(env)
    out_dir, writing = _out_dir_option(env), _writing_option(env)

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
    _render_flags(p, env)
    p = command(
        "exec",
        [audits, manifest, fetching, out_dir, writing],
        "resolve and render, then run CMD with the secrets in its environment",
    )
    _exec_flags(p, env)
    p = command(
        "preview",
        [audits, manifest, fetching],
        "print what would be written and exported, values masked unless --reveal",
    )
    _preview_flags(p, env)
    command("check", [manifest], "validate the manifest and templates offline, no backend contacted")
    p = command("healthcheck", [out_dir], "exit 0 once a complete render is in place in the output directory")
    p.add_argument(
        "--max-stale",
        default=env.get("INITFETCH_MAX_STALE") or None,
        metavar="DURATION",
        help="unhealthy once the render was last confirmed current longer ago than this (30s, 5m, 1h) "
        "[$INITFETCH_MAX_STALE]",
    )
    p = command(
        "scan",
        [audits, manifest, fetching],
        "report files under PATH that contain a secret value or an encoded form of one; exit 1 if any",
    )
    _scan_flags(p, env)
    command("schema", [], "print the manifest's JSON Schema (draft 2020-12), for editors and CI")
    p = command("init", [], "write a commented starter manifest and template; never overwrites")
    p.add_argument(
        "--dir", default=".", help="where to write initfetch.yaml and templates/ [current directory]"
    )
    return parser


def _render_flags(p: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    _switch(p, env, "--hold", "after writing, stay up until SIGTERM (sidecar; keeps a tmpfs volume mounted)")
    _watch_flags(p, env)


def _exec_flags(p: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    _switch(p, env, "--supervise", "stay as PID 1: forward signals, reap zombies, mirror the exit code")
    _switch(
        p,
        env,
        "--mask-output",
        "pass the command's stdout and stderr through initfetch, every secret value replaced by "
        "<secret:NAME> (implies --supervise; also mask_output: true in the manifest)",
    )
    _watch_flags(p, env)
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARG...")


SCAN_MIN_LENGTH = "8"  # initfetch.scan is not imported to build the parser: every command pays for that
SCAN_MAX_FILE_SIZE = "100MiB"


def _scan_flags(p: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    p.add_argument(
        "--from",
        dest="from_out",
        metavar="OUT_DIR",
        default=env.get("INITFETCH_SCAN_FROM") or None,
        help="look for the values of the render in OUT_DIR instead of resolving the manifest "
        "[$INITFETCH_SCAN_FROM]",
    )
    p.add_argument(
        "--min-length",
        type=_positive_int,
        default=env.get("INITFETCH_SCAN_MIN_LENGTH", SCAN_MIN_LENGTH),
        metavar="N",
        help="leave out values shorter than N characters: they would match by chance "
        f"[$INITFETCH_SCAN_MIN_LENGTH, {SCAN_MIN_LENGTH}]",
    )
    p.add_argument(
        "--max-file-size",
        default=env.get("INITFETCH_SCAN_MAX_FILE_SIZE", SCAN_MAX_FILE_SIZE),
        metavar="SIZE",
        help="skip (and count) larger files: 100MiB, 1GB, bytes [$INITFETCH_SCAN_MAX_FILE_SIZE, 100MiB]",
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[x for x in env.get("INITFETCH_SCAN_EXCLUDE", "").split(",") if x],
        metavar="GLOB",
        help="skip names or relative paths matching GLOB; repeatable "
        "[$INITFETCH_SCAN_EXCLUDE, comma-separated]",
    )
    p.add_argument("paths", nargs="*", default=["."], metavar="PATH", help="files or directories [.]")


def _preview_flags(p: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    _switch(p, env, "--offline", "contact nothing; render with placeholders")
    _switch(p, env, "--reveal", "show real values")


def _watch_flags(p: argparse.ArgumentParser, env: Mapping[str, str]) -> None:
    _switch(
        p,
        env,
        "--watch",
        "stay up and keep the render current: poll static secrets, renew or replace leases, "
        "apply on_change (exec: supervise the command)",
    )
    _switch(
        p,
        env,
        "--revoke-on-exit",
        "with --watch: revoke the leases (and the login token) initfetch created when it stops",
    )
    _switch(p, env, "--wipe-on-exit", "with --watch: remove the rendered files when it stops")


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(signum)


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
        if sys.stdout is not None:  # None: started with descriptor 1 closed
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
    except Terminated as e:
        name = signal.Signals(e.signum).name
        log.error("terminated by %s before finishing; nothing more is written", name)
        return 128 + e.signum
    except Exception as e:  # a bug: say so in one line; a traceback could quote a value
        log.error("internal error: %s: %s (please report this)", type(e).__name__, e)
        return 1
