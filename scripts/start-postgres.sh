#!/usr/bin/env bash
# Start the local PostgreSQL the tests use (127.0.0.1:5432, tests/support/postgres.py) if it is
# installed but stopped; idempotent. Prints one line and exits 0 in every case but a cluster that
# will not start: without PostgreSQL the tests decide (skipped, or failed under CI=true), so a
# developer without it can still run the rest.
set -euo pipefail

HOST=127.0.0.1
WAIT_SECONDS=30

if command -v pg_isready >/dev/null && pg_isready -q -h "$HOST"; then
    echo "postgres: running on $HOST"
    exit 0
fi
versions=$(ls /etc/postgresql 2>/dev/null || true)
if ! command -v pg_ctlcluster >/dev/null || [[ -z $versions ]]; then
    echo "postgres: not installed (apt-get install postgresql); its tests are skipped, or fail under CI=true"
    exit 0
fi
version=$(sort -V <<<"$versions" | tail -n 1)  # the newest, if several are installed
if ! output=$(pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>&1); then
    # "already running" means it is up but not answering on $HOST yet; waiting below tells.
    [[ $output == *"already running"* ]] || {
        echo "postgres: $version/main failed to start: ${output//$'\n'/ }" >&2
        exit 1
    }
fi
for _ in $(seq $((WAIT_SECONDS * 10))); do
    if pg_isready -q -h "$HOST"; then
        echo "postgres: started $version/main on $HOST"
        exit 0
    fi
    sleep 0.1
done
echo "postgres: $version/main started but $HOST is not accepting connections after ${WAIT_SECONDS}s" >&2
exit 1
