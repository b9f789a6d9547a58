"""Relay throughput: smtp-source -> relist -> smtp-sink beside smtp-source -> smtp-sink.

Run by hand (not part of the test suite):

    .venv/bin/python bench/bench_relay.py [--messages 20000] [--sessions 4] [--size 4096]
                                          [--recipients 1] [--workers 2] [--config conf.toml]
                                          [--resign [--sign-once]]

Postfix's load tools come from the Debian package ``postfix``.  Both paths run in
the same invocation, so the direct figure shows the load generator's headroom on
this machine.  relist's CPU time (all its processes) is read from /proc.  relist logs at
``info`` (one line per message, as deployed); the log also gives how many messages
each worker process relayed, printed at the end (an uneven split idles a core).  With
``--config`` the given file's lists/keys are used (e.g. to benchmark re-signing);
listen/upstream/store are always overridden.  Everything binds 127.0.0.1 and stops
by itself.

``--resign`` is issue 5's end-to-end figure: the bench generates a poster key and
list keys, publishes them (and ``_dmarc.poster.example``, p=none) on the loopback DNS,
writes a post of ``--size`` bytes signed by the poster (rsa-sha256, by dkimpy), and
configures the list in re-sign mode with a footer, a Subject prefix, an rsa-sha256
signature and an ARC seal.  smtp-source sends that file (``-F``) for every message,
so relist verifies the poster signature and DMARC, transforms, signs and seals each
one; ``sign_once`` is off unless ``--sign-once`` is given (identical bytes would
otherwise be signed once and reused, which is the feature, not the per-post cost).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from relist.sandbox.dnsserver import DNSServer  # noqa: E402


_STOPPED = re.compile(r"relist\[\d+\]: stop(?:ping|ped)\b[^{]*\{'messages': ")
_RELAYED = re.compile(r"relist\[(\d+)\]: \S+: message-id=")


def tools_missing(tools=("smtp-source", "smtp-sink")) -> bool:
    """True, after saying which, when Postfix's load tools are not installed."""
    missing = [tool for tool in tools if not shutil.which(tool)]
    for tool in missing:
        print(f"{tool} not found: apt-get install postfix", file=sys.stderr)
    return bool(missing)


def start_sink(port: int, backlog: int = 1024) -> subprocess.Popen:
    """Postfix's smtp-sink on 127.0.0.1:``port`` (8BITMIME offered, as nobody when root),
    listening once this returns."""
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    sink = subprocess.Popen(["smtp-sink", *user, "-c", "-8", f"127.0.0.1:{port}", str(backlog)],
                            stdout=subprocess.DEVNULL)
    wait_port(port)
    return sink


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 15) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listening on {port}")


