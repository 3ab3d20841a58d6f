"""`make bench`: jesse-mcp against bare Jesse, in one run, on the same candles.

Starts a real API and worker (release build) on a scratch data directory with a
year of synthetic 1m candles, then for each timeframe runs the same backtest
bare (jesse.research.backtest on in-memory numpy arrays, warm interpreter) and
through the service (REST submit to stored result), and prints the ratio and the
service's own breakdown. Writes the figures to docs/BENCHMARKS.md.

Usage: python ops/bench.py BIN_DIR  (run by ops/bench.sh with the venv's python)
"""
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = sys.argv[1]
EXCHANGE, SYMBOL = "Binance Perpetual Futures", "BTC-USDT"
START, END = "2023-01-11", "2024-01-01"  # 240 warm-up hours before START are stored too
REPEATS = int(os.environ.get("BENCH_REPEATS", "5"))
TIMEFRAMES = os.environ.get("BENCH_TIMEFRAMES", "1h,15m").split(",")


def ms(day):
    return int(dt.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc).timestamp() * 1000)


def http(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as resp:
        return json.loads(resp.read())


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(data, runners=1, extra_env=None):
    """The environment of the release binaries on the scratch data directory `data`."""
    return dict(os.environ, JESSE_MCP_DATA_DIR=data, JESSE_MCP_STRATEGIES_DIR=os.path.join(ROOT, "strategies"),
                JESSE_MCP_PYTHON=sys.executable, JESSE_MCP_WORKERS=str(runners), JESSE_MCP_ADDR=f"127.0.0.1:{free_port()}",
                RUST_LOG="warn", **(extra_env or {}))


@contextlib.contextmanager
def service(data, runners=1, workers=1, extra_env=None):
    """An API and `workers` worker processes with `runners` runners each; yields the API's base URL once healthy."""
    env = service_env(data, runners, extra_env)
    procs = [subprocess.Popen([os.path.join(BIN, "jesse-mcp-worker")], env=env) for _ in range(workers)]
    procs.append(subprocess.Popen([os.path.join(BIN, "jesse-mcp-api"), "serve"], env=env, stdout=subprocess.DEVNULL))
    base = "http://" + env["JESSE_MCP_ADDR"]
    try:
        for _ in range(200):
            try:
                http("GET", base + "/health")
                break
            except OSError:
                time.sleep(0.05)
        yield base
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)


def main():
    work = tempfile.mkdtemp(prefix="jesse-mcp-bench-")
    os.chmod(work, 0o755)  # as a project's data dir is: as root, jobs switch to an unprivileged uid
    data = os.path.join(work, "data")
    csv = os.path.join(work, "year.csv")
    env = service_env(data)
    api = os.path.join(BIN, "jesse-mcp-api")
    subprocess.run([api, "candles", "synth", "--start", "2023-01-01", "--end", "2024-01-01", "--csv", csv],
                   env=env, check=True, capture_output=True)
    started = time.perf_counter()
    out = subprocess.run([api, "candles", "import-csv", "--exchange", EXCHANGE, "--symbol", SYMBOL, csv],
                         env=env, check=True, capture_output=True)
    import_s = time.perf_counter() - started
    rows = json.loads(out.stdout)["inserted"]

    try:
        with service(data) as base:
            results = {tf: bench_timeframe(base, csv, tf) for tf in TIMEFRAMES}
            storage = bench_storage(base, csv)
        fork = bench_fork(csv)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results, rows, import_s, storage, fork)


FORK_REPEATS = 15


