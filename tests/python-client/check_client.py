"""The notebook client (clients/python, package jesse_mcp_client) against a real
service, each method against the service's own REST answer. Run by
tests/tests/python_client.rs with JESSE_MCP_CLIENT_CONFIG = {"url", "backtest"}
and clients/python on PYTHONPATH; prints "ok: ..." at the end. Plain asserts:
no test runner needed."""

import io
import json
import os
import sys

import httpx
import pandas as pd
from pandas.testing import assert_frame_equal, assert_series_equal

import jesse_mcp_client as jmc
from jesse_mcp_client import results

config = json.loads(os.environ["JESSE_MCP_CLIENT_CONFIG"])
base_url = config["url"]
spec = config["backtest"]
raw = httpx.Client(base_url=base_url, timeout=60)
client = jmc.Client(base_url)
checked = []


def read_csv(text):
    """A CSV export as pandas reads it, floats parsed exactly (pandas 3's default)."""
    exact = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
    return pd.read_csv(io.StringIO(text), **exact)


def check(name):
    checked.append(name)
    print(f"checked: {name}", flush=True)


# Retries, against a server of our own that answers 503 to the first two
# requests of each path: GETs and submits are retried (a submit with the same
# Idempotency-Key each time), a cancel is not.
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

seen = []


class Flaky(BaseHTTPRequestHandler):
    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        seen.append((self.command, self.path.split("?")[0], self.headers.get("Idempotency-Key")))
        tries = sum(1 for s in seen if s[:2] == seen[-1][:2])
        if tries <= 2:
            status, body = 503, {"error": {"code": "unavailable", "message": "try again", "details": None}}
        elif self.command == "POST":
            status, body = 202, {"job_id": "01JFLAKY", "kind": "backtest", "status": "queued"}
        else:
            status, body = 200, {"status": "ok"}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
threading.Thread(target=server.serve_forever, daemon=True).start()
flaky = jmc.Client(f"http://127.0.0.1:{server.server_port}", backoff=0.01)
assert flaky.health() == {"status": "ok"}
assert [s[0] for s in seen] == ["GET"] * 3
submitted = flaky.backtest(strategy="SmaCross")
keys = [s[2] for s in seen if s[0] == "POST"]
assert submitted.id == "01JFLAKY" and len(keys) == 3 and keys[0] and len(set(keys)) == 1, keys
try:
    jmc.Job(flaky, "01JFLAKY").cancel()
    raise AssertionError("a 503 cancel did not raise")
except jmc.ServiceUnavailable as e:
    assert e.code == "unavailable" and e.status == 503
assert sum(1 for s in seen if s[1].endswith("/cancel")) == 1, seen
server.shutdown()
server.server_close()
refused = jmc.Client(f"http://127.0.0.1:{server.server_port}", retries=2, backoff=0.01)
try:
    refused.health()
    raise AssertionError("a refused connection did not raise")
except httpx.TransportError:
    pass
check("retries: GET and keyed submits retried on 503 (one key), cancel not")

# Drift: every route the client calls is in the service's OpenAPI document.
paths = client.openapi()["paths"]
missing = [
    f"{method} {path} ({name})"
    for name, (method, path) in jmc.ROUTES.items()
    if method.lower() not in paths.get(path, {})
]
assert not missing, f"routes the client uses that GET /v1/openapi.json lacks: {missing}"
assert set(jmc.SUBMITS) <= set(jmc.ROUTES)
for name in jmc.SUBMITS:
    assert callable(getattr(client, name)), name
check(f"drift: {len(jmc.ROUTES)} routes in the OpenAPI document")

# A backtest; its rows read a few at a time so paging is exercised.
results.PAGE = 3
job = client.backtest(**spec)
assert isinstance(job, jmc.Job) and job.kind == "backtest" and job.status == "queued", job
job.wait(timeout=300)
assert job.status == "succeeded"
bt = job.result()
assert isinstance(bt, jmc.BacktestResult)
body = raw.get(f"/v1/jobs/{job.id}/result").json()
assert_series_equal(bt.metrics, pd.Series(body["metrics"], dtype="object").infer_objects())

