"""DMARC (RFC 9989): the DNS Tree Walk asked progressively, policy discovery,
alignment.  DNS is a dict; ``resolve`` plays the edge: ask, answer, ask again."""

from __future__ import annotations

import pytest

from relist.core.verify import Result, verify_message
from relist.core.verify.dmarc import walk_targets
from relist.core.verify.verdict import questions
from relist.core.facts import Answer, Facts, Status
from relist.core.message import RawMessage
from tests.verify_support import MESSAGE, NOW, public_record, rsa_key, sign


def resolve(raw: bytes, dns: dict[str, object]) -> tuple[Facts, list[str]]:
    """Run plan rounds like the edge: each round answers what was asked."""
    msg, answers, asked = RawMessage.parse(raw), {}, []
    for _ in range(20):
        wanted = [q for q in questions(msg, 10, Facts(answers)) if q not in answers]
        if not wanted:
            return Facts(answers), asked
        for q in sorted(wanted, key=lambda q: q.qname):
            asked.append(q.qname)
            v = dns.get(q.qname)
            if v is None:
                answers[q] = Answer(Status.ABSENT, (), "NXDOMAIN")
            elif v == "TEMPERROR":
                answers[q] = Answer(Status.TEMPERROR, (), "timeout")
            elif v == "NODATA":
                answers[q] = Answer(Status.ABSENT, (), "NODATA")
            else:
                answers[q] = Answer(Status.FOUND, tuple(x.encode() for x in
                                                        (v if isinstance(v, list) else [v])))
    raise AssertionError("plan did not converge")


def message(from_domain="example.com", d="example.com", *, key_extra=""):
    raw = MESSAGE.replace(b"alice@example.com", f"alice@{from_domain}".encode())
    raw = sign(raw, d=d)
    return raw, {f"sel._domainkey.{d}": public_record(rsa_key(), key_extra).decode()}


def dmarc(raw, dns):
    f, asked = resolve(raw, dns)
    return verify_message(RawMessage.parse(raw), f, NOW).dmarc, asked


def test_walk_targets_rfc9989_example():
    assert ["_dmarc." + n for n in walk_targets("a.b.c.d.e.f.g.h.i.j.mail.example.com")] == [
        "_dmarc.a.b.c.d.e.f.g.h.i.j.mail.example.com", "_dmarc.g.h.i.j.mail.example.com",
        "_dmarc.h.i.j.mail.example.com", "_dmarc.i.j.mail.example.com",
        "_dmarc.j.mail.example.com", "_dmarc.mail.example.com", "_dmarc.example.com", "_dmarc.com"]
    assert walk_targets("mail.example.com") == ["mail.example.com", "example.com", "com"]


def test_walk_is_asked_one_name_at_a_time_and_at_most_eight():
    raw, dns = message("a.b.c.d.e.f.g.h.i.j.mail.example.com")
    result, asked = dmarc(raw, dns)
    walked = [n for n in asked if n.startswith("_dmarc.")]
    assert walked == ["_dmarc." + n for n in walk_targets("a.b.c.d.e.f.g.h.i.j.mail.example.com")]
    assert result.result == "none" and result.queries == 8


def test_author_record_pass_strict_match():
    raw, dns = message()
    dns["_dmarc.example.com"] = "v=DMARC1; p=reject; rua=mailto:d@example.com"
    r, asked = dmarc(raw, dns)
    assert (r.result, r.policy, r.policy_tag, r.policy_domain) == ("pass", "reject", "p", "example.com")
    assert r.alignment[0].aligned is True
    assert asked.count("_dmarc.example.com") == 1 and "_dmarc.com" not in asked


def test_org_domain_record_applies_sp_and_relaxed_alignment():
    raw, dns = message("news.example.com", "example.com")
    dns["_dmarc.example.com"] = "v=DMARC1; p=reject; sp=quarantine"
    dns["news.example.com"] = "v=spf1 -all"   # the Author Domain exists
    r, asked = dmarc(raw, dns)
    assert (r.result, r.policy, r.policy_tag, r.policy_domain, r.org_domain) == (
        "pass", "quarantine", "sp", "example.com", "example.com")
    assert r.alignment[0].mode == "relaxed" and r.alignment[0].aligned


def test_np_for_a_nonexistent_author_domain():
    raw, dns = message("ghost.example.com", "example.com")
    dns["_dmarc.example.com"] = "v=DMARC1; p=none; sp=quarantine; np=reject"
    r, asked = dmarc(raw, dns)          # ghost.example.com: NXDOMAIN
    assert (r.policy, r.policy_tag) == ("reject", "np")
    assert "ghost.example.com" in asked


