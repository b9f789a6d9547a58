"""The store's password and location as the edge uses them: ``target_of`` a
``[store]`` section, URL or path, and the password from ``[store] password_file``
(checked like the key files).  The URL itself is parsed by ``relist.config.store_url``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from relist.config.store_url import _SCHEMES, Target, parse_url, redact
from relist.core.errors import ConfigError
from relist.edge.secret_files import NotRegularFile, OpenToOthers, read_owner_only

__all__ = ["Target", "parse_url", "read_password", "redact", "target_of"]

def target_of(where: Any, *, password_file: str = "") -> Target:
    """A ``Target`` from a ``[store]`` section (its ``url``, else its ``path``), a URL,
    or a SQLite file's path."""
    if isinstance(where, Target):
        return where
    if isinstance(where, dict):
        url = where.get("url") or ""
        if url:
            return parse_url(url, password_file=where.get("password_file") or "")
        return Target("sqlite", "", path=str(where.get("path") or ""))
    text = os.fspath(where)
    scheme = text.partition(":")[0].lower()
    if scheme in _SCHEMES and "://" in text:
        return parse_url(text, password_file=password_file, allow_password=True)
    return Target("sqlite", "", path=text)


def read_password(path: str) -> str:
    """The password in ``path`` (its first line), refusing a file that group or others
    can access (``ConfigError``, exit 2): checked on the open file, as the key files are."""
    try:
        data = read_owner_only(path, 64 * 1024)
    except FileNotFoundError:
        raise ConfigError(f"[store] password_file = {path!r}: no such file") from None
    except NotRegularFile:
        raise ConfigError(f"[store] password_file = {path!r}: not a regular file") from None
    except OpenToOthers as exc:
        raise ConfigError(f"[store] password_file = {path!r}: accessible by group or others "
                          f"(mode {exc.mode:04o}); run: chmod 600 {path}") from None
    except OSError as exc:
        raise ConfigError(f"[store] password_file = {path!r}: cannot be read ({exc.strerror})") from None
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ConfigError(f"[store] password_file = {path!r}: not UTF-8 text") from None
    if not lines or not lines[0]:
        raise ConfigError(f"[store] password_file = {path!r}: empty (the password is its first line)")
    return lines[0]


def password_for(target: Target) -> str | None:
    """The password to give libpq: the file's, else None (libpq reads PGPASSWORD or ~/.pgpass)."""
    if target.dialect != "postgresql" or not target.password_file:
        return None
    return read_password(str(Path(target.password_file)))
