#!/usr/bin/env bash
# Makes sure the machine's Redis (127.0.0.1:6379) and PostgreSQL (127.0.0.1:5432)
# answer, starting them with the machine's own commands when they are down.
# Used by `make test` (the distributed-mode tests need both) and `make run` when
# JESSE_MCP_DATABASE_URL / JESSE_MCP_QUEUE_URL point at them.
set -euo pipefail

wait_for() { # name, probe command...
    local name="$1"; shift
    for _ in $(seq 1 60); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    echo "services: $name did not come up" >&2
    return 1
}

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping | grep -q PONG; }
postgres_up() { pg_isready -h 127.0.0.1 -p 5432 -q; }

if ! redis_up 2>/dev/null; then
    command -v redis-server >/dev/null || { echo "services: redis-server is not installed (Debian: apt-get install redis-server)" >&2; exit 1; }
    echo "services: starting Redis on 127.0.0.1:6379" >&2
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_for Redis redis_up
fi

if ! postgres_up 2>/dev/null; then
    command -v pg_ctlcluster >/dev/null || { echo "services: PostgreSQL is not installed (Debian: apt-get install postgresql)" >&2; exit 1; }
    echo "services: starting PostgreSQL on 127.0.0.1:5432" >&2
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
    wait_for PostgreSQL postgres_up
fi
