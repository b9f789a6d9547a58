"""MAIL with the first RCPT (issue 17): to an MTA that offers PIPELINING, relist answers
the client's MAIL itself and sends the MAIL upstream in one write with the first RCPT,
one round trip where lock-step takes two.  A refusal of that MAIL answers every RCPT
of the transaction (as Postfix gives it with smtpd_delay_reject), nothing is lost, and
an MTA without PIPELINING still hears MAIL at MAIL (tests/test_pool.py, test_faults)."""

from __future__ import annotations

import smtplib
import socket
import socketserver
import threading

import pytest

from relist.sandbox.sink import Sink
from relist.server import ThreadedServer
from tests.helpers import client, make_config, wait_for
from tests.test_faults import SENDER, message

RCPTS = ["a@example.com", "b@example.com", "c@example.com"]


class RecordingMTA(socketserver.ThreadingTCPServer):
    """A minimal ESMTP server on loopback that keeps every chunk it receives as it
    arrived (what one write of relist's became) and answers all the commands of a chunk
    in one write, as a pipelining MTA does.  ``mail_reply``: its answer to MAIL."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, mail_reply: str = "250 2.1.0 Ok", pipelining: bool = True):
        self.mail_reply = mail_reply
        self.pipelining = pipelining
        self.chunks: list[bytes] = []
        self.messages: list[bytes] = []
        super().__init__(("127.0.0.1", 0), _Session)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def commands(self) -> list[str]:
        out = []
        for chunk in self.chunks:
            out += [line.split(" ")[0].split(":")[0] for line in chunk.decode("latin-1").split("\r\n")
                    if line[:4].isalpha() and line[:4].isupper()]
        return out


class _Session(socketserver.BaseRequestHandler):
    def handle(self):
        mta: RecordingMTA = self.server
        sock = self.request
        sock.sendall(b"220 mta.test ESMTP\r\n")
        buf, in_data = b"", False
        while True:
            try:
                chunk = sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            mta.chunks.append(chunk)
            buf += chunk
            replies = []
            while True:
                if in_data:
                    end = buf.find(b"\r\n.\r\n")
                    if end < 0:
                        break
                    mta.messages.append(buf[:end + 2])
                    buf, in_data = buf[end + 5:], False
                    replies.append("250 2.0.0 Ok: queued")
                    continue
                line, sep, rest = buf.partition(b"\r\n")
                if not sep:
                    break
                buf = rest
                verb = line[:4].upper()
                if verb == b"EHLO":
                    replies.append("250-mta.test\r\n" + ("250-PIPELINING\r\n" if mta.pipelining else "")
                                   + "250 8BITMIME")
                elif verb == b"MAIL":
                    replies.append(mta.mail_reply)
                elif verb == b"RCPT":
                    replies.append("250 2.1.5 Ok" if mta.mail_reply.startswith("250")
                                   else "503 5.5.1 Error: need MAIL command")
                elif verb == b"DATA":
                    replies.append("354 End data with <CR><LF>.<CR><LF>")
                    in_data = True
                elif verb == b"QUIT":
                    sock.sendall(b"221 2.0.0 Bye\r\n")
                    return
                else:
                    replies.append("250 2.0.0 Ok")
            if replies:
                sock.sendall("".join(r + "\r\n" for r in replies).encode())


@pytest.fixture
def mta():
    server = RecordingMTA()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def relist_to(tmp_path, dns_server):
    started = []

    def start(port: int) -> ThreadedServer:
        srv = ThreadedServer(make_config(tmp_path, port, nameserver=dns_server.nameserver)).start()
        started.append(srv)
        return srv
    yield start
    for srv in started:
        srv.stop()


def _chunk_with(mta: RecordingMTA, *needles: bytes) -> list[bytes]:
    return [c for c in mta.chunks if all(n in c for n in needles)]


def test_mail_goes_up_in_one_write_with_the_first_rcpt(mta, relist_to):
    srv = relist_to(mta.port)
    with client(srv.port) as c:
        assert c.sendmail(SENDER, RCPTS, message(1)) == {}
    assert len(mta.messages) == 1
    # MAIL and the first RCPT arrived together; the other recipients one by one, in order.
    both = _chunk_with(mta, b"MAIL FROM:<" + SENDER.encode() + b">", b"RCPT TO:<a@example.com>")
    assert len(both) == 1 and b"b@example.com" not in both[0]
    assert [c for c in mta.commands() if c in ("MAIL", "RCPT", "DATA")] == \
        ["MAIL", "RCPT", "RCPT", "RCPT", "DATA"]


def test_without_pipelining_mail_goes_up_at_mail(relist_to):
    lockstep = RecordingMTA(pipelining=False)
    try:
        srv = relist_to(lockstep.port)
        with client(srv.port) as c:
            assert c.sendmail(SENDER, RCPTS[:1], message(2)) == {}
        assert len(lockstep.messages) == 1
        assert _chunk_with(lockstep, b"MAIL FROM:") and not _chunk_with(lockstep, b"MAIL FROM:", b"RCPT TO:")
    finally:
        lockstep.shutdown()
        lockstep.server_close()


def test_a_refused_mail_answers_every_rcpt_and_nothing_is_sent(relist_to):
    refusing = RecordingMTA(mail_reply="553 5.7.1 <test-bounces@lists.example.org>: Sender address rejected")
    try:
        srv = relist_to(refusing.port)
        with client(srv.port) as c:
            code, _ = c.mail(SENDER)
            assert code == 250          # relist's own: the MTA has not been asked yet
            replies = [c.rcpt(r) for r in RCPTS]
            assert [code for code, _ in replies] == [553, 553, 553]
            assert all(b"5.7.1" in text and b"Sender address rejected" in text for _, text in replies)
            with pytest.raises(smtplib.SMTPDataError) as data:
                c.data(message(3))
            assert data.value.smtp_code == 503      # no recipient was accepted
            c.rset()
        assert refusing.messages == []
        assert [c for c in refusing.commands() if c == "MAIL"] == ["MAIL"]   # asked once
        assert srv.relay.counters["mail_refused"] == 1
        assert srv.relay.counters["messages"] == 1
    finally:
        refusing.shutdown()
        refusing.server_close()


def test_rset_before_any_rcpt_costs_the_mta_nothing(mta, relist_to):
    srv = relist_to(mta.port)
    with client(srv.port) as c:
        assert c.mail(SENDER)[0] == 250
        assert c.rset()[0] == 250
        assert c.sendmail(SENDER, RCPTS[:1], message(4)) == {}
    assert len(mta.messages) == 1
    assert [c for c in mta.commands() if c in ("MAIL", "RSET")] == ["MAIL"]


@pytest.mark.parametrize("action", ["421 4.4.2 sink.test Error: timeout exceeded", "drop"],
                         ids=["421", "dropped"])
def test_a_pooled_connection_gone_at_the_pipelined_mail_is_replaced(relist_to, action):
    """The MTA closed the pooled connection just as MAIL and RCPT went up together: both
    go again on a new connection, and the client never hears of it."""
    sink = Sink(pipelining=True).start()
    try:
        srv = relist_to(sink.port)
        with client(srv.port) as c:
            assert c.sendmail(SENDER, RCPTS[:1], message(5)) == {}
            connections = sink.connections
            sink.inject("MAIL", action)
            assert c.sendmail(SENDER, RCPTS[:1], message(6)) == {}
        assert sink.connections == connections + 1
        assert srv.relay.pool.stale == 1
        assert srv.relay.counters["mail_deferred"] == 0
        assert wait_for(lambda: len(sink.messages) == 2)
    finally:
        sink.stop()


def test_an_mta_that_cannot_be_reached_at_the_first_rcpt_is_a_4xx(relist_to):
    """A fresh connection refused at the pipelined MAIL (421 twice: the pooled one, then
    the new one): every RCPT hears the 4xx, and Mailman retries later."""
    sink = Sink(pipelining=True).start()
    try:
        srv = relist_to(sink.port)
        with client(srv.port) as c:
            assert c.sendmail(SENDER, RCPTS[:1], message(7)) == {}
            sink.inject("MAIL", "421 4.3.2 sink.test Service shutting down")
            sink.inject("MAIL", "421 4.3.2 sink.test Service shutting down")
            with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
                c.sendmail(SENDER, RCPTS[:2], message(8))
        assert {code for code, _ in refused.value.recipients.values()} == {421}
        assert srv.relay.counters["mail_deferred"] == 1
        assert len(sink.messages) == 1
    finally:
        sink.stop()


def test_recordingmta_sees_what_a_socket_sent_in_one_write(mta):
    """The check above can fail: two commands written separately arrive separately."""
    with socket.create_connection(("127.0.0.1", mta.port)) as s:
        s.recv(100)
        s.sendall(b"EHLO x\r\n")
        s.recv(200)
        s.sendall(b"MAIL FROM:<a@b.example>\r\n")
        s.recv(100)
        s.sendall(b"RCPT TO:<c@d.example>\r\n")
        s.recv(100)
    assert not _chunk_with(mta, b"MAIL FROM:", b"RCPT TO:")
