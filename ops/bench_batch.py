"""Batch part of `make bench` (alone: `ops/bench.sh batch`): 64 backtest
variants, SmaCross over a grid of `fast` × `slow`, run three ways on the same
candles and configs, with 1 and with 2 runners, in the same run:

  (a) one `POST /v1/backtests/batch` (children spread by the service, leaderboard at the end),
  (b) 64 separate `POST /v1/backtests` submits,
  (c) bare Jesse: `jesse.research.backtest` in a `concurrent.futures.ProcessPoolExecutor`
      of as many processes as runners (warm interpreters, candles in numpy arrays).

The three alternate for BENCH_BATCH_ROUNDS rounds against one running service
(and one warm pool) per runner count, so drift in machine speed hits them alike;
medians are reported. Every variant's metrics from the batch (and from the
separate submits) must equal bare Jesse's, and the leaderboard must hold every
variant ranked by sharpe_ratio; any mismatch fails the bench and nothing is
written. Replaces its section of docs/BENCHMARKS.md (or appends it).

Usage: python ops/bench_batch.py BIN_DIR
"""
import concurrent.futures
import datetime as dt
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import shutil
import time

from bench import BIN, EXCHANGE, ROOT, SYMBOL, http, ms, service  # noqa: E402 - same directory
from bench_bare import Bare, load_csv
from bench_scale import wait_all

FAST = [5, 8, 10, 12, 15, 20, 25, 30]
SLOW = [40, 60, 80, 100, 120, 140, 160, 200]
VARIANTS = [(f, s) for f in FAST for s in SLOW]
START, END = "2023-01-11", "2023-05-01"  # about 0.4 s per backtest here; warm-up from 2023-01-01
TIMEFRAME = "1h"
STRATEGY = os.path.join(ROOT, "strategies/SmaCross/__init__.py")
ROUNDS = int(os.environ.get("BENCH_BATCH_ROUNDS", "3"))
RUNNERS = [int(n) for n in os.environ.get("BENCH_BATCH_RUNNERS", "1,2").split(",")]
POLL = 0.25  # completion polling; the timing comes from the jobs' timestamps, not from the polling
ENDED = ("succeeded", "failed", "cancelled")
BASE = {"strategy": "SmaCross", "exchange": EXCHANGE, "symbol": SYMBOL, "timeframe": TIMEFRAME,
        "start_date": START, "end_date": END}
HEADING = "## Backtest batches: one batch vs separate submits vs a bare Jesse process pool"


def ts(value):
    """An RFC 3339 timestamp of the service as epoch seconds (same host clock as time.time())."""
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# --- (c) bare Jesse in a process pool -------------------------------------------------

_bare = None


def _pool_init(rows, barrier):
    """Each pool process: Jesse imported, candles sliced, one warm-up backtest, then
    waits for its siblings, so the first task ends only once every process is warm."""
    global _bare
    _bare = Bare(rows, TIMEFRAME, STRATEGY, ms(START), ms(END), EXCHANGE, SYMBOL)
    _bare.run(_bare.defaults())
    barrier.wait()


def _pool_variant(fast, slow):
    seconds, metrics = _bare.run({**_bare.defaults(), "fast": fast, "slow": slow})
    return time.time(), seconds, metrics


def _noop():
    return os.getpid()


class BarePool:
    """A warm ProcessPoolExecutor of `size` processes (fork: every process starts at once)."""

    def __init__(self, rows, size):
        ctx = multiprocessing.get_context("fork")
        self.pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=size, mp_context=ctx, initializer=_pool_init, initargs=(rows, ctx.Barrier(size)))
        self.pool.submit(_noop).result()

    def run(self):
        """The 64 variants; (wall seconds from the first submit to the last backtest's end,
        {(fast, slow): metrics}, mean seconds per backtest)."""
        started = time.time()
        futures = {v: self.pool.submit(_pool_variant, *v) for v in VARIANTS}
        done = {v: f.result() for v, f in futures.items()}
        wall = max(end for end, _, _ in done.values()) - started
        return {"wall_s": wall, "metrics": {v: m for v, (_, _, m) in done.items()},
                "mean_run_ms": statistics.mean(s for _, s, _ in done.values()) * 1e3}

    def close(self):
        self.pool.shutdown()


# --- (a) one batch ---------------------------------------------------------------------

def children_of(base, job):
    """Every child of a parent, through the paged children listing."""
    children, cursor = [], None
    while True:
        page = http("GET", f"{base}/v1/jobs/{job}/children?limit=200" + (f"&cursor={cursor}" if cursor else ""))
        children += page["jobs"]
        cursor = page.get("next_cursor")
        if not cursor:
            return children


