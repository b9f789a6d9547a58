"""SQLite store: one row per transaction, written off the event loop.

The record is secondary to delivery: a store failure (locked database, full disk)
is logged and counted, and mail keeps flowing.  All writes go through one
dedicated thread that owns the connection (sqlite3 connections are thread-affine)
and commits in batches; the event loop only puts records on a queue.

The schema is versioned with ``PRAGMA user_version``; ``MIGRATIONS[i]`` takes a
database from version ``i`` to ``i + 1``.  Never edit a released migration: append.
"""

from __future__ import annotations

import enum
import json
import json.encoder
import logging
import queue
import sqlite3
import threading
import time
import zlib
from dataclasses import fields
from pathlib import Path
from typing import Any

from relist.core.model import Record, Reply, StepNote

__all__ = ["MIGRATIONS", "Reader", "Store", "connect", "open_reader", "record_row", "verdict_rows"]

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
    # 3 -> 4: bounces for a list's bounce address (issue 13), one row per failed
    # recipient, tied to the egress transaction of the bounced post when known.
    """
    CREATE TABLE bounces (
        id            INTEGER PRIMARY KEY,
        time          TEXT NOT NULL,            -- ISO 8601, UTC
        list_address  TEXT NOT NULL,
        recipient     TEXT NOT NULL,            -- the member whose delivery failed
        cause         TEXT NOT NULL,            -- dmarc | dkim | spf | auth | mailbox | spam | other
        permanent     INTEGER NOT NULL,
        status        TEXT NOT NULL,            -- enhanced status code, '' when none
        diagnostic    TEXT NOT NULL,
        rule          TEXT NOT NULL,            -- relist.core.bounce.rules row that decided
        message_id    TEXT NOT NULL,            -- of the returned post
        relist_id     TEXT,                     -- egress transaction of the post, NULL: unknown
        poster_domain TEXT NOT NULL,
        action        TEXT NOT NULL,            -- mailman | owner
        remote_mta    TEXT NOT NULL,
        bounce_id     TEXT NOT NULL             -- the ingress transaction of the bounce
    );
    CREATE INDEX bounces_list_time ON bounces(list_address, time);
    CREATE INDEX bounces_relist_id ON bounces(relist_id);
    """,
)


def connect(path: str | Path) -> sqlite3.Connection:
    """Open (creating and migrating) the database at ``path``."""
    path = Path(path)
    if str(path) != ":memory:":
        path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=5, isolation_level=None, check_same_thread=False)
    # Switching a fresh database to WAL takes an exclusive lock and, unlike other
    # statements, does not wait in the busy handler: two processes opening the same new
    # file at once get "database is locked".  Retry for as long as the busy timeout.
    deadline = time.monotonic() + 5
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


_enc = json.encoder.encode_basestring_ascii   # json.dumps's string encoder (ensure_ascii)
_PLAIN = (str, int, float, bool, type(None))


def _jsonable(value: Any) -> Any:
    if type(value) in _PLAIN:
        return value
    if hasattr(value, "as_dict"):
        return value.as_dict()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


# The JSON columns are written exactly as ``json.dumps`` (default separators, ASCII)
# writes them, only cheaper: what is the same in every record is encoded once.
_NOTES_KNOWN = tuple(f.name for f in fields(StepNote)) == ("step", "action", "detail")
_NOTE_HEADS: dict[tuple[str, str], str] = {}


def _steps_json(notes: tuple[StepNote, ...]) -> str:
    """``json.dumps([n.as_dict() for n in notes])``."""
    if not _NOTES_KNOWN:   # StepNote has changed: the plain way
        return json.dumps([n.as_dict() for n in notes])
    heads = _NOTE_HEADS
    parts = []
    for n in notes:
        head = heads.get((n.step, n.action))
        if head is None:
            if len(heads) >= 1024:
                heads.clear()
            head = heads[(n.step, n.action)] = (
                f'{{"step": {_enc(n.step)}, "action": {_enc(str(n.action))}, "detail": ')
        parts.append(head + _enc(n.detail) + "}")
    return "[" + ", ".join(parts) + "]"


