"""`awssm://` — AWS Secrets Manager, by name or (partial) ARN.

`awssm://myapp/db#password` reads the AWSCURRENT version; `?stage=NAME` and
`?version_id=ID` select another one (both may be given; AWS then requires
them to agree). A SecretString comes back as `str` (the resolver parses JSON
for `#key`), a SecretBinary as `bytes`. Plain references are read with
BatchGetSecretValue, 20 per call; references that pin a stage or version go
through GetSecretValue, because the batch API always returns AWSCURRENT.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from initfetch.errors import AccessDenied, BadReference, BadVersion, NotFound, SecretError, Unavailable
from initfetch.providers.aws import session as aws_session
from initfetch.providers.aws.base import AwsProvider
from initfetch.providers.aws.session import classify, error_code, error_message, one_line
from initfetch.providers.base import Document, FetchContext
from initfetch.reference import DocKey, Reference

SERVICE = "secretsmanager"
BATCH_MAX = 20
QUERY_KEYS = ("stage", "version_id")
_ARN_RE = re.compile(r"^arn:aws[a-z-]*:secretsmanager:([a-z0-9-]+):(\d{12}):secret:(.+)$")
_NAME_RE = re.compile(r"^[A-Za-z0-9/_+=.@-]{1,512}$")


def arn_region(path: str) -> str | None:
    m = _ARN_RE.match(path)
    return m.group(1) if m else None


class SecretsManagerProvider(AwsProvider):
    type_name = "aws-secretsmanager"
    service_label = "Secrets Manager"
    service = SERVICE
    batch_size = BATCH_MAX

    def __init__(self, name: str, options: Mapping[str, Any], environ: Mapping[str, str]) -> None:
        super().__init__(name, options, environ)
        # Cleared when the batch API is denied (a policy that grants only
        # GetSecretValue); plain references then go one by one.
        self._batch_allowed = True

    # --- offline checks ---------------------------------------------------------

    @classmethod
    def check_reference(cls, ref: Reference) -> str | None:
        unknown = cls._unknown_query(ref.doc, QUERY_KEYS)
        if unknown:
            return unknown
        path = ref.doc.path
        if path.startswith("arn:"):
            if not _ARN_RE.match(path):
                return "not a Secrets Manager ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME)"
        elif not _NAME_RE.match(path):
            return "a secret name is 1-512 characters of letters, digits and /_+=.@-"
        vid = ref.doc.param("version_id")
        if vid is not None and not 32 <= len(vid) <= 64:
            return "version_id must be 32 to 64 characters (a VersionId UUID)"
        stage = ref.doc.param("stage")
        if stage is not None and not 1 <= len(stage) <= 256:
            return "stage must be 1 to 256 characters"
        return None

    # --- fetching ---------------------------------------------------------------

    def fetch(self, doc: DocKey, ctx: FetchContext) -> Document:
        args: dict[str, Any] = {"SecretId": doc.path}
        if doc.param("version_id") is not None:
            args["VersionId"] = doc.param("version_id")
        if doc.param("stage") is not None:
            args["VersionStage"] = doc.param("stage")
        try:
            client = self.aws.client(SERVICE, ctx, arn_region(doc.path))
            response = client.get_secret_value(**args)
        except Exception as e:
            raise self._single_error(e, doc, ctx) from None
        return _document(response)

    def fetch_many(self, docs: Sequence[DocKey], ctx: FetchContext) -> dict[DocKey, Document | SecretError]:
        out: dict[DocKey, Document | SecretError] = {}
        by_region: dict[str | None, list[DocKey]] = defaultdict(list)
        for doc in docs:
            if doc.query or not self._batch_allowed:
                out[doc] = self._fetch_quietly(doc, ctx)
            else:
                by_region[arn_region(doc.path)].append(doc)
        for region, group in by_region.items():
            for i in range(0, len(group), BATCH_MAX):
                out.update(self._batch(group[i : i + BATCH_MAX], region, ctx))
        return out

    def _batch(
        self, docs: list[DocKey], region: str | None, ctx: FetchContext
    ) -> dict[DocKey, Document | SecretError]:
        ids = [d.path for d in docs]
        values: list[dict[str, Any]] = []
        errors: dict[str, dict[str, Any]] = {}
        try:
            client = self.aws.client(SERVICE, ctx, region)
            args: dict[str, Any] = {"SecretIdList": ids}
            while True:
                response = client.batch_get_secret_value(**args)
                values.extend(response.get("SecretValues", []))
                errors.update({e.get("SecretId", ""): e for e in response.get("Errors", [])})
                token = response.get("NextToken")
                if not token:
                    break
                args["NextToken"] = token
        except Exception as e:
            if self._batch_denied(e):
                # No secretsmanager:BatchGetSecretValue (it cannot be scoped to
                # resources, and per-secret denials come back in Errors): fall
                # back to GetSecretValue for the rest of the run.
                self._batch_allowed = False
                return self._one_by_one(docs, ctx)
            raise classify(e, f"Secrets Manager (BatchGetSecretValue of {len(docs)} secrets)") from None
        out: dict[DocKey, Document | SecretError] = {}
        for doc in docs:
            found = next((v for v in values if _matches(doc.path, v)), None)
            if found is not None:
                out[doc] = _document(found)
            elif doc.path in errors:
                err = errors[doc.path]
                out[doc] = _code_error(
                    str(err.get("ErrorCode", "")), 0, str(err.get("Message", "")), self._what(doc)
                )
            else:  # not named in the answer at all: ask for it alone
                out[doc] = self._fetch_quietly(doc, ctx)
        return out

    def iam_needs(self, doc: DocKey, region: str, account: str) -> tuple[str, str]:
        if doc.path.startswith("arn:"):
            return "secretsmanager:GetSecretValue", doc.path
        # AWS appends six random characters to a secret's name in its ARN
        arn = f"arn:aws:secretsmanager:{arn_region(doc.path) or region}:{account}:secret:{doc.path}-??????"
        return "secretsmanager:GetSecretValue", arn

    # --- errors -----------------------------------------------------------------

    def _single_error(self, exc: Exception, doc: DocKey, ctx: FetchContext) -> SecretError:
        from botocore.exceptions import ParamValidationError

        what = self._what(doc)
        pinned = doc.param("stage") is not None or doc.param("version_id") is not None
        if isinstance(exc, ParamValidationError) and pinned:
            return BadVersion(f"{what}: invalid version or stage: {one_line(exc)}")
        code, status = error_code(exc)
        message = error_message(exc)
        if code == "ResourceNotFoundException" and pinned:
            return self._missing_version(doc, message, ctx)
        return _code_error(code, status, message, what) if code else classify(exc, what)

    def _missing_version(self, doc: DocKey, message: str, ctx: FetchContext) -> SecretError:
        """The secret or its requested version is missing: find out which.

        DescribeSecret lists the secret's versions and stages (never values).
        Without permission for it, fall back to AWS's message.
        """
        what = self._what(doc)
        try:
            client = self.aws.client(SERVICE, ctx, arn_region(doc.path))
            described = client.describe_secret(SecretId=doc.path)
        except Exception as e:
            code, _ = error_code(e)
            if code == "ResourceNotFoundException":
                return NotFound(f"{what}: secret not found")
            if "secret value for" in message:
                return BadVersion(f"{what}: no such version or stage ({message})")
            return NotFound(f"{what}: the secret or the requested version/stage was not found")
        if described.get("DeletedDate"):
            return NotFound(f"{what}: the secret is scheduled for deletion")
        versions: dict[str, list[str]] = described.get("VersionIdsToStages", {}) or {}
        stages = sorted({s for ss in versions.values() for s in ss})
        stage, vid = doc.param("stage"), doc.param("version_id")
        if vid is not None and vid not in versions:
            return BadVersion(f"{what}: the secret has no version '{vid}'")
        if stage is not None and stage not in stages:
            return BadVersion(
                f"{what}: the secret has no stage '{stage}' (stages: {', '.join(stages) or 'none'})"
            )
        return BadVersion(f"{what}: stage '{stage}' is not on version '{vid}'")


def _matches(path: str, value: Mapping[str, Any]) -> bool:
    """Does a BatchGetSecretValue entry answer the SecretId `path`?"""
    arn = str(value.get("ARN", ""))
    if path in (value.get("Name"), arn):
        return True
    # A partial ARN: the full ARN minus its "-XXXXXX" suffix.
    return path.startswith("arn:") and arn.startswith(path + "-") and len(arn) == len(path) + 7


def _code_error(code: str, status: int, message: str, what: str) -> SecretError:
    """Secrets Manager error codes, for single and batch reads alike."""
    if code == "ResourceNotFoundException":
        return NotFound(f"{what}: secret not found")
    if code == "InvalidRequestException" and "delet" in message.lower():
        return NotFound(f"{what}: the secret is scheduled for deletion (restore it to use it)")
    if code in aws_session.TRANSIENT_CODES or status == 429 or status >= 500:
        return Unavailable(f"{what}: AWS is unavailable or throttling ({code or status})")
    if code in aws_session.DENIED_CODES or status == 403:
        return AccessDenied(f"{what}: access denied ({code}): {one_line(message)}")
    if code in aws_session.VALIDATION_CODES:
        return BadReference(f"{what}: rejected by AWS ({code}): {one_line(message)}")
    return SecretError(f"{what}: AWS error {code or status}: {one_line(message)}")


def _document(response: Mapping[str, Any]) -> Document:
    value: str | bytes
    if "SecretString" in response:
        value = response["SecretString"]
    else:
        value = bytes(response.get("SecretBinary", b""))
    metadata: dict[str, Any] = {
        "arn": response.get("ARN"),
        "name": response.get("Name"),
        "stages": list(response.get("VersionStages", [])),
    }
    created = response.get("CreatedDate")
    if created is not None:
        metadata["created"] = created.isoformat()
    return Document(value, version=response.get("VersionId"), metadata=metadata)
