"""The pipeline's steps, one module each.

Every step module has ``NAME`` (kebab-case, stored in the record and never renamed),
a docstring saying what and why, and ``apply(work, ctx) -> Work``.  The order lives
in ``relist.core.pipeline.STEPS``.
"""

from relist.core.steps.protocol import Step

__all__ = ["Step", "apply_transform"]


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
