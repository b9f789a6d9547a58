"""What relist logs about a message (issue 11, item 9).

* Text from a message or a client (Message-ID, List-Id, envelope sender, replies) is
  escaped: no raw CR, LF, ESC, NUL or other control character reaches the log.
* A transaction the core did not finish (a bug: 451 4.3.0) still logs and records its
  Message-ID, its list and where it failed, not ``message-id=- list=-``.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3

import pytest

from relist.core.safety import log_safe
from relist.core.message import RawMessage
from relist.core.steps import trace
from tests.helpers import client
from tests.helpers import wait_for

SENDER = "test-bounces@lists.example.org"
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@pytest.mark.parametrize("text, logged", [
    ("<plain@poster.example>", "<plain@poster.example>"),
    ("<caf\u00e9@poster.example>", "<caf\u00e9@poster.example>"),          # UTF-8 stays readable
    ("<a\rb@x>", "<a\\rb@x>"),
    ("<a\nb@x>", "<a\\nb@x>"),
    ("<a\x1b[31mred@x>", "<a\\x1b[31mred@x>"),
    ("<a\x00b@x>", "<a\\x00b@x>"),
    ("<a\x7f\x85b@x>", "<a\\x7f\\x85b@x>"),
    ("<a\u2028b\u202eb@x>", "<a\\u2028b\\u202eb@x>"),                      # line separator, bidi override
    ("<a\udcffb@x>", "<a\\xffb@x>"),                                       # an undecodable byte
    ("<a\\x1bb@x>", "<a\\\\x1bb@x>"),                                      # a backslash: no look-alikes
])
def test_log_safe(text, logged):
    assert log_safe(text) == logged
    assert not CONTROL.search(log_safe(text))


def send_raw(port: int, mail_from: str, data: bytes) -> int:
    """One transaction with ``data`` sent as is (smtplib would turn a bare CR into CRLF)."""
    with client(port) as c:
        assert c.docmd(f"MAIL FROM:<{mail_from}>")[0] == 250
        assert c.docmd("RCPT TO:<a@example.com>")[0] == 250
        assert c.docmd("DATA")[0] == 354
        c.send(data + b"\r\n.\r\n")
        return c.getreply()[0]


def lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "relist" and "message-id=" in r.getMessage()]


def test_message_id_and_list_id_are_escaped_in_the_log_line(relist_server, sink, caplog):
    msg = (b"From: Poster <poster@poster.example>\r\n"
           b"To: test@lists.example.org\r\n"
           b"Subject: hi\r\n"
           b"Message-ID: <evil\r\x1b[2K\x00 forged@poster.example>\r\n"
           b"List-Id: <test.lists.example.org\x1b]0;title\x07>\r\n"
           b"\r\n"
           b"Hello.\r\n")
    with caplog.at_level(logging.INFO, logger="relist"):
        assert send_raw(relist_server.port, "x\x1b-bounces@lists.example.org", msg) == 250
    assert wait_for(lambda: lines(caplog))
    line = lines(caplog)[0]
    assert not CONTROL.search(line), repr(line)
    assert "message-id=<evil\\r\\x1b[2K\\x00 forged@poster.example>" in line
    assert "from=<x\\x1b-bounces@lists.example.org>" in line


CRASH = (b"From: Poster <poster@poster.example>\r\n"
         b"To: test@lists.example.org\r\n"
         b"Message-ID: <crash-1@poster.example>\r\n"
         b"List-Id: Test <test.lists.example.org>\r\n"
         b"\r\n"
         b"Hello.\r\n")


def rows(db):
    with sqlite3.connect(db) as conn:
        return conn.execute("select message_id, list_address, facts from transactions").fetchall()


@pytest.mark.replaces_core
def test_a_crashed_transaction_logs_and_records_what_is_known(relist_server, sink, caplog, monkeypatch,
                                                             tmp_path):
    """An exception the core lets through (MemoryError: it may pass on the next try) is
    answered 451 4.3.0 by the edge, with a log line and a record that say which message,
    which list, and where it failed."""
    def boom(ctx):
        raise MemoryError("out of memory in a test")
    monkeypatch.setattr(trace, "received_value", boom)
    with caplog.at_level(logging.INFO, logger="relist"), client(relist_server.port) as c:
        c.mail(SENDER)
        c.rcpt("a@example.com")
        code, _ = c.data(CRASH)
    assert code == 451
    assert wait_for(lambda: lines(caplog))
    line = lines(caplog)[0]
    assert "message-id=<crash-1@poster.example> list=test@lists.example.org" in line
    assert 'error="trace: MemoryError"' in line and "reply=\"451 4.3.0" in line
    assert "out of memory in a test" not in line   # the exception text is in the traceback only
    assert wait_for(lambda: rows(tmp_path / "relist.db"))
    message_id, list_address, facts = rows(tmp_path / "relist.db")[0]
    assert (message_id, list_address) == ("<crash-1@poster.example>", "test@lists.example.org")
    assert json.loads(facts)["internal_error"] == "trace: MemoryError"
    assert relist_server.relay._crashed == {}      # nothing left behind
    assert relist_server.relay.counters["errors"] == 1


@pytest.mark.replaces_core
def test_a_step_error_shows_in_the_log_line(relist_server, sink, caplog, monkeypatch):
    """A bug in a step, however the core handles it (skips the step, or lets it through
    to the edge), is named in the transaction's log line."""
    def boom(ctx):
        raise RuntimeError("a bug")
    monkeypatch.setattr(trace, "received_value", boom)
    with caplog.at_level(logging.INFO, logger="relist"), client(relist_server.port) as c:
        c.mail(SENDER)
        c.rcpt("a@example.com")
        c.data(CRASH)
    assert wait_for(lambda: lines(caplog))
    line = lines(caplog)[0]
    assert "message-id=<crash-1@poster.example> list=test@lists.example.org" in line
    assert 'error="trace: RuntimeError' in line


@pytest.mark.replaces_core
def test_a_crash_before_the_core_still_has_the_message_id(relist_server, sink, caplog, monkeypatch):
    def broken(raw):
        raise ValueError("parser bug")
    monkeypatch.setattr(RawMessage, "parse", staticmethod(broken))
    msg = b"Message-ID: <crash-2@poster.example>\r\nList-Id: <test.lists.example.org>\r\n\r\nx\r\n"
    with caplog.at_level(logging.INFO, logger="relist"), client(relist_server.port) as c:
        c.mail(SENDER)
        c.rcpt("a@example.com")
        code, _ = c.data(msg)
    assert code == 451
    assert wait_for(lambda: lines(caplog))
    assert "message-id=<crash-2@poster.example> list=-" in lines(caplog)[0]
