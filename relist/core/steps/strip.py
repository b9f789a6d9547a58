"""strip: in resign mode, remove the poster's signatures that relist replaces.

What (resign mode only): ``strip = "all"`` removes every original DKIM-Signature;
``"broken"`` removes only those that do not verify on the current bytes (the ones
invalid on arrival and the ones a step broke since, from relist.core.guard's
tracking, so nothing is verified again).  Every DomainKey-Signature goes (RFC 4870
is historic, and Mailman's changes break it anyway).  ARC fields stay: they are the
chain relist's own seal extends (RFC 8617 §5.1).  Preserve mode keeps everything.

Why: a broken signature is noise at best, and some receivers count a failing
signature against the message; after re-signing, the list's signature is the one
that speaks for the post.  Runs after the transformations, so "broken" means broken
by what relist and Mailman did.
"""

from __future__ import annotations

from relist.core.auth.tags import TagError, parse_tags
from relist.core.guard import b_value, track
from relist.core.message import HeaderField
from relist.core.model import Action, Context, Work

NAME = "strip"

DKIM, DK = "dkim-signature", "domainkey-signature"


def _who(field: HeaderField) -> str:
    try:
        tags = parse_tags(field.value)
    except TagError:
        return "(unparsed)"
    return f"{tags.get('d', '?').lower()}/{tags.get('s', '?')}"


def apply(work: Work, ctx: Context) -> Work:
    """See `relist.core.steps`."""
    lp = work.known.list_policy
    if lp is None:
        return work.note(NAME, Action.SKIPPED, "no list")
    if work.known.mode_chosen != "resign":
        return work.note(NAME, Action.SKIPPED,
                         f"{work.known.mode_chosen or 'no'} mode: original signatures kept")
    work = track(work, ctx)
    keep = set(work.known.intact or ()) if lp.strip == "broken" else set()
    gone = [f for f in work.message.fields
            if f.name == DK or (f.name == DKIM and b_value(f) not in keep)]
    if not gone:
        return work.note(NAME, Action.SKIPPED, f"strip = {lp.strip}: nothing to remove")
    kept = len(work.message.get_all(DKIM)) - sum(f.name == DKIM for f in gone)
    ids = {id(f) for f in gone}
    msg = work.message.remove_where(lambda f: id(f) in ids)
    parts = [f"{n} {name}" for n, name in ((sum(f.name == DKIM for f in gone), "DKIM-Signature"),
                                           (sum(f.name == DK for f in gone), "DomainKey-Signature")) if n]
    detail = (f"strip = {lp.strip}: removed " + ", ".join(parts)
              + " (" + ", ".join(_who(f) for f in gone) + ")"
              + (f"; kept {kept} valid" if kept else "") + "; ARC fields kept")
    return work.note(NAME, Action.APPLIED, detail, message=msg)
