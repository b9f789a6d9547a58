"""The store's rows and its writer thread (relist.edge.store), on both backends: a real
SQLite file and a real PostgreSQL database (tests/pgserver.py).  Every test that takes
``where`` runs once per backend; ``read`` queries either through ``Reader`` (``?``
placeholders, rows as tuples)."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import replace

import pytest

from relist.core import pipeline
from relist.core.model import Action, Context, Envelope, Reply, StepNote
from relist.edge.store import MIGRATIONS, Reader, Store, record_row, verdict_rows
from relist.edge.store import writer as writer_module
from tests.test_verify_steps import DNS, POLICY
from tests.verify_support import MESSAGE, NOW, facts, sign

UPSTREAM = {"bob@example.net": Reply(250, "2.1.5", "Ok"),
            "DATA bob@example.net": Reply(250, "", "Ok: queued as 4XyZ"),
            "DATA": Reply(452, "4.2.2", "mailbox full\nsecond line \"quoted\" ü")}
REPLY = Reply(250, "2.0.0", "Ok: queued")
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(params=BACKENDS)
def where(request, tmp_path):
    """What ``Store()`` is given: a SQLite file's path, or a fresh PostgreSQL database's url."""
    if request.param == "sqlite":
        return str(tmp_path / "relist.db")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def read(where):
    """``read(sql, params=())``: rows as tuples, through a Reader of its own."""
    readers = []

    def query(sql: str, params: tuple = ()) -> list[tuple]:
        if not readers:
            readers.append(Reader(where))
        return readers[0].query(sql, params)
    yield query
    for r in readers:
        r.close()


def real_record(relist_id: str = "RID1"):
    """The Record the core makes for a signed post (verify, DMARC, the egress steps)."""
    ctx = Context(Envelope("list-bounces@lists.example.org", ("bob@example.net", "ç@example.net"),
                           client_ip="127.0.0.1", client_helo="mailman.test"),
                  POLICY, NOW, relist_id, facts(DNS))
    record = pipeline.process(sign(MESSAGE), ctx).record
    assert record.verdict is not None and len(record.steps) == len(pipeline.step_names())
    return record


def test_json_columns_are_what_json_dumps_writes():
    record = real_record()
    odd = (StepNote("footer", Action.APPLIED, 'non-ASCII ü €, "quotes", back\\slash, tab\t, new\nline'),
           StepNote("footer", Action.SKIPPED, ""), StepNote("new-step", Action.RECORDED, "\x00\x7f"))
    record = replace(record, steps=record.steps + odd, reply=Reply(451, "4.3.0", "one\ntwo"),
                     findings=replace(record.findings, repairs=("Subject: \u00fc \"q\"",),
                                      internal_error="x\x00"))
    row = record_row(record, UPSTREAM, REPLY, 1.23456)
    assert json.loads(row[5]) == list(record.envelope.rcpt_tos)
    assert row[5] == json.dumps(list(record.envelope.rcpt_tos))
    assert row[10] == json.dumps([n.as_dict() for n in record.steps])
    assert row[11] == json.dumps({"needs_8bitmime": False, "repairs": ["Subject: \u00fc \"q\""],
                                  "breakage": ["example.com/sel: survived"], "internal_error": "x\x00"})
    assert row[12] == record.reply.line()
    assert row[13] == json.dumps({k: r.line() for k, r in UPSTREAM.items()})
    assert (row[14], row[15]) == (REPLY.line(), 1.235)
    sigs, verdict = verdict_rows(record)
    d = record.verdict.dmarc
    assert d.alignment and verdict[7] == json.dumps([a.as_dict() for a in d.alignment])


def test_rows_answer_the_diagnostics_queries(where, read):
    store = Store(where)
    record = real_record("HM4VYYP0N593")
    store.save(record, UPSTREAM, REPLY, 12.5)
    store.close()
    assert (store.written, store.failures, store.dropped) == (1, 0, 0)
    (steps,) = read("select steps from transactions where relist_id = 'HM4VYYP0N593'")[0]
    assert [(n["step"], n["action"], n["detail"]) for n in json.loads(steps)] == [
        (n.step, str(n.action), n.detail) for n in record.steps]
    assert read("select relist_id, list_address from transactions where message_id = ?",
                (record.message_id,)) == [("HM4VYYP0N593", record.list_address)]
    assert read("select kind, domain, selector, result from signatures where relist_id = 'HM4VYYP0N593'"
                ) == [("dkim", "example.com", "sel", "pass")]
    assert read("select from_domain, dmarc_result, dmarc_policy, arc_cv from verdicts") == [
        ("example.com", "pass", "reject", "none")]
    (facts_json, upstream, size_in, duration), = read("select facts, upstream, size_in, duration_ms "
                                                      "from transactions")
    assert json.loads(facts_json)["breakage"] == ["example.com/sel: survived"]
    assert json.loads(upstream)["DATA"] == UPSTREAM["DATA"].line()
    assert (size_in, duration) == (record.size_in, 12.5)


def test_sqlite_rows_answer_the_json_queries_of_docs_diagnostics(tmp_path):
    store = Store(tmp_path / "relist.db")
    record = real_record("HM4VYYP0N593")
    store.save(record, UPSTREAM, REPLY, 12.5)
    store.close()
    db = sqlite3.connect(tmp_path / "relist.db")
    notes = db.execute("select json_extract(s.value, '$.step'), json_extract(s.value, '$.action'), "
                       "json_extract(s.value, '$.detail') from transactions, json_each(transactions.steps) s "
                       "where relist_id = 'HM4VYYP0N593'").fetchall()
    assert notes == [(n.step, str(n.action), n.detail) for n in record.steps]
    assert db.execute("select b.value from transactions, json_each(json_extract(facts, '$.breakage')) b"
                      ).fetchall() == [("example.com/sel: survived",)]


def transactions_of(store: Store) -> list[int]:
    """Count the writer's transactions (each ``backend.write`` is one)."""
    count = [0]
    real = store.backend.write

    def counting(tables):
        count[0] += 1
        return real(tables)
    store.backend.write = counting
    return count


