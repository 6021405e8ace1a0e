"""The manifest's JSON Schema (draft 2020-12), for editors and CI: `initfetch schema`.

Generated from the tables the loader checks against (TOP_KEYS, SECRET_KEYS,
PROVIDER_KEYS, the output keys, ON_CHANGE_KEYS, the limits the manifest may set,
the provider types and each type's options and login methods), so it cannot
drift from them. The schema is never stricter than the loader: whatever it
rejects, `initfetch check` rejects too (tests/test_schema.py). It is looser
where only the loader can know: which schemes the manifest declares, whether a
template file exists, whether a signal name is real.

A section left empty (`secrets:` with nothing under it) is null, which the loader
takes as an empty section; so does the schema.

Modes: YAML 1.1 (the loader) reads `0440` as octal 288, YAML 1.2 (most editors)
as decimal 440; integers up to 777 are allowed, the loader tells them apart.
"""

from __future__ import annotations

from typing import Any

from initfetch import limits, providers
from initfetch.manifest import model
from initfetch.manifest.watch import ON_CHANGE_KEYS
from initfetch.providers.schema import options_schema

DRAFT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = "urn:initfetch:manifest:1"

_DURATION = {
    "description": "a duration: 30s, 5m, 1h30m, 500ms, or a number of seconds",
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0},
        {"type": "string", "pattern": r"^\s*(\d+(\.\d+)?([mM][sS]|[sSmMhHdD]))+\s*$"},
        {"type": "string", "pattern": r"^\s*[+]?(\d[\d_]*(\.[\d_]*)?|\.\d[\d_]*)([eE][+-]?\d+)?\s*$"},
    ],
}
_SIZE = {
    "description": 'bytes: 1048576, or with a unit: "512KiB", "1MiB", "2MB"',
    "anyOf": [
        {"type": "integer", "minimum": 1},
        # the loader matches units ignoring case, which also takes the Kelvin sign and dotted/dotless i
        {"type": "string", "pattern": "^\\s*\\d+\\s*([bB]|[kK\u212amMgG][iI\u0130\u0131]?[bB])?\\s*$"},
    ],
}
_POSITIVE = {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": r"^\s*\d+\s*$"}]}
_MODE = {
    "description": 'octal permissions: "0440" (quoted) or 0440; no setuid bits',
    "anyOf": [
        {"type": "integer", "minimum": 0, "maximum": 777},
        {"type": "string", "pattern": r"^\s*(0o?)?[0-7]{1,4}\s*$"},
    ],
}
_ID = {
    "description": "a numeric id or a name",
    "anyOf": [{"type": "integer", "minimum": 0}, {"type": "string", "minLength": 1}, {"type": "null"}],
}
_DEST = {
    "type": "string",
    "description": "a path relative to the output directory",
    "minLength": 1,
    "pattern": r"^[^/\\][^\\]*$",
}

# What each key of an output, a secret and on_change holds; every key of the loader's
# tables must be here (a test says so), so a new key cannot be left out of the schema.
OUTPUT_PROPERTIES: dict[str, dict[str, Any]] = {
    "dest": _DEST,
    "mode": _MODE,
    "owner": _ID,
    "group": _ID,
    "src": {"type": "string", "minLength": 1, "description": "a template, relative to the manifest"},
    "secret": {"type": "string", "description": "the secret whose value the file holds"},
    "format": {
        "enum": ["fullchain", "pem_bundle", "pkcs12"],
        "description": "files: write an issued certificate (a pki/issue write) as its full chain, "
        "chain + key in one PEM, or a PKCS#12 keystore",
    },
    "password": {"type": "string", "description": "format pkcs12: the secret holding the keystore password"},
}
SECRET_PROPERTIES: dict[str, dict[str, Any]] = {
    "ref": {"$ref": "#/$defs/reference"},
    "optional": {"type": "boolean", "description": "absent (not found) is no error"},
    "default": {"type": "string", "description": "the value when absent; implies optional"},
    "refresh": {"$ref": "#/$defs/duration"},
    "write": {
        "type": "object",
        "description": "a secret produced by a write to ref's path (vault: pki/issue/ROLE, "
        "transit/decrypt/KEY), with these parameters; ${VAR} expands in values",
        "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_-]{0,63}$"},
        "additionalProperties": {
            "anyOf": [
                {"type": ["string", "number", "boolean"]},
                {"type": "array", "items": {"type": ["string", "number", "boolean"]}},
                {
                    "type": "object",
                    "properties": {"file": {"type": "string", "minLength": 1}},
                    "required": ["file"],
                    "additionalProperties": False,
                    "description": "the parameter's value read from this file at write time",
                },
            ]
        },
    },
    "revoke_replaced": {
        "type": "boolean",
        "description": "watch: revoke what a replaced write made (a certificate's serial) "
        "after on_change.revoke_grace",
    },
}
ON_CHANGE_PROPERTIES: dict[str, dict[str, Any]] = {
    "signal": {"type": "string", "minLength": 1, "description": "exec --watch: HUP, USR1, ... (default HUP)"},
    "restart": {"type": "boolean", "description": "exec --watch: stop and start the application"},
    "grace": {"$ref": "#/$defs/duration"},
    "command": {
        "type": "array",
        "minItems": 1,
        "items": {"type": "string", "minLength": 1},
        "description": "a command to run after a change",
    },
    "timeout": {"$ref": "#/$defs/duration"},  # on_change.timeout: the command's deadline
    "revoke_grace": {"$ref": "#/$defs/duration"},
}


