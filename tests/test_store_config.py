"""``[store] url``, ``path`` and ``password_file``: what the configuration accepts, what
it refuses (and that no error shows a password), and ``relist serve``'s start-up
errors (exit 2).  No database server needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from relist.config import ConfigError, parse
from relist.core.errors import ConfigError as CoreConfigError
from relist.edge.store import Reader, Store, open_store, redact, target_of
from relist.edge.store import postgresql as pg
from relist.edge.store.target import Target

ROOT = Path(__file__).resolve().parent.parent


def store_of(section: dict, path: Path | None = None) -> dict:
    return parse({"store": section}, path).store


def test_path_is_the_sqlite_shorthand_and_the_default():
    assert store_of({})["path"] == "var/relist.db"
    assert store_of({"path": "/srv/r.db"}) == {"url": "", "path": "/srv/r.db", "password_file": ""}
    assert target_of(store_of({})) == Target("sqlite", "", path="var/relist.db")


@pytest.mark.parametrize("url,path", [("sqlite:///var/relist.db", "var/relist.db"),
                                      ("sqlite:////var/lib/relist/relist.db", "/var/lib/relist/relist.db")])
def test_sqlite_urls_are_written_as_sqlalchemy_and_mailman_write_them(url, path):
    store = store_of({"url": url})
    assert store["path"] == path and target_of(store).dialect == "sqlite"


def test_a_sqlite_url_opens_the_file(tmp_path):
    store = open_store({"url": f"sqlite:///{tmp_path}/via-url.db"})
    store.close()
    assert (tmp_path / "via-url.db").exists()
    with Reader(f"sqlite:///{tmp_path}/via-url.db") as reader:
        assert reader.query("select count(*) from transactions") == [(0,)]


def test_postgresql_url_and_password_file_relative_to_the_configuration(tmp_path):
    store = store_of({"url": "postgresql://relist@db.example.org:5433/relist", "password_file": "pw"},
                     tmp_path / "relist.toml")
    assert store == {"url": "postgresql://relist@db.example.org:5433/relist", "path": "",
                     "password_file": str(tmp_path / "pw")}
    assert store_of({"url": "postgres://relist@db/relist?sslmode=verify-full"})["path"] == ""
    # libpq's multi-host form, for a primary and its replica.
    assert store_of({"url": "postgresql://relist@db1:5432,db2:5432/relist?target_session_attrs=read-write"})


@pytest.mark.parametrize("section,error", [
    ({"url": "mysql://relist@db/relist"}, "expected \"sqlite:///PATH\" or \"postgresql://"),
    ({"url": "sqlite://relist.db"}, "expected \"sqlite:///PATH\""),
    ({"url": "postgresql://relist@db:port/relist"}, "not a valid URL"),
    ({"url": "postgresql:///relist"}, "no host"),
    ({"url": "postgresql://relist@db/"}, "no database name"),
    ({"url": "postgresql://relist:s3cret@db/relist"}, "the password does not belong in the URL"),
    ({"url": "postgresql://relist@db/relist?password=s3cret"}, "the password does not belong in the URL"),
    ({"url": "sqlite:///a.db", "path": "b.db"}, "set one"),
    ({"password_file": "pw"}, "only for a postgresql:// url"),
    ({"url": "sqlite:///a.db", "password_file": "pw"}, "only for a postgresql:// url"),
])
def test_bad_store_settings_are_refused_without_showing_a_password(section, error):
    with pytest.raises(ConfigError) as refused:
        parse({"store": section})
    assert error in str(refused.value)
    assert "s3cret" not in str(refused.value)


def test_redact_hides_passwords_wherever_a_url_is_shown():
    assert redact("postgresql://relist:s3cret@db:5432/relist") == "postgresql://relist:***@db:5432/relist"
    assert redact("postgresql://relist@db/relist?sslmode=require&password=s3cret") == (
        "postgresql://relist@db/relist?sslmode=require&password=***")
    assert redact("postgresql://relist@db/relist") == "postgresql://relist@db/relist"
    # A url given directly (a benchmark, a test) may carry one; the store shows it redacted.
    assert target_of("postgresql://u:s3cret@db/x").shown() == "postgresql://u:***@db/x"



@pytest.mark.parametrize("sep", ["/", "?", "#", "@", ":"])
def test_no_part_of_a_password_reaches_the_error_or_the_redacted_url(sep):
    """A password holding a URL delimiter: urlsplit then reads part of it as the port
    or the path, and its own error message quoted that part."""
    url = f"postgresql://relist:Zq{sep}Wx9@db:5432/relist"
    assert redact(url) == "postgresql://relist:***@db:5432/relist"
    with pytest.raises(ConfigError) as err:
        parse({"store": {"url": url}})
    assert "Zq" not in str(err.value) and "Wx9" not in str(err.value), str(err.value)


def test_a_postgresql_url_without_psycopg_is_a_configuration_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)    # import psycopg -> ImportError
    with pytest.raises(CoreConfigError, match=r"psycopg is not installed.*relist\[postgresql\]"):
        Store("postgresql://relist@127.0.0.1:1/relist")
    with pytest.raises(CoreConfigError, match="psycopg is not installed"):
        pg.PostgresBackend(Target("postgresql", "postgresql://relist@127.0.0.1:1/relist"))


def serve(tmp_path: Path, store_toml: str, env: dict | None = None) -> subprocess.CompletedProcess:
    conf = tmp_path / "relist.toml"
    conf.write_text(f'[server]\nlisten = "127.0.0.1:1"\nworkers = 1\n[store]\n{store_toml}\n')
    return subprocess.run([sys.executable, "-m", "relist", "serve", "-c", str(conf)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env=env)


def test_serve_refuses_a_bad_url_with_exit_2(tmp_path):
    out = serve(tmp_path, 'url = "postgresql://relist:s3cret@db/relist"')
    assert out.returncode == 2, out.stderr
    assert "configuration error: [store] url" in out.stderr and "s3cret" not in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_refuses_a_password_file_others_can_read_with_exit_2(tmp_path):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    out = serve(tmp_path, f'url = "postgresql://relist@127.0.0.1:1/relist"\npassword_file = "{secret}"')
    assert out.returncode == 2, out.stderr
    assert "accessible by group or others" in out.stderr and "s3cret" not in out.stderr
    assert "Traceback" not in out.stderr
