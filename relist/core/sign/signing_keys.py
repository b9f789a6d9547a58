"""Signing keys as values: parse key bytes, sign, and describe the DNS key record.

Pure: key *files* are read and written by ``relist.edge.key_files``; this module gets the
bytes.  A ``SigningKey`` never shows its key material in ``repr``/``str``, so it can be
logged or put in an error message safely.

DNS key records (RFC 6376 §3.6.1): ``v=DKIM1; k=rsa; p=<base64 SubjectPublicKeyInfo>``;
for Ed25519 (RFC 8463 §4.2) ``k=ed25519`` and ``p=`` is the base64 of the raw 32-byte
public key.  A TXT character-string holds at most 255 bytes (RFC 1035 §3.3), so the
zone-file line splits the record into several strings, which verifiers join
(RFC 6376 §3.6.2.2).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from relist.core.dkim.tags import TagError, parse_tags

__all__ = [
    "BadKey", "KeyStatus", "RecordCheck", "SigningKey", "check_record", "dns_record",
    "load_private_key", "parse_record", "private_pem", "zone_line",
]

RSA = "rsa-sha256"
ED25519 = "ed25519-sha256"
TXT_STRING_MAX = 255  # RFC 1035 §3.3: <character-string> is at most 255 octets
_PKCS1V15, _SHA256 = padding.PKCS1v15(), hashes.SHA256()   # stateless: made once


class BadKey(ValueError):
    """A key (file content or DNS record) cannot be used; the text never holds key material."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key ready to sign: ``algorithm`` is the a= value it produces."""

    algorithm: str          # "rsa-sha256" | "ed25519-sha256"
    private: Any            # cryptography private key object (OpenSSL-backed)
    source: str = ""        # where it came from (a path), for messages only

    def __repr__(self) -> str:
        where = f" from {self.source}" if self.source else ""
        return f"<SigningKey {self.algorithm} {self.bits}-bit{where}>"

    def __str__(self) -> str:
        return self.__repr__()

    @property
    def kind(self) -> str:
        """The k= value of the matching DNS record."""
        return "rsa" if self.algorithm == RSA else "ed25519"

    @property
    def bits(self) -> int:
        return self.private.key_size if self.algorithm == RSA else 256

    def sign(self, data: bytes) -> bytes:
        """Sign the DKIM hash input ``data`` (RFC 6376 §3.7).

        rsa-sha256: RSASSA-PKCS1-v1_5 over SHA-256 of ``data`` (RFC 8017 §8.2, deterministic).
        ed25519-sha256: PureEdDSA over the SHA-256 *digest* of ``data`` (RFC 8463 §3).
        """
        if self.algorithm == RSA:
            return self.private.sign(data, _PKCS1V15, _SHA256)
        return self.private.sign(hashlib.sha256(data).digest())

    def public_bytes(self) -> bytes:
        """The public key as it goes into p= (before base64)."""
        pub = self.private.public_key()
        if self.algorithm == RSA:
            return pub.public_bytes(serialization.Encoding.DER,
                                    serialization.PublicFormat.SubjectPublicKeyInfo)
        return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def public_b64(self) -> str:
        return base64.b64encode(self.public_bytes()).decode("ascii")


def load_private_key(data: bytes, source: str = "") -> SigningKey:
    """Parse a private key: PEM (PKCS#1 ``RSA PRIVATE KEY`` or PKCS#8 ``PRIVATE KEY``, RSA
    or Ed25519), or the base64 32-byte Ed25519 seed that dkimpy's ``dknewkey`` writes."""
    where = source or "private key"
    text = data.strip()
    if text.startswith(b"-----BEGIN"):
        try:
            priv = serialization.load_pem_private_key(text, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            # The exception text from OpenSSL never contains key material.
            raise BadKey(f"{where}: not a usable unencrypted PEM private key ({exc})") from None
        if isinstance(priv, rsa.RSAPrivateKey):
            return SigningKey(RSA, priv, source)
        if isinstance(priv, ed25519.Ed25519PrivateKey):
            return SigningKey(ED25519, priv, source)
        raise BadKey(f"{where}: unsupported key type (expected RSA or Ed25519)")
    try:
        seed = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        seed = b""
    if len(seed) == 32:
        return SigningKey(ED25519, ed25519.Ed25519PrivateKey.from_private_bytes(seed), source)
    raise BadKey(f"{where}: not a PEM private key or a base64 Ed25519 seed")


def private_pem(key: SigningKey) -> bytes:
    """The key as unencrypted PKCS#8 PEM (what ``relist keys generate`` writes)."""
    return key.private.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption())


def dns_record(key: SigningKey, testing: bool = False) -> str:
    """The TXT record text for ``key`` (RFC 6376 §3.6.1; RFC 8463 §4.2 for Ed25519)."""
    t = "t=y; " if testing else ""
    return f"v=DKIM1; k={key.kind}; {t}p={key.public_b64()}"


def txt_strings(record: str) -> list[str]:
    """Split a record into character-strings of at most 255 bytes: the tags before p=
    in the first, then p= in pieces (RFC 6376 §3.6.2.2: verifiers concatenate them)."""
    head, sep, p = record.partition("p=")
    if not sep:
        head, p = "", record
    else:
        p = "p=" + p
    out = [head] if head else []
    out += [p[i:i + TXT_STRING_MAX] for i in range(0, len(p), TXT_STRING_MAX)]
    return out


