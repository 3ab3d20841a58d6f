"""A notebook client for the jesse-mcp REST API.

>>> from jesse_mcp_client import Client
>>> c = Client("http://127.0.0.1:8080")
>>> bt = c.backtest(strategy="SmaCross", exchange="Binance Perpetual Futures", symbol="BTC-USDT",
...                 timeframe="1h", start_date="2023-03-01", end_date="2023-04-01").wait().result()
>>> bt.metrics["sharpe_ratio"], bt.trades.head(), bt.equity.plot()
"""

from ._routes import ROUTES, SUBMITS
from .client import Client
from .errors import (
    APIError,
    Conflict,
    Forbidden,
    InvalidRequest,
    JesseMCPError,
    JobCancelled,
    JobFailed,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
    WaitTimeout,
)
from .job import Chart, Job
from .results import (
    BacktestResult,
    BatchResult,
    Markdown,
    MonteCarloResult,
    PairsBacktestResult,
    PipelineResult,
    Result,
    ScreenResult,
    StudyResult,
    WalkForwardResult,
)

__version__ = "0.1.0"

__all__ = [
    "ROUTES", "SUBMITS", "Client", "Job", "Chart", "Markdown", "Result", "BacktestResult", "BatchResult",
    "StudyResult", "WalkForwardResult", "MonteCarloResult", "ScreenResult", "PairsBacktestResult",
    "PipelineResult", "APIError", "JesseMCPError", "InvalidRequest", "Unauthorized", "Forbidden", "NotFound",
    "Conflict", "PreconditionFailed", "PayloadTooLarge", "ServiceUnavailable", "ServerError", "JobFailed",
    "JobCancelled", "WaitTimeout",
]
