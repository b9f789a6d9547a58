"""Sign once per post: reuse the core's result for identical transactions.

Mailman hands the same post to relist in several SMTP transactions (at most ten
recipients each, identical bytes).  Everything relist writes is a function of the
input bytes, the policy, the keys, the DNS facts and the time, except relist's own
Received field, which names this transaction (relist id, recipient, date).  No
signature covers Received (RFC 6376 §5.4 NEVER_SIGN; the ARC-Seal covers only ARC
fields, RFC 8617 §4.1.3), so the output of the first transaction can be reused with a
fresh Received field spliced in at the same place: one DKIM signature and one ARC
set per post, not per transaction.  Authentication-Results is reused too: identical
input, identical verdict.

The cache is a value (``SignCache``, immutable): ``lookup`` and ``store`` take ``now``
from the caller and ``store`` returns a new cache, so the core stays pure and the
edge holds the current value per process.  Entries live ``ttl`` seconds (at most
half the list's ``signature_ttl``), at most ``max_entries`` and ``max_bytes`` in total.

Key: sha256 of the input bytes plus a fingerprint of what else shapes the output:
the list the post belongs to (``identify``), the relay policy (all list settings),
the key paths and algorithms, the step names, ``upstream_8bitmime`` and the ingress
copies the edge found for the post (they decide the verdict).  DNS facts
are not in the key: within the ttl the first transaction's verdict stands.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

from relist.core import pipeline
from relist.core.errors import DeferMessage, RejectMessage
from relist.core.message import HeaderField, RawMessage
from relist.core.model import Action, Context, Outcome, Record, StepNote, Work, replace
from relist.core.steps import identify, trace

__all__ = ["Entry", "NAME", "SignCache", "cache_key", "entry_for", "lookup", "process_with",
           "replay"]

NAME = "sign-cache"


@dataclass(frozen=True, slots=True)
class Entry:
    """One post's output, split around relist's Received field: header fields and the
    body, shared with the output (a replay builds no copy of the body)."""

    head: tuple[HeaderField, ...]   # the output's fields before the Received field
    tail: tuple[HeaderField, ...]   # the fields after it (() and received=False: no field)
    received: bool
    eol: bytes
    record: Record              # the first transaction's record
    expires: datetime
    separator: bytes = b""
    body: bytes = b""
    size: int = field(default=0, init=False)   # the bytes it holds (SignCache.max_bytes)

    def __post_init__(self):
        # Once, here: the cache sums its entries' sizes on every store (256 entries of
        # some 15 fields each were most of a pass-through transaction's CPU when summed
        # over the fields every time).
        object.__setattr__(self, "size", sum(len(f.raw) for f in self.head + self.tail)
                           + len(self.separator) + len(self.body))


_EMPTY: MappingProxyType[str, Entry] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class SignCache:
    """Immutable: ``store`` returns a new cache.  ``entries`` is a read-only mapping,
    oldest first; ``total`` the sum of their sizes.

    A look-up is one dict access, a store one C-level copy of the dict plus work for
    what leaves it: a tuple scanned in Python cost a full cache (256 entries) 7 µs per
    look-up and 39 µs per store, and every transaction of a new post pays both."""

    ttl: int = 300
    max_entries: int = 256
    max_bytes: int = 64 * 1024 * 1024
    entries: MappingProxyType[str, Entry] = field(default_factory=lambda: _EMPTY)   # read-only, shared
    total: int = 0

    def lookup(self, key: str, now: datetime) -> Entry | None:
        entry = self.entries.get(key)
        return entry if entry is not None and now < entry.expires else None

    def store(self, key: str, entry: Entry, now: datetime) -> SignCache:
        if entry.size > self.max_bytes // 4:
            return self         # one huge post must not evict everything else
        kept = self.entries.copy()       # (the dict under the proxy: a C copy)
        total = self.total + entry.size
        old = kept.pop(key, None)
        if old is not None:
            total -= old.size
        # Oldest first: the expired (entries of a shorter ttl may expire behind a longer
        # one: they are never returned, and go when they reach the front), then what the
        # limits do not leave room for.
        drop = []
        left = len(kept)
        for k, e in kept.items():
            if now < e.expires and left < self.max_entries and total <= self.max_bytes:
                break
            drop.append(k)
            left -= 1
            total -= e.size
        for k in drop:
            del kept[k]
        kept[key] = entry
        return replace(self, entries=MappingProxyType(kept), total=total)


def _list_of(msg: RawMessage, ctx: Context):
    """The list policy ``identify`` would choose (None for an unknown list)."""
    try:
        work = identify.apply(Work(msg), ctx)
    except (DeferMessage, RejectMessage):
        return None
    except MemoryError:
        raise
    except Exception:   # noqa: BLE001 - a bug on these bytes: process() records it
        return None     # (relist.core.safety); the key must not turn it into a 451
    return work.known.list_policy


def _sha256(msg: RawMessage) -> str:
    """sha256 of the input bytes, hashed as the message's two parts (never joined)."""
    digest = hashlib.sha256(msg.header_bytes())
    digest.update(msg.body)
    return digest.hexdigest()