def test_close_writes_what_is_queued_without_waiting_for_the_linger(where, read):
    store = Store(where, linger=600)
    for i in range(3):
        store.save(real_record(f"R{i}"), UPSTREAM, REPLY, 1.0)
    store.close(timeout=30)
    assert not store._thread.is_alive()
    assert (store.written, store.failures) == (3, 0)
    assert [r[0] for r in read("select relist_id from transactions order by 1")] == ["R0", "R1", "R2"]


def save_records(store: Store, n: int, prefix: str = "R") -> None:
    """``n`` copies of ``real_record()``, each with its own relist id (PREFIX + number)."""
    record = real_record()
    for i in range(n):
        store.save(replace(record, relist_id=f"{prefix}{i:05d}"), UPSTREAM, REPLY, 1.0)


def test_records_are_written_in_few_transactions(where, read):
    # The writer lingers 60 s for more records; a full batch and close() cut that short.
    store = Store(where, batch=256, linger=60)
    commits = transactions_of(store)
    save_records(store, 300)
    store.close()
    assert not store._thread.is_alive()
    assert (store.written, store.failures) == (300, 0)
    # One per full batch, one for what arrived while it was written, one at close().
    assert 1 < commits[0] <= 3
    assert read("select count(*), count(distinct relist_id) from transactions") == [(300, 300)]
    assert read("select count(*) from signatures") == [(300,)]
    assert read("select count(*) from verdicts") == [(300,)]


def test_wait_handled_and_save_ingress_do_not_wait_for_the_linger(where):
    store = Store(where, linger=600)
    try:
        store.save(real_record(), UPSTREAM, REPLY, 1.0)
        assert store.wait_handled(1, timeout=20)
        now = time.time()
        store.save_ingress("ING1", now, "2026-01-01T00:00:00+00:00", 3600, "<m@x>", "fp", b"raw post\r\n")
        assert store.wait_handled(2, timeout=20)
        assert store.ingress_candidates("<m@x>", now) == [("ING1", b"raw post\r\n")]
    finally:
        store.close()


def test_an_ingress_copy_is_committed_before_write_ingress_returns(where):
    """The ingress leg of one relist writes the copy; the egress path of another relist
    sharing the store (its own Store, its own connections) finds it at once."""
    a, b = Store(where, linger=600), Store(where, linger=600)
    try:
        now = time.time()
        raw = b"Message-ID: <shared@x>\r\n\r\n" + bytes(range(256)) * 40
        assert a.write_ingress("ING2", now, "2026-01-01T00:00:00+00:00", 3600, "<shared@x>", "fp", raw)
        assert b.ingress_candidates("<shared@x>", now) == [("ING2", raw)]
        assert b.ingress_candidates("<shared@x>", now + 3601) == []      # expired: not offered
        assert a.written == 1
    finally:
        a.close()
        b.close()


