"""The SMTP/LMTP server side of a session: aiosmtpd's ``SMTP`` with relist's connection
policy.  The access check runs before the greeting (only configured clients:
``is_allowed``); a command line is checked against ``COMMAND_SIZE_LIMIT``, not
aiosmtpd's 512 octets, so the MTA judges what it accepts; DATA is read in blocks and
a text line of any length is relayed (only ``max_message_size`` is a limit, 552);
the session knows whether it is in a transaction, for draining.  What happens to
each command is ``relist.edge.smtp_in.RelayHandler``'s (aiosmtpd's hooks)."""

from __future__ import annotations

import asyncio
import collections
import functools
import ipaddress
import logging
import re
import time
from typing import TYPE_CHECKING

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import MISSING, SMTP, syntax

from relist.core.model import Reply
from relist.edge.deadline import Deadline
from relist.edge.smtp_out import LINE_DOT

if TYPE_CHECKING:
    from relist.edge.smtp_in import RelayHandler

__all__ = ["COMMAND_SIZE_LIMIT", "RelistLMTP", "RelistSMTP", "is_allowed"]

log = logging.getLogger("relist.smtpd")

SHUTTING_DOWN = "421 4.3.2 {host} relist: shutting down; try again later"

# aiosmtpd refuses a command line over 512 octets (RFC 5321 §4.5.3.1.4's minimum) with
# a permanent 500; relist forwards MAIL and RCPT, so the MTA says what it accepts.
COMMAND_SIZE_LIMIT = 4096

# "<dot-atom@domain>" and what follows: the form Mailman and MTAs always use.
_SIMPLE_PATH = re.compile(r"\s*<([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                          r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(.*)\Z", re.DOTALL)


def _too_big(limit: int) -> Reply:
    """RFC 5321 §4.2.5: the content was over ``[server] max_message_size``."""
    return Reply(552, "5.3.4", f"relist: message exceeds the maximum message size of {limit} octets")


def is_allowed(peer, networks) -> bool:
    if not peer:
        return False
    try:
        ip = ipaddress.ip_address(peer[0] if isinstance(peer, tuple) else peer)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)




