"""The core: ``plan`` (which DNS facts are needed) and ``process`` (bytes in, outcome out).

Rule 1: nothing in ``relist.core`` does IO: no sockets, files, clock, environment or
logging.  Time, DNS answers, keys and the relist id come in through ``Context``.
Rule 2: the order of the steps is this one tuple; each entry says why it is there.
Rule 3: a step returns a new ``Work``; it raises ``RejectMessage``/``DeferMessage``
for a deliberate refusal and nothing else on purpose.  Any other exception is a bug,
and a bug the same bytes trigger would trigger again on every retry: ``process`` runs
each step through ``relist.core.safety.run_step``, which records it (the step's note
and the record's ``internal_error``) and skips the step, or refuses the post for good
where skipping would ship something worse (``sign`` after From munging); see that
module.  Only ``MemoryError`` still reaches the edge (451 4.3.0: it may pass).
"""

from __future__ import annotations

from dataclasses import replace

from relist.core.errors import DeferMessage, RejectMessage
from relist.core.facts import Facts, Question
from relist.core.message import RawMessage
from relist.core.model import Context, Outcome, Record, Work
from relist.core.policy import RelayPolicy
from relist.core.guard import attributed, guarded
from relist.core.safety import ask_steps, run_step
from relist.core.steps import (
    arc_seal, attribution, authres, dmarc_mitigation, downgrade, footer, identify, ingress_list,
    list_headers, mode, parse, remove_headers, repair, reply_to, sender, strip, subject_prefix, trace,
    verify,
)
from relist.core.steps import dkim_sign as sign

__all__ = ["INGRESS_STEPS", "STEPS", "plan", "process", "step_names", "substitute"]

STEPS: tuple = (   # (step modules and wrappers: relist.core.steps.Step)
    # Read identities first: every later step needs the Message-ID and the list.
    parse,
    # Which list, hence which policy: before anything list-specific.
    identify,
    # Verify every original signature, the ARC chain and DMARC as the post arrived,
    # before any step changes a byte (the "verify early" promise).
    verify,
    # In every mode: undo what Mailman broke without meaning to, proven by re-verifying,
    # before the list's changes, so that they are judged against the repaired bytes.
    repair,
    # The list's changes, run under the mode chosen for this post (auto: preserve is
    # tried first, and kept when an aligned poster signature survives the result).
    mode.decided(
        # The transformations (docs/transformations.md), each guarded: in preserve mode a
        # change that would break a poster signature is skipped; in every mode the first
        # step that breaks one is recorded (relist.core.guard).
        # Removals first, so that no later step's field is removed again.
        guarded(remove_headers),
        # Subject before the body: the Subject is in nearly every h=, so it is judged first.
        guarded(subject_prefix),
        # The body: the change most likely to break a body hash.
        guarded(footer),
        # List-* fields from the list's settings (RFC 2369, 2919, 8058), after removals.
        guarded(list_headers),
        # Sender names the list as the agent that sends it (RFC 5322 §3.6.2).
        guarded(sender),
        # Reply-To last: it may overwrite a field the poster signed, and is the list's choice.
        guarded(reply_to),
        # 8-bit -> 7-bit when the list asks or the MTA lacks 8BITMIME, before signing so the
        # signature covers the bytes that travel; before mitigation, because a wrapped post
        # is a message/rfc822 part that must stay byte-identical.  Not guarded: in preserve
        # mode a downgrade the MTA requires wins, and the guard records what it broke.
        downgrade,
        # The trace field: Received is hardly ever in a signature's h=; guarded all the same.
        guarded(trace),
        # Drop Authentication-Results that claim our authserv-id (RFC 8601 §5: forgeries)
        # and add ours above our Received (§4.1); before signing and sealing, so the ARC
        # seal carries relist's own verdict, never an upstream claim.  Attributed, never
        # undone: the removal wins in every mode, preserve too (a poster signature over
        # a forgery breaks, and the delivery rules act on that); the step leaves out its
        # own field where a still-valid poster signature oversigns the name.
        attributed(authres),
    ),
    # Never ship a rejection: on the bytes as they now stand, when no poster signature
    # aligned with From survives and the From domain's policy would refuse the post,
    # From munging or wrapping, in every mode.  Attributed, never undone.
    attributed(dmarc_mitigation),
    # Remove the poster's signatures the final bytes break (strip = "all": every one, in
    # resign mode) and, in resign mode, DomainKey-Signature; ARC fields stay.
    attributed(strip),
    # Sign late: the list's DKIM signature(s) over the final bytes (docs/signing.md).
    sign,
    # The ARC set last among byte-changing steps: its AMS covers the DKIM-Signature.
    arc_seal,
    # Last: name, for each poster signature valid on arrival, the step that broke it
    # or "survived" (into the record's extra).
    attribution,
)

# The ingress leg (MTA -> relist -> Mailman): verify and record before Mailman changes
# anything; the post goes on to Mailman otherwise unchanged.
INGRESS_STEPS: tuple = (
    parse,
    # The list the post is addressed to (recipient, else List-Id), for the record.
    ingress_list,
    verify,
    trace,
    authres,
)


def step_names(steps=STEPS) -> tuple[str, ...]:
    """The names of the notes a run of ``steps`` records, in order: a group
    (``mode.decided``) records its own note, then its steps'."""
    out: list[str] = []
    for step in steps:
        out.append(step.NAME)
        if isinstance(step, mode.Decided):
            out.extend(step_names(step.steps))
    return tuple(out)


def substitute(steps, old, new) -> tuple:
    """``steps`` with ``old`` replaced by ``new``, inside groups too (tests, benchmarks)."""
    return tuple(replace(s, steps=substitute(s.steps, old, new)) if isinstance(s, mode.Decided)
                 else new if s is old else s for s in steps)


def plan(raw: bytes | RawMessage, policy: RelayPolicy, facts: Facts, steps=STEPS) -> frozenset[Question]:
    """The DNS questions ``process`` will need that ``facts`` does not answer yet.

    The edge calls this until it returns nothing (the DMARC tree walk asks its next
    question only once it has the previous answer), resolving each round.
    """
    msg = RawMessage.of(raw)
    wanted = ask_steps(steps, msg, policy, facts)
    return frozenset(q for q in wanted if q not in facts.answers)


def process(raw: bytes | RawMessage, ctx: Context, steps=STEPS) -> Outcome:
    """Run ``steps`` over ``raw`` (the bytes, or the message parsed from them, as the
    edge and ``plan``'s caller have it); return what to relay, what to record, how to
    reply.  The output stays a ``RawMessage``: the edge writes its header and body
    without joining them (``Outcome``)."""
    work = Work(RawMessage.of(raw))
    size_in = work.message.size
    reply = None
    for step in steps:
        try:
            work = run_step(step, work, ctx)
        except (RejectMessage, DeferMessage) as refusal:
            reply = refusal.reply
            break
    out = None if reply is not None else work.message
    record = Record(
        relist_id=ctx.relist_id,
        time=ctx.now,
        envelope=ctx.envelope,
        message_id=work.known.message_id,
        list_address=work.known.list_address,
        size_in=size_in,
        size_out=out.size if out is not None else 0,
        steps=work.notes,
        reply=reply,
        verdict=work.known.verdict,
        findings=work.known.findings,
    )
    return Outcome(out, record, reply)
