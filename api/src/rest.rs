//! REST frontend (`/health`, `/ready`, `/metrics`, `/v1/...`): JSON in, JSON
//! out, every error in the `{"error": {...}}` envelope. Handlers only translate
//! HTTP to service calls.
//!
//! Owns the route table ([`routes`]): each entry is a handler together with
//! its method, path, parameters (the structs the handler extracts), body,
//! responses, error codes and required scope. The axum router ([`router`]) and
//! the OpenAPI document (`openapi.rs`) are both built from it, and the job
//! submits come from the kind registry, so neither can drift from the code.

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{
    DefaultBodyLimit, Extension, FromRequest, FromRequestParts, Path, Request, State,
};
use axum::handler::Handler;
use axum::http::{HeaderMap, Method, StatusCode, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::{Json, Router};
use jesse_mcp_core::jobs::JobStatus;
use jesse_mcp_core::kinds::{KindDef, REGISTRY, SchemaFn};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::auth::{Granted, Scope};
use crate::error::ApiError;
use crate::openapi::JobKindName;
use crate::service::{
    CompareRequest, CsvImportReport, GapReport, JobAccepted, JobList, JobQuery, JobView,
    ResultQuery, ResultView, ScheduleList, SchedulesBody, SeriesList, Service, StrategyDeleted,
    StrategyList, StrategyView, StrategyWritten, ValidationReport,
};
use jesse_mcp_core::analysis::{Analysis, Comparison};

/// Limit for JSON bodies; backtest requests are small.
pub const JSON_BODY_LIMIT: usize = 1024 * 1024;
/// Limit for CSV uploads: a year of 1m candles is about 40 MB, so three years
/// fit. An upload is held whole while it is parsed (about 2.5 times its size
/// with the parsed rows), and at most [`CSV_UPLOADS_AT_ONCE`] are read at once.
pub const CSV_BODY_LIMIT: usize = 128 * 1024 * 1024;
/// CSV uploads read and parsed at the same time per API process; others wait.
pub const CSV_UPLOADS_AT_ONCE: usize = 2;
static CSV_UPLOADS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(CSV_UPLOADS_AT_ONCE);

/// Codes any JSON body can be refused with.
const JSON_BODY_CODES: &[&str] = &[
    "malformed_json",
    "invalid_body",
    "unsupported_media_type",
    "payload_too_large",
    "invalid_request",
];

pub fn router(service: Service) -> Router {
    let mut router = Router::new();
    for route in routes() {
        let path = route.served_at.as_deref().unwrap_or(&route.path);
        router = router.route(path, route.handler);
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .with_state(service)
}

/// One operation: how it is served and how it is documented.
pub struct Route {
    pub method: Method,
    /// The path template, the same for axum and OpenAPI (`/v1/jobs/{id}`).
    pub path: String,
    /// The template axum serves when it differs: axum's router has no
    /// parameters with a suffix (`{name}.png`), so such a route is served as
    /// one whole segment and its handler strips the suffix.
    served_at: Option<String>,
    pub operation_id: String,
    pub summary: String,
    pub description: String,
    pub tag: &'static str,
    /// The scope a token needs here when tokens are configured; `None`: open.
    pub scope: Option<Scope>,
    pub params: Vec<Params>,
    pub body: Option<Body>,
    /// Success responses.
    pub responses: Vec<Reply>,
    /// Error codes of this route beyond those its extractors imply.
    pub errors: Vec<&'static str>,
    /// Whether reading JSON, a query, or the store can refuse the request.
    json_body: bool,
    query: bool,
    store: bool,
    handler: MethodRouter<Service>,
}

/// Parameters of an operation.
pub enum Params {
    /// Every field of the struct a handler extracts with `Path`.
    Path(SchemaFn),
    /// Every field of the struct a handler extracts with `ApiQuery`.
    Query(SchemaFn),
    Header {
        name: &'static str,
        description: &'static str,
        required: bool,
    },
}

pub struct Body {
    pub media_type: &'static str,
    pub schema: SchemaFn,
    pub example: Option<&'static str>,
    /// A kind's submit: its schema is the kind's request with the fields every
    /// submit takes ([`KindDef::request_schema`]), the one MCP shows too.
    pub kind: Option<&'static KindDef>,
}

pub struct Reply {
    pub status: u16,
    pub description: &'static str,
    /// `None`: no body.
    pub media_type: Option<&'static str>,
    /// `None` with a media type: a string (text bodies).
    pub schema: Option<SchemaFn>,
    pub headers: Vec<(&'static str, &'static str)>,
}

impl Route {
    fn new<H, T>(method: Method, path: &str, handler: H) -> Self
    where
        H: Handler<T, Service>,
        T: 'static,
    {
        let filter = axum::routing::MethodFilter::try_from(method.clone())
            .expect("route methods are standard ones");
        Self {
            method,
            path: path.to_string(),
            served_at: None,
            operation_id: String::new(),
            summary: String::new(),
            description: String::new(),
            tag: "jobs",
            scope: Some(Scope::Read),
            params: Vec::new(),
            body: None,
            responses: Vec::new(),
            errors: Vec::new(),
            json_body: false,
            query: false,
            store: true,
            handler: axum::routing::on(filter, handler),
        }
    }

    fn get<H: Handler<T, Service>, T: 'static>(path: &str, handler: H) -> Self {
        Self::new(Method::GET, path, handler)
    }

    fn post<H: Handler<T, Service>, T: 'static>(path: &str, handler: H) -> Self {
        Self::new(Method::POST, path, handler).scope(Scope::Run)
    }

    fn put<H: Handler<T, Service>, T: 'static>(path: &str, handler: H) -> Self {
        Self::new(Method::PUT, path, handler).scope(Scope::Run)
    }

    fn delete<H: Handler<T, Service>, T: 'static>(path: &str, handler: H) -> Self {
        Self::new(Method::DELETE, path, handler).scope(Scope::Run)
    }

    fn doc(mut self, operation_id: &str, tag: &'static str, summary: &str) -> Self {
        self.operation_id = operation_id.to_string();
        self.tag = tag;
        self.summary = summary.to_string();
        self
    }

    fn describe(mut self, description: &str) -> Self {
        self.description = description.to_string();
        self
    }

    fn served_at(mut self, path: &str) -> Self {
        self.served_at = Some(path.to_string());
        self
    }

    fn scope(mut self, scope: Scope) -> Self {
        self.scope = Some(scope);
        self
    }

    fn open(mut self) -> Self {
        self.scope = None;
        self
    }

    /// Answers without the store (nothing to be unavailable).
    fn stateless(mut self) -> Self {
        self.store = false;
        self
    }

    fn path<P: JsonSchema>(mut self) -> Self {
        self.params.push(Params::Path(fields::<P>));
        self
    }

    fn query<Q: JsonSchema>(mut self) -> Self {
        self.params.push(Params::Query(fields::<Q>));
        self.query = true;
        self
    }

    fn header(mut self, name: &'static str, description: &'static str) -> Self {
        self.params.push(Params::Header {
            name,
            description,
            required: false,
        });
        self
    }

    fn json_body(mut self, schema: SchemaFn) -> Self {
        self.body = Some(Body {
            media_type: "application/json",
            schema,
            example: None,
            kind: None,
        });
        self.json_body = true;
        self
    }

    fn submit_of(mut self, kind: &'static KindDef) -> Self {
        if let Some(body) = &mut self.body {
            body.kind = Some(kind);
        }
        self
    }

    fn body(mut self, media_type: &'static str, schema: SchemaFn, example: &'static str) -> Self {
        self.body = Some(Body {
            media_type,
            schema,
            example: Some(example),
            kind: None,
        });
        self
    }

    fn reply(mut self, status: u16, description: &'static str, schema: SchemaFn) -> Self {
        self.responses.push(Reply {
            status,
            description,
            media_type: Some("application/json"),
            schema: Some(schema),
            headers: Vec::new(),
        });
        self
    }

    /// A success response that is not JSON (an image).
    fn reply_media(
        mut self,
        status: u16,
        description: &'static str,
        media_type: &'static str,
        schema: SchemaFn,
    ) -> Self {
        self.responses.push(Reply {
            status,
            description,
            media_type: Some(media_type),
            schema: Some(schema),
            headers: Vec::new(),
        });
        self
    }

    fn reply_text(
        mut self,
        status: u16,
        description: &'static str,
        media_type: &'static str,
    ) -> Self {
        self.responses.push(Reply {
            status,
            description,
            media_type: Some(media_type),
            schema: None,
            headers: Vec::new(),
        });
        self
    }

    /// Adds a header to the last reply.
    fn reply_header(mut self, name: &'static str, description: &'static str) -> Self {
        if let Some(reply) = self.responses.last_mut() {
            reply.headers.push((name, description));
        }
        self
    }

    /// A body limit of its own instead of [`JSON_BODY_LIMIT`].
    fn body_limit(mut self, limit: usize) -> Self {
        self.handler = self.handler.layer(DefaultBodyLimit::max(limit));
        self
    }

    fn errors(mut self, codes: &[&'static str]) -> Self {
        self.errors.extend_from_slice(codes);
        self
    }

    /// Every error code this route can answer with: its own, and those of its
    /// extractors, the authentication layer and the store.
    pub fn error_codes(&self) -> Vec<&'static str> {
        let mut codes = Vec::new();
        if self.json_body {
            codes.extend_from_slice(JSON_BODY_CODES);
        }
        if self.query {
            codes.push("invalid_query");
        }
        codes.extend_from_slice(&self.errors);
        if self.scope.is_some() {
            codes.extend(["unauthorized", "forbidden"]);
        }
        // `auth::guard`, in front of every route.
        codes.extend(["host_not_allowed", "origin_not_allowed"]);
        if !matches!(self.method, Method::GET | Method::HEAD) {
            codes.push("unsupported_media_type");
        }
        codes.push("internal");
        if self.store {
            codes.push("unavailable");
        }
        let mut seen = std::collections::HashSet::new();
        codes.retain(|c| seen.insert(*c));
        codes
    }
}

