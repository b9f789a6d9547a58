"""The PostgreSQL backend: several relist processes, on several hosts, share one store.

psycopg 3 with its connection pool (``psycopg_pool``), imported only when a
``postgresql://`` url is configured (``pip install 'relist[postgresql]'``).  The
writer thread, the ingress leg's synchronous copies and the egress path's look-ups
each take a pooled connection for one transaction (autocommit otherwise).  A
connection is checked when taken from the pool (an empty query), so that after a
database restart no caller is handed a dead one.

Timeouts, so that no caller waits long on a database that does not answer (the
caller then goes on without the record; mail is never held for it): libpq's
``connect_timeout`` (5 s), ``tcp_user_timeout`` (10 s of unacknowledged data), the
pool's wait for a free connection (5 s), and ``statement_timeout`` (15 s) on the
pooled connections.  A url's own parameters win over these defaults.  The
migrations run on a connection of their own, without a statement timeout (creating
an index on a large table takes what it takes), under an advisory lock.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from relist.core.errors import ConfigError

from .migrations import COLUMNS, KEYS, LOCK_EXPIRE, LOCK_MIGRATE, MIGRATIONS, SchemaTooNew, statements
from .target import Target

__all__ = ["PostgresBackend", "connect", "migrate", "to_pyformat"]

CONNECT_DEFAULTS = {"connect_timeout": "5", "tcp_user_timeout": "10000", "application_name": "relist"}
POOL_WAIT = 5.0            # seconds a caller waits for a pooled connection
STATEMENT_TIMEOUT_MS = 15000
POOL_SIZE = 4              # per process: the writer, and asyncio.to_thread's readers
EXPIRE_CHUNK = 5000        # ingress copies deleted per statement


def _import():
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:
        raise ConfigError(f"[store] url is a postgresql:// url but psycopg is not installed ({exc}): "
                          f"pip install 'relist[postgresql]'") from None
    # The pool logs every failed (re)connection attempt; relist says once per outage
    # that the store is unavailable (relist.edge.store.writer), with the pool's last
    # error as the reason (``PoolTimeout`` itself only says how long it waited).
    pool_log = logging.getLogger("psycopg.pool")
    if _LAST_POOL_ERROR not in pool_log.handlers:
        pool_log.addHandler(_LAST_POOL_ERROR)
        pool_log.propagate = False
    return psycopg, psycopg_pool


class _LastError(logging.Handler):
    """Keeps the pool's last warning (why it could not connect), prints nothing."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.last = record.getMessage()


_LAST_POOL_ERROR = _LastError()


def conninfo(target: Target) -> str:
    """libpq's connection string for ``target``: its url plus ``CONNECT_DEFAULTS``."""
    psycopg, _ = _import()
    try:
        given = psycopg.conninfo.conninfo_to_dict(target.url)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(f"[store] url = {target.shown()!r}: libpq refuses it ({exc})") from None
    extra = {k: v for k, v in CONNECT_DEFAULTS.items() if k not in given}
    return psycopg.conninfo.make_conninfo(target.url, **extra)


def connect(target: Target, password: str | None = None, **kwargs: Any):
    """One connection of its own (autocommit), outside the pool."""
    psycopg, _ = _import()
    if password is not None:
        kwargs["password"] = password
    return psycopg.connect(conninfo(target), autocommit=True, **kwargs)


def schema_version(conn) -> int:
    """The database's schema version (0: no relist schema yet), changing nothing."""
    if conn.execute("SELECT to_regclass('relist_schema')").fetchone()[0] is None:
        return 0
    row = conn.execute("SELECT version FROM relist_schema").fetchone()
    return row[0] if row else 0


