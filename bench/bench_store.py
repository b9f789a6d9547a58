"""CPU the SQLite store costs per relayed message: ``Store.save()`` on the caller's
(event loop) thread plus the writer thread's time, per record.

    .venv/bin/python bench/bench_store.py [--n 3000] [--rate 300] [--burst] [--rounds 3]
                                          [--recipients 1] [--compare REV] [--linger S]

The record is a real one: ``pipeline.process`` over the post ``bench_relay --resign``
sends (``profile_core.setup()``: poster DKIM + DMARC verified, footer, Subject prefix,
rsa-sha256 signature, ARC seal), given a fresh relist id per save.  Paced (default):
``--rate`` saves per second, as one relay worker makes them (issue 5's re-sign figure
is a few hundred per worker), so the writer sees the batches it sees in production.
``--burst``: all saves at once, the writer drains full batches.

The caller's CPU is ``time.thread_time()`` around each ``save()``; the writer's is its
own thread CPU clock (``time.pthread_getcpuclockid``) from the first save until it
has written every record.  ``--compare REV`` loads the store (``relist/edge/store.py``,
or the ``relist/edge/store/`` package) as of git revision REV beside the working tree's
and alternates the two (same run, same machine load), each on its own fresh database
in a temporary directory.  ``--url postgresql://...`` writes into that
PostgreSQL database instead of SQLite files (bench/bench_store_backends.py compares the
backends from two processes).

``--prefill N``: each round starts from a copy of a store that already holds N such
transactions (with their signature and verdict rows), as a store does after months of
traffic: a cost that grows with the store shows there.  ``--ids relist`` (default) gives
the records relist's own ids (``relist.edge.ids``: the time first); ``--ids random``
the 12 random characters relist used before; ``--ids both`` alternates the two, each
prefilled with its own kind of ids.  ``--arrivals poisson`` paces the saves at random
intervals of mean 1/rate (the same sequence for each variant of a round), so the
writer's batches vary in length as they do with real mail:

    .venv/bin/python bench/bench_store.py --prefill 1000000 --ids both --n 15000 --rate 1500 --rounds 2
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from profile_core import setup  # noqa: E402 - the post bench_relay --resign sends
from relist.core import pipeline  # noqa: E402
from relist.core.model import Reply  # noqa: E402
from relist.edge import store as current_store  # noqa: E402
from relist.edge.ids import ALPHABET, IdMaker, new_relist_id  # noqa: E402
from relist.edge.store.rows import record_row, verdict_rows  # noqa: E402
from relist.edge.store.sqlite import SQLiteBackend  # noqa: E402


def load_store_at(rev: str):
    """The store as of git revision ``rev`` (a module, or the package), importable beside
    the working tree's under another name."""
    def show(path: str) -> bytes | None:
        out = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], capture_output=True)
        return out.stdout if out.returncode == 0 else None
    name = f"store_at_{rev.replace('~', '_').replace('^', '_').replace('/', '_')}"
    source = show("relist/edge/store.py")
    if source is not None:
        spec = importlib.util.spec_from_loader(name, loader=None)
        module = importlib.util.module_from_spec(spec)
        exec(compile(source, f"store.py@{rev}", "exec"), module.__dict__)  # noqa: S102 - our own file
        return module
    files = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", f"{rev}:relist/edge/store/"],
                           check=True, capture_output=True, text=True).stdout.split()
    where = Path(tempfile.mkdtemp(prefix="bench-store-")) / name
    where.mkdir()
    for f in files:
        if f.endswith(".py"):
            (where / f).write_bytes(show(f"relist/edge/store/{f}"))
    sys.path.insert(0, str(where.parent))
    return importlib.import_module(name)   # the package's modules import each other relatively


def random_relist_id() -> str:
    """A 12-character id as relist made them before ``relist.edge.ids``: all drawn."""
    n = int.from_bytes(os.urandom(8), "big")
    out = []
    for _ in range(12):
        n, r = divmod(n, len(ALPHABET))
        out.append(ALPHABET[r])
    return "".join(out)


IDS = {"relist": new_relist_id, "random": random_relist_id}


def prefill(path: Path, n: int, record, upstream, reply, kind: str) -> None:
    """A SQLite store at ``path`` holding ``n`` copies of ``record``'s rows, under ids of
    ``kind`` (relist's: made as if over the last ``n`` seconds), in bulk transactions."""
    backend = SQLiteBackend(path)
    tx = record_row(record, upstream, reply, 12.345)
    sigs, verdict = verdict_rows(record)
    if kind == "relist":
        clock = iter(range(time.time_ns() - n * 10**9, time.time_ns(), 10**9))
        make = IdMaker(clock=lambda: next(clock))
    else:
        make = random_relist_id
    try:
        for at in range(0, n, 50_000):
            tables: dict[str, list[tuple]] = {"transactions": [], "signatures": [], "verdicts": []}
            for _ in range(min(50_000, n - at)):
                rid = make()
                tables["transactions"].append((rid,) + tx[1:])
                tables["signatures"].extend((rid,) + row[1:] for row in sigs)
                if verdict is not None:
                    tables["verdicts"].append((rid,) + verdict[1:])
            backend.write(tables)
    finally:
        backend.close()