def _line(reply: Reply) -> str:
    """``reply.line()`` (one-line replies without its split and join)."""
    text = reply.text
    if "\n" in text:
        return reply.line()
    return f"{reply.code} {reply.enhanced} {text}" if reply.enhanced else f"{reply.code} {text}"


def _upstream_json(upstream: dict[str, Reply]) -> str:
    """``json.dumps({k: r.line() for k, r in upstream.items()})``."""
    try:
        return "{" + ", ".join(f"{_enc(k)}: {_enc(_line(r))}" for k, r in upstream.items()) + "}"
    except TypeError:   # a key that is not a str: json.dumps's rules
        return json.dumps({k: r.line() for k, r in upstream.items()})


def record_row(record: Record, upstream: dict[str, Reply], reply: Reply | None,
               duration_ms: float) -> tuple:
    env = record.envelope
    return (
        record.relist_id,
        record.time.isoformat(),
        env.client_ip,
        env.client_helo,
        env.mail_from,
        "[" + ", ".join(map(_enc, env.rcpt_tos)) + "]",
        record.message_id,
        record.list_address,
        record.size_in,
        record.size_out,
        _steps_json(record.steps),
        json.dumps({k: _jsonable(v) for k, v in record.extra}),
        _line(record.reply) if record.reply else None,
        _upstream_json(upstream),
        _line(reply) if reply else "",
        round(duration_ms, 3),
    )


def _clean(value: Any) -> Any:
    """``value`` as SQLite can store it: text with lone surrogates escaped."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, tuple):
        return tuple(_clean(v) for v in value)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def _storable(rows: tuple) -> tuple:
    """One item's rows (``Store._rows``) with every text value cleaned."""
    return tuple(_clean(r) for r in rows)


def _ident(row: Any) -> str:
    """The id an item's first row is known by in the log: a relist id, or for a bounce
    row ("bounce " + the ingress relist id, its last column)."""
    if isinstance(row, tuple):
        return f"bounce {row[-1]}"
    return str(row)


def _flag(value: bool | None) -> int | None:
    return None if value is None else int(bool(value))


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _as_dict(value: Any) -> dict[str, Any]:
    """``value.as_dict()`` for the auth results (relist.core.auth.results), without
    looking up the dataclass fields each time."""
    names = _FIELD_NAMES.get(type(value))
    if names is None:
        names = _FIELD_NAMES[type(value)] = tuple(f.name for f in fields(value))
    out = {}
    for name in names:
        v = getattr(value, name)
        out[name] = v if type(v) in _PLAIN else _jsonable(v.value if isinstance(v, enum.Enum) else v)
    return out


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
           d.policy_domain, d.record, json.dumps([_as_dict(x) for x in d.alignment]), d.reason,
           a.cv, a.oldest_pass, a.reason)
    return rows, row


_INSERT = "INSERT OR REPLACE INTO transactions VALUES (" + ",".join("?" * 16) + ")"
_INSERT_SIGNATURE = "INSERT OR REPLACE INTO signatures VALUES (" + ",".join("?" * 15) + ")"
_INSERT_INGRESS = "INSERT OR REPLACE INTO ingress_posts VALUES (?,?,?,?,?,?)"
_INSERT_VERDICT = "INSERT OR REPLACE INTO verdicts VALUES (" + ",".join("?" * 12) + ")"
_INSERT_BOUNCE = ("INSERT INTO bounces (time, list_address, recipient, cause, permanent, status, diagnostic, "
                  "rule, message_id, relist_id, poster_domain, action, remote_mta, bounce_id) "
                  "VALUES (" + ",".join("?" * 14) + ")")
# The egress transaction of a bounced post: the latest one with a list, and what
# verification found of its From domain.  Ingress records carry their list too; their
# facts say leg = "ingress" (relist.core.steps.ingress_list).
_EGRESS = ("SELECT t.relist_id, t.list_address, t.steps, t.facts, v.from_domain, v.dmarc_policy "
           "FROM transactions t LEFT JOIN verdicts v ON v.relist_id = t.relist_id "
           "WHERE t.list_address IS NOT NULL "
           "AND json_extract(t.facts, '$.leg') IS NOT 'ingress' AND ")


