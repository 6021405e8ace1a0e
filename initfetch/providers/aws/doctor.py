"""What `initfetch doctor` asks AWS: who the credentials are (STS GetCallerIdentity), and
what a failed read means: an expired or unknown key, a KMS key, or the IAM action on the
resource ARN that the identity's policy lacks. Never a value: ARNs, actions and codes."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from initfetch.errors import AccessDenied, NotFound, SecretError, Unavailable
from initfetch.providers.aws.session import classify
from initfetch.providers.base import Endpoint, FetchContext, Identity
from initfetch.reference import DocKey

if TYPE_CHECKING:
    from initfetch.providers.aws.base import AwsProvider

# Denials that are about the credentials themselves, not a policy: what to do about each.
_EXPIRED = "the AWS credentials have expired: refresh them (a new session token, or the role's)"
_UNKNOWN_KEY = (
    "AWS does not know this access key id: check AWS_ACCESS_KEY_ID (or the profile) and that it is active"
)
_KEY_MISMATCH = "the secret access key does not match the access key id: check AWS_SECRET_ACCESS_KEY"
CREDENTIAL_CODES = {
    "ExpiredToken": _EXPIRED,
    "ExpiredTokenException": _EXPIRED,
    "InvalidClientTokenId": _UNKNOWN_KEY,
    "UnrecognizedClientException": _UNKNOWN_KEY,
    "SignatureDoesNotMatch": _KEY_MISMATCH,
    "InvalidSignatureException": _KEY_MISMATCH,
    "MissingAuthenticationToken": "no credentials were sent: give the instance credentials",
}
KMS_CODES = ("KMSAccessDeniedException", "DecryptionFailure", "InvalidKeyId", "KMSDisabledException")
_CODE = re.compile(r"\(([A-Za-z]+)\)")


def endpoints(provider: AwsProvider) -> list[Endpoint]:
    """The service's endpoint and STS's (the identity check); a region must be known."""
    aws = provider.aws
    try:
        region = aws.region
    except SecretError:
        return []  # no region: the login row says what to set
    env = provider.environ
    ca = env.get("AWS_CA_BUNDLE") or env.get("REQUESTS_CA_BUNDLE") or None  # as botocore verifies
    out: list[Endpoint] = []
    for service, what in ((provider.service, provider.service_label), ("sts", "STS")):
        url = aws.endpoint_url(service) or f"https://{service}.{region}.amazonaws.com"
        if all(e.url != url for e in out):
            out.append(Endpoint(url, what, ca, ca_setting="AWS_CA_BUNDLE"))
    return out


def identity(provider: AwsProvider, ctx: FetchContext) -> Identity:
    aws = provider.aws
    try:
        answer = aws.client("sts", ctx).get_caller_identity()
    except SecretError:
        raise
    except Exception as e:
        raise classify(e, "STS GetCallerIdentity") from None
    provider.caller = (str(answer.get("Account") or ""), str(answer.get("Arn") or ""))
    return [
        ("arn", provider.caller[1] or "-"),
        ("account", provider.caller[0] or "-"),
        ("region", aws.region),
        ("credentials", aws.credential_method or "-"),
    ]


def diagnose(provider: AwsProvider, doc: DocKey | None, error: SecretError, ctx: FetchContext) -> str:
    code = next(iter(_CODE.findall(str(error))), "")
    if isinstance(error, Unavailable):
        return f"{error}: {provider.unreachable_hint()}"
    if code in CREDENTIAL_CODES:
        return f"{error}: {CREDENTIAL_CODES[code]}"
    if doc is None:
        return str(error)
    account, region = provider.caller[0] or "ACCOUNT", provider.aws.region
    if isinstance(error, AccessDenied) and code in KMS_CODES:
        return f"{error}: the identity needs kms:Decrypt on the KMS key that encrypts {doc.path}"
    if isinstance(error, AccessDenied):
        who = provider.caller[1] or "the identity"
        actions, arn = provider.iam_needs(doc, region, account)
        return f"{who} needs {actions} on {arn}: allow it in the identity's IAM policy"
    if isinstance(error, NotFound):
        return (
            f"{error} in region {region} (account {account}): check the name, and the region "
            "(the provider's region:, AWS_REGION)"
        )
    return str(error)
