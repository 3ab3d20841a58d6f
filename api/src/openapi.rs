//! The OpenAPI 3.1 document of the REST API, built from the same Rust types the
//! handlers use (schemas via schemars), so it cannot drift from the code.

use jesse_mcp_core::ErrorBody;
use jesse_mcp_core::jobs::BacktestRequest;
use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use crate::rest::ValidateBody;
use crate::service::{
    CsvImportReport, JobAccepted, JobList, JobView, ResultView, SeriesList, StrategyDeleted,
    StrategyList, StrategyView, StrategyWritten, ValidationReport,
};

pub fn document() -> Value {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let request = generator.subschema_for::<BacktestRequest>().to_value();
    let accepted = generator.subschema_for::<JobAccepted>().to_value();
    let job = generator.subschema_for::<JobView>().to_value();
    let list = generator.subschema_for::<JobList>().to_value();
    let result = generator.subschema_for::<ResultView>().to_value();
    let csv = generator.subschema_for::<CsvImportReport>().to_value();
    let series = generator.subschema_for::<SeriesList>().to_value();
    let error = generator.subschema_for::<ErrorBody>().to_value();
    let strategies = generator.subschema_for::<StrategyList>().to_value();
    let strategy = generator.subschema_for::<StrategyView>().to_value();
    let written = generator.subschema_for::<StrategyWritten>().to_value();
    let deleted = generator.subschema_for::<StrategyDeleted>().to_value();
    let validate = generator.subschema_for::<ValidateBody>().to_value();
    let report = generator.subschema_for::<ValidationReport>().to_value();
    let components = Value::Object(generator.take_definitions(true).into_iter().collect());

    let envelope = json!({"type": "object", "properties": {"error": error}, "required": ["error"]});
    let err = |description: &str| json!({"description": description, "content": {"application/json": {"schema": envelope}}});
    let ok = |description: &str, schema: &Value| json!({"description": description, "content": {"application/json": {"schema": schema}}});
    let id_param = json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}, "description": "Job id (ULID) returned by a submit"});
    let query = |name: &str, ty: &str, description: &str| json!({"name": name, "in": "query", "required": false, "schema": {"type": ty}, "description": description});

    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "jesse-mcp",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Run real Jesse backtests through a job queue. Submit, get a job id at once (202), poll GET /v1/jobs/{id} until the status is terminal (succeeded, failed, cancelled), then read GET /v1/jobs/{id}/result. Metrics are Jesse's own; NaN and ±infinity become null."
        },
        "paths": {
            "/health": {"get": {"summary": "Liveness and store/queue reachability", "responses": {"200": {"description": "ok"}, "503": err("store or queue unreachable")}}},
            "/v1/backtests": {"post": {
                "summary": "Submit a backtest",
                "parameters": [{"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string"}, "description": "A retried submit with the same key returns the same job"}],
                "requestBody": {"required": true, "content": {"application/json": {"schema": request}}},
                "responses": {"202": ok("queued", &accepted), "400": err("malformed JSON"), "409": err("idempotency key reused for a different request"), "413": err("body too large"), "415": err("not JSON"), "422": err("invalid request: unknown strategy, unsupported exchange or timeframe, bad dates or numbers, missing candles")}
            }},
            "/v1/jobs": {"get": {
                "summary": "List jobs, newest first",
                "parameters": [query("kind", "string", "backtest"), query("status", "string", "queued|running|succeeded|failed|cancelled"), query("limit", "integer", "1..200, default 50"), query("cursor", "string", "next_cursor of the previous page")],
                "responses": {"200": ok("a page of jobs", &list), "422": err("invalid filter")}
            }},
            "/v1/jobs/{id}": {"get": {"summary": "A job's status and progress", "parameters": [id_param], "responses": {"200": ok("the job", &job), "404": err("unknown job id")}}},
            "/v1/jobs/{id}/result": {"get": {
                "summary": "A succeeded job's result: metrics, optional trades and equity curve, provenance",
                "parameters": [id_param, query("include_trades", "boolean", "default: as submitted"), query("include_equity_curve", "boolean", "default true when computed"), query("trades_offset", "integer", "page start"), query("trades_limit", "integer", "page size")],
                "responses": {"200": ok("the result", &result), "404": err("unknown job id"), "409": err("not finished, or failed/cancelled")}
            }},
            "/v1/jobs/{id}/cancel": {"post": {"summary": "Cancel a queued job at once, or interrupt a running one", "parameters": [id_param], "responses": {"200": ok("the job after the request", &job), "404": err("unknown job id"), "409": err("already finished")}}},
            "/v1/candles": {"get": {"summary": "Stored candle series", "responses": {"200": ok("series", &series)}}},
            "/v1/candles/csv": {"post": {
                "summary": "Import 1m candles from CSV (idempotent upsert)",
                "parameters": [{"name": "exchange", "in": "query", "required": true, "schema": {"type": "string"}}, {"name": "symbol", "in": "query", "required": true, "schema": {"type": "string"}}],
                "requestBody": {"required": true, "content": {"text/csv": {"schema": {"type": "string"}, "example": "timestamp,open,high,low,close,volume\n1704067200000,42000,42100,41950,42050,12.5\n"}}},
                "responses": {"200": ok("counts", &csv), "413": err("body too large"), "422": err("bad header, exchange or symbol")}
            }},
            "/v1/candles/imports": {"post": {
                "summary": "Import 1m candles with Jesse's drivers (job kind candle_import; only missing minutes are fetched)",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["exchange", "symbol", "start_date"],
                    "properties": {"exchange": {"type": "string"}, "symbol": {"type": "string"}, "start_date": {"type": "string"}, "end_date": {"type": "string"}}}}}},
                "responses": {"202": ok("queued", &accepted), "422": err("unsupported exchange, bad symbol or dates")}
            }},
            "/v1/candles/{exchange}/{symbol}": {"delete": {"summary": "Delete a stored series", "responses": {"200": {"description": "deleted rows"}, "404": err("no such series")}}},
            "/v1/candles/{exchange}/{symbol}/gaps": {"get": {"summary": "Gap report: [{start, end, minutes}] half-open, missing_minutes, coverage_pct", "responses": {"200": {"description": "gap report"}, "404": err("no such series")}}},
            "/v1/candles/{exchange}/{symbol}/csv": {"get": {"summary": "Export the rows as CSV (import format)", "responses": {"200": {"description": "text/csv"}, "404": err("no such series")}}},
            "/v1/schedules": {
                "get": {"summary": "Series kept current by scheduled imports (cron UTC, next and last run)", "responses": {"200": {"description": "schedules"}}},
                "put": {"summary": "Replace the schedule list: {schedules: [{exchange, symbol, cron?, start_date?}]}", "responses": {"200": {"description": "schedules"}, "422": err("bad exchange, symbol, cron or date")}}
            },
            "/v1/strategies": {"get": {"summary": "Strategies with hyperparameters, sha256, validity and the latest deep validation", "responses": {"200": ok("strategies", &strategies)}}},
            "/v1/strategies/validate": {"post": {
                "summary": "Validate code without saving it (static; with deep=true also import and smoke-test in a runner)",
                "requestBody": {"required": true, "content": {"application/json": {"schema": validate}}},
                "responses": {"200": ok("report: valid, errors [{line, column, message}], warnings, hyperparameters, deep", &report), "413": err("source over 256 KiB"), "422": err("invalid name")}
            }},
            "/v1/strategies/{name}": {
                "get": {"summary": "Source and metadata (ETag: the sha256)", "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}],
                        "responses": {"200": ok("the strategy", &strategy), "404": err("no such strategy"), "422": err("unsafe name or path")}},
                "put": {"summary": "Create or replace (static validation first; then a deep validation job). If-Match: the sha256 you read",
                        "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}, {"name": "If-Match", "in": "header", "required": false, "schema": {"type": "string"}}],
                        "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}}}},
                        "responses": {"200": ok("replaced", &written), "201": ok("created", &written), "412": err("changed since read (If-Match)"), "413": err("source over 256 KiB"), "422": err("does not validate, or unsafe name")}},
                "delete": {"summary": "Delete the strategy folder (past results keep their copy of the source)",
                           "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}, {"name": "If-Match", "in": "header", "required": false, "schema": {"type": "string"}}],
                           "responses": {"200": ok("deleted", &deleted), "404": err("no such strategy"), "412": err("changed since read")}}
            },
            "/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}},
            "/mcp": {"post": {"summary": "MCP streamable HTTP endpoint (tools: backtest, job_get, job_wait, job_result, job_list, job_cancel, candles_available, strategy_list, strategy_read, strategy_write, strategy_validate, strategy_delete; resources jesse://strategies/{name})", "responses": {"200": {"description": "MCP"}}}}
        },
        "components": {"schemas": components}
    })
}
