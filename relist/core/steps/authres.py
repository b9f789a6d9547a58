"""authres: remove forged Authentication-Results, prepend relist's own.

RFC 8601 §5: an incoming Authentication-Results field whose authserv-id is relist's
own (``[server] authserv_id``) did not come from relist, so it is deleted; left in
place, a poster could claim ``arc=pass`` and dkimpy's arc_sign would seal cv=pass on
its word.  Then relist's own field, from ``known.verdict``, goes on top (RFC 8601
§4.1: prepended, never reordered): each DKIM result with header.d, header.s and
header.b, ``arc=<cv>`` with header.oldest-pass, ``dmarc=<result>`` with the policy.
"""

from __future__ import annotations

from relist.core.auth import authserv_id, build_value
from relist.core.model import Action, Context, Work

NAME = "authres"
FIELD = "Authentication-Results"


def apply(work: Work, ctx: Context) -> Work:
    """See `relist.core.steps`."""
    verdict = work.known.verdict
    own = ctx.policy.authserv_id.lower()
    msg = work.message
    forged = [f for f in msg.get_all(FIELD) if authserv_id(f.text()) == own]
    if forged:
        msg = msg.remove_where(lambda f: f.name == FIELD.lower() and authserv_id(f.text()) == own)
    if verdict is None:
        detail = "no verdict (verify did not run); "
        if not forged:
            return work.note(NAME, Action.SKIPPED, detail + "nothing added")
        return work.note(NAME, Action.APPLIED, detail + f"removed {len(forged)} field(s) "
                         f"claiming authserv-id {own}", message=msg)
    field = msg.make_field(FIELD, build_value(ctx.policy.authserv_id, verdict))
    detail = f"added {verdict.summary()}"[:300]
    if forged:
        detail += f"; removed {len(forged)} incoming field(s) claiming authserv-id {own}"
    return work.note(NAME, Action.APPLIED, detail, message=msg.prepend(field))
