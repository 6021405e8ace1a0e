"""The manifest: what to fetch, from where, and what to write.

model.py holds the plain data every stage reads; load.py reads and checks a
file (with checker.py, outputs.py for `templates:`/`files:`, watch.py for
`refresh:`/`on_change:`, and yamlsrc.py, which keeps every value's location);
zeroconf.py builds a manifest from `initfetch+` environment variables;
starter.py writes `initfetch init`'s starter. The package parses and
validates: it owns no output names (initfetch.outdir does).
"""

from initfetch.manifest.load import (
    NO_MANIFEST,
    builtin_providers,
    check_reference,
    load_manifest,
    missing_extras,
    missing_sdks,
    searched,
)
from initfetch.manifest.model import (
    ENV_NAME_RE,
    NAME_RE,
    EnvFrom,
    Manifest,
    Output,
    ProviderConfig,
    SecretSpec,
    default_manifest_path,
    env_var_names,
)

__all__ = [
    "ENV_NAME_RE",
    "NAME_RE",
    "NO_MANIFEST",
    "EnvFrom",
    "Manifest",
    "Output",
    "ProviderConfig",
    "SecretSpec",
    "builtin_providers",
    "check_reference",
    "default_manifest_path",
    "env_var_names",
    "load_manifest",
    "missing_extras",
    "missing_sdks",
    "searched",
]
