"""The store's two backends side by side (issue 16): SQLite and PostgreSQL, same run.

    .venv/bin/python bench/bench_store_backends.py [--records 10000] [--copies 500]
                                                   [--relay-messages 5000] [--no-relay]

1. **Records per second from two processes**: two processes (as two relist workers or
   hosts) each ``save()`` ``--records`` real records (``bench_store.records``: the post
   ``bench_relay --resign`` sends, verified, transformed, signed) as fast as they can;
   the writers drain them in batches.  Records/s = all records / the wall time until
   both writers have written everything; also the writer thread's CPU per record.
2. **Ingress copies**: ``write_ingress`` (a 4 KiB post, committed before the ingress leg
   hands the post to Mailman): latency per copy from one thread, and copies/s from two
   processes of four threads each (asyncio.to_thread's pool in a worker).
3. **End-to-end relay rate** with each backend: ``bench_relay.py``'s pass-through run
   (smtp-source -> relist -> smtp-sink, 4 KiB, 1 recipient, 2 workers), with ``[store]``
   pointed at SQLite, then at PostgreSQL.

PostgreSQL is a throw-away server started here (tests/pgserver.py) with its default
durability (fsync and synchronous_commit on), on this machine's loopback: a real
deployment adds a network round trip per transaction (one per batch of records, one
per ingress copy).  Everything binds 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_store import records  # noqa: E402
from relist.edge.store import Store  # noqa: E402
from tests.pgserver import PASSWORD, PgUnavailable, start_or_explain  # noqa: E402

POST = (b"From: Poster <poster@poster.example>\r\nTo: dev@lists.example.org\r\nSubject: copy\r\n"
        b"Message-ID: <copy@poster.example>\r\n\r\n" + b"Lorem ipsum dolor sit amet, consectetur.\r\n" * 95)


def _saver(where: str, recs, upstream, reply, start, out) -> None:
    store = Store(where, max_queue=len(recs) + 1)   # a burst: measure the writer, drop nothing
    clock = time.pthread_getcpuclockid(store._thread.ident)
    start.wait()
    t0, w0 = time.monotonic(), time.clock_gettime(clock)
    for rec in recs:
        store.save(rec, upstream, reply, 12.345)
    ok = store.wait_handled(len(recs), timeout=600)
    t1, w1 = time.monotonic(), time.clock_gettime(clock)
    out.put((t0, t1, (w1 - w0) / len(recs) * 1e6, ok and store.written == len(recs), store.dropped))
    store.close()


def records_per_second(where: str, recs, upstream, reply) -> tuple[float, float]:
    """(records/s, writer µs CPU per record) for two processes saving half each."""
    ctx = multiprocessing.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    half = len(recs) // 2
    procs = [ctx.Process(target=_saver, args=(where, part, upstream, reply, start, out))
             for part in (recs[:half], recs[half:2 * half])]
    for p in procs:
        p.start()
    time.sleep(1.0)    # both stores open
    start.set()
    results = [out.get(timeout=900) for _ in procs]
    for p in procs:
        p.join(60)
    assert all(r[3] for r in results), f"not every record written: {results}"
    wall = max(r[1] for r in results) - min(r[0] for r in results)
    return 2 * half / wall, statistics.mean(r[2] for r in results)


def _copier(where: str, n: int, threads: int, tag: str, start, out) -> None:
    store = Store(where)
    start.wait()
    t0 = time.monotonic()

    def run(k: int) -> None:
        for i in range(n // threads):
            now = time.time()
            store.write_ingress(f"{tag}{k}-{i}", now, "2026-01-01T00:00:00+00:00", 3600,
                                f"<{tag}{k}-{i}@x>", "fp", POST)
    ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.put((t0, time.monotonic(), store.written))
    store.close()


def ingress_copies(where: str, n: int) -> tuple[float, float, float]:
    """(median ms, p99 ms) of one thread's write_ingress, and copies/s from 2 x 4 threads."""
    store = Store(where)
    lat = []
    for i in range(n):
        t = time.perf_counter()
        assert store.write_ingress(f"L{i}", time.time(), "2026-01-01T00:00:00+00:00", 3600, f"<l{i}@x>",
                                   "fp", POST)
        lat.append((time.perf_counter() - t) * 1000)
    store.close()
    lat.sort()
    ctx = multiprocessing.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_copier, args=(where, n, 4, f"P{j}-", start, out)) for j in range(2)]
    for p in procs:
        p.start()
    time.sleep(1.0)
    start.set()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join(60)
    wall = max(r[1] for r in results) - min(r[0] for r in results)
    return statistics.median(lat), lat[int(len(lat) * 0.99) - 1], sum(r[2] for r in results) / wall


