"""Offline behaviour of the azure-keyvault provider: references, options, vault URLs,
which environment variables count as login credentials. No SDK, no network."""

from __future__ import annotations

from typing import Any

import pytest

from initfetch.providers.azure.keyvault import KeyVaultProvider
from initfetch.reference import parse


def ref_problem(text: str) -> str | None:
    return KeyVaultProvider.check_reference(parse(text))


@pytest.mark.parametrize(
    "ref",
    [
        "azkv://myvault/db-password",
        "azkv://myvault/db-password#user",
        "kv://payments/stripe-key",
        "azkv://my-vault-01/Name-1/0123456789abcdef0123456789abcdef",
        "azkv://myvault/" + "a" * 127,
    ],
)
def test_good_references(ref: str) -> None:
    assert ref_problem(ref) is None


@pytest.mark.parametrize(
    ("ref", "needle"),
    [
        ("azkv://myvault", "VAULT/NAME"),
        ("azkv://myvault/a/b/c", "VAULT/NAME"),
        ("azkv://myvault/db_password", "secret name"),
        ("azkv://myvault/" + "a" * 128, "secret name"),
        ("azkv://my.vault/db", "vault name"),
        ("azkv://-vault/db", "vault name"),
        ("azkv://myvault/db/ver-1", "version id"),
        ("azkv://myvault/db?version=1", "no query"),
    ],
)
def test_bad_references(ref: str, needle: str) -> None:
    problem = ref_problem(ref)
    assert problem and needle in problem


def problems(options: dict[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    return list(KeyVaultProvider.check_options(options))


def test_good_options() -> None:
    assert problems({}) == []
    assert (
        problems(
            {
                "vault_urls": {"payments": "https://payments.privatelink.vaultcore.azure.net"},
                "vault_suffix": "vault.azure.cn",
                "ca_file": "/etc/ssl/corp.pem",
                "auth": {
                    "method": "client_secret",
                    "tenant_id": "t",
                    "client_id": "c",
                    "client_secret_file": "/run/s",
                    "authority_host": "login.chinacloudapi.cn",
                    "disable_instance_discovery": True,
                },
            }
        )
        == []
    )
    for auth in (
        {"method": "managed_identity", "client_id": "c"},
        {"method": "workload_identity", "token_file": "/var/run/secrets/azure/tokens/azure-identity-token"},
        {"method": "client_certificate", "certificate_file": "/run/c.pem", "certificate_password_env": "PW"},
        {"method": "default", "client_id": "c", "additionally_allowed_tenants": ["*"]},
    ):
        assert problems({"auth": auth}) == [], auth


@pytest.mark.parametrize(
    ("options", "path", "needle"),
    [
        ({"vault_url": "http://myvault.vault.azure.net"}, ("vault_url",), "https"),
        ({"vault_url": "https://myvault.vault.azure.net/secrets"}, ("vault_url",), "no path"),
        ({"vault_urls": {"x": "ftp://a"}}, ("vault_urls", "x"), "https"),
        ({"vault_suffix": "https://vault.azure.cn"}, ("vault_suffix",), "DNS suffix"),
        ({"auth": {"method": "password"}}, ("auth", "method"), "unknown auth method"),
        (
            {"auth": {"method": "client_secret", "client_secret": "x"}},
            ("auth", "client_secret"),
            "client_secret_file",
        ),
        ({"auth": {"method": "managed_identity", "tenant_id": "t"}}, ("auth", "tenant_id"), "does not apply"),
        (
            {"auth": {"method": "client_secret", "client_secret_env": "not a name"}},
            ("auth", "client_secret_env"),
            "variable",
        ),
        (
            {"auth": {"method": "client_secret", "client_secret_env": "A", "client_secret_file": "/f"}},
            ("auth",),
            "not both",
        ),
        (
            {"auth": {"disable_instance_discovery": "yes"}},
            ("auth", "disable_instance_discovery"),
            "wrong type",
        ),
        ({"region": "x"}, ("region",), "unknown option"),
    ],
)
def test_bad_options(options: dict[str, Any], path: tuple[str, ...], needle: str) -> None:
    found = problems(options)
    assert any(p == path and needle in m for p, m in found), found


def test_vault_url_mapping() -> None:
    assert KeyVaultProvider("azkv", {}, {}).vault_url("myvault") == "https://myvault.vault.azure.net"
    cn = KeyVaultProvider("kv", {"vault_suffix": "vault.azure.cn"}, {})
    assert cn.vault_url("myvault") == "https://myvault.vault.azure.cn"
    mapped = KeyVaultProvider(
        "kv",
        {
            "vault_urls": {"pay": "https://pay.privatelink.vaultcore.azure.net/"},
            "vault_url": "https://one.example.com",
        },
        {},
    )
    assert mapped.vault_url("pay") == "https://pay.privatelink.vaultcore.azure.net"
    assert mapped.vault_url("anything") == "https://one.example.com"


@pytest.mark.parametrize(
    ("auth", "environ", "expected"),
    [
        (
            {},
            {"AZURE_CLIENT_SECRET": "x", "AZURE_CLIENT_ID": "c", "AZURE_TENANT_ID": "t"},
            {"AZURE_CLIENT_SECRET"},
        ),
        ({}, {"IDENTITY_ENDPOINT": "http://x", "IDENTITY_HEADER": "h"}, set()),
        (
            {"method": "client_secret", "client_secret_env": "SP"},
            {"SP": "x", "AZURE_CLIENT_SECRET": "y"},
            {"SP"},
        ),
        ({"method": "client_secret", "client_secret_file": "/f"}, {"AZURE_CLIENT_SECRET": "y"}, set()),
        (
            {"method": "client_certificate"},
            {"AZURE_CLIENT_CERTIFICATE_PASSWORD": "p"},
            {"AZURE_CLIENT_CERTIFICATE_PASSWORD"},
        ),
        ({"method": "managed_identity"}, {"AZURE_CLIENT_SECRET": "y", "IDENTITY_HEADER": "h"}, set()),
        ({"method": "workload_identity"}, {"AZURE_FEDERATED_TOKEN_FILE": "/t"}, set()),
    ],
)
def test_credential_env(auth: dict[str, Any], environ: dict[str, str], expected: set[str]) -> None:
    assert KeyVaultProvider("kv", {"auth": auth}, environ).credential_env() == expected
