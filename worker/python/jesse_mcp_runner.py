"""The worker's only contract with Jesse.

A runner process imports this module once (which imports ``jesse.research``) and
then calls ``run_backtest`` for one job at a time. Rust hands candles over as
float64 numpy arrays in Jesse's column order and gets a JSON string back, in
which NaN and +/-inf are already replaced by null (JSON cannot carry them).

Strategies are compiled from the exact source text the worker hashed, under
their real file path, so a result's provenance hash always matches the code
that ran and tracebacks point at the user's file and line.
"""

import errno
import gc
import importlib.util
import io
import json
import linecache
import math
import os
import struct
import sys
import time
import traceback

import numpy as np

import jesse.research as research
import jesse.version

JESSE_VERSION = jesse.version.__version__

_module_counter = 0


# ---- a job's events: progress and log lines, sent to the runner while the job runs ----
#
# A job's process (forked from the runner, see worker/src/runner.rs) writes frames on its
# pipe to the runner: a kind byte, a little-endian u32 length, then the body. b"E" is an
# event (a JSON object the runner forwards to the worker), b"A" the answer (written by
# the runner's Rust code once the entry returns). Events are flushed at most every
# PROGRESS_EVERY_S of wall time from a hook Jesse calls anyway, so a run pays one clock
# read per strategy execution.

LOG_MAX_LINES = 10_000
LOG_MAX_BYTES = 1 << 20
# Pending log text is sent once it reaches this size, even between flush times.
_LOG_BATCH_BYTES = 64 * 1024
PROGRESS_EVERY_S = 0.25
TRUNCATED_LINE = f"[log truncated: a job keeps at most {LOG_MAX_LINES} lines and {LOG_MAX_BYTES} bytes]"

_perf = time.perf_counter


class _JobChannel:
    """Collects a job's log lines (capped) and progress, and writes them to the runner."""

    def __init__(self, fd):
        self.fd = fd
        self.pending = []
        self.pending_bytes = 0
        self.lines = 0
        self.bytes = 0
        self.truncated = False
        self.next_flush = _perf() + PROGRESS_EVERY_S
        # [start_ms, end_ms) of the simulation, once a backtest runs.
        self.span = None
        self.last_progress = None

    def _send(self, event):
        body = json.dumps(event, allow_nan=False).encode("utf-8")
        view = memoryview(b"E" + struct.pack("<I", len(body)) + body)
        while view:
            view = view[os.write(self.fd, view):]

    def simulated_ms(self):
        """Jesse's clock while a simulation runs (it holds the wall clock otherwise)."""
        span = self.span
        if span is None:
            return None
        from jesse.store import store

        now = int(store.app.time)
        return now if span[0] <= now <= span[1] else None

    def add(self, stream, line):
        if self.truncated:
            return
        line = _text(line)
        size = len(line.encode("utf-8", "replace"))
        if self.lines >= LOG_MAX_LINES or self.bytes + size > LOG_MAX_BYTES:
            room = LOG_MAX_BYTES - self.bytes
            if self.lines < LOG_MAX_LINES and room > 0:
                # The part of a long line that still fits, then the marker.
                line = line.encode("utf-8", "replace")[:room].decode("utf-8", "ignore")
                self._keep(stream, line, len(line.encode("utf-8")))
            self.truncated = True
            self.pending.append({"stream": "system", "line": TRUNCATED_LINE, "simulated_ms": None})
            self.flush()
            return
        self._keep(stream, line, size)
        if self.pending_bytes >= _LOG_BATCH_BYTES or _perf() >= self.next_flush:
            self.flush()

    def _keep(self, stream, line, size):
        self.lines += 1
        self.bytes += size
        self.pending_bytes += size
        self.pending.append({"stream": stream, "line": line, "simulated_ms": self.simulated_ms()})

    def tick(self):
        """Called from the per-execution hook once PROGRESS_EVERY_S has passed."""
        self.flush()

    def flush(self):
        self.next_flush = _perf() + PROGRESS_EVERY_S
        if self.pending:
            lines, self.pending, self.pending_bytes = self.pending, [], 0
            self._send({"logs": lines})
        span = self.span
        now = self.simulated_ms()
        if span is not None and now is not None and now != self.last_progress:
            self.last_progress = now
            fraction = min(max((now - span[0]) / max(span[1] - span[0], 1), 0.0), 1.0)
            self._send({"progress": fraction, "simulated_ms": now})


_channel = None


class _Capture(io.TextIOBase):
    """sys.stdout / sys.stderr of a job: complete lines go to the job's log."""

    def __init__(self, channel, stream):
        super().__init__()
        self._channel = channel
        self._stream = stream
        self._partial = ""

    @property
    def encoding(self):
        return "utf-8"

    @property
    def errors(self):
        return "replace"

    def writable(self):
        return True

    def isatty(self):
        return False

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if "\n" not in text and len(self._partial) + len(text) < _LOG_BATCH_BYTES:
            self._partial += text
            return len(text)
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._channel.add(self._stream, line)
        if len(self._partial) >= _LOG_BATCH_BYTES:
            self._channel.add(self._stream, self._partial)
            self._partial = ""
        return len(text)

    def flush(self):
        pass

    @property
    def buffer(self):
        """For code that writes bytes (``sys.stdout.buffer.write``): decoded as UTF-8."""
        return _BinaryCapture(self)

    def finish(self):
        if self._partial:
            self._channel.add(self._stream, self._partial)
            self._partial = ""


class _BinaryCapture(io.RawIOBase):
    def __init__(self, text):
        super().__init__()
        self._text = text

    def writable(self):
        return True

    def write(self, data):
        self._text.write(bytes(data).decode("utf-8", "replace"))
        return len(data)


