"""Provider registry, in the fsspec style.

A provider *type* maps to an import path; the module is imported the first time
a manifest uses that type, so a Vault-only run never imports boto3 or azure.
The SDK a type needs is checked with `importlib.util.find_spec` (no import),
and a missing one is a one-line error naming the extra to install.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from initfetch.errors import MissingExtra
from initfetch.providers.base import Provider


@dataclass(frozen=True)
class ProviderType:
    target: str  # "module:Class"
    extra: str | None = None  # pip extra that brings the SDK
    requires: tuple[str, ...] = ()  # top-level modules of that SDK


TYPES: dict[str, ProviderType] = {
    "file": ProviderType("initfetch.providers.file:FileProvider"),
    "env": ProviderType("initfetch.providers.env:EnvProvider"),
    "vault": ProviderType("initfetch.providers.vault.provider:VaultProvider", "vault", ("hvac",)),
    "aws-secretsmanager": ProviderType(
        "initfetch.providers.aws.secretsmanager:SecretsManagerProvider", "aws", ("boto3",)
    ),
    "aws-ssm": ProviderType("initfetch.providers.aws.ssm:ParameterStoreProvider", "aws", ("boto3",)),
    "azure-keyvault": ProviderType(
        "initfetch.providers.azure.keyvault:KeyVaultProvider",
        "azure",
        ("azure.identity", "azure.keyvault.secrets"),
    ),
}

# Schemes that work with no `providers:` section, and the type each one is.
BUILTIN_INSTANCES: dict[str, str] = {
    "vault": "vault",
    "awssm": "aws-secretsmanager",
    "ssm": "aws-ssm",
    "azkv": "azure-keyvault",
    "file": "file",
    "env": "env",
}


def provider_class(type_name: str) -> type[Provider]:
    """The class for a provider type; imports its module (not its SDK)."""
    spec = TYPES[type_name]
    module_name, _, class_name = spec.target.partition(":")
    cls: type[Provider] = getattr(importlib.import_module(module_name), class_name)
    return cls


def missing_sdk(type_name: str) -> str | None:
    """A one-line message if the SDK for this type is not installed, else None."""
    spec = TYPES[type_name]
    for module in spec.requires:
        try:
            import importlib.util  # here: 9 ms of start-up that only check-type paths need

            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if not found:
            return (
                f"the {type_name} provider needs the '{module}' package: "
                f"pip install 'initfetch[{spec.extra}]'"
            )
    return None


def require_sdk(type_name: str) -> None:
    message = missing_sdk(type_name)
    if message:
        raise MissingExtra(message)