/// Schema of a type (a `$ref` to its component).
fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// The object schema of a parameter struct itself, so its fields can become parameters.
fn fields<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    T::json_schema(generator)
}

fn text(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string"})
}

/// The route table: every REST operation the router serves. The job submits
/// are one generic route per registered kind that users can submit.
pub fn routes() -> Vec<Route> {
    let mut routes = vec![
        Route::get("/health", health)
            .open()
            .doc("health", "operations", "Liveness, store and queue reachability, queue depth")
            .describe("Always open (no token). 503 `unavailable` when the store or the queue does not answer; 503 `store_unwritable` when the store answers reads but its disk is full (a write probe, at most once a second).")
            .reply(200, "alive", health_schema),
        Route::get("/ready", ready)
            .doc("ready", "operations", "Readiness: the store and the queue both answer and the store takes writes (503 `store_unwritable` otherwise)")
            .reply(200, "ready to take work", ready_schema),
        Route::get("/metrics", metrics)
            .doc("metrics", "operations", "Prometheus metrics")
            .describe("Text exposition format 0.0.4: `jesse_mcp_queue_depth{kind}`, `jesse_mcp_jobs{kind,status}`, `jesse_mcp_job_duration_seconds` (histogram per kind), `jesse_mcp_runner_restarts_total`, `jesse_mcp_runner_start_failures_total`.")
            .reply_text(200, "metrics", "text/plain"),
        Route::get("/v1/openapi.json", openapi)
            .stateless()
            .doc("openapi", "operations", "This document (OpenAPI 3.1)")
            .reply(200, "the OpenAPI document", any_object),
        Route::get("/v1/jobs", list_jobs)
            .doc("listJobs", "jobs", "List jobs of every kind, newest first, each with its subject and tags")
            .query::<ListQuery>()
            .reply(200, "a page of jobs; pass `next_cursor` as `cursor` for the next one", schema::<JobList>)
            .errors(&["invalid_kind", "invalid_status", "invalid_filter", "invalid_limit"]),
        Route::get("/v1/jobs/{id}", get_job)
            .doc("getJob", "jobs", "A job's status, progress, stage, error and summary")
            .path::<JobPath>()
            .reply(200, "the job", schema::<JobView>)
            .errors(&["job_not_found"]),
        Route::get("/v1/jobs/{id}/result", get_result)
            .doc("getJobResult", "jobs", "A succeeded job's result")
            .describe("Metrics, trades (paged) and the equity curve when asked for, provenance (Jesse version, strategy sha256s, candle fingerprints), timings. Times are integer ms since the epoch with an RFC 3339 sibling: each trade's `opened_at`/`opened_at_iso`, `closed_at`/`closed_at_iso`; the equity curve is `[{name, points: [{time, date, value}]}]`. Trades leave out their nested `orders` unless `include_orders=true`. See docs/RESULTS.md.")
            .path::<JobPath>()
            .query::<ResultParams>()
            .reply(200, "the result: the kind's result body (see `JobKind`)", result_schema)
            .errors(&["job_not_found", "result_not_ready", "job_has_no_result"]),
        Route::get("/v1/jobs/{id}/trades.csv", trades_csv)
            .doc("exportJobTradesCsv", "jobs", "A succeeded backtest's closed trades as CSV")
            .describe("RFC 4180, CRLF line ends, a header row: `id,strategy_name,symbol,exchange,type,entry_price,exit_price,qty,opened_at,opened_at_iso,closed_at,closed_at_iso,fee,size,PNL,PNL_percentage,holding_period`. Times are integer ms since the epoch with an RFC 3339 UTC column beside each, as in the JSON result; `holding_period` is Jesse's, in seconds; null is an empty field. Every trade, in Jesse's order, read from the store page by page as it is sent. Only a `backtest` job has trades (422 `not_exportable` for other kinds).")
            .path::<JobPath>()
            .reply_text(200, "the trades, streamed", "text/csv")
            .errors(&["job_not_found", "not_exportable", "result_not_ready", "job_has_no_result"]),
        Route::get("/v1/jobs/{id}/equity.csv", equity_csv)
            .doc("exportJobEquityCsv", "jobs", "A succeeded backtest's equity curve as CSV")
            .describe("RFC 4180, CRLF line ends, header `series,time,date,value`: one row per daily point of each series (`Portfolio`), `time` in integer ms since the epoch and `date` in RFC 3339 UTC, as in the JSON result. Every backtest keeps its curve (`include_equity_curve` only decides whether the JSON result shows it); one without trades has an empty curve (the header alone).")
            .path::<JobPath>()
            .reply_text(200, "the equity curve", "text/csv")
            .errors(&["job_not_found", "not_exportable", "equity_curve_not_computed", "result_not_ready", "job_has_no_result"]),
        Route::get("/v1/jobs/{id}/children", list_children)
            .doc("listJobChildren", "jobs", "The child jobs of a parent job (a batch), in order")
            .path::<JobPath>()
            .query::<ChildrenQuery>()
            .reply(200, "a page of child jobs; pass `next_cursor` as `cursor` for the next one", schema::<JobList>)
            .errors(&["job_not_found", "invalid_status", "invalid_limit"]),
        Route::get("/v1/jobs/{id}/logs", job_logs)
            .doc("getJobLogs", "jobs", "A job's log: what its strategy printed and logged with self.log, in order")
            .describe("Lines of `print` output (`stdout`, `stderr`) and of `self.log(...)` (`info`, `error`), each with its `seq`, the simulated time it was written at (null outside the simulation) and when it was received. Stored while the job runs, so a running job's log can be read as it grows. At most 10,000 lines / 1 MiB per job; then one `system` line says the log was truncated. Paged: pass `next_after` as `after` for the next page (null: the end of what is stored now).")
            .path::<JobPath>()
            .query::<LogsQuery>()
            .reply(200, "a page of the job's log", schema::<crate::service::JobLogs>)
            .errors(&["job_not_found", "invalid_limit"]),
        Route::get("/v1/jobs/{id}/report", get_report)
            .doc("getPipelineReport", "pipelines", "A finished pipeline's report, as Markdown")
            .describe("The verdict, every step with its job id and headline, every gate with its value and the job that produced it, and each step's key tables and chart links. The same text is the result's `report` and the MCP resource jesse://reports/{id}.")
            .path::<JobPath>()
            .reply_text(200, "the report", "text/markdown")
            .errors(&["job_not_found", "not_a_pipeline", "result_not_ready", "job_has_no_result"]),
        Route::get("/v1/pipelines/templates", pipeline_templates)
            .stateless()
            .doc("listPipelineTemplates", "pipelines", "The built-in pipeline templates")
            .describe("Each template's name, title, what it runs, the JSON Schema of its `params` and an example request for POST /v1/pipelines.")
            .reply(200, "the templates", any_object),
        Route::get("/v1/jobs/{id}/analysis", get_analysis)
            .doc("getJobAnalysis", "analysis", "Analysis of a succeeded backtest: drawdowns, period returns, rolling Sharpe, return distribution, PSR, exposure")
            .describe("Computed from the stored result at once (no job): the 5 worst drawdown periods (depth, start, trough, recovery, duration), monthly and yearly returns, the 30-day rolling Sharpe ratio (daily returns, annualized by √365), the daily return distribution (mean, std, skew, kurtosis) with historical VaR and CVaR at 95 % and 99 %, the probabilistic Sharpe ratio against 0, exposure and time in market from the trades' entry and exit times, and `source`: the job, its strategies' sha256 and candle fingerprints. A section is null when the result lacks what it needs (a backtest without trades has no equity curve); `unavailable` says why.")
            .path::<JobPath>()
            .reply(200, "the analysis", schema::<Analysis>)
            .errors(&["job_not_found", "not_a_backtest", "result_not_ready", "job_has_no_result"]),
        Route::get("/v1/jobs/{id}/charts/{name}.png", get_chart)
            .served_at("/v1/jobs/{id}/charts/{file}")
            .doc("getJobChart", "analysis", "A chart of a succeeded job, as PNG")
            .describe("`equity` (equity with the drawdown below), `drawdown` (with the 5 worst periods), `monthly` (monthly-returns heatmap) and `histogram` (daily returns) for a backtest; `fan` (percentile bands of equity) and `histogram` (the scenarios' total returns) for a monte_carlo job. The same data and size always give the same bytes. A name that does not apply to the job's kind is refused with the names that do (`details.names`).")
            .path::<ChartPath>()
            .query::<ChartQuery>()
            .reply_media(200, "the chart", "image/png", png_schema)
            .errors(&["job_not_found", "unknown_chart", "chart_not_applicable", "chart_unavailable", "invalid_chart_size", "result_not_ready", "job_has_no_result"]),
        Route::post("/v1/compare", compare)
            .scope(Scope::Read)
            .doc("compareBacktests", "analysis", "Compare 2 to 20 succeeded backtests side by side")
            .describe("Reads their stored results (nothing runs): a metrics table (key Jesse metrics per job, with each job's provenance), the equity curves on one calendar (the union of their days; each job's equity as percent of its starting balance, null where it has no sample) and the correlation matrix of daily returns over each pair's common days. An id that is unknown, not a backtest or not succeeded is refused with 422 naming it (`details.job_id`).")
            .json_body(schema::<CompareRequest>)
            .reply(200, "the comparison", schema::<Comparison>)
            .errors(&["invalid_job_ids", "unknown_job_id", "not_a_backtest", "job_not_succeeded"]),
        Route::post("/v1/jobs/{id}/cancel", cancel_job)
            .doc("cancelJob", "jobs", "Cancel a queued job at once, or interrupt a running one")
            .describe("A parent job is cancelled with its children.")
            .path::<JobPath>()
            .reply(200, "the job after the request", schema::<JobView>)
            .errors(&["job_not_found", "job_already_finished"]),
        Route::get("/v1/candles", list_candles)
            .doc("listCandleSeries", "candles", "Stored candle series: first, last, rows, missing minutes")
            .reply(200, "the series", schema::<SeriesList>),
        Route::post("/v1/candles/csv", import_csv)
            .body_limit(CSV_BODY_LIMIT)
            .scope(Scope::Admin)
            .doc("importCandlesCsv", "candles", "Import 1m candles from CSV (idempotent upsert)")
            .describe("Body: `timestamp,open,high,low,close,volume`, one 1m row per line, timestamps in ms or ISO-8601 UTC. Counts inserted, updated, unchanged and rejected rows and reports the first bad line.")
            .query::<CsvParams>()
            .body("text/csv", text, "timestamp,open,high,low,close,volume\n1704067200000,42000,42100,41950,42050,12.5\n")
            .reply(200, "counts", schema::<CsvImportReport>)
            .errors(&["missing_parameter", "payload_too_large", "invalid_body", "invalid_csv", "unsupported_exchange", "invalid_symbol"]),
        Route::delete("/v1/candles/{exchange}/{symbol}", delete_series)
            .scope(Scope::Admin)
            .doc("deleteCandleSeries", "candles", "Delete a stored series")
            .path::<SeriesPath>()
            .reply(200, "what was deleted", series_deleted_schema)
            .errors(&["series_not_found", "invalid_symbol"]),
        Route::get("/v1/candles/{exchange}/{symbol}/gaps", gap_report)
            .doc("getCandleGaps", "candles", "Gap report of a series")
            .describe("`gaps: [{start, end, minutes}]`, half-open in ms: `start` is the first missing minute, `end` the first present minute after it; `missing_minutes`, `coverage_pct`.")
            .path::<SeriesPath>()
            .query::<RangeQuery>()
            .reply(200, "the gap report", schema::<GapReport>)
            .errors(&["series_not_found", "unsupported_exchange", "invalid_symbol", "invalid_date", "invalid_date_range"]),
        Route::get("/v1/candles/{exchange}/{symbol}/csv", export_csv)
            .doc("exportCandlesCsv", "candles", "Export the rows as CSV in the import format")
            .describe("The range defaults to the stored one and is cut to it; the rows are read from the store page by page as they are sent. A series that is not stored is a 404 `series_not_found`.")
            .path::<SeriesPath>()
            .query::<RangeQuery>()
            .reply_text(200, "the rows, streamed", "text/csv")
            .errors(&["series_not_found", "unsupported_exchange", "invalid_symbol", "invalid_date", "invalid_date_range"]),
        Route::get("/v1/schedules", list_schedules)
            .doc("listSchedules", "schedules", "Series kept current by scheduled imports, with next and last runs")
            .reply(200, "the schedules", schema::<ScheduleList>),
        Route::put("/v1/schedules", put_schedules)
            .scope(Scope::Admin)
            .doc("putSchedules", "schedules", "Replace the schedule list")
            .describe("Each firing enqueues an ordinary `candle_import` job (from the last stored minute to now) with the idempotency key `schedule:<exchange>:<symbol>:<date>`.")
            .json_body(schema::<SchedulesBody>)
            .reply(200, "the schedules now", schema::<ScheduleList>)
            .errors(&["unsupported_exchange", "invalid_symbol", "invalid_cron", "invalid_date", "duplicate_schedule"]),
        Route::get("/v1/strategies", list_strategies)
            .doc("listStrategies", "strategies", "Strategies with hyperparameters, sha256, validity and the latest deep validation")
            .reply(200, "the strategies", schema::<StrategyList>)
            .errors(&["invalid_encoding", "unsafe_path"]),
        Route::post("/v1/strategies/validate", validate_strategy)
            .doc("validateStrategy", "strategies", "Validate code without saving it")
            .describe("Static validation (syntax, class, hyperparameters); with `deep: true` also a short job that imports and smoke-tests it in a runner. Deep validation executes the submitted code, so with tokens configured it also needs the `strategies:write` scope (403 `forbidden` otherwise, nothing runs).")
            .json_body(schema::<ValidateBody>)
            .reply(200, "the report: valid, errors [{line, column, message}], warnings, hyperparameters, deep", schema::<ValidationReport>)
            .errors(&["invalid_strategy_name", "source_too_large"]),
        Route::get("/v1/strategies/{name}", get_strategy)
            .doc("getStrategy", "strategies", "A strategy's source and metadata")
            .path::<StrategyPath>()
            .reply(200, "the strategy", schema::<StrategyView>)
            .reply_header("ETag", "The source's sha256, for If-Match.")
            .errors(&["strategy_not_found", "invalid_strategy_name", "unsafe_path", "invalid_encoding"]),
        Route::put("/v1/strategies/{name}", put_strategy)
            .scope(Scope::StrategiesWrite)
            .doc("putStrategy", "strategies", "Create or replace a strategy")
            .describe("Validated statically first (422 `invalid_strategy` with `details.errors`); then a deep validation job starts. `If-Match: <sha256>` makes read-modify-write safe (412 on a concurrent edit).")
            .path::<StrategyPath>()
            .header("If-Match", "The sha256 (ETag) you read; `*` for any existing version.")
            .json_body(schema::<StrategyBody>)
            .reply(200, "replaced", schema::<StrategyWritten>)
            .reply_header("ETag", "The new source's sha256.")
            .reply(201, "created", schema::<StrategyWritten>)
            .reply_header("ETag", "The new source's sha256.")
            .errors(&["invalid_if_match", "precondition_failed", "source_too_large", "invalid_strategy", "invalid_strategy_name", "unsafe_path"]),
        Route::delete("/v1/strategies/{name}", delete_strategy)
            .scope(Scope::StrategiesWrite)
            .doc("deleteStrategy", "strategies", "Delete a strategy's folder")
            .describe("Past results keep their copy of the source. `If-Match` is honoured.")
            .path::<StrategyPath>()
            .header("If-Match", "The sha256 (ETag) you read; `*` for any existing version.")
            .reply(200, "deleted", schema::<StrategyDeleted>)
            .errors(&["invalid_if_match", "strategy_not_found", "precondition_failed", "invalid_strategy_name", "unsafe_path"]),
    ];
    routes.extend(REGISTRY.iter().copied().filter_map(submit_route));
    routes
}

