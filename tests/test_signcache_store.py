"""SignCache's bookkeeping (relist.core.signcache): a dict under a read-only view, its
byte total kept as entries come and go.  Hypothesis drives stores and look-ups with
mixed lifetimes against what the cache promises: bounded in entries and bytes, never
an expired entry, the newest always kept, and nothing younger evicted while something
older and still live stays."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relist.core.model import Envelope, Record
from relist.core.signcache import Entry, SignCache

NOW = datetime(2026, 12, 7, tzinfo=timezone.utc)
RECORD = Record("R", NOW, Envelope("a@example.org", ("b@example.org",)), "", None, 0, 0, ())


def entry(size: int, expires: datetime) -> Entry:
    return Entry((), (), False, b"\r\n", RECORD, expires, b"", b"x" * size)


ops = st.lists(st.tuples(st.integers(0, 9),            # key
                         st.integers(1, 40),           # size
                         st.sampled_from([5, 30, 300]),  # ttl (lists may differ)
                         st.integers(0, 20)),          # seconds since the last op
               max_size=60)


@settings(max_examples=300, deadline=None)
@given(ops, st.integers(1, 6), st.integers(40, 200))
def test_the_cache_keeps_its_promises(steps, max_entries, max_bytes):
    cache = SignCache(max_entries=max_entries, max_bytes=max_bytes)
    now = NOW
    stored: dict[str, tuple[int, Entry]] = {}     # key -> (when, as last stored)
    for n, (k, size, ttl, wait) in enumerate(steps):
        now += timedelta(seconds=wait)
        key = f"k{k}"
        e = entry(size, now + timedelta(seconds=ttl))
        before = cache
        cache = cache.store(key, e, now)
        if e.size > max_bytes // 4:
            assert cache is before                        # too big to keep: nothing changes
        else:
            stored[key] = (n, e)
            assert cache.lookup(key, now) is e            # the newest is always kept
        assert len(cache.entries) <= max_entries
        assert cache.total == sum(x.size for x in cache.entries.values()) <= max_bytes
        assert list(cache.entries) == sorted(cache.entries, key=lambda x: stored[x][0])  # oldest first
        if cache is not before:   # what expired at the front went (its memory with it)
            assert now < next(iter(cache.entries.values())).expires
        oldest = min((stored[x][0] for x in cache.entries), default=n)
        for key2, (when, kept) in stored.items():
            found = cache.lookup(key2, now)
            assert found is None or (found is kept and now < kept.expires)   # never expired
            if when > oldest and now < kept.expires:
                assert cache.entries.get(key2) is kept    # younger and live: not evicted


def test_the_entries_cannot_be_changed_from_outside():
    cache = SignCache().store("k", entry(3, NOW + timedelta(seconds=9)), NOW)
    with pytest.raises(TypeError):
        cache.entries["x"] = entry(1, NOW)                # type: ignore[index]
    again = cache.store("k2", entry(3, NOW + timedelta(seconds=9)), NOW)
    assert list(cache.entries) == ["k"] and list(again.entries) == ["k", "k2"]   # a value
