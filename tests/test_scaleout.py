"""Scale-out (issue 16): two ``relist serve`` processes, on their own ports, sharing one
PostgreSQL store (tests/pgserver.py), as two relay hosts behind Postfix would.

Every post of the Mailman corpus (fixtures/mailman) goes through instance A's ingress
leg (LMTP, on to a stand-in Mailman), and Mailman's transactions for it go through
instance B's egress leg right after A answered: B finds A's ingress copy in the shared
store, repairs what Mailman broke and keeps every poster signature, as one instance
does (the demo's 42/42).  A control instance with a store of its own (no copies) shows
that this is the copies' doing.  Then PostgreSQL is stopped: mail still flows through
both instances, and the records (kept in memory meanwhile) are written when it returns.
"""

from __future__ import annotations

import json
import os
import signal
import smtplib
import socket
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from relist.demo import demo_zone, load_corpus, load_posts, make_list_keys, receiver_view
from relist.edge.store import open_reader
from relist.sandbox.dnsserver import DNSServer
from relist.sandbox.sink import Sink
from tests.helpers import FIXTURES, ROOT, wait_for
from tests.pgserver import PASSWORD, free_port

CORPUS = FIXTURES / "mailman"
LISTS = "lists.example.org"

pytestmark = pytest.mark.skipif(not (CORPUS / "cases").is_dir(), reason=f"Mailman corpus absent ({CORPUS})")


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(v)     # a TOML basic string, for what is written here


def write_toml(path: Path, data: dict) -> None:
    lines = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")


class Instance:
    """One ``relist serve`` process; its log in ``log``."""

    def __init__(self, name: str, workdir: Path, store: dict, *, sink: int, mailman: int, nameserver: str,
                 keys: dict[str, str]):
        self.name = name
        self.port, self.ingress_port = free_port(), free_port()
        signing = {"selector": "demo-rsa", "private_key": keys["rsa"], "ed25519_selector": "demo-ed",
                   "ed25519_private_key": keys["ed25519"], "arc_seal": True}
        data = {
            "server": {"listen": f"127.0.0.1:{self.port}", "hostname": f"relist-{name}.test", "workers": 1},
            "upstream": {"port": sink, "timeout": 10},
            "store": store,
            "dns": {"nameservers": [nameserver], "timeout": 2},
            "ingress": {"listen": f"127.0.0.1:{self.ingress_port}",
                        "deliver_to": f"lmtp:127.0.0.1:{mailman}"},
            # relist/demo.py's lists: undecorated (preserve), decorated (resign), auto.
            'lists."plain@lists.example.org"': {"mode": "preserve", **signing},
            'lists."decorated@lists.example.org"': {"mode": "resign", "footer": "-- \n{list_name} list\n",
                                                    "subject_prefix": "[{list_name}] ", **signing},
            'lists."verp@lists.example.org"': {"mode": "resign", **signing},
            'lists."dmarc@lists.example.org"': {"mode": "auto", **signing},
        }
        self.conf = workdir / f"{name}.toml"
        write_toml(self.conf, data)
        self.log = workdir / f"{name}.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "relist", "serve", "-c", str(self.conf)],
                                     cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"))
        for port in (self.port, self.ingress_port):
            assert wait_for(lambda: self.accepts(port), timeout=30), self.log.read_text()

    def accepts(self, port: int) -> bool:
        assert self.proc.poll() is None, self.log.read_text()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.log.read_text()


def post_then_transactions(a: Instance, b: Instance, posts, by_case) -> list[str]:
    """Each post to A's ingress leg, then at once its transactions to B's egress leg;
    the replies B gave (one per transaction)."""
    replies = []
    with smtplib.SMTP("127.0.0.1", b.port, timeout=30) as egress:
        egress.ehlo("mailman.test")
        for post in posts:
            case = post.name.split("/")[0]
            with smtplib.LMTP("127.0.0.1", a.ingress_port, timeout=30) as lmtp:
                assert lmtp.sendmail(post.mail_from, post.rcpt_tos, post.data) == {}
            for tx in by_case[case]:
                try:
                    egress.sendmail(tx.mail_from, tx.rcpt_tos, tx.data)
                    replies.append("250")
                except smtplib.SMTPException as exc:
                    replies.append(str(exc))
                    egress.rset()
    return replies


@pytest.fixture
def site(tmp_path, pg_url):
    """The shared database, DNS with the corpus's keys and the lists' keys, an MTA sink,
    a stand-in Mailman, and a password file (mode 0600) for both instances."""
    secret = tmp_path / "store.pw"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    os.environ.pop("PGPASSWORD", None)   # the instances read the file (pg_url's monkeypatch restores it)
    with DNSServer(demo_zone(CORPUS)) as dns, Sink() as sink, Sink(lmtp=True) as mailman:
        keys = make_list_keys(tmp_path, dns)
        store = {"url": pg_url, "password_file": str(secret)}
        yield {"store": store, "dns": dns, "sink": sink, "mailman": mailman, "keys": keys, "dir": tmp_path}