csv = read_csv(raw.get(f"/v1/jobs/{job.id}/trades.csv").text)
assert len(csv) > results.PAGE, f"the backtest should have more trades than a page: {len(csv)}"
trades = bt.trades
assert len(trades) == len(csv) == body["trades_total"], (len(trades), len(csv))
assert str(trades["opened_at"].dtype) == "datetime64[ns, UTC]", trades.dtypes
assert str(trades["closed_at"].dtype) == "datetime64[ns, UTC]"
expected = csv.drop(columns=["opened_at_iso", "closed_at_iso"])
for column in ("opened_at", "closed_at"):
    expected[column] = pd.to_datetime(expected[column], unit="ms", utc=True).astype("datetime64[ns, UTC]")
    # The ISO column names the same instant.
    assert (pd.to_datetime(csv[f"{column}_iso"], utc=True) == expected[column]).all()
assert_frame_equal(trades[list(expected.columns)].reset_index(drop=True), expected, check_dtype=False, check_exact=True)
check(f"backtest trades: {len(trades)} rows equal trades.csv row for row")

equity_csv = read_csv(raw.get(f"/v1/jobs/{job.id}/equity.csv").text)
portfolio = equity_csv[equity_csv["series"] == "Portfolio"]
equity = bt.equity
assert isinstance(equity.index, pd.DatetimeIndex) and str(equity.index.tz) == "UTC"
assert list(equity["Portfolio"]) == list(portfolio["value"])
assert list(equity.index) == list(pd.to_datetime(portfolio["time"], unit="ms", utc=True))
check(f"equity: {len(equity)} points equal equity.csv")

png = job.chart("equity", width=400, height=300)
assert png.startswith(b"\x89PNG") and png._repr_png_() == bytes(png)
logs = job.logs()
assert isinstance(logs, pd.DataFrame)
assert isinstance(bt.analysis(), dict)
check("chart PNG, logs, analysis")

# Idempotency: a retried submit with the same key is the same job; the same key
# on another request is a Conflict.
key = f"pyclient-{job.id}"
first = client.backtest(idempotency_key=key, **spec)
again = client.backtest(idempotency_key=key, **spec)
assert first.id == again.id, (first, again)
try:
    client.backtest(idempotency_key=key, **{**spec, "hyperparameters": {"fast": 9}})
    raise AssertionError("a reused key with another request did not fail")
except jmc.Conflict as e:
    assert e.status == 409 and e.code == "idempotency_key_reused", e
check("idempotency key: same job; reused with another body -> Conflict")

# Errors: the service's envelope, typed.
bad = {**spec, "timeframe": "7x"}
answer = raw.post("/v1/backtests", json=bad)
assert answer.status_code == 422, answer.text
try:
    client.backtest(**bad)
    raise AssertionError("a bad timeframe did not raise")
except jmc.InvalidRequest as e:
    envelope = answer.json()["error"]
    assert (e.status, e.code, e.message, e.details) == (422, envelope["code"], envelope["message"], envelope.get("details")), e
    code = e.code
check(f"422 -> InvalidRequest {code}")
try:
    client.job("01JNOSUCHJOB0000000000000")
    raise AssertionError("an unknown job did not raise")
except jmc.NotFound as e:
    assert e.code == "job_not_found", e
try:
    jmc.Job(client, first.id, kind="backtest").chart("nope")
    raise AssertionError("an unknown chart did not raise")
except jmc.NotFound as e:
    assert e.code == "unknown_chart", e
check("404 -> NotFound")

# A batch: its leaderboard equals the JSON, and its children are its jobs.
batch = client.batch(base=spec, grid={"hyperparameters": {"fast": [8, 12, 16]}}, rank_by="sharpe_ratio")
assert batch.kind == "backtest_batch"
batch.wait(timeout=300, progress=True)
board = batch.result().leaderboard
rows = raw.get(f"/v1/jobs/{batch.id}/result").json()["leaderboard"]
assert_frame_equal(board, pd.json_normalize(rows, sep="."), check_exact=True)
assert len(board) == 3
children = batch.children()
assert len(children) == 3 and all(c.kind == "backtest" and c.status == "succeeded" for c in children), children
check(f"batch leaderboard ({len(board)} rows) equals the JSON; {len(children)} children")

