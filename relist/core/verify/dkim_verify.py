"""Verify one DKIM-Signature (RFC 6376, RFC 8301, RFC 8463) and say precisely why.

relist classifies, canonicalizes (relist.core.dkim) and checks with OpenSSL.  The order:

1. parse the tag list ourselves (§3.2, §3.5): malformed, duplicate or missing
   required tags are ``permerror``; an algorithm, canonicalization or query method
   relist does not implement is ``neutral`` (§3.5, §6.1.1: verifiers ignore them);
2. times against ``now`` (not the wall clock): x= in the past or t= in the future
   is ``permerror`` (§6.1.1);
3. the key from the DNS facts: a temporary DNS error is ``temperror`` and nothing is
   hashed (§6.1.2 TEMPFAIL); no key, a revoked key (empty p=), an unusable
   key, or a key whose k=, h=, s= or t=s forbid this signature is ``permerror``;
4. body hash, then the header hash, both over relist.core.dkim.canon (the one parse,
   selection and canonicalization the signer and the guard use too; dkimpy's results,
   tests/test_canon*.py), so a changed body is told apart from changed header fields;
   the public-key check is OpenSSL's (through ``cryptography``), with the key the key
   record already holds (``KeyRecord.public_key``: no second parse of p=);
5. RFC 8301: rsa-sha1 (§3.1) and RSA keys under ``min_key_bits`` (§3.2) ``fail``
   even when the crypto holds; the reason says so.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from dataclasses import dataclass

import dkim as dkimpy
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from relist.core.verify.key_records import KeyProblem, KeyRecord, lookup_key
from relist.core.verify.results import Result, SignatureResult
from relist.core.dkim import canon
from relist.core.dkim.canon import BodyMemo, Canon
from relist.core.dkim.tags import TagError, b_chars, parse_tags, strip_ws, valid_domain
from relist.core.facts import Facts
from relist.core.memo import small_lru_cache
from relist.core.message import RawMessage

__all__ = ["CLOCK_SKEW", "Checker", "body_hash", "open_message", "signature_question",
           "verify_signature"]

CLOCK_SKEW = 300            # seconds of leeway for t= and x= against ``now``
REQUIRED = ("v", "a", "b", "bh", "d", "h", "s")   # RFC 6376 §3.5
ALGORITHMS = {"rsa-sha256": ("rsa", "sha256"), "ed25519-sha256": ("ed25519", "sha256"),
              "rsa-sha1": ("rsa", "sha1")}
_B64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")
_QP = re.compile(r"=([0-9A-Fa-f]{2})")
_DIGITS_12 = re.compile(r"\d{1,12}")
_DIGITS_76 = re.compile(r"\d{1,76}")
_HASHERS = canon.HASHERS
_PREHASHED = {"sha256": Prehashed(hashes.SHA256()), "sha1": Prehashed(hashes.SHA1())}


@dataclass(frozen=True, slots=True)
class Checker:
    """What verifying a signature may consult besides the signature itself."""

    facts: Facts
    now: int                   # seconds since the epoch (from ``ctx.now``)
    min_key_bits: int = 1024
    dkim: dkimpy.DKIM | None = None   # ``open_message``: the message's fields and body, or None
    dkim_error: str = ""       # why the message could not be read
    memo: BodyMemo | None = None   # the body's hashes, shared (``RawMessage.body_memo``)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _safe(value: str, limit: int = 80) -> str:
    """For reasons and display: printable, bounded."""
    value = value[:limit]
    if value.isprintable():
        return value
    return "".join(ch if ch.isprintable() else "?" for ch in value)


def _qp_decode(value: str) -> str:
    """dkim-quoted-printable (RFC 6376 §2.11), used by i=."""
    value = strip_ws(value)
    if "=" not in value:
        return value
    return _QP.sub(lambda m: chr(int(m.group(1), 16)), value)


def body_hash(body: bytes, canonicalization: str, hash_name: str, length: int | None,
              memo: BodyMemo | None = None) -> tuple[bytes, int]:
    """bh= for ``body`` (RFC 6376 §3.7) and the canonical body's length; ``memo``: the
    body's ``BodyMemo`` (its ``body`` is then the one hashed)."""
    c_body = canonicalization.partition("/")[2] or "simple"
    if c_body not in ("simple", "relaxed"):
        raise ValueError(f"c={canonicalization}")
    return (memo or BodyMemo(body)).digest(c_body, hash_name, length)


