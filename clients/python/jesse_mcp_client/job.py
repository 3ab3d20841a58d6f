"""A job: poll it, wait for it (with a progress bar), cancel it, read it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pandas as pd

from .errors import JobCancelled, JobFailed, WaitTimeout

if TYPE_CHECKING:
    from .client import Client
    from .results import Result

FINISHED = ("succeeded", "failed", "cancelled")


class Chart(bytes):
    """PNG bytes that Jupyter shows inline."""

    def _repr_png_(self) -> bytes:
        return bytes(self)

    def save(self, path: str) -> None:
        with open(path, "wb") as f:
            f.write(self)


class Job:
    """One job of the service. ``.data`` is the job resource
    (``GET /v1/jobs/{id}``) as last read; ``refresh()`` reads it again."""

    def __init__(self, client: "Client", job_id: str, *, kind: str | None = None, status: str | None = None, data: dict | None = None):
        self.client = client
        self.id = job_id
        self.kind = kind
        self.status = status
        self.data: dict = data or {}

    def __repr__(self) -> str:
        return f"Job({self.id!r}, kind={self.kind!r}, status={self.status!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def done(self) -> bool:
        return self.status in FINISHED

    @property
    def progress(self) -> float:
        return float(self.data.get("progress") or 0.0)

    @property
    def stage(self) -> str | None:
        return self.data.get("stage")

    @property
    def error(self) -> dict | None:
        return self.data.get("error")

    @property
    def summary(self) -> Any:
        return self.data.get("summary")

    def refresh(self) -> "Job":
        self.data = self.client._json("get_job", path={"id": self.id})
        self.kind = self.data.get("kind", self.kind)
        self.status = self.data.get("status", self.status)
        return self

    def wait(self, timeout: float | None = None, progress: bool = True, poll: float = 0.25) -> "Job":
        """Polls the job until it finishes; shows a tqdm bar with its stage and
        ETA when ``progress``. Returns the job when it succeeded; raises
        :class:`JobFailed` (or :class:`JobCancelled`) with the job's error
        envelope otherwise, :class:`WaitTimeout` after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = None
        interval = min(poll, 2.0)
        try:
            while True:
                self.refresh()
                if progress and bar is None and not self.done:
                    from tqdm.auto import tqdm

                    bar = tqdm(total=100, desc=f"{self.kind} {self.id[-6:]}", unit="%", bar_format="{l_bar}{bar}| {n:.0f}% [{elapsed}<{remaining}{postfix}]")
                if bar is not None:
                    bar.n = round(100 * min(max(self.progress, 0.0), 1.0), 1) if self.status != "succeeded" else 100
                    postfix = {"status": self.status}
                    if self.stage:
                        postfix["stage"] = self.stage
                    if self.data.get("eta_seconds") is not None:
                        postfix["eta"] = f"{self.data['eta_seconds']}s"
                    bar.set_postfix(postfix, refresh=False)
                    bar.refresh()
                if self.done:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise WaitTimeout(f"job {self.id} still {self.status} after {timeout} s")
                sleep = interval if deadline is None else max(0.0, min(interval, deadline - time.monotonic()))
                time.sleep(sleep)
                interval = min(interval * 1.5, 2.0)
        finally:
            if bar is not None:
                bar.close()
        if self.status == "cancelled":
            raise JobCancelled(self, self.error)
        if self.status == "failed":
            raise JobFailed(self, self.error)
        return self

    def cancel(self) -> "Job":
        """``POST /v1/jobs/{id}/cancel``: a queued job is cancelled at once, a running one interrupted."""
        answer = self.client._json("cancel", path={"id": self.id}, retry=False)
        if isinstance(answer, dict):
            self.status = answer.get("status", self.status)
        return self

    def children(self, status: str | None = None) -> list["Job"]:
        """A parent's children in their order, every page."""
        return [
            Job(self.client, c["job_id"], kind=c.get("kind"), status=c.get("status"), data=c)
            for c in self.client._pages("children", {"id": self.id}, {"status": status, "limit": 200})
        ]

    def logs(self) -> pd.DataFrame:
        """What the job's strategy printed and logged, every page: one row per
        line (``seq, stream, line, simulated_at, logged_at``...), times as UTC datetimes."""
        lines: list[dict] = []
        after = None
        while True:
            page = self.client._json("logs", path={"id": self.id}, params={"after": after, "limit": 200})
            lines.extend(page.get("lines", []))
            after = page.get("next_after")
            if after is None:
                break
        frame = pd.DataFrame(lines)
        for column in ("simulated_ms", "logged_ms"):
            if column in frame.columns:
                frame[column.replace("_ms", "_at")] = pd.to_datetime(frame[column], unit="ms", utc=True)
        return frame

    def raw_result(self, **params: Any) -> dict:
        """``GET /v1/jobs/{id}/result`` with the given query parameters, as JSON."""
        return self.client._json("get_result", path={"id": self.id}, params=params)

    def result(self) -> "Result":
        """The result as an object of the job's kind (waits for nothing: call
        ``wait()`` first; a job not finished raises Conflict ``result_not_ready``)."""
        from .results import result_for

        return result_for(self)

    def chart(self, name: str, width: int | None = None, height: int | None = None) -> Chart:
        """``GET /v1/jobs/{id}/charts/{name}.png``: ``equity``, ``drawdown``, ``monthly``,
        ``histogram`` (backtest); ``fan``, ``histogram`` (monte_carlo)."""
        response = self.client.request("chart", path={"id": self.id, "name": name}, params={"width": width, "height": height})
        return Chart(response.content)

    def analysis(self) -> dict:
        """``GET /v1/jobs/{id}/analysis`` (a succeeded backtest)."""
        return self.client._json("analysis", path={"id": self.id})

    def trades_csv(self) -> str:
        return self.client.request("trades_csv", path={"id": self.id}).text

    def equity_csv(self) -> str:
        return self.client.request("equity_csv", path={"id": self.id}).text
