"""`ssm://` — AWS Systems Manager Parameter Store.

`ssm:///myapp/prod/db_password` reads one parameter (SecureString decrypted);
`?version=4` or `?label=blue` pins one. `ssm:///aws/reference/secretsmanager/NAME`
reads a Secrets Manager secret through Parameter Store. A path ending in `/`
(`ssm:///myapp/prod/`) reads every parameter below it (GetParametersByPath,
recursive unless `?recursive=false`) into a map of relative name -> value,
which the manifest's `env_from` can spread into environment variables.

Plain and pinned single parameters are read with GetParameters, 10 per call
(`name:4` / `name:label` selectors). A call never names one parameter twice,
so each answer maps back to its request without relying on `Selector`. A
batch that IAM or a bad selector fails as a whole is retried one by one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

from initfetch.errors import AccessDenied, BadReference, BadVersion, NotFound, SecretError, Unavailable
from initfetch.providers.aws import session as aws_session
from initfetch.providers.aws.base import AwsProvider
from initfetch.providers.aws.session import classify, error_code, error_message
from initfetch.providers.base import Document, FetchContext
from initfetch.reference import DocKey, Reference

SERVICE = "ssm"
BATCH_MAX = 10
QUERY_KEYS = ("label", "recursive", "version")
SM_REFERENCE = "/aws/reference/secretsmanager/"
_NAME_RE = re.compile(r"^[A-Za-z0-9/_.\-]{1,2048}$")
_LABEL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,99}$")


def _selector(doc: DocKey) -> str:
    """The GetParameter(s) name for a document: `name`, `name:VERSION` or `name:LABEL`."""
    version, label = doc.param("version"), doc.param("label")
    if version is not None:
        return f"{doc.path}:{version}"
    if label is not None:
        return f"{doc.path}:{label}"
    return doc.path


def _is_prefix(doc: DocKey) -> bool:
    return doc.path.endswith("/")


class ParameterStoreProvider(AwsProvider):
    type_name = "aws-ssm"
    service_label = "Parameter Store"
    service = SERVICE
    batch_size = BATCH_MAX

    # --- offline checks ---------------------------------------------------------

    @classmethod
    def check_reference(cls, ref: Reference) -> str | None:
        doc = ref.doc
        unknown = cls._unknown_query(doc, QUERY_KEYS)
        if unknown:
            return unknown
        version, label, recursive = doc.param("version"), doc.param("label"), doc.param("recursive")
        if _is_prefix(doc):
            if version is not None or label is not None:
                return "a path prefix (ending in '/') reads the latest versions; version/label do not apply"
            if recursive not in (None, "true", "false"):
                return "recursive must be true or false"
            if not doc.path.startswith("/"):
                return "a path prefix must start with '/', e.g. ssm:///myapp/prod/"
        elif recursive is not None:
            return "recursive applies only to a path prefix (a path ending in '/')"
        if not doc.path.startswith("arn:") and not _NAME_RE.match(doc.path):
            return "a parameter name is letters, digits and /_.- (e.g. ssm:///myapp/prod/db_password)"
        if version is not None and label is not None:
            return "give either version or label, not both"
        if version is not None and not (version.isdigit() and int(version) >= 1):
            return "version must be a positive integer"
        if label is not None and not _LABEL_RE.match(label):
            return "a label starts with a letter and has letters, digits and _.- (at most 100)"
        return None

    # --- fetching ---------------------------------------------------------------

    def fetch(self, doc: DocKey, ctx: FetchContext) -> Document:
        if _is_prefix(doc):
            return self._fetch_prefix(doc, ctx)
        try:
            client = self.aws.client(SERVICE, ctx)
            response = client.get_parameter(Name=_selector(doc), WithDecryption=True)
        except Exception as e:
            raise self._error(e, doc) from None
        return _document(response["Parameter"])

    def _fetch_prefix(self, doc: DocKey, ctx: FetchContext) -> Document:
        prefix = doc.path
        path = prefix.rstrip("/") or "/"
        values: dict[str, str] = {}
        versions: dict[str, int] = {}
        try:
            client = self.aws.client(SERVICE, ctx)
            pages = client.get_paginator("get_parameters_by_path").paginate(
                Path=path, Recursive=doc.param("recursive", "true") == "true", WithDecryption=True
            )
            for page in pages:
                for p in page.get("Parameters", []):
                    name = str(p["Name"])
                    if not name.startswith(prefix):
                        continue
                    values[name[len(prefix) :]] = p["Value"]
                    versions[name[len(prefix) :]] = int(p.get("Version", 0))
        except Exception as e:
            raise self._error(e, doc) from None
        if not values:
            raise NotFound(f"{self._what(doc)}: no parameters under {doc.path}")
        # A map has no single version; a digest of (name, version) pairs changes
        # whenever any parameter below the prefix does. It hashes no values.
        digest = hashlib.sha256(repr(sorted(versions.items())).encode()).hexdigest()[:16]
        return Document(
            values,
            version=digest,
            metadata={"prefix": prefix, "count": len(values), "versions": dict(sorted(versions.items()))},
        )

    def fetch_many(self, docs: Sequence[DocKey], ctx: FetchContext) -> dict[DocKey, Document | SecretError]:
        out: dict[DocKey, Document | SecretError] = {}
        batchable: list[DocKey] = []
        for doc in docs:
            # Prefixes have their own API; Secrets Manager references go alone
            # because GetParameters support for them is not documented everywhere.
            if _is_prefix(doc) or doc.path.startswith(SM_REFERENCE):
                out[doc] = self._fetch_quietly(doc, ctx)
            else:
                batchable.append(doc)
        for chunk in _chunks(batchable):
            out.update(self._batch(chunk, ctx))
        return out

    def _batch(self, docs: list[DocKey], ctx: FetchContext) -> dict[DocKey, Document | SecretError]:
        try:
            client = self.aws.client(SERVICE, ctx)
            response = client.get_parameters(Names=[_selector(d) for d in docs], WithDecryption=True)
        except Exception as e:
            if self._batch_denied(e):
                # IAM checks GetParameters against every name in it, so one name
                # outside the policy's paths denies the whole call. Each one is
                # asked alone; not remembered, as the next batch may be allowed.
                return self._one_by_one(docs, ctx)
            err = self._error(e, docs[0])
            if isinstance(err, BadVersion | BadReference | NotFound):
                # One bad selector can fail the whole call: let each speak for itself.
                return self._one_by_one(docs, ctx)
            raise classify(e, f"Parameter Store (GetParameters of {len(docs)} parameters)") from None
        by_name = {str(p["Name"]): p for p in response.get("Parameters", [])}
        by_arn = {str(p.get("ARN")): p for p in response.get("Parameters", [])}
        invalid = set(response.get("InvalidParameters", []))
        out: dict[DocKey, Document | SecretError] = {}
        for doc in docs:
            found = by_name.get(doc.path) or by_arn.get(doc.path)
            if found is not None:
                out[doc] = _document(found)
            elif _selector(doc) in invalid and not doc.query:
                out[doc] = NotFound(f"{self._what(doc)}: parameter not found")
            else:  # a pinned version/label (which part is missing?) or an unmatched answer
                out[doc] = self._fetch_quietly(doc, ctx)
        return out

    def iam_needs(self, doc: DocKey, region: str, account: str) -> tuple[str, str]:
        if doc.path.startswith("arn:"):
            return "ssm:GetParameter and ssm:GetParameters", doc.path
        name = doc.path.strip("/") if _is_prefix(doc) else doc.path.lstrip("/")
        arn = f"arn:aws:ssm:{region}:{account}:parameter/{name}"
        if _is_prefix(doc):
            return "ssm:GetParametersByPath", f"{arn} (and {arn}/* for the parameters below it)"
        return "ssm:GetParameter and ssm:GetParameters", arn

    # --- errors -----------------------------------------------------------------

    def _error(self, exc: Exception, doc: DocKey) -> SecretError:
        what = self._what(doc)
        code, status = error_code(exc)
        message = error_message(exc)
        if code == "ParameterNotFound":
            if doc.param("label") is not None:
                return BadVersion(f"{what}: the parameter or its label '{doc.param('label')}' was not found")
            return NotFound(f"{what}: parameter not found")
        if code == "ParameterVersionNotFound":
            return BadVersion(f"{what}: the parameter has no version {doc.param('version')}")
        if code in ("InvalidKeyId", "KMSAccessDeniedException"):
            return AccessDenied(f"{what}: cannot decrypt the SecureString ({code})")
        if code in aws_session.TRANSIENT_CODES or status == 429 or (status >= 500):
            return Unavailable(f"{what}: AWS is unavailable or throttling ({code or status})")
        if code == "ValidationException" and message:
            return BadReference(f"{what}: rejected by AWS: {message}")
        return classify(exc, what)


def _chunks(docs: list[DocKey]) -> list[list[DocKey]]:
    """Up to BATCH_MAX documents per call, each parameter name at most once per call."""
    chunks: list[tuple[set[str], list[DocKey]]] = []
    for doc in docs:
        for names, chunk in chunks:
            if doc.path not in names and len(chunk) < BATCH_MAX:
                names.add(doc.path)
                chunk.append(doc)
                break
        else:
            chunks.append(({doc.path}, [doc]))
    return [chunk for _, chunk in chunks]


def _document(p: Mapping[str, Any]) -> Document:
    metadata: dict[str, Any] = {"name": p.get("Name"), "type": p.get("Type"), "arn": p.get("ARN")}
    if p.get("Selector"):
        metadata["selector"] = p["Selector"]
    modified = p.get("LastModifiedDate")
    if modified is not None:
        metadata["last_modified"] = modified.isoformat()
    version = p.get("Version")
    return Document(p.get("Value"), version=None if version is None else str(version), metadata=metadata)
