#!/usr/bin/env bash
# Builds Sluice (release), installs DuckDB 1.5.5 with its postgres scanner
# (from PyPI: `INSTALL postgres` needs the internet), ConnectorX and pyarrow
# into a venv, and runs the PostgreSQL -> Parquet benchmark. Arguments go
# to pg_to_parquet.py (e.g. --rows 500000 --runs 1 for a quick look).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${BENCH_PG_VENV:-/tmp/sluice-pgbench-venv}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r benches/requirements-pg.txt
PROFILE="${BENCH_PROFILE:-release}"
cargo build --profile "$PROFILE" -p sluice
BIN="${CARGO_TARGET_DIR:-target}/$PROFILE/sluice"
exec "$VENV/bin/python" benches/pg_to_parquet.py --sluice "$BIN" --python "$VENV/bin/python" "$@"
