"""DKIM conformance: the Mail::DKIM corpus, its key records, and RFC 8463 Appendix A.

The corpus (../shared/conformance/mail-dkim-corpus, Perl 5 terms) mostly predates
RFC 6376 and RFC 8301.  relist must agree with Mail::DKIM's expected.tsv on every
message except those in DISAGREE, each with the reason relist is right by the
current RFCs (docs/verification.md lists them too).  Overall result as Mail::DKIM
computes it: pass if any signature passes, else fail if any fails, else invalid.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from relist.core.verify import Result, verify_message
from relist.core.verify.key_records import KeyRecord, parse_key_record
from relist.core.facts import Answer, Facts, Question, Status
from relist.core.message import RawMessage

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "conformance" / "mail-dkim-corpus"
NOW = datetime(2024, 6, 1, tzinfo=timezone.utc)
needs_corpus = pytest.mark.skipif(not CORPUS.exists(),
                                  reason="../shared/conformance/mail-dkim-corpus is absent")

_DRAFT = "missing required tag v="          # pre-RFC 4871 drafts (ietf00/01): no v=
_V05 = "incompatible version v=0.5"         # RFC 4871 drafts: v=0.5
_SHA1 = "rsa-sha1 is not accepted (RFC 8301"
# file -> (relist's overall result, a piece of the deciding reason)
DISAGREE = {
    **{f: ("invalid", _DRAFT) for f in (
        "good_ietf00_1.txt", "good_ietf00_2.txt", "good_ietf00_3.txt", "good_ietf00_4.txt",
        "good_ietf00_5.txt", "mine_ietf01_1.txt", "mine_ietf01_2.txt", "mine_ietf01_3.txt",
        "mine_ietf01_4.txt", "good_ietf01_1.txt", "good_ietf01_2.txt", "multiple_1.txt",
        "bad_ietf01_1.txt", "bad_ietf01_2.txt", "bad_ietf01_3.txt", "bad_1.txt")},
    **{f: ("invalid", _V05) for f in (
        "mine_ietf05_1.txt", "no_body_1.txt", "no_body_2.txt", "no_body_3.txt")},
    **{f: ("fail", _SHA1) for f in (
        "good_rfc4871_3.txt", "good_rfc4871_4.txt", "good_1878523.txt", "good_83176.txt",
        "multiple_2.txt", "good_qp_1.txt", "good_qp_2.txt", "good_qp_3.txt",
        "goodkey_1.txt", "goodkey_2.txt", "goodkey_3.txt", "goodkey_4.txt",
        # RFC 4871's g= is gone (RFC 6376 §3.6.1, unknown key tags are ignored), so
        # these would pass if they were not rsa-sha1:
        "badkey_8.txt", "badkey_9.txt", "badkey_12.txt", "badkey_13.txt")},
    # Upstream skips it (accepts a missing q=); so does relist (RFC 4870 §3.3 default q=dns).
    "bad_dk_3.txt": ("pass", "DomainKeys"),
}


def corpus_facts() -> Facts:
    answers = {}
    for line in (CORPUS / "FAKE_DNS.dat").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, _, value = line.strip().partition(" ")
        value = value.strip()
        q = Question.txt(name)
        if value == "NXDOMAIN":
            answers[q] = Answer(Status.ABSENT, (), "NXDOMAIN")
        elif value.startswith("~~"):
            answers[q] = Answer(Status.TEMPERROR, (), value.strip("~"))
        elif value == '""':
            answers[q] = Answer(Status.FOUND, (b"",))
        else:
            answers[q] = Answer(Status.FOUND, (value.encode(),))
    return Facts(answers, otherwise=Answer(Status.ABSENT, (), "NXDOMAIN"))   # absent elsewhere


def _expected():
    if not CORPUS.exists():
        return []
    rows = []
    for line in (CORPUS / "expected.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, expected, *_ = line.split("\t")
        rows.append(pytest.param(name, expected, id=name))
    return rows


EXPECTED = _expected()


def overall(verdict) -> str:
    words = [s.result for s in verdict.signatures]
    if Result.PASS in words:
        return "pass"
    if Result.FAIL in words:
        return "fail"
    return "invalid" if words else "none"


@needs_corpus
def test_corpus_is_complete():
    assert len(EXPECTED) == 79
    assert set(DISAGREE) <= {p.values[0] for p in EXPECTED}


@needs_corpus
@pytest.mark.parametrize("name,expected", EXPECTED)
def test_mail_dkim_corpus(name, expected):
    raw = (CORPUS / "corpus" / name).read_bytes()
    verdict = verify_message(RawMessage.parse(raw), corpus_facts(), NOW)
    got = overall(verdict)
    reasons = " || ".join(s.reason for s in verdict.signatures)
    if name in DISAGREE:
        want, why = DISAGREE[name]
        assert got == want, reasons
        assert why in reasons
        assert got != expected.removeprefix("SKIP(").rstrip(")") or expected.startswith("SKIP")
    else:
        assert got == expected.removeprefix("SKIP(").rstrip(")"), reasons


@needs_corpus
def test_sha1_disagreements_are_policy_not_crypto():
    """Where relist fails rsa-sha1 (RFC 8301), dkimpy's crypto agrees with Mail::DKIM."""
    for name, (_, why) in DISAGREE.items():
        if why != _SHA1 or name == "multiple_2.txt":
            continue
        raw = (CORPUS / "corpus" / name).read_bytes()
        verdict = verify_message(RawMessage.parse(raw), corpus_facts(), NOW)
        sha1 = [s for s in verdict.signatures if s.algorithm == "rsa-sha1"]
        assert sha1 and all(s.body_hash_ok and s.header_hash_ok for s in sha1), name


