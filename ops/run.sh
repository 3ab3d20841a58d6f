#!/usr/bin/env bash
# `make run`: serves REST + MCP on JESSE_MCP_ADDR with JESSE_MCP_WORKERS local
# runners, on the embedded SQLite store and queue, or on Postgres / Redis when
# JESSE_MCP_DATABASE_URL / JESSE_MCP_QUEUE_URL name them (local servers are
# started if down). JESSE_MCP_WORKER_PROCESSES (default 1) worker processes, each
# restarted when it dies. Seeds a year of synthetic demo candles on first start so the
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
# JESSE_MCP_BIN_DIR runs prebuilt binaries (the tests run this script on their
# debug build); otherwise an incremental release build: a no-op when nothing
# changed, a rebuild after a pull.
if [ -n "${JESSE_MCP_BIN_DIR:-}" ]; then
    bin="$JESSE_MCP_BIN_DIR"
else
    bin="$CARGO_TARGET_DIR/release"
    cargo build --release --workspace --bins --quiet
fi
processes="${JESSE_MCP_WORKER_PROCESSES:-1}"
case "$processes" in
    ''|*[!0-9]*|0) echo "jesse-mcp: JESSE_MCP_WORKER_PROCESSES must be a whole number from 1 (got '$processes')" >&2; exit 2 ;;
esac
run_dir="$JESSE_MCP_DATA_DIR/run"
mkdir -p "$run_dir"

"$bin/jesse-mcp-api" candles synth --if-empty --start 2023-01-01 --end 2024-01-01 >/dev/null

# Each worker process runs under a supervisor that restarts it when it dies
# (kill -9, out of memory), with backoff, while the API keeps serving: the job
# it held resumes on a worker once its lease expires. Its pid is in
# $run_dir/worker-<n>.pid.
supervise_worker() {
    local slot=$1 delay=1 child="" started status
    trap 'if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; wait "$child" 2>/dev/null; fi; rm -f "$run_dir/worker-$slot.pid"; exit 0' TERM INT
    while true; do
        started=$SECONDS
        "$bin/jesse-mcp-worker" &
        child=$!
        echo "$child" >"$run_dir/worker-$slot.pid"
        status=0
        wait "$child" || status=$?
        # A worker that ran a while before dying starts again at once; one
        # that dies at start waits longer each time (up to 30 s).
        if [ $((SECONDS - started)) -ge 60 ]; then delay=1; fi
        echo "jesse-mcp: worker $slot (pid $child) exited with status $status; restarting it in ${delay}s" >&2
        sleep "$delay" &
        child=$!
        wait "$child" || true
        delay=$((delay * 2 > 30 ? 30 : delay * 2))
    done
}
supervisors=()
for slot in $(seq 1 "$processes"); do
    supervise_worker "$slot" &
    supervisors+=($!)
done
"$bin/jesse-mcp-api" serve &
api=$!
echo "$api" >"$run_dir/api.pid"
requested=0
stop() {
    kill -TERM "$api" "${supervisors[@]}" 2>/dev/null || true
    wait "$api" "${supervisors[@]}" 2>/dev/null || true
}
trap 'requested=1; stop' TERM INT

base="http://$JESSE_MCP_ADDR"
for _ in $(seq 1 100); do curl -sf "$base/health" >/dev/null 2>&1 && break; sleep 0.1; done
cat <<INFO

jesse-mcp is serving on $base (REST /v1, MCP /mcp) with $processes worker process(es) of $JESSE_MCP_WORKERS runner(s).
Dashboard: $base/   OpenAPI: $base/v1/openapi.json
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
# Workers are restarted by their supervisors; the service stops when the API does.
wait "$api"
status=$?
stop
# A requested stop is a clean exit; otherwise the API died on its own.
[ "$requested" = 1 ] && exit 0
echo "jesse-mcp: the API exited unexpectedly (status $status); stopped the workers" >&2
exit "$status"
