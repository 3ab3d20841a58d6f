#!/usr/bin/env bash
# Stable launcher for MCP clients that start servers over stdio. Builds on first
# use, starts a local worker beside the stdio server (JESSE_MCP_STDIO_WORKER=0 to
# rely on workers started elsewhere, e.g. `make run`), and keeps stdout for MCP.
# Like `make run`, it stores the demo series (SYNTHETIC candles, labelled so
# everywhere) when the store holds no candles, so the README's example works here too.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [ -f .env ]; then set -a; . ./.env; set +a; fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/jesse-mcp/target}"
export JESSE_MCP_DATA_DIR="${JESSE_MCP_DATA_DIR:-$root/data}"
export JESSE_MCP_STRATEGIES_DIR="${JESSE_MCP_STRATEGIES_DIR:-$root/strategies}"
export JESSE_MCP_WORKERS="${JESSE_MCP_WORKERS:-1}"
export JESSE_MCP_PYTHON="${JESSE_MCP_PYTHON:-$(ops/python-env.sh 2>&2)}"
bin="$CARGO_TARGET_DIR/release"
# JESSE_MCP_BIN_DIR runs prebuilt binaries (the tests run this script on their
# debug build); otherwise an incremental release build (a no-op when nothing
# changed); stdout stays reserved for MCP.
if [ -n "${JESSE_MCP_BIN_DIR:-}" ]; then
  bin="$JESSE_MCP_BIN_DIR"
else
  cargo build --release --workspace --bins --quiet >&2
fi
"$bin/jesse-mcp-api" candles demo >&2
worker=""
if [ "${JESSE_MCP_STDIO_WORKER:-1}" != "0" ]; then
  "$bin/jesse-mcp-worker" >&2 &
  worker=$!
  trap 'kill -TERM $worker 2>/dev/null; wait $worker 2>/dev/null' EXIT
fi
"$bin/jesse-mcp-api" mcp-stdio
