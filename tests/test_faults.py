"""Fault injection: Mailman (a client that retries 4xx as Mailman does) -> relist -> a
fake MTA that misbehaves (relist.sandbox.sink), all real SMTP on 127.0.0.1.

Every scenario asserts: no message lost, no 5xx of relist's own, and a duplicate only
where the MTA queued the message and then failed to say so (``queue-then-drop``,
``queue-then-hang``: the MTA has the message, its client hears nothing or gives up
after ``[upstream] data_timeout``, tells Mailman 451, and Mailman sends it again.
No relay can avoid that one (RFC 1047); it is documented in docs/configuration.md).
"""

from __future__ import annotations

import collections
import logging
import smtplib
import sqlite3
import time
from dataclasses import dataclass, field

import pytest

from relist.sandbox.sink import Sink
from tests.helpers import client, wait_for

SENDER = "test-bounces@lists.example.org"
RCPTS = ["a@example.com", "b@example.com"]
FAST = {"upstream": {"timeout": 0.5, "data_timeout": 1, "connect_timeout": 0.5}}


def message(n: int | str, body: bytes = b"Hello.\r\n") -> bytes:
    return (f"From: Poster <poster@poster.example>\r\nTo: test@lists.example.org\r\n"
            f"Subject: fault {n}\r\nMessage-ID: <fault-{n}@poster.example>\r\n"
            f"List-Id: Test list <test.lists.example.org>\r\n\r\n").encode() + body


def message_id(data: bytes) -> str:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip().decode()
    return ""




@dataclass
class Outcome:
    attempts: int = 0
    replies: list = field(default_factory=list)     # (code, text) of every failure seen
    permanent: dict = field(default_factory=dict)   # recipient -> 5xx (must stay empty)
    delivered: bool = False


class Mailman:
    """Mailman's outgoing runner in miniature: one connection kept for several
    messages; a 4xx or a lost connection is retried (for the recipients it concerns),
    a 5xx is a permanent failure for its recipients (a bounce for the member)."""

    def __init__(self, port: int, attempts: int = 8, pause: float = 0.05):
        self.port, self.attempts, self.pause = port, attempts, pause
        self.conn: smtplib.SMTP | None = None
        self.outcomes: dict[str, Outcome] = {}

    def send(self, n, rcpts=RCPTS, body: bytes = b"Hello.\r\n") -> Outcome:
        out = self.outcomes.setdefault(f"<fault-{n}@poster.example>", Outcome())
        pending = list(rcpts)
        for _ in range(self.attempts):
            if not pending:
                break
            out.attempts += 1
            try:
                if self.conn is None:
                    self.conn = client(self.port)
                refused = self.conn.sendmail(SENDER, pending, message(n, body))
            except smtplib.SMTPRecipientsRefused as exc:
                refused = exc.recipients
            except smtplib.SMTPResponseException as exc:
                refused = {r: (exc.smtp_code, exc.smtp_error) for r in pending}
                if exc.smtp_code == 421:
                    self.conn = None     # smtplib has closed it
            except (smtplib.SMTPServerDisconnected, OSError) as exc:
                refused = {r: (0, str(exc).encode()) for r in pending}
                self.close()
            for rcpt, (code, text) in refused.items():
                out.replies.append((code, text))
                if code >= 500:
                    out.permanent[rcpt] = (code, text)
            pending = [r for r in pending if r in refused and refused[r][0] < 500]
            if pending:
                time.sleep(self.pause)
        out.delivered = not pending and not out.permanent
        return out

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.quit()
            except (smtplib.SMTPException, OSError):
                pass
            self.conn = None


def account(sink: Sink, mailman: Mailman, rcpts=RCPTS) -> tuple[list, list, dict]:
    """(lost, relist's 5xx, duplicates {(message-id, rcpt): copies}) over what was sent."""
    copies = collections.Counter((message_id(m.data), r) for m in sink.messages for r in m.rcpt_tos)
    lost = [(mid, r) for mid in mailman.outcomes for r in rcpts if copies[(mid, r)] == 0]
    fivexx = [(mid, v) for mid, out in mailman.outcomes.items() for v in out.permanent.items()]
    dups = {k: n for k, n in copies.items() if n > 1}
    return lost, fivexx, dups


