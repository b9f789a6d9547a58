"""DKIM key records (RFC 6376 §3.6.1, RFC 8463 §4) read from ``Facts``.

``lookup_key`` answers with a ``KeyRecord`` or a ``KeyProblem`` (result word and
reason); nothing here touches the network.  A DNS temporary error is a
``temperror`` and never becomes "no key" (RFC 6376 §6.1.2: TEMPFAIL).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from relist.core.verify.results import Result
from relist.core.dkim.tags import TagError, parse_tags, strip_ws
from relist.core.facts import Facts, Question, Status
from relist.core.memo import small_lru_cache

__all__ = ["KeyProblem", "KeyRecord", "key_name", "key_question", "lookup_key", "parse_key_record"]


@dataclass(frozen=True, slots=True)
class KeyRecord:
    k: str                      # "rsa" | "ed25519"
    p: str                      # base64, white space removed
    public_key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey   # RSA exactly when k=rsa
    bits: int
    hashes: tuple[str, ...]     # h= (empty: any)
    services: tuple[str, ...]   # s=
    flags: tuple[str, ...]      # t=
    text: str

    @property
    def testing(self) -> bool:
        return "y" in self.flags

    @property
    def strict(self) -> bool:
        return "s" in self.flags


@dataclass(frozen=True, slots=True)
class KeyProblem:
    result: Result
    reason: str


def key_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}".lower()


def _colon_list(value: str) -> tuple[str, ...]:
    return tuple(v.strip(" \t\r\n").lower() for v in value.split(":") if v.strip(" \t\r\n"))


@small_lru_cache(1024, 4096)
def parse_key_record(text: bytes | str) -> KeyRecord | KeyProblem:
    """Parse and check one key record (RFC 6376 §3.6.1).

    Cached: a pure function of the text, and one signer's key serves many posts
    (the DER parse and the tag list were ~12 µs a signature); both results are frozen.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "surrogateescape")
    perm = Result.PERMERROR
    try:
        tags = parse_tags(text)
    except TagError as exc:
        return KeyProblem(perm, f"key syntax error: {exc}")
    if "v" in tags and tags["v"] != "DKIM1":
        return KeyProblem(perm, f"key record has unsupported version v={tags['v'][:20]}")
    if "p" not in tags:
        return KeyProblem(perm, "key syntax error: no p= tag")
    p = strip_ws(tags["p"])
    if not p:
        # RFC 6376 §3.6.1 / §6.1.2: an empty p= means the key has been revoked.
        return KeyProblem(perm, "key revoked (empty p=)")
    k = tags.get("k", "rsa").lower()
    if k not in ("rsa", "ed25519"):
        return KeyProblem(perm, f"unsupported key type k={k[:20]}")
    services = _colon_list(tags.get("s", "*"))
    if not ({"*", "email"} & set(services)):
        # RFC 6376 §3.6.1: a key not for "email" (or "*") must not be used for mail.
        return KeyProblem(perm, f"key is not for email (s={':'.join(services)[:40]})")
    try:
        der = base64.b64decode(p, validate=True)
    except (binascii.Error, ValueError):
        return KeyProblem(perm, "key syntax error: p= is not valid base64")
    try:
        if k == "rsa":
            key = load_der_public_key(der)
            if not isinstance(key, rsa.RSAPublicKey):
                return KeyProblem(perm, "key syntax error: p= is not an RSA public key")
            bits = key.key_size
        else:
            # RFC 8463 §4.2: the raw 32-byte Ed25519 public key.
            if len(der) != 32:
                return KeyProblem(perm, f"key syntax error: Ed25519 key is {len(der)} bytes, not 32")
            key = ed25519.Ed25519PublicKey.from_public_bytes(der)
            bits = 256
    except (ValueError, TypeError) as bad:   # (not `exc`: compiled, one name has one type)
        return KeyProblem(perm, f"key syntax error: {str(bad)[:80]}")
    return KeyRecord(k=k, p=p, public_key=key, bits=bits, hashes=_colon_list(tags.get("h", "")),
                     services=services, flags=_colon_list(tags.get("t", "")), text=text)


@small_lru_cache(4096, 1024)
def _key_question(selector: str, domain: str) -> tuple[str, Question]:
    """The key's name and DNS question (cached: the same signers, post after post)."""
    name = key_name(selector, domain)
    return name, Question.txt(name)


def key_question(selector: str, domain: str) -> Question:
    """The DNS question for the key of ``selector``/``domain``: the one ``lookup_key``
    reads the answer of (what the verifiers ask ``plan`` for)."""
    return _key_question(selector, domain)[1]


def lookup_key(facts: Facts, selector: str, domain: str) -> KeyRecord | KeyProblem:
    """The key for ``selector``/``domain`` from the DNS facts."""
    name, question = _key_question(selector, domain)
    answer = facts.get(question)
    if answer.status == Status.TEMPERROR:
        detail = f" ({answer.detail})" if answer.detail else ""
        return KeyProblem(Result.TEMPERROR, f"key lookup for {name}: DNS temporary error{detail}")
    if answer.status == Status.ABSENT or not answer.records:
        detail = f" ({answer.detail})" if answer.detail else ""
        return KeyProblem(Result.PERMERROR, f"no key for signature at {name}{detail}")
    problems: list[KeyProblem] = []
    for record in answer.records:
        parsed = parse_key_record(record)
        if isinstance(parsed, KeyRecord):
            return parsed   # RFC 6376 §3.6.2.2: use the first usable record
        problems.append(parsed)
    return problems[0]
