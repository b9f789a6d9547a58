"""Worker processes share the client connections (``relist serve`` with workers = 2).

Mailman holds a few SMTP connections open for a long time; if the kernel hands them
all to one worker, the other core idles.  relist's workers accept by load
(relist.workers.Load): a worker accepts only while no other has fewer connections.
This runs the real ``relist serve`` in worker processes and reads, from its log,
which worker (process id) relayed the message sent on each connection.
"""

from __future__ import annotations

import collections
import re
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from relist.workers import Load

ROOT = Path(__file__).resolve().parent.parent


def _wait_log(log: Path, proc, pattern: str, count: int = 1, timeout: float = 20) -> list[str]:
    """The first ``count`` matches of ``pattern`` in relist's log, once they are there."""
    end = time.monotonic() + timeout
    while True:
        text = log.read_text(errors="replace")
        found = re.findall(pattern, text)
        if len(found) >= count:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"relist serve exited with {proc.returncode}:\n{text}")
        assert time.monotonic() < end, text
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(tmp_path, sink_port: int, port: int):
    conf = tmp_path / "relist.toml"
    conf.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
workers = 2
hostname = "relist.test"

[upstream]
host = "127.0.0.1"
port = {sink_port}

[store]
path = "{tmp_path / 'relist.db'}"

[dns]
nameservers = ["127.0.0.1:9"]
timeout = 1
""")
    log = tmp_path / "relist.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "relist", "serve", "-c", str(conf)],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
    return proc, log


@pytest.fixture
def two_workers(tmp_path, sink):
    for attempt in range(3):
        # A port found free may be taken before relist binds it: then relist exits
        # ("Address already in use") and another port is tried.
        port = _free_port()
        proc, log = _start(tmp_path, sink.port, port)
        try:
            _wait_log(log, proc, r"worker \d accepting", count=2)   # both workers up
            break
        except AssertionError:
            proc.kill()
            proc.wait(20)
            if attempt == 2 or "already in use" not in log.read_text(errors="replace"):
                raise
    try:
        yield port, log
    finally:
        proc.terminate()
        proc.wait(20)


def _message(n: int) -> bytes:
    return (f"From: poster@example.com\r\nTo: list@lists.example.org\r\nSubject: {n}\r\n"
            f"Message-ID: <conn-{n}@example.com>\r\n\r\nbody {n}\r\n").encode()


def _worker_of(log: Path, n: int, timeout: float = 10) -> str:
    """The process id in the log line of the message sent on connection ``n``."""
    pattern = re.compile(rf"relist\[(\d+)\]: \S+: message-id=<conn-{n}@example\.com>")
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        m = pattern.search(log.read_text(errors="replace"))
        if m:
            return m.group(1)
        time.sleep(0.05)
    raise AssertionError(f"no log line for connection {n}:\n{log.read_text(errors='replace')[-2000:]}")


@pytest.mark.parametrize("connections, gap", [(2, 0.2), (4, 0.05), (4, 1.5)])
def test_long_lived_connections_are_spread_over_the_workers(two_workers, connections, gap):
    """``gap`` seconds between connections: longer than relist.workers.SPREAD_WAIT, the
    busier worker is back waiting for the socket when the next one comes."""
    port, log = two_workers
    clients = []
    try:
        for n in range(connections):
            c = smtplib.SMTP("127.0.0.1", port, timeout=10)
            c.ehlo("mailman.test")
            clients.append(c)
            time.sleep(gap)
        for n, c in enumerate(clients):
            c.sendmail("list-bounces@lists.example.org", ["member@example.com"], _message(n))
        owners = collections.Counter(_worker_of(log, n) for n in range(connections))
    finally:
        for c in clients:
            c.quit()
    assert sorted(owners.values()) == [connections // 2, connections // 2], owners


def test_load_is_shared_across_a_fork():
    import os
    load = Load(2)
    pid = os.fork()
    if pid == 0:
        load.slot = 1
        load.add(3)
        os._exit(0)
    os.waitpid(pid, 0)
    assert list(load.counts) == [0, 3]
    assert not load.busier()          # slot 0 has fewer than slot 1
    load.add(4)
    assert load.busier()
    load.retire(1)                    # worker 1 exited: never the less busy one again
    assert not load.busier()


_RETAINED = """
import sys
from relist.workers import pin_mmap_threshold

def rss():
    with open("/proc/self/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) * 1024

if sys.argv[1] == "pin":
    assert pin_mmap_threshold()
big = b"x" * (25 << 20)
del big                      # unpinned, glibc now serves blocks up to 25 MiB from its heap
before = rss()
blocks = [b"y" * (1 << 20) for _ in range(20)]   # one post's 1 MiB pieces
keep = [b"z" * 300 for _ in range(1000)]         # small blocks above them on the heap
del blocks
print(rss() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_pinned_mmap_threshold_gives_a_large_posts_memory_back():
    """After a large block is freed, glibc serves the next post's pieces from its heap,
    where they stay resident once freed; relist serve pins the threshold, so they go
    back (relist.workers.pin_mmap_threshold).  The unpinned run shows the check can fail."""
    def retained(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", _RETAINED, mode], capture_output=True, text=True,
                             timeout=60, env={"PATH": "/usr/bin:/bin"})
        assert out.returncode == 0, out.stderr
        return int(out.stdout)
    assert retained("pin") < 4 << 20
    assert retained("no") > 15 << 20


_PIN = "from relist.workers import pin_mmap_threshold as pin; print(pin())"


@pytest.mark.parametrize("env, pinned", [
    ({}, "True"),                                            # the control: nothing set
    ({"MALLOC_MMAP_THRESHOLD_": "65536"}, "False"),
    ({"MALLOC_TRIM_THRESHOLD_": "1048576"}, "False"),
    ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "False"),
])
def test_an_administrators_malloc_settings_are_left_alone(env, pinned):
    out = subprocess.run([sys.executable, "-c", _PIN], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin", **env})
    assert out.stdout.strip() == pinned, out.stderr
