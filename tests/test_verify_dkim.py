"""DKIM verification: every result word and reason, over real signed bytes.

Keys are generated in the test run; signatures are made with dkimpy's own header
hashing (tests/verify_support.py), with fixed t= and x= so that results depend
on ``NOW`` only, never on the day the tests run."""

from __future__ import annotations

import re

import dkim
import pytest

from relist.core.verify import Result, verify_message
from relist.core.facts import Status
from relist.core.message import RawMessage
from tests.verify_support import (
    MESSAGE, NOW, T0, ed_key, facts, public_record, rsa_key, sign, small_rsa_key,
)

KEY = "sel._domainkey.example.com"


def verify(raw: bytes, dns: dict, **kw):
    return verify_message(RawMessage.parse(raw), facts(dns), NOW, **kw)


def one(raw: bytes, dns: dict, **kw):
    v = verify(raw, dns, **kw)
    assert len(v.dkim) == 1
    return v.dkim[0]


def test_pass_records_everything():
    s = one(sign(MESSAGE), {KEY: public_record(rsa_key())})
    assert (s.result, s.reason) == (Result.PASS, "2048-bit key")
    assert (s.domain, s.selector, s.algorithm, s.canonicalization) == (
        "example.com", "sel", "rsa-sha256", "relaxed/relaxed")
    assert s.headers == ("from", "to", "subject", "date", "message-id")
    assert (s.body_hash_ok, s.header_hash_ok, s.key_bits, s.timestamp) == (True, True, 2048, T0)
    assert s.identity == "@example.com" and len(s.b) > 100


@pytest.mark.parametrize("old,new,body_ok,header_ok,reason", [
    (b"this is a test", b"this is a TEST", False, True, "body hash mismatch"),
    (b"\r\nthis is a test.\r\n", b"\r\nthis is a test.\r\n-- \r\nfooter\r\n", False, True,
     "body hash mismatch"),
    (b"Subject: Hello list", b"Subject: [list] Hello list", True, False,
     "signature did not verify (signed header fields changed)"),
    (b"From: Alice Example <alice@example.com>", b"From: Alice via list <list@lists.example.org>",
     True, False, "signed header fields changed"),
])
def test_tampered_body_vs_header(old, new, body_ok, header_ok, reason):
    raw = sign(MESSAGE).replace(old, new)
    s = one(raw, {KEY: public_record(rsa_key())})
    assert s.result == Result.FAIL and reason in s.reason
    assert (s.body_hash_ok, s.header_hash_ok) == (body_ok, header_ok)


def test_body_and_header_both_changed():
    raw = sign(MESSAGE).replace(b"Hello list", b"Hi").replace(b"a test", b"a trial")
    s = one(raw, {KEY: public_record(rsa_key())})
    assert s.result == Result.FAIL and s.reason.startswith("body hash and header signature mismatch")


@pytest.mark.parametrize("c", ["simple/simple", "relaxed/simple", "simple/relaxed", "relaxed"])
def test_canonicalizations(c):
    s = one(sign(MESSAGE, c=c), {KEY: public_record(rsa_key())})
    assert s.result == Result.PASS
    assert s.canonicalization == (c if "/" in c else c + "/simple")


def test_relaxed_survives_refolding_simple_does_not():
    refold = (b"Subject: Hello list", b"Subject:   Hello\r\n  list")
    relaxed = one(sign(MESSAGE).replace(*refold), {KEY: public_record(rsa_key())})
    simple = one(sign(MESSAGE, c="simple/simple").replace(*refold), {KEY: public_record(rsa_key())})
    assert relaxed.result == Result.PASS
    assert simple.result == Result.FAIL and simple.header_hash_ok is False


def test_ed25519():
    s = one(sign(MESSAGE, ed_key()), {KEY: public_record(ed_key())})
    assert (s.result, s.algorithm, s.key_bits) == (Result.PASS, "ed25519-sha256", 256)
    bad = one(sign(MESSAGE, ed_key()).replace(b"Hello list", b"Bye"), {KEY: public_record(ed_key())})
    assert bad.result == Result.FAIL and bad.header_hash_ok is False


@pytest.mark.parametrize("bits,result,reason", [
    (1024, Result.PASS, "1024-bit key"),
    (512, Result.FAIL, "key too small: 512-bit RSA, at least 1024 required (RFC 8301 §3.2)"),
])
def test_key_size(bits, result, reason):
    key = rsa_key(bits) if bits >= 1024 else small_rsa_key(bits)
    s = one(sign(MESSAGE, key), {KEY: public_record(key)})
    assert (s.result, s.reason, s.key_bits) == (result, reason, bits)
    assert s.header_hash_ok is True   # the crypto holds; the size is the reason


