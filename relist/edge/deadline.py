"""A deadline that moves often, kept by one event-loop timer.

The client session's idle timeout moves at every command, and the upstream reply
timeout at every reply.  A timer made and cancelled at each move (asyncio.timeout,
aiosmtpd's own) costs a few µs each, many times a transaction (issue 17).  Here a
move only records the new time; the one timer is re-armed when it fires before the
deadline, or at once when a move makes the deadline earlier than the timer.
"""

from __future__ import annotations

import asyncio
from typing import Callable

__all__ = ["Deadline"]


class Deadline:
    """``set(seconds)`` moves the deadline to that long from now; ``clear()`` lifts it;
    if the time passes with the deadline set, ``on_late()`` is called, once.
    ``cancel()`` lifts it and stops the timer (the connection is closing)."""

    __slots__ = ("_loop", "_on_late", "_at", "_handle", "_handle_at")

    def __init__(self, loop: asyncio.AbstractEventLoop, on_late: Callable[[], None]):
        self._loop = loop
        self._on_late = on_late
        self._at: float | None = None     # the deadline (loop time); None: none set
        self._handle: asyncio.TimerHandle | None = None
        self._handle_at = 0.0             # when the timer fires

    def set(self, seconds: float) -> None:
        at = self._at = self._loop.time() + seconds
        if self._handle is None or at < self._handle_at:
            if self._handle is not None:
                self._handle.cancel()
            self._arm(at)

    def clear(self) -> None:
        self._at = None        # the timer, if armed, finds nothing to do when it fires

    def cancel(self) -> None:
        self._at = None
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self, at: float) -> None:
        self._handle_at = at
        self._handle = self._loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._handle = None
        at = self._at
        if at is None:
            return             # lifted since: the next set() arms it again
        if self._loop.time() < at:
            self._arm(at)      # moved later since it was armed
            return
        self._at = None
        self._on_late()