def start(site, name: str, store: dict | None = None) -> Instance:
    return Instance(name, site["dir"], store or site["store"], sink=site["sink"].port,
                    mailman=site["mailman"].port, nameserver=site["dns"].nameserver, keys=site["keys"])


def test_instance_b_repairs_what_instance_a_received_and_mail_outlives_the_database(site, pg_server):
    posts = load_posts(CORPUS)
    by_case = defaultdict(list)
    for tx in load_corpus(CORPUS):
        by_case[tx.name.split("/")[0]].append(tx)
    sink, mailman, dns = site["sink"], site["mailman"], site["dns"]
    a, b = start(site, "a"), start(site, "b")
    logs = {}
    try:
        replies = post_then_transactions(a, b, posts, by_case)
        assert set(replies) == {"250"}, replies
        assert len(mailman.messages) == len(posts)
        shared = receiver_view(sink.messages, dns.nameserver)["poster"]
        n_shared = len(sink.messages)

        # B recorded, for each transaction, that it judged the post by A's copy (the
        # records themselves come from the writers, within about half a second).
        def recorded() -> int:
            with open_reader(site["store"]) as reader:
                return reader.query("SELECT count(*) FROM transactions")[0][0]
        assert wait_for(lambda: recorded() == len(posts) + len(replies), timeout=20)
        with open_reader(site["store"]) as reader:
            rows = reader.query("SELECT relist_id, list_address, steps, facts FROM transactions")
        egress = [r for r in rows if json.loads(r[3]).get("leg") != "ingress"]
        ingress = [r for r in rows if json.loads(r[3]).get("leg") == "ingress"]
        assert len(ingress) == len(posts) and len(egress) == len(replies)
        notes = {rid: {n["step"]: n for n in json.loads(steps)} for rid, _, steps, _ in egress}
        by_copy = [rid for rid, n in notes.items()
                   if n["verify"]["detail"].startswith("as received by ingress (ingress copy ")]
        plain = [rid for rid, lst, _, _ in egress if lst == "plain@lists.example.org"]
        assert plain and set(plain) <= set(by_copy), [notes[r]["verify"]["detail"] for r in plain]
        repaired = [rid for rid in by_copy if notes[rid]["repair"]["action"] == "applied"]
        assert repaired, "B repaired nothing"

        # Control: an instance with a store of its own finds no copy.
        control = start(site, "control", {"path": str(site["dir"] / "control.db")})
        try:
            post_then_transactions(a, control, posts, by_case)
        finally:
            logs["control"] = control.stop()
        alone = receiver_view(sink.messages[n_shared:], dns.nameserver)["poster"]
        assert shared[0] == shared[1] > 0, f"poster signatures kept with the shared store: {shared}"
        assert alone[0] < shared[0], f"without A's copies B would keep {alone} (shared: {shared})"
        print(f"poster signatures kept: {shared[0]}/{shared[1]} with the shared store, "
              f"{alone[0]}/{alone[1]} without it; {len(repaired)} transactions repaired by B")

        # The database goes away: both instances go on relaying, records wait in memory.
        delivered, handed = len(sink.messages), len(mailman.messages)
        pg_server.stop_server()
        try:
            some = posts[:3]
            replies = post_then_transactions(a, b, some, by_case)
            assert set(replies) == {"250"}, replies
            assert len(mailman.messages) == handed + len(some)
            assert len(sink.messages) == delivered + len(replies)
            during = len(replies)
        finally:
            pg_server.start_server()
        later = posts[3:5]
        replies = post_then_transactions(a, b, later, by_case)
        assert set(replies) == {"250"}
        # Every transaction recorded: the first round's, A's ingress records of the control
        # round, and both instances' of the rounds during and after the outage.
        expected = len(rows) + len(posts) + len(some) + during + len(later) + len(replies)
        assert wait_for(lambda: recorded() == expected, timeout=40), (recorded(), expected)
    finally:
        logs["a"], logs["b"] = a.stop(), b.stop()
    for name in ("a", "b"):
        said = logs[name]
        assert said.count("unavailable") <= 1 and "Traceback" not in said, said
        if "unavailable" in said:
            assert said.count("available again") == 1, said
    assert "unavailable" in logs["a"] + logs["b"]
    assert "store.pw" not in logs["a"] + logs["b"] and PASSWORD not in logs["a"] + logs["b"]