def cache_key(raw: bytes | RawMessage, ctx: Context, steps=pipeline.STEPS) -> str:
    """sha256(input) + fingerprint (list, policy, keys, steps, upstream 8BITMIME, the
    ingress copies by relist id: a stored copy never changes).  ``raw``: the bytes or
    the message parsed from them."""
    msg = RawMessage.of(raw)
    keys = ctx.keys or {}
    lp = _list_of(msg, ctx)
    fingerprint = repr((
        # Which list: its settings are the relay policy's (``_configured``), configured
        # or the defaults for that address (RelayPolicy.list_for_address); its repr
        # was a third of a reused transaction's key.
        None if lp is None else (lp.address, lp.configured),
        _configured(ctx.policy, tuple(sorted((path, getattr(k, "algorithm", ""), getattr(k, "bits", 0))
                                             for path, k in keys.items())),
                    steps if isinstance(steps, tuple) else tuple(steps)),
        getattr(ctx, "upstream_8bitmime", True),
        tuple(getattr(c, "relist_id", "") for c in getattr(ctx, "ingress", ())),
    ))
    return (_sha256(msg) + ":"
            + hashlib.sha256(fingerprint.encode("utf-8", "surrogateescape")).hexdigest())


def _configured(policy, keys: tuple, steps: tuple) -> str:
    """The part of the key the configuration decides (the relay policy, the keys, the
    steps), digested once per configuration: its repr was half a reused transaction's
    key.  The same policy and steps objects as last time (a process's configuration)
    are recognised by identity: hashing a frozen RelayPolicy hashes every list's policy,
    1.2 ms with 2,000 lists.  (A value that cannot be hashed is digested every time.)"""
    last = _LAST[0]
    if last is not None and last[0] is policy and last[2] is steps and last[1] == keys:
        return last[3]
    try:
        digest = _configured_cached(policy, keys, steps)
    except TypeError:
        return _digest_configured(policy, keys, steps)
    _LAST[0] = (policy, keys, steps, digest)
    return digest


def _digest_configured(policy, keys: tuple, steps: tuple) -> str:
    names = tuple(getattr(s, "NAME", None) or repr(s) for s in steps)   # (a step without a NAME: its repr)
    return hashlib.sha256(repr((policy, keys, names)).encode("utf-8", "surrogateescape")).hexdigest()


_configured_cached = functools.lru_cache(maxsize=16)(_digest_configured)
_LAST: list = [None]   # (policy, keys, steps, digest) of the last call: see _configured


def _received(ctx: Context, eol: bytes) -> HeaderField:
    return RawMessage((), b"", b"", eol).make_field("Received", trace.received_value(ctx))


def entry_for(outcome: Outcome, raw: bytes | RawMessage, ctx: Context, ttl: int) -> Entry | None:
    """What to keep of a finished transaction; None when it must not be reused
    (relist refused it, or its Received field cannot be found exactly once)."""
    out = outcome.output
    if out is None or outcome.reply is not None:
        return None
    msg = RawMessage.of(raw)
    lp = _list_of(msg, ctx)
    if lp is not None and lp.signature_ttl > 0:
        ttl = min(ttl, lp.signature_ttl // 2)
    if ttl <= 0:
        return None
    eol = msg.eol
    expires = ctx.now + timedelta(seconds=ttl)
    ran_trace = any(n.step == trace.NAME and n.action == Action.APPLIED for n in outcome.record.steps)
    if not ran_trace:
        return Entry(out.fields, (), False, eol, outcome.record, expires, out.separator, out.body)
    ours = _received(ctx, eol).raw
    at = [i for i, f in enumerate(out.fields) if f.raw == ours]
    if len(at) != 1:
        return None
    return Entry(out.fields[:at[0]], out.fields[at[0] + 1:], True, eol, outcome.record, expires,
                 out.separator, out.body)


def replay(entry: Entry, raw: bytes | RawMessage, ctx: Context, key: str = "") -> Outcome:
    """This transaction's outcome from ``entry``: a fresh Received field and record."""
    first = entry.record
    fields = entry.head + ((_received(ctx, entry.eol),) + entry.tail if entry.received else ())
    out = RawMessage(fields, entry.separator, entry.body, entry.eol)
    age = int((ctx.now - first.time).total_seconds())
    reused = StepNote(NAME, Action.RECORDED,
                      f"reused the signed result of {first.relist_id} ({age} s ago; "
                      f"sha256 {key[:16]}): one signature per post")
    notes = tuple(StepNote(n.step, n.action, "" if n.step == trace.NAME else n.detail)
                  for n in first.steps) + (reused,)
    record = replace(first, relist_id=ctx.relist_id, time=ctx.now, envelope=ctx.envelope,
                     size_in=RawMessage.of(raw).size, size_out=out.size,
                     steps=notes)
    return Outcome(out, record, None)


def lookup(cache: SignCache, raw: bytes | RawMessage, ctx: Context, steps=pipeline.STEPS) -> Outcome | None:
    """The replayed outcome when ``cache`` holds this post, else None (no DNS needed:
    the edge can call this before resolving anything)."""
    msg = RawMessage.of(raw)
    key = cache_key(msg, ctx, steps)
    entry = cache.lookup(key, ctx.now)
    return None if entry is None else replay(entry, msg, ctx, key)


def process_with(cache: SignCache, raw: bytes | RawMessage, ctx: Context,
                 steps=pipeline.STEPS) -> tuple[Outcome, SignCache]:
    """``pipeline.process`` through the cache: (outcome, the cache to keep)."""
    msg = RawMessage.of(raw)
    key = cache_key(msg, ctx, steps)
    entry = cache.lookup(key, ctx.now)
    if entry is not None:
        return replay(entry, msg, ctx, key), cache
    outcome = pipeline.process(msg, ctx, steps)
    new = entry_for(outcome, msg, ctx, cache.ttl)
    return outcome, (cache if new is None else cache.store(key, new, ctx.now))
