"""authres: remove forged Authentication-Results, prepend relist's own.

RFC 8601 §5: an incoming Authentication-Results field whose authserv-id is relist's
own (``[server] authserv_id``) did not come from relist, so it is deleted; left in
place, a poster could claim ``arc=pass`` and dkimpy's arc_sign would seal cv=pass on
its word, and a reader could trust ``dkim=pass header.d=bank.example``.  The removal
happens in every mode: the pipeline runs this step ``attributed`` (never undone),
because a forgery does not become acceptable when the poster signed it; a poster
signature that covered the forged field breaks, the break is attributed to
``authres``, and the delivery rules (DMARC mitigation, strip) act on it.

Then relist's own field, from ``known.verdict``, goes on top (RFC 8601 §4.1:
prepended, never reordered): each DKIM result with header.d, header.s and header.b,
``arc=<cv>`` with header.oldest-pass, ``dmarc=<result>`` with the policy.  Prepended,
it is never the instance a signature selects (RFC 6376 §5.4.2: from the bottom),
except when a still-valid poster signature oversigns Authentication-Results (its h=
names it more times than the message has it, RFC 6376 §8.15): then relist's field is
not added (the note says which signature), rather than break that signature for a
field that only repeats what relist records anyway.
"""

from __future__ import annotations

from relist.core.verify import authserv_id, build_value
from relist.core.guard import label, oversigning, recheck
from relist.core.message import RawMessage
from relist.core.model import Action, Context, Work

__all__ = ["FIELD", "NAME", "apply", "signed_absent"]

NAME = "authres"
FIELD = "Authentication-Results"
_LOWER = FIELD.lower()


def signed_absent(work: Work, msg: RawMessage, ctx: Context) -> list[str]:
    """The poster signatures (``d/s``) that still verify over ``msg`` (``work``'s message
    with the forgeries removed) and sign the absence of one more Authentication-Results."""
    sigs = list(oversigning(work.known, msg, _LOWER))
    if sigs and msg is not work.message:        # the removal may have broken some
        results = recheck(msg, sigs, ctx, body_same=True, before=work.message)
        sigs = [s for s in sigs if results[s.b].passed]
    return [label(s) for s in sigs]


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
    removed = f"removed {len(forged)} incoming field(s) claiming authserv-id {own}" if forged else ""
    held = signed_absent(work, msg, ctx)
    if held:
        detail = (f"not added: {', '.join(held)} sign(s) the absence of another {FIELD} "
                  "(h= names it more times than the message has it)")
        if not forged:
            return work.note(NAME, Action.SKIPPED, detail)
        return work.note(NAME, Action.APPLIED, f"{removed}; {detail}", message=msg)
    field = msg.make_field(FIELD, build_value(ctx.policy.authserv_id, verdict))
    detail = f"added {verdict.summary()}"[:300]
    if forged:
        detail += "; " + removed
    return work.note(NAME, Action.APPLIED, detail, message=msg.prepend(field))
