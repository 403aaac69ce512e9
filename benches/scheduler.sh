#!/usr/bin/env bash
# Scheduler overhead: 1,000 no-op tasks (fan-out and chain) and 10,000
# queued task instances, on SQLite and on the local PostgreSQL. Prints
# task instances per second and the p50/p99 delay from ready to started.
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth, database
# test); pass --sqlite-only to skip it.
# Built with the dev profile the tests use (opt-level 1), so it reuses
# their build: the cost measured here is state store round trips and
# thread wake-ups, not code generation.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench --profile dev --workspace --bench scheduler -- "$@"
