"""Compile relist's core with mypyc into extension modules beside its sources, then
write the stamp that says which sources they were built from (relist.core_build).

Run by scripts/build_core.sh with the project's virtualenv (which has the pinned mypy:
pyproject.toml's "build" extra).  Needs a C compiler and the Python headers: without
them it says so in one line and changes nothing.

The stamp is made from the sources as they are before compiling (one edited during the
build makes the result stale, never current).  The modules are built in build/core/lib
and moved into relist/core only when all of them are built, each by a rename (a new
file: a relist process running the old one keeps it), so a failed build leaves the
previous one as it was: still current, or stale and reported so by
``relist check-config``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["RELIST_CORE"] = "python"      # import relist without loading a build

from relist import core_build as compiled  # noqa: E402


def clean() -> int:
    """Remove the stamp first (so a half-made build never runs), then every extension
    module and the shared library under relist/core; the number of files removed."""
    compiled.STAMP.unlink(missing_ok=True)
    gone = 0
    for path in compiled.CORE.rglob("*.so"):
        path.unlink()
        gone += 1
    return gone


LIB = ROOT / "build" / "core" / "lib"


def missing() -> str:
    """What compiling needs and is not here ("" when nothing is), in a line."""
    lacking = []
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        lacking.append(f"C compiler ({cc})")
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").is_file():
        lacking.append(f"Python headers ({sysconfig.get_paths()['include']}/Python.h)")
    if importlib.util.find_spec("mypyc") is None:
        lacking.append("mypy")
    if lacking:
        return ("no " + " and no ".join(lacking) + "; Debian: apt install gcc libc6-dev python3-dev, "
                "then sh scripts/setup.sh")
    return ""


def _absolute(extensions: list) -> list:
    """mypycify's extensions with their paths made absolute, so that setup() can run
    in build/core: there it reads no project configuration (pyproject.toml's, which an
    older setuptools in the venv may refuse; relist's package is not what it builds)."""
    for ext in extensions:
        ext.sources = [str(ROOT / p) for p in ext.sources]
        ext.include_dirs = [str(ROOT / p) for p in ext.include_dirs]
        ext.depends = [str(ROOT / p) for p in ext.depends]
    return extensions


def install(built: list[Path]) -> None:
    """Move the built extension modules into relist/core, each by a rename, after
    removing the stamp; extension modules there that this build did not make go."""
    compiled.STAMP.unlink(missing_ok=True)
    wanted = set()
    for path in built:
        dest = ROOT / path.relative_to(LIB)
        wanted.add(dest)
        os.replace(path, dest)
    for path in compiled.CORE.rglob("*.so"):
        if path not in wanted:
            path.unlink()


def main(argv: list[str]) -> int:
    if argv[1:] == ["--clean"]:
        print(f"build_core: removed the compiled build ({clean()} files)")
        return 0
    if argv[1:] not in ([], ["--force"]):
        print("usage: build_core.sh [--force | --clean]", file=sys.stderr)
        return 2
    force = argv[1:] == ["--force"]
    before = compiled.state()
    if not force and before.running == "compiled":
        print("build_core: the compiled core is current")
        return 0
    lacking = missing()
    if lacking:
        print(f"build_core: cannot compile the core: {lacking}.  Nothing changed: the core runs as "
              f"{before.describe()}", file=sys.stderr)
        return 1
    from mypyc.build import mypycify
    from setuptools import setup

    sources = compiled.compilable()
    stamp = compiled.stamp_for(sources)     # the sources as compiled, not as they are after
    rel = [str(p.relative_to(ROOT)) for p in sources]
    started = time.monotonic()
    os.chdir(ROOT)
    shutil.rmtree(LIB, ignore_errors=True)
    try:
        extensions = _absolute(mypycify(["--ignore-missing-imports", *rel], opt_level="3",
                                        group_name=compiled.GROUP, target_dir="build/core"))
        jobs = str(os.cpu_count() or 1)
        os.chdir(ROOT / "build" / "core")
        setup(name="relist-core", ext_modules=extensions, script_args=[
            "-q", "build_ext", "--build-lib", str(LIB), "--build-temp", str(ROOT / "build" / "core" / "temp"),
            "--parallel", jobs, *(["--force"] if force else [])])
    except (Exception, SystemExit) as exc:   # distutils ends a failed compile with SystemExit
        why = str(exc).strip() or exc.__class__.__name__
        print(f"build_core: compiling failed ({why[:300]}{'...' if len(why) > 300 else ''}); the previous "
              f"build is left as it was: the core runs as {compiled.state().describe()}", file=sys.stderr)
        return 1
    built = sorted(LIB.rglob("*.so"))
    install(built)
    compiled.STAMP.write_text(json.dumps(stamp, indent=1, sort_keys=True) + "\n")
    build = compiled.state()
    if build.running != "compiled":
        # (the stamp says what was compiled: a source edited meanwhile makes it stale,
        # and relist check-config says so)
        print(f"build_core: the build is not usable: {build.reason}", file=sys.stderr)
        return 1
    print(f"build_core: {len(sources)} modules compiled in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