def run_batch(base):
    body = {"base": BASE, "grid": {"hyperparameters": {"fast": FAST, "slow": SLOW}},
            "rank_by": "sharpe_ratio", "order": "desc"}
    started = time.time()
    accepted = http("POST", base + "/v1/backtests/batch", body)
    submit_ms = (time.time() - started) * 1e3
    job, in_flight = accepted["job_id"], 0
    while True:
        state = http("GET", f"{base}/v1/jobs/{job}")
        in_flight = max(in_flight, (state.get("children") or {}).get("in_flight", 0))
        if state["status"] in ENDED:
            break
        time.sleep(POLL)
    if state["status"] != "succeeded":
        raise BenchFailure(f"batch {job} ended {state['status']}: {state.get('error')}")
    children = children_of(base, job)
    failed = [c for c in children if c["status"] != "succeeded"]
    if len(children) != len(VARIANTS) or failed:
        raise BenchFailure(f"batch {job}: {len(children)} children, not succeeded: "
                           f"{[(c['job_id'], c['status'], c.get('error')) for c in failed][:5]}")
    result = http("GET", f"{base}/v1/jobs/{job}/result")
    rows = result["leaderboard"]
    while len(rows) < result["leaderboard_total"]:  # the leaderboard pages (10000 rows a page)
        page = http("GET", f"{base}/v1/jobs/{job}/result?trades_offset={len(rows)}")["leaderboard"]
        if not page:
            break
        rows += page
    first_child = min(ts(c["started_at"]) for c in children)
    last_child = max(ts(c["finished_at"]) for c in children)
    return {
        "job_id": job, "state": state, "children": children, "leaderboard": rows, "result": result,
        "wall_s": ts(state["finished_at"]) - started,
        "created_wall_s": ts(state["finished_at"]) - ts(state["created_at"]),
        "submit_ms": submit_ms,
        "to_first_child_ms": (first_child - ts(state["created_at"])) * 1e3,
        "leaderboard_ms": (ts(state["finished_at"]) - last_child) * 1e3,
        "mean_run_ms": statistics.mean(ts(c["finished_at"]) - ts(c["started_at"]) for c in children) * 1e3,
        "in_flight": in_flight,
    }


# --- (b) separate submits --------------------------------------------------------------

def run_separate(base):
    started = time.time()
    jobs = {}
    for fast, slow in VARIANTS:
        body = dict(BASE, hyperparameters={"fast": fast, "slow": slow})
        jobs[(fast, slow)] = http("POST", base + "/v1/backtests", body)["job_id"]
    submit_ms = (time.time() - started) * 1e3
    ours = set(jobs.values())
    while True:  # two listings per poll, however many jobs are pending
        busy = set()
        for status in ("queued", "running"):
            busy |= {j["job_id"] for j in http("GET", f"{base}/v1/jobs?kind=backtest&status={status}&limit=200")["jobs"]}
        if not busy & ours:
            break
        time.sleep(POLL)
    states = {v: http("GET", f"{base}/v1/jobs/{j}") for v, j in jobs.items()}
    failed = [s for s in states.values() if s["status"] != "succeeded"]
    if failed:
        raise BenchFailure(f"separate submits not succeeded: {[(s['job_id'], s['status'], s.get('error')) for s in failed][:5]}")
    return {
        "jobs": jobs,
        "wall_s": max(ts(s["finished_at"]) for s in states.values()) - started,
        "created_wall_s": max(ts(s["finished_at"]) for s in states.values()) - min(ts(s["created_at"]) for s in states.values()),
        "submit_ms": submit_ms,
        "mean_run_ms": statistics.mean(ts(s["finished_at"]) - ts(s["started_at"]) for s in states.values()) * 1e3,
    }


# --- checks ------------------------------------------------------------------------------

class BenchFailure(Exception):
    pass


def variant_of(overrides):
    hp = (overrides or {}).get("hyperparameters") or {}
    return hp.get("fast"), hp.get("slow")