/// `POST <submit.path>` of a kind users can submit: its request is the kind's,
/// planned and enqueued by the same service call as every other kind's.
fn submit_route(kind: &'static KindDef) -> Option<Route> {
    let submit = kind.submit.as_ref()?;
    let planning: Vec<&'static str> = crate::openapi::ERROR_CODES
        .iter()
        .filter(|c| c.planning)
        .map(|c| c.code)
        .collect();
    let handler = move |State(service): State<Service>,
                        headers: HeaderMap,
                        ApiJson(request): ApiJson<Value>| async move {
        let key = idempotency_key(&headers)?;
        let accepted = service.submit(kind, request, key).await?;
        Ok::<_, ApiError>((StatusCode::ACCEPTED, Json(accepted)).into_response())
    };
    let mut route = Route::post(submit.path, handler)
        .doc(&format!("submit_{}", kind.name), "jobs", submit.title)
        .describe(&format!(
            "{}\n\nJob kind `{}`: {}. Answers 202 at once with the job to poll; everything knowable is checked before anything is queued.",
            submit.description, kind.name, kind.description
        ))
        .header(
            "Idempotency-Key",
            "1 to 200 visible ASCII characters: a retried submit with the same key returns the same job (409 if the request differs).",
        )
        .json_body(kind.request_schema)
        .submit_of(kind)
        .reply(202, "queued (or, with a reused Idempotency-Key, the earlier job)", schema::<JobAccepted>)
        .errors(&["invalid_idempotency_key", "idempotency_key_reused"]);
    route.errors.extend(planning);
    Some(route)
}

