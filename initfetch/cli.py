"""Command line: parse flags (each with an INITFETCH_* twin) and run one command
(initfetch.commands).

An option that several commands take (a *common* option: --timeout, -o,
--log-level, ...) may come before or after the command, with the same meaning;
after the command it wins. Given before a command it does not apply to, it is a
usage error. Defaults come from the INITFETCH_* twins once the command is known,
so a value given before the command is never overwritten by a default.

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
from dataclasses import dataclass
from typing import Any, NoReturn

from initfetch import __version__
from initfetch.errors import InitfetchError, Terminated
from initfetch.limits import DEFAULT_CONCURRENCY
from initfetch.logs import setup as setup_logging
from initfetch.redact import Redactor

log = logging.getLogger("initfetch")

TRUE = {"1", "true", "yes", "on"}
BEFORE = "before_command_"  # namespace prefix of a common option given before the command


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


LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")
FETCHING = ("render", "exec", "preview", "scan", "diff", "doctor")  # the commands that ask backends
WRITING = ("render", "exec")
ALL = ("render", "exec", "preview", "check", "healthcheck", "scan", "diff", "doctor", "schema", "init")

SCAN_MIN_LENGTH = "8"  # initfetch.scan is not imported to build the parser: every command pays for that
SCAN_MAX_FILE_SIZE = "100MiB"


@dataclass(frozen=True)
class Option:
    """One option of one or more commands, with its INITFETCH_* twin.

    `switch`: an on/off flag, on when its twin is 1/true/yes/on. Otherwise the twin (else
    `fallback`) is the default, converted by `kind` and checked against `choices` like a value
    given on the command line.
    """

    flags: tuple[str, ...]
    help: str
    commands: tuple[str, ...]
    twin: str | None = None  # INITFETCH_* variable; None: no twin
    fallback: str | None = None
    kind: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    switch: bool = False
    metavar: str | None = None
    shown: str | None = None  # what the help's [brackets] say, when not the twin and fallback
    name: str | None = None  # the namespace attribute, when not the flag's name
    repeat: bool = False  # may be given several times; the twin is comma-separated

    @property
    def dest(self) -> str:
        return self.name or self.flags[-1].removeprefix("--").replace("-", "_")

    @property
    def common(self) -> bool:
        """Taken by several commands: accepted before the command too."""
        return len(self.commands) > 1

    def add(self, parser: argparse.ArgumentParser, *, before: bool = False) -> None:
        """Add this option to a command's parser, or (`before`) to the main one; without a
        default either way (see `default`)."""
        dest = BEFORE + self.dest if before else self.dest
        kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS}
        if self.switch:
            kwargs["action"] = "store_true"
        elif self.repeat:
            kwargs.update(action="append", metavar=self.metavar)
        else:
            kwargs.update(
                type=self.kind,
                choices=self.choices,
                metavar=self.metavar or (None if self.choices else self.dest.upper()),
            )
        twin = f"${self.twin}=1" if self.switch else f"${self.twin}" if self.twin else ""
        shown = self.shown or ", ".join(x for x in (twin, self.fallback) if x)
        text = f"{self.help} [{shown}]" if shown else self.help
        if before and self.commands != ALL:
            text += f" ({', '.join(self.commands)})"
        parser.add_argument(*self.flags, help=text, **kwargs)

    def default(self, env: Mapping[str, str]) -> Any:
        """The value when the option is not given; ValueError says what is wrong with its twin."""
        raw = env.get(self.twin, "") if self.twin else ""
        if self.switch:
            return raw.strip().lower() in TRUE
        if self.repeat:
            return [x for x in raw.split(",") if x]
        value: Any = raw or self.fallback
        if value is None:
            return None
        if self.kind is not None:
            try:
                value = self.kind(value)
            except argparse.ArgumentTypeError as e:
                raise ValueError(f"{self.twin} ({self.flags[-1]}): {e}") from None
            except (TypeError, ValueError):
                kind = getattr(self.kind, "__name__", "value")
                raise ValueError(f"{self.twin} ({self.flags[-1]}): invalid {kind} value: {value!r}") from None
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{self.twin} must be one of {', '.join(self.choices)}")
        return value


def _switch(flag: str, help: str, commands: tuple[str, ...]) -> Option:
    """An on/off flag whose INITFETCH_* twin (`--allow-disk`: INITFETCH_ALLOW_DISK=1) turns it on."""
    twin = "INITFETCH_" + flag.removeprefix("--").upper().replace("-", "_")
    return Option((flag,), help, commands, twin, switch=True)


OPTIONS: tuple[Option, ...] = (
    Option(
        ("--log-format",),
        "text or JSON lines on stderr",
        ALL,
        "INITFETCH_LOG_FORMAT",
        "text",
        choices=LOG_FORMATS,
    ),
    Option(
        ("--log-level",),
        "console level; debug also prints the audit records",
        ALL,
        "INITFETCH_LOG_LEVEL",
        "info",
        choices=LOG_LEVELS,
    ),
    Option(
        ("--audit-file",),
        "append one JSON audit record per reference to this file, whatever the log level",
        FETCHING,
        "INITFETCH_AUDIT_FILE",
    ),
    Option(
        ("-m", "--manifest"),
        "manifest file",
        ("render", "exec", "preview", "check", "scan", "diff", "doctor"),
        # no default here: commands read INITFETCH_MANIFEST, as exec must tell "none given" apart
        shown="$INITFETCH_MANIFEST, else ./initfetch.yaml",
    ),
    Option(
        ("--timeout",),
        "overall deadline in seconds for resolving and rendering, retries included",
        FETCHING,
        "INITFETCH_TIMEOUT",
        "60",
        kind=float,
    ),
    Option(
        ("--concurrency",),
        "maximum backend calls in flight in all; each provider instance also has its own "
        "ceiling (concurrency: in the manifest)",
        FETCHING,
        "INITFETCH_CONCURRENCY",
        str(DEFAULT_CONCURRENCY),
        kind=_positive_int,
    ),
    Option(
        ("-o", "--out"),
        "output directory",
        (*WRITING, "healthcheck", "diff"),
        "INITFETCH_OUT",
        "/run/secrets",
    ),
    _switch("--allow-disk", "write even if the output directory is not on tmpfs/ramfs", WRITING),
    _switch(
        "--hold", "after writing, stay up until SIGTERM (sidecar; keeps a tmpfs volume mounted)", ("render",)
    ),
    _switch("--supervise", "stay as PID 1: forward signals, reap zombies, mirror the exit code", ("exec",)),
    _switch(
        "--mask-output",
        "pass the command's stdout and stderr through initfetch, every secret value replaced by "
        "<secret:NAME> (implies --supervise; also mask_output: true in the manifest)",
        ("exec",),
    ),
    _switch(
        "--require-secrets",
        "refuse to start CMD without secrets (no manifest and no initfetch+ reference, or a manifest "
        "that declares none): exit 2 instead of a warning",
        ("exec",),
    ),
    _switch(
        "--watch",
        "stay up and keep the render current: poll static secrets, renew or replace leases, "
        "apply on_change (exec: supervise the command)",
        WRITING,
    ),
    _switch(
        "--revoke-on-exit",
        "with --watch: revoke the leases (and the login token) initfetch created when it stops",
        WRITING,
    ),
    _switch("--wipe-on-exit", "with --watch: remove the rendered files when it stops", WRITING),
    _switch("--offline", "contact nothing; render with placeholders", ("preview",)),
    _switch("--reveal", "show real values", ("preview",)),
    _switch(
        "--allow-writes",
        "make the writes of write-style secrets (write: in the manifest, e.g. a PKI certificate) "
        "instead of showing placeholders; what they create is revoked when the preview ends",
        ("preview",),
    ),
    Option(
        ("--strict",),
        "exit 2 when a provider the manifest uses has no client library installed "
        "(render would fail here), instead of a warning",
        ("check",),
        "INITFETCH_STRICT",
        switch=True,
    ),
    Option(
        ("--exit-code",),
        "exit 1 when a render would change anything (files, versions, env names), as git diff --exit-code",
        ("diff",),
        "INITFETCH_DIFF_EXIT_CODE",
        switch=True,
    ),
    Option(
        ("--max-stale",),
        "unhealthy once the render was last confirmed current longer ago than this (30s, 5m, 1h); "
        "render and exec: what --listen's /readyz allows",
        (*WRITING, "healthcheck"),
        "INITFETCH_MAX_STALE",
        metavar="DURATION",
    ),
    Option(
        ("--listen",),
        "serve /healthz, /readyz and /metrics (Prometheus) on this address while running: "
        "render --watch or --hold, exec (implies --supervise); PORT alone listens on 127.0.0.1",
        WRITING,
        "INITFETCH_LISTEN",
        metavar="[ADDR:]PORT",
    ),
    Option(
        ("--from",),
        "look for the values of the render in OUT_DIR instead of resolving the manifest",
        ("scan",),
        "INITFETCH_SCAN_FROM",
        metavar="OUT_DIR",
        name="from_out",
    ),
    Option(
        ("--min-length",),
        "leave out values shorter than N characters: they would match by chance",
        ("scan",),
        "INITFETCH_SCAN_MIN_LENGTH",
        SCAN_MIN_LENGTH,
        kind=_positive_int,
        metavar="N",
    ),
    Option(
        ("--max-file-size",),
        "skip (and count) larger files: 100MiB, 1GB, bytes",
        ("scan",),
        "INITFETCH_SCAN_MAX_FILE_SIZE",
        SCAN_MAX_FILE_SIZE,
        metavar="SIZE",
    ),
    Option(
        ("--exclude",),
        "skip names or relative paths matching GLOB; repeatable",
        ("scan",),
        "INITFETCH_SCAN_EXCLUDE",
        shown="$INITFETCH_SCAN_EXCLUDE, comma-separated",
        metavar="GLOB",
        repeat=True,
    ),
    Option(
        ("--dir",),
        "where to write initfetch.yaml and templates/",
        ("init",),
        "INITFETCH_DIR",
        fallback=".",
        shown="$INITFETCH_DIR, else the current directory",
    ),
)

BY_FLAG = {flag: opt for opt in OPTIONS for flag in opt.flags}

SUMMARIES = {
    "render": "resolve, render and write every file, then exit (init container) or hold (sidecar)",
    "exec": "resolve and render, then run CMD with the secrets in its environment",
    "preview": "print what would be written and exported, values masked unless --reveal",
    "check": "validate the manifest and templates offline, no backend contacted",
    "healthcheck": "exit 0 once a complete render is in place in the output directory",
    "scan": "report files under PATH that contain a secret value or an encoded form of one; exit 1 if any",
    "diff": "show what a render would change in the output directory, values masked; writes nothing",
    "doctor": "check each provider instance: endpoint reachable, login and identity, access to each document",
    "schema": "print the manifest's JSON Schema (draft 2020-12), for editors and CI",
    "init": "write a commented starter manifest and template; never overwrites",
}

EXAMPLES = {
    "render": """examples:
  initfetch render -o /run/secrets               # init container: write, then exit
  initfetch render --hold                        # sidecar: write, then keep the tmpfs volume mounted
  initfetch render --watch                       # sidecar: keep the files current (docs/watch.md)
  initfetch render --watch --listen 0.0.0.0:9090 # and serve /healthz, /readyz, /metrics
  INITFETCH_OUT=/dev/shm/app initfetch render    # every flag has an INITFETCH_* twin""",
    "exec": """examples:
  initfetch exec -- ./server --port 8080         # render, then replace itself with the app
  initfetch exec --supervise -- ./server         # stay as PID 1: forward signals, reap, mirror the exit code
  initfetch exec --watch -- ./server             # supervise, and keep files and environment current
  initfetch exec --mask-output -- ./server       # supervise; <secret:NAME> for any value it prints
  DB_PASSWORD=initfetch+vault://secret/app#password initfetch exec -- ./server   # no manifest
  INITFETCH_REQUIRE_SECRETS=1 initfetch exec -- ./server   # never start without secrets""",
    "preview": """examples:
  initfetch preview                              # resolve, print what would be written, values masked
  initfetch preview --offline                    # no backend, no credentials: placeholders
  initfetch preview --allow-writes               # also issue write-style secrets (revoked at the end)""",
    "check": """examples:
  initfetch check -m deploy/initfetch.yaml       # manifest and templates, offline; exit 2 on a problem
  initfetch check --strict                       # CI: a missing provider library is an error too""",
    "healthcheck": """examples:
  initfetch healthcheck -o /run/secrets          # exit 0 once a complete render is in place, else 1
  initfetch healthcheck --max-stale 10m          # and not older than 10 minutes (watch mode)""",
    "scan": """examples:
  initfetch scan .                               # exit 1 if a file holds a value of the manifest's secrets
  initfetch scan --exclude 'tests/fixtures/*' src deploy
  initfetch scan --from /run/secrets .           # the values of a render in OUT_DIR (no backend asked)""",
    "diff": """examples:
  initfetch diff -o /run/secrets                 # files added, changed, removed; versions old -> new
  initfetch diff --exit-code -o staging-render   # CI: exit 1 when anything would change""",
    "doctor": """examples:
  initfetch doctor                               # one table: endpoint, login, identity, each document
  initfetch doctor -m deploy/initfetch.yaml --timeout 20""",
    "schema": """examples:
  initfetch schema > initfetch.schema.json       # then in initfetch.yaml, for editors:
                                                 # yaml-language-server: $schema=./initfetch.schema.json""",
    "init": """examples:
  initfetch init                                 # writes ./initfetch.yaml and templates/config.json.j2""",
}


