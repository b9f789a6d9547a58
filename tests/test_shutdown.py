"""Stopping and supervising ``relist serve`` (issue 11, items 4 and 5), run for real as
a subprocess with 2 workers.

* SIGTERM drains: no new transactions, every transaction in flight gets its final
  reply (the MTA here queues each message and answers only a second later, so a cut
  transaction would be a duplicate when Mailman sends it again), exit 0;
* a second SIGTERM cuts what is left; the drain is bounded by ``data_timeout``;
* a SIGKILL of the parent leaves no worker behind;
* a worker that dies is replaced; with every worker gone relist exits 1;
* an address that cannot be bound is named (exit 2).
"""

from __future__ import annotations

import collections
import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from relist.server import ThreadedServer
from tests.helpers import make_config, wait_for
from tests.test_faults import SENDER, message, message_id

ROOT = Path(__file__).resolve().parent.parent
ACCEPTING = re.compile(r"relist\[(\d+)\]: worker (\d) accepting")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    """``relist serve`` in a subprocess, its log in a file."""

    def __init__(self, tmp_path: Path, sink_port: int, data_timeout: float = 30, workers: int = 2):
        for attempt in range(3):
            # A port found free may be taken before relist binds it: then try another.
            self.port = free_port()
            conf = tmp_path / "relist.toml"
            conf.write_text(f"""
[server]
listen = "127.0.0.1:{self.port}"
workers = {workers}
hostname = "relist.test"
[upstream]
host = "127.0.0.1"
port = {sink_port}
timeout = 5
data_timeout = {data_timeout}
[store]
path = "{tmp_path / 'relist.db'}"
[dns]
nameservers = ["127.0.0.1:9"]
timeout = 1
""")
            self.log_path = tmp_path / "relist.log"
            with open(self.log_path, "wb") as err:
                self.proc = subprocess.Popen([sys.executable, "-m", "relist", "serve", "-c", str(conf)],
                                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
            try:
                self.wait_log(ACCEPTING, workers)
                return
            except AssertionError:
                self.kill()
                if attempt == 2 or "already in use" not in self.log():
                    raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern, count: int = 1, timeout: float = 20, running: bool = True) -> list:
        end = time.monotonic() + timeout
        while True:
            found = re.findall(pattern, self.log())
            if len(found) >= count:
                return found
            if running and self.proc.poll() is not None:
                raise AssertionError(f"relist serve exited with {self.proc.returncode}:\n{self.log()}")
            assert time.monotonic() < end, self.log()
            time.sleep(0.02)

    def workers(self) -> dict[int, int]:
        """slot -> pid of the workers that said they are accepting (latest per slot)."""
        return {int(slot): int(pid) for pid, slot in ACCEPTING.findall(self.log())}

    def signal(self, sig=signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(20)


@pytest.fixture
def serve(tmp_path, sink):
    started = []

    def start(**kwargs) -> Serve:
        s = Serve(tmp_path, sink.port, **kwargs)
        started.append(s)
        return s
    yield start
    for s in started:
        for pid in s.workers().values():      # never leave a worker behind
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        s.kill()


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")     # exited (a zombie until its new parent reaps it)




class Poster(threading.Thread):
    """One Mailman connection sending its messages in turn; a failure (4xx, 421, a
    closed or refused connection) is retried, on whatever port ``target`` names then."""

    def __init__(self, name: str, count: int, target: dict, deadline: float):
        super().__init__(daemon=True)
        self.ids = [f"{name}-{k}" for k in range(count)]
        self.target, self.deadline = target, deadline
        self.acks: list[tuple[str, int, float]] = []      # (message, port, when)
        self.failures: list = []

    def run(self):
        conn = None
        for n in self.ids:
            while time.monotonic() < self.deadline:
                port = self.target["port"]
                try:
                    if conn is None:
                        conn = smtplib.SMTP("127.0.0.1", port, timeout=20)
                        conn.ehlo("mailman.test")
                    conn.sendmail(SENDER, ["a@example.com"], message(n))
                    self.acks.append((n, port, time.monotonic()))
                    break
                except smtplib.SMTPResponseException as exc:
                    self.failures.append((n, exc.smtp_code))
                except smtplib.SMTPRecipientsRefused as exc:
                    self.failures.append((n, next(iter(exc.recipients.values()))[0]))
                except (smtplib.SMTPException, OSError) as exc:
                    self.failures.append((n, type(exc).__name__))
                if conn is not None:
                    conn.close()
                    conn = None
                time.sleep(0.05)
        if conn is not None:
            try:
                conn.quit()
            except (smtplib.SMTPException, OSError):
                pass


def test_sigterm_drains_in_flight_transactions_without_duplicates(serve, sink, tmp_path):
    sink.data_delay = 1.0        # queued at once, answered a second later
    relist = serve()
    idle = smtplib.SMTP("127.0.0.1", relist.port, timeout=20)   # between transactions
    idle.ehlo("mailman.test")
    target = {"port": relist.port}
    posters = [Poster(f"p{i}", 3, target, time.monotonic() + 40) for i in range(6)]
    for p in posters:
        p.start()
    assert wait_for(lambda: sink.in_data >= 4), "transactions never got in flight"
    in_flight = sink.in_data
    signalled = time.monotonic()
    relist.signal(signal.SIGTERM)
    assert relist.wait(15) == 0, relist.log()
    code, text = idle.noop()        # its next command reads the 421 sent at the SIGTERM
    assert code == 421 and b"4.3.2" in text and b"shutting down" in text
    idle.close()
    log = relist.log()
    assert not re.search(r"cut \d+ transaction|cutting|Traceback", log), log
    # The rest goes to a relist started afterwards (as Mailman retries later).
    cfg = make_config(tmp_path, sink.port, store={"path": str(tmp_path / "second.db")})
    with ThreadedServer(cfg) as second:
        target["port"] = second.port
        for p in posters:
            p.join(40)
    acks = [a for p in posters for a in p.acks]
    failures = [f for p in posters for f in p.failures]
    assert all(not isinstance(code, int) or 400 <= code < 500 for _, code in failures), failures
    drained = [a for a in acks if a[1] == relist.port and a[2] > signalled]
    assert len(drained) >= in_flight, (acks, failures)      # every one in flight was answered
    copies = collections.Counter(message_id(m.data) for m in sink.messages)
    sent = [f"<fault-{n}@poster.example>" for p in posters for n in p.ids]
    assert sorted(copies) == sorted(sent), "lost or unknown messages"
    assert max(copies.values()) == 1, {k: v for k, v in copies.items() if v > 1}
    assert len(acks) == len(sent)


def test_second_sigterm_cuts(serve, sink):
    sink.hang_seconds = 60                   # the MTA never answers (and never queues)
    sink.inject("DATA", "hang")
    relist = serve(data_timeout=60)
    errors = []

    def post():
        try:
            with smtplib.SMTP("127.0.0.1", relist.port, timeout=30) as c:
                c.sendmail(SENDER, ["a@example.com"], message("cut"))
        except (smtplib.SMTPException, OSError) as exc:
            errors.append(exc)
    t = threading.Thread(target=post, daemon=True)
    t.start()
    assert wait_for(lambda: "DATA" in sink.commands)
    relist.signal(signal.SIGTERM)
    relist.wait_log(r"stopping: 1 transaction\(s\) in flight")
    started = time.monotonic()
    relist.signal(signal.SIGTERM)
    assert relist.wait(15) == 0, relist.log()
    assert time.monotonic() - started < 10
    t.join(10)
    assert len(errors) == 1 and not isinstance(errors[0], smtplib.SMTPResponseException), errors
    assert re.search(r"cut 1 transaction\(s\) in flight: \w{16}", relist.log())
    assert sink.messages == []               # nothing queued: Mailman's retry is the only copy


def test_drain_is_bounded_by_data_timeout(serve, sink):
    sink.hang_seconds = 60
    sink.inject("DATA", "hang")
    relist = serve(data_timeout=1.5)
    replies = []

    def post():
        try:
            with smtplib.SMTP("127.0.0.1", relist.port, timeout=30) as c:
                c.sendmail(SENDER, ["a@example.com"], message("slow"))
        except smtplib.SMTPResponseException as exc:
            replies.append(exc.smtp_code)
        except (smtplib.SMTPException, OSError) as exc:
            replies.append(type(exc).__name__)
    t = threading.Thread(target=post, daemon=True)
    t.start()
    assert wait_for(lambda: "DATA" in sink.commands)
    relist.signal(signal.SIGTERM)
    assert relist.wait(10) == 0, relist.log()
    t.join(10)
    assert replies == [451]                  # the upstream timeout ended it: Mailman retries
    assert sink.messages == []


def test_sigkill_of_the_parent_leaves_no_worker(serve):
    relist = serve()
    pids = list(relist.workers().values())
    assert len(pids) == 2
    relist.signal(signal.SIGKILL)
    relist.wait(10)
    assert wait_for(lambda: all(gone(pid) for pid in pids), 15), relist.log()
    assert len(re.findall(r"stopped: ", relist.log())) == 2    # each drained and exited


def test_dead_worker_is_replaced_and_all_gone_exits_1(serve, sink):
    relist = serve()
    first = relist.workers()
    os.kill(first[0], signal.SIGKILL)
    relist.wait_log(r"worker 0 \(pid \d+\) exited with signal SIGKILL after \d+ s; 1 worker\(s\) "
                    r"still serving; replacing it in 1 s")
    relist.wait_log(ACCEPTING, 3)
    now = relist.workers()
    assert now[0] != first[0] and now[1] == first[1]
    with smtplib.SMTP("127.0.0.1", relist.port, timeout=10) as c:
        assert c.sendmail(SENDER, ["a@example.com"], message("after")) == {}
    for pid in now.values():
        os.kill(pid, signal.SIGKILL)
    assert relist.wait(15) == 1
    assert "no worker is left: relist exits (status 1)" in relist.log()


def test_bind_error_names_the_address(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        conf = tmp_path / "relist.toml"
        conf.write_text(f'[server]\nlisten = "127.0.0.1:{port}"\nworkers = 2\n'
                        f'[store]\npath = "{tmp_path / "relist.db"}"\n')
        out = subprocess.run([sys.executable, "-m", "relist", "serve", "-c", str(conf)], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in out.stderr
    assert "Traceback" not in out.stderr
