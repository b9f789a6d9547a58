"""ingress-list: which list an incoming post (ingress leg) is for; bytes are not changed.

On the ingress leg (MTA -> relist -> Mailman) the list is the one the post is
addressed to: an envelope recipient that is a configured list's posting address
(``LIST@DOMAIN``), else a List-Id field naming a configured list.  The record then
carries the list (``list_address``), as egress records do.  Mail for a list's other
addresses (``LIST-bounces@``, ``-request@``, ``-owner@``...) is not a post: no list
here (bounces are recorded by the bounce path, ``relist.app.Relay.bounce``).
The fact ``leg = "ingress"`` marks the record as the ingress leg's, so the store never
takes it for the egress transaction of a post (``relist.edge.store``).
"""

from __future__ import annotations

from dataclasses import replace

from relist.core.model import Action, Context, Work
from relist.core.steps.identify import list_id_value

__all__ = ["NAME", "apply"]

NAME = "ingress-list"


def apply(work: Work, ctx: Context) -> Work:
    """See `relist.core.steps`."""
    policy = ctx.policy
    known = work.known.found(leg="ingress")
    configured = {lp.address: lp for lp in policy.lists}
    for rcpt in ctx.envelope.rcpt_tos:
        lp = configured.get((rcpt or "").lower())
        if lp is not None:
            return work.note(NAME, Action.RECORDED, f"{lp.address} (from recipient)",
                             known=replace(known, list_address=lp.address, list_source="recipient",
                                                   list_policy=lp))
    list_id_text = work.message.header_text("list-id")
    lid = list_id_value(list_id_text) if list_id_text else None
    lp = policy.list_for_id(lid) if lid else None
    if lp is not None:
        return work.note(NAME, Action.RECORDED, f"{lp.address} (from list-id)",
                         known=replace(known, list_address=lp.address, list_source="list-id",
                                               list_policy=lp))
    return work.note(NAME, Action.SKIPPED, "no list: no recipient is a configured list's posting "
                                           "address and no List-Id names one", known=known)