# name -> (sink settings, injections, expected duplicate (message, recipient) copies)
SCENARIOS = {
    "greeting-421": ({}, [("CONNECT", "421 4.3.2 sink.test Service not available")] * 2, 0),
    "connect-drop": ({}, [("CONNECT", "drop")] * 2, 0),
    "greeting-hang": ({"hang_seconds": 2}, [("CONNECT", "hang")] * 2, 0),
    "mail-451": ({}, [("MAIL", "451 4.3.0 try again later")], 0),
    "mail-421": ({}, [("MAIL", "421 4.3.2 sink.test shutting down")] * 2, 0),
    "mail-hang": ({"hang_seconds": 2}, [("MAIL", "hang")], 0),
    "mail-drop": ({}, [("MAIL", "drop")] * 2, 0),
    "rcpt-452-one": ({}, [("RCPT", "452 4.2.2 mailbox full", "b@example.com")], 0),
    "rcpt-hang": ({"hang_seconds": 2}, [("RCPT", "hang")], 0),
    "rcpt-drop": ({}, [("RCPT", "drop")], 0),
    "data-451": ({}, [("DATA", "451 4.3.0 queue file write error")], 0),
    "data-hang-unqueued": ({"hang_seconds": 3}, [("DATA", "hang")], 0),
    "drop-mid-data": ({}, [("DATA", "drop-mid-data")], 0),
    # The MTA queued it and then failed to answer: Mailman sends it again (module doc).
    "queue-then-drop": ({}, [("DATA", "queue-then-drop")], 2),
    "queue-then-hang": ({"hang_seconds": 3}, [("DATA", "queue-then-hang")], 2),
    "slow-replies": ({"reply_delay": 0.05}, [], 0),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_fault_scenario(relist_factory, sink, name):
    settings, injections, dup_copies = SCENARIOS[name]
    for key, value in settings.items():
        setattr(sink, key, value)
    srv = relist_factory(FAST)
    for inj in injections:
        sink.inject(*inj)
    mailman = Mailman(srv.port)
    try:
        for n in range(4):
            mailman.send(n)
    finally:
        mailman.close()
    lost, fivexx, dups = account(sink, mailman)
    assert lost == [] and fivexx == []
    assert sum(n - 1 for n in dups.values()) == dup_copies, dups
    if injections and name != "slow-replies":
        assert any(out.attempts > 1 for out in mailman.outcomes.values()), "the fault never fired"
    assert not sink.injections, "an injection was never consumed"


def test_mta_down_then_back(relist_factory, sink):
    srv = relist_factory(FAST)
    mailman = Mailman(srv.port)
    port = sink.port
    try:
        mailman.send(0)
        sink.stop()
        out = mailman.send(1)                 # MTA down: every attempt deferred
        assert not out.delivered and out.permanent == {}
        assert {code for code, _ in out.replies} == {451}
        sink.start(port=port)
        out = mailman.send(1)
        assert out.delivered
    finally:
        mailman.close()
    lost, fivexx, dups = account(sink, mailman)
    assert lost == [] and fivexx == [] and dups == {}


def test_mail_deferral_is_counted_logged_and_recorded(relist_factory, sink, caplog):
    caplog.set_level(logging.INFO, logger="relist")
    srv = relist_factory(FAST)
    sink.inject("CONNECT", "421 4.3.2 sink.test Service not available")   # EHLO's look at the MTA
    sink.inject("CONNECT", "421 4.3.2 sink.test Service not available")   # the MAIL
    sink.inject("MAIL", "553 5.7.1 Sender address rejected")
    counters = srv.relay.counters
    with client(srv.port) as c:
        code, text = c.mail(SENDER)
        assert code == 451 and text.startswith(b"4.4.1")
        c.rset()
        code, text = c.mail(SENDER)
        assert (code, text) == (553, b"5.7.1 Sender address rejected")
    assert counters["mail_deferred"] == 1 and counters["mail_refused"] == 1
    assert counters["deferred"] == 1 and counters["rejected"] == 1
    log = caplog.text
    assert 'reply="451 4.4.1 relist: upstream MTA refused the connection: 421 4.3.2' in log
    assert 'nrcpt=0 size=0 steps=- reply="553 5.7.1 Sender address rejected"' in log
    store = srv.relay.store
    assert wait_for(lambda: store.written >= 2)


def test_line_over_a_mebibyte_is_relayed(relist_server, sink):
    long_line = b"x" * (3 * 1024 * 1024 + 17)     # over the reader's limit, several times
    body = b"before\r\n" + long_line + b"\r\n..dot-stuffed\r\n" + b"y" * 70000 + b"\r\nafter\r\n"
    mailman = Mailman(relist_server.port)
    try:
        out = mailman.send("long", body=body)
    finally:
        mailman.close()
    assert out.delivered and out.attempts == 1, out
    data = sink.messages[0].data
    assert data.endswith(b"\r\n\r\n" + body)


def test_oversize_with_long_lines_is_552_after_the_data(relist_factory, sink, caplog):
    caplog.set_level(logging.INFO, logger="relist")
    srv = relist_factory({"server": {"max_message_size": 100_000}})
    with client(srv.port) as c:
        c.mail(SENDER)
        c.rcpt("a@example.com")
        code, text = c.data(message("big", b"z" * 2_000_000 + b"\r\n"))
        assert code == 552 and text.startswith(b"5.3.4")
        # The MTA's transaction is reset at once, not left open until the next MAIL.
        assert wait_for(lambda: "RSET" in sink.commands, 5)
        # The session is in step: the next message goes through.
        assert c.sendmail(SENDER, ["a@example.com"], message("small")) == {}
    assert [message_id(m.data) for m in sink.messages] == ["<fault-small@poster.example>"]
    # The refusal is counted, logged and recorded like any transaction, with its size.
    assert srv.relay.counters["rejected"] == 1 and srv.relay.counters["relayed"] == 1
    (line,) = [r.getMessage() for r in caplog.records if "reply=\"552" in r.getMessage()]
    assert f"from=<{SENDER}>" in line and "nrcpt=1" in line and "size=20" in line
    size = int(line.split(" size=")[1].split()[0])
    assert size > 2_000_000
    assert srv.relay.store.wait_handled(2)
    with sqlite3.connect(srv.relay.store.path) as db:
        rows = db.execute("select reply, size_in from transactions where reply like '552%'").fetchall()
    assert len(rows) == 1 and rows[0][1] == size


def test_long_command_goes_to_the_mta(relist_server, sink):
    # Over aiosmtpd's 512 octets: relist forwards it and the MTA decides.
    sender = "list-bounces+" + "m" * 600 + "@lists.example.org"
    with client(relist_server.port) as c:
        assert c.mail(sender)[0] == 250
    assert f"MAIL FROM:<{sender}>" in sink.commands