def test_egress_of_finds_the_egress_record_not_the_ingress_one(where):
    store = Store(where)
    try:
        record = real_record("EGRESS1")
        # A NUL in a finding (PostgreSQL's JSON functions refuse \u0000) does not stop the look-up.
        record = replace(record, findings=replace(record.findings, internal_error="bug: \x00"))
        ingress = replace(record, relist_id="INGRESS1", findings=replace(record.findings, leg="ingress"))
        store.save(ingress, UPSTREAM, REPLY, 1.0)
        store.save(record, UPSTREAM, REPLY, 1.0)
        assert store.wait_handled(2)
        row = store.egress_of((), record.message_id)
        assert row[:2] == ("EGRESS1", record.list_address) and row[4:] == ("example.com", "reject")
        assert store.egress_of(("INGRESS1",), "") is None
        assert store.egress_of(("NOPE", "EGRESS1"), "")[0] == "EGRESS1"
    finally:
        store.close()


def test_a_record_that_cannot_be_stored_does_not_lose_the_others(where, read):
    store = Store(where, linger=60)
    record = real_record()
    store.save(replace(record, relist_id="GOOD1"), UPSTREAM, REPLY, 1.0)
    store.save(replace(record, relist_id="BAD", steps=("not a step note",)), UPSTREAM, REPLY, 1.0)
    store.save(replace(record, relist_id="GOOD2"), UPSTREAM, REPLY, 1.0)
    store.close()
    assert (store.written, store.failures) == (2, 1)
    assert [r[0] for r in read("select relist_id from transactions order by 1")] == ["GOOD1", "GOOD2"]


def test_save_keeps_the_upstream_replies_as_they_were_when_saved(where, read):
    store = Store(where, linger=60)
    upstream = dict(UPSTREAM)
    store.save(real_record(), upstream, REPLY, 1.0)
    upstream["late@example.net"] = Reply(550, "5.1.1", "changed after save()")
    store.close()
    assert "late@example.net" not in json.loads(read("select upstream from transactions")[0][0])


def test_text_the_database_cannot_take_is_escaped_and_the_writer_lives_on(where, read):
    """8-bit junk in a Message-ID reaches the record as a lone surrogate, which both
    databases refuse (UnicodeEncodeError), and a NUL, which PostgreSQL's text refuses.
    The batch is not lost and the writer thread goes on: those records are stored with
    the character escaped, the others as they are."""
    junk = MESSAGE.replace(b"Message-ID: <", b"Message-ID: <\xff")
    assert junk != MESSAGE
    ctx = Context(Envelope("list-bounces@lists.example.org", ("bob@example.net",)), POLICY, NOW,
                  "JUNK", facts(DNS))
    bad = pipeline.process(junk, ctx).record
    assert "\udcff" in bad.message_id
    nul = replace(real_record("NUL"), message_id="<nul\x00@x>")
    store = Store(where)
    store.save(real_record("GOOD1"), UPSTREAM, REPLY, 1.0)
    store.save(bad, {}, REPLY, 1.0)
    store.save(nul, UPSTREAM, REPLY, 1.0)
    store.save(real_record("GOOD2"), UPSTREAM, REPLY, 1.0)
    assert store.wait_handled(4, timeout=10)
    assert store._thread.is_alive()
    store.save(real_record("LATER"), UPSTREAM, REPLY, 1.0)   # the writer still writes
    store.close()
    assert (store.written, store.failures) == (5, 0)
    rows = dict(read("select relist_id, message_id from transactions"))
    assert set(rows) == {"GOOD1", "JUNK", "NUL", "GOOD2", "LATER"}
    assert "\\udcff" in rows["JUNK"]
    assert rows["NUL"] in ("<nul\x00@x>", "<nul\\x00@x>")     # SQLite keeps it; PostgreSQL escapes it


