"""Verify one message now, outside the relay: resolve the DNS facts its signatures and
DMARC need (relist.edge.dns) and run the core's verification over them.  Shared by
``relist check``, ``relist explain FILE`` and the demo's receiver-side check."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

from relist.core.verify import questions, verify_message
from relist.core.message import RawMessage
from relist.edge.dns import Resolver

__all__ = ["check_bytes", "unusable"]


def check_bytes(raw: bytes, resolver: Resolver, *, max_signatures: int = 10, min_key_bits: int = 1024,
                now: datetime | None = None):
    msg = RawMessage.parse(raw)
    facts = asyncio.run(resolver.settle(lambda f: questions(msg, max_signatures, f)))
    return verify_message(msg, facts, now or datetime.now(timezone.utc),
                          max_signatures=max_signatures, min_key_bits=min_key_bits)


def unusable(raw: bytes) -> str | None:
    """Why ``raw`` is no message to check (empty, binary, no header field), else None."""
    if not raw.strip():
        return "empty: nothing to verify (expected an RFC 5322 message)"
    msg = RawMessage.parse(raw)
    header = raw[:len(raw) - len(msg.body) - len(msg.separator)]
    if not any(f.name for f in msg.fields):
        if b"\x00" in raw[:8192]:
            return "binary data (NUL bytes): not an RFC 5322 message"
        return ("no header field: not an RFC 5322 message (expected header fields, "
                "a blank line, then the body)")
    if b"\x00" in header:
        return "binary data (NUL bytes in the header): not an RFC 5322 message"
    return None
