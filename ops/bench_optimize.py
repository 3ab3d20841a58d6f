"""Optimization part of `make bench` (alone: `make bench-optimize`, i.e.
`ops/bench.sh optimize`): one study, SmaCross with the random sampler and
Jesse's sharpe fitness, BENCH_OPT_TRIALS trials (default 60) on the same
synthetic candles, run two ways with 1 and with 2 runners, in the same run:

  (a) Jesse: `jesse.research.optimize(...)` in a plain Python process with
      `cpu_cores` = runners and `trials` = TRIALS / 3 (Jesse runs `trials` × the
      number of hyperparameters; SmaCross declares 3), in the Jesse project it
      needs (see jesse_project). Timed around the call only: imports, candle
      loading and the project's set-up are excluded. Timed twice in the same
      process: as a user calls it (Ray starts and stops inside the call), and
      with Ray already started and its workers warmed by a small study.
  (b) the service: one `POST /v1/optimizations` to one worker process with that
      many runners (warmed by a small study first); time from just before the
      submit to the study's `finished_at` (status succeeded: every trial and the
      study's report stored).

Both run the very same trials: the service's seeded random sampler draws them,
and Jesse's optimize replays those draws in trial order (its own draw,
`_generate_trial_params`, a few `np.random` calls per trial, is replaced by a
list lookup); so every trial's fitness can be compared, and it must be equal.

BENCH_OPT_ROUNDS rounds (default 3), each with its own seed (the same for 1 and
2 runners) and fresh processes, one run at a time in the order service, Jesse,
Jesse, service (reversed in odd rounds). The machine may be shared: each run
waits until other processes have used under 5 % of the CPU for 3 s (at most
BENCH_OPT_QUIET_WAIT s, default 300), and a run during which they used more
than 10 % of it is run again (up to BENCH_OPT_RETRIES times, default 2).
Medians are reported. Replaces its section of docs/BENCHMARKS.md (or appends
it) when run with the default runner counts. Needs the machine's Postgres
(127.0.0.1, user postgres) for Jesse's project: a scratch database, dropped at the end.

Usage: python ops/bench_optimize.py BIN_DIR
       python ops/bench_optimize.py BIN_DIR --jesse CSV CPU_CORES DATABASE PARAMS_JSON  (one Jesse process, run by the bench)
       python ops/bench_optimize.py BIN_DIR --jesse-migrate DATABASE  (Jesse's migrations, run by the bench)
"""
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from bench import BIN, EXCHANGE, ROOT, SYMBOL, http, ms, service  # noqa: E402 - same directory
from bench_bare import MINUTES, load_csv
from bench_batch import BenchFailure, children_of, ts

TRIALS = int(os.environ.get("BENCH_OPT_TRIALS", "60"))
ROUNDS = int(os.environ.get("BENCH_OPT_ROUNDS", "3"))
RUNNERS = [int(n) for n in os.environ.get("BENCH_OPT_RUNNERS", "1,2").split(",")]
RETRIES = int(os.environ.get("BENCH_OPT_RETRIES", "2"))
QUIET_WAIT = float(os.environ.get("BENCH_OPT_QUIET_WAIT", "300"))  # s a run waits for other work to stop
FOREIGN_LIMIT = 0.10  # share of a run's CPU (wall × cores) other processes may use before it is run again
TIMEFRAME = "1h"
TRAINING = ("2023-01-11", "2023-06-01")  # warm-up from 2023-01-01
TESTING = ("2023-06-01", "2023-08-01")
WARM_UP = 240  # the service's default warm-up candles
STRATEGY = os.path.join(ROOT, "strategies/SmaCross/__init__.py")
HYPERPARAMETERS = 3  # SmaCross: fast, slow, risk
POLL = 0.25  # the timing comes from the study's finished_at, not from the polling
ENDED = ("succeeded", "failed", "cancelled")
PG_HOST, PG_USER = "127.0.0.1", "postgres"  # the machine's Postgres (as in bench_scale.py), for Jesse's project
HEADING = "## Optimization studies: service vs jesse.research.optimize"
STUDY = {"strategy": "SmaCross", "exchange": EXCHANGE, "symbol": SYMBOL, "timeframe": TIMEFRAME,
         "training": {"start_date": TRAINING[0], "end_date": TRAINING[1]},
         "testing": {"start_date": TESTING[0], "end_date": TESTING[1]},
         "sampler": "random", "objective": "sharpe"}
UNUSABLE = 0.0001  # Jesse's fitness of a trial that ran no testing backtest


# --- CPU accounting ----------------------------------------------------------------------

def role(pid, me):
    """What a process of ours is: the service's runner, worker or API; a Ray worker; this
    bench client; or `other` (a Jesse driver, Ray's raylet and GCS...)."""
    if pid == me:
        return "client"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return "other"
    name = os.path.basename(argv[0]).decode(errors="replace")
    if name == "jesse-mcp-worker":
        return "runner" if b"runner" in argv[1:2] else "worker"
    if name == "jesse-mcp-api":
        return "api"
    # A Ray worker is `ray::IDLE` or `ray::<task>`; Ray's agents are `ray::DashboardAgent`, `ray::RuntimeEnvAgent`.
    if (argv[0].startswith(b"ray::") and not argv[0].endswith(b"Agent")) or any(b"default_worker.py" in a for a in argv):
        return "ray_worker"
    return "other"


