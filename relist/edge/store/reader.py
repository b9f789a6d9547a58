"""Read-only access to the store for the diagnostics commands (explain, report, bounces).

``query(sql, params)`` takes ``?`` placeholders on both backends (the PostgreSQL
reader turns them into psycopg's ``%s``) and returns rows as tuples.  Errors: SQLite's
are ``sqlite3.Error`` (``FileNotFoundError`` for a store that does not exist yet),
PostgreSQL's ``StoreError`` (the message names the store, never its password).  JSON columns
come back as text: parse them in Python so the SQL stays portable.  ``dialect``
("sqlite" or "postgresql") is there for the rare query that cannot be.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from .migrations import MIGRATIONS
from .target import Target, password_for, target_of
from .writer import StoreError

__all__ = ["Reader", "open_reader"]


class Reader:
    """``Reader(path)`` for a SQLite file, ``Reader(url)`` or ``Reader(target)`` for either."""

    def __init__(self, where: str | Path | Target, *, password: str | None = None):
        target = target_of(where)
        self.target = target
        self.dialect = target.dialect
        if target.dialect == "postgresql":
            from . import postgresql
            psycopg, _ = postgresql._import()
            self._errors = psycopg.Error
            password = password if password is not None else password_for(target)
            # Read-only, and no migration: a shared store changes schema only when a
            # relist serve of the new version starts (a newer report run by an admin
            # during a rolling upgrade must not lock the older instances out).
            try:
                self._conn = postgresql.connect(target, password)
            except psycopg.Error as exc:
                raise StoreError(f"{target.shown()}: {' '.join(str(exc).split())}") from None
            try:
                self._conn.execute("SET default_transaction_read_only = on")
                version = postgresql.schema_version(self._conn)
                if version != len(MIGRATIONS):
                    self._conn.close()
                    raise StoreError(
                        f"{target.shown()}: schema version {version}, this relist reads version "
                        f"{len(MIGRATIONS)}: " + ("run the relist that wrote it" if version > len(MIGRATIONS)
                                                  else "start relist serve of this version first (it "
                                                       "migrates the store); this command changes nothing"))
            except psycopg.Error as exc:
                self._conn.close()
                raise StoreError(f"{target.shown()}: {' '.join(str(exc).split())}") from None
            except BaseException:
                self._conn.close()
                raise
            self._translate = postgresql.to_pyformat
            return
        from .sqlite import connect
        path = Path(target.path)
        if not path.exists():
            raise FileNotFoundError(f"no relist store at {path}")
        # Migrate first (a store written by an older relist), then read.
        connect(path).close()
        self._conn = sqlite3.connect(str(path), timeout=5)
        self._translate = None

    def query(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        if self._translate is None:
            return self._conn.execute(sql, tuple(params)).fetchall()
        try:
            return [tuple(r) for r in self._conn.execute(self._translate(sql), tuple(params)).fetchall()]
        except self._errors as exc:
            raise StoreError(" ".join(str(exc).split())) from exc

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_reader(store: dict[str, Any]) -> Reader:
    """A :class:`Reader` for a ``[store]`` configuration section."""
    return Reader(target_of(store))
