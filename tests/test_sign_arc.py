"""ARC sealing rules (RFC 8617 §5.1), checked with dkimpy's arc_verify over real chains."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import dkim
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from relist.core.sign import Seal, SignError, SigningKey, dns_record, seal_arc, sign_dkim

NOW = datetime.now(timezone.utc).replace(microsecond=0)
KEY = SigningKey("rsa-sha256", rsa.generate_private_key(public_exponent=65537, key_size=2048))
RECORDS = {b"arc._domainkey.lists.example.org.": dns_record(KEY).encode(),
           b"s1._domainkey.lists.example.org.": dns_record(KEY).encode()}

POST = (b"From: Alice <alice@example.net>\r\nTo: dev@lists.example.org\r\nSubject: hi\r\n"
        b"Date: Sun, 1 Mar 2026 11:58:00 +0000\r\nMessage-ID: <m1@example.net>\r\n"
        b"List-Id: <dev.lists.example.org>\r\n\r\nbody\r\n")
RESULTS = ("arc=none;\n dkim=pass (2048-bit key) header.d=example.net header.s=sel;\n"
           " dmarc=pass header.from=example.net")


def dnsfunc(name, timeout=5):
    if not name.endswith(b"."):
        name += b"."
    return RECORDS.get(name.lower())


def seal(message, cv="none", results=RESULTS, **kw) -> Seal:
    args = dict(domain="lists.example.org", selector="arc", key=KEY, authserv_id="lists.example.org",
                cv=cv, results=results, now=NOW)
    return seal_arc(message, **{**args, **kw})


def verify(message):
    cv, _, reason = dkim.arc_verify(message, dnsfunc=dnsfunc)
    return cv, reason


def sealed(message, s: Seal) -> bytes:
    return b"".join(s.fields) + message


def test_first_seal_verifies_and_covers_dkim_signature():
    signed = sign_dkim(POST, domain="lists.example.org", selector="s1", key=KEY, now=NOW) + POST
    s = seal(signed)
    assert s.sealed and s.instance == 1 and s.cv == "none" and s.reason == ""
    as_, ams, aar = s.fields
    assert as_.startswith(b"ARC-Seal: i=1; cv=none; a=rsa-sha256;")
    assert ams.startswith(b"ARC-Message-Signature: i=1;")
    h = re.search(rb"h=([^;]*);", ams).group(1).replace(b" ", b"").replace(b"\r\n", b"").split(b":")
    assert h.count(b"dkim-signature") == 1          # RFC 8617 §4.1.2: cover DKIM-Signature
    assert b"authentication-results" not in h and not any(x.startswith(b"arc-") for x in h)
    assert b"(2048-bit key)" in aar                   # comments kept in the AAR
    assert aar.startswith(b"ARC-Authentication-Results: i=1; lists.example.org;\r\n")
    assert verify(sealed(signed, s)) == (b"pass", "success")
    # the AMS covers the DKIM-Signature: changing it breaks the chain
    tampered = sealed(signed, s).replace(b"q=dns/txt", b"q=dns/txt ", 1).replace(b"s=s1;", b"s=s2;", 1)
    assert verify(tampered)[0] != b"pass"
    # relist's DKIM signature is still valid under the seal
    assert dkim.verify(sealed(signed, s), dnsfunc=dnsfunc)


def test_second_seal_extends_a_valid_chain():
    first = sealed(POST, seal(POST))
    s = seal(first, cv="pass", results="arc=pass header.oldest-pass=1;\n spf=none")
    assert s.instance == 2 and s.fields[0].startswith(b"ARC-Seal: i=2; cv=pass;")
    assert verify(sealed(first, s)) == (b"pass", "success")


def test_caller_cv_wins_over_a_forged_authentication_results():
    # The message claims arc=pass under relist's own authserv-id; relist's verification
    # says the (bogus) chain fails.  The seal carries cv=fail and signs only its own set.
    forged = b"Authentication-Results: lists.example.org; arc=pass\r\n" + sealed(POST, seal(POST))
    broken = forged.replace(b"body\r\n", b"changed body\r\n")
    assert verify(broken)[0] == b"fail"
    # dkimpy's own arc_sign believes the forged field (why relist does not use it as-is)
    from relist.core.sign import private_pem
    theirs = dkim.arc_sign(broken, b"arc", b"lists.example.org", private_pem(KEY), b"lists.example.org")
    assert b"cv=pass" in theirs[0]
    s = seal(broken, cv="fail", results="arc=fail")
    assert s.fields[0].startswith(b"ARC-Seal: i=2; cv=fail;")
    assert b"arc=pass" not in b"".join(s.fields)
    # and a seal at i=1 can never be pass, whatever the message says
    lone = b"Authentication-Results: lists.example.org; arc=pass\r\n" + POST
    assert not seal(lone, cv="pass", results="").sealed


def test_no_seal_after_a_cv_fail_seal():
    broken = sealed(POST, seal(POST)).replace(b"body\r\n", b"changed\r\n")
    failed = sealed(broken, seal(broken, cv="fail", results="arc=fail"))
    s = seal(failed, cv="fail", results="arc=fail")
    assert s.fields == () and "cv=fail" in s.reason and "§5.1" in s.reason


def test_no_seal_beyond_50_sets():
    message = POST
    for i in range(1, 51):
        s = seal(message, cv="none" if i == 1 else "pass", results="arc=none" if i == 1 else "arc=pass")
        assert s.instance == i
        message = sealed(message, s)
    assert verify(message) == (b"pass", "success")
    s = seal(message, cv="pass", results="arc=pass")
    assert s.fields == () and "50" in s.reason


@pytest.mark.parametrize("cv,chain,sealed_", [("none", False, True), ("pass", False, False),
                                              ("fail", False, False), ("none", True, False),
                                              ("pass", True, True), ("fail", True, True)])
def test_cv_must_fit_the_instance(cv, chain, sealed_):
    message = sealed(POST, seal(POST)) if chain else POST
    s = seal(message, cv=cv, results=f"arc={cv}")
    assert s.sealed is sealed_
    assert bool(s.reason) is not sealed_


@pytest.mark.parametrize("kwargs,error", [
    ({"cv": "maybe"}, "cv"),
    ({"results": "arc=pass"}, "results say arc=pass"),
    ({"key": SigningKey("ed25519-sha256", ed25519.Ed25519PrivateKey.generate())}, "rsa-sha256 only"),
    ({"headers": ["from", "arc-seal"]}, "arc-seal"),
    ({"headers": ["from", "authentication-results"]}, "authentication-results"),
    ({"headers": ["subject"]}, "From"),
    ({"now": datetime(2026, 1, 1)}, "timezone-aware"),
])
def test_refuses_bad_parameters(kwargs, error):
    with pytest.raises(SignError, match=error):
        seal(POST, **kwargs)


def test_empty_results_become_none():
    s = seal(POST, results="")
    assert s.fields[2] == b"ARC-Authentication-Results: i=1; lists.example.org;\r\n    none\r\n"
    assert verify(sealed(POST, s))[0] == b"pass"


def test_results_with_bytes_that_were_not_utf8_are_written_as_replacement_characters():
    """A poster's 8-bit junk reaches the results as a surrogate (surrogateescape): the
    AAR carries U+FFFD for it, as Authentication-Results does, and the chain verifies."""
    s = seal(POST, results='dkim=fail reason="bad \udca9 byte" header.d=example.net;\n arc=none\x07')
    assert s.sealed
    assert s.fields[2] == ("ARC-Authentication-Results: i=1; lists.example.org;\r\n"
                           '    dkim=fail reason="bad \ufffd byte" header.d=example.net;\r\n'
                           "    arc=none\r\n").encode("utf-8")
    assert verify(sealed(POST, s))[0] == b"pass"


def test_a_prepared_message_seals_as_its_bytes():
    # the arc-seal step hands over the pipeline's message parsed once (relist.core.sign.prepare)
    from relist.core.message import RawMessage
    from relist.core.sign import oversigned, prepare
    signed = sign_dkim(POST, domain="lists.example.org", selector="s1", key=KEY, now=NOW) + POST
    for message in (prepare(signed), prepare(RawMessage.parse(signed))):
        h = [n.decode() for n in oversigned(["from", "to", "subject"], message)] + ["dkim-signature"]
        assert seal(message, headers=h) == seal(signed, headers=h)
        assert seal(message) == seal(signed)
    assert verify(sealed(signed, seal(prepare(signed)))) == (b"pass", "success")


@pytest.mark.parametrize("field", [
    b"ARC-Seal: i=0(\r\n",                        # what tests/test_hostile_fuzz.py drew
    b"ARC-Seal: i=0; cv=none; a=rsa-sha256; d=x.example; s=s; b=\r\n",
    b"ARC-Message-Signature: i=1x; a=rsa-sha256\r\n",
    b"ARC-Authentication-Results: lists.example.org; arc=none\r\n",
], ids=["i=0(", "i=0", "i=1x", "no i="])
def test_no_seal_over_an_arc_field_of_no_set(field):
    """An ARC field no set numbered 1 to 50 owns: dkimpy reads ``i=0(`` or ``i=1x`` by
    its leading digits and hashes an instance 0 into set 1's seal, relist's strict
    reading leaves them out, so a seal would validate for one verifier and fail for
    the other: none is added, with the reason."""
    message = field + POST
    s = seal(message)
    assert not s.sealed and s.fields == ()
    assert s.reason.startswith("1 ARC field(s) without a valid instance (i=1 to 50")
    # beside a valid chain too
    first = seal(POST)
    chained = sealed(POST, first)
    assert verify(chained) == (b"pass", "success")
    assert not seal(field + chained, cv="pass", results="arc=pass").sealed


def test_the_fields_dkimpy_puts_in_set_1_would_break_a_seal_made_without_them():
    """Why the rule above (dkimpy's reading, which the rule must not depend on): the
    set relist made before the rule, over the post with ``i=0(`` left out, validates
    without that field and fails with it."""
    s = seal(POST)                                # the same set, made where no junk is
    assert verify(sealed(POST, s))[0] == b"pass"
    assert verify(b"ARC-Seal: i=0(\r\n" + sealed(POST, s))[0] == b"fail"
