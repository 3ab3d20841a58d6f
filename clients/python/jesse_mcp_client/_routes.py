"""Every REST route the client calls, in one table.

The drift check (tests/python-client/check_client.py) reads this table and
asserts each (method, path) is in the service's ``GET /v1/openapi.json``, so a
route the client depends on cannot disappear unnoticed. Paths are written as
the OpenAPI document spells them (``{id}``, ``{name}`` placeholders).
"""

ROUTES: dict[str, tuple[str, str]] = {
    "health": ("GET", "/health"),
    "openapi": ("GET", "/v1/openapi.json"),
    # Submits: each answers 202 with a job.
    "backtest": ("POST", "/v1/backtests"),
    "batch": ("POST", "/v1/backtests/batch"),
    "optimize": ("POST", "/v1/optimizations"),
    "walk_forward": ("POST", "/v1/walk-forward"),
    "monte_carlo": ("POST", "/v1/monte-carlo"),
    "significance_test": ("POST", "/v1/significance-tests"),
    "pairs_screen": ("POST", "/v1/pairs/screen"),
    "pairs_backtest": ("POST", "/v1/pairs/backtest"),
    "pipeline": ("POST", "/v1/pipelines"),
    "candle_import": ("POST", "/v1/candles/imports"),
    # Jobs.
    "list_jobs": ("GET", "/v1/jobs"),
    "get_job": ("GET", "/v1/jobs/{id}"),
    "get_result": ("GET", "/v1/jobs/{id}/result"),
    "trades_csv": ("GET", "/v1/jobs/{id}/trades.csv"),
    "equity_csv": ("GET", "/v1/jobs/{id}/equity.csv"),
    "children": ("GET", "/v1/jobs/{id}/children"),
    "logs": ("GET", "/v1/jobs/{id}/logs"),
    "report": ("GET", "/v1/jobs/{id}/report"),
    "analysis": ("GET", "/v1/jobs/{id}/analysis"),
    "chart": ("GET", "/v1/jobs/{id}/charts/{name}.png"),
    "cancel": ("POST", "/v1/jobs/{id}/cancel"),
    "compare": ("POST", "/v1/compare"),
    "pipeline_templates": ("GET", "/v1/pipelines/templates"),
    # Candles.
    "upload_csv": ("POST", "/v1/candles/csv"),
    "list_candles": ("GET", "/v1/candles"),
    "candle_gaps": ("GET", "/v1/candles/{exchange}/{symbol}/gaps"),
    "export_candles": ("GET", "/v1/candles/{exchange}/{symbol}/csv"),
    "delete_candles": ("DELETE", "/v1/candles/{exchange}/{symbol}"),
    # Strategies.
    "list_strategies": ("GET", "/v1/strategies"),
    "get_strategy": ("GET", "/v1/strategies/{name}"),
    "put_strategy": ("PUT", "/v1/strategies/{name}"),
    "delete_strategy": ("DELETE", "/v1/strategies/{name}"),
    "validate_strategy": ("POST", "/v1/strategies/validate"),
}

#: The submit routes: route name -> the job kind it creates.
SUBMITS: dict[str, str] = {
    "backtest": "backtest",
    "batch": "backtest_batch",
    "optimize": "optimization",
    "walk_forward": "walk_forward",
    "monte_carlo": "monte_carlo",
    "significance_test": "significance_test",
    "pairs_screen": "pairs_screen",
    "pairs_backtest": "pairs_backtest",
    "pipeline": "pipeline",
    "candle_import": "candle_import",
}
