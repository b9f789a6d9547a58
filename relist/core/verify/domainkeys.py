"""DomainKeys (RFC 4870, historic): recognise and verify DomainKey-Signature.

Informational only: a DomainKeys result never makes a message fail anything (no
modern receiver evaluates it, and rsa-sha1 is historic, RFC 8301).  It is verified
so that a postmaster can see what arrived.  Rules (RFC 4870 §3.3, §3.4):

- only header fields *below* the signature are covered; with h=, only the named
  ones (each named field: every occurrence below the signature);
- canonicalization ``simple`` (lines as they are) or ``nofws`` (all SP, HTAB, CR,
  LF removed from each unfolded line, CRLF added); in the body, trailing empty
  lines are dropped, and the empty line between header and body starts the body;
- rsa-sha1 over header fields + body; the signing domain must be the domain of
  the Sender field if one is signed, else of the From field, or a parent of it.
"""

from __future__ import annotations

import base64
import binascii
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from relist.core.addresses import mailboxes
from relist.core.verify.key_records import KeyProblem, lookup_key
from relist.core.verify.results import Result, SignatureResult
from relist.core.dkim.tags import TagError, parse_tags, strip_ws, valid_domain
from relist.core.facts import Facts
from relist.core.message import HeaderField, RawMessage

__all__ = ["FIELD", "canonical_data", "verify_domainkeys"]

FIELD = "domainkey-signature"
_WSP_ALL = re.compile(rb"[ \t\r\n]")


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _select(below: list[HeaderField], names: list[str] | None) -> list[HeaderField]:
    """The covered fields, in message order (Mail::DKIM's reading of RFC 4870 §3.3)."""
    if names is None:
        return below
    by_name: dict[str, list[HeaderField]] = {}
    for f in below:
        by_name.setdefault(f.name, []).append(f)
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    out: list[HeaderField] = []
    for n in reversed(names):
        counts[n] -= 1
        pool = by_name.get(n, [])
        if counts[n] > 0:
            if pool:
                out.insert(0, pool.pop())
        else:
            out[0:0] = pool
            by_name[n] = []
    return out


def _body(body: bytes, nofws: bool) -> bytes:
    text = b"\r\n" + _crlf(body)   # the separator line belongs to the body stream
    if nofws:
        text = re.sub(rb"[ \t]", b"", text)
        text = re.sub(rb"\r(?!\n)", b"", text)
        text = re.sub(rb"(?<!\r)\n", b"", text)
    if not text.replace(b"\r\n", b""):
        return b""                  # only empty lines: nothing
    while text.endswith(b"\r\n\r\n"):
        text = text[:-2]
    return text


def canonical_data(fields: list[HeaderField], body: bytes, nofws: bool) -> bytes:
    out = []
    for f in fields:
        line = _crlf(f.raw)
        if not line.endswith(b"\r\n"):
            line += b"\r\n"
        if nofws:
            line = _WSP_ALL.sub(b"", line) + b"\r\n"
        out.append(line)
    return b"".join(out) + _body(body, nofws)


def _identity(fields: list[HeaderField]) -> tuple[str, str]:
    for name in ("sender", "from"):
        for f in fields:
            if f.name == name:
                addrs = [a for _, a in mailboxes(f.text()) if "@" in a]
                if addrs:
                    return name, addrs[0]
    return "", ""


def verify_domainkeys(msg: RawMessage, facts: Facts, limit: int) -> tuple[SignatureResult, ...]:
    results = []
    positions = [i for i, f in enumerate(msg.fields) if f.name == FIELD]
    for index, pos in enumerate(positions):
        if index >= limit:
            results.append(SignatureResult("dk", Result.POLICY,
                                           f"not verified: over the limit of {limit} signatures",
                                           index=index))
            continue
        results.append(_verify_one(msg, pos, index, facts))
    return tuple(results)


def _verify_one(msg: RawMessage, pos: int, index: int, facts: Facts) -> SignatureResult:
    field = msg.fields[pos]
    info: dict = {}

    def done(result: Result, reason: str) -> SignatureResult:
        return SignatureResult("dk", result, reason + " (DomainKeys, historic: informational)",
                               index=index, **info)

    try:
        tags = parse_tags(field.text())
    except TagError as exc:
        return done(Result.PERMERROR, f"malformed tag list: {exc}")
    info["domain"] = tags.get("d", "")[:255].lower()
    info["selector"] = tags.get("s", "")[:255]
    info["algorithm"] = tags.get("a", "rsa-sha1").lower()[:40]
    for tag in ("b", "d", "s"):
        if tag not in tags:
            return done(Result.PERMERROR, f"missing required tag {tag}=")
    if info["algorithm"] != "rsa-sha1":
        return done(Result.NEUTRAL, f"unsupported algorithm a={info['algorithm']}")
    if "q" in tags and tags["q"].lower() != "dns":
        return done(Result.NEUTRAL, f"unsupported query method q={tags['q'][:40]}")
    canon = tags.get("c", "simple").lower()
    if canon not in ("simple", "nofws"):
        return done(Result.NEUTRAL, f"unsupported canonicalization c={canon[:40]}")
    info["canonicalization"] = canon
    domain, selector = valid_domain(tags["d"]), valid_domain(tags["s"])
    if not domain or not selector:
        return done(Result.PERMERROR, "invalid d= or s=")
    info["domain"], info["selector"] = domain, selector
    names = None
    if "h" in tags:
        names = [n.strip().lower() for n in tags["h"].split(":") if n.strip()]
        info["headers"] = tuple(names)
    try:
        signature = base64.b64decode(strip_ws(tags["b"]), validate=True)
    except (binascii.Error, ValueError):
        return done(Result.PERMERROR, "b= is not valid base64")
    info["b"] = strip_ws(tags["b"])
    covered = _select([f for f in msg.fields[pos + 1:] if f.name], names)
    which, address = _identity(covered)
    info["identity"] = address
    id_domain = address.rpartition("@")[2].lower().rstrip(">").strip()
    if not address or not (id_domain == domain or id_domain.endswith("." + domain)):
        return done(Result.PERMERROR,
                    f"signing domain {domain} is not the {which or 'From'} domain {id_domain or '(none)'}")
    key = lookup_key(facts, selector, domain)
    if isinstance(key, KeyProblem):
        return done(key.result, key.reason)
    info["key_bits"], info["key_testing"] = key.bits, key.testing
    public = key.public_key
    if key.k != "rsa" or not isinstance(public, rsa.RSAPublicKey):
        return done(Result.PERMERROR, f"key type k={key.k} cannot verify rsa-sha1")
    data = canonical_data(covered, msg.body, canon == "nofws")
    try:
        public.verify(signature, data, padding.PKCS1v15(), hashes.SHA1())
    except (InvalidSignature, ValueError):
        info["header_hash_ok"] = False
        return done(Result.FAIL, "signature did not verify")
    info["header_hash_ok"] = True
    return done(Result.PASS, f"{key.bits}-bit key")
