#!/usr/bin/env bash
# The whole test suite, from a fresh clone: venv (cached), formatting and lints,
# binaries, then unit and end-to-end tests against real Jesse.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/jesse-mcp/target}"

ops/python-env.sh >/dev/null
# Distributed-mode tests use the machine's Redis and Postgres; start them if down,
# and drop the databases earlier runs' tests left behind.
ops/services.sh
psql -h 127.0.0.1 -U postgres -d test -tAc \
    "SELECT 'DROP DATABASE ' || quote_ident(datname) || ';' FROM pg_database WHERE datname LIKE 'jesse_mcp_test_%'" \
    | psql -h 127.0.0.1 -U postgres -d test -q >/dev/null
redis-cli -h 127.0.0.1 --scan --pattern 'jesse-mcp-test-*' | xargs -r -n 500 redis-cli -h 127.0.0.1 del >/dev/null
echo "== docker-compose config"; ops/compose-check.sh
# The dashboard's browser tests: Debian's chromium and the locked npm packages
# (cached outside the clone); web/vendor/ must be the locked lightweight-charts.
echo "== browser"; ops/browser-env.sh >/dev/null; ops/vendor-web.sh --check
echo "== MCP clients"; ops/mcp-clients-env.sh >/dev/null  # the TypeScript SDK (npm lock); the Python SDK is in the tools venv
echo "== fmt"; cargo fmt --all --check
echo "== clippy"; cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== build"; cargo build --workspace --bins --quiet
echo "== tests"
# End-to-end tests start real runner processes; two at a time suits two cores.
cargo test --workspace -- --test-threads=2
