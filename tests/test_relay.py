"""Client -> relist -> fake MTA, all real SMTP on 127.0.0.1 (issue: relay core)."""

from __future__ import annotations

import smtplib
import sqlite3
import time
import json

import pytest

from relist.core import pipeline
from relist.sandbox.sink import Sink
from tests.helpers import client, split_added, wait_for

MSG = (b"From: Poster <poster@poster.example>\r\n"
       b"To: test@lists.example.org\r\n"
       b"Subject:   spaced   subject\r\n"
       b"Message-ID: <m1@poster.example>\r\n"
       b"List-Id: Test list <test.lists.example.org>\r\n"
       b"\r\n"
       b"Hello.\r\n.leading dot\r\n")
SENDER = "test-bounces@lists.example.org"
# What the default list settings (resign mode, list_headers = "keep", add_sender = true)
# add at the end of the header: the missing List-* fields and Sender.  Nothing else
# changes below relist's trace and results fields.
ADDED = (b"List-Help: <mailto:test-request@lists.example.org?subject=help>\r\n"
         b"List-Unsubscribe: <mailto:test-leave@lists.example.org>\r\n"
         b"List-Subscribe: <mailto:test-join@lists.example.org>\r\n"
         b"List-Post: <mailto:test@lists.example.org>\r\n"
         b"List-Owner: <mailto:test-owner@lists.example.org>\r\n"
         b"Sender: test-bounces@lists.example.org\r\n")


def listed(message: bytes) -> bytes:
    return message.replace(b"\r\n\r\n", b"\r\n" + ADDED + b"\r\n", 1)


OUT = listed(MSG)




def test_all_accepted(relist_server, sink):
    with client(relist_server.port) as c:
        refused = c.sendmail(SENDER, ["a@example.com", "b@example.com"], MSG)
    assert refused == {}
    assert len(sink.messages) == 1
    got = sink.messages[0]
    assert got.mail_from == SENDER
    assert got.rcpt_tos == ["a@example.com", "b@example.com"]
    added, rest = split_added(got.data)
    assert added == [b"authentication-results", b"received"] and rest == OUT
    assert b"Received: from mailman.test ([127.0.0.1])\r\n\tby relist.test (relist)" in got.data


def test_byte_identical_pass_through(relist_factory, sink):
    srv = relist_factory({"server": {"add_received": False}})
    odd = MSG.replace(b"Hello.", b"caf\xc3\xa9 \xff raw 8-bit\tand\ttabs   ") + b"no final newline"
    with client(srv.port) as c:
        c.sendmail(SENDER, ["a@example.com"], odd)
    # smtplib appends CRLF to data that lacks it; below relist's own
    # Authentication-Results, everything is untouched.
    added, rest = split_added(sink.messages[0].data)
    assert added == [b"authentication-results"]
    assert rest == listed(odd) + b"\r\n"


def test_trace_and_results_are_the_only_changes(relist_server, sink):
    with client(relist_server.port) as c:
        c.sendmail(SENDER, ["a@example.com"], MSG)
    data = sink.messages[0].data
    added, rest = split_added(data)
    assert rest == OUT
    assert b"for <a@example.com>;" in data[:len(data) - len(OUT)]
    assert data.startswith(b"Authentication-Results: relist.test;")


def test_some_rcpt_refused_reported_per_recipient(relist_server, sink):
    sink.inject("RCPT", "550 5.1.1 <bad@example.com>: Recipient address rejected", "bad@example.com")
    sink.inject("RCPT", "452 4.2.2 Mailbox full", "full@example.com")
    with client(relist_server.port) as c:
        c.mail(SENDER)
        assert c.rcpt("ok@example.com")[0] == 250
        code, text = c.rcpt("bad@example.com")
        assert (code, text) == (550, b"5.1.1 <bad@example.com>: Recipient address rejected")
        code, text = c.rcpt("full@example.com")
        assert (code, text) == (452, b"4.2.2 Mailbox full")
        code, text = c.data(MSG)
        assert code == 250 and text.startswith(b"2.0.0 Ok: queued")
    assert sink.messages[0].rcpt_tos == ["ok@example.com"]


def test_upstream_mail_refusal_passed_through(relist_server, sink):
    sink.inject("MAIL", "553 5.7.1 Sender address rejected")
    with client(relist_server.port) as c:
        code, text = c.mail(SENDER)
    assert (code, text) == (553, b"5.7.1 Sender address rejected")
    assert sink.messages == []


def test_upstream_down_is_451(relist_factory, sink):
    srv = relist_factory(upstream={"port": 1, "host": "127.0.0.1", "connect_timeout": 1,
                                   "timeout": 1, "helo": "x", "pool_size": 1})
    with client(srv.port) as c:
        code, text = c.mail(SENDER)
    assert code == 451
    assert text.startswith(b"4.4.1 ")


