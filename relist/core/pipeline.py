"""The core: ``plan`` (which DNS facts are needed) and ``process`` (bytes in, outcome out).

Rule 1: nothing in ``relist.core`` does IO: no sockets, files, clock, environment or
logging.  Time, DNS answers, keys and the relist id come in through ``Context``.
Rule 2: the order of the steps is this one tuple; each entry says why it is there.
Rule 3: a step returns a new ``Work``; it raises ``RejectMessage``/``DeferMessage``
for a deliberate refusal and nothing else on purpose.  Any other exception is a bug
and propagates to the edge, which answers 451 4.3.0.
"""

from __future__ import annotations

from relist.core.errors import DeferMessage, RejectMessage
from relist.core.facts import Facts, Question
from relist.core.message import RawMessage
from relist.core.model import Context, Outcome, Record, Work
from relist.core.policy import RelayPolicy
from relist.core.steps import authres, identify, parse, trace, verify

__all__ = ["INGRESS_STEPS", "STEPS", "plan", "process"]

STEPS = (
    # Read identities first: every later step needs the Message-ID and the list.
    parse,
    # Which list, hence which policy: before anything list-specific.
    identify,
    # Verify every original signature, the ARC chain and DMARC as the post arrived,
    # before any step changes a byte (the "verify early" promise).
    verify,
    # The trace field: Received is never in a signature's h=, so adding it cannot
    # break one.
    trace,
    # Drop Authentication-Results that claim our authserv-id (RFC 8601 §5: forgeries)
    # and add ours above our Received (§4.1); before signing and sealing, so the ARC
    # seal carries relist's own verdict, never an upstream claim.
    authres,
)

# The ingress leg (MTA -> relist -> Mailman): verify and record before Mailman changes
# anything; the post goes on to Mailman otherwise unchanged.
INGRESS_STEPS = (
    parse,
    verify,
    trace,
    authres,
)


def plan(raw: bytes | RawMessage, policy: RelayPolicy, facts: Facts, steps=STEPS) -> frozenset[Question]:
    """The DNS questions ``process`` will need that ``facts`` does not answer yet.

    The edge calls this until it returns nothing (the DMARC tree walk asks its next
    question only once it has the previous answer), resolving each round.
    """
    msg = raw if isinstance(raw, RawMessage) else RawMessage.parse(raw)
    wanted: set[Question] = set()
    for step in steps:
        ask = getattr(step, "questions", None)
        if ask is not None:
            wanted.update(ask(msg, policy, facts))
    return frozenset(q for q in wanted if q not in facts.answers)


def process(raw: bytes, ctx: Context, steps=STEPS) -> Outcome:
    """Run ``steps`` over ``raw``; return what to relay, what to record, how to reply."""
    work = Work(RawMessage.parse(raw))
    reply = None
    for step in steps:
        try:
            work = step.apply(work, ctx)
        except (RejectMessage, DeferMessage) as refusal:
            reply = refusal.reply
            break
    out = None if reply is not None else work.message.to_bytes()
    record = Record(
        relist_id=ctx.relist_id,
        time=ctx.now,
        envelope=ctx.envelope,
        message_id=work.known.message_id,
        list_address=work.known.list_address,
        size_in=len(raw),
        size_out=len(out) if out is not None else 0,
        steps=work.notes,
        reply=reply,
        verdict=work.known.verdict,
        extra=work.known.extra,
    )
    return Outcome(out, record, reply)