class CpuMeter:
    """Samples /proc every 0.5 s in a thread, so processes that start and end between two
    marks (Ray's workers, someone else's test run) are counted too, up to their last
    sample. `window(first, last)` gives the CPU seconds each role of this bench's process
    tree used between two marks, and `foreign`: every other process (other work on the
    machine that skews the timings; the kernel's own threads count too, ~0.01 s/s)."""

    def __init__(self):
        self.me, self.clock = os.getpid(), os.sysconf("SC_CLK_TCK")
        self.samples, self.roles, self.jesse_roots, self.database = [], {}, set(), None
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.wait(0.5):
            self.mark()

    def mark(self):
        """Takes a sample now; returns its index."""
        table = {}
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            table[int(pid)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
        busy = sum(ticks[i] for i in (0, 1, 2, 5, 6))  # user, nice, system, irq, softirq
        with self.lock:
            for pid in table:
                if pid not in self.roles:
                    self.roles[pid] = self._classify(pid, table)
            self.samples.append((busy, table))
            return len(self.samples) - 1

    def _classify(self, pid, table):
        """(role, ancestors) of a process of ours; None for a foreign one."""
        chain, p = [], pid
        while p in table and p > 1:
            chain.append(p)
            if p == self.me:
                return role(pid, self.me), chain
            p = table[p][0]
        if self.database:
            # Postgres's backends serving Jesse's project database work for Jesse's runs.
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    title = f.read()
            except OSError:
                return None
            if title.startswith(b"postgres: ") and f" {self.database} ".encode() in title:
                return "postgres", []
        return None

    def _role(self, pid):
        seen = self.roles.get(pid)
        if seen is None:
            return "foreign"
        name, chain = seen
        # A Jesse process may have been seen before its pid was known to be one.
        return "jesse_other" if name == "other" and self.jesse_roots.intersection(chain) else name

    def window(self, first, last):
        with self.lock:
            samples = self.samples[first:last + 1]
            start = samples[0][1]
            used, seen = {}, {}
            for _, table in samples:
                seen.update((pid, t) for pid, (_, t) in table.items())
            for pid, t in seen.items():
                key = self._role(pid)
                used[key] = used.get(key, 0) + max(0, t - (start[pid][1] if pid in start else 0)) / self.clock
        used["machine"] = (samples[-1][0] - samples[0][0]) / self.clock
        return used

    def close(self):
        self.stop.set()
        self.thread.join()


def too_busy(cpu, wall):
    """Whether other processes took more than FOREIGN_LIMIT of a run's CPU."""
    return cpu.get("foreign", 0) > FOREIGN_LIMIT * wall * (os.cpu_count() or 1)


# --- (a) Jesse: research.optimize ----------------------------------------------------------

@contextlib.contextmanager
def jesse_project(database):
    """A scratch Jesse project as the working directory, for this process and its Ray workers.

    research.optimize needs one: it takes the strategy by name and checks for
    strategies/<Name>/__init__.py under the working directory, its own and its Ray workers'
    (started there). Jesse's logging then creates ./storage, which makes the directory a
    project (strategies/ + storage/): a worker importing Jesse there exits without a .env, and
    a backtest's first closed trade opens Jesse's Postgres database
    (closed_trade_repository.close_trade). So: a real project, with a .env naming a scratch
    database whose tables Jesse's migrator made (what `jesse run` does), and a copy of the
    strategy (Jesse may rewrite a strategy file it loads by name)."""
    scratch = tempfile.mkdtemp(prefix="jesse-mcp-optimize-")
    try:
        os.makedirs(os.path.join(scratch, "strategies", "SmaCross"))
        os.makedirs(os.path.join(scratch, "storage"))
        shutil.copy(STRATEGY, os.path.join(scratch, "strategies", "SmaCross", "__init__.py"))
        with open(os.path.join(scratch, ".env"), "w") as f:
            f.write(f"PASSWORD=bench\nAPP_PORT=9000\nPOSTGRES_HOST={PG_HOST}\nPOSTGRES_NAME={database}\n"
                    f"POSTGRES_PORT=5432\nPOSTGRES_USERNAME={PG_USER}\nPOSTGRES_PASSWORD=\n")
        os.chdir(scratch)
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        yield
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def jesse_migrate(database):
    """Jesse's migrations alone (`--jesse-migrate`): the project database's tables, once per bench."""
    with jesse_project(database):
        from jesse.services import migrator
        migrator.run()


def jesse_child(csv, cores, database, params_path):
    """One plain Python process: Jesse's optimize as a user calls it, then again with Ray
    warm, both replaying the trials in `params_path`. Prints `BEGIN <name>` / `END <name>`
    around each timed call (the bench's CPU marks) and one `RESULT {json}` line at the end."""
    with jesse_project(database):
        _jesse_calls(csv, cores, params_path)


def _jesse_calls(csv, cores, params_path):
    def say(line):
        print(line, flush=True)

    t = time.perf_counter()
    import jesse.research as research
    import ray
    from jesse.services.ray_runtime import initialize_ray
    import_s = time.perf_counter() - t
    optimize_module = sys.modules["jesse.research.optimize"]
    own_draw = optimize_module._generate_trial_params

    t = time.perf_counter()
    rows = load_csv(csv)
    key = f"{EXCHANGE}-{SYMBOL}"
    entry = lambda a: {key: {"exchange": EXCHANGE, "symbol": SYMBOL, "candles": a}}  # noqa: E731

    def period(start, end):
        s, e = ms(start), ms(end)
        warm = rows[(rows[:, 0] >= s - WARM_UP * MINUTES[TIMEFRAME] * 60000) & (rows[:, 0] < s)]
        return entry(rows[(rows[:, 0] >= s) & (rows[:, 0] < e)]), entry(warm)

    training, training_warm = period(*TRAINING)
    testing, testing_warm = period(*TESTING)
    load_s = time.perf_counter() - t
    # The service's defaults (what the study request leaves out), in optimize's nested form.
    config = {"exchange": {"name": EXCHANGE, "balance": 10000, "fee": 0.001, "type": "futures",
                           "futures_leverage": 1, "futures_leverage_mode": "cross"},
              "warm_up_candles": WARM_UP}
    routes = [{"strategy": "SmaCross", "symbol": SYMBOL, "timeframe": TIMEFRAME}]
    with open(params_path) as f:
        replay = json.load(f)  # the service's trials, in trial order

    def optimize(per_hp):
        return research.optimize(config, routes, [], training, training_warm, testing, testing_warm,
                                 optimal_total=200, fast_mode=True, cpu_cores=cores, trials=per_hp,
                                 objective_function="sharpe", best_candidates_count=per_hp * HYPERPARAMETERS,
                                 progress_bar=False)

    def timed(name):
        draws = iter(replay)
        optimize_module._generate_trial_params = lambda strategy_hp: dict(next(draws))
        say(f"BEGIN {name}")
        t = time.perf_counter()
        r = optimize(TRIALS // HYPERPARAMETERS)
        wall = time.perf_counter() - t
        say(f"END {name}")
        optimize_module._generate_trial_params = own_draw
        # Every trial that ran its testing backtest has a fitness above 0.0001 (at least
        # log10(6)/log10(200) × 0.5/5.5), so with best_candidates_count = every trial,
        # best_trials are exactly those trials.
        return {"wall_s": wall, "total": r["total_trials"], "completed": r["completed_trials"],
                "fitness": {str(b["trial"]): b["fitness"] for b in r["best_trials"]}}

    out = {"import_s": import_s, "load_s": load_s}
    try:
        out["cold"] = timed("cold")
    except Exception as e:  # Ray could not start (or a trial raised): reported, not faked
        out["error"] = f"{type(e).__name__}: {e}"
        say("RESULT " + json.dumps(out))
        return
    t = time.perf_counter()
    initialize_ray(cores)
    out["ray_start_s"] = time.perf_counter() - t
    t = time.perf_counter()
    optimize(cores)  # 3 × cores trials of its own draws: every Ray worker imports Jesse and runs backtests
    out["warmup_s"] = time.perf_counter() - t
    out["warm"] = timed("warm")
    ray.shutdown()
    out["update_n"] = 1000
    out["update_ms"] = _close_trade_ms(out["update_n"])
    say("RESULT " + json.dumps(out))


def _close_trade_ms(n):
    """What one closed trade costs a backtest in a Jesse project, measured alone: the statement
    closed_trade_repository.close_trade sends (an UPDATE of the trade's row, which a research
    backtest never stored, so it matches nothing), in ms."""
    import jesse.helpers as jh
    from jesse.models.ClosedTrade import ClosedTrade
    from jesse.services.db import database
    database.open_connection()
    ids = [jh.generate_unique_id() for _ in range(n)]
    t = time.perf_counter()
    for trade_id in ids:
        now = jh.now_to_timestamp()
        ClosedTrade.update(closed_at=now, updated_at=now).where(ClosedTrade.id == trade_id).execute()
    return (time.perf_counter() - t) / n * 1e3


def psql(sql, database="postgres"):
    return subprocess.run(["psql", "-h", PG_HOST, "-U", PG_USER, "-d", database, "-Atqc", sql],
                          check=True, capture_output=True, text=True).stdout.strip()


def pg_transactions(database):
    """Transactions committed in `database` so far (each of Jesse's autocommit statements is one)."""
    return int(psql(f"SELECT xact_commit FROM pg_stat_database WHERE datname = '{database}'") or 0)


def run_jesse(csv, cores, database, draws, meter):
    """The Jesse process of one run, replaying `draws`; its result with the CPU used in each timed call."""
    log = tempfile.TemporaryFile(mode="w+")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(draws, f)
    transactions = pg_transactions(database)
    try:
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), BIN, "--jesse", csv, str(cores),
                                 database, f.name], stdout=subprocess.PIPE, stderr=log, text=True)
        meter.jesse_roots.add(proc.pid)
        marks, result = {}, None
        for line in proc.stdout:
            word, _, rest = line.strip().partition(" ")
            if word == "BEGIN":
                marks[rest] = [meter.mark()]
            elif word == "END":
                marks[rest].append(meter.mark())
            elif word == "RESULT":
                result = json.loads(rest)
        proc.wait()
    finally:
        os.unlink(f.name)
    log.seek(0)
    stderr = log.read()
    if result is None:
        raise BenchFailure(f"the Jesse process exited {proc.returncode} without a result:\n{stderr[-3000:]}")
    if "error" in result:
        result["stderr"] = stderr[-3000:]
        return result
    for name, (first, last) in marks.items():
        result[name]["cpu_s"] = meter.window(first, last)
        if result[name]["completed"] != TRIALS or result[name]["total"] != TRIALS:
            raise BenchFailure(f"Jesse {name}: {result[name]['completed']} of {result[name]['total']} trials "
                               f"completed, expected {TRIALS}")
    time.sleep(0.5)  # a backend's statistics reach pg_stat_database when it exits
    result["pg_transactions"] = pg_transactions(database) - transactions - result["update_n"]
    result["trials_run"] = 2 * TRIALS + 3 * cores
    return result


