"""The client session's idle timer (relist.edge.smtp_session.RelistSMTP._reset_timeout,
issue 17): one timer that moves with the deadline instead of a new timer per command.
It must still close a client idle for the timeout, never one that keeps talking, and
honour a shorter deadline right after a longer one (the idle timeout after DATA's
``reply_wait``)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time

from relist.edge.smtp_session import RelistSMTP


class _Handler:
    """What RelistSMTP asks of relist's handler, and nothing else (aiosmtpd's defaults
    answer every command)."""

    def __init__(self):
        self.sessions = set()
        self.draining = False
        self.allowed = [ipaddress.ip_network("127.0.0.0/8")]

    def session_closed(self, session):
        self.sessions.discard(session)


def _run(coro):
    return asyncio.run(asyncio.wait_for(coro, 15))


def test_the_timer_fires_at_the_latest_deadline_only():
    async def go():
        session = RelistSMTP(_Handler(), timeout=0.3, loop=asyncio.get_running_loop())
        fired = []
        session._timeout_cb = lambda: fired.append(time.monotonic())
        start = time.monotonic()
        for _ in range(4):                   # a command every 0.2 s: never idle for 0.3 s
            session._reset_timeout()
            await asyncio.sleep(0.2)
        assert fired == []
        await asyncio.sleep(0.3)
        assert len(fired) == 1 and fired[0] - start >= 0.8 + 0.3 - 0.25
        session._timeout_handle.cancel()

    _run(go())


def test_a_shorter_deadline_after_a_longer_one_fires_on_time():
    async def go():
        session = RelistSMTP(_Handler(), timeout=0.3, loop=asyncio.get_running_loop())
        fired = []
        session._timeout_cb = lambda: fired.append(time.monotonic())
        session._reset_timeout(30)           # DATA: the final reply may take long
        start = time.monotonic()
        session._reset_timeout()              # the next command: the idle timeout again
        await asyncio.sleep(0.6)
        assert len(fired) == 1 and 0.25 <= fired[0] - start < 0.6
        session._timeout_handle.cancel()

    _run(go())


def test_an_idle_client_is_closed_and_a_talking_one_is_not():
    async def go():
        loop = asyncio.get_running_loop()
        handler = _Handler()
        server = await loop.create_server(
            lambda: RelistSMTP(handler, hostname="relist.test", timeout=0.4, loop=loop), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]

        def idle() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.recv(200)                   # greeting
                s.settimeout(3)
                return s.recv(200)            # b"": closed by relist

        def talking() -> list[bytes]:
            out = []
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.recv(200)
                for _ in range(6):            # 1.5 s in all, 0.25 s apart
                    time.sleep(0.25)
                    s.sendall(b"NOOP\r\n")
                    out.append(s.recv(200))
            return out

        closed_after = time.monotonic()
        got = await asyncio.to_thread(idle)
        closed_after = time.monotonic() - closed_after
        replies = await asyncio.to_thread(talking)
        server.close()
        return got, closed_after, replies

    got, closed_after, replies = _run(go())
    assert got == b"" and 0.3 <= closed_after < 3
    assert all(r.startswith(b"250") for r in replies), replies
