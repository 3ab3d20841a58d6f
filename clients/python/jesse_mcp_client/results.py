"""Results as objects with pandas views, one class per job kind.

Each keeps the JSON the service answered in ``.raw`` (with every page of its
rows fetched); the properties turn the parts of it into Series and DataFrames.
Times arrive as integer ms (with an RFC 3339 sibling, see docs/RESULTS.md) and
become ``datetime64[ns, UTC]``.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from .job import Chart, Job

#: Rows per page when reading a result's rows (the service's maximum).
PAGE = 10_000


class Markdown(str):
    """Markdown text that Jupyter renders."""

    def _repr_markdown_(self) -> str:
        return str(self)


def utc(values: Any) -> pd.Series:
    """Integer ms since the epoch (or RFC 3339 strings) -> ``datetime64[ns, UTC]``."""
    series = pd.Series(values)
    if pd.api.types.is_numeric_dtype(series):
        out = pd.to_datetime(series, unit="ms", utc=True)
    else:
        out = pd.to_datetime(series, utc=True, format="ISO8601")
    return out.astype("datetime64[ns, UTC]")


def _frame(rows: list[dict] | None) -> pd.DataFrame:
    return pd.json_normalize(rows, sep=".") if rows else pd.DataFrame()


def _times(frame: pd.DataFrame) -> pd.DataFrame:
    """Each ``<x>_at`` ms column becomes a UTC datetime; its ``<x>_at_iso`` copy is dropped."""
    for column in list(frame.columns):
        if column.endswith("_at") and f"{column}_iso" in frame.columns:
            frame[column] = utc(frame[column])
            frame = frame.drop(columns=f"{column}_iso")
    return frame


class Result:
    """Any kind's result. ``raw`` is the JSON body; ``result[key]`` reads it."""

    rows: str | None = None

    def __init__(self, job: "Job", raw: dict):
        self.job = job
        self.raw = raw

    @classmethod
    def load(cls, job: "Job") -> "Result":
        if cls.rows is None:
            return cls(job, job.raw_result())
        first = job.raw_result(include_trades=True, offset=0, limit=PAGE)
        rows = list(first.get(cls.rows) or [])
        total = first.get(f"{cls.rows}_total", len(rows))
        while len(rows) < total:
            page = job.raw_result(include_trades=True, offset=len(rows), limit=PAGE, include_equity_curve=False).get(cls.rows) or []
            if not page:
                break
            rows.extend(page)
        first[cls.rows] = rows
        return cls(job, first)

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def keys(self):
        return self.raw.keys()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self.job.kind} job {self.job.id}>"

    def chart(self, name: str, width: int | None = None, height: int | None = None) -> "Chart":
        return self.job.chart(name, width=width, height=height)


class BacktestResult(Result):
    rows = "trades"

    @cached_property
    def metrics(self) -> pd.Series:
        """Jesse's metrics (NaN where the service sent null)."""
        return pd.Series(self.raw.get("metrics") or {}, dtype="object").infer_objects()

    @cached_property
    def trades(self) -> pd.DataFrame:
        """One row per closed trade, in Jesse's order; ``opened_at``/``closed_at`` as UTC datetimes."""
        return _times(pd.DataFrame(self.raw.get("trades") or []))

    @cached_property
    def equity(self) -> pd.DataFrame:
        """The equity curve indexed by UTC time, a column per series (``Portfolio`` first)."""
        series = []
        for curve in self.raw.get("equity_curve") or []:
            points = curve.get("points") or []
            s = pd.Series([p.get("value") for p in points], index=utc([p["time"] for p in points]), name=curve.get("name"))
            series.append(s)
        if not series:
            return pd.DataFrame(index=pd.DatetimeIndex([], tz="UTC", name="time"))
        frame = pd.concat(series, axis=1)
        frame.index.name = "time"
        return frame

    def analysis(self) -> dict:
        return self.job.analysis()


class BatchResult(Result):
    rows = "leaderboard"

    @cached_property
    def leaderboard(self) -> pd.DataFrame:
        """The ranked variants, nested fields flattened with dots (``metrics.sharpe_ratio``)."""
        return _frame(self.raw.get("leaderboard"))


