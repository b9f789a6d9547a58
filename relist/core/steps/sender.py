"""sender: set ``Sender:`` to the list's bounces address (RFC 5322 §3.6.2).

What: ``Sender: <list>-bounces@<domain>`` replaces any Sender the post carried
(``add_sender = false`` turns it off).  Why: the list, not the author, is the agent
that transmits the message; the field names it, as the envelope sender already
does, which helps receivers and MUAs ("on behalf of") and ties the message to the
domain relist signs for.
"""

from __future__ import annotations

from relist.core.addresses import unusable
from relist.core.message import RawMessage
from relist.core.model import Context, Work
from relist.core.policy import ListPolicy
from relist.core.steps import apply_transform

__all__ = ["NAME", "apply", "transform"]

NAME = "sender"


def apply(work: Work, ctx: Context) -> Work:
    """See `relist.core.steps`."""
    return apply_transform(NAME, transform, work)


def transform(msg: RawMessage, lp: ListPolicy) -> tuple[RawMessage | None, str]:
    """The message with ``Sender:`` set, or None and the reason."""
    if not lp.add_sender:
        return None, "add_sender = false"
    why = unusable(lp.address)
    if why:
        return None, f"list address {lp.address!r} {why}"
    address = lp.bounces_address
    old = msg.get_all("sender")
    if len(old) == 1 and old[0].text() == address:
        return None, f"Sender already {address}"
    new = msg.replace_field("Sender", msg.make_field("Sender", address))
    was = f" (replaced {old[0].text()!r})" if old else ""
    return new, f"Sender: {address}{was}"
