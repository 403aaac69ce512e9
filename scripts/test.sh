#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test of
# the workspace. Extra arguments go to cargo nextest (e.g. a test name).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test-env.sh
export SLUICE_TEST_PYTHON="$PWD/.venv/bin/python"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
