"""Which build of the core runs (relist.core_build): the compiled build only while
it is current, and the test pass runs the build it says it runs."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
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
from tests.helpers import ROOT

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
    (lambda core: (core / f"a{SUFFIX}").unlink(), "incomplete (a.py has no readable extension module)"),
    (lambda core: (core / f"native__mypyc{SUFFIX}").unlink(), "incomplete (no readable shared library)"),
    # Built elsewhere, same cache tag, another platform: the import system would load
    # the sources while this said compiled.
    (lambda core: (core / "compiled.json").write_text(json.dumps(dict(
        json.loads((core / "compiled.json").read_text()), extension=".cpython-311-aarch64-linux-gnu.so"))),
     "extension modules end '.cpython-311-aarch64-linux-gnu.so'"),
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
    assert "ImportError: RELIST_CORE='fastest': expected auto, python or compiled" in proc.stderr


@pytest.mark.parametrize("args", [["check-config", "--offline"], ["serve"], ["--version"]])
def test_an_unknown_choice_stops_every_command_in_one_line(tmp_path, args):
    """Under systemd a traceback per restart says less than one line: exit 2 (usage)."""
    proc = subprocess.run([sys.executable, "-m", "relist", *args], capture_output=True, text=True,
                          cwd=tmp_path, env=dict(os.environ, RELIST_CORE="Fastest ", RELIST_CONFIG=""),
                          timeout=60)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == "relist: RELIST_CORE='fastest': expected auto, python or compiled\n"


def test_an_extension_module_this_process_cannot_read_does_not_run(tmp_path, monkeypatch):
    """A build made by another user under umask 077: loading it would fail at the first
    core import, so the sources run, with a warning.  What os.access says for this
    process decides (the test after this one shows it with real file modes)."""
    core = _core(tmp_path)
    _build(core)
    unreadable = core / f"a{SUFFIX}"
    real_access = os.access
    monkeypatch.setattr(compiled.os, "access", lambda p, mode: real_access(p, mode) and (
        Path(p) != unreadable or not mode & os.R_OK))
    build = compiled.state(core)
    assert (build.running, build.unused) == ("python", True)
    assert "a.py has no readable extension module" in build.reason


def test_an_unreadable_extension_module_by_its_file_mode():
    """The same with real file modes, checked by an unprivileged user (root reads any
    file): nobody, with an interpreter of this one's kind that nobody can run (this
    one, or the system's when this one is under root's home)."""
    as_user: list[str] = []
    python = sys.executable
    if os.geteuid() == 0:
        if not shutil.which("runuser"):
            pytest.skip("as root, without runuser")
        as_user = ["runuser", "-u", "nobody", "--"]
        same = f"import sys; sys.exit(sys.implementation.cache_tag != {sys.implementation.cache_tag!r})"
        usable = [p for p in (sys.executable, "/usr/bin/python3") if subprocess.run(
            [*as_user, p, "-c", same], capture_output=True, timeout=60).returncode == 0]
        if not usable:
            pytest.skip(f"nobody can run no {sys.implementation.cache_tag} interpreter")
        python = usable[0]
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        shutil.copy(Path(compiled.__file__), Path(tmp) / "core_build.py")
        (Path(tmp) / "core_build.py").chmod(0o644)     # (a clone made under umask 077)
        core = _core(Path(tmp))
        _build(core)
        for path in [core, *core.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
                "import core_build as c; b = c.state(Path(sys.argv[1]) / 'core'); "
                "print(b.running, b.unused, b.reason, sep='|')")

        def state() -> list[str]:
            proc = subprocess.run([*as_user, python, "-c", code, tmp], capture_output=True, text=True,
                                  timeout=60, cwd=tmp)
            assert proc.returncode == 0, proc.stderr
            return proc.stdout.strip().split("|")

        assert state()[:2] == ["compiled", "False"]
        (core / f"a{SUFFIX}").chmod(0o600)     # another user's, under umask 077
        running, unused, reason = state()
        assert (running, unused) == ("python", "True")
        assert "a.py has no readable extension module" in reason


def _build_files() -> dict[str, tuple[int, int]]:
    """The build in the tree as it is: (inode, mtime) of the stamp and each extension module."""
    files = [compiled.STAMP, *compiled.CORE.rglob("*.so")]
    return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns) for p in files if p.exists()}


def _build_core(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "build_core.py"), "--force"],
                          capture_output=True, text=True, env=dict(os.environ, **env), timeout=600)


def test_without_a_compiler_the_build_says_so_and_changes_nothing():
    before = _build_files()
    proc = _build_core({"CC": "no-such-cc"})
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("build_core: cannot compile the core: no C compiler (no-such-cc)")
    assert "apt install gcc libc6-dev python3-dev" in proc.stderr
    assert _build_files() == before


def test_the_build_reads_no_project_configuration():
    """setup() runs in build/core, where there is no pyproject.toml to read: a venv's
    older setuptools (Debian 12's 66) refused relist's SPDX license string there, and
    relist's package is not what the build makes.  (setup() is stopped before it
    compiles; the build's files stay as they were.)"""
    if importlib.util.find_spec("mypyc") is None:
        pytest.skip("mypy is not installed (pip install -e '.[build]')")
    before = _build_files()
    code = ("import os, runpy, sys, setuptools\n"
            "def setup(**kw):\n"
            "    here = [n for n in ('pyproject.toml', 'setup.cfg', 'setup.py') if os.path.exists(n)]\n"
            "    print('setup() in', os.getcwd(), 'reading', here or 'nothing', len(kw['ext_modules']))\n"
            "    raise SystemExit('stopped before compiling')\n"
            "setuptools.setup = setup\n"
            "sys.argv = [sys.argv[1], '--force']\n"
            "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT / "scripts" / "build_core.py")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr
    modules = len(compiled.compilable()) + 1       # and the shared library
    assert f"setup() in {ROOT / 'build' / 'core'} reading nothing {modules}" in proc.stdout
    assert "build_core: compiling failed (stopped before compiling)" in proc.stderr
    assert _build_files() == before


def test_a_compile_that_fails_leaves_the_previous_build_as_it_was():
    """The modules are built aside and moved in only when all are: a compiler that
    fails (here: false) leaves the build, and what runs, as they were."""
    if importlib.util.find_spec("mypyc") is None:
        pytest.skip("mypy is not installed (pip install -e '.[build]')")
    before, running = _build_files(), compiled.state().describe()
    proc = _build_core({"CC": "false"})
    assert proc.returncode == 1
    assert "build_core: compiling failed (" in proc.stderr
    assert proc.stderr.rstrip().endswith(f"the previous build is left as it was: the core runs as {running}")
    assert _build_files() == before


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
