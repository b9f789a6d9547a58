"""Helpers for the verification tests: throwaway keys, a DKIM signer with any tags
(dkimpy's own ``dkim.sign`` always writes the wall clock into t=, which would make
tests depend on the day they run), and DNS facts.  The tests here check the helpers
against dkimpy's own verifier, so a broken helper cannot pass silently."""

from __future__ import annotations

import base64
from datetime import datetime, timezone

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.canonicalization import CanonicalizationPolicy
from dkim.crypto import parse_pem_private_key

from relist.core.facts import Answer, Facts, Question, Status

NOW = datetime(2024, 6, 1, 12, 0, 0, tzinfo=timezone.utc)
T0 = int(NOW.timestamp()) - 3600     # signed an hour before NOW

MESSAGE = (
    b"From: Alice Example <alice@example.com>\r\n"
    b"To: list@lists.example.org\r\n"
    b"Subject: Hello list\r\n"
    b"Date: Sat, 01 Jun 2024 11:00:00 +0000\r\n"
    b"Message-ID: <abc@example.com>\r\n"
    b"\r\n"
    b"Hello everyone,\r\n"
    b"this is a test.\r\n"
)

_KEYS: dict[tuple[str, int], object] = {}


def rsa_key(bits: int = 2048, tag: str = "a"):
    """A cached throwaway RSA key (generated in the test run, never stored)."""
    if ("rsa" + tag, bits) not in _KEYS:
        _KEYS[("rsa" + tag, bits)] = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return _KEYS[("rsa" + tag, bits)]


def _prime(bits: int, rng) -> int:
    while True:
        n = rng.getrandbits(bits) | (1 << (bits - 1)) | 1
        if all(pow(a, n - 1, n) == 1 for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)):
            return n


def small_rsa_key(bits: int = 512):
    """An RSA key below cryptography's 1024-bit generation floor (RFC 8301 tests)."""
    if ("small", bits) not in _KEYS:
        import random
        rng = random.Random(bits)   # deterministic: the same throwaway key every run
        e = 65537
        while True:
            p, q = _prime(bits // 2, rng), _prime(bits // 2, rng)
            phi = (p - 1) * (q - 1)
            if p != q and phi % e and (p * q).bit_length() == bits:
                break
        d = pow(e, -1, phi)
        numbers = rsa.RSAPrivateNumbers(p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p),
                                        rsa.RSAPublicNumbers(e, p * q))
        _KEYS[("small", bits)] = numbers.private_key(unsafe_skip_rsa_key_validation=True)
    return _KEYS[("small", bits)]


def ed_key():
    if ("ed", 0) not in _KEYS:
        _KEYS[("ed", 0)] = ed25519.Ed25519PrivateKey.generate()
    return _KEYS[("ed", 0)]


def public_record(key, extra: str = "") -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; {extra}p={base64.b64encode(raw).decode()}".encode()
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; {extra}p={base64.b64encode(der).decode()}".encode()


def sign(message: bytes, key=None, *, d: str = "example.com", s: str = "sel",
         a: str | None = None, c: str = "relaxed/relaxed",
         h: tuple[str, ...] = ("from", "to", "subject", "date", "message-id"),
         t: int | None = T0, x: int | None = None, length: bool = False,
         extra: tuple[tuple[str, str], ...] = ()) -> bytes:
    """The message with a DKIM-Signature prepended, tags as given."""
    key = key or rsa_key()
    signer = dkim.DKIM(message)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        import nacl.signing
        raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                serialization.NoEncryption())
        pk = nacl.signing.SigningKey(raw)
        a = a or "ed25519-sha256"
    else:
        pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
        pk = parse_pem_private_key(pem)
        a = a or "rsa-sha256"
    signer.signature_algorithm = a.encode()
    signer.hasher = dkim.HASH_ALGORITHMS[a.encode()]
    policy = CanonicalizationPolicy.from_c_value(c.encode())
    body = policy.canonicalize_body(signer.body)
    hasher = signer.hasher()
    hasher.update(body)
    fields = [(b"v", b"1"), (b"a", a.encode()), (b"c", c.encode()), (b"d", d.encode()),
              (b"s", s.encode())]
    if t is not None:
        fields.append((b"t", str(t).encode()))
    if x is not None:
        fields.append((b"x", str(x).encode()))
    if length:
        fields.append((b"l", str(len(body)).encode()))
    fields += [(k.encode(), v.encode()) for k, v in extra]
    fields += [(b"h", b":".join(n.encode() for n in h)),
               (b"bh", base64.b64encode(hasher.digest())),
               (b"b", b"0" * 60)]   # as dkimpy does: b= folds onto its own line
    value = signer.gen_header(fields, [n.encode() for n in h], policy, b"DKIM-Signature", pk)
    return b"DKIM-Signature: " + value + message


def facts(records: dict[str, object]) -> Facts:
    """Facts from {name: bytes | str | Status | (Status, detail) | None (absent)}."""
    answers = {}
    for name, value in records.items():
        q = Question.txt(name)
        if value is None:
            answers[q] = Answer(Status.ABSENT, (), "NXDOMAIN")
        elif isinstance(value, Status):
            answers[q] = Answer(value, (), "timeout" if value == Status.TEMPERROR else "NXDOMAIN")
        elif isinstance(value, tuple) and isinstance(value[0], Status):
            answers[q] = Answer(value[0], (), value[1])
        elif isinstance(value, list):
            answers[q] = Answer(Status.FOUND, tuple(v.encode() if isinstance(v, str) else v
                                                    for v in value))
        else:
            answers[q] = Answer(Status.FOUND, (value.encode() if isinstance(value, str) else value,))
    return Facts(answers)


def dnsfunc_for(f: Facts):
    def lookup(name, timeout=5):
        a = f.txt(name.decode().rstrip("."))
        return a.records[0] if a.records else None
    return lookup
