"""The store's rows and its writer thread (relist.edge.store), on a real SQLite file."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import replace

from relist.core import pipeline
from relist.core.model import Action, Context, Envelope, Reply, StepNote
from relist.edge.store import Store, record_row, verdict_rows
from tests.test_verify_steps import DNS, POLICY
from tests.test_verify_support import MESSAGE, NOW, facts, sign

UPSTREAM = {"bob@example.net": Reply(250, "2.1.5", "Ok"),
            "DATA bob@example.net": Reply(250, "", "Ok: queued as 4XyZ"),
            "DATA": Reply(452, "4.2.2", "mailbox full\nsecond line \"quoted\" ü")}
REPLY = Reply(250, "2.0.0", "Ok: queued")


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
                     findings=replace(record.findings, repairs=("Subject: \u00fc \"q\"",), internal_error="x\x00"))
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


def test_rows_answer_the_diagnostics_queries(tmp_path):
    store = Store(tmp_path / "relist.db")
    record = real_record("HM4VYYP0N593")
    store.save(record, UPSTREAM, REPLY, 12.5)
    store.close()
    assert (store.written, store.failures) == (1, 0)
    db = sqlite3.connect(tmp_path / "relist.db")
    notes = db.execute("select json_extract(s.value, '$.step'), json_extract(s.value, '$.action'), "
                       "json_extract(s.value, '$.detail') from transactions, json_each(transactions.steps) s "
                       "where relist_id = 'HM4VYYP0N593'").fetchall()
    assert notes == [(n.step, str(n.action), n.detail) for n in record.steps]
    assert db.execute("select relist_id, list_address from transactions where message_id = ?",
                      (record.message_id,)).fetchall() == [("HM4VYYP0N593", record.list_address)]
    assert db.execute("select kind, domain, selector, result from signatures where relist_id = 'HM4VYYP0N593'"
                      ).fetchall() == [("dkim", "example.com", "sel", "pass")]
    assert db.execute("select from_domain, dmarc_result, dmarc_policy, arc_cv from verdicts").fetchall() == [
        ("example.com", "pass", "reject", "none")]
    assert db.execute("select b.value from transactions, json_each(json_extract(facts, '$.breakage')) b"
                      ).fetchall() == [("example.com/sel: survived",)]
    assert json.loads(db.execute("select upstream from transactions").fetchone()[0])["DATA"] == UPSTREAM["DATA"].line()


def commits_of(store: Store) -> list[int]:
    """Count the writer's COMMITs (the trace callback runs on the writer thread)."""
    commits = [0]

    def trace(sql: str) -> None:
        if sql.strip().upper() == "COMMIT":
            commits[0] += 1
    store._conn.set_trace_callback(trace)
    return commits


def test_close_writes_what_is_queued_without_waiting_for_the_linger(tmp_path):
    store = Store(tmp_path / "relist.db", linger=600)
    for i in range(3):
        store.save(real_record(f"R{i}"), UPSTREAM, REPLY, 1.0)
    store.close(timeout=30)
    assert not store._thread.is_alive()
    assert (store.written, store.failures) == (3, 0)
    db = sqlite3.connect(tmp_path / "relist.db")
    assert [r[0] for r in db.execute("select relist_id from transactions order by 1")] == ["R0", "R1", "R2"]


def test_records_are_written_in_few_transactions(tmp_path):
    # The writer lingers 60 s for more records; a full batch and close() cut that short.
    store = Store(tmp_path / "relist.db", batch=256, linger=60)
    commits = commits_of(store)
    record = real_record()
    for i in range(300):
        store.save(replace(record, relist_id=f"R{i:05d}"), UPSTREAM, REPLY, 1.0)
    store.close()
    assert not store._thread.is_alive()
    assert (store.written, store.failures) == (300, 0)
    # One per full batch, one for what arrived while it was written, one at close().
    assert 1 < commits[0] <= 3
    db = sqlite3.connect(tmp_path / "relist.db")
    assert db.execute("select count(*), count(distinct relist_id) from transactions").fetchone() == (300, 300)
    assert db.execute("select count(*) from signatures").fetchone()[0] == 300
    assert db.execute("select count(*) from verdicts").fetchone()[0] == 300


def test_wait_handled_and_save_ingress_do_not_wait_for_the_linger(tmp_path):
    store = Store(tmp_path / "relist.db", linger=600)
    try:
        store.save(real_record(), UPSTREAM, REPLY, 1.0)
        assert store.wait_handled(1, timeout=20)
        # The egress path may ask for an ingress copy at once: it is written at once.
        now = time.time()
        store.save_ingress("ING1", now, "2026-01-01T00:00:00+00:00", 3600, "<m@x>", "fp", b"raw post\r\n")
        deadline = time.monotonic() + 20
        while store.written < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert store.ingress_candidates("<m@x>", now) == [("ING1", b"raw post\r\n")]
    finally:
        store.close()


def test_a_record_that_cannot_be_stored_does_not_lose_the_others(tmp_path):
    store = Store(tmp_path / "relist.db", linger=60)
    record = real_record()
    store.save(replace(record, relist_id="GOOD1"), UPSTREAM, REPLY, 1.0)
    store.save(replace(record, relist_id="BAD", steps=None), UPSTREAM, REPLY, 1.0)
    store.save(replace(record, relist_id="GOOD2"), UPSTREAM, REPLY, 1.0)
    store.close()
    assert (store.written, store.failures) == (2, 1)
    db = sqlite3.connect(tmp_path / "relist.db")
    assert [r[0] for r in db.execute("select relist_id from transactions order by 1")] == ["GOOD1", "GOOD2"]


def test_save_keeps_the_upstream_replies_as_they_were_when_saved(tmp_path):
    store = Store(tmp_path / "relist.db", linger=60)
    upstream = dict(UPSTREAM)
    store.save(real_record(), upstream, REPLY, 1.0)
    upstream["late@example.net"] = Reply(550, "5.1.1", "changed after save()")
    store.close()
    db = sqlite3.connect(tmp_path / "relist.db")
    assert "late@example.net" not in json.loads(db.execute("select upstream from transactions").fetchone()[0])


def test_text_sqlite_cannot_encode_is_escaped_and_the_writer_lives_on(tmp_path):
    """8-bit junk in a Message-ID reaches the record as a lone surrogate, which SQLite
    refuses (UnicodeEncodeError).  The batch is not lost and the writer thread goes on:
    that record is stored with the byte escaped, the others as they are."""
    junk = MESSAGE.replace(b"Message-ID: <", b"Message-ID: <\xff")
    assert junk != MESSAGE
    ctx = Context(Envelope("list-bounces@lists.example.org", ("bob@example.net",)), POLICY, NOW,
                  "JUNK", facts(DNS))
    bad = pipeline.process(junk, ctx).record
    assert "\udcff" in bad.message_id
    store = Store(tmp_path / "relist.db")
    store.save(real_record("GOOD1"), UPSTREAM, REPLY, 1.0)
    store.save(bad, {}, REPLY, 1.0)
    store.save(real_record("GOOD2"), UPSTREAM, REPLY, 1.0)
    assert store.wait_handled(3, timeout=5)
    assert store._thread.is_alive()
    store.save(real_record("LATER"), UPSTREAM, REPLY, 1.0)   # the writer still writes
    store.close()
    assert (store.written, store.failures) == (4, 0)
    db = sqlite3.connect(tmp_path / "relist.db")
    rows = dict(db.execute("select relist_id, message_id from transactions"))
    assert set(rows) == {"GOOD1", "JUNK", "GOOD2", "LATER"}
    assert "\\udcff" in rows["JUNK"]
