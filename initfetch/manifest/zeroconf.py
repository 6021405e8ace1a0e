"""Zero-configuration mode for the ENTRYPOINT wrapper: `initfetch exec -- app`
with no manifest resolves environment variables whose values are references
behind the explicit prefix `initfetch+`:

    DB_PASSWORD=initfetch+vault://secret/app/db#password

Only values that start with the prefix are touched, so an ordinary URL in the
environment (`DATABASE_URL=postgres://...`) is never resolved by accident.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from initfetch.errors import BadInput, Loc, Problem, shown
from initfetch.limits import Limits
from initfetch.manifest.checker import Checker, Loading
from initfetch.manifest.load import builtin_providers, check_reference
from initfetch.manifest.model import ENV_NAME_RE, Manifest, SecretSpec

PREFIX = "initfetch+"


def manifest_from_env(environ: Mapping[str, str], base_dir: Path) -> Manifest:
    try:
        limits = Limits().with_env(environ)  # no manifest: INITFETCH_LIMIT_* alone set the run's limits
    except ValueError as e:
        raise BadInput(Problem(None, str(e))) from None
    manifest = Manifest(path=None, base_dir=base_dir, providers=builtin_providers(base_dir), limits=limits)
    chk = Checker("environment")
    ctx = Loading(chk, environ, False, base_dir)
    for name in sorted(environ):
        value = environ[name]
        if not value.startswith(PREFIX):
            continue
        if not ENV_NAME_RE.match(name):  # then the name itself could be anything: not quoted
            chk.add(Loc(f"environment variable {shown(name)}"), "not a valid variable name for a secret")
            continue
        where = Loc("environment")  # the resolver's message names the variable (the secret)
        text = value[len(PREFIX) :]
        ref = check_reference(ctx, text, where, manifest.providers, name)
        if ref is not None:
            manifest.secrets[name] = SecretSpec(name, ref, text, loc=where)
            manifest.env[name] = ("{{ secrets.%s }}" % name, where)  # noqa: UP031 - a Jinja template
    if chk.problems:
        raise BadInput(chk.problems)
    return manifest
