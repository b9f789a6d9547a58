"""The SMTP front end: aiosmtpd hooks that relay in lock-step with the upstream MTA.

Before-queue proxy semantics: MAIL FROM opens (or reuses) an upstream connection
and is forwarded; each RCPT is forwarded and the MTA's reply becomes relist's reply;
at the end of DATA the core runs, the result goes upstream, and the MTA's final
reply is relist's reply.  relist answers 250 only after the MTA did, and anything it
cannot finish is a 4xx.  The hooks only translate between SMTP and ``relist.app``.

BODY=8BITMIME (RFC 6152) is decided after the content is known, by re-issuing the
upstream transaction; see ``must_declare_8bitmime``.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
from dataclasses import replace
from datetime import datetime, timezone

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from relist.app import Relay, new_relist_id
from relist.core.model import Envelope, Record, Reply
from relist.edge.smtp_out import Capabilities, Connection, UpstreamError

__all__ = ["RelayHandler", "RelistLMTP", "RelistSMTP", "is_allowed", "must_declare_8bitmime"]

log = logging.getLogger("relist.smtpd")

INTERNAL_ERROR = "relist: internal error (id {id}); try again later"

# aiosmtpd represents the null reverse-path (RFC 5321 §4.5.5, used by bounces) as
# the string "<>"; upstream it must go out as MAIL FROM:<>, not <<>>.
NULL_PATH = "<>"

# "<dot-atom@domain>" and what follows: the form Mailman and MTAs always use.
_SIMPLE_PATH = re.compile(r"\s*<([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                          r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)>(.*)\Z", re.DOTALL)


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

    # Mailman and MUAs sometimes exceed RFC 5321's 1000-octet line; the MTA downstream
    # copes, so relist relays such lines rather than answering a permanent 500.
    line_length_limit = 1 << 20

    def __init__(self, handler: RelayHandler, **kwargs):
        super().__init__(handler, **kwargs)
        self.relay_handler = handler

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

    def connection_lost(self, error) -> None:
        conn = getattr(self.session, "upstream", None)
        if conn is not None:
            self.session.upstream = None
            conn.close()  # a transaction may be open upstream: abandon it
        super().connection_lost(error)


def must_declare_8bitmime(record: Record, caps: Capabilities, sent_options: list[str]) -> bool:
    """Whether the MAIL that went upstream must be re-issued with BODY=8BITMIME.

    MAIL goes upstream in lock-step, before DATA, so relist cannot know then whether
    the message it will send is 8-bit; Mailman never declares BODY=8BITMIME.  After
    the core ran, the ``downgrade`` step has recorded ``needs_8bitmime`` (an 8-bit
    byte is left).  When it is true, the MTA offers 8BITMIME and the MAIL that went
    upstream carried no BODY=8BITMIME or BODY=BINARYMIME, the transaction is
    re-issued before DATA: RSET, ``MAIL FROM:<same> BODY=8BITMIME`` plus the other
    parameters that went upstream the first time, and a RCPT for every recipient the
    MTA accepted, pipelined when the MTA offers PIPELINING (one round trip).  DATA
    follows only if the MTA accepts the MAIL and every one of those recipients again;
    otherwise the client hears ``451 4.5.0`` for the whole transaction (one per
    recipient in LMTP) and retries, so relist never delivers to fewer recipients than
    it answered 250 for, and never twice (nothing was sent before the one DATA).

    Declaring it only when needed: a message declared 8BITMIME may be converted by a
    later MTA that relays to a host without 8BITMIME, which breaks relist's body
    hash.  7-bit content therefore keeps the single MAIL it had.  When the MTA does
    not offer 8BITMIME, ``downgrade`` has already re-encoded 8-bit body parts; what
    is left (raw 8-bit header fields) goes as it is, as Postfix itself relays it.
    A leg that does not run ``downgrade`` (ingress) passes on the client's BODY.
    """
    if not caps.eightbitmime or not dict(record.extra).get("needs_8bitmime"):
        return False
    return not any(o.upper() in ("BODY=8BITMIME", "BODY=BINARYMIME") for o in sent_options)


def _summary(replies: list[Reply]) -> Reply:
    """One reply for the log and the record: the first failure, else the first reply."""
    for r in replies:
        if r.code >= 400:
            return r
    return replies[0]


class RelistLMTP(RelistSMTP, LMTP):
    """The same, speaking LMTP (RFC 2033): LHLO instead of EHLO, and a final reply per
    recipient after DATA.  The ingress leg listens with this, so the MTA learns per
    recipient what Mailman's LMTP runner said."""


