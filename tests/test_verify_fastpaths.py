"""The verify step's fast paths agree with the slow paths they replace.

relist.core.verify reimplements, for speed, a few pieces of dkimpy (its message parse,
its b= removal regex, relaxed canonicalization, header selection) and of its own
earlier code (``_safe``, ``strip_ws``, ``parse_tags``).  Each is compared here with
the original on varied inputs: clean, folded, bare CR or LF, NUL, 8-bit, control
characters, malformed; fixed seeds, so a failure names a reproducible input.
"""

from __future__ import annotations

import functools
import hashlib
import random
import re

import dkim
import pytest
from dkim.canonicalization import CanonicalizationPolicy, Relaxed

from relist.core.verify import Result, verify_message
from relist.core.verify import dkim_verify as auth_dkim
from relist.core.dkim import canon
from relist.core.dkim.tags import TagError, parse_tags, strip_ws
from relist.core.message import RawMessage
from tests.verify_support import MESSAGE, NOW, facts, public_record, rsa_key, sign

KEY = "sel._domainkey.example.com"


def _outcome(fn, *args):
    """What ``fn`` gives: ("ok", value) or ("raises", type name, message)."""
    try:
        return ("ok", fn(*args))
    except Exception as exc:   # noqa: BLE001 - the exception is the outcome compared
        return ("raises", type(exc).__name__, str(exc))


# -- the message parse (dkimpy's rfc822_parse) --------------------------------------

BASE = (b"Received: from a by b\r\nFrom: Alice <alice@example.com>\r\nTo: b@example.org\r\n"
        b"Subject: hello\r\n\tfolded  twice\r\n more\r\n\r\nbody line 1\r\n\r\nline 3  \r\n")
MESSAGES = {
    "clean": BASE,
    "lf-only": BASE.replace(b"\r\n", b"\n"),
    "lf-body": BASE.replace(b"line 3  \r\n", b"line 3\nline 4\n"),
    "lf-header": BASE.replace(b"To: b@example.org\r\n", b"To: b@example.org\n"),
    "bare-cr": BASE.replace(b"hello", b"hel\rlo").replace(b"body", b"bo\rdy"),
    "cr-cr-lf": BASE.replace(b"Subject: hello\r\n", b"Subject: hello\r\r\n"),
    "cr-only-line": BASE.replace(b"To: b@example.org\r\n", b"To: b@example.org\r\n\r\r\n"),
    "leading-empty-line": b"\r\n" + BASE,
    "leading-lf": b"\n" + BASE,
    "leading-continuation": b" x\r\n" + BASE,
    "mbox-from-line": b"From alice@example.com Sat Jun  1 11:00:00 2024\r\n" + BASE,
    "from-line-then-continuation": b"From x\r\n cont\r\n" + BASE,
    "space-before-colon": BASE.replace(b"To:", b"To :"),
    "no-colon": BASE.replace(b"To: b@example.org", b"To b@example.org"),
    "colon-first": BASE.replace(b"To:", b":To:"),
    "double-colon": BASE.replace(b"To:", b"To::"),
    "8bit-name": BASE.replace(b"To:", b"T\xc3\xb6:"),
    "8bit-value": BASE.replace(b"hello", "h\u00e9llo".encode()),
    "nul-value": BASE.replace(b"hello", b"he\0llo"),
    "no-empty-line": BASE.split(b"\r\n\r\n")[0],
    "no-empty-line-final-crlf": BASE.split(b"\r\n\r\n")[0] + b"\r\n",
    "no-empty-line-final-lf": BASE.split(b"\r\n\r\n")[0] + b"\n",
    "header-only-empty-body": BASE.split(b"\r\n\r\n")[0] + b"\r\n\r\n",
    "empty-line-then-lf": BASE.split(b"\r\n\r\n")[0] + b"\r\n\n",
    "crlfcrlf-in-body-only-after-lf": BASE.replace(b"\r\n\r\nbody", b"\n\nbody\r\n\r\n"),
    "ws-only-continuation": BASE.replace(b" more\r\n", b" \r\n\t\r\n"),
    "trailing-ws-name": BASE.replace(b"To:", b"To\t:"),
    "single-line": b"Subject: x",
    "empty-value": BASE.replace(b"To: b@example.org", b"To:"),
}


