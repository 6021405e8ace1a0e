"""A faithful local Azure Key Vault + Entra ID token service, over HTTPS on 127.0.0.1.

The real `azure-keyvault-secrets` SecretClient and `azure-identity` credentials
talk to it unmodified (shapes: /work/shared/notes/testing-backends.md, section 3):

- Key Vault: `GET /secrets/{name}/[{version}]?api-version=...`; an
  unauthenticated request gets the 401 bearer challenge. The challenge names
  `resource="https://0.0.1:PORT"`, a suffix of `127.0.0.1:PORT`, so the SDK's
  challenge-resource verification stays ON. Secrets, pinned versions, disabled
  versions (403 SecretDisabled), not found (404 SecretNotFound), RBAC or
  access-policy denials (403 Forbidden + innererror) and injected 429/5xx.
- Entra ID (same HTTPS server, used as `authority_host`):
  `GET /{tenant}/v2.0/.well-known/openid-configuration` and
  `POST /{tenant}/oauth2/v2.0/token` for client secret, client certificate
  (a JWT signed with the client's key, verified here) and workload identity
  (a federated token). Wrong tenants, clients and secrets get AADSTS errors.
- Managed identity (App Service shape, plain HTTP like the real endpoint):
  `GET /msi/token?api-version=2019-08-01&resource=...[&client_id=...]` with
  `X-IDENTITY-HEADER`.

Use `start_keyvault(workdir)` from any script (the demo), or the `keyvault`
pytest fixture (module scope). Each server gets a fresh port: the SDK caches
challenges per host:port for the whole process.
"""

from __future__ import annotations

import json
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.backends.local_http import QuietHandler, serve

TENANT_ID = "72f988bf-0000-4000-8000-00000000a11e"
CLIENT_ID = "11111111-2222-4333-8444-555555555555"  # service principal (secret, cert, workload)
MI_CLIENT_ID = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"  # a user-assigned managed identity
# The service principals' object ids in the tenant (an access token's `oid` claim).
OBJECT_IDS = {
    CLIENT_ID: "0b1ec7ed-0000-4000-8000-00000000005a",
    MI_CLIENT_ID: "0b1ec7ed-0000-4000-8000-0000000000a1",
}
API_VERSION_PARAM = "api-version"


@dataclass
class SecretVersion:
    id: str
    value: str
    enabled: bool = True
    content_type: str | None = None
    tags: dict[str, str] | None = None
    created: int = field(default_factory=lambda: int(time.time()))


