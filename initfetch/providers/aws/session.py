"""One boto3 session and its clients per AWS provider instance.

Shared by `aws-secretsmanager` and `aws-ssm`. boto3 is imported lazily (it
costs ~0.3 s and `check` must work without it). The credential chain is
boto3's own, untouched: environment keys, shared config/profile, web identity
(IRSA), container credentials, instance metadata. On top of it an instance may
assume a role (`role_arn`, `external_id`, `session_name`, `duration_seconds`);
those credentials are refreshed by botocore before they expire.

Timeouts and retries: botocore retries at most once (standard mode, 2
attempts); the resolver owns the real retry loop. A client's connect/read
timeout is fixed when it is built, so clients are cached per timeout bucket
(1, 2, 5, 10 s) and each call uses the largest bucket with which all its
attempts still fit in the run's remaining time (never below 1 s).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Mapping
from typing import Any, ClassVar

from initfetch.errors import AccessDenied, BadReference, SecretError, Unavailable, retry_after_seconds
from initfetch.providers.base import FetchContext, OptionProblem

OPTIONS: dict[str, type | tuple[type, ...]] = {
    "region": str,
    "profile": str,
    "role_arn": str,
    "external_id": str,
    "session_name": str,
    "duration_seconds": int,
    "endpoint_url": str,
}

# botocore service ids, as spelled in AWS_ENDPOINT_URL_<ID>.
SERVICE_IDS = {"secretsmanager": "SECRETS_MANAGER", "ssm": "SSM", "sts": "STS"}

_TIMEOUT_BUCKETS = (1.0, 2.0, 5.0, 10.0)
MAX_ATTEMPTS = 2

# Variables whose *value* is a credential. They are reported by
# `credential_env()` when boto3 actually logged in from the environment.
# Pointers (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN, AWS_PROFILE, container
# credential URIs) are kept: they grant nothing the app could not read itself,
# and stripping them would break an app that uses the same pod identity.
ENV_KEY_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ACCESS_KEY",
    "AWS_SECRET_KEY",
    "AWS_CREDENTIAL_EXPIRATION",
)
CONTAINER_TOKEN_VARS = ("AWS_CONTAINER_AUTHORIZATION_TOKEN",)

# Error codes that mean "try again later".
TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "TooManyUpdates",
        "RequestLimitExceeded",
        "SlowDown",
        "ProvisionedThroughputExceededException",
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "InternalServiceError",
        "InternalServiceErrorException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
    }
)
# The transient codes that say "slow down" (the instance then halves its concurrency).
THROTTLING_CODES = frozenset(
    c
    for c in TRANSIENT_CODES
    if "Thrott" in c
    or "TooMany" in c
    or c in ("SlowDown", "RequestLimitExceeded", "ProvisionedThroughputExceededException")
)
DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "MissingAuthenticationToken",
        "AuthFailure",
        "DecryptionFailure",
        "KMSAccessDeniedException",
        "KMSDisabledException",
        "KMSInvalidStateException",
        "KMSNotFoundException",
        "InvalidKeyId",
    }
)
VALIDATION_CODES = frozenset({"ValidationException", "InvalidParameterException", "ValidationError"})


def check_options(type_name: str, options: Mapping[str, Any]) -> list[OptionProblem]:
    """Offline checks beyond name/type that both AWS providers share."""
    problems: list[OptionProblem] = []
    for key in ("external_id", "session_name", "duration_seconds"):
        if key in options and "role_arn" not in options:
            problems.append(((key,), f"option '{key}' needs 'role_arn'"))
    role = options.get("role_arn")
    if isinstance(role, str) and not (role.startswith("arn:aws") and ":role/" in role):
        problems.append((("role_arn",), "role_arn must be an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"))
    ext = options.get("external_id")
    if isinstance(ext, str) and not 2 <= len(ext) <= 1224:
        problems.append((("external_id",), "external_id must be 2 to 1224 characters"))
    name = options.get("session_name")
    if isinstance(name, str) and not 2 <= len(name) <= 64:
        problems.append((("session_name",), "session_name must be 2 to 64 characters"))
    secs = options.get("duration_seconds")
    if isinstance(secs, int) and not isinstance(secs, bool) and not 900 <= secs <= 43200:
        problems.append((("duration_seconds",), "duration_seconds must be between 900 and 43200"))
    url = options.get("endpoint_url")
    if isinstance(url, str) and not url.startswith(("http://", "https://")):
        problems.append((("endpoint_url",), "endpoint_url must start with http:// or https://"))
    return problems


def timeout_bucket(ctx: FetchContext) -> float:
    """The largest fixed timeout with which every attempt of a call fits in what is left of the run."""
    t = ctx.timeout(_TIMEOUT_BUCKETS[-1] * MAX_ATTEMPTS) / MAX_ATTEMPTS
    fitting = [b for b in _TIMEOUT_BUCKETS if b <= t]
    return fitting[-1] if fitting else _TIMEOUT_BUCKETS[0]


# Base sessions shared by the instances that log in the same way (`awssm://` and `ssm://`
# of one account): a botocore session parses its endpoint and service data once, and a
# second one costs more than the client itself. boto3 sessions are not thread-safe, so
# every session and client is created under this one lock (creating them is rare).
_SHARED_LOCK = threading.RLock()
_BASE_SESSIONS: dict[tuple[str | None, ...], Any] = {}


def _base_session(key: tuple[str | None, ...], **kwargs: Any) -> Any:
    import os

    import boto3

    # boto3 also reads the process environment (config files, web identity, HOME's ~/.aws):
    # sessions are shared only between instances that see the same.
    key += tuple(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("AWS_") or k == "HOME")
    with _SHARED_LOCK:
        session = _BASE_SESSIONS.get(key)
        if session is None:
            session = _BASE_SESSIONS[key] = boto3.Session(**kwargs)
        return session


class AwsSession:
    """The boto3 session, credentials and clients of one provider instance.

    boto3 sessions are not thread-safe, clients are: everything that touches
    a session happens under the shared lock, and clients are created once and reused.
    """

    USER_AGENT: ClassVar[str] = "initfetch"

    def __init__(
        self, instance: str, options: Mapping[str, Any], environ: Mapping[str, str], pool_size: int = 10
    ) -> None:
        self.instance = instance
        self.options = dict(options)
        self.environ = environ
        self.pool_size = pool_size  # the instance's concurrency: no connection is discarded
        self._lock = _SHARED_LOCK
        self._session: Any = None
        self._region: str | None = None
        self._clients: dict[tuple[str, str, float], Any] = {}
        self._credential_method: str | None = None

    # --- configuration -------------------------------------------------------

    def _build_session(self) -> Any:
        env = self.environ
        profile = self.options.get("profile")
        key = env.get("AWS_ACCESS_KEY_ID") or env.get("AWS_ACCESS_KEY")
        secret = env.get("AWS_SECRET_ACCESS_KEY") or env.get("AWS_SECRET_KEY")
        try:
            if profile:
                # An explicit profile wins over environment keys, as in the AWS CLI.
                base = _base_session(("profile", profile), profile_name=profile)
            elif key and secret:
                # The first link of boto3's chain, read from `environ` (which the
                # CLI sets to the process environment) so callers control it.
                token = env.get("AWS_SESSION_TOKEN") or env.get("AWS_SECURITY_TOKEN")
                base = _base_session(
                    ("keys", key, secret, token),
                    aws_access_key_id=key,
                    aws_secret_access_key=secret,
                    aws_session_token=token,
                )
            else:
                name = env.get("AWS_PROFILE") or None
                base = _base_session(("chain", name), profile_name=name)
        except Exception as e:  # botocore.exceptions.ProfileNotFound and friends
            raise BadReference(f"AWS provider '{self.instance}': {type(e).__name__}: {e}") from e
        region = (
            self.options.get("region")
            or self.environ.get("AWS_REGION")
            or self.environ.get("AWS_DEFAULT_REGION")
            or base.region_name
        )
        if not region:
            raise BadReference(
                f"no AWS region for provider '{self.instance}': set 'region' in the manifest "
                "or AWS_REGION / AWS_DEFAULT_REGION in the environment"
            )
        self._region = region
        creds = base.get_credentials()
        self._credential_method = getattr(creds, "method", None) if creds is not None else None
        if self._credential_method == "explicit":
            self._credential_method = "env"  # passed in from `environ` above
        if not self.options.get("role_arn"):
            return base
        return self._assume_role_session(base, creds, region)

    def _assume_role_session(self, base: Any, source_creds: Any, region: str) -> Any:
        import boto3
        import botocore.session
        from botocore.credentials import (
            AssumeRoleCredentialFetcher,
            CredentialProvider,
            CredentialResolver,
            DeferredRefreshableCredentials,
        )
        from botocore.exceptions import NoCredentialsError

        if source_creds is None:
            raise NoCredentialsError()
        extra: dict[str, Any] = {"RoleSessionName": self.options.get("session_name", "initfetch")}
        if "external_id" in self.options:
            extra["ExternalId"] = self.options["external_id"]
        if "duration_seconds" in self.options:
            extra["DurationSeconds"] = self.options["duration_seconds"]
        sts_config = self._config(_TIMEOUT_BUCKETS[-1])
        endpoint = self.endpoint_url("sts")

        def sts_client(service: str, **kwargs: Any) -> Any:
            # Runs inside botocore's refresh lock; the base session is only read here.
            return base.client(
                service, region_name=region, endpoint_url=endpoint, config=sts_config, **kwargs
            )

        fetcher = AssumeRoleCredentialFetcher(
            client_creator=sts_client,
            source_credentials=source_creds,
            role_arn=self.options["role_arn"],
            extra_args=extra,
        )
        refreshable = DeferredRefreshableCredentials(
            method="assume-role", refresh_using=fetcher.fetch_credentials
        )

        class _Fixed(CredentialProvider):
            METHOD = "assume-role"

            def load(self) -> Any:
                return refreshable

        core = botocore.session.Session(profile=self.options.get("profile"))
        core.register_component("credential_provider", CredentialResolver([_Fixed()]))
        return boto3.Session(botocore_session=core, region_name=region)

    def _config(self, timeout: float) -> Any:
        from botocore.config import Config

        return Config(
            connect_timeout=timeout,
            read_timeout=timeout,
            retries={"total_max_attempts": MAX_ATTEMPTS, "mode": "standard"},
            user_agent_extra=self.USER_AGENT,
            max_pool_connections=self.pool_size,
        )

    def endpoint_url(self, service: str) -> str | None:
        """`endpoint_url` option, else AWS_ENDPOINT_URL_<SERVICE>, else AWS_ENDPOINT_URL (as boto3 does).

        Read from `environ` so LocalStack setups keep working however the
        provider is built; config-file endpoints are still boto3's business.
        """
        if self.options.get("endpoint_url"):
            return str(self.options["endpoint_url"])
        env = self.environ
        if env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true":
            return None
        return env.get(f"AWS_ENDPOINT_URL_{SERVICE_IDS.get(service, service.upper())}") or env.get(
            "AWS_ENDPOINT_URL"
        )

    def endpoint_source(self, service: str) -> str:
        """Where `endpoint_url(service)` came from, as the user would set it."""
        if self.options.get("endpoint_url"):
            return "the provider's endpoint_url in the manifest"
        var = f"AWS_ENDPOINT_URL_{SERVICE_IDS.get(service, service.upper())}"
        return var if self.environ.get(var) else "AWS_ENDPOINT_URL"

    def what_to_check(self, service: str) -> str:
        """For the final error when AWS never answered: the endpoint and where it came from."""
        endpoint = self.endpoint_url(service)
        if endpoint:
            return (
                f"check {self.endpoint_source(service)}={endpoint} (the right host and port?), that the "
                "endpoint is up and reachable from here, and its scheme (http:// or https://)"
            )
        region = self._region or self.options.get("region") or "the region"
        return (
            f"check that {service}.{region}.amazonaws.com is reachable from here (network, DNS, a proxy: "
            "HTTPS_PROXY), and AWS_ENDPOINT_URL if a local endpoint (LocalStack, moto) was meant"
        )

    # --- clients ---------------------------------------------------------------

    @property
    def region(self) -> str:
        with self._lock:
            if self._session is None:
                self._session = self._build_session()
            assert self._region is not None
            return self._region

    def client(self, service: str, ctx: FetchContext, region: str | None = None) -> Any:
        """A client for `service` whose timeouts fit the run's deadline."""
        bucket = timeout_bucket(ctx)
        with self._lock:
            if self._session is None:
                self._session = self._build_session()
            region = region or self._region
            assert region is not None
            key = (service, region, bucket)
            client = self._clients.get(key)
            if client is None:
                kwargs: dict[str, Any] = {"region_name": region, "config": self._config(bucket)}
                endpoint = self.endpoint_url(service)
                if endpoint:
                    kwargs["endpoint_url"] = endpoint
                client = self._session.client(service, **kwargs)
                self._clients[key] = client
            return client

    @property
    def credential_method(self) -> str | None:
        """How boto3 found the credentials (env, shared-credentials-file, assume-role, iam-role...)."""
        return self._credential_method

    def credential_env(self) -> set[str]:
        """The environment variables boto3 logged in with (empty until a client was built)."""
        method = self._credential_method
        if method == "env":
            return {v for v in ENV_KEY_VARS if v in self.environ}
        if method == "container-role":
            return {v for v in CONTAINER_TOKEN_VARS if v in self.environ}
        return set()

    def close(self) -> None:
        with self._lock:
            for c in self._clients.values():
                with contextlib.suppress(Exception):  # closing is best effort
                    c.close()
            self._clients.clear()


