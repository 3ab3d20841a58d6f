#!/usr/bin/env bash
# Validates docker-compose.yml with `docker-compose config` (Debian's package,
# installed here if missing; no Docker engine is needed to validate).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if ! command -v docker-compose >/dev/null; then
    echo "compose-check: installing Debian's docker-compose" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q docker-compose >/dev/null 2>&1 \
        || { apt-get update -q >/dev/null && apt-get install -y -q docker-compose >/dev/null; }
fi
# The file requires operator tokens; validate with a placeholder.
rendered="$(JESSE_MCP_TOKENS=placeholder=admin docker-compose -f docker-compose.yml config)"
for service in redis postgres migrate api worker; do
    grep -q "^  $service:" <<<"$rendered" || { echo "compose-check: service $service missing" >&2; exit 1; }
done
# Published ports must stay on loopback.
if grep -E "^\s+published:|^\s+- [0-9]+:[0-9]+" <<<"$rendered" | grep -v "127.0.0.1" | grep -q .; then
    echo "compose-check: a port is published beyond 127.0.0.1" >&2; exit 1
fi
echo "docker-compose.yml: valid ($(docker-compose version --short))"