class KeyVaultDouble:
    """State and controls of one running double; see the module docstring."""

    def __init__(self, workdir: Path) -> None:
        import trustme

        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.tenant_id = TENANT_ID
        self.client_id = CLIENT_ID
        self.mi_client_id = MI_CLIENT_ID
        self.client_secret = "sp-secret-" + uuid.uuid4().hex
        self.identity_header = "idh-" + uuid.uuid4().hex
        self.federated_token = "fed-" + uuid.uuid4().hex
        self._signing_key = uuid.uuid4().hex  # the tokens' (HS256: only this double checks them)
        self._lock = threading.Lock()
        self._secrets: dict[str, list[SecretVersion]] = {}
        self._denied: dict[str, str] = {}  # secret name -> innererror code
        self._faults: dict[str, list[int]] = {}  # secret name -> statuses to answer next
        self._token_faults: list[int] = []  # statuses the token endpoints answer next
        self._tokens: dict[str, str] = {}  # access token -> audience resource
        self.requests: list[tuple[str, str]] = []  # (method, path) seen by the vault endpoints
        self.token_requests: list[dict[str, str]] = []  # what the token endpoints were asked
        self._conns: set[socket.socket] = set()

        ca = trustme.CA()
        self.ca_file = str(self.workdir / "kv-ca.pem")
        ca.cert_pem.write_to_path(self.ca_file)
        leaf = ca.issue_cert("localhost", "127.0.0.1")
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        leaf.configure_cert(tls)

        # The service principal's client certificate: one PEM with key + cert, as CertificateCredential wants.
        client_cert = ca.issue_cert("initfetch-client", key_type=trustme.KeyType.RSA)
        self.certificate_file = str(self.workdir / "client-cert.pem")
        Path(self.certificate_file).write_bytes(
            client_cert.private_key_pem.bytes() + client_cert.cert_chain_pems[0].bytes()
        )
        from cryptography import x509

        self._client_cert_key = x509.load_pem_x509_certificate(
            client_cert.cert_chain_pems[0].bytes()
        ).public_key()

        self.federated_token_file = str(self.workdir / "azure-identity-token")
        Path(self.federated_token_file).write_text(self.federated_token)
        self.client_secret_file = str(self.workdir / "client-secret")
        Path(self.client_secret_file).write_text(self.client_secret + "\n")

        owner = self

        class Handler(_Handler):
            double = owner

        self._https = serve(Handler, tls_context=tls)
        self._msi = serve(Handler)
        self.port = self._https.port
        self.url = self._https.url
        # What the challenge names: a domain suffix of 127.0.0.1:PORT (see the notes, 3(b) option 2).
        self.resource = f"https://0.0.1:{self.port}"
        self.msi_endpoint = f"{self._msi.url}/msi/token"
        # Enough for DefaultAzureCredential / ManagedIdentityCredential to log in (App Service shape).
        self.env = {"IDENTITY_ENDPOINT": self.msi_endpoint, "IDENTITY_HEADER": self.identity_header}

    # --- controls ---

    def set_secret(
        self,
        name: str,
        value: str,
        version: str | None = None,
        enabled: bool = True,
        content_type: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> str:
        """Add a new (now current) version of a secret; returns its version id."""
        v = SecretVersion(version or uuid.uuid4().hex, value, enabled, content_type, tags)
        with self._lock:
            self._secrets.setdefault(name, []).append(v)
        return v.id

    def deny(self, name: str, inner_code: str = "ForbiddenByRbac") -> None:
        """Answer 403 for this secret: ForbiddenByRbac (RBAC) or AccessDenied (access policy)."""
        with self._lock:
            self._denied[name] = inner_code

    def fail(self, name: str, *statuses: int) -> None:
        """Answer the next requests for this secret with these statuses (429, 500, 503...)."""
        with self._lock:
            self._faults.setdefault(name, []).extend(statuses)

    def fail_token(self, *statuses: int) -> None:
        """Answer the next token requests (Entra ID and managed identity) with these statuses.

        They carry `Retry-After: 0`: MSAL replays a throttled answer for Retry-After
        seconds (5 s when absent) without asking the server again.
        """
        with self._lock:
            self._token_faults.extend(statuses)

    def token_fault(self) -> int | None:
        with self._lock:
            return self._token_faults.pop(0) if self._token_faults else None

    def provider_options(self) -> dict[str, Any]:
        """Manifest options that point an azure-keyvault instance at this double."""
        return {"vault_url": self.url, "ca_file": self.ca_file}

    def stop(self) -> None:
        self._https.stop()
        self._msi.stop()
        with self._lock:
            conns = list(self._conns)
        for c in conns:  # kept-alive connections would otherwise still be served
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # --- request handling (called from handler threads) ---

    def issue_token(self, resource: str, app_id: str | None = None) -> str:
        """An access token shaped as Entra ID issues them: a signed JWT whose claims name the
        tenant (tid), the identity's object id (oid) and the application (appid)."""
        import jwt

        now = int(time.time())
        claims = {
            "aud": resource,
            "iss": f"https://sts.windows.net/{self.tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "tid": self.tenant_id,
            "oid": OBJECT_IDS.get(app_id or self.client_id, OBJECT_IDS[CLIENT_ID]),
            "appid": app_id or self.client_id,
            "uti": uuid.uuid4().hex,
        }
        token = jwt.encode(claims, self._signing_key, algorithm="HS256")
        with self._lock:
            self._tokens[token] = resource
        return token

    def token_ok(self, auth_header: str) -> bool:
        scheme, _, token = auth_header.partition(" ")
        with self._lock:
            return scheme == "Bearer" and self._tokens.get(token) == self.resource

    def lookup(self, name: str, version: str | None) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            faults = self._faults.get(name)
            if faults:
                status = faults.pop(0)
                return _fault(status)
            versions = self._secrets.get(name)
            denied = self._denied.get(name)
        if denied:
            return 403, _forbidden(denied, name), {}
        wanted = [v for v in versions or [] if version is None or v.id == version]
        if not wanted:
            shown = f"{name}/{version}" if version else name
            return (
                404,
                {
                    "error": {
                        "code": "SecretNotFound",
                        "message": f"A secret with (name/id) {shown} was not found in this key vault. "
                        "If you recently deleted this secret you may be able to recover it using the "
                        "correct recovery command. For help resolving this issue, please see "
                        "https://go.microsoft.com/fwlink/?linkid=2125182",
                    }
                },
                {},
            )
        v = wanted[-1]
        if not v.enabled:
            return 403, _forbidden("SecretDisabled", name), {}
        body: dict[str, Any] = {
            "value": v.value,
            "id": f"{self.url}/secrets/{name}/{v.id}",
            "attributes": {
                "enabled": True,
                "created": v.created,
                "updated": v.created,
                "recoveryLevel": "Recoverable+Purgeable",
                "recoverableDays": 90,
            },
        }
        if v.content_type is not None:
            body["contentType"] = v.content_type
        if v.tags is not None:
            body["tags"] = v.tags
        return 200, body, {}


def _fault(status: int) -> tuple[int, dict[str, Any], dict[str, str]]:
    if status == 429:
        return (
            429,
            {
                "error": {
                    "code": "Throttled",
                    "message": "Request was not processed because too many "
                    "requests were received. Reason: VaultRequestTypeLimitReached",
                }
            },
            {"Retry-After": "1"},
        )
    return status, {"error": {"code": "ServiceUnavailable", "message": "The service is unavailable."}}, {}


def _forbidden(inner: str, name: str) -> dict[str, Any]:
    if inner == "SecretDisabled":
        message = "Operation get is not allowed on a disabled secret."
    elif inner == "AccessDenied":
        message = (
            f"The user, group or application 'appid={CLIENT_ID};oid=0000;iss=https://sts.windows.net/"
            f"{TENANT_ID}/' does not have secrets get permission on key vault 'double;location=local'. "
            "For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287"
        )
    else:
        message = (
            "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny "
            "assignments or role definitions were changed recently, please observe propagation time.\r\n"
            f"Caller: appid={CLIENT_ID};oid=0000\r\n"
            "Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'\r\n"
            f"Resource: '/subscriptions/x/resourcegroups/rg/providers/microsoft.keyvault/vaults/double/"
            f"secrets/{name}'\r\nAssignment: (not found)\r\n"
        )
    return {"error": {"code": "Forbidden", "message": message, "innererror": {"code": inner}}}


def _aad_error(error: str, code: int, text: str) -> dict[str, Any]:
    return {
        "error": error,
        "error_description": f"AADSTS{code}: {text}\r\nTrace ID: {uuid.uuid4()}\r\n"
        "Timestamp: 2026-01-01 00:00:00Z",
        "error_codes": [code],
        "timestamp": "2026-01-01 00:00:00Z",
        "trace_id": str(uuid.uuid4()),
        "correlation_id": str(uuid.uuid4()),
    }


class _Handler(QuietHandler):
    protocol_version = "HTTP/1.1"
    double: KeyVaultDouble  # set by the subclass each double serves

    def setup(self) -> None:
        super().setup()
        with self.double._lock:
            self.double._conns.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.double._lock:
                self.double._conns.discard(self.connection)

    def handle(self) -> None:
        try:
            super().handle()
        except (ssl.SSLError, ConnectionError, OSError):
            pass  # a client that hung up or failed the handshake

    def reply(self, code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self) -> None:
        d = self.double
        u = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        if u.path == "/msi/token":
            return self._msi(q)
        if u.path.endswith("/v2.0/.well-known/openid-configuration"):
            tenant = u.path.split("/")[1]
            if tenant != d.tenant_id:
                return self.reply(400, _aad_error("invalid_tenant", 90002, f"Tenant '{tenant}' not found."))
            base = f"{d.url}/{tenant}"
            return self.reply(
                200,
                {
                    "token_endpoint": f"{base}/oauth2/v2.0/token",
                    "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                    "issuer": f"{base}/v2.0",
                    "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
                },
            )
        parts = u.path.split("/")
        if len(parts) in (3, 4) and parts[1] == "secrets" and parts[2]:
            with d._lock:
                d.requests.append(("GET", u.path))
            if not d.token_ok(self.headers.get("Authorization", "")):
                return self.reply(
                    401,
                    {
                        "error": {
                            "code": "Unauthorized",
                            "message": "AKV10000: Request is missing a Bearer or PoP token.",
                        }
                    },
                    {
                        "WWW-Authenticate": f'Bearer authorization="https://login.microsoftonline.com/'
                        f'{d.tenant_id}", resource="{d.resource}"'
                    },
                )
            if API_VERSION_PARAM not in q:
                return self.reply(
                    400,
                    {
                        "error": {
                            "code": "MissingApiVersionParameter",
                            "message": "The api-version query parameter is missing.",
                        }
                    },
                )
            version = parts[3] if len(parts) == 4 and parts[3] else None
            return self.reply(*d.lookup(parts[2], version))
        return self.reply(404, {"error": {"code": "NotFound", "message": f"no route {u.path}"}})

    def do_POST(self) -> None:
        d = self.double
        u = urlsplit(self.path)
        form = {k: v[0] for k, v in parse_qs(self._body().decode()).items()}
        parts = u.path.split("/")
        if not (len(parts) == 5 and parts[2:] == ["oauth2", "v2.0", "token"]):
            return self.reply(404, {"error": {"code": "NotFound", "message": f"no route {u.path}"}})
        tenant = parts[1]
        with d._lock:
            d.token_requests.append(
                {
                    "endpoint": "aad",
                    "tenant": tenant,
                    **{
                        k: form.get(k, "")
                        for k in ("grant_type", "client_id", "scope", "client_assertion_type")
                    },
                }
            )
        fault = d.token_fault()
        if fault:
            return self.reply(
                fault,
                _aad_error("temporarily_unavailable", 90033, "A transient error occurred."),
                {"Retry-After": "0"},
            )
        if tenant != d.tenant_id:
            return self.reply(400, _aad_error("invalid_tenant", 90002, f"Tenant '{tenant}' not found."))
        if form.get("grant_type") != "client_credentials":
            return self.reply(400, _aad_error("unsupported_grant_type", 70003, "unsupported grant type"))
        if form.get("client_id") != d.client_id:
            return self.reply(
                400,
                _aad_error(
                    "unauthorized_client",
                    700016,
                    f"Application with identifier '{form.get('client_id')}' was not found in the "
                    f"directory '{tenant}'.",
                ),
            )
        if not self._client_ok(form):
            return self.reply(
                401,
                _aad_error(
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request is "
                    "the client secret value, not the client secret ID.",
                ),
            )
        scope = form.get("scope", "")
        resources = [s.removesuffix("/.default") for s in scope.split() if s.endswith("/.default")]
        if resources != [d.resource]:
            return self.reply(
                400,
                _aad_error(
                    "invalid_resource", 500011, f"The resource principal named {scope} was not found."
                ),
            )
        token = d.issue_token(resources[0], form.get("client_id"))
        return self.reply(
            200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}
        )

    def _client_ok(self, form: dict[str, str]) -> bool:
        d = self.double
        if "client_secret" in form:
            return form["client_secret"] == d.client_secret
        assertion = form.get("client_assertion", "")
        if form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            return False
        if assertion == d.federated_token:  # workload identity: the projected token, as is
            return True
        import jwt  # a certificate credential signs its own assertion with the client key

        try:
            claims = jwt.decode(
                assertion,
                d._client_cert_key,  # type: ignore[arg-type]
                algorithms=["RS256", "PS256", "ES256"],
                audience=f"{d.url}/{d.tenant_id}/oauth2/v2.0/token",
            )
        except jwt.PyJWTError:
            return False
        return bool(claims.get("iss") == d.client_id == claims.get("sub"))

    def _msi(self, q: dict[str, str]) -> None:
        d = self.double
        with d._lock:
            d.token_requests.append(
                {"endpoint": "msi", "client_id": q.get("client_id", ""), "resource": q.get("resource", "")}
            )
        fault = d.token_fault()
        if fault:
            return self.reply(
                fault, {"statusCode": fault, "message": "The service is unavailable."}, {"Retry-After": "0"}
            )
        if self.headers.get("X-IDENTITY-HEADER") != d.identity_header:
            return self.reply(401, {"statusCode": 401, "message": "Unauthorized: bad X-IDENTITY-HEADER"})
        if q.get("api-version") != "2019-08-01":
            return self.reply(400, {"statusCode": 400, "message": "bad api-version"})
        if q.get("client_id", d.mi_client_id) != d.mi_client_id:
            return self.reply(
                400,
                {
                    "statusCode": 400,
                    "message": "No User Assigned or Delegated Managed Identity found for "
                    "specified ClientId/ResourceId/PrincipalId.",
                    "correlationId": str(uuid.uuid4()),
                },
            )
        resource = q.get("resource", "")
        token = d.issue_token(resource, q.get("client_id", d.mi_client_id))
        return self.reply(
            200,
            {
                "access_token": token,
                "expires_on": str(int(time.time()) + 3600),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": q.get("client_id", d.mi_client_id),
            },
        )


def start_keyvault(workdir: str | Path | None = None) -> KeyVaultDouble:
    """Start a double on fresh ports; call `.stop()` when done."""
    return KeyVaultDouble(Path(workdir or tempfile.mkdtemp(prefix="kv-double-")))


def seed_demo(handle: KeyVaultDouble) -> dict[str, str]:
    """Demo secrets; returns name -> current version id."""
    return {
        "db-password": handle.set_secret(
            "db-password", "demo-db-pass", content_type="text/plain", tags={"env": "demo"}
        ),
        "app-config": handle.set_secret(
            "app-config",
            json.dumps({"api_key": "demo-api-key", "nested": {"token": "demo-token"}}),
            content_type="application/json",
        ),
        "stripe-key": handle.set_secret("stripe-key", "sk_demo_123", tags={"owner": "payments"}),
    }


try:  # a pytest fixture when pytest is around; the demo imports this module without it
    import pytest

    @pytest.fixture(scope="module")
    def keyvault(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyVaultDouble]:
        handle = start_keyvault(tmp_path_factory.mktemp("keyvault"))
        try:
            yield handle
        finally:
            handle.stop()

except ImportError:  # pragma: no cover
    pass
