//! The OpenAPI 3.1 document of the HTTP API, rendered from the route table the
//! router is built from ([`crate::rest::routes`]), the kind registry and the
//! Rust types the handlers use (schemas via schemars), so it cannot drift from
//! the code. Owns the list of error codes the API answers with and the codes a
//! failed job records; it never serves anything itself.

use std::borrow::Cow;
use std::collections::BTreeMap;

use jesse_mcp_core::ErrorBody;
use jesse_mcp_core::kinds::REGISTRY;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Map, Value, json};

use crate::rest::{Params, Route};

/// Where the document keeps its schemas.
const COMPONENTS: &str = "#/components/schemas/";
/// The security scheme's name in the document.
pub const SECURITY_SCHEME: &str = "bearerAuth";

/// One error code the API answers with: its HTTP status and what it means.
pub struct ErrorCodeDoc {
    pub code: &'static str,
    pub status: u16,
    pub description: &'static str,
    /// Raised while a submit is planned (any kind's submit route may answer with it).
    pub planning: bool,
}

const fn code(code: &'static str, status: u16, description: &'static str) -> ErrorCodeDoc {
    ErrorCodeDoc {
        code,
        status,
        description,
        planning: false,
    }
}

const fn planning(code: &'static str, description: &'static str) -> ErrorCodeDoc {
    ErrorCodeDoc {
        code,
        status: 422,
        description,
        planning: true,
    }
}

