"""Start-up never fails silently: the store is prepared once before the workers fork,
two processes opening a new database at once both succeed, and a store that cannot be
opened stops ``relist serve`` with its reason (exit 2)."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from pathlib import Path

from relist.edge.store import connect

ROOT = Path(__file__).resolve().parent.parent


def _open(path: str, start, errors) -> None:
    start.wait()
    try:
        connect(path).close()
    except Exception as exc:   # reported to the parent
        errors.put(repr(exc))


def test_processes_opening_a_new_database_at_once_all_succeed(tmp_path):
    # "PRAGMA journal_mode=WAL" on a fresh file takes an exclusive lock without waiting
    # in the busy handler; relist's workers used to race on it ("database is locked").
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    for round_ in range(15):
        start = ctx.Event()
        path = str(tmp_path / f"r{round_}.db")
        procs = [ctx.Process(target=_open, args=(path, start, errors)) for _ in range(4)]
        for p in procs:
            p.start()
        start.set()
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
    assert errors.empty(), errors.get()


def test_a_store_that_cannot_be_opened_stops_serve_with_its_reason(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    conf = tmp_path / "relist.toml"
    conf.write_text(f'[server]\nlisten = "127.0.0.1:1"\nworkers = 2\n'
                    f'[store]\npath = "{blocker}/relist.db"\n')
    out = subprocess.run([sys.executable, "-m", "relist", "serve", "-c", str(conf)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "not-a-directory" in out.stderr and "Traceback" not in out.stderr