def test_strict_alignment_fails_for_parent_domain():
    raw, dns = message("news.example.com", "example.com")
    dns["_dmarc.news.example.com"] = "v=DMARC1; p=reject; adkim=s"
    r, _ = dmarc(raw, dns)
    assert r.result == "fail" and r.alignment[0].mode == "strict" and not r.alignment[0].aligned


def test_unrelated_signer_does_not_align():
    raw, dns = message("example.com", "lists.example.org")
    dns["_dmarc.example.com"] = "v=DMARC1; p=reject"
    r, _ = dmarc(raw, dns)
    assert r.result == "fail" and "no passing DKIM signature aligns" in r.reason


def test_psd_record_sets_org_domain_one_below():
    raw, dns = message("a.mail.example.com", "other.example.com")
    dns["_dmarc.com"] = "v=DMARC1; p=reject; psd=y"
    r, _ = dmarc(raw, dns)
    assert (r.org_domain, r.policy_domain, r.policy) == ("example.com", "com", "reject")
    assert r.result == "pass"   # other.example.com's Organizational Domain is example.com too


def test_psd_n_makes_its_own_org_domain():
    raw, dns = message("a.mail.example.com", "example.com")
    dns["_dmarc.mail.example.com"] = "v=DMARC1; p=quarantine; psd=n"
    dns["_dmarc.example.com"] = "v=DMARC1; p=reject"
    r, _ = dmarc(raw, dns)
    assert (r.org_domain, r.policy_domain) == ("mail.example.com", "mail.example.com")
    assert r.result == "fail"   # example.com is a different Organizational Domain


def test_testing_flag_and_historic_pct():
    raw, dns = message()
    dns["_dmarc.example.com"] = "v=DMARC1; p=reject; t=y; pct=20"
    r, _ = dmarc(raw, dns)
    assert r.testing and r.pct == 20 and r.effective_policy == "quarantine"


def test_testing_key_does_not_count_for_dmarc():
    raw, dns = message(key_extra="t=y; ")
    dns["_dmarc.example.com"] = "v=DMARC1; p=reject"
    r, _ = dmarc(raw, dns)
    assert r.result == "fail" and "testing" in r.alignment[0].reason


@pytest.mark.parametrize("record,result,policy", [
    ("v=DMARC1; p=bogus; rua=mailto:d@example.com", "pass", "none"),
    ("v=DMARC1; p=bogus", "none", ""),
    ("v=spf1 -all", "none", ""),
    (["v=DMARC1; p=reject", "v=DMARC1; p=none"], "none", ""),   # several: all discarded
])
def test_record_validity(record, result, policy):
    raw, dns = message()
    dns["_dmarc.example.com"] = record
    r, _ = dmarc(raw, dns)
    assert (r.result, r.policy) == (result, policy)


def test_temperror():
    raw, dns = message()
    dns["_dmarc.example.com"] = "TEMPERROR"
    r, _ = dmarc(raw, dns)
    assert r.result == "temperror" and "_dmarc.example.com" in r.reason


def test_no_record_is_none_and_unsigned_fails():
    raw, dns = message()
    assert dmarc(raw, dns)[0].result == "none"
    dns["_dmarc.example.com"] = "v=DMARC1; p=quarantine"
    r, _ = dmarc(MESSAGE, dns)
    assert r.result == "fail" and "no passing DKIM signature" in r.reason


@pytest.mark.parametrize("header,result", [
    (b"From: a@example.com, b@example.org\r\n", "permerror"),
    (b"From: a@example.com\r\nFrom: b@example.com\r\n", "permerror"),
    (b"From: undisclosed\r\n", "none"),
])
def test_from_problems(header, result):
    raw = header + b"Subject: x\r\n\r\nbody\r\n"
    r, _ = dmarc(raw, {})
    assert r.result == result


def test_dkim_failure_with_policy_reject_fails_dmarc():
    raw, dns = message()
    raw = raw.replace(b"this is a test", b"this is list mail")
    dns["_dmarc.example.com"] = "v=DMARC1; p=reject"
    f, _ = resolve(raw, dns)
    v = verify_message(RawMessage.parse(raw), f, NOW)
    assert v.dkim[0].result == Result.FAIL and v.dmarc.result == "fail"
