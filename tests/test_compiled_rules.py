"""Rules the compiled core (relist/core_build.py) needs of its sources that the type
checker does not enforce: a wrong one is a TypeError on the bytes that reach it, in
the compiled build only."""

from __future__ import annotations

import ast

import pytest

from relist.core_build import compilable

SOURCES = compilable()


def _except_names(tree: ast.AST) -> dict[str, set[str]]:
    """Each function's ``except ... as NAME``: the exception types bound to each name."""
    out: dict[str, set[str]] = {}
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        names: dict[str, set[str]] = {}
        for node in ast.walk(fn):
            if isinstance(node, ast.ExceptHandler) and node.name:
                names.setdefault(node.name, set()).add(ast.unparse(node.type) if node.type else "")
        out.update({f"{fn.name}: {n}": t for n, t in names.items() if len(t) > 1})
    return out


@pytest.mark.parametrize("path", SOURCES, ids=[p.name for p in SOURCES])
def test_one_except_name_one_exception_type(path):
    """mypyc gives a function's variable one type: ``except A as exc`` then ``except B as
    exc`` makes the second a TypeError ("A object expected; got B")."""
    assert _except_names(ast.parse(path.read_text())) == {}


def test_the_rule_catches_a_violation():
    tree = ast.parse("def f():\n    try: pass\n    except KeyError as exc: pass\n"
                     "    try: pass\n    except ValueError as exc: pass\n")
    assert _except_names(tree) == {"f: exc": {"KeyError", "ValueError"}}
