"""The rspamd receiver harness (``relist.sandbox.rspamd``) judges real bytes correctly.

rspamd 3.4 (Debian) checks DKIM, SPF, DMARC and ARC with keys and policies served by
our loopback DNS server; signatures come from the Mailman corpus (signed by dkimpy at
capture time, t= in May 2024) or are made here with dkimpy.  One rspamd for the
module; each test starts from the corpus zone (rspamd caches nothing between scans).
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization

from relist.sandbox.dnsserver import DNSServer
from relist.sandbox.rspamd import Judgement, Rspamd

pytestmark = pytest.mark.skipif(not Rspamd.available(), reason="rspamd is not installed "
                                "(apt-get install rspamd; scripts/setup.sh --test does this)")

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fixtures" / "mailman"
POST = (CORPUS / "cases" / "decorated-01-plain-text" / "post.eml").read_bytes()
POSTER_RSA = (CORPUS / "keys" / "poster.example.s1.key").read_bytes()
POSTER_ED = (CORPUS / "keys" / "poster.example.s2.key").read_bytes().strip()
LIST_KEY_PEM = (ROOT / "fixtures" / "golden" / "keys" / "TEST-ONLY-lists.example.org.rsa.pem").read_bytes()
BASE_ZONE = json.loads((CORPUS / "dns.json").read_text())

ENVELOPE = {"helo": "relay.lists.example.org", "mail_from": "list-bounces@lists.example.org",
            "rcpt": "m01@members.example"}
LIST_MESSAGE = (b"From: Dev List <dev@lists.example.org>\r\nTo: m01@members.example\r\n"
                b"Subject: list notice\r\nDate: Sun, 06 Dec 2026 10:00:00 +0000\r\n"
                b"Message-ID: <notice-1@lists.example.org>\r\n\r\nHello members.\r\n")


def list_key_record() -> str:
    key = serialization.load_pem_private_key(LIST_KEY_PEM, None)
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


@pytest.fixture(scope="module")
def _receiver():
    dns = DNSServer(BASE_ZONE).start()
    try:
        with Rspamd(nameserver=dns.nameserver) as rs:
            yield dns, rs
    finally:
        dns.stop()


@pytest.fixture
def dns(_receiver) -> DNSServer:
    server, _ = _receiver
    server.zone.clear()
    for name, value in BASE_ZONE.items():
        server.set(name, value)
    server.queries.clear()
    return server


@pytest.fixture
def rs(_receiver, dns) -> Rspamd:
    return _receiver[1]


def judge(rs: Rspamd, message: bytes, ip: str = "127.0.0.1", **envelope) -> Judgement:
    return rs.judge(message, ip=ip, **{**ENVELOPE, **envelope})


# -- DKIM and DMARC on the poster's domain ---------------------------------------------------

def test_signed_post_passes_dmarc_reject(rs, dns):
    v = judge(rs, POST)
    assert v.dkim == (("poster.example", "pass"),)
    assert v.dkim_pass_domains == {"poster.example"}
    assert v.dmarc == "pass" and not v.rejected
    assert "DMARC_POLICY_ALLOW" in v.symbols and "R_DKIM_ALLOW" in v.symbols
    # Only our DNS server was asked, for the key and the policy.
    assert {"s1._domainkey.poster.example", "_dmarc.poster.example"} <= set(dns.queries)


@pytest.mark.parametrize("policy, verdict, rejected", [
    ("reject", "reject", True),
    ("quarantine", "quarantine", True),
    ("none", "softfail", False),
])
def test_changed_subject_fails_dmarc(rs, dns, policy, verdict, rejected):
    dns.set("_dmarc.poster.example", [f"v=DMARC1; p={policy}"])
    v = judge(rs, POST.replace(b"Subject: Plain text post", b"Subject: [decorated] Plain text post"))
    assert v.dkim == (("poster.example", "fail"),) and not v.dkim_pass_domains
    assert v.dmarc == verdict
    assert v.rejected is rejected


def test_no_dmarc_record_is_none(rs, dns):
    dns.set("_dmarc.poster.example", "NXDOMAIN")
    v = judge(rs, POST.replace(b"Second line.", b"Third line."))
    assert v.dkim == (("poster.example", "fail"),)
    assert v.dmarc == "none" and not v.rejected


def test_dmarc_dns_failure_is_error(rs, dns):
    dns.set("_dmarc.poster.example", "SERVFAIL")
    v = judge(rs, POST)
    assert v.dmarc == "error" and not v.rejected


def test_ed25519_and_rsa_signatures_from_dkimpy(rs, dns):
    message = _unsigned(POST)
    signed = dkim.sign(message, b"s2", b"poster.example", POSTER_ED, signature_algorithm=b"ed25519-sha256")
    signed = dkim.sign(signed + message, b"s1", b"poster.example", POSTER_RSA) + signed + message
    v = judge(rs, signed)
    assert v.dkim == (("poster.example", "pass"),)  # both signatures, one domain
    assert v.symbols["R_DKIM_ALLOW"] and sorted(v.symbols["R_DKIM_ALLOW"]) == [
        "poster.example:s=s1", "poster.example:s=s2"]
    assert v.dmarc == "pass"


def test_organisational_domain_under_reserved_tld(rs, dns):
    """``news.poster.example`` has no _dmarc record; rspamd falls back to the policy of
    its organisational domain ``poster.example`` and aligns d=poster.example with it
    (relaxed) -- which needs ``example`` in rspamd's public suffix list."""
    message = _unsigned(POST).replace(b"alice@poster.example", b"alice@news.poster.example")
    signed = dkim.sign(message, b"s1", b"poster.example", POSTER_RSA) + message
    v = judge(rs, signed)
    assert "_dmarc.news.poster.example" in dns.queries and "_dmarc.poster.example" in dns.queries
    assert v.dmarc == "pass" and v.symbols["DMARC_POLICY_ALLOW"][0] == "poster.example"
    v = judge(rs, signed.replace(b"Cheers", b"Bye"))
    assert v.dmarc == "reject" and v.rejected


