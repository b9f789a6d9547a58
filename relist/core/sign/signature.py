"""Build one signed tag=value header field: shared by DKIM-Signature, ARC-Message-Signature
and ARC-Seal.

Folding and the b= tag handling are dkimpy's own functions and canonicalization and
header selection (``relist.core.sign.canon``) give the same bytes as dkimpy's, so the
field matches dkimpy's signer exactly; the public-key operation is ``SigningKey.sign``
(OpenSSL through ``cryptography``), which is where dkimpy spends its time (its RSA is
pure Python).  No clock here: every timestamp is a parameter.
"""

from __future__ import annotations

import base64
import hashlib

import dkim

from relist.core.sign import canon as _canon
from relist.core.sign.canon import Canon, Header
from relist.core.sign.keys import SigningKey

__all__ = ["Header", "SignError", "body_hash", "canon_policy", "covered", "parse", "signed_field"]

_B_PLACEHOLDER = b"0" * 60            # as dkimpy: forces b= onto its own folded line


class SignError(ValueError):
    """The message or the parameters cannot be signed (bad header line, bad tag value...)."""


def parse(message: bytes) -> tuple[list[Header], bytes]:
    """Header fields and CRLF body as dkimpy sees them (LF or CRLF input)."""
    try:
        return _canon.parse(message)
    except _canon.MessageFormatError as exc:
        raise SignError(f"cannot sign: {exc}") from None


def canon_policy(c: str) -> Canon:
    try:
        return Canon.from_c(c)
    except ValueError:
        raise SignError(f"canonicalization {c!r}: expected HEADER/BODY, each simple or relaxed") from None


def body_hash(body: bytes, canon: Canon) -> bytes:
    """bh= (RFC 6376 §3.7): base64 SHA-256 of the canonical body, never truncated (no l=)."""
    return base64.b64encode(hashlib.sha256(canon.body_bytes(body)).digest())


def covered(headers: list[Header], names: tuple[bytes, ...], canon: Canon) -> list[Header]:
    """The canonical fields that h= ``names`` selects, bottom-up per name (RFC 6376 §5.4.2)."""
    return canon.headers(_canon.select(headers, names))


def _check_values(tags: list[tuple[bytes, bytes]]) -> None:
    # RFC 6376 §3.2: a tag value must not contain ';'; no CR/LF either (we fold).
    values = b"".join(v for _, v in tags)
    if b";" in values or b"\r" in values or b"\n" in values:
        bad = next(t for t, v in tags if b";" in v or b"\r" in v or b"\n" in v)
        raise SignError(f"{bad.decode()}= value contains ';' or a line break")


def signed_field(name: bytes, tags: list[tuple[bytes, bytes]], signed: list[Header],
                 canon: Canon, key: SigningKey,
                 standardize: bool = False) -> bytes:
    """``Name: tags\\r\\n`` with b= filled in (RFC 6376 §3.7, RFC 8617 §5.1.1).

    ``tags`` in output order, one of them ``(b"b", anything)``; ``signed`` the canonical
    fields covered, in hash order.  The field itself is hashed last, canonicalized, with
    an empty b= and no trailing CRLF.  ``standardize`` gives the ARC test suite's fixed
    form (tags sorted and lower-cased, no folding), for conformance tests only.
    """
    _check_values(tags)
    fields = [(t, _B_PLACEHOLDER if t == b"b" else v) for t, v in tags]
    if standardize:
        fields = sorted(((t, v if t == b"bh" else v.lower().replace(b" ", b"")) for t, v in fields),
                        key=lambda tv: tv[0])
    value = b"; ".join(b"=".join(tv) for tv in fields)
    if not standardize:
        value = dkim.fold(value, namelen=len(name), linesep=b"\r\n")
    # empty b= for hashing (RFC 6376 §3.7); the placeholder has no spaces, so folding
    # never splits it and this equals dkimpy's RE_BTAG substitution
    cut = value.rindex(b"b=" + _B_PLACEHOLDER) + 2
    value = value[:cut] + value[cut + len(_B_PLACEHOLDER):]
    (cname, cvalue), = canon.headers([(name, b" " + value + b"\r\n")])
    data = b"".join(n + b":" + v for n, v in signed) + cname + b":" + cvalue.rstrip()
    signature = base64.b64encode(key.sign(data))
    fields = [(t, signature if t == b"b" else v) for t, v in fields]
    value = b"; ".join(b"=".join(tv) for tv in fields) + b"\r\n"
    if not standardize:
        value = dkim.fold(value, namelen=len(name), linesep=b"\r\n")
    return name + b": " + value
