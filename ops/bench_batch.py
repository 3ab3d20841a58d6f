"""Batch part of `make bench` (alone: `ops/bench.sh batch`): 64 backtest
variants, SmaCross over a grid of `fast` × `slow`, run three ways on the same
candles and configs, with 1 and with 2 runners, in the same run:

  (a) one `POST /v1/backtests/batch` (children spread by the service, leaderboard at the end),
  (b) 64 separate `POST /v1/backtests` submits,
  (c) bare Jesse: `jesse.research.backtest` in a `concurrent.futures.ProcessPoolExecutor`
      of as many processes as runners (warm interpreters, candles in numpy arrays).

BENCH_BATCH_ROUNDS rounds (default 5) per runner count, each with a fresh
service and a fresh pool, warmed, running the three in a rotating order, so
drift in machine speed hits them alike; medians are reported. Every variant's metrics from the batch (and from the
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
ROUNDS = int(os.environ.get("BENCH_BATCH_ROUNDS", "5"))
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
                "runs_ms": [s * 1e3 for _, s, _ in done.values()],
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
        "runs_ms": [(ts(c["finished_at"]) - ts(c["started_at"])) * 1e3 for c in children],
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
        "runs_ms": [(ts(s["finished_at"]) - ts(s["started_at"])) * 1e3 for s in states.values()],
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
        result = http("GET", f"{base}/v1/jobs/{child['job_id']}/result")
        metrics = result["metrics"]
        batch.setdefault("timings", []).append(result.get("timings") or {})
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
        result = http("GET", f"{base}/v1/jobs/{job}/result")
        metrics = result["metrics"]
        separate.setdefault("timings", []).append(result.get("timings") or {})
        if metrics != bare_metrics[variant]:
            problems.append(f"separate submit fast={variant[0]} slow={variant[1]} ({job}): metrics differ from bare Jesse")
    return problems


# --- the bench ---------------------------------------------------------------------------

def role(pid):
    """What a process of the bench is: a service runner, the worker, the API, or Python (pool, client)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return "other"
    name = os.path.basename(argv[0]).decode(errors="replace")
    if name == "jesse-mcp-worker":
        return "runner" if b"runner" in argv[1:2] else "worker"
    return "api" if name == "jesse-mcp-api" else "python"


