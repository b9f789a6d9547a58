"""What a transaction becomes in the store: its rows, in ``schema.COLUMNS`` order.

Pure functions over the core's immutable ``Record`` (no IO): the writer thread calls
them, in batches, off the event loop.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from relist.core.model import Record, Reply

from .migrations import COLUMNS

__all__ = ["bounce_counts", "bounce_rows", "compress", "decompress", "ingress_row", "record_row", "storable",
           "verdict_rows"]

_LIST, _CAUSE, _ACTION = (COLUMNS["bounces"].index(c) for c in ("list_address", "cause", "action"))


def _jsonable(value: Any) -> Any:
    """``value`` as JSON can hold it (a finding is a str, bool, None or a tuple of str)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


# The JSON columns are json.dumps's, plainly.  The hand-written encoder this replaced
# (what is the same in every record encoded once) saved the writer about 24 µs of CPU
# per record (69 instead of 93 µs, median of 5 rounds of bench/bench_store.py
# --compare de0aafa at 300 records/s on SQLite): at a worker's few hundred messages per
# second well under 1% of a core, and under 1% of what relaying a message costs.  Not
# worth its code.


def record_row(record: Record, upstream: dict[str, Reply], reply: Reply | None,
               duration_ms: float) -> tuple:
    """The ``transactions`` row of one finished transaction."""
    env = record.envelope
    return (
        record.relist_id,
        record.time.isoformat(),
        env.client_ip,
        env.client_helo,
        env.mail_from,
        json.dumps(list(env.rcpt_tos)),
        record.message_id,
        record.list_address,
        record.size_in,
        record.size_out,
        json.dumps([n.as_dict() for n in record.steps]),
        json.dumps({k: _jsonable(v) for k, v in record.extra}),
        record.reply.line() if record.reply else None,
        json.dumps({k: r.line() for k, r in upstream.items()}),
        reply.line() if reply else "",
        round(duration_ms, 3),
    )


def _flag(value: bool | None) -> int | None:
    return None if value is None else int(bool(value))


def verdict_rows(record: Record) -> tuple[list[tuple], tuple | None]:
    """(signature rows, verdict row) from ``record.verdict`` (none when not verified)."""
    verdict = record.verdict
    if verdict is None or not hasattr(verdict, "signatures"):
        return [], None
    sigs = list(verdict.signatures)
    for arc_set in verdict.arc.sets:
        sigs.extend(s for s in (arc_set.ams, arc_set.seal) if s is not None)
    rows = [(record.relist_id, idx, s.kind, s.domain, s.selector, s.algorithm,
             s.canonicalization, ":".join(s.headers), s.body_length, s.key_bits, str(s.result),
             s.reason, _flag(s.body_hash_ok), _flag(s.header_hash_ok), s.instance)
            for idx, s in enumerate(sigs)]
    d, a = verdict.dmarc, verdict.arc
    row = (record.relist_id, verdict.from_domain, d.result, d.policy, int(d.testing),
           d.policy_domain, d.record, json.dumps([x.as_dict() for x in d.alignment]), d.reason,
           a.cv, a.oldest_pass, a.reason)
    return rows, row


def bounce_rows(record: Record, reply: Reply | None) -> tuple[tuple, ...]:
    """The ``bounces`` rows of a bounce transaction, with the action it ended with
    (``findings.bounce``: "mailman" when the re-route to LIST-owner@ was refused for
    good).  No rows when relist answered 4xx: the MTA brings the bounce again, and it
    is recorded when it is taken."""
    if not record.bounces or (reply is not None and 400 <= reply.code < 500):
        return ()
    action = record.findings.bounce
    return tuple(row[:_ACTION] + (action,) + row[_ACTION + 1:] if action else row for row in record.bounces)


def bounce_counts(record: Record, reply: Reply | None) -> list[tuple[str, str, str]]:
    """(list, cause, action) of each row ``bounce_rows`` stores (the metrics count them)."""
    return [(row[_LIST], row[_CAUSE], row[_ACTION]) for row in bounce_rows(record, reply)]


def compress(raw: bytes) -> bytes:
    """An ingress copy as stored (zlib level 1: the copy is written on the mail path)."""
    return zlib.compress(raw, 1)


def decompress(stored: bytes) -> bytes:
    return zlib.decompress(stored)


def ingress_row(relist_id: str, now: float, time_iso: str, retention: float, message_id: str,
                fingerprint: str, raw: bytes) -> tuple:
    """The ``ingress_posts`` row of a post kept ``retention`` seconds from ``now``."""
    return (relist_id, time_iso, now + retention, message_id, fingerprint, compress(raw))


def _clean(value: Any) -> Any:
    """``value`` as every backend can store it: text with lone surrogates (SQLite and
    PostgreSQL refuse them) and NUL characters (PostgreSQL's text refuses them) written
    as backslash escapes."""
    if isinstance(value, str):
        text = value.encode("utf-8", "backslashreplace").decode("utf-8")
        return text.replace("\x00", "\\x00") if "\x00" in text else text
    if isinstance(value, tuple):
        return tuple(_clean(v) for v in value)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def storable(rows: Any) -> Any:
    """One item's rows with every text value cleaned (``_clean``)."""
    return _clean(rows)
