//! The service functions both frontends call: validate, enqueue, read jobs and
//! results, import candles. REST and MCP are thin shells around this module, so
//! they can never disagree about what a request means.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jesse_mcp_core::candles::{CsvError, Rejection, parse_csv};
use jesse_mcp_core::jesse::{
    BACKTESTING_EXCHANGES, STRATEGY_NAME_RULE, TIMEFRAMES, is_backtesting_exchange,
    is_valid_strategy_name, timeframe_minutes,
};
use jesse_mcp_core::jobs::{
    BacktestPlan, BacktestRequest, JobKind, JobStatus, QueuedJob, RouteSpec, StrategySource,
};
use jesse_mcp_core::queue::Queue;
use jesse_mcp_core::store::{
    CancelOutcome, Gap, Inserted, JobFilter, JobRecord, NewJob, Store, UpsertCounts,
};
use jesse_mcp_core::time::{MINUTE_MS, parse_day, to_rfc3339};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::strategies::StrategyDir;

mod candles;
mod schedules;
mod strategies;
pub use candles::{GapReport, ImportRequest};
pub use schedules::{Housekeeping, ScheduleList, SchedulesBody};
pub use strategies::{
    DeepValidation, StrategyDeleted, StrategyList, StrategySummary, StrategyView, StrategyWritten,
    ValidationReport,
};

pub const MAX_WAIT_SECS: u64 = 50;

#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    queue: Queue,
    strategies: StrategyDir,
    /// Tells MCP sessions that the set of strategies changed.
    strategy_set_changed: tokio::sync::broadcast::Sender<()>,
}