class StudyResult(Result):
    """An ``optimization`` study."""

    rows = "trials"

    @cached_property
    def trials(self) -> pd.DataFrame:
        return _frame(self.raw.get("trials"))

    @cached_property
    def leaderboard(self) -> pd.DataFrame:
        return _frame(self.raw.get("leaderboard"))

    @property
    def overfitting(self) -> dict:
        return self.raw.get("overfitting") or {}

    @property
    def best(self) -> dict | None:
        return self.raw.get("best")


class WalkForwardResult(Result):
    @cached_property
    def windows(self) -> pd.DataFrame:
        return _frame(self.raw.get("windows"))

    @cached_property
    def stitched(self) -> pd.DataFrame:
        """The stitched out-of-sample equity, one row per day, indexed by UTC day."""
        points = (self.raw.get("stitched") or {}).get("equity_curve") or []
        frame = pd.DataFrame(points)
        if "time" in frame.columns:
            frame.index = utc(frame.pop("time"))
            frame.index.name = "time"
        return frame

    @property
    def verdict(self) -> Any:
        return self.raw.get("verdict")


class MonteCarloResult(Result):
    @cached_property
    def percentiles(self) -> pd.DataFrame:
        """One row per metric (``total_return``, ``max_drawdown``...), one column per
        percentile over the scenarios (5, 10, 25, 50, 75, 90, 95)."""
        rows = {
            name: {int(p): v for p, v in (stats.get("percentiles") or {}).items()}
            for name, stats in (self.raw.get("metrics") or {}).items()
            if isinstance(stats, dict)
        }
        frame = pd.DataFrame(rows).T
        return frame[sorted(frame.columns)] if len(frame.columns) else frame

    @cached_property
    def metrics(self) -> pd.DataFrame:
        """One row per metric: mean, std, min, max, the original backtest's value and
        its percentile rank, the 90 % / 95 % intervals."""
        rows = {
            name: {k: v for k, v in stats.items() if k != "percentiles"}
            for name, stats in (self.raw.get("metrics") or {}).items()
            if isinstance(stats, dict)
        }
        return pd.DataFrame(rows).T

    @cached_property
    def scenarios(self) -> pd.DataFrame:
        """The per-scenario outcomes the result carries (its ``distribution``)."""
        dist = self.raw.get("distribution")
        if isinstance(dist, list):
            return _frame(dist)
        if isinstance(dist, dict):
            try:
                return pd.DataFrame(dist)
            except ValueError:
                return pd.json_normalize(dist)
        return pd.DataFrame()

    @property
    def probability_of_loss(self) -> float | None:
        return self.raw.get("probability_of_loss")

    @property
    def probability_of_ruin(self) -> float | None:
        return self.raw.get("probability_of_ruin")


class ScreenResult(Result):
    """A ``pairs_screen``."""

    rows = "pairs"

    @cached_property
    def pairs(self) -> pd.DataFrame:
        rows = [{k: v for k, v in r.items() if k != "kalman"} for r in self.raw.get("pairs") or []]
        return _frame(rows)


class PipelineResult(Result):
    @property
    def report(self) -> Markdown:
        """The pipeline's report (Markdown, rendered in Jupyter)."""
        return Markdown(self.raw.get("report") or "")

    @cached_property
    def steps(self) -> pd.DataFrame:
        return _frame(self.raw.get("steps"))

    @property
    def verdict(self) -> Any:
        return self.raw.get("verdict")


class PairsBacktestResult(Result):
    def backtest(self) -> BacktestResult:
        """The child backtest's result (its trades and curve)."""
        from .job import Job

        child = Job(self.job.client, self.raw["backtest_job_id"], kind="backtest", status="succeeded")
        return BacktestResult.load(child)


RESULTS: dict[str, type[Result]] = {
    "backtest": BacktestResult,
    "backtest_batch": BatchResult,
    "optimization": StudyResult,
    "walk_forward": WalkForwardResult,
    "monte_carlo": MonteCarloResult,
    "pairs_screen": ScreenResult,
    "pairs_backtest": PairsBacktestResult,
    "pipeline": PipelineResult,
}


def result_for(job: "Job") -> Result:
    if job.kind is None:
        job.refresh()
    return RESULTS.get(job.kind or "", Result).load(job)
