"""The SQLite writer inserts a batch with multi-row INSERT statements, not a statement
per row (issue 17): Python's sqlite3 hands the GIL over around every statement step,
and a step per row made the writer thread and the event loop trade it for every
row.  These pin the statements (counted with SQLite's trace callback) and that the
rows are the ones executemany wrote: every row, duplicates resolved as before, under
a small limit on parameters too."""

from __future__ import annotations

import sqlite3
from dataclasses import replace

from relist.edge.store import Store
from relist.edge.store import sqlite as sqlite_backend
from relist.edge.store.rows import record_row, verdict_rows
from tests.test_store import REPLY, UPSTREAM, real_record, save_records


def _traced(store: Store) -> list[str]:
    """The INSERT statements the writer's connection runs from now on."""
    seen: list[str] = []
    store.backend.conn.set_trace_callback(
        lambda sql: seen.append(sql) if sql.lstrip().upper().startswith("INSERT") else None)
    return seen


def _count(path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        return conn.execute(f"select count(*) from {table}").fetchone()[0]


def test_a_batch_is_a_few_statements_with_every_row(tmp_path):
    path = str(tmp_path / "relist.db")
    store = Store(path, batch=300, linger=60)
    inserts = _traced(store)
    save_records(store, 300)
    store.close()
    assert (store.written, store.failures) == (300, 0)
    assert (_count(path, "transactions"), _count(path, "signatures"), _count(path, "verdicts")) == \
        (300, 300, 300)
    # 3 tables, at most ROWS_PER_STATEMENT rows a statement, then the rest in powers of
    # two (300 = 256 + 32 + 8 + 4), in at most 3 commits.
    rows = sqlite_backend.ROWS_PER_STATEMENT
    per_table = 300 // rows + bin(300 % rows).count("1")
    assert len(inserts) <= 3 * (per_table + 2), len(inserts)


def test_batches_of_any_length_use_few_statement_texts(tmp_path):
    """A batch's length varies with the traffic: the statements are of a few sizes
    (ROWS_PER_STATEMENT and powers of two), so sqlite3's statement cache keeps them
    prepared instead of parsing a new multi-row INSERT of thousands of ? per batch."""
    backend = sqlite_backend.SQLiteBackend(tmp_path / "relist.db")
    sizes: set[tuple[str, int]] = set()
    backend.conn.set_trace_callback(lambda sql: sizes.add(
        (sql.split()[2], sql.count("),(") + 1)) if sql.lstrip().upper().startswith("INSERT") else None)
    record = real_record()
    tx = record_row(record, UPSTREAM, REPLY, 1.0)
    sigs, verdict = verdict_rows(record)
    written = 0
    for n in range(1, 301):
        ids = [f"N{n}R{i}" for i in range(n)]
        backend.write({"transactions": [(rid,) + tx[1:] for rid in ids],
                       "signatures": [(rid,) + row[1:] for rid in ids for row in sigs],
                       "verdicts": [(rid,) + verdict[1:] for rid in ids]})
        written += n
    backend.close()
    assert _count(tmp_path / "relist.db", "transactions") == written
    per_table = {n for _, n in sizes}
    assert per_table <= {sqlite_backend.ROWS_PER_STATEMENT} | {1 << k for k in range(8)}, sorted(per_table)
    assert len(sizes) <= 3 * 9


def test_a_small_parameter_limit_still_writes_every_row(tmp_path):
    path = str(tmp_path / "relist.db")
    store = Store(path, batch=50, linger=60)
    store.backend.max_variables = 40      # fewer than two transactions rows a statement
    save_records(store, 50, "S")
    store.close()
    assert (store.written, store.failures) == (50, 0)
    assert _count(path, "transactions") == 50 and _count(path, "verdicts") == 50


def test_the_same_key_twice_in_a_batch_keeps_the_later_row(tmp_path):
    path = str(tmp_path / "relist.db")
    store = Store(path, batch=10, linger=60)
    record = real_record()
    store.save(replace(record, relist_id="SAME", message_id="<first@x>"), UPSTREAM, REPLY, 1.0)
    store.save(replace(record, relist_id="SAME", message_id="<second@x>"), UPSTREAM, REPLY, 1.0)
    store.save(replace(record, relist_id="OTHER"), UPSTREAM, REPLY, 1.0)
    store.close()
    with sqlite3.connect(path) as conn:
        rows = conn.execute("select relist_id, message_id from transactions order by 1").fetchall()
    assert rows == [("OTHER", record.message_id), ("SAME", "<second@x>")]
