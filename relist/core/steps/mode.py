"""mode: preserve the poster's signature, or re-sign as the list, for this post.

What: the list's ``mode`` decides; ``auto`` decides per post: **preserve** when the
post arrived with a valid DKIM signature aligned with the From domain (RFC 9989
§4.4.1) whose DMARC policy, after t=y (§4.7), is quarantine or reject; otherwise
**resign**.  The choice and why go into ``known.mode_chosen`` and the note.

Why: a post whose author domain asks receivers to reject or quarantine unaligned mail
passes DMARC at the receivers only while that signature survives, so relist then
changes only what keeps it valid (the transformation steps are guarded,
relist.core.guard); any other post gains nothing from its signature and is re-signed
under the list's domain.  Runs after verify, whose verdict it reads.
"""

from __future__ import annotations

from relist.core.model import Action, Context, Work

NAME = "mode"

PRESERVE, RESIGN = "preserve", "resign"
STRICT_POLICIES = ("quarantine", "reject")


def choose(verdict) -> tuple[str, str]:
    """``auto``: (mode, why) from the arrival verdict."""
    if verdict is None:
        return RESIGN, "not verified"
    dmarc = verdict.dmarc
    if not dmarc.policy:
        return RESIGN, f"no DMARC policy for {dmarc.domain or 'the From domain'} (dmarc={dmarc.result})"
    passing = {(s.domain, s.selector) for s in verdict.passing("dkim")}
    aligned = [a for a in dmarc.alignment if a.aligned and (a.domain, a.selector) in passing]
    if not aligned:
        return RESIGN, f"no valid DKIM signature aligned with the From domain {dmarc.domain or '?'}"
    signer = f"{aligned[0].domain}/{aligned[0].selector}"
    policy = dmarc.effective_policy or "none"
    testing = " after t=y" if dmarc.testing else ""
    if policy not in STRICT_POLICIES:
        return RESIGN, f"{signer} is aligned but the DMARC policy of {dmarc.domain} is {policy}{testing}"
    return PRESERVE, f"{signer} is valid and aligned; DMARC policy of {dmarc.domain} is {policy}{testing}"


def apply(work: Work, ctx: Context) -> Work:
    """See `relist.core.steps`."""
    lp = work.known.list_policy
    if lp is None:
        return work.note(NAME, Action.SKIPPED, "no list")
    if lp.mode == "auto":
        chosen, why = choose(work.known.verdict)
        detail = f"{chosen} (auto: {why})"
    elif lp.mode in (PRESERVE, RESIGN):
        chosen, detail = lp.mode, f"{lp.mode} (the list's mode)"
    else:
        chosen, detail = RESIGN, f"resign (unknown mode {lp.mode!r})"
    return work.note(NAME, Action.RECORDED, detail, known=work.learn(mode_chosen=chosen))