@small_lru_cache(256, 64)
def _canon(c: str) -> str | None:
    """c= with the defaults filled in (§3.5: simple/simple; one value: body simple)."""
    header, _, body = (c or "simple/simple").lower().partition("/")
    body = body or "simple"
    if header not in ("simple", "relaxed") or body not in ("simple", "relaxed"):
        return None
    return f"{header}/{body}"


@small_lru_cache(256, 4096)
def signature_question(value: bytes) -> tuple[str, str] | None:
    """(selector, domain) to look the key up under, if the tags allow it (memoized:
    each planning round and the verify step ask it of the same field)."""
    try:
        tags = parse_tags(value)
    except TagError:
        return None
    d, s = valid_domain(tags.get("d", "")), valid_domain(tags.get("s", ""))
    if not d or not s:
        return None
    return s, d


def verify_signature(value: bytes, index: int, checker: Checker, *, kind: str = "dkim"
                     ) -> SignatureResult:
    """Verify the ``index``-th DKIM-Signature (top first) whose value is ``value``."""

    def done(result: Result, reason: str, **more) -> SignatureResult:
        fields = {**partial, **more}
        if "b" not in fields and tags is not None:
            # Before b= is checked (and kept whole): its base64 characters, bounded.
            fields["b"] = b_chars(tags.get("b", ""))[:1024]
        return SignatureResult(kind=kind, result=result, reason=reason, index=index, **fields)

    partial: dict = {}
    tags = None
    try:
        tags = parse_tags(value)
    except TagError as exc:
        return done(Result.PERMERROR, f"malformed tag list: {_safe(str(exc))}")
    partial = {
        "domain": _safe(tags.get("d", ""), 255).lower(),
        "selector": _safe(tags.get("s", ""), 255),
        "algorithm": _safe(tags.get("a", ""), 40).lower(),
    }
    for tag in REQUIRED:
        if tag not in tags:
            return done(Result.PERMERROR, f"missing required tag {tag}=")
    if tags["v"] != "1":
        return done(Result.PERMERROR, f"incompatible version v={_safe(tags['v'], 10)} (RFC 6376 §6.1.1)")
    algorithm = partial["algorithm"]
    if algorithm not in ALGORITHMS:
        return done(Result.NEUTRAL, f"unsupported algorithm a={_safe(algorithm, 40)}")
    key_type, hash_name = ALGORITHMS[algorithm]
    canonicalization = _canon(tags.get("c", ""))
    if canonicalization is None:
        return done(Result.NEUTRAL, f"unsupported canonicalization c={_safe(tags.get('c', ''), 40)}")
    partial["canonicalization"] = canonicalization
    q = tags.get("q", "dns/txt")
    if q != "dns/txt" and "dns/txt" not in [m.strip(" \t\r\n").lower() for m in q.split(":")]:
        return done(Result.NEUTRAL, f"unsupported query method q={_safe(tags.get('q', ''), 40)}")
    headers = tuple([h.strip(" \t\r\n").lower() for h in tags["h"].split(":")])
    if max(map(len, headers)) <= 80 and "".join(headers).isprintable():
        partial["headers"] = headers        # what _safe would give: printable, short
    else:
        partial["headers"] = tuple([_safe(h, 80) for h in headers])
    b, bh = strip_ws(tags["b"]), strip_ws(tags["bh"])
    if not b or not _B64.match(b) or len(b) % 4:
        return done(Result.PERMERROR, "b= is not valid base64")
    if not bh or not _B64.match(bh) or len(bh) % 4:
        return done(Result.PERMERROR, "bh= is not valid base64")
    partial["b"] = b
    domain = valid_domain(tags["d"])
    if domain is None:
        return done(Result.PERMERROR, f"invalid d= domain {_safe(tags['d'], 60)!r}")
    selector = valid_domain(tags["s"])
    if selector is None:
        return done(Result.PERMERROR, f"invalid s= selector {_safe(tags['s'], 60)!r}")
    partial["domain"], partial["selector"] = domain, selector
    identity = _qp_decode(tags.get("i", "")) if "i" in tags else f"@{domain}"
    partial["identity"] = _safe(identity, 255)
    auid_domain = identity.rpartition("@")[2].lower().rstrip(".")
    if "@" not in identity or not (auid_domain == domain or auid_domain.endswith("." + domain)):
        return done(Result.PERMERROR, "i= domain is not d= or a subdomain of it (RFC 6376 §3.5)")
    if "from" not in headers:
        return done(Result.PERMERROR, "h= does not include From (RFC 6376 §5.4)")
    length = None
    if "l" in tags:
        if not _DIGITS_76.fullmatch(tags["l"]):
            return done(Result.PERMERROR, "l= is not a decimal number")
        length = int(tags["l"])
        partial["body_length"] = length
    times = {}
    for tag in ("t", "x"):
        if tag in tags:
            if not _DIGITS_12.fullmatch(tags[tag]):
                return done(Result.PERMERROR, f"{tag}= is not a decimal number of at most 12 digits")
            times[tag] = int(tags[tag])
    partial["timestamp"], partial["expiration"] = times.get("t"), times.get("x")
    if "t" in times and "x" in times and times["x"] < times["t"]:
        return done(Result.PERMERROR, "x= is before t= (RFC 6376 §3.5)")
    if "x" in times and times["x"] < checker.now - CLOCK_SKEW:
        return done(Result.PERMERROR, f"signature expired (x={times['x']}, {checker.now - times['x']} s ago)")
    if "t" in times and times["t"] > checker.now + CLOCK_SKEW:
        return done(Result.PERMERROR, f"signature timestamp in the future (t={times['t']})")

    # -- the key (RFC 6376 §6.1.2) ------------------------------------------------
    key = lookup_key(checker.facts, selector, domain)
    if isinstance(key, KeyProblem):
        return done(key.result, key.reason)     # temperror: nothing is hashed
    partial["key_bits"], partial["key_testing"] = key.bits, key.testing
    if key.k != key_type:
        return done(Result.PERMERROR, f"key type k={key.k} does not match a={algorithm}")
    if key.hashes and hash_name not in key.hashes:
        return done(Result.PERMERROR, f"key h={':'.join(key.hashes)} does not allow {hash_name}")
    if key.strict and auid_domain != domain:
        return done(Result.PERMERROR, "key has t=s but the i= domain is a subdomain of d=")

    # -- body hash, then the header signature --------------------------------------
    opened = checker.dkim
    if opened is None:
        return done(Result.PERMERROR, f"message could not be read: {checker.dkim_error}")
    body_ok, header_ok, detail = _crypto(checker, opened, index, tags, canonicalization, hash_name,
                                         length, key, headers, partial, b, bh)
    if detail:
        return done(Result.PERMERROR, detail)
    notes = []
    if length is not None:
        total = partial.get("body_total")
        notes.append(f"l={length} covers {min(length, total or 0)} of {total} body octets")
    if key.testing:
        notes.append("key in testing mode (t=y)")
    if body_ok is False and header_ok is False:
        return done(Result.FAIL, "; ".join(["body hash and header signature mismatch"] + notes))
    if body_ok is False:
        return done(Result.FAIL, "; ".join(["body hash mismatch (the body changed)"] + notes))
    if header_ok is False:
        return done(Result.FAIL, "; ".join(
            ["signature did not verify (signed header fields changed)"] + notes))
    if algorithm == "rsa-sha1":
        return done(Result.FAIL, "; ".join(
            ["rsa-sha1 is not accepted (RFC 8301 §3.1); the signature itself verifies"] + notes))
    if key.k == "rsa" and key.bits < checker.min_key_bits:
        return done(Result.FAIL, "; ".join(
            [f"key too small: {key.bits}-bit RSA, at least {checker.min_key_bits} required "
             "(RFC 8301 §3.2)"] + notes))
    if length is not None and partial.get("body_total") is not None and length > partial["body_total"]:
        return done(Result.PERMERROR, f"l={length} is longer than the canonical body "
                                      f"({partial['body_total']} octets)")
    return done(Result.PASS, "; ".join([f"{key.bits}-bit key"] + notes))