/// The answer to a submit: the job to poll.
#[derive(Debug, Serialize, JsonSchema)]
pub struct JobAccepted {
    pub job_id: String,
    pub status: JobStatus,
    pub kind: JobKind,
    /// False when an `Idempotency-Key` matched an earlier submit and that job is returned.
    pub created: bool,
    /// Where to poll.
    pub links: JobLinks,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct JobLinks {
    pub job: String,
    pub result: String,
    pub cancel: String,
}

impl JobLinks {
    fn for_id(id: &str) -> Self {
        Self {
            job: format!("/v1/jobs/{id}"),
            result: format!("/v1/jobs/{id}/result"),
            cancel: format!("/v1/jobs/{id}/cancel"),
        }
    }
}

/// A job as clients see it (`GET /v1/jobs/{id}`, MCP `job_get`).
#[derive(Debug, Serialize, JsonSchema)]
pub struct JobView {
    pub job_id: String,
    pub kind: JobKind,
    pub status: JobStatus,
    /// 0..1; stage-based for backtests.
    pub progress: f64,
    /// What a running job is doing now.
    pub stage: Option<String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Runner attempts started (a runner crash is retried a bounded number of times).
    pub attempts: i64,
    /// True once a cancel was requested for a running job.
    pub cancel_requested: bool,
    pub error: Option<jesse_mcp_core::ErrorBody>,
    /// Headline numbers of a finished job.
    pub summary: Option<Value>,
    pub links: JobLinks,
}

impl From<JobRecord> for JobView {
    fn from(job: JobRecord) -> Self {
        JobView {
            links: JobLinks::for_id(&job.id),
            job_id: job.id,
            kind: job.kind,
            status: job.status,
            progress: job.progress,
            stage: job.stage,
            created_at: to_rfc3339(job.created_at),
            started_at: job.started_at.map(to_rfc3339),
            finished_at: job.finished_at.map(to_rfc3339),
            attempts: job.attempts,
            cancel_requested: job.cancel_requested,
            error: job.error,
            summary: job.summary,
        }
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` to get the next (older) page; null on the last page.
    pub next_cursor: Option<String>,
}

/// What a result read should include.
#[derive(Debug, Default, Clone)]
pub struct ResultQuery {
    pub include_trades: Option<bool>,
    pub include_equity_curve: Option<bool>,
    pub trades_offset: usize,
    pub trades_limit: Option<usize>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ResultView {
    pub job_id: String,
    /// Jesse's metrics, unchanged; NaN and ±infinity (e.g. average_loss with no
    /// losing trade) are null because JSON cannot represent them.
    pub metrics: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trades: Option<Value>,
    /// Number of closed trades in the stored result.
    pub trades_total: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trades_offset: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub equity_curve: Option<Value>,
    pub provenance: Value,
    /// With `allow_gaps`: the missing runs of each series the backtest ran over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gaps: Option<Value>,
    /// Where the time went, in milliseconds.
    pub timings: Value,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CsvImportReport {
    pub exchange: String,
    pub symbol: String,
    pub rows_received: u64,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub rejected: u64,
    /// The first rejected line and why, if any.
    pub first_rejection: Option<Rejection>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SeriesView {
    pub exchange: String,
    pub symbol: String,
    pub timeframe: String,
    /// First stored minute (ms since the epoch) and as RFC 3339.
    pub first: i64,
    pub first_date: String,
    /// Last stored minute (ms since the epoch) and as RFC 3339.
    pub last: i64,
    pub last_date: String,
    pub rows: i64,
    /// Minutes between first and last that are not stored.
    pub missing_minutes: i64,
    /// Runs of missing minutes between first and last (details: the gaps endpoint).
    pub gaps: i64,
    /// When an import job last finished for this series (null if only CSV-imported).
    pub last_import_at: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct SeriesList {
    pub series: Vec<SeriesView>,
}

impl Service {
    pub fn new(store: Store, queue: Queue, strategies_dir: PathBuf) -> Self {
        let (strategy_set_changed, _) = tokio::sync::broadcast::channel(16);
        Self {
            inner: Arc::new(Inner {
                store,
                queue,
                strategies: StrategyDir::new(strategies_dir),
                strategy_set_changed,
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub async fn queue_depth(&self, kind: JobKind) -> Result<i64, ApiError> {
        Ok(self.inner.queue.depth(kind).await?)
    }

    /// Ready to take work: the store and the queue both answer.
    pub async fn ready(&self) -> Result<Value, ApiError> {
        self.inner.store.ping().await.map_err(|e| {
            tracing::error!(error = %e, "readiness: store unreachable");
            ApiError::unavailable("the store is unreachable")
        })?;
        self.inner
            .queue
            .depth(JobKind::Backtest)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "readiness: queue unreachable");
                ApiError::unavailable("the queue is unreachable")
            })?;
        Ok(json!({"ready": true}))
    }

    pub async fn health(&self) -> Result<Value, ApiError> {
        self.inner.store.ping().await?;
        let depth = self.inner.queue.depth(JobKind::Backtest).await?;
        Ok(
            json!({"status": "ok", "version": env!("CARGO_PKG_VERSION"), "queue": {"backtest": depth}}),
        )
    }

    // ---- backtests ----------------------------------------------------------

    pub async fn submit_backtest(
        &self,
        request: BacktestRequest,
        idempotency_key: Option<&str>,
    ) -> Result<JobAccepted, ApiError> {
        if let Some(key) = idempotency_key
            && (key.is_empty() || key.len() > 200)
        {
            return Err(ApiError::bad_request(
                "invalid_idempotency_key",
                "the Idempotency-Key header must be 1 to 200 characters",
            ));
        }
        let plan = self.plan_backtest(&request).await?;
        let params = serde_json::to_value(&plan).expect("plans serialize");
        self.enqueue(JobKind::Backtest, params, idempotency_key)
            .await
    }

    /// Records a job and puts it on its kind's queue; answers once both happened.
    async fn enqueue(
        &self,
        kind: JobKind,
        params: Value,
        idempotency_key: Option<&str>,
    ) -> Result<JobAccepted, ApiError> {
        let id = jesse_mcp_core::jobs::new_job_id();
        let inserted = self
            .inner
            .store
            .insert_job(NewJob {
                id: &id,
                kind,
                params: &params,
                idempotency_key,
            })
            .await?;
        let job = match inserted {
            Inserted::Existing(job) => {
                if job.params != params {
                    return Err(ApiError::conflict(
                        "idempotency_key_reused",
                        "this Idempotency-Key was already used for a different request; use a new key",
                    )
                    .with_details(json!({"job_id": job.id})));
                }
                // A job recorded by a submit that died before enqueueing: enqueue it now,
                // so a retry with the same key never returns a job that cannot run.
                if job.status == JobStatus::Queued {
                    self.ensure_enqueued(&job).await?;
                }
                return Ok(accepted(job, false));
            }
            Inserted::Created(job) => job,
        };
        if let Err(e) = self
            .inner
            .queue
            .push(&QueuedJob {
                job_id: id.clone(),
                kind,
            })
            .await
        {
            tracing::error!(job.id = id, error = %e, "enqueue failed; withdrawing the job");
            self.inner.store.delete_unqueued_job(&id).await?;
            return Err(ApiError::unavailable(
                "the queue is not accepting jobs right now; retry shortly",
            ));
        }
        tracing::info!(job.id = id, job.kind = kind.as_str(), "job queued");
        Ok(accepted(job, true))
    }

    /// Pushes a recorded job onto its queue unless the queue will still deliver
    /// it; true if it had to be pushed. A task that ended while the store still
    /// says queued (a worker that could not reach the store gave it up) is
    /// replaced.
    async fn ensure_enqueued(&self, job: &JobRecord) -> Result<bool, ApiError> {
        if self.inner.queue.holds(job.kind, &job.id).await? {
            return Ok(false);
        }
        self.inner.queue.forget_ended(job.kind, &job.id).await?;
        self.inner
            .queue
            .push(&QueuedJob {
                job_id: job.id.clone(),
                kind: job.kind,
            })
            .await?;
        Ok(true)
    }

    /// Re-enqueues jobs that the queue will not deliver: a submit that died
    /// between recording the job and enqueueing it, a queue that lost data (a
    /// Redis restarted without its append-only file) under a queued job or under
    /// a running one whose worker then died or stalled. Queued jobs are looked at
    /// once they have waited `stale_ms`, running ones once their lease has been
    /// expired that long (a live worker takes them over); returns how many were
    /// re-enqueued.
    pub async fn requeue_lost(&self, stale_ms: i64) -> Result<usize, ApiError> {
        let before = jesse_mcp_core::time::now_ms() - stale_ms;
        let mut requeued = 0;
        for job in self.inner.store.stale_jobs(before, 200).await? {
            if self.ensure_enqueued(&job).await? {
                tracing::warn!(
                    job.id = job.id,
                    job.status = job.status.as_str(),
                    "re-enqueued a job the queue would not deliver"
                );
                requeued += 1;
            }
            self.inner.store.touch_job(&job.id).await?;
        }
        Ok(requeued)
    }

    /// Checks a request against everything knowable before a worker is used.
    pub async fn plan_backtest(&self, request: &BacktestRequest) -> Result<BacktestPlan, ApiError> {
        if !is_backtesting_exchange(&request.exchange) {
            return Err(ApiError::invalid(
                "unsupported_exchange",
                format!(
                    "exchange '{}' is not one Jesse can backtest; use one of the listed names",
                    request.exchange
                ),
            )
            .with_details(json!({"field": "exchange", "supported": BACKTESTING_EXCHANGES})));
        }
        let routes: Vec<RouteSpec> = match &request.routes {
            Some(routes) if !routes.is_empty() => routes.clone(),
            Some(_) => {
                return Err(ApiError::invalid(
                    "invalid_routes",
                    "routes must not be empty when given",
                ));
            }
            None => {
                let field = |value: &Option<String>, name: &str| {
                    value.clone().ok_or_else(|| {
                        ApiError::invalid(
                            "missing_field",
                            format!(
                                "'{name}' is required (or give 'routes' for a multi-route backtest)"
                            ),
                        )
                        .with_details(json!({"field": name}))
                    })
                };
                vec![RouteSpec {
                    strategy: field(&request.strategy, "strategy")?,
                    symbol: field(&request.symbol, "symbol")?,
                    timeframe: field(&request.timeframe, "timeframe")?,
                }]
            }
        };
        let data_routes = request.data_routes.clone().unwrap_or_default();
        let mut max_minutes = 1;
        let mut seen = std::collections::HashSet::new();
        let mut sources: Vec<StrategySource> = Vec::new();
        for route in &routes {
            if !sources.iter().any(|s| s.name == route.strategy) {
                sources
                    .push(self.check_strategy(&route.strategy, request.hyperparameters.as_ref())?);
            }
            check_symbol(&route.symbol)?;
            max_minutes = max_minutes.max(check_timeframe(&route.timeframe)?);
            if !seen.insert(route.symbol.clone()) {
                return Err(ApiError::invalid(
                    "duplicate_route",
                    format!(
                        "symbol {} is traded by more than one route; Jesse allows one route per symbol",
                        route.symbol
                    ),
                ));
            }
        }
        for data_route in &data_routes {
            check_symbol(&data_route.symbol)?;
            max_minutes = max_minutes.max(check_timeframe(&data_route.timeframe)?);
            if routes
                .iter()
                .any(|r| r.symbol == data_route.symbol && r.timeframe == data_route.timeframe)
            {
                return Err(ApiError::invalid(
                    "duplicate_route",
                    format!(
                        "data route {} {} repeats a trading route",
                        data_route.symbol, data_route.timeframe
                    ),
                ));
            }
        }

        let start_ms = parse_day(&request.start_date).map_err(|m| {
            ApiError::invalid("invalid_date", format!("start_date: {m}"))
                .with_details(json!({"field": "start_date"}))
        })?;
        let end_ms = parse_day(&request.end_date).map_err(|m| {
            ApiError::invalid("invalid_date", format!("end_date: {m}"))
                .with_details(json!({"field": "end_date"}))
        })?;
        if start_ms >= end_ms {
            return Err(ApiError::invalid(
                "invalid_date_range",
                format!(
                    "start_date ({}) must be before end_date ({}); end_date is exclusive, so a one-day backtest of 2024-01-01 uses end_date 2024-01-02",
                    request.start_date, request.end_date
                ),
            ));
        }
        check_number(
            "starting_balance",
            request.starting_balance,
            |v| v > 0.0 && v <= 1e15,
            "a positive amount",
        )?;
        check_number(
            "fee",
            request.fee,
            |v| (0.0..0.1).contains(&v),
            "a rate from 0 to 0.1 (0.001 = 0.1 %)",
        )?;
        check_number(
            "leverage",
            request.leverage,
            |v| (1.0..=125.0).contains(&v),
            "from 1 to 125",
        )?;
        if !(0..=10_000).contains(&request.warm_up_candles) {
            return Err(ApiError::invalid(
                "invalid_number",
                "warm_up_candles must be from 0 to 10000",
            )
            .with_details(json!({"field": "warm_up_candles"})));
        }
        if !matches!(request.exchange_type.as_str(), "futures" | "spot") {
            return Err(
                ApiError::invalid("invalid_type", "type must be 'futures' or 'spot'")
                    .with_details(json!({"field": "type"})),
            );
        }
        if !matches!(request.leverage_mode.as_str(), "cross" | "isolated") {
            return Err(ApiError::invalid(
                "invalid_leverage_mode",
                "leverage_mode must be 'cross' or 'isolated'",
            )
            .with_details(json!({"field": "leverage_mode"})));
        }

        let warmup_minutes = request.warm_up_candles * max_minutes;
        let mut symbols: Vec<String> = routes.iter().map(|r| r.symbol.clone()).collect();
        symbols.extend(data_routes.iter().map(|r| r.symbol.clone()));
        symbols.sort();
        symbols.dedup();
        let load_start = start_ms - warmup_minutes * MINUTE_MS;
        let mut gap_report = serde_json::Map::new();
        for symbol in &symbols {
            let gaps = self
                .inner
                .store
                .gaps(&request.exchange, symbol, load_start, end_ms)
                .await?;
            if gaps.is_empty() {
                continue;
            }
            if !request.allow_gaps {
                return Err(missing_candles(
                    &request.exchange,
                    symbol,
                    load_start,
                    start_ms,
                    end_ms,
                    &gaps,
                ));
            }
            let trading = self
                .inner
                .store
                .count_candles(&request.exchange, symbol, start_ms, end_ms)
                .await?;
            let warm = self
                .inner
                .store
                .count_candles(&request.exchange, symbol, load_start, start_ms)
                .await?;
            if trading == 0 || (warmup_minutes > 0 && warm == 0) {
                return Err(missing_candles(&request.exchange, symbol, load_start, start_ms, end_ms, &gaps)
                    .with_details(json!({"reason": "allow_gaps still needs candles in the trading range and in the warm-up"})));
            }
            let missing: i64 = gaps.iter().map(|g| g.minutes).sum();
            gap_report.insert(
                format!("{}-{symbol}", request.exchange),
                json!({"gaps": gaps, "missing_minutes": missing, "start": load_start, "end": end_ms}),
            );
        }

        let leverage = if request.leverage.fract() == 0.0 {
            json!(request.leverage as i64)
        } else {
            json!(request.leverage)
        };
        Ok(BacktestPlan {
            exchange: request.exchange.clone(),
            config: json!({
                "starting_balance": request.starting_balance,
                "fee": request.fee,
                "type": request.exchange_type,
                "futures_leverage": leverage,
                "futures_leverage_mode": request.leverage_mode,
                "exchange": request.exchange,
                "warm_up_candles": request.warm_up_candles,
            }),
            routes,
            data_routes,
            start_ms,
            end_ms,
            warmup_minutes,
            symbols,
            hyperparameters: request.hyperparameters.clone(),
            fast_mode: request.fast_mode,
            include_trades: request.include_trades,
            include_equity_curve: request.include_equity_curve,
            strategies: sources,
            gap_report: (!gap_report.is_empty()).then_some(Value::Object(gap_report)),
        })
    }

    fn check_strategy(
        &self,
        name: &str,
        hyperparameters: Option<&serde_json::Map<String, Value>>,
    ) -> Result<StrategySource, ApiError> {
        if !is_valid_strategy_name(name) {
            return Err(ApiError::invalid(
                "invalid_strategy_name",
                format!("'{name}' is not a valid strategy name: {STRATEGY_NAME_RULE}"),
            )
            .with_details(json!({"field": "strategy"})));
        }
        self.check_strategy_source(name, hyperparameters)
    }

    pub(super) fn strategy_names(&self) -> Vec<String> {
        self.inner.strategies.names().unwrap_or_default()
    }

    // ---- jobs ---------------------------------------------------------------

    pub async fn get_job(&self, id: &str) -> Result<JobView, ApiError> {
        Ok(self.job_record(id).await?.into())
    }

    async fn job_record(&self, id: &str) -> Result<JobRecord, ApiError> {
        self.inner.store.get_job(id.trim()).await?.ok_or_else(|| {
            ApiError::not_found(
                "job_not_found",
                format!(
                    "no job with id '{id}'; ids are returned by submits and listed by GET /v1/jobs"
                ),
            )
        })
    }

    pub async fn list_jobs(
        &self,
        kind: Option<&str>,
        status: Option<&str>,
        limit: Option<i64>,
        cursor: Option<&str>,
    ) -> Result<JobList, ApiError> {
        let kind = kind
            .filter(|k| !k.is_empty())
            .map(|k| {
                JobKind::parse(k).ok_or_else(|| {
                    ApiError::invalid(
                        "invalid_kind",
                        format!("unknown job kind '{k}'; use one of: backtest"),
                    )
                })
            })
            .transpose()?;
        let status = status
            .filter(|s| !s.is_empty())
            .map(|s| {
                JobStatus::parse(s).ok_or_else(|| {
                    ApiError::invalid(
                        "invalid_status",
                        format!("unknown status '{s}'; use one of: queued, running, succeeded, failed, cancelled"),
                    )
                })
            })
            .transpose()?;
        let limit = limit.unwrap_or(50);
        if !(1..=200).contains(&limit) {
            return Err(ApiError::invalid(
                "invalid_limit",
                "limit must be from 1 to 200",
            ));
        }
        let mut jobs = self
            .inner
            .store
            .list_jobs(&JobFilter {
                kind,
                status,
                before: cursor.map(str::to_string),
                limit: limit + 1,
            })
            .await?;
        let next_cursor = if jobs.len() as i64 > limit {
            jobs.truncate(limit as usize);
            jobs.last().map(|j| j.id.clone())
        } else {
            None
        };
        Ok(JobList {
            jobs: jobs.into_iter().map(JobView::from).collect(),
            next_cursor,
        })
    }

    pub async fn cancel_job(&self, id: &str) -> Result<JobView, ApiError> {
        let job = self.job_record(id).await?;
        let outcome = self
            .inner
            .store
            .request_cancel(&job.id)
            .await?
            .ok_or_else(|| {
                ApiError::not_found("job_not_found", format!("no job with id '{id}'"))
            })?;
        match outcome {
            CancelOutcome::Cancelled(job) => {
                // Best effort: the worker also skips jobs whose row says cancelled.
                if let Err(e) = self.inner.queue.withdraw(job.kind, &job.id).await {
                    tracing::warn!(job.id = job.id, error = %e, "withdrawing a cancelled job from the queue failed");
                }
                tracing::info!(job.id = job.id, "queued job cancelled");
                Ok(job.into())
            }
            CancelOutcome::Requested(job) => {
                tracing::info!(job.id = job.id, "cancel requested for running job");
                Ok(job.into())
            }
            CancelOutcome::AlreadyFinished(job) if job.status == JobStatus::Cancelled => {
                Ok(job.into())
            }
            CancelOutcome::AlreadyFinished(job) => Err(ApiError::conflict(
                "job_already_finished",
                format!(
                    "job {} already {}; there is nothing to cancel",
                    job.id,
                    job.status.as_str()
                ),
            )),
        }
    }

    /// Waits until the job is terminal or `timeout` passes (at most 50 s),
    /// calling `on_progress` whenever its progress or stage changes.
    pub async fn wait_job<F, Fut>(
        &self,
        id: &str,
        timeout: Duration,
        mut on_progress: F,
    ) -> Result<JobView, ApiError>
    where
        F: FnMut(f64, String) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let deadline = Instant::now() + timeout.min(Duration::from_secs(MAX_WAIT_SECS));
        let mut last = None;
        loop {
            let job = self.job_record(id).await?;
            if job.status.is_terminal() || Instant::now() >= deadline {
                return Ok(job.into());
            }
            let stage = job
                .stage
                .clone()
                .unwrap_or_else(|| job.status.as_str().to_string());
            let marker = (job.progress.to_bits(), stage.clone());
            if last.as_ref() != Some(&marker) {
                on_progress(job.progress, format!("{}: {stage}", job.status.as_str())).await;
                last = Some(marker);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn get_result(&self, id: &str, query: &ResultQuery) -> Result<ResultView, ApiError> {
        let job = self.job_record(id).await?;
        match job.status {
            JobStatus::Succeeded => {}
            JobStatus::Queued | JobStatus::Running => {
                return Err(ApiError::conflict(
                    "result_not_ready",
                    format!(
                        "job {} is {}; poll GET /v1/jobs/{} until it succeeds",
                        job.id,
                        job.status.as_str(),
                        job.id
                    ),
                ));
            }
            JobStatus::Failed | JobStatus::Cancelled => {
                return Err(ApiError::conflict(
                    "job_has_no_result",
                    format!(
                        "job {} {} and has no result; see its error",
                        job.id,
                        job.status.as_str()
                    ),
                )
                .with_details(json!({"job_error": job.error})));
            }
        }
        let Some(result) = self.inner.store.get_backtest_result(&job.id).await? else {
            return Err(ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "result row is missing",
            ));
        };
        let plan: Option<BacktestPlan> = serde_json::from_value(job.params.clone()).ok();
        let asked_trades = query
            .include_trades
            .unwrap_or(plan.as_ref().is_some_and(|p| p.include_trades));
        let asked_curve = query.include_equity_curve.unwrap_or(true);
        let all_trades = result
            .trades
            .as_ref()
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let trades_total = all_trades.len();
        let trades = asked_trades.then(|| {
            let limit = query.trades_limit.unwrap_or(usize::MAX);
            Value::Array(
                all_trades
                    .into_iter()
                    .skip(query.trades_offset)
                    .take(limit)
                    .collect(),
            )
        });
        Ok(ResultView {
            job_id: job.id,
            metrics: result.metrics,
            trades,
            trades_total,
            trades_offset: asked_trades.then_some(query.trades_offset),
            equity_curve: if asked_curve {
                result.equity_curve
            } else {
                None
            },
            provenance: json!({
                "jesse_version": result.jesse_version,
                "strategies": result.strategies,
                "candles": result.candles,
                "params": job.params,
            }),
            gaps: plan.as_ref().and_then(|p| p.gap_report.clone()),
            timings: result.timings,
        })
    }

    // ---- candles ------------------------------------------------------------

    pub async fn import_csv(
        &self,
        exchange: &str,
        symbol: &str,
        body: &[u8],
    ) -> Result<CsvImportReport, ApiError> {
        if !is_backtesting_exchange(exchange) {
            return Err(ApiError::invalid(
                "unsupported_exchange",
                format!("exchange '{exchange}' is not one Jesse can backtest; use one of the listed names"),
            )
            .with_details(json!({"field": "exchange", "supported": BACKTESTING_EXCHANGES})));
        }
        check_symbol(symbol)?;
        let parsed = parse_csv(body).map_err(|e| match e {
            CsvError::Empty | CsvError::BadHeader(_) | CsvError::NotUtf8 => {
                ApiError::invalid("invalid_csv", e.to_string())
            }
        })?;
        let received = parsed.candles.len() as u64 + parsed.rejected;
        let counts: UpsertCounts = self
            .inner
            .store
            .upsert_candles(exchange, symbol, &parsed.candles)
            .await?;
        if counts.inserted > 0 {
            self.inner.store.refresh_gap_count(exchange, symbol).await?;
        }
        tracing::info!(
            exchange,
            symbol,
            inserted = counts.inserted,
            updated = counts.updated,
            rejected = parsed.rejected,
            "csv imported"
        );
        Ok(CsvImportReport {
            exchange: exchange.to_string(),
            symbol: symbol.to_string(),
            rows_received: received,
            inserted: counts.inserted,
            updated: counts.updated,
            unchanged: counts.unchanged,
            rejected: parsed.rejected,
            first_rejection: parsed.first_rejection,
        })
    }

    pub async fn list_series(&self) -> Result<SeriesList, ApiError> {
        let series = self.inner.store.list_series().await?;
        Ok(SeriesList {
            series: series
                .into_iter()
                .map(|s| SeriesView {
                    missing_minutes: (s.last - s.first) / MINUTE_MS + 1 - s.rows,
                    first_date: to_rfc3339(s.first),
                    last_date: to_rfc3339(s.last),
                    exchange: s.exchange,
                    symbol: s.symbol,
                    timeframe: s.timeframe,
                    first: s.first,
                    last: s.last,
                    rows: s.rows,
                    last_import_at: s.last_import_at.map(to_rfc3339),
                    gaps: s.gaps,
                })
                .collect(),
        })
    }
}

fn accepted(job: JobRecord, created: bool) -> JobAccepted {
    JobAccepted {
        links: JobLinks::for_id(&job.id),
        job_id: job.id,
        status: job.status,
        kind: job.kind,
        created,
    }
}

pub fn check_symbol(symbol: &str) -> Result<(), ApiError> {
    let valid = symbol.len() <= 40
        && symbol.split_once('-').is_some_and(|(base, quote)| {
            !base.is_empty()
                && !quote.is_empty()
                && symbol
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-')
                && !quote.contains('-')
        });
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "invalid_symbol",
            format!(
                "symbol '{symbol}' is not in Jesse's form BASE-QUOTE in capitals, e.g. BTC-USDT"
            ),
        )
        .with_details(json!({"field": "symbol"})))
    }
}

fn check_timeframe(timeframe: &str) -> Result<i64, ApiError> {
    timeframe_minutes(timeframe).ok_or_else(|| {
        ApiError::invalid("unsupported_timeframe", format!("timeframe '{timeframe}' is not supported by Jesse"))
            .with_details(json!({"field": "timeframe", "supported": TIMEFRAMES.iter().map(|(t, _)| *t).collect::<Vec<_>>()}))
    })
}

fn check_number(
    field: &str,
    value: f64,
    ok: impl Fn(f64) -> bool,
    rule: &str,
) -> Result<(), ApiError> {
    if value.is_finite() && ok(value) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "invalid_number",
            format!("{field} is {value}; it must be {rule}"),
        )
        .with_details(json!({"field": field})))
    }
}

fn missing_candles(
    exchange: &str,
    symbol: &str,
    load_start: i64,
    start: i64,
    end: i64,
    gaps: &[Gap],
) -> ApiError {
    let missing: i64 = gaps.iter().map(|g| g.minutes).sum();
    let first = gaps[0];
    let shown: Vec<Value> = gaps
        .iter()
        .take(20)
        .map(|g| json!({"start": g.start, "end": g.end, "minutes": g.minutes, "start_date": to_rfc3339(g.start), "end_date": to_rfc3339(g.end)}))
        .collect();
    ApiError::invalid(
        "missing_candles",
        format!(
            "{missing} of the {} 1m candles needed for {exchange} {symbol} are not stored (range {} to {} including {} warm-up minutes); the first missing run is {} to {}. Import them (POST /v1/candles/csv) or shorten the range.",
            (end - load_start) / MINUTE_MS,
            to_rfc3339(load_start),
            to_rfc3339(end),
            (start - load_start) / MINUTE_MS,
            to_rfc3339(first.start),
            to_rfc3339(first.end),
        ),
    )
    .with_details(json!({
        "exchange": exchange,
        "symbol": symbol,
        "required": {"start": load_start, "end": end, "start_date": to_rfc3339(load_start), "end_date": to_rfc3339(end)},
        "missing_minutes": missing,
        "gaps": shown,
        "gaps_total": gaps.len(),
    }))
}