/// Every `error.code` an HTTP response (or an MCP tool error) can carry.
/// tests/tests/openapi.rs checks that every code the sources construct is here.
pub const ERROR_CODES: &[ErrorCodeDoc] = &[
    code("malformed_json", 400, "The body is not valid JSON."),
    code(
        "invalid_body",
        400,
        "The body could not be read (e.g. the connection broke mid-upload).",
    ),
    code(
        "invalid_idempotency_key",
        400,
        "The Idempotency-Key header is not 1 to 200 visible ASCII characters.",
    ),
    code(
        "invalid_if_match",
        400,
        "The If-Match header is not visible ASCII; send the strategy's sha256 (its ETag).",
    ),
    code(
        "unauthorized",
        401,
        "No valid bearer token (only when the operator configured tokens).",
    ),
    code(
        "forbidden",
        403,
        "The token lacks the scope this route or tool needs; the message names it.",
    ),
    code(
        "not_found",
        404,
        "No such endpoint; see GET /v1/openapi.json.",
    ),
    code("job_not_found", 404, "No job with that id."),
    code(
        "series_not_found",
        404,
        "No candles stored for that exchange and symbol.",
    ),
    code("strategy_not_found", 404, "No strategy with that name."),
    code(
        "method_not_allowed",
        405,
        "The endpoint exists but not with that method.",
    ),
    code(
        "idempotency_key_reused",
        409,
        "The Idempotency-Key was used before for a different request; use a new key. `details.job_id` names the earlier job.",
    ),
    code(
        "job_already_finished",
        409,
        "The job already ended; there is nothing to cancel.",
    ),
    code(
        "result_not_ready",
        409,
        "The job has not succeeded (yet); poll GET /v1/jobs/{id} until it is terminal.",
    ),
    code(
        "job_has_no_result",
        409,
        "The job ended without a result (failed or cancelled); its `error` says why.",
    ),
    code(
        "precondition_failed",
        412,
        "If-Match does not name the current version: the strategy changed since it was read.",
    ),
    code(
        "payload_too_large",
        413,
        "The body exceeds the route's limit (1 MiB for JSON, 512 MiB for CSV).",
    ),
    code(
        "source_too_large",
        413,
        "The strategy source is over 256 KiB.",
    ),
    code(
        "unsupported_media_type",
        415,
        "The body's Content-Type is not the route's: `application/json`, or `text/csv` for the CSV upload (`details.expected`). Form-encoded, multipart and text/plain bodies are refused everywhere, so no cross-site form can change anything.",
    ),
    code(
        "origin_not_allowed",
        403,
        "A browser sent the request from another web origin; only the service's own origin and those in JESSE_MCP_ALLOWED_ORIGINS may call it.",
    ),
    code(
        "host_not_allowed",
        421,
        "The Host header names a host this service does not answer for (JESSE_MCP_ALLOWED_HOSTS; loopback names by default). Refuses DNS rebinding.",
    ),
    code(
        "duplicate_header",
        400,
        "A Host, Origin, Content-Type or Authorization header was sent more than once (`details.header`); send each once.",
    ),
    code(
        "invalid_host",
        400,
        "The Host header carries user information (`name@host`); send host[:port] only.",
    ),
    code(
        "mcp_sessions_exhausted",
        503,
        "MCP only: an `initialize` found every MCP session in its way in use: 429 when this client (token, or IP address without tokens) holds JESSE_MCP_MAX_SESSIONS_PER_CLIENT sessions (`details.scope` `client`), 503 when the service holds JESSE_MCP_MAX_SESSIONS (`scope` `service`). End unused sessions (DELETE /mcp) or retry later (Retry-After).",
    ),
    code(
        "invalid_request",
        422,
        "The JSON body does not match the route's schema (unknown field, wrong type, missing field).",
    ),
    code(
        "invalid_query",
        422,
        "A query parameter has the wrong type.",
    ),
    code(
        "missing_parameter",
        422,
        "A required query parameter is missing.",
    ),
    code("invalid_kind", 422, "Unknown job kind in a filter."),
    code("invalid_status", 422, "Unknown job status in a filter."),
    code(
        "invalid_filter",
        422,
        "A `strategy`, `symbol` or `tag` filter no job can match (too long, or a control character).",
    ),
    code("invalid_limit", 422, "`limit` is outside 1..200."),
    code(
        "invalid_arguments",
        422,
        "MCP only: a tool's arguments do not match its inputSchema (a missing or unknown field, a wrong type); `details.tool` names the tool.",
    ),
    code(
        "invalid_timeout",
        422,
        "MCP only: `job_wait`'s `timeout_seconds` is outside 1..50.",
    ),
    code(
        "invalid_csv",
        422,
        "The CSV header is not `timestamp,open,high,low,close,volume`.",
    ),
    code(
        "invalid_cron",
        422,
        "A schedule's cron expression does not parse (5 or 6 fields, UTC).",
    ),
    code(
        "duplicate_schedule",
        422,
        "The same exchange and symbol appear twice in a schedule list.",
    ),
    code("invalid_encoding", 422, "The strategy file is not UTF-8."),
    code(
        "unsafe_path",
        422,
        "The strategy path resolves outside the strategies directory (a symlink).",
    ),
    code(
        "not_a_backtest",
        422,
        "Analysis and comparison read a backtest's result; the job is of another kind (`details.kind`).",
    ),
    code(
        "not_exportable",
        422,
        "trades.csv and equity.csv export a backtest's trades and equity curve; the job is of another kind (`details.kind`).",
    ),
    code(
        "equity_curve_not_computed",
        422,
        "The backtest's stored result has no equity curve to export (stored before the worker kept one for every backtest).",
    ),
    code(
        "invalid_job_ids",
        422,
        "A comparison needs 2 to 20 distinct job ids.",
    ),
    code(
        "unknown_job_id",
        422,
        "A job id in the body names no job (`details.job_id`).",
    ),
    code(
        "job_not_succeeded",
        422,
        "A job in the body has not succeeded (`details.job_id`, `details.status`); only finished results can be compared.",
    ),
    code(
        "unknown_chart",
        404,
        "No chart of that name; `details.names` lists the charts of the job's kind (URLs end in `.png`).",
    ),
    code(
        "not_a_pipeline",
        422,
        "A report was asked of a job that is not a research pipeline.",
    ),
    planning(
        "invalid_pipeline_name",
        "A pipeline's name must be 1 to 100 characters.",
    ),
    planning("invalid_steps", "A pipeline has 1 to 20 steps."),
    planning(
        "invalid_step_id",
        "A step id is 1 to 40 of a-z, 0-9 and _, starting with a letter; `details.step` names it.",
    ),
    planning("duplicate_step_id", "Two steps of a pipeline share an id."),
    planning(
        "unknown_step_kind",
        "A step's kind is not one a pipeline step can be; `details.allowed` lists them.",
    ),
    planning(
        "invalid_step_input",
        "A step's input is not an object, or is larger than 64 KiB.",
    ),
    planning(
        "invalid_reference",
        "A `${step.path}` reference in a step's input is malformed.",
    ),
    planning(
        "invalid_gate",
        "A gate is not `<step>.<path> <op> <literal>`, compares a non-number with an ordering, or names a later step.",
    ),
    planning(
        "unknown_step_reference",
        "A step's needs, input or gate names a step the pipeline does not have (`details.missing`).",
    ),
    planning(
        "later_step_reference",
        "A step names a step listed after it; list steps in the order they run.",
    ),
    planning(
        "pipeline_cycle",
        "Steps depend on each other in a cycle; the message writes it out.",
    ),
    planning(
        "unknown_output_path",
        "A reference or gate names a path that the producing step's kind never has in its result; the message lists the known fields.",
    ),
    planning(
        "unknown_template",
        "No pipeline template of that name; `details.available` lists them (GET /v1/pipelines/templates).",
    ),
    code(
        "chart_not_applicable",
        422,
        "The chart does not apply to the job's kind; `details.names` lists those that do.",
    ),
    code(
        "chart_unavailable",
        422,
        "The job's result lacks what the chart shows (a backtest without trades has no equity curve).",
    ),
    code(
        "invalid_chart_size",
        422,
        "`width` must be 320..2400 and `height` 240..1600 pixels.",
    ),
    planning(
        "unsupported_exchange",
        "The exchange is not one Jesse can backtest (or import from); `details.supported` lists them.",
    ),
    planning(
        "unsupported_timeframe",
        "The timeframe is not one of Jesse's.",
    ),
    planning(
        "invalid_symbol",
        "The symbol is not in Jesse's BASE-QUOTE form, e.g. BTC-USDT.",
    ),
    planning("invalid_date", "A date is not YYYY-MM-DD (UTC)."),
    planning(
        "invalid_date_range",
        "The start date is not before the end date (or the range is otherwise impossible).",
    ),
    planning(
        "invalid_number",
        "A number is out of range (balance, fee, leverage, warm-up candles...).",
    ),
    planning("invalid_type", "`type` is not `futures` or `spot`."),
    planning(
        "invalid_leverage_mode",
        "`leverage_mode` is not `cross` or `isolated`.",
    ),
    planning("invalid_routes", "`routes` is empty or inconsistent."),
    planning(
        "duplicate_route",
        "The same symbol and timeframe appear twice among routes and data routes.",
    ),
    planning(
        "missing_field",
        "A required field is missing (`details.field` names it).",
    ),
    planning(
        "invalid_strategy_name",
        "The strategy name does not match ^[A-Za-z_][A-Za-z0-9_]{0,63}$.",
    ),
    planning("unknown_strategy", "No strategy with that name."),
    planning(
        "invalid_strategy",
        "The strategy does not pass static validation; `details.errors` lists the problems.",
    ),
    planning(
        "invalid_tags",
        "`tags` is not a list of at most 16 strings of 1 to 64 characters; `details` gives the bounds.",
    ),
    planning(
        "invalid_hyperparameter",
        "A hyperparameter value (a backtest's, a batch variant's, a study's range, option or fixed value) is not one the strategy declares: wrong type, outside [min, max], or not among its options. `details` names the field, the value and the declaration.",
    ),
    planning(
        "unknown_hyperparameter",
        "A hyperparameter override names no hyperparameter the strategy declares.",
    ),
    planning(
        "missing_candles",
        "1m candles are missing for the range plus warm-up; `details` lists the missing ranges (or pass `allow_gaps`).",
    ),
    planning(
        "empty_batch",
        "A batch with no variants: give a grid with at least one list, and/or variants.",
    ),
    planning(
        "too_many_variants",
        "A batch expands to more variants than it may hold (10000).",
    ),
    planning(
        "invalid_grid",
        "A batch grid is unusable (an empty list, or symbols/timeframes with a multi-route base).",
    ),
    planning(
        "invalid_variant",
        "A batch variant is not an object of backtest fields (or does not plan as a backtest; see `details`).",
    ),
    planning(
        "invalid_rank_by",
        "A batch's `rank_by` is not one of Jesse's numeric metrics.",
    ),
    planning(
        "invalid_search_space",
        "A study's search space entry is unusable (empty range, bad step, options with a range...); `details.field` names it.",
    ),
    planning(
        "empty_search_space",
        "Nothing to optimize: no searchable hyperparameter is declared or given.",
    ),
    planning(
        "grid_too_large",
        "A grid study has more points than `trials` (or than a study may hold, 10000).",
    ),
    planning(
        "invalid_objective",
        "The objective is neither one of Jesse's fitness functions nor a numeric Jesse metric.",
    ),
    planning(
        "invalid_objectives",
        "The objectives do not fit the sampler (nsga2 needs two or more, the others one).",
    ),
    planning("invalid_early_stop", "early_stop needs a single objective."),
    planning(
        "invalid_constraint",
        "A study's constraint names no numeric metric or has no usable bound.",
    ),
    planning(
        "overlapping_periods",
        "A study's training and testing periods overlap; testing must be out of sample.",
    ),
    planning(
        "invalid_dates",
        "The periods are missing, mixed or too short to split.",
    ),
    planning(
        "invalid_windows",
        "Walk-forward windows cannot be cut from the range with these lengths.",
    ),
    planning(
        "too_many_windows",
        "The walk-forward range makes more than 100 windows.",
    ),
    planning(
        "window_too_short",
        "A walk-forward period holds fewer than 10 candles of the largest timeframe.",
    ),
    planning(
        "unknown_source",
        "The Monte Carlo `source` (or a pairs backtest's `screen_job_id`) names no job.",
    ),
    planning(
        "invalid_source",
        "The Monte Carlo `source` job is not a succeeded backtest.",
    ),
    planning(
        "too_few_symbols",
        "A pairs screen needs at least 2 symbols with candles in the range.",
    ),
    planning(
        "too_many_symbols",
        "A pairs screen takes at most 50 symbols; list the ones to screen in `symbols`.",
    ),
    planning(
        "invalid_symbols",
        "A symbol list repeats a symbol, or a pairs backtest's `symbols` are not two different legs.",
    ),
    planning(
        "no_candles",
        "No 1m candles of a listed symbol are stored in the range (`details.symbol`).",
    ),
    planning(
        "insufficient_overlap",
        "Two series of a pairs screen share fewer than 100 bars of the timeframe in the range (`details.pair`).",
    ),
    planning(
        "too_many_bars",
        "A pairs screen's range holds more than 50000 bars of the timeframe per series.",
    ),
    planning(
        "invalid_pipeline",
        "The candle pipeline's parameters are unusable for Jesse's pipeline.",
    ),
    code(
        "internal",
        500,
        "An internal error; details are in the service log, never in the response.",
    ),
    code(
        "store_full",
        507,
        "The store's disk is full: the write was refused (an upload says in `details.committed` exactly which rows it \
stored before, and `rows_received`). Reads still work; free space on the data directory's disk and retry.",
    ),
    code(
        "store_unwritable",
        503,
        "/health and /ready only: the store answers reads but a probe write fails because its disk is full (or under \
1 MiB is free). Free space on the data directory's disk; the store recovers at once.",
    ),
    code(
        "unavailable",
        503,
        "The store or the queue is unreachable or restarting; retry shortly.",
    ),
];

