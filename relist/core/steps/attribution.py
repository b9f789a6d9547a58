"""attribution: for each poster signature valid on arrival, which step broke it.

What: the last step.  Each signature that verified on arrival is named with the
first step that broke it (``mailman`` when it was already broken in what Mailman
sent on the egress leg), or ``survived``.  Guarded steps (relist.core.guard) record
breakage as they go; here, if a step that is not guarded changed bytes a surviving
signature covers, that signature is verified once more, and a break is attributed
to ``unguarded step``.  The list goes to ``known.breakage``, this step's note and
the record's ``extra`` ("breakage").

Why: the record should say where the poster's signature died: in Mailman, in one of
relist's transformations, or nowhere; that is what an operator needs to decide
between preserve and resign for a list.
"""

from __future__ import annotations


from relist.core.guard import UNGUARDED, arrival_valid, catch_up, label, track
from relist.core.model import Action, Context, Work, replace

NAME = "attribution"
SURVIVED = "survived"

__all__ = ["NAME", "SURVIVED", "UNGUARDED", "apply"]


def apply(work: Work, ctx: Context) -> Work:
    """See `relist.core.steps`."""
    valid = arrival_valid(work.known)
    if not valid:
        return work.note(NAME, Action.SKIPPED, "no signature verified on arrival")
    work = catch_up(track(work, ctx), ctx)   # a change no guarded step saw: "unguarded step"
    k = work.known
    alive = set(k.intact or ())
    breakage = k.breakage + tuple((label(s), SURVIVED) for s in valid if s.b in alive)
    known = replace(k, breakage=breakage).found(breakage=tuple(f"{who}: {step}" for who, step in breakage))
    detail = "; ".join(f"{who}: {step}" for who, step in breakage)
    return work.note(NAME, Action.RECORDED, detail[:500], known=known)
