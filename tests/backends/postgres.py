"""Debian's PostgreSQL in a temporary data directory on a free loopback port, and
OpenBao's `database` secrets engine pointed at it (dynamic credentials with leases).

`initdb` refuses to run as root, so under root the server runs as `nobody` in a
world-accessible temporary directory (outside pytest's 0700 tmp tree). The
superuser logs in with a password over TCP (scram-sha-256), like the users
OpenBao creates, so `psql` proves a credential works. Debian's `postgresql`
package provides /usr/lib/postgresql/<version>/bin.
"""

from __future__ import annotations

import atexit
import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.backends.local_http import free_port

SUPERUSER = "postgres"


def pg_bin() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb and pg_ctl."""
    found = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin") if Path(p, "initdb").exists()]
    found.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return found[-1] if found else None


def psql_binary() -> str | None:
    here = pg_bin()
    if here is not None and (here / "psql").exists():
        return str(here / "psql")
    return shutil.which("psql")


@dataclass
class Postgres:
    port: int
    password: str  # the superuser's
    workdir: Path
    bindir: Path
    run_as: list[str]

    def psql(
        self, user: str, password: str, sql: str = "select current_user"
    ) -> subprocess.CompletedProcess[str]:
        """Log in over TCP with a password (from the environment, never the argument list)."""
        binary = psql_binary()
        assert binary is not None
        env = {"PATH": os.environ.get("PATH", "/usr/bin"), "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"}
        args = [binary, "-h", "127.0.0.1", "-p", str(self.port), "-U", user, "-d", "postgres", "-tAc", sql]
        return subprocess.run(args, env=env, capture_output=True, text=True, timeout=30)

    def can_login(self, user: str, password: str) -> bool:
        return self.psql(user, password).returncode == 0

    def stop(self) -> None:
        subprocess.run(
            [
                *self.run_as,
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.workdir / "data"),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            timeout=30,
        )
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_postgres() -> Postgres:
    bindir = pg_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    run_as = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    work = Path(tempfile.mkdtemp(prefix="initfetch-pg-"))
    work.chmod(0o777)
    password = secrets.token_hex(12)
    pwfile = work / "pw"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o644)
    init = subprocess.run(
        [*run_as, str(bindir / "initdb"), "-D", str(work / "data"), "-U", SUPERUSER, "-E", "UTF8",
         "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "--no-sync"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    pwfile.unlink()
    if init.returncode:
        shutil.rmtree(work, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {init.stderr[-2000:]}")
    for _attempt in range(3):
        port = free_port()
        options = f"-p {port} -k {work} -c listen_addresses=127.0.0.1 -c fsync=off"
        started = subprocess.run(
            [*run_as, str(bindir / "pg_ctl"), "-D", str(work / "data"), "-l", str(work / "log"),
             "-w", "-t", "60", "-o", options, "start"],
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        if started.returncode == 0:
            pg = Postgres(port, password, work, bindir, run_as)
            atexit.register(pg.stop)  # a test process that dies early takes the server along
            return pg
    log = (work / "log").read_text(errors="replace") if (work / "log").exists() else started.stderr
    shutil.rmtree(work, ignore_errors=True)
    raise RuntimeError(f"PostgreSQL did not start: {log[-2000:]}")


CREATE_ROLE = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
]


def configure_database_engine(
    client: Any,
    pg: Postgres,
    *,
    role: str = "app",
    default_ttl: int = 3600,
    max_ttl: int = 86400,
    mount: str = "database",
) -> str:
    """Mount OpenBao's database engine on `pg` with one role; returns the creds path."""
    if f"{mount}/" not in client.sys.list_mounted_secrets_engines()["data"]:
        client.sys.enable_secrets_engine("database", path=mount)
    client.secrets.database.configure(
        name="pg",
        plugin_name="postgresql-database-plugin",
        connection_url=f"postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{pg.port}/postgres?sslmode=disable",
        username=SUPERUSER,
        password=pg.password,
        allowed_roles=["*"],
        verify_connection=True,
        mount_point=mount,
    )
    client.secrets.database.create_role(
        name=role,
        db_name="pg",
        creation_statements=CREATE_ROLE,
        default_ttl=default_ttl,
        max_ttl=max_ttl,
        mount_point=mount,
    )
    return f"{mount}/creds/{role}"


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    from tests.conftest import require

    require(pg_bin() and psql_binary(), "PostgreSQL is not installed (apt-get install postgresql)")
    require(shutil.which("runuser") or os.geteuid() != 0, "runuser is needed to run initdb as nobody")
    pg = start_postgres()
    yield pg
    pg.stop()