def test_rsa_sha1_fails_per_rfc8301_even_when_valid():
    s = one(sign(MESSAGE, a="rsa-sha1"), {KEY: public_record(rsa_key())})
    assert s.result == Result.FAIL and "rsa-sha1 is not accepted (RFC 8301 §3.1)" in s.reason
    assert (s.body_hash_ok, s.header_hash_ok) == (True, True)


def test_key_testing_mode_is_recorded():
    s = one(sign(MESSAGE), {KEY: public_record(rsa_key(), "t=y; ")})
    assert s.result == Result.PASS and s.key_testing and "testing mode (t=y)" in s.reason


@pytest.mark.parametrize("x,t,result,reason", [
    (T0 + 86400, T0, Result.PASS, "2048-bit key"),
    (T0 + 60, T0, Result.PERMERROR, "signature expired"),          # NOW is T0 + 3600
    (T0 - 10, T0, Result.PERMERROR, "x= is before t="),
    (None, T0 + 7200, Result.PERMERROR, "timestamp in the future"),
    (None, T0 + 3600 + 200, Result.PASS, "2048-bit key"),            # within the clock skew
])
def test_times_against_ctx_now(x, t, result, reason):
    s = one(sign(MESSAGE, x=x, t=t), {KEY: public_record(rsa_key())})
    assert s.result == result and reason in s.reason