/// A result: `job_id`, `kind` and the body of that kind's result, per kind.
fn result_schema(generator: &mut SchemaGenerator) -> Schema {
    let view = generator.subschema_for::<ResultView>().to_value();
    let kinds: Vec<Value> = REGISTRY
        .iter()
        .map(|kind| {
            serde_json::json!({
                "title": kind.name,
                "properties": {"kind": {"const": kind.name}},
                "allOf": [(kind.result_schema)(generator).to_value()],
            })
        })
        .collect();
    json_schema!({"allOf": [view], "anyOf": kinds})
}

fn png_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "contentMediaType": "image/png", "description": "PNG bytes."})
}

fn any_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "object"})
}

fn health_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "properties": {
            "status": {"const": "ok"},
            "version": {"type": "string"},
            "queue": {"type": "object", "description": "Jobs waiting, per queue.", "additionalProperties": {"type": "integer"}},
            "runners": runners_schema(),
        },
        "required": ["status", "version", "runners"],
    })
}

fn runners_schema() -> Value {
    serde_json::json!({"type": "object", "description": "Runners of the live workers (from their heartbeats): `ready` (warm, \
    taking jobs) of `total`, over `workers` processes. Jobs wait in the queue while `ready` is 0.",
        "properties": {"ready": {"type": "integer", "minimum": 0}, "total": {"type": "integer", "minimum": 0},
            "workers": {"type": "integer", "minimum": 0}},
        "required": ["ready", "total", "workers"]})
}