# Monte Carlo on the backtest's trades: percentiles and scenarios as the JSON has them.
mc_job = client.monte_carlo(mode="trades", source=job.id, scenarios=50, seed=7)
assert mc_job.kind == "monte_carlo", mc_job
mc = mc_job.wait(timeout=300, progress=False).result()
assert isinstance(mc, jmc.MonteCarloResult)
mc_json = raw.get(f"/v1/jobs/{mc_job.id}/result").json()
for metric, stats in mc_json["metrics"].items():
    for p, value in stats["percentiles"].items():
        assert mc.percentiles.loc[metric, int(p)] == value, (metric, p)
    assert mc.metrics.loc[metric, "mean"] == stats["mean"]
assert list(mc.percentiles.columns) == sorted(int(p) for p in stats["percentiles"])
for metric, values in mc_json["distribution"].items():
    assert list(mc.scenarios[metric]) == values, metric
assert len(mc.scenarios) == 50
assert mc_job.chart("fan", width=400, height=300).startswith(b"\x89PNG")
check(f"monte carlo: percentiles of {len(mc.percentiles)} metrics, {len(mc.scenarios)} scenarios equal the JSON")

# A small study: its trials (read two a page) and leaderboard equal the JSON.
results.PAGE = 2
study_job = client.optimize(
    **{k: spec[k] for k in ("strategy", "exchange", "symbol", "timeframe")},
    start_date=spec["start_date"], end_date=spec["end_date"], sampler="random", trials=3, seed=3,
)
assert study_job.kind == "optimization", study_job
study = study_job.wait(timeout=300, progress=False).result()
assert isinstance(study, jmc.StudyResult)
study_json = raw.get(f"/v1/jobs/{study_job.id}/result", params={"include_trades": "true"}).json()
assert study_json["trials_total"] == 3
assert_frame_equal(study.trials, pd.json_normalize(study_json["trials"], sep="."), check_exact=True)
assert_frame_equal(study.leaderboard, pd.json_normalize(study_json["leaderboard"], sep="."), check_exact=True)
assert study.overfitting == study_json["overfitting"]
assert len(study_job.children()) == 3
check("study: trials (3, in pages of 2), leaderboard, overfitting equal the JSON")

# A one-step pipeline: its report is the Markdown GET /v1/jobs/{id}/report serves.
route = {k: spec[k] for k in ("strategy", "exchange", "symbol", "timeframe")}
pipe_job = client.pipeline(name="pyclient", steps=[{"id": "bt", "kind": "backtest", "input": spec}])
pipe = pipe_job.wait(timeout=300, progress=False).result()
assert isinstance(pipe, jmc.PipelineResult)
assert pipe.report == raw.get(f"/v1/jobs/{pipe_job.id}/report").text and pipe.report.startswith("# pyclient")
assert pipe.report._repr_markdown_() == str(pipe.report)
pipe_json = raw.get(f"/v1/jobs/{pipe_job.id}/result").json()
assert_frame_equal(pipe.steps, pd.json_normalize(pipe_json["steps"], sep="."), check_exact=True)
assert list(pipe.steps["id"]) == ["bt"] and pipe.verdict == pipe_json["verdict"]
check("pipeline: report (Markdown) and steps equal the REST answers")

# A walk-forward of two windows: windows and the stitched curve as the JSON has them.
wf_job = client.walk_forward(**route, start_date=spec["start_date"], end_date=spec["end_date"], train_days=10,
                             test_days=5, trials=2, sampler="random", seed=5)
wf = wf_job.wait(timeout=300, progress=False).result()
assert isinstance(wf, jmc.WalkForwardResult)
wf_json = raw.get(f"/v1/jobs/{wf_job.id}/result").json()
assert_frame_equal(wf.windows, pd.json_normalize(wf_json["windows"], sep="."), check_exact=True)
assert len(wf.windows) >= 2
points = wf_json["stitched"]["equity_curve"]
assert list(wf.stitched["equity"]) == [p["equity"] for p in points]
assert list(wf.stitched.index) == list(pd.to_datetime([p["time"] for p in points], unit="ms", utc=True))
check(f"walk-forward: {len(wf.windows)} windows and {len(points)} stitched days equal the JSON")

