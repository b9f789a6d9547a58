"""arc-seal: add the list's ARC set (RFC 8617 §5.1) over the signed message.

What: with ``arc_seal`` on and an RSA key (ARC is rsa-sha256 only, RFC 8617 §4.1.3),
the next ARC-Authentication-Results / ARC-Message-Signature / ARC-Seal set.  The chain
status cv= is relist's own validation of the chain as the post arrived
(``known.verdict.arc.cv``: "none" when it had no ARC sets), and the AAR payload is
relist's own Authentication-Results text rebuilt from that verdict: an upstream
Authentication-Results field is never read, so a poster cannot make relist vouch for
``arc=pass``.  The AMS h= is the DKIM signature's list plus every DKIM-Signature.

Why last: the AMS should cover the list's DKIM-Signature (RFC 8617 §4.1.2), so it
runs after ``sign``; anything changed after the seal would break it.  Right after it,
the message is the one ``sign`` prepared plus its DKIM-Signature(s): ``prepare`` takes
the sign step's work (``known.handoff``, a ``relist.core.sign.signature.Handoff``), the
body hash with it.

A message that cannot be sealed (a ``SignError`` on these bytes, a signing domain
that is no domain name) leaves without the seal, with the reason in the note: the
DKIM signature, not the seal, carries DMARC alignment, so nothing is worse than
without an ARC set (and a bug here is skipped the same way by the safety net,
relist.core.safety).  Without a list signature (``sign = false``), the message is
sealed as ``sign`` would have signed it (``signable``).
"""

from __future__ import annotations

from relist.core.verify import build_value
from relist.core.dkim.tags import valid_domain
from relist.core.model import Action, Context, Work
from relist.core.sign import SignError, oversigned, prepare, seal_arc
from relist.core.sign.step_support import as_field, header_names, key_for, signable, signing_domain

__all__ = ["NAME", "apply", "results_text"]

NAME = "arc-seal"


def results_text(authserv: str, verdict) -> str:
    """relist's Authentication-Results value without the authserv-id, one result per
    line (the form ``seal_arc`` writes into the AAR)."""
    value = build_value(authserv, verdict)
    _, _, rest = value.partition(";\r\n\t")
    return rest.replace("\r\n\t", "\n")


def apply(work: Work, ctx: Context) -> Work:
    """See `relist.core.steps`."""
    lp = work.known.list_policy
    if lp is None:
        return work.note(NAME, Action.SKIPPED, "no list")
    if not lp.arc_seal:
        return work.note(NAME, Action.SKIPPED, "arc_seal = false")
    if not lp.selector:
        return work.note(NAME, Action.SKIPPED, "no RSA selector configured (ARC is rsa-sha256 only)")
    verdict = work.known.verdict
    if verdict is None:
        return work.note(NAME, Action.SKIPPED, "no verification verdict: relist cannot state cv=")
    key = key_for(ctx, lp.private_key, f"rsa selector {lp.selector} for {lp.address}")
    domain = signing_domain(lp)
    if valid_domain(domain) != domain:
        return work.note(NAME, Action.SKIPPED, f"cannot seal: the signing domain {domain!r} "
                                               "is not a domain name")
    handoff = work.known.handoff
    if handoff is not None and handoff.message is work.message:
        msg, tidied = work.message, ""   # the sign step's output: signable, its fields added
    else:
        msg, tidied = signable(work)
    cv = verdict.arc.cv or "none"
    try:
        data = prepare(msg, handoff)   # parsed once for h= and the seal (or the sign step's)
        dkim_count = len(data.index.get(b"dkim-signature", ()))
        h = oversigned(header_names(lp), data) + (b"dkim-signature",) * dkim_count
        seal = seal_arc(data, domain=domain, selector=lp.selector, key=key,
                        authserv_id=ctx.policy.authserv_id, cv=cv,
                        results=results_text(ctx.policy.authserv_id, verdict), now=ctx.now,
                        headers=h)
    except SignError as exc:
        return work.note(NAME, Action.SKIPPED, f"cannot seal: {exc}; relayed without an ARC set")
    if not seal.sealed:
        return work.note(NAME, Action.SKIPPED, seal.reason)
    names = ("arc-seal", "arc-message-signature", "arc-authentication-results")
    fields = [as_field(msg, raw, name) for raw, name in zip(seal.fields, names)]
    detail = f"i={seal.instance} cv={seal.cv} d={domain} s={lp.selector}{tidied}"
    return work.note(NAME, Action.APPLIED, detail, message=msg.prepend(*fields))
