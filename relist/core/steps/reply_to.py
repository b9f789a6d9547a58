"""reply-to: set ``Reply-To:`` when the list asks for it (RFC 5322 §3.6.2).

What: ``reply_to = ""`` leaves the field alone; ``"list"`` sets it to the list's
posting address; any other value is used as the address.  An existing Reply-To is
replaced (all occurrences).  Why: some lists want replies to go to the list by
default; the choice is the list owner's, so the default is to leave the poster's
field untouched.
"""

from __future__ import annotations

from relist.core import mime
from relist.core.addresses import unusable
from relist.core.message import RawMessage
from relist.core.model import Context, Work
from relist.core.policy import ListPolicy
from relist.core.steps import apply_transform

__all__ = ["NAME", "apply", "transform"]

NAME = "reply-to"


def apply(work: Work, ctx: Context) -> Work:
    """See `relist.core.steps`."""
    return apply_transform(NAME, transform, work)


def transform(msg: RawMessage, lp: ListPolicy) -> tuple[RawMessage | None, str]:
    """The message with ``Reply-To:`` set, or None and the reason."""
    setting = lp.reply_to.strip()
    if not setting:
        return None, "reply_to not set: Reply-To left alone"
    value = lp.address if setting == "list" else setting
    if any(c in value for c in "\r\n\0") or "@" not in value or (setting == "list" and unusable(value)):
        return None, f"reply-to skipped: {value!r} is not a usable address"
    if not value.isascii():
        return None, f"reply-to skipped: {value!r} is not ASCII (use an RFC 2047 phrase)"
    old = msg.get_all("reply-to")
    if len(old) == 1 and old[0].text() == value:
        return None, f"Reply-To already {value}"
    new = msg.replace_field("Reply-To", msg.make_field("Reply-To", mime.fold("Reply-To", value)))
    was = f" (replaced {old[0].text()!r})" if old else ""
    return new, f"Reply-To: {value}{was}"