class RelayHandler:
    """aiosmtpd hooks.  State per SMTP session lives on aiosmtpd's ``session``."""

    def __init__(self, relay: Relay, allowed):
        self.relay = relay
        self.allowed = allowed

    # -- helpers ------------------------------------------------------------------

    async def _caps(self) -> Capabilities:
        pool = self.relay.pool
        if pool.caps is None:
            try:
                conn = await pool.acquire()
                await pool.release(conn, clean=True)
            except UpstreamError:
                return Capabilities()
        return pool.caps or Capabilities()

    async def _drop_upstream(self, session, *, clean: bool = False) -> None:
        conn: Connection | None = getattr(session, "upstream", None)
        session.upstream = None
        if conn is not None:
            await self.relay.pool.release(conn, clean=clean)

    async def _reissue_8bitmime(self, session, conn: Connection, env: Envelope,
                                upstream: dict[str, Reply]) -> Reply | None:
        """Re-issue the upstream transaction with BODY=8BITMIME (``must_declare_8bitmime``):
        None when the MTA accepted it all again, else the 4xx for the client."""
        options = [o for o in session.upstream_mail_options if o.split("=", 1)[0].upper() != "BODY"]
        options.append("BODY=8BITMIME")
        replies = await conn.reissue(env.mail_from, options, list(env.rcpt_tos))
        names = ["RSET (re-issue)", "MAIL BODY=8BITMIME (re-issue)"]
        names += [f"{r} (re-issue)" for r in env.rcpt_tos]
        upstream.update(zip(names, replies))
        failed = next(((name, r) for name, r in zip(names, replies)
                       if r.code >= 300 or (name == names[0] and r.code != 250)), None)
        if failed is None:
            return None
        what, why = failed
        log.warning("%s: MAIL re-issued with BODY=8BITMIME refused: %s: %s", session.relist_id, what, why)
        return Reply(451, "4.5.0", f"relist: upstream MTA refused the transaction re-issued with "
                                   f"BODY=8BITMIME ({what.removesuffix(' (re-issue)')}: {why}); try again later")

    # -- hooks --------------------------------------------------------------------

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        await self._drop_upstream(session)
        caps = await self._caps()
        out = []
        for line in responses:
            word = line[4:].split(" ")[0].upper()
            if word == "8BITMIME" and not caps.eightbitmime:
                continue
            if word == "SMTPUTF8" and not caps.smtputf8:
                continue
            out.append(line)
        out.insert(-1, "250-PIPELINING")
        out.insert(-1, "250-ENHANCEDSTATUSCODES")
        return out

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        await self._drop_upstream(session)  # e.g. after an oversize DATA left one open
        session.relist_id = new_relist_id()
        session.upstream_replies = {}
        try:
            conn = await self.relay.pool.acquire()
        except UpstreamError as exc:
            log.warning("%s: MAIL from=<%s> deferred: %s", session.relist_id, address, exc.reply)
            return exc.reply.line()
        options = []
        for opt in mail_options:
            key = opt.split("=", 1)[0].upper()
            if key == "SMTPUTF8":
                if not conn.caps.smtputf8:
                    await self.relay.pool.release(conn, clean=True)
                    return "555 5.6.7 relist: the upstream MTA does not offer SMTPUTF8"
                options.append(opt)
            elif key == "BODY" and conn.caps.eightbitmime:
                options.append(opt)
            elif key == "SIZE" and conn.caps.size is not None:
                options.append(opt)
        try:
            reply = await conn.mail("" if address == NULL_PATH else address, options)
        except UpstreamError as exc:
            conn.close()
            return exc.reply.line()
        if reply.code >= 300:
            await self.relay.pool.release(conn, clean=True)
            return reply.line()
        session.upstream = conn
        session.upstream_mail_options = options
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return reply.line()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        conn: Connection | None = getattr(session, "upstream", None)
        if conn is None or conn.broken:
            reply = Reply(451, "4.4.2", "relist: connection to upstream MTA lost; try again later")
        else:
            try:
                reply = await conn.rcpt(address)
            except UpstreamError as exc:
                reply = exc.reply
        session.upstream_replies[address] = reply
        if reply.code < 300:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return reply.line()

    async def handle_DATA(self, server, session, envelope):
        started = time.monotonic()
        relist_id = session.relist_id
        raw = envelope.original_content
        env = Envelope(
            mail_from="" if envelope.mail_from == NULL_PATH else envelope.mail_from,
            rcpt_tos=tuple(envelope.rcpt_tos),
            mail_options=tuple(envelope.mail_options),
            client_ip=str(session.peer[0]) if session.peer else "",
            client_helo=session.host_name or "",
        )
        conn: Connection | None = getattr(session, "upstream", None)
        session.upstream = None
        record = None
        upstream = dict(session.upstream_replies)
        lmtp = self.relay.lmtp
        n = len(env.rcpt_tos) if lmtp else 1
        try:
            if conn is None or conn.broken:
                raise UpstreamError(Reply(451, "4.4.2", "relist: connection to upstream MTA lost; try again later"))
            outcome = await self.relay.run(raw, env, relist_id, upstream_8bitmime=conn.caps.eightbitmime)
            record = outcome.record
            if outcome.reply is not None:
                replies = [outcome.reply] * n
                await self.relay.pool.release(conn, clean=False)
            else:
                refusal = None
                if must_declare_8bitmime(record, conn.caps, session.upstream_mail_options):
                    record = replace(record, extra=record.extra + (("mail_reissued", "BODY=8BITMIME"),))
                    refusal = await self._reissue_8bitmime(session, conn, env, upstream)
                if refusal is not None:
                    replies = [refusal] * n
                    await self.relay.pool.release(conn, clean=False)
                else:
                    replies = await conn.data(outcome.message, n)
                    if lmtp:  # LMTP: one final reply per accepted recipient, in RCPT order
                        upstream.update({f"DATA {r}": rep for r, rep in zip(env.rcpt_tos, replies)})
                    else:
                        upstream["DATA"] = replies[0]
                    await self.relay.pool.release(conn, clean=True)
        except UpstreamError as exc:
            replies = [exc.reply] * n
            if conn is not None:
                conn.close()
        except Exception:  # noqa: BLE001 - a bug: never let it become a 5xx
            log.exception("%s: internal error while processing message from=<%s>", relist_id, env.mail_from)
            replies = [Reply(451, "4.3.0", INTERNAL_ERROR.format(id=relist_id))] * n
            if conn is not None:
                conn.close()
        reply = _summary(replies)
        if record is None:
            record = Record(relist_id, datetime.now(timezone.utc), env, "", None, len(raw), 0, (), reply)
        self.relay.finish(relist_id, record, env, upstream, reply, started, len(raw))
        return "\r\n".join(r.line() for r in replies)

    async def handle_RSET(self, server, session, envelope):
        await self._drop_upstream(session)
        return "250 2.0.0 Ok"

    async def handle_QUIT(self, server, session, envelope):
        await self._drop_upstream(session)
        return "221 2.0.0 Bye"

    async def handle_exception(self, error):
        log.error("unexpected error in the SMTP session", exc_info=error)
        return "451 4.3.0 relist: internal error; try again later"
