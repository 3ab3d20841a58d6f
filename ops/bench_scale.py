"""Scaling part of `make bench`: backtest throughput with 1 vs N runners on the
same batch, and submit / job-status latency (p50, p99) on loopback while the
workers are busy. Appends its section to docs/BENCHMARKS.md.

Usage: python ops/bench_scale.py BIN_DIR
"""
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from bench import BIN, EXCHANGE, ROOT, SYMBOL, free_port, http  # noqa: E402 - same directory

BATCH = int(os.environ.get("BENCH_BATCH", "8"))


def run_batch(runners, data):
    port = free_port()
    env = dict(os.environ, JESSE_MCP_DATA_DIR=data, JESSE_MCP_STRATEGIES_DIR=os.path.join(ROOT, "strategies"),
               JESSE_MCP_PYTHON=sys.executable, JESSE_MCP_WORKERS=str(runners), JESSE_MCP_ADDR=f"127.0.0.1:{port}",
               RUST_LOG="warn")
    procs = [subprocess.Popen([os.path.join(BIN, "jesse-mcp-worker")], env=env),
             subprocess.Popen([os.path.join(BIN, "jesse-mcp-api"), "serve"], env=env, stdout=subprocess.DEVNULL)]
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                http("GET", base + "/health")
                break
            except OSError:
                time.sleep(0.05)
        body = {"strategy": "SmaCross", "exchange": EXCHANGE, "symbol": SYMBOL, "timeframe": "1h",
                "start_date": "2023-01-11", "end_date": "2023-07-01"}
        # Warm every runner (and the candle cache) before timing.
        warm = [http("POST", base + "/v1/backtests", body)["job_id"] for _ in range(runners)]
        wait_all(base, warm)
        started = time.perf_counter()
        jobs = [http("POST", base + "/v1/backtests", body)["job_id"] for _ in range(BATCH)]
        latencies = {"status": []}
        stop = threading.Event()

        def poll_status():
            while not stop.is_set():
                t = time.perf_counter()
                http("GET", f"{base}/v1/jobs/{jobs[0]}")
                latencies["status"].append((time.perf_counter() - t) * 1e3)
                time.sleep(0.02)

        poller = threading.Thread(target=poll_status)
        poller.start()
        wait_all(base, jobs)
        elapsed = time.perf_counter() - started
        stop.set()
        poller.join()
        submits = []
        for _ in range(200):
            t = time.perf_counter()
            job = http("POST", base + "/v1/backtests", body)["job_id"]
            submits.append((time.perf_counter() - t) * 1e3)
            http("POST", f"{base}/v1/jobs/{job}/cancel", {})
        return elapsed, latencies["status"], submits
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)


def wait_all(base, jobs):
    pending = set(jobs)
    while pending:
        for job in list(pending):
            state = http("GET", f"{base}/v1/jobs/{job}")["status"]
            if state in ("succeeded", "failed", "cancelled"):
                assert state == "succeeded", state
                pending.discard(job)
        time.sleep(0.1)


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main():
    work = tempfile.mkdtemp(prefix="jesse-mcp-scale-")
    data = os.path.join(work, "data")
    env = dict(os.environ, JESSE_MCP_DATA_DIR=data)
    subprocess.run([os.path.join(BIN, "jesse-mcp-api"), "candles", "synth", "--start", "2023-01-01", "--end", "2023-07-01"],
                   env=env, check=True, capture_output=True)
    n = os.cpu_count() or 2
    one, status1, submit1 = run_batch(1, data)
    many, status_n, submit_n = run_batch(n, data)
    speedup = one / many
    lines = ["", "## Scaling (SQLite, one machine)", "",
             f"Batch of {BATCH} SmaCross 1h backtests (2023-01-11..2023-07-01), runners warmed first; "
             f"status polled every 20 ms and 200 submit+cancel pairs after the batch.", "",
             "| runners | batch time (s) | throughput (backtests/s) | speed-up | target |", "|---|---|---|---|---|",
             f"| 1 | {one:.2f} | {BATCH / one:.2f} | 1.00 | |",
             f"| {n} | {many:.2f} | {BATCH / many:.2f} | **{speedup:.2f}** | ≥ {0.9 * n:.1f} |", "",
             "| latency on loopback | p50 (ms) | p99 (ms) | target p99 |", "|---|---|---|---|",
             f"| submit (validation + store + queue), right after the batch, each followed by a cancel | {pct(submit_n, 0.5):.1f} | {pct(submit_n, 0.99):.1f} | ≤ 10 ms |",
             f"| job status while {n} runners work | {pct(status_n, 0.5):.1f} | {pct(status_n, 0.99):.1f} | ≤ 5 ms |",
             "", f"With a single runner: submit p99 {pct(submit1, 0.99):.1f} ms, status p99 {pct(status1, 0.99):.1f} ms. "
             "On 2 cores every runner is one Jesse process using a full core, so the API and the client compete with them."]
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(ROOT, "docs/BENCHMARKS.md"), "a") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