def check_batch(base, batch, bare_metrics):
    """Every child's metrics equal bare Jesse's for its variant; the leaderboard holds every
    variant once, its metrics are the child's, and it is ranked by sharpe_ratio, highest first."""
    problems = []
    rows = batch["leaderboard"]
    if batch["result"].get("leaderboard_total") != len(VARIANTS) or len(rows) != len(VARIANTS):
        problems.append(f"leaderboard_total {batch['result'].get('leaderboard_total')}, {len(rows)} rows; "
                        f"expected {len(VARIANTS)}")
    by_job = {r["job_id"]: r for r in rows}
    seen = set()
    for child in batch["children"]:
        row = by_job.get(child["job_id"])
        if row is None:
            problems.append(f"child {child['job_id']} missing from the leaderboard")
            continue
        variant = variant_of(row.get("variant"))
        seen.add(variant)
        if variant not in bare_metrics:
            problems.append(f"child {child['job_id']}: unexpected variant {row.get('variant')}")
            continue
        metrics = http("GET", f"{base}/v1/jobs/{child['job_id']}/result")["metrics"]
        if metrics != bare_metrics[variant]:
            diff = sorted(k for k in set(metrics) | set(bare_metrics[variant])
                          if metrics.get(k) != bare_metrics[variant].get(k))
            problems.append(f"fast={variant[0]} slow={variant[1]} (child {child['job_id']}): metrics differ "
                            f"from bare Jesse in {diff[:8]}")
        shown = {k: metrics.get(k) for k in row.get("metrics", {})}
        if row.get("metrics") != shown:
            problems.append(f"leaderboard row of {child['job_id']} does not show the child's metrics")
    if seen != set(VARIANTS):
        problems.append(f"variants missing from the batch: {sorted(set(VARIANTS) - seen)[:5]}")
    scores = [r.get("score") for r in rows if r.get("rank") is not None]
    ranked = [s for s in scores if s is not None]
    if ranked != sorted(ranked, reverse=True) or scores[:len(ranked)] != ranked:
        problems.append("leaderboard not ranked by sharpe_ratio, highest first")
    if [r.get("rank") for r in rows] != list(range(1, len(rows) + 1)):
        problems.append("leaderboard ranks are not 1..n")
    return problems


def check_separate(base, separate, bare_metrics):
    problems = []
    for variant, job in separate["jobs"].items():
        metrics = http("GET", f"{base}/v1/jobs/{job}/result")["metrics"]
        if metrics != bare_metrics[variant]:
            problems.append(f"separate submit fast={variant[0]} slow={variant[1]} ({job}): metrics differ from bare Jesse")
    return problems


# --- the bench ---------------------------------------------------------------------------

def bench_runners(data, rows, n):
    """One warm pool and one service with n runners; ROUNDS rounds of bare, batch, separate."""
    pool = BarePool(rows, n)
    out = {"bare": [], "batch": [], "separate": [], "problems": []}
    try:
        with service(data, runners=n) as base:
            # Warm every runner (and the worker's candle cache) on the same range first.
            wait_all(base, [http("POST", base + "/v1/backtests", BASE)["job_id"] for _ in range(n * 2)])
            for i in range(ROUNDS):
                bare = pool.run()
                batch = run_batch(base)
                separate = run_separate(base)
                out["problems"] += check_batch(base, batch, bare["metrics"])
                out["problems"] += check_separate(base, separate, bare["metrics"])
                for key, r in (("bare", bare), ("batch", batch), ("separate", separate)):
                    out[key].append(r)
                print(f"runners={n} round {i + 1}/{ROUNDS}: bare {bare['wall_s']:.2f} s, batch {batch['wall_s']:.2f} s "
                      f"(max in flight {batch['in_flight']}), separate {separate['wall_s']:.2f} s", flush=True)
    finally:
        pool.close()
    return out


def med(runs, key):
    return statistics.median(r[key] for r in runs)


