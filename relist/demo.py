"""``relist demo``: relist's main job on an embedded default, nothing else needed.

Starts, all on 127.0.0.1: a DNS server holding the demo keys, a sink standing in
for the outgoing MTA, and relist itself (one process, store in a temporary
directory).  Then it replays every SMTP transaction of the ``fixtures/mailman``
corpus (what a real Mailman 3 sent) through relist over SMTP and prints, per
message, what relist did, reading it back from the store.
"""

from __future__ import annotations

import json
import smtplib
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from relist.config import parse, with_overrides
from relist.sandbox.dnsserver import DNSServer
from relist.sandbox.sink import Sink
from relist.server import ThreadedServer, setup_logging

__all__ = ["Transaction", "load_corpus", "run"]

DEFAULT_FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "mailman"

# Used when relist is installed without its source tree (no fixtures directory).
BUILTIN = (
    "From: Poster <poster@poster.example>\r\nTo: plain@lists.example.org\r\n"
    "Subject: Hello list\r\nDate: Sat, 21 Nov 2026 10:00:00 +0000\r\n"
    "Message-ID: <builtin-1@poster.example>\r\nList-Id: <plain.lists.example.org>\r\n"
    "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    "A built-in demo post.\r\nFrom the demo.\r\n"
).encode()


@dataclass
class Transaction:
    name: str
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


def load_corpus(root: Path) -> list[Transaction]:
    """Every recorded Mailman transaction under ``root`` (cases/*/out-*.eml, notices/...)."""
    out = []
    for eml in sorted(root.glob("*/*/out-*.eml")):
        meta = json.loads(eml.with_suffix(".json").read_text())
        out.append(Transaction(f"{eml.parent.name}/{eml.stem}", meta["mail_from"],
                               list(meta["rcpt_tos"]), eml.read_bytes()))
    return out


def demo_zone(root: Path) -> dict:
    dns_json = root / "dns.json"
    return json.loads(dns_json.read_text()) if dns_json.exists() else {}


def demo_config(workdir: Path, sink_port: int, nameserver: str):
    cfg = parse({
        "server": {"hostname": "relist.demo", "workers": 1},
        "store": {"path": str(workdir / "relist.db")},
        "dns": {"nameservers": [nameserver], "timeout": 2},
        "upstream": {"port": sink_port, "timeout": 10},
        "lists": {
            "plain@lists.example.org": {"mode": "preserve"},
            "decorated@lists.example.org": {"mode": "resign", "footer": "-- \n{list_name} list\n",
                                            "subject_prefix": "[{list_name}] "},
        },
    })
    return with_overrides(cfg, server={"listen": ("127.0.0.1", 0)})


def run(verbose: bool = False, fixtures: str | None = None, out=None) -> int:
    out = out or sys.stdout
    root = Path(fixtures) if fixtures else DEFAULT_FIXTURES
    corpus = load_corpus(root) if root.is_dir() else []
    if not corpus:
        print(f"(no corpus under {root}; using the built-in sample post)", file=out)
        corpus = [Transaction("builtin/out-01", "plain-bounces@lists.example.org",
                              ["member@example.com"], BUILTIN)]
    setup_logging("warning")
    with tempfile.TemporaryDirectory(prefix="relist-demo-") as tmp, \
            DNSServer(demo_zone(root)) as dns_server, Sink() as sink:
        workdir = Path(tmp)
        cfg = demo_config(workdir, sink.port, dns_server.nameserver)
        with ThreadedServer(cfg) as relist:
            print(f"relist demo: relist on 127.0.0.1:{relist.port} -> sink MTA on 127.0.0.1:{sink.port}, "
                  f"DNS on {dns_server.nameserver}; {len(corpus)} transactions from {root}", file=out)
            replies = []
            with smtplib.SMTP("127.0.0.1", relist.port, timeout=30) as client:
                client.ehlo("mailman.demo")
                for tx in corpus:
                    try:
                        client.sendmail(tx.mail_from, tx.rcpt_tos, tx.data)
                        replies.append("250")
                    except smtplib.SMTPException as exc:
                        replies.append(str(getattr(exc, "smtp_code", exc)))
            store = relist.relay.store
            deadline = time.monotonic() + 10
            while store.written + store.failures < len(corpus) and time.monotonic() < deadline:
                time.sleep(0.05)
        db = sqlite3.connect(workdir / "relist.db")
        rows = db.execute("SELECT relist_id, list_address, steps, reply, size_in, size_out, duration_ms "
                          "FROM transactions ORDER BY rowid").fetchall()
        failures = sum(not code.startswith("2") for code in replies)
        # One client connection, one transaction at a time: rows are in corpus order.
        for tx, row in zip(corpus, rows):
            relist_id, lst, steps, reply, size_in, size_out, ms = row
            print(f"\n{tx.name}  {relist_id}  list={lst or '-'}  from=<{tx.mail_from}> "
                  f"nrcpt={len(tx.rcpt_tos)}  {size_in}->{size_out} bytes  {ms:.1f} ms\n"
                  f"    reply: {reply}", file=out)
            for n in json.loads(steps):
                print(f"    {n['step']:<16} {n['action']:<9} {n['detail']}", file=out)
        print(f"\nsink received {len(sink.messages)} messages; {failures} transaction(s) not accepted", file=out)
        if verbose:
            for m in sink.messages:
                head = m.data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
                print("\n" + head, file=out)
        return 1 if failures else 0