/// Codes a failed job records in its `error` beyond [`ERROR_CODES`] (a child
/// job refused by planning records that refusal's code).
pub const JOB_ERROR_CODES: &[(&str, &str)] = &[
    (
        "cancelled",
        "Cancelled by request (or its parent job ended).",
    ),
    (
        "step_failed",
        "A pipeline's step failed or was cancelled; `details` names the step, its job and its error.",
    ),
    (
        "step_input_rejected",
        "A pipeline's step could not start: its input, with earlier outputs filled in, was refused by its kind (`details.error`).",
    ),
    (
        "timed_out",
        "Ran longer than JESSE_MCP_JOB_TIMEOUT_SECS and was interrupted.",
    ),
    (
        "runner_crashed",
        "The runner process died under the job on every attempt (JESSE_MCP_MAX_ATTEMPTS).",
    ),
    (
        "runner_unavailable",
        "None of the worker's runners could start for JESSE_MCP_RUNNER_UNAVAILABLE_SECS while the job waited (see /metrics `jesse_mcp_runner_start_failures_total` and the worker's log); submit it again once the worker is healthy.",
    ),
    (
        "runner_error",
        "Jesse or the runner raised outside the strategy; `details` carries the exception.",
    ),
    (
        "memory_limit_exceeded",
        "The job's process went over its address-space limit (JESSE_MCP_RUNNER_MEMORY_MB; Python's MemoryError). Not retried.",
    ),
    (
        "cpu_limit_exceeded",
        "The job's process used up its CPU time (JESSE_MCP_RUNNER_CPU_SECS). Not retried.",
    ),
    (
        "file_size_limit_exceeded",
        "The job wrote a file larger than JESSE_MCP_RUNNER_FILE_SIZE_MB. Not retried.",
    ),
    (
        "sandbox_failed",
        "The job's process could not enter the sandbox, so the strategy was not run; see the worker log.",
    ),
    (
        "strategy_error",
        "The strategy raised; `details.location` is the line, `details.traceback` the traceback.",
    ),
    (
        "strategy_load_error",
        "The strategy could not be imported or instantiated.",
    ),
    (
        "interrupted",
        "Jesse was interrupted (a cancel of a running job).",
    ),
    (
        "invalid_hyperparameters",
        "Jesse refused the hyperparameters at run time.",
    ),
    (
        "invalid_job",
        "The stored job parameters are unreadable (a job from another version).",
    ),
    (
        "invalid_result",
        "The runner answered with a result that could not be read.",
    ),
    (
        "unknown_symbol",
        "A candle import: the exchange does not list the symbol.",
    ),
    (
        "rate_limited",
        "A candle import: the exchange kept rate-limiting after the retries.",
    ),
    (
        "exchange_unavailable",
        "A candle import: the exchange kept failing after the retries.",
    ),
    (
        "exchange_error",
        "A candle import: the exchange answered with an error.",
    ),
    (
        "egress_refused",
        "A candle import tried to reach something other than its exchange's endpoint (e.g. a redirect elsewhere); not retried.",
    ),
    (
        "early_stopped",
        "A study's trial past its early stop: not run.",
    ),
    (
        "too_few_trades",
        "A trade Monte Carlo of a backtest with fewer than two closed trades.",
    ),
    (
        "candles_changed",
        "A pairs screen whose chunks read different candles of a series (it changed while the screen ran).",
    ),
    (
        "backtest_failed",
        "A pairs backtest whose child backtest failed; `details.error` is its error.",
    ),
    (
        "source_failed",
        "A Monte Carlo whose original backtest failed or is gone.",
    ),
];

