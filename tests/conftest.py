"""Shared fixtures.  Every server binds 127.0.0.1; nothing reaches the network."""

from __future__ import annotations

import smtplib
import time
from pathlib import Path

import pytest

from relist.config import parse, with_overrides
from relist.sandbox.dnsserver import DNSServer
from relist.sandbox.sink import Sink
from relist.server import ThreadedServer

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
FIXTURES = ROOT / "fixtures"


@pytest.fixture(scope="session")
def _session_dns_server():
    s = DNSServer().start()
    yield s
    s.stop()


@pytest.fixture
def dns_server(_session_dns_server):
    """A loopback DNS server; tests add names with ``dns_server.set``.  Relay tests
    resolve through it, so nothing ever asks the machine's resolver.  One server for
    the session, but each test starts from an empty zone: a ``_dmarc`` record one test
    publishes must not change what the next one's post gets (DMARC mitigation)."""
    s = _session_dns_server
    s.zone.clear()
    s.queries.clear()
    yield s
    s.zone.clear()


@pytest.fixture
def sink():
    s = Sink().start()
    yield s
    s.stop()


def make_config(tmp_path, sink_port: int, data: dict | None = None, nameserver: str = "127.0.0.1:9",
                **overrides):
    data = dict(data or {})
    data.setdefault("dns", {"nameservers": [nameserver], "timeout": 1})
    data.setdefault("server", {})
    data["server"] = {"hostname": "relist.test", **data["server"]}
    data.setdefault("upstream", {})
    data["upstream"] = {"port": sink_port, "timeout": 2, "connect_timeout": 2, **data["upstream"]}
    data.setdefault("store", {"path": str(tmp_path / "relist.db")})
    cfg = parse(data)
    server = {"listen": ("127.0.0.1", 0), **overrides.pop("server", {})}
    return with_overrides(cfg, server=server, **overrides)


@pytest.fixture
def relist_factory(tmp_path, sink, dns_server):
    started = []

    def start(data: dict | None = None, **overrides) -> ThreadedServer:
        cfg = make_config(tmp_path, sink.port, data, nameserver=dns_server.nameserver, **overrides)
        srv = ThreadedServer(cfg).start()
        started.append(srv)
        return srv
    yield start
    for srv in started:
        srv.stop()


@pytest.fixture
def relist_server(relist_factory):
    return relist_factory()


def split_added(data: bytes, names=(b"received", b"authentication-results")) -> tuple[list[bytes], bytes]:
    """Split off the header fields relist prepends; return (their names, the rest)."""
    added = []
    while True:
        name = data.split(b":", 1)[0].lower()
        if name not in names:
            return added, data
        end = 0
        while True:
            end = data.index(b"\r\n", end) + 2
            if data[end:end + 1] not in (b" ", b"\t"):
                break
        added.append(name)
        data = data[end:]


def client(port: int) -> smtplib.SMTP:
    c = smtplib.SMTP("127.0.0.1", port, timeout=10)
    c.ehlo("mailman.test")
    return c


def wait_for(predicate, timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` seconds pass (False)."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True
