"""Durability part of `make bench` (alone: `ops/bench.sh durability`): what a
durable 202 costs on SQLite.

The store commits with `synchronous=FULL` by default (the write-ahead log is
fsynced at every commit, so a job answered with 202 survives a power loss);
`JESSE_MCP_SQLITE_SYNCHRONOUS=normal` skips that fsync. This bench times
`POST /v1/backtests` (HTTP, validation, the store's commit, the enqueue) under
both, in alternating rounds on fresh data directories, with the API alone (no
worker takes the jobs, so nothing else writes meanwhile). Replaces its section
of docs/BENCHMARKS.md (or appends it).

Usage: python ops/bench_submit.py BIN_DIR
"""
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench import BIN, EXCHANGE, SYMBOL, http, service  # noqa: E402 - same directory

ROUNDS = int(os.environ.get("BENCH_SUBMIT_ROUNDS", "3"))
SUBMITS = int(os.environ.get("BENCH_SUBMITS", "200"))
HEADING = "## Durable submits: SQLite synchronous=FULL vs NORMAL"
BODY = {"strategy": "SmaCross", "exchange": EXCHANGE, "symbol": SYMBOL, "timeframe": "1h",
        "start_date": "2023-01-11", "end_date": "2023-02-01"}


def one_round(csv, mode):
    """Submit latencies (ms) of SUBMITS backtests on a fresh store under `mode`."""
    work = tempfile.mkdtemp(prefix="jesse-mcp-submit-")
    data = os.path.join(work, "data")
    env = dict(os.environ, JESSE_MCP_DATA_DIR=data, JESSE_MCP_SQLITE_SYNCHRONOUS=mode, RUST_LOG="warn")
    api = os.path.join(BIN, "jesse-mcp-api")
    try:
        subprocess.run([api, "candles", "import-csv", "--exchange", EXCHANGE, "--symbol", SYMBOL, csv],
                       env=env, check=True, capture_output=True)
        with service(data, workers=0, extra_env={"JESSE_MCP_SQLITE_SYNCHRONOUS": mode}) as base:
            for _ in range(5):  # warm the connection pool and the candle coverage cache
                http("POST", base + "/v1/backtests", BODY)
            latencies = []
            for _ in range(SUBMITS):
                started = time.perf_counter()
                answer = http("POST", base + "/v1/backtests", BODY)
                latencies.append((time.perf_counter() - started) * 1e3)
                assert answer.get("job_id"), answer
            return latencies
    finally:
        shutil.rmtree(work, ignore_errors=True)


def p95(values):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def main():
    work = tempfile.mkdtemp(prefix="jesse-mcp-submit-csv-")
    csv = os.path.join(work, "candles.csv")
    try:
        subprocess.run([os.path.join(BIN, "jesse-mcp-api"), "candles", "synth", "--start", "2023-01-01",
                        "--end", "2023-02-01", "--csv", csv], check=True, capture_output=True)
        runs = {"full": [], "normal": []}
        for round_ in range(ROUNDS):
            order = ["full", "normal"] if round_ % 2 == 0 else ["normal", "full"]
            for mode in order:
                runs[mode].append(one_round(csv, mode))
                print(f"round {round_ + 1} {mode}: median {statistics.median(runs[mode][-1]):.2f} ms", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    medians = {m: statistics.median([statistics.median(r) for r in rs]) for m, rs in runs.items()}
    tails = {m: statistics.median([p95(r) for r in rs]) for m, rs in runs.items()}
    lines = ["", HEADING, "",
             f"{platform.machine()}, {os.cpu_count()} cores, {os.path.basename(os.path.normpath(BIN))} build; "
             f"{ROUNDS} alternating rounds of {SUBMITS} sequential "
             "`POST /v1/backtests` each, API alone on a fresh SQLite store; medians over rounds.", "",
             "| store commit | submit median (ms) | submit p95 (ms) |", "|---|---|---|"]
    for mode, label in (("full", "`synchronous=FULL` (default: a 202 survives power loss)"),
                        ("normal", "`synchronous=NORMAL` (a 202 survives a crash only)")):
        lines.append(f"| {label} | {medians[mode]:.2f} | {tails[mode]:.2f} |")
    lines += ["", f"A durable submit costs {medians['full'] / medians['normal']:.2f}× the median latency of a "
              f"crash-safe one ({medians['full'] - medians['normal']:+.2f} ms)."]
    text = "\n".join(lines)
    print(text)
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs/BENCHMARKS.md")
    doc = open(path).read() if os.path.exists(path) else ""
    start = doc.find("\n" + HEADING + "\n")
    if start >= 0:
        end = doc.find("\n## ", start + 1)
        doc = doc[:start] + (doc[end:] if end >= 0 else "")
    with open(path, "w") as f:
        f.write(doc.rstrip("\n") + "\n" + text + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main()
