"""An upstream MTA stand-in: an aiosmtpd server that records what it accepts and can
be told to misbehave (the fake MTA with an error-injection queue, as Mailman's
``testing/mta.py``).

Injections are consumed in order, each for one command (``"CONNECT"``, ``"MAIL"``,
``"RCPT"``, ``"DATA"``) and optionally one address:

* a reply string, e.g. ``"550 5.1.1 no such user"``: answered instead of the default
  (at ``CONNECT``: instead of the greeting, and the connection is closed after it;
  a ``421`` reply closes the connection after it for any command, as Postfix does);
* ``"hang"``: wait ``hang_seconds`` before answering (a slow or stuck MTA); at DATA
  the message is not queued;
* ``"drop"``: close the connection without answering;
* ``"drop-mid-data"`` (DATA only): read part of the data, then close;
* ``"queue-then-drop"`` / ``"queue-then-hang"`` (DATA only): the message is queued
  (it is in ``messages``), then the connection is closed, or the reply comes only
  after ``hang_seconds``: the MTA has the message but its client does not know.

Only messages answered (or, above, queued) at end of DATA are in ``messages``;
``commands`` lists every MAIL (with its parameters), RCPT, RSET and DATA in the
order received.  ``eightbitmime``/``smtputf8``/``pipelining`` choose what EHLO offers.

Misbehaviour that is not one command's: ``idle_timeout`` closes a connection idle that
long with ``421 4.4.2 ... Error: timeout exceeded`` (Postfix's ``smtpd_timeout``);
``reply_delay`` delays every reply (a slow MTA); ``data_delay`` delays the final reply
after the message is queued (a slow disk; ``in_data`` counts the messages queued and
not yet answered: a client cut off then has a message the MTA will deliver);
``stop()`` closes open connections too, so the MTA is really down until ``start()``.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from relist.sandbox.loop import LoopThread

__all__ = ["Delivered", "Sink"]


@dataclass
class Delivered:
    mail_from: str
    rcpt_tos: list[str]
    mail_options: list[str]
    data: bytes


@dataclass
class Injection:
    command: str
    action: str
    address: str | None = None


class _SinkSMTP(SMTP):
    # Postfix takes lines and commands longer than RFC 5321's limits (it splits long
    # text lines internally and joins them on delivery); so does the stand-in.
    line_length_limit = 1 << 26

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.command_size_limits = collections.defaultdict(lambda: 4096)
        self.command_size_limit = 4096

    def connection_made(self, transport):
        super().connection_made(transport)
        self.event_handler._sessions.add(self)

    def connection_lost(self, error):
        self.event_handler._sessions.discard(self)
        super().connection_lost(error)

    async def _handle_client(self):
        sink: Sink = self.event_handler
        inj = sink._take("CONNECT", None)
        if inj is not None:
            if inj.action == "hang":
                await asyncio.sleep(sink.hang_seconds)
            elif inj.action != "drop":
                await self.push(inj.action)
            self.transport.close()
            return
        await super()._handle_client()

    def _timeout_cb(self):
        # Postfix's smtpd_timeout: say why, then close (aiosmtpd only closes).
        sink: Sink = self.event_handler
        if self.transport is None:
            return
        if not self.transport.is_closing():
            sink.idle_closed += 1
            self.transport.write(b"421 4.4.2 sink.test Error: timeout exceeded\r\n")
        super()._timeout_cb()

    async def push(self, status):
        sink: Sink = self.event_handler
        if sink.reply_delay:
            await asyncio.sleep(sink.reply_delay)
        await super().push(status)
        if isinstance(status, str) and status.startswith("421") and self.transport is not None:
            self.transport.close()   # RFC 5321 §3.8: 421 closes the channel

    async def smtp_DATA(self, arg):
        sink: Sink = self.event_handler
        inj = sink._take("DATA", None, peek=True)
        if inj is not None and inj.action == "drop-mid-data" and self.envelope.rcpt_tos:
            sink._take("DATA", None)
            await self.push("354 End data with <CR><LF>.<CR><LF>")
            await self._reader.readline()
            self.transport.close()
            return
        await super().smtp_DATA(arg)


class _SinkLMTP(_SinkSMTP, LMTP):
    pass


class Sink:
    """``lmtp=True`` makes it an LMTP server (Mailman's LMTP runner stand-in): after
    DATA it answers per recipient; a ``"DATA"`` injection with an address sets that
    recipient's reply."""

    def __init__(self, *, eightbitmime: bool = True, smtputf8: bool = True, lmtp: bool = False,
                 hang_seconds: float = 30.0, reply: str = "250 2.0.0 Ok: queued as {n}",
                 pipelining: bool = False, idle_timeout: float | None = None,
                 reply_delay: float = 0.0, data_delay: float = 0.0, size: int | None = None):
        self.eightbitmime = eightbitmime
        self.size = size          # advertised as SIZE (and enforced) when set
        self.smtputf8 = smtputf8
        self.pipelining = pipelining
        self.hang_seconds = hang_seconds
        self.reply = reply
        self.lmtp = lmtp
        self.idle_timeout = idle_timeout
        self.reply_delay = reply_delay
        self.data_delay = data_delay
        self.messages: list[Delivered] = []
        self.commands: list[str] = []
        self.injections: list[Injection] = []
        self.connections = 0
        self.idle_closed = 0    # connections closed by idle_timeout
        self.in_data = 0        # messages received, waiting out data_delay
        self._sessions: set = set()
        self._thread: LoopThread | None = None
        self._server = None

    # -- control ------------------------------------------------------------------

    def inject(self, command: str, action: str, address: str | None = None) -> None:
        self.injections.append(Injection(command.upper(), action, address))

    def _take(self, command: str, address: str | None, peek: bool = False) -> Injection | None:
        for i, inj in enumerate(self.injections):
            if inj.command == command and (inj.address is None or inj.address == address):
                return inj if peek else self.injections.pop(i)
        return None

    async def _injected(self, server, command: str, address: str | None = None):
        inj = self._take(command, address)
        if inj is None:
            return None
        if inj.action == "hang":
            await asyncio.sleep(self.hang_seconds)
            return None
        if inj.action == "drop":
            server.transport.close()
            return "421 4.4.2 dropped"  # never seen by the peer: the connection is gone
        return inj.action

    # -- aiosmtpd hooks -------------------------------------------------------------

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        out = []
        for line in responses:
            word = line[4:].split(" ")[0].upper()
            if (word == "8BITMIME" and not self.eightbitmime) or (word == "SMTPUTF8" and not self.smtputf8):
                continue
            out.append(line)
        if self.pipelining:
            out.insert(-1, "250-PIPELINING")
        return out

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.commands.append(" ".join([f"MAIL FROM:<{address}>", *mail_options]))
        reply = await self._injected(server, "MAIL", address)
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.commands.append(f"RCPT TO:<{address}>")
        reply = await self._injected(server, "RCPT", address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_RSET(self, server, session, envelope):
        self.commands.append("RSET")
        return "250 2.0.0 Ok"

    async def handle_DATA(self, server, session, envelope):
        self.commands.append("DATA")
        if self.lmtp:
            return self._lmtp_data(envelope)
        reply = await self._injected(server, "DATA")
        if reply in ("queue-then-drop", "queue-then-hang"):
            self._queue(envelope)
            if reply == "queue-then-hang":
                await asyncio.sleep(self.hang_seconds)
            server.transport.close()
            return "421 4.4.2 never seen: the connection is gone"
        if reply:
            return reply
        self._queue(envelope)
        n = len(self.messages)
        if self.data_delay:
            self.in_data += 1
            try:
                await asyncio.sleep(self.data_delay)
            finally:
                self.in_data -= 1
        return self.reply.format(n=n)

    def _queue(self, envelope) -> None:
        self.messages.append(Delivered(envelope.mail_from, list(envelope.rcpt_tos),
                                       list(envelope.mail_options), envelope.original_content))

    def _lmtp_data(self, envelope) -> str:
        lines, delivered = [], []
        for rcpt in envelope.rcpt_tos:
            inj = self._take("DATA", rcpt)
            if inj is not None and inj.address == rcpt:
                lines.append(inj.action)
            else:
                delivered.append(rcpt)
                lines.append(f"250 2.0.0 <{rcpt}> delivered")
        if delivered:
            self.messages.append(Delivered(envelope.mail_from, delivered,
                                           list(envelope.mail_options), envelope.original_content))
        return "\r\n".join(lines)

    # -- running --------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> Sink:
        self._thread = LoopThread("sink")
        loop = self._thread.loop

        def factory():
            self.connections += 1
            cls = _SinkLMTP if self.lmtp else _SinkSMTP
            return cls(self, hostname="sink.test", enable_SMTPUTF8=True,
                       data_size_limit=self.size, loop=loop, timeout=self.idle_timeout or 300)

        async def create():
            return await loop.create_server(factory, host, port)
        self._server = self._thread.call(create())
        return self

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._thread is None:
            return

        async def close():
            self._server.close()
            for session in list(self._sessions):
                if session.transport is not None:
                    session.transport.close()
        self._thread.call(close())
        self._thread.close()
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