fn ready_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "object", "properties": {
        "ready": {"const": true},
        "runners": runners_schema(),
        "sandbox": {"type": ["object", "null"], "description": "What runners enforce on strategy code, as the latest worker to start reported it (null before any worker started): `enabled` (JESSE_MCP_SANDBOX), `landlock_abi`, and per part (`filesystem`, `network`, `uid`, `environment`, `rlimits`) whether it is enforced on this machine. Details are in that worker's start-up log.",
            "properties": {"enabled": {"type": "boolean"}, "landlock_abi": {"type": "integer"}},
            "additionalProperties": {"type": ["boolean", "integer"]}},
    }, "required": ["ready", "runners"]})
}

fn series_deleted_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "properties": {
            "exchange": {"type": "string"},
            "symbol": {"type": "string"},
            "deleted_rows": {"type": "integer"},
            "deleted_at": {"type": "string", "description": "RFC 3339 UTC"},
        },
        "required": ["exchange", "symbol", "deleted_rows", "deleted_at"],
    })
}

/// `{id}` of the job routes.
#[derive(Deserialize, JsonSchema)]
struct JobPath {
    /// Job id (a ULID) as returned by a submit or listed by GET /v1/jobs.
    id: String,
}

/// `{id}` and `{name}` of `GET /v1/jobs/{id}/charts/{name}.png` as documented;
/// the handler extracts [`ChartFile`], the path as axum serves it.
#[derive(JsonSchema)]
#[allow(dead_code, reason = "a schema only: its fields document the path")]
struct ChartPath {
    /// Job id (a ULID) of a succeeded backtest or monte_carlo job.
    id: String,
    /// The chart: `equity`, `drawdown`, `monthly`, `histogram` (backtest); `fan`, `histogram` (monte_carlo).
    #[schemars(extend("enum" = ["equity", "drawdown", "monthly", "histogram", "fan"]))]
    name: String,
}

/// The same path as axum serves it: `{file}` is `<name>.png`.
#[derive(Deserialize)]
struct ChartFile {
    id: String,
    file: String,
}

/// The size of a chart.
#[derive(Deserialize, JsonSchema)]
struct ChartQuery {
    /// Width in pixels, 320 to 2400 (default 1000).
    #[schemars(range(min = 320, max = 2400))]
    width: Option<u32>,
    /// Height in pixels, 240 to 1600 (default 600).
    #[schemars(range(min = 240, max = 1600))]
    height: Option<u32>,
}

