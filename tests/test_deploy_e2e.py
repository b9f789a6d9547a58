"""Issue 15: the deployment guide, proven with the real programs on loopback.

A private Postfix 3 instance (``postfix -c DIR``), GNU Mailman 3.3.10 in its own
virtualenv (lists made through its REST API), ``relist serve`` with both legs, a loopback
DNS server and a capture sink standing for the Internet behind Postfix:

    test --SMTP--> Postfix --LMTP--> relist ingress --LMTP--> Mailman
    Mailman --SMTP--> relist egress --SMTP--> Postfix re-injection --SMTP--> sink

Every configuration file comes from the snippets in ``conf/deploy/``, the same text
docs/deployment.md shows (``test_the_guide_shows_every_snippet_verbatim``), with only
the ports and paths replaced (:func:`render`); what a test site needs besides (where
the queue lives, the sink as relay host, the DNS server, the lists) is added by the test
and named as such.  Posts are signed by Perl Mail::DKIM; what arrives at the sink is
verified by Mail::DKIM (DKIM and ARC) and OpenDKIM.

Missing programs (Postfix, root, Perl Mail::DKIM, opendkim) or a Mailman that cannot be
installed skip the module here, and fail it under CI (``CI=true``).
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import os
import re
import shutil
import signal
import smtplib
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from relist.sandbox import postfix as pfx
from relist.sandbox.dnsserver import DNSServer
from relist.sandbox.mailman import Mailman, MailmanError, ensure_venv, site_cfg
from relist.sandbox.sink import Sink
from tests.helpers import perl_has

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "conf" / "deploy"
GUIDE = ROOT / "docs" / "deployment.md"
SNIPPETS = ["master.cf", "main.cf", "relist_transport.regexp", "install.sh", "relist.toml",
            "relist-ingress.toml", "mailman.cfg"]
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
DOMAIN = "lists.example.org"
POSTER = "alice@poster.example"
PLAIN, DECORATED, RELISTED = (f"{n}@{DOMAIN}" for n in ("plain", "decorated", "relisted"))
MEMBERS = {lst: [f"{lst.split('@')[0]}{i}@members.example" for i in (1, 2, 3)]
           for lst in (PLAIN, DECORATED, RELISTED)}
UNDECORATED = {"subject_prefix": "", "reply_goes_to_list": "no_munging", "first_strip_reply_to": False,
               "dmarc_mitigate_action": "no_mitigation", "default_nonmember_action": "accept"}
NO_TEMPLATES = {"list:member:regular:header": "", "list:member:regular:footer": ""}
RELIST_FOOTER = "decorated by relist"
WAIT = 240          # bound on every wait for the programs (seconds); never an assertion


# ---------------------------------------------------------------------------------------
# The guide's snippets
# ---------------------------------------------------------------------------------------

def test_the_guide_shows_every_snippet_verbatim():
    guide = GUIDE.read_text()
    for name in SNIPPETS:
        text = (DEPLOY / name).read_text().rstrip("\n")
        assert text in guide, f"docs/deployment.md does not show conf/deploy/{name} verbatim"
    assert sorted(p.name for p in DEPLOY.iterdir()) == sorted(SNIPPETS), "a snippet the test does not check"


def render(name: str, subs: dict[str, str], used: set) -> str:
    """conf/deploy/NAME with the guide's ports (whole numbers) and paths replaced."""
    # One pass: a replacement is never replaced again.
    pattern = "|".join(rf"(?<!\d){re.escape(old)}(?!\d)" if old.isdigit() else re.escape(old)
                       for old in sorted(subs, key=len, reverse=True))

    def replace(m):
        used.add(m.group(0))
        return subs[m.group(0)]
    return re.sub(pattern, replace, (DEPLOY / name).read_text())


# ---------------------------------------------------------------------------------------
# Independent signer and verifiers
# ---------------------------------------------------------------------------------------

