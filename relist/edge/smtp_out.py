"""SMTP (or LMTP) to the next hop: a small asyncio client and a connection pool.

Every failure is normalised into a ``Reply`` (RFC 5321 code, RFC 3463 enhanced code):
a connection that cannot be made is ``451 4.4.1``, a timeout or a dropped connection
``451 4.4.2``.  The caller never sees a socket exception, so nothing relist cannot
finish can turn into a permanent failure for the sender.

Idle pooled connections go stale: an MTA closes a connection that has been idle for
its own timeout (Postfix: ``smtpd_timeout``, 300 s, 10 s under stress), saying
``421 4.4.2 ... Error: timeout exceeded`` first.  The pool hands out no connection the
MTA has closed or answered 421 on, and none idle for more than ``IDLE_MAX``; one that
turns out to be closed at its first command is reported (``Connection.pooled``) so the
caller can retry on a fresh connection (relist.edge.smtp_in, at MAIL).  Each is logged
and counted in ``Pool.stale``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass

from relist.core.dkim.canon import crlf_lines
from relist.core.message import RawMessage
from relist.core.model import Reply
from relist.edge.deadline import Deadline

__all__ = ["LINE_DOT", "WRITE_CHUNK", "Capabilities", "UpstreamError", "Connection", "Pool", "dot_stuff",
           "dot_stuffed"]

log = logging.getLogger("relist.upstream")

# Seconds an idle pooled connection is kept: below Postfix's smtpd_timeout (300 s), so
# the MTA's idle timeout rarely closes one first (when it does, see the module doc).
IDLE_MAX = 60.0

# A line that begins with a dot, after the first (RFC 5321 §4.5.2 transparency: stuffed
# here, unstuffed by relist.edge.smtp_session): a regex finds one in half the time of
# bytes.replace or "in", which scan the whole of a large body when there is none.
LINE_DOT = re.compile(rb"\r\n\.")
_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})(?: |$)")


class UpstreamError(Exception):
    """The connection is unusable; ``reply`` is what to tell the client.  ``lost``: the
    MTA closed the connection (rather than timing out or refusing)."""

    def __init__(self, reply: Reply, lost: bool = False):
        super().__init__(str(reply))
        self.reply = reply
        self.lost = lost


@dataclass(frozen=True, slots=True)
class Capabilities:
    esmtp: bool = False
    size: int | None = None
    eightbitmime: bool = False
    smtputf8: bool = False
    pipelining: bool = False

    @classmethod
    def from_ehlo(cls, lines: list[str]) -> Capabilities:
        words = {}
        for line in lines[1:]:
            parts = line.split()
            if parts:
                words[parts[0].upper()] = parts[1:]
        size = words.get("SIZE")
        return cls(
            esmtp=True,
            size=int(size[0]) if size and size[0].isdigit() else None,
            eightbitmime="8BITMIME" in words,
            smtputf8="SMTPUTF8" in words,
            pipelining="PIPELINING" in words,
        )


def parse_reply(code: int, lines: list[str]) -> Reply:
    enhanced = ""
    texts = []
    for line in lines:
        m = _ENHANCED.match(line)
        if m:
            enhanced = enhanced or m.group(1)
            line = line[m.end():]
        texts.append(line)
    return Reply(code, enhanced, "\n".join(texts))


def dot_stuff(data: bytes) -> bytes:
    """RFC 5321 §4.5.2 transparency, CRLF line ends, and the terminating dot."""
    return b"".join(dot_stuffed([data]))


def dot_stuffed(parts: list[bytes], crlf: tuple[bool, ...] = ()) -> list[bytes]:
    """``dot_stuff(b"".join(parts))`` as pieces to write one after the other, the last
    one the terminating dot: a message goes out as its header and its body without
    being joined or copied once more (a part is itself when nothing needed stuffing).

    Each part that begins a line is stuffed on its own, which is the same as stuffing
    the whole: a part after one that ends inside a line (never the body of a parsed
    message, whose header ends with a line ending) is joined to it first.  ``crlf[i]``
    True: part ``i`` is known to have no bare LF (not looked for: two scans of it)."""
    merged: list[tuple[bytes, bool]] = []
    for i, part in enumerate(parts):
        if not part:
            continue
        if merged and not merged[-1][0].endswith(b"\n"):
            merged[-1] = (merged[-1][0] + part, False)
        else:
            merged.append((part, i < len(crlf) and crlf[i]))
    out: list[bytes] = []
    for part, known in merged:
        if not known:
            part = crlf_lines(part)     # a bare LF: SMTP wants CRLF
        if part.startswith(b"."):
            out.append(b".")
        out.append(part.replace(b"\r\n.", b"\r\n..") if LINE_DOT.search(part) else part)
    out.append(b".\r\n" if not out or out[-1].endswith(b"\r\n") else b"\r\n.\r\n")
    return out


# A message larger than this is written in slices of this size, each one waiting until the
# transport's buffer has room: the event loop then never holds a second copy of a large
# post in its write buffer (issue 17: a worker's peak memory).
WRITE_CHUNK = 1 << 20


def _late(what: str) -> UpstreamError:
    return UpstreamError(Reply(451, "4.4.2", f"relist: upstream MTA timed out {what}; try again later"))


def _lost(what: str) -> UpstreamError:
    return UpstreamError(Reply(451, "4.4.2",
                               f"relist: connection to upstream MTA lost {what}; try again later"), lost=True)


class Connection:
    """One SMTP/LMTP session with the next hop."""

    def __init__(self, host: str, port: int, *, timeout: float, connect_timeout: float,
                 helo: str, data_timeout: float = 600, lmtp: bool = False):
        self.host, self.port = host, port
        self.timeout = timeout
        self.data_timeout = data_timeout
        self.connect_timeout = connect_timeout
        self.helo = helo
        self.lmtp = lmtp
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.caps = Capabilities()
        self.broken = False
        self.transactions = 0
        self.pooled = False      # handed out from the idle pool (not freshly connected)
        self.final_pending = False   # the content went up, the final reply has not come
        self.idle_since = 0.0    # time.monotonic() of the last command sent: the MTA's idle timer
        # The deadline of the reply being read (relist.edge.deadline: one timer for the
        # connection, not one per reply); made on the first read, in the event loop.
        self._deadline: Deadline | None = None
        self._timed_out = False

    # -- low level --------------------------------------------------------------

    async def _read_reply(self, what: str, timeout: float | None = None) -> Reply:
        """The MTA's next (possibly multi-line) reply, within one deadline for all of it:
        a late reply closes the connection (``_late_reply``) and is ``451 4.4.2 ...
        timed out``."""
        assert self.reader is not None
        if self._deadline is None:
            self._deadline = Deadline(asyncio.get_running_loop(), self._late_reply)
        self._deadline.set(timeout or self.timeout)
        lines: list[str] = []
        try:
            while True:
                raw = await self.reader.readline()
                if not raw:
                    raise _late(what) if self._timed_out else _lost(what)
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if len(line) < 3 or not line[:3].isdigit():
                    raise UpstreamError(Reply(451, "4.5.0",
                                              f"relist: upstream MTA sent a malformed reply {what}"))
                lines.append(line[4:])
                if len(line) == 3 or line[3] != "-":
                    if line.startswith("421"):
                        # RFC 5321 §3.8: the MTA is closing the channel; never reuse it.
                        self.broken = True
                    return parse_reply(int(line[:3]), lines)
        except (ConnectionError, OSError):
            self.broken = True
            raise (_late(what) if self._timed_out else _lost(what)) from None
        except UpstreamError:
            self.broken = True
            raise
        finally:
            self._deadline.clear()

    def _late_reply(self) -> None:
        """The reply did not come in time: close the connection; the read in progress
        ends (EOF) and reports the timeout."""
        if self.writer is None:
            return
        self._timed_out = True
        self.broken = True
        self.writer.transport.abort()

    async def _send(self, data: bytes | memoryview, what: str) -> None:
        assert self.writer is not None
        self.idle_since = time.monotonic()
        try:
            self.writer.write(data)
            if self.writer.transport.get_write_buffer_size():
                # The kernel did not take it all: wait (bounded) for the MTA to read.
                await asyncio.wait_for(self.writer.drain(), self.timeout)
            elif self.writer.transport.is_closing():
                raise ConnectionResetError("connection closed")
        except asyncio.TimeoutError:
            self.broken = True
            raise UpstreamError(Reply(451, "4.4.2",
                                      f"relist: upstream MTA timed out {what}; try again later")) from None
        except (ConnectionError, OSError):
            self.broken = True
            raise _lost(what) from None

    async def command(self, line: str, what: str = "") -> Reply:
        what = what or f"after {line.split(' ', 1)[0]}"
        await self._send(line.encode("utf-8") + b"\r\n", what)
        return await self._read_reply(what)

    # -- session ----------------------------------------------------------------

    async def connect(self) -> Capabilities:
        try:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=1 << 20), self.connect_timeout)
        except (asyncio.TimeoutError, OSError) as exc:
            self.broken = True
            reason = "timed out" if isinstance(exc, asyncio.TimeoutError) else (exc.strerror or str(exc))
            raise UpstreamError(Reply(451, "4.4.1",
                                      f"relist: cannot connect to upstream MTA {self.host}:{self.port} "
                                      f"({reason}); try again later")) from None
        greeting = await self._read_reply("at greeting")
        if greeting.code != 220:
            self.broken = True
            raise UpstreamError(Reply(451, "4.4.1",
                                      f"relist: upstream MTA refused the connection: {greeting}"))
        verb = "LHLO" if self.lmtp else "EHLO"
        reply = await self.command(f"{verb} {self.helo}")
        if reply.code == 250:
            self.caps = Capabilities.from_ehlo(reply.text.split("\n"))
        elif not self.lmtp:
            reply = await self.command(f"HELO {self.helo}")
            if reply.code != 250:
                self.broken = True
                raise UpstreamError(Reply(451, "4.4.1", f"relist: upstream MTA refused HELO: {reply}"))
            self.caps = Capabilities()
        else:
            self.broken = True
            raise UpstreamError(Reply(451, "4.4.1", f"relist: LMTP server refused LHLO: {reply}"))
        return self.caps

    async def mail(self, sender: str, options: list[str]) -> Reply:
        opts = "".join(" " + o for o in options)
        return await self.command(f"MAIL FROM:<{sender}>{opts}")

    async def rcpt(self, recipient: str, options: list[str] = ()) -> Reply:
        opts = "".join(" " + o for o in options)
        return await self.command(f"RCPT TO:<{recipient}>{opts}")

    async def mail_rcpt(self, sender: str, options: list[str], recipient: str) -> tuple[Reply, Reply | None]:
        """MAIL FROM with ``options`` and the first RCPT: the two replies, the second None
        when the MAIL was refused.  With PIPELINING (RFC 2920: MAIL and RCPT may stand
        anywhere in a group) both go out in one write and the replies are read together:
        one round trip where lock-step takes two.  Without it, one command at a time."""
        mail = f"MAIL FROM:<{sender}>{''.join(' ' + o for o in options)}"
        rcpt = f"RCPT TO:<{recipient}>"
        if not self.caps.pipelining:
            reply = await self.command(mail)
            return reply, (await self.command(rcpt) if reply.code < 300 else None)
        await self._send(f"{mail}\r\n{rcpt}\r\n".encode("utf-8"), "after MAIL")
        reply = await self._read_reply("after MAIL")
        if reply.code == 421:
            return reply, None      # closing the channel: no RCPT reply follows
        # After a refused MAIL the RCPT's reply (503) is read too: the next command's
        # reply must be the next one read.
        rcpt_reply = await self._read_reply("after RCPT")
        return reply, (rcpt_reply if reply.code < 300 else None)

    async def reissue(self, sender: str, options: list[str], recipients: list[str]) -> list[Reply]:
        """RSET the open transaction, then MAIL FROM with ``options`` and a RCPT per
        recipient: the replies in order (RSET, MAIL, each RCPT).

        With PIPELINING (RFC 2920 §3.1: RSET, MAIL and RCPT may stand anywhere in a
        group) the commands go out in one write and the replies are read together:
        one round trip.  Without it, one command at a time, stopping at the first
        failure (the caller refuses the transaction then anyway).
        """
        lines = ["RSET", f"MAIL FROM:<{sender}>{''.join(' ' + o for o in options)}"]
        lines += [f"RCPT TO:<{r}>" for r in recipients]
        replies: list[Reply] = []
        if self.caps.pipelining:
            await self._send("".join(line + "\r\n" for line in lines).encode("utf-8"),
                             "while re-issuing MAIL")
            for line in lines:
                replies.append(await self._read_reply(f"after {line.split()[0]} (re-issued)"))
        else:
            for i, line in enumerate(lines):
                reply = await self.command(line, f"after {line.split()[0]} (re-issued)")
                replies.append(reply)
                if reply.code >= 300 or (i == 0 and reply.code != 250):
                    break
        if replies[0].code != 250:
            self.broken = True      # RSET refused: the session's state is unknown
        return replies

    async def data(self, content: bytes | RawMessage, n_rcpts: int = 1) -> list[Reply]:
        """Send DATA and the content (bytes, or a message written as its header and its
        body, never joined); return the final reply (one per recipient in LMTP)."""
        reply = await self.command("DATA")
        if reply.code != 354:
            return [reply] * (n_rcpts if self.lmtp else 1)
        self.final_pending = True    # from here on, the MTA may queue the message
        if isinstance(content, bytes):
            pieces = dot_stuffed([content])
        else:
            pieces = dot_stuffed([content.header_bytes(), content.body], (False, content.crlf_known()))
        if sum(map(len, pieces)) <= WRITE_CHUNK:
            await self._send(b"".join(pieces), "during DATA")
        else:
            for piece in pieces:
                view = memoryview(piece)
                for at in range(0, len(view), WRITE_CHUNK):
                    await self._send(view[at:at + WRITE_CHUNK], "during DATA")
        self.transactions += 1
        # RFC 5321 §4.5.3.2.6 suggests 10 minutes for the final reply ([upstream]
        # data_timeout): giving up earlier risks a duplicate if the MTA did queue it.
        count = n_rcpts if self.lmtp else 1
        replies = [await self._read_reply("after end of DATA", self.data_timeout) for _ in range(count)]
        self.final_pending = False
        return replies

    async def rset(self) -> None:
        reply = await self.command("RSET")
        if reply.code != 250:
            self.broken = True

    async def quit(self) -> None:
        if self.writer is None:
            return
        try:
            if not self.broken:
                self.writer.write(b"QUIT\r\n")
                await asyncio.wait_for(self.reader.readline(), 2)
        except Exception:  # noqa: BLE001 - closing anyway; nothing to report
            pass
        finally:
            self.close()

    def close(self) -> None:
        self.broken = True
        if self._deadline is not None:
            self._deadline.cancel()
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def closed_by_peer(self) -> str | None:
        """Why this idle connection cannot carry a transaction (the MTA closed it, or
        said something unasked, e.g. ``421 4.4.2 ... timeout exceeded``), else None."""
        if self.broken or self.reader is None or self.writer is None:
            return "connection closed"
        pending = bytes(getattr(self.reader, "_buffer", b""))   # an unsolicited reply
        if pending:
            lines = pending.decode("utf-8", "replace").strip().splitlines()
            return (lines or ["unexpected data"])[0][:200]
        if self.reader.at_eof() or getattr(self.reader, "_eof", False) or \
                self.writer.transport.is_closing():
            return "connection closed by the MTA"
        return None


class Pool:
    """A small pool of idle connections to one next hop.

    A connection goes back to the pool only in a clean state (after a final DATA
    reply or a successful RSET) and is dropped after ``max_transactions``.
    """

    def __init__(self, host: str, port: int, *, timeout: float, connect_timeout: float,
                 helo: str, data_timeout: float = 600, size: int = 8, lmtp: bool = False,
                 max_transactions: int = 1000, idle_max: float = IDLE_MAX):
        self.host, self.port = host, port
        self.kwargs = dict(timeout=timeout, connect_timeout=connect_timeout, helo=helo,
                           data_timeout=data_timeout, lmtp=lmtp)
        self.size = size
        self.max_transactions = max_transactions
        self.idle_max = idle_max
        self.idle: list[Connection] = []
        self.caps: Capabilities | None = None   # as last seen
        self.stale = 0   # pooled connections found closed by the MTA (module doc)

    async def acquire(self) -> Connection:
        """An idle connection the MTA has not closed, else a new one (``UpstreamError``
        when it cannot be made)."""
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            why = conn.closed_by_peer()
            if why is None and now - conn.idle_since <= self.idle_max:
                conn.pooled = True
                return conn
            if why is not None:
                self.discard_stale(conn, why)
            else:
                conn.close()   # idle too long: the MTA may close it any moment
        conn = Connection(self.host, self.port, **self.kwargs)
        self.caps = await conn.connect()
        return conn

    def discard_stale(self, conn: Connection, why: str, relist_id: str = "") -> None:
        """Drop a pooled connection the MTA closed while it was idle: log and count it."""
        self.stale += 1
        idle = time.monotonic() - conn.idle_since
        log.info("%supstream %s:%d: pooled connection closed by the MTA after %.0f s idle (%s); "
                 "using a new connection", f"{relist_id}: " if relist_id else "", self.host, self.port,
                 idle, ascii(why)[1:-1])
        conn.close()

    async def release(self, conn: Connection, *, clean: bool) -> None:
        """Return ``conn``; ``clean`` says no transaction is open on it."""
        if not conn.broken and not clean:
            try:
                await conn.rset()
            except UpstreamError:
                conn.close()
                return
        if conn.broken or len(self.idle) >= self.size or conn.transactions >= self.max_transactions:
            await conn.quit()
            return
        conn.pooled = False
        self.idle.append(conn)

    async def close(self) -> None:
        while self.idle:
            await self.idle.pop().quit()
