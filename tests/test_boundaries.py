"""The core is pure: no module under relist/core imports an IO module (issue: relay core)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "relist" / "core"

FORBIDDEN = {
    "socket", "ssl", "smtplib", "sqlite3", "asyncio", "aiosmtpd", "dns", "os", "time",
    "random", "secrets", "logging", "subprocess", "threading", "multiprocessing", "select",
    "selectors", "shutil", "tempfile", "pathlib", "io", "urllib", "http", "requests",
    "relist.edge", "relist.app", "relist.server", "relist.config", "relist.sandbox", "relist.cli",
}


def imported_modules(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


CORE_FILES = sorted(CORE.rglob("*.py"))


@pytest.mark.parametrize("path", CORE_FILES, ids=[str(p.relative_to(CORE)) for p in CORE_FILES])
def test_core_module_imports_no_io(path):
    bad = [f"line {line}: import {name}" for line, name in imported_modules(path) if forbidden(name)]
    assert not bad, f"{path.name} imports IO modules: {bad}"


def test_the_check_catches_a_violation(tmp_path):
    sample = tmp_path / "bad.py"
    sample.write_text("import os\nfrom dns import resolver\nfrom relist.edge.store import Store\n")
    names = [n for _, n in imported_modules(sample) if forbidden(n)]
    assert names == ["os", "dns", "relist.edge.store"]


# Imports point one way: the composition root (relist.app, relist.server) joins the
# core to the edges; the edges and the configuration never import it, nor the CLI or
# the demo, and the configuration imports no edge.
PKG = CORE.parent
LAYERS = {
    "edge": (PKG / "edge", ("relist.app", "relist.server", "relist.cli", "relist.demo")),
    "config": (PKG / "config", ("relist.app", "relist.server", "relist.cli", "relist.demo",
                                "relist.edge", "relist.core.steps")),
}
LAYER_FILES = [(layer, p) for layer, (root, _) in LAYERS.items() for p in sorted(root.rglob("*.py"))]


@pytest.mark.parametrize("layer,path", LAYER_FILES, ids=[f"{lay}/{p.name}" for lay, p in LAYER_FILES])
def test_imports_point_one_way(layer, path):
    banned = LAYERS[layer][1]
    bad = [f"line {line}: import {name}" for line, name in imported_modules(path)
           if any(name == b or name.startswith(b + ".") for b in banned)]
    assert not bad, f"{layer}/{path.name} imports against the grain: {bad}"
