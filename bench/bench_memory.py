"""Peak memory of a relist worker for a large post (issue 17: below 4x the message).

    .venv/bin/python bench/bench_memory.py [--size 25000000] [--workers 2] [--concurrent 4]

Run by hand (not part of the test suite).  Starts ``relist serve`` in front of
``smtp-sink`` with the re-sign configuration of ``bench_relay.py --resign`` (verify the
poster's DKIM and DMARC over a loopback DNS server, Subject prefix, footer, DKIM and
ARC), sends one post of ``--size`` bytes (a text/plain post signed by the poster), then
``--concurrent`` at once, and prints each worker's peak resident set (``VmHWM`` in
/proc/PID/status) before and after each, with the peak over the message size.  For
the concurrent posts it also prints how many each worker took and what that many
single posts would cost (its baseline plus that many times one post's increase): a
peak above that sum means posts at once cost more than posts one after the other.
Everything binds 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import collections
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_relay import (  # noqa: E402
    _RELAYED, _override, free_port, resign_setup, start_sink, tools_missing, wait_port,
)
from relist.sandbox.dnsserver import DNSServer  # noqa: E402

__all__ = ["main"]

MIB = 1024 * 1024


def status(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/PID/status, in bytes (0 when the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


def workers(parent: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(parent)], capture_output=True, text=True).stdout.split()
    return sorted(int(p) for p in out) or [parent]


def send(port: int, post: str, sessions: int, messages: int, timeout: int = 600) -> None:
    subprocess.run(["smtp-source", "-s", str(sessions), "-m", str(messages), "-F", post,
                    "-f", "bench-bounces@lists.example.org", "-t", "member@example.com",
                    "-M", "mailman.bench", f"127.0.0.1:{port}"], check=True, timeout=timeout,
                   stdout=subprocess.DEVNULL)


def relayed(log: Path) -> collections.Counter:
    """Transactions each worker has logged so far (its log lines carry its PID)."""
    return collections.Counter(m.group(1) and int(m.group(1)) for m in map(
        _RELAYED.search, log.read_text().splitlines()) if m)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=25_000_000,
                    help="post size in bytes (max_message_size is 25 MiB)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrent", type=int, default=4)
    args = ap.parse_args()
    if tools_missing():
        return 2
    with tempfile.TemporaryDirectory(prefix="relist-mem-") as tmp:
        sink_port, relist_port = free_port(), free_port()
        sink = start_sink(sink_port, 64)
        base, zone, post = resign_setup(Path(tmp), args.size)
        size = Path(post).stat().st_size        # LF lines: smtp-source sends CRLF, one more a line
        lines = Path(post).read_bytes().count(b"\n")
        dns = DNSServer(zone).start()
        conf = Path(tmp) / "relist.toml"
        conf.write_text(_override(base, relist_port, sink_port, Path(tmp) / "relist.db", args.workers,
                                  dns.nameserver, sign_once=False))
        relist = subprocess.Popen([sys.executable, "-m", "relist", "serve", "-c", str(conf)],
                                  stderr=open(Path(tmp) / "relist.log", "w"))
        try:
            wait_port(relist_port)
            time.sleep(0.5)
            pids = workers(relist.pid)
            wire = size + lines
            print(f"post: {wire / MIB:.1f} MiB on the wire; workers {pids}")
            print("baseline peak RSS: " + ", ".join(f"{status(p, 'VmHWM') / MIB:.0f} MiB" for p in pids))
            log = Path(tmp) / "relist.log"
            base_peak = {p: status(p, "VmHWM") for p in pids}
            one_post = 0
            for label, n in (("one post", 1), (f"{args.concurrent} at once", args.concurrent)):
                before = relayed(log)
                started = time.monotonic()
                send(relist_port, post, n, n)
                took = time.monotonic() - started
                time.sleep(0.3)             # the log lines of the last transactions
                done = relayed(log) - before
                peaks = {p: status(p, "VmHWM") for p in pids}
                if n == 1:
                    one_post = max(peaks[p] - base_peak[p] for p in pids)
                print(f"{label}: {took:.1f} s; peak RSS " + ", ".join(
                    f"{peaks[p] / MIB:.0f} MiB ({peaks[p] / wire:.1f}x the post; {done[p]} post(s)"
                    + (f", sum of {done[p]} single posts {(base_peak[p] + done[p] * one_post) / MIB:.0f} MiB"
                       if n > 1 else "") + ")" for p in pids))
        finally:
            relist.send_signal(signal.SIGTERM)
            try:
                relist.wait(60)
            except subprocess.TimeoutExpired:
                relist.kill()
            sink.terminate()
            sink.wait(10)
            dns.stop()
        errors = [ln for ln in (Path(tmp) / "relist.log").read_text().splitlines()
                  if "Traceback" in ln or re.search(r"reply=\"(451|552) ", ln)]
        if errors:
            print(f"relist logged {len(errors)} error line(s), first: {errors[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
