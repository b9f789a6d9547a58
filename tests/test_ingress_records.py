"""The ingress leg's records and trace field: ``with LMTP`` (RFC 3848) in its Received,
its list in the record (recipient or List-Id), bounces without a list, and the
bounce path never taking an ingress record for the egress one."""

from __future__ import annotations

import json
import smtplib
import sqlite3
from datetime import datetime, timezone

import pytest

from relist.config import parse
from relist.core import pipeline
from relist.core.bounce.returned import from_fields
from relist.core.model import Context, Envelope
from relist.edge.store import Store
from relist.sandbox.sink import Sink
from relist.server import ThreadedServer
from tests.helpers import make_config

LIST = "dev@lists.example.org"
POST = (b"From: Poster <poster@poster.example>\r\nTo: dev@lists.example.org\r\n"
        b"Subject: hello\r\nMessage-ID: <rec-1@poster.example>\r\n\r\nHi list.\r\n")
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def mailman():
    s = Sink(lmtp=True).start()
    yield s
    s.stop()


def lmtp_send(port, rcpt, data=POST, mail_from="poster@poster.example"):
    c = smtplib.LMTP("127.0.0.1", port, timeout=10)
    c.ehlo_or_helo_if_needed()
    c.mail(mail_from)
    assert c.rcpt(rcpt)[0] == 250
    reply = c.data(data)
    c.quit()
    return reply


def rows(db_path):
    db = sqlite3.connect(db_path)
    try:
        return db.execute("SELECT relist_id, list_address, facts FROM transactions ORDER BY rowid").fetchall()
    finally:
        db.close()


def test_ingress_received_says_lmtp_and_the_record_carries_the_list(tmp_path, sink, mailman, dns_server):
    cfg = make_config(tmp_path, sink.port, {"ingress": {"deliver_to": f"lmtp:127.0.0.1:{mailman.port}"},
                                            "lists": {LIST: {"sign": False}}},
                      nameserver=dns_server.nameserver, ingress={"listen": ("127.0.0.1", 0)})
    with ThreadedServer(cfg) as srv:
        assert lmtp_send(srv.ingress_port, LIST)[0] == 250
        with smtplib.SMTP("127.0.0.1", srv.port, timeout=10) as c:
            c.sendmail("dev-bounces@lists.example.org", ["m@example.com"], POST)
        srv.relay.store.wait_handled(3, timeout=5)   # two records + the ingress copy
    data = mailman.messages[0].data
    head = data.partition(b"\r\n\r\n")[0].replace(b"\r\n\t", b" ")
    assert b"(relist) with LMTP id " in head and b"with ESMTP" not in head
    egress = sink.messages[0].data.partition(b"\r\n\r\n")[0].replace(b"\r\n\t", b" ")
    assert b"(relist) with ESMTP id " in egress and b"with LMTP" not in egress
    (in_id, in_list, in_facts), (out_id, out_list, out_facts) = rows(cfg.store["path"])
    assert (in_list, out_list) == (LIST, LIST)
    assert json.loads(in_facts).get("leg") == "ingress" and "leg" not in json.loads(out_facts)
    # The bounce path finds the egress transaction, never the ingress one (both carry the list).
    store = Store(cfg.store["path"])
    try:
        assert store.egress_of((), "<rec-1@poster.example>")[0] == out_id
        assert store.egress_of((in_id,), "") is None
        assert store.egress_of((in_id, out_id), "")[0] == out_id
    finally:
        store.close()


def test_ingress_relist_id_read_back_from_a_returned_lmtp_received():
    fields = [("Received", "from mta.example ([192.0.2.1]) by relist.test (relist) with ESMTP id "
                           "0123456789BC; Tue, 1 Dec 2026 12:00:00 +0000"),
              ("Received", "from mta.example ([192.0.2.1]) by relist.test (relist) with LMTP id "
                           "BCDFGHJKLMNP; Tue, 1 Dec 2026 11:59:00 +0000")]
    assert from_fields(fields, "message/rfc822").relist_ids == ("0123456789BC", "BCDFGHJKLMNP")


def run_ingress(rcpt, data=POST, lists=(LIST,)):
    cfg = parse({"server": {"hostname": "relist.test"}, "lists": {a: {"sign": False} for a in lists}})
    ctx = Context(Envelope("poster@poster.example", (rcpt,), protocol="LMTP"), cfg.relay, NOW, "R1")
    return pipeline.process(data, ctx, pipeline.INGRESS_STEPS)


def test_ingress_list_from_the_posting_address_or_the_list_id():
    out = run_ingress("DEV@lists.example.org")
    assert out.record.list_address == LIST
    assert b"\r\nReceived: from unknown ([unknown])\r\n\tby relist.test (relist)\r\n\twith LMTP id R1" \
        in out.message.partition(b"\r\n\r\n")[0]
    with_id = POST.replace(b"Subject:", b"List-Id: Dev <dev.lists.example.org>\r\nSubject:")
    assert run_ingress("someone-else@lists.example.org", with_id).record.list_address == LIST
    # Not a configured list's posting address (bounces, -request) and no List-Id: no list.
    for rcpt in ("dev-bounces@lists.example.org", "dev-request@lists.example.org", "other@lists.example.org"):
        out = run_ingress(rcpt)
        assert out.record.list_address is None, rcpt
        assert dict(out.record.extra)["leg"] == "ingress"


def test_egress_trace_keeps_esmtp():
    cfg = parse({"server": {"hostname": "relist.test"}})
    ctx = Context(Envelope("dev-bounces@lists.example.org", ("m@example.com",)), cfg.relay, NOW, "R1")
    out = pipeline.process(POST, ctx, pipeline.STEPS)
    assert b"\twith ESMTP id R1" in out.message.partition(b"\r\n\r\n")[0]