def _install_hooks():
    """Patches Jesse in this job's process only (the runner itself never runs them):
    ``Strategy._execute`` (called by every simulator once per strategy execution) also
    flushes events when it is time, and ``Strategy.log`` also logs to the job."""
    from jesse.strategies import Strategy

    execute = Strategy._execute
    log = Strategy.log

    def _execute(self):
        execute(self)
        if _perf() >= _channel.next_flush:
            _channel.tick()

    def _log(msg, log_type="info", send_notification=False, webhook=None):
        if log_type in ("info", "error"):
            _channel.add(log_type, str(msg))
        return log(msg, log_type, send_notification, webhook)

    Strategy._execute = _execute
    Strategy.log = staticmethod(_log)


def begin_job(fd):
    """In a job's process, before its entry runs: its events go to ``fd``; print output
    and ``self.log`` lines become the job's log."""
    global _channel
    # Everything inherited from the runner moves to the collector's permanent
    # generation (in this process only), so the job's collections neither walk
    # nor write to it: fewer copy-on-write faults, shorter full collections.
    # Results do not change: the collector only frees unreachable objects.
    gc.freeze()
    if _egress is not None:
        # The guard is for the runner's own imports; the kernel confines a job.
        _egress.active = False
    _channel = _JobChannel(fd)
    sys.stdout = _Capture(_channel, "stdout")
    sys.stderr = _Capture(_channel, "stderr")
    _install_hooks()


def end_job():
    """In a job's process, after its entry returned: the last lines and progress."""
    if _channel is None:
        return
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, _Capture):
            stream.finish()
    _channel.flush()


def _simulation_span(candles):
    """[start, end] of a run's simulated time (Jesse's clock is a candle's close), for progress."""
    firsts, lasts = [], []
    for entry in candles.values():
        array = entry["candles"]
        if len(array):
            firsts.append(int(array[0, 0]))
            lasts.append(int(array[-1, 0]))
    if not firsts:
        return None
    return (min(firsts), max(lasts) + 60_000)


class StrategyLoadError(Exception):
    """The strategy file does not define the expected class."""


class HyperparameterError(Exception):
    """Overrides name a hyperparameter no strategy of the run declares."""


def _declared_hyperparameters(cls):
    # hyperparameters() is an instance method that, by Jesse's convention, does
    # not use instance state; calling it without __init__ avoids touching Jesse's
    # global stores outside a run.
    declared = _call_hyperparameters(cls)
    return {hp["name"]: hp.get("default") for hp in declared}


def _call_hyperparameters(cls):
    """hyperparameters() is an instance method that, by Jesse's convention, uses no
    instance state; calling it on a stand-in avoids __init__ (and Jesse's global
    stores) and works even for a class that cannot be instantiated."""
    import types

    return cls.hyperparameters(types.SimpleNamespace()) or []


def _merge_hyperparameters(classes, overrides):
    """Applies overrides on top of the declared defaults.

    Jesse replaces a strategy's whole ``hp`` dict with what is passed, so a
    partial override would leave the other names undefined (KeyError inside the
    strategy). Users mean "these values, defaults for the rest".
    """
    if not overrides:
        return None
    defaults = {}
    for cls in classes.values():
        defaults.update(_declared_hyperparameters(cls))
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        names = ", ".join(sorted(defaults)) or "none"
        raise HyperparameterError(
            f"hyperparameter(s) {', '.join(unknown)} are not declared by the strategy; declared: {names}"
        )
    return {**defaults, **overrides}


