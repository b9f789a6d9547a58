"""Compile relist's core with mypyc into extension modules beside its sources, then
write the stamp that says which sources they were built from (relist.core_build).

Run by scripts/build_core.sh with the project's virtualenv (which has the pinned mypy:
pyproject.toml's "build" extra).  Needs a C compiler and the Python headers.  On any
failure the old build is gone and no stamp is written: the sources run.
"""

from __future__ import annotations

import json
import os
import sys
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


def main(argv: list[str]) -> int:
    if argv[1:] == ["--clean"]:
        print(f"build_core: removed the compiled build ({clean()} files)")
        return 0
    if argv[1:] not in ([], ["--force"]):
        print("usage: build_core.sh [--force | --clean]", file=sys.stderr)
        return 2
    if argv[1:] != ["--force"] and compiled.state().running == "compiled":
        print("build_core: the compiled core is current")
        return 0
    from mypyc.build import mypycify
    from setuptools import setup

    clean()
    sources = compiled.compilable()
    rel = [str(p.relative_to(ROOT)) for p in sources]
    started = time.monotonic()
    os.chdir(ROOT)
    extensions = mypycify(["--ignore-missing-imports", *rel], opt_level="3",
                          group_name=compiled.GROUP, target_dir="build/core")
    jobs = str(os.cpu_count() or 1)
    setup(name="relist-core", ext_modules=extensions, script_args=[
        "-q", "build_ext", "--inplace", "--build-temp", "build/core/temp", "--parallel", jobs])
    compiled.STAMP.write_text(json.dumps(compiled.stamp_for(sources), indent=1, sort_keys=True) + "\n")
    build = compiled.state()
    if build.running != "compiled":
        print(f"build_core: the build is not usable: {build.reason}", file=sys.stderr)
        clean()
        return 1
    print(f"build_core: {len(sources)} modules compiled in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
