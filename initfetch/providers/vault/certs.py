"""Certificates a write issued (pki/issue/ROLE, pki/sign/ROLE): the document templates
see, the lease that makes a watcher issue a new one in time, and revoking a serial.

PKI issues without a lease by default (`generate_lease: false`), so the lease is
made here from the certificate itself: `duration` is what is left until its
notAfter and `validity` is notAfter - notBefore, read from the certificate's DER
(a few lines of ASN.1 below; no crypto library is needed for that). Its id is
`MOUNT/cert/SERIAL` (the path Vault serves the certificate at), remembered by the
provider so that revoking it revokes the serial (`MOUNT/revoke`). With
`generate_lease: true` Vault's own lease is kept, with the validity added.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import dataclasses
import re
import time
from typing import Any

from initfetch.errors import NotFound
from initfetch.providers.base import Document, Lease
from initfetch.reference import Write

# What an issued certificate's document holds that is not secret (all but private_key):
# logs may show them (a serial in "revoked ..."), templates get them as usual.
PUBLIC = frozenset(
    {"certificate", "issuing_ca", "ca_chain", "serial_number", "expiration", "private_key_type"}
)
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.S)


def is_certificate(data: dict[str, Any]) -> bool:
    return isinstance(data.get("certificate"), str) and isinstance(data.get("serial_number"), str)


def document(
    data: dict[str, Any], lease: Lease | None, write: Write, mount: str, metadata: dict[str, Any]
) -> Document:
    """The issued certificate as a document: Vault's fields (certificate, private_key,
    issuing_ca, ca_chain, serial_number, expiration, ...) and a lease from its notAfter."""
    not_before, not_after = validity(data["certificate"])
    serial = data["serial_number"]
    left = max(1, int(not_after - time.time()))
    span = max(1, int(not_after - not_before))
    if lease is None:
        lease = Lease(
            cert_lease_id(mount, serial),
            left,
            False,
            validity=span,
            retire=write.revoke_replaced,
            outlives_login=True,
        )
    else:  # generate_lease: Vault's lease, replaced (not renewed) on the certificate's schedule
        lease = dataclasses.replace(lease, renewable=False, validity=span, retire=write.revoke_replaced)
    metadata = {
        **metadata,
        "serial_number": serial,
        "not_before": int(not_before),
        "not_after": int(not_after),
    }
    return Document(value=dict(data), version=serial, lease=lease, metadata=metadata, public=PUBLIC)


def cert_lease_id(mount: str, serial: str) -> str:
    return f"{mount.rstrip('/')}/cert/{serial}"


def parse_lease_id(lease_id: str) -> tuple[str, str]:
    """(mount, serial) of an id made by `cert_lease_id`."""
    mount, _, serial = lease_id.rpartition("/cert/")
    return mount, serial


def validity(pem: str) -> tuple[float, float]:
    """(notBefore, notAfter) of the first certificate in `pem`, as Unix times."""
    match = _PEM.search(pem)
    try:
        if match is None:
            raise ValueError("no PEM certificate")
        der = base64.b64decode("".join(match.group(1).split()), validate=True)
        return _validity(der)
    except (ValueError, IndexError, binascii.Error):
        raise NotFound("the issued certificate could not be read (no valid PEM/DER certificate)") from None


def _tlv(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the DER element at `pos`."""
    tag, length = der[pos], der[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(der[pos : pos + n], "big")
        pos += n
    if pos + length > len(der):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def _validity(der: bytes) -> tuple[float, float]:
    # Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL, serial,
    #   signature, issuer, validity SEQUENCE { notBefore, notAfter }, ... }, ... }
    _, tbs, _ = _tlv(der, 0)
    _, tbs, _ = _tlv(der, tbs)
    tag, _, end = _tlv(der, tbs)
    if tag == 0xA0:  # explicit version
        _, _, end = _tlv(der, end)  # serial
    for _ in range(2):  # signature algorithm, issuer
        _, _, end = _tlv(der, end)
    _, start, _ = _tlv(der, end)  # validity
    tag1, a, b = _tlv(der, start)
    tag2, c, d = _tlv(der, b)
    return _time(tag1, der[a:b]), _time(tag2, der[c:d])


def _time(tag: int, raw: bytes) -> float:
    text = raw.decode("ascii").rstrip("Z")
    if tag == 0x17:  # UTCTime: YYMMDDHHMMSS; years 50-99 are 19xx
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != 0x18:  # GeneralizedTime: YYYYMMDDHHMMSS
        raise ValueError("not a time")
    parsed = time.strptime(text[:14], "%Y%m%d%H%M%S")
    return float(calendar.timegm(parsed))
