"""The composition root: the only module that joins the core to the edges.

For each message: ask the core which DNS facts it needs, resolve them at the edge,
run the core, store the record, and log one line.  Relaying itself (MAIL/RCPT in
lock-step, DATA) is driven by ``relist.edge.smtp_in``, which calls ``Relay.run``.

Everything relist logs that comes from a message or a client (Message-ID, list,
envelope sender, replies) goes through ``log_safe``: control characters (CR, LF, ESC,
NUL, ...), other unprintable characters and undecodable bytes are written as
``\\xNN``/``\\uNNNN`` escapes, so a message cannot forge log lines or terminal output.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import time
from datetime import datetime, timezone

from relist import core
from relist.core import signcache
from relist.config import Config
from relist.core.bounce import wiring as bounces
from relist.core.facts import Facts
from relist.core.ingress import IngressCopy, fingerprint
from relist.core.message import RawMessage
from relist.core.safety import log_safe
from relist.core.model import Context, Envelope, Outcome, Record, Reply, Work, replace
from relist.core.steps import identify
from relist.edge import metrics
from relist.edge.smtp_out import Pool
from relist.edge.store import Store, StoreError

__all__ = ["Relay"]

log = logging.getLogger("relist")

# A Message-ID field at the start of a line, for a message RawMessage cannot parse.
_MESSAGE_ID = re.compile(rb"(?im)^message-id[ \t]*:[ \t]*([^\r\n]*)")
_CRASHED_MAX = 256      # crashed transactions remembered until their finish()


def _failed_in(exc: BaseException) -> str:
    """Where ``exc`` was raised: the innermost core step (its ``NAME``), else the
    innermost relist module, else ""."""
    step = module = ""
    tb = exc.__traceback__
    while tb is not None:
        g = tb.tb_frame.f_globals
        name = g.get("__name__", "")
        if name.startswith("relist.core.steps.") and isinstance(g.get("NAME"), str):
            step = g["NAME"]
        if name.startswith("relist."):
            module = name
        tb = tb.tb_next
    return step or module


class Relay:
    """One leg of relist in one process: its steps, next-hop pool, store, resolver.

    The egress leg (Mailman -> relist -> MTA) runs ``core.STEPS``; the ingress leg
    (MTA -> relist -> Mailman's LMTP port) runs ``core.INGRESS_STEPS`` and speaks
    LMTP on both sides, so every recipient gets its own final reply.
    """

    def __init__(self, config: Config, *, leg: str = "egress", store: Store | None = None,
                 resolver=None, keys: dict | None = None):
        self.config = config
        self.leg = leg
        self.keys = keys or {}
        self.sign_cache = signcache.SignCache()
        up = config.upstream
        if leg == "ingress":
            proto, host, port = config.ingress["deliver_to"]
            self.steps = core.INGRESS_STEPS
            self.lmtp = True
        else:
            proto, host, port = "smtp", up["host"], up["port"]
            self.steps = core.STEPS
            self.lmtp = False
        self.pool = Pool(host, port, timeout=up["timeout"],
                         connect_timeout=up["connect_timeout"], data_timeout=up["data_timeout"],
                         helo=up["helo"] or config.hostname, size=up["pool_size"],
                         lmtp=proto == "lmtp")
        self.store = store
        self.resolver = resolver
        self.counters = {"messages": 0, "relayed": 0, "deferred": 0, "rejected": 0, "errors": 0}
        self.metrics = metrics.recorder(leg, config.relay)   # None: [metrics] off
        # relist id -> (Message-ID, list, "step: ErrorType") of a run() that raised, for
        # the record and log line finish() writes (the edge only has an empty record).
        self._crashed: dict[str, tuple[str, str | None, str]] = {}

    async def facts_for(self, raw: bytes | RawMessage) -> Facts:
        """Resolve every DNS question the core asks for ``raw``."""
        if self.resolver is None:
            return Facts()
        msg = RawMessage.of(raw)
        return await self.resolver.settle(lambda facts: core.plan(msg, self.config.relay, facts, self.steps))

    async def ingress_copies(self, msg: RawMessage) -> tuple[IngressCopy, ...]:
        """Egress leg: the ingress leg's copies of this post, by Message-ID."""
        if self.leg != "egress" or self.config.ingress is None or self.store is None:
            return ()
        message_id = msg.header_text("message-id")
        if not message_id:
            return ()
        try:
            rows = await asyncio.to_thread(self.store.ingress_candidates, message_id, time.time())
        except StoreError as exc:   # a store that is down was logged once, by the store
            (log.debug if exc.outage else log.warning)(
                "ingress copies for %s not read (%s): verifying what arrived", log_safe(message_id), exc)
            return ()
        return tuple(IngressCopy(rid, copy) for rid, copy in rows)

    async def run(self, raw: bytes | RawMessage, envelope: Envelope, relist_id: str,
                  upstream_8bitmime: bool = True) -> Outcome:
        """Run the pipeline over ``raw``: the bytes, or the edge's parse of them (then the
        edge holds no copy of a large post beside the parsed one).  Exceptions are bugs
        and propagate; what is known of the message (Message-ID, list, where it failed)
        is kept for ``finish``."""
        try:
            begun = time.monotonic()
            outcome = await self._run(raw, envelope, relist_id, upstream_8bitmime)
        except Exception as exc:
            message_id, list_address = self.known_of(raw, envelope)
            where = _failed_in(exc)
            if len(self._crashed) >= _CRASHED_MAX:       # finish() was never called for some
                self._crashed.pop(next(iter(self._crashed)))
            self._crashed[relist_id] = (message_id, list_address,
                                        (f"{where}: " if where else "") + type(exc).__name__)
            raise
        if self.metrics is not None:
            try:
                self.metrics.pipeline_done(relist_id, time.monotonic() - begun)
            except Exception:   # noqa: BLE001 - a metric never decides a message's fate
                log.exception("%s: metrics: recording the pipeline time failed", relist_id)
        return outcome

    def known_of(self, raw: bytes | RawMessage, envelope: Envelope) -> tuple[str, str | None]:
        """The Message-ID and (egress leg) the list of ``raw``, read cheaply and never
        raising: for the log line and record of a transaction the core did not finish."""
        try:
            msg = RawMessage.of(raw)
            message_id = msg.header_text("message-id") or ""
        except Exception:  # noqa: BLE001 - the parser itself may be what failed
            if isinstance(raw, RawMessage):
                return "", None
            m = _MESSAGE_ID.search(raw, 0, 256 * 1024)
            return (m.group(1).strip().decode("utf-8", "surrogateescape") if m else ""), None
        if self.leg != "egress":
            return message_id, None
        try:
            ctx = Context(envelope=envelope, policy=self.config.relay, now=datetime.now(timezone.utc),
                          relist_id="")
            return message_id, identify.apply(Work(msg), ctx).known.list_address
        except Exception:  # noqa: BLE001 - unknown_list = defer/reject, or a bug in identify
            return message_id, None

    async def _run(self, raw: bytes | RawMessage, envelope: Envelope, relist_id: str,
                   upstream_8bitmime: bool) -> Outcome:
        now = datetime.now(timezone.utc)
        msg = RawMessage.of(raw)   # once, for every use below
        large = msg.size > 256 * 1024
        ctx = Context(envelope=envelope, policy=self.config.relay, now=now, relist_id=relist_id,
                      keys=self.keys, ingress=await self.ingress_copies(msg),
                      upstream_8bitmime=upstream_8bitmime)
        sign_once = self.leg == "egress" and self.config.server["sign_once"]
        if sign_once:
            # Mailman sends one post in transactions of at most 10 recipients with
            # identical bytes: the 2nd..Nth reuse the signed result (no DNS, no signing).
            hit = signcache.lookup(self.sign_cache, msg, ctx, self.steps)
            if hit is not None:
                return hit
        ctx = replace(ctx, facts=await self.facts_for(msg))
        if sign_once:
            work = functools.partial(signcache.process_with, self.sign_cache, msg, ctx, self.steps)
            if large:
                # Large messages: keep the event loop responsive while the core works.
                outcome, self.sign_cache = await asyncio.to_thread(work)
            else:
                outcome, self.sign_cache = work()
            return outcome
        if large:
            outcome = await asyncio.to_thread(core.process, msg, ctx, self.steps)
        else:
            outcome = core.process(msg, ctx, self.steps)
        if self.leg != "ingress" or outcome.output is None:
            return outcome
        if not self.config.relay.lists and self.store is None:
            return outcome          # no bounce to read, no copy to keep: the post goes on
        data = raw if isinstance(raw, bytes) else msg.to_bytes()   # the post as it arrived
        if outcome.reply is None:
            try:
                outcome = await self.bounce(data, envelope, relist_id, now, outcome)
            except Exception as exc:   # the same bytes would fail again: never a 451 loop
                log.exception("%s: reading this bounce failed; passed to Mailman unchanged", relist_id)
                outcome = replace(outcome, record=outcome.record.found(
                    internal_error=f"bounce: {type(exc).__name__}"))
        if self.store is not None and outcome.output is not None:
            # Keep the post as it arrived, for the egress path (relist.core.ingress) of any
            # relist sharing the store: committed before the post goes on to Mailman, which
            # may send it out at once.  A store that is down costs the copy (the egress path
            # then verifies what arrived), never the post: write_ingress never raises.
            await asyncio.to_thread(self.store.write_ingress, relist_id, now.timestamp(), now.isoformat(),
                                    self.config.ingress["retention_days"] * 86400,
                                    msg.header_text("message-id") or "", fingerprint(msg), data)
        return outcome

    async def egress_of(self, returned) -> bounces.Egress | None:
        """The store's record of the post a bounce returns (None: unknown, no store)."""
        if self.store is None or not (returned.relist_ids or returned.message_id):
            return None
        try:
            row = await asyncio.to_thread(self.store.egress_of, returned.relist_ids, returned.message_id)
        except StoreError as exc:   # a store that is down was logged once, by the store
            (log.debug if exc.outage else log.warning)(
                "egress record for bounced %s not read (%s)", log_safe(returned.message_id), exc)
            return None
        if row is None:
            return None
        rid, list_address, steps_json, _facts, from_domain, policy = row
        try:
            notes = json.loads(steps_json)
        except ValueError:
            notes = []
        applied = tuple(n.get("step", "") for n in notes
                        if isinstance(n, dict) and n.get("action") == "applied")
        mode = next((str(n.get("detail", "")).split()[0] for n in notes if isinstance(n, dict)
                     and n.get("step") == "mode" and str(n.get("detail", "")).split()), "")
        return bounces.Egress(rid, list_address, applied, mode if mode in ("preserve", "resign") else "",
                              from_domain or "", policy or "")

    async def bounce(self, raw: bytes, envelope: Envelope, relist_id: str, now: datetime,
                     outcome: Outcome) -> Outcome:
        """Ingress leg: a message for a configured list's bounce address is recorded
        (``bounces`` table) and, for ``auth_bounces = "owner"`` and an authentication
        bounce, goes to ``LIST-owner@`` instead of Mailman (relist.core.bounce.wiring)."""
        lists = [lp.address for lp in self.config.relay.lists]
        if not lists:
            return outcome
        if len(raw) > 256 * 1024:
            found = await asyncio.to_thread(bounces.read_all, raw, envelope.rcpt_tos, lists)
        else:
            found = bounces.read_all(raw, envelope.rcpt_tos, lists)
        if not found:
            return outcome
        egress = await self.egress_of(found[0][1].report.returned)
        # One transaction is rerouted only when every recipient is the same list's
        # bounce address and the bounce is an authentication one.
        same_list = (len(found) == len(envelope.rcpt_tos)
                     and len({b.where.list_address for _, b in found}) == 1)
        rows, actions = [], []
        for rcpt, b in found:
            policy = self.config.relay.list_for_address(b.where.list_address)
            act = bounces.action(b, policy.auth_bounces) if same_list else "mailman"
            actions.append(act)
            returned = b.report.returned
            poster = (egress.poster_domain if egress and egress.poster_domain else returned.from_domain)
            for e in b.entries:
                rows.append((now.isoformat(), b.where.list_address, e.recipient, e.cause, int(e.permanent),
                             e.status, e.diagnostic, e.rule, returned.message_id,
                             egress.relist_id if egress else None, poster, act, e.remote_mta, relist_id))
            log.info("%s: bounce list=%s for=%s causes=%s post=%s action=%s", relist_id,
                     log_safe(b.where.list_address),
                     log_safe(",".join(e.recipient or "-" for e in b.entries)),
                     ",".join(e.cause for e in b.entries), egress.relist_id if egress else "-", act)
        # A bounce transaction has no list of its own (the bounces rows name it).  The
        # rows are stored with the transaction's record, when it ends: the re-route to
        # LIST-owner@ may yet be refused (relist.edge.smtp_in), and the action they
        # show is the one taken.
        record = replace(outcome.record.found(bounce=actions[0]), list_address=None, bounces=tuple(rows))
        if actions[0] != "owner":
            return replace(outcome, record=record)
        b = found[0][1]
        notice = bounces.owner_notice(raw, b, egress, now=now, hostname=self.config.hostname)
        owner = bounces.owner_address(b.where.list_address)
        record = record.found(deliver_rcpts=(owner,))
        return replace(outcome, output=RawMessage.parse(notice), record=record)

    def finish(self, relist_id: str, record: Record | None, envelope: Envelope,
               upstream: dict[str, Reply], reply: Reply, started: float,
               size: int) -> None:
        """Count, store and log one finished transaction.  Never raises: it runs after the
        MTA answered, and the client's reply is decided (a bug here turned into a 451
        would have Mailman send a delivered message again)."""
        try:
            self._finish(relist_id, record, envelope, upstream, reply, started, size)
        except Exception:   # noqa: BLE001 - accounting is secondary to the reply
            log.exception("%s: recording this transaction failed; the reply (%s) stands",
                          relist_id, log_safe(reply.line()))

    def _finish(self, relist_id: str, record: Record | None, envelope: Envelope,
                upstream: dict[str, Reply], reply: Reply, started: float, size: int) -> None:
        ms = (time.monotonic() - started) * 1000
        crashed = self._crashed.pop(relist_id, None)
        if crashed is not None:
            self.counters["errors"] += 1
        if crashed is not None and record is not None:
            message_id, list_address, error = crashed
            record = replace(record, message_id=record.message_id or message_id,
                             list_address=record.list_address or list_address,
                             findings=replace(record.findings, internal_error=error))
        # A bug: this transaction's (above), or one the core recorded and got past.
        error = record.findings.internal_error if record else None
        self.counters["messages"] += 1
        if reply.code < 300:
            self.counters["relayed"] += 1
        elif reply.code < 500:
            self.counters["deferred"] += 1
        else:
            self.counters["rejected"] += 1
        if record is not None and self.store is not None:
            self.store.save(record, upstream, reply, ms)
        if self.metrics is not None:
            self.metrics.transaction(relist_id, record, upstream, reply, ms / 1000)
        steps = ",".join(record.steps_applied()) if record else "-"
        # The edge re-issued MAIL upstream with BODY=8BITMIME (relist.edge.smtp_in).
        reissued = record.findings.mail_reissued if record else None
        log.info("%s: %smessage-id=%s list=%s from=<%s> nrcpt=%d size=%d steps=%s %s%sreply=\"%s\" ms=%.1f",
                 relist_id, "ingress " if self.leg == "ingress" else "",
                 log_safe((record.message_id if record else "") or "-"),
                 log_safe((record.list_address if record else None) or "-"),
                 log_safe(envelope.mail_from), len(envelope.rcpt_tos), size, steps or "-",
                 f"error=\"{log_safe(error)}\" " if error else "",
                 f"mail=re-issued({reissued}) " if reissued else "",
                 log_safe(str(reply)).replace('"', '\\"'), ms)
