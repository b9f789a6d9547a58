"""SQLite store: one row per transaction, written off the event loop.

The record is secondary to delivery: a store failure (locked database, full disk)
is logged and counted, and mail keeps flowing.  All writes go through one
dedicated thread that owns the connection (sqlite3 connections are thread-affine)
and commits in batches; the event loop only puts records on a queue.

The schema is versioned with ``PRAGMA user_version``; ``MIGRATIONS[i]`` takes a
database from version ``i`` to ``i + 1``.  Never edit a released migration: append.
"""

from __future__ import annotations

import json
import zlib
import logging
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from relist.core.model import Record, Reply

__all__ = ["MIGRATIONS", "Store", "connect", "record_row", "verdict_rows"]

log = logging.getLogger("relist.store")

MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: transactions
    """
    CREATE TABLE transactions (
        relist_id     TEXT PRIMARY KEY,
        time          TEXT NOT NULL,            -- ISO 8601, UTC
        client_ip     TEXT NOT NULL,
        client_helo   TEXT NOT NULL,
        mail_from     TEXT NOT NULL,
        rcpt_tos      TEXT NOT NULL,            -- JSON list
        message_id    TEXT NOT NULL,
        list_address  TEXT,
        size_in       INTEGER NOT NULL,
        size_out      INTEGER NOT NULL,
        steps         TEXT NOT NULL,            -- JSON list of {step, action, detail}
        facts         TEXT NOT NULL DEFAULT '{}', -- JSON: what the steps learned
        relist_reply  TEXT,                     -- relist's own refusal, if any
        upstream      TEXT NOT NULL DEFAULT '{}', -- JSON {recipient: "code enhanced text"} + "DATA"
        reply         TEXT NOT NULL DEFAULT '', -- the final reply given to the client
        duration_ms   REAL NOT NULL DEFAULT 0
    );
    CREATE INDEX transactions_message_id ON transactions(message_id);
    CREATE INDEX transactions_list_time ON transactions(list_address, time);
    """,
    # 1 -> 2: what verification found (relist.core.auth.Verdict), one row per
    # signature (DKIM, DomainKeys, ARC AMS and AS) and one per message for DMARC/ARC.
    """
    CREATE TABLE signatures (
        relist_id        TEXT NOT NULL,
        idx              INTEGER NOT NULL,      -- order within the message's verdict
        kind             TEXT NOT NULL,         -- dkim | dk | arc (AMS) | arc-seal
        domain           TEXT NOT NULL,
        selector         TEXT NOT NULL,
        algorithm        TEXT NOT NULL,
        canonicalization TEXT NOT NULL,
        headers          TEXT NOT NULL,         -- h= joined with ':'
        body_length      INTEGER,               -- l=
        key_bits         INTEGER,
        result           TEXT NOT NULL,         -- RFC 8601 result word
        reason           TEXT NOT NULL,
        body_hash_ok     INTEGER,               -- 1, 0 or NULL (not computed)
        header_hash_ok   INTEGER,
        instance         INTEGER,               -- ARC i=
        PRIMARY KEY (relist_id, idx)
    );
    CREATE INDEX signatures_domain ON signatures(domain, result);
    CREATE TABLE verdicts (
        relist_id       TEXT PRIMARY KEY,
        from_domain     TEXT NOT NULL,
        dmarc_result    TEXT NOT NULL,
        dmarc_policy    TEXT NOT NULL,          -- none | quarantine | reject | ''
        dmarc_testing   INTEGER NOT NULL,       -- t=y
        dmarc_domain    TEXT NOT NULL,          -- where the record was found
        dmarc_record    TEXT NOT NULL,
        dmarc_alignment TEXT NOT NULL,          -- JSON list of alignment details
        dmarc_reason    TEXT NOT NULL,
        arc_cv          TEXT NOT NULL,
        arc_oldest_pass INTEGER,
        arc_reason      TEXT NOT NULL
    );
    CREATE INDEX verdicts_dmarc ON verdicts(from_domain, dmarc_result)
    """,
    # 2 -> 3: the ingress leg's copies of posts, for the egress path to recognise and
    # repair them (relist.core.ingress); deleted after [ingress] retention_days.
    """
    CREATE TABLE ingress_posts (
        relist_id     TEXT PRIMARY KEY,
        time          TEXT NOT NULL,
        expires       REAL NOT NULL,            -- Unix time
        message_id    TEXT NOT NULL,
        fingerprint   TEXT NOT NULL,
        raw           BLOB NOT NULL             -- zlib-compressed post as received
    );
    CREATE INDEX ingress_posts_message_id ON ingress_posts(message_id);
    CREATE INDEX ingress_posts_expires ON ingress_posts(expires);
    """,
)


def connect(path: str | Path) -> sqlite3.Connection:
    """Open (creating and migrating) the database at ``path``."""
    path = Path(path)
    if str(path) != ":memory:":
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=5, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    migrate(conn)
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise RuntimeError(f"database schema version {version} is newer than this relist "
                           f"({len(MIGRATIONS)}); refusing to touch it")
    while version < len(MIGRATIONS):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while we waited for the lock.
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            if current == version:
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def _jsonable(value: Any) -> Any:
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def record_row(record: Record, upstream: dict[str, Reply], reply: Reply | None,
               duration_ms: float) -> tuple:
    env = record.envelope
    return (
        record.relist_id,
        record.time.isoformat(),
        env.client_ip,
        env.client_helo,
        env.mail_from,
        json.dumps(list(env.rcpt_tos)),
        record.message_id,
        record.list_address,
        record.size_in,
        record.size_out,
        json.dumps([n.as_dict() for n in record.steps]),
        json.dumps({k: _jsonable(v) for k, v in record.extra}),
        record.reply.line() if record.reply else None,
        json.dumps({k: r.line() for k, r in upstream.items()}),
        reply.line() if reply else "",
        round(duration_ms, 3),
    )