def bench_fork(csv, timeframe="1h"):
    """What a fresh process per job costs, isolated from the rest of the service: one
    warm bare-Jesse interpreter runs the same backtest in-process, in a child forked
    when the job comes (how the runner worked before spares), and in a spare (forked
    and warmed up ahead, as the runner does now), in turn. CPU time (the child's from
    wait4, plus the parent's own) is reported beside wall time: it hardly moves when
    something else shares the cores."""
    bare = BareJesse(csv, timeframe)
    runs = {"run": [], "fork": [], "spare": []}
    try:
        _, reference = bare.run()
        bare.run("fork")
        bare.run("spare")
        for _ in range(FORK_REPEATS):
            for how in runs:
                answer = bare.ask(how)
                assert answer["metrics"] == reference, f"a {how} backtest differs"
                runs[how].append(answer)
    finally:
        bare.close()
    med = lambda how, key: statistics.median(a[key] for a in runs[how])  # noqa: E731
    out = {"timeframe": timeframe, "repeats": FORK_REPEATS, "spare_ready_s": med("spare", "ready_seconds")}
    for how in runs:
        out[f"{how}_s"] = med(how, "seconds")
        out[f"{how}_cpu_s"] = med(how, "cpu_seconds")
    for how in ("fork", "spare"):
        out[f"{how}_wall_cost_ms"] = (out[f"{how}_s"] - out["run_s"]) * 1e3
        out[f"{how}_cpu_cost_ms"] = (out[f"{how}_cpu_s"] - out["run_cpu_s"]) * 1e3
    return out


def bench_timeframe(base, csv, timeframe):
    """Alternates bare and service runs so drift in machine speed hits both alike."""
    body = {"strategy": "SmaCross", "exchange": EXCHANGE, "symbol": SYMBOL, "timeframe": timeframe,
            "start_date": START, "end_date": END}
    bare = BareJesse(csv, timeframe)
    bare_times, service, breakdowns, submits, cold = [], [], [], [], None
    try:
        for i in range(REPEATS + 1):  # run 0 warms both sides (and is the service's cold load)
            bare_s, bare_metrics = bare.run()
            submitted = time.time()
            job = http("POST", base + "/v1/backtests", body)["job_id"]
            submit_ms = (time.time() - submitted) * 1e3
            while True:
                state = http("GET", f"{base}/v1/jobs/{job}")
                if state["status"] in ("succeeded", "failed", "cancelled"):
                    break
                time.sleep(0.1)  # timing comes from the server's finished_at; slow polling keeps the core quiet
            assert state["status"] == "succeeded", state
            finished = dt.datetime.fromisoformat(state["finished_at"].replace("Z", "+00:00")).timestamp()
            result = http("GET", f"{base}/v1/jobs/{job}/result")
            assert result["metrics"] == bare_metrics, "service and bare Jesse disagree"
            if i == 0:
                cold = result["timings"]  # first load of this range: straight from the store
                continue
            bare_times.append(bare_s)
            service.append(finished - submitted)
            breakdowns.append(result["timings"])
            submits.append(submit_ms)
    finally:
        bare.close()
    median = lambda key: statistics.median(b[key] for b in breakdowns)
    return {
        "bare_s": statistics.median(bare_times),
        "service_s": statistics.median(service),
        "ratio": statistics.median(service) / statistics.median(bare_times),
        "queue_wait_ms": median("queue_wait_ms"),
        "candle_load_ms": median("candle_load_ms"),
        "runner_receive_ms": median("runner_receive_ms"),
        "jesse_ms": median("jesse_ms"),
        "jesse_backtest_ms": median("jesse_backtest_ms"),
        "result_convert_ms": median("result_convert_ms"),
        "result_write_ms": median("result_write_ms"),
        "submit_ms": statistics.median(submits),
        "job_spare_wait_ms": statistics.median(b.get("job_spare_wait_ms", float("nan")) for b in breakdowns),
        "cold_load_ms": cold["candle_load_ms"],
        "cold_transfer_ms": cold["runner_receive_ms"],
    }