def test_a_full_queue_drops_records_counts_them_and_never_blocks(where, monkeypatch):
    reported = []
    monkeypatch.setattr(writer_module.metrics, "store_failed", reported.append)
    store = Store(where, max_queue=5, linger=0)
    inside, gate = threading.Event(), threading.Event()
    real = store.backend.write

    def stuck(tables):   # a database that does not keep up
        inside.set()
        gate.wait(30)
        return real(tables)
    store.backend.write = stuck
    try:
        store.save(real_record("FIRST"), UPSTREAM, REPLY, 1.0)
        assert inside.wait(10)
        started = time.monotonic()
        for i in range(40):
            store.save(real_record(f"Q{i}"), UPSTREAM, REPLY, 1.0)
        assert time.monotonic() - started < 5          # save() never waited
        assert store.dropped == 35 and reported == [1] * 35
    finally:
        gate.set()
        store.close()
    assert (store.written, store.dropped, store.failures) == (6, 35, 0)


def test_expired_ingress_copies_are_deleted(where, read):
    store = Store(where, expire_every=0)
    try:
        now = time.time()
        store.save_ingress("OLD", now - 7200, "2026-01-01T00:00:00+00:00", 3600, "<old@x>", "fp", b"old\r\n")
        store.save_ingress("NEW", now, "2026-01-01T00:00:00+00:00", 3600, "<new@x>", "fp", b"new\r\n")
        assert store.wait_handled(2)
        store.save(real_record(), UPSTREAM, REPLY, 1.0)   # a write, then the expiry
        assert store.wait_handled(3)
        deadline = time.monotonic() + 10
        while read("select relist_id from ingress_posts order by 1") != [("NEW",)]:
            assert time.monotonic() < deadline, read("select relist_id from ingress_posts")
            time.sleep(0.05)
    finally:
        store.close()


def test_a_database_from_version_4_gets_the_time_index(where, read):
    """Migration 4 -> 5 on a store an older relist made (tables and version 4)."""
    if where.startswith("postgresql"):
        from relist.edge.store import postgresql as pg
        from relist.edge.store.migrations import statements
        with pg.connect(pg.Target("postgresql", where)) as conn:
            for v in range(4):
                for statement in statements(v, "postgresql"):
                    conn.execute(statement)
            conn.execute("CREATE TABLE relist_schema (version BIGINT NOT NULL)")
            conn.execute("INSERT INTO relist_schema VALUES (4)")
            conn.execute("INSERT INTO ingress_posts VALUES ('OLD', 't', 1.5, '<m>', 'fp', '\\x00'::bytea)")
        indexes = "select indexname from pg_indexes where tablename = 'transactions' order by 1"
    else:
        old = sqlite3.connect(where)
        for v in range(4):
            for statement in MIGRATIONS[v].split(";"):
                if statement.strip():
                    old.execute(statement)
        old.execute("INSERT INTO ingress_posts VALUES ('OLD', 't', 1.5, '<m>', 'fp', x'00')")
        old.execute("PRAGMA user_version = 4")
        old.commit()
        old.close()
        indexes = ("select name from sqlite_master where type = 'index' and tbl_name = 'transactions' "
                   "order by 1")
    Store(where).close()
    assert ("transactions_time",) in read(indexes)
    assert read("select relist_id, expires from ingress_posts") == [("OLD", 1.5)]


def test_a_schema_newer_than_this_relist_is_refused(where):
    Store(where).close()
    if where.startswith("postgresql"):
        from relist.edge.store import postgresql as pg
        with pg.connect(pg.Target("postgresql", where)) as conn:
            conn.execute("UPDATE relist_schema SET version = 99")
    else:
        db = sqlite3.connect(where)
        db.execute("PRAGMA user_version = 99")
        db.close()
    with pytest.raises(RuntimeError, match="schema version 99 is newer"):
        Store(where)


def test_reader_takes_question_mark_placeholders_on_both(where, read):
    store = Store(where)
    store.save(real_record("P1"), UPSTREAM, REPLY, 1.0)
    store.close()
    # A ? and a % inside quotes are text; the other ? are parameters.
    rows = read("select relist_id, '?', 'x%y' from transactions where relist_id = ? and client_ip like ?",
                ("P1", "127.%"))
    assert rows == [("P1", "?", "x%y")]
    assert read("select count(*) from transactions where client_ip like '%.0.0.%'") == [(1,)]
    with Reader(where) as reader:
        assert reader.dialect == ("postgresql" if where.startswith("postgresql") else "sqlite")


def test_close_logs_nothing_when_all_is_written(where, caplog):
    caplog.set_level(logging.DEBUG, logger="relist.store")
    store = Store(where)
    store.save(real_record(), UPSTREAM, REPLY, 1.0)
    store.close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