def error_code(exc: BaseException) -> tuple[str, int]:
    """(AWS error code, HTTP status) of a botocore ClientError, else ("", 0)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return "", 0
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def error_message(exc: BaseException) -> str:
    """The AWS error message of a ClientError on one line, else ""."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return one_line(response.get("Error", {}).get("Message", ""))


def one_line(text: object, limit: int = 200) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def classify(exc: Exception, what: str) -> SecretError:
    """Map a boto3/botocore exception that no service-specific rule handled.

    `what` names the reference (never a value). AWS error messages for reads
    name resources, not secret values, so they are kept, on one line.
    """
    from botocore.exceptions import (
        ClientError,
        HTTPClientError,
        IncompleteReadError,
        NoCredentialsError,
        NoRegionError,
        ParamValidationError,
        PartialCredentialsError,
    )
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(exc, SecretError):
        return exc
    if isinstance(exc, ClientError):
        code, status = error_code(exc)
        message = one_line(exc.response.get("Error", {}).get("Message", ""))
        if code in TRANSIENT_CODES or status == 429 or status >= 500:
            headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
            return Unavailable(
                f"{what}: AWS is unavailable or throttling ({code or status})",
                throttled=status in (429, 503)
                or "thrott" in code.lower()
                or code == "TooManyRequestsException",
                retry_after=retry_after_seconds(headers.get("retry-after")),
            )
        if code in DENIED_CODES or status == 403:
            return AccessDenied(f"{what}: access denied ({code}): {message}")
        if code in VALIDATION_CODES:
            return BadReference(f"{what}: rejected by AWS ({code}): {message}")
        return SecretError(f"{what}: AWS error {code or status}: {message}")
    # Connection refused/reset, DNS, timeouts, proxy errors, truncated bodies.
    if isinstance(exc, HTTPClientError | BotoConnectionError | IncompleteReadError | OSError):
        return Unavailable(f"{what}: cannot reach AWS ({type(exc).__name__})")
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return AccessDenied(f"{what}: no usable AWS credentials ({type(exc).__name__})")
    if isinstance(exc, NoRegionError):
        return BadReference(f"{what}: no AWS region configured")
    if isinstance(exc, ParamValidationError):
        return BadReference(f"{what}: {one_line(exc)}")
    return SecretError(f"{what}: {type(exc).__name__}: {one_line(exc)}")
