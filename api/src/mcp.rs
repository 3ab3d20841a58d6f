//! MCP frontend: the same service functions as REST, as tools an agent can call.
//! Served over streamable HTTP at `/mcp` and over stdio. Every tool answers
//! quickly; long work is a job the agent submits and then polls by id, either
//! with the job tools or, for clients of the Tasks extension, as a task
//! (`mcp_tasks.rs`).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use jesse_mcp_core::analysis::{Analysis, Comparison};
use jesse_mcp_core::kinds::{KindDef, REGISTRY};
use rmcp::handler::server::router::tool::{ToolRoute, ToolRouter};
use rmcp::handler::server::tool::{IntoCallToolResult, ToolCallContext};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ContentBlock,
    GetTaskParams, GetTaskResult, Implementation, JsonObject, ListResourcesResult,
    PaginatedRequestParams, ProgressNotificationParam, ReadResourceRequestParams,
    ReadResourceResponse, ReadResourceResult, Resource, ResourceContents, ServerCapabilities,
    ServerConfig, Tool, ToolAnnotations, UpdateTaskParams,
};
use rmcp::service::{NotificationContext, RequestContext};
use rmcp::{ErrorData, Json, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::{Granted, Scope};
use crate::error::ApiError;
use crate::rest::ValidateBody;
use crate::service::{
    CompareRequest, GapReport, JobAccepted, JobList, JobView, ResultQuery, ResultView,
    ScheduleList, SchedulesBody, SeriesList, Service, StrategyDeleted, StrategyList, StrategyView,
    StrategyWritten, ValidationReport,
};

// Declared here rather than in lib.rs: the Tasks extension is part of the MCP frontend.
#[path = "mcp_research.rs"]
mod research;
#[path = "mcp_sessions.rs"]
pub mod sessions;
#[path = "mcp_tasks.rs"]
mod tasks;

const STRATEGY_URI: &str = "jesse://strategies/";

const INSTRUCTIONS: &str = "jesse-mcp runs real Jesse backtests as jobs. Flow: (1) candles_available to see which \
exchange/symbol ranges are stored; (2) backtest to submit: it returns a job_id at once; (3) job_wait with that \
job_id (repeat while the status is queued or running; each call waits at most 50 s) or poll job_get; (4) when the \
status is succeeded, job_result for metrics (and trades/equity curve if requested). A failed job carries an error \
with the reason (for strategy errors: exception type, message and line). Dates are YYYY-MM-DD UTC; end_date is exclusive. \
Strategies: strategy_list / strategy_read, then strategy_validate (deep=true to smoke-test) before strategy_write; \
each strategy is also the resource jesse://strategies/<name>. \
After a backtest: analyze (drawdowns, monthly returns, VaR, PSR, exposure), compare (2 to 20 backtests) and \
chart (PNG images: equity, drawdown, monthly, histogram; fan for Monte Carlo) read its stored result at once.";

#[derive(Clone)]
pub struct JesseMcp {
    service: Service,
    /// Built once per process and shared by every session: with the tools'
    /// schemas built per session, a session cost about 1.7 MB (issue 34).
    tool_router: Arc<ToolRouter<Self>>,
}

static TOOLS: std::sync::LazyLock<Arc<ToolRouter<JesseMcp>>> =
    std::sync::LazyLock::new(|| Arc::new(JesseMcp::tools()));

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobIdArgs {
    /// The job id returned by `backtest` (a ULID such as 01JD3...).
    pub job_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobWaitArgs {
    /// The job id returned by `backtest`.
    pub job_id: String,
    /// How long to wait for the job to finish, 1..50 seconds (default 30); other values are refused.
    #[serde(default)]
    #[schemars(range(min = 1, max = 50))]
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobResultArgs {
    /// The id of a succeeded job.
    pub job_id: String,
    /// Include the kind's rows: a backtest's closed trades (default: as submitted),
    /// a batch's leaderboard (default: yes).
    #[serde(default)]
    pub include_trades: Option<bool>,
    /// Include the daily equity curve when it was computed (default true).
    #[serde(default)]
    pub include_equity_curve: Option<bool>,
    /// First row to return (a trade, a leaderboard row), default 0. Same as `offset`.
    #[serde(default)]
    pub trades_offset: Option<usize>,
    /// Number of rows to return, default 100, at most 10000. Same as `limit`.
    #[serde(default)]
    pub trades_limit: Option<usize>,
    /// First row to return of any kind's rows, default 0.
    #[serde(default)]
    pub offset: Option<usize>,
    /// Number of rows to return, default 100, at most 10000.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Keep each trade's nested orders (default false: compact trades).
    #[serde(default)]
    pub include_orders: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalyzeArgs {
    /// The id of a succeeded backtest job.
    pub job_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChartArgs {
    /// The id of a succeeded backtest or monte_carlo job.
    pub job_id: String,
    /// The chart: `equity` (equity with drawdown below), `drawdown`, `monthly` (heatmap),
    /// `histogram` (daily returns) of a backtest; `fan` (percentile bands) and `histogram`
    /// (scenarios' total returns) of a monte_carlo job.
    #[schemars(extend("enum" = ["equity", "drawdown", "monthly", "histogram", "fan"]))]
    pub name: String,
    /// Width in pixels, 320..2400 (default 1000).
    #[serde(default)]
    #[schemars(range(min = 320, max = 2400))]
    pub width: Option<u32>,
    /// Height in pixels, 240..1600 (default 600).
    #[serde(default)]
    #[schemars(range(min = 240, max = 1600))]
    pub height: Option<u32>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobListArgs {
    /// Only jobs of this kind: `backtest`, `backtest_batch`, `optimization`, `optimization_trial`, `walk_forward`, `monte_carlo`, `significance_test`, `candle_import`, `strategy_validation`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Only jobs with this status: queued, running, succeeded, failed, cancelled.
    #[serde(default)]
    pub status: Option<String>,
    /// Only jobs whose subject names this strategy (exact name, e.g. `SmaCross`).
    #[serde(default)]
    pub strategy: Option<String>,
    /// Only jobs whose subject names this symbol (e.g. `BTC-USDT`).
    #[serde(default)]
    pub symbol: Option<String>,
    /// Only jobs submitted with this tag.
    #[serde(default)]
    pub tag: Option<String>,
    /// Page size, 1..200 (default 20).
    #[serde(default)]
    pub limit: Option<i64>,
    /// `next_cursor` from the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobChildrenArgs {
    /// The parent job's id (e.g. returned by `backtest_batch`).
    pub job_id: String,
    /// Only children with this status: queued, running, succeeded, failed, cancelled.
    #[serde(default)]
    pub status: Option<String>,
    /// Page size, 1..200 (default 50).
    #[serde(default)]
    pub limit: Option<i64>,
    /// `next_cursor` from the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SeriesArgs {
    /// Exchange name as Jesse spells it, e.g. `Binance Perpetual Futures`.
    pub exchange: String,
    /// Symbol, e.g. `BTC-USDT`.
    pub symbol: String,
    /// First day of the range (YYYY-MM-DD); default: the first stored minute.
    #[serde(default)]
    pub start_date: Option<String>,
    /// Day the range ends before (exclusive); default: after the last stored minute.
    #[serde(default)]
    pub end_date: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StrategyNameArgs {
    /// Strategy name: letters, digits and underscore, e.g. `SmaCross` (the folder `<name>/__init__.py`).
    pub name: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StrategyWriteArgs {
    /// Strategy name; the file must define `class <name>(Strategy)`.
    pub name: String,
    /// The complete Python source of `<name>/__init__.py`.
    pub code: String,
    /// The sha256 you read (strategy_read); the write fails if the file changed since.
    #[serde(default)]
    pub if_match: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StrategyDeleteArgs {
    pub name: String,
    /// The sha256 you read; the delete fails if the file changed since.
    #[serde(default)]
    pub if_match: Option<String>,
}

/// What `backtest` returns: the job to poll, and how.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Submitted {
    #[serde(flatten)]
    pub job: JobAccepted,
    /// What to call next.
    pub next: String,
}

/// The submit tool of a kind users can submit, from its registry entry: its
/// arguments are the kind's request, its answer the job to poll.
fn submit_tool(kind: &'static KindDef) -> Option<ToolRoute<JesseMcp>> {
    let submit = kind.submit.as_ref()?;
    let tool = Tool::new(submit.tool, submit.description, request_schema(kind))
        .with_output_schema::<Submitted>()
        .annotate(
            ToolAnnotations::with_title(submit.title)
                .read_only(false)
                .destructive(false)
                .idempotent(false)
                .open_world(submit.open_world),
        );
    Some(ToolRoute::new_dyn(
        tool,
        move |ctx: ToolCallContext<'_, JesseMcp>| {
            Box::pin(async move {
                let answer = async {
                    require(&ctx.request_context, Scope::Run)?;
                    let request = Value::Object(ctx.arguments.clone().unwrap_or_default());
                    let job = ctx
                        .service
                        .service
                        .submit(kind, request, None)
                        .await
                        .map_err(tool_error)?;
                    let next = format!(
                        "call job_wait with job_id {} (repeat while queued/running), then {}",
                        job.job_id, submit.next
                    );
                    serde_json::to_value(Submitted { job, next }).map_err(|e| e.to_string())
                }
                .await;
                // The same answer a `#[tool]` returning `Result<Json<_>, String>` gives.
                answer.map(Json).into_call_tool_result()
            })
        },
    ))
}

/// A kind's request as a tool's input schema: the request type's own schema at
/// the root (clients expect an object there), its definitions beside it.
fn request_schema(kind: &KindDef) -> Arc<JsonObject> {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    let reference = kind.request_schema(&mut generator).to_value();
    let definitions = generator.take_definitions(true);
    let name = reference["$ref"]
        .as_str()
        .and_then(|r| r.rsplit('/').next())
        .map(str::to_string);
    let mut root = match name.and_then(|n| definitions.get(&n).cloned()) {
        Some(Value::Object(root)) => root,
        _ => reference.as_object().cloned().unwrap_or_default(),
    };
    if !definitions.is_empty() {
        root.insert("$defs".into(), Value::Object(definitions));
    }
    Arc::new(root)
}

/// JSON Schema 2020-12's own formats (and OpenAPI's `int32`/`int64`/`float`/
/// `double`/`uint*` are not among them: Ajv-based clients warn or refuse).
const STANDARD_FORMATS: &[&str] = &[
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];

/// Keywords whose value may be a boolean by design (`additionalProperties:
/// false` is how a closed object is written everywhere); any other place that
/// takes a schema gets an object.
const BOOLEAN_VALUED: &[&str] = &[
    "additionalProperties",
    "unevaluatedProperties",
    "additionalItems",
    "unevaluatedItems",
];
/// Keywords whose value is one schema (`items` may also be an array of them).
const SUBSCHEMA: &[&str] = &[
    "items",
    "contains",
    "not",
    "propertyNames",
    "if",
    "then",
    "else",
    "additionalProperties",
    "unevaluatedProperties",
    "additionalItems",
    "unevaluatedItems",
    "contentSchema",
];
/// Keywords whose value is a list of schemas.
const SUBSCHEMA_LISTS: &[&str] = &["allOf", "anyOf", "oneOf", "prefixItems"];
/// Keywords whose value maps names to schemas.
const SUBSCHEMA_MAPS: &[&str] = &[
    "properties",
    "patternProperties",
    "dependentSchemas",
    "$defs",
    "definitions",
];

/// A tool schema as every MCP client accepts it, whatever schemars emitted:
/// no bare `true`/`false` where a schema is expected (the TypeScript SDK, and
/// so the MCP Inspector, rejects the whole `tools/list` answer for one; `true`
/// becomes `{}`, `false` `{"not": {}}`) and only standard formats (an
/// unsigned integer keeps its meaning as `minimum: 0`). Values (`enum`,
/// `const`, `default`, `examples`) are left alone.
pub(crate) fn make_portable(schema: &mut Value) {
    portable_at(schema, None);
}

fn portable_at(node: &mut Value, keyword: Option<&str>) {
    match node {
        Value::Bool(_) if keyword.is_some_and(|k| BOOLEAN_VALUED.contains(&k)) => {}
        Value::Bool(true) => *node = Value::Object(JsonObject::new()),
        Value::Bool(false) => *node = serde_json::json!({"not": {}}),
        Value::Object(map) => {
            if let Some(format) = map.get("format").and_then(Value::as_str)
                && !STANDARD_FORMATS.contains(&format)
            {
                let unsigned = format.starts_with("uint");
                map.remove("format");
                if unsigned && !map.contains_key("minimum") && !map.contains_key("exclusiveMinimum")
                {
                    map.insert("minimum".into(), Value::from(0));
                }
            }
            for key in SUBSCHEMA_MAPS {
                if let Some(Value::Object(children)) = map.get_mut(*key) {
                    for child in children.values_mut() {
                        portable_at(child, None);
                    }
                }
            }
            for key in SUBSCHEMA_LISTS {
                if let Some(Value::Array(children)) = map.get_mut(*key) {
                    for child in children {
                        portable_at(child, None);
                    }
                }
            }
            for key in SUBSCHEMA {
                match map.get_mut(*key) {
                    Some(Value::Array(children)) if *key == "items" => {
                        for child in children {
                            portable_at(child, None);
                        }
                    }
                    Some(child) => portable_at(child, Some(key)),
                    None => {}
                }
            }
        }
        _ => {}
    }
}

fn portable_object(schema: &JsonObject) -> Arc<JsonObject> {
    let mut value = Value::Object(schema.clone());
    make_portable(&mut value);
    match value {
        Value::Object(object) => Arc::new(object),
        _ => unreachable!("an object schema stays an object"),
    }
}

/// rmcp's own argument errors (serde's "missing field", "unknown field",
/// "invalid type") reach the client as plain text; this makes them the tool
/// errors every other refusal is, in the `{error: {code, message, details}}`
/// envelope. Tools without arguments refuse arguments they would ignore.
fn checked_arguments(route: &mut ToolRoute<JesseMcp>) {
    let inner = route.call.clone();
    let tool = route.attr.name.clone();
    let takes_nothing = route
        .attr
        .input_schema
        .get("properties")
        .and_then(Value::as_object)
        .is_none_or(JsonObject::is_empty)
        && !["allOf", "anyOf", "oneOf", "$ref", "additionalProperties"]
            .iter()
            .any(|k| route.attr.input_schema.contains_key(*k));
    route.call = Arc::new(move |ctx: ToolCallContext<'_, JesseMcp>| {
        let inner = inner.clone();
        let tool = tool.clone();
        Box::pin(async move {
            if takes_nothing
                && let Some(name) = ctx.arguments.as_ref().and_then(|a| a.keys().next())
            {
                return Ok(argument_error(
                    &tool,
                    format!("unknown field `{name}`: {tool} takes no arguments"),
                ));
            }
            match inner(ctx).await {
                Err(error)
                    if error.code == rmcp::model::ErrorCode::INVALID_PARAMS
                        && error.message.starts_with(ARGUMENT_ERROR_PREFIX) =>
                {
                    let reason = error.message[ARGUMENT_ERROR_PREFIX.len()..].trim();
                    Ok(argument_error(&tool, reason.to_string()))
                }
                other => other,
            }
        })
    });
}

/// How rmcp words a `Parameters<T>` that did not deserialize.
const ARGUMENT_ERROR_PREFIX: &str = "failed to deserialize parameters:";

fn argument_error(tool: &str, reason: String) -> CallToolResponse {
    let error = ApiError::invalid(
        "invalid_arguments",
        format!("the arguments of {tool} do not match its inputSchema: {reason}"),
    )
    .with_details(serde_json::json!({"tool": tool, "reason": reason}));
    CallToolResult::error(vec![ContentBlock::text(error.envelope().to_string())]).into()
}

fn tool_error(error: ApiError) -> String {
    mcp_wording(error).envelope().to_string()
}

/// The service words its hints for REST (`GET /v1/jobs/...`); an MCP user gets
/// the tool that does the same instead. Codes and details are unchanged.
pub(crate) fn mcp_wording(mut error: ApiError) -> ApiError {
    error.body.message = mcp_message(&error.body.message);
    error
}

pub(crate) fn mcp_message(message: &str) -> String {
    let mut text = message
        .replace("listed by GET /v1/jobs", "listed by job_list")
        .replace(
            "Import them from the exchange (POST /v1/candles/imports) or as CSV (POST /v1/candles/csv)",
            "Import them from the exchange (candles_import) or as CSV (POST /v1/candles/csv over REST)",
        )
        .replace("GET /v1/candles lists what is stored", "candles_available lists what is stored")
        .replace(
            "GET /v1/pipelines/templates lists the templates",
            "the resource jesse://pipelines/templates lists the templates",
        )
        .replace(
            "(research_pipeline, POST /v1/pipelines)",
            "(research_pipeline)",
        );
    // "poll GET /v1/jobs/<id> until it succeeds" (a result asked for too early).
    if let Some(start) = text.find("poll GET /v1/jobs/") {
        let rest = &text[start + "poll GET /v1/jobs/".len()..];
        let id: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        let end = start + "poll GET /v1/jobs/".len() + id.len();
        text.replace_range(
            start..end,
            &format!("call job_wait with job_id {id} (or poll job_get)"),
        );
    }
    text
}

/// Over HTTP with tokens configured, a tool that changes something needs its
/// scope; stdio (a local process its user started) carries no token.
fn require(ctx: &RequestContext<RoleServer>, scope: Scope) -> Result<(), String> {
    require_scope(ctx, scope).map_err(tool_error)
}

fn require_scope(ctx: &RequestContext<RoleServer>, scope: Scope) -> Result<(), ApiError> {
    crate::auth::check(granted(ctx), scope)
}

/// The token of the HTTP request carrying this call (None: no tokens, or stdio).
fn granted(ctx: &RequestContext<RoleServer>) -> Option<&Granted> {
    ctx.extensions
        .get::<axum::http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<Granted>())
}

#[tool_router]
impl JesseMcp {
    pub fn new(service: Service) -> Self {
        Self {
            service,
            tool_router: TOOLS.clone(),
        }
    }

    /// Every tool: the ones below, and a submit tool per kind users can submit,
    /// each with portable schemas and argument errors in the error envelope.
    pub fn tools() -> ToolRouter<Self> {
        let mut tool_router = Self::tool_router();
        for kind in REGISTRY.iter().copied() {
            if let Some(route) = submit_tool(kind) {
                tool_router.add_route(route);
            }
        }
        for route in tool_router.map.values_mut() {
            route.attr.input_schema = portable_object(&route.attr.input_schema);
            if let Some(output) = &route.attr.output_schema {
                route.attr.output_schema = Some(portable_object(output));
            }
            checked_arguments(route);
        }
        tool_router
    }

    #[tool(
        description = "Get a job's status (queued, running, succeeded, failed, cancelled), progress 0..1, stage, \
        timestamps, attempts, error (when failed) and summary (headline metrics, when succeeded).",
        annotations(title = "Get job", read_only_hint = true, open_world_hint = false)
    )]
    async fn job_get(
        &self,
        Parameters(args): Parameters<JobIdArgs>,
    ) -> Result<Json<JobView>, String> {
        self.service
            .get_job(&args.job_id)
            .await
            .map(Json)
            .map_err(tool_error)
    }

    #[tool(
        description = "Read a job's log: the lines its strategy printed (stream stdout/stderr) and logged with \
        self.log (info/error), in order, each with its seq and the simulated time it was written at. Works while \
        the job runs. Paged: pass next_after as after for the next page (null: the end of what is stored now). \
        At most 10,000 lines / 1 MiB per job; a final system line says when the log was truncated.",
        annotations(title = "Job log", read_only_hint = true, open_world_hint = false)
    )]
    async fn job_logs(
        &self,
        Parameters(args): Parameters<crate::service::JobLogsArgs>,
    ) -> Result<Json<crate::service::JobLogs>, String> {
        self.service
            .job_logs(&args.job_id, args.after, args.limit)
            .await
            .map(Json)
            .map_err(tool_error)
    }

    #[tool(
        description = "Wait for a job to finish: returns the job (as job_get) as soon as it is succeeded, failed or \
        cancelled, or after timeout_seconds (1..50, default 30) if it is still running; call again in that case. \
        Sends progress notifications while waiting when the request carries a progress token, the last one at 1.0 \
        when the job has finished.",
        annotations(title = "Wait for job", read_only_hint = true, open_world_hint = false)
    )]
    async fn job_wait(
        &self,
        Parameters(args): Parameters<JobWaitArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<JobView>, String> {
        let max = crate::service::MAX_WAIT_SECS;
        let seconds = args.timeout_seconds.unwrap_or(30);
        if !(1..=max).contains(&seconds) {
            return Err(tool_error(
                ApiError::invalid(
                    "invalid_timeout",
                    format!(
                        "timeout_seconds must be 1..{max} (got {seconds}); call job_wait again while the job is queued or running"
                    ),
                )
                .with_details(serde_json::json!({"timeout_seconds": seconds, "min": 1, "max": max})),
            ));
        }
        let token = ctx.meta.get_progress_token();
        let peer = ctx.peer.clone();
        let notify = |progress: f64, message: String| {
            let token = token.clone();
            let peer = peer.clone();
            async move {
                if let Some(token) = token {
                    let note = ProgressNotificationParam::new(token, progress)
                        .with_total(1.0)
                        .with_message(message);
                    let _ = peer.notify_progress(note).await;
                }
            }
        };
        let job = self
            .service
            .wait_job(&args.job_id, Duration::from_secs(seconds), &notify)
            .await
            .map_err(tool_error)?;
        // A finished job's last word: 1.0, whatever the last report during the run said.
        if job.status.is_terminal() {
            notify(1.0, job.status.as_str().to_string()).await;
            // The TypeScript SDK handles a notification a microtask later than a
            // response read in the same chunk, and drops progress for a request
            // already answered: a short gap keeps the two apart on the wire.
            if ctx.meta.get_progress_token().is_some() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(Json(job))
    }

    #[tool(
        description = "Get a succeeded backtest's result: Jesse's metrics (NaN/infinity shown as null), provenance \
        (Jesse version, strategy sha256, candle fingerprint), timings, and optionally trades (paged with \
        trades_offset/trades_limit) and the equity curve. Fails with a clear error while the job is not succeeded.",
        annotations(title = "Get result", read_only_hint = true, open_world_hint = false)
    )]
    async fn job_result(
        &self,
        Parameters(args): Parameters<JobResultArgs>,
    ) -> Result<Json<ResultView>, String> {
        let query = ResultQuery {
            include_trades: args.include_trades,
            include_equity_curve: args.include_equity_curve,
            trades_offset: args.trades_offset.or(args.offset).unwrap_or(0),
            trades_limit: Some(args.trades_limit.or(args.limit).unwrap_or(100)),
            include_orders: args.include_orders.unwrap_or(false),
        };
        self.service
            .get_result(&args.job_id, &query)
            .await
            .map(Json)
            .map_err(tool_error)
    }

    #[tool(
        description = "Analyze a succeeded backtest from its stored result (answers at once): the 5 worst \
        drawdown periods (depth %, start, trough, recovery, duration), monthly and yearly returns, 30-day rolling \
        Sharpe, daily return distribution (mean, std, skew, kurtosis, historical VaR and CVaR at 95 % and 99 %), \
        probabilistic Sharpe ratio, exposure and time in market, and the source (strategies' sha256, candle \
        fingerprints). Sections that need trades are null with a reason in `unavailable`.",
        annotations(
            title = "Analyze backtest",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn analyze(
        &self,
        Parameters(args): Parameters<AnalyzeArgs>,
    ) -> Result<Json<Analysis>, String> {
        self.service
            .analyze(&args.job_id)
            .await
            .map(Json)
            .map_err(tool_error)
    }

    #[tool(
        description = "Compare 2 to 20 succeeded backtests side by side (answers at once): key Jesse metrics per job, \
        equity curves aligned on one calendar (percent of each starting balance), and the correlation matrix of \
        daily returns over common days.",
        annotations(
            title = "Compare backtests",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn compare(
        &self,
        Parameters(args): Parameters<CompareRequest>,
    ) -> Result<Json<Comparison>, String> {
        self.service
            .compare(args)
            .await
            .map(Json)
            .map_err(tool_error)
    }

    #[tool(
        description = "Draw a chart of a succeeded job as a PNG image: `equity`, `drawdown`, `monthly`, `histogram` \
        for a backtest; `fan`, `histogram` for a monte_carlo job. Optional width (320..2400) and height \
        (240..1600) in pixels, default 1000 x 600.",
        annotations(title = "Chart", read_only_hint = true, open_world_hint = false)
    )]
    async fn chart(
        &self,
        Parameters(args): Parameters<ChartArgs>,
    ) -> Result<CallToolResult, String> {
        let png = self
            .service
            .chart(&args.job_id, &args.name, args.width, args.height)
            .await
            .map_err(tool_error)?;
        let caption = format!(
            "{} chart of job {} ({} bytes of PNG)",
            args.name,
            args.job_id.trim(),
            png.len()
        );
        let data = base64::engine::general_purpose::STANDARD.encode(&png);
        Ok(CallToolResult::success(vec![
            ContentBlock::image(data, "image/png"),
            ContentBlock::text(caption),
        ]))
    }

    #[tool(
        description = "List jobs, newest first, each with its subject (strategy, exchange, symbol, timeframe, range, \
        hyperparameters) and tags; filter by kind, status, strategy, symbol or tag; page with cursor.",
        annotations(title = "List jobs", read_only_hint = true, open_world_hint = false)
    )]
    async fn job_list(
        &self,
        Parameters(args): Parameters<JobListArgs>,
    ) -> Result<Json<JobList>, String> {
        self.service
            .find_jobs(&crate::service::JobQuery {
                kind: args.kind.as_deref(),
                status: args.status.as_deref(),
                strategy: args.strategy.as_deref(),
                symbol: args.symbol.as_deref(),
                tag: args.tag.as_deref(),
                limit: Some(args.limit.unwrap_or(20)),
                cursor: args.cursor.as_deref(),
            })
            .await
            .map(Json)
            .map_err(tool_error)
    }

    #[tool(
        description = "Cancel a job: a queued job is cancelled at once; a running one is interrupted (its status \
        becomes cancelled within seconds; poll job_get). Cancelling a finished job is an error.",
        annotations(
            title = "Cancel job",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn job_cancel(
        &self,
        Parameters(args): Parameters<JobIdArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<JobView>, String> {
        require(&ctx, Scope::Run)?;
        self.service
            .cancel_job(&args.job_id, crate::auth::actor(granted(&ctx)))
            .await
            .map(Json)
            .map_err(tool_error)
    }

    #[tool(
        description = "List a parent job's children (a batch's backtests) in their order, with status and \
        summary; filter by status, page with cursor.",
        annotations(
            title = "List child jobs",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn job_children(
        &self,
        Parameters(args): Parameters<JobChildrenArgs>,
    ) -> Result<Json<JobList>, String> {
        self.service
            .list_children(
                &args.job_id,
                args.status.as_deref(),
                Some(args.limit.unwrap_or(50)),
                args.cursor.as_deref(),
            )
            .await
            .map(Json)
            .map_err(tool_error)
    }

    #[tool(
        description = "List the stored 1m candle series (exchange, symbol, first/last minute, rows, missing minutes, \
        source). source `synthetic` is demo data, not market prices (see each series' note). \
        A backtest needs candles for its whole range plus warm-up.",
        annotations(
            title = "Candles available",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn candles_available(&self) -> Result<Json<SeriesList>, String> {
        self.service
            .list_series()
            .await
            .map(Json)
            .map_err(tool_error)
    }

    #[tool(
        description = "Gap report of a stored series: missing runs as {start, end, minutes} (start = first missing \
        minute, end = first present minute after it, ms since the epoch), missing minutes and coverage percent.",
        annotations(title = "Candle gaps", read_only_hint = true, open_world_hint = false)
    )]
    async fn candles_gaps(
        &self,
        Parameters(args): Parameters<SeriesArgs>,
    ) -> Result<Json<GapReport>, String> {
        self.service
            .gap_report(
                &args.exchange,
                &args.symbol,
                args.start_date.as_deref(),
                args.end_date.as_deref(),
            )
            .await
            .map(Json)
            .map_err(tool_error)
    }

    #[tool(
        description = "Delete every stored 1m candle of one series (exchange + symbol).",
        annotations(
            title = "Delete candles",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn candles_delete(
        &self,
        Parameters(args): Parameters<SeriesArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<String, String> {
        require(&ctx, Scope::Admin)?;
        self.service
            .delete_series(&args.exchange, &args.symbol)
            .await
            .map(|v| v.to_string())
            .map_err(tool_error)
    }

    #[tool(
        description = "List the scheduled candle top-ups: series, cron (UTC), next run, last run.",
        annotations(
            title = "List schedules",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn schedule_list(&self) -> Result<Json<ScheduleList>, String> {
        self.service
            .list_schedules()
            .await
            .map(Json)
            .map_err(tool_error)
    }

    #[tool(
        description = "Replace the list of series kept current by scheduled imports: [{exchange, symbol, cron?, \
        start_date?}]; cron is UTC, 5 or 6 fields, default 02:30 daily. Each run is an ordinary candle_import job \
        (one per series and day), visible with job_list.",
        annotations(
            title = "Set schedules",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn schedule_set(
        &self,
        Parameters(body): Parameters<SchedulesBody>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<ScheduleList>, String> {
        require(&ctx, Scope::Admin)?;
        self.service
            .put_schedules(body)
            .await
            .map(Json)
            .map_err(tool_error)
    }

    #[tool(
        description = "List the strategies (folders <name>/__init__.py): name, hyperparameters (name, type, min, \
        max, step, options, default), sha256, modified_at, valid, errors and the latest deep validation.",
        annotations(
            title = "List strategies",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn strategy_list(&self) -> Result<Json<StrategyList>, String> {
        self.service
            .list_strategies()
            .await
            .map(Json)
            .map_err(tool_error)
    }

    #[tool(
        description = "Read a strategy's source (`code`) and metadata. Pass its sha256 as if_match to strategy_write \
        to avoid overwriting someone else's edit.",
        annotations(
            title = "Read strategy",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn strategy_read(
        &self,
        Parameters(args): Parameters<StrategyNameArgs>,
    ) -> Result<Json<StrategyView>, String> {
        self.service
            .get_strategy(&args.name)
            .await
            .map(Json)
            .map_err(tool_error)
    }

    #[tool(
        description = "Create or replace a strategy. The code must define `class <name>(Strategy)` with should_long \
        and go_long; it is checked statically first (syntax errors come back with line and column and nothing is \
        written), then a deep validation job (import, hyperparameters, smoke backtest) is started: see \
        deep_validation.job_id (job_wait) or strategy_list for its verdict.",
        annotations(
            title = "Write strategy",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn strategy_write(
        &self,
        Parameters(args): Parameters<StrategyWriteArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<StrategyWritten>, String> {
        require(&ctx, Scope::StrategiesWrite)?;
        self.service
            .put_strategy(
                &args.name,
                args.code,
                args.if_match,
                crate::auth::actor(granted(&ctx)),
            )
            .await
            .map(Json)
            .map_err(tool_error)
    }

    #[tool(
        description = "Validate strategy code without saving it. Static checks always (syntax with line/column, the \
        Strategy subclass, required methods, hyperparameters schema); with deep=true also imports it and runs a \
        short smoke backtest in a runner, reporting runtime errors with their line (takes a few seconds; it runs \
        the code, so it needs the strategies:write scope besides run).",
        annotations(
            title = "Validate strategy",
            read_only_hint = true,
            open_world_hint = false
        )
    )]
    async fn strategy_validate(
        &self,
        Parameters(args): Parameters<ValidateBody>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<ValidationReport>, String> {
        require(&ctx, Scope::Run)?;
        // Deep validation runs the submitted code: it needs the scope that writes code.
        if args.deep {
            require(&ctx, Scope::StrategiesWrite)?;
        }
        self.service
            .validate_strategy(
                args.name.as_deref(),
                &args.code,
                args.deep,
                crate::auth::actor(granted(&ctx)),
            )
            .await
            .map(Json)
            .map_err(tool_error)
    }

    #[tool(
        description = "Delete a strategy's folder. Results of past backtests keep their copy of the source.",
        annotations(
            title = "Delete strategy",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn strategy_delete(
        &self,
        Parameters(args): Parameters<StrategyDeleteArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<StrategyDeleted>, String> {
        require(&ctx, Scope::StrategiesWrite)?;
        self.service
            .delete_strategy(&args.name, args.if_match, crate::auth::actor(granted(&ctx)))
            .await
            .map(Json)
            .map_err(tool_error)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for JesseMcp {
    /// As the router, except that a job-creating tool answers a client that
    /// declared the Tasks extension with a task handle for its job.
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let as_task = tasks::client_declared(&context)
            && self
                .tool_router
                .get(&request.name)
                .is_some_and(tasks::is_job_tool);
        let response = self
            .tool_router
            .call(ToolCallContext::new(self, request, context))
            .await?;
        if as_task {
            tasks::into_task(&self.service, response).await
        } else {
            Ok(response)
        }
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        tasks::get(
            &self.service,
            &request.task_id,
            tasks::legacy_peer(&context),
        )
        .await
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        require_scope(&context, Scope::Run).map_err(tasks::protocol_error)?;
        let actor = crate::auth::actor(granted(&context));
        tasks::cancel(&self.service, &request.task_id, actor).await
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        tasks::update(&self.service, &request.task_id).await
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        // Tell this client when strategies are created or deleted, for as long as it is connected.
        let mut changes = self.service.subscribe_strategy_changes();
        let peer = context.peer.clone();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            // A lagged receiver still means "changed"; only a closed channel ends it.
            while let Ok(()) | Err(RecvError::Lagged(_)) = changes.recv().await {
                if peer.notify_resource_list_changed().await.is_err() {
                    break;
                }
            }
        });
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let list = self
            .service
            .list_strategies()
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        let resources = list
            .strategies
            .into_iter()
            .map(|s| {
                Resource::new(format!("{STRATEGY_URI}{}", s.name), s.name.clone())
                    .with_mime_type("text/x-python")
                    .with_description(format!(
                        "Jesse strategy {} (sha256 {}, valid: {})",
                        s.name, s.sha256, s.valid
                    ))
            })
            .collect::<Vec<_>>();
        let resources = research::resources().into_iter().chain(resources).collect();
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListResourceTemplatesResult, ErrorData> {
        Ok(rmcp::model::ListResourceTemplatesResult::with_all_items(
            research::resource_templates(),
        ))
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListPromptsResult, ErrorData> {
        Ok(rmcp::model::ListPromptsResult::with_all_items(
            research::prompts(),
        ))
    }

    async fn get_prompt(
        &self,
        request: rmcp::model::GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::GetPromptResponse, ErrorData> {
        research::prompt(&request.name, request.arguments.as_ref()).map(Into::into)
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        if request.uri == research::TEMPLATES_URI {
            let text = serde_json::to_string_pretty(&self.service.pipeline_templates())
                .unwrap_or_default();
            let contents = ResourceContents::text(text, request.uri.clone())
                .with_mime_type("application/json");
            return Ok(ReadResourceResult::new(vec![contents]).into());
        }
        if let Some(id) = request.uri.strip_prefix(research::REPORT_URI) {
            let report = self
                .service
                .pipeline_report(id)
                .await
                .map_err(|e| ErrorData::resource_not_found(e.body.message, None))?;
            let contents =
                ResourceContents::text(report, request.uri.clone()).with_mime_type("text/markdown");
            return Ok(ReadResourceResult::new(vec![contents]).into());
        }
        let Some(name) = request.uri.strip_prefix(STRATEGY_URI) else {
            return Err(ErrorData::resource_not_found(
                format!(
                    "unknown resource {}; strategies are {STRATEGY_URI}<name>",
                    request.uri
                ),
                None,
            ));
        };
        let view = self
            .service
            .get_strategy(name)
            .await
            .map_err(|e| ErrorData::resource_not_found(e.body.message, None))?;
        let contents =
            ResourceContents::text(view.code, request.uri.clone()).with_mime_type("text/x-python");
        Ok(ReadResourceResult::new(vec![contents]).into())
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_resources_list_changed()
                .enable_prompts()
                .enable_tasks()
                .build(),
        )
        .with_server_info(Implementation::new("jesse-mcp", env!("CARGO_PKG_VERSION")))
        .with_instructions(INSTRUCTIONS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the MCP Inspector's `--strict` lint and the TypeScript SDK refuse, found
    /// by walking every node of a schema (not only the keywords `make_portable`
    /// knows): a boolean that is not the value of a boolean-valued keyword, a
    /// format that is not JSON Schema's. Values (`enum`, `const`, `default`,
    /// `examples`) are data, not schemas.
    fn findings(node: &Value, path: &str, key: Option<&str>, out: &mut Vec<String>) {
        const BOOLEAN_KEYWORDS: &[&str] = &[
            "additionalProperties",
            "unevaluatedProperties",
            "additionalItems",
            "unevaluatedItems",
            "uniqueItems",
            "readOnly",
            "writeOnly",
            "deprecated",
        ];
        match node {
            Value::Bool(b) if !key.is_some_and(|k| BOOLEAN_KEYWORDS.contains(&k)) => {
                out.push(format!("{path}: bare {b} where a schema is expected"));
            }
            Value::Object(map) => {
                // The keys under `properties`/`$defs` are names, each holding a schema.
                let names = ["properties", "$defs", "definitions", "patternProperties"]
                    .contains(&key.unwrap_or(""));
                for (k, v) in map {
                    let child = format!("{path}.{k}");
                    if names {
                        findings(v, &child, None, out);
                    } else if ["enum", "const", "default", "examples"].contains(&k.as_str()) {
                        continue;
                    } else if k == "format" {
                        if !v.as_str().is_some_and(|f| STANDARD_FORMATS.contains(&f)) {
                            out.push(format!("{child}: non-standard format {v}"));
                        }
                    } else {
                        findings(v, &child, Some(k), out);
                    }
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    findings(v, &format!("{path}[{i}]"), None, out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn every_tool_schema_is_portable() {
        let tools = JesseMcp::tools().list_all();
        assert!(tools.len() > 20, "{} tools", tools.len());
        let mut out = Vec::new();
        for tool in &tools {
            let input = Value::Object((*tool.input_schema).clone());
            findings(
                &input,
                &format!("{}.inputSchema", tool.name),
                None,
                &mut out,
            );
            // The TypeScript SDK requires an object at the root of both.
            if input["type"] != "object" {
                out.push(format!(
                    "{}.inputSchema: root type is not object",
                    tool.name
                ));
            }
            if let Some(output) = &tool.output_schema {
                let output = Value::Object((**output).clone());
                findings(
                    &output,
                    &format!("{}.outputSchema", tool.name),
                    None,
                    &mut out,
                );
                if output["type"] != "object" {
                    out.push(format!(
                        "{}.outputSchema: root type is not object",
                        tool.name
                    ));
                }
            }
        }
        assert!(
            out.is_empty(),
            "{} portability errors:\n{}",
            out.len(),
            out.join("\n")
        );
    }

    #[test]
    fn the_check_finds_what_schemars_emits_and_make_portable_removes_it() {
        let mut schema = serde_json::json!({
            "type": "object",
            "properties": {
                "trades": true,
                "never": false,
                "count": {"type": "integer", "format": "uint64", "minimum": 0},
                "size": {"type": "integer", "format": "uint"},
                "ratio": {"type": "number", "format": "double"},
                "when": {"type": "string", "format": "date-time"},
                "flag": {"type": "boolean", "default": true, "enum": [true, false]},
                "rows": {"type": "array", "items": true, "uniqueItems": true}
            },
            "additionalProperties": false,
            "$defs": {"Any": true, "Nested": {"anyOf": [true, {"type": "integer", "format": "int64"}]}}
        });
        let mut before = Vec::new();
        findings(&schema, "", None, &mut before);
        assert_eq!(before.len(), 9, "{before:#?}");
        make_portable(&mut schema);
        let mut after = Vec::new();
        findings(&schema, "", None, &mut after);
        assert!(after.is_empty(), "{after:#?}");
        let properties = &schema["properties"];
        assert_eq!(properties["trades"], serde_json::json!({}));
        assert_eq!(properties["never"], serde_json::json!({"not": {}}));
        assert_eq!(properties["size"]["minimum"], 0, "unsigned stays unsigned");
        assert_eq!(properties["when"]["format"], "date-time");
        assert_eq!(properties["flag"]["enum"], serde_json::json!([true, false]));
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["$defs"]["Nested"]["anyOf"][0], serde_json::json!({}));
    }

    #[test]
    fn hints_name_mcp_tools_not_rest_paths() {
        let id = "01JAAAAAAAAAAAAAAAAAAAAAAA";
        let not_ready = mcp_message(&format!(
            "job {id} is running; poll GET /v1/jobs/{id} until it succeeds"
        ));
        assert_eq!(
            not_ready,
            format!(
                "job {id} is running; call job_wait with job_id {id} (or poll job_get) until it succeeds"
            )
        );
        let unknown = mcp_message(
            "no job with id 'x'; ids are returned by submits and listed by GET /v1/jobs",
        );
        assert!(unknown.ends_with("listed by job_list"), "{unknown}");
        assert!(!unknown.contains("/v1"));
        for rest in [
            "give either steps or a template (with its params); GET /v1/pipelines/templates lists the templates",
            "job x is a backtest job; reports belong to pipeline jobs (research_pipeline, POST /v1/pipelines)",
        ] {
            let mcp = mcp_message(rest);
            assert!(!mcp.contains("/v1/"), "{mcp}");
        }
    }
}