def _crypto(checker: Checker, opened: dkimpy.DKIM, index: int, tags: dict[str, str], canonicalization: str,
            hash_name: str, length: int | None, key: KeyRecord, headers: tuple[str, ...],
            partial: dict, b: str, bh: str) -> tuple[bool | None, bool | None, str]:
    """(body_hash_ok, header_hash_ok, error) of ``opened`` (``checker.dkim``); ``b`` and
    ``bh`` are the tags' values without white space, checked as base64."""
    memo = checker.memo if checker.memo is not None and checker.memo.body is opened.body else None
    digest, total = body_hash(opened.body, canonicalization, hash_name, length, memo)
    partial["body_total"] = total
    body_ok = digest == base64.b64decode(bh)
    partial["body_hash_ok"] = body_ok
    sig_fields = [(x, y) for x, y in opened.headers if x.lower() == b"dkim-signature"]
    if index >= len(sig_fields):
        return body_ok, None, "signature field not found in the parsed message"
    sig = {b"b": b.encode("ascii"), b"c": canonicalization.encode("ascii")}
    include = [h.encode("utf-8", "surrogateescape") for h in headers]
    try:
        public = key.public_key          # RSA exactly when k=rsa (key_records)
        if isinstance(public, rsa.RSAPublicKey):
            header_ok = _rsa_header_ok(opened, sig, include, sig_fields[index], hash_name, public)
        else:
            data = _signed_input(opened.headers, sig, include, sig_fields[index])
            public.verify(base64.b64decode(b), _HASHERS[hash_name](data).digest())
            header_ok = True
    except (InvalidSignature, binascii.Error, ValueError):
        # e.g. a b= of the wrong length for the key: it does not verify.  (Not TypeError:
        # that is a bug, which the step's safety net records, not a failed signature.)
        header_ok = False
    partial["header_hash_ok"] = header_ok
    return body_ok, header_ok, ""


