"""Verification: rate with a warm DNS cache, and DNS queries under 1000 concurrent posts.

Run by hand:  .venv/bin/python bench/bench_verify.py [--messages 3000] [--concurrent 1000]

A 4 KiB post with one rsa-sha256 (2048-bit) signature from poster.example, whose key
and DMARC record are served by a DNS server on 127.0.0.1 over UDP.
1. warm cache: the edge resolves the core's questions (all cached after the first
   post) and the core verifies: messages/s, in one process (one core).
2. cold cache, 1000 posts from that signer arriving at once: how many queries reach
   the DNS server (in-flight de-duplication should make it one per name).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

# This tree's relist, not the one the virtualenv has installed (a worktree of another
# revision, compared against this one, must measure its own code).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relist.core.verify import questions, verify_message  # noqa: E402
from relist.core.facts import Facts  # noqa: E402
from relist.core.message import RawMessage  # noqa: E402
from relist.edge.dns import Resolver  # noqa: E402
from relist.sandbox.dnsserver import DNSServer  # noqa: E402


def post() -> tuple[bytes, dict]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    pub = base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    body = b"".join(b"Line %04d of a list post, long enough to be realistic text.\r\n" % i for i in range(64))
    msg = (b"From: Poster <poster@poster.example>\r\nTo: dev@lists.example.org\r\nSubject: bench\r\n"
           b"Date: Sat, 21 Nov 2026 10:00:00 +0000\r\nMessage-ID: <bench@poster.example>\r\n\r\n" + body)
    sig = dkim.sign(msg, b"s1", b"poster.example", pem, include_headers=[b"from", b"to", b"subject", b"date"])
    zone = {"s1._domainkey.poster.example": [f"v=DKIM1; k=rsa; p={pub}"],
            "_dmarc.poster.example": ["v=DMARC1; p=reject"]}
    return sig + msg, zone


async def facts_for(msg: RawMessage, resolver: Resolver) -> Facts:
    return await resolver.settle(lambda facts: questions(msg, 10, facts))


async def warm(raw: bytes, resolver: Resolver, n: int) -> float:
    now = datetime.now(timezone.utc)
    await facts_for(RawMessage.parse(raw), resolver)   # fill the cache
    started = time.perf_counter()
    for _ in range(n):
        msg = RawMessage.parse(raw)
        verdict = verify_message(msg, await facts_for(msg, resolver), now)
    elapsed = time.perf_counter() - started
    assert str(verdict.signatures[0].result) == "pass", verdict.summary()
    return n / elapsed


async def concurrent(raw: bytes, resolver: Resolver, n: int) -> None:
    msg = RawMessage.parse(raw)
    await asyncio.gather(*(facts_for(msg, resolver) for _ in range(n)))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--concurrent", type=int, default=1000)
    args = ap.parse_args()
    raw, zone = post()
    with DNSServer(zone) as server:
        rate = asyncio.run(warm(raw, Resolver([server.address], 2), args.messages))
        print(f"warm cache: {rate:,.0f} messages/s verified (4 KiB, one rsa-sha256 2048-bit signature "
              f"+ DMARC), one process")
        before = len(server.queries)
        resolver = Resolver([server.address], 2)
        asyncio.run(concurrent(raw, resolver, args.concurrent))
        asked = server.queries[before:]
        print(f"{args.concurrent} concurrent posts from one signer, cold cache: {len(asked)} DNS queries "
              f"({', '.join(sorted(set(asked)))})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
