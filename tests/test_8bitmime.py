"""BODY=8BITMIME towards the MTA (RFC 6152), through real SMTP on 127.0.0.1:
Mailman (smtplib, no BODY=) -> relist (list with a signing key) -> the sink.

MAIL goes upstream before the content is known; when the processed message is 8-bit
and the MTA offers 8BITMIME, relist re-issues the transaction with BODY=8BITMIME
before DATA (relist.edge.smtp_in.must_declare_8bitmime)."""

from __future__ import annotations

import asyncio
import json
import logging
import quopri
import smtplib
import sqlite3

import dkim
import pytest

from relist.core import pipeline
from relist.core.sign import dns_record
from relist.core.steps import downgrade
from relist.edge.key_files import generate, write_private_key
from relist.edge.smtp_out import Connection
from relist.sandbox.sink import Sink
from relist.server import ThreadedServer
from tests.helpers import client, make_config

LIST = "test@lists.example.org"
SENDER = "test-bounces@lists.example.org"
RCPTS = ["a@example.com", "b@example.com"]
TEXT = "Grüße aus Köln – naïve café.\r\n".encode()
HEAD = (b"From: Poster <poster@poster.example>\r\n"
        b"To: test@lists.example.org\r\n"
        b"Subject: 8-bit\r\n"
        b"Date: Wed, 01 May 2024 10:00:00 +0000\r\n"
        b"Message-ID: <8bit-1@poster.example>\r\n"
        b"List-Id: Test list <test.lists.example.org>\r\n"
        b"MIME-Version: 1.0\r\n")
EIGHT = HEAD + b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + TEXT
SEVEN = HEAD + b"Content-Type: text/plain; charset=us-ascii\r\n\r\nPlain ASCII.\r\n"


@pytest.fixture(scope="module")
def list_key():
    return generate("rsa", 2048)


@pytest.fixture
def signing(tmp_path, dns_server, list_key):
    """Config data for a list that signs with ``list_key``, published in the test DNS."""
    path = write_private_key(tmp_path / "list.key", list_key)
    record = dns_record(list_key)
    dns_server.set("s1._domainkey.lists.example.org", [record])
    return {"lists": {LIST: {"selector": "s1", "private_key": str(path)}}}, record


def verifies(data: bytes, record: str) -> bool:
    """dkimpy (not relist's verifier) checks the list's DKIM-Signature."""
    assert b"d=lists.example.org" in data.split(b"\r\n\r\n", 1)[0]

    def dnsfunc(name, timeout=5):
        return record.encode() if name.decode().rstrip(".") == "s1._domainkey.lists.example.org" else None
    return dkim.verify(data, dnsfunc=dnsfunc)