def records(n: int, recipients: int):
    raw, ctx = setup(4096)
    rcpts = tuple(f"m{i}@example.com" for i in range(recipients))
    ctx = replace(ctx, envelope=replace(ctx.envelope, rcpt_tos=rcpts))
    outcome = pipeline.process(raw, ctx)
    assert outcome.message is not None and outcome.record.verdict is not None
    record = outcome.record
    upstream = {r: Reply(250, "2.1.5", "Ok") for r in rcpts}
    upstream["DATA"] = Reply(250, "2.0.0", "Ok: queued as 4XyZ1234")
    reply = Reply(250, "2.0.0", f"Ok: queued as {record.relist_id}")
    return [replace(record, relist_id=new_relist_id()) for _ in range(n)], upstream, reply


def run_once(module, path: Path, recs, upstream, reply, rate: float | None,
             options: dict, poisson: random.Random | None = None) -> tuple[float, float, float]:
    """(save µs, writer µs, records per commit) per record."""
    store = module.Store(path, **options)
    writes = 0
    # One database transaction per call: the backend's write (the package), or the old
    # single module's _write.
    owner = store.backend if hasattr(store, "backend") else store
    name = "write" if hasattr(store, "backend") else "_write"
    real_write = getattr(owner, name)

    def counting_write(items):
        nonlocal writes
        writes += 1
        return real_write(items)

    setattr(owner, name, counting_write)
    clock = time.pthread_getcpuclockid(store._thread.ident)
    w0 = time.clock_gettime(clock)
    spent = 0.0
    interval = 1 / rate if rate else 0
    due = time.monotonic()
    for rec in recs:
        t = time.thread_time()
        store.save(rec, upstream, reply, 12.345)
        spent += time.thread_time() - t
        if interval:
            due += poisson.expovariate(rate) if poisson else interval
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    assert store.wait_handled(len(recs), timeout=120), "the writer did not finish"
    writer = time.clock_gettime(clock) - w0
    assert store.failures == 0 and store.written == len(recs)
    store.close()
    n = len(recs)
    return spent / n * 1e6, writer / n * 1e6, n / max(writes, 1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000, help="records per round")
    ap.add_argument("--rate", type=float, default=300, help="saves per second (paced mode)")
    ap.add_argument("--burst", action="store_true", help="save all at once, no pacing")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--recipients", type=int, default=1)
    ap.add_argument("--compare", metavar="REV", help="also run store.py as of this git revision")
    ap.add_argument("--linger", type=float, help="Store(linger=...) for the working tree's store")
    ap.add_argument("--url", help="a postgresql:// url to write into instead of SQLite files "
                    "(the working tree's store only)")
    ap.add_argument("--prefill", type=int, default=0, metavar="N",
                    help="start each round from a store already holding N transactions (SQLite)")
    ap.add_argument("--ids", choices=("relist", "random", "both"), default="relist",
                    help="relist's ids (time first), the 12 random characters of before, or both")
    ap.add_argument("--arrivals", choices=("regular", "poisson"), default="regular",
                    help="paced saves at even intervals, or at random ones (Poisson, as mail "
                    "arrives: batches of varying length), the same sequence for each variant")
    args = ap.parse_args()
    if args.prefill and args.url:
        ap.error("--prefill is for SQLite files")
    kinds = ["random", "relist"] if args.ids == "both" else [args.ids]
    stores = [("working tree", current_store)]
    if args.compare:
        stores.insert(0, (args.compare, load_store_at(args.compare)))
    variants = [(name if len(kinds) == 1 else f"{name}, {kind} ids", module, kind)
                for name, module in stores for kind in kinds]
    recs, upstream, reply = records(args.n * args.rounds * len(variants), args.recipients)
    rate = None if args.burst else args.rate
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _, _ in variants}
    width = max(len(name) for name in results)
    print(f"{args.n} records per round, {'burst' if args.burst else f'{args.rate:.0f}/s'}, "
          f"{args.recipients} recipient(s), {len(recs[0].steps)} step notes, "
          f"{len(recs[0].verdict.signatures)} signature(s)"
          + (f", into a store of {args.prefill} transactions" if args.prefill else ""))
    with tempfile.TemporaryDirectory() as tmp:
        filled = {}
        if args.prefill:
            for kind in kinds:
                filled[kind] = Path(tmp) / f"prefilled-{kind}.db"
                t = time.monotonic()
                prefill(filled[kind], args.prefill, recs[0], upstream, reply, kind)
                print(f"  prefilled {kind} in {time.monotonic() - t:.0f} s "
                      f"({filled[kind].stat().st_size / 1e9:.2f} GB)", flush=True)
        k = 0
        for rnd in range(args.rounds):
            for name, module, kind in variants:
                chunk, k = recs[k:k + args.n], k + args.n
                chunk = [replace(r, relist_id=IDS[kind]()) for r in chunk]
                path = args.url or Path(tmp) / f"{rnd}-{len(results[name])}-{kind}-{name[:8]}.db"
                if args.prefill:
                    shutil.copyfile(filled[kind], path)
                r = run_once(module, path, chunk, upstream, reply, rate,
                             {"linger": args.linger}
                             if args.linger is not None and module is current_store else {},
                             random.Random(rnd) if args.arrivals == "poisson" else None)
                if args.prefill:
                    Path(path).unlink()
                results[name].append(r)
                print(f"  round {rnd + 1} {name:<{width}} save {r[0]:7.1f} µs  writer {r[1]:7.1f} µs  "
                      f"total {r[0] + r[1]:7.1f} µs per record  ({r[2]:.1f} records per commit)", flush=True)
    for name, rs in results.items():
        save, writer = statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs)
        print(f"{name:<{width}} median: save {save:7.1f} µs + writer {writer:7.1f} µs = "
              f"{save + writer:7.1f} µs CPU per record")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
