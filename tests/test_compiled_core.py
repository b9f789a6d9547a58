"""Which build of the core runs (relist.core_build): the compiled build only while
it is current, and the test pass runs the build it says it runs."""

from __future__ import annotations

import importlib.machinery
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import relist
from relist.cli.check_config import core_finding
from relist import core_build as compiled
from relist.core import pipeline
from relist.core.bounce import wiring
from relist.core.sign import signature
from relist.core.dkim import canon
from relist.core.steps import Step, footer

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def _core(tmp_path: Path) -> Path:
    """A small core tree: two compilable modules, and the files the build leaves alone."""
    core = tmp_path / "core"
    for rel, text in {"__init__.py": "", "a.py": "A = 1\n", "steps/__init__.py": "",
                      "steps/b.py": "B = 2\n", "steps/protocol.py": "", "report/r.py": "R = 3\n"}.items():
        (core / rel).parent.mkdir(parents=True, exist_ok=True)
        (core / rel).write_text(text)
    return core


def _build(core: Path) -> None:
    """What scripts/build_core.py leaves: an extension module beside each source, the stamp."""
    sources = compiled.compilable(core)
    for path in sources:
        path.with_name(path.name[:-3] + SUFFIX).write_bytes(b"")
    (core / f"native__mypyc{SUFFIX}").write_bytes(b"")     # the shared library
    (core / compiled.STAMP.name).write_text(json.dumps(compiled.stamp_for(sources, core)))


def test_compilable_leaves_out_what_decides_and_the_report(tmp_path):
    core = _core(tmp_path)
    assert [p.relative_to(core).as_posix() for p in compiled.compilable(core)] == [
        "a.py", "steps/b.py"]


def test_no_build_runs_the_sources_without_a_warning(tmp_path):
    build = compiled.state(_core(tmp_path))
    assert (build.running, build.unused) == ("python", False)
    assert "no compiled build" in build.reason
    assert core_finding(build).verdict == "ok"


def test_a_current_build_runs(tmp_path):
    core = _core(tmp_path)
    _build(core)
    build = compiled.state(core)
    assert (build.running, build.modules) == ("compiled", 2)
    assert core_finding(build).line() == "ok      core: compiled with mypyc (2 modules)"


@pytest.mark.parametrize("change, why", [
    (lambda core: (core / "steps/b.py").write_text("B = 3\n"), "stale (steps/b.py changed since)"),
    (lambda core: (core / "c.py").write_text(""), "stale (new module c.py)"),
    (lambda core: (core / "a.py").unlink(), "stale (module a.py removed)"),
    (lambda core: (core / f"a{SUFFIX}").unlink(), "incomplete (a.py has no extension module)"),
    (lambda core: (core / f"native__mypyc{SUFFIX}").unlink(), "incomplete (no shared library)"),
    (lambda core: (core / "compiled.json").write_text("{"), "unreadable"),
    (lambda core: (core / "compiled.json").write_text(json.dumps(
        dict(json.loads((core / "compiled.json").read_text()), interpreter="cpython-399"))),
     "the compiled build is for cpython-399"),
])
def test_a_build_that_does_not_match_the_sources_does_not_run(tmp_path, change, why):
    core = _core(tmp_path)
    _build(core)
    change(core)
    build = compiled.state(core)
    assert (build.running, build.unused) == ("python", True)
    assert why in build.reason
    finding = core_finding(build)
    assert (finding.verdict, finding.status) == ("warning", 1)
    assert why in finding.line()


def test_a_report_module_change_leaves_the_build_current(tmp_path):
    core = _core(tmp_path)
    _build(core)
    (core / "report/r.py").write_text("R = 4\n")
    assert compiled.state(core).running == "compiled"


def test_this_pass_runs_the_build_it_says():
    """scripts/test.sh runs the suite with RELIST_CORE=python, then =compiled: each pass
    must run that build, by the files the core's modules were loaded from."""
    wanted = os.environ.get("RELIST_CORE", "auto")
    running = relist.BUILD.running
    if wanted in ("python", "compiled"):
        assert running == wanted
    functions = [pipeline.process, canon.index, footer.apply, wiring.read, signature.prepare]
    # A compiled function is a built-in one (C); a source's is a Python function.
    assert [inspect.isfunction(f) for f in functions] == [running == "python"] * len(functions)
    assert isinstance(footer, Step)    # (steps/protocol.py: never compiled)


def test_an_unknown_choice_stops_the_import():
    proc = subprocess.run([sys.executable, "-c", "import relist.core"], capture_output=True, text=True,
                          env=dict(os.environ, RELIST_CORE="fastest"), timeout=60)
    assert proc.returncode == 1
    assert "RELIST_CORE='fastest': expected auto, python or compiled" in proc.stderr


def test_the_finder_takes_the_build_chosen(tmp_path):
    """With the sources chosen, a core module is found as its .py even where an
    extension module of the same name is beside it (a stale build's); with the compiled
    build, the extension module.  By name, not by the parent package's __path__."""
    core = tmp_path / "core"
    (core / "probe").mkdir(parents=True)
    (core / "probe" / "mod.py").write_text("")
    (core / "probe" / f"mod{SUFFIX}").write_bytes(b"")
    sources = compiled._CoreFinder(False, core).find_spec("relist.core.probe.mod", ["/elsewhere"])
    assert sources.origin == str(core / "probe" / "mod.py")
    built = compiled._CoreFinder(True, core).find_spec("relist.core.probe.mod", ["/elsewhere"])
    assert built.origin == str(core / "probe" / f"mod{SUFFIX}")
    assert compiled._CoreFinder(True, core).find_spec("relist.edge.probe", None) is None


def test_check_config_says_which_core_runs(tmp_path):
    """relist check-config says which core runs (and why, for the sources)."""
    proc = subprocess.run([sys.executable, "-m", "relist", "check-config", "--offline"], capture_output=True,
                          text=True, env=dict(os.environ, RELIST_CONFIG=""), timeout=60, cwd=tmp_path)
    line = next(x for x in proc.stdout.splitlines() if " core: " in x)
    assert line.split()[2:] == relist.BUILD.describe().split()