pub fn error_code(code: &str) -> Option<&'static ErrorCodeDoc> {
    ERROR_CODES.iter().find(|c| c.code == code)
}

/// The `kind` of a job as a filter accepts it: one of the registered kinds.
pub struct JobKindName;

impl JsonSchema for JobKindName {
    fn schema_name() -> Cow<'static, str> {
        "JobKind".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names: Vec<&str> = REGISTRY.iter().map(|k| k.name).collect();
        let described: Map<String, Value> = REGISTRY
            .iter()
            .map(|k| (k.name.to_string(), Value::from(k.description)))
            .collect();
        let list: Vec<String> = REGISTRY
            .iter()
            .map(|k| format!("- `{}`: {}", k.name, k.description))
            .collect();
        json_schema!({
            "type": "string",
            "enum": names,
            "description": format!("A job kind (every kind shares the job resource and the status vocabulary):\n{}", list.join("\n")),
            "x-enum-descriptions": described,
        })
    }
}

/// An MCP tool as the `/mcp` description lists it.
#[derive(Debug, Clone)]
pub struct McpTool {
    pub name: String,
    pub title: Option<String>,
}

/// The tools the MCP server lists, asked from a real server instance (the same
/// handler `/mcp` serves), so the document shows exactly what clients get.
pub async fn mcp_tools(service: &crate::service::Service) -> Vec<McpTool> {
    use rmcp::ServerHandler;
    use rmcp::model::NumberOrString;
    use rmcp::service::RequestContext;

    let (transport, _client_end) = tokio::io::duplex(4096);
    let running =
        rmcp::service::serve_directly(crate::mcp::JesseMcp::new(service.clone()), transport, None);
    let context = RequestContext::new(NumberOrString::Number(0), running.peer().clone());
    let tools = match running.service().list_tools(None, context).await {
        Ok(list) => list
            .tools
            .into_iter()
            .map(|t| McpTool {
                title: t
                    .title
                    .clone()
                    .or_else(|| t.annotations.as_ref().and_then(|a| a.title.clone())),
                name: t.name.into_owned(),
            })
            .collect(),
        Err(e) => {
            tracing::error!(error = %e, "listing MCP tools for the OpenAPI document failed");
            Vec::new()
        }
    };
    let _ = running.cancel().await;
    tools
}

