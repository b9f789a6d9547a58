"""ARC chain validation (RFC 8617 §5.2) over chains sealed here with dkimpy."""

from __future__ import annotations

import dkim
from cryptography.hazmat.primitives import serialization

from relist.core.verify.arc_verify import verify_arc
from relist.core.facts import Status
from relist.core.message import RawMessage
from tests.verify_support import MESSAGE, T0, facts, public_record, rsa_key

PEM = rsa_key().private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption())
DNS = {"arc._domainkey.hop1.example": public_record(rsa_key()),
       "arc._domainkey.hop2.example": public_record(rsa_key())}


def seal(raw: bytes, domain: str, cv: str) -> bytes:
    raw = f"Authentication-Results: {domain}; arc={cv}\r\n".encode() + raw
    sets = dkim.arc_sign(raw, b"arc", domain.encode(), PEM, domain.encode(),
                         include_headers=[b"from", b"to", b"subject"], timestamp=T0)
    assert sets, "dkimpy produced no ARC set"
    return b"".join(sets) + raw


def check(raw: bytes, dns=None):
    return verify_arc(RawMessage.parse(raw), raw, facts(DNS if dns is None else dns))


def test_no_arc_is_none():
    assert check(MESSAGE).cv == "none"


def test_one_set_passes_oldest_pass_zero():
    r = check(seal(MESSAGE, "hop1.example", "none"))
    assert (r.cv, r.oldest_pass, r.instances) == ("pass", 0, 1)
    s = r.sets[0]
    assert (s.ams.result, s.seal.result, s.cv, s.ams.instance) == ("pass", "pass", "none", 1)
    assert s.ams.body_hash_ok is True and s.ams.domain == "hop1.example"


def test_two_sets_with_a_change_between_give_oldest_pass_two():
    one = seal(MESSAGE, "hop1.example", "none")
    changed = one.replace(b"this is a test", b"this is a test\r\n-- \r\nfooter")
    r = check(seal(changed, "hop2.example", "pass"))
    assert (r.cv, r.oldest_pass) == ("pass", 2)
    assert r.sets[0].ams.result == "fail" and "body changed" in r.sets[0].ams.reason


def test_change_after_the_last_seal_fails():
    raw = seal(MESSAGE, "hop1.example", "none").replace(b"Hello list", b"[x] Hello list")
    r = check(raw)
    assert r.cv == "fail" and "did not validate" in r.reason


def test_sealed_cv_fail_is_fail_not_empty():
    one = seal(MESSAGE, "hop1.example", "none").replace(b"this is a test", b"changed")
    r = check(seal(one, "hop2.example", "fail"))
    assert r.cv == "fail" and "RFC 8617 §5.2" in r.reason


def test_dns_temperror_on_arc_key_is_fail_with_reason():
    raw = seal(MESSAGE, "hop1.example", "none")
    r = check(raw, {"arc._domainkey.hop1.example": Status.TEMPERROR})
    assert r.cv == "fail" and "DNS temporary error for arc._domainkey.hop1.example" in r.reason


def test_more_than_fifty_sets_fail_before_crypto():
    fields = b"".join(b"ARC-Seal: i=%d; a=rsa-sha256; cv=pass; d=x.example; s=s; b=AAAA\r\n" % i
                      for i in range(1, 53))
    r = check(fields + MESSAGE)
    assert r.cv == "fail" and "more than 50" in r.reason


def test_garbage_arc_fields_fail_without_crash():
    for junk in (b"ARC-Seal: nonsense\r\n", b"ARC-Seal: i=1\r\n", b"ARC-Message-Signature: i=x\r\n",
                 b"ARC-Authentication-Results: i=1; x\r\nARC-Seal: i=1; cv=none; b=!!\r\n"):
        assert check(junk + MESSAGE).cv == "fail"