def manifest_schema() -> dict[str, Any]:
    """The whole schema, as a JSON-ready dict (keys in a stable order)."""
    top: dict[str, dict[str, Any]] = {
        "version": {"const": 1, "description": "always 1"},
        "providers": _providers(),
        "secrets": {
            "type": ["object", "null"],
            "description": "NAME: reference, or NAME: {ref, optional, default, refresh}",
            "propertyNames": {"pattern": model.NAME_RE.pattern, "maxLength": 64},
            "additionalProperties": {
                "anyOf": [
                    {"$ref": "#/$defs/reference"},
                    _closed(SECRET_PROPERTIES, model.SECRET_KEYS, required=["ref"]),
                ]
            },
        },
        "templates": _outputs(model.TEMPLATE_KEYS, "src"),
        "files": _outputs(model.FILE_KEYS, "secret"),
        "env": {
            "type": ["object", "null"],
            "description": "the application's environment (exec): NAME: a template string",
            "propertyNames": {"pattern": model.ENV_NAME_RE.pattern},
            "additionalProperties": {"type": "string"},
        },
        "env_from": {
            "type": ["array", "null"],
            "items": {
                "anyOf": [
                    _closed(
                        {
                            "secret": {"type": "string"},
                            "prefix": {"type": "string", "pattern": r"^([A-Za-z_][A-Za-z0-9_]*)?$"},
                        },
                        model.ENV_FROM_KEYS,
                        required=["secret"],
                    ),
                    {"type": "null"},
                ]
            },
        },
        "limits": _limits(),
        "on_change": _closed(ON_CHANGE_PROPERTIES, ON_CHANGE_KEYS | {"timeout"}),
        "mask_output": {
            "type": "boolean",
            "description": "exec: mask secret values in the application's stdout and stderr",
        },
    }
    return {
        "$schema": DRAFT,
        "$id": SCHEMA_ID,
        "title": "initfetch manifest",
        "description": "What initfetch fetches, from where, and what it writes (initfetch.yaml)",
        "type": "object",
        "required": ["version"],
        "properties": {key: top[key] for key in _ordered(model.TOP_KEYS)},
        "additionalProperties": False,
        "$defs": {
            "duration": _DURATION,
            "reference": {
                "type": "string",
                "description": "SCHEME://PATH[?QUERY][#KEY], e.g. vault://secret/app#password",
                "pattern": r"^[A-Za-z][A-Za-z0-9_.+-]*://",
            },
        },
    }


def _ordered(keys: set[str]) -> list[str]:
    """The loader's keys in the order the README presents them; new ones last."""
    order = ["version", "providers", "secrets", "templates", "files", "env", "env_from", "limits"]
    return [k for k in order if k in keys] + sorted(keys - set(order))


def _closed(
    props: dict[str, dict[str, Any]], keys: set[str], required: list[str] | None = None
) -> dict[str, Any]:
    """A mapping with exactly the loader's keys (unknown keys are an error there too)."""
    out: dict[str, Any] = {
        "type": "object",
        "properties": {k: props[k] for k in sorted(keys)},
        "additionalProperties": False,
    }
    if required:
        out["required"] = required
    return out


def _outputs(keys: set[str], needed: str) -> dict[str, Any]:
    # A null item (`- ` with nothing after it) is skipped by the loader; so the schema allows it.
    item = _closed(OUTPUT_PROPERTIES, keys, required=["dest", needed])
    return {"type": ["array", "null"], "items": {"anyOf": [item, {"type": "null"}]}}


def _limits() -> dict[str, Any]:
    settable = sorted(name for name, (_, in_manifest) in limits.DESCRIPTIONS.items() if in_manifest)
    props = {}
    for name in settable:
        kind = _SIZE if name.endswith("_size") else _POSITIVE
        props[name] = {**kind, "description": limits.DESCRIPTIONS[name][0]}
    return {"type": ["object", "null"], "properties": props, "additionalProperties": False}


def _providers() -> dict[str, Any]:
    """Instances by name; each one's keys are decided by its `type`."""
    branches = []
    for type_name in sorted(providers.TYPES):
        props = {
            "type": {"const": type_name},
            "keep_credentials": {"type": "boolean", "description": "keep login variables for the app"},
            "refresh": {"$ref": "#/$defs/duration"},
            **options_schema(type_name),
        }
        assert set(props) >= model.PROVIDER_KEYS
        branches.append(
            {
                "if": {"properties": {"type": {"const": type_name}}, "required": ["type"]},
                "then": {"properties": props, "additionalProperties": False},
            }
        )
    return {
        "type": ["object", "null"],
        "description": "provider instances by name; the name is the scheme of references",
        "propertyNames": {"pattern": r"^[A-Za-z][A-Za-z0-9_.+-]*$", "maxLength": 64},
        "additionalProperties": {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"enum": sorted(providers.TYPES)}},
            "allOf": branches,
        },
    }
