"""JSON Schema of a provider instance's options, from the tables its offline checks use.

`initfetch schema` (initfetch.manifest.schema) asks here for each provider type's
options: the class's OPTIONS and the common ones, and for the backends whose
`auth:` block has methods, one sub-schema per method from the same tables the
`check_options` of that backend reads (the Vault login classes, the Azure
option table). Nothing is written by hand that a check already knows, so the
schema cannot drift from the loader; tests/test_schema.py holds them together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from initfetch import providers
from initfetch.providers.base import COMMON_OPTIONS, MAX_CONCURRENCY

JSON_TYPES: dict[type, str] = {
    str: "string",
    bool: "boolean",
    int: "integer",
    float: "number",
    dict: "object",
    list: "array",
}


def json_type(expected: type | tuple[type, ...]) -> dict[str, Any]:
    """The schema of a value a check tests with isinstance(value, expected)."""
    kinds = expected if isinstance(expected, tuple) else (expected,)
    names = sorted({JSON_TYPES[k] for k in kinds})
    return {"type": names[0] if len(names) == 1 else names}


def options_schema(type_name: str) -> dict[str, dict[str, Any]]:
    """Property schemas of a provider type's own options (not `type`, `keep_credentials`, `refresh`)."""
    cls = providers.provider_class(type_name)
    props: dict[str, dict[str, Any]] = {}
    for key, expected in {**COMMON_OPTIONS, **cls.OPTIONS}.items():
        props[key] = json_type(expected)
    props["concurrency"] = {
        "type": "integer",
        "minimum": 1,
        "maximum": MAX_CONCURRENCY,
        "description": "requests in flight to this instance at most",
    }
    auth = AUTH_SCHEMAS.get(type_name)
    if auth is not None and "auth" in props:
        props["auth"] = auth()
    return props


def _by_method(methods: Mapping[str, dict[str, Any]], default: str, description: str) -> dict[str, Any]:
    """An `auth:` mapping whose `method` (default `default`) decides which keys it may hold."""
    branches = []
    for method, body in methods.items():
        if method == default:  # also when `method` is left out
            test: dict[str, Any] = {"properties": {"method": {"const": method}}}
        else:
            test = {"properties": {"method": {"const": method}}, "required": ["method"]}
        branches.append({"if": test, "then": body})
    return {
        "type": "object",
        "description": description,
        "properties": {"method": {"enum": sorted(methods), "default": default}},
        "allOf": branches,
    }


def _vault_auth() -> dict[str, Any]:
    from initfetch.providers.vault.auth import METHODS

    methods = {}
    for name, cls in METHODS.items():
        props: dict[str, Any] = {}
        for key, expected in cls.all_keys().items():
            props[key] = json_type(expected)
            if expected is str:
                props[key]["minLength"] = 1
        body: dict[str, Any] = {"properties": props, "additionalProperties": False}
        required = list(cls.REQUIRED)
        if required:
            body["required"] = required
        needed = [c for c, must in cls.CREDENTIALS.items() if must]
        if needed:
            body["allOf"] = [
                {"anyOf": [{"required": [k]} for k in (c, f"{c}_file", f"{c}_env")]} for c in needed
            ]
        methods[name] = body
    return _by_method(methods, "token", "how initfetch logs in to Vault/OpenBao (default: a token)")


def _azure_auth() -> dict[str, Any]:
    from initfetch.providers.azure.credentials import _ENV_NAME, AUTH_OPTIONS, METHODS

    methods = {}
    for name in METHODS:
        props: dict[str, Any] = {}
        for key, (expected, applies) in AUTH_OPTIONS.items():
            if name not in applies:
                continue
            props[key] = json_type(expected)
            if key.endswith("_env"):
                props[key]["pattern"] = _ENV_NAME.pattern
        methods[name] = {"properties": props, "additionalProperties": False}
    return _by_method(
        methods, "default", "how initfetch gets an Azure token (default: DefaultAzureCredential)"
    )


AUTH_SCHEMAS: dict[str, Callable[[], dict[str, Any]]] = {
    "vault": _vault_auth,
    "azure-keyvault": _azure_auth,
}