class Store:
    """Asynchronous writer: ``save()`` never blocks and never raises.

    ``save()`` only queues the record; the writer thread turns it into rows.  It
    wakes for the first record, then lets ``linger`` seconds' worth of records
    gather (at most ``batch``) and writes them in one transaction: one commit costs
    the writer far more than a row does, and at a few hundred messages per second
    per worker a commit per record was most of the store's CPU.  A record is
    therefore in the database within about ``linger`` seconds; an ingress copy, which
    the egress path may look for at once, and ``close()`` and ``wait_handled()``
    write without waiting.
    """

    def __init__(self, path: str | Path, *, batch: int = 256, linger: float = 0.5):
        self.path = path
        self.batch = batch
        self.linger = linger
        self.failures = 0
        self.written = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._flush = threading.Event()
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
            self._flush.set()   # write what is queued now, do not linger
            time.sleep(0.02)
        return True

    def save(self, record: Record, upstream: dict[str, Reply], reply: Reply | None,
             duration_ms: float) -> None:
        # Records are immutable; the rows are built by the writer (``_rows``), in
        # batches.  ``upstream`` is the caller's dict: a copy, in case it changes.
        self._queue.put((record, dict(upstream), reply, duration_ms))
        if self._queue.qsize() >= self.batch:
            self._flush.set()

    def save_ingress(self, relist_id: str, now: float, time_iso: str, retention: float,
                     message_id: str, fingerprint: str, raw: bytes) -> None:
        """Keep the ingress copy of a post for ``retention`` seconds (written by the
        writer thread, which also deletes expired copies; never blocks)."""
        self._queue.put(("ingress", (relist_id, time_iso, now + retention, message_id, fingerprint,
                                     raw), now))
        self._flush.set()

    def save_bounces(self, rows: list[tuple]) -> None:
        """Record a bounce: one ``bounces`` row per failed recipient, in the column order
        of ``_INSERT_BOUNCE`` (written by the writer thread; never blocks)."""
        self._queue.put(("bounces", tuple(rows), 0))

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = sqlite3.connect(str(self.path), timeout=5, check_same_thread=True)
        return conn

    def egress_of(self, relist_ids: tuple[str, ...], message_id: str) -> tuple | None:
        """The egress transaction a bounce returns, by relist id (best) or Message-ID:
        (relist_id, list_address, steps JSON, facts JSON, from_domain, dmarc_policy),
        or None.  Blocking (call it in a thread); its own read connection."""
        conn = self._reader()
        for rid in relist_ids:
            row = conn.execute(_EGRESS + "t.relist_id = ?", (rid,)).fetchone()
            if row is not None:
                return row
        if message_id:
            return conn.execute(_EGRESS + "t.message_id = ? ORDER BY t.time DESC LIMIT 1",
                                (message_id,)).fetchone()
        return None

    def ingress_candidates(self, message_id: str, now: float) -> list[tuple[str, bytes]]:
        """Unexpired ingress copies with this Message-ID: [(relist_id, raw)].

        Blocking (call it in a thread); uses its own read connection per thread, so
        it never waits for the writer (WAL).
        """
        conn = self._reader()
        rows = conn.execute("SELECT relist_id, raw FROM ingress_posts WHERE message_id = ? AND expires > ? "
                            "ORDER BY time DESC LIMIT 20", (message_id, now)).fetchall()
        return [(rid, zlib.decompress(raw)) for rid, raw in rows]

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            if item is None:
                break
            # Let records gather (``save()``, ``save_ingress()``, ``close()`` and
            # ``wait_handled()`` cut this short), then write them all, ``batch`` at a time.
            self._flush.wait(self.linger)
            self._flush.clear()
            items = [item]
            while not stop:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                else:
                    items.append(nxt)
                    if len(items) >= self.batch:
                        self._write(items)
                        items = []
            if items:
                self._write(items)
        self._conn.close()

    def _rows(self, items: list[tuple]) -> list[tuple]:
        """Each item as (transactions row or None, signature rows, verdict row or None,
        ingress row or None, bounce rows); an item that cannot be turned into rows is
        counted, logged and left out."""
        out = []
        for item in items:
            try:
                if item[0] == "bounces":   # ("bounces", rows, 0)
                    out.append((None, (), None, None, item[1]))
                    continue
                if isinstance(item[0], str):   # ("ingress", row, now)
                    row = item[1]
                    out.append((None, (), None, row[:5] + (zlib.compress(row[5], 1),), ()))
                    continue
                sigs, verdict = verdict_rows(item[0])
                out.append((record_row(*item), sigs, verdict, None, ()))
            except Exception:  # noqa: BLE001 - the record is secondary to delivery
                self.failures += 1
                log.exception("%s: could not serialise the record",
                              _ident(item[1][0]) if isinstance(item[0], str)
                              else getattr(item[0], "relist_id", "?"))
        return out

    def _write(self, items: list[tuple]) -> None:
        now = max((item[2] for item in items if isinstance(item[0], str)), default=0)
        self._store(self._rows(items), now)   # neither raises: the writer thread never dies

    def _store(self, rows: list[tuple], now: float) -> None:
        """Write ``rows`` (from ``_rows``) in one transaction.  If that fails, each
        item alone, so that one bad record does not cost the batch; an item that
        fails alone is tried once more with its text made storable (a lone
        surrogate, from 8-bit junk in a header, shown as a backslash escape).  Never
        raises: whatever goes wrong is counted and logged (mail is not affected)."""
        if not rows:
            return
        try:
            self._commit(rows, now)
            self.written += len(rows)
            return
        except Exception as exc:  # noqa: BLE001 - e.g. UnicodeEncodeError, sqlite3.Error
            if len(rows) > 1:
                for one in rows:
                    self._store([one], now)
                return
            error = exc
        one = rows[0]
        ident = (one[0][0] if one[0] is not None else one[3][0] if one[3] is not None
                 else _ident(one[4][0]) if one[4] else "?")
        try:
            self._commit([_storable(rows[0])], now)
            self.written += 1
            log.warning("store: %s written with text escaped (%s)", ident, error)
        except Exception as exc:  # noqa: BLE001 - counted, logged; the writer goes on
            self.failures += 1
            log.error("store: %s not written (%s); mail is not affected", ident, exc)

    def _commit(self, rows: list[tuple], now: float) -> None:
        conn = self._conn
        records = [r[0] for r in rows if r[0] is not None]
        signatures = [s for r in rows for s in r[1]]
        verdicts = [r[2] for r in rows if r[2] is not None]
        ingress = [r[3] for r in rows if r[3] is not None]
        bounces = [b for r in rows for b in r[4]]
        conn.execute("BEGIN")
        try:
            if ingress:
                conn.executemany(_INSERT_INGRESS, ingress)
                conn.execute("DELETE FROM ingress_posts WHERE expires < ?", (now,))
            if records:
                conn.executemany(_INSERT, records)
            if signatures:
                conn.executemany(_INSERT_SIGNATURE, signatures)
            if verdicts:
                conn.executemany(_INSERT_VERDICT, verdicts)
            if bounces:
                conn.executemany(_INSERT_BOUNCE, bounces)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def close(self, timeout: float = 10) -> None:
        """Flush what is queued and stop the writer thread."""
        self._queue.put(None)
        self._flush.set()
        self._thread.join(timeout)


class Reader:
    """Read-only access to the store for the diagnostics commands (explain, report,
    bounces): ``query(sql, params)`` with ``?`` placeholders, rows as tuples.  JSON
    columns come back as text; parse them in Python so the SQL stays portable."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no relist store at {path}")
        # Migrate first (a store written by an older relist), then read.
        connect(path).close()
        self._conn = sqlite3.connect(str(path), timeout=5)

    def query(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        return self._conn.execute(sql, tuple(params)).fetchall()

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_reader(store: dict[str, Any]) -> Reader:
    """A :class:`Reader` for a ``[store]`` configuration section."""
    return Reader(store["path"])
