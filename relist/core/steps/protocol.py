"""What a step is, as a type (``relist.core.steps``).  A module of its own: mypyc
cannot compile a runtime-checkable Protocol, and the tests check each step with
``isinstance`` (relist.core_build leaves this module uncompiled)."""

from typing import Protocol, runtime_checkable

__all__ = ["Step"]


@runtime_checkable
class Step(Protocol):
    """What ``relist.core.pipeline`` runs: a step module, or a wrapper around steps
    (``guard.guarded``/``attributed``, ``mode.decided``).  Optional: ``questions(msg,
    policy, facts)`` (the DNS facts it needs) and ``on_error(work, ctx, exc)`` (what a
    failure on these bytes means; relist.core.safety)."""

    NAME: str

    def apply(self, work, ctx): ...
