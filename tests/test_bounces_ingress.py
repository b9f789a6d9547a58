"""Issue 13 through the real path: a bounce for a list's bounce address arrives at the
ingress leg (LMTP), is classified, tied to relist's record of the post, recorded, and
delivered to Mailman (or, auth_bounces = "owner", to LIST-owner@)."""

from __future__ import annotations

import email
import json
import re
import smtplib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from relist.demo import demo_zone
from relist.sandbox.sink import Sink
from relist.server import ThreadedServer
from tests.helpers import make_config, split_added

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "fixtures" / "mailman" / "cases"
BOUNCES = ROOT / "fixtures" / "bounces"
LIST = "plain@lists.example.org"


@pytest.fixture
def mailman():
    s = Sink(lmtp=True).start()
    yield s
    s.stop()


def start(tmp_path, sink, mailman, dns_server, auth_bounces="mailman"):
    dns_server.zone.update({k.lower(): v for k, v in demo_zone(ROOT / "fixtures" / "mailman").items()})
    data = {"ingress": {"deliver_to": f"lmtp:127.0.0.1:{mailman.port}"},
            "lists": {LIST: {"sign": False, "auth_bounces": auth_bounces}}}
    cfg = make_config(tmp_path, sink.port, data, nameserver=dns_server.nameserver,
                      ingress={"listen": ("127.0.0.1", 0)})
    conf = tmp_path / "relist.toml"
    conf.write_text(f'[store]\npath = "{tmp_path / "relist.db"}"\n')
    return ThreadedServer(cfg).start(), conf


def relay_post(srv, case: str) -> None:
    """The egress leg relays the corpus transaction, so there is a record of the post."""
    meta = json.loads((CASES / case / "out-01.json").read_text())
    with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as c:
        c.ehlo("mailman.test")
        c.sendmail(meta["mail_from"], meta["rcpt_tos"], (CASES / case / "out-01.eml").read_bytes())


def lmtp_bounce(port: int, rcpt: str, data: bytes) -> tuple[int, bytes]:
    c = smtplib.LMTP("127.0.0.1", port, timeout=10)
    c.ehlo_or_helo_if_needed()
    c.mail("")
    assert c.rcpt(rcpt)[0] == 250
    reply = c.data(data)
    c.quit()
    return reply


def on_the_wire(data: bytes) -> bytes:
    """``data`` as smtplib sends it (CRLF line ends, a final CRLF)."""
    data = re.sub(rb"(?:\r\n|\n|\r(?!\n))", b"\r\n", data)
    return data if data.endswith(b"\r\n") else data + b"\r\n"


def bounces_json(conf: Path, *args: str) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "relist", "bounces", "--json", "-c", str(conf), *args],
                         capture_output=True, check=True, cwd=ROOT)
    return json.loads(out.stdout)


def egress_id(srv, message_id: str) -> str:
    import sqlite3
    db = sqlite3.connect(srv.relay.config.store["path"])
    (rid,), = db.execute("SELECT relist_id FROM transactions WHERE message_id = ? "
                         "AND list_address IS NOT NULL", (message_id,)).fetchall()
    return rid


CONTRACT = {"time", "list", "recipient", "cause", "permanent", "status", "diagnostic", "message_id",
            "relist_id", "poster_domain", "action"}


