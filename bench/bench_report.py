"""How long ``relist report`` takes over a store of 1,000,000 transactions.

Builds the store from real rows: ``relist demo`` runs once (its corpus through the
ingress and egress legs, on loopback) and its transactions, signatures and verdicts
are the templates.  Each template post (one list, one Message-ID: its ingress record
and Mailman's fan-out) is copied with a new Message-ID and new relist ids, spread over
``--days`` days, until there are ``--transactions`` rows; one post in fifty gets a
DMARC bounce.  Bulk inserts, one transaction per 50,000 rows.  Then it times
``relist report --json`` (whole store, and ``--since 7d``) as a user runs it.

    .venv/bin/python bench/bench_report.py [--transactions 1000000] [--days 30] [--dir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relist import demo  # noqa: E402
from relist.edge.ids import IdMaker  # noqa: E402
from relist.edge.store import connect  # noqa: E402

CHUNK = 50_000
_ids = random.Random(1414)
_now = [0]
_make_id = IdMaker(clock=lambda: _now[0], draw=_ids.randbytes)


def new_relist_id(when: datetime) -> str:
    """A relist id as relist makes them (relist.edge.ids), at ``when``, drawn from a
    seeded generator."""
    _now[0] = int(when.timestamp() * 1e9)
    return _make_id()


def templates(db_path: Path) -> list[list[tuple]]:
    """The demo's posts: [[(transaction row, signature rows, verdict row)], ...]."""
    db = sqlite3.connect(db_path)
    posts: dict[tuple, list] = {}
    for row in db.execute("SELECT * FROM transactions ORDER BY time"):
        sigs = db.execute("SELECT * FROM signatures WHERE relist_id = ?", (row[0],)).fetchall()
        verdict = db.execute("SELECT * FROM verdicts WHERE relist_id = ?", (row[0],)).fetchone()
        posts.setdefault((row[7], row[6]), []).append((row, sigs, verdict))
    db.close()
    return list(posts.values())


def build(path: Path, n: int, days: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        demo.run(out=io.StringIO(), keep=str(Path(tmp) / "demo"))
        posts = templates(Path(tmp) / "demo" / "relist.db")
    conn = connect(path)
    conn.execute("PRAGMA synchronous=OFF")
    start = datetime.now(UTC) - timedelta(days=days)
    span = days * 86400.0
    rnd = random.Random(14)
    tx_rows, sig_rows, verdict_rows, bounce_rows = [], [], [], []
    made = copy = 0
    t0 = time.monotonic()

    def flush():
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO transactions VALUES (" + ",".join("?" * 16) + ")", tx_rows)
        conn.executemany("INSERT INTO signatures VALUES (" + ",".join("?" * 15) + ")", sig_rows)
        conn.executemany("INSERT INTO verdicts VALUES (" + ",".join("?" * 12) + ")", verdict_rows)
        conn.executemany("INSERT INTO bounces (time, list_address, recipient, cause, permanent, status, "
                         "diagnostic, rule, message_id, relist_id, poster_domain, action, remote_mta, "
                         "bounce_id) "
                         "VALUES (" + ",".join("?" * 14) + ")", bounce_rows)
        conn.execute("COMMIT")
        for rows in (tx_rows, sig_rows, verdict_rows, bounce_rows):
            rows.clear()

    while made < n:
        for post in posts:
            if made >= n:
                break
            base = start + timedelta(seconds=span * made / n)
            last = None
            renamed = {}   # the template's ingress ids -> this copy's (named in egress verify notes)
            for i, (row, sigs, verdict) in enumerate(post):
                moment = base + timedelta(seconds=i)
                rid, when = new_relist_id(moment), moment.isoformat()
                mid = row[6].replace("@", f".{copy}@", 1) if row[6] else row[6]
                steps = row[10]
                if '"leg": "ingress"' in row[11]:
                    renamed[row[0]] = rid
                else:
                    for old, new in renamed.items():
                        steps = steps.replace(old, new)
                tx_rows.append((rid, when) + row[2:6] + (mid,) + row[7:10] + (steps,) + row[11:])
                sig_rows.extend((rid,) + s[1:] for s in sigs)
                if verdict is not None:
                    verdict_rows.append((rid,) + verdict[1:])
                if '"leg": "ingress"' not in row[11]:
                    last = (rid, moment, row[7], mid, json.loads(row[5]))
                made += 1
            if last and last[2] and rnd.random() < 0.02:
                rid, moment, lst, mid, rcpts = last
                bounce_rows.append((moment.isoformat(), lst, rcpts[0] if rcpts else "m@members.example",
                                    "dmarc", 1,
                                    "5.7.26", "550-5.7.26 Unauthenticated email", "gmail-dmarc", mid, rid,
                                    "poster.example", "mailman", "gmail-smtp-in.l.google.com",
                                    new_relist_id(moment)))
            if len(tx_rows) >= CHUNK:
                flush()
        copy += 1
    flush()
    conn.close()
    return time.monotonic() - t0


def timed(args: list[str]) -> tuple[float, dict]:
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "relist", "report", "--json", *args], capture_output=True,
                         text=True, check=True, cwd=ROOT)
    return time.monotonic() - t0, json.loads(out.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--transactions", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--dir", help="where to build the store (default: a temporary directory)")
    ap.add_argument("--keep", action="store_true", help="keep the store (with --dir)")
    args = ap.parse_args()
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="relist-bench-report-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / "relist.db"
    conf = work / "relist.toml"
    conf.write_text(f'[store]\npath = "{db}"\n')
    try:
        if not db.exists():
            took = build(db, args.transactions, args.days)
            print(f"built {args.transactions} transactions in {took:.1f} s "
                  f"({db.stat().st_size / 1e9:.2f} GB)")
        (count,), = sqlite3.connect(db).execute("SELECT COUNT(*) FROM transactions").fetchall()
        for label, extra in (("whole store", []), ("--since 7d", ["--since", "7d"]),
                             ("--list plain@ --since 7d",
                              ["--list", "plain@lists.example.org", "--since", "7d"])):
            took, doc = timed(["-c", str(conf), *extra])
            posts = sum(e["posts"] for e in doc["lists"].values())
            print(f"relist report --json, {label}: {took:.2f} s over {count} transactions ({posts} posts)")
    finally:
        if not args.keep:
            for p in work.glob("relist.db*"):
                p.unlink()
            conf.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
