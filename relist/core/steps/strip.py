"""strip: remove the poster's signatures that the bytes as they leave break.

What, in every mode: with ``strip = "broken"`` (the default) every original
DKIM-Signature that does not verify on the final bytes goes (one whose key lookup
failed for the moment, a DNS temperror, is kept: the receiver may verify it): the ones invalid on
arrival and the ones broken since (by Mailman, a transformation, the downgrade or DMARC
mitigation), known from relist.core.guard's tracking, so nothing is verified again.
A signature that still verifies stays, whatever the mode: it may give the post a DMARC
pass the list's own signature cannot.  ``strip = "all"`` (an explicit choice) removes
every original DKIM-Signature in resign mode; preserve keeps the ones that survive.
In resign mode every DomainKey-Signature goes (RFC 4870 is historic, and Mailman's
changes break it anyway).  ARC fields stay: they are the chain relist's own seal
extends (RFC 8617 §5.1).

Why: a broken signature is noise at best, and some receivers count a failing
signature against the message.  Runs after every change, DMARC mitigation included,
and just before signing, so "broken" means broken in what leaves.
"""

from __future__ import annotations

from relist.core.verify.results import Result
from relist.core.dkim.tags import TagError, parse_tags
from relist.core.guard import b_value, track
from relist.core.message import HeaderField
from relist.core.model import Action, Context, Work

__all__ = ["NAME", "apply"]

NAME = "strip"

DKIM, DK = "dkim-signature", "domainkey-signature"


def _who(field: HeaderField) -> str:
    try:
        tags = parse_tags(field.value)
    except TagError:
        return "(unparsed)"
    return f"{tags.get('d', '?').lower()}/{tags.get('s', '?')}"


def _undecided(verdict) -> set[str]:
    """b= values of the signatures whose arrival check could not be decided (DNS
    temperror): the receiver may well verify them; only a definite failure goes."""
    if verdict is None:
        return set()
    return {s.b for s in verdict.dkim if s.b and s.result == Result.TEMPERROR}


def apply(work: Work, ctx: Context) -> Work:
    """See `relist.core.steps`."""
    lp = work.known.list_policy
    if lp is None:
        return work.note(NAME, Action.SKIPPED, "no list")
    resign = work.known.mode_chosen == "resign"
    work = track(work, ctx)
    everything = resign and lp.strip == "all"
    keep = set() if everything else set(work.known.intact or ()) | _undecided(work.known.verdict)
    gone = [f for f in work.message.fields
            if (f.name == DK and resign) or (f.name == DKIM and b_value(f) not in keep)]
    rule = f"strip = {lp.strip}" + ("" if everything or lp.strip == "broken" else
                                    f" (applies to resign mode; {work.known.mode_chosen} keeps valid ones)")
    if not gone:
        return work.note(NAME, Action.SKIPPED, f"{rule}: nothing to remove")
    kept = len(work.message.get_all(DKIM)) - sum(f.name == DKIM for f in gone)
    ids = {id(f) for f in gone}
    msg = work.message.remove_where(lambda f: id(f) in ids)
    parts = []
    for name, label, why in ((DKIM, "DKIM-Signature", "" if everything else " the final bytes break"),
                             (DK, "DomainKey-Signature", "")):
        mine = [f for f in gone if f.name == name]
        if mine:
            parts.append(f"{len(mine)} {label}{why} ({', '.join(_who(f) for f in mine)})")
    detail = (f"{rule}: removed " + ", ".join(parts) + (f"; kept {kept} valid" if kept else "")
              + "; ARC fields kept")
    return work.note(NAME, Action.APPLIED, detail, message=msg)