def test_mailman_action_records_and_passes_every_bounce(tmp_path, sink, mailman, dns_server):
    srv, conf = start(tmp_path, sink, mailman, dns_server)
    try:
        relay_post(srv, "plain-01-plain-text")
        relay_post(srv, "plain-20-reply-to")
        srv.relay.store.wait_handled(2)
        sent = []
        for name, rcpt in (("gmail-dmarc", "plain-bounces@lists.example.org"),
                           ("mailbox", "plain-bounces+m08=members.example@lists.example.org"),
                           ("never-relayed", "plain-bounces@lists.example.org")):
            raw = (BOUNCES / "postfix" / f"{name}.eml").read_bytes()
            assert lmtp_bounce(srv.ingress_port, rcpt, raw)[0] == 250
            sent.append((rcpt, on_the_wire(raw)))
        # 2 egress records + per bounce its transaction record (with its bounce rows)
        assert srv.relay.store.wait_handled(2 + 3)
        plain01 = egress_id(srv, "<plain-01@poster.example>")
        plain20 = egress_id(srv, "<plain-20@poster.example>")
    finally:
        srv.stop()
    # Mailman got each bounce, to the bounce address, unchanged below relist's fields.
    assert [(m.rcpt_tos, split_added(m.data)) for m in mailman.messages] == [
        ([rcpt], ([b"authentication-results", b"received"], raw)) for rcpt, raw in sent]
    rows = bounces_json(conf)
    assert all(CONTRACT <= set(r) for r in rows)
    got = sorted((r["recipient"], r["cause"], r["status"], r["relist_id"], r["message_id"],
                  r["poster_domain"], r["action"], r["permanent"], r["list"]) for r in rows)
    assert got == [
        ("m01@members.example", "dmarc", "5.7.26", plain01, "<plain-01@poster.example>", "poster.example",
         "mailman", True, LIST),
        ("m08@members.example", "mailbox", "5.1.1", plain20, "<plain-20@poster.example>", "poster.example",
         "mailman", True, LIST),
        ("m09@members.example", "mailbox", "5.2.2", plain20, "<plain-20@poster.example>", "poster.example",
         "mailman", True, LIST),
        ("victim@elsewhere.example", "mailbox", "5.1.1", None, "<5f2c9a0e1b@bulk.example>", "bulk.example",
         "mailman", True, LIST),
    ]
    assert "550" in next(r["diagnostic"] for r in rows if r["cause"] == "dmarc")
    assert [r["recipient"] for r in bounces_json(conf, "--cause", "dmarc")] == ["m01@members.example"]
    assert bounces_json(conf, "--list", "other@lists.example.org") == []
    assert len(bounces_json(conf, "--since", "1h")) == 4
    table = subprocess.run([sys.executable, "-m", "relist", "bounces", "-c", str(conf)], capture_output=True,
                           text=True, check=True, cwd=ROOT).stdout
    assert "m01@members.example" in table and "dmarc" in table and "unknown" in table


def test_owner_action_routes_authentication_bounces_to_the_owner(tmp_path, sink, mailman, dns_server):
    srv, conf = start(tmp_path, sink, mailman, dns_server, auth_bounces="owner")
    try:
        relay_post(srv, "plain-01-plain-text")
        relay_post(srv, "plain-20-reply-to")
        srv.relay.store.wait_handled(2)
        dmarc = (BOUNCES / "postfix" / "gmail-dmarc.eml").read_bytes()
        full = (BOUNCES / "postfix" / "mailbox.eml").read_bytes()
        assert lmtp_bounce(srv.ingress_port, "plain-bounces@lists.example.org", dmarc)[0] == 250
        verp = "plain-bounces+m08=members.example@lists.example.org"
        assert lmtp_bounce(srv.ingress_port, verp, full)[0] == 250
        assert srv.relay.store.wait_handled(2 + 2)
        plain01 = egress_id(srv, "<plain-01@poster.example>")
    finally:
        srv.stop()
    owner, member = mailman.messages
    # The DMARC bounce: to LIST-owner@, an explanation on top of the bounce as it arrived.
    assert owner.rcpt_tos == ["plain-owner@lists.example.org"] and owner.mail_from in ("", "<>")
    _, notice = split_added(owner.data)
    msg = email.message_from_bytes(notice)
    assert msg.get_content_type() == "multipart/mixed"
    text, attached = msg.get_payload()
    explanation = text.get_payload(decode=True).decode()
    assert "poster.example" in explanation and "p=reject" in explanation
    assert "gmail-smtp-in.l.google.com" in explanation or "5.7.26" in explanation
    assert plain01 in explanation
    assert attached.get_content_type() == "message/rfc822"
    assert notice.split(b"Content-Description: the bounce as it arrived\r\n\r\n", 1)[1].startswith(
        on_the_wire(dmarc))
    # The mailbox-full bounce: to Mailman, unchanged.
    assert member.rcpt_tos == ["plain-bounces+m08=members.example@lists.example.org"]
    assert split_added(member.data)[1] == on_the_wire(full)
    actions = {r["cause"]: r["action"] for r in bounces_json(conf)}
    assert actions == {"dmarc": "owner", "mailbox": "mailman"}


