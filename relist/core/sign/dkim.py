"""DKIM signing (RFC 6376 §5), rsa-sha256 and ed25519-sha256 (RFC 8463).

``sign_dkim`` returns the complete ``DKIM-Signature:`` field (folded, CRLF-terminated)
to prepend to the message; the message bytes are not changed.  Deterministic: t= comes
from ``now``, RSA PKCS#1 v1.5 and Ed25519 signatures have no randomness, so the same
input gives the same bytes (and the same bytes as dkimpy's ``dkim.sign`` at that t=).

Choices:
* h= oversigns: every name in the list is listed once more than the message has it, so
  nobody can add another instance without breaking the signature (RFC 6376 §5.4.2,
  §8.15).  The default list covers RFC 8058 §4's List-Unsubscribe and
  List-Unsubscribe-Post.
* never l= (RFC 6376 §8.2: a body-length limit lets anyone append content).
* i= defaults to ``@domain`` and q=dns/txt is written, as dkimpy does.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Iterable

from relist.core.sign.canon import select
from relist.core.sign.keys import SigningKey
from relist.core.sign.signature import (
    Header, SignError, body_hash, canon_policy, covered, parse, signed_field,
)

__all__ = ["DEFAULT_SIGN_HEADERS", "SignError", "oversigned", "sign_dkim"]

# RFC 6376 §5.4.1's recommended fields plus the RFC 2369/2919 list fields (RFC 8058 §4).
DEFAULT_SIGN_HEADERS: tuple[str, ...] = (
    "from", "subject", "date", "to", "cc", "reply-to", "sender", "message-id",
    "mime-version", "content-type", "content-transfer-encoding", "in-reply-to", "references",
    "list-id", "list-post", "list-help", "list-subscribe", "list-unsubscribe",
    "list-unsubscribe-post", "list-archive", "list-owner",
)

# RFC 6376 §5.4: fields a signer should not cover (they change in transit); and
# RFC 8617 §4.1.2 / RFC 8601 §5: never ARC-* or Authentication-Results in a signature.
NEVER_SIGN: frozenset[str] = frozenset({
    "return-path", "received", "comments", "keywords", "bcc", "resent-bcc",
    "dkim-signature", "authentication-results",
    "arc-seal", "arc-message-signature", "arc-authentication-results",
})


_NEVER_B = frozenset(n.encode("ascii") for n in NEVER_SIGN)
_DEFAULT_B = tuple(n.encode("ascii") for n in DEFAULT_SIGN_HEADERS)


def oversigned(names: Iterable[str | bytes], headers: list[Header] | bytes) -> tuple[bytes, ...]:
    """h= for ``names``: each listed (occurrences in ``headers``) + 1 times, in order.
    ``headers`` is a parsed header list or the message bytes."""
    if isinstance(headers, bytes):
        headers = parse(headers)[0]
    if names is not _DEFAULT_B:
        names = tuple(dict.fromkeys(
            n if isinstance(n, bytes) else n.strip().lower().encode("ascii") for n in names))
    counts = dict.fromkeys(names, 1)
    for name, _ in headers:
        key = name.lower()
        if key in counts:
            counts[key] += 1
    out: list[bytes] = []
    for n in names:
        out += [n] * counts[n]
    return tuple(out)


_QP_UNIT = re.compile(rb"=[0-9A-F]{2}|.", re.S)


def _dqp(value: bytes) -> bytes:
    """dkim-quoted-printable (RFC 6376 §2.11) for z=, with '|' also encoded (§3.5)."""
    out = bytearray()
    for byte in value:
        if 0x21 <= byte <= 0x7E and byte not in b";=|":
            out.append(byte)
        else:
            out += b"=%02X" % byte
    return bytes(out)


def _z_value(raw: list[Header], h: tuple[bytes, ...]) -> bytes:
    """z= copies of the fields h= selects, as found (RFC 6376 §3.5), with a space every
    few characters (FWS is allowed between qp characters) so folding never splits ``=XX``."""
    copies = []
    for name, value in select(raw, h):
        units = _QP_UNIT.findall(_dqp(name + b":" + value.replace(b"\r\n", b"")))
        copies.append(b" ".join(b"".join(units[i:i + 20]) for i in range(0, len(units), 20)))
    return b"| ".join(copies)


def sign_dkim(message: bytes, *, domain: str, selector: str, key: SigningKey, now: datetime,
              canonicalization: str = "relaxed/relaxed", headers: Iterable[str] | None = None,
              ttl: int = 0, identity: str | None = None, copy_headers: bool = False) -> bytes:
    """The ``DKIM-Signature:`` field for ``message`` (RFC 6376 §5), ready to prepend.

    ``headers``: None for ``DEFAULT_SIGN_HEADERS`` oversigned; otherwise the h= list
    exactly as given (use ``oversigned()`` to oversign a custom list).  ``ttl`` > 0 adds
    x= = t= + ttl (§3.5).  ``identity`` is the i= AUID, which must be in ``domain``.
    ``copy_headers`` adds z= (§3.5, diagnostic copies).
    """
    if now.tzinfo is None:
        raise SignError("now must be timezone-aware")
    if ttl < 0:
        raise SignError(f"ttl = {ttl}: must not be negative")
    canon = canon_policy(canonicalization)
    raw_headers, body = parse(message)
    if headers is None:
        h = oversigned(_DEFAULT_B, raw_headers)
    else:
        h = tuple(n.strip().lower() if isinstance(n, bytes) else n.strip().lower().encode("ascii")
                  for n in headers)
    if b"from" not in h:
        raise SignError("h= must include From (RFC 6376 §5.4)")
    never = sorted(n.decode() for n in _NEVER_B.intersection(h))
    if never:
        raise SignError(f"h= must not include {', '.join(never)}")
    d = domain.lower().rstrip(".").encode("ascii")
    auid = (identity or f"@{domain}").encode("ascii")
    if not auid.lower().rstrip(b".").endswith(b"@" + d) and not auid.lower().endswith(b"." + d):
        raise SignError(f"i={identity}: must be in the signing domain {domain} (RFC 6376 §3.5)")
    t = int(now.timestamp())
    signed = covered(raw_headers, h, canon)
    tags = [
        (b"v", b"1"),
        (b"a", key.algorithm.encode("ascii")),
        (b"c", canon.c_value()),
        (b"d", d),
        (b"i", auid),
        (b"q", b"dns/txt"),
        (b"s", selector.encode("ascii")),
        (b"t", str(t).encode("ascii")),
    ]
    if ttl > 0:
        tags.append((b"x", str(t + ttl).encode("ascii")))
    tags.append((b"h", b" : ".join(h)))
    if copy_headers:
        tags.append((b"z", _z_value(raw_headers, h)))
    tags += [(b"bh", body_hash(body, canon)), (b"b", b"")]
    return signed_field(b"DKIM-Signature", tags, signed, canon, key)