# Key records from FAKE_DNS.dat, judged alone (the corpus messages that use them are
# v=0.5 drafts, so they never get as far as the key).
KEY_CASES = [
    ("test1._domainkey.messiah.edu", None),                    # t=y, s=email
    ("test2._domainkey.messiah.edu", None),                    # s=email:web:fine is a list
    ("test3._domainkey.messiah.edu", None),                    # g= ignored
    ("testbad1._domainkey.messiah.edu", "unsupported version"),
    ("testbad2._domainkey.messiah.edu", "key syntax error"),   # "t;" has no '='
    ("testbad3._domainkey.messiah.edu", "unsupported key type"),
    ("testbad4._domainkey.messiah.edu", "not for email"),
    ("testrevoked._domainkey.messiah.edu", "key revoked"),
    ("invalid._domainkey.wander.science", "Ed25519 key is 44 bytes"),
    ("2023-05-ed25519._domainkey.wander.science", None),
]


@needs_corpus
@pytest.mark.parametrize("name,problem", KEY_CASES, ids=[c[0] for c in KEY_CASES])
def test_key_records(name, problem):
    answer = corpus_facts().txt(name)
    parsed = parse_key_record(answer.records[0])
    if problem is None:
        assert isinstance(parsed, KeyRecord), parsed
    else:
        assert not isinstance(parsed, KeyRecord)
        assert parsed.result == Result.PERMERROR and problem in parsed.reason


# RFC 8463 Appendix A: the message signed with Ed25519 and with RSA (1024-bit).
RFC8463_DNS = {
    "brisbane._domainkey.football.example.com":
        b"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=",
    "test._domainkey.football.example.com":
        b"v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWR"
        b"iGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutAC"
        b"DfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3"
        b"Ip3G+2kryOTIKT+l/K4w3QIDAQAB",
}
RFC8463_MESSAGE = b"""DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;
 d=football.example.com; i=@football.example.com;
 q=dns/txt; s=brisbane; t=1528637909; h=from : to :
 subject : date : message-id : from : subject : date;
 bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;
 b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus
 Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==
DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;
 d=football.example.com; i=@football.example.com;
 q=dns/txt; s=test; t=1528637909; h=from : to : subject :
 date : message-id : from : subject : date;
 bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;
 b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3
 DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz
 dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=
From: Joe SixPack <joe@football.example.com>
To: Suzie Q <suzie@shopping.example.net>
Subject: Is dinner ready?
Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)
Message-ID: <20030712040037.46341.5F8J@football.example.com>

Hi.

We lost the game.  Are you hungry yet?

Joe.
""".replace(b"\n", b"\r\n")
RFC8463_NOW = datetime(2018, 6, 10, 13, 40, tzinfo=timezone.utc)


def _rfc8463_facts():
    return Facts({Question.txt(k): Answer(Status.FOUND, (v,)) for k, v in RFC8463_DNS.items()})


def test_rfc8463_both_signatures_pass():
    v = verify_message(RawMessage.parse(RFC8463_MESSAGE), _rfc8463_facts(), RFC8463_NOW)
    assert [(s.algorithm, s.result, s.key_bits) for s in v.dkim] == [
        ("ed25519-sha256", Result.PASS, 256), ("rsa-sha256", Result.PASS, 1024)]
    assert all(s.body_hash_ok and s.header_hash_ok for s in v.dkim)


def test_rfc8463_tampered_subject_fails_both():
    raw = RFC8463_MESSAGE.replace(b"Is dinner ready?", b"[list] Is dinner ready?")
    v = verify_message(RawMessage.parse(raw), _rfc8463_facts(), RFC8463_NOW)
    assert [(s.result, s.body_hash_ok, s.header_hash_ok) for s in v.dkim] == [
        (Result.FAIL, True, False)] * 2


def test_rfc8463_rsa_1024_key_fails_when_the_minimum_is_2048():
    v = verify_message(RawMessage.parse(RFC8463_MESSAGE), _rfc8463_facts(), RFC8463_NOW,
                       min_key_bits=2048)
    rsa_sig = v.dkim[1]
    assert rsa_sig.result == Result.FAIL and "key too small" in rsa_sig.reason
