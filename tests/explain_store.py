"""A real store for the explain and report tests (no tests here): posts through relist's
ingress leg (LMTP) to a stand-in Mailman, Mailman's transactions of them through the
egress leg (SMTP) to a sink MTA, DNS on loopback, and a bounce back through the ingress
leg, as in production (relist.demo's configuration: four lists, four modes)."""

from __future__ import annotations

import json
import smtplib
from pathlib import Path

from relist.config import with_overrides
from relist.demo import demo_config, demo_zone, load_posts, make_list_keys, send_ingress
from relist.sandbox.dnsserver import DNSServer
from relist.sandbox.sink import Sink
from relist.server import ThreadedServer

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fixtures" / "mailman"
CASES = ("plain-01-plain-text", "plain-03-from-lines", "plain-17-unsigned", "decorated-01-plain-text",
         "dmarc-01-plain-text", "verp-01-plain-text")
FORGED_CASE = "plain-05-cc"       # its egress copy differs from the ingress copy in a body line
ESC_ID = "<esc\x1b[31mred@poster.example>"


def _out(case: str) -> list[tuple[str, list[str], bytes]]:
    out = []
    for eml in sorted((CORPUS / "cases" / case).glob("out-*.eml")):
        meta = json.loads(eml.with_suffix(".json").read_text())
        out.append((meta["mail_from"], list(meta["rcpt_tos"]), eml.read_bytes()))
    return out


def _lmtp_bounce(port: int, rcpt: str, data: bytes) -> int:
    c = smtplib.LMTP("127.0.0.1", port, timeout=10)
    c.ehlo_or_helo_if_needed()
    c.mail("")
    c.rcpt(rcpt)
    code = c.data(data)[0]
    c.quit()
    return code


def build(workdir: Path, store_url: str = "") -> dict:
    """Build the store under ``workdir`` (or in the PostgreSQL database ``store_url``);
    returns what the tests compare with: the config file, the sink's messages."""
    posts = {p.name.split("/")[0]: p for p in load_posts(CORPUS)}
    sent = [posts[c] for c in CASES + (FORGED_CASE,)]
    egress = [tx for case in CASES for tx in _out(case)]
    mail_from, rcpts, data = _out(FORGED_CASE)[0]
    forged = data.replace(b"\r\n\r\n", b"\r\n\r\nInserted by someone on the way.\r\n", 1)
    assert forged != data
    egress.append((mail_from, rcpts, forged))
    esc = (b"From: <bob@poster.example>\r\nTo: plain@lists.example.org\r\nSubject: escape\r\n"
           b"Message-ID: " + ESC_ID.encode() + b"\r\nList-Id: <plain.lists.example.org>\r\n\r\nHi\r\n")
    egress.append(("plain-bounces@lists.example.org", ["m01@members.example"], esc))
    with DNSServer(demo_zone(CORPUS)) as dns, Sink() as sink, Sink(lmtp=True) as mailman:
        keys = make_list_keys(workdir, dns)
        cfg = demo_config(workdir, sink.port, dns.nameserver, keys, mailman.port)
        if store_url:
            cfg = with_overrides(cfg, store={"url": store_url})
        with ThreadedServer(cfg) as srv:
            assert send_ingress(srv.ingress_port, sent) == 0
            store = srv.relay.store
            assert store.wait_handled(2 * len(sent))
            # The MTA: one recipient deferred at RCPT (plain-01's first transaction has
            # m12), plain-17's first transaction deferred at DATA (Mailman sends it
            # again), verp-01's last transaction refused at DATA.
            sink.inject("RCPT", "450 4.2.1 m12 mailbox busy", "m12@members.example")
            plan = []
            for mail_from, rcpts, data in egress:
                if (mail_from, rcpts, data) == _out("plain-17-unsigned")[0]:
                    plan += [("451 4.3.0 try again later", mail_from, rcpts, data),
                             (None, mail_from, rcpts, data)]
                elif (mail_from, rcpts, data) == _out("verp-01-plain-text")[-1]:
                    plan.append(("554 5.7.1 refused by policy", mail_from, rcpts, data))
                else:
                    plan.append((None, mail_from, rcpts, data))
            with smtplib.SMTP("127.0.0.1", srv.port, timeout=30) as client:
                for refusal, mail_from, rcpts, data in plan:
                    if refusal:
                        sink.inject("DATA", refusal)
                    try:
                        client.sendmail(mail_from, rcpts, data)
                    except smtplib.SMTPDataError as exc:
                        assert refusal and str(exc.smtp_code) == refusal[:3]
            assert store.wait_handled(2 * len(sent) + len(plan))
            bounce = (CORPUS.parent / "bounces" / "postfix" / "gmail-dmarc.eml").read_bytes()
            assert _lmtp_bounce(srv.ingress_port, "plain-bounces@lists.example.org", bounce) == 250
            assert store.wait_handled(2 * len(sent) + len(plan) + 2)
        received = {}
        for m in sink.messages:
            received.setdefault(m.data, m)
    conf = workdir / "relist.toml"
    section = f'url = "{store_url}"' if store_url else f'path = "{workdir / "relist.db"}"'
    conf.write_text(f'[store]\n{section}\n'
                    '[lists."plain@lists.example.org"]\nmode = "preserve"\n')
    return {"conf": conf, "db": workdir / "relist.db", "sink": list(sink.messages), "cfg": cfg}
