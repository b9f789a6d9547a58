"""parse: read the identities the other steps need; bytes are not changed.

The split into header fields and body happens in ``RawMessage.parse`` (byte-faithful);
this step records the Message-ID and any header lines that are not well-formed fields,
so a malformed message is relayed unchanged and its defects are on record.
"""

from __future__ import annotations

from relist.core.model import Action, Context, Work

__all__ = ["NAME", "apply"]

NAME = "parse"


def apply(work: Work, ctx: Context) -> Work:
    """See `relist.core.steps`."""
    msg = work.message
    message_id = msg.header_text("message-id") or ""
    defects = msg.defects
    if not msg.fields:
        defects = defects + ("no header fields",)
    detail = "; ".join(defects[:5]) if defects else f"{len(msg.fields)} fields, body {len(msg.body)} bytes"
    return work.note(NAME, Action.RECORDED, detail, known=work.learn(message_id=message_id))
