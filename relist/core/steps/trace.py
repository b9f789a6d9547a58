"""trace: prepend a Received: field (RFC 5321 §4.4).

Added first in the output, before any signing, so that relist's own signature (which
does not cover Received) stays valid and the hop is visible to postmasters.  Its
``with`` names the protocol relist received the message over (RFC 3848):
``ESMTP`` on the egress leg, ``LMTP`` on the ingress leg.
``[server] add_received = false`` turns it off (then a message that no other step
changed goes out byte-identical).
"""

from __future__ import annotations

import re
from email.utils import format_datetime

from relist.core.model import Action, Context, Work

__all__ = ["NAME", "apply", "received_value"]

NAME = "trace"

_SAFE = re.compile(r"[^A-Za-z0-9.\-:\[\]_]")
# RFC 3848 "with" protocol types (the edge sets Envelope.protocol): ESMTP for the
# egress leg, LMTP for the ingress leg (relist receives it over LMTP, RFC 2033).
_PROTOCOLS = frozenset({"SMTP", "ESMTP", "ESMTPA", "ESMTPS", "ESMTPSA", "LMTP", "LMTPA", "LMTPS", "LMTPSA"})


def received_value(ctx: Context) -> str:
    env = ctx.envelope
    helo = _SAFE.sub("", env.client_helo)[:64] or "unknown"
    ip = _SAFE.sub("", env.client_ip) or "unknown"
    protocol = env.protocol if env.protocol in _PROTOCOLS else "ESMTP"
    parts = [f"from {helo} ([{ip}])", f"by {ctx.policy.hostname} (relist)",
             f"with {protocol} id {ctx.relist_id}"]
    if len(env.rcpt_tos) == 1 and "\r" not in env.rcpt_tos[0] and "\n" not in env.rcpt_tos[0]:
        parts.append(f"for <{env.rcpt_tos[0]}>")
    return "\r\n\t".join(parts) + "; " + format_datetime(ctx.now)


def apply(work: Work, ctx: Context) -> Work:
    """See `relist.core.steps`."""
    if not ctx.policy.add_received:
        return work.note(NAME, Action.SKIPPED, "add_received = false")
    field = work.message.make_field("Received", received_value(ctx))
    return work.note(NAME, Action.APPLIED, "", message=work.message.prepend(field))
