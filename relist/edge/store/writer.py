"""The store as the relay uses it: records written off the event loop, never blocking mail.

The record is secondary to delivery.  ``save()`` only puts the finished transaction
on a bounded queue and returns; one writer thread per process turns records into
rows and commits them in batches.  A queue that is full (the database does not keep
up, or is down) drops the record and counts it: mail never waits for the store.

A database that is down (PostgreSQL unreachable, restarting, out of disk) costs
records, never mail.  The first failure says so in the log, once for the outage, and
puts the store in the *down* state: the writer keeps the batch it could not write and
tries again after a back-off (0.5 s doubling to 5 s), the queue keeps what arrives
meanwhile up to its bound (then drops, counted), look-ups fail at once (the egress
path then verifies what arrived, as without a copy), and the ingress leg's copies go
to the queue.  When the database answers again the writer logs it, with how many
records were lost, and writes what waited.  SQLite has no server to lose: a failure
there (locked, disk full) costs the records of that batch, logged and counted, as
before.

Counters (for tests, ``wait_handled`` and the metrics): ``written`` (items stored: a
transaction's record with a bounce's rows, an ingress copy), ``failures`` (items the
database refused, each logged), ``dropped`` (items never attempted: queue full, or the
store still down at ``close()``), ``outages`` and ``down_since`` (``time.monotonic()``
of the current outage's start, None when up).  Failures and drops are also reported to
``relist.edge.metrics.store_failed``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from relist.core.model import Record, Reply
from relist.edge import metrics

from .rows import bounce_rows, decompress, ingress_row, record_row, storable, verdict_rows
from .target import Target, password_for, target_of

__all__ = ["Store", "StoreError", "open_backend"]

log = logging.getLogger("relist.store")

MAX_QUEUE = 5000                  # records waiting for the writer: ~11 KB each, ~13 s of a busy worker
MAX_QUEUED_COPIES = 64 << 20      # bytes of ingress copies waiting for the writer
RETRY_MIN, RETRY_MAX = 0.5, 5.0   # seconds between attempts while the database is down
EXPIRE_EVERY = 60.0               # seconds between retention expiries
_STOP = object()


class StoreError(Exception):
    """A look-up failed; ``outage``: because the store is down (already logged once)."""

    def __init__(self, message: str, outage: bool = False):
        super().__init__(message)
        self.outage = outage


def open_backend(target: Target, password: str | None = None):
    """The backend for ``target``: SQLite (opened and migrated now), or PostgreSQL (its
    pool connecting in the background)."""
    if target.dialect == "postgresql":
        from .postgresql import PostgresBackend
        return PostgresBackend(target, password if password is not None else password_for(target))
    from .sqlite import SQLiteBackend
    return SQLiteBackend(target.path)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _ident(rows: tuple) -> str:
    """The relist id an item's rows are known by in the log."""
    record, _, _, ingress, _ = rows
    if record is not None:
        return str(record[0])
    return str(ingress[0]) if ingress is not None else "?"


