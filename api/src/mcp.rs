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
    tool_router: ToolRouter<Self>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct JobIdArgs {
    /// The job id returned by `backtest` (a ULID such as 01JD3...).
    pub job_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct JobWaitArgs {
    /// The job id returned by `backtest`.
    pub job_id: String,
    /// How long to wait for the job to finish, 1..50 seconds (default 30).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
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
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct AnalyzeArgs {
    /// The id of a succeeded backtest job.
    pub job_id: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
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
pub struct JobListArgs {
    /// Only jobs of this kind: `backtest`, `backtest_batch`, `optimization`, `optimization_trial`, `walk_forward`, `monte_carlo`, `significance_test`, `candle_import`, `strategy_validation`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Only jobs with this status: queued, running, succeeded, failed, cancelled.
    #[serde(default)]
    pub status: Option<String>,
    /// Page size, 1..200 (default 20).
    #[serde(default)]
    pub limit: Option<i64>,
    /// `next_cursor` from the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
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
pub struct StrategyNameArgs {
    /// Strategy name: letters, digits and underscore, e.g. `SmaCross` (the folder `<name>/__init__.py`).
    pub name: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
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

fn tool_error(error: ApiError) -> String {
    error.envelope().to_string()
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
            tool_router: Self::tools(),
        }
    }

    /// Every tool: the ones below, and a submit tool per kind users can submit.
    pub fn tools() -> ToolRouter<Self> {
        let mut tool_router = Self::tool_router();
        for kind in REGISTRY.iter().copied() {
            if let Some(route) = submit_tool(kind) {
                tool_router.add_route(route);
            }
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
        description = "Wait for a job to finish: returns the job (as job_get) as soon as it is succeeded, failed or \
        cancelled, or after timeout_seconds (at most 50) if it is still running; call again in that case. Sends \
        progress notifications while waiting when the request carries a progress token.",
        annotations(title = "Wait for job", read_only_hint = true, open_world_hint = false)
    )]
    async fn job_wait(
        &self,
        Parameters(args): Parameters<JobWaitArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<Json<JobView>, String> {
        let timeout = Duration::from_secs(
            args.timeout_seconds
                .unwrap_or(30)
                .clamp(1, crate::service::MAX_WAIT_SECS),
        );
        let token = ctx.meta.get_progress_token();
        let peer = ctx.peer.clone();
        let job = self
            .service
            .wait_job(&args.job_id, timeout, |progress, message| {
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
            })
            .await
            .map_err(tool_error)?;
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
        description = "List jobs, newest first, optionally filtered by kind and status; page with cursor.",
        annotations(title = "List jobs", read_only_hint = true, open_world_hint = false)
    )]
    async fn job_list(
        &self,
        Parameters(args): Parameters<JobListArgs>,
    ) -> Result<Json<JobList>, String> {
        self.service
            .list_jobs(
                args.kind.as_deref(),
                args.status.as_deref(),
                Some(args.limit.unwrap_or(20)),
                args.cursor.as_deref(),
            )
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
            .cancel_job(&args.job_id)
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
        description = "List the stored 1m candle series (exchange, symbol, first/last minute, rows, missing minutes). \
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
        tasks::cancel(&self.service, &request.task_id).await
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
            .collect();
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
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
                .enable_tasks()
                .build(),
        )
        .with_server_info(Implementation::new("jesse-mcp", env!("CARGO_PKG_VERSION")))
        .with_instructions(INSTRUCTIONS)
    }
}
