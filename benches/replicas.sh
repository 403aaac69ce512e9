#!/usr/bin/env bash
# Scale-out: 300 tasks that each wait 100 ms, worked by 1, 2 and 4
# replicas (workers = 4 each) on the local PostgreSQL state store. Prints
# the wall times and speed-ups, and checks every task ran exactly once.
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth, database
# test). Built with the dev profile the tests use.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench --profile dev --workspace --bench replicas -- "$@"