class Store:
    """Asynchronous writer: ``save()`` never blocks and never raises.

    ``save()`` only queues the record; the writer thread turns it into rows.  It
    wakes for the first record, then lets ``linger`` seconds' worth of records
    gather (at most ``batch``) and writes them in one transaction: one commit costs
    the writer far more than a row does, and at a few hundred messages per second
    per worker a commit per record was most of the store's CPU.  A record is
    therefore in the database within about ``linger`` seconds; ``close()`` and
    ``wait_handled()`` write without waiting.  The ingress leg's copy of a post, which
    another instance's egress path may look for at once, is committed by
    ``write_ingress()`` on the caller's thread before the post goes on to Mailman.

    ``where``: a ``[store]`` section, a url (``sqlite:///...``, ``postgresql://...``)
    or a SQLite file's path.
    """

    def __init__(self, where: Any, *, batch: int = 256, linger: float = 0.5, max_queue: int = MAX_QUEUE,
                 password: str | None = None, expire_every: float = EXPIRE_EVERY):
        self.target = target_of(where)
        self.path = self.target.path or self.target.shown()
        self.batch = batch
        self.linger = linger
        self.expire_every = expire_every
        self.failures = 0
        self.written = 0
        self.dropped = 0
        self.outages = 0
        self.down_since: float | None = None
        self._lock = threading.Lock()
        # A SimpleQueue (C, a few times cheaper per put than queue.Queue on the event loop),
        # bounded by ``_put``: only the event loop and to_thread's threads put.
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self.max_queue = max_queue
        self._copy_bytes = 0                  # of the ingress copies in the queue
        self._flush = threading.Event()
        self._closing = threading.Event()
        self._held: list[tuple] = []          # rows the database did not take (down)
        self._dropped_at_down = 0
        self._last_drop_log = float("-inf")
        self._expired_at = float("-inf")
        self.backend = open_backend(self.target, password)   # SQLite: fails loudly at start-up
        self._migrated = False
        try:
            self.backend.migrate()
            self._migrated = True
        except Exception as exc:
            if not self.backend.is_outage(exc):
                self.backend.close()
                raise
            self._down(exc)
        self._thread = threading.Thread(target=self._run, name="relist-store", daemon=True)
        self._thread.start()

    @property
    def dialect(self) -> str:
        return self.backend.dialect

    @property
    def _conn(self):
        """The SQLite writer's connection (tests reach into it)."""
        return self.backend.conn

    # -- the caller's side (the event loop, or a thread of asyncio.to_thread) ----------

    def save(self, record: Record, upstream: dict[str, Reply], reply: Reply | None,
             duration_ms: float) -> None:
        # Records are immutable; the rows are built by the writer (``_rows``), in
        # batches.  ``upstream`` is the caller's dict: a copy, in case it changes.
        if self._put((record, dict(upstream), reply, duration_ms)) and self._queue.qsize() >= self.batch:
            self._flush.set()

    def save_ingress(self, relist_id: str, now: float, time_iso: str, retention: float,
                     message_id: str, fingerprint: str, raw: bytes) -> None:
        """Queue the ingress copy of a post, kept ``retention`` seconds, for the writer
        thread (never blocks).  ``write_ingress`` commits it at once instead."""
        with self._lock:
            if self._copy_bytes + len(raw) > MAX_QUEUED_COPIES:
                full = True
            else:
                full = False
                self._copy_bytes += len(raw)
        if full:
            self._lost(1, f"ingress copy {relist_id}")
            return
        if self._put(("ingress", (relist_id, now, time_iso, retention, message_id, fingerprint, raw))):
            self._flush.set()
        else:
            with self._lock:
                self._copy_bytes -= len(raw)

    def write_ingress(self, relist_id: str, now: float, time_iso: str, retention: float,
                      message_id: str, fingerprint: str, raw: bytes) -> bool:
        """Commit the ingress copy of a post now, so that any relist sharing the store
        finds it however soon Mailman sends the post on.  Blocking: call it in a thread.
        Never raises: True when committed; False when the store is down or refused it, and
        the copy went to the writer's queue instead (mail is not held for it)."""
        if self.down_since is None and self._migrated:
            try:
                self.backend.write_ingress(ingress_row(relist_id, now, time_iso, retention, message_id,
                                                       fingerprint, raw))
                with self._lock:
                    self.written += 1
                return True
            except Exception as exc:  # noqa: BLE001 - the copy is secondary to delivery
                if self.backend.is_outage(exc):
                    self._down(exc)
                else:   # e.g. text the database refuses: the writer escapes it
                    log.debug("store: ingress copy %s not written at once (%s); queued", relist_id,
                              _one_line(exc))
        self.save_ingress(relist_id, now, time_iso, retention, message_id, fingerprint, raw)
        return False

    def ingress_candidates(self, message_id: str, now: float) -> list[tuple[str, bytes]]:
        """Unexpired ingress copies with this Message-ID: [(relist_id, raw)].  Blocking
        (call it in a thread); ``StoreError`` when the store cannot answer."""
        rows = self._look_up(self.backend.ingress_candidates, message_id, now)
        return [(rid, decompress(bytes(raw))) for rid, raw in rows]

    def egress_of(self, relist_ids: tuple[str, ...], message_id: str) -> tuple | None:
        """The egress transaction a bounce returns, by relist id (best) or Message-ID:
        (relist_id, list_address, steps JSON, facts JSON, from_domain, dmarc_policy),
        or None.  Blocking (call it in a thread); ``StoreError`` when the store cannot answer."""
        row = self._look_up(self.backend.egress_of, tuple(relist_ids), message_id)
        return tuple(row) if row is not None else None

    def _look_up(self, fn, *args):
        if self.down_since is not None or not self._migrated:
            raise StoreError(f"store {self.target.shown()} unavailable", outage=True)
        try:
            return fn(*args)
        except self.backend.errors as exc:
            outage = self.backend.is_outage(exc)
            if outage:
                self._down(exc)
            raise StoreError(_one_line(exc), outage=outage) from exc

    def wait_handled(self, n: int, timeout: float = 10) -> bool:
        """Wait until ``n`` items have been handled (written, failed or dropped), at most
        ``timeout`` seconds; True if they have.  For the demo and tests, which read the
        database right after sending mail; the relay itself never waits."""
        deadline = time.monotonic() + timeout
        while self.written + self.failures + self.dropped < n:
            if time.monotonic() >= deadline:
                return False
            self._flush.set()   # write what is queued now, do not linger
            time.sleep(0.02)
        return True

    def close(self, timeout: float = 10) -> None:
        """Write what is queued and stop the writer thread."""
        self._closing.set()
        self._queue.put(_STOP)
        self._flush.set()
        self._thread.join(timeout)

    # -- bookkeeping ------------------------------------------------------------------

    def _put(self, item: tuple) -> bool:
        if self._queue.qsize() >= self.max_queue:
            self._lost(1, "queue full")
            return False
        self._queue.put(item)
        return True

    def _lost(self, n: int, what: str) -> None:
        """``n`` items dropped (never attempted).  Logged at most once a minute, and not
        while the store is down (the outage's own lines give the count)."""
        with self._lock:
            self.dropped += n
            now = time.monotonic()
            say = self.down_since is None and now - self._last_drop_log >= 60
            if say:
                self._last_drop_log = now
        metrics.store_failed(n)
        if say:
            log.error("store %s: the writer's queue is full (%s): records are being dropped (%d so far); "
                      "mail is not affected", self.target.shown(), what, self.dropped)

    def _failed(self, ident: str, exc: BaseException) -> None:
        with self._lock:
            self.failures += 1
        metrics.store_failed(1)
        log.error("store: %s not written (%s); mail is not affected", ident, _one_line(exc))

    def _down(self, exc: BaseException) -> None:
        with self._lock:
            if self.down_since is not None:
                return
            self.down_since = time.monotonic()
            self.outages += 1
            self._dropped_at_down = self.dropped
        reason = getattr(self.backend, "reason", _one_line)(exc)
        log.error("store %s unavailable (%s): relaying without records until it answers (up to %d "
                  "wait in memory, more are dropped); mail is not affected",
                  self.target.shown(), reason[:500], self.max_queue)

    def _up(self) -> None:
        with self._lock:
            if self.down_since is None:
                return
            took = time.monotonic() - self.down_since
            lost = self.dropped - self._dropped_at_down
            self.down_since = None
        log.warning("store %s available again after %.1f s; %d record(s) lost meanwhile, the rest written",
                    self.target.shown(), took, lost)

    # -- the writer thread -------------------------------------------------------------

    def _run(self) -> None:
        delay = RETRY_MIN
        while not self._closing.is_set():
            if self.down_since is not None or self._held or not self._migrated:
                if self._closing.wait(delay):
                    break
                if self._retry():
                    delay = RETRY_MIN
                else:
                    delay = min(delay * 2, RETRY_MAX)
                    continue
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                self._expire()
                continue
            if item is _STOP:
                break
            # Let records gather (``save()`` of a full batch, ``save_ingress()``,
            # ``close()`` and ``wait_handled()`` cut this short), then write them.
            self._flush.wait(self.linger)
            self._flush.clear()
            items, stop = [item], False
            while len(items) < self.batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                items.append(nxt)
            self._store(self._rows(items))
            self._expire()
            if stop:
                break
        self._finish()

    def _retry(self) -> bool:
        """While down: try the database again (migrate if never done, write what is
        held, else a ping).  True when it answered."""
        try:
            if not self._migrated:
                self.backend.migrate()
                self._migrated = True
            if not self._held:
                self.backend.ping()
        except Exception as exc:  # noqa: BLE001 - still down, or worse: logged once
            if not self.backend.is_outage(exc):
                log.error("store %s: %s", self.target.shown(), _one_line(exc))
            return False
        held, self._held = self._held, []
        if held:
            self._store(held)
            return not self._held
        self._up()
        return True

    def _finish(self) -> None:
        """close(): write what is held and queued (one attempt), then close the backend."""
        items = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                items.append(item)
        rows = self._held + self._rows(items)
        self._held = []
        if rows and (self.down_since is None or self._retry_once()):
            for i in range(0, len(rows), self.batch):
                self._store(rows[i:i + self.batch])
        if self._held or (rows and self.down_since is not None):
            lost = len(self._held) if self._held else len(rows)
            self._held = []
            self._lost(lost, "closing")
            log.error("store %s: %d record(s) not written at close: the store is unavailable",
                      self.target.shown(), lost)
        try:
            self.backend.close()
        except Exception as exc:  # noqa: BLE001
            log.debug("store: closing: %s", exc)

    def _retry_once(self) -> bool:
        try:
            if not self._migrated:
                self.backend.migrate()
                self._migrated = True
            self.backend.ping()
        except Exception:  # noqa: BLE001 - still down
            return False
        self._up()
        return True

    def _expire(self) -> None:
        """Delete expired ingress copies, at most every ``expire_every`` seconds (on
        PostgreSQL one instance at a time: the others skip their turn)."""
        now = time.monotonic()
        if now - self._expired_at < self.expire_every or self.down_since is not None or not self._migrated:
            return
        self._expired_at = now
        try:
            n = self.backend.expire(time.time())
        except Exception as exc:  # noqa: BLE001 - tried again next time
            if self.backend.is_outage(exc):
                self._down(exc)
            else:
                log.error("store %s: expiring ingress copies: %s", self.target.shown(), _one_line(exc))
            return
        if n:
            log.debug("store: %d expired ingress cop%s deleted", n, "y" if n == 1 else "ies")

    def _rows(self, items: list[tuple]) -> list[tuple]:
        """Each item as (transactions row or None, signature rows, verdict row or None,
        ingress row or None, bounce rows); an item that cannot be turned into rows is
        counted, logged and left out."""
        out = []
        for item in items:
            try:
                if item[0] == "ingress":   # ("ingress", (relist_id, now, ..., raw))
                    with self._lock:
                        self._copy_bytes -= len(item[1][-1])
                    out.append((None, (), None, ingress_row(*item[1]), ()))
                else:
                    sigs, verdict = verdict_rows(item[0])
                    out.append((record_row(*item), sigs, verdict, None, bounce_rows(item[0], item[2])))
            except Exception as exc:  # noqa: BLE001 - the record is secondary to delivery
                ident = item[1][0] if item[0] == "ingress" else getattr(item[0], "relist_id", "?")
                with self._lock:
                    self.failures += 1
                metrics.store_failed(1)
                log.exception("%s: could not serialise the record (%s)", ident, _one_line(exc))
        return out

    def _store(self, rows: list[tuple]) -> None:
        """Write ``rows`` (from ``_rows``) in one transaction.  If that fails because the
        store is down, keep them (``_held``) for when it is back.  Otherwise each item
        alone, so that one bad record does not cost the batch; an item that fails alone
        is tried once more with its text made storable (a lone surrogate, from 8-bit junk
        in a header, or a NUL, shown as a backslash escape).  Never raises: whatever goes
        wrong is counted and logged (mail is not affected)."""
        if not rows:
            return
        try:
            self._commit(rows)
        except Exception as exc:  # noqa: BLE001 - e.g. UnicodeEncodeError, sqlite3.Error, psycopg.Error
            if self.backend.is_outage(exc):
                self._held.extend(rows)
                self._down(exc)
                return
            if len(rows) > 1:
                for i, one in enumerate(rows):
                    self._store([one])
                    if self._held:     # the database went away meanwhile: keep the rest too
                        self._held.extend(rows[i + 1:])
                        return
                return
            error = exc
        else:
            with self._lock:
                self.written += len(rows)
            self._up()
            return
        try:
            self._commit([storable(rows[0])])
        except Exception as exc:  # noqa: BLE001 - counted, logged; the writer goes on
            if self.backend.is_outage(exc):
                self._held.extend(rows)
                self._down(exc)
                return
            self._failed(_ident(rows[0]), exc)
            return
        with self._lock:
            self.written += 1
        log.warning("store: %s written with text escaped (%s)", _ident(rows[0]), _one_line(error))

    def _commit(self, rows: list[tuple]) -> None:
        self.backend.write({
            "ingress_posts": [r[3] for r in rows if r[3] is not None],
            "transactions": [r[0] for r in rows if r[0] is not None],
            "signatures": [s for r in rows for s in r[1]],
            "verdicts": [r[2] for r in rows if r[2] is not None],
            "bounces": [b for r in rows for b in r[4]],
        })
