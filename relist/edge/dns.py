"""DNS edge: answer the core's Questions with three-valued Answers.

* FOUND: the TXT records (each record's strings joined, RFC 6376 §3.6.2.2);
* ABSENT: NXDOMAIN or NODATA (no TXT record at that name);
* TEMPERROR: every nameserver timed out or answered SERVFAIL/REFUSED/...

Answers are cached for their TTL (negative answers for the SOA minimum, RFC 2308
§5), and concurrent questions for the same name share one query, so 1000 posts
signed with one key arriving together cost one lookup.  A temporary error is cached
too, for ``TEMPERROR_TTL`` (RFC 2308 §7 allows up to five minutes for a server
failure): with the nameservers unreachable, an outage costs one ``[dns] timeout`` per
name every ``TEMPERROR_TTL`` seconds, not one per message.  Nameservers come from
``[dns] nameservers`` ("HOST:PORT", so tests can use a loopback server), else
from /etc/resolv.conf.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver

from relist.core.facts import Answer, Facts, Question, Status

__all__ = ["Resolver"]

log = logging.getLogger("relist.dns")

MAX_TTL = 86400
NEGATIVE_TTL_DEFAULT = 300
TEMPERROR_TTL = 30  # s: short, so a recovered nameserver is asked again soon


def system_nameservers() -> list[tuple[str, int]]:
    try:
        return [(ns, 53) for ns in dns.resolver.Resolver().nameservers]
    except dns.resolver.NoResolverConfiguration:
        return []


class Resolver:
    def __init__(self, nameservers: list[tuple[str, int]] | None = None, timeout: float = 5.0,
                 cache_size: int = 50_000, temperror_ttl: float = TEMPERROR_TTL):
        self.nameservers = list(nameservers or system_nameservers())
        self.timeout = timeout
        self.cache_size = cache_size
        self.temperror_ttl = temperror_ttl
        self._cache: OrderedDict[Question, tuple[float, Answer]] = OrderedDict()
        self._inflight: dict[Question, asyncio.Future] = {}
        self.queries = 0     # sent to a nameserver (for the benchmark and tests)
        self.cache_hits = 0

    @classmethod
    def from_config(cls, config) -> Resolver:
        return cls(list(config.dns["nameservers"]), float(config.dns["timeout"]))

    async def resolve(self, questions) -> Facts:
        found: dict[Question, Answer] = {}
        missing = []
        for q in questions:
            hit = self.cached(q)
            if hit is None:
                missing.append(q)
            else:
                found[q] = hit
        if missing:
            # Only questions the cache cannot answer become tasks (gather wraps each).
            found.update(zip(missing, await asyncio.gather(*(self.answer(q) for q in missing))))
        return Facts(found)

    def cached(self, q: Question) -> Answer | None:
        """The cached answer while its TTL lasts, else None (the hot path: no task)."""
        hit = self._cache.get(q)
        if hit is None:
            return None
        expires, ans = hit
        if expires <= time.monotonic():
            del self._cache[q]
            return None
        self.cache_hits += 1
        return ans

    async def settle(self, ask, rounds: int = 16) -> Facts:
        """Resolve what ``ask(facts)`` asks, round by round, until it asks nothing new.

        The core asks its next DMARC tree-walk name only once it has the previous
        answer, so one round is not always enough; ``rounds`` bounds a runaway asker.
        """
        facts = Facts()
        for _ in range(rounds):
            wanted = [q for q in ask(facts) if q not in facts.answers]
            if not wanted:
                break
            facts = facts.merged(await self.resolve(wanted))
        return facts

    async def answer(self, q: Question) -> Answer:
        hit = self.cached(q)
        if hit is not None:
            return hit
        pending = self._inflight.get(q)
        if pending is not None:
            return await asyncio.shield(pending)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[q] = fut
        try:
            ans, ttl = await self._query(q)
            if ttl > 0:
                self._cache[q] = (time.monotonic() + ttl, ans)
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
            fut.set_result(ans)
            return ans
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: waiters re-raise it
            raise
        finally:
            del self._inflight[q]

    async def _query(self, q: Question) -> tuple[Answer, float]:
        try:
            qname = dns.name.from_text(q.qname)
        except dns.exception.DNSException as exc:
            return Answer(Status.ABSENT, (), f"bad name: {exc}"), NEGATIVE_TTL_DEFAULT
        rdtype = dns.rdatatype.from_text(q.rdtype)
        request = dns.message.make_query(qname, rdtype)
        last = "no nameservers configured"
        for host, port in self.nameservers:
            self.queries += 1
            try:
                response = await dns.asyncquery.udp(request, host, port=port, timeout=self.timeout)
                if response.flags & dns.flags.TC:
                    response = await dns.asyncquery.tcp(request, host, port=port, timeout=self.timeout)
            except dns.exception.Timeout:
                last = f"timeout ({host}:{port})"
                continue
            except (OSError, dns.exception.DNSException) as exc:
                last = f"{type(exc).__name__} ({host}:{port})"
                continue
            rcode = response.rcode()
            if rcode == dns.rcode.NXDOMAIN:
                return Answer(Status.ABSENT, (), "NXDOMAIN"), _negative_ttl(response)
            if rcode != dns.rcode.NOERROR:
                last = f"{dns.rcode.to_text(rcode)} ({host}:{port})"
                continue
            records, ttl = [], MAX_TTL
            for rrset in response.answer:
                if rrset.rdtype == rdtype:
                    ttl = min(ttl, rrset.ttl)
                    records.extend(b"".join(rd.strings) for rd in rrset)
            if not records:
                return Answer(Status.ABSENT, (), "NODATA"), _negative_ttl(response)
            return Answer(Status.FOUND, tuple(records)), ttl
        log.warning("DNS %s %s: temporary error: %s (cached for %g s)", q.qname, q.rdtype, last,
                    self.temperror_ttl)
        return Answer(Status.TEMPERROR, (), last), self.temperror_ttl


def _negative_ttl(response) -> float:
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            return min(rrset.ttl, rrset[0].minimum, MAX_TTL)
    return NEGATIVE_TTL_DEFAULT
