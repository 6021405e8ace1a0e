"""The lock files in requirements/ agree with pyproject.toml (written by `make lock`).

* Each lock records a digest of the pyproject tables it was resolved from; a change to the
  dependencies, the extras, requires-python or the build backend without `make lock` fails here.
* Every entry is pinned with `==` and carries sha256 hashes (the image installs them with
  --require-hashes), every pin is inside pyproject's range, and the per-extra locks agree
  with all.txt, so `-r vault.txt -r aws.txt` installs one consistent set.
* Offline re-resolution: the dependency closure of initfetch[EXTRA], walked through the
  metadata of the distributions installed in this venv (installed from all.txt by
  `make venv`), is exactly the set of distributions in EXTRA's lock, at the locked versions.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
REQS = ROOT / "requirements"
EXTRA_LOCKS = {"core": (), "vault": ("vault",), "aws": ("aws",), "azure": ("azure",), "all": ("all",)}


def _lock_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("initfetch_lock", REQS / "lock.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


lock = _lock_module()


@dataclass
class Entry:
    name: str
    version: str
    marker: str | None
    hashes: set[str] = field(default_factory=set)

    def applies(self) -> bool:
        return self.marker is None or Requirement(f"x; {self.marker}").marker.evaluate({"extra": ""})  # type: ignore[union-attr]


ENTRY = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+?)\s*(?:;\s*(?P<marker>[^\\]+?))?\s*\\?$"
)


def parse_lock(path: Path) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    current: Entry | None = None
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            m = ENTRY.match(line)
            assert m, f"{path.name}: not a pinned requirement: {line!r}"
            current = Entry(canonicalize_name(m["name"]), m["version"], m["marker"])
            assert current.name not in entries, f"{path.name}: {current.name} twice"
            entries[current.name] = current
        else:
            h = line.strip().rstrip("\\").strip()
            assert current is not None and h.startswith("--hash=sha256:"), f"{path.name}: {line!r}"
            current.hashes.add(h.removeprefix("--hash="))
    return entries


def pyproject() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def direct_requirements(extras: tuple[str, ...]) -> list[Requirement]:
    """initfetch's own requirements for these extras, self-references (`initfetch[a,b]`) expanded."""
    project = pyproject()
    optional = project.get("optional-dependencies", {})
    out = [Requirement(r) for r in project["dependencies"]]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for r in map(Requirement, optional[extra]):
            if canonicalize_name(r.name) == canonicalize_name(project["name"]):
                todo.extend(r.extras)
            else:
                out.append(r)
    return out


# ---- the digest ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(lock.expected_digests()))
def test_lock_was_written_from_the_current_inputs(name: str) -> None:
    path = REQS / name
    assert path.is_file(), f"{name} is missing: run `make lock`"
    assert lock.recorded_digest(path) == lock.expected_digests()[name], (
        f"requirements/{name} was resolved from other inputs than pyproject.toml has now: run `make lock`"
    )


def test_the_digest_follows_dependencies_not_the_rest(tmp_path: Path) -> None:
    text = (ROOT / "pyproject.toml").read_text()
    base = lock.digest(lock.pyproject_inputs(ROOT / "pyproject.toml"))

    def digest_of(new_text: str) -> str:
        p = tmp_path / "pyproject.toml"
        p.write_text(new_text)
        return lock.digest(lock.pyproject_inputs(p))

    assert '"jinja2>=3.1,<4"' in text and 'aws = ["boto3>=1.35,<2"]' in text
    assert digest_of(text.replace('"jinja2>=3.1,<4"', '"jinja2>=3.1.5,<4"')) != base
    assert digest_of(text.replace('aws = ["boto3>=1.35,<2"]', 'aws = ["boto3>=1.35,<2", "s3fs"]')) != base
    new_extra = 'gcp = ["google-cloud-secret-manager"]\n\n[project.scripts]'
    assert digest_of(text.replace("[project.scripts]", new_extra)) != base
    assert digest_of(text.replace('requires = ["setuptools>=68"]', 'requires = ["setuptools>=70"]')) != base
    # Not a resolver input: description, tool settings.
    assert digest_of(text.replace("line-length = 110", "line-length = 100")) == base


# ---- the entries ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(lock.expected_digests()))
def test_every_entry_is_pinned_and_hashed(name: str) -> None:
    entries = parse_lock(REQS / name)
    assert entries
    for e in entries.values():
        Version(e.version)  # a real version, not a range
        assert e.hashes, f"{name}: {e.name} has no hash"


@pytest.mark.parametrize("stem", EXTRA_LOCKS)
def test_pins_are_inside_the_pyproject_ranges(stem: str) -> None:
    entries = parse_lock(REQS / f"{stem}.txt")
    for req in direct_requirements(EXTRA_LOCKS[stem]):
        e = entries.get(canonicalize_name(req.name))
        assert e is not None, f"{stem}.txt lacks {req.name}"
        assert req.specifier.contains(e.version, prereleases=True), (
            f"{stem}.txt: {e.name}=={e.version} not {req}"
        )


@pytest.mark.parametrize("stem", [s for s in EXTRA_LOCKS if s != "all"])
def test_extra_locks_agree_with_all(stem: str) -> None:
    everything = parse_lock(REQS / "all.txt")
    for e in parse_lock(REQS / f"{stem}.txt").values():
        assert e.name in everything, f"{stem}.txt has {e.name}, all.txt does not"
        assert (e.version, e.hashes) == (everything[e.name].version, everything[e.name].hashes), e.name


def test_build_lock_pins_the_build_backend() -> None:
    build = parse_lock(REQS / "build.txt")
    backend = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    for req in map(Requirement, backend):
        e = build[canonicalize_name(req.name)]
        assert req.specifier.contains(e.version)


# ---- offline re-resolution against the installed metadata -----------------------------------------


def closure(reqs: list[Requirement]) -> dict[str, str]:
    """name -> installed version of every distribution these requirements pull in, here."""
    env = default_environment()
    found: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [r for r in reqs if r.marker is None or r.marker.evaluate({**env, "extra": ""})]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        key = (name, frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            pytest.fail(f"{name} is not installed in this venv: run `make venv`")
        found[name] = dist.version
        for sub in map(Requirement, dist.requires or []):
            wanted = {"", *req.extras}
            if sub.marker is None or any(sub.marker.evaluate({**env, "extra": x}) for x in wanted):
                todo.append(sub)
    return found


@pytest.mark.parametrize("stem", EXTRA_LOCKS)
def test_lock_is_the_dependency_closure(stem: str) -> None:
    locked = {e.name: e.version for e in parse_lock(REQS / f"{stem}.txt").values() if e.applies()}
    resolved = closure(direct_requirements(EXTRA_LOCKS[stem]))
    drift = {n: (v, locked[n]) for n, v in resolved.items() if n in locked and v != locked[n]}
    assert not drift, f"installed != locked (run `make venv` after `make lock`): {drift}"
    assert set(resolved) == set(locked), (
        f"{stem}.txt is not the closure of initfetch[{','.join(EXTRA_LOCKS[stem])}]: "
        f"missing {sorted(set(resolved) - set(locked))}, extra {sorted(set(locked) - set(resolved))}"
    )
