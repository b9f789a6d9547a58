"""Shared fixtures.  Every server binds 127.0.0.1; nothing reaches the network."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import relist
from relist.core import guard
from relist.sandbox.dnsserver import DNSServer
from relist.sandbox.sink import Sink
from relist.server import ThreadedServer
from tests.helpers import (  # noqa: F401
    FIXTURES,
    ROOT,
    SHARED,
    client,
    make_config,
    split_added,
    wait_for,
)
from tests.pgserver import pg_server, pg_url  # noqa: F401 - fixtures: a PostgreSQL server for the session


REPLACES_CORE = ("replaces a core function, or passes a stand-in for a core type, at run time: "
                 "compiled callers do not see it, so it runs in the pass over the Python sources "
                 "(RELIST_CORE=python; scripts/test.sh)")


def pytest_configure(config):
    config.addinivalue_line("markers", f"replaces_core: {REPLACES_CORE}")


def pytest_collection_modifyitems(config, items):
    """With the compiled core (relist.core_build), skip the tests that replace core
    functions: their stand-ins would not be called (the recheck_calls fixture is one)."""
    if relist.BUILD.running != "compiled":
        return
    skip = pytest.mark.skip(reason=REPLACES_CORE)
    for item in items:
        if item.get_closest_marker("replaces_core") or "recheck_calls" in getattr(item, "fixturenames", ()):
            item.add_marker(skip)


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


@pytest.fixture
def recheck_calls(monkeypatch):
    """The signatures (d/s) each call of the guard's re-verification was about."""
    calls = []
    real = guard.recheck

    def counting(msg, sigs, ctx, *args):
        calls.append([guard.label(s) for s in sigs])
        return real(msg, sigs, ctx, *args)
    monkeypatch.setattr(guard, "recheck", counting)
    return calls


@pytest.fixture(scope="module")
def poster_key():
    """A poster's RSA-2048 key: (PEM private key, its DKIM TXT record)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    pub = base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    return pem, f"v=DKIM1; k=rsa; p={pub}"
