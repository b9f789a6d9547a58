"""Reading the store for ``relist explain`` and ``relist report``.

Only through ``relist.edge.store.open_reader(...).query(sql, params)``: portable SQL
with ``?`` placeholders and no JSON functions (the JSON columns are parsed in Python,
relist.core.report), so the same queries run on SQLite and PostgreSQL.

A report reads the transactions in time windows of about ``WINDOW_ROWS`` rows (the
``time`` index), never the whole table at once, then the notes of one transaction
per post new in that window (relist.core.report.aggregate), then the verdicts of
each post's arrival; ``progress(done, total, what)`` is called as it goes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from relist.core.report.aggregate import Aggregator

__all__ = ["TX_COLUMNS", "bounces_for", "find_post", "load_report", "other_lists", "scope", "signatures_of",
           "verdict_of"]

TX_COLUMNS = ("relist_id", "time", "client_ip", "client_helo", "mail_from", "rcpt_tos", "message_id",
              "list_address", "size_in", "size_out", "steps", "facts", "relist_reply", "upstream", "reply",
              "duration_ms")
BOUNCE_COLUMNS = ("time", "list_address", "recipient", "cause", "permanent", "status", "diagnostic", "rule",
                  "message_id", "relist_id", "poster_domain", "action", "remote_mta", "bounce_id")
WINDOW_ROWS = 20_000
BATCH = 500
Progress = Callable[[int, int, str], None]


def _none(done: int, total: int, what: str) -> None:
    return None


def _batches(items: list[str], size: int = BATCH) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _in(n: int) -> str:
    return "(" + ",".join("?" * n) + ")"


def _parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _windows(count: int, lo: Any, hi: Any) -> list[tuple[str, str]]:
    """Time windows [start, end) covering lo..hi, about WINDOW_ROWS rows each if evenly spread."""
    start, end = _parse_time(lo), _parse_time(hi) + timedelta(microseconds=1)
    n = max(1, min(1000, -(-count // WINDOW_ROWS)))
    step = (end - start) / n
    edges = [start + step * i for i in range(n)] + [end]
    return [(edges[i].isoformat(), edges[i + 1].isoformat()) for i in range(n)]


def scope(list_address: str | None, since: datetime | None) -> tuple[list[str], list]:
    """SQL conditions (joined by the caller with AND) and their parameters for rows of
    one list and from a time on, as ``relist report`` and ``relist bounces`` take them."""
    where, params = [], []
    if list_address:
        where.append("list_address = ?")
        params.append(list_address.lower())
    if since is not None:
        where.append("time >= ?")
        params.append(since.isoformat())
    return where, params


def load_report(reader, *, list_address: str | None = None, since: datetime | None = None,
                progress: Progress = _none) -> Aggregator:
    """An :class:`Aggregator` fed with everything a report needs."""
    agg = Aggregator()
    where, params = scope(list_address, since)
    cond = " AND ".join(["list_address IS NOT NULL", *where])
    lo, hi, count = reader.query(f"SELECT MIN(time), MAX(time), COUNT(*) FROM transactions WHERE {cond}",
                                 params)[0]
    total = count + count // 4
    done = 0
    if count:
        for a, b in _windows(count, lo, hi):
            rows = reader.query("SELECT relist_id, time, list_address, message_id, facts, upstream, reply "
                                f"FROM transactions WHERE {cond} AND time >= ? AND time < ?", params + [a, b])
            for row in rows:
                agg.add(*row)
            # The notes of one transaction per new post, while these rows' pages are warm.
            for batch in _batches(agg.representatives()):
                for rid, steps in reader.query(f"SELECT relist_id, steps FROM transactions "
                                               f"WHERE relist_id IN {_in(len(batch))}", batch):
                    agg.add_steps(rid, steps)
            done += len(rows)
            progress(done, total, "transactions")
        ids = agg.arrivals()
        for i, batch in enumerate(_batches(ids)):
            found: dict[str, tuple[str, str, list[str]]] = {}
            for rid, from_domain, alignment, domain in reader.query(
                    "SELECT v.relist_id, v.from_domain, v.dmarc_alignment, s.domain FROM verdicts v "
                    "LEFT JOIN signatures s ON s.relist_id = v.relist_id AND s.kind = 'dkim' "
                    "AND s.result = 'pass' "
                    f"WHERE v.relist_id IN {_in(len(batch))}", batch):
                entry = found.setdefault(rid, (from_domain, alignment, []))
                if domain is not None:
                    entry[2].append(domain)
            for rid, (from_domain, alignment, passing) in found.items():
                agg.add_arrival(rid, from_domain, alignment, passing)
            progress(count + (total - count) * (i + 1) * BATCH // max(1, len(ids)), total, "verdicts")
    bwhere = [w for w in where if w != "list_address IS NOT NULL"]
    sql = "SELECT list_address, time, cause, recipient, poster_domain FROM bounces"
    for row in reader.query(sql + (" WHERE " + " AND ".join(bwhere) if bwhere else ""), params):
        agg.add_bounce(*row)
    return agg


# -- explain -------------------------------------------------------------------------------------

def _tx(reader, where: str, params: list) -> list[dict[str, Any]]:
    rows = reader.query(f"SELECT {', '.join(TX_COLUMNS)} FROM transactions WHERE {where} ORDER BY time",
                        params)
    return [dict(zip(TX_COLUMNS, row)) for row in rows]


def find_post(reader, ident: str, list_address: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """(how ``ident`` was found, every transaction of the post it names), oldest first:
    by relist id, else by Message-ID (as given, then with angle brackets).  The post
    is every transaction with its Message-ID and list (ingress records included);
    [] when nothing matches."""
    ident = ident.strip()
    first = _tx(reader, "relist_id = ?", [ident.upper()]) if ident else []
    how = "relist id"
    if not first:
        how = "Message-ID"
        for mid in dict.fromkeys((ident, f"<{ident.strip('<>')}>")):
            where, params = "message_id = ?", [mid]
            if list_address:
                where, params = where + " AND list_address = ?", params + [list_address.lower()]
            first = _tx(reader, where, params)
            if first:
                break
    if not first:
        return how, []
    chosen = first[-1] if how == "Message-ID" else first[0]
    mid, lst = chosen["message_id"], chosen["list_address"]
    if not mid:
        return how, [chosen]
    if lst is None:
        return how, _tx(reader, "message_id = ? AND list_address IS NULL", [mid])
    return how, _tx(reader, "message_id = ? AND list_address = ?", [mid, lst])


def other_lists(reader, message_id: str, list_address: str | None) -> list[str]:
    rows = reader.query("SELECT DISTINCT list_address FROM transactions WHERE message_id = ?", [message_id])
    return sorted(r[0] for r in rows if r[0] and r[0] != list_address)


def signatures_of(reader, relist_id: str) -> list[dict[str, Any]]:
    cols = ("idx", "kind", "domain", "selector", "algorithm", "canonicalization", "key_bits", "result",
            "reason", "body_hash_ok", "header_hash_ok", "instance")
    rows = reader.query(f"SELECT {', '.join(cols)} FROM signatures WHERE relist_id = ? ORDER BY idx",
                        [relist_id])
    return [dict(zip(cols, r)) for r in rows]


def verdict_of(reader, relist_id: str) -> dict[str, Any] | None:
    cols = ("from_domain", "dmarc_result", "dmarc_policy", "dmarc_testing", "dmarc_domain", "dmarc_alignment",
            "dmarc_reason", "arc_cv", "arc_oldest_pass", "arc_reason")
    rows = reader.query(f"SELECT {', '.join(cols)} FROM verdicts WHERE relist_id = ?", [relist_id])
    return dict(zip(cols, rows[0])) if rows else None


def bounces_for(reader, relist_ids: list[str], message_id: str, list_address: str | None) -> list[dict]:
    """The bounces recorded for the post: by the egress relist id they returned, or by
    its Message-ID on the same list; oldest first."""
    out: dict[Any, dict] = {}
    cols = ("id",) + BOUNCE_COLUMNS
    sql = f"SELECT {', '.join(cols)} FROM bounces WHERE "
    rows = list(reader.query(sql + f"relist_id IN {_in(len(relist_ids))}", relist_ids)) if relist_ids else []
    if message_id and list_address:
        rows += reader.query(sql + "message_id = ? AND list_address = ?", [message_id, list_address])
    for row in rows:
        out[row[0]] = dict(zip(BOUNCE_COLUMNS, row[1:]))
    return sorted(out.values(), key=lambda b: str(b["time"]))
