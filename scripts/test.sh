#!/bin/sh
# Install relist and everything the tests need, lint, then run the whole test suite.
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh --test
# The linter, with pyproject.toml's [tool.ruff] settings: any finding fails the run.
.venv/bin/ruff check relist tests bench scripts
exec .venv/bin/python -m pytest "$@"