def cpu_snapshot():
    """The machine's busy CPU ticks (/proc/stat), and {pid: (ppid, user + system ticks)} of every process,
    its reaped children's included: a runner runs each job in a process of its own, which is gone by the
    next snapshot, and the kernel adds a reaped child's CPU to its parent's cutime/cstime."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    table = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(pid)] = (int(fields[1]), sum(int(fields[i]) for i in (11, 12, 13, 14)))
    return sum(ticks[i] for i in (0, 1, 2, 5, 6)), table  # user, nice, system, irq, softirq


def cpu_used(before, after):
    """CPU seconds between two snapshots: {role: s} of this bench's process tree (the pool, the
    service and its runners, this client), and "foreign": what the machine spent on anything else,
    short-lived processes included (other work that would skew the timings; the kernel's own
    housekeeping counts too, ~0.01 s/s here)."""
    me, table = os.getpid(), after[1]
    clock = os.sysconf("SC_CLK_TCK")

    def ours(pid):
        while pid in table and pid > 1:
            if pid == me:
                return True
            pid = table[pid][0]
        return False

    used = {}
    for pid, (_, t) in table.items():
        if ours(pid):
            used[role(pid)] = used.get(role(pid), 0) + max(0, t - before[1].get(pid, (0, 0))[1]) / clock
    used["foreign"] = max(0, (after[0] - before[0]) / clock - sum(used.values()))
    return used


def bench_runners(data, rows, n):
    """ROUNDS rounds with n runners and a pool of n processes. Each round starts a fresh pool and a
    fresh service (Jesse's speed differs by a few % from one interpreter to the next and stays so
    for the interpreter's life, so reusing processes would repeat one draw), warms them, then runs
    bare, batch and separate in a rotating order, so drift in machine speed hits each alike."""
    out = {"bare": [], "batch": [], "separate": [], "problems": [], "foreign_cpu_s": []}
    order = ["bare", "batch", "separate"]
    for i in range(ROUNDS):
        pool = BarePool(rows, n)
        try:
            with service(data, runners=n) as base:
                # Warm every runner (and the worker's candle cache) on the same range first.
                wait_all(base, [http("POST", base + "/v1/backtests", BASE)["job_id"] for _ in range(n * 2)])
                modes = {"bare": pool.run, "batch": lambda: run_batch(base), "separate": lambda: run_separate(base)}
                done, foreign = {}, 0.0
                for mode in order[i % 3:] + order[:i % 3]:
                    before = cpu_snapshot()
                    done[mode] = modes[mode]()
                    done[mode]["cpu_s"] = cpu_used(before, cpu_snapshot())
                    foreign += done[mode]["cpu_s"]["foreign"]
                out["problems"] += check_batch(base, done["batch"], done["bare"]["metrics"])
                out["problems"] += check_separate(base, done["separate"], done["bare"]["metrics"])
        finally:
            pool.close()
        for mode, r in done.items():
            out[mode].append(r)
        out["foreign_cpu_s"].append(foreign)
        print(f"runners={n} round {i + 1}/{ROUNDS}: bare {done['bare']['wall_s']:.2f} s, batch "
              f"{done['batch']['wall_s']:.2f} s (max in flight {done['batch']['in_flight']}), separate "
              f"{done['separate']['wall_s']:.2f} s; other processes' CPU meanwhile {foreign:.1f} s", flush=True)
    return out


def med(runs, key):
    return statistics.median(r[key] for r in runs)


def report(results, n_candles):
    n_var = len(VARIANTS)
    lines = ["", HEADING, "",
             f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
             f"{os.cpu_count()} cores; median of {ROUNDS} rounds, each with a fresh service and pool running bare, batch and "
             f"separate one after the other (in a rotating order). {n_var} variants of SmaCross {TIMEFRAME} over {START}..{END} "
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
             "Target: batch throughput ≥ 0.95 × the bare process pool of the same size.",
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
    lines += ["", "Around the children (medians):", "",
              f"| runners | batch submit (HTTP + planning {n_var} variants) | parent created → first child started | "
              "last child finished → leaderboard stored | batch, parent created → finished | children in flight (max seen) | "
              f"separate: {n_var} submits | separate, first created → last finished |",
              "|---|---|---|---|---|---|---|---|"]
    for n, r in results.items():
        b, s = r["batch"], r["separate"]
        lines.append(f"| {n} | {med(b, 'submit_ms'):.1f} ms | {med(b, 'to_first_child_ms'):.1f} ms | "
                     f"{med(b, 'leaderboard_ms'):.1f} ms | {med(b, 'created_wall_s'):.2f} s | {max(x['in_flight'] for x in b)} | "
                     f"{med(s, 'submit_ms'):.1f} ms | {med(s, 'created_wall_s'):.2f} s |")
    steps = [("candle_load_ms", "candle load (cache)"), ("runner_receive_ms", "transfer into runner"),
             ("strategy_load_ms", "strategy load"), ("jesse_backtest_ms", "research.backtest"),
             ("result_convert_ms", "result conversion"), ("runner_roundtrip_ms", "runner round trip"),
             ("result_write_ms", "result write")]
    lines += ["", "Inside each child, from the service's own `timings` and timestamps (median over every child of "
              "every round, ms), against bare Jesse's `research.backtest` in the pool. Runner idle per child = "
              f"(time × runners − Σ children's started → finished) / {n_var}: the runners' time between children "
              "(claiming the next one, and the batch's start and leaderboard).", "",
              "| runners | jobs | " + " | ".join(label for _, label in steps) +
              " | started → finished | runner idle per child | bare research.backtest |",
              "|---|---|" + "---|" * (len(steps) + 3)]
    for n, r in results.items():
        bare_ms = statistics.median(x for b in r["bare"] for x in b["runs_ms"])
        for mode in ("batch", "separate"):
            timings = [t for x in r[mode] for t in x.get("timings", [])]
            cells = [f"{statistics.median(t[k] for t in timings if k in t):.1f}" if any(k in t for t in timings) else "—"
                     for k, _ in steps]
            window = statistics.median(w for x in r[mode] for w in x["runs_ms"])
            idle = statistics.median((x["wall_s"] * 1e3 * n - sum(x["runs_ms"])) / n_var for x in r[mode])
            lines.append(f"| {n} | {mode} | " + " | ".join(cells) + f" | {window:.1f} | {idle:.1f} | {bare_ms:.1f} |")
    lines += ["", f"CPU per child (ms; CPU seconds of each kind of process during the timed run / {n_var}): the "
              "runners' (or the pool's) Jesse work, and what the service spends beside it, on the same cores:", "",
              "| runners | jobs | runners / pool processes | worker process | API | bench client (polling) |",
              "|---|---|---|---|---|---|"]
    for n, r in results.items():
        for mode in ("bare", "batch", "separate"):
            per = lambda k: statistics.median(x["cpu_s"].get(k, 0) for x in r[mode]) / n_var * 1e3  # noqa: E731
            if mode == "bare":
                lines.append(f"| {n} | bare pool | {per('python'):.1f} | — | — | — |")
            else:
                lines.append(f"| {n} | {mode} | {per('runner'):.1f} | {per('worker'):.1f} | {per('api'):.1f} | "
                             f"{per('python'):.1f} |")
    lines.append("")
    for n, r in results.items():
        timings = [t for x in r["batch"] for t in x.get("timings", [])]
        runner = statistics.median(t["runner_roundtrip_ms"] - t["jesse_backtest_ms"] for t in timings)
        worker, api = (statistics.median(x["cpu_s"].get(k, 0) for x in r["batch"]) / n_var * 1e3 for k in ("worker", "api"))
        bare_ms = statistics.median(x for b in r["bare"] for x in b["runs_ms"])
        total = runner + worker + api
        lines.append(f"Service work per batch child beside Jesse, {n} runner{'s' if n > 1 else ''}: {runner:.1f} ms in the "
                     f"runner (round trip − research.backtest) + {worker:.1f} ms worker CPU + {api:.1f} ms API CPU = "
                     f"{total:.1f} ms, {total / bare_ms:.1%} of a {bare_ms:.0f} ms backtest.")
    lines += ["", "The wall-time ratios also carry the spread of Jesse's own speed between interpreters (compare "
              "research.backtest in the runners and in the pool above); each round starts fresh ones, so the "
              "median is over independent draws.", ""]
    lines += ["Per round (s), bare / batch / separate, and the CPU seconds processes outside the bench used "
              "meanwhile (other work on the machine): " + "; ".join(
                  f"{n} runner{'s' if n > 1 else ''}: " + ", ".join(
                      f"{a['wall_s']:.2f} / {b['wall_s']:.2f} / {c['wall_s']:.2f} (other {o:.1f})"
                      for a, b, c, o in zip(r["bare"], r["batch"], r["separate"], r["foreign_cpu_s"]))
                  for n, r in results.items()) + "."]
    elapsed = sum(x["wall_s"] for r in results.values() for m in ("bare", "batch", "separate") for x in r[m])
    foreign = sum(o for r in results.values() for o in r["foreign_cpu_s"])
    if foreign > 0.02 * elapsed * (os.cpu_count() or 1):
        lines += ["", f"**Other work used {foreign:.0f} CPU s of the {elapsed * (os.cpu_count() or 1):.0f} available "
                  "during the timed runs: these figures are skewed; re-run on a quiet machine.**"]
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