# --- (b) the service: one study ---------------------------------------------------------------

def wait_study(base, job):
    in_flight = 0
    while True:
        state = http("GET", f"{base}/v1/jobs/{job}")
        in_flight = max(in_flight, (state.get("children") or {}).get("in_flight", 0))
        if state["status"] in ENDED:
            break
        time.sleep(POLL)
    if state["status"] != "succeeded":
        raise BenchFailure(f"study {job} ended {state['status']}: {state.get('error')}")
    return state, in_flight


def run_service(data, runners, seed, meter):
    with service(data, runners=runners) as base:
        # Warm every runner (Jesse imported, candles of both periods in the worker's cache,
        # the sampler's Python side loaded) with a small study of its own.
        warm = http("POST", base + "/v1/optimizations", dict(STUDY, trials=2 * runners, seed=seed + 7919))
        wait_study(base, warm["job_id"])
        first = meter.mark()
        started = time.time()
        accepted = http("POST", base + "/v1/optimizations", dict(STUDY, trials=TRIALS, seed=seed))
        submit_ms = (time.time() - started) * 1e3
        job = accepted["job_id"]
        state, in_flight = wait_study(base, job)
        cpu = meter.window(first, meter.mark())
        children = children_of(base, job)
        failed = [c for c in children if c["status"] != "succeeded"]
        if len(children) != TRIALS or failed:
            raise BenchFailure(f"study {job}: {len(children)} trials, not succeeded: "
                               f"{[(c['job_id'], c['status'], c.get('error')) for c in failed][:5]}")
        result = http("GET", f"{base}/v1/jobs/{job}/result?limit=10000")
        rows = sorted(result.get("trials") or [], key=lambda r: r["trial"])
        if [r["trial"] for r in rows] != list(range(TRIALS)):
            raise BenchFailure(f"study {job}: trial rows {[r['trial'] for r in rows][:10]}…, expected 0..{TRIALS - 1}")
        bad = [r for r in rows if r["state"] != "complete"]
        if bad:
            raise BenchFailure(f"study {job}: trials not complete: {[(r['trial'], r['state'], r.get('error')) for r in bad][:5]}")
        runs = [ts(c["finished_at"]) - ts(c["started_at"]) for c in children]
        wall = ts(state["finished_at"]) - started
        return {
            "job_id": job,
            "wall_s": wall,
            "submit_ms": submit_ms,
            "to_first_trial_ms": (min(ts(c["started_at"]) for c in children) - ts(state["created_at"])) * 1e3,
            "report_ms": (ts(state["finished_at"]) - max(ts(c["finished_at"]) for c in children)) * 1e3,
            "trial_ms": statistics.mean(runs) * 1e3,
            "idle_per_trial_ms": (wall * runners - sum(runs)) / TRIALS * 1e3,
            "draws": [r["params"] for r in rows],
            "fitness": [r["fitness"] for r in rows],
            "testing_runs": sum(1 for r in rows if r.get("testing")),
            "in_flight": in_flight,
            "cpu_s": cpu,
        }