def _load_strategy(name, path, source):
    global _module_counter
    _module_counter += 1
    module_name = f"jesse_mcp_strategy_{name}_{_module_counter}"
    spec = importlib.util.spec_from_file_location(
        module_name, path, submodule_search_locations=[os.path.dirname(path)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    # Tracebacks quote the source that ran, not whatever the file holds now (and
    # a sandboxed job may not be able to read the file at all).
    linecache.cache[path] = (len(source), None, source.splitlines(True), path)
    try:
        code = compile(source, path, "exec")
        exec(code, module.__dict__)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    cls = getattr(module, name, None)
    if not isinstance(cls, type):
        sys.modules.pop(module_name, None)
        raise StrategyLoadError(f"{path} does not define a class named {name}")
    return cls


def _unload(classes):
    """Drops the run's strategy modules so nothing of one job lingers into the next."""
    for cls in classes.values():
        sys.modules.pop(cls.__module__, None)


def _clean(value):
    """Makes a Jesse result JSON-safe: numpy scalars to Python, NaN/inf to None."""
    if isinstance(value, dict):
        return {_text(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return [_clean(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if value is None:
        return value
    return _text(value if isinstance(value, str) else str(value))


def _specials(metrics):
    """Which metrics _clean turns into null because they are NaN or +/-inf: {key: "+inf"|"-inf"|"nan"}.
    Jesse's fitness ranks +inf best (sortino with no losing day), so the reader must know which it was."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, (float, np.floating)) and not math.isfinite(float(value)):
            value = float(value)
            out[_text(str(key))] = "nan" if math.isnan(value) else ("+inf" if value > 0 else "-inf")
    return out


def _text(value):
    """A string JSON can carry: lone surrogates (from undecodable bytes) become U+FFFD."""
    return value.encode("utf-8", "replace").decode("utf-8") if isinstance(value, str) else value


def limit_kind(exc):
    """The sandbox limit an exception reports, if any: a MemoryError is the address-space
    limit (RLIMIT_AS), EFBIG the file-size limit (RLIMIT_FSIZE; Python ignores SIGXFSZ)."""
    if isinstance(exc, MemoryError):
        return "memory_limit"
    if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        return "file_size_limit"
    return None


def _error(kind, exc, strategy_paths):
    """Describes an exception with the innermost line that belongs to a strategy file."""
    kind = limit_kind(exc) or kind
    frames = traceback.extract_tb(exc.__traceback__)
    location = None
    for frame in reversed(frames):
        if frame.filename in strategy_paths:
            location = {"file": frame.filename, "line": frame.lineno, "function": frame.name,
                        "code": frame.line}
            break
    if location is None and isinstance(exc, SyntaxError) and exc.filename in strategy_paths:
        location = {"file": exc.filename, "line": exc.lineno, "function": None, "code": (exc.text or "").strip()}
    return {
        "ok": False,
        "error": {
            "kind": kind,
            "type": type(exc).__name__,
            "message": _text(str(exc)),
            "location": _clean(location),
            "traceback": _text("".join(traceback.format_exception(exc))[-8000:]),
        },
    }


def run_backtest(request_json, candles, warmup_candles):
    """Runs one backtest.

    ``request_json``: {config, routes: [{strategy, symbol, timeframe}], data_routes,
    strategies: {name: {path, source}}, hyperparameters, fast_mode, generate_equity_curve}.
    ``candles`` / ``warmup_candles``: {"<exchange>-<symbol>": {exchange, symbol, candles: ndarray}}.
    """
    started = time.perf_counter()
    request = json.loads(request_json)
    sources = request["strategies"]
    strategy_paths = {spec["path"] for spec in sources.values()}
    try:
        classes = {name: _load_strategy(name, spec["path"], spec["source"]) for name, spec in sources.items()}
    except Exception as exc:  # noqa: BLE001 - any load failure is the strategy's
        return json.dumps(_error("strategy_load", exc, strategy_paths))

    try:
        return _run_loaded(request, classes, candles, warmup_candles, strategy_paths, started)
    finally:
        _unload(classes)


def _run_loaded(request, classes, candles, warmup_candles, strategy_paths, started):
    try:
        hyperparameters = _merge_hyperparameters(classes, request.get("hyperparameters"))
    except HyperparameterError as exc:
        return json.dumps(_error("invalid_hyperparameters", exc, strategy_paths))
    except Exception as exc:  # noqa: BLE001 - a broken hyperparameters() is the strategy's
        return json.dumps(_error("strategy_load", exc, strategy_paths))

    exchange = request["config"]["exchange"]
    routes = [
        {"exchange": exchange, "strategy": classes[r["strategy"]], "symbol": r["symbol"], "timeframe": r["timeframe"]}
        for r in request["routes"]
    ]
    data_routes = [
        {"exchange": exchange, "symbol": r["symbol"], "timeframe": r["timeframe"]} for r in request["data_routes"]
    ]
    pipeline_class, pipeline_kwargs = None, None
    pipeline = request.get("candles_pipeline")
    if pipeline:
        import jesse.candle_pipelines as pipelines

        pipeline_class = getattr(pipelines, pipeline["class"])
        pipeline_kwargs = dict(pipeline.get("kwargs") or {})
        if pipeline.get("numpy_seed") is not None:
            np.random.seed(int(pipeline["numpy_seed"]))
    backtest_started = time.perf_counter()
    if _channel is not None:
        _channel.span = _simulation_span(candles)
    try:
        result = research.backtest(
            request["config"],
            routes,
            data_routes,
            candles,
            warmup_candles=warmup_candles or None,
            hyperparameters=hyperparameters,
            fast_mode=request.get("fast_mode", False),
            generate_equity_curve=request.get("generate_equity_curve", False),
            candles_pipeline_class=pipeline_class,
            candles_pipeline_kwargs=pipeline_kwargs,
        )
    except Exception as exc:  # noqa: BLE001 - reported to the user with its location
        return json.dumps(_error("strategy_runtime", exc, strategy_paths))

    backtest_finished = time.perf_counter()
    out = {
        "ok": True,
        "jesse_version": JESSE_VERSION,
        "metrics": _clean(result.get("metrics") or {}),
        "metrics_special": _specials(result.get("metrics") or {}),
        "trades": _clean(result.get("trades") or []),
    }
    if "equity_curve" in result:
        out["equity_curve"] = _clean(result["equity_curve"])
    out["timings"] = {
        "strategy_load_ms": (backtest_started - started) * 1e3,
        "jesse_backtest_ms": (backtest_finished - backtest_started) * 1e3,
        "result_convert_ms": (time.perf_counter() - backtest_finished) * 1e3,
    }
    return json.dumps(out, allow_nan=False)


_HP_TYPES = {int: "int", float: "float", bool: "bool", str: "str",
             "int": "int", "float": "float", "bool": "bool", "str": "str", "categorical": "categorical"}


def _check_hyperparameters(declared, problems):
    """Checks a hyperparameters() list the way Jesse will use it; returns it JSON-ready."""
    if not isinstance(declared, (list, tuple)):
        problems.append("hyperparameters() must return a list of dicts")
        return []
    seen, out = set(), []
    for index, hp in enumerate(declared):
        where = f"hyperparameters()[{index}]"
        if not isinstance(hp, dict):
            problems.append(f"{where} is not a dict")
            continue
        name = hp.get("name")
        if not isinstance(name, str) or not name:
            problems.append(f"{where} has no string 'name'")
            continue
        where = f"hyperparameter '{name}'"
        if name in seen:
            problems.append(f"{where} is declared twice")
        seen.add(name)
        kind = _HP_TYPES.get(hp.get("type"))
        if kind is None:
            problems.append(f"{where} has unknown type {hp.get('type')!r}; use int, float, bool, str or 'categorical'")
        default = hp.get("default")
        if "default" not in hp:
            problems.append(f"{where} has no default")
        if kind in ("int", "float"):
            low, high = hp.get("min"), hp.get("max")
            if not isinstance(low, (int, float)) or not isinstance(high, (int, float)):
                problems.append(f"{where} needs numeric min and max")
            elif not low < high:
                problems.append(f"{where} has min {low} not below max {high}")
            elif isinstance(default, (int, float)) and not low <= default <= high:
                problems.append(f"{where} default {default} is outside [{low}, {high}]")
        if kind == "categorical":
            options = hp.get("options")
            if not isinstance(options, (list, tuple)) or not options:
                problems.append(f"{where} needs a non-empty options list")
            elif default not in options:
                problems.append(f"{where} default {default!r} is not among its options")
        out.append(_clean({"name": name, "type": kind, "min": hp.get("min"), "max": hp.get("max"),
                           "step": hp.get("step"), "options": hp.get("options"), "default": default}))
    return out


def validate_strategy(request_json, candles, warmup_candles):
    """Deep validation in this runner: import in isolation, subclass and instantiate,
    hyperparameter schema, then a short smoke backtest on the synthetic candles given.
    Every problem comes back with the line in the strategy file when there is one."""
    from jesse.strategies import Strategy

    request = json.loads(request_json)
    name, path, source = request["name"], request["path"], request["source"]
    errors, warnings, hyperparameters, smoke = [], [], None, None

    def report(message, exc=None, line=None, column=None):
        if exc is not None:
            location = _error("x", exc, {path})["error"]["location"]
            if location:
                line = location["line"]
        errors.append({"line": line, "column": column, "message": _text(message)})

    classes = {}
    try:
        classes[name] = _load_strategy(name, path, source)
    except SyntaxError as exc:
        report(f"syntax error: {exc.msg}", line=exc.lineno, column=exc.offset)
    except StrategyLoadError as exc:
        report(str(exc))
    except Exception as exc:  # noqa: BLE001 - whatever importing raises is the strategy's
        if limit_kind(exc):
            raise  # a sandbox limit: the job fails with its code
        report(f"importing the strategy raised {type(exc).__name__}: {exc}", exc)
    try:
        cls = classes.get(name)
        if cls is not None and not issubclass(cls, Strategy):
            report(f"class {name} does not derive from jesse.strategies.Strategy")
            cls = None
        if cls is not None:
            try:
                cls()
            except TypeError as exc:
                report(f"{name} cannot be instantiated: {exc} (Jesse requires should_long and go_long)", exc)
            except Exception as exc:  # noqa: BLE001
                report(f"{name}() raised {type(exc).__name__}: {exc}", exc)
            problems = []
            try:
                hyperparameters = _check_hyperparameters(_call_hyperparameters(cls), problems)
            except AttributeError as exc:
                warnings.append({"line": None, "column": None, "message": _text(
                    f"hyperparameters() uses instance state ({exc}); it is exercised by the smoke backtest only")})
            except Exception as exc:  # noqa: BLE001
                report(f"hyperparameters() raised {type(exc).__name__}: {exc}", exc)
            for problem in problems:
                report(problem)
        if cls is not None and not errors:
            exchange = request["config"]["exchange"]
            route = {"exchange": exchange, "strategy": cls, "symbol": request["symbol"], "timeframe": request["timeframe"]}
            try:
                result = research.backtest(request["config"], [route], [], candles, warmup_candles=warmup_candles or None)
                smoke = {"timeframe": request["timeframe"], "trades": int(result["metrics"].get("total", 0) or 0)}
                if smoke["trades"] == 0:
                    warnings.append({"line": None, "column": None,
                                     "message": "the smoke backtest on synthetic candles opened no trade"})
            except Exception as exc:  # noqa: BLE001
                if limit_kind(exc):
                    raise
                report(f"the smoke backtest raised {type(exc).__name__}: {exc}", exc)
    finally:
        _unload(classes)
    return json.dumps({"ok": True, "valid": not errors, "errors": errors, "warnings": warnings,
                       "hyperparameters": hyperparameters, "smoke": smoke}, allow_nan=False)


def sandbox_paths():
    """The interpreter's trees (prefixes and import path, real paths included): what
    a sandboxed job must be able to read."""
    paths = set()
    for path in [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *sys.path]:
        if path and os.path.isabs(path) and os.path.exists(path):
            paths.add(path)
            paths.add(os.path.realpath(path))
    return sorted(paths)


_JOB_ENV = ("PATH", "LANG", "LANGUAGE", "TZ", "LD_LIBRARY_PATH", "PYTHONPATH", "PYTHONHOME", "PYTHONHASHSEED",
            "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
            "VECLIB_MAXIMUM_THREADS")


def enter_job_environment(job_dir):
    """In a job's process: the environment it needs and nothing else (the runner's
    own, already clean, may hold proxy settings for imports), HOME and TMPDIR in
    its scratch directory."""
    import tempfile

    for key in list(os.environ):
        if key not in _JOB_ENV and not key.startswith("LC_"):
            del os.environ[key]
    os.environ["HOME"] = os.environ["TMPDIR"] = str(job_dir)
    tempfile.tempdir = None


def warm_up():
    """Runs one short backtest of a built-in strategy so the modules and caches Jesse
    loads on first use are in the runner before it forks job processes (each job
    would load them again otherwise)."""
    _warm_backtest()
    import traceback as _  # noqa: F401 - used by error reports in jobs
    import types as _types  # noqa: F401

    # What strategies import (Jesse's own examples start with these): imported
    # once here, not again in every job's process (~20 ms for the indicators).
    import jesse.indicators as _indicators  # noqa: F401
    from jesse import utils as _utils  # noqa: F401

    # What start-up left behind stays for the runner's life: collected once,
    # then kept out of every later collection (here and in jobs' processes).
    gc.collect()
    gc.freeze()


def prefault():
    """In a job's process forked ahead of its job (worker/src/runner.rs, "spare"),
    inside the sandbox, before the job arrives: the same built-in backtest again.
    Running it writes to the pages of the runner's heap a backtest uses (reference
    counts, caches), so the kernel copies them now, while the runner would be idle,
    rather than one by one while the job runs. The job's numbers do not depend on
    it: every ``research.backtest`` starts from a reset store, as in a bare
    interpreter that runs backtest after backtest."""
    gc.freeze()
    _warm_backtest()


def candle_arrays(view, series_json):
    """The job's candles as Jesse takes them, from the memory the runner filled (a
    private mapping of it: a job's writes stay its own): for each series, its
    trading rows then its warm-up rows, float64 in Jesse's column order."""
    candles, warmup, offset = {}, {}, 0
    for series in json.loads(series_json):
        for target, rows in ((candles, series["rows"]), (warmup, series["warmup_rows"])):
            if rows:
                array = np.frombuffer(view, dtype=np.float64, count=rows * 6, offset=offset).reshape(rows, 6)
                target[series["key"]] = {"exchange": series["exchange"], "symbol": series["symbol"],
                                         "candles": array}
            offset += rows * 6 * 8
    return candles, warmup


def _warm_backtest():
    """One short backtest of a built-in strategy on synthetic candles."""
    from jesse.strategies import Strategy

    class WarmUp(Strategy):
        def should_long(self):
            return self.index % 40 == 0

        def go_long(self):
            self.buy = 0.001, self.price

        def should_cancel_entry(self):
            return True

        def update_position(self):
            if self.index % 40 == 10:
                self.liquidate()

    exchange, symbol, start = "Binance Perpetual Futures", "BTC-USDT", 1_672_531_200_000

    def candles(n, first):
        price = 40_000 + np.cumsum(np.sin(np.arange(n) / 30.0))
        return np.column_stack([first + np.arange(n) * 60_000, price, price + 1, price + 2, price - 2,
                                np.ones(n)]).astype(np.float64)

    config = {"starting_balance": 10_000, "fee": 0.001, "type": "futures", "futures_leverage": 1,
              "futures_leverage_mode": "cross", "exchange": exchange, "warm_up_candles": 10}
    key = f"{exchange}-{symbol}"
    research.backtest(
        config, [{"exchange": exchange, "strategy": WarmUp, "symbol": symbol, "timeframe": "15m"}], [],
        {key: {"exchange": exchange, "symbol": symbol, "candles": candles(2 * 1440, start)}},
        warmup_candles={key: {"exchange": exchange, "symbol": symbol,
                              "candles": candles(150 * 15, start - 150 * 15 * 60_000)}},
        generate_equity_curve=True,
    )


_drivers = {}


class EgressRefused(Exception):
    """A connection the runner's egress guard refused. Not an ``OSError``, so HTTP
    libraries neither retry it nor turn it into a generic connection error."""


class _Egress:
    """Where this runner process may open connections: during an import call, only
    to its exchange driver's endpoint (host and port; the configured override when
    there is one), directly or through the configured proxies; at any other time,
    nowhere.

    Three layers, each refusing with ``EgressRefused``:
    - HTTP: every request a ``requests`` session sends (redirects included) must go
      to the endpoint's scheme, host and port. This is what binds requests sent
      through a proxy, whose TCP peer is the proxy whatever the URL.
    - Names: ``socket.getaddrinfo`` (wrapped) and the ``gethostbyname`` /
      ``gethostbyaddr`` audit events accept only the endpoint's and the proxies'
      host names, before any DNS query. The addresses an allowed name resolved to
      are remembered; a public host name that resolves to a loopback, private or
      link-local address is refused (DNS pointed at an internal service), unless
      the endpoint itself names such an address or ``localhost``.
    - Sockets: a CPython audit hook (PEP 578; it cannot be removed) on every
      ``socket.connect``, ``sendto`` and ``sendmsg``: the peer must be one of those
      remembered addresses, so no raw IPs and no UNIX sockets.
    Strategy code never runs here; a job's process turns the guard off, because the
    kernel (an empty network namespace, Landlock) already denies it every
    connection."""

    def __init__(self):
        import socket

        import requests

        self.active = True
        self.endpoint = None
        self.allowed = frozenset()
        self.addresses = set()
        self._getaddrinfo = socket.getaddrinfo
        socket.getaddrinfo = self.getaddrinfo
        send = requests.Session.send
        guard = self

        def guarded_send(session, request, **kwargs):
            if guard.active:
                guard.check_url(request.url)
            return send(session, request, **kwargs)

        requests.Session.send = guarded_send
        sys.addaudithook(self.audit)

    @staticmethod
    def origin(url):
        """(scheme, host, port) of a URL, the scheme's port when none is given."""
        from urllib.parse import urlsplit

        parts = urlsplit(url if "://" in url else f"http://{url}")
        scheme = parts.scheme.lower()
        default = {"https": 443, "http": 80}.get(scheme, 1080 if scheme.startswith("socks") else 80)
        return (scheme, (parts.hostname or "").lower(), parts.port or default)

    @staticmethod
    def proxies():
        """(host, port) of every proxy requests would use (any spelling of *_proxy)."""
        found = set()
        for key, value in os.environ.items():
            lowered = key.lower()
            if lowered.endswith("_proxy") and lowered != "no_proxy" and value.strip():
                _, host, port = _Egress.origin(value.strip())
                found.add((host, port))
        return found

    def allow(self, endpoint):
        scheme, host, port = self.origin(endpoint)
        self.endpoint = (scheme, host, port)
        self.allowed = frozenset({(host, port)} | self.proxies())
        self.addresses = set()

    def close(self):
        self.endpoint = None
        self.allowed = frozenset()
        self.addresses = set()

    def describe(self):
        if self.endpoint is None:
            return "nothing (no import is running)"
        scheme, host, port = self.endpoint
        via = sorted(self.allowed - {(host, port)})
        return f"{scheme}://{host}:{port}" + (f" via proxy {', '.join(f'{h}:{p}' for h, p in via)}" if via else "")

    def refuse(self, what):
        raise EgressRefused(f"egress refused: {what} is not this import's exchange endpoint (allowed: {self.describe()})")

    def check_url(self, url):
        if self.origin(url) != self.endpoint:
            scheme, host, port = self.origin(url)
            self.refuse(f"{scheme}://{host}:{port}")

    @staticmethod
    def _name(host):
        return (host.decode() if isinstance(host, bytes) else str(host or "")).lower().strip("[]")

    @staticmethod
    def _internal(address):
        import ipaddress

        try:
            ip = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            return False
        return ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast or ip.is_unspecified \
            or ip.is_reserved

    def _internal_allowed(self, name):
        """The endpoint itself names an internal address (a test server, a mirror on the LAN)."""
        import ipaddress

        if self.endpoint is None or name != self.endpoint[1]:
            return True  # a proxy: the operator's own, wherever it is
        if name == "localhost":
            return True
        try:
            ipaddress.ip_address(name)
            return True
        except ValueError:
            return False

    def getaddrinfo(self, host, port, *args, **kwargs):
        if not self.active:
            return self._getaddrinfo(host, port, *args, **kwargs)
        name = self._name(host)
        number = {"http": 80, "https": 443}.get(port, port)
        try:
            number = int(number)
        except (TypeError, ValueError):
            number = None
        if (name, number) not in self.allowed:
            self.refuse(f"{name}:{port}")
        infos = self._getaddrinfo(host, port, *args, **kwargs)
        if not self._internal_allowed(name):
            internal = [info[4][0] for info in infos if self._internal(info[4][0])]
            if internal:
                self.refuse(f"{name} resolving to the internal address {internal[0]}")
        for info in infos:
            self.addresses.add((info[4][0], info[4][1]))
        return infos

    def audit(self, event, args):
        if not event.startswith("socket.") or not self.active:
            return
        if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
            address = args[1]
            if isinstance(address, tuple) and len(address) >= 2 and (address[0], address[1]) in self.addresses:
                return
            self.refuse(repr(address))
        elif event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr"):
            # Lookups that do not go through the wrapper (it is the only caller
            # allowed to resolve, and only names it already checked).
            name = self._name(args[0])
            if not any(name == host for host, _ in self.allowed):
                self.refuse(f"a lookup of {name}")


_egress = None


def _driver(exchange, endpoint):
    """Jesse's own import driver for an exchange, with its base URL replaced when
    the operator configured a mirror, proxy or test server. Kept per runner so
    its HTTP session (and connection) is reused across pages."""
    key = (exchange, endpoint)
    if key not in _drivers:
        from jesse.modes.import_candles_mode.drivers import drivers

        driver = drivers[exchange]()
        if endpoint:
            driver.endpoint = endpoint
            # Drivers mount their retry adapters for https only; a plain-http mirror gets the same.
            session = getattr(driver, "session", None)
            if session is not None and "https://" in session.adapters:
                session.mount("http://", session.adapters["https://"])
        _drivers[key] = driver
    return _drivers[key]


def _classify(exc):
    """Sorts a driver exception into what the worker can act on."""
    import re

    text = _text(str(exc))
    name = type(exc).__name__
    lowered = text.lower()
    if "egress refused" in lowered:
        return {"kind": "egress_refused", "message": text[lowered.index("egress refused"):]}
    if "429" in text or "418" in text or "ratelimit" in name.lower() or "rate limit" in lowered:
        match = re.search(r"wait (\d+(?:\.\d+)?) seconds", text)
        return {"kind": "rate_limited", "retry_after": float(match.group(1)) if match else None, "message": text}
    if name in ("SymbolNotFound", "InvalidSymbol", "ProviderSymbolNotFoundError") or "invalid symbol" in lowered \
            or "check the symbol" in lowered or "symbol invalid" in lowered:
        return {"kind": "unknown_symbol", "message": text}
    if name in ("ConnectionError", "ExchangeInMaintenance", "ProviderUnavailableError", "Timeout", "ReadTimeout",
                "ConnectTimeout", "RetryError", "MaxRetryError") or "ERROR: 5" in text:
        return {"kind": "unavailable", "message": f"{name}: {text}"}
    return {"kind": "error", "message": f"{name}: {text}"}


def fetch_candles(request_json, candles, warmup_candles):
    """One exchange call: `op` "first" (listing minute) or "page" (1m candles from `start`).
    Answers rows as [timestamp, open, close, high, low, volume]; errors are classified,
    not raised, so the worker decides about retries."""
    global _egress
    request = json.loads(request_json)
    if _egress is None:
        _egress = _Egress()
    try:
        driver = _driver(request["exchange"], request.get("endpoint"))
        _egress.allow(driver.endpoint)
        pace = {"sleep": driver.sleep_time, "page_size": driver.count}
        if request["op"] == "first":
            first = driver.get_starting_time(request["symbol"])
            return json.dumps({"ok": True, "first": None if first is None else int(first), **pace})
        rows = driver.fetch(request["symbol"], int(request["start"]), "1m") or []
        out = [[int(c["timestamp"]), float(c["open"]), float(c["close"]), float(c["high"]), float(c["low"]),
                float(c["volume"])] for c in rows]
        return json.dumps({"ok": True, "rows": out, **pace}, allow_nan=False)
    except Exception as exc:  # noqa: BLE001 - classified for the worker
        return json.dumps({"ok": True, "fetch_error": _classify(exc)})
    finally:
        _egress.close()


def _distribution(spec):
    """The Optuna distribution of one search-space entry."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if spec["type"] == "int":
        return IntDistribution(int(spec["low"]), int(spec["high"]), step=int(spec.get("step") or 1))
    if spec["type"] == "float":
        step = spec.get("step")
        return FloatDistribution(float(spec["low"]), float(spec["high"]), step=float(step) if step else None,
                                 log=bool(spec.get("log")))
    return CategoricalDistribution([tuple(c) if isinstance(c, list) else c for c in spec["choices"]])


def sample_trial(request_json, candles, warmup_candles):
    """Draws one trial's parameters with an Optuna sampler, rebuilt from scratch.

    ``request_json``: {sampler: "random"|"tpe"|"nsga2", seed, space: [{name, type, low, high, step, log,
    choices}], directions: ["maximize"|"minimize", ...], population_size, history: [{params, values|null,
    constraints|null, system_attrs}]}. The history is every trial the sampler may know (the worker gives
    exactly trials 0..k-window, in trial order), and ``seed`` is this trial's own seed, so the draw depends
    on nothing but the request: the same request gives the same parameters in any process, on any machine.
    Answers {params, system_attrs} (the sampler's per-trial state, kept with the trial and handed back in
    later histories, e.g. NSGA-II's generation).
    """
    import optuna
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    request = json.loads(request_json)
    seed = int(request["seed"])
    constrained = bool(request.get("constrained"))

    def constraints(trial):
        return trial.system_attrs.get("constraints", [0.0])

    kind = request["sampler"]
    if kind == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    elif kind == "tpe":
        sampler = optuna.samplers.TPESampler(seed=seed, constraints_func=constraints if constrained else None,
                                             multivariate=bool(request.get("multivariate", False)))
    elif kind == "nsga2":
        sampler = optuna.samplers.NSGAIISampler(seed=seed, population_size=int(request.get("population_size") or 50),
                                                constraints_func=constraints if constrained else None)
    else:
        return json.dumps({"ok": False, "error": {"kind": "runner", "type": "ValueError",
                                                  "message": f"unknown sampler {kind!r}", "location": None,
                                                  "traceback": ""}})
    distributions = {spec["name"]: _distribution(spec) for spec in request["space"]}
    study = optuna.create_study(directions=request["directions"], sampler=sampler)
    for past in request["history"]:
        params = {name: (tuple(v) if isinstance(v, list) else v) for name, v in past["params"].items()
                  if name in distributions}
        attrs = dict(past.get("system_attrs") or {})
        if past.get("constraints") is not None:
            attrs["constraints"] = past["constraints"]
        values = past.get("values")
        specials = past.get("values_special")
        if values is not None and specials:  # +/-inf objective values travel as null + "+inf"/"-inf"
            values = [float(sp) if v is None and sp in ("+inf", "-inf") else v for v, sp in zip(values, specials)]
        complete = values is not None and all(v is not None for v in values)
        study.add_trial(create_trial(
            params=params, distributions={n: distributions[n] for n in params},
            values=values if complete else None,
            state=TrialState.COMPLETE if complete else TrialState.FAIL,
            system_attrs=attrs,
        ))
    trial = study.ask(distributions)
    return json.dumps({"ok": True, "params": _clean(trial.params),
                       "system_attrs": _clean({k: v for k, v in trial.system_attrs.items() if k != "constraints"})},
                      allow_nan=False)


def significance_test(request_json, candles, warmup_candles):
    """Jesse's rule significance test (``research.rule_significance_test``: pure numpy, no Ray) on the given
    candles, with the request's strategy and hyperparameters. ``extra``: {n_simulations, random_seed,
    bootstrap_mean_block_length}. Answers Jesse's result unchanged (NaN/inf as null)."""
    request = json.loads(request_json)
    extra = request.get("extra") or {}
    sources = request["strategies"]
    strategy_paths = {spec["path"] for spec in sources.values()}
    try:
        classes = {name: _load_strategy(name, spec["path"], spec["source"]) for name, spec in sources.items()}
    except Exception as exc:  # noqa: BLE001 - any load failure is the strategy's
        return json.dumps(_error("strategy_load", exc, strategy_paths))
    try:
        try:
            hyperparameters = _merge_hyperparameters(classes, request.get("hyperparameters"))
        except HyperparameterError as exc:
            return json.dumps(_error("invalid_hyperparameters", exc, strategy_paths))
        exchange = request["config"]["exchange"]
        routes = [{"exchange": exchange, "strategy": classes[r["strategy"]], "symbol": r["symbol"],
                   "timeframe": r["timeframe"]} for r in request["routes"]]
        data_routes = [{"exchange": exchange, "symbol": r["symbol"], "timeframe": r["timeframe"]}
                       for r in request["data_routes"]]
        try:
            result = research.rule_significance_test(
                request["config"], routes, data_routes, candles, warmup_candles=warmup_candles or None,
                hyperparameters=hyperparameters, n_simulations=int(extra["n_simulations"]),
                random_seed=int(extra["random_seed"]), progress_bar=False,
                bootstrap_mean_block_length=int(extra["bootstrap_mean_block_length"]),
            )
        except Exception as exc:  # noqa: BLE001 - reported to the user with its location
            return json.dumps(_error("strategy_runtime", exc, strategy_paths))
        return json.dumps({"ok": True, "jesse_version": JESSE_VERSION, **_clean(result)}, allow_nan=False)
    finally:
        _unload(classes)


KALMAN_DELTA = 1e-4


def kalman_hedge(a, b, delta=KALMAN_DELTA):
    """Kalman-filtered hedge ratio of a on b: a_t = alpha_t + beta_t * b_t + e_t, e_t ~ N(0, Ve), the state
    x_t = (alpha_t, beta_t) a random walk x_t = x_(t-1) + w_t, w_t ~ N(0, Q). docs/PAIRS.md has the equations.

    Warm-up: the first W = max(10, n // 4) bars. Their OLS fit of a on [1, b] gives the prior x = (alpha, beta),
    Ve = its residual variance (ddof 2) and P = Ve (X'X)^-1 (the OLS covariance); Q = delta / (1 - delta) * W * P
    (one bar's worth of the warm-up's information: the filter does not depend on the prices' units). Each bar
    t = W .. n-1: P = P + Q; F = [1, b_t]; S = F P F' + Ve; K = P F' / S; x = x + K (a_t - F x); P = P - K F P.
    It runs on b standardized by the warm-up's mean and std (an exact change of coordinates, there X'X = W I) so
    raw price levels lose no precision. Answers the filtered alpha and beta of bars W .. n-1 with the parameters,
    or None with fewer than 11 bars, a constant b or an exact fit in the warm-up.
    The same function is in strategies/PairsTrading/__init__.py and worker/python/jesse_mcp_runner.py.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    n = len(a)
    w = max(10, n // 4)
    if n <= w:
        return None
    mean, std = float(b[:w].mean()), float(b[:w].std())
    if not std > 0:
        return None
    z = (b - mean) / std
    x = np.array([a[:w].mean(), (a[:w] - a[:w].mean()) @ z[:w] / w])
    residuals = a[:w] - x[0] - x[1] * z[:w]
    ve = float(residuals @ residuals) / (w - 2)
    if not ve > 0:
        return None
    p = ve / w * np.eye(2)
    q = delta / (1.0 - delta) * ve * np.eye(2)
    to_raw = np.array([[1.0, -mean / std], [0.0, 1.0 / std]])
    prior_state, prior_cov = to_raw @ x, to_raw @ p @ to_raw.T
    alphas, betas = np.empty(n - w), np.empty(n - w)
    for t in range(w, n):
        f = np.array([1.0, z[t]])
        p = p + q
        s = f @ p @ f + ve
        k = p @ f / s
        x = x + k * (a[t] - f @ x)
        p = p - np.outer(k, f @ p)
        alphas[t - w], betas[t - w] = x[0] - x[1] * mean / std, x[1] / std
    return {"delta": delta, "warmup_bars": w, "observation_variance": ve, "prior_state": prior_state,
            "prior_cov": prior_cov, "state_cov": to_raw @ q @ to_raw.T, "alpha": alphas, "beta": betas}


def _pairs_one(a, b, kalman, delta):
    import statsmodels.api as sm
    from statsmodels.tsa.stattools import coint
    from statsmodels.tsa.vector_ar.vecm import coint_johansen

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    returns_a = np.diff(a) / a[:-1]
    returns_b = np.diff(b) / b[:-1]
    out = {"correlation_of_returns": np.corrcoef(returns_a, returns_b)[0, 1]}
    eg = {}
    for name, (y, x) in (("a_on_b", (a, b)), ("b_on_a", (b, a))):
        t_stat, p_value, crit = coint(y, x)
        eg[name] = {"t_stat": t_stat, "p_value": p_value,
                    "crit_values": {"1%": crit[0], "5%": crit[1], "10%": crit[2]}}
    out["engle_granger"] = eg
    johansen = coint_johansen(np.column_stack([a, b]), 0, 1)
    rank = 0
    while rank < 2 and johansen.lr1[rank] > johansen.cvt[rank, 1]:
        rank += 1
    out["johansen"] = {
        "det_order": 0, "k_ar_diff": 1,
        "trace_stat": johansen.lr1, "trace_crit_90_95_99": johansen.cvt,
        "max_eig_stat": johansen.lr2, "max_eig_crit_90_95_99": johansen.cvm,
        "eigenvalues": johansen.eig, "rank_95": rank,
    }
    ols = sm.OLS(a, sm.add_constant(b)).fit()
    intercept, beta = ols.params[0], ols.params[1]
    out["ols"] = {"hedge_ratio": beta, "intercept": intercept, "r_squared": ols.rsquared}
    spread = a - intercept - beta * b
    ou = sm.OLS(np.diff(spread), sm.add_constant(spread[:-1])).fit()
    lam = ou.params[1]
    out["ou_lambda"] = lam
    out["half_life_bars"] = -math.log(2) / lam if lam < 0 else None
    out["spread_zscore"] = (spread[-1] - spread.mean()) / spread.std()
    out["spread_mean"] = spread.mean()
    out["spread_std"] = spread.std()
    if kalman:
        filtered = kalman_hedge(a, b, delta)
        if filtered is None:
            out["kalman"] = {"delta": delta, "error": "no Kalman filter: fewer than 11 bars, a constant b or an "
                                                      "exact fit in the warm-up"}
        else:
            w, alphas, betas = filtered["warmup_bars"], filtered["alpha"], filtered["beta"]
            points = np.unique(np.linspace(w, len(a) - 1, min(len(betas), 200)).round().astype(int))
            out["kalman"] = {
                "delta": delta, "observation_variance": filtered["observation_variance"], "warmup_bars": w,
                "prior": {"intercept": filtered["prior_state"][0], "hedge_ratio": filtered["prior_state"][1],
                          "covariance": filtered["prior_cov"]},
                "state_cov": filtered["state_cov"],
                "hedge_ratio_last": betas[-1], "intercept_last": alphas[-1],
                "hedge_ratio_mean": betas.mean(), "hedge_ratio_std": betas.std(),
                "hedge_ratio_min": betas.min(), "hedge_ratio_max": betas.max(),
                "path": [[int(i), betas[i - w]] for i in points],
            }
    return out


def pairs_stats(request_json, candles, warmup_candles):
    """Cointegration statistics of price pairs (statsmodels 0.14.6 as pinned).

    ``request_json``: {pairs: [{a: [closes], b: [closes]}], kalman: bool, kalman_delta: float}: each pair's
    closes aligned bar by bar. Per pair: correlation of simple returns; Engle-Granger ``coint`` of a on b and
    of b on a (defaults: constant, AIC lag choice); Johansen ``coint_johansen(det_order=0, k_ar_diff=1)``;
    OLS hedge ratio of a on b with an intercept; the OU half-life from OLS of the spread's change on its
    lagged level; the last spread's z-score (population std); optionally the Kalman-filtered hedge ratio
    (``kalman_hedge``: OLS prior from the warm-up bars, then filtered; its path starts after the warm-up).
    A pair whose statistics raise answers {error}. NaN and inf are null."""
    import warnings

    import statsmodels

    request = json.loads(request_json)
    kalman = bool(request.get("kalman"))
    delta = float(request.get("kalman_delta") or KALMAN_DELTA)
    results = []
    for pair in request["pairs"]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                results.append(_pairs_one(pair["a"], pair["b"], kalman, delta))
        except Exception as exc:  # noqa: BLE001 - reported per pair (e.g. a constant series)
            results.append({"error": _text(f"{type(exc).__name__}: {exc}")})
    return json.dumps({"ok": True, "statsmodels_version": statsmodels.__version__,
                       "numpy_version": np.__version__, "results": _clean(results)}, allow_nan=False)
