"""The pipeline's steps, one module each.

Every step module has ``NAME`` (kebab-case, stored in the record and never renamed),
a docstring saying what and why, and ``apply(work, ctx) -> Work``.  The order lives
in ``relist.core.pipeline.STEPS``.
"""

from typing import Protocol, runtime_checkable

__all__ = ["Step", "apply_transform", "description"]


@runtime_checkable
class Step(Protocol):
    """What ``relist.core.pipeline`` runs: a step module, or a wrapper around steps
    (``guard.guarded``/``attributed``, ``mode.decided``).  Optional: ``questions(msg,
    policy, facts)`` (the DNS facts it needs) and ``on_error(work, ctx, exc)`` (what a
    failure on these bytes means; relist.core.safety)."""

    NAME: str

    def apply(self, work, ctx): ...


def description(step) -> str:
    """The first paragraph of what ``step`` says it does (a wrapper: its step's)."""
    inner = getattr(step, "step", None)
    doc = (inner.__doc__ if inner is not None else step.__doc__) or ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def apply_transform(name, transform, work):
    """The ``apply`` of a list transformation: run ``transform(msg, list_policy)`` and
    note what it did (skipped with its reason when it returns no message)."""
    from relist.core.model import Action
    lp = work.known.list_policy
    if lp is None:
        return work.note(name, Action.SKIPPED, "no list")
    if work.known.notice:
        return work.note(name, Action.SKIPPED, f"Mailman notice ({work.known.notice}): "
                                               "the list's changes apply to posts only")
    new, detail = transform(work.message, lp)
    if new is None:
        return work.note(name, Action.SKIPPED, detail)
    return work.note(name, Action.APPLIED, detail, message=new)