PERL_SIGN = r'''
use strict; use Mail::DKIM::Signer; use Mail::DKIM::TextWrap;
my ($keyfile, @jobs) = @ARGV;
while (@jobs) {
    my ($in, $out, $method) = splice(@jobs, 0, 3);
    my $msg = do { open(my $fh, '<', $in) or die "$in: $!"; binmode $fh; local $/; <$fh> };
    my $dkim = Mail::DKIM::Signer->new(Algorithm => 'rsa-sha256', Method => $method,
        Domain => 'poster.example', Selector => 's1', KeyFile => $keyfile,
        Headers => 'from:to:cc:subject:date:message-id:mime-version:content-type:content-transfer-encoding');
    $dkim->PRINT($msg); $dkim->CLOSE;
    open(my $o, '>', $out) or die "$out: $!"; binmode $o;
    print $o $dkim->signature->as_string, "\015\012", $msg; close $o;
}
'''

PERL_VERIFY = r'''
use strict; use Net::DNS::Resolver; use Mail::DKIM::Verifier; use Mail::DKIM::ARC::Verifier;
my ($port, @files) = @ARGV;
Mail::DKIM::DNS::resolver(Net::DNS::Resolver->new(nameservers => ['127.0.0.1'], port => $port,
    recurse => 1, udp_timeout => 5, tcp_timeout => 5, retry => 2, udppacketsize => 4096));
for my $file (@files) {
    for my $mode ('dkim', 'arc') {
        my $v = $mode eq 'arc' ? Mail::DKIM::ARC::Verifier->new() : Mail::DKIM::Verifier->new();
        open(my $fh, '<', $file) or die "$file: $!"; binmode $fh;
        while (<$fh>) { s/\r?\n\z/\015\012/; $v->PRINT($_); }
        close $fh; $v->CLOSE;
        if ($mode eq 'dkim') {
            print join("\t", $file, 'dkim', $_->domain, $_->selector, $_->result), "\n" for $v->signatures;
        } else {
            print join("\t", $file, 'arc', '-', '-', $v->result), "\n";
        }
    }
}
'''


