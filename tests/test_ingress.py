"""The ingress leg: MTA -(LMTP)-> relist -(LMTP)-> Mailman, per-recipient replies."""

from __future__ import annotations

import smtplib

import pytest

from relist.sandbox.sink import Sink
from relist.server import ThreadedServer
from tests.conftest import make_config, split_added

POST = (b"From: Poster <poster@poster.example>\r\nTo: dev@lists.example.org\r\n"
        b"Subject: hello\r\nMessage-ID: <in-1@poster.example>\r\n\r\nHi list.\r\n")


@pytest.fixture
def mailman():
    s = Sink(lmtp=True).start()
    yield s
    s.stop()


@pytest.fixture
def relist_ingress(tmp_path, sink, mailman, dns_server):
    cfg = make_config(tmp_path, sink.port, {"ingress": {"deliver_to": f"lmtp:127.0.0.1:{mailman.port}"}},
                      nameserver=dns_server.nameserver, ingress={"listen": ("127.0.0.1", 0)})
    srv = ThreadedServer(cfg).start()
    yield srv
    srv.stop()


def lmtp_send(port, rcpts, data=POST):
    c = smtplib.LMTP("127.0.0.1", port, timeout=10)
    c.ehlo_or_helo_if_needed()
    c.mail("poster@poster.example")
    rcpt_replies = [c.rcpt(r) for r in rcpts]
    accepted = [r for r, rep in zip(rcpts, rcpt_replies) if rep[0] == 250]
    # smtplib's LMTP reads one DATA reply; LMTP sends one per accepted recipient.
    replies = [c.data(data)]
    replies += [c.getreply() for _ in accepted[1:]]
    c.quit()
    return rcpt_replies, replies


def test_lhlo_and_per_recipient_final_replies(relist_ingress, mailman):
    mailman.inject("DATA", "452 4.2.2 <b@lists.example.org> mailbox full", "b@lists.example.org")
    mailman.inject("RCPT", "550 5.1.1 <nolist@lists.example.org> no such list", "nolist@lists.example.org")
    rcpt, data = lmtp_send(relist_ingress.ingress_port,
                           ["a@lists.example.org", "nolist@lists.example.org", "b@lists.example.org"])
    assert [r[0] for r in rcpt] == [250, 550, 250]
    assert rcpt[1][1] == b"5.1.1 <nolist@lists.example.org> no such list"
    assert data[0] == (250, b"2.0.0 <a@lists.example.org> delivered")
    assert data[1] == (452, b"4.2.2 <b@lists.example.org> mailbox full")
    assert len(mailman.messages) == 1 and mailman.messages[0].rcpt_tos == ["a@lists.example.org"]
    # The post reaches Mailman unchanged below relist's trace and results fields.
    added, rest = split_added(mailman.messages[0].data)
    assert added == [b"authentication-results", b"received"] and rest == POST


def test_ehlo_is_refused_on_the_lmtp_port(relist_ingress):
    c = smtplib.SMTP("127.0.0.1", relist_ingress.ingress_port, timeout=10)
    assert c.ehlo()[0] == 500
    c.close()


def test_mailman_down_is_451_for_every_recipient(tmp_path, sink, dns_server):
    cfg = make_config(tmp_path, sink.port, {"ingress": {"deliver_to": "lmtp:127.0.0.1:1"}},
                      nameserver=dns_server.nameserver,
                      ingress={"listen": ("127.0.0.1", 0)})
    with ThreadedServer(cfg) as srv:
        c = smtplib.LMTP("127.0.0.1", srv.ingress_port, timeout=10)
        c.ehlo_or_helo_if_needed()
        code, text = c.mail("poster@poster.example")
        assert code == 451 and text.startswith(b"4.4.1")
        c.close()


def test_egress_still_served_beside_ingress(relist_ingress, sink):
    with smtplib.SMTP("127.0.0.1", relist_ingress.port, timeout=10) as c:
        assert c.sendmail("dev-bounces@lists.example.org", ["m@example.com"], POST) == {}
    assert len(sink.messages) == 1