def test_upstream_hangs_past_timeout(relist_factory, sink):
    sink.hang_seconds = 5
    srv = relist_factory({"upstream": {"timeout": 1, "data_timeout": 1}})
    sink.inject("DATA", "hang")
    started = time.monotonic()
    with client(srv.port) as c:
        c.mail(SENDER)
        c.rcpt("a@example.com")
        code, text = c.data(MSG)
    assert code == 451 and text.startswith(b"4.4.2")
    assert time.monotonic() - started < 4
    assert sink.messages == []


def test_upstream_hangs_on_rcpt(relist_factory, sink):
    sink.hang_seconds = 5
    srv = relist_factory({"upstream": {"timeout": 1}})
    sink.inject("RCPT", "hang")
    with client(srv.port) as c:
        c.mail(SENDER)
        code, text = c.rcpt("a@example.com")
    assert code == 451 and text.startswith(b"4.4.2")


def test_upstream_drops_mid_data_then_retry_delivers_once(relist_server, sink):
    sink.inject("DATA", "drop-mid-data")
    with client(relist_server.port) as c:
        with pytest.raises(smtplib.SMTPDataError) as err:
            c.sendmail(SENDER, ["a@example.com"], MSG)
        assert err.value.smtp_code == 451
        # Mailman retries: same connection, next transaction.
        assert c.sendmail(SENDER, ["a@example.com"], MSG) == {}
    assert len(sink.messages) == 1
    assert sink.messages[0].data.endswith(OUT)


def test_upstream_final_reply_is_relists_reply(relist_server, sink):
    sink.inject("DATA", "554 5.7.1 Message rejected by content filter")
    with client(relist_server.port) as c:
        c.mail(SENDER)
        c.rcpt("a@example.com")
        assert c.data(MSG) == (554, b"5.7.1 Message rejected by content filter")


class Boom:
    NAME = "boom"

    @staticmethod
    def apply(work, ctx):
        raise KeyError("original_sender")


class OutOfMemory:
    NAME = "oom"

    @staticmethod
    def apply(work, ctx):
        raise MemoryError()


def test_a_step_that_raises_is_skipped_and_recorded_not_a_4xx(relist_server, sink, tmp_path):
    # The same bytes would raise again on every retry: a 451 would keep the post in
    # Mailman's queue for days.  The step is skipped, the post relayed, the error recorded.
    relay = relist_server.relay
    relay.steps = pipeline.STEPS + (Boom,)
    with client(relist_server.port) as c:
        assert c.sendmail(SENDER, ["a@example.com"], MSG) == {}
    assert len(sink.messages) == 1
    store = relay.store
    assert store.wait_handled(1)
    db = sqlite3.connect(tmp_path / "relist.db")
    (steps,) = db.execute("SELECT steps FROM transactions").fetchone()
    (boom,) = [n for n in json.loads(steps) if n["step"] == "boom"]
    assert boom["detail"].startswith("internal error in step boom: KeyError")


def test_an_error_the_next_attempt_may_not_meet_is_451_not_500(relist_server, sink):
    relay = relist_server.relay
    relay.steps = pipeline.STEPS + (OutOfMemory,)
    with client(relist_server.port) as c:
        c.mail(SENDER)
        c.rcpt("a@example.com")
        code, text = c.data(MSG)
        assert code == 451
        assert text.startswith(b"4.3.0 relist: internal error (id ")
        assert b"MemoryError" not in text  # internals are logged, not told to the client
        # The session is still usable and the next message goes through.
        relay.steps = pipeline.STEPS
        assert c.sendmail(SENDER, ["a@example.com"], MSG) == {}
    assert len(sink.messages) == 1


def test_client_not_allowed_gets_554(relist_factory):
    srv = relist_factory({"server": {"allowed_clients": ["192.0.2.0/24"]}})
    with pytest.raises(smtplib.SMTPConnectError) as err:
        smtplib.SMTP("127.0.0.1", srv.port, timeout=5)
    assert err.value.smtp_code == 554


def test_oversize_is_552(relist_factory, sink):
    srv = relist_factory({"server": {"max_message_size": 1000}})
    with client(srv.port) as c:
        assert c.has_extn("size") and c.esmtp_features["size"] == "1000"
        c.mail(SENDER)
        c.rcpt("a@example.com")
        code, _ = c.data(MSG + b"x" * 2000 + b"\r\n")
        assert code == 552
        # A SIZE= declaration over the limit is refused at MAIL.
        c.rset()
        code, _ = c.mail(SENDER, ["SIZE=5000"])
        assert code == 552
        # and the connection still relays a message that fits.
        c.rset()
        assert c.sendmail(SENDER, ["a@example.com"], MSG) == {}
    assert len(sink.messages) == 1


