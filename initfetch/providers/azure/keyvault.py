"""`azkv://VAULT/NAME[/VERSION]` — Azure Key Vault secrets.

VAULT is a vault name. It maps to a URL in this order: `vault_urls[VAULT]`,
then `vault_url` (an instance bound to one vault; VAULT is then only a label
shown in messages), then `https://VAULT.<vault_suffix>` (default suffix
`vault.azure.net`; `vault.azure.cn`, `vault.usgovcloudapi.net` for sovereign
clouds). The value is returned as the secret string; `#key` is the core's job.
Content type and tags go to Document.metadata, the version id to
Document.version.

One credential per instance, one SecretClient per vault URL, both built lazily
under a lock and shared by concurrent fetches. The SDK's own retries are off
and its timeouts bounded: the core retries `Unavailable` within the deadline.
The challenge-resource check of the SDK stays on.

Single flight before the fan-out: the first read on a vault client goes alone
(it takes the 401 challenge and the token); the others wait for it, then share
the token. Token requests of one credential are serialized too, so vaults that
share a credential ask the token endpoint once (managed identity endpoints
throttle at a few requests per second). The HTTP pool holds as many
connections as the instance's concurrency.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

from initfetch.errors import AccessDenied, NotFound, SecretError, Unavailable, retry_after_seconds
from initfetch.providers.azure import credentials as creds
from initfetch.providers.base import Document, Endpoint, FetchContext, Identity, OptionProblem, Provider
from initfetch.reference import DocKey, Reference

DEFAULT_SUFFIX = "vault.azure.net"
_VAULT_RE = re.compile(r"^[0-9A-Za-z](?:[0-9A-Za-z-]{0,61}[0-9A-Za-z])?$")
_NAME_RE = re.compile(r"^[0-9A-Za-z-]{1,127}$")
_VERSION_RE = re.compile(r"^[0-9A-Za-z]{1,64}$")
_SUFFIX_RE = re.compile(r"^[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)+$")

# Bounds on every HTTP call of the SecretClient and the credential: no SDK retry
# (the core retries within the deadline), connect/read timeouts at most 10 s.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 10.0
_TRANSPORT = {"retry_total": 0, "connection_timeout": CONNECT_TIMEOUT, "read_timeout": READ_TIMEOUT}


def split_path(path: str) -> tuple[str, str, str | None]:
    parts = path.split("/")
    if len(parts) == 2:
        return parts[0], parts[1], None
    return parts[0], parts[1], parts[2]


def _https_url_problem(url: Any) -> str | None:
    if not isinstance(url, str):
        return "must be a string"
    u = urlsplit(url)
    if u.scheme != "https" or not u.hostname:
        return f"'{url}' is not an https:// URL (Key Vault tokens are only sent over TLS)"
    if u.path not in ("", "/") or u.query or u.fragment:
        return f"'{url}' must be the vault's base URL, with no path"
    return None


class KeyVaultProvider(Provider):
    type_name = "azure-keyvault"
    OPTIONS: ClassVar = {
        "vault_url": str,
        "vault_urls": dict,
        "vault_suffix": str,
        "ca_file": str,
        "auth": dict,
    }
    # Key Vault allows 4000 GETs per 10 s per vault: a burst of 32 reads in flight fits
    # (hundreds of secrets take a few round trips), and a 429 halves it (pacing).
    default_concurrency = 32

    def __init__(self, name: str, options: Mapping[str, Any], environ: Mapping[str, str]) -> None:
        super().__init__(name, options, environ)
        self._auth: dict[str, Any] = dict(self.options.get("auth") or {})
        self._plan = creds.plan(self._auth, environ)
        self._lock = threading.Lock()
        self._credential: Any = None
        self._clients: dict[str, Any] = {}
        self._priming: dict[str, threading.Event] = {}  # vault URL -> set once its first read is done
        self.who = ""  # the login's object id, once `identity` decoded it (doctor)

    # --- offline checks ---

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> Iterable[OptionProblem]:
        yield from super().check_options(options)
        if isinstance(options.get("vault_url"), str):
            problem = _https_url_problem(options["vault_url"])
            if problem:
                yield ("vault_url",), problem
        if isinstance(options.get("vault_urls"), dict):
            for vault, url in options["vault_urls"].items():
                if not isinstance(vault, str) or not _VAULT_RE.match(vault):
                    yield ("vault_urls", str(vault)), f"'{vault}' is not a vault name"
                    continue
                problem = _https_url_problem(url)
                if problem:
                    yield ("vault_urls", vault), problem
        suffix = options.get("vault_suffix")
        if isinstance(suffix, str) and not _SUFFIX_RE.match(suffix):
            yield ("vault_suffix",), f"'{suffix}' is not a DNS suffix such as vault.azure.cn"
        if isinstance(options.get("auth"), dict):
            yield from creds.check_auth(options["auth"])

    @classmethod
    def check_reference(cls, ref: Reference) -> str | None:
        if ref.doc.query:
            return "azkv references take no query; pin a version as azkv://VAULT/NAME/VERSION"
        parts = ref.doc.path.split("/")
        if len(parts) not in (2, 3):
            return "expected VAULT/NAME or VAULT/NAME/VERSION"
        if not _VAULT_RE.match(parts[0]):
            return f"'{parts[0]}' is not a vault name (letters, digits and hyphens)"
        if not _NAME_RE.match(parts[1]):
            return f"'{parts[1]}' is not a Key Vault secret name (1-127 letters, digits and hyphens)"
        if len(parts) == 3 and not _VERSION_RE.match(parts[2]):
            return f"'{parts[2]}' is not a Key Vault version id (32 hex characters)"
        return None

    # --- clients ---

    def vault_url(self, vault: str) -> str:
        mapped = (self.options.get("vault_urls") or {}).get(vault) or self.options.get("vault_url")
        if mapped:
            return str(mapped).rstrip("/")
        return f"https://{vault}.{self.options.get('vault_suffix', DEFAULT_SUFFIX)}"

    def _transport(self) -> dict[str, Any]:
        kw: dict[str, Any] = dict(_TRANSPORT)
        if self.options.get("ca_file"):
            kw["connection_verify"] = self.options["ca_file"]
        return kw

    def _client(self, url: str) -> tuple[Any, threading.Event | None, bool]:
        """The client for a vault URL, the event to wait for while its first read runs
        (None once it is done), and whether this caller makes that first read (it then
        calls `_primed`)."""
        with self._lock:
            client = self._clients.get(url)
            if client is not None:
                return client, self._priming.get(url), False
            from azure.keyvault.secrets import SecretClient

            if self._credential is None:
                self._credential = SingleFlightCredential(
                    creds.build_credential(self._auth, self.environ, self._transport())
                )
            client = SecretClient(url, self._credential, transport=self._http(), **self._transport())
            self._clients[url] = client
            self._priming[url] = threading.Event()
            return client, None, True

    def credential(self) -> Any:
        """The instance's credential (made on first use), shared by every vault client."""
        with self._lock:
            if self._credential is None:
                self._credential = SingleFlightCredential(
                    creds.build_credential(self._auth, self.environ, self._transport())
                )
            return self._credential

    @property
    def auth(self) -> Mapping[str, Any]:
        return self._auth

    @property
    def login_method(self) -> str:
        return self._plan.method

    @property
    def login_description(self) -> str:
        return self._plan.description

    def _primed(self, url: str) -> None:
        with self._lock:
            event = self._priming.pop(url, None)
        if event is not None:
            event.set()

    def _http(self) -> Any:
        """A requests transport whose pool holds `concurrency` connections (the default holds 10)."""
        import requests
        from azure.core.pipeline.transport import RequestsTransport

        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=self.concurrency)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return RequestsTransport(session=session, session_owner=True, **self._transport())

    # --- fetching ---

    def fetch(self, doc: DocKey, ctx: FetchContext) -> Document:
        vault, name, version = split_path(doc.path)
        url = self.vault_url(vault)
        what = f"secret '{name}'" + (f" version {version}" if version else "") + f" in vault {url}"
        first = False
        try:
            client, priming, first = self._client(url)
            if priming is not None:
                priming.wait(max(0.0, ctx.remaining()))
            secret = client.get_secret(
                name,
                version,
                connection_timeout=min(CONNECT_TIMEOUT, ctx.timeout()),
                read_timeout=ctx.timeout(READ_TIMEOUT),
            )
        except SecretError:
            raise
        except Exception as e:
            mapped = self.map_error(e, what)
            if mapped is None:
                raise
            raise mapped from None
        finally:
            if first:
                self._primed(url)
        props = secret.properties
        metadata: dict[str, Any] = {"vault_url": url, "name": props.name or name}
        if props.content_type is not None:
            metadata["content_type"] = props.content_type
        if props.tags:
            metadata["tags"] = dict(props.tags)
        if props.updated_on is not None:
            metadata["updated_on"] = props.updated_on.isoformat()
        return Document(
            secret.value if secret.value is not None else "", version=props.version, metadata=metadata
        )

    def map_error(self, e: Exception, what: str) -> SecretError | None:
        """The contract's class for an SDK failure; None for anything unexpected (a bug: re-raised)."""
        from json import JSONDecodeError

        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            IncompleteReadError,
            ResourceNotFoundError,
            ServiceRequestError,
            ServiceResponseError,
        )

        status = getattr(getattr(e, "response", None), "status_code", None)
        # A credential wraps its transport failure in ClientAuthenticationError: look down the chain.
        login = (
            f" while logging in with {self._plan.description}"
            if isinstance(e, ClientAuthenticationError)
            else ""
        )
        for cause in _chain(e):
            cause_status = getattr(getattr(cause, "response", None), "status_code", None)
            if isinstance(cause, (ServiceRequestError, ServiceResponseError, IncompleteReadError)):
                return Unavailable(f"{what}: connection failed{login} ({_short(cause)})")
            if isinstance(cause, JSONDecodeError):
                # The token endpoint (or a front end before it) answered a page that is not its
                # JSON, typically with a 429/5xx that the credential does not pass on.
                return Unavailable(f"{what}: an answer that is not JSON{login or ' from Key Vault'}")
            if cause_status == 429 or (isinstance(cause_status, int) and cause_status >= 500):
                headers = getattr(getattr(cause, "response", None), "headers", None) or {}
                return Unavailable(
                    f"{what}: the service answered {cause_status}{login} ({_short(cause)})",
                    throttled=cause_status in (429, 503),
                    retry_after=retry_after_seconds(headers.get("Retry-After")),
                )
        if isinstance(e, ClientAuthenticationError) and _TRANSIENT_LOGIN.search(_short(e, 4000)):
            # The token service answered 429/5xx; the credentials keep only the text of it.
            return Unavailable(f"{what}: token service unavailable{login} ({_short(e)})")
        if isinstance(e, ClientAuthenticationError):
            # The credential failed, or Key Vault refused the token (wrong tenant or audience).
            return AccessDenied(f"{what}: authentication failed with {self._plan.description}: {_short(e)}")
        if isinstance(e, ResourceNotFoundError):
            return NotFound(f"{what} not found ({_code(e)})")
        if isinstance(e, HttpResponseError):
            inner = _inner_code(e)
            if inner == "SecretDisabled":
                return AccessDenied(f"{what}: secret is disabled (SecretDisabled)")
            if status == 403:
                return AccessDenied(
                    f"{what}: access denied ({inner or _code(e)}); the identity needs the "
                    f"'Key Vault Secrets User' role or an access policy with Get secret permission"
                )
            return AccessDenied(f"{what}: Key Vault refused the request ({status} {_code(e)})")
        if isinstance(e, ValueError):
            # E.g. the challenge resource does not match the vault URL: a configuration error.
            return AccessDenied(f"{what}: {_short(e)}")
        return None

    def unreachable_hint(self) -> str | None:
        """Key Vault's URL (from vault_url/vault_urls, else the vault name) and the login's endpoint."""
        with self._lock:
            urls = sorted(self._clients)
        if self.options.get("vault_url") or self.options.get("vault_urls"):
            source = "vault_url/vault_urls in the manifest"
        else:
            source = f"the vault name + {self.options.get('vault_suffix', DEFAULT_SUFFIX)}"
        where = f"check the Key Vault URL {', '.join(urls) or '(none made yet)'} (from {source})"
        login = self._auth.get("authority_host") or self.environ.get("AZURE_AUTHORITY_HOST")
        authority = f"AZURE_AUTHORITY_HOST={login}" if login else "the login endpoint"
        return (
            f"{where} and that it and {authority} are reachable from here (DNS, firewall, a proxy: "
            f"HTTPS_PROXY; ca_file for a private CA); the login is {self._plan.description}"
        )

    # --- doctor ---

    def endpoints(self, docs: Sequence[DocKey]) -> list[Endpoint]:
        from initfetch.providers.azure import doctor  # loaded by `initfetch doctor` only

        return doctor.endpoints(self, docs)

    def identity(self, docs: Sequence[DocKey], ctx: FetchContext) -> Identity:
        from initfetch.providers.azure import doctor

        return doctor.identity(self, docs, ctx)

    def diagnose(self, doc: DocKey | None, error: SecretError, ctx: FetchContext) -> str:
        from initfetch.providers.azure import doctor

        return doctor.diagnose(self, doc, error, ctx)

    def credential_env(self) -> set[str]:
        return set(self._plan.secret_env)

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()
            if self._credential is not None:
                self._credential.close()
                self._credential = None