/// The document: every route of `routes`, the MCP endpoint with `mcp_tools`,
/// the error codes, the job kinds and the bearer scheme.
pub fn document(routes: &[Route], mcp_tools: &[McpTool]) -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    let envelope = generator.subschema_for::<ErrorBody>();
    generator.subschema_for::<JobKindName>();

    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for route in routes {
        let operation = operation(route, &mut generator);
        paths
            .entry(route.path.clone())
            .or_default()
            .insert(route.method.as_str().to_ascii_lowercase(), operation);
    }
    paths.insert("/mcp".into(), mcp_path(mcp_tools));

    let mut schemas: Map<String, Value> = generator.take_definitions(true).into_iter().collect();
    // The error body's `code` is one of the documented codes.
    if let Some(body) = schemas.get_mut("ErrorBody") {
        body["properties"]["code"] = json!({
            "description": "Stable machine-readable code: an `ErrorCode` in responses; a failed job's `error` may also hold a `JobErrorCode`.",
            "anyOf": [{"$ref": format!("{COMPONENTS}ErrorCode")}, {"$ref": format!("{COMPONENTS}JobErrorCode")}],
        });
    }
    schemas.insert("ErrorCode".into(), error_code_schema());
    schemas.insert("JobErrorCode".into(), job_error_code_schema());
    schemas.insert(
        "ErrorEnvelope".into(),
        json!({
            "type": "object",
            "description": "Every error response: `{\"error\": {code, message, details}}`. 4xx messages say what to change; 5xx never carry internals.",
            "properties": {"error": {
                "$ref": envelope.as_object().and_then(|o| o.get("$ref")).cloned().unwrap_or(Value::Null),
                "properties": {"code": {"$ref": format!("{COMPONENTS}ErrorCode")}},
            }},
            "required": ["error"],
        }),
    );

    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "jesse-mcp",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Run real Jesse backtests through a job queue. Submit (202 with a job id), poll GET /v1/jobs/{id} until the status is terminal (succeeded, failed, cancelled), then read GET /v1/jobs/{id}/result. Metrics are Jesse's own; NaN and ±infinity become null. Every error is `{\"error\": {code, message, details}}` with a code from `ErrorCode`. With tokens configured (JESSE_MCP_TOKENS) every route but /health needs `Authorization: Bearer <token>` with the scope named in the operation's `x-required-scope`.",
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "tags": [
            {"name": "jobs", "description": "Submits of every job kind, and the one job resource they share."},
            {"name": "pipelines", "description": "Research pipelines: templates and reports (the submit is POST /v1/pipelines under jobs)."},
            {"name": "analysis", "description": "Analysis, comparison and PNG charts of finished jobs, computed from their stored results."},
            {"name": "candles", "description": "Stored 1m candles: uploads, imports through Jesse's drivers, gap reports, exports."},
            {"name": "schedules", "description": "Series kept current by scheduled imports."},
            {"name": "strategies", "description": "Strategy sources in Jesse's layout, with static and deep validation."},
            {"name": "operations", "description": "Liveness, readiness, metrics and this document."},
            {"name": "mcp", "description": "The MCP endpoint (streamable HTTP)."},
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {SECURITY_SCHEME: {
                "type": "http",
                "scheme": "bearer",
                "description": "A token from JESSE_MCP_TOKENS (`token=scope+scope,...`). Scopes: `read` (GETs), `run` (submits, cancels, validation), `strategies:write` (strategy writes and deletes), `admin` (everything, including CSV uploads, series deletes and schedules). Without configured tokens the service listens on loopback only and asks for none.",
            }},
        },
    })
}

