"""Memoization that an attacker cannot turn into memory use.

Several pure functions of the core are cached because the same values come back
post after post (a signer's key record, a list's author domains).  Their arguments
come from messages and DNS answers, so a cache keyed on them must not keep large
values: ``small_lru_cache(maxsize, max_len)`` caches a call only when its str, bytes
and tuple arguments hold at most ``max_len`` characters in all; a bigger call is
computed and not kept.  Entries are thus bounded in number and in size.
"""

from __future__ import annotations

import functools

__all__ = ["small_lru_cache"]


def _size(value) -> int:
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, tuple):
        return sum(_size(v) for v in value)
    return 0


def small_lru_cache(maxsize: int, max_len: int):
    """``functools.lru_cache(maxsize)`` for calls whose arguments are small (module doc)."""
    def decorate(fn):
        cached = functools.lru_cache(maxsize=maxsize)(fn)

        @functools.wraps(fn)
        def call(*args):
            # (a loop, not sum() over a generator: these calls are many per post)
            size = 0
            for a in args:
                size += len(a) if type(a) is str or type(a) is bytes else _size(a)
            if size > max_len:
                return fn(*args)
            return cached(*args)
        call.cache_info = cached.cache_info
        call.cache_clear = cached.cache_clear
        return call
    return decorate
