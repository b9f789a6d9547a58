#!/bin/sh
# Install relist and everything the tests need, lint and type-check, then run the whole
# test suite twice: over the core's Python sources, then over the compiled core
# (scripts/build_core.sh, which setup.sh runs).  Arguments go to both pytest runs.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh --test
# The linter, with pyproject.toml's [tool.ruff] settings: any finding fails the run.
.venv/bin/ruff check relist tests bench scripts
# The type check the compiled core relies on (compiled code checks its annotations as
# it runs): any finding fails the run.
.venv/bin/mypy --ignore-missing-imports relist/core relist/core_build.py
echo "test.sh: the suite over the core's Python sources (RELIST_CORE=python)"
RELIST_CORE=python .venv/bin/python -m pytest "$@"
echo "test.sh: the suite over the compiled core (RELIST_CORE=compiled)"
RELIST_CORE=compiled exec .venv/bin/python -m pytest "$@"
