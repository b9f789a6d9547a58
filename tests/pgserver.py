"""A throw-away PostgreSQL server for the tests and benchmarks (Debian's ``postgresql``).

``initdb`` into a temporary directory, ``pg_ctl start`` listening on 127.0.0.1 on a free
port (its Unix socket in that directory too, never /var/run/postgresql), ``pg_ctl
stop`` at the end.  PostgreSQL refuses to run as root, so as root the server commands
run as the ``postgres`` user (``runuser -u postgres --``), which owns the directory.

Authentication: the Unix socket trusts its peers (the fixture's own administration),
TCP asks for a password (scram-sha-256), so the tests exercise ``[store]
password_file`` and ``PGPASSWORD`` the way a deployment does.  ``pg_server`` is the
session-scoped pytest fixture (registered in tests/conftest.py); ``pg_url`` gives each
test a database of its own.  When the server cannot be started the tests that need it
are skipped, except under CI (``CI=true``), where they fail with the reason.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

__all__ = ["PASSWORD", "USER", "PgServer", "PgUnavailable", "pg_server", "pg_url", "require_pg"]

USER = "relist"
PASSWORD = "relist-test-secret"     # what [store] password_file holds in the tests


class PgUnavailable(RuntimeError):
    """PostgreSQL (or psycopg) is not there, or the server did not start: why."""


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: (int(Path(p).parent.parent.name)
                                  if Path(p).parent.parent.name.isdigit() else 0))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise PgUnavailable("no PostgreSQL server binaries (initdb) in /usr/lib/postgresql/*/bin or on PATH: "
                        "install Debian's postgresql package (sh scripts/setup.sh --test does)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """One PostgreSQL cluster in a temporary directory.  ``durable=False`` (the tests)
    turns fsync off: a test database need not survive a power cut, and the suite runs
    faster; the benchmark keeps PostgreSQL's defaults."""

    def __init__(self, *, durable: bool = False):
        self.durable = durable
        self.bindir = _bindir()
        self.as_root = os.geteuid() == 0
        self.dir = Path(tempfile.mkdtemp(prefix="relist-pg-"))
        self.data = self.dir / "data"
        self.port = 0
        self.host = "127.0.0.1"
        self.started = False
        self._dbs = 0

    def _cmd(self, *args: str) -> list[str]:
        return (["runuser", "-u", "postgres", "--"] if self.as_root else []) + list(args)

    def _run(self, *args: str, timeout: float = 120) -> str:
        out = subprocess.run(self._cmd(*args), capture_output=True, text=True, timeout=timeout,
                             cwd=str(self.dir))
        if out.returncode != 0:
            raise PgUnavailable(f"{' '.join(args[:2])} failed ({out.returncode}): "
                                f"{(out.stderr or out.stdout).strip()[-2000:]}")
        return out.stdout

    def start(self) -> "PgServer":
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        os.chmod(self.dir, 0o700)
        pwfile = self.dir / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.as_root:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-E", "UTF8",
                  "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}")
        pwfile.unlink()
        options = [f"listen_addresses='{self.host}'", f"unix_socket_directories='{self.dir}'",
                   "max_connections=200", "shared_buffers=64MB"]
        if not self.durable:
            options += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        with open(self.data / "postgresql.conf", "a") as fh:
            fh.write("\n# relist tests\n" + "\n".join(options) + "\n")
        self.port = free_port()
        self.start_server()
        self.psql(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
        atexit.register(self.stop)
        return self

    def start_server(self) -> None:
        """``pg_ctl start`` (again, after ``stop_server``: the same port and data)."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w",
                  "-t", "60", "-o", f"-p {self.port}", "start")
        self.started = True

    def stop_server(self, mode: str = "fast") -> None:
        """``pg_ctl stop``: the database goes away under relist (fast: clients cut)."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def psql(self, sql: str, db: str = "postgres") -> str:
        return self._run(str(self.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.dir),
                         "-p", str(self.port), "-U", "postgres", "-d", db, "-At", "-c", sql)

    def create_db(self, name: str | None = None) -> str:
        """A new empty database owned by ``USER``; its name."""
        if name is None:
            self._dbs += 1
            name = f"t{os.getpid()}_{self._dbs}"
        self.psql(f"CREATE DATABASE {name} OWNER {USER}")
        return name

    def url(self, db: str) -> str:
        """The ``[store] url`` of ``db`` (no password: it comes from a file or PGPASSWORD)."""
        return f"postgresql://{USER}@{self.host}:{self.port}/{db}"

    def stop(self) -> None:
        if self.started:
            try:
                self.stop_server("immediate")
            except (PgUnavailable, subprocess.TimeoutExpired):
                pass
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)


def start_or_explain(**kwargs) -> PgServer:
    """A started server, or ``PgUnavailable`` saying why not."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        raise PgUnavailable(f"psycopg is not installed ({exc}): .venv/bin/pip install -e '.[test]'") from None
    server = PgServer(**kwargs)
    try:
        return server.start()
    except (PgUnavailable, OSError, subprocess.SubprocessError) as exc:
        log = server.dir / "log"
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        server.stop()
        raise PgUnavailable(f"{exc}{chr(10) + tail if tail else ''}") from None


def require_pg(why: str) -> None:
    """Skip the test for ``why`` (PostgreSQL is missing), but fail it under CI."""
    message = f"PostgreSQL tests cannot run: {why}"
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_server():
    """The session's PostgreSQL server (module doc)."""
    try:
        server = start_or_explain()
    except PgUnavailable as exc:
        require_pg(str(exc))
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server, tmp_path, monkeypatch):
    """A fresh database on the session's server: its URL; ``PGPASSWORD`` set."""
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    return pg_server.url(pg_server.create_db())
