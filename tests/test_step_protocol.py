"""Every step the pipelines run keeps the step protocol (relist.core.steps.Step):
a kebab-case NAME, a docstring that says what it does, apply(work, ctx) and, where
present, questions(msg, policy, facts) and on_error(work, ctx, exc)."""

from __future__ import annotations

import ast
import inspect
import re
import sys
from types import ModuleType

import pytest

from relist.core import pipeline
from relist.core.steps import Step
from relist.core.steps.mode import Decided
from tests.helpers import ROOT

KEBAB = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def flat(steps):
    for step in steps:
        yield step
        if isinstance(step, Decided):
            yield from flat(step.steps)


ALL = [*flat(pipeline.STEPS), *flat(pipeline.INGRESS_STEPS)]


def description(step) -> str:
    """The first paragraph of what ``step`` says it does (a wrapper: its step's), from
    the source as written: a module or class compiled with mypyc keeps no docstring."""
    target = getattr(step, "step", None) or step
    module = target if isinstance(target, ModuleType) else sys.modules[type(target).__module__]
    source = ROOT.joinpath(*module.__name__.split(".")).with_suffix(".py")   # (a compiled module's
    # __file__ is where mypyc took its shared library to be: not beside its source)
    tree = ast.parse(source.read_text())
    if not isinstance(target, ModuleType):
        name = type(target).__name__
        tree = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == name)
    doc = ast.get_docstring(tree) or ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def _arity(fn) -> int:
    return len([p for p in inspect.signature(fn).parameters.values()
                if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])


@pytest.mark.parametrize("step", ALL, ids=lambda s: s.NAME)
def test_every_step_keeps_the_protocol(step):
    assert isinstance(step, Step)
    assert KEBAB.match(step.NAME), step.NAME
    assert len(description(step)) > 20, f"{step.NAME}: say what the step does in its docstring"
    assert _arity(step.apply) == 2
    for optional, arity in (("questions", 3), ("on_error", 3)):
        fn = getattr(step, optional, None)
        if fn is not None:
            assert callable(fn) and _arity(fn) == arity, (step.NAME, optional)


def test_step_names_are_unique_within_a_pipeline():
    for steps in (pipeline.STEPS, pipeline.INGRESS_STEPS):
        names = [s.NAME for s in flat(steps)]
        assert len(names) == len(set(names)), names


def test_a_wrapped_step_forwards_its_error_handler():
    from relist.core.guard import guarded
    from relist.core.steps import dkim_sign as sign, subject_prefix
    assert guarded(sign).on_error is sign.on_error
    assert guarded(subject_prefix).on_error is None


def test_an_object_without_apply_is_not_a_step():
    class NoApply:
        NAME = "x"
    assert not isinstance(NoApply(), Step)