def mail_dkim(dns_port: int, files: list[Path]) -> dict[str, dict]:
    """file -> {"dkim": {(domain, selector): result}, "arc": result}, from Mail::DKIM."""
    out = subprocess.run(["perl", "-e", PERL_VERIFY, str(dns_port), *map(str, files)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    res: dict[str, dict] = {str(f): {"dkim": {}, "arc": None} for f in files}
    for line in out.stdout.splitlines():
        file, kind, domain, selector, result = line.split("\t")
        if kind == "dkim":
            res[file]["dkim"][(domain.lower(), selector)] = result
        else:
            res[file]["arc"] = result
    return res


def opendkim(conf: Path, file: Path) -> str:
    out = subprocess.run(["opendkim", "-x", str(conf), "-t", str(file)], capture_output=True, timeout=60)
    return (out.stdout + out.stderr).decode(errors="replace")


# ---------------------------------------------------------------------------------------
# Posts
# ---------------------------------------------------------------------------------------

def _post(lst: str, kind: str) -> tuple[bytes, str | None]:
    """(the post, the canonicalization Mail::DKIM signs it with, None: unsigned)."""
    name = lst.split("@")[0]
    head = [f"From: Alice Poster <{POSTER}>", f"To: {lst}", "Date: Sun, 6 Dec 2026 12:00:00 +0000",
            f"Message-ID: <e2e-{name}-{kind}@poster.example>", "MIME-Version: 1.0"]
    ctype = "Content-Type: text/plain; charset=us-ascii"
    body = f"Hello {name}, this is the {kind} post.\n"
    canon = "relaxed"
    subject = f"{kind} post"
    if kind == "from-lines":
        canon = "simple"
        body = ("From the desk of Alice: the agenda.\n\nFrom now on we meet on Tuesdays.\n"
                "Fromage is cheese.\n>From already escaped.\nFrom \nBye\n")
    elif kind == "cc":
        head.append("Cc: Bob Poster <bob@poster.example>, carol@poster.example")
    elif kind == "folded":
        canon = "simple"
        subject = ("A very long subject line that goes on and on because the poster\n had a lot to say "
                   "about the topic of the day and did not want\n to stop typing before the end of it")
        head[1] = (f"To: The {name} Mailing List Of Example <{lst}>,\n Bob Poster With A Long Display "
                   f"Name <bob@poster.example>,\n \"Carol Q. Poster\" <carol@poster.example>")
        head.append("Cc: Dave Poster With An Even Longer Display Name <dave@poster.example>,\n\t"
                    "Eve <eve@poster.example>, frank@poster.example")
    elif kind == "8bit":
        ctype = "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit"
        body = "Grüße aus Zürich! Ça va? “quotes” – 日本語.\nZweite Zeile mit ß und €.\n"
    elif kind == "multipart":
        canon = "relaxed/simple"
        ctype = 'Content-Type: multipart/alternative; boundary="==alt=="'
        body = ("This is a multi-part message in MIME format.\n\n--==alt==\n"
                "Content-Type: text/plain; charset=us-ascii\n\nHello in plain text.\n\n--==alt==\n"
                "Content-Type: text/html; charset=us-ascii\n\n<html><body><p>Hello in <b>HTML</b>.</p>"
                "</body></html>\n\n--==alt==--\n")
    elif kind == "unsigned":
        canon = None
    head += [f"Subject: {subject}", ctype]
    text = "\n".join(head) + "\n\n" + body
    return text.replace("\n", "\r\n").encode(), canon


KINDS = ["from-lines", "cc", "folded", "8bit", "multipart", "unsigned"]

DSN = """\
From: Mail Delivery System <MAILER-DAEMON@mx.members.example>
To: plain-bounces@lists.example.org
Subject: Undelivered Mail Returned to Sender
Date: Sun, 6 Dec 2026 12:30:00 +0000
Message-ID: <dsn-e2e-1@mx.members.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="==dsn=="

--==dsn==
Content-Type: text/plain; charset=us-ascii

<plain1@members.example>: host mx.members.example said: 552 5.2.2 mailbox full

--==dsn==
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.members.example

Final-Recipient: rfc822; plain1@members.example
Original-Recipient: rfc822; plain1@members.example
Action: failed
Status: 5.2.2
Diagnostic-Code: smtp; 552 5.2.2 mailbox full

--==dsn==
Content-Type: text/rfc822-headers

From: Alice Poster <alice@poster.example>
To: plain@lists.example.org
Subject: cc post
Message-ID: <e2e-plain-cc@poster.example>

--==dsn==--
"""


# ---------------------------------------------------------------------------------------
# The site
# ---------------------------------------------------------------------------------------

def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _require(ok: bool, reason: str) -> None:
    if ok:
        return
    if CI:
        pytest.fail(f"CI=true and the deployment test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


def _wait(predicate, what: str, site=None, timeout: float = WAIT):
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            logs = site.logs() if site else ""
            raise AssertionError(f"gave up after {timeout} s waiting for {what}\n{logs}")
        time.sleep(0.2)


class Site:
    def __init__(self, base: Path):
        self.base = base
        self.relist: subprocess.Popen | None = None
        self.sink = self.dns = self.postfix = self.mailman = None

    # -- relist ----------------------------------------------------------------------

    def start_relist(self) -> None:
        with open(self.relist_log, "ab") as err:
            serve = [sys.executable, "-m", "relist", "serve", "-c", str(self.relist_conf)]
            self.relist = subprocess.Popen(serve, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                                           start_new_session=True)
        for port in (self.ports["egress"], self.ports["ingress"]):
            _wait(lambda p=port: self.relist.poll() is not None or _listening(p), f"relist on {port}", self)
        assert self.relist.poll() is None, self.logs()

    def stop_relist(self) -> int | None:
        if self.relist is None or self.relist.poll() is not None:
            return self.relist.returncode if self.relist else None
        self.relist.send_signal(signal.SIGTERM)
        try:
            return self.relist.wait(60)
        except subprocess.TimeoutExpired:
            self.relist.kill()
            return self.relist.wait(10)

    # -- what arrived ----------------------------------------------------------------

    def copies(self) -> Counter:
        """(Message-ID, recipient) -> how many times the sink got it."""
        got = Counter()
        for m in list(self.sink.messages):
            mid = _message_id(m.data)
            for rcpt in m.rcpt_tos:
                got[(mid, rcpt.lower())] += 1
        return got

    def quiet(self) -> bool:
        """Nothing left anywhere: Mailman's queues (shunt aside) and Postfix's queue."""
        return self.mailman.busy() == 0 and not self.postfix.queue_ids()

    def logs(self) -> str:
        parts = []
        if self.relist_log.exists():
            parts.append("--- relist\n" + self.relist_log.read_text(errors="replace")[-4000:])
        if self.postfix is not None:
            parts.append("--- postfix\n" + self.postfix.log()[-4000:])
        if self.mailman is not None:
            parts.append(self.mailman.tail(2000))
            parts.append(f"--- mailman queues: {self.mailman.queue_files()}")
        return "\n".join(parts)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
        return True
    except OSError:
        return False


def _message_id(data: bytes) -> str:
    m = re.search(rb"(?im)^Message-ID:[ \t]*(<[^>\r\n]+>)", data)
    return m.group(1).decode() if m else ""


def _send(port: int, mail_from: str, rcpts: list[str], data: bytes) -> None:
    opts = ["BODY=8BITMIME"] if re.search(rb"[\x80-\xff]", data) else []
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.ehlo("poster.example")
        c.sendmail(mail_from, rcpts, data, mail_options=opts)


@pytest.fixture(scope="module")
def site():
    _require(pfx.available(), "Postfix (postfix, postconf, postmap) is not installed or this is not root")
    _require(perl_has("Mail::DKIM::Signer") and perl_has("Mail::DKIM::ARC::Verifier")
             and perl_has("Net::DNS::Resolver"), "Perl Mail::DKIM not installed (libmail-dkim-perl)")
    _require(shutil.which("opendkim") is not None, "opendkim not installed")
    try:
        venv = ensure_venv()
    except (MailmanError, OSError, subprocess.SubprocessError) as exc:
        _require(False, f"GNU Mailman could not be installed: {exc}")
    base = Path(tempfile.mkdtemp(prefix="relist-e2e-"))
    base.chmod(0o755)   # Postfix's unprivileged processes reach their queue under it
    s = Site(base)
    try:
        _build(s, venv)
        yield s
    finally:
        s.stop_relist()
        for stop in (lambda: s.postfix and s.postfix.stop(), lambda: s.mailman and s.mailman.stop(),
                     lambda: s.sink and s.sink.stop(), lambda: s.dns and s.dns.stop()):
            try:
                stop()
            except Exception as exc:  # noqa: BLE001 - clean up the rest all the same
                print(f"cleanup: {exc!r}", file=sys.stderr)
        if not os.environ.get("RELIST_E2E_KEEP"):     # set it to look at the logs afterwards
            shutil.rmtree(base, ignore_errors=True)


def _build(s: Site, venv: Path) -> None:
    base = s.base
    names = ["smtp", "reinject", "egress", "ingress", "mm_lmtp", "mm_rest"]
    s.ports = ports = dict(zip(names, _free_ports(len(names))))
    s.sink = Sink().start()
    s.dns = DNSServer().start()
    pf_base = base / "postfix"
    pf_base.mkdir(mode=0o755)
    mm_base = base / "mailman"
    relist_etc, relist_state = base / "relist-etc", base / "relist-state"
    # The guide's ports and paths -> this site's.
    subs = {"10024": str(ports["ingress"]), "10025": str(ports["reinject"]), "10026": str(ports["egress"]),
            "8024": str(ports["mm_lmtp"]), "/var/lib/mailman3/data": str(mm_base / "var" / "data"),
            "/etc/postfix": str(pf_base / "etc"), "/var/lib/relist": str(relist_state),
            "/etc/relist": str(relist_etc)}
    used: set = set()
    files = {name: render(name, subs, used) for name in SNIPPETS}
    assert used == set(subs), f"substitutions that matched no snippet: {set(subs) - used}"
    s.files = files

    # Postfix: the guide's main.cf and master.cf; the site adds where it lives, its
    # public smtpd (the MX), and the sink as relay host (the Internet).
    main_cf = (pfx.base_main_cf(pf_base) + "\n" + files["main.cf"]
               + f"\n# the test site: everything not for the lists leaves through the sink\n"
               f"relayhost = [127.0.0.1]:{s.sink.port}\n")
    s.master_public = f"# the test site's MX\n127.0.0.1:{ports['smtp']} inet  n  -  y  -  -  smtpd\n"
    s.postfix = pfx.Postfix(pf_base, main_cf, s.master_public + "\n" + files["master.cf"])
    s.postfix.write()
    (pf_base / "etc" / "relist_transport.regexp").write_text(files["relist_transport.regexp"])

    # relist: the guide's install steps that concern relist's own files (the user and
    # the system directories are the host's business), then its configuration.
    relist_etc.mkdir(mode=0o755)
    relist_state.mkdir(mode=0o700)
    (relist_etc / "keys").mkdir(mode=0o700)
    record = None
    for line in files["install.sh"].splitlines():
        words = line.split()
        if words[:3] == ["relist", "keys", "generate"]:
            out = subprocess.run([sys.executable, "-m", "relist", *words[1:]], cwd=ROOT, capture_output=True,
                                 text=True, timeout=120, check=True)
            record = "".join(re.findall(r'"([^"]*)"', out.stdout.split("IN TXT", 1)[1]))
        elif words[:1] == ["chmod"]:
            subprocess.run(words, check=True, timeout=30)
    assert record and record.startswith("v=DKIM1"), "the guide's `relist keys generate` printed no record"
    s.relist_conf = relist_etc / "relist.toml"
    s.relist_conf.write_text(
        files["relist.toml"] + "\n" + files["relist-ingress.toml"] + f"""
# --- the test site: its DNS server, and the three lists
[dns]
nameservers = ["127.0.0.1:{s.dns.port}"]
timeout = 2

[lists."{PLAIN}"]
mode = "preserve"

[lists."{RELISTED}"]
subject_prefix = "[{{list_name}}] "
footer = "-- \\n{{list_name}} mailing list, {RELIST_FOOTER}\\n"
""")
    s.relist_log = base / "relist.log"

    # DNS: relist's key as the guide's command printed it, and the poster's.
    poster_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    s.poster_pem = base / "poster.pem"
    s.poster_pem.write_bytes(poster_key.private_bytes(serialization.Encoding.PEM,
                                                      serialization.PrivateFormat.TraditionalOpenSSL,
                                                      serialization.NoEncryption()))
    poster_pub = base64.b64encode(poster_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    s.records = {f"relist2026._domainkey.{DOMAIN}": record,
                 "s1._domainkey.poster.example": f"v=DKIM1; k=rsa; p={poster_pub}",
                 "_dmarc.poster.example": "v=DMARC1; p=reject"}
    for name, value in s.records.items():
        s.dns.set(name, [value])

    # Mailman: the guide's [mta] and [ARC], after the site's own sections; the site's
    # one [mta] addition: postmap for this Postfix instance (`postmap -c DIR`).
    mm_base.mkdir()
    (mm_base / "postfix.cfg").write_text(f"[postfix]\npostmap_command: {shutil.which('postmap')} -c "
                                         f"{pf_base / 'etc'}\ntransport_file_type: hash\n")
    mm_cfg = files["mailman.cfg"].replace(
        "[mta]\n", f"[mta]\n# the test site: postmap on this Postfix instance\n"
                   f"configuration: {mm_base / 'postfix.cfg'}\n", 1)
    assert "configuration:" in mm_cfg
    s.mailman = Mailman(venv, mm_base, site_cfg(mm_base, ports["mm_rest"]) + mm_cfg,
                        rest_port=ports["mm_rest"], lmtp_port=ports["mm_lmtp"])
    s.mailman.start()
    s.mailman.create_list(PLAIN, UNDECORATED, MEMBERS[PLAIN], NO_TEMPLATES)
    s.mailman.create_list(DECORATED, {"subject_prefix": "[decorated] ", "default_nonmember_action": "accept"},
                          MEMBERS[DECORATED])
    s.mailman.create_list(RELISTED, UNDECORATED, MEMBERS[RELISTED], NO_TEMPLATES)
    data = mm_base / "var" / "data"
    _wait(lambda: (data / "postfix_lmtp.db").exists() and RELISTED in (data / "postfix_lmtp").read_text(),
          "Mailman's postfix_lmtp map", s, 60)

    s.check_output = s.postfix.check()
    s.postfix.start()
    _wait(lambda: _listening(ports["smtp"]) and _listening(ports["reinject"]), "Postfix's listeners", s, 60)
    check = [sys.executable, "-m", "relist", "check-config", "-c", str(s.relist_conf)]
    s.check_config = subprocess.run(check, cwd=ROOT, capture_output=True, text=True, timeout=120)
    s.start_relist()


# ---------------------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------------------

def test_postfix_check_and_relist_check_config_pass(site):
    assert "fatal" not in site.check_output and "error" not in site.check_output.lower(), site.check_output
    out = site.check_config
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("ok") for ln in lines), out.stdout
    # The guide's message_size_limit leaves the room relist adds (the SIZE Postfix offers).
    assert any("upstream size" in ln for ln in lines), out.stdout


def test_the_guide_transport_sends_every_list_address_to_relist(site):
    table = f"regexp:{site.postfix.config_dir / 'relist_transport.regexp'}"
    for address in (PLAIN, f"plain-request@{DOMAIN}", f"plain-bounces+plain1=members.example@{DOMAIN}"):
        assert site.postfix.query(address, table) == f"lmtp:[127.0.0.1]:{site.ports['ingress']}"
    # Mailman's own map names the list too: the regexp table must come first to win.
    lmtp_map = f"hash:{site.mailman.var / 'data' / 'postfix_lmtp'}"
    assert site.postfix.query(PLAIN, lmtp_map) == f"lmtp:[127.0.0.1]:{site.ports['mm_lmtp']}"


@pytest.fixture(scope="module")
def delivered(site, tmp_path_factory):
    """Every post to every list, a command to -request and a DSN to -bounces, through
    the whole chain; returns what the sink got once everything is quiet."""
    work = tmp_path_factory.mktemp("posts")
    posts, jobs = {}, []
    for lst in (PLAIN, DECORATED, RELISTED):
        for kind in KINDS:
            raw, canon = _post(lst, kind)
            mid = _message_id(raw)
            src = work / f"{lst.split('@')[0]}-{kind}.eml"
            src.write_bytes(raw)
            posts[mid] = (lst, kind, canon, src)
            if canon:
                jobs += [str(src), str(src) + ".signed", canon]
    subprocess.run(["perl", "-e", PERL_SIGN, str(site.poster_pem), *jobs], check=True, timeout=120)
    for mid, (lst, kind, canon, src) in posts.items():
        raw = Path(str(src) + ".signed").read_bytes() if canon else src.read_bytes()
        assert (b"DKIM-Signature:" in raw) == bool(canon)
        _send(site.ports["smtp"], POSTER, [lst], raw)
    request = (f"From: Alice Poster <{POSTER}>\r\nTo: plain-request@{DOMAIN}\r\nSubject: help\r\n"
               f"Date: Sun, 6 Dec 2026 12:10:00 +0000\r\nMessage-ID: <e2e-request@poster.example>\r\n\r\n"
               f"help\r\n").encode()
    _send(site.ports["smtp"], POSTER, [f"plain-request@{DOMAIN}"], request)
    _send(site.ports["smtp"], "", [f"plain-bounces@{DOMAIN}"], DSN.replace("\n", "\r\n").encode())

    expected = {(mid, m) for mid, (lst, *_rest) in posts.items() for m in MEMBERS[lst]}
    _wait(lambda: expected <= set(site.copies()) and any(r == POSTER for _, r in site.copies())
          and site.quiet(), "every member copy and the -request reply", site)
    return posts, expected


def test_every_member_copy_arrives_exactly_once(site, delivered):
    _, expected = delivered
    got = site.copies()
    assert {k: n for k, n in got.items() if k in expected and n != 1} == {}
    assert expected <= set(got)
    others = {k: n for k, n in got.items() if k not in expected}
    # Besides the copies: Mailman's one answer to the -request command, nothing else
    # (no bounce, no held-message or unrecognised-bounce notice).
    assert list(others.values()) == [1] and next(iter(others))[1] == POSTER, others
    assert not site.mailman.shunted(), site.logs()


def test_every_post_passed_the_ingress_leg(site, delivered):
    posts, _ = delivered
    db = sqlite3.connect(f"file:{site.base / 'relist-state' / 'relist.db'}?mode=ro", uri=True)
    try:
        seen = {r[0] for r in db.execute("SELECT message_id FROM ingress_posts")}
    finally:
        db.close()
    assert set(posts) <= seen, sorted(set(posts) - seen)
    # ... and every copy carries the ingress leg's trace field (an LMTP hop).
    for m in site.sink.messages:
        if _message_id(m.data) in posts:
            head = re.sub(rb"\r\n[ \t]+", b" ", m.data.split(b"\r\n\r\n", 1)[0])
            received = re.findall(rb"(?im)^Received:.*$", head)
            ingress = [r for r in received if re.search(rb"\bby lists\.example\.org\b.*\bwith LMTP\b", r)]
            assert ingress, received


def test_relist_signature_and_arc_verify_in_mail_dkim_and_opendkim(site, delivered, tmp_path):
    files = []
    for i, m in enumerate(site.sink.messages):
        f = tmp_path / f"copy-{i:03d}.eml"
        f.write_bytes(m.data)
        files.append((f, m))
    # A negative control: one copy with a changed body must fail in both verifiers.
    tampered = tmp_path / "tampered.eml"
    tampered.write_bytes(files[0][1].data + b"one more line\r\n")
    results = mail_dkim(site.dns.port, [f for f, _ in files] + [tampered])
    assert results[str(tampered)]["dkim"].get((DOMAIN, "relist2026")) == "fail", results[str(tampered)]
    bad = {}
    for f, m in files:
        r = results[str(f)]
        if r["dkim"].get((DOMAIN, "relist2026")) != "pass" or r["arc"] != "pass":
            bad[_message_id(m.data)] = r
    assert not bad, bad
    # OpenDKIM, with the same records (its test mode reads them from a file).
    data = tmp_path / "dns.txt"
    data.write_text("".join(f"{n} {v}\n" for n, v in site.records.items()))
    conf = tmp_path / "opendkim.conf"
    conf.write_text(f"Mode v\nSyslog no\nTestDNSData file:{data}\n")
    for f, m in files:
        assert _opendkim_relist(conf, f) == "succeeded", (_message_id(m.data), opendkim(conf, f))
    assert _opendkim_relist(conf, tampered) == "failed", opendkim(conf, tampered)


def _opendkim_relist(conf: Path, file: Path) -> str | None:
    """OpenDKIM's verdict on relist's signature: its line of ``opendkim -t``'s output."""
    for line in opendkim(conf, file).splitlines():
        m = re.search(rf"verification \(s=relist2026,? d={re.escape(DOMAIN)}[,)].*\) (succeeded|failed)",
                      line)
        if m:
            return m.group(1)
    return None


def test_preserve_list_keeps_the_poster_signatures(site, delivered, tmp_path):
    posts, _ = delivered
    files = {}
    for i, m in enumerate(site.sink.messages):
        mid = _message_id(m.data)
        if mid in posts and posts[mid][0] == PLAIN and posts[mid][2]:
            files[tmp_path / f"plain-{i:03d}.eml"] = mid
    for f, mid in files.items():
        f.write_bytes(next(m.data for m in site.sink.messages if _message_id(m.data) == mid))
    signed = {mid for mid, p in posts.items() if p[0] == PLAIN and p[2]}
    assert set(files.values()) == signed
    results = mail_dkim(site.dns.port, list(files))
    broken = {files[f]: results[str(f)]["dkim"] for f in files
              if results[str(f)]["dkim"].get(("poster.example", "s1")) != "pass"}
    assert not broken, broken


def test_decoration_mailman_and_relist(site, delivered):
    posts, _ = delivered
    for m in site.sink.messages:
        mid = _message_id(m.data)
        if mid not in posts:
            continue
        lst = posts[mid][0]
        msg = email.message_from_bytes(m.data, policy=email.policy.default)
        text = "".join(p.get_content() for p in msg.walk() if p.get_content_maintype() == "text")
        subject = str(msg["subject"])
        if lst == DECORATED:
            assert subject.startswith("[decorated] ") and "Decorated mailing list --" in text, (mid, subject)
        elif lst == RELISTED:
            assert subject.startswith("[relisted] ") and RELIST_FOOTER in text, (mid, subject)
        else:
            assert not subject.startswith("["), (mid, subject)
            assert RELIST_FOOTER not in text and "mailing list --" not in text, mid


def test_the_dsn_reached_relist_and_mailman(site, delivered):
    out = subprocess.run([sys.executable, "-m", "relist", "bounces", "--json", "-c", str(site.relist_conf)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [(r["recipient"], r["message_id"]) for r in rows] == [
        ("plain1@members.example", "<e2e-plain-cc@poster.example>")], rows
    # Postfix delivered it through relist's ingress leg, and Mailman accepted it there.
    log = site.postfix.log()
    assert re.search(rf"to=<plain-bounces@{re.escape(DOMAIN)}>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:"
                     rf"{site.ports['ingress']}.*status=sent", log), log[-3000:]
    # Mailman's bounce runner read the DSN and scored the member.
    bounce_log = (site.mailman.var / "logs" / "bounce.log").read_text(errors="replace")
    assert re.search(r"Member plain1@members\.example on list plain\.lists\.example\.org, bounce score = 1",
                     bounce_log), bounce_log


def test_reinjection_down_mailman_retries_relist_restarts_delivered_once(site, delivered):
    """Postfix's re-injection listener stopped: relist answers 4xx, Mailman's retry
    queue holds the post; relist restarted meanwhile; listener back: one copy each."""
    raw, _ = _post(DECORATED, "retry")
    raw = raw.replace(b"<e2e-decorated-retry@", b"<e2e-retry@")
    mid = _message_id(raw)
    site.postfix.set_master_cf(site.master_public)          # the re-injection listener gone
    try:
        _wait(lambda: not _listening(site.ports["reinject"]), "the re-injection listener to close", site, 60)
        _send(site.ports["smtp"], POSTER, [DECORATED], raw)
        _wait(lambda: site.mailman.queue_files().get("retry"), "Mailman's retry queue to hold the post", site)
        assert not [k for k in site.copies() if k[0] == mid]
        assert site.stop_relist() == 0, site.logs()
        site.start_relist()
        _wait(lambda: site.mailman.queue_files().get("retry"), "the post back in the retry queue", site)
        assert not [k for k in site.copies() if k[0] == mid]
    finally:
        site.postfix.set_master_cf(site.master_public + "\n" + site.files["master.cf"])
    expected = {(mid, m) for m in MEMBERS[DECORATED]}
    _wait(lambda: expected <= set(site.copies()) and site.quiet(), "the retried post", site)
    got = site.copies()
    assert {k: got[k] for k in got if k[0] == mid} == {k: 1 for k in expected}
    assert re.search(r'reply="4\d\d', site.relist_log.read_text(errors="replace")), "relist answered no 4xx"