# --- the bench --------------------------------------------------------------------------------

def compare_fitness(service_fitness, jesse_fitness, label):
    """Jesse's best_trials hold every trial with a fitness above 0.0001, rounded to 4 places."""
    problems = []
    for k, f in enumerate(service_fitness):
        mine = jesse_fitness.get(str(k))
        expected = None if f is None or f <= UNUSABLE else round(f, 4)
        if mine != expected:
            problems.append(f"{label}, trial {k}: service fitness {f}, Jesse {mine if mine is not None else UNUSABLE}")
    return problems


def wait_quiet(meter, name):
    """Waits (at most QUIET_WAIT s) until other processes used under 5 % of the machine's CPU for 3 s in a
    row, so a run starts on a quiet machine; the seconds waited."""
    began = time.time()
    while time.time() - began < QUIET_WAIT:
        first = meter.mark()
        time.sleep(3)
        if meter.window(first, meter.mark()).get("foreign", 0) < 0.05 * 3 * (os.cpu_count() or 1):
            break
    else:
        print(f"  {name}: the machine stayed busy for {QUIET_WAIT:.0f} s; running anyway", flush=True)
    return time.time() - began


def attempt(name, fn, wall_of, cpu_of, meter):
    """Runs `fn` on a quiet machine until other processes leave it alone (or RETRIES are used);
    the result, how many runs it took and how long it waited for quiet."""
    waited = 0.0
    for i in range(RETRIES + 1):
        waited += wait_quiet(meter, name)
        result = fn()
        result["waited_s"] = waited
        busy = [(w, c) for w, c in zip(wall_of(result), cpu_of(result)) if too_busy(c, w)]
        if not busy or i == RETRIES:
            result["attempts"] = i + 1
            return result
        print(f"  {name}: other processes used {max(c.get('foreign', 0) for _, c in busy):.1f} CPU s of it; "
              "running it again", flush=True)


