"""The store: one row per transaction, the ingress leg's copies of posts, bounces.

``[store] url`` chooses the backend: SQLite (``sqlite:///PATH``, or ``[store] path``;
the default, embedded, one host) or PostgreSQL (``postgresql://USER@HOST/DB``: several
relist instances on several hosts share it, docs/scaling.md).  One module per job:

``schema``      the tables, one migration history for both dialects, the locks
``rows``        what a finished transaction becomes (pure functions over a Record)
``writer``      ``Store``: the bounded queue and the batching writer thread; never blocks mail
``sqlite``      the SQLite backend (WAL; ``connect`` opens and migrates a file)
``postgresql``  the PostgreSQL backend (psycopg 3 and its connection pool)
``reader``      ``Reader``: read-only queries with ``?`` placeholders, for the diagnostics
``target``      ``[store] url``/``path``/``password_file``, checked; passwords redacted
"""

from __future__ import annotations

from typing import Any

from .reader import Reader, open_reader
from .rows import record_row, verdict_rows
from .migrations import MIGRATIONS, SchemaTooNew
from .sqlite import connect, migrate
from .target import Target, parse_url, password_for, redact, target_of
from .writer import Store, StoreError, open_backend

__all__ = ["MIGRATIONS", "Reader", "SchemaTooNew", "Store", "StoreError", "Target", "check", "connect",
           "migrate", "open_backend", "open_reader", "open_store", "parse_url", "record_row", "redact",
           "target_of", "verdict_rows"]


def open_store(store: dict[str, Any], **options: Any) -> Store:
    """The ``Store`` for a ``[store]`` configuration section."""
    return Store(target_of(store), **options)


def check(store: dict[str, Any]) -> str:
    """Start-up (``relist serve``, before the workers fork): open the store and bring its
    schema up to date, so that a store that cannot be used stops relist with its reason.
    Returns "" when it is ready, else (PostgreSQL only) why it could not be reached: a
    database that is down at start-up costs records, not mail, so relist starts and
    its writer migrates when the database answers.  Raises ``ConfigError`` (exit 2) for
    a configuration that cannot work (bad url, no psycopg, password file), ``OSError``
    (exit 2) for a store that refuses (SQLite file, PostgreSQL authentication, a
    missing database, a schema newer than this relist)."""
    import sqlite3
    target = target_of(store)
    if target.dialect == "sqlite":
        try:
            connect(target.path).close()
        except (sqlite3.Error, SchemaTooNew) as exc:
            raise OSError(f"store {target.path}: {exc}") from exc
        return ""
    from . import postgresql
    password = password_for(target)
    psycopg, _ = postgresql._import()
    try:
        with postgresql.connect(target, password) as conn:
            postgresql.migrate(conn)
    except psycopg.OperationalError as exc:
        text = " ".join(str(exc).split())
        # libpq: the server answered and refused (authentication, no such database or
        # role, not allowed): a configuration to fix, not an outage to wait out.
        if "FATAL:" in text and not any(s in text for s in _TRANSIENT):
            raise OSError(f"store {target.shown()}: {text}") from None
        return text
    except (psycopg.Error, SchemaTooNew) as exc:
        raise OSError(f"store {target.shown()}: {' '.join(str(exc).split())}") from None
    return ""


# PostgreSQL's FATAL answers that only mean "not now".
_TRANSIENT = ("starting up", "shutting down", "in recovery", "too many clients", "remaining connection slots",
              "not yet accepting connections", "terminating connection")
