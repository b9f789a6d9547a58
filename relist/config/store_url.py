"""Where the store is: ``[store] url`` (or ``path``) and the password, checked.

``sqlite:///PATH``
    A SQLite file, as the URLs of SQLAlchemy (and so GNU Mailman 3's ``[database]
    url``) write it: ``sqlite:///var/relist.db`` is ``var/relist.db`` relative to
    the working directory, ``sqlite:////var/lib/relist/relist.db`` is absolute.
    ``[store] path = "FILE"`` is the shorthand, and the default (``var/relist.db``).
``postgresql://USER@HOST:PORT/DATABASE[?PARAMS]``
    A PostgreSQL database (libpq's URI; ``postgres://`` too).  PARAMS are libpq's
    (``sslmode=verify-full``, ``connect_timeout=5``, ...).  The password never sits
    in the URL (the configuration file is usually readable by many): relist refuses
    one there.  It comes from ``[store] password_file`` (a file only relist's user
    can read, like the key files), else ``PGPASSWORD`` or libpq's ``~/.pgpass``.

Whatever names the store in a log line or an error is ``shown()``: the URL with any
password replaced by ``***``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from relist.core.errors import ConfigError

__all__ = ["Target", "parse_url", "redact"]

_SCHEMES = {"sqlite": "sqlite", "postgresql": "postgresql", "postgres": "postgresql"}
# password=... among a URL's parameters.
_PARAM_PASSWORD = re.compile(r"(?i)([?&]password=)[^&]*")


def redact(url: str) -> str:
    """``url`` with any password in it written as ``***``: everything between the first
    colon after ``//`` and the last ``@`` (a password may hold ``/``, ``?``, ``#`` or
    ``@``), and a ``password=`` parameter."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        userinfo, _, host = rest.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        if colon:
            url = f"{scheme}://{user}:***@{host}"
    return _PARAM_PASSWORD.sub(r"\1***", url)


@dataclass(frozen=True)
class Target:
    """A parsed store location."""

    dialect: str              # "sqlite" | "postgresql"
    url: str                  # as configured (for PostgreSQL: libpq's conninfo URI)
    path: str = ""            # SQLite: the file
    password_file: str = ""   # PostgreSQL: [store] password_file ("" = PGPASSWORD, ~/.pgpass)

    def shown(self) -> str:
        """The store as a log line or an error may name it."""
        return self.path if self.dialect == "sqlite" else redact(self.url)


def parse_url(url: str, *, password_file: str = "", allow_password: bool = False) -> Target:
    """Check ``url`` (module doc); ``ConfigError`` naming what is wrong (never the password).
    ``allow_password``: accept a password in the URL (the benchmarks, never the configuration)."""
    shown = redact(url)
    scheme, sep, _ = url.partition(":")
    dialect = _SCHEMES.get(scheme.lower()) if sep else None
    if dialect is None:
        raise ConfigError(f"[store] url = {shown!r}: expected \"sqlite:///PATH\" or "
                          f"\"postgresql://USER@HOST:PORT/DATABASE\"")
    if dialect == "sqlite":
        if not url[len(scheme):].startswith(":///") or not url[len(scheme) + 4:]:
            raise ConfigError(f"[store] url = {shown!r}: expected \"sqlite:///PATH\" (relative) or "
                              f"\"sqlite:////ABSOLUTE/PATH\"")
        if password_file:
            raise ConfigError("[store] password_file is for a postgresql:// url; a SQLite store has none")
        return Target("sqlite", url, path=unquote(url[len(scheme) + 4:]))
    try:
        parts = urlsplit(url)
        if "," not in parts.netloc:   # libpq's multi-host form (h1:p1,h2:p2) has no one port
            parts.port   # noqa: B018 - raises ValueError for a port that is not a number
        params = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        # Not the parser's words: they may quote a piece of the password ("Port could
        # not be cast to integer value as 'se'" for a password with a "/").
        raise ConfigError(f"[store] url = {shown!r}: not a valid URL (a port that is not a number, "
                          f"or a malformed host or query)") from None
    if parts.fragment:
        raise ConfigError(f"[store] url = {shown!r}: a fragment (#...) has no meaning here")
    if not allow_password and (parts.password is not None or any(k == "password" for k, _ in params)):
        raise ConfigError(f"[store] url = {shown!r}: the password does not belong in the URL (the "
                          f"configuration file is readable by many): put it in [store] password_file "
                          f"or PGPASSWORD")
    if not parts.hostname and not any(k in ("host", "hostaddr") for k, _ in params):
        raise ConfigError(f"[store] url = {shown!r}: no host (postgresql://USER@HOST:PORT/DATABASE)")
    if not parts.path.strip("/") and not any(k == "dbname" for k, _ in params):
        raise ConfigError(f"[store] url = {shown!r}: no database name (postgresql://USER@HOST:PORT/DATABASE)")
    return Target("postgresql", url, password_file=password_file)