def relay_rate(store_toml: str, messages: int) -> str:
    """bench_relay.py's pass-through run with ``[store]`` replaced: its result lines."""
    import argparse as ap
    import signal
    import subprocess

    import bench_relay as br
    from relist.sandbox.dnsserver import DNSServer
    args = ap.Namespace(messages=messages, sessions=4, size=4096, recipients=1, workers=2, post_file=None,
                        timeout=600)
    with tempfile.TemporaryDirectory(prefix="relist-bench-") as tmp:
        sink_port, relist_port = br.free_port(), br.free_port()
        sink = br.start_sink(sink_port)
        dns = DNSServer({}).start()
        db = Path(tmp) / "relist.db"
        conf = Path(tmp) / "relist.toml"
        text = br._override("", relist_port, sink_port, db, 2, dns.nameserver)
        conf.write_text(text.replace(f'path = "{db}"', store_toml or f'path = "{db}"'))
        log = Path(tmp) / "relist.log"
        relist = subprocess.Popen([sys.executable, "-m", "relist", "serve", "-c", str(conf)],
                                  stderr=open(log, "w"), cwd=ROOT)
        try:
            br.wait_port(relist_port)
            br.source(relist_port, ap.Namespace(**{**vars(args), "messages": 200}))   # warm up
            cpu0 = br.cpu_seconds(relist.pid)
            through = br.source(relist_port, args)
            cpu = br.cpu_seconds(relist.pid) - cpu0
        finally:
            relist.send_signal(signal.SIGTERM)
            relist.wait(60)
            sink.terminate()
            sink.wait(10)
            dns.stop()
        # The final counters lines ("stopping: {...", "stopped: {... 'errors': 0") name no error.
        errors = [line for line in log.read_text().splitlines()
                  if ("error" in line.lower() and "'errors': 0" not in line) or "Traceback" in line]
        note = f"  ({len(errors)} error line(s): {errors[0]})" if errors else ""
        return f"{messages / through:8.0f} msgs/s   relist CPU {cpu * 1000 / messages:.3f} ms/msg{note}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=10000, help="records in part 1 (both processes together)")
    ap.add_argument("--copies", type=int, default=500, help="ingress copies per run in part 2")
    ap.add_argument("--relay-messages", type=int, default=5000)
    ap.add_argument("--relay-rounds", type=int, default=2, help="part 3: rounds, alternating the backends")
    ap.add_argument("--no-relay", action="store_true", help="skip part 3 (needs Postfix's smtp-source)")
    args = ap.parse_args()
    try:
        pg = start_or_explain(durable=True)
    except PgUnavailable as exc:
        print(f"PostgreSQL: {exc}", file=sys.stderr)
        return 2
    os.environ["PGPASSWORD"] = PASSWORD
    tmp = Path(tempfile.mkdtemp(prefix="bench-backends-"))
    try:
        recs, upstream, reply = records(args.records, 1)
        print(f"{os.cpu_count()} CPUs; PostgreSQL {pg.psql('SHOW server_version')[:-1]} on 127.0.0.1 "
              f"(fsync on), SQLite {__import__('sqlite3').sqlite_version} (WAL, synchronous=NORMAL)")
        print(f"1. records/s from two processes ({args.records} records, {len(recs[0].steps)} step notes, "
              f"{len(recs[0].verdict.signatures)} signature(s) each):")
        for name, where in (("sqlite", str(tmp / "records.db")),
                            ("postgresql", pg.url(pg.create_db("records")))):
            rate, cpu = records_per_second(where, recs, upstream, reply)
            print(f"   {name:<11} {rate:8.0f} records/s   writer CPU {cpu:6.1f} µs/record")
        print(f"2. ingress copies (write_ingress, {len(POST)} byte post, committed at once):")
        for name, where in (("sqlite", str(tmp / "copies.db")),
                            ("postgresql", pg.url(pg.create_db("copies")))):
            median, p99, rate = ingress_copies(where, args.copies)
            print(f"   {name:<11} {median:6.2f} ms median, {p99:6.2f} ms p99 (one thread); "
                  f"{rate:6.0f} copies/s from 2 processes x 4 threads")
        if not args.no_relay and shutil.which("smtp-source"):
            print(f"3. end-to-end relay rate (bench_relay pass-through, {args.relay_messages} messages, "
                  f"4 KiB, 1 recipient, 2 workers, 4 sessions):")
            pw = tmp / "pw"
            pw.write_text(PASSWORD + "\n")
            pw.chmod(0o600)
            for rnd in range(args.relay_rounds):
                print(f"   sqlite     {relay_rate('', args.relay_messages)}")
                store_toml = f'url = "{pg.url(pg.create_db(f"relay{rnd}"))}"\npassword_file = "{pw}"'
                print(f"   postgresql {relay_rate(store_toml, args.relay_messages)}")
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
