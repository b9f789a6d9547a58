"""Errors named by who must act.  Only ``core.pipeline`` turns them into replies.

* ``RejectMessage``: the message itself is unacceptable by policy -> 5xx, the sender
  must change something.
* ``DeferMessage``: a transient condition -> 4xx, the sender retries.

Anything else raised by a step is a bug in relist.  The same bytes would raise it
again on every retry, so ``relist.core.safety`` catches it in the core: the step is
skipped and the record says why, or (``sign`` after From munging) the post is refused
for good.  Only ``MemoryError`` reaches the edge, which logs a traceback and answers
451 4.3.0, never 5xx (Mailman treats >= 500, except 552, as permanent).
"""

from __future__ import annotations

from relist.core.model import Reply

__all__ = ["ConfigError", "DeferMessage", "RejectMessage", "RelistError"]


class RelistError(Exception):
    pass


class ConfigError(RelistError):
    """A configuration value is wrong; the message names the key and the value."""


class RejectMessage(RelistError):
    def __init__(self, text: str, code: int = 550, enhanced: str = "5.7.1"):
        super().__init__(text)
        self.reply = Reply(code, enhanced, text)


class DeferMessage(RelistError):
    def __init__(self, text: str, code: int = 451, enhanced: str = "4.3.0"):
        super().__init__(text)
        self.reply = Reply(code, enhanced, text)