def test_key_lookup_temperror_never_calls_dkimpy(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("dkimpy must not be asked to verify without a key")
    monkeypatch.setattr(dkim.DKIM, "verify_sig_process", boom)
    monkeypatch.setattr(dkim, "evaluate_pk", boom)
    s = one(sign(MESSAGE), {KEY: Status.TEMPERROR})
    assert s.result == Result.TEMPERROR and "DNS temporary error (timeout)" in s.reason
    assert s.body_hash_ok is None and s.header_hash_ok is None


def test_unanswered_key_is_temperror():
    s = one(sign(MESSAGE), {})
    assert s.result == Result.TEMPERROR and "not resolved" in s.reason


@pytest.mark.parametrize("record,result,reason", [
    (None, Result.PERMERROR, "no key for signature at sel._domainkey.example.com (NXDOMAIN)"),
    (b"v=DKIM1; k=rsa; p=", Result.PERMERROR, "key revoked (empty p=)"),
    (b"v=DKIM1; k=rsa; p=!!!notbase64!!!", Result.PERMERROR, "p= is not valid base64"),
    (b"v=DKIM1; k=rsa; p=QUJDREVGR0g=", Result.PERMERROR, "key syntax error"),
    (b"v=DKIM2; p=QUJD", Result.PERMERROR, "unsupported version"),
    (b"v=DKIM1; k=dsa; p=QUJD", Result.PERMERROR, "unsupported key type k=dsa"),
    (b"v=DKIM1; k=rsa; k=rsa; p=QUJD", Result.PERMERROR, "duplicate tag k="),
    (b"just some text", Result.PERMERROR, "key syntax error"),
])
def test_key_problems(record, result, reason):
    s = one(sign(MESSAGE), {KEY: record})
    assert s.result == result and reason in s.reason


@pytest.mark.parametrize("extra,result,reason", [
    ("s=email; ", Result.PASS, "2048-bit key"),
    ("s=email:web; ", Result.PASS, "2048-bit key"),
    ("s=*; ", Result.PASS, "2048-bit key"),
    ("s=web; ", Result.PERMERROR, "key is not for email (s=web)"),
    ("h=sha1; ", Result.PERMERROR, "key h=sha1 does not allow sha256"),
    ("h=sha1:sha256; ", Result.PASS, "2048-bit key"),
    ("x1 = extra ; n=notes; ", Result.PASS, "2048-bit key"),   # unknown tags ignored
])
def test_key_record_tags(extra, result, reason):
    s = one(sign(MESSAGE), {KEY: public_record(rsa_key(), extra)})
    assert (s.result, s.reason) == (result, reason)


def test_key_type_must_match_algorithm():
    s = one(sign(MESSAGE), {KEY: public_record(ed_key())})
    assert s.result == Result.PERMERROR and "k=ed25519 does not match a=rsa-sha256" in s.reason


def test_strict_key_flag_rejects_subdomain_identity():
    raw = sign(MESSAGE, extra=(("i", "alice@mail.example.com"),))
    ok = one(raw, {KEY: public_record(rsa_key())})
    strict = one(raw, {KEY: public_record(rsa_key(), "t=s; ")})
    assert ok.result == Result.PASS and ok.identity == "alice@mail.example.com"
    assert strict.result == Result.PERMERROR and "t=s" in strict.reason


def test_first_usable_record_wins():
    s = one(sign(MESSAGE), {KEY: [b"garbage", public_record(rsa_key())]})
    assert s.result == Result.PASS


def test_body_length_is_recorded_and_covers_a_prefix():
    raw = sign(MESSAGE, length=True) + b"-- \r\nappended footer\r\n"
    s = one(raw, {KEY: public_record(rsa_key())})
    assert s.result == Result.PASS and s.body_length == 34
    assert s.body_total > s.body_length
    assert f"l=34 covers 34 of {s.body_total} body octets" in s.reason


def _with_tags(value: str) -> bytes:
    return b"DKIM-Signature: " + value.encode() + b"\r\n" + MESSAGE


GOOD = "v=1; a=rsa-sha256; d=example.com; s=sel; h=from; bh=AAAA; b=AAAA"


@pytest.mark.parametrize("value,result,reason", [
    ("garbage", Result.PERMERROR, "malformed tag list"),
    ("", Result.PERMERROR, "missing required tag v="),
    (GOOD + "; d=example.org", Result.PERMERROR, "duplicate tag d="),
    (GOOD + "; 9x=1", Result.PERMERROR, "invalid tag name"),
    *[(";".join(p for p in GOOD.split(";") if not p.strip().startswith(t + "=")),
       Result.PERMERROR, f"missing required tag {t}=") for t in ("v", "a", "b", "bh", "d", "h", "s")],
    (GOOD.replace("v=1", "v=2"), Result.PERMERROR, "incompatible version v=2"),
    (GOOD.replace("rsa-sha256", "rsa-md5"), Result.NEUTRAL, "unsupported algorithm a=rsa-md5"),
    (GOOD + "; c=future/relaxed", Result.NEUTRAL, "unsupported canonicalization"),
    (GOOD + "; q=http", Result.NEUTRAL, "unsupported query method q=http"),
    (GOOD.replace("b=AAAA", "b=!!not base64!!"), Result.PERMERROR, "b= is not valid base64"),
    (GOOD.replace("bh=AAAA", "bh=AAA"), Result.PERMERROR, "bh= is not valid base64"),
    (GOOD.replace("d=example.com", "d=exa mple.com"), Result.PERMERROR, "invalid d= domain"),
    (GOOD.replace("s=sel", "s=a;b"), Result.PERMERROR, "malformed tag list"),
    (GOOD.replace("s=sel", "s=se\x01l"), Result.PERMERROR, "invalid s= selector"),
    (GOOD + "; i=x@evil.test", Result.PERMERROR, "i= domain is not d="),
    (GOOD.replace("h=from", "h=subject:to"), Result.PERMERROR, "h= does not include From"),
    (GOOD + "; l=12a", Result.PERMERROR, "l= is not a decimal number"),
    (GOOD + "; t=soon", Result.PERMERROR, "t= is not a decimal number"),
    (GOOD + "; x=" + "9" * 40, Result.PERMERROR, "x= is not a decimal number"),
])
def test_hostile_tags(value, result, reason):
    s = one(_with_tags(value), {KEY: public_record(rsa_key())})
    assert s.result == result and reason in s.reason, s.reason


def test_qp_identity_is_decoded():
    raw = sign(MESSAGE, extra=(("i", "alice=2Bx@example.com"),))
    s = one(raw, {KEY: public_record(rsa_key())})
    assert s.result == Result.PASS and s.identity == "alice+x@example.com"


def test_cap_of_ten():
    raw = MESSAGE
    for n in range(12):
        raw = sign(raw, s=f"s{n}")
    dns = {f"s{n}._domainkey.example.com": public_record(rsa_key()) for n in range(12)}
    v = verify(raw, dns)
    words = [s.result for s in v.dkim]
    assert len(words) == 12
    assert words[:10] == [Result.PASS] * 10   # each signature covers only what was below it
    assert words[10:] == [Result.POLICY] * 2
    assert all("not verified: over the limit of 10" in s.reason for s in v.dkim[10:])
    assert [s.selector for s in v.dkim[10:]] == ["s1", "s0"]


def test_a_hundred_signatures_and_garbage_do_not_crash():
    junk = [b"DKIM-Signature: " + v + b"\r\n" for v in (
        b"", b";;;;", b"=", b"b=\xff\xfe", b"v=1; " * 50, b"a" * 5000, b"\x00\x01\x02",
        b"v=1; a=rsa-sha256; d=..; s=; h=from; bh=; b=")]
    raw = b"".join((junk * 13)[:100]) + MESSAGE
    v = verify(raw, {})
    assert len(v.dkim) == 100
    assert all(s.result in set(Result) and s.reason for s in v.dkim)
    assert sum(s.result == Result.POLICY for s in v.dkim) == 90


def test_message_dkimpy_cannot_read_is_permerror_not_a_crash():
    raw = sign(MESSAGE).replace(b"To: list", b"To : list")   # WSP before ':' trips dkimpy
    s = one(raw, {KEY: public_record(rsa_key())})
    assert s.result in (Result.PERMERROR, Result.PASS, Result.FAIL)
    assert s.reason


def test_verdict_is_json_ready():
    import json
    v = verify(sign(MESSAGE), {KEY: public_record(rsa_key())})
    data = json.loads(json.dumps(v.as_dict()))
    assert data["signatures"][0]["result"] == "pass"
    assert data["signatures"][0]["headers"][0] == "from"
    check = v.check_dict()
    assert set(check) == {"signatures", "dmarc", "arc"}
    assert set(check["signatures"][0]) == {"kind", "domain", "selector", "algorithm", "result", "reason"}
    assert re.fullmatch(r"[A-Za-z0-9+/=]+", v.dkim[0].b)


def test_openssl_rsa_check_agrees_with_dkimpy_on_a_shortened_signature():
    """The RSA check is OpenSSL's (relist.core.verify.dkim_verify._rsa_header_ok).  A signature
    whose first octet is zero may travel base64 of one octet less; dkimpy compares
    integers and accepts it, and so must relist; one bit flipped fails in both."""
    import base64

    for n in range(2000):
        raw = sign(MESSAGE.replace(b"this is a test", b"this is test %d" % n))
        # dkimpy writes b= last: its value runs to the end of the field.
        b = re.search(rb";\s*b=([A-Za-z0-9+/=\r\n\t ]+?)\r\n(?=[^ \t])", raw)
        value = re.sub(rb"\s+", b"", b.group(1))
        if base64.b64decode(value)[0] == 0:
            break
    else:
        pytest.skip("no signature with a leading zero octet in 2000 tries")
    short = base64.b64encode(base64.b64decode(value)[1:])
    shortened = raw.replace(b.group(1), short)
    dns = {KEY: public_record(rsa_key())}
    assert one(shortened, dns).result == Result.PASS, one(shortened, dns).reason
    assert dkim.verify(shortened, dnsfunc=lambda name, timeout=5: public_record(rsa_key()))
    flipped = bytearray(base64.b64decode(value))
    flipped[-1] ^= 1
    tampered = raw.replace(b.group(1), base64.b64encode(bytes(flipped)))
    assert one(tampered, dns).result == Result.FAIL


@pytest.mark.parametrize("c", ["relaxed/relaxed", "simple/simple"])
def test_repeated_and_oddly_named_signed_fields_agree_with_dkimpy(c):
    """Only the fields h= selects are canonicalized (relist.core.verify.dkim_verify._rsa_header_ok):
    several fields of one name are selected bottom-up in h= order, an absent name is
    skipped (dkimpy refuses a name with white space before the colon outright);
    relist and dkimpy must agree, and reordering the repeated fields must fail."""
    message = (b"Received: from a\r\nX-Tag: one\r\nFrom: Alice <alice@example.com>\r\n"
               b"X-Tag: two\r\nSubject:   spaced  value \r\nTo: b@example.org\r\nX-Tag: three\r\n"
               b"Date: Sat, 1 Jun 2024 11:00:00 +0000\r\n\r\nbody\r\n")
    h = ("from", "x-tag", "x-tag", "x-tag", "x-tag", "subject", "to", "received", "absent")
    raw = sign(message, c=c, h=h)
    dns = {KEY: public_record(rsa_key())}
    ours = one(raw, dns)
    theirs = dkim.verify(raw, dnsfunc=lambda name, timeout=5: public_record(rsa_key()))
    assert (ours.result == Result.PASS) == theirs
    assert theirs            # the signer and both verifiers agree on what was signed
    swapped = raw.replace(b"X-Tag: one", b"X-Tag: tmp").replace(b"X-Tag: three", b"X-Tag: one") \
        .replace(b"X-Tag: tmp", b"X-Tag: three")
    assert one(swapped, dns).result == Result.FAIL
    assert not dkim.verify(swapped, dnsfunc=lambda name, timeout=5: public_record(rsa_key()))