class BareJesse:
    """Bare Jesse in its own warm interpreter, numpy arrays in memory; one backtest per request."""

    def __init__(self, csv, timeframe, start=START, end=END):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "ops/bench_bare.py"), csv, timeframe,
             os.path.join(ROOT, "strategies/SmaCross/__init__.py"), str(ms(start)), str(ms(end)), EXCHANGE, SYMBOL],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, how):
        self.proc.stdin.write(how + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def run(self, how="run"):
        answer = self.ask(how)
        return answer["seconds"], answer["metrics"]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def bench_storage(base, csv):
    """Gap report over a year with gaps, and the coverage listing with 200 series."""
    lines = open(csv).read().splitlines()
    header, body = lines[0], lines[1:]
    # ETH-USDT: the same year with 50 one-hour holes.
    holes = {i * 10_000 + j for i in range(50) for j in range(60)}
    gappy = "\n".join([header] + [row for i, row in enumerate(body) if i not in holes]) + "\n"
    req = urllib.request.Request(f"{base}/v1/candles/csv?exchange=Binance%20Perpetual%20Futures&symbol=ETH-USDT",
                                 data=gappy.encode(), method="POST", headers={"content-type": "text/csv"})
    with urllib.request.urlopen(req) as resp:
        json.loads(resp.read())
    url = f"{base}/v1/candles/Binance%20Perpetual%20Futures/ETH-USDT/gaps?start_date=2023-01-01&end_date=2024-01-01"
    gap_times, gaps = [], None
    for _ in range(10):
        started = time.perf_counter()
        gaps = http("GET", url)
        gap_times.append((time.perf_counter() - started) * 1e3)
    assert len(gaps["gaps"]) == 50, gaps["gaps"][:3]
    # 200 more series of one day each, then time the listing.
    day = "\n".join([header] + body[:1440]) + "\n"
    for i in range(200):
        req = urllib.request.Request(f"{base}/v1/candles/csv?exchange=Binance%20Spot&symbol=C{i}-USDT",
                                     data=day.encode(), method="POST", headers={"content-type": "text/csv"})
        with urllib.request.urlopen(req) as resp:
            resp.read()
    list_times = []
    for _ in range(20):
        started = time.perf_counter()
        listing = http("GET", base + "/v1/candles")
        list_times.append((time.perf_counter() - started) * 1e3)
    return {"gap_ms": statistics.median(gap_times), "gap_count": len(gaps["gaps"]),
            "list_ms": statistics.median(list_times), "series": len(listing["series"])}


def report(results, rows, import_s, storage, fork):
    lines = []
    lines.append(f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
                 f"{os.cpu_count()} cores; median of {REPEATS} alternating bare/service runs after one warm-up each; SmaCross over {START}..{END} "
                 f"(one year of 1m candles incl. warm-up, {rows} rows), 1 runner.")
    lines.append("")
    lines.append("| timeframe | bare Jesse (s) | service, submit → stored result (s) | ratio | target |")
    lines.append("|---|---|---|---|---|")
    for tf, r in results.items():
        target = "≤ 1.05" if tf == "1h" else "—"
        lines.append(f"| {tf} | {r['bare_s']:.3f} | {r['service_s']:.3f} | **{r['ratio']:.3f}** | {target} |")
    lines.append("")
    lines.append("Service breakdown (median ms):")
    lines.append("")
    lines.append("| timeframe | submit (HTTP + validation) | queue wait | candle load (cache hit) | transfer into runner | research.backtest | result conversion | result write |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for tf, r in results.items():
        lines.append(f"| {tf} | {r['submit_ms']:.1f} | {r['queue_wait_ms']:.1f} | {r['candle_load_ms']:.1f} | {r['runner_receive_ms']:.1f} | "
                     f"{r['jesse_backtest_ms']:.1f} | {r['result_convert_ms']:.1f} | {r['result_write_ms']:.1f} |")
    lines.append("")
    lines.append("A fresh process per job (docs/SECURITY.md), isolated: one warm bare-Jesse interpreter runs the "
                 f"{fork['timeframe']} backtest in turn in-process, in a child forked when the job comes (fork, run, "
                 "answer over a pipe, exit, reap), and in a spare (forked and warmed up by the runner's own `prefault` "
                 f"ahead of the job, then given the job), {fork['repeats']} of each; medians. Target ≤ 20 ms added per "
                 "backtest: the wall time a job waits for its answer.")
    lines.append("")
    lines.append("| measure | in-process | child forked at the job | spare (the service) |")
    lines.append("|---|---|---|---|")
    lines.append(f"| wall time the job waits (s; forked at the job: fork to reap) | {fork['run_s']:.3f} | {fork['fork_s']:.3f} | {fork['spare_s']:.3f} |")
    lines.append(f"| **added per backtest** | — | {fork['fork_wall_cost_ms']:.1f} ms | **{fork['spare_wall_cost_ms']:.1f} ms** |")
    lines.append(f"| CPU time, fork to exit (s; the child's from wait4) | {fork['run_cpu_s']:.3f} | {fork['fork_cpu_s']:.3f} | {fork['spare_cpu_s']:.3f} |")
    lines.append(f"| CPU added per backtest | — | {fork['fork_cpu_cost_ms']:.1f} ms | {fork['spare_cpu_cost_ms']:.1f} ms |")
    lines.append("")
    lines.append(f"A spare is ready {fork['spare_ready_s'] * 1e3:.0f} ms after its fork (median); the runner forks it as "
                 "soon as the previous job has answered, so a job finds it ready unless the next one comes sooner. "
                 "Its warm-up's CPU is spent while the worker stores the previous result and fetches the next job. A "
                 "negative figure means the job finished sooner than the same backtest in the reused interpreter "
                 "(measured, not yet explained; gc.freeze alone does not account for it).")
    lines.append("")
    lines.append("The service runner's wait for the job's spare, per job (`timings.job_spare_wait_ms`, median): "
                 + ", ".join(f"{tf} {r['job_spare_wait_ms']:.2f} ms" for tf, r in results.items()) + ".")
    first = next(iter(results.values()))
    load = first["cold_load_ms"] + first["cold_transfer_ms"]
    lines.append("")
    lines.append("Repeated runs on the same range hit the worker's candle cache (keyed by the series' write counter); "
                 "the first run of each range reads the store:")
    lines.append("")
    lines.append(f"A year of 1m candles from the SQLite store into the runner, cold: **{load:.1f} ms** "
                 f"(store read {first['cold_load_ms']:.1f} + pipe transfer {first['cold_transfer_ms']:.1f}; target ≤ 150 ms).")
    lines.append(f"CSV import of {rows} rows through the CLI (parse + upsert): {import_s:.2f} s "
                 f"({rows / import_s:,.0f} rows/s).")
    lines.append("")
    lines.append("## Candle store")
    lines.append("")
    lines.append("| measure | value | target |")
    lines.append("|---|---|---|")
    lines.append(f"| bulk insert (CSV import of a year through the CLI: parse + idempotent upsert) | {rows / import_s:,.0f} rows/s | ≥ 200,000 rows/s |")
    lines.append(f"| gap report over a year of 1m candles with {storage['gap_count']} gaps (HTTP, median of 10) | {storage['gap_ms']:.1f} ms | ≤ 50 ms |")
    lines.append(f"| coverage listing with {storage['series']} series (HTTP, median of 20) | {storage['list_ms']:.1f} ms | ≤ 10 ms |")
    text = "\n".join(lines)
    print(text)
    path = os.path.join(ROOT, "docs/BENCHMARKS.md")
    header = """# Benchmarks

`make bench` writes this file. Ratios compare the service with bare Jesse measured in the same run.

How it is measured:
- **Bare Jesse**: a warm Python interpreter with the candles already in numpy arrays calls
  `jesse.research.backtest` (no jesse-mcp code); one warm-up call, then timed calls.
- **Service**: the release binaries (`jesse-mcp-api`, `jesse-mcp-worker` with 1 runner) on a scratch SQLite store;
  time from just before the REST submit to the job's `finished_at` (result stored), same host clock.
- Bare and service runs alternate, so drift in machine speed hits both alike; metrics of every pair are
  compared for equality. The client polls job status only every 100 ms (polling faster steals CPU from Jesse on a
  2-core machine and showed up as a 2 % slower Jesse); the timing does not depend on the polling.
- The breakdown is the service's own `timings` from the result (`GET /v1/jobs/{id}/result`).
- Both sides run the same CPython build. Bare Jesse runs the venv's `python`; the worker embeds the same
  interpreter, statically linked when it ships its static libpython (`ops/pyo3_config.py`, `worker/build.rs`):
  through Debian's `libpython3.11.so` the same backtest took about 14 % longer (position-independent code).

## Backtest: service vs bare Jesse

"""
    rest = ""
    if os.environ.get("BENCH_KEEP_REST") == "1" and os.path.exists(path):
        # `ops/bench.sh backtest`: only this part re-measured; the later sections stay.
        old = open(path).read()
        marker = old.find("\n## Scaling and latency under load")
        rest = old[marker:] if marker >= 0 else ""
    with open(path, "w") as f:
        f.write(header + text + "\n" + rest)


if __name__ == "__main__":
    main()