class RelistSMTP(SMTP):
    """aiosmtpd's server with relist's connection policy."""

    # The StreamReader's buffer limit (aiosmtpd passes line_length_limit to it).  It no
    # longer limits a text line: ``smtp_DATA`` joins the pieces of a longer one.
    line_length_limit = 1 << 20

    def __init__(self, handler: RelayHandler, **kwargs):
        super().__init__(handler, **kwargs)
        self.relay_handler = handler
        # aiosmtpd keeps these limits in one dict on the class, shared by every
        # session (and grown by each EHLO); this session's own, at relist's limit.
        self.command_size_limits = collections.defaultdict(lambda: COMMAND_SIZE_LIMIT)
        self.command_size_limit = COMMAND_SIZE_LIMIT
        self.busy = False   # a command is being handled
        self.oversize = 0   # the size of content read past max_message_size (552)
        self._idle: Deadline | None = None   # the idle timer (``_reset_timeout``)
        # After the content: how long the session may wait for relist's final reply
        # (the core, then the MTA's final reply, up to [upstream] data_timeout) before
        # aiosmtpd's idle timer closes it; set by the server.  A close there would
        # abandon a message the MTA may have queued, which the client then sends again.
        self.reply_wait = 0.0
        self._smtp_methods = {name: self._guarded(name, method)
                              for name, method in self._smtp_methods.items()}

    # -- draining (module doc) -----------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        """MAIL was accepted and the transaction has not ended (final reply or RSET)."""
        return self.envelope is not None and self.envelope.mail_from is not None

    @property
    def idle(self) -> bool:
        return not self.busy and not self.in_transaction

    def _guarded(self, name: str, method):
        """``method`` (one smtp_* command) that, while draining, runs only inside a
        transaction in flight, and says goodbye once the transaction is over."""
        @functools.wraps(method)
        async def guarded(arg):
            handler = self.relay_handler
            if handler.draining and name != "QUIT" and not self.in_transaction:
                self.goodbye()
                return
            self.busy = True
            try:
                await method(arg)
            finally:
                self.busy = False
            if handler.draining and name != "QUIT" and not self.in_transaction:
                self.goodbye()
        return guarded

    def goodbye(self) -> None:
        """Answer ``421`` (to the command just read, or ahead of the next one) and close."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(SHUTTING_DOWN.format(host=self.hostname).encode("ascii") + b"\r\n")
        transport.close()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.relay_handler.sessions.add(self)
        if self.relay_handler.draining:    # accepted just before the listener closed
            self.goodbye()

    # -- the idle timer -------------------------------------------------------------

    def _reset_timeout(self, duration: float | None = None) -> None:
        """aiosmtpd's idle timer, restarted at every command: here a deadline moved
        (relist.edge.deadline), not a timer cancelled and made anew per command.  A
        shorter deadline than the one set (the idle timeout after DATA's
        ``reply_wait``) takes effect at once."""
        if self._idle is None:
            self._idle = Deadline(self.loop, self._timeout_cb)
            self._timeout_handle = self._idle   # what aiosmtpd cancels when the connection is lost
        self._idle.set(duration or self._timeout_duration)

    # -- DATA ---------------------------------------------------------------------

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA, except that a line longer than the reader's limit is relayed
        (joined from its pieces) instead of answered with a permanent ``500 Line too
        long``: RFC 5321 §4.5.3.1.6's 1000 octets is what a client must send, and
        Postfix, the next hop, accepts longer lines.  Only ``max_message_size`` limits
        the content: ``552 5.3.4`` once the whole of it has been read (§4.2.5)."""
        if await self.check_helo_needed():
            return
        if await self.check_auth_needed("DATA"):
            return
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        started = time.monotonic()
        try:
            content = await self._read_content(self.data_size_limit)
        except asyncio.CancelledError:
            self._writer.close()
            raise
        if content is None:
            over = _too_big(self.data_size_limit)
            reply = self.final_reply(over.line())     # (one per recipient in LMTP: before the reset)
            await self.relay_handler.too_big(self, self.session, self.envelope, over, self.oversize, started)
            self._set_post_data_state()
            await self.push(reply)
            return
        self.envelope.content = self.envelope.original_content = content
        del content    # the handler lets go of the bytes once parsed: so must this frame
        if self.reply_wait > self._timeout_duration:
            self._reset_timeout(self.reply_wait)   # the next command restores the idle timer
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)

    async def _read_content(self, limit: int) -> bytes | None:
        """The content up to the line ``.``, transparency undone (RFC 5321 §4.5.2), or
        None when it is over ``limit`` (then read on to the end, nothing kept).

        By blocks, not lines (a line cost ~3 µs here, most of relist's time per KiB of
        a post): only at the start of the content, and while a line starts with a dot
        or a CR, is it read line by line (the line ``.`` ends the content; a CR may begin
        the CRLF before it).  From the first other byte on, ``readuntil(CRLF.CRLF)``
        reads to the end in pieces of at most the reader's limit (a piece never ends
        inside the terminator: readuntil keeps the bytes that may begin it), and one
        ``replace`` over the joined pieces removes the dots that begin lines.  What is
        read line by line never ends in a CR that a LF follows, so no CRLF-dot and no
        terminator spans it and the bulk part."""
        reader = self._reader
        lines: list[bytes] = []    # read line by line, transparency undone
        pieces: list[bytes] = []   # then as read, up to the terminating CRLF.CRLF
        size = 0
        state = "start"            # at a line start / after a CR / inside a line
        while True:
            if state == "mid":
                try:
                    piece = await reader.readuntil(b"\r\n.\r\n")
                    piece, done = piece[:-3], True       # the CRLF before the dot is content
                except asyncio.LimitOverrunError as exc:
                    piece, done = await reader.read(exc.consumed), False
                size += len(piece)
                if not limit or size <= limit:
                    pieces.append(piece)
                elif pieces or lines:
                    pieces.clear()
                    lines.clear()
                if done:
                    break
                continue
            byte = await reader.readexactly(1)
            if state == "start" and byte == b".":
                try:
                    line = await reader.readuntil(b"\r\n")
                except asyncio.LimitOverrunError as exc:
                    line = await reader.read(exc.consumed)
                if line == b"\r\n":
                    break
                size += 1 + len(line)
                lines.append(line)
                state = "start" if line.endswith(b"\r\n") else "mid"
            else:
                size += 1
                lines.append(byte)
                state = "start" if state == "cr" and byte == b"\n" else "cr" if byte == b"\r" else "mid"
            if limit and size > limit:
                lines.clear()
        if limit and size > limit:
            self.oversize = size
            return None
        bulk = b"".join(pieces)
        pieces.clear()
        if LINE_DOT.search(bulk):
            bulk = bulk.replace(b"\r\n.", b"\r\n")
        if lines:
            return b"".join(lines) + bulk
        return bulk

    async def _handle_client(self) -> None:
        # aiosmtpd has no connect hook; refuse clients outside allowed_clients here,
        # before the greeting (RFC 5321 §3.1: 554 instead of 220).
        peer = self.session.peer
        if not is_allowed(peer, self.relay_handler.allowed):
            log.warning("connect from %s refused: not in allowed_clients", peer)
            await self.push(f"554 5.7.1 {self.hostname} relist: client {peer[0] if peer else '?'} "
                            "is not in allowed_clients")
            self.transport.close()
            return
        await super()._handle_client()

    def _getaddr(self, arg):
        # aiosmtpd parses every path with the email package's RFC 5322 parser (about
        # a tenth of relist's per-message CPU); the plain "<local@domain>" form needs
        # only this regex.  Anything else (quoted local parts, "<>") goes the long way.
        m = _SIMPLE_PATH.match(arg or "")
        if m:
            return m.group(1), m.group(2)
        return super()._getaddr(arg)

    def final_reply(self, line: str) -> str:
        """What the client hears when relist itself answers the end of DATA (SMTP: one
        reply; RelistLMTP: one per recipient)."""
        return line

    def connection_lost(self, error) -> None:
        conn = getattr(self.session, "upstream", None)
        if conn is not None:
            self.session.upstream = None
            conn.close()  # a transaction may be open upstream: abandon it
        super().connection_lost(error)
        self.relay_handler.session_closed(self)


class RelistLMTP(RelistSMTP, LMTP):
    """The same, speaking LMTP (RFC 2033): LHLO instead of EHLO, and a final reply per
    recipient after DATA.  The ingress leg listens with this, so the MTA learns per
    recipient what Mailman's LMTP runner said."""

    def final_reply(self, line: str) -> str:
        """RFC 2033 §4.2: after DATA, one reply per accepted recipient, relist's own too
        (a single line would leave the client waiting for the others)."""
        n = len(self.envelope.rcpt_tos) if self.envelope is not None else 0
        return "\r\n".join([line] * max(n, 1))

    async def handle_exception(self, error: Exception) -> str:
        status = await super().handle_exception(error)
        if self.envelope is not None and self.envelope.content is not None:   # a failure in DATA
            return self.final_reply(status)
        return status
