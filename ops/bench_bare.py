"""Bare Jesse for the benches: `jesse.research.backtest` on candles already in
numpy arrays, no jesse-mcp code.

Imported by ops/bench_batch.py (one `Bare` per process of a process pool); run
as a script it is bench.py's `BareJesse`: a warm interpreter that runs one
backtest per line read on stdin and answers one JSON line each.

Usage: python ops/bench_bare.py CSV TIMEFRAME STRATEGY_PATH START_MS END_MS EXCHANGE SYMBOL
"""
import importlib.util
import json
import math
import os
import sys
import tempfile
import time

import numpy as np

MINUTES = {"1h": 60, "15m": 15, "5m": 5, "4h": 240}


def load_csv(csv):
    """The bench CSV (timestamp,open,high,low,close,volume) as Jesse's column order."""
    return np.loadtxt(csv, delimiter=",", skiprows=1)[:, [0, 1, 4, 2, 3, 5]].copy()


def clean(v):
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    return v


class Bare:
    """One route, one strategy, the service's default config (10000 balance, 0.001 fee,
    futures, leverage 1 cross, 240 warm-up candles), candles sliced once."""

    def __init__(self, rows, timeframe, strategy_path, start_ms, end_ms, exchange, symbol):
        os.chdir(tempfile.mkdtemp())  # Jesse may write under the working directory
        import jesse.research as research
        self.research = research
        start_ms, end_ms = int(start_ms), int(end_ms)
        warm = rows[(rows[:, 0] >= start_ms - 240 * MINUTES[timeframe] * 60000) & (rows[:, 0] < start_ms)]
        trade = rows[(rows[:, 0] >= start_ms) & (rows[:, 0] < end_ms)]
        name = os.path.basename(os.path.dirname(strategy_path))
        spec = importlib.util.spec_from_file_location(name, strategy_path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self.strategy = getattr(module, name)
        key = f"{exchange}-{symbol}"
        entry = lambda a: {key: {"exchange": exchange, "symbol": symbol, "candles": a}}  # noqa: E731
        self.trade, self.warm = entry(trade), entry(warm)
        self.config = {"starting_balance": 10000, "fee": 0.001, "type": "futures", "futures_leverage": 1,
                       "futures_leverage_mode": "cross", "exchange": exchange, "warm_up_candles": 240}
        self.routes = [{"exchange": exchange, "strategy": self.strategy, "symbol": symbol, "timeframe": timeframe}]

    def defaults(self):
        """The strategy's declared hyperparameter defaults (Jesse replaces `hp` as a whole)."""
        return {hp["name"]: hp["default"] for hp in self.strategy.hyperparameters(None)}

    def run(self, hyperparameters=None):
        """One backtest; (seconds, metrics as the service reports them: JSON-safe, NaN → None)."""
        t = time.perf_counter()
        r = self.research.backtest(self.config, self.routes, [], self.trade, warmup_candles=self.warm,
                                   hyperparameters=hyperparameters)
        seconds = time.perf_counter() - t
        return seconds, {k: clean(v) for k, v in r["metrics"].items()}


    def run_forked(self):
        """The same backtest in a child forked from this warm interpreter, as the
        service's runner runs every job (gc.freeze in the child, as it does): (wall
        seconds from before the fork to after the child is reaped, CPU seconds of
        parent and child, metrics). Against `run`,
        this isolates what a fresh process per job costs: the fork, copy-on-write
        faults while the backtest runs, the child's exit and its reaping."""
        import gc

        started, cpu = time.perf_counter(), time.process_time()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                gc.freeze()
                _, metrics = self.run()
                os.write(write, json.dumps(metrics).encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            answer = pipe.read()
        _, _, usage = os.wait4(pid, 0)
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu + usage.ru_utime + usage.ru_stime
        return wall, cpu, json.loads(answer)


    def run_spare(self):
        """The same backtest the way the service runs a job now: in a "spare" child
        forked ahead of the job, which warms itself up with the runner's own
        `prefault` (worker/python/jesse_mcp_runner.py) and then waits for the job.
        Returns (wall seconds from the job's go to its answer — what the job waits —,
        CPU seconds of the child from fork to exit plus the parent's, the
        seconds the spare took to get ready, metrics)."""
        import gc

        runner = self.runner_module()
        cpu = time.process_time()
        forked = time.perf_counter()
        read, write = os.pipe()
        go_read, go_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            os.close(go_write)
            try:
                runner.prefault()
                os.write(write, b"R")
                os.read(go_read, 1)
                gc.freeze()
                _, metrics = self.run()
                os.write(write, json.dumps(metrics).encode())
            finally:
                os._exit(0)
        os.close(write)
        os.close(go_read)
        with os.fdopen(read, "rb") as pipe:
            assert pipe.read(1) == b"R"
            ready = time.perf_counter() - forked
            started = time.perf_counter()
            os.write(go_write, b"G")
            answer = pipe.read()
            wall = time.perf_counter() - started
        os.close(go_write)
        _, _, usage = os.wait4(pid, 0)
        cpu = time.process_time() - cpu + usage.ru_utime + usage.ru_stime
        return wall, cpu, ready, json.loads(answer)

    def runner_module(self):
        """jesse-mcp's runner module, imported (and warmed up, gc.freeze included) as
        a runner does before it forks jobs; only for `run_spare`."""
        if getattr(self, "_runner", None) is None:
            sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                            "worker", "python"))
            import jesse_mcp_runner
            jesse_mcp_runner.warm_up()
            self._runner = jesse_mcp_runner
        return self._runner


def main():
    csv, timeframe, strategy_path, start_ms, end_ms, exchange, symbol = sys.argv[1:8]
    bare = Bare(load_csv(csv), timeframe, strategy_path, start_ms, end_ms, exchange, symbol)
    for line in sys.stdin:
        ready_seconds = None
        if line.strip() == "fork":
            seconds, cpu_seconds, metrics = bare.run_forked()
        elif line.strip() == "spare":
            seconds, cpu_seconds, ready_seconds, metrics = bare.run_spare()
        else:
            # Wall and CPU time around the call, as `fork` measures them.
            started, cpu = time.perf_counter(), time.process_time()
            _, metrics = bare.run()
            seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
        print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "ready_seconds": ready_seconds,
                          "metrics": metrics}), flush=True)


if __name__ == "__main__":
    main()
