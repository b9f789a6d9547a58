"""Stale pooled upstream connections (issue 11, item 6).

Postfix closes a connection idle for ``smtpd_timeout`` with ``421 4.4.2 ... Error:
timeout exceeded``.  relist must never hand that 421 to Mailman's next MAIL: a pooled
connection the MTA closed (found before use, or by MAIL itself) is discarded, logged,
counted (``Pool.stale``) and the MAIL goes again on a new connection.
"""

from __future__ import annotations

import asyncio
import logging
import time

from relist.edge.smtp_out import Pool
from relist.sandbox.sink import Sink
from tests.helpers import client, wait_for
from tests.test_faults import SENDER, Mailman, account, message

RCPTS = ["a@example.com"]




def test_idle_421_is_never_a_members_deferral(relist_factory, sink, caplog):
    """The MTA's idle timeout closes the pooled connection (421 first) between two
    messages: the next message goes through on the first attempt."""
    caplog.set_level(logging.INFO, logger="relist")
    sink.idle_timeout = 0.3
    srv = relist_factory()
    mailman = Mailman(srv.port)
    try:
        for n in range(5):
            before = sink.idle_closed
            out = mailman.send(n, RCPTS)
            assert out.delivered and out.attempts == 1, out
            assert wait_for(lambda: sink.idle_closed > before)   # the MTA closed it meanwhile
    finally:
        mailman.close()
    assert srv.relay.pool.stale >= 4
    assert "pooled connection closed by the MTA" in caplog.text
    assert "421 4.4.2 sink.test Error: timeout exceeded" in caplog.text
    lost, fivexx, dups = account(sink, mailman, RCPTS)
    assert lost == [] and fivexx == [] and dups == {}


def test_421_racing_the_mail_is_retried_on_a_new_connection(relist_server, sink, caplog):
    """The 421 arrives only after MAIL went out (the pool's look found nothing)."""
    caplog.set_level(logging.INFO, logger="relist")
    with client(relist_server.port) as c:
        assert c.sendmail(SENDER, RCPTS, message(1)) == {}
        connections = sink.connections
        sink.inject("MAIL", "421 4.4.2 sink.test Error: timeout exceeded")
        assert c.sendmail(SENDER, RCPTS, message(2)) == {}
    assert sink.connections == connections + 1
    assert relist_server.relay.pool.stale == 1
    assert relist_server.relay.counters["mail_deferred"] == 0
    assert len(sink.messages) == 2


def test_connection_dropped_at_mail_is_retried_on_a_new_connection(relist_server, sink):
    with client(relist_server.port) as c:
        assert c.sendmail(SENDER, RCPTS, message(1)) == {}
        sink.inject("MAIL", "drop")
        assert c.sendmail(SENDER, RCPTS, message(2)) == {}
    assert relist_server.relay.pool.stale == 1
    assert len(sink.messages) == 2


def test_a_new_connection_is_not_retried(relist_server, sink):
    """Only a pooled connection may have gone stale: a fresh one answering 421 at MAIL
    is the MTA's answer (twice in a row here: the pooled one, then the new one)."""
    with client(relist_server.port) as c:
        assert c.sendmail(SENDER, RCPTS, message(1)) == {}
        sink.inject("MAIL", "421 4.3.2 sink.test Service shutting down")
        sink.inject("MAIL", "421 4.3.2 sink.test Service shutting down")
        code, text = c.mail(SENDER)
    assert code == 421 and relist_server.relay.pool.stale == 1
    assert relist_server.relay.counters["mail_deferred"] == 1


def test_pool_skips_connections_closed_while_idle_and_too_old():
    async def go():
        with Sink(idle_timeout=0.2) as sink:
            pool = Pool("127.0.0.1", sink.port, timeout=2, connect_timeout=2, helo="t", idle_max=60)
            a = await pool.acquire()
            await pool.release(a, clean=True)
            deadline = time.monotonic() + 5
            while a.closed_by_peer() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.01)    # until the 421 reaches the pool's reader
            assert a.closed_by_peer().startswith("421 4.4.2 sink.test Error: timeout exceeded")
            b = await pool.acquire()
            assert b is not a and not b.pooled and pool.stale == 1
            await pool.release(b, clean=True)
            pool.idle_max = 0            # every idle connection is too old now
            c = await pool.acquire()
            assert c is not b and pool.stale == 1
            await pool.release(c, clean=True)
            await pool.close()
    asyncio.run(go())
