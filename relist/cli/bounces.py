"""``relist bounces``: the bounces the ingress leg recorded (issue 13), newest first.

Each row is one failed recipient of a bounce for a list's bounce address: why it
failed (``cause``: dmarc, dkim, spf, auth, mailbox, spam, other), the receiver's
status and text, the post it returned (``message_id``, ``relist_id`` of the egress
transaction or null when relist has no record of it), the poster's domain, and
where relist sent the bounce (``action``: mailman or owner).  Exit 0, also when
there is no row; 2 on a usage, configuration or IO error.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from relist.config import load
from relist.edge.history import scope
from relist.edge.store import Reader, StoreError, open_reader, redact

__all__ = ["add_parser", "duration", "query"]

#: The keys of each ``--json`` item, in order (the contract; more may follow).
KEYS = ("time", "list", "recipient", "cause", "permanent", "status", "diagnostic", "message_id",
        "relist_id", "poster_domain", "action", "remote_mta", "rule", "bounce_id")
_COLUMNS = ("time", "list_address", "recipient", "cause", "permanent", "status", "diagnostic", "message_id",
            "relist_id", "poster_domain", "action", "remote_mta", "rule", "bounce_id")
_DURATION = re.compile(r"(\d+)([smhdw])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
CAUSES = ("dmarc", "dkim", "spf", "auth", "mailbox", "spam", "other")


def duration(text: str) -> timedelta:
    """``7d``, ``12h``, ``30m``, ``90s``, ``2w`` or a sum of them (``1d12h``)."""
    text = text.strip().lower()
    if not text or _DURATION.sub("", text):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 7d, 12h, 30m)")
    return timedelta(seconds=sum(int(n) * _UNIT[u] for n, u in _DURATION.findall(text)))


def query(reader: Reader, *, list_address: str | None = None, since: datetime | None = None,
          cause: str | None = None) -> list[dict]:
    """The recorded bounces, newest first, as dicts with ``KEYS``."""
    where, params = scope(list_address, since)
    if cause:
        where.append("cause = ?")
        params.append(cause.lower())
    sql = (f"SELECT {', '.join(_COLUMNS)} FROM bounces" + (" WHERE " + " AND ".join(where) if where else "")
           + " ORDER BY time DESC, id DESC")
    out = []
    for row in reader.query(sql, params):
        item = dict(zip(KEYS, row))
        item["permanent"] = bool(item["permanent"])
        out.append(item)
    return out


def _table(rows: list[dict], out) -> None:
    if not rows:
        print("no bounces recorded", file=out)
        return
    heads = ("time", "list", "recipient", "cause", "status", "action", "post", "poster domain")
    lines = [(r["time"][:19].replace("T", " "), r["list"], r["recipient"] or "-",
              r["cause"] + ("" if r["permanent"] else " (temporary)"), r["status"] or "-", r["action"],
              r["relist_id"] or "unknown", r["poster_domain"] or "-") for r in rows]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(heads)]
    for line in (heads, *lines):
        print("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip(), file=out)


def run(args) -> int:
    cfg = load(args.config)
    since = datetime.now(timezone.utc) - args.since if args.since is not None else None
    if cfg.store["path"] and not Path(cfg.store["path"]).exists():
        rows: list[dict] = []
    else:
        try:
            reader = open_reader(cfg.store)
        except (sqlite3.Error, StoreError, RuntimeError) as exc:
            print(f"relist bounces: {cfg.store['path'] or redact(cfg.store['url'])}: {exc}", file=sys.stderr)
            return 2
        try:
            rows = query(reader, list_address=args.list, since=since, cause=args.cause)
        except (sqlite3.Error, StoreError) as exc:
            print(f"relist bounces: {cfg.store['path'] or redact(cfg.store['url'])}: {exc}", file=sys.stderr)
            return 2
        finally:
            reader.close()
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        print()
    else:
        _table(rows, sys.stdout)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("bounces", help="list the bounces recorded on the ingress leg, and why they failed")
    p.add_argument("-c", "--config", help="configuration file ([store] path)")
    p.add_argument("--list", metavar="ADDR", help="only this list (its posting address)")
    p.add_argument("--since", metavar="DURATION", type=duration, help="only the last DURATION (7d, 12h, 30m)")
    p.add_argument("--cause", choices=CAUSES, help="only this cause")
    p.add_argument("--json", action="store_true", help="print a JSON array, one object per failed recipient")
    p.set_defaults(func=run)
