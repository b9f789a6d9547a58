"""What relist signs verifies with other implementations: Perl Mail::DKIM (DKIM and
ARC, DNS from a loopback server through Net::DNS) and OpenDKIM's test mode
(``opendkim -t`` with ``TestDNSData``).  Each skips with the reason when the tool is
missing.  Every check has a negative control (a changed body must fail)."""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from relist.core.sign import SigningKey, dns_record, seal_arc, sign_dkim
from relist.sandbox.dnsserver import DNSServer
from tests.helpers import PERL, needs_ed25519, needs_mail_dkim, perl_has

NOW = datetime.now(timezone.utc).replace(microsecond=0)
RSA_KEY = SigningKey("rsa-sha256", rsa.generate_private_key(public_exponent=65537, key_size=2048))
ED_KEY = SigningKey("ed25519-sha256", ed25519.Ed25519PrivateKey.generate())
DOMAIN = "lists.example.org"
# A signing domain and an identity longer than a folded line: the fold must not break
# them (dkimpy's fold does, and then no verifier accepts the signature).
LONG_DOMAIN = "lists.a-very-long-department-name-for-testing.university-of-somewhere.example.edu"
LONG_IDENTITY = "an-even-much-longer-list-name-for-the-discussion-of-many-things@lists.example.org"
RECORDS = {f"rsa._domainkey.{DOMAIN}": dns_record(RSA_KEY), f"ed._domainkey.{DOMAIN}": dns_record(ED_KEY),
           f"rsa._domainkey.{LONG_DOMAIN}": dns_record(RSA_KEY)}
KEYS = {"rsa": RSA_KEY, "ed": ED_KEY}

POST = (b"From: Alice <alice@example.net>\r\nTo: dev@lists.example.org\r\n"
        b"Subject: [dev] interop\r\nDate: Sun, 1 Mar 2026 11:58:00 +0000\r\n"
        b"Message-ID: <i1@example.net>\r\nList-Id: <dev.lists.example.org>\r\n"
        b"List-Unsubscribe: <https://lists.example.org/u>\r\n"
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nHello  there\r\n-- \r\nfooter\r\n")




def mail_dkim(mode: str, message: bytes, tmp_path) -> str:
    script, msg = tmp_path / "verify.pl", tmp_path / "msg.eml"
    script.write_text(PERL)
    msg.write_bytes(message)
    with DNSServer(RECORDS) as server:
        out = subprocess.run(["perl", str(script), mode, str(server.port), str(msg)],
                             capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode()


@needs_mail_dkim
@pytest.mark.parametrize("sel", ["rsa", pytest.param("ed", marks=needs_ed25519)])
@pytest.mark.parametrize("canon", ["relaxed/relaxed", "simple/simple"])
def test_mail_dkim_verifies_dkim(tmp_path, sel, canon):
    field = sign_dkim(POST, domain=DOMAIN, selector=sel, key=KEYS[sel], now=NOW, canonicalization=canon)
    assert mail_dkim("dkim", field + POST, tmp_path).startswith("pass\n")
    assert mail_dkim("dkim", field + POST + b"more\r\n", tmp_path).startswith("fail\n")


@needs_mail_dkim
def test_mail_dkim_verifies_arc_chain(tmp_path):
    signed = sign_dkim(POST, domain=DOMAIN, selector="rsa", key=RSA_KEY, now=NOW) + POST
    one = seal_arc(signed, domain=DOMAIN, selector="rsa", key=RSA_KEY, authserv_id=DOMAIN,
                   cv="none", results="arc=none;\n dkim=pass (2048-bit key) header.d=example.net", now=NOW)
    first = b"".join(one.fields) + signed
    assert mail_dkim("arc", first, tmp_path).startswith("pass\n")
    two = seal_arc(first, domain=DOMAIN, selector="rsa", key=RSA_KEY, authserv_id="mx.example.com",
                   cv="pass", results="arc=pass header.oldest-pass=1", now=NOW)
    second = b"".join(two.fields) + first
    assert mail_dkim("arc", second, tmp_path).startswith("pass\n")
    assert mail_dkim("arc", second + b"more\r\n", tmp_path).startswith("fail\n")


def opendkim(message: bytes, tmp_path) -> str:
    data, conf, msg = tmp_path / "dns.txt", tmp_path / "opendkim.conf", tmp_path / "msg.eml"
    data.write_text("".join(f"{name} {value}\n" for name, value in RECORDS.items()))
    conf.write_text(f"Mode v\nSyslog no\nTestDNSData file:{data}\n")
    msg.write_bytes(message)
    out = subprocess.run(["opendkim", "-x", str(conf), "-t", str(msg)], capture_output=True, timeout=60)
    return (out.stdout + out.stderr).decode()


@pytest.mark.skipif(shutil.which("opendkim") is None, reason="opendkim not installed (Debian opendkim)")
@pytest.mark.parametrize("sel", ["rsa", "ed"])
@pytest.mark.parametrize("canon", ["relaxed/relaxed", "simple/simple", "relaxed/simple"])
def test_opendkim_verifies_dkim(tmp_path, sel, canon):
    field = sign_dkim(POST, domain=DOMAIN, selector=sel, key=KEYS[sel], now=NOW, canonicalization=canon)
    good = opendkim(field + POST, tmp_path)
    assert f"verification (s={sel}, d={DOMAIN}" in good and "succeeded" in good, good
    bad = opendkim(field + POST + b"more\r\n", tmp_path)
    assert "failed" in bad and "succeeded" not in bad, bad


@pytest.mark.parametrize("domain, identity", [(LONG_DOMAIN, None), (DOMAIN, LONG_IDENTITY)],
                         ids=["long-d", "long-i"])
def test_long_domain_and_identity_verify_everywhere(tmp_path, domain, identity):
    field = sign_dkim(POST, domain=domain, selector="rsa", key=RSA_KEY, now=NOW, identity=identity)
    assert (domain.encode() in field) and (identity is None or identity.encode() in field)   # not broken
    if perl_has("Mail::DKIM::Verifier"):
        assert mail_dkim("dkim", field + POST, tmp_path).startswith("pass\n")
    if shutil.which("opendkim") is not None:
        out = opendkim(field + POST, tmp_path)
        assert "succeeded" in out and "failed" not in out, out
