"""``relist check`` on messages signed by implementations we did not write: Perl
Mail::DKIM and OpenDKIM, with keys served by a real DNS server on 127.0.0.1 over UDP
(issue: verify early)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from relist.cli import main
from relist.sandbox.dnsserver import DNSServer
from tests.helpers import needs_opendkim

MESSAGE = (b"From: Alice <alice@signer.example>\r\nTo: dev@lists.example.org\r\n"
           b"Subject: interop test\r\nDate: Sat, 21 Nov 2026 10:00:00 +0000\r\n"
           b"Message-ID: <interop-1@signer.example>\r\n\r\n"
           b"Hello from an independent signer.\r\nFrom here on, a line starting with From.\r\n")

# Debian 12's Mail::DKIM (1.20230212) has no Ed25519 (no Algorithm::ed25519_sha256):
# it signs RSA here; Ed25519 interop comes from OpenDKIM and the RFC 8463 vectors.
PERL_SIGN = r'''
use strict; use Mail::DKIM::Signer; use Mail::DKIM::TextWrap;
my ($alg, $method, $domain, $selector, $keyfile) = @ARGV;
my $dkim = Mail::DKIM::Signer->new(Algorithm => $alg, Method => $method, Domain => $domain,
    Selector => $selector, KeyFile => $keyfile, Headers => "from:to:subject:date:message-id");
binmode STDIN; local $/; my $msg = <STDIN>;
$dkim->PRINT($msg); $dkim->CLOSE;
binmode STDOUT; print $dkim->signature->as_string, "\015\012", $msg;
'''


def have_perl_dkim() -> bool:
    return shutil.which("perl") is not None and subprocess.run(
        ["perl", "-MMail::DKIM::Signer", "-e1"], capture_output=True).returncode == 0


needs_perl = pytest.mark.skipif(not have_perl_dkim(), reason="Perl Mail::DKIM not installed "
                                "(apt-get install libmail-dkim-perl; scripts/test.sh does this)")
needs_testmsg = pytest.mark.skipif(shutil.which("opendkim-testmsg") is None,
                                   reason="opendkim-testmsg not installed (apt-get install opendkim-tools)")


@pytest.fixture(scope="module")
def keys():
    # opendkim refuses a configuration under a directory others can write (/tmp), so
    # the keys live in a private directory under $HOME.
    home_tmp = Path.home() / ".cache" / "relist-tests"
    home_tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(dir=home_tmp) as name:
        yield from _keys(Path(name))


def _keys(d: Path):
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (d / "rsa.pem").write_bytes(rsa_key.private_bytes(serialization.Encoding.PEM,
                                                      serialization.PrivateFormat.TraditionalOpenSSL,
                                                      serialization.NoEncryption()))
    rsa_pub = base64.b64encode(rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    ed = ed25519.Ed25519PrivateKey.generate()
    (d / "ed.pem").write_bytes(ed.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    for key in d.iterdir():
        key.chmod(0o600)
    ed_pub = base64.b64encode(ed.public_key().public_bytes(serialization.Encoding.Raw,
                                                           serialization.PublicFormat.Raw)).decode()
    zone = {
        "rsa._domainkey.signer.example": [f"v=DKIM1; k=rsa; p={rsa_pub}"],
        "ed._domainkey.signer.example": [f"v=DKIM1; k=ed25519; p={ed_pub}"],
        "_dmarc.signer.example": ["v=DMARC1; p=reject"],
    }
    with DNSServer(zone) as server:
        yield d, server


def perl_sign(keys_dir, alg, method, selector, keyfile):
    out = subprocess.run(["perl", "-e", PERL_SIGN, alg, method, "signer.example", selector,
                          str(keys_dir / keyfile)], input=MESSAGE, capture_output=True, check=True)
    return out.stdout


def opendkim_sign(keys_dir, algorithm, selector, keyfile):
    """Sign with the opendkim filter itself, in test mode (-t), as a milter would."""
    conf = keys_dir / f"{selector}.conf"
    conf.write_text(f"Mode s\nDomain signer.example\nSelector {selector}\nKeyFile {keys_dir / keyfile}\n"
                    f"SignatureAlgorithm {algorithm}\nCanonicalization relaxed/relaxed\nSyslog no\n")
    msg = keys_dir / "msg.eml"
    msg.write_bytes(MESSAGE.replace(b"\r\n", b"\n"))  # test mode reads a Unix file
    out = subprocess.run(["opendkim", "-x", str(conf), "-t", str(msg)], capture_output=True, check=True)
    # Test mode prints "opendkim: FILE:" and then the DKIM-Signature field it made.
    field = out.stdout.split(b"\n", 1)[1].rstrip(b"\n")
    assert field.startswith(b"DKIM-Signature:"), out
    # Its folds mix LF and CRLF line ends: normalise to CRLF.
    return field.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + b"\r\n" + MESSAGE


def opendkim_testmsg_sign(keys_dir):
    out = subprocess.run(["opendkim-testmsg", "-C", "-d", "signer.example", "-s", "rsa",
                          "-k", str(keys_dir / "rsa.pem")], input=MESSAGE, capture_output=True, check=True)
    return out.stdout


def check(tmp_path, server, data: bytes, capsys):
    path = tmp_path / "msg.eml"
    path.write_bytes(data)
    code = main(["check", str(path), "--nameserver", server.nameserver, "--json"])
    return code, json.loads(capsys.readouterr().out)


def tamper_body(data: bytes) -> bytes:
    return data.replace(b"independent signer", b"independent forger")


def tamper_header(data: bytes) -> bytes:
    return data.replace(b"Subject: interop test", b"Subject: interop jest")


SIGNERS = [
    pytest.param(lambda d: perl_sign(d, "rsa-sha256", "relaxed", "rsa", "rsa.pem"), "rsa-sha256",
                 marks=needs_perl, id="mail-dkim-rsa-relaxed"),
    pytest.param(lambda d: perl_sign(d, "rsa-sha256", "simple", "rsa", "rsa.pem"), "rsa-sha256",
                 marks=needs_perl, id="mail-dkim-rsa-simple"),
    pytest.param(lambda d: opendkim_sign(d, "rsa-sha256", "rsa", "rsa.pem"), "rsa-sha256",
                 marks=needs_opendkim, id="opendkim-rsa"),
    pytest.param(lambda d: opendkim_sign(d, "ed25519-sha256", "ed", "ed.pem"), "ed25519-sha256",
                 marks=needs_opendkim, id="opendkim-ed25519"),
]


@needs_testmsg
def test_opendkim_testmsg_signs_rsa_sha1_which_fails_per_rfc8301(keys, tmp_path, capsys):
    # opendkim-testmsg has no algorithm option and signs rsa-sha1: relist names why.
    keys_dir, server = keys
    code, report = check(tmp_path, server, opendkim_testmsg_sign(keys_dir), capsys)
    [sig] = report["signatures"]
    assert (sig["algorithm"], sig["result"]) == ("rsa-sha1", "fail")
    assert "RFC 8301" in sig["reason"] and "the signature itself verifies" in sig["reason"]
    assert code == 1


@pytest.mark.parametrize("sign,algorithm", SIGNERS)
def test_independent_signatures_pass(keys, sign, algorithm, tmp_path, capsys):
    keys_dir, server = keys
    code, report = check(tmp_path, server, sign(keys_dir), capsys)
    [sig] = report["signatures"]
    assert (sig["kind"], sig["domain"], sig["algorithm"], sig["result"]) == \
        ("dkim", "signer.example", algorithm, "pass"), sig
    assert report["dmarc"]["result"] == "pass" and report["dmarc"]["policy"] == "reject"
    assert code == 0


@pytest.mark.parametrize("sign,algorithm", SIGNERS)
@pytest.mark.parametrize("tamper,word", [(tamper_body, "body hash"), (tamper_header, "header")],
                         ids=["body", "header"])
def test_tampered_signatures_fail_with_the_right_reason(keys, sign, algorithm, tamper, word, tmp_path,
                                                        capsys):
    keys_dir, server = keys
    code, report = check(tmp_path, server, tamper(sign(keys_dir)), capsys)
    [sig] = report["signatures"]
    assert sig["result"] == "fail" and word in sig["reason"].lower(), sig
    assert report["dmarc"]["result"] == "fail"
    assert code == 1


def test_check_text_output_and_usage_errors(keys, tmp_path, capsys):
    keys_dir, server = keys
    path = tmp_path / "plain.eml"
    path.write_bytes(MESSAGE)
    assert main(["check", str(path), "--nameserver", server.nameserver]) == 0
    out = capsys.readouterr().out
    assert "no DKIM or DomainKey signatures" in out and "dmarc: fail" in out
    assert main(["check", str(tmp_path / "missing.eml"), "--nameserver", server.nameserver]) == 2


def test_check_dns_timeout_is_temperror(tmp_path, capsys):
    signed = (b"DKIM-Signature: v=1; a=rsa-sha256; d=slow.example; s=s1; c=relaxed/relaxed;\r\n"
              b" h=from:subject; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA\r\n") + MESSAGE
    with DNSServer({"s1._domainkey.slow.example": "TIMEOUT"}) as server:
        path = tmp_path / "m.eml"
        path.write_bytes(signed)
        assert main(["check", str(path), "--nameserver", server.nameserver, "--json"]) == 1
    [sig] = json.loads(capsys.readouterr().out)["signatures"]
    assert sig["result"] == "temperror"