class _MainParser(_Parser):
    """The top-level parser. After parsing, a common option given before the command is
    checked against the command and used unless given after it too; every option the
    command takes and was not given gets its default from its twin."""

    def __init__(self, env: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.env = env

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        args = list(sys.argv[1:] if args is None else args)
        self._one_command_options_before(args)
        ns, rest = super().parse_known_args(args, namespace)
        for arg in rest:  # an option of another command, before or after this one
            opt = BY_FLAG.get(arg.partition("=")[0])
            if opt is not None:
                self._misplaced(arg.partition("=")[0], opt, ns.command)
        command = ns.command
        for key in [k for k in vars(ns) if k.startswith(BEFORE)]:
            value = vars(ns).pop(key)
            opt = next(o for o in OPTIONS if o.dest == key.removeprefix(BEFORE))
            if command not in opt.commands:
                self._misplaced(opt.flags[-1], opt, command)
            if not hasattr(ns, opt.dest):  # given after the command too: that one wins
                setattr(ns, opt.dest, value)
        for opt in OPTIONS:
            if command in opt.commands and not hasattr(ns, opt.dest):
                try:
                    setattr(ns, opt.dest, opt.default(self.env))
                except ValueError as e:
                    self.error(str(e))
        return ns, rest

    def _one_command_options_before(self, args: list[str]) -> None:
        """`initfetch --hold render`: said plainly, before argparse takes a value for the command."""
        for i, arg in enumerate(args):
            if arg in SUMMARIES or arg == "--":
                return
            opt = BY_FLAG.get(arg.partition("=")[0])
            if opt is not None and not opt.common:
                command = next((a for a in args[i:] if a in SUMMARIES), None)
                if command is not None:
                    self._misplaced(arg.partition("=")[0], opt, command)

    def _misplaced(self, flag: str, opt: Option, command: str) -> NoReturn:
        if command in opt.commands:  # an option of this command alone, given before it
            self.error(
                f"{flag} is an option of {command}: it goes after the command (initfetch {command} {flag})"
            )
        takes = " and ".join(", ".join(opt.commands).rsplit(", ", 1))
        self.error(f"{flag} does not apply to {command}: it is an option of {takes}")


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = _MainParser(
        env,
        prog="initfetch",
        description="Fetch secrets from Vault/OpenBao, AWS and Azure into tmpfs files or a process "
        "environment: init container, sidecar or ENTRYPOINT wrapper.",
        epilog="The options above may also come after the command. "
        "Run 'initfetch COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"initfetch {__version__}")
    for opt in OPTIONS:
        if opt.common:
            opt.add(parser, before=True)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    for name, summary in SUMMARIES.items():
        p = sub.add_parser(
            name,
            help=summary,
            description=summary[0].upper() + summary[1:] + ".",
            epilog=EXAMPLES[name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        for opt in OPTIONS:
            if name in opt.commands:
                opt.add(p)
        if name == "exec":
            p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ARG...")
        elif name == "scan":
            p.add_argument("paths", nargs="*", default=["."], metavar="PATH", help="files or directories [.]")
    return parser


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(signum)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    env = dict(os.environ if environ is None else environ)
    args = build_parser(env).parse_args(argv)
    redactor = Redactor()
    try:
        setup_logging(
            redactor, fmt=args.log_format, level=args.log_level, audit_file=getattr(args, "audit_file", None)
        )
    except OSError as e:
        sys.stderr.write(f"initfetch: error: cannot open the audit file: {e.strerror}\n")
        return 2
    try:
        # PID 1 ignores SIGTERM unless it handles it: `docker stop` must not wait out the grace period.
        signal.signal(signal.SIGTERM, _terminate)
        args.started = time.monotonic()
        # Imported once the command is known: `--version` and `--help` never pay for the stages.
        from initfetch.commands import COMMANDS

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


def run() -> NoReturn:
    """The console script and `python -m initfetch`: main(), then exit without the teardown."""
    exit_now(main())


def exit_now(code: int) -> NoReturn:
    """Exit without the interpreter freeing every module and object one by one, about 10 ms
    of a 70 ms `check`, none of it useful to anyone. What the exit does that matters is done
    first: the standard streams flushed, the atexit handlers run (logging's flush and close of
    the audit file among them). A thread that is not a daemon (none of initfetch's) or a
    stream that cannot be flushed takes the ordinary exit, which reports it as it always has."""
    import atexit
    import threading

    main_thread = threading.main_thread()
    if any(t is not main_thread and not t.daemon and t.is_alive() for t in threading.enumerate()):
        sys.exit(code)
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:  # None: started with that descriptor closed
                stream.flush()
    except (OSError, ValueError):
        sys.exit(code)
    atexit._run_exitfuncs()
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()  # what an atexit handler wrote
    except (OSError, ValueError):
        code = code or 120  # the ordinary exit's status when its last flush fails
    os._exit(code)
