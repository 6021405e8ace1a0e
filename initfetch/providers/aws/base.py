"""What `aws-secretsmanager` and `aws-ssm` share as providers.

One `AwsSession` per instance, the session's options and their offline
checks, error wording and the credential/close plumbing. Each subclass keeps
only its own service's API: references, reads, batching and error codes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from initfetch.errors import SecretError
from initfetch.providers.aws import session as aws_session
from initfetch.providers.aws.session import AwsSession, error_code
from initfetch.providers.base import Document, Endpoint, FetchContext, Identity, OptionProblem, Provider
from initfetch.reference import DocKey


class AwsProvider(Provider):
    OPTIONS: ClassVar = dict(aws_session.OPTIONS)
    # Batched reads (20 secrets or 10 parameters per call) need few calls; SSM's
    # default throughput is 40 TPS, and throttling lowers the limit further (pacing).
    default_concurrency = 8
    # The service as named in error messages, e.g. "Secrets Manager", and as boto3 names it.
    service_label: ClassVar[str] = ""
    service: ClassVar[str] = ""

    def __init__(self, name: str, options: Mapping[str, Any], environ: Mapping[str, str]) -> None:
        super().__init__(name, options, environ)
        self.aws = AwsSession(name, self.options, environ, pool_size=self.concurrency)
        self.caller: tuple[str, str] = ("", "")  # (account, ARN), once `identity` asked STS (doctor)

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> Iterable[OptionProblem]:
        yield from super().check_options(options)
        yield from aws_session.check_options(cls.type_name, options)

    @classmethod
    def _unknown_query(cls, doc: DocKey, known: Sequence[str]) -> str | None:
        """A problem naming the query parameters this service does not know, or None."""
        unknown = {k for k, _ in doc.query} - set(known)
        if not unknown:
            return None
        return (
            f"unknown query parameter(s) for {cls.service_label}: {', '.join(sorted(unknown))} "
            f"(known: {', '.join(known)})"
        )

    def _what(self, doc: DocKey) -> str:
        # The resolver prints the reference before the message; name the service only.
        return self.service_label

    def _fetch_quietly(self, doc: DocKey, ctx: FetchContext) -> Document | SecretError:
        try:
            return self.fetch(doc, ctx)
        except SecretError as e:
            return e

    def _one_by_one(self, docs: Sequence[DocKey], ctx: FetchContext) -> dict[DocKey, Document | SecretError]:
        """Read each document alone, so each gets its own verdict."""
        return {d: self._fetch_quietly(d, ctx) for d in docs}

    @staticmethod
    def _batch_denied(exc: Exception) -> bool:
        """Did IAM refuse a whole batch call?

        That verdict may concern only some of its items (a policy scoped by
        path) or only the batch action, so the caller retries item by item.
        Bad or expired credentials are not included: every single read would
        fail the same way.
        """
        code, status = error_code(exc)
        return code in ("AccessDeniedException", "AccessDenied") or (status == 403 and code in ("", "403"))

    def unreachable_hint(self) -> str | None:
        return self.aws.what_to_check(self.service)

    # --- doctor ---

    def iam_needs(self, doc: DocKey, region: str, account: str) -> tuple[str, str]:
        """The IAM action(s) a read of `doc` needs, and the resource ARN they must allow."""
        raise NotImplementedError

    def endpoints(self, docs: Sequence[DocKey]) -> list[Endpoint]:
        from initfetch.providers.aws import doctor  # loaded by `initfetch doctor` only

        return doctor.endpoints(self)

    def identity(self, docs: Sequence[DocKey], ctx: FetchContext) -> Identity:
        from initfetch.providers.aws import doctor

        return doctor.identity(self, ctx)

    def diagnose(self, doc: DocKey | None, error: SecretError, ctx: FetchContext) -> str:
        from initfetch.providers.aws import doctor

        return doctor.diagnose(self, doc, error, ctx)

    def credential_env(self) -> set[str]:
        return self.aws.credential_env()

    def close(self) -> None:
        self.aws.close()
