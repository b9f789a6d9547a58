"""The composition root: the only module that joins the core to the edges.

For each message: ask the core which DNS facts it needs, resolve them at the edge,
run the core, store the record, and log one line.  Relaying itself (MAIL/RCPT in
lock-step, DATA) is driven by ``relist.edge.smtp_in``, which calls ``Relay.run``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sqlite3
import time
from dataclasses import replace
from datetime import datetime, timezone

from relist import core
from relist.core import signcache
from relist.config import Config
from relist.core.facts import Facts
from relist.core.ingress import IngressCopy, fingerprint
from relist.core.message import RawMessage
from relist.core.model import Context, Envelope, Outcome, Record, Reply
from relist.edge.smtp_out import Pool
from relist.edge.store import Store

__all__ = ["Relay", "new_relist_id"]

log = logging.getLogger("relist")

_ID_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZ"


def new_relist_id() -> str:
    """A short unique id in the manner of a Postfix queue id (12 characters)."""
    n = int.from_bytes(os.urandom(8), "big")
    out = []
    for _ in range(12):
        n, r = divmod(n, len(_ID_ALPHABET))
        out.append(_ID_ALPHABET[r])
    return "".join(out)


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

    async def facts_for(self, raw: bytes | RawMessage) -> Facts:
        """Resolve every DNS question the core asks for ``raw``."""
        if self.resolver is None:
            return Facts()
        msg = raw if isinstance(raw, RawMessage) else RawMessage.parse(raw)
        return await self.resolver.settle(lambda facts: core.plan(msg, self.config.relay, facts, self.steps))

    async def ingress_copies(self, raw: bytes) -> tuple[IngressCopy, ...]:
        """Egress leg: the ingress leg's copies of this post, by Message-ID."""
        if self.leg != "egress" or self.config.ingress is None or self.store is None:
            return ()
        message_id = RawMessage.parse(raw).header_text("message-id")
        if not message_id:
            return ()
        try:
            rows = await asyncio.to_thread(self.store.ingress_candidates, message_id, time.time())
        except sqlite3.Error as exc:
            log.warning("ingress copies for %s not read (%s): verifying what arrived", message_id, exc)
            return ()
        return tuple(IngressCopy(rid, copy) for rid, copy in rows)

    async def run(self, raw: bytes, envelope: Envelope, relist_id: str,
                  upstream_8bitmime: bool = True) -> Outcome:
        """Run the pipeline over ``raw``.  Exceptions are bugs and propagate."""
        now = datetime.now(timezone.utc)
        ctx = Context(envelope=envelope, policy=self.config.relay, now=now, relist_id=relist_id,
                      keys=self.keys, ingress=await self.ingress_copies(raw),
                      upstream_8bitmime=upstream_8bitmime)
        sign_once = self.leg == "egress" and self.config.server["sign_once"]
        if sign_once:
            # Mailman sends one post in transactions of at most 10 recipients with
            # identical bytes: the 2nd..Nth reuse the signed result (no DNS, no signing).
            hit = signcache.lookup(self.sign_cache, raw, ctx, self.steps)
            if hit is not None:
                return hit
        msg = RawMessage.parse(raw)
        ctx = replace(ctx, facts=await self.facts_for(msg))
        if sign_once:
            work = functools.partial(signcache.process_with, self.sign_cache, raw, ctx, self.steps)
            if len(raw) > 256 * 1024:
                # Large messages: keep the event loop responsive while the core works.
                outcome, self.sign_cache = await asyncio.to_thread(work)
            else:
                outcome, self.sign_cache = work()
            return outcome
        if len(raw) > 256 * 1024:
            outcome = await asyncio.to_thread(core.process, raw, ctx, self.steps, msg)
        else:
            outcome = core.process(raw, ctx, self.steps, msg)
        if self.leg == "ingress" and self.store is not None and outcome.message is not None:
            # Keep the post as it arrived, for the egress path (relist.core.ingress).
            self.store.save_ingress(relist_id, now.timestamp(), now.isoformat(),
                                    self.config.ingress["retention_days"] * 86400,
                                    msg.header_text("message-id") or "", fingerprint(msg), raw)
        return outcome

    def finish(self, relist_id: str, record: Record | None, envelope: Envelope,
               upstream: dict[str, Reply], reply: Reply, started: float,
               size: int) -> None:
        """Count, store and log one finished transaction."""
        ms = (time.monotonic() - started) * 1000
        self.counters["messages"] += 1
        if reply.code < 300:
            self.counters["relayed"] += 1
        elif reply.code < 500:
            self.counters["deferred"] += 1
        else:
            self.counters["rejected"] += 1
        if record is not None and self.store is not None:
            self.store.save(record, upstream, reply, ms)
        steps = ",".join(record.steps_applied()) if record else "-"
        # The edge re-issued MAIL upstream with BODY=8BITMIME (relist.edge.smtp_in).
        reissued = dict(record.extra).get("mail_reissued") if record else None
        log.info("%s: %smessage-id=%s list=%s from=<%s> nrcpt=%d size=%d steps=%s %sreply=\"%s\" ms=%.1f",
                 relist_id, "ingress " if self.leg == "ingress" else "",
                 (record.message_id if record else "") or "-",
                 (record.list_address if record else None) or "-",
                 envelope.mail_from, len(envelope.rcpt_tos), size, steps or "-",
                 f"mail=re-issued({reissued}) " if reissued else "", str(reply), ms)
