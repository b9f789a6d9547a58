"""mode: preserve the poster's signature, or re-sign as the list, for this post.

What: ``decided(*steps)`` wraps the list's changes (the transformations, the 8-bit
downgrade and the trace fields) and runs them under the mode chosen for the post,
recorded in ``known.mode_chosen`` and in a note named ``mode`` placed before theirs.
A list in ``preserve`` or ``resign`` mode gets that mode.  ``auto`` decides after
trying, on the bytes as they will leave, not on the arrival verdict:

* a post with no DKIM signature that passed on arrival and aligns with its From
  domain (RFC 9989 §4.4.1) has nothing to preserve: **resign**;
* otherwise the changes run in preserve mode (each one that would break a poster
  signature is skipped, relist.core.guard); when an aligned poster signature
  survives the result: **preserve**;
* when none does (Mailman broke it and repair could not undo that, or the 8-bit
  downgrade the MTA needs broke it): **resign**, the changes run again from the same
  start in resign mode, and DMARC mitigation, which follows, acts on the From domain's
  policy.  The note says which signature broke and where.

Why: a signature that will not verify at the recipient gains the post nothing, and
skipping the list's decorations for it would cost them for nothing; a signature that
will verify is worth more than any decoration, whatever the DMARC policy (under
p=none it is still the only DMARC pass the poster's domain can have).
"""

from __future__ import annotations

from dataclasses import dataclass

from relist.core.guard import aligned_passing, label, surviving
from relist.core.model import Action, Context, StepNote, Work, replace
from relist.core.safety import ask_steps, run_step

__all__ = ["NAME", "PRESERVE", "RESIGN", "Decided", "aligned_on_arrival", "decided"]

NAME = "mode"

PRESERVE, RESIGN = "preserve", "resign"


def aligned_on_arrival(verdict) -> tuple[bool, str]:
    """(True, "d/s") when a DKIM signature passed on arrival and aligns with From."""
    if verdict is None:
        return False, "not verified"
    dmarc = verdict.dmarc
    if not dmarc.alignment and dmarc.result in ("none", "temperror"):   # alignment not evaluated
        return False, (f"DMARC {dmarc.result} for {dmarc.domain or 'the From domain'} ({dmarc.reason}): "
                       "no alignment to keep")
    aligned = aligned_passing(verdict)
    if not aligned:
        return False, f"no valid DKIM signature aligned with the From domain {dmarc.domain or '?'}"
    return True, label(aligned[0])


def _run(steps, work: Work, ctx: Context, chosen: str) -> Work:
    work = replace(work, known=replace(work.known, mode_chosen=chosen))
    for step in steps:
        work = run_step(step, work, ctx)   # the safety net, as pipeline.process
    return work


def _with_note(before: Work, after: Work, detail: str, action: Action = Action.RECORDED) -> Work:
    """``after`` with the mode note placed where the wrapped steps' notes begin."""
    at = len(before.notes)
    note = StepNote(NAME, action, detail)
    return replace(after, notes=after.notes[:at] + (note,) + after.notes[at:])


@dataclass(frozen=True, slots=True)
class Decided:
    """The wrapped steps, run under the mode chosen for the post (module doc)."""

    steps: tuple

    NAME = NAME

    def questions(self, msg, policy, facts):
        return ask_steps(self.steps, msg, policy, facts)

    def apply(self, work: Work, ctx: Context) -> Work:
        lp = work.known.list_policy
        if lp is None:
            return _with_note(work, _run(self.steps, work, ctx, ""), "no list", Action.SKIPPED)
        if lp.mode in (PRESERVE, RESIGN):
            return _with_note(work, _run(self.steps, work, ctx, lp.mode), f"{lp.mode} (the list's mode)")
        if lp.mode != "auto":
            return _with_note(work, _run(self.steps, work, ctx, RESIGN),
                              f"resign (unknown mode {lp.mode!r})")
        verdict = work.known.verdict
        signed, who = aligned_on_arrival(verdict)
        if not signed:
            return _with_note(work, _run(self.steps, work, ctx, RESIGN), f"resign (auto: {who})")
        trial = _run(self.steps, work, ctx, PRESERVE)
        kept, detail = surviving(trial.message, verdict, ctx, trial.known)
        if kept:
            return _with_note(work, trial, f"preserve (auto: {detail} the changes preserve allows)")
        return _with_note(work, _run(self.steps, work, ctx, RESIGN),
                          f"resign (auto: tried preserve, but {detail})")


def decided(*steps) -> Decided:
    """``steps`` run under the post's mode (module doc)."""
    return Decided(tuple(steps))
