#!/usr/bin/env bash
# The HTTP server under load: /metrics while 1,000 task instances run, and
# the runs listing and UI pages of a job with 10,000 runs, on SQLite and
# on the local PostgreSQL, each beside /healthz on the same server (the
# floor). Prints p50/p99 ms and the p50 ratio to the floor.
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth, database
# test); pass --sqlite-only to skip it. Built with the dev profile the
# tests use, so it reuses their build.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench --profile dev --workspace --bench http -- "$@"
