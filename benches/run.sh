#!/usr/bin/env bash
# Builds Sluice (release), installs the peers from PyPI into a venv, and
# runs the logs -> Parquet benchmark. Arguments go to logs_to_parquet.py
# (e.g. --mb 100 --runs 1 for a quick look).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${BENCH_VENV:-/tmp/sluice-bench-venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r benches/requirements.txt
# BENCH_PROFILE=profiling: release without LTO, which builds much faster.
PROFILE="${BENCH_PROFILE:-release}"
cargo build --profile "$PROFILE" -p sluice
BIN="${CARGO_TARGET_DIR:-target}/$PROFILE/sluice"
exec "$VENV/bin/python" benches/logs_to_parquet.py --sluice "$BIN" --python "$VENV/bin/python" "$@"