def _pieces(rng: random.Random) -> bytes:
    parts = [b"From: a@b\r\n", b"To: x\r\n", b"Subject: s\r\n", b" cont\r\n", b"\tcont\r\n",
             b"X-A:v\n", b"X-B: \r\r\n", b"\r\n", b"\n", b"bad line\r\n", b"From mbox\r\n",
             b"X-C: a\rb\r\n", b"X-D: \0\r\n", b"body\r\n", b"body\n", b" \r\n", b":x\r\n",
             b"X-E: \xff\r\n", b"\r", b"X-F: tail"]
    return b"".join(rng.choice(parts) for _ in range(rng.randint(0, 12)))



def _rfc822_parse(raw: bytes) -> tuple[list, bytes]:
    """``canon.parse`` (the verifier's parse) in dkimpy's ``rfc822_parse`` shape: fields
    as lists, a continuation line before the first field an IndexError."""
    try:
        headers, body = canon.parse(raw)
    except canon.MessageFormatError as exc:
        if "continuation" in str(exc):
            raise IndexError("list index out of range") from None
        raise
    return [list(h) for h in headers], body


@functools.lru_cache(maxsize=64)
def _evaluate_pk(name: str, k: str, p: str) -> tuple:
    """dkimpy's ``evaluate_pk`` (the key dkimpy's own header check uses), cached."""
    pk, keysize, ktag, _tlsrpt = dkim.evaluate_pk(name, f"k={k}; p={p}".encode("ascii"))
    return pk, keysize, ktag

def _fuzz_messages(n: int, seed: int):
    rng = random.Random(seed)
    return [_pieces(rng) for _ in range(n)]


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_parse_agrees_with_dkimpy(name):
    raw = MESSAGES[name]
    assert _outcome(_rfc822_parse, raw) == _outcome(dkim.rfc822_parse, raw)


def test_parse_agrees_with_dkimpy_on_random_messages():
    fast_taken = 0
    for raw in _fuzz_messages(3000, seed=6376):
        theirs = _outcome(dkim.rfc822_parse, raw)
        assert _outcome(_rfc822_parse, raw) == theirs, raw
        fast_taken += raw.find(b"\r\n\r\n") > 0 and theirs[0] == "ok"
    assert fast_taken > 100      # the CRLF fast path was exercised, not only the fallback


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_open_message_builds_what_dkimpy_builds(name):
    raw = MESSAGES[name]
    try:
        theirs = dkim.DKIM(raw, minkey=0)
    except dkim.DKIMException as exc:
        signer, error = auth_dkim.open_message(raw)
        assert signer is None and error == auth_dkim._safe(str(exc))
        return
    except IndexError:
        # dkimpy crashes on a continuation line before the first field; relist reads
        # that as a message it cannot verify (a permerror, not an internal error).
        signer, error = auth_dkim.open_message(raw)
        assert signer is None and "continuation line" in error
        return
    signer, error = auth_dkim.open_message(raw)
    assert error == ""
    assert (signer.headers, signer.body) == (theirs.headers, theirs.body)
    assert {k: v for k, v in vars(signer).items() if k not in ("headers", "body")} == \
        {k: v for k, v in vars(theirs).items() if k not in ("headers", "body")}


# -- b= removal, relaxed canonicalization, body hash ---------------------------------

def _fuzz_bytes(rng: random.Random, alphabet, n: int) -> bytes:
    return b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, n)))


def test_btag_removal_agrees_with_dkimpy():
    rng = random.Random(8617)
    alphabet = [b";", b" ", b"\t", b"\r", b"\n", b"\r\n", b"b", b"h", b"=", b"a", b"Z", b"+",
                b"/", b"0", b"-", b"\x0b", b"\x0c", b"\xff", b"b=", b"; b=", b" b =", b"bh="]
    values = [_fuzz_bytes(rng, alphabet, 30) for _ in range(20000)]
    signed = sign(MESSAGE, c="simple/simple")
    own = dkim.rfc822_parse(signed)[0][0][1]
    values += [own, own.replace(b"\r\n ", b"\r\n\t"), own.replace(b"; ", b";\r\n  "),
               own.rstrip(b"\r\n"), own + b"\r\n", own.replace(b" b=", b" b = ")]
    changed = 0
    for v in values:
        ours, theirs = canon._BTAG.sub(b"\\1", v), dkim.RE_BTAG.sub(b"\\1", v)
        assert ours == theirs, v
        changed += ours != v
    assert changed > 1000


def test_relaxed_headers_agree_with_dkimpy():
    rng = random.Random(6376)
    alphabet = [b"a", b"B", b" ", b"  ", b"\t", b"\r\n", b"\n", b"\r", b"\r\n\t", b"\0", b";",
                b"\xff", b"\x0b", b"\x0c"]
    names = [b"From", b"X-Tag ", b"SUBJECT", b"to\t", b"Dkim-Signature"]
    for _ in range(3000):
        fields = [(rng.choice(names), _fuzz_bytes(rng, alphabet, 12))
                  for _ in range(rng.randint(0, 6))]
        assert canon.relaxed_headers(fields) == Relaxed.canonicalize_headers(fields), fields