def _chain(e: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    cur: BaseException | None = e
    while cur is not None and len(out) < 6:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def _code(e: Exception) -> str:
    error = getattr(e, "error", None)
    return str(getattr(error, "code", None) or type(e).__name__)


def _inner_code(e: Exception) -> str | None:
    inner = getattr(getattr(e, "error", None), "innererror", None)
    if isinstance(inner, dict) and inner.get("code"):
        return str(inner["code"])
    return None


# How azure-identity words a 429/5xx from a token endpoint (msal: "HTTP Error: 503"; managed
# identity: "Token request error: (code) 503, ..."; Entra: AADSTS90033 "A transient error occurred").
_TRANSIENT_LOGIN = re.compile(
    r"HTTP Error: (429|5\d\d)\b|Token request error: \([^)]*\) (429|5\d\d)\b"
    r"|AADSTS90033\b|temporarily_unavailable"
)

# Troubleshooting boilerplate the SDK appends to every credential message.
_BOILERPLATE = re.compile(
    r"(Visit|To mitigate this issue, please refer to|See the troubleshooting guide)[^\n]*?https://aka\.ms/\S+"
)


def _short(e: BaseException, limit: int = 700) -> str:
    """The SDK's message, collapsed to one line and bounded (some are pages long)."""
    error = getattr(e, "error", None)
    text = getattr(error, "message", None) or getattr(e, "message", None) or str(e)
    text = " ".join(_BOILERPLATE.sub("", str(text)).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class SingleFlightCredential:
    """Serializes token requests of one credential: while one is asking the token
    endpoint, the others wait, then get the cached token from the credential."""

    def __init__(self, credential: Any) -> None:
        self._credential = credential
        self._lock = threading.Lock()
        if hasattr(credential, "get_token_info"):
            self.get_token_info = self._get_token_info

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        with self._lock:
            return self._credential.get_token(*scopes, **kwargs)

    def _get_token_info(self, *scopes: str, **kwargs: Any) -> Any:
        with self._lock:
            return self._credential.get_token_info(*scopes, **kwargs)

    def close(self) -> None:
        self._credential.close()
