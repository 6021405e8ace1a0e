"""Logging and the audit trail, both scrubbed through the redactor.

Log lines go to stderr as text (`initfetch: level: message`) or JSON lines, at
the console level (`--log-level`). Audit records (one per reference: reference,
provider, version, lease, duration, outcome; never a value) go to
`--audit-file` as JSON lines whatever the console level, and to the console
only at `--log-level debug`: a quiet console never costs the audit trail, and a
normal run does not print a line per secret.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from typing import Any

from initfetch.redact import FIELD_MIN_LEN, Redactor

log = logging.getLogger("initfetch")
audit_log = logging.getLogger("initfetch.audit")


class _Scrub(logging.Filter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:  # a traceback could quote a value; keep only its type
            exc = record.exc_info[1]
            message += f" ({type(exc).__name__})"
            record.exc_info = None
            record.exc_text = None
        record.msg, record.args = self.redactor.scrub(message), ()
        audit = getattr(record, "audit", None)
        if isinstance(audit, dict):
            record.audit = {
                k: self.redactor.scrub(v, FIELD_MIN_LEN) if isinstance(v, str) else v
                for k, v in audit.items()
            }
        return True


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        audit = getattr(record, "audit", None)
        if isinstance(audit, dict):
            fields = " ".join(f"{k}={_text(v)}" for k, v in audit.items())
            return f"initfetch: audit: {fields}"
        return f"initfetch: {record.levelname.lower()}: {record.getMessage()}"


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        audit = getattr(record, "audit", None)
        if isinstance(audit, dict):
            body["event"] = "resolve"
            body.update(audit)
        else:
            body["msg"] = record.getMessage()
        return json.dumps(body, default=str)


def _text(v: Any) -> str:
    s = "-" if v is None else str(v)
    return json.dumps(s) if (" " in s or s == "") else s


class _ConsoleAudit(logging.Filter):
    """Audit records reach the console only when it shows debug output."""

    def __init__(self, show: bool) -> None:
        super().__init__()
        self.show = show

    def filter(self, record: logging.LogRecord) -> bool:
        return self.show or not record.name.startswith(audit_log.name)


def setup(
    redactor: Redactor, *, fmt: str = "text", level: str = "info", audit_file: str | None = None
) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in list(audit_log.handlers):
        audit_log.removeHandler(h)
    console_level = getattr(logging, level.upper(), logging.INFO)
    scrub = _Scrub(redactor)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    handler.setLevel(console_level)
    handler.addFilter(_ConsoleAudit(console_level <= logging.DEBUG))
    handler.addFilter(scrub)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)  # third-party libraries stay quiet unless they warn
    # Python warnings go through the same scrubbed handler; urllib3's note about an
    # optional SOCKS extra is noise for every user.
    warnings.filterwarnings("ignore", message="SOCKS support in urllib3")
    logging.captureWarnings(True)
    log.setLevel(console_level)
    audit_log.setLevel(logging.DEBUG if console_level <= logging.DEBUG else logging.INFO)
    audit_log.disabled = not audit_file and console_level > logging.DEBUG  # nobody reads them: no cost
    if audit_file:
        file_handler = logging.FileHandler(audit_file, encoding="utf-8")
        file_handler.setFormatter(_JsonFormatter())
        file_handler.addFilter(scrub)
        audit_log.addHandler(file_handler)


def audit(**fields: Any) -> None:
    audit_log.info("resolve", extra={"audit": fields})
