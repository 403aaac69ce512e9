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

# checkov, in a venv of its own: it pins many packages the readers above
# also use (boto3, jsonschema), at versions of its own.
CHECKOV_VENV=.venv-checkov
CHECKOV=checkov==3.3.30
if [ "$(cat "$CHECKOV_VENV/.installed" 2>/dev/null)" != "$CHECKOV" ]; then
  python3 -m venv "$CHECKOV_VENV"
  "$CHECKOV_VENV/bin/pip" install --quiet --disable-pip-version-check "$CHECKOV"
  echo "$CHECKOV" > "$CHECKOV_VENV/.installed"
fi

# PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`): the state
# store tests run on it as well as on SQLite. Start it if it is down.
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
  for _ in $(seq 1 30); do
    pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null && break
    sleep 1
  done
fi
pg_isready -h 127.0.0.1 -p 5432 || { echo "PostgreSQL is not running on 127.0.0.1:5432" >&2; exit 1; }
# Databases earlier test runs made (one per test, for isolation).
psql -h 127.0.0.1 -U postgres -d test -Atqc \
  "SELECT datname FROM pg_database WHERE datname LIKE 'sluice\_test\_%'" |
  while read -r db; do psql -h 127.0.0.1 -U postgres -d test -qc "DROP DATABASE IF EXISTS $db" || true; done

# MariaDB on 127.0.0.1:3306 (root, empty password): the MySQL source tests
# run on it. Start it if it is down.
maria() { mariadb -h 127.0.0.1 -P 3306 -u root -N -B "$@"; }
if ! maria -e "SELECT 1" >/dev/null 2>&1; then
  if [ -x /etc/init.d/mariadb ]; then
    /etc/init.d/mariadb start || true
  fi
  for _ in $(seq 1 30); do
    maria -e "SELECT 1" >/dev/null 2>&1 && break
    sleep 1
  done
fi
maria -e "SELECT 1" >/dev/null || { echo "MariaDB is not running on 127.0.0.1:3306" >&2; exit 1; }
maria -e "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'sluice\_test\_%'" |
  while read -r db; do maria -e "DROP DATABASE IF EXISTS \`$db\`" || true; done


# Prometheus from Debian: promtool checks the metrics text and the alert
# rules, and the server scrapes a running daemon in the tests. Services
# are not started by the install (policy-rc.d): the tests start their own.
if [ ! -x /usr/bin/promtool ] || [ ! -x /usr/bin/prometheus ]; then
  had_policy=0
  [ -e /usr/sbin/policy-rc.d ] && had_policy=1
  [ "$had_policy" = 1 ] || printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends prometheus >/dev/null ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
  [ "$had_policy" = 1 ] || rm -f /usr/sbin/policy-rc.d
fi
/usr/bin/promtool --version >/dev/null

# Debian's Chromium and its ChromeDriver: the web UI's browser test drives
# them headless through selenium (from PyPI, in the venv).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; }
fi
/usr/bin/chromedriver --version >/dev/null

# kubectl, whose built-in kustomize renders k8s/ for the manifest tests.
# Debian's kubernetes-client is the fallback where none is installed; the
# test needs kustomize v4 or later and says so if this one is older.
if ! command -v kubectl >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null; }
fi
kubectl version --client >/dev/null