fn operation(route: &Route, generator: &mut SchemaGenerator) -> Value {
    let mut op = Map::new();
    op.insert("operationId".into(), route.operation_id.clone().into());
    op.insert("summary".into(), route.summary.clone().into());
    let mut description = route.description.clone();
    if let Some(scope) = route.scope {
        if !description.is_empty() {
            description.push_str("\n\n");
        }
        description.push_str(&format!("Required scope: `{}`.", scope.name()));
    }
    if !description.is_empty() {
        op.insert("description".into(), description.into());
    }
    op.insert("tags".into(), json!([route.tag]));

    let parameters: Vec<Value> = route
        .params
        .iter()
        .flat_map(|p| parameters(p, generator))
        .collect();
    if !parameters.is_empty() {
        op.insert("parameters".into(), parameters.into());
    }
    if let Some(body) = &route.body {
        let mut media = Map::new();
        let schema = match body.kind {
            Some(kind) => kind.request_schema(generator),
            None => (body.schema)(generator),
        };
        media.insert("schema".into(), schema.to_value());
        if let Some(example) = body.example {
            media.insert("example".into(), example.into());
        }
        op.insert(
            "requestBody".into(),
            json!({"required": true, "content": {body.media_type: media}}),
        );
    }

    let mut responses = Map::new();
    for reply in &route.responses {
        let mut response = Map::new();
        response.insert("description".into(), reply.description.into());
        if let Some(media_type) = reply.media_type {
            let schema = match reply.schema {
                Some(schema) => schema(generator).to_value(),
                None => json!({"type": "string"}),
            };
            response.insert("content".into(), json!({media_type: {"schema": schema}}));
        }
        if !reply.headers.is_empty() {
            let headers: Map<String, Value> = reply
                .headers
                .iter()
                .map(|(name, description)| {
                    (
                        name.to_string(),
                        json!({"description": description, "schema": {"type": "string"}}),
                    )
                })
                .collect();
            response.insert("headers".into(), headers.into());
        }
        responses.insert(reply.status.to_string(), response.into());
    }
    let mut by_status: BTreeMap<u16, Vec<&ErrorCodeDoc>> = BTreeMap::new();
    for code in route.error_codes() {
        let doc = error_code(code).unwrap_or_else(|| {
            panic!(
                "route {} {} names error code '{code}', which ERROR_CODES does not document",
                route.method, route.path
            )
        });
        let codes = by_status.entry(doc.status).or_default();
        if !codes.iter().any(|c| c.code == code) {
            codes.push(doc);
        }
    }
    for (status, codes) in by_status {
        let names: Vec<&str> = codes.iter().map(|c| c.code).collect();
        let lines: Vec<String> = codes
            .iter()
            .map(|c| format!("`{}`: {}", c.code, c.description))
            .collect();
        let mut response = json!({
            "description": lines.join(" "),
            "content": {"application/json": {"schema": {
                "$ref": format!("{COMPONENTS}ErrorEnvelope"),
                "properties": {"error": {"properties": {"code": {"enum": names}}}},
            }}},
        });
        if status == 401 {
            response["headers"] = json!({"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}});
        }
        responses.insert(status.to_string(), response);
    }
    op.insert("responses".into(), responses.into());

    match route.scope {
        Some(scope) => {
            op.insert(
                "security".into(),
                json!([{SECURITY_SCHEME: [scope.name()]}]),
            );
            op.insert("x-required-scope".into(), scope.name().into());
        }
        None => {
            op.insert("security".into(), json!([]));
        }
    }
    op.into()
}

/// The parameters a `Params` entry stands for: one per field of a path or
/// query struct, or one header.
fn parameters(params: &Params, generator: &mut SchemaGenerator) -> Vec<Value> {
    let (location, schema) = match params {
        Params::Header {
            name,
            description,
            required,
        } => {
            return vec![json!({
                "name": name, "in": "header", "required": required,
                "description": description, "schema": {"type": "string"},
            })];
        }
        Params::Path(schema) => ("path", schema(generator)),
        Params::Query(schema) => ("query", schema(generator)),
    };
    let object = schema.to_value();
    let required: Vec<&str> = object["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(properties) = object["properties"].as_object() else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(name, property)| {
            let mut property = property.clone();
            let description = property
                .as_object_mut()
                .and_then(|p| p.remove("description"));
            let property = without_null(property);
            let mut param = json!({
                "name": name,
                "in": location,
                "required": location == "path" || required.contains(&name.as_str()),
                "schema": property,
            });
            if let Some(description) = description {
                param["description"] = description;
            }
            param
        })
        .collect()
}

/// A query or path parameter is absent rather than null: drops `null` from
/// the schema schemars gives an `Option`.
fn without_null(mut schema: Value) -> Value {
    if let Some(types) = schema.get_mut("type").and_then(Value::as_array_mut) {
        types.retain(|t| t != "null");
        if types.len() == 1 {
            let only = types[0].clone();
            schema["type"] = only;
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(options) = schema.get_mut(key).and_then(Value::as_array_mut) {
            options.retain(|o| o.get("type").and_then(Value::as_str) != Some("null"));
            if options.len() == 1 {
                let only = options[0].clone();
                let object = schema
                    .as_object_mut()
                    .expect("a schema with anyOf is an object");
                object.remove(key);
                if let Some(inner) = only.as_object() {
                    for (k, v) in inner {
                        object.entry(k.clone()).or_insert(v.clone());
                    }
                }
            }
        }
    }
    schema
}

fn error_code_schema() -> Value {
    let names: Vec<&str> = ERROR_CODES.iter().map(|c| c.code).collect();
    let described: Map<String, Value> = ERROR_CODES
        .iter()
        .map(|c| {
            (
                c.code.to_string(),
                format!("HTTP {}. {}", c.status, c.description).into(),
            )
        })
        .collect();
    let lines: Vec<String> = ERROR_CODES
        .iter()
        .map(|c| format!("- `{}` ({}): {}", c.code, c.status, c.description))
        .collect();
    json!({
        "type": "string",
        "enum": names,
        "description": format!("Every `error.code` an HTTP response (or an MCP tool error) can carry, with its status:\n{}", lines.join("\n")),
        "x-enum-descriptions": described,
    })
}

fn job_error_code_schema() -> Value {
    let names: Vec<&str> = JOB_ERROR_CODES.iter().map(|(c, _)| *c).collect();
    let described: Map<String, Value> = JOB_ERROR_CODES
        .iter()
        .map(|(c, d)| (c.to_string(), Value::from(*d)))
        .collect();
    let lines: Vec<String> = JOB_ERROR_CODES
        .iter()
        .map(|(c, d)| format!("- `{c}`: {d}"))
        .collect();
    json!({
        "type": "string",
        "enum": names,
        "description": format!("Codes a failed job records in its `error` (GET /v1/jobs/{{id}}), besides the `ErrorCode`s planning refuses a child job with:\n{}", lines.join("\n")),
        "x-enum-descriptions": described,
    })
}

/// `/mcp`: not a REST resource but the MCP streamable HTTP transport, served
/// beside the REST routes on the same listener.
fn mcp_path(tools: &[McpTool]) -> Map<String, Value> {
    let list: Vec<String> = tools
        .iter()
        .map(|t| match &t.title {
            Some(title) => format!("- `{}`: {title}", t.name),
            None => format!("- `{}`", t.name),
        })
        .collect();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
    let description = format!(
        "The MCP endpoint (Model Context Protocol, streamable HTTP transport): JSON-RPC messages in, JSON or an SSE stream out; \
         sessions via the `Mcp-Session-Id` header. Not a REST resource: use an MCP client \
         (`{{\"type\": \"http\", \"url\": \"http://127.0.0.1:8080/mcp\"}}`). Tools call the same service functions as REST; \
         input mistakes come back as tool errors carrying the same error envelope. Each strategy is also the resource \
         `jesse://strategies/{{name}}`.\n\nTools:\n{}\n\nRequired scope: `read` to connect; each mutating tool checks its own \
         scope (`run`, `strategies:write`, `admin`).",
        list.join("\n")
    );
    let session = json!({"name": "Mcp-Session-Id", "in": "header", "required": false, "schema": {"type": "string"},
        "description": "The session id the server returned on initialize."});
    let errors = json!({
        "401": {"description": "`unauthorized`: no valid bearer token (tokens configured).",
                "content": {"application/json": {"schema": {"$ref": format!("{COMPONENTS}ErrorEnvelope")}}}},
        "403": {"description": "`forbidden`: the token lacks the `read` scope. `origin_not_allowed`: a browser page of another origin sent it.",
                "content": {"application/json": {"schema": {"$ref": format!("{COMPONENTS}ErrorEnvelope")}}}},
        "415": {"description": "`unsupported_media_type`: a body that is not `application/json`.",
                "content": {"application/json": {"schema": {"$ref": format!("{COMPONENTS}ErrorEnvelope")}}}},
        "421": {"description": "`host_not_allowed`: the Host header is not one JESSE_MCP_ALLOWED_HOSTS lists.",
                "content": {"application/json": {"schema": {"$ref": format!("{COMPONENTS}ErrorEnvelope")}}}},
        "429": {"description": "`mcp_sessions_exhausted`: an `initialize` while this client's sessions (JESSE_MCP_MAX_SESSIONS_PER_CLIENT) are all in use.",
                "content": {"application/json": {"schema": {"$ref": format!("{COMPONENTS}ErrorEnvelope")}}}},
        "503": {"description": "`mcp_sessions_exhausted`: an `initialize` while the service's sessions (JESSE_MCP_MAX_SESSIONS) are all in use.",
                "content": {"application/json": {"schema": {"$ref": format!("{COMPONENTS}ErrorEnvelope")}}}},
        // The MCP transport's own refusals (rmcp), as plain text; malformed JSON-RPC as a JSON-RPC error.
        "400": {"description": "Not a message of the streamable HTTP transport: a body that is no JSON (JSON-RPC error \
                                -32700), no JSON-RPC 2.0 message (-32600) or params a method cannot take (-32602), as a \
                                JSON-RPC error object; a request other than `initialize` without `Mcp-Session-Id` (plain text).",
                "content": {"application/json": {"schema": {"type": "object"}}, "text/plain": {"schema": {"type": "string"}}}},
        "404": {"description": "The `Mcp-Session-Id` names no live session (ended, or never created): initialize again.",
                "content": {"text/plain": {"schema": {"type": "string"}}}},
        "406": {"description": "The Accept header lacks what the transport answers with: `application/json` and \
                                `text/event-stream` for POST, `text/event-stream` for GET.",
                "content": {"text/plain": {"schema": {"type": "string"}}}},
    });
    let security = json!([{SECURITY_SCHEME: ["read"]}]);
    let operation = |id: &str, summary: &str, body: Option<Value>, ok: Value| {
        let mut responses = errors.clone();
        for (status, response) in ok.as_object().expect("responses object") {
            responses[status] = response.clone();
        }
        let mut op = json!({
            "operationId": id,
            "summary": summary,
            "description": description,
            "tags": ["mcp"],
            "parameters": [session.clone()],
            "responses": responses,
            "security": security.clone(),
            "x-required-scope": "read",
            "x-mcp-tools": names,
        });
        if let Some(body) = body {
            op["requestBody"] = body;
        }
        op
    };
    let mut path = Map::new();
    path.insert(
        "post".into(),
        operation(
            "mcpPost",
            "MCP streamable HTTP: send a JSON-RPC request, notification or response",
            Some(json!({"required": true, "content": {"application/json": {"schema": {
                "type": "object", "description": "A JSON-RPC 2.0 message (initialize, tools/list, tools/call, ...)."}}}})),
            json!({
                "200": {"description": "The JSON-RPC response, as JSON or as an SSE stream.",
                        "content": {"application/json": {"schema": {"type": "object"}}, "text/event-stream": {"schema": {"type": "string"}}}},
                "202": {"description": "A notification or response was accepted."},
            }),
        ),
    );
    path.insert(
        "get".into(),
        operation(
            "mcpGet",
            "MCP streamable HTTP: open the SSE stream of server-to-client messages",
            None,
            json!({"200": {"description": "Server-sent events.", "content": {"text/event-stream": {"schema": {"type": "string"}}}}}),
        ),
    );
    path.insert(
        "delete".into(),
        operation(
            "mcpDelete",
            "MCP streamable HTTP: end the session",
            None,
            json!({"204": {"description": "The session ended (a DELETE of it again answers 404)."}}),
        ),
    );
    path
}