# Cancel: a long backtest, cancelled before it ends, fails wait() with JobCancelled.
long = client.backtest(**{**spec, "timeframe": "1m"})
long.cancel()
try:
    long.wait(timeout=120, progress=False)
    raise AssertionError(f"a cancelled job ended {long.status}")
except jmc.JobCancelled as e:
    assert long.status == "cancelled"
check("cancel -> JobCancelled")

# A strategy that raises: wait() raises JobFailed with the job's error envelope.
if config.get("failing_strategy"):
    failing = client.backtest(**{**spec, "strategy": config["failing_strategy"]})
    try:
        failing.wait(timeout=300, progress=False)
        raise AssertionError(f"a raising strategy ended {failing.status}")
    except jmc.JobFailed as e:
        envelope = raw.get(f"/v1/jobs/{failing.id}").json()["error"]
        assert not isinstance(e, jmc.JobCancelled)
        assert (e.code, e.message, e.details) == (envelope["code"], envelope["message"], envelope.get("details")), e
        assert e.job.status == "failed"
        failed_code = e.code
    check(f"failed job -> JobFailed {failed_code}")

# Candles: a DataFrame uploaded as CSV, listed, exported back, deleted.
minutes = pd.date_range("2024-03-01", periods=5, freq="min", tz="UTC")
upload = pd.DataFrame({"timestamp": minutes, "open": [10.0, 11, 12, 13, 14], "high": [11.0, 12, 13, 14, 15],
                       "low": [9.0, 10, 11, 12, 13], "close": [10.5, 11.5, 12.5, 13.5, 14.5], "volume": [1.0, 2, 3, 4, 5]})
counts = client.upload_csv(spec["exchange"], "PYC-USDT", upload)
assert counts["inserted"] == 5, counts
series = client.candles()
assert "PYC-USDT" in set(series["symbol"]), series
back = client.export_candles(spec["exchange"], "PYC-USDT", "2024-03-01", "2024-03-02")
assert list(back.index) == list(minutes), back.index
assert_frame_equal(back.reset_index(drop=True)[["open", "high", "low", "close", "volume"]], upload.drop(columns="timestamp"), check_dtype=False)
gaps = client.candle_gaps(spec["exchange"], "PYC-USDT", "2024-03-01", "2024-03-02")
assert "missing_minutes" in gaps, gaps
client.delete_candles(spec["exchange"], "PYC-USDT")
assert "PYC-USDT" not in set(client.candles()["symbol"])
try:
    client.upload_csv(spec["exchange"], "PYC-USDT", "when,price\n1,2\n")
    raise AssertionError("a CSV without the candle header was accepted")
except jmc.InvalidRequest as e:
    assert e.status == 422 and e.code == "invalid_csv", e
check("candles: DataFrame upload, list, export, gaps, delete")

# Strategies: list, get, validate, put, delete.
names = [s["name"] for s in client.strategies()]
assert spec["strategy"] in names, names
source = client.strategy(spec["strategy"])
assert "code" in source and source["sha256"]
report = client.validate_strategy(source["code"])
assert report["valid"] is True, report
try:
    client.put_strategy("PyClientCopy", "this is not python")
    raise AssertionError("a broken strategy was accepted")
except jmc.InvalidRequest as e:
    assert e.code == "invalid_strategy", e
written = client.put_strategy("PyClientCopy", source["code"].replace(spec["strategy"], "PyClientCopy"))
assert written["created"] is True, written
try:
    client.delete_strategy("PyClientCopy", if_match="0" * 64)
    raise AssertionError("a stale If-Match was accepted")
except jmc.PreconditionFailed as e:
    assert e.code == "precondition_failed"
client.delete_strategy("PyClientCopy", if_match=written["sha256"])
try:
    client.strategy("PyClientCopy")
    raise AssertionError("a deleted strategy is still there")
except jmc.NotFound:
    pass
check("strategies list/get/validate/put/delete")

print(f"ok: {len(checked)} checks", flush=True)