def body_of(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[1]


def mails(sink: Sink) -> list[str]:
    return [c for c in sink.commands if c.startswith("MAIL")]


def stored(srv, n: int, tmp_path) -> list[tuple[dict, dict, str]]:
    """(facts, upstream, reply) of the first ``n`` stored transactions."""
    srv.relay.store.wait_handled(n, timeout=5)
    db = sqlite3.connect(tmp_path / "relist.db")
    rows = db.execute("SELECT facts, upstream, reply FROM transactions ORDER BY rowid").fetchall()
    return [(json.loads(f), json.loads(u), r) for f, u, r in rows]


@pytest.mark.parametrize("pipelining", [False, True], ids=["lockstep", "pipelined"])
def test_8bit_post_is_reissued_with_body_8bitmime_and_verifies(relist_factory, sink, signing, tmp_path,
                                                               pipelining, caplog):
    data, record = signing
    sink.pipelining = pipelining
    srv = relist_factory(data)
    with caplog.at_level(logging.INFO, logger="relist"), client(srv.port) as c:
        assert c.sendmail(SENDER, RCPTS, EIGHT) == {}
    assert sink.commands == [f"MAIL FROM:<{SENDER}>", "RCPT TO:<a@example.com>", "RCPT TO:<b@example.com>",
                             "RSET", f"MAIL FROM:<{SENDER}> BODY=8BITMIME",
                             "RCPT TO:<a@example.com>", "RCPT TO:<b@example.com>", "DATA"]
    assert len(sink.messages) == 1
    got = sink.messages[0]
    assert got.mail_options == ["BODY=8BITMIME"] and got.rcpt_tos == RCPTS
    assert body_of(got.data) == TEXT          # the 8-bit bytes travel as they came
    assert verifies(got.data, record)
    facts, upstream, reply = stored(srv, 1, tmp_path)[0]
    assert facts["needs_8bitmime"] is True and facts["mail_reissued"] == "BODY=8BITMIME"
    assert upstream["MAIL BODY=8BITMIME (re-issue)"].startswith("250")
    assert upstream["b@example.com (re-issue)"].startswith("250") and reply.startswith("250")
    assert any("mail=re-issued(BODY=8BITMIME)" in r.getMessage() for r in caplog.records)


def test_7bit_post_keeps_one_mail(relist_factory, sink, signing, tmp_path, caplog):
    data, record = signing
    srv = relist_factory(data)
    with caplog.at_level(logging.INFO, logger="relist"), client(srv.port) as c:
        assert c.sendmail(SENDER, RCPTS, SEVEN) == {}
    assert mails(sink) == [f"MAIL FROM:<{SENDER}>"] and "RSET" not in sink.commands
    assert sink.messages[0].mail_options == [] and verifies(sink.messages[0].data, record)
    facts, upstream, _ = stored(srv, 1, tmp_path)[0]
    assert facts["needs_8bitmime"] is False and "mail_reissued" not in facts
    assert not any("re-issue" in k for k in upstream)
    assert not any("mail=re-issued" in r.getMessage() for r in caplog.records)


def test_client_declared_body_8bitmime_is_passed_on(relist_factory, sink, signing):
    data, record = signing
    srv = relist_factory(data)
    with client(srv.port) as c:
        assert c.sendmail(SENDER, RCPTS, EIGHT, mail_options=["BODY=8BITMIME"]) == {}
    assert mails(sink) == [f"MAIL FROM:<{SENDER}> BODY=8BITMIME"] and "RSET" not in sink.commands
    assert body_of(sink.messages[0].data) == TEXT and verifies(sink.messages[0].data, record)


def test_upstream_without_8bitmime_gets_quoted_printable(relist_factory, sink, signing, tmp_path):
    data, record = signing
    sink.eightbitmime = False
    srv = relist_factory(data)
    with client(srv.port) as c:
        assert not c.has_extn("8bitmime")
        assert c.sendmail(SENDER, RCPTS, EIGHT) == {}
    assert mails(sink) == [f"MAIL FROM:<{SENDER}>"] and "RSET" not in sink.commands
    got = sink.messages[0].data
    assert got.isascii() and b"Content-Transfer-Encoding: quoted-printable\r\n" in got
    assert quopri.decodestring(body_of(got)) == TEXT
    assert verifies(got, record)
    facts, _, _ = stored(srv, 1, tmp_path)[0]
    assert facts["needs_8bitmime"] is False and "mail_reissued" not in facts


def test_upstream_without_8bitmime_and_8bit_header(relist_factory, sink, signing):
    """What relist does today with a raw UTF-8 Subject (RFC 6532) when the MTA lacks
    8BITMIME: the body is downgraded, the header field cannot be; it goes as it is,
    without BODY= (as Postfix relays such a message), and the signature covers it."""
    data, record = signing
    sink.eightbitmime = False
    srv = relist_factory(data)
    raw = EIGHT.replace(b"Subject: 8-bit", "Subject: Grüße".encode())
    with client(srv.port) as c:
        assert c.sendmail(SENDER, ["a@example.com"], raw) == {}
    got = sink.messages[0].data
    assert mails(sink) == [f"MAIL FROM:<{SENDER}>"]
    assert "Subject: Grüße".encode() in got and body_of(got).isascii()
    assert verifies(got, record)


@pytest.mark.parametrize("pipelining", [False, True], ids=["lockstep", "pipelined"])
@pytest.mark.parametrize("refuse", [("RCPT", "b@example.com", "450 4.2.1 <b@example.com> try later"),
                                    ("MAIL", None, "452 4.3.1 insufficient system storage")],
                         ids=["rcpt", "mail"])
def test_refusal_on_reissue_is_451_and_nothing_is_delivered(relist_factory, sink, signing, tmp_path,
                                                           pipelining, refuse):
    data, _ = signing
    sink.pipelining = pipelining
    srv = relist_factory(data)
    command, address, answer = refuse
    with client(srv.port) as c:
        assert c.mail(SENDER)[0] == 250
        assert [c.rcpt(r)[0] for r in RCPTS] == [250, 250]
        sink.inject(command, answer, address)       # the MTA changes its mind on the re-issue
        code, text = c.data(EIGHT)
        assert code == 451 and text.startswith(b"4.5.0 relist: upstream MTA refused the transaction "
                                               b"re-issued with BODY=8BITMIME")
        assert answer.encode() in text
        assert sink.messages == [] and "DATA" not in sink.commands
        # Mailman retries on the same connection: the session and the pooled upstream
        # connection are usable, and the post is delivered once, to both.
        assert c.sendmail(SENDER, RCPTS, EIGHT) == {}
        assert c.sendmail(SENDER, ["c@example.com"], SEVEN) == {}
    assert [m.rcpt_tos for m in sink.messages] == [RCPTS, ["c@example.com"]]
    assert [m.mail_options for m in sink.messages] == [["BODY=8BITMIME"], []]
    assert sink.commands.count("DATA") == 2
    rows = stored(srv, 3, tmp_path)
    facts, upstream, reply = rows[0]
    assert facts["mail_reissued"] == "BODY=8BITMIME" and reply.startswith("451 4.5.0")
    key = f"{address} (re-issue)" if address else "MAIL BODY=8BITMIME (re-issue)"
    assert upstream[key] == answer and "DATA" not in upstream


def test_lmtp_reissue_answers_every_recipient(tmp_path, sink, dns_server):
    """LMTP next hop: a refused re-issue is a 451 for each recipient (RFC 2033 §4.2),
    an accepted one gets the per-recipient replies.  The ingress leg runs no
    ``downgrade``; here it does, so that the edge sees ``needs_8bitmime``."""
    mailman = Sink(lmtp=True).start()
    try:
        cfg = make_config(tmp_path, sink.port, {"ingress": {"deliver_to": f"lmtp:127.0.0.1:{mailman.port}"}},
                          nameserver=dns_server.nameserver, ingress={"listen": ("127.0.0.1", 0)})
        with ThreadedServer(cfg) as srv:
            srv.server.ingress.steps = pipeline.INGRESS_STEPS + (downgrade,)
            c = smtplib.LMTP("127.0.0.1", srv.ingress_port, timeout=10)
            c.ehlo_or_helo_if_needed()
            for refused in (True, False):
                assert c.mail("poster@poster.example")[0] == 250
                assert [c.rcpt(r)[0] for r in RCPTS] == [250, 250]
                if refused:
                    mailman.inject("RCPT", "450 4.2.1 busy", "b@example.com")
                finals = [c.data(EIGHT), c.getreply()]
                if refused:
                    assert [f[0] for f in finals] == [451, 451] and mailman.messages == []
                else:
                    assert finals == [(250, b"2.0.0 <a@example.com> delivered"),
                                      (250, b"2.0.0 <b@example.com> delivered")]
            c.quit()
        assert len(mailman.messages) == 1 and mailman.messages[0].rcpt_tos == RCPTS
        assert mailman.messages[0].mail_options == ["BODY=8BITMIME"]
        assert body_of(mailman.messages[0].data).endswith(TEXT)
    finally:
        mailman.stop()


def test_reissue_is_one_round_trip_when_the_mta_pipelines():
    """A next hop that answers nothing until it has RSET, MAIL and every RCPT: only a
    pipelined re-issue (RFC 2920) gets replies; one command at a time would time out."""
    async def main():
        seen = []

        async def serve(reader, writer):
            writer.write(b"220 mta.test\r\n")
            await reader.readline()
            writer.write(b"250-mta.test\r\n250-8BITMIME\r\n250 PIPELINING\r\n")
            while len(seen) < 4:
                seen.append((await reader.readline()).decode().strip())
            writer.write(b"250 2.0.0 reset\r\n250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 unknown\r\n")
            await writer.drain()
            await reader.readline()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = Connection("127.0.0.1", port, timeout=1, connect_timeout=1, helo="relist.test")
        await conn.connect()
        replies = await conn.reissue(SENDER, ["SIZE=10", "BODY=8BITMIME"], RCPTS)
        conn.close()
        server.close()
        return seen, replies

    seen, replies = asyncio.run(main())
    assert seen == ["RSET", f"MAIL FROM:<{SENDER}> SIZE=10 BODY=8BITMIME",
                    "RCPT TO:<a@example.com>", "RCPT TO:<b@example.com>"]
    assert [r.code for r in replies] == [250, 250, 250, 550]
