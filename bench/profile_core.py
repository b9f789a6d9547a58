"""Profile the core's STEPS over one re-sign post (what bench_relay --resign sends).

    .venv/bin/python bench/profile_core.py [--size 4096] [--n 300] [--mode resign|preserve|auto]
                                           [--clock cpu|wall] [--profile]
    .venv/bin/python bench/profile_core.py --per-kib [--n 200]

Prints per-step mean time (µs) over ``--n`` runs of ``pipeline.process`` with the
DNS facts already resolved (the relay's warm-cache case), and the median time of one
whole post, then optionally a cProfile top 25.  No IO: keys are generated in memory,
DNS answers are built directly.  ``--clock cpu`` (the default) times the process's CPU
(what issue 17 measures; on a shared machine wall time also counts the waits);
``--per-kib`` prints the core's extra CPU per KiB of body between a 4 KiB and a 64 KiB
post, in one run.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_relay import signed_post  # noqa: E402 - the same post bench_relay --resign sends
from relist.core import pipeline  # noqa: E402
from relist.core.facts import Answer, Facts, Status  # noqa: E402
from relist.core.message import RawMessage  # noqa: E402
from relist.core.model import Context, Envelope, Work  # noqa: E402
from relist.core.policy import ListPolicy, RelayPolicy  # noqa: E402
from relist.core.sign.signing_keys import dns_record  # noqa: E402
from relist.edge.key_files import generate  # noqa: E402

LIST = "bench@lists.example.org"


def setup(size: int, mode: str = "resign"):
    list_key, poster_key = generate("rsa"), generate("rsa")
    zone = {"bench._domainkey.lists.example.org": dns_record(list_key),
            "s1._domainkey.poster.example": dns_record(poster_key),
            "_dmarc.poster.example": "v=DMARC1; p=none"}
    raw = signed_post(size, poster_key)
    lp = ListPolicy(address=LIST, configured=True, mode=mode, footer="-- \n{list_name} list\n",
                    subject_prefix="[{list_name}] ", selector="bench", private_key="/k/bench.key",
                    arc_seal=True)
    relay = RelayPolicy(hostname="relist.bench", authserv_id="relist.bench", lists=(lp,))
    facts = Facts()
    for _ in range(8):
        wanted = pipeline.plan(raw, relay, facts)
        if not wanted:
            break
        answers = dict(facts.answers)
        for q in wanted:
            txt = zone.get(q.qname.rstrip("."))
            answers[q] = (Answer(Status.FOUND, (txt.encode(),)) if txt
                          else Answer(Status.ABSENT, (), "NXDOMAIN"))
        facts = Facts(answers)
    ctx = Context(envelope=Envelope("bench-bounces@lists.example.org", ("m@example.com",),
                                    client_ip="127.0.0.1", client_helo="mailman.bench"),
                  policy=relay, now=datetime.now(timezone.utc), relist_id="R1", facts=facts,
                  keys={"/k/bench.key": list_key})
    return raw, ctx


def per_step(raw: bytes, ctx, n: int, clock=time.process_time) -> tuple[dict[str, float], float]:
    """Mean µs per step, and the median µs of a whole post."""
    spent: dict[str, float] = defaultdict(float)
    totals = []
    for _ in range(n):
        start = t = clock()
        work = Work(RawMessage.parse(raw))
        spent["(parse RawMessage)"] += clock() - t
        for step in pipeline.STEPS:
            t = clock()
            work = step.apply(work, ctx)
            spent[getattr(step, "NAME", str(step))] += clock() - t
        t = clock()
        work.message.to_bytes()
        now = clock()
        spent["(to_bytes)"] += now - t
        totals.append(now - start)
    return {k: v / n * 1e6 for k, v in spent.items()}, statistics.median(totals) * 1e6


def per_kib(n: int, mode: str, clock) -> int:
    """The core's extra CPU per KiB of body, 4 KiB against 64 KiB, interleaved rounds."""
    small, big = setup(4096, mode), setup(65536, mode)
    rounds: dict[str, list[float]] = {"4k": [], "64k": []}
    for _ in range(5):
        for name, (raw, ctx) in (("4k", small), ("64k", big)):
            per_step(raw, ctx, 10, clock)
            rounds[name].append(per_step(raw, ctx, n, clock)[1])
    a, b = statistics.median(rounds["4k"]), statistics.median(rounds["64k"])
    kib = (len(big[0]) - len(small[0])) / 1024
    print(f"core, median of 5 rounds x {n} posts: 4 KiB {a:.0f} µs, 64 KiB {b:.0f} µs: "
          f"{(b - a) / kib:.1f} µs per extra KiB of body")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--mode", default="resign", choices=("resign", "preserve", "auto"),
                    help="the list's mode (the post's DMARC policy is p=none; auto keeps preserve)")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--clock", default="cpu", choices=("cpu", "wall"))
    ap.add_argument("--per-kib", action="store_true", help="extra CPU a KiB, 4 KiB vs 64 KiB")
    args = ap.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.per_kib:
        return per_kib(args.n, args.mode, clock)
    raw, ctx = setup(args.size, args.mode)
    out = pipeline.process(raw, ctx)
    assert out.message is not None and b"ARC-Seal:" in out.message, "the pipeline did not sign and seal"
    per_step(raw, ctx, 20, clock)   # warm up
    times, median = per_step(raw, ctx, args.n, clock)
    total = sum(times.values())
    print(f"size={len(raw)} bytes, n={args.n}: {total / 1000:.3f} ms per post in the core "
          f"(median {median / 1000:.3f} ms, {args.clock} time)")
    for name, us in sorted(times.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<20} {us:8.1f} µs  {us / total * 100:5.1f} %")
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.n):
            pipeline.process(raw, ctx)
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
