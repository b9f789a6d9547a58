"""The SQLite backend: one file, WAL mode, shared by the workers of one host.

The writer thread owns one connection (``conn``, opened and migrated at start-up, so a
store that cannot be opened fails loudly then, not per message); every other thread
(the egress path's look-ups, the ingress leg's synchronous copies, both run in
``asyncio.to_thread``) gets its own connection, in autocommit mode, so that a read
never holds a transaction open and never waits for the writer (WAL).
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from pathlib import Path

from .migrations import COLUMNS, MIGRATIONS, SchemaTooNew, statements

__all__ = ["SQLiteBackend", "connect", "migrate"]

BUSY_TIMEOUT = 5    # seconds a statement waits for another writer (sqlite3's busy handler)


def connect(path: str | Path) -> sqlite3.Connection:
    """Open (creating and migrating) the database at ``path``."""
    path = Path(path)
    if str(path) != ":memory:":
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
    # Switching a fresh database to WAL takes an exclusive lock and, unlike other
    # statements, does not wait in the busy handler: two processes opening the same new
    # file at once get "database is locked".  Retry for as long as the busy timeout.
    deadline = time.monotonic() + BUSY_TIMEOUT
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                conn.close()
                raise
            time.sleep(0.01)
    conn.execute("PRAGMA synchronous=NORMAL")
    migrate(conn)
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database to ``len(MIGRATIONS)``, each step under ``BEGIN IMMEDIATE`` (the
    write lock: another process migrating at the same time waits, then finds it done)."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise SchemaTooNew(version)
    while version < len(MIGRATIONS):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while we waited for the lock.
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            if current == version:
                for statement in statements(version, "sqlite"):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def _insert(table: str, replace: bool = True) -> str:
    cols = COLUMNS[table]
    verb = "INSERT OR REPLACE" if replace else "INSERT"
    return f"{verb} INTO {table} ({', '.join(cols)}) VALUES ({','.join('?' * len(cols))})"


INSERT = {table: _insert(table, table != "bounces") for table in COLUMNS}

# Rows per INSERT statement in a batch: each statement is one sqlite3_step, and Python's
# sqlite3 releases and takes back the GIL around every step.  executemany (a step per
# row) made the writer thread and the event loop hand the GIL to each other for every
# row, a context switch each; multi-row VALUES make it one per statement (issue 17).
ROWS_PER_STATEMENT = 256


@functools.lru_cache(maxsize=64)
def _insert_rows(table: str, n: int) -> str:
    """``INSERT[table]`` for ``n`` rows in one statement (VALUES (...),(...)...; for one
    row, ``INSERT[table]`` itself)."""
    one = "(" + ",".join("?" * len(COLUMNS[table])) + ")"
    return INSERT[table].rsplit(" VALUES ", 1)[0] + " VALUES " + ",".join([one] * n)


def _chunks(n: int, step: int):
    """(start, size) of the statements that insert ``n`` rows in order: ``step`` rows
    each, then what is left in powers of two.  So a table has a few statement texts,
    which sqlite3's statement cache keeps prepared; a size per batch (the batch's length
    varies) had each multi-row INSERT parsed again, thousands of ? each time."""
    at = 0
    while at < n:
        left = n - at
        size = step if left >= step else 1 << (left.bit_length() - 1)   # the largest power of two in left
        yield at, size
        at += size


# The egress transaction of a bounced post: the latest one with a list, and what
# verification found of its From domain.  Ingress records carry their list too; their
# facts say leg = "ingress" (relist.core.steps.ingress_list).
EGRESS = ("SELECT t.relist_id, t.list_address, t.steps, t.facts, v.from_domain, v.dmarc_policy "
          "FROM transactions t LEFT JOIN verdicts v ON v.relist_id = t.relist_id "
          "WHERE t.list_address IS NOT NULL "
          "AND json_extract(t.facts, '$.leg') IS NOT 'ingress' AND ")
CANDIDATES = ("SELECT relist_id, raw FROM ingress_posts WHERE message_id = ? AND expires > ? "
              "ORDER BY time DESC LIMIT 20")


class SQLiteBackend:
    """The store's operations on a SQLite file (``relist.edge.store.writer.Store`` drives them)."""

    dialect = "sqlite"

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.conn = connect(path)      # the writer thread's; fails loudly at start-up
        # SQLite's limit on ? parameters in one statement (999 before 3.32, 32766 after,
        # as the build sets it): a multi-row INSERT stays below it.
        self.max_variables = self.conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self._local = threading.local()

    # -- the writer thread ------------------------------------------------------------

    def migrate(self) -> None:
        """Done by ``connect`` at start-up."""

    def ping(self) -> None:
        self.conn.execute("SELECT 1")

    def write(self, tables: dict[str, list[tuple]]) -> None:
        """One transaction: every table's rows (``INSERT OR REPLACE``; bounces inserted)."""
        conn = self.conn
        conn.execute("BEGIN")
        try:
            for table, rows in tables.items():
                step = max(1, min(ROWS_PER_STATEMENT, self.max_variables // len(COLUMNS[table])))
                for at, size in _chunks(len(rows), step):
                    # (rows are inserted in order: a later row replaces an earlier one with
                    # its key, as executemany did)
                    chunk = rows[at:at + size]
                    conn.execute(_insert_rows(table, size), [v for row in chunk for v in row])
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def expire(self, now: float) -> int | None:
        """Delete the ingress copies past their retention: how many (None: not this time)."""
        return self.conn.execute("DELETE FROM ingress_posts WHERE expires < ?", (now,)).rowcount

    def is_outage(self, exc: BaseException) -> bool:
        """SQLite has no server to lose: a failure (locked, disk full) is per batch."""
        return False

    def close(self) -> None:
        self.conn.close()

    # -- any other thread ---------------------------------------------------------------

    def _thread_conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
        return conn

    def write_ingress(self, row: tuple) -> None:
        """Commit one ingress copy now (its own transaction)."""
        self._thread_conn().execute(INSERT["ingress_posts"], row)

    def ingress_candidates(self, message_id: str, now: float) -> list[tuple[str, bytes]]:
        return self._thread_conn().execute(CANDIDATES, (message_id, now)).fetchall()

    def egress_of(self, relist_ids: tuple[str, ...], message_id: str) -> tuple | None:
        conn = self._thread_conn()
        for rid in relist_ids:
            row = conn.execute(EGRESS + "t.relist_id = ?", (rid,)).fetchone()
            if row is not None:
                return row
        if message_id:
            return conn.execute(EGRESS + "t.message_id = ? ORDER BY t.time DESC LIMIT 1",
                                (message_id,)).fetchone()
        return None