def report(results, n_candles):
    n_var = len(VARIANTS)
    lines = ["", HEADING, "",
             f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
             f"{os.cpu_count()} cores; median of {ROUNDS} rounds, each running bare, batch and separate in turn against "
             f"the same service and pool. {n_var} variants of SmaCross {TIMEFRAME} over {START}..{END} "
             f"(synthetic 1m candles, {n_candles} rows stored), a grid of fast {FAST} × slow {SLOW}; "
             "every runner and pool process warmed first.",
             "",
             "- **batch**: one `POST /v1/backtests/batch` (`grid.hyperparameters`, rank_by sharpe_ratio, default "
             "`max_parallel`); time from just before the submit to the parent's `finished_at` (leaderboard stored).",
             f"- **separate**: {n_var} `POST /v1/backtests` one after the other; time from just before the first "
             "submit to the last job's `finished_at`.",
             f"- **bare**: `jesse.research.backtest` in a `concurrent.futures.ProcessPoolExecutor` with as many "
             f"processes as runners (candles already in numpy arrays, no jesse-mcp code); time from the first "
             "`submit` to the end of the last backtest.",
             "- Throughput ratio = bare time / service time. Overhead per child = (service time − bare time) / "
             f"{n_var} × runners: the runner-time each backtest costs beyond bare Jesse's.",
             f"- Every child's metrics (and every separate job's) equal bare Jesse's for its variant; the "
             f"leaderboard holds all {n_var}, ranked by sharpe_ratio.",
             "",
             "| runners / pool size | bare pool (s) | batch (s) | separate (s) | batch / bare throughput | "
             "separate / bare throughput | overhead per child, batch (ms) | overhead per child, separate (ms) | target |",
             "|---|---|---|---|---|---|---|---|---|"]
    for n, r in results.items():
        bare, batch, sep = med(r["bare"], "wall_s"), med(r["batch"], "wall_s"), med(r["separate"], "wall_s")
        ratio = bare / batch
        verdict = "met" if ratio >= 0.95 else "**not met**"
        lines.append(f"| {n} | {bare:.2f} | {batch:.2f} | {sep:.2f} | **{ratio:.3f}** | {bare / sep:.3f} | "
                     f"{(batch - bare) / n_var * n * 1e3:.1f} | {(sep - bare) / n_var * n * 1e3:.1f} | "
                     f"batch ≥ 0.95 × bare ({verdict}) |")
    lines += ["", "Where the time goes (medians, ms):", "",
              "| runners | batch submit (HTTP + planning 64 variants) | parent created → first child started | "
              "mean child run (started → finished) | bare backtest (mean) | last child finished → leaderboard stored | "
              "batch, parent created → finished (s) | separate: 64 submits | separate, first created → last finished (s) | "
              "children in flight (max seen) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for n, r in results.items():
        b, s = r["batch"], r["separate"]
        lines.append(f"| {n} | {med(b, 'submit_ms'):.1f} | {med(b, 'to_first_child_ms'):.1f} | {med(b, 'mean_run_ms'):.1f} | "
                     f"{med(r['bare'], 'mean_run_ms'):.1f} | {med(b, 'leaderboard_ms'):.1f} | {med(b, 'created_wall_s'):.2f} | "
                     f"{med(s, 'submit_ms'):.1f} | {med(s, 'created_wall_s'):.2f} | {max(x['in_flight'] for x in b)} |")
    lines += ["", "Per round (s), bare / batch / separate: " + "; ".join(
        f"{n} runner{'s' if n > 1 else ''}: " + ", ".join(
            f"{a['wall_s']:.2f} / {b['wall_s']:.2f} / {c['wall_s']:.2f}" for a, b, c in zip(r["bare"], r["batch"], r["separate"]))
        for n, r in results.items()) + "."]
    return "\n".join(lines)


def write_section(text):
    """Replaces this bench's section of docs/BENCHMARKS.md (the other sections are kept), or appends it."""
    path = os.path.join(ROOT, "docs/BENCHMARKS.md")
    doc = open(path).read() if os.path.exists(path) else ""
    start = doc.find("\n" + HEADING + "\n")
    if start >= 0:
        end = doc.find("\n## ", start + 1)
        doc = doc[:start] + (doc[end:] if end >= 0 else "")
    with open(path, "w") as f:
        f.write(doc.rstrip("\n") + "\n" + text + "\n")


def main():
    work = tempfile.mkdtemp(prefix="jesse-mcp-batch-")
    data, csv = os.path.join(work, "data"), os.path.join(work, "candles.csv")
    api = os.path.join(BIN, "jesse-mcp-api")
    try:
        # The bench's synthetic candles, into the store and (the same file) into the pool's arrays.
        subprocess.run([api, "candles", "synth", "--start", "2023-01-01", "--end", END, "--csv", csv],
                       check=True, capture_output=True)
        env = dict(os.environ, JESSE_MCP_DATA_DIR=data, RUST_LOG="warn")
        subprocess.run([api, "candles", "import-csv", "--exchange", EXCHANGE, "--symbol", SYMBOL, csv],
                       env=env, check=True, capture_output=True)
        rows = load_csv(csv)
        results = {n: bench_runners(data, rows, n) for n in RUNNERS}
    except BenchFailure as e:
        sys.exit(f"bench_batch: FAILED: {e}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = report(results, len(rows))
    print(text)
    problems = [p for r in results.values() for p in r["problems"]]
    if problems:
        print("\n".join(["", "bench_batch: FAILED, the service and bare Jesse disagree:"] + problems[:40]), file=sys.stderr)
        sys.exit(1)
    if RUNNERS == [1, 2] and ROUNDS >= 1:
        write_section(text)


if __name__ == "__main__":
    main()
