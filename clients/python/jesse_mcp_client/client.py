"""The HTTP client: one method per service call, every route from ``_routes``."""

from __future__ import annotations

import io
import os
import time
import uuid
from typing import Any, Iterator
from urllib.parse import quote

import httpx
import pandas as pd

from ._routes import ROUTES
from .errors import APIError, error_class
from .job import Job

#: Statuses worth retrying (the service or a proxy in front of it is briefly down).
_RETRY_STATUSES = {502, 503, 504}


class Client:
    """A jesse-mcp service.

    >>> c = Client("http://127.0.0.1:8080")
    >>> job = c.backtest(strategy="SmaCross", exchange="Binance Perpetual Futures",
    ...                  symbol="BTC-USDT", timeframe="1h",
    ...                  start_date="2023-03-01", end_date="2023-04-01")
    >>> result = job.wait().result()
    >>> result.trades.head()

    ``token`` (or ``$JESSE_MCP_TOKEN``) is sent as a bearer token. Reads (GET)
    and submits are retried on network errors and 502/503/504 with exponential
    backoff, up to ``retries`` times; a submit carries an ``Idempotency-Key``,
    so a retried submit returns the job the first attempt created. Other
    writes (cancel, strategy edits, CSV uploads) are never retried.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8080",
        token: str | None = None,
        *,
        timeout: float = 60.0,
        retries: int = 4,
        backoff: float = 0.25,
        transport: httpx.BaseTransport | None = None,
    ):
        token = token if token is not None else os.environ.get("JESSE_MCP_TOKEN") or None
        headers = {"User-Agent": "jesse-mcp-client/0.1.0"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.base_url!r})"

    # -- transport -----------------------------------------------------------

    def _url(self, route: str, **path: str) -> tuple[str, str]:
        method, template = ROUTES[route]
        for name, value in path.items():
            template = template.replace("{" + name + "}", quote(str(value), safe=""))
        return method, template

    def request(
        self,
        route: str,
        *,
        path: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        retry: bool | None = None,
    ) -> httpx.Response:
        """Calls the route named ``route`` of the routes table; raises the
        :mod:`errors` class of an error answer. ``retry`` defaults to True for GET."""
        method, url = self._url(route, **(path or {}))
        if retry is None:
            retry = method == "GET"
        if params:
            params = {k: _query_value(v) for k, v in params.items() if v is not None}
        attempt = 0
        while True:
            try:
                response = self._http.request(method, url, params=params, json=json, content=content, headers=headers)
            except httpx.TransportError:
                if not retry or attempt >= self.retries:
                    raise
            else:
                if not (retry and response.status_code in _RETRY_STATUSES and attempt < self.retries):
                    break
            time.sleep(min(self.backoff * 2**attempt, 8.0))
            attempt += 1
        if response.status_code >= 400:
            raise _api_error(response, method, url)
        return response

    def _json(self, route: str, **kwargs: Any) -> Any:
        return self.request(route, **kwargs).json()

    # -- submits -------------------------------------------------------------

    def submit(self, route: str, body: dict[str, Any], *, idempotency_key: str | None = None) -> Job:
        """POSTs a job request to a submit route and returns its :class:`Job`.
        A fresh ``Idempotency-Key`` is made when none is given; retries reuse it."""
        key = idempotency_key or uuid.uuid4().hex
        accepted = self._json(route, json=body, headers={"Idempotency-Key": key}, retry=True)
        return Job(self, accepted["job_id"], kind=accepted.get("kind"), status=accepted.get("status"), data=accepted)

    def backtest(self, *, idempotency_key: str | None = None, **fields: Any) -> Job:
        """``POST /v1/backtests``: ``strategy, exchange, symbol, timeframe, start_date, end_date``,
        and the service's optional fields (``hyperparameters``, ``include_trades``, ``tags``...)."""
        return self.submit("backtest", fields, idempotency_key=idempotency_key)

    def batch(self, *, idempotency_key: str | None = None, **fields: Any) -> Job:
        """``POST /v1/backtests/batch``: ``base, grid?, variants?, rank_by?, order?, max_parallel?``."""
        return self.submit("batch", fields, idempotency_key=idempotency_key)

    def optimize(self, *, idempotency_key: str | None = None, **fields: Any) -> Job:
        """``POST /v1/optimizations``: a hyperparameter study (kind ``optimization``)."""
        return self.submit("optimize", fields, idempotency_key=idempotency_key)

    def walk_forward(self, *, idempotency_key: str | None = None, **fields: Any) -> Job:
        """``POST /v1/walk-forward``."""
        return self.submit("walk_forward", fields, idempotency_key=idempotency_key)

    def monte_carlo(self, *, idempotency_key: str | None = None, **fields: Any) -> Job:
        """``POST /v1/monte-carlo``: ``mode, source, scenarios?, seed?, ...``."""
        return self.submit("monte_carlo", fields, idempotency_key=idempotency_key)

    def significance_test(self, *, idempotency_key: str | None = None, **fields: Any) -> Job:
        """``POST /v1/significance-tests``: the backtest fields + ``n_simulations?, seed?, bootstrap_mean_block_length?``."""
        return self.submit("significance_test", fields, idempotency_key=idempotency_key)

    def pairs_screen(self, *, idempotency_key: str | None = None, **fields: Any) -> Job:
        """``POST /v1/pairs/screen``."""
        return self.submit("pairs_screen", fields, idempotency_key=idempotency_key)

    def pairs_backtest(self, *, idempotency_key: str | None = None, **fields: Any) -> Job:
        """``POST /v1/pairs/backtest``."""
        return self.submit("pairs_backtest", fields, idempotency_key=idempotency_key)

    def pipeline(self, *, idempotency_key: str | None = None, **fields: Any) -> Job:
        """``POST /v1/pipelines``."""
        return self.submit("pipeline", fields, idempotency_key=idempotency_key)

    def candle_import(self, *, idempotency_key: str | None = None, **fields: Any) -> Job:
        """``POST /v1/candles/imports``: ``exchange, symbol, start_date, end_date?``."""
        return self.submit("candle_import", fields, idempotency_key=idempotency_key)

    # -- jobs ----------------------------------------------------------------

    def job(self, job_id: str) -> Job:
        """The job ``job_id`` as it is now."""
        data = self._json("get_job", path={"id": job_id})
        return Job(self, job_id, kind=data.get("kind"), status=data.get("status"), data=data)

    def jobs(self, *, limit: int | None = None, **filters: Any) -> list[Job]:
        """``GET /v1/jobs`` newest first (``kind``, ``status``, ``strategy``,
        ``symbol``, ``tag`` filters), every page up to ``limit`` jobs."""
        out: list[Job] = []
        for data in self._pages("list_jobs", {}, filters):
            out.append(Job(self, data["job_id"], kind=data.get("kind"), status=data.get("status"), data=data))
            if limit is not None and len(out) >= limit:
                break
        return out

    def _pages(self, route: str, path: dict[str, str], params: dict[str, Any]) -> Iterator[dict]:
        cursor = None
        while True:
            page = self._json(route, path=path, params={**params, "cursor": cursor})
            yield from page["jobs"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def compare(self, job_ids: list[str]) -> dict:
        """``POST /v1/compare``: metrics, equity curves and correlations of 2..20 backtests."""
        return self._json("compare", json={"job_ids": list(job_ids)}, retry=True)

    def pipeline_templates(self) -> Any:
        return self._json("pipeline_templates")

    def health(self) -> dict:
        return self._json("health")

    def openapi(self) -> dict:
        """The service's OpenAPI 3.1 document."""
        return self._json("openapi")

    # -- candles -------------------------------------------------------------

    def upload_csv(self, exchange: str, symbol: str, data: "str | bytes | os.PathLike | pd.DataFrame") -> dict:
        """``POST /v1/candles/csv``: 1m candles ``timestamp,open,high,low,close,volume``
        (ms or ISO-8601 UTC) from CSV text/bytes, a file path or a DataFrame with those
        columns. An idempotent upsert; answers the counts."""
        if isinstance(data, pd.DataFrame):
            frame = data.reset_index() if "timestamp" not in data.columns else data
            frame = frame[["timestamp", "open", "high", "low", "close", "volume"]].copy()
            if pd.api.types.is_datetime64_any_dtype(frame["timestamp"]):
                ts = frame["timestamp"]
                ts = ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")
                frame["timestamp"] = ts.dt.strftime("%Y-%m-%dT%H:%M:%SZ")
            body = frame.to_csv(index=False).encode()
        elif isinstance(data, bytes):
            body = data
        elif isinstance(data, str) and "\n" in data:
            body = data.encode()
        else:
            with open(data, "rb") as f:
                body = f.read()
        return self._json(
            "upload_csv",
            params={"exchange": exchange, "symbol": symbol},
            content=body,
            headers={"Content-Type": "text/csv"},
            retry=False,
        )

    def candles(self) -> pd.DataFrame:
        """``GET /v1/candles``: the stored series, one row each."""
        answer = self._json("list_candles")
        rows = answer.get("series", answer) if isinstance(answer, dict) else answer
        return pd.DataFrame(rows)

    def candle_gaps(self, exchange: str, symbol: str, start_date: str | None = None, end_date: str | None = None) -> dict:
        return self._json(
            "candle_gaps",
            path={"exchange": exchange, "symbol": symbol},
            params={"start_date": start_date, "end_date": end_date},
        )

    def export_candles(self, exchange: str, symbol: str, start_date: str | None = None, end_date: str | None = None) -> pd.DataFrame:
        """The stored 1m candles of a range, indexed by UTC time."""
        text = self.request(
            "export_candles",
            path={"exchange": exchange, "symbol": symbol},
            params={"start_date": start_date, "end_date": end_date},
        ).text
        frame = pd.read_csv(io.StringIO(text))
        if "timestamp" in frame.columns:
            frame["timestamp"] = _to_utc(frame["timestamp"])
            frame = frame.set_index("timestamp")
        return frame

    def delete_candles(self, exchange: str, symbol: str) -> dict:
        return self._json("delete_candles", path={"exchange": exchange, "symbol": symbol})

    # -- strategies ----------------------------------------------------------

    def strategies(self) -> list[dict]:
        """``GET /v1/strategies``: every strategy with its hyperparameters and validity."""
        return self._json("list_strategies")["strategies"]

    def strategy(self, name: str) -> dict:
        """``GET /v1/strategies/{name}``: its ``code`` and metadata (``sha256`` is the ETag)."""
        return self._json("get_strategy", path={"name": name})

    def put_strategy(self, name: str, code: str, *, if_match: str | None = None) -> dict:
        """``PUT /v1/strategies/{name}``: create or replace (starts a deep validation job);
        ``if_match`` (a sha256 you read) makes a concurrent edit fail with PreconditionFailed."""
        headers = {"If-Match": if_match} if if_match else None
        return self._json("put_strategy", path={"name": name}, json={"code": code}, headers=headers, retry=False)

    def delete_strategy(self, name: str, *, if_match: str | None = None) -> dict:
        headers = {"If-Match": if_match} if if_match else None
        return self._json("delete_strategy", path={"name": name}, headers=headers, retry=False)

    def validate_strategy(self, code: str, *, name: str | None = None, deep: bool | None = None) -> dict:
        """``POST /v1/strategies/validate``: ``{valid, errors, warnings, hyperparameters, deep}``."""
        body: dict[str, Any] = {"code": code}
        if name is not None:
            body["name"] = name
        if deep is not None:
            body["deep"] = deep
        return self._json("validate_strategy", json=body, retry=True)


def _query_value(v: Any) -> Any:
    if isinstance(v, bool):
        return "true" if v else "false"
    return v


def _api_error(response: httpx.Response, method: str, url: str) -> APIError:
    code, message, details = "http_error", response.reason_phrase or "", None
    try:
        envelope = response.json().get("error") or {}
        code = envelope.get("code", code)
        message = envelope.get("message", message)
        details = envelope.get("details")
    except Exception:
        message = response.text[:500] or message
    cls = error_class(response.status_code)
    return cls(response.status_code, code, message, details, method=method, url=url)


def _to_utc(values: pd.Series) -> pd.Series:
    """ms integers or RFC 3339 strings -> ``datetime64[ns, UTC]``."""
    if pd.api.types.is_numeric_dtype(values):
        return pd.to_datetime(values, unit="ms", utc=True).astype("datetime64[ns, UTC]")
    return pd.to_datetime(values, utc=True).astype("datetime64[ns, UTC]")
