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

import functools
import re
from datetime import datetime
from typing import Iterable

from relist.core.dkim.canon import index, select
from relist.core.sign.signing_keys import SigningKey
from relist.core.sign.signature import (
    Header, Prepared, SignError, canon_policy, check_values, covered, prepare, signed_field,
    signed_head,
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


@functools.lru_cache(maxsize=256)
def h_names(names: tuple[str | bytes, ...]) -> tuple[bytes, ...]:
    """h= names as given, stripped and lower-cased (memoized: a list's h= rarely changes)."""
    return tuple(n.strip().lower() if isinstance(n, bytes) else n.strip().lower().encode("ascii")
                 for n in names)


@functools.lru_cache(maxsize=256)
def _unique_names(names: tuple[str | bytes, ...]) -> tuple[bytes, ...]:
    return tuple(dict.fromkeys(h_names(names)))


def oversigned(names: Iterable[str | bytes],
               headers: list[Header] | bytes | Prepared) -> tuple[bytes, ...]:
    """h= for ``names``: each listed (occurrences in ``headers``) + 1 times, in order.
    ``headers`` is a parsed header list, the message bytes or a ``prepare``d message
    (which then remembers the fields this h= selects, for the signatures made with it)."""
    if isinstance(headers, list):
        msg, positions = None, index(headers)
    else:
        msg = prepare(headers)
        positions = msg.index
    if names is not _DEFAULT_B:
        names = _unique_names(tuple(names))
    if msg is not None:
        h = msg._oversigned.get(names)
        if h is not None:
            return h
    out: list[bytes] = []
    picked: list[int] = []   # = canon.selected(positions, h), made in the same pass (an oversigned
    for n in names:          # h= takes every instance of each name, bottom-up): ~7 µs less a signature
        at = positions.get(n)
        if at is None:
            out.append(n)
        else:
            out += [n] * (len(at) + 1)
            picked += at[::-1]
    h = tuple(out)
    if msg is not None:
        msg.selections[h] = picked
        msg._oversigned[names] = h
    return h


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


@functools.lru_cache(maxsize=256)
def _checked_h(headers: tuple[str | bytes, ...]) -> tuple[bytes, ...]:
    """h= as given, normalized (``h_names``) and checked (memoized)."""
    h = h_names(headers)
    if b"from" not in h:
        raise SignError("h= must include From (RFC 6376 §5.4)")
    if not _NEVER_B.isdisjoint(h):
        never = sorted(n.decode() for n in _NEVER_B.intersection(h))
        raise SignError(f"h= must not include {', '.join(never)}")
    return h


@functools.lru_cache(maxsize=256)
def _h_value(h: tuple[bytes, ...]) -> bytes:
    """The h= tag value, checked (``check_values``; memoized)."""
    value = b" : ".join(h)
    check_values([(b"h", value)])
    return value


@functools.lru_cache(maxsize=64)
def _fixed_tags(algorithm: str, c: bytes, domain: str, identity: str | None,
                selector: str) -> tuple[tuple[tuple[bytes, bytes], ...], bytes]:
    """v= to s=, checked, as tags and as ``t=v; `` each: the same for every message a
    key signs for a list (memoized)."""
    d = domain.lower().rstrip(".").encode("ascii")
    auid = (identity or f"@{domain}").encode("ascii")
    if not auid.lower().rstrip(b".").endswith(b"@" + d) and not auid.lower().endswith(b"." + d):
        raise SignError(f"i={identity}: must be in the signing domain {domain} (RFC 6376 §3.5)")
    tags = ((b"v", b"1"), (b"a", algorithm.encode("ascii")), (b"c", c), (b"d", d),
            (b"i", auid), (b"q", b"dns/txt"), (b"s", selector.encode("ascii")))
    check_values(tags)
    return tags, b"".join([t + b"=" + v + b"; " for t, v in tags])


def sign_dkim(message: bytes | Prepared, *, domain: str, selector: str, key: SigningKey, now: datetime,
              canonicalization: str = "relaxed/relaxed", headers: Iterable[str | bytes] | None = None,
              ttl: int = 0, identity: str | None = None, copy_headers: bool = False,
              canonical: list[bytes | None] | None = None) -> bytes:
    """The ``DKIM-Signature:`` field for ``message`` (RFC 6376 §5), ready to prepend.

    ``headers``: None for ``DEFAULT_SIGN_HEADERS`` oversigned; otherwise the h= list
    exactly as given (use ``oversigned()`` to oversign a custom list).  ``ttl`` > 0 adds
    x= = t= + ttl (§3.5).  ``identity`` is the i= AUID, which must be in ``domain``.
    ``copy_headers`` adds z= (§3.5, diagnostic copies).  ``message`` may be
    ``prepare(message)``, to parse and hash the body once for several signatures.
    ``canonical``: a list to which the field's relaxed canonical form is appended,
    or None (see ``signature.signed_head``).
    """
    if now.tzinfo is None:
        raise SignError("now must be timezone-aware")
    if ttl < 0:
        raise SignError(f"ttl = {ttl}: must not be negative")
    canon = canon_policy(canonicalization)
    msg = prepare(message)
    raw_headers = msg.headers
    h = oversigned(_DEFAULT_B, msg) if headers is None else _checked_h(tuple(headers))
    fixed, head = _fixed_tags(key.algorithm, canon.c_value(), domain, identity, selector)
    t = int(now.timestamp())
    tags = [(b"t", str(t).encode("ascii"))]
    if ttl > 0:
        tags.append((b"x", str(t + ttl).encode("ascii")))
    tags.append((b"h", _h_value(h)))
    if copy_headers:
        tags.append((b"z", _z_value(raw_headers, h)))
    tags.append((b"bh", msg.body_hash(canon)))
    # (no check_values(tags): t= and x= are digits, h= is checked (_h_value), z= is
    # quoted-printable with ';' encoded and no line break, bh= is base64)
    signed = covered(msg, h, canon)
    field = signed_head(b"DKIM-Signature", head + b"".join([t + b"=" + v + b"; " for t, v in tags]),
                        signed, canon, key, canonical)
    if field is None:   # b= not alone on the last line: the general way
        field = signed_field(b"DKIM-Signature", [*fixed, *tags, (b"b", b"")], signed, canon, key,
                             canonical=canonical)
    return field