# -- time checks -----------------------------------------------------------------------------

def test_old_signature_is_not_rejected(rs, dns):
    assert b"t=1714561260" in POST  # 1 May 2024
    assert judge(rs, POST).dkim == (("poster.example", "pass"),)


def test_signature_from_the_future_is_rejected(rs, dns, monkeypatch):
    message, future = _unsigned(POST), time.time() + 2 * 86400  # beyond time_jitter (6 h)
    with monkeypatch.context() as m:
        m.setattr(dkim.time, "time", lambda: future)
        signed = dkim.sign(message, b"s1", b"poster.example", POSTER_RSA) + message
    v = judge(rs, signed)
    # rspamd drops a signature it cannot use without any DKIM symbol; its log says why.
    assert v.dkim == () and not any(name.startswith("R_DKIM") for name in v.symbols)
    assert v.dmarc == "reject" and v.rejected
    assert any("signature was made in future" in line for line in rs.task_log(v.queue_id))


# -- SPF ---------------------------------------------------------------------------------------

def test_spf_pass_and_fail(rs, dns):
    dns.set("lists.example.org", ["v=spf1 ip4:127.0.0.1 -all"])
    v = judge(rs, LIST_MESSAGE, ip="127.0.0.1")
    assert v.spf == "pass" and v.symbols["R_SPF_ALLOW"] == ["+ip4:127.0.0.1"]
    assert v.dkim == () and "R_DKIM_NA" in v.symbols
    v = judge(rs, LIST_MESSAGE, ip="192.0.2.1")  # only the IP header's value; nothing is sent there
    assert v.spf == "fail"


def test_spf_alignment_decides_dmarc_for_unsigned_mail(rs, dns):
    dns.set("lists.example.org", ["v=spf1 ip4:127.0.0.1 ~all"])
    dns.set("_dmarc.lists.example.org", ["v=DMARC1; p=reject"])
    assert judge(rs, LIST_MESSAGE, ip="127.0.0.1").dmarc == "pass"
    v = judge(rs, LIST_MESSAGE, ip="192.0.2.1")
    assert v.spf == "softfail" and v.dmarc == "reject" and v.rejected


def test_no_spf_record(rs, dns):
    v = judge(rs, LIST_MESSAGE)
    assert v.spf == "none" and v.dmarc == "none"


# -- ARC ---------------------------------------------------------------------------------------

def test_arc_seal_verifies_and_breaks(rs, dns):
    """A list modifies the post (poster's DKIM breaks) and seals with ARC.  rspamd
    validates the chain, but without a trusted-forwarder map (``whitelisted_signers_map``)
    ARC does not change the DMARC verdict."""
    dns.set("arc1._domainkey.lists.example.org", [list_key_record()])
    modified = POST.replace(b"Subject: Plain text post", b"Subject: [decorated] Plain text post")
    received = (b"Authentication-Results: relay.lists.example.org; dkim=pass header.d=poster.example;"
                b" dmarc=pass header.from=poster.example\r\n" + modified)
    seal = b"".join(dkim.arc_sign(received, b"arc1", b"lists.example.org", LIST_KEY_PEM,
                                  b"relay.lists.example.org"))
    v = judge(rs, seal + received)
    assert v.arc == "pass" and v.symbols["ARC_ALLOW"] == ["lists.example.org:s=arc1:i=1"]
    assert v.dmarc == "reject"
    v = judge(rs, seal + received.replace(b"Cheers", b"Bye"))
    assert v.arc == "fail" and "ARC_REJECT" in v.symbols
    assert judge(rs, POST).arc == "none"


def _unsigned(message: bytes) -> bytes:
    """``message`` without its DKIM-Signature field (the first field, folded)."""
    assert message.startswith(b"DKIM-Signature:")
    lines = message.split(b"\r\n")
    i = 1
    while lines[i][:1] in (b" ", b"\t"):
        i += 1
    return b"\r\n".join(lines[i:])
