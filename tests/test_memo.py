"""Caches keyed on message and DNS bytes keep small entries only (relist.core.memo).

A hostile sender controls d=, s=, c=, the From field and the DKIM-Signature field,
and a hostile DNS server the records; the core's caches of pure functions of those
must not grow with their size."""

from __future__ import annotations

from relist.core.verify import dkim_verify as auth_dkim
from relist.core.dkim import tags
from relist.core.verify import dmarc, key_records as keys
from relist.core.guard import _b_of
from relist.core.memo import small_lru_cache


def test_small_calls_are_cached_and_big_ones_computed_but_not_kept():
    calls = []

    @small_lru_cache(8, 10)
    def f(*args):
        calls.append(args)
        return len(args)

    assert f("abc", b"de") == 2 and f("abc", b"de") == 2
    assert len(calls) == 1 and f.cache_info().currsize == 1
    big = ("x" * 6, ("y" * 3, b"zz"))       # 11 characters in all, in a nested tuple
    assert f(*big) == 2 and f(*big) == 2
    assert len(calls) == 3 and f.cache_info().currsize == 1


def test_the_cores_caches_do_not_keep_hostile_sizes():
    junk = "a" * 100_000
    hostile = [
        (tags.valid_domain, (junk,)),
        (dmarc._from_field, (b"From: " + junk.encode() + b"@example.com\r\n",)),
        (dmarc._from_domain, (junk + "@example.com",)),
        (dmarc._targets, (junk + ".example.com",)),
        (dmarc._read, ("example.com", (b"v=DMARC1; p=none; " + junk.encode(),))),
        (auth_dkim._canon, (junk,)),
        (keys.parse_key_record, ("v=DKIM1; p=" + junk,)),
        (_b_of, (b"DKIM-Signature: v=1; b=" + junk.encode() + b"\r\n",)),
    ]
    for fn, args in hostile:
        fn.cache_clear()
        fn(*args)
        assert fn.cache_info().currsize == 0, fn.__name__
    # The usual, small values are kept.
    tags.valid_domain.cache_clear()
    assert tags.valid_domain("Example.COM") == "example.com"
    assert tags.valid_domain.cache_info().currsize == 1