def zone_line(selector: str, domain: str, record: str) -> str:
    """``S._domainkey.D. IN TXT ( "..." "..." )``: one zone-file line (RFC 1035 §5.1)."""
    strings = " ".join(f'"{s}"' for s in txt_strings(record))
    return f"{selector}._domainkey.{domain.rstrip('.')}. IN TXT ( {strings} )"


_WS = re.compile(r"\s+")


def parse_record(txt: bytes | str) -> dict[str, str]:
    """Tag=value list of a key record (RFC 6376 §3.2; relist.core.dkim.tags, the
    verifier's parser), all white space removed from values.

    Raises ``BadKey`` when a tag is malformed or repeated (§3.2: "MUST NOT" duplicate).
    """
    try:
        tags = parse_tags(txt)
    except TagError as exc:
        raise BadKey(f"malformed key record: {exc}") from None
    return {name: _WS.sub("", value) for name, value in tags.items()}


class KeyStatus(enum.StrEnum):
    OK = "ok"
    NOT_PUBLISHED = "not published"
    MISMATCH = "mismatch"
    TESTING = "testing flag (t=y)"
    TOO_SMALL = "too small"
    REVOKED = "revoked (empty p=)"
    INVALID = "invalid record"
    DNS_ERROR = "dns error"
    SIGN_FAILED = "test signature does not verify"


@dataclass(frozen=True, slots=True)
class RecordCheck:
    status: KeyStatus
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status is KeyStatus.OK


def _public_bits(kind: str, pub: bytes) -> int:
    if kind == "ed25519":
        return 256 if len(pub) == 32 else 0
    try:
        key = serialization.load_der_public_key(pub)
    except (ValueError, UnsupportedAlgorithm):
        # RFC 6376 §3.6.1 allows a bare RSAPublicKey (PKCS#1) too; dkimpy accepts it.
        try:
            key = serialization.load_der_public_key(_spki_from_pkcs1(pub))
        except (ValueError, UnsupportedAlgorithm):
            return 0
    return key.key_size if isinstance(key, rsa.RSAPublicKey) else 0


def _spki_from_pkcs1(pkcs1: bytes) -> bytes:
    """Wrap a PKCS#1 RSAPublicKey in a SubjectPublicKeyInfo (DER by hand, no IO)."""
    def der_len(n: int) -> bytes:
        if n < 0x80:
            return bytes([n])
        b = n.to_bytes((n.bit_length() + 7) // 8, "big")
        return bytes([0x80 | len(b)]) + b
    alg = bytes.fromhex("300d06092a864886f70d0101010500")  # rsaEncryption, NULL
    bitstr = b"\x03" + der_len(len(pkcs1) + 1) + b"\x00" + pkcs1
    body = alg + bitstr
    return b"\x30" + der_len(len(body)) + body


def check_record(key: SigningKey, records: Sequence[bytes], min_bits: int = 1024) -> RecordCheck:
    """Compare the published TXT ``records`` at the key's name with ``key``.

    Several TXT records at one name: RFC 6376 §3.6.2.2 lets a verifier use any, so
    every one must match.  The order of the checks gives the most useful message.
    """
    if not records:
        return RecordCheck(KeyStatus.NOT_PUBLISHED, "no TXT record")
    if len(records) > 1:
        checks = [check_record(key, (r,), min_bits) for r in records]
        bad = [c for c in checks if not c.ok]
        if bad:
            return RecordCheck(bad[0].status, f"{len(records)} TXT records; {bad[0].detail}")
        return RecordCheck(KeyStatus.OK, f"{len(records)} TXT records, all match")
    try:
        tags = parse_record(records[0])
    except BadKey as exc:
        return RecordCheck(KeyStatus.INVALID, str(exc))
    if tags.get("v", "DKIM1") != "DKIM1":
        return RecordCheck(KeyStatus.INVALID, f"v={tags['v']} (expected DKIM1)")
    kind = tags.get("k", "rsa").lower()
    if "p" not in tags:
        return RecordCheck(KeyStatus.INVALID, "no p= tag")
    if tags["p"] == "":
        return RecordCheck(KeyStatus.REVOKED, "p= is empty: the key is revoked (RFC 6376 §3.6.1)")
    if kind != key.kind:
        return RecordCheck(KeyStatus.MISMATCH, f"record has k={kind}, key is {key.kind}")
    try:
        pub = base64.b64decode(tags["p"], validate=True)
    except (binascii.Error, ValueError):
        return RecordCheck(KeyStatus.INVALID, "p= is not base64")
    bits = _public_bits(kind, pub)
    if bits == 0:
        return RecordCheck(KeyStatus.INVALID, f"p= is not a {kind} public key")
    if kind == "rsa" and bits < min_bits:
        return RecordCheck(KeyStatus.TOO_SMALL,
                           f"published key has {bits} bits, fewer than {min_bits} (RFC 8301 §3.2)")
    mine = key.public_bytes()
    if kind == "rsa" and pub != mine:
        same = _spki_from_pkcs1(pub) == mine
    else:
        same = pub == mine
    if not same:
        return RecordCheck(KeyStatus.MISMATCH, "published public key differs from the private key")
    if key.kind == "rsa" and key.bits < min_bits:
        return RecordCheck(KeyStatus.TOO_SMALL, f"key has {key.bits} bits, fewer than {min_bits}")
    flags = tags.get("t", "").split(":")
    if "y" in flags:
        return RecordCheck(KeyStatus.TESTING,
                           "t=y: verifiers may treat failures as success (RFC 6376 §3.6.1)")
    return RecordCheck(KeyStatus.OK, f"{kind} {bits}-bit key matches")
