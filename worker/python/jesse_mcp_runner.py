"""The worker's only contract with Jesse.

A runner process imports this module once (which imports ``jesse.research``) and
then calls ``run_backtest`` for one job at a time. Rust hands candles over as
float64 numpy arrays in Jesse's column order and gets a JSON string back, in
which NaN and +/-inf are already replaced by null (JSON cannot carry them).

Strategies are compiled from the exact source text the worker hashed, under
their real file path, so a result's provenance hash always matches the code
that ran and tracebacks point at the user's file and line.
"""

import importlib.util
import json
import math
import os
import sys
import time
import traceback

import numpy as np

import jesse.research as research
import jesse.version

JESSE_VERSION = jesse.version.__version__

_module_counter = 0


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


def _text(value):
    """A string JSON can carry: lone surrogates (from undecodable bytes) become U+FFFD."""
    return value.encode("utf-8", "replace").decode("utf-8") if isinstance(value, str) else value


def _error(kind, exc, strategy_paths):
    """Describes an exception with the innermost line that belongs to a strategy file."""
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
                report(f"the smoke backtest raised {type(exc).__name__}: {exc}", exc)
    finally:
        _unload(classes)
    return json.dumps({"ok": True, "valid": not errors, "errors": errors, "warnings": warnings,
                       "hyperparameters": hyperparameters, "smoke": smoke}, allow_nan=False)


_drivers = {}


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
    request = json.loads(request_json)
    try:
        driver = _driver(request["exchange"], request.get("endpoint"))
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
