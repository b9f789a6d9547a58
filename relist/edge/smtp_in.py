"""The SMTP front end: aiosmtpd hooks that relay in lock-step with the upstream MTA.

Before-queue proxy semantics: MAIL FROM opens (or reuses) an upstream connection
and is forwarded (to an MTA that offers PIPELINING: in one write with the first RCPT,
whose reply is then the MAIL's refusal if the MTA refused it); each RCPT is forwarded
and the MTA's reply becomes relist's reply;
at the end of DATA the core runs, the result goes upstream, and the MTA's final
reply is relist's reply.  relist answers 250 only after the MTA did, and anything it
cannot finish is a 4xx.  The hooks only translate between SMTP and ``relist.app``.

BODY=8BITMIME (RFC 6152) is decided after the content is known, by re-issuing the
upstream transaction; see ``must_declare_8bitmime``.

No permanent error of relist's own: a text line of any length is relayed, and a
command line may be longer than aiosmtpd's 512 octets (the session's own policy:
``relist.edge.smtp_session``), so the MTA judges what it accepts.

Draining (``RelayHandler.drain``, on SIGTERM): a transaction in flight (MAIL accepted,
final reply not yet given) runs to its end; every session not in one is answered
``421 4.3.2`` and closed, at once if it is idle, else as soon as its transaction ends
(RFC 5321 §3.8: a 421 may be sent before the client's next command).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Protocol

from aiosmtpd.lmtp import LMTP

from relist.core.message import RawMessage
from relist.core.model import Envelope, Outcome, Record, Reply
from relist.core.safety import log_safe
from relist.edge.ids import new_relist_id
from relist.edge.smtp_out import Capabilities, Connection, Pool, UpstreamError
from relist.edge.smtp_session import RelistSMTP

__all__ = ["Relay", "RelayHandler", "must_declare_8bitmime"]

log = logging.getLogger("relist.smtpd")

INTERNAL_ERROR = "relist: internal error (id {id}); try again later"

# aiosmtpd represents the null reverse-path (RFC 5321 §4.5.5, used by bounces) as
# the string "<>"; upstream it must go out as MAIL FROM:<>, not <<>>.
NULL_PATH = "<>"


class Relay(Protocol):
    """What this edge needs from the relay it drives (relist.app.Relay, given by the
    composition root): the next-hop pool, whether it speaks LMTP, the core run for one
    message, and the accounting of a finished transaction."""

    pool: Pool
    lmtp: bool
    counters: dict[str, int]

    async def run(self, raw: bytes | RawMessage, envelope: Envelope, relist_id: str,
                  upstream_8bitmime: bool = True) -> Outcome: ...

    def finish(self, relist_id: str, record: Record | None, envelope: Envelope,
               upstream: dict[str, Reply], reply: Reply, started: float, size: int) -> None: ...


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
    if not caps.eightbitmime or not record.findings.needs_8bitmime:
        return False
    return not any(o.upper() in ("BODY=8BITMIME", "BODY=BINARYMIME") for o in sent_options)


def _protocol(server) -> str:
    """RFC 3848's protocol type of the client's session (the Received field's "with")."""
    return "LMTP" if isinstance(server, LMTP) else "ESMTP"


def _envelope(session, mail_from: str | None, rcpt_tos, mail_options, protocol: str = "ESMTP") -> Envelope:
    """relist's Envelope of the client's transaction (the null reverse-path as "")."""
    return Envelope(
        mail_from="" if mail_from in (None, NULL_PATH) else mail_from,
        rcpt_tos=tuple(rcpt_tos),
        mail_options=tuple(mail_options),
        client_ip=str(session.peer[0]) if session.peer else "",
        client_helo=session.host_name or "",
        protocol=protocol,
    )


def _summary(replies: list[Reply]) -> Reply:
    """One reply for the log and the record: the first failure, else the first reply."""
    for r in replies:
        if r.code >= 400:
            return r
    return replies[0]


class RelayHandler:
    """aiosmtpd hooks.  State per SMTP session lives on aiosmtpd's ``session``."""

    def __init__(self, relay: Relay, allowed):
        self.relay = relay
        self.allowed = allowed
        self.sessions: set[RelistSMTP] = set()   # open client connections
        self.draining = False
        self._all_closed: asyncio.Event | None = None
        for key in ("mail_deferred", "mail_refused"):   # transactions that ended at MAIL
            relay.counters.setdefault(key, 0)

    # -- draining (RelistSMTP and the module doc) -----------------------------------

    def drain(self) -> int:
        """Stop taking transactions: close idle sessions with 421 now, the others as
        their transaction ends.  Returns how many transactions are in flight."""
        self.draining = True
        self._all_closed = asyncio.Event()
        busy = 0
        for session in list(self.sessions):
            if session.idle:
                session.goodbye()
            else:
                busy += 1
        if not self.sessions:
            self._all_closed.set()
        return busy

    def session_closed(self, session: RelistSMTP) -> None:
        self.sessions.discard(session)
        if not self.sessions and self._all_closed is not None:
            self._all_closed.set()

    async def wait_closed(self) -> None:
        """Until every session has closed (``drain`` first)."""
        assert self._all_closed is not None
        await self._all_closed.wait()

    def cut(self) -> list[str]:
        """Close every session now; the relist ids of the transactions cut."""
        cut = []
        for session in list(self.sessions):
            if session.in_transaction or session.busy:
                cut.append(getattr(session.session, "relist_id", "") or "-")
            if session.transport is not None:
                session.transport.close()
        return cut

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
        if getattr(session, "pending_mail", None) is not None:
            session.pending_mail = None
            clean = True      # the deferred MAIL never went upstream: nothing to reset
        if conn is not None:
            await self.relay.pool.release(conn, clean=clean)

    @staticmethod
    async def _reissue(conn: Connection, env: Envelope, options: list[str], recipients: list[str],
                       mail: str, label: str, upstream: dict[str, Reply]) -> tuple[str, Reply] | None:
        """RSET, MAIL with ``options`` and RCPT for each of ``recipients`` again on
        ``conn``, each reply recorded in ``upstream`` as "COMMAND (label)" (MAIL as
        ``mail``); the first
        refusal (or a missing reply) as (name without the label, reply), else None."""
        replies = await conn.reissue(env.mail_from, options, recipients)
        names = [f"RSET ({label})", f"{mail} ({label})"]
        names += [f"{r} ({label})" for r in recipients]
        upstream.update(zip(names, replies))
        failed = next(((name, r) for name, r in zip(names, replies)
                       if r.code >= 300 or (name == names[0] and r.code != 250)), None)
        if failed is None and len(replies) < len(names):
            failed = (names[len(replies)], Reply(451, "4.4.2", "no reply"))
        return None if failed is None else (failed[0].removesuffix(f" ({label})"), failed[1])

    async def _reissue_8bitmime(self, session, conn: Connection, env: Envelope,
                                upstream: dict[str, Reply]) -> Reply | None:
        """Re-issue the upstream transaction with BODY=8BITMIME (``must_declare_8bitmime``):
        None when the MTA accepted it all again, else the 4xx for the client."""
        options = [o for o in session.upstream_mail_options if o.split("=", 1)[0].upper() != "BODY"]
        options.append("BODY=8BITMIME")
        failed = await self._reissue(conn, env, options, list(env.rcpt_tos), "MAIL BODY=8BITMIME",
                                     "re-issue", upstream)
        if failed is None:
            return None
        what, why = failed
        log.warning("%s: MAIL re-issued with BODY=8BITMIME refused: %s (re-issue): %s",
                    session.relist_id, what, why)
        return Reply(451, "4.5.0", f"relist: upstream MTA refused the transaction re-issued with "
                                   f"BODY=8BITMIME ({what}: {why}); try again later")

    async def _reroute(self, session, conn: Connection, env: Envelope, recipients: list[str],
                       upstream: dict[str, Reply]) -> tuple[str, Reply] | None:
        """Re-issue the upstream transaction to ``recipients`` instead of the client's
        (a bounce for ``LIST-owner@``, relist.app ``Relay.bounce``): None when Mailman
        accepted them, else what refused and how (``_rerouted_or_not`` decides)."""
        failed = await self._reissue(conn, env, list(session.upstream_mail_options), recipients,
                                     "MAIL", "re-route", upstream)
        if failed is not None:
            log.warning("%s: bounce re-routed to %s refused: %s (re-route): %s", session.relist_id,
                        ",".join(recipients), failed[0], failed[1])
        return failed

    async def _rerouted_or_not(self, session, conn: Connection, env: Envelope, record: Record,
                               upstream: dict[str, Reply]) -> tuple[Reply | None, Record, bool]:
        """The re-route of a bounce to ``LIST-owner@`` (``record.findings.deliver_rcpts``):
        (refusal for the client or None, the record, whether the re-route stands).

        Refused for now (4xx): the client hears 451 and the MTA tries again.  Refused
        for good (5xx: no such list, say): a retry would meet the same refusal for days,
        so the bounce goes where it was addressed, as it arrived, to Mailman's bounce
        processing, and the record says so (``reroute_refused``)."""
        rerouted = list(record.findings.deliver_rcpts)
        failed = await self._reroute(session, conn, env, rerouted, upstream)
        if failed is None:
            return None, record, True
        what, why = failed
        if why.code < 500:
            return (Reply(451, "4.4.2", f"relist: Mailman refused the bounce re-routed to "
                                        f"{', '.join(rerouted)} ({what}: {why}); try again later"),
                    record, True)
        record = record.found(bounce="mailman", deliver_rcpts=(),
                              reroute_refused=f"{', '.join(rerouted)}: {what}: {why}")
        log.warning("%s: %s refused the bounce for good; delivered to %s as it arrived instead",
                    session.relist_id, ",".join(rerouted), log_safe(",".join(env.rcpt_tos)))
        failed = await self._reissue(conn, env, list(session.upstream_mail_options), list(env.rcpt_tos),
                                     "MAIL", "after re-route refused", upstream)
        if failed is None:
            return None, record, False
        what, why = failed
        return (Reply(451, "4.4.2", f"relist: Mailman refused the bounce, re-routed and as addressed "
                                    f"({what}: {why}); try again later"), record, False)

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

    def _ended_at_mail(self, session, address: str, mail_options, reply: Reply, started: float,
                       *, own: bool) -> str:
        """A transaction that ends at MAIL (relist cannot reach the MTA, or the MTA
        refused): counted (``mail_deferred``/``mail_refused`` beside the usual
        counters), recorded and logged like any other transaction.  ``own``: the reply
        is relist's, not the MTA's."""
        self.relay.counters["mail_deferred" if reply.code < 500 else "mail_refused"] += 1
        env = _envelope(session, address, (), mail_options)
        record = Record(session.relist_id, datetime.now(timezone.utc), env, "", None, 0, 0, (),
                        reply if own else None)
        upstream = {} if own else {"MAIL": reply}
        self.relay.finish(session.relist_id, record, env, upstream, reply, started, 0)
        return reply.line()

    @staticmethod
    def _upstream_options(conn: Connection, mail_options) -> list[str] | Reply:
        """The client's MAIL parameters the MTA on ``conn`` takes (SMTPUTF8 only when
        it offers it, BODY with 8BITMIME, SIZE with SIZE), or relist's refusal."""
        options = []
        for opt in mail_options:
            key = opt.split("=", 1)[0].upper()
            if key == "SMTPUTF8":
                if not conn.caps.smtputf8:
                    return Reply(555, "5.6.7", "relist: the upstream MTA does not offer SMTPUTF8")
                options.append(opt)
            elif key == "BODY" and conn.caps.eightbitmime:
                options.append(opt)
            elif key == "SIZE" and conn.caps.size is not None:
                options.append(opt)
        return options

    async def _connection_for(self, session, address: str,
                              mail_options) -> tuple[Connection, list[str]] | Reply:
        """A pooled (or new) upstream connection and the MAIL parameters it takes, or
        relist's own reply when there is none (it cannot connect: logged as deferred;
        the client's SMTPUTF8 the MTA does not offer)."""
        pool = self.relay.pool
        try:
            conn = await pool.acquire()
        except UpstreamError as exc:
            log.warning("%s: MAIL from=<%s> deferred: %s", session.relist_id, log_safe(address), exc.reply)
            return exc.reply
        options = self._upstream_options(conn, mail_options)
        if isinstance(options, Reply):
            await pool.release(conn, clean=True)
            return options
        return conn, options

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        await self._drop_upstream(session)  # a transaction left open upstream, if any
        session.relist_id = new_relist_id()
        session.upstream_replies = {}
        session.mail_refusal = None
        started = time.monotonic()
        pool = self.relay.pool
        # A pooled connection the MTA closed while it was idle (``421 ... timeout
        # exceeded``, or just gone) is found out at MAIL at the latest: nothing is
        # committed then, so MAIL goes again on a new connection (relist.edge.smtp_out).
        for attempt in (1, 2):
            got = await self._connection_for(session, address, mail_options)
            if isinstance(got, Reply):
                return self._ended_at_mail(session, address, mail_options, got, started, own=True)
            conn, options = got
            if conn.caps.pipelining:
                # The MTA pipelines: MAIL goes up with the first RCPT, in one round trip
                # (``_mail_with_first_rcpt``), and a refusal of it is that RCPT's reply,
                # as Postfix itself gives it (smtpd_delay_reject).
                session.upstream = conn
                session.upstream_mail_options = options
                session.pending_mail = (address, tuple(mail_options), started)
                envelope.mail_from = address
                envelope.mail_options.extend(mail_options)
                return "250 2.1.0 Ok"
            try:
                reply = await conn.mail("" if address == NULL_PATH else address, options)
            except UpstreamError as exc:
                conn.close()
                if exc.lost and conn.pooled and attempt == 1:
                    pool.discard_stale(conn, str(exc.reply), session.relist_id)
                    continue
                log.warning("%s: MAIL from=<%s> deferred: %s", session.relist_id, log_safe(address),
                            exc.reply)
                return self._ended_at_mail(session, address, mail_options, exc.reply, started, own=True)
            if reply.code == 421 and conn.pooled and attempt == 1:
                pool.discard_stale(conn, str(reply), session.relist_id)
                continue
            break
        if reply.code >= 300:
            await pool.release(conn, clean=True)
            return self._ended_at_mail(session, address, mail_options, reply, started, own=False)
        session.upstream = conn
        session.upstream_mail_options = options
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return reply.line()

    async def _mail_with_first_rcpt(self, session, recipient: str) -> Reply:
        """The MAIL ``handle_MAIL`` deferred and the first RCPT, in one round trip: the
        RCPT's reply for the client, or, when the MTA refused the MAIL (or cannot be
        reached), that refusal, which then answers every RCPT of this transaction.  A
        pooled connection found closed here is replaced once, as at MAIL."""
        address, mail_options, started = session.pending_mail
        session.pending_mail = None
        pool = self.relay.pool
        conn: Connection = session.upstream
        session.upstream = None
        sender = "" if address == NULL_PATH else address
        options = session.upstream_mail_options
        for attempt in (1, 2):
            try:
                mail, rcpt = await conn.mail_rcpt(sender, options, recipient)
            except UpstreamError as exc:
                conn.close()
                if not (exc.lost and conn.pooled and attempt == 1):
                    log.warning("%s: MAIL from=<%s> deferred: %s", session.relist_id, log_safe(address),
                                exc.reply)
                    return self._refused_at_mail(session, address, mail_options, exc.reply, started, own=True)
                pool.discard_stale(conn, str(exc.reply), session.relist_id)
            else:
                if not (mail.code == 421 and conn.pooled and attempt == 1):
                    break
                pool.discard_stale(conn, str(mail), session.relist_id)
            got = await self._connection_for(session, address, mail_options)
            if isinstance(got, Reply):
                return self._refused_at_mail(session, address, mail_options, got, started, own=True)
            conn, options = got
            session.upstream_mail_options = options
        if mail.code >= 300 or rcpt is None:
            await pool.release(conn, clean=True)
            return self._refused_at_mail(session, address, mail_options, mail, started, own=False)
        session.upstream = conn
        return rcpt

    def _refused_at_mail(self, session, address: str, mail_options, reply: Reply, started: float,
                         *, own: bool) -> Reply:
        """The deferred MAIL ended the transaction: recorded like a refusal at MAIL, and
        kept as the reply to every RCPT that follows."""
        self._ended_at_mail(session, address, mail_options, reply, started, own=own)
        session.mail_refusal = reply
        return reply

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        refusal: Reply | None = getattr(session, "mail_refusal", None)
        if refusal is not None:
            return refusal.line()
        if getattr(session, "pending_mail", None) is not None:
            reply = await self._mail_with_first_rcpt(session, address)
            if getattr(session, "mail_refusal", None) is not None:
                return reply.line()
        else:
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
        # Parsed here, and the bytes let go (the session's envelope too): from now on the
        # parse's fields and body are the only copy of a large post (issue 17: memory).
        raw = envelope.original_content
        size = len(raw)
        try:
            content: bytes | RawMessage = RawMessage.parse(raw)
        except Exception:  # noqa: BLE001 - a parser bug: the relay meets it again, and records
            content = raw  # what the bytes show (Message-ID) before the 451 below
        envelope.content = envelope.original_content = b""   # (not None: "in DATA", handle_exception)
        raw = None
        env = _envelope(session, envelope.mail_from, envelope.rcpt_tos, envelope.mail_options,
                        _protocol(server))   # RFC 3848
        conn: Connection | None = getattr(session, "upstream", None)
        session.upstream = None
        record = None
        upstream = dict(session.upstream_replies)
        lmtp = self.relay.lmtp
        n = len(env.rcpt_tos) if lmtp else 1
        try:
            if conn is None or conn.broken:
                raise UpstreamError(Reply(451, "4.4.2",
                                          "relist: connection to upstream MTA lost; try again later"))
            outcome = await self.relay.run(content, env, relist_id, upstream_8bitmime=conn.caps.eightbitmime)
            record = outcome.record
            if outcome.reply is not None:
                replies = [outcome.reply] * n
                await self.relay.pool.release(conn, clean=False)
            else:
                refusal = None
                output = outcome.output
                rerouted = record.findings.deliver_rcpts
                if rerouted:
                    refusal, record, stands = await self._rerouted_or_not(session, conn, env, record,
                                                                          upstream)
                    if not stands:
                        rerouted, output = (), content   # the bounce as it arrived, as addressed
                elif must_declare_8bitmime(record, conn.caps, session.upstream_mail_options):
                    record = record.found(mail_reissued="BODY=8BITMIME")
                    refusal = await self._reissue_8bitmime(session, conn, env, upstream)
                if refusal is not None:
                    replies = [refusal] * n
                    await self.relay.pool.release(conn, clean=False)
                elif rerouted:
                    # The client hears the one recipient's final reply for each of its own.
                    final = await conn.data(output, len(rerouted))
                    upstream.update({f"DATA {r}": rep for r, rep in zip(rerouted, final)})
                    replies = [_summary(final)] * n
                    await self.relay.pool.release(conn, clean=True)
                else:
                    replies = await conn.data(output, n)
                    if lmtp and len(replies) != n:
                        # An LMTP client (the ingress leg) with an SMTP next hop
                        # ([ingress] deliver_to = "smtp:..."): the one final reply is
                        # every recipient's, and the client must hear one per recipient.
                        replies = [replies[0]] * n
                    if lmtp:  # LMTP: one final reply per accepted recipient, in RCPT order
                        upstream.update({f"DATA {r}": rep for r, rep in zip(env.rcpt_tos, replies)})
                    else:
                        upstream["DATA"] = replies[0]
                    await self.relay.pool.release(conn, clean=True)
        except UpstreamError as exc:
            replies = [exc.reply] * n
            if conn is not None:
                conn.close()
        except asyncio.CancelledError:
            # The client went away (or a drain cut the session): abandon the upstream
            # transaction.  Before the end of the data that is nothing; after it the
            # MTA may have queued the message the client will send again.
            if conn is not None:
                queued = conn.final_pending
                conn.close()
                log.warning("%s: client connection closed before the final reply; upstream transaction "
                            "abandoned%s", relist_id,
                            " after the MTA had the message: it may be delivered twice" if queued else "")
            raise
        except Exception:  # noqa: BLE001 - a bug: never let it become a 5xx
            log.exception("%s: internal error while processing message from=<%s>", relist_id,
                          log_safe(env.mail_from))
            replies = [Reply(451, "4.3.0", INTERNAL_ERROR.format(id=relist_id))] * n
            if conn is not None:
                conn.close()
        reply = _summary(replies)
        if record is None:
            record = Record(relist_id, datetime.now(timezone.utc), env, "", None, size, 0, (), reply)
        self.relay.finish(relist_id, record, env, upstream, reply, started, size)
        return "\r\n".join(r.line() for r in replies)

    async def too_big(self, server, session, envelope, reply: Reply, size: int, started: float) -> None:
        """The content (``size`` octets) was over ``[server] max_message_size``
        (relist.edge.smtp_session answers ``reply``, a 552): the upstream transaction is
        reset, and the transaction is counted, recorded and logged like any other.  Never
        raises: the 552 stands."""
        try:
            await self._drop_upstream(session)
            env = _envelope(session, envelope.mail_from, envelope.rcpt_tos, envelope.mail_options,
                            _protocol(server))
            relist_id = getattr(session, "relist_id", "") or new_relist_id()
            record = Record(relist_id, datetime.now(timezone.utc), env, "", None, size, 0, (), reply)
            self.relay.finish(relist_id, record, env, dict(getattr(session, "upstream_replies", {})), reply,
                              started, size)
        except Exception:  # noqa: BLE001 - accounting is secondary to the reply
            log.exception("recording an oversize message failed; the 552 stands")

    async def handle_RSET(self, server, session, envelope):
        await self._drop_upstream(session)
        return "250 2.0.0 Ok"

    async def handle_QUIT(self, server, session, envelope):
        await self._drop_upstream(session)
        return "221 2.0.0 Bye"

    async def handle_exception(self, error):
        log.error("unexpected error in the SMTP session", exc_info=error)
        return "451 4.3.0 relist: internal error; try again later"