async fn get_analysis(
    State(service): State<Service>,
    Path(JobPath { id }): Path<JobPath>,
) -> Result<Response, ApiError> {
    Ok(Json(service.analyze(&id).await?).into_response())
}

async fn get_report(
    State(service): State<Service>,
    Path(JobPath { id }): Path<JobPath>,
) -> Result<Response, ApiError> {
    let report = service.pipeline_report(&id).await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/markdown; charset=utf-8",
        )],
        report,
    )
        .into_response())
}

async fn pipeline_templates(State(service): State<Service>) -> Response {
    Json(service.pipeline_templates()).into_response()
}

async fn get_chart(
    State(service): State<Service>,
    Path(ChartFile { id, file }): Path<ChartFile>,
    ApiQuery(q): ApiQuery<ChartQuery>,
) -> Result<Response, ApiError> {
    let Some(name) = file.strip_suffix(".png") else {
        return Err(ApiError::not_found(
            "unknown_chart",
            format!("charts are PNG files: GET /v1/jobs/{id}/charts/<name>.png, not '{file}'"),
        ));
    };
    let png = service.chart(&id, name, q.width, q.height).await?;
    Ok(([(axum::http::header::CONTENT_TYPE, "image/png")], png).into_response())
}

async fn compare(
    State(service): State<Service>,
    ApiJson(request): ApiJson<CompareRequest>,
) -> Result<Response, ApiError> {
    Ok(Json(service.compare(request).await?).into_response())
}

/// `{exchange}/{symbol}` of the candle routes.
#[derive(Deserialize, JsonSchema)]
struct SeriesPath {
    /// Exchange name as Jesse spells it, URL-encoded (`Binance%20Perpetual%20Futures`).
    exchange: String,
    /// Symbol in Jesse's form, e.g. `BTC-USDT`.
    symbol: String,
}

/// `{name}` of the strategy routes.
#[derive(Deserialize, JsonSchema)]
struct StrategyPath {
    /// Strategy name (its folder), `^[A-Za-z_][A-Za-z0-9_]{0,63}$`.
    name: String,
}

/// `Json<T>` whose rejections speak the error envelope.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => ApiError::invalid(
            "invalid_request",
            format!(
                "the request body does not match the expected shape: {}",
                e.body_text()
            ),
        ),
        JsonRejection::JsonSyntaxError(e) => ApiError::bad_request(
            "malformed_json",
            format!("the request body is not valid JSON: {}", e.body_text()),
        ),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with the header Content-Type: application/json",
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            payload_too_large(JSON_BODY_LIMIT)
        }
        other => ApiError::bad_request("invalid_body", other.body_text()),
    }
}

fn payload_too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body exceeds the limit of {limit} bytes"),
    )
}

/// `Query<T>` whose rejections speak the error envelope.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e: QueryRejection| {
                ApiError::invalid(
                    "invalid_query",
                    format!("invalid query string: {}", e.body_text()),
                )
            })
    }
}

async fn health(State(service): State<Service>) -> Response {
    let answer = async {
        let mut body = service.health().await?;
        body["runners"] = runners(&service).await?;
        Ok::<_, ApiError>(body)
    };
    match answer.await {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The live fleet's runners, from the workers' heartbeats: `ready` (warm) of
/// `total`, over `workers` processes. A worker announces its runners before
/// they start and counts them ready once they have.
async fn runners(service: &Service) -> Result<Value, ApiError> {
    let (ready, total, workers) = service.store().fleet_readiness().await?;
    Ok(serde_json::json!({"ready": ready, "total": total, "workers": workers}))
}

async fn ready(State(service): State<Service>) -> Result<Response, ApiError> {
    let mut body = service.ready().await?;
    body["runners"] = runners(&service).await?;
    // Workers publish their runners' sandbox status as `sandbox.*` counters.
    let mut sandbox = serde_json::Map::new();
    for (name, value) in service.store().counters().await? {
        if let Some(part) = name.strip_prefix("sandbox.") {
            sandbox.insert(
                part.to_string(),
                if part == "landlock_abi" {
                    value.into()
                } else {
                    (value != 0).into()
                },
            );
        }
    }
    body["sandbox"] = if sandbox.is_empty() {
        Value::Null
    } else {
        Value::Object(sandbox)
    };
    Ok(Json(body).into_response())
}

async fn metrics(State(service): State<Service>) -> Result<Response, ApiError> {
    let text = crate::metrics::render(&service).await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
        .into_response())
}

/// The `Idempotency-Key` header of a submit, if any.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let key = match headers.get("idempotency-key") {
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                "the Idempotency-Key header must be visible ASCII",
            )
        })?),
        None => None,
    };
    if key.is_some_and(|k| k.is_empty() || k.len() > 200) {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "the Idempotency-Key header must be 1 to 200 characters",
        ));
    }
    Ok(key)
}

