"""verify: authenticate the message as it arrived; bytes are not changed.

Every DKIM-Signature (up to ``max_signatures``), every DomainKey-Signature
(informational), the ARC chain and DMARC for the From domain, with DNS from the
facts and time from ``ctx.now``.  It must run before any step that changes bytes,
so that what is recorded is what the poster's systems signed, not what relist made
of it.  The ``Verdict`` goes into ``known.verdict`` for the modes, the ARC seal
(cv), the Authentication-Results field and the record.
"""

from __future__ import annotations

from relist.core.verify import questions as auth_questions
from relist.core.verify import verify_message
from relist.core.facts import Facts, Question
from relist.core.ingress import match as ingress_match
from relist.core.message import RawMessage
from relist.core.model import Action, Context, Work
from relist.core.policy import RelayPolicy

__all__ = ["NAME", "apply", "questions"]

NAME = "verify"


def questions(msg: RawMessage, policy: RelayPolicy, facts: Facts) -> set[Question]:
    """Key names for each signature and ARC field, and the next DMARC names."""
    return auth_questions(msg, policy.max_signatures, facts)


def apply(work: Work, ctx: Context) -> Work:
    """See `relist.core.steps`.

    On the egress leg, when the ingress leg kept a copy of this post (matched by
    ``relist.core.ingress``), the verdict is that of the copy: the post as it was
    before Mailman changed it.  Otherwise, what arrived here is verified.
    """
    copy, why = ingress_match(work.message, ctx.ingress)
    subject = RawMessage.parse(copy.raw) if copy is not None else work.message
    verdict = verify_message(subject, ctx.facts, ctx.now,
                             max_signatures=ctx.policy.max_signatures,
                             min_key_bits=ctx.policy.min_key_bits)
    source = f"as received by ingress ({why}): " if copy is not None else (
        f"as received ({why}): " if ctx.ingress else "")
    return work.note(NAME, Action.RECORDED, (source + verdict.summary())[:500],
                     known=work.learn(verdict=verdict,
                                      ingress_copy=subject if copy is not None else None))