def _signed_input(headers, sig: dict, include: list[bytes], sig_field) -> bytes:
    """What the header hash covers (dkimpy's ``hash_headers``): the fields h= selects,
    From once more than h= names it (dkimpy's rule, its bug#644046), canonical, then the
    signature field with b= emptied and no trailing CRLF.  ``headers`` and ``sig_field``
    as dkimpy keeps them, [name, value] lists: canon takes (name, value) tuples."""
    if b"from" in include:
        include = include + [b"from"]
    policy = Canon.from_c(sig[b"c"].decode("ascii"))     # c= checked by _canon
    fields = [(name, value) for name, value in headers]
    return policy.signed_input(canon.select(fields, tuple(include)), (sig_field[0], sig_field[1]))


@functools.lru_cache(maxsize=1024)
def _rsa_public_key(n: int, e: int):
    """The OpenSSL key for a key dkimpy parsed (cached; what the tests give _rsa_header_ok)."""
    return rsa.RSAPublicNumbers(e, n).public_key()


def _rsa_header_ok(opened, sig: dict, include: list[bytes], sig_field, hash_name: str,
                   public=None) -> bool:
    """dkimpy's ``verify_sig_process`` header part (``_signed_input``), with the
    RSASSA-PKCS1-v1_5 check done by OpenSSL with ``public`` (None: ``opened.pk``, a
    dkimpy key, as the tests give it)."""
    if public is None:
        try:
            public = _rsa_public_key(opened.pk["modulus"], opened.pk["publicExponent"])
        except (ValueError, TypeError, UnsupportedAlgorithm):
            return bool(opened.verify_sig_process(sig, include, sig_field, None))
    h = _HASHERS[hash_name](_signed_input(opened.headers, sig, include, sig_field))
    # b= is the tag's value without white space, checked as base64 (verify_signature).
    signature = base64.b64decode(sig[b"b"])
    size = (public.key_size + 7) // 8
    if len(signature) > size:
        return False
    try:
        # A signature with leading zero octets may arrive shortened; RSA-wise it is the
        # same integer (dkimpy compares integers too).
        public.verify(signature.rjust(size, b"\0"), h.digest(), padding.PKCS1v15(), _PREHASHED[hash_name])
        return True
    except InvalidSignature:
        return False


def open_message(raw: bytes | RawMessage) -> tuple[dkimpy.DKIM | None, str]:
    """The message's fields (as lists) and CRLF body (``.headers``, ``.body``), or None
    and why it cannot be read.  A ``RawMessage`` is taken as split when that split is
    the one ``canon.parse`` makes of its bytes (no copy of the message is made)."""
    try:
        if not raw:
            return dkimpy.DKIM(b"", minkey=0), ""
        split = raw.dkim_split() if isinstance(raw, RawMessage) else None
        if split is None:
            headers, body = canon.parse(raw.to_bytes() if isinstance(raw, RawMessage) else raw)
        else:
            headers, body, _ = split
        opened = dkimpy.DKIM(None, logger=_DKIMPY_LOG, minkey=0)
        opened.headers, opened.body = [list(h) for h in headers], body
        return opened, ""
    except canon.MessageFormatError as exc:
        return None, _safe(str(exc))
    except dkimpy.DKIMException as bad:   # (not `exc`: compiled, one name has one type)
        return None, _safe(str(bad))


# dkimpy's own logger, as DKIM() would look it up (logging.getLogger) on every call.
_DKIMPY_LOG = dkimpy.util.get_default_logger()
