#!/bin/sh
# Install relist into ./.venv and run `relist demo` (no outside services needed).
set -eu
cd "$(dirname "$0")/.."
sh scripts/setup.sh
exec .venv/bin/relist demo "$@"