/// `GET /v1/jobs` filters.
#[derive(Deserialize, JsonSchema)]
struct ListQuery {
    /// Only jobs of this kind.
    #[schemars(with = "Option<JobKindName>")]
    kind: Option<String>,
    /// Only jobs in this status.
    #[schemars(with = "Option<JobStatus>")]
    status: Option<String>,
    /// Only jobs whose subject names this strategy (exact name, e.g. `SmaCross`).
    strategy: Option<String>,
    /// Only jobs whose subject names this symbol (e.g. `BTC-USDT`).
    symbol: Option<String>,
    /// Only jobs submitted with this tag.
    tag: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[schemars(range(min = 1, max = 200))]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

async fn list_jobs(
    State(service): State<Service>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let list = service
        .find_jobs(&JobQuery {
            kind: q.kind.as_deref(),
            status: q.status.as_deref(),
            strategy: q.strategy.as_deref(),
            symbol: q.symbol.as_deref(),
            tag: q.tag.as_deref(),
            limit: q.limit,
            cursor: q.cursor.as_deref(),
        })
        .await?;
    Ok(Json(list).into_response())
}

/// `GET /v1/jobs/{id}/children` filters.
#[derive(Deserialize, JsonSchema)]
struct ChildrenQuery {
    /// Only children in this status.
    #[schemars(with = "Option<JobStatus>")]
    status: Option<String>,
    /// Page size, 1 to 200 (default 50).
    #[schemars(range(min = 1, max = 200))]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

async fn list_children(
    State(service): State<Service>,
    Path(JobPath { id }): Path<JobPath>,
    ApiQuery(q): ApiQuery<ChildrenQuery>,
) -> Result<Response, ApiError> {
    let list = service
        .list_children(&id, q.status.as_deref(), q.limit, q.cursor.as_deref())
        .await?;
    Ok(Json(list).into_response())
}

/// `GET /v1/jobs/{id}/logs` paging.
#[derive(Deserialize, JsonSchema)]
struct LogsQuery {
    /// The `seq` of the last line you have (`next_after` of the previous page);
    /// the page starts after it. Default: from the first line.
    after: Option<u64>,
    /// Lines per page, 1 to 200 (default 200).
    #[schemars(range(min = 1, max = 200))]
    limit: Option<i64>,
}

async fn job_logs(
    State(service): State<Service>,
    Path(JobPath { id }): Path<JobPath>,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> Result<Response, ApiError> {
    Ok(Json(service.job_logs(&id, q.after, q.limit).await?).into_response())
}

async fn get_job(
    State(service): State<Service>,
    Path(JobPath { id }): Path<JobPath>,
) -> Result<Response, ApiError> {
    Ok(Json(service.get_job(&id).await?).into_response())
}

/// What a result read includes.
#[derive(Deserialize, JsonSchema)]
struct ResultParams {
    /// Include the kind's rows: a backtest's `trades`, a batch's `leaderboard`
    /// (default: a backtest as submitted, a batch always).
    include_trades: Option<bool>,
    /// Include the equity curve (default: when it was computed).
    include_equity_curve: Option<bool>,
    /// First row of the page (default 0); the same as `offset`.
    trades_offset: Option<usize>,
    /// Rows per page (default and at most 10000); the same as `limit`.
    trades_limit: Option<usize>,
    /// First row of the page of any kind's rows (default 0).
    offset: Option<usize>,
    /// Rows per page of any kind's rows (default and at most 10000).
    limit: Option<usize>,
    /// Keep each trade's nested `orders` (default false: compact trades).
    include_orders: Option<bool>,
}

async fn get_result(
    State(service): State<Service>,
    Path(JobPath { id }): Path<JobPath>,
    ApiQuery(q): ApiQuery<ResultParams>,
) -> Result<Response, ApiError> {
    let query = ResultQuery {
        include_trades: q.include_trades,
        include_equity_curve: q.include_equity_curve,
        trades_offset: q.trades_offset.or(q.offset).unwrap_or(0),
        trades_limit: q.trades_limit.or(q.limit),
        include_orders: q.include_orders.unwrap_or(false),
    };
    Ok(Json(service.get_result(&id, &query).await?).into_response())
}

async fn trades_csv(
    State(service): State<Service>,
    Path(JobPath { id }): Path<JobPath>,
) -> Result<Response, ApiError> {
    let chunks = service.trades_csv(&id).await?;
    // As the candle export: a store error mid-stream ends the response early (logged).
    let stream = futures::StreamExt::map(chunks, |chunk| {
        chunk.map_err(|e| {
            tracing::error!(error = %e, "trades CSV export failed mid-stream");
            std::io::Error::other("the store failed while reading the trades")
        })
    });
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/csv; charset=utf-8".to_string(),
            ),
            attachment(&format!("{id}-trades")),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

/// A `Content-Disposition` naming the download `<stem>.csv`, the stem cut to
/// letters, digits, `-` and `_` (other characters become `_`).
fn attachment(stem: &str) -> (axum::http::HeaderName, String) {
    let safe: String = stem
        .chars()
        .take(120)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    (
        axum::http::header::CONTENT_DISPOSITION,
        format!("attachment; filename=\"{safe}.csv\""),
    )
}

async fn equity_csv(
    State(service): State<Service>,
    Path(JobPath { id }): Path<JobPath>,
) -> Result<Response, ApiError> {
    let csv = service.equity_csv(&id).await?;
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/csv; charset=utf-8".to_string(),
            ),
            attachment(&format!("{id}-equity")),
        ],
        csv,
    )
        .into_response())
}

async fn cancel_job(
    State(service): State<Service>,
    Path(JobPath { id }): Path<JobPath>,
    granted: Option<Extension<Granted>>,
) -> Result<Response, ApiError> {
    let actor = crate::auth::actor(granted.as_deref());
    Ok(Json(service.cancel_job(&id, actor).await?).into_response())
}

async fn list_candles(State(service): State<Service>) -> Result<Response, ApiError> {
    Ok(Json(service.list_series().await?).into_response())
}

/// The series a CSV upload is for.
#[derive(Deserialize, JsonSchema)]
struct CsvParams {
    /// Exchange name as Jesse spells it, e.g. `Binance Perpetual Futures`.
    #[schemars(with = "String")]
    exchange: Option<String>,
    /// Symbol in Jesse's form, e.g. `BTC-USDT`.
    #[schemars(with = "String")]
    symbol: Option<String>,
}

async fn import_csv(
    State(service): State<Service>,
    ApiQuery(q): ApiQuery<CsvParams>,
    request: Request,
) -> Result<Response, ApiError> {
    let (Some(exchange), Some(symbol)) = (q.exchange, q.symbol) else {
        return Err(ApiError::invalid(
            "missing_parameter",
            "give the series as query parameters: /v1/candles/csv?exchange=Binance%20Perpetual%20Futures&symbol=BTC-USDT",
        ));
    };
    // Bounds the memory of uploads: each is held whole while it is parsed.
    let _upload = CSV_UPLOADS
        .acquire()
        .await
        .expect("the semaphore is never closed");
    let body = Bytes::from_request(request, &()).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            payload_too_large(CSV_BODY_LIMIT)
        } else {
            ApiError::bad_request("invalid_body", e.body_text())
        }
    })?;
    Ok(Json(service.import_csv(&exchange, &symbol, &body).await?).into_response())
}

/// The range of a series to read.
#[derive(Deserialize, JsonSchema)]
struct RangeQuery {
    /// First day, YYYY-MM-DD UTC (default: the first stored minute).
    start_date: Option<String>,
    /// Day to stop before, YYYY-MM-DD UTC, exclusive (default: after the last stored minute).
    end_date: Option<String>,
}