def test_relaxed_body_and_body_hash_agree_with_dkimpy():
    rng = random.Random(4871)
    alphabet = [b"text", b" ", b"  ", b"\t", b"\r\n", b" \r\n", b"\t\r\n", b"\r\n\r\n", b"\n",
                b"\r", b"\0", b"\xff"]
    bodies = [_fuzz_bytes(rng, alphabet, 20) for _ in range(2000)]
    bodies += [b"", b"\r\n", b"\r\n\r\n", b" \r\n", b"a", b"a  b\t\tc \r\n\r\n"]
    for body in bodies:
        assert canon.relaxed_body(body) == Relaxed.canonicalize_body(body), body
        for c in ("simple/simple", "relaxed/relaxed", "simple/relaxed", "relaxed/simple"):
            theirs = CanonicalizationPolicy.from_c_value(c.encode()).canonicalize_body(body)
            for length in (None, 0, 3):
                want = hashlib.sha256(theirs if length is None else theirs[:length])
                assert auth_dkim.body_hash(body, c, "sha256", length) == \
                    (want.digest(), len(theirs)), (body, c, length)


# -- the header check against dkimpy's verify_sig_process ----------------------------

SIGNED_FIELDS = (b"Received: from a\r\nX-Tag: one\r\nFrom: Alice <alice@example.com>\r\n"
                 b"X-Tag: two\r\nSubject:   spaced \t value \r\n\tfolded\r\nTo: b@example.org\r\n"
                 b"X-Tag: three\r\nDate: Sat, 1 Jun 2024 11:00:00 +0000\r\n\r\nbody\r\n")
H = ("from", "x-tag", "x-tag", "subject", "to", "received", "absent", "x-tag", "x-tag")
MUTATIONS = {
    "none": lambda m: m,
    "refold": lambda m: m.replace(b"value \r\n\tfolded", b"value\r\n  folded"),
    "unfold": lambda m: m.replace(b"value \r\n\tfolded", b"value folded"),
    "inner-space": lambda m: m.replace(b"spaced \t value", b"spaced value"),
    "name-case": lambda m: m.replace(b"Subject:", b"SUBJECT:").replace(b"X-Tag: two", b"x-tag: two"),
    "trailing-space": lambda m: m.replace(b"b@example.org\r\n", b"b@example.org \r\n"),
    "extra-from-bottom": lambda m: m.replace(b"\r\n\r\nbody",
                                             b"\r\nFrom: Mallory <m@evil.example>\r\n\r\nbody"),
    "extra-tag-top": lambda m: b"X-Tag: zero\r\n" + m,
    "swap-tags": lambda m: m.replace(b"X-Tag: one", b"X-Tag: tmp").replace(b"X-Tag: three", b"X-Tag: one")
    .replace(b"X-Tag: tmp", b"X-Tag: three"),
    "drop-received": lambda m: re.sub(rb"Received: from a\r\n", b"", m),
    "add-absent": lambda m: m.replace(b"\r\n\r\nbody", b"\r\nAbsent: now present\r\n\r\nbody"),
    "lf-endings": lambda m: m.replace(b"\r\n", b"\n"),
    "nul-in-value": lambda m: m.replace(b"spaced", b"spa\0ced"),
    "refold-signature": lambda m: m.replace(b";\r\n", b"; \r\n\t", 2),
    "body-changed": lambda m: m.replace(b"body\r\n", b"body!\r\n"),
}


def _sig_dict(raw: bytes):
    theirs = dkim.DKIM(raw, minkey=0)
    field = next((x, y) for x, y in theirs.headers if x.lower() == b"dkim-signature")
    tags = dkim.util.parse_tag_value(field[1])
    sig = {b"a": tags[b"a"], b"b": re.sub(rb"\s+", b"", tags[b"b"]), b"c": tags[b"c"]}
    include = [h.strip().lower() for h in tags[b"h"].split(b":")]
    return theirs, field, sig, include