def _flag(value: bool | None) -> int | None:
    return None if value is None else int(bool(value))


def verdict_rows(record: Record) -> tuple[list[tuple], tuple | None]:
    """(signature rows, verdict row) from ``record.verdict`` (none when not verified)."""
    verdict = record.verdict
    if verdict is None or not hasattr(verdict, "signatures"):
        return [], None
    sigs = list(verdict.signatures)
    for arc_set in verdict.arc.sets:
        sigs.extend(s for s in (arc_set.ams, arc_set.seal) if s is not None)
    rows = [(record.relist_id, idx, s.kind, s.domain, s.selector, s.algorithm,
             s.canonicalization, ":".join(s.headers), s.body_length, s.key_bits, str(s.result),
             s.reason, _flag(s.body_hash_ok), _flag(s.header_hash_ok), s.instance)
            for idx, s in enumerate(sigs)]
    d, a = verdict.dmarc, verdict.arc
    row = (record.relist_id, verdict.from_domain, d.result, d.policy, int(d.testing),
           d.policy_domain, d.record, json.dumps([x.as_dict() for x in d.alignment]), d.reason,
           a.cv, a.oldest_pass, a.reason)
    return rows, row


_INSERT = "INSERT OR REPLACE INTO transactions VALUES (" + ",".join("?" * 16) + ")"
_INSERT_SIGNATURE = "INSERT OR REPLACE INTO signatures VALUES (" + ",".join("?" * 15) + ")"
_INSERT_INGRESS = "INSERT OR REPLACE INTO ingress_posts VALUES (?,?,?,?,?,?)"
_INSERT_VERDICT = "INSERT OR REPLACE INTO verdicts VALUES (" + ",".join("?" * 12) + ")"


class Store:
    """Asynchronous writer: ``save()`` never blocks and never raises."""

    def __init__(self, path: str | Path, *, batch: int = 256):
        self.path = path
        self.batch = batch
        self.failures = 0
        self.written = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="relist-store", daemon=True)
        self._conn = connect(path)  # fail loudly at start-up, not per message
        self._local = threading.local()
        self._thread.start()

    def wait_handled(self, n: int, timeout: float = 10) -> bool:
        """Wait until the writer thread has handled ``n`` items (written or failed), at
        most ``timeout`` seconds; True if it has.  For the demo and tests, which read
        the database right after sending mail; the relay itself never waits."""
        deadline = time.monotonic() + timeout
        while self.written + self.failures < n:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def save(self, record: Record, upstream: dict[str, Reply], reply: Reply | None,
             duration_ms: float) -> None:
        try:
            self._queue.put((record_row(record, upstream, reply, duration_ms),
                             *verdict_rows(record)))
        except Exception:  # noqa: BLE001 - the record is secondary to delivery
            self.failures += 1
            log.exception("%s: could not serialise the record", record.relist_id)

    def save_ingress(self, relist_id: str, now: float, time_iso: str, retention: float,
                     message_id: str, fingerprint: str, raw: bytes) -> None:
        """Keep the ingress copy of a post for ``retention`` seconds (written by the
        writer thread, which also deletes expired copies; never blocks)."""
        self._queue.put(("ingress", (relist_id, time_iso, now + retention, message_id, fingerprint,
                                     zlib.compress(raw, 1)), now))

    def ingress_candidates(self, message_id: str, now: float) -> list[tuple[str, bytes]]:
        """Unexpired ingress copies with this Message-ID: [(relist_id, raw)].

        Blocking (call it in a thread); uses its own read connection per thread, so
        it never waits for the writer (WAL).
        """
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = sqlite3.connect(str(self.path), timeout=5, check_same_thread=True)
        rows = conn.execute("SELECT relist_id, raw FROM ingress_posts WHERE message_id = ? AND expires > ? "
                            "ORDER BY time DESC LIMIT 20", (message_id, now)).fetchall()
        return [(rid, zlib.decompress(raw)) for rid, raw in rows]

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                break
            rows = [item]
            stop = False
            while len(rows) < self.batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                rows.append(nxt)
            self._write(rows)
            if stop:
                break
        self._conn.close()

    def _write(self, items: list[tuple]) -> None:
        ingress = [item[1] for item in items if item[0] == "ingress"]
        now = max((item[2] for item in items if item[0] == "ingress"), default=0)
        rows = [item for item in items if item[0] != "ingress"]
        conn = self._conn
        try:
            conn.execute("BEGIN")
            try:
                if ingress:
                    conn.executemany(_INSERT_INGRESS, ingress)
                    conn.execute("DELETE FROM ingress_posts WHERE expires < ?", (now,))
                conn.executemany(_INSERT, [r[0] for r in rows])
                conn.executemany(_INSERT_SIGNATURE, [s for r in rows for s in r[1]])
                conn.executemany(_INSERT_VERDICT, [r[2] for r in rows if r[2] is not None])
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self.written += len(items)
        except sqlite3.Error as exc:
            self.failures += len(items)
            log.error("store: %d record(s) not written (%s); mail is not affected; "
                      "ids: %s", len(items), exc,
                      ",".join(str(i[1][0] if i[0] == "ingress" else i[0][0]) for i in items[:10]))

    def close(self, timeout: float = 10) -> None:
        """Flush what is queued and stop the writer thread."""
        self._queue.put(None)
        self._thread.join(timeout)
