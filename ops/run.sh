#!/usr/bin/env bash
# `make run`: serves REST + MCP on JESSE_MCP_ADDR with JESSE_MCP_WORKERS local
# runners, on the embedded SQLite store and queue, or on Postgres / Redis when
# JESSE_MCP_DATABASE_URL / JESSE_MCP_QUEUE_URL name them (local servers are
# started if down). JESSE_MCP_WORKER_PROCESSES (default 1) worker processes, each
# restarted when it dies. On a store without candles, stores the demo series (a
# year of SYNTHETIC candles, labelled so everywhere; `jesse-mcp-api candles demo`,
# as ops/mcp-stdio.sh does) so the example below works offline. Prints its banner
# once the runners are warm. Stops cleanly on SIGTERM/Ctrl-C.
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

"$bin/jesse-mcp-api" candles demo

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
stop() {
    kill -TERM "$api" "${supervisors[@]}" 2>/dev/null || true
    wait "$api" "${supervisors[@]}" 2>/dev/null || true
}
# A requested stop says so and exits 0, whatever the API answered on its way down.
stopped_on_request() {
    trap '' INT TERM
    stop
    echo "jesse-mcp: stopped as asked ($1); the API and the workers are down" >&2
    exit 0
}
trap 'stopped_on_request "Ctrl-C"' INT
trap 'stopped_on_request "SIGTERM"' TERM

base="http://$JESSE_MCP_ADDR"
# Credentials never reach the terminal.
redact() { sed -E 's#(://[^:/@]*):[^@/]*@#\1:***@#'; }
# /ready reports {"runners": {"ready", "total", ...}}; the banner waits until
# every runner of every worker process is warm (or JESSE_MCP_WARM_TIMEOUT_SECS).
expected=$((processes * JESSE_MCP_WORKERS))
warm="" ready=0
deadline=$((SECONDS + ${JESSE_MCP_WARM_TIMEOUT_SECS:-300}))
while [ "$SECONDS" -lt "$deadline" ]; do
    if ! kill -0 "$api" 2>/dev/null; then break; fi
    runners=$(curl -sf "$base/ready" 2>/dev/null | grep -o '"runners":{[^}]*}' || true)
    ready=$(sed -nE 's/.*"ready":([0-9]+).*/\1/p' <<<"$runners")
    if [ "${ready:-0}" -ge "$expected" ]; then warm=1; break; fi
    sleep 0.2
done
if [ -n "$warm" ]; then
    runners_line="$ready of $expected runner(s) warm"
else
    runners_line="${ready:-0} of $expected runner(s) warm so far (still starting: jobs wait in the queue until they are)"
fi
# The demo series, if stored, is named as what it is.
demo=""
if curl -sf "$base/v1/candles" 2>/dev/null | grep -q '"source":"synthetic"'; then
    demo="Candles: DEMO DATA. Synthetic candles (not market prices) are stored for the example below (source
\"synthetic\" in GET /v1/candles and in every result on them); import real ones with POST /v1/candles/imports.
"
fi
cat <<INFO

jesse-mcp is serving on $base (REST /v1, MCP /mcp) with $processes worker process(es) of $JESSE_MCP_WORKERS runner(s): $runners_line.
Dashboard: $base/   OpenAPI: $base/v1/openapi.json
Data: $JESSE_MCP_DATA_DIR   Strategies: $JESSE_MCP_STRATEGIES_DIR
Store: $(redact <<<"${JESSE_MCP_DATABASE_URL:-SQLite ($JESSE_MCP_DATA_DIR/store.db)}")   Queue: $(redact <<<"${JESSE_MCP_QUEUE_URL:-SQLite ($JESSE_MCP_DATA_DIR/queue.db)}")
${demo}
Submit a backtest (on the demo candles: Binance Perpetual Futures BTC-USDT, 2023, synthetic):
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
trap '' INT TERM
stop
# The API exits 0 only after a stop signal (Ctrl-C reaches it directly even
# where this script cannot trap SIGINT, e.g. started in the background).
if [ "$status" = 0 ]; then
    echo "jesse-mcp: stopped as asked (the API received SIGINT or SIGTERM); the API and the workers are down" >&2
    exit 0
fi
echo "jesse-mcp: the API exited on its own (status $status), not on a Ctrl-C or SIGTERM; stopped the workers" >&2
exit "$status"