def cpu_seconds(pid: int) -> float:
    """utime+stime of ``pid`` and all its live descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    try:
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        pids += [int(c) for c in children]
    except FileNotFoundError:
        pass
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (FileNotFoundError, IndexError):
            pass
    return total


def source(port: int, args) -> float:
    content = ["-F", args.post_file] if getattr(args, "post_file", None) else ["-l", str(args.size)]
    cmd = ["smtp-source", "-d", "-s", str(args.sessions), "-m", str(args.messages), *content,
           "-f", "bench-bounces@lists.example.org", "-t", "member@example.com",
           "-r", str(args.recipients), "-M", "mailman.bench", f"127.0.0.1:{port}"]
    started = time.monotonic()
    subprocess.run(cmd, check=True, timeout=args.timeout)
    return time.monotonic() - started


def measured(port: int, pid: int, args) -> tuple[float, float]:
    """(seconds, CPU seconds of ``pid`` and its children) of one smtp-source run of
    ``args`` into ``port``, after a warm-up of 200 messages."""
    source(port, argparse.Namespace(**{**vars(args), "messages": 200}))
    cpu0 = cpu_seconds(pid)
    took = source(port, args)
    return took, cpu_seconds(pid) - cpu0


def signed_post(size: int, poster_key) -> bytes:
    """A text/plain post of about ``size`` bytes to bench@lists.example.org, signed by
    poster.example/s1 (rsa-sha256, by dkimpy), CRLF line endings."""
    import dkim

    from relist.core.sign.signing_keys import private_pem
    line = b"The quick brown fox jumps over the lazy dog, and then over the list.\r\n"
    head = (b"From: Poster <poster@poster.example>\r\nTo: bench@lists.example.org\r\n"
            b"Subject: Benchmark post\r\nDate: Sat, 21 Nov 2026 10:00:00 +0000\r\n"
            b"Message-ID: <bench-1@poster.example>\r\nList-Id: <bench.lists.example.org>\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")
    post = head + line * max(1, (size - len(head)) // len(line))
    return dkim.sign(post, b"s1", b"poster.example", private_pem(poster_key),
                     include_headers=[b"from", b"to", b"subject", b"date", b"message-id",
                                      b"content-type"]) + post


def resign_setup(tmp: Path, size: int) -> tuple[str, dict, str]:
    """(config TOML, DNS zone, post file) for the end-to-end re-sign benchmark."""
    from relist.core.sign.signing_keys import dns_record
    from relist.edge.key_files import generate, write_private_key
    from relist.sandbox.dnsserver import split_txt

    list_key, poster_key = generate("rsa"), generate("rsa")
    key_path = write_private_key(tmp / "bench.key", list_key)
    zone = {"bench._domainkey.lists.example.org": [split_txt(dns_record(list_key))],
            "s1._domainkey.poster.example": [split_txt(dns_record(poster_key))],
            "_dmarc.poster.example": ["v=DMARC1; p=none"]}
    post_file = tmp / "post.eml"
    # smtp-source -F appends CRLF to each line: give it LF lines.
    post_file.write_bytes(signed_post(size, poster_key).replace(b"\r\n", b"\n"))
    config = "\n".join([
        '[lists."bench@lists.example.org"]', 'mode = "resign"', 'footer = "-- \\n{list_name} list\\n"',
        'subject_prefix = "[{list_name}] "', 'selector = "bench"', f'private_key = "{key_path}"',
        "arc_seal = true", 'dmarc_mitigation = "munge_from"']) + "\n"
    return config, zone, str(post_file)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--recipients", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--config", help="a relist.toml whose lists/keys to use")
    ap.add_argument("--timeout", type=int, default=600)
    ap.add_argument("--zone", help="JSON {name: [TXT...]} served by the loopback DNS server")
    ap.add_argument("--resign", action="store_true",
                    help="end-to-end re-sign: signed post, verify, footer, prefix, DKIM, ARC (see above)")
    ap.add_argument("--sign-once", action="store_true", help="with --resign: keep [server] sign_once on")
    args = ap.parse_args()
    if tools_missing():
        return 2
    with tempfile.TemporaryDirectory(prefix="relist-bench-") as tmp:
        sink_port, relist_port = free_port(), free_port()
        sink = start_sink(sink_port)
        base = Path(args.config).read_text() if args.config else ""
        zone = json.loads(Path(args.zone).read_text()) if args.zone else {}
        sign_once = args.sign_once or not args.resign
        if args.resign:
            base, extra, args.post_file = resign_setup(Path(tmp), args.size)
            zone.update(extra)
        conf = Path(tmp) / "relist.toml"
        # DNS for verification and DMARC comes from a loopback server (never the network).
        dns_server = DNSServer(zone).start()
        conf.write_text(_override(base, relist_port, sink_port, Path(tmp) / "relist.db", args.workers,
                                  dns_server.nameserver, sign_once))
        relist = subprocess.Popen([sys.executable, "-m", "relist", "serve", "-c", str(conf)],
                                  stderr=open(Path(tmp) / "relist.log", "w"))
        try:
            wait_port(relist_port)
            direct = source(sink_port, args)
            through, cpu = measured(relist_port, relist.pid, args)
        finally:
            relist.send_signal(signal.SIGTERM)
            relist.wait(30)
            sink.terminate()
            sink.wait(10)
            dns_server.stop()
        n = args.messages
        size = Path(args.post_file).stat().st_size if getattr(args, "post_file", None) else args.size
        print(f"messages={n} size={size} sessions={args.sessions} recipients={args.recipients} "
              f"workers={args.workers}" + (f" resign sign_once={sign_once}" if args.resign else ""))
        print(f"direct  smtp-source -> smtp-sink:          {n / direct:8.0f} msgs/s")
        print(f"through smtp-source -> relist -> smtp-sink: {n / through:8.0f} msgs/s   "
              f"relist CPU {cpu * 1000 / n:.3f} ms/msg")
        if args.resign:
            # What relist did to the last message, from its store: proof the work was done.
            import sqlite3
            row = sqlite3.connect(Path(tmp) / "relist.db").execute(
                "SELECT steps, reply FROM transactions ORDER BY rowid DESC LIMIT 1").fetchone()
            if row is None:
                print("no transaction recorded!")
            else:
                for note in json.loads(row[0]):
                    if note["step"] in ("verify", "footer", "subject-prefix", "sign", "arc-seal",
                                        "sign-cache"):
                        print(f"  last message: {note['step']:<15} {note['action']:<8} {note['detail'][:90]}")
        log_lines = (Path(tmp) / "relist.log").read_text().splitlines()
        # Which worker relayed how many (warm-up included): an uneven split means idle cores.
        share = collections.Counter(m.group(1) for m in map(_RELAYED.search, log_lines) if m)
        print("  messages per worker process: "
              + ", ".join(f"{pid}: {n}" for pid, n in sorted(share.items())))
        # The "stopping: ...; {... 'errors': 0}" and "stopped: {...}" counters lines name no error.
        errors = [line for line in log_lines
                  if ("error" in line.lower() and not _STOPPED.search(line)) or "Traceback" in line]
        if errors:
            print(f"relist logged {len(errors)} error line(s), first: {errors[0]}")
    return 0


def _override(base: str, port: int, sink_port: int, db: Path, workers: int, nameserver: str,
              sign_once: bool = True) -> str:
    """Append the bench's own [server]/[upstream]/[store]/[dns]/[log] to ``base``."""
    import tomllib
    data = tomllib.loads(base) if base else {}
    for section in ("server", "upstream", "store", "log", "dns"):
        data.pop(section, None)
    lines = [
        "[server]", f'listen = "127.0.0.1:{port}"', f"workers = {workers}", 'hostname = "relist.bench"',
        f"sign_once = {'true' if sign_once else 'false'}",
        "[upstream]", f"port = {sink_port}",
        "[store]", f'path = "{db}"',
        "[log]", 'level = "info"',   # as deployed: one log line per message
        "[dns]", f'nameservers = ["{nameserver}"]',
    ]
    return "\n".join(lines) + "\n" + _dump(data)


def _dump(data: dict, prefix: str = "") -> str:
    out = []
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    if prefix and scalars:
        out.append(f"[{prefix}]")
    for k, v in scalars.items():
        out.append(f"{k} = {_toml(v)}")
    for k, v in tables.items():
        name = f'{prefix}."{k}"' if prefix == "lists" else (f"{prefix}.{k}" if prefix else k)
        out.append(_dump(v, name))
    return "\n".join(out)


def _toml(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


if __name__ == "__main__":
    raise SystemExit(main())
