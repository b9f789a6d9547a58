"""relist ids: the name of one transaction in the log, the store, and the ``Received:``
field relist adds (``with ESMTP id ...``), in the manner of a Postfix queue id.

An id is 16 characters of ``0-9`` and the consonants ``BCDFGHJKLMNPQRSTVWXYZ`` (no
vowels, so no words; upper case): 9 for the time, in milliseconds since 1970 (base 31,
most significant first: enough until the year 2807), then 7 drawn from ``os.urandom``.

**Time first**, so that a store's new rows sort after its old ones: the primary-key
index of each store table (``transactions``, ``signatures``, ``verdicts``) grows at its
end, where a commit dirties a few pages, instead of at random places all over an index
that outgrew the cache.  With the 12 random characters relist used before, the writer
thread spent twice the CPU per record on a store of 1,000,000 transactions
(``bench/bench_store.py --prefill 1000000``); the gap widens as the store grows, and more
so once the indexes no longer fit in memory.

**Unique**: within one process no id repeats within a millisecond (a drawn part already
used in that millisecond is drawn again); across processes (the workers, instances
sharing one store) two ids collide only when made in the same millisecond with the same
7 drawn characters, one chance in 31**7 (2.75e10) per such pair.  Purely random 12
characters collide by the birthday bound over the whole store instead.

Older 12-character ids (all drawn) stay valid: in the store, and in the ``Received:``
fields of the bounces that come back (``relist.core.bounce.returned`` reads both).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

__all__ = ["ALPHABET", "LENGTH", "IdMaker", "new_relist_id"]

ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXYZ"   # in ASCII order: ids sort as their numbers
TIME_DIGITS = 9
DRAWN_DIGITS = 7
LENGTH = TIME_DIGITS + DRAWN_DIGITS
_BASE = len(ALPHABET)
_DRAWN = _BASE ** DRAWN_DIGITS


def _digits(n: int, width: int) -> str:
    """``n`` in base 31, ``width`` digits, most significant first."""
    out = [""] * width
    for i in range(width - 1, -1, -1):
        n, r = divmod(n, _BASE)
        out[i] = ALPHABET[r]
    return "".join(out)


class IdMaker:
    """Makes relist ids; one per process (``new_relist_id``), used by the event loop's
    thread only.  ``clock`` (ns since 1970) and ``draw`` (n random bytes) are for tests."""

    def __init__(self, clock: Callable[[], int] = time.time_ns,
                 draw: Callable[[int], bytes] = os.urandom):
        self._clock, self._draw = clock, draw
        self._ms = -1
        self._used: set[int] = set()

    def __call__(self) -> str:
        ms = self._clock() // 1_000_000
        if ms != self._ms:
            self._ms, self._used = ms, set()
        while True:
            # 8 bytes for 7 digits: the modulo's bias is below 2e-9.
            drawn = int.from_bytes(self._draw(8), "big") % _DRAWN
            if drawn not in self._used:
                break
        self._used.add(drawn)
        return _digits(ms, TIME_DIGITS) + _digits(drawn, DRAWN_DIGITS)


new_relist_id = IdMaker()
