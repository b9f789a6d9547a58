"""The deadline of an upstream reply (relist.edge.smtp_out.Connection, issue 17): one
timer per connection instead of ``asyncio.timeout`` per reply, so these pin what the
timer must still do: a late reply is ``451 4.4.2 ... timed out`` at its own deadline
(also right after a read with a longer one), and replies that come in time never
time out, however long the connection lives."""

from __future__ import annotations

import asyncio
import time

import pytest

from relist.edge.smtp_out import Connection, UpstreamError


class MTA:
    """A loopback ESMTP server whose reply to each command waits ``delays[verb]``
    seconds (``None``: never answers)."""

    def __init__(self, delays: dict[str, float | None]):
        self.delays = delays
        self.server = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _session(self, reader, writer):
        writer.write(b"220 mta.test ESMTP\r\n")
        try:
            while line := await reader.readline():
                verb = line[:4].decode().upper()
                delay = self.delays.get(verb, 0)
                if delay is None:
                    await asyncio.sleep(3600)
                if verb in ("EHLO", "LHLO"):
                    writer.write(b"250-mta.test\r\n250 PIPELINING\r\n")
                    continue
                if delay:
                    # a multi-line reply, its lines spread over the delay
                    writer.write(b"250-slow\r\n")
                    await asyncio.sleep(delay)
                writer.write(b"250 2.0.0 Ok\r\n")
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def stop(self):
        self.server.close()


def run(coro):
    """The test's coroutine, bounded: a timer that never fires fails the test, not CI."""
    return asyncio.run(asyncio.wait_for(coro, 10))


async def _connected(delays, *, timeout=0.3, data_timeout=5.0):
    mta = MTA(delays)
    port = await mta.start()
    conn = Connection("127.0.0.1", port, timeout=timeout, connect_timeout=2, helo="relist.test",
                      data_timeout=data_timeout)
    await conn.connect()
    return mta, conn


def test_a_late_reply_times_out_at_its_deadline():
    async def go():
        mta, conn = await _connected({"MAIL": None}, timeout=0.3)
        started = time.monotonic()
        with pytest.raises(UpstreamError) as err:
            await conn.mail("a@example.org", [])
        took = time.monotonic() - started
        await mta.stop()
        return err.value.reply, took, conn.broken
    reply, took, broken = run(go())
    assert (reply.code, reply.enhanced) == (451, "4.4.2")
    assert "timed out after MAIL" in reply.text and "lost" not in reply.text
    assert 0.25 <= took < 2 and broken


def test_a_shorter_deadline_after_a_longer_one_is_kept():
    """The timer armed for a long wait (data_timeout) must not delay a short one."""
    async def go():
        mta, conn = await _connected({"NOOP": 0.5, "RCPT": None}, timeout=0.3, data_timeout=30)
        await conn._send(b"NOOP\r\n", "after NOOP")
        # longer than the timeout: the timer fires during it and is re-armed at +30 s
        await conn._read_reply("after NOOP", conn.data_timeout)
        started = time.monotonic()
        with pytest.raises(UpstreamError) as err:
            await conn.rcpt("b@example.org")
        took = time.monotonic() - started
        await mta.stop()
        return err.value.reply, took
    reply, took = run(go())
    assert reply.code == 451 and "timed out after RCPT" in reply.text
    assert took < 2


def test_replies_in_time_never_time_out_over_a_long_connection():
    """Each reply takes half the timeout; together they take many timeouts: the timer
    fires in between and finds a later deadline each time."""
    async def go():
        mta, conn = await _connected({"NOOP": 0.15}, timeout=0.3)
        replies = [await conn.command("NOOP") for _ in range(8)]
        await mta.stop()
        return replies, conn.broken
    replies, broken = run(go())
    assert [r.code for r in replies] == [250] * 8 and not broken


def test_an_idle_connection_with_no_reply_awaited_is_left_alone():
    async def go():
        mta, conn = await _connected({}, timeout=0.2)
        await conn.command("NOOP")
        await asyncio.sleep(0.6)           # the timer fires with nothing awaited
        reply = await conn.command("NOOP")
        await mta.stop()
        return reply, conn.broken, conn.closed_by_peer()
    reply, broken, why = run(go())
    assert reply.code == 250 and not broken and why is None
