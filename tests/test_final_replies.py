"""What the client hears at the end of DATA, whatever goes wrong after the MTA answered
or on an LMTP leg: a delivered message is never answered 4xx (the client would send it
again), and an LMTP client gets one final reply per recipient (RFC 2033 §4.2), or it
waits for the missing ones and defers those recipients, to deliver them twice."""

from __future__ import annotations

import smtplib
import socket

from relist.edge import metrics
from relist.sandbox.sink import Sink
from relist.server import ThreadedServer
from tests.helpers import client, make_config

SENDER = "dev-bounces@lists.example.org"
MSG = (b"From: a@poster.example\r\nTo: dev@lists.example.org\r\nSubject: x\r\n"
       b"Message-ID: <final-1@poster.example>\r\n\r\nhi\r\n")
POST = (b"From: Poster <poster@poster.example>\r\nTo: dev@lists.example.org\r\n"
        b"Subject: hello\r\nMessage-ID: <final-2@poster.example>\r\n\r\nHi list.\r\n")


def test_a_bug_in_the_accounting_after_delivery_leaves_the_250(relist_factory, sink, monkeypatch):
    class Broken:
        def pipeline_done(self, *args):
            raise RuntimeError("metrics bug before delivery")

        def transaction(self, *args):
            raise KeyError("metrics bug after delivery")

        def bounce(self, *args):
            pass
    monkeypatch.setattr(metrics, "recorder", lambda leg, policy: Broken())
    srv = relist_factory()
    with client(srv.port) as c:
        assert c.sendmail(SENDER, ["m@member.example"], MSG) == {}
    assert len(sink.messages) == 1


def _lmtp_ingress(tmp_path, dns_server, next_hop: str, **server):
    egress = Sink().start()
    cfg = make_config(tmp_path, egress.port, {"ingress": {"deliver_to": next_hop}},
                      nameserver=dns_server.nameserver, ingress={"listen": ("127.0.0.1", 0)},
                      server={"listen": ("127.0.0.1", 0), **server})
    return ThreadedServer(cfg).start(), egress


def _two_final_replies(port: int, data: bytes) -> list[int]:
    c = smtplib.LMTP("127.0.0.1", port, timeout=5)
    try:
        c.ehlo_or_helo_if_needed()
        assert c.mail("poster@poster.example")[0] == 250
        assert c.rcpt("a@lists.example.org")[0] == 250
        assert c.rcpt("b@lists.example.org")[0] == 250
        c.putcmd("data")
        assert c.getreply()[0] == 354
        c.send(data.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        codes = []
        for _ in range(2):
            try:
                codes.append(c.getreply()[0])
            except (socket.timeout, TimeoutError, smtplib.SMTPServerDisconnected):
                codes.append(None)
        return codes
    finally:
        c.close()


def test_an_lmtp_client_hears_every_recipient_when_the_next_hop_speaks_smtp(tmp_path, dns_server):
    mailman = Sink().start()   # [ingress] deliver_to = "smtp:...": one final reply for both
    srv, egress = _lmtp_ingress(tmp_path, dns_server, f"smtp:127.0.0.1:{mailman.port}")
    try:
        assert _two_final_replies(srv.ingress_port, POST) == [250, 250]
        assert [m.rcpt_tos for m in mailman.messages] == [["a@lists.example.org", "b@lists.example.org"]]
    finally:
        srv.stop()
        mailman.stop()
        egress.stop()


def test_an_lmtp_client_hears_too_big_for_every_recipient(tmp_path, dns_server):
    mailman = Sink().start()
    srv, egress = _lmtp_ingress(tmp_path, dns_server, f"smtp:127.0.0.1:{mailman.port}",
                                max_message_size=1024)
    try:
        assert _two_final_replies(srv.ingress_port, POST + b"x" * 2048 + b"\r\n") == [552, 552]
        assert mailman.messages == []
    finally:
        srv.stop()
        mailman.stop()
        egress.stop()
