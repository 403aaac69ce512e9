#!/usr/bin/env bash
# Installs what the tests need beside Rust, idempotently: a Python venv in
# .venv with the independent readers and servers the tests talk to
# (pyarrow and DuckDB to read Parquet back, moto's S3 server).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
REQS=scripts/test-requirements.txt
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
# Reinstall only when the requirements changed.
stamp="$VENV/.requirements.sha"
want=$(sha256sum "$REQS" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQS"
  echo "$want" > "$stamp"
fi
