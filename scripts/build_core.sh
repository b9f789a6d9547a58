#!/bin/sh
# Compile relist's core with mypyc into extension modules beside its sources (about a
# minute on 2 cores; nothing to do when the build is current).  relist/core_build.py
# says when the build runs; `relist check-config` shows which core runs.
#   sh scripts/build_core.sh            build, unless current
#   sh scripts/build_core.sh --force    build again
#   sh scripts/build_core.sh --clean    remove the build: the Python sources run
# Needs a C compiler and the Python headers (Debian: apt install gcc python3-dev) and
# the pinned mypy (pip install -e '.[build]', which scripts/setup.sh does).
set -eu
cd "$(dirname "$0")/.."
exec .venv/bin/python scripts/build_core.py "$@"
