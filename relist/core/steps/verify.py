"""verify: authenticate the message as it arrived; bytes are not changed.

Every DKIM-Signature (up to ``max_signatures``), every DomainKey-Signature
(informational), the ARC chain and DMARC for the From domain, with DNS from the
facts and time from ``ctx.now``.  It must run before any step that changes bytes,
so that what is recorded is what the poster's systems signed, not what relist made
of it.  The ``Verdict`` goes into ``known.verdict`` for the modes, the ARC seal
(cv), the Authentication-Results field and the record.
"""

from __future__ import annotations

from relist.core.auth import questions as auth_questions
from relist.core.auth import verify_message
from relist.core.facts import Facts, Question
from relist.core.message import RawMessage
from relist.core.model import Action, Context, Work
from relist.core.policy import RelayPolicy

NAME = "verify"


def questions(msg: RawMessage, policy: RelayPolicy, facts: Facts) -> set[Question]:
    """Key names for each signature and ARC field, and the next DMARC names."""
    return auth_questions(msg, policy.max_signatures, facts)


def apply(work: Work, ctx: Context) -> Work:
    """See `relist.core.steps`."""
    verdict = verify_message(work.message, ctx.facts, ctx.now,
                             max_signatures=ctx.policy.max_signatures,
                             min_key_bits=ctx.policy.min_key_bits)
    return work.note(NAME, Action.RECORDED, verdict.summary()[:500],
                     known=work.learn(verdict=verdict))
