"""Soak: many messages through ``relist serve`` (2 workers) into Postfix's smtp-sink,
bounded in time, checking that every message relist accepted reached the sink and
watching each worker's memory.

Run by hand (not part of the test suite):

    .venv/bin/python bench/soak.py [--messages 100000] [--max-seconds 900] [--sessions 4]
                                   [--size 4096] [--recipients 1] [--workers 2]

``smtp-source`` (Mailman's stand-in: ``--sessions`` long-lived connections) sends the
messages to relist, relist relays them to ``smtp-sink``.  Both come from the Debian
package ``postfix``.  Printed: messages in (answered 250 by relist, smtp-source's
count) and out (received by smtp-sink, its count), relist's own counters from its
log, and the resident memory (VmRSS) of the parent and of each worker at the start
(after a warm-up of 1000 messages), in the middle and at the end.  At the end relist
is stopped with SIGTERM and must drain and exit 0.  The run stops by itself after
``--max-seconds`` even if not all messages were sent (then in and out are compared
for what was sent).  Everything binds 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_relay import free_port, tools_missing, wait_port  # noqa: E402

ACCEPTING = re.compile(r"relist\[(\d+)\]: worker (\d+) accepting")
RELAYED = re.compile(r'reply="2\d\d ')
DEFERRED = re.compile(r'reply="4\d\d ')
REJECTED = re.compile(r'reply="5\d\d ')
WARM_UP = 1000


class Counter(threading.Thread):
    """The last number a Postfix test tool printed with ``-c`` (``N\\r`` from
    smtp-source, ``... mesg=N\\r`` from smtp-sink) on ``stream``."""

    def __init__(self, stream, pattern: str):
        super().__init__(daemon=True)
        self.stream, self.pattern = stream, re.compile(pattern.encode())
        self.value = 0

    def run(self):
        tail = b""
        while True:
            chunk = os.read(self.stream.fileno(), 65536)
            if not chunk:
                return
            tail = (tail + chunk)[-4096:]
            found = self.pattern.findall(tail)
            if found:
                self.value = int(found[-1])


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:
        return None
    return None


def snapshot(label: str, parent: int, workers: dict[int, int], sent: int, received: int,
             rows: list) -> None:
    per_worker = {slot: rss_kib(pid) for slot, pid in workers.items()}
    rows.append((label, sent, received, rss_kib(parent), per_worker))


def config(port: int, sink_port: int, db: Path, workers: int) -> str:
    return f"""
[server]
listen = "127.0.0.1:{port}"
workers = {workers}
hostname = "relist.soak"
[upstream]
host = "127.0.0.1"
port = {sink_port}
[store]
path = "{db}"
[dns]
nameservers = ["127.0.0.1:9"]
timeout = 1
[log]
level = "info"
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--max-seconds", type=float, default=900)
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--recipients", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    if tools_missing():
        return 2
    started = time.monotonic()
    deadline = started + args.max_seconds
    with tempfile.TemporaryDirectory(prefix="relist-soak-") as tmp:
        tmp = Path(tmp)
        sink_port, port = free_port(), free_port()
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        sink = subprocess.Popen(["smtp-sink", *user, "-c", f"127.0.0.1:{sink_port}", "1024"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        out = Counter(sink.stdout, r"mesg=(\d+)")
        out.start()
        wait_port(sink_port)
        (tmp / "relist.toml").write_text(config(port, sink_port, tmp / "relist.db", args.workers))
        log_path = tmp / "relist.log"
        relist = subprocess.Popen([sys.executable, "-m", "relist", "serve", "-c", str(tmp / "relist.toml")],
                                  cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(log_path, "wb"))
        source = None
        rows: list = []
        exit_code = None
        try:
            while len(ACCEPTING.findall(log_path.read_text(errors="replace"))) < args.workers:
                if relist.poll() is not None or time.monotonic() > started + 30:
                    print(log_path.read_text(errors="replace"))
                    return 1
                time.sleep(0.05)
            workers = {int(s): int(p) for p, s in ACCEPTING.findall(log_path.read_text(errors="replace"))}
            cmd = ["smtp-source", "-c", "-d", "-s", str(args.sessions), "-m", str(args.messages),
                   "-l", str(args.size), "-r", str(args.recipients), "-f", "soak-bounces@lists.example.org",
                   "-t", "member@example.com", "-M", "mailman.soak", f"127.0.0.1:{port}"]
            source = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            sent = Counter(source.stdout, r"(\d+)\r")
            sent.start()
            marks = [("start", min(WARM_UP, args.messages)), ("middle", args.messages // 2)]
            while source.poll() is None and time.monotonic() < deadline:
                if marks and sent.value >= marks[0][1]:
                    snapshot(marks.pop(0)[0], relist.pid, workers, sent.value, out.value, rows)
                time.sleep(0.05)
            timed_out = source.poll() is None
            if timed_out:
                source.send_signal(signal.SIGTERM)
                source.wait(10)
            sent.join(5)
            source_err = source.stderr.read().decode(errors="replace").strip()
            # smtp-sink counts a message when its "." is answered: give it a moment.
            settle = time.monotonic() + 10
            while out.value < sent.value and time.monotonic() < settle:
                time.sleep(0.05)
            snapshot("end", relist.pid, workers, sent.value, out.value, rows)
            relist.send_signal(signal.SIGTERM)
            exit_code = relist.wait(60)
        finally:
            for proc in (source, relist):
                if proc is not None and proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
            sink.terminate()
            sink.wait(10)
        elapsed = time.monotonic() - started
        log = log_path.read_text(errors="replace")
        relayed, deferred, rejected = (len(p.findall(log)) for p in (RELAYED, DEFERRED, REJECTED))
        errors = [line for line in log.splitlines() if "Traceback" in line or " failed" in line]
        print(f"messages={args.messages} size={args.size} recipients={args.recipients} "
              f"sessions={args.sessions} workers={args.workers}")
        print(f"elapsed {elapsed:.0f} s{' (stopped at --max-seconds)' if timed_out else ''}, "
              f"{sent.value / max(elapsed, 1e-9):.0f} msgs/s overall")
        print(f"in (relist answered 250, smtp-source): {sent.value}")
        print(f"out (received by smtp-sink):          {out.value}")
        print(f"relist log: relayed={relayed} deferred={deferred} rejected={rejected}")
        print(f"in = out: {'yes' if sent.value == out.value == relayed else 'NO'}")
        print(f"relist serve stopped with SIGTERM: exit {exit_code}")
        if source_err:
            print(f"smtp-source said: {source_err[:500]}")
        if errors:
            print(f"relist logged {len(errors)} error line(s), first: {errors[0]}")
        slots = sorted(rows[0][4]) if rows else []
        print("RSS (MiB)      sent    parent  " + "  ".join(f"worker {s}" for s in slots))
        for label, n, _, parent_rss, per in rows:
            cells = "  ".join(f"{(per[s] or 0) / 1024:8.1f}" for s in slots)
            print(f"{label:<8} {n:>10}  {(parent_rss or 0) / 1024:8.1f}  {cells}")
        ok = sent.value == out.value == relayed and exit_code == 0 and not errors
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
