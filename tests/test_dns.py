"""The DNS edge against a real DNS server on 127.0.0.1 over UDP (issue: verify early)."""

from __future__ import annotations

import asyncio

import pytest

from relist.core.facts import Question, Status
from relist.edge.dns import Resolver
from relist.sandbox.dnsserver import DNSServer

LONG_KEY = "v=DKIM1; k=rsa; p=" + "A" * 400


@pytest.fixture
def server():
    s = DNSServer({
        "s1._domainkey.example.org": ["v=DKIM1; k=rsa; p=MIIB"],
        "split._domainkey.example.org": [LONG_KEY],           # sent as 255-byte strings
        "two.example.org": ["first", ["sec", "ond"]],
        "servfail.example.org": "SERVFAIL",
        "slow.example.org": "TIMEOUT",
        "gone.example.org": "NXDOMAIN",
    }).start()
    yield s
    s.stop()


def resolve(resolver, *names):
    async def go():
        return await resolver.resolve([Question.txt(n) for n in names])
    return asyncio.run(go())


CASES = [
    ("s1._domainkey.example.org", Status.FOUND, (b"v=DKIM1; k=rsa; p=MIIB",), ""),
    ("split._domainkey.example.org", Status.FOUND, (LONG_KEY.encode(),), ""),
    ("gone.example.org", Status.ABSENT, (), "NXDOMAIN"),
    ("unlisted.example.org", Status.ABSENT, (), "NXDOMAIN"),
    ("servfail.example.org", Status.TEMPERROR, (), "SERVFAIL"),
    ("slow.example.org", Status.TEMPERROR, (), "timeout"),
]


@pytest.mark.parametrize("name,status,records,detail", CASES, ids=[c[0].split(".")[0] for c in CASES])
def test_three_valued_answers(server, name, status, records, detail):
    r = Resolver([server.address], timeout=0.3)
    ans = resolve(r, name).txt(name)
    assert ans.status == status
    assert ans.records == records
    assert ans.detail.startswith(detail)


def test_multiple_records_and_split_strings(server):
    r = Resolver([server.address], timeout=1)
    ans = resolve(r, "two.example.org").txt("two.example.org")
    assert sorted(ans.records) == [b"first", b"second"]


def test_nodata_for_known_name_other_type(server):
    # The zone has only TXT; ask for A through the same edge.
    r = Resolver([server.address], timeout=1)
    ans = asyncio.run(r.answer(Question("s1._domainkey.example.org", "A")))
    assert ans.status == Status.ABSENT and ans.detail == "NODATA"


def test_cache_honours_ttl_and_temperror_is_cached_briefly(server):
    r = Resolver([server.address], timeout=0.3)
    resolve(r, "s1._domainkey.example.org")
    resolve(r, "s1._domainkey.example.org")
    assert server.queries.count("s1._domainkey.example.org") == 1
    resolve(r, "servfail.example.org")
    resolve(r, "servfail.example.org")
    assert server.queries.count("servfail.example.org") == 1   # for TEMPERROR_TTL (tests/test_dns_outage.py)
    r = Resolver([server.address], timeout=0.3, temperror_ttl=0)
    resolve(r, "servfail.example.org")
    resolve(r, "servfail.example.org")
    assert server.queries.count("servfail.example.org") == 3


def test_zero_ttl_is_not_cached():
    with DNSServer({"k.example.org": ["x"]}, ttl=0) as s:
        r = Resolver([s.address], timeout=1)
        resolve(r, "k.example.org")
        resolve(r, "k.example.org")
        assert s.queries.count("k.example.org") == 2


def test_thousand_concurrent_questions_make_one_query(server):
    r = Resolver([server.address], timeout=2)

    async def go():
        q = Question.txt("s1._domainkey.example.org")
        return await asyncio.gather(*(r.answer(q) for _ in range(1000)))
    answers = asyncio.run(go())
    assert all(a.status == Status.FOUND for a in answers)
    assert server.queries.count("s1._domainkey.example.org") == 1
    assert r.queries == 1


def test_second_nameserver_used_when_first_fails(server):
    with DNSServer({"s1._domainkey.example.org": "SERVFAIL"}) as bad:
        r = Resolver([bad.address, server.address], timeout=1)
        ans = resolve(r, "s1._domainkey.example.org").txt("s1._domainkey.example.org")
        assert ans.status == Status.FOUND
