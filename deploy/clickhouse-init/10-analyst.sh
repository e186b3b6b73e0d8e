#!/bin/bash
# A read-only analyst user (the image's `readonly` profile, SELECT on touchstream only),
# its password from the Docker secret clickhouse_analyst_password. Runs once, on the first
# start with an empty data volume (the image's /docker-entrypoint-initdb.d).
set -euo pipefail
password="$(tr -d '\n' < /run/secrets/clickhouse_analyst_password)"
case "$password" in *"'"*|*"\\"*) echo "the analyst password must not contain ' or \\" >&2; exit 1;; esac
clickhouse client --user "${CLICKHOUSE_USER:-default}" --password "${CLICKHOUSE_PASSWORD:-}" -n <<SQL
CREATE USER IF NOT EXISTS analyst IDENTIFIED WITH sha256_password BY '${password}'
  SETTINGS PROFILE 'readonly';
GRANT SELECT ON touchstream.* TO analyst;
SQL
