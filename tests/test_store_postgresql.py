"""What only the PostgreSQL backend has: a server that can go away and come back,
several relist processes migrating and expiring one database, PostgreSQL's column
types, the password from a file, and start-up when the database is down
(tests/pgserver.py starts the server; the rest of the store suite runs on both
backends in tests/test_store.py)."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from relist.core.errors import ConfigError
from relist.edge.store import Store, StoreError, check, open_reader
from relist.edge.store import postgresql as pg
from relist.edge.store.migrations import LOCK_EXPIRE, MIGRATIONS
from relist.edge.store.target import Target
from tests.helpers import ROOT, wait_for
from tests.pgserver import PASSWORD
from tests.test_store import REPLY, UPSTREAM, real_record


def admin(url: str):
    return pg.connect(Target("postgresql", url))


def _open(url: str, start, errors) -> None:
    start.wait()
    try:
        Store(url).close()
    except Exception as exc:   # reported to the parent
        errors.put(repr(exc))


def test_instances_starting_together_migrate_once(pg_url):
    ctx = multiprocessing.get_context("fork")
    errors, start = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_open, args=(pg_url, start, errors)) for _ in range(6)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert errors.empty(), errors.get()
    with admin(pg_url) as conn:
        assert conn.execute("SELECT version FROM relist_schema").fetchall() == [(len(MIGRATIONS),)]


def test_postgresql_gets_its_own_column_types(pg_url):
    Store(pg_url).close()
    with admin(pg_url) as conn:
        types = dict(conn.execute(
            "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'public'").fetchall())
        identity = conn.execute("SELECT is_identity FROM information_schema.columns "
                                "WHERE table_name = 'bounces' AND column_name = 'id'").fetchone()[0]
    assert types["ingress_posts.raw"] == "bytea"
    assert types["ingress_posts.expires"] == "double precision"     # a Unix time to the microsecond
    assert types["transactions.duration_ms"] == "double precision"
    assert types["signatures.body_length"] == "bigint"              # a hostile l= does not overflow
    assert types["bounces.id"] == "bigint" and identity == "YES"
    assert types["transactions.facts"] == "text"                    # JSON as text, as on SQLite


def test_expiry_runs_on_one_instance_at_a_time(pg_url):
    store = Store(pg_url)
    try:
        now = time.time()
        store.write_ingress("OLD", now - 7200, "2026-01-01T00:00:00+00:00", 3600, "<old@x>", "fp", b"old")
        with admin(pg_url) as other:   # another instance is expiring
            other.execute("BEGIN")
            assert other.execute("SELECT pg_try_advisory_xact_lock(%s)", (LOCK_EXPIRE,)).fetchone()[0]
            assert store.backend.expire(now) is None
            other.execute("COMMIT")
        assert store.backend.expire(now) == 1
        assert store.ingress_candidates("<old@x>", 0) == []
    finally:
        store.close()


def test_a_database_that_goes_away_costs_records_not_mail_and_says_so_once(pg_server, pg_url, caplog):
    caplog.set_level(logging.INFO, logger="relist.store")
    store = Store(pg_url, linger=0.05)
    try:
        store.save(real_record("BEFORE"), UPSTREAM, REPLY, 1.0)
        assert store.wait_handled(1)
        pg_server.stop_server()
        try:
            started = time.monotonic()
            for i in range(20):
                store.save(real_record(f"DOWN{i:02d}"), UPSTREAM, REPLY, 1.0)
            assert time.monotonic() - started < 1                 # save() never waits
            # The ingress leg's copy: not committed, queued; never more than the pool's wait.
            started = time.monotonic()
            assert not store.write_ingress("ING", time.time(), "t", 3600, "<in@x>", "fp", b"post")
            assert time.monotonic() - started < pg.POOL_WAIT + 2
            assert wait_for(lambda: store.down_since is not None, timeout=20)
            # Known down: the next ones do not even try, and look-ups fail at once.
            started = time.monotonic()
            assert not store.write_ingress("ING2", time.time(), "t", 3600, "<in2@x>", "fp", b"post")
            with pytest.raises(StoreError) as failed:
                store.ingress_candidates("<in@x>", time.time())
            assert failed.value.outage and time.monotonic() - started < 0.5
            time.sleep(1.5)                                       # the writer tries again meanwhile
        finally:
            pg_server.start_server()
        assert wait_for(lambda: store.written == 23, timeout=30), (store.written, store.dropped)
        assert store.down_since is None and store.outages == 1 and store.dropped == 0
        assert [c[0] for c in store.ingress_candidates("<in@x>", 0)] == ["ING"]
    finally:
        store.close()
    with open_reader({"url": pg_url}) as reader:
        assert reader.query("SELECT count(*) FROM transactions WHERE relist_id LIKE ?", ("DOWN%",)) == [(20,)]
    said = [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and r.name.startswith("relist")]
    assert len([m for m in said if "unavailable" in m]) == 1, said
    assert len([m for m in said if "available again" in m]) == 1, said
    assert len(said) == 2, said


def test_a_database_down_at_start_up_is_migrated_when_it_answers(pg_server, pg_url):
    pg_server.stop_server()
    try:
        assert "Connection refused" in check({"url": pg_url})    # relist serve starts anyway
        store = Store(pg_url, linger=0.05)
        assert store.down_since is not None
        store.save(real_record("EARLY"), UPSTREAM, REPLY, 1.0)
    finally:
        pg_server.start_server()
    try:
        assert wait_for(lambda: store.written == 1, timeout=30)
    finally:
        store.close()
    with admin(pg_url) as conn:
        assert conn.execute("SELECT version FROM relist_schema").fetchall() == [(len(MIGRATIONS),)]
        assert conn.execute("SELECT relist_id FROM transactions").fetchall() == [("EARLY",)]


def test_the_password_comes_from_a_file_only_relist_can_read(pg_url, tmp_path, monkeypatch):
    monkeypatch.delenv("PGPASSWORD")
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    section = {"url": pg_url, "password_file": str(secret)}
    assert check(section) == ""
    store = Store(section)
    try:
        assert store.write_ingress("PW", time.time(), "t", 3600, "<pw@x>", "fp", b"post")
    finally:
        store.close()
    with open_reader(section) as reader:
        assert reader.query("SELECT relist_id FROM ingress_posts") == [("PW",)]
    secret.chmod(0o640)
    with pytest.raises(ConfigError, match="accessible by group or others .*chmod 600"):
        check(section)


def test_a_wrong_password_stops_start_up_without_showing_it(pg_url, tmp_path, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "not-the-password")
    with pytest.raises(OSError) as refused:
        check({"url": pg_url})
    assert "password authentication failed" in str(refused.value)
    assert "not-the-password" not in str(refused.value)
    with pytest.raises(OSError, match="does not exist"):
        monkeypatch.setenv("PGPASSWORD", PASSWORD)
        check({"url": pg_url.rsplit("/", 1)[0] + "/no_such_database"})


def test_pool_connections_carry_the_timeouts(pg_url):
    store = Store(pg_url)
    try:
        with store.backend.pool.connection() as conn:
            assert conn.execute("SHOW statement_timeout").fetchone()[0] == "15s"
            assert conn.info.get_parameters().get("application_name") == "relist"
    finally:
        store.close()
    assert "connect_timeout=5" in pg.conninfo(Target("postgresql", pg_url))
    assert "connect_timeout=9" in pg.conninfo(Target("postgresql", pg_url + "?connect_timeout=9"))


def test_environment_password_is_used_when_there_is_no_file(pg_url):
    assert os.environ["PGPASSWORD"] == PASSWORD
    assert check({"url": pg_url}) == ""


def test_relist_bounces_reads_the_shared_store(pg_url, tmp_path):
    store = Store(pg_url)
    bounce = replace(real_record("BOUNCE1"), bounces=(
        ("2026-12-01T12:00:00+00:00", "dev@lists.example.org", "m@example.com", "dmarc", 1, "5.7.1",
         "550 5.7.1 DMARC", "dmarc-text", "<p@x>", None, "poster.example", "mailman", "mx.example.com",
         "BOUNCE1"),))
    store.save(bounce, UPSTREAM, REPLY, 1.0)
    store.close()
    assert store.written == 1
    conf = tmp_path / "relist.toml"
    conf.write_text(f'[store]\nurl = "{pg_url}"\n')
    out = subprocess.run([sys.executable, "-m", "relist", "bounces", "-c", str(conf), "--json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    assert (row["list"], row["cause"], row["permanent"], row["bounce_id"], row["relist_id"]) == (
        "dev@lists.example.org", "dmarc", True, "BOUNCE1", None)


def test_the_diagnostics_never_migrate_a_shared_store(pg_url):
    """relist report/explain/bounces read a shared store as it is: an admin running a
    newer relist during a rolling upgrade must not migrate it under the older
    instances (which would then refuse to start: schema too new)."""
    with pytest.raises(StoreError, match="start relist serve of this version first"):
        open_reader({"url": pg_url, "password_file": ""})
    with admin(pg_url) as conn:
        assert pg.schema_version(conn) == 0          # untouched: no relist schema made
    Store(pg_url).close()                            # relist serve migrates
    with open_reader({"url": pg_url, "password_file": ""}) as reader:
        assert reader.query("SELECT COUNT(*) FROM transactions") == [(0,)]
    with admin(pg_url) as conn:
        conn.execute("UPDATE relist_schema SET version = %s", (len(MIGRATIONS) + 1,))
        conn.commit()
    with pytest.raises(StoreError, match="run the relist that wrote it"):
        open_reader({"url": pg_url, "password_file": ""})