def owner_refused(tmp_path, sink, mailman, dns_server, reply: str, records: int = 0) -> tuple[int, bytes]:
    """A DMARC bounce for plain-bounces@ with ``auth_bounces = "owner"``, Mailman answering
    ``reply`` for plain-owner@: the ingress leg's reply code and the bounce as sent
    (``records``: how many store items to wait for before relist stops)."""
    srv, _ = start(tmp_path, sink, mailman, dns_server, auth_bounces="owner")
    mailman.inject("RCPT", reply, "plain-owner@lists.example.org")
    try:
        dmarc = (BOUNCES / "postfix" / "gmail-dmarc.eml").read_bytes()
        code, _ = lmtp_bounce(srv.ingress_port, "plain-bounces@lists.example.org", dmarc)
        if records:
            assert srv.relay.store.wait_handled(records)
    finally:
        srv.stop()
    return code, dmarc


def test_owner_refused_for_now_is_a_4xx(tmp_path, sink, mailman, dns_server):
    """The MTA brings the bounce again: its rows are recorded when it is taken, once."""
    code, _ = owner_refused(tmp_path, sink, mailman, dns_server,
                            "452 4.3.1 <plain-owner@lists.example.org> try later", records=1)
    assert code == 451 and mailman.messages == []
    with sqlite3.connect(str(tmp_path / "relist.db")) as db:
        (reply,) = [r for (r,) in db.execute("select reply from transactions")]
        assert reply.startswith("451 4.4.2") and "452 4.3.1" in reply
        assert db.execute("select count(*) from bounces").fetchone() == (0,)


def test_owner_refused_for_good_delivers_the_bounce_as_addressed(tmp_path, sink, mailman, dns_server):
    """A 5xx for LIST-owner@ would come back on every retry: the bounce goes to the
    bounce address as it arrived (Mailman's bounce processing), never a 451 loop."""
    code, dmarc = owner_refused(tmp_path, sink, mailman, dns_server,
                                "550 5.1.1 <plain-owner@lists.example.org> no such list", records=1)
    assert code == 250
    (delivered,) = mailman.messages
    assert delivered.rcpt_tos == ["plain-bounces@lists.example.org"]
    assert delivered.data.replace(b"\r\n", b"\n") == on_the_wire(dmarc).replace(b"\r\n", b"\n")
    with sqlite3.connect(str(tmp_path / "relist.db")) as db:
        (facts,) = [json.loads(f) for (f,) in db.execute(
            "select facts from transactions where facts like '%reroute_refused%'")]
        # The bounce's rows say where it went: to Mailman, not to the owner.
        actions = [a for (a,) in db.execute("select action from bounces")]
    assert facts["bounce"] == "mailman" and "550 5.1.1" in facts["reroute_refused"]
    assert "deliver_rcpts" not in facts
    assert actions == ["mailman"]


def test_a_bounce_relist_cannot_read_still_reaches_mailman(tmp_path, sink, mailman, dns_server, monkeypatch):
    # A bug in reading these bytes would meet them again on every retry: never a 451 loop.
    from relist.core.bounce import wiring

    def broken(*args, **kwargs):
        raise ValueError("boom")
    monkeypatch.setattr(wiring, "read_all", broken)
    srv, _ = start(tmp_path, sink, mailman, dns_server)
    try:
        dmarc = (BOUNCES / "postfix" / "gmail-dmarc.eml").read_bytes()
        code, _ = lmtp_bounce(srv.ingress_port, "plain-bounces@lists.example.org", dmarc)
    finally:
        srv.stop()
    assert code == 250 and len(mailman.messages) == 1


def test_duration():
    from datetime import timedelta

    from relist.cli.bounces import duration
    assert duration("7d") == timedelta(days=7) and duration("12h") == timedelta(hours=12)
    assert duration("30m") == timedelta(minutes=30) and duration("1d12h") == timedelta(hours=36)
    with pytest.raises(Exception):
        duration("soon")


def test_read_takes_the_member_from_verp_when_the_bounce_names_none():
    from relist.core.bounce.wiring import action, read
    b = read(b"From: someone@example.net\r\nSubject: x\r\n\r\nIt did not work.\r\n",
             "plain-bounces+Bob=Example.NET@lists.example.org", [LIST])
    assert [(e.recipient, e.cause) for e in b.entries] == [("Bob@example.net", "other")]
    assert action(b, "owner") == "mailman"
    assert read(b"Subject: x\r\n\r\n", "plain@lists.example.org", [LIST]) is None
    dmarc = read((BOUNCES / "postfix" / "gmail-dmarc.eml").read_bytes(), "plain-bounces@lists.example.org",
                 [LIST])
    assert (dmarc.authentication and action(dmarc, "owner") == "owner"
            and action(dmarc, "mailman") == "mailman")
