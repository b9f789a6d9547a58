"""remove-headers: drop the header fields the list names in ``remove_headers``.

What: every field whose name matches one of the configured names (case-insensitive,
RFC 5322 §1.2.2) is removed, all occurrences; every other field keeps its bytes and
its position.  Why: lists strip fields that leak internals or confuse members
(X-Originating-IP, Disposition-Notification-To, Return-Receipt-To, ...).
"""

from __future__ import annotations

from relist.core.message import RawMessage
from relist.core.model import Context, Work
from relist.core.policy import ListPolicy
from relist.core.steps import apply_transform

__all__ = ["NAME", "apply", "transform"]

NAME = "remove-headers"


def apply(work: Work, ctx: Context) -> Work:
    """See `relist.core.steps`."""
    return apply_transform(NAME, transform, work)


def transform(msg: RawMessage, lp: ListPolicy) -> tuple[RawMessage | None, str]:
    """The message without the configured fields, or None and the reason."""
    names = {n.strip().rstrip(":").strip().lower() for n in lp.remove_headers} - {""}
    if not names:
        return None, "no fields configured"
    counts = {n: len(msg.get_all(n)) for n in sorted(names)}
    removed = {n: c for n, c in counts.items() if c}
    if not removed:
        return None, "none of the configured fields present: " + ", ".join(sorted(names))
    new = msg.remove_where(lambda f: f.name in names)
    return new, "removed " + ", ".join(f"{n} ({c})" for n, c in removed.items())