def migrate(conn) -> int:
    """Bring the database to ``len(MIGRATIONS)`` in one transaction, holding an advisory
    lock: another relist migrating at the same time waits, then finds it done."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_MIGRATE,))
        if conn.execute("SELECT to_regclass('relist_schema')").fetchone()[0] is None:
            conn.execute("CREATE TABLE relist_schema (version BIGINT NOT NULL)")
            conn.execute("INSERT INTO relist_schema VALUES (0)")
        version = conn.execute("SELECT version FROM relist_schema").fetchone()[0]
        if version > len(MIGRATIONS):
            raise SchemaTooNew(version)
        if version < len(MIGRATIONS):
            for v in range(version, len(MIGRATIONS)):
                for statement in statements(v, "postgresql"):
                    conn.execute(statement)
            conn.execute("UPDATE relist_schema SET version = %s", (len(MIGRATIONS),))
    return len(MIGRATIONS)


def _upsert(table: str) -> str:
    cols = COLUMNS[table]
    sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(['%s'] * len(cols))})"
    if table not in KEYS:
        return sql
    keys = KEYS[table]
    sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols if c not in keys)
    return f"{sql} ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {sets}"


INSERT = {table: _upsert(table) for table in COLUMNS}
# relist.edge.store.sqlite's EGRESS and CANDIDATES, in PostgreSQL's words.  Not an
# ingress record: facts, as json.dumps wrote them (rows.record_row), without the
# top-level "leg": "ingress" (inside a JSON string those quotes would be escaped).  Not
# facts::json ->> 'leg': PostgreSQL refuses to read a JSON text holding \u0000 anywhere
# (a NUL a message put in a finding), and the look-up would fail for that record.
EGRESS = ("SELECT t.relist_id, t.list_address, t.steps, t.facts, v.from_domain, v.dmarc_policy "
          "FROM transactions t LEFT JOIN verdicts v ON v.relist_id = t.relist_id "
          "WHERE t.list_address IS NOT NULL "
          "AND position('\"leg\": \"ingress\"' in t.facts) = 0 AND ")
CANDIDATES = ("SELECT relist_id, raw FROM ingress_posts WHERE message_id = %s AND expires > %s "
              "ORDER BY time DESC LIMIT 20")
EXPIRE = ("DELETE FROM ingress_posts WHERE relist_id IN "
          f"(SELECT relist_id FROM ingress_posts WHERE expires < %s LIMIT {EXPIRE_CHUNK})")

# A ? placeholder outside quotes; the quoted strings and identifiers themselves; a %.
_TOKENS = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|\?|%")


def to_pyformat(sql: str) -> str:
    """``sql`` with ``?`` placeholders (sqlite3's) as psycopg's ``%s``, and a literal
    ``%`` doubled; quoted strings, identifiers and comments are left as they are."""
    def swap(m: re.Match) -> str:
        token = m.group(0)
        if token == "?":
            return "%s"
        if token == "%":
            return "%%"
        return token.replace("%", "%%") if token[0] in "'\"" else token
    return _TOKENS.sub(swap, sql)


class PostgresBackend:
    """The store's operations on a PostgreSQL database (``relist.edge.store.writer.Store``
    drives them)."""

    dialect = "postgresql"

    def __init__(self, target: Target, password: str | None = None, *, pool_size: int = POOL_SIZE):
        psycopg, psycopg_pool = _import()
        self._psycopg = psycopg
        self.target = target
        self.password = password
        self.conninfo = conninfo(target)
        self.errors: tuple[type[BaseException], ...] = (psycopg.Error, psycopg_pool.PoolTimeout)
        self._outages = (psycopg.OperationalError, psycopg.InterfaceError, psycopg_pool.PoolTimeout)
        kwargs: dict[str, Any] = {"autocommit": True}
        if password is not None:
            kwargs["password"] = password

        def configure(conn) -> None:
            conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")

        self.pool = psycopg_pool.ConnectionPool(
            self.conninfo, kwargs=kwargs, min_size=1, max_size=pool_size, open=False, timeout=POOL_WAIT,
            configure=configure, check=getattr(psycopg_pool.ConnectionPool, "check_connection", None),
            name="relist-store", reconnect_timeout=60.0)
        self.pool.open(wait=False)    # connects in the background: a database that is down is no error here

    # -- the writer thread ------------------------------------------------------------

    def migrate(self) -> None:
        with connect(self.target, self.password) as conn:
            migrate(conn)

    def ping(self) -> None:
        with self.pool.connection() as conn:
            conn.execute("SELECT 1")

    def write(self, tables: dict[str, list[tuple]]) -> None:
        """One transaction: every table's rows (upserts; bounces inserted)."""
        with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            for table, rows in tables.items():
                if rows:
                    cur.executemany(INSERT[table], rows)

    def expire(self, now: float) -> int | None:
        """Delete the ingress copies past their retention, unless another instance is doing
        it (``pg_try_advisory_xact_lock``): how many, or None when it was not our turn."""
        with self.pool.connection() as conn, conn.transaction():
            if not conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (LOCK_EXPIRE,)).fetchone()[0]:
                return None
            total = 0
            while True:
                n = conn.execute(EXPIRE, (now,)).rowcount
                total += n
                if n < EXPIRE_CHUNK:
                    return total

    def reason(self, exc: BaseException) -> str:
        """Why ``exc`` happened, for the one log line of an outage."""
        text = " ".join(str(exc).split())
        if isinstance(exc, self._outages[-1]) and _LAST_POOL_ERROR.last:   # PoolTimeout
            last = (" ".join(_LAST_POOL_ERROR.last.split())
                    .removeprefix("error connecting in 'relist-store': "))
            return f"{text}: {last}"
        return text

    def is_outage(self, exc: BaseException) -> bool:
        """The database is unreachable, restarting, out of disk or too slow: every record
        would fail alike now, and may succeed in a moment."""
        return isinstance(exc, self._outages)

    def close(self) -> None:
        self.pool.close(timeout=2)

    # -- any other thread ---------------------------------------------------------------

    def write_ingress(self, row: tuple) -> None:
        with self.pool.connection() as conn:
            conn.execute(INSERT["ingress_posts"], row)

    def ingress_candidates(self, message_id: str, now: float) -> list[tuple[str, bytes]]:
        with self.pool.connection() as conn:
            return conn.execute(CANDIDATES, (message_id, now)).fetchall()

    def egress_of(self, relist_ids: tuple[str, ...], message_id: str) -> tuple | None:
        with self.pool.connection() as conn:
            for rid in relist_ids:
                row = conn.execute(EGRESS + "t.relist_id = %s", (rid,)).fetchone()
                if row is not None:
                    return row
            if message_id:
                return conn.execute(EGRESS + "t.message_id = %s ORDER BY t.time DESC LIMIT 1",
                                    (message_id,)).fetchone()
        return None
