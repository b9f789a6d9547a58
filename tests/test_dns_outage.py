"""DNS down (issue 11, item 7): a temporary error is cached for a short while
(relist.edge.dns.TEMPERROR_TTL), so with the nameservers unreachable an outage costs
one ``[dns] timeout`` per name per interval, not one per message."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from relist.core.facts import Question, Status
from relist.edge import dns as dns_edge
from relist.edge.dns import Resolver
from tests.helpers import client, make_config
from relist.server import ThreadedServer

SENDER = "test-bounces@lists.example.org"
SIGNED = (b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=poster.example; s=s1;\r\n"
          b"\th=from:to:subject; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=; b=AAAA\r\n"
          b"From: Poster <poster@poster.example>\r\nTo: test@lists.example.org\r\n"
          b"Subject: dns down\r\nList-Id: Test list <test.lists.example.org>\r\n")


@pytest.fixture
def blackhole():
    """A nameserver that never answers (the datagrams are received and ignored)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()
    sock.close()


def test_temperror_is_cached_briefly(blackhole):
    r = Resolver([blackhole], timeout=0.2, temperror_ttl=0.5)
    q = Question.txt("s1._domainkey.poster.example")

    async def ask():
        started = time.monotonic()
        ans = await r.answer(q)
        return ans, time.monotonic() - started
    ans, _ = asyncio.run(ask())
    assert ans.status == Status.TEMPERROR and r.queries == 1
    ans, took = asyncio.run(ask())           # from the cache: no second timeout
    assert ans.status == Status.TEMPERROR and r.queries == 1 and took < 0.1
    end = time.monotonic() + 5
    while r.cached(q) is not None and time.monotonic() < end:
        time.sleep(0.02)
    asyncio.run(ask())                       # expired: the nameserver is asked again
    assert r.queries == 2


def test_default_interval_is_documented():
    assert 30 <= dns_edge.TEMPERROR_TTL <= 60
    assert Resolver([("127.0.0.1", 9)]).temperror_ttl == dns_edge.TEMPERROR_TTL


def test_outage_costs_one_timeout_per_name_not_per_message(tmp_path, sink, blackhole):
    cfg = make_config(tmp_path, sink.port, {"dns": {"nameservers": [f"{blackhole[0]}:{blackhole[1]}"],
                                                    "timeout": 1}})
    with ThreadedServer(cfg) as srv:
        resolver = srv.relay.resolver
        with client(srv.port) as c:
            msg = SIGNED + b"Message-ID: <dns-0@poster.example>\r\n\r\nbody\r\n"
            assert c.sendmail(SENDER, ["a@example.com"], msg) == {}
            asked = resolver.queries
            assert asked >= 1               # the poster's key and DMARC record timed out
            started = time.monotonic()
            for n in range(1, 6):
                msg = SIGNED + f"Message-ID: <dns-{n}@poster.example>\r\n\r\nbody {n}\r\n".encode()
                assert c.sendmail(SENDER, ["a@example.com"], msg) == {}
            took = time.monotonic() - started
        assert resolver.queries == asked     # no new query: every name's temperror was cached
        assert took < 1.0, f"5 messages took {took:.2f} s: a DNS timeout per message?"
    assert len(sink.messages) == 6
