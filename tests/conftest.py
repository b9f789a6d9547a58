"""Shared fixtures.  Every server binds 127.0.0.1; nothing reaches the network."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from relist.config import parse, with_overrides
from relist.sandbox.sink import Sink
from relist.server import ThreadedServer

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
FIXTURES = ROOT / "fixtures"


@pytest.fixture
def sink():
    s = Sink().start()
    yield s
    s.stop()


def make_config(tmp_path, sink_port: int, data: dict | None = None, **overrides):
    data = dict(data or {})
    data.setdefault("server", {})
    data["server"] = {"hostname": "relist.test", **data["server"]}
    data.setdefault("upstream", {})
    data["upstream"] = {"port": sink_port, "timeout": 2, "connect_timeout": 2, **data["upstream"]}
    data.setdefault("store", {"path": str(tmp_path / "relist.db")})
    cfg = parse(data)
    server = {"listen": ("127.0.0.1", 0), **overrides.pop("server", {})}
    return with_overrides(cfg, server=server, **overrides)


@pytest.fixture
def relist_factory(tmp_path, sink):
    started = []

    def start(data: dict | None = None, **overrides) -> ThreadedServer:
        srv = ThreadedServer(make_config(tmp_path, sink.port, data, **overrides)).start()
        started.append(srv)
        return srv
    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
def relist_server(relist_factory):
    return relist_factory()


def client(port: int) -> smtplib.SMTP:
    c = smtplib.SMTP("127.0.0.1", port, timeout=10)
    c.ehlo("mailman.test")
    return c
