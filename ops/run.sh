#!/usr/bin/env bash
# `make run`: serves REST + MCP on JESSE_MCP_ADDR with JESSE_MCP_WORKERS local
# runners, on the embedded SQLite store and queue, or on Postgres / Redis when
# JESSE_MCP_DATABASE_URL / JESSE_MCP_QUEUE_URL name them (local servers are
# started if down). Seeds a year of synthetic demo candles on first start so the
# example below works offline. Stops cleanly on SIGTERM/Ctrl-C.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if [ -f .env ]; then set -a; . ./.env; set +a; fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/jesse-mcp/target}"
export JESSE_MCP_ADDR="${JESSE_MCP_ADDR:-127.0.0.1:8080}"
export JESSE_MCP_DATA_DIR="${JESSE_MCP_DATA_DIR:-$root/data}"
export JESSE_MCP_STRATEGIES_DIR="${JESSE_MCP_STRATEGIES_DIR:-$root/strategies}"
export JESSE_MCP_WORKERS="${JESSE_MCP_WORKERS:-$(nproc)}"
export JESSE_MCP_PYTHON="${JESSE_MCP_PYTHON:-$(ops/python-env.sh)}"
case "${JESSE_MCP_DATABASE_URL:-}${JESSE_MCP_QUEUE_URL:-}" in
    *127.0.0.1*|*localhost*) ops/services.sh ;;
esac
bin="$CARGO_TARGET_DIR/release"
# Incremental: a no-op when nothing changed, a rebuild after a pull.
cargo build --release --workspace --bins --quiet

"$bin/jesse-mcp-api" candles synth --if-empty --start 2023-01-01 --end 2024-01-01 >/dev/null

"$bin/jesse-mcp-worker" &
worker=$!
"$bin/jesse-mcp-api" serve &
api=$!
requested=0
stop() { kill -TERM "$api" "$worker" 2>/dev/null || true; wait "$api" "$worker" 2>/dev/null || true; }
trap 'requested=1; stop' TERM INT

base="http://$JESSE_MCP_ADDR"
for _ in $(seq 1 100); do curl -sf "$base/health" >/dev/null 2>&1 && break; sleep 0.1; done
cat <<INFO

jesse-mcp is serving on $base (REST /v1, MCP /mcp) with $JESSE_MCP_WORKERS runner(s).
Data: $JESSE_MCP_DATA_DIR   Strategies: $JESSE_MCP_STRATEGIES_DIR
Store: ${JESSE_MCP_DATABASE_URL:-SQLite (data/store.db)}   Queue: ${JESSE_MCP_QUEUE_URL:-SQLite (data/queue.db)}

Submit a backtest (demo candles: Binance Perpetual Futures BTC-USDT, 2023):
  curl -s -X POST $base/v1/backtests -H 'content-type: application/json' \\
    -d '{"strategy":"SmaCross","exchange":"Binance Perpetual Futures","symbol":"BTC-USDT","timeframe":"1h","start_date":"2023-02-01","end_date":"2023-12-01"}'
Poll it, then read the metrics:
  curl -s $base/v1/jobs/<job_id>
  curl -s $base/v1/jobs/<job_id>/result

MCP client config (streamable HTTP):
  {"mcpServers": {"jesse": {"type": "http", "url": "$base/mcp"}}}
or stdio (the client starts it):
  {"mcpServers": {"jesse": {"command": "$root/ops/mcp-stdio.sh"}}}

Ctrl-C (or SIGTERM) stops the API and the workers.
INFO
set +e
wait -n "$api" "$worker"
status=$?
stop
# A requested stop is a clean exit; otherwise one process died on its own.
[ "$requested" = 1 ] && exit 0
echo "jesse-mcp: a process exited unexpectedly (status $status); stopped the other" >&2
exit "$status"