@pytest.mark.parametrize("c", ["relaxed/relaxed", "simple/simple", "relaxed/simple", "simple/relaxed"])
def test_header_check_agrees_with_dkimpy(c):
    raw = sign(SIGNED_FIELDS, c=c, h=H)
    record = public_record(rsa_key())
    seen = set()
    for name, mutate in MUTATIONS.items():
        variant = mutate(raw)
        theirs, field, sig, include = _sig_dict(variant)
        key = _evaluate_pk(KEY, "rsa", strip_ws(parse_tags(record)["p"]))
        theirs.pk, theirs.keysize, theirs.ktag = key
        want = bool(theirs.verify_sig_process(dict(sig), list(include), field, None))
        signer, error = auth_dkim.open_message(variant)
        signer.pk, signer.keysize, signer.ktag = key
        sig_field = next((x, y) for x, y in signer.headers if x.lower() == b"dkim-signature")
        got = auth_dkim._rsa_header_ok(signer, dict(sig), list(include), sig_field, "sha256")
        assert got == want, name
        # and through the whole verification: the same answer on the header hash
        result = verify_message(RawMessage.parse(variant), facts({KEY: record}), NOW).dkim[0]
        assert result.header_hash_ok == want, (name, result.reason)
        seen.add(want)
    assert seen == {True, False}


# -- relist's own helpers against their earlier, plain forms --------------------------

def _safe_plain(value: str, limit: int = 80) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in value)[:limit]


def _parse_tags_plain(raw):
    """parse_tags as it was before its fast path (the reference)."""
    text = raw.decode("utf-8", "surrogateescape") if isinstance(raw, bytes) else raw
    out = {}
    for part in text.split(";"):
        if not part.strip(" \t\r\n"):
            continue
        name, eq, value = part.partition("=")
        name = name.strip(" \t\r\n")
        if not eq:
            raise TagError(f"tag {name[:20]!r} has no '='")
        if not re.match(r"^[A-Za-z][A-Za-z0-9_]*$", name):
            raise TagError(f"invalid tag name {name[:20]!r}")
        if name in out:
            raise TagError(f"duplicate tag {name}=")
        out[name] = value.strip(" \t\r\n")
    return out


def test_safe_strip_ws_and_parse_tags_agree_with_their_plain_forms():
    rng = random.Random(8463)
    alphabet = ["a", "Z", "0", " ", "\t", "\r", "\n", "\x0b", "\x00", "\x7f", "\u00e9", "\u2028",
                "\udcff", ";", "=", "b", "bh", "v", "1", "_", "-", ":", "\u00a0"]
    for _ in range(5000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        for limit in (0, 5, 80):
            assert auth_dkim._safe(s, limit) == _safe_plain(s, limit), s
        assert strip_ws(s) == re.sub(r"[ \t\r\n]+", "", s), s
        assert _outcome(parse_tags, s) == _outcome(_parse_tags_plain, s), s
        assert _outcome(parse_tags, s.encode("utf-8", "surrogateescape")) == \
            _outcome(_parse_tags_plain, s.encode("utf-8", "surrogateescape")), s


# -- caches follow their inputs -------------------------------------------------------

def test_key_and_dmarc_caches_follow_the_dns_answers():
    """parse_key_record and the DMARC record reader are cached by their text: a new
    key or policy at the same name is read afresh, the old one is not reused."""
    raw = sign(MESSAGE)
    good, other = public_record(rsa_key()), public_record(rsa_key(tag="other"))
    for record, want in ((good, Result.PASS), (other, Result.FAIL), (good, Result.PASS)):
        v = verify_message(RawMessage.parse(raw), facts({KEY: record}), NOW)
        assert v.dkim[0].result == want, v.dkim[0].reason
    seen = []
    for policy in ("v=DMARC1; p=reject", "v=DMARC1; p=none", "v=DMARC1; p=reject; sp=none",
                   "v=DMARC1; p=bogus", "v=DMARC1; p=reject"):
        v = verify_message(RawMessage.parse(raw.replace(b"this is a test", b"changed")),
                           facts({KEY: good, "_dmarc.example.com": policy, "_dmarc.com": None}), NOW)
        seen.append((v.dmarc.result, v.dmarc.policy, v.dmarc.record))
    assert seen == [("fail", "reject", "v=DMARC1; p=reject"), ("fail", "none", "v=DMARC1; p=none"),
                    ("fail", "reject", "v=DMARC1; p=reject; sp=none"),
                    ("none", "", "v=DMARC1; p=bogus"), ("fail", "reject", "v=DMARC1; p=reject")]


def test_leading_continuation_line_is_a_permerror_not_a_crash():
    raw = b" stray continuation\r\n" + sign(MESSAGE)
    results = verify_message(RawMessage.parse(raw), facts({KEY: public_record(rsa_key())}), NOW).dkim
    assert [r.result for r in results] == [Result.PERMERROR]
    assert "continuation line comes before the first header field" in results[0].reason
