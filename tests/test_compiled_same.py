"""The compiled core makes what the Python sources make (relist/core_build.py): the same
output bytes, replies and notes for every message the repository holds, in every mode
(tests/compiled_same.py).  A compiled function checks its annotations as it runs; a
value of another type than annotated is a TypeError there, which a step's safety net
would turn into a skipped step: a different decision, not a crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import relist
from relist.core_build import state
from tests.helpers import ROOT


def _run(core: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-m", "tests.compiled_same"], capture_output=True, text=True,
                          cwd=ROOT, env=dict(os.environ, RELIST_CORE=core), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert json.loads(lines[0]) == {"core": core}
    return lines[1:]


def test_the_compiled_core_makes_what_the_sources_make():
    if relist.BUILD.running != "compiled":
        # (scripts/test.sh's pass over the compiled core runs it; CI always has one)
        if os.environ.get("CI") and state().running != "compiled":
            pytest.fail(f"no compiled core to compare: {state().reason}")
        pytest.skip("runs in the pass over the compiled core (RELIST_CORE=compiled)")
    sources, compiled = _run("python"), _run("compiled")
    assert len(sources) == len(compiled) > 1000
    for a, b in zip(sources, compiled):
        if a != b:
            name, config, *_ = json.loads(a)
            pytest.fail(f"{name} ({config}) differs:\n  sources:  {a[:1500]}\n  compiled: {b[:1500]}")