async fn gap_report(
    State(service): State<Service>,
    Path(SeriesPath { exchange, symbol }): Path<SeriesPath>,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<Response, ApiError> {
    let report = service
        .gap_report(
            &exchange,
            &symbol,
            q.start_date.as_deref(),
            q.end_date.as_deref(),
        )
        .await?;
    Ok(Json(report).into_response())
}

async fn export_csv(
    State(service): State<Service>,
    Path(SeriesPath { exchange, symbol }): Path<SeriesPath>,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<Response, ApiError> {
    let chunks = service
        .export_csv(
            &exchange,
            &symbol,
            q.start_date.as_deref(),
            q.end_date.as_deref(),
        )
        .await?;
    // Read from the store page by page as the client takes them; a store
    // error mid-stream ends the response early (logged), as no status is left to send.
    let stream = futures::StreamExt::map(chunks, |chunk| {
        chunk.map_err(|e| {
            tracing::error!(error = %e, "CSV export failed mid-stream");
            std::io::Error::other("the store failed while reading the series")
        })
    });
    Ok((
        [
            (axum::http::header::CONTENT_TYPE, "text/csv".to_string()),
            attachment(&format!("{exchange}-{symbol}")),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

async fn delete_series(
    State(service): State<Service>,
    Path(SeriesPath { exchange, symbol }): Path<SeriesPath>,
) -> Result<Response, ApiError> {
    Ok(Json(service.delete_series(&exchange, &symbol).await?).into_response())
}

async fn list_schedules(State(service): State<Service>) -> Result<Response, ApiError> {
    Ok(Json(service.list_schedules().await?).into_response())
}

async fn put_schedules(
    State(service): State<Service>,
    ApiJson(body): ApiJson<SchedulesBody>,
) -> Result<Response, ApiError> {
    Ok(Json(service.put_schedules(body).await?).into_response())
}

async fn list_strategies(State(service): State<Service>) -> Result<Response, ApiError> {
    Ok(Json(service.list_strategies().await?).into_response())
}

fn etag(sha256: &str) -> [(axum::http::HeaderName, String); 1] {
    [(axum::http::header::ETAG, format!("\"{sha256}\""))]
}

fn if_match(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    headers
        .get(axum::http::header::IF_MATCH)
        .map(|v| {
            v.to_str().map(str::to_string).map_err(|_| {
                ApiError::bad_request(
                    "invalid_if_match",
                    "If-Match must be the strategy's sha256 (its ETag)",
                )
            })
        })
        .transpose()
}

async fn get_strategy(
    State(service): State<Service>,
    Path(StrategyPath { name }): Path<StrategyPath>,
) -> Result<Response, ApiError> {
    let view = service.get_strategy(&name).await?;
    Ok((etag(&view.strategy.sha256), Json(view)).into_response())
}

/// `PUT /v1/strategies/{name}`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct StrategyBody {
    /// Python source of the strategy (at most 256 KiB); its class must be named like the strategy.
    code: String,
}

async fn put_strategy(
    State(service): State<Service>,
    Path(StrategyPath { name }): Path<StrategyPath>,
    granted: Option<Extension<Granted>>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<StrategyBody>,
) -> Result<Response, ApiError> {
    let actor = crate::auth::actor(granted.as_deref());
    let written = service
        .put_strategy(&name, body.code, if_match(&headers)?, actor)
        .await?;
    let status = if written.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, etag(&written.strategy.sha256), Json(written)).into_response())
}

async fn delete_strategy(
    State(service): State<Service>,
    Path(StrategyPath { name }): Path<StrategyPath>,
    granted: Option<Extension<Granted>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let actor = crate::auth::actor(granted.as_deref());
    Ok(Json(
        service
            .delete_strategy(&name, if_match(&headers)?, actor)
            .await?,
    )
    .into_response())
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateBody {
    /// The strategy name the code is meant for (its class must be named so).
    #[serde(default)]
    pub name: Option<String>,
    /// Python source of the strategy.
    pub code: String,
    /// Also import and smoke-test it in a runner (a few seconds).
    #[serde(default)]
    pub deep: bool,
}

async fn validate_strategy(
    State(service): State<Service>,
    granted: Option<Extension<Granted>>,
    ApiJson(body): ApiJson<ValidateBody>,
) -> Result<Response, ApiError> {
    // Deep validation runs the submitted code: it needs the scope that writes code.
    if body.deep {
        crate::auth::check(granted.as_deref(), Scope::StrategiesWrite)?;
    }
    let actor = crate::auth::actor(granted.as_deref());
    Ok(Json(
        service
            .validate_strategy(body.name.as_deref(), &body.code, body.deep, actor)
            .await?,
    )
    .into_response())
}

/// The document is the same for every request of a process: built on first use.
static DOCUMENT: tokio::sync::OnceCell<Value> = tokio::sync::OnceCell::const_new();

async fn openapi(State(service): State<Service>) -> Response {
    let document = DOCUMENT
        .get_or_init(|| async {
            let tools = crate::openapi::mcp_tools(&service).await;
            crate::openapi::document(&routes(), &tools)
        })
        .await;
    Json(document).into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found(
        "not_found",
        "no such endpoint; see GET /v1/openapi.json for the API",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept that method; see GET /v1/openapi.json",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `{param}` of a path template is declared, and nothing else is.
    #[test]
    fn path_parameters_match_templates() {
        let document = crate::openapi::document(&routes(), &[]);
        for route in routes() {
            // A segment's parameter, with or without a suffix (`{name}.png`).
            let mut templated: Vec<&str> = route
                .path
                .split('/')
                .filter_map(|s| s.strip_prefix('{')?.split_once('}').map(|(p, _)| p))
                .collect();
            templated.sort_unstable();
            let operation =
                &document["paths"][&route.path][route.method.as_str().to_ascii_lowercase()];
            let mut declared: Vec<&str> = operation["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .filter_map(|p| p["name"].as_str())
                .collect();
            declared.sort_unstable();
            assert_eq!(templated, declared, "{} {}", route.method, route.path);
        }
    }

    #[test]
    fn routes_are_unique_and_named() {
        let mut seen = std::collections::HashSet::new();
        let mut ids = std::collections::HashSet::new();
        for route in routes() {
            assert!(
                seen.insert((route.method.clone(), route.path.clone())),
                "{} {} twice",
                route.method,
                route.path
            );
            assert!(!route.operation_id.is_empty() && ids.insert(route.operation_id.clone()));
            assert!(!route.summary.is_empty());
            for code in route.error_codes() {
                assert!(
                    crate::openapi::error_code(code).is_some(),
                    "{} {}: undocumented code {code}",
                    route.method,
                    route.path
                );
            }
        }
    }
}