def bench_round(data, csv, database, i, meter):
    """One round: for each runner count a fresh service and a fresh Jesse process, one at a time,
    service, Jesse, Jesse, service (reversed in odd rounds), with the round's seed."""
    seed = 1000 + i
    order = RUNNERS if i % 2 == 0 else RUNNERS[::-1]
    out, draws, problems = {n: {} for n in RUNNERS}, None, []

    def run_service_part(n):
        nonlocal draws
        s = attempt(f"service, {n} runner(s)", lambda: run_service(data, n, seed, meter),
                    lambda r: [r["wall_s"]], lambda r: [r["cpu_s"]], meter)
        if draws is not None and s["draws"] != draws:
            raise BenchFailure(f"round {i + 1}: the same seed drew different trials with {n} runners")
        draws = s["draws"]
        out[n]["service"] = s

    def run_jesse_part(n):
        out[n]["jesse"] = attempt(f"Jesse, cpu_cores {n}", lambda: run_jesse(csv, n, database, draws, meter),
                                  lambda r: [r[k]["wall_s"] for k in ("cold", "warm") if k in r],
                                  lambda r: [r[k]["cpu_s"] for k in ("cold", "warm") if k in r], meter)

    for j, n in enumerate(order):
        parts = [run_service_part, run_jesse_part] if j % 2 == 0 else [run_jesse_part, run_service_part]
        for part in parts:
            part(n)
    for n in RUNNERS:
        j, s = out[n]["jesse"], out[n]["service"]
        for k in ("cold", "warm"):
            if k in j:
                problems += compare_fitness(s["fitness"], j[k]["fitness"], f"round {i + 1}, {n} cpu_cores, {k}")
        if "error" in j:
            jesse_text = f"Jesse FAILED ({j['error']})"
        else:
            jesse_text = f"Jesse {j['cold']['wall_s']:.2f} s (Ray started in the call), {j['warm']['wall_s']:.2f} s (Ray warm)"
        print(f"round {i + 1}/{ROUNDS}, runners={n}: {jesse_text}; service {s['wall_s']:.2f} s; "
              f"{s['testing_runs']} of {TRIALS} trials ran their testing backtest", flush=True)
    return out, problems


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def report(rounds, n_candles, bench_s):
    jesse_ok = all("error" not in r[n]["jesse"] for r in rounds for n in RUNNERS)
    per_hp = TRIALS // HYPERPARAMETERS
    testing_runs = [r[RUNNERS[0]]["service"]["testing_runs"] for r in rounds]
    lines = ["", HEADING, "",
             f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
             f"{os.cpu_count()} cores; median of {ROUNDS} rounds. One study: SmaCross {TIMEFRAME}, random sampler, "
             f"objective sharpe (Jesse's fitness, optimal_total 200), fast_mode, {TRIALS} trials over its 3 declared "
             f"hyperparameters; training {TRAINING[0]}..{TRAINING[1]}, testing {TESTING[0]}..{TESTING[1]} (synthetic "
             f"1m candles, {n_candles} rows, {WARM_UP} warm-up candles); balance 10000, fee 0.001, futures, leverage 1 "
             f"cross. Every round has its own seed; the trials that ran their testing backtest (Jesse's fitness "
             f"rules: more than 5 trades and a non-negative Sharpe) were {', '.join(map(str, testing_runs))} of "
             f"{TRIALS}.",
             "",
             f"- **Jesse**: `jesse.research.optimize(config, routes, [], training…, testing…, cpu_cores=R, "
             f"trials={per_hp}, fast_mode=True, objective_function='sharpe', progress_bar=False)` ({per_hp} × 3 "
             f"hyperparameters = {TRIALS} trials) in a plain Python process, candles already in numpy arrays. Timed "
             "around the call only (imports, candle loading and the project's set-up excluded), twice in the same "
             "process: **Ray started in the call**, as a user calls it (Ray starts, its workers import Jesse, Ray "
             "shuts down); **Ray warm**: Ray already started and its workers warmed by a small study first "
             "(Jesse's steady state).",
             f"- **Service**: one `POST /v1/optimizations` (`sampler: random`, `trials: {TRIALS}`, `seed`) to the "
             "release binaries, one worker process with R runners on a scratch SQLite store, warmed by a small "
             "study first; time from just before the submit to the study's `finished_at` (succeeded: every trial's "
             "result and the study's report — leaderboard, convergence, importance, heatmap, PBO, deflated Sharpe — "
             "stored).",
             "- **The same trials**: Jesse replays the service's draws in trial order (its `_generate_trial_params`, "
             "a few `np.random` calls per trial, is replaced by a list lookup), so both run exactly the same "
             "backtests; every trial's fitness from Jesse equals the service's (checked, to Jesse's 4 decimals), "
             "and 1 and 2 runners run the same trials too (same seed).",
             "- **A Jesse project**: `research.optimize` loads the strategy by name from `strategies/` in the "
             "working directory, its own and its Ray workers'; Jesse's logging adds `storage/` there, which makes "
             "it a Jesse project, whose import needs a `.env` and whose backtests open Jesse's Postgres database "
             "and send one UPDATE per closed trade (`closed_trade_repository.close_trade`; outside a project it "
             "does nothing). So Jesse runs in a scratch project (`.env`, a scratch database on the local Postgres "
             "migrated by Jesse's migrator, as `jesse run` does); its figures include those round trips (the "
             "service's runners are never in a project). Postgres transactions per trial are shown below.",
             "- One run at a time, fresh processes for each (service, Jesse, Jesse, service; reversed in odd rounds). "
             "Each run starts once other processes have used under 5 % of the CPU for 3 s, and a run during which "
             f"they used more than {FOREIGN_LIMIT:.0%} of it is run again (at most {RETRIES} times). "
             f"Trials/s = {TRIALS} / time; ratio = service trials/s ÷ Jesse trials/s.",
             "",
             "Target: service ≥ 1.0 × Jesse's trials/s at the same parallelism.",
             ""]
    if not jesse_ok:
        errors = sorted({r[n]["jesse"]["error"] for r in rounds for n in RUNNERS if "error" in r[n]["jesse"]})
        lines += [f"**jesse.research.optimize failed here, so there is no Jesse figure:** {'; '.join(errors)}", ""]
    lines += ["| runners (= Jesse's cpu_cores) | Jesse, Ray started in the call (s) | Jesse, Ray warm (s) | service (s) | "
              "Jesse trials/s (Ray started in the call / warm) | service trials/s | **service ÷ Jesse** (Ray started "
              "in the call / warm) | service ÷ Jesse warm, per round | target |",
              "|---|---|---|---|---|---|---|---|---|"]
    summary = {}
    for n in RUNNERS:
        s_wall = med(r[n]["service"]["wall_s"] for r in rounds)
        s_rate = TRIALS / s_wall
        summary[n] = {"service": s_wall}
        if jesse_ok:
            cold = med(r[n]["jesse"]["cold"]["wall_s"] for r in rounds)
            warm = med(r[n]["jesse"]["warm"]["wall_s"] for r in rounds)
            rc, rw = s_rate / (TRIALS / cold), s_rate / (TRIALS / warm)
            verdict = ("met" if rw >= 1.0 else
                       "met against the call, **not met** against warm Ray" if rc >= 1.0 else "**not met**")
            each = ", ".join(f"{r[n]['jesse']['warm']['wall_s'] / r[n]['service']['wall_s']:.2f}" for r in rounds)
            lines.append(f"| {n} | {cold:.2f} | {warm:.2f} | {s_wall:.2f} | {TRIALS / cold:.2f} / {TRIALS / warm:.2f} | "
                         f"{s_rate:.2f} | **{rc:.2f}** / **{rw:.2f}** | {each} | ≥ 1.0 ({verdict}) |")
            summary[n].update(cold=cold, warm=warm)
        else:
            lines.append(f"| {n} | — | — | {s_wall:.2f} | — | {s_rate:.2f} | — | — | ≥ 1.0 (not measured) |")
    if 1 in summary and 2 in summary:
        s1, s2 = summary[1]["service"], summary[2]["service"]
        speedup = s1 / s2
        lines += ["", "Scaling from 1 to 2 runners (the same trials; trials/s(2) ÷ trials/s(1)); target ≥ 0.9 × 2:", "",
                  "| setup | 1 (trials/s) | 2 (trials/s) | speed-up | target |", "|---|---|---|---|---|",
                  f"| service, 1 → 2 runners | {TRIALS / s1:.2f} | {TRIALS / s2:.2f} | **{speedup:.2f}** | ≥ 1.8 "
                  f"({'met' if speedup >= 1.8 else '**not met**'}) |"]
        if jesse_ok:
            for key, label in (("cold", "Ray started in the call"), ("warm", "Ray warm")):
                a, b = summary[1][key], summary[2][key]
                lines.append(f"| Jesse, cpu_cores 1 → 2, {label} | {TRIALS / a:.2f} | {TRIALS / b:.2f} | {a / b:.2f} | |")
    lines += ["", "Around the trials (service, medians):", "",
              "| runners | submit (HTTP + planning) | study created → first trial started | mean trial, started → "
              "finished | runner idle per trial | last trial finished → study succeeded (report) | trials in "
              "flight (max seen) |",
              "|---|---|---|---|---|---|---|"]
    for n in RUNNERS:
        s = [r[n]["service"] for r in rounds]
        lines.append(f"| {n} | {med(x['submit_ms'] for x in s):.1f} ms | {med(x['to_first_trial_ms'] for x in s):.0f} ms | "
                     f"{med(x['trial_ms'] for x in s):.0f} ms | {med(x['idle_per_trial_ms'] for x in s):.1f} ms | "
                     f"{med(x['report_ms'] for x in s):.0f} ms | {max(x['in_flight'] for x in s)} |")
    lines.append("")
    lines.append("Runner idle per trial = (time × runners − Σ trials' started → finished) ÷ trials: the runners' "
                 "time between trials (claiming the next, the study's start and report).")
    if jesse_ok:
        lines += ["", "Jesse's process (medians): imports (jesse.research, ray; excluded from every time above), "
                  "`initialize_ray` alone, the warm-up study (3 × cores trials) before the warm call, Postgres "
                  "transactions per trial (both timed calls and the warm-up; the project's tables were made once "
                  "before, by Jesse's migrator) and one such transaction measured alone:", "",
                  "| cpu_cores | imports (s) | initialize_ray (s) | warm-up study (s) | Postgres transactions per trial | "
                  "one close_trade UPDATE, alone (ms) |",
                  "|---|---|---|---|---|---|"]
        for n in RUNNERS:
            j = [r[n]["jesse"] for r in rounds]
            lines.append(f"| {n} | {med(x['import_s'] for x in j):.2f} | {med(x['ray_start_s'] for x in j):.2f} | "
                         f"{med(x['warmup_s'] for x in j):.2f} | {med(x['pg_transactions'] / x['trials_run'] for x in j):.0f} | "
                         f"{med(x['update_ms'] for x in j):.2f} |")
        per_trial = med(r[n]["jesse"]["pg_transactions"] / r[n]["jesse"]["trials_run"] * r[n]["jesse"]["update_ms"]
                        for r in rounds for n in RUNNERS)
        lines += ["", f"So the project's UPDATEs cost Jesse about {per_trial:.0f} ms of backtest time per trial "
                  "(transactions per trial × one UPDATE: an estimate, they cannot be switched off in a project). "
                  "Without them, Jesse with Ray warm would take about " + ", ".join(
                      f"{summary[n]['warm'] - per_trial * TRIALS / n / 1e3:.2f} s with {n} cpu_cores "
                      f"(service ÷ Jesse {(summary[n]['warm'] - per_trial * TRIALS / n / 1e3) / summary[n]['service']:.2f})"
                      for n in RUNNERS) + "."]
    lines += ["", "CPU per trial (ms; CPU seconds of each kind of process during the timed run ÷ trials; /proc "
              "sampled every 0.5 s, so a process's last half second before it exits can be missed):", "",
              "| runners | run | backtests (runners / Ray workers) | worker process | API | Jesse's driver + Ray's "
              "raylet, GCS… | Postgres (Jesse's project database) | bench client |",
              "|---|---|---|---|---|---|---|---|"]
    for n in RUNNERS:
        runs = []
        if jesse_ok:
            runs = [("Jesse, Ray started in the call", [r[n]["jesse"]["cold"]["cpu_s"] for r in rounds]),
                    ("Jesse, Ray warm", [r[n]["jesse"]["warm"]["cpu_s"] for r in rounds])]
        runs.append(("service", [r[n]["service"]["cpu_s"] for r in rounds]))
        for name, cpus in runs:
            per = lambda k: med(c.get(k, 0) for c in cpus) / TRIALS * 1e3  # noqa: E731
            if name == "service":
                lines.append(f"| {n} | service | {per('runner'):.0f} | {per('worker'):.1f} | {per('api'):.1f} | — | — | "
                             f"{per('client'):.1f} |")
            else:
                lines.append(f"| {n} | {name} | {per('ray_worker'):.0f} | — | — | {per('jesse_other'):.1f} | "
                             f"{per('postgres'):.1f} | {per('client'):.1f} |")
    per_round = []
    for n in RUNNERS:
        cells = []
        for r in rounds:
            j, s = r[n]["jesse"], r[n]["service"]
            jtxt = f"{j['cold']['wall_s']:.2f} / {j['warm']['wall_s']:.2f}" if "cold" in j else "— / —"
            other = s["cpu_s"].get("foreign", 0) + sum(j.get(k, {}).get("cpu_s", {}).get("foreign", 0) for k in ("cold", "warm"))
            runs = j.get("attempts", 1) + s["attempts"] - 2
            cells.append(f"{jtxt} / {s['wall_s']:.2f} (other {other:.1f}{f', {runs} re-run' if runs else ''})")
        per_round.append(f"{n} runner{'s' if n > 1 else ''}: " + ", ".join(cells))
    lines += ["", "Per round (s), Jesse with Ray started in the call / Jesse with Ray warm / service, with the CPU "
              "seconds other processes used during those timed runs (other work on the machine) and the runs done "
              "again because of it: " + "; ".join(per_round) + "."]
    timed = sum(r[n]["service"]["wall_s"] + sum(r[n]["jesse"].get(k, {}).get("wall_s", 0) for k in ("cold", "warm"))
                for r in rounds for n in RUNNERS)
    foreign = sum(r[n]["service"]["cpu_s"].get("foreign", 0)
                  + sum(r[n]["jesse"].get(k, {}).get("cpu_s", {}).get("foreign", 0) for k in ("cold", "warm"))
                  for r in rounds for n in RUNNERS)
    if foreign > 0.02 * timed * (os.cpu_count() or 1):
        lines += ["", f"**Other work used {foreign:.1f} CPU s of the {timed * (os.cpu_count() or 1):.0f} available "
                  "during the timed runs: these figures are skewed; re-run on a quiet machine.**"]
    waited = sum(r[n][k].get("waited_s", 0) for r in rounds for n in RUNNERS for k in ("jesse", "service"))
    lines += ["", f"The whole bench took {bench_s / 60:.1f} min ({waited / 60:.1f} min of it waiting for other work on "
              f"the machine to stop). Reproduce with `make bench-optimize` (needs the "
              "local Postgres for Jesse's project; BENCH_OPT_ROUNDS and BENCH_OPT_TRIALS change the rounds and the "
              "study's size)."]
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
    if TRIALS % HYPERPARAMETERS:
        sys.exit(f"bench_optimize: BENCH_OPT_TRIALS must be a multiple of {HYPERPARAMETERS} (Jesse runs trials × "
                 "the number of hyperparameters)")
    began = time.time()
    database = f"jesse_mcp_bench_optimize_{int(began)}"
    try:
        psql(f"CREATE DATABASE {database}")
    except (OSError, subprocess.CalledProcessError) as e:
        sys.exit(f"bench_optimize: jesse.research.optimize needs a Jesse project with Postgres; could not create "
                 f"a database on {PG_USER}@{PG_HOST}: {getattr(e, 'stderr', None) or e}")
    work = tempfile.mkdtemp(prefix="jesse-mcp-optimize-")
    data, csv = os.path.join(work, "data"), os.path.join(work, "candles.csv")
    api = os.path.join(BIN, "jesse-mcp-api")
    meter = CpuMeter()
    meter.database = database
    try:
        # The project's tables, once, as `jesse run` makes them before any research.
        subprocess.run([sys.executable, os.path.abspath(__file__), BIN, "--jesse-migrate", database],
                       check=True, capture_output=True)
        # The bench's synthetic candles, into the store and (the same file) into Jesse's arrays.
        subprocess.run([api, "candles", "synth", "--start", "2023-01-01", "--end", TESTING[1], "--csv", csv],
                       check=True, capture_output=True)
        env = dict(os.environ, JESSE_MCP_DATA_DIR=data, RUST_LOG="warn")
        subprocess.run([api, "candles", "import-csv", "--exchange", EXCHANGE, "--symbol", SYMBOL, csv],
                       env=env, check=True, capture_output=True)
        n_candles = sum(1 for _ in open(csv)) - 1
        rounds, problems = [], []
        for i in range(ROUNDS):
            r, p = bench_round(data, csv, database, i, meter)
            rounds.append(r)
            problems += p
    except BenchFailure as e:
        sys.exit(f"bench_optimize: FAILED: {e}")
    finally:
        meter.close()
        shutil.rmtree(work, ignore_errors=True)
        subprocess.run(["psql", "-h", PG_HOST, "-U", PG_USER, "-d", "postgres", "-qc",
                        f"DROP DATABASE IF EXISTS {database}"], capture_output=True)
    for r in rounds:
        for n in RUNNERS:
            if "error" in r[n]["jesse"]:
                print(f"bench_optimize: jesse.research.optimize failed with {n} cpu_cores: {r[n]['jesse']['error']}\n"
                      f"{r[n]['jesse'].get('stderr', '')}", file=sys.stderr)
    text = report(rounds, n_candles, time.time() - began)
    print(text)
    if problems:
        print("\n".join(["", "bench_optimize: FAILED, the service and Jesse disagree:"] + problems[:40]), file=sys.stderr)
        sys.exit(1)
    if RUNNERS == [1, 2] and ROUNDS >= 1:
        write_section(text)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] == "--jesse":
        jesse_child(sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6])
    elif len(sys.argv) > 2 and sys.argv[2] == "--jesse-migrate":
        jesse_migrate(sys.argv[3])
    else:
        main()
