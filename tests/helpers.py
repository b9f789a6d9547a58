"""Helpers the tests share (fixtures live in conftest.py): paths, a relist config for
a loopback test, SMTP client and polling helpers, and the independent verifiers'
availability marks (Perl Mail::DKIM, OpenDKIM)."""

from __future__ import annotations

import shutil
import smtplib
import subprocess
import time
from pathlib import Path

import pytest

from relist.config import parse, with_overrides

__all__ = ["FIXTURES", "PERL", "ROOT", "SHARED", "client", "make_config", "needs_ed25519", "needs_mail_dkim",
           "needs_opendkim", "perl_has", "split_added", "wait_for"]

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
FIXTURES = ROOT / "fixtures"


def make_config(tmp_path, sink_port: int, data: dict | None = None, nameserver: str = "127.0.0.1:9",
                **overrides):
    data = dict(data or {})
    data.setdefault("dns", {"nameservers": [nameserver], "timeout": 1})
    data.setdefault("server", {})
    data["server"] = {"hostname": "relist.test", **data["server"]}
    data.setdefault("upstream", {})
    data["upstream"] = {"port": sink_port, "timeout": 2, "connect_timeout": 2, **data["upstream"]}
    data.setdefault("store", {"path": str(tmp_path / "relist.db")})
    cfg = parse(data)
    server = {"listen": ("127.0.0.1", 0), **overrides.pop("server", {})}
    return with_overrides(cfg, server=server, **overrides)


def split_added(data: bytes, names=(b"received", b"authentication-results")) -> tuple[list[bytes], bytes]:
    """Split off the header fields relist prepends; return (their names, the rest)."""
    added = []
    while True:
        name = data.split(b":", 1)[0].lower()
        if name not in names:
            return added, data
        end = 0
        while True:
            end = data.index(b"\r\n", end) + 2
            if data[end:end + 1] not in (b" ", b"\t"):
                break
        added.append(name)
        data = data[end:]


def client(port: int) -> smtplib.SMTP:
    c = smtplib.SMTP("127.0.0.1", port, timeout=10)
    c.ehlo("mailman.test")
    return c


def wait_for(predicate, timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` seconds pass (False)."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


# Verify a message file with Perl Mail::DKIM: perl - MODE(dkim|arc) DNS_PORT FILE, resolving
# through the loopback DNS server; prints the result and its detail.
PERL = """
use strict; use Net::DNS::Resolver; use Mail::DKIM::Verifier; use Mail::DKIM::ARC::Verifier;
my ($mode, $port, $file) = @ARGV;
Mail::DKIM::DNS::resolver(Net::DNS::Resolver->new(nameservers => ['127.0.0.1'], port => $port,
    recurse => 1, udp_timeout => 5, tcp_timeout => 5, retry => 1, udppacketsize => 4096));
my $v = $mode eq 'arc' ? Mail::DKIM::ARC::Verifier->new() : Mail::DKIM::Verifier->new();
open(my $fh, '<', $file) or die; binmode $fh;
while (<$fh>) { s/\\r?\\n\\z/\\015\\012/; $v->PRINT($_); }
$v->CLOSE;
print $v->result, "\\n", ($v->result_detail // ''), "\\n";
"""


def perl_has(module: str) -> bool:
    """Perl can load ``module``."""
    return shutil.which("perl") is not None and subprocess.run(
        ["perl", f"-M{module}", "-e", "1"], capture_output=True).returncode == 0


needs_mail_dkim = pytest.mark.skipif(not perl_has("Mail::DKIM::Verifier"),
                                     reason="Perl Mail::DKIM not installed (Debian libmail-dkim-perl)")
# Mail::DKIM verifies ed25519-sha256 only from the release that added
# Mail::DKIM::Algorithm::ed25519_sha256 (which needs Crypt::PK::Ed25519, libcryptx-perl);
# Debian 12's 1.20230212 has neither the module nor the algorithm.
needs_ed25519 = pytest.mark.skipif(
    not (perl_has("Mail::DKIM::Algorithm::ed25519_sha256") and perl_has("Crypt::PK::Ed25519")),
    reason="this Mail::DKIM has no ed25519-sha256 (Mail::DKIM::Algorithm::ed25519_sha256 "
           "and Crypt::PK::Ed25519 needed; Debian 12 ships Mail::DKIM 1.20230212 without it)")
needs_opendkim = pytest.mark.skipif(shutil.which("opendkim") is None,
                                    reason="opendkim not installed (apt-get install opendkim)")