def test_ehlo_follows_upstream_capabilities(relist_factory, tmp_path):
    plain = Sink(eightbitmime=False, smtputf8=False).start()
    try:
        srv = relist_factory(upstream={"port": plain.port, "host": "127.0.0.1", "timeout": 2,
                                       "connect_timeout": 2, "helo": "relist.test", "pool_size": 2})
        with client(srv.port) as c:
            assert c.has_extn("pipelining")
            assert not c.has_extn("8bitmime")
            assert not c.has_extn("smtputf8")
    finally:
        plain.stop()


def test_ehlo_offers_8bitmime_and_smtputf8_when_upstream_does(relist_server):
    with client(relist_server.port) as c:
        assert c.has_extn("8bitmime") and c.has_extn("smtputf8") and c.has_extn("pipelining")


def test_several_transactions_and_rset_reuse_upstream(relist_server, sink):
    with client(relist_server.port) as c:
        for i in range(5):
            assert c.sendmail(SENDER, [f"m{i}@example.com"], MSG) == {}
        c.mail(SENDER)
        c.rcpt("x@example.com")
        assert c.rset()[0] == 250
        assert c.sendmail(SENDER, ["last@example.com"], MSG) == {}
    assert ([m.rcpt_tos for m in sink.messages]
            == [[f"m{i}@example.com"] for i in range(5)] + [["last@example.com"]])
    assert sink.connections == 1  # one pooled upstream connection served all of them


def test_store_records_each_transaction(relist_server, sink, tmp_path):
    sink.inject("RCPT", "550 5.1.1 unknown", "bad@example.com")
    with client(relist_server.port) as c:
        c.sendmail(SENDER, ["a@example.com", "bad@example.com"], MSG)
    store = relist_server.relay.store
    assert wait_for(lambda: store.written >= 1)
    db = sqlite3.connect(tmp_path / "relist.db")
    row = db.execute("SELECT relist_id, mail_from, rcpt_tos, message_id, list_address, size_in, "
                     "steps, upstream, reply, client_ip FROM transactions").fetchone()
    relist_id, mail_from, rcpts, mid, lst, size, steps, upstream, reply, ip = row
    assert len(relist_id) == 16 and mail_from == SENDER
    assert json.loads(rcpts) == ["a@example.com"]
    assert mid == "<m1@poster.example>" and lst == "test@lists.example.org"
    assert size == len(MSG)
    assert [s["step"] for s in json.loads(steps)] == list(pipeline.step_names())
    assert [s["step"] for s in json.loads(steps)][:5] == ["parse", "identify", "verify", "repair", "mode"]
    up = json.loads(upstream)
    assert up["bad@example.com"] == "550 5.1.1 unknown"
    assert up["DATA"].startswith("250 2.0.0")
    assert reply.startswith("250 ") and ip == "127.0.0.1"


def test_store_failure_does_not_stop_mail(relist_server, sink):
    store = relist_server.relay.store
    store._conn.execute("DROP TABLE transactions")  # every insert now fails
    with client(relist_server.port) as c:
        assert c.sendmail(SENDER, ["a@example.com"], MSG) == {}
    assert len(sink.messages) == 1
    assert wait_for(lambda: store.failures >= 1)


@pytest.mark.parametrize("sender",
                         ["", '"odd local"@example.com', "list-bounces+m=example.com@lists.example.org"],
                         ids=["null-sender", "quoted-local-part", "verp"])
def test_envelope_sender_forms_relay_unchanged(relist_server, sink, sender):
    with client(relist_server.port) as c:
        assert c.sendmail(sender, ["a@example.com"], MSG) == {}
    # aiosmtpd (the sink) writes the null reverse-path as "<>".
    assert sink.messages[0].mail_from == (sender or "<>")
    assert relist_server.relay.counters["relayed"] == 1


def test_a_bug_in_a_hook_is_a_4xx_the_client_retries(relist_server, sink, monkeypatch):
    """An exception a hook did not expect reaches aiosmtpd's handle_exception: relist
    answers 451 (try again), never aiosmtpd's default 500, which Mailman would take as
    a permanent failure for every recipient."""
    from relist.edge.smtp_in import RelayHandler

    async def broken(self, server, session, envelope, address, rcpt_options):
        raise RuntimeError("bug in RCPT")
    monkeypatch.setattr(RelayHandler, "handle_RCPT", broken)
    with client(relist_server.port) as c:
        assert c.mail(SENDER)[0] == 250
        code, text = c.rcpt("a@example.com")
    assert code == 451 and b"internal error" in text
    assert sink.messages == []
