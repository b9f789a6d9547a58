"""Packaging: the shipped systemd unit is hardened and stops relist the way
docs/deployment.md ("Stopping and supervision") says; under journald relist's log
lines carry no timestamp of their own."""

from __future__ import annotations

import io
import logging
import os

from relist.config import SCHEMA
from relist.server import setup_logging, to_journal
from tests.helpers import ROOT

UNIT = ROOT / "conf" / "relist.service"


def directives() -> dict[str, str]:
    out = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            name, _, value = line.partition("=")
            out[name.strip()] = value.strip()
    return out


def test_unit_is_hardened_and_stops_as_documented():
    d = directives()
    for name, value in {"User": "relist", "StateDirectory": "relist", "ConfigurationDirectory": "relist",
                        "ProtectSystem": "strict", "NoNewPrivileges": "yes", "PrivateTmp": "yes",
                        "ProtectHome": "yes", "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
                        "KillMode": "mixed", "UMask": "0077"}.items():
        assert d.get(name) == value, name
    # The drain waits up to [upstream] data_timeout: the stop timeout must exceed it.
    assert int(d["TimeoutStopSec"]) > SCHEMA["upstream"]["data_timeout"].default
    assert d["ExecStart"].endswith("relist serve -c /etc/relist/relist.toml")
    assert "conf/relist.service" in (ROOT / "docs" / "deployment.md").read_text()


def _format(stream) -> str:
    setup_logging("info", stream)
    try:
        return logging.getLogger("relist").handlers[0].formatter._fmt
    finally:
        logging.getLogger("relist").handlers[:] = []


def test_log_lines_under_journald_have_no_timestamp(tmp_path, monkeypatch):
    with open(tmp_path / "journal", "w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
        assert not to_journal(stream) and "%(asctime)s" in _format(stream)
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert to_journal(stream)
        assert "%(asctime)s" not in _format(stream) and "%(process)d" in _format(stream)
        # JOURNAL_STREAM names another file (stderr redirected elsewhere): timestamps stay.
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
        assert not to_journal(stream) and "%(asctime)s" in _format(stream)
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    assert not to_journal(io.StringIO())      # no file descriptor: not the journal


def test_test_constraints_pin_what_pyproject_asks_for():
    """scripts/test-constraints.txt (what ``setup.sh --test`` installs) pins every
    requirement of relist and its test and build extras, each within pyproject's range:
    a range moved without its pin would make pip refuse, or test what is not shipped."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (ROOT / "scripts" / "test-constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line}"
            pins[canonicalize_name(name)] = version
    wanted = [*project["dependencies"], *project["optional-dependencies"]["test"],
              *project["optional-dependencies"]["build"]]
    env = {"sys_platform": "linux", "extra": ""}
    for text in wanted:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is not pinned in scripts/test-constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), \
            f"{req.name}=={pins[name]} is outside pyproject's {req.specifier}"
