//! The service functions both frontends call: validate, enqueue, read jobs and
//! results, import candles. REST and MCP are thin shells around this module, so
//! they can never disagree about what a request means.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jesse_mcp_core::candles::{CandleSource, CsvError, Rejection, parse_csv, series_source_note};
use jesse_mcp_core::engine::{Accepted, Engine, eta_seconds};
use jesse_mcp_core::jesse::{BACKTESTING_EXCHANGES, is_backtesting_exchange};
use jesse_mcp_core::jobs::JobStatus;
use jesse_mcp_core::kinds::{KindDef, Lane, REGISTRY, find};
pub use jesse_mcp_core::planner::check_symbol;
use jesse_mcp_core::queue::Queue;
use jesse_mcp_core::store::{
    CancelOutcome, ChildCounts, JobFilter, JobRecord, Store, UpsertCounts,
};
use jesse_mcp_core::subject::{JobSubject, check_tag};
use jesse_mcp_core::time::{MINUTE_MS, to_rfc3339};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::ApiError;

mod analysis;
mod candles;
mod logs;
mod pipelines;
mod schedules;
mod shapes;
mod strategies;
pub use analysis::{CompareRequest, MAX_COMPARED};
pub use candles::{GapReport, ImportRequest};
pub use logs::{JobLogEntry, JobLogs, JobLogsArgs};
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
    /// The store, the queue and the strategies directory, and what runs on them.
    engine: Engine,
    /// Tells MCP sessions that the set of strategies changed.
    strategy_set_changed: tokio::sync::broadcast::Sender<()>,
    /// The last write probe of /health and /ready and when it ran: probes
    /// run one at a time and at most once a second, however often (and by
    /// however many unauthenticated callers) /health is asked.
    write_probe: tokio::sync::Mutex<Option<(Instant, Result<(), ApiError>)>>,
}

/// The answer to a submit: the job to poll.
#[derive(Debug, Serialize, JsonSchema)]
pub struct JobAccepted {
    pub job_id: String,
    pub status: JobStatus,
    #[schemars(schema_with = "jesse_mcp_core::kinds::kind_schema")]
    pub kind: String,
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
    /// A parent's children (`GET /v1/jobs/{id}/children`).
    pub children: String,
}

impl JobLinks {
    fn for_id(id: &str) -> Self {
        Self {
            job: format!("/v1/jobs/{id}"),
            result: format!("/v1/jobs/{id}/result"),
            cancel: format!("/v1/jobs/{id}/cancel"),
            children: format!("/v1/jobs/{id}/children"),
        }
    }
}

/// A job as clients see it (`GET /v1/jobs/{id}`, MCP `job_get`).
#[derive(Debug, Serialize, JsonSchema)]
pub struct JobView {
    pub job_id: String,
    #[schemars(schema_with = "jesse_mcp_core::kinds::kind_schema")]
    pub kind: String,
    pub status: JobStatus,
    /// What the job is about: strategy, exchange, symbol, timeframe, range and
    /// hyperparameters, the fields that apply to its kind.
    pub subject: JobSubject,
    /// The tags given at submit.
    pub tags: Vec<String>,
    /// 0..1; stage-based for backtests, children done / total for parents.
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
    /// The parent of a child job (a batch's backtest).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// A child's position among its parent's children.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub child_index: Option<i64>,
    /// A parent's children by status (shown on parents only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub children: Option<ChildCounts>,
    /// A running parent's estimate of the seconds left, from its children's pace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<i64>,
    /// A study's best objective value so far and the child (trial) that reached it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_so_far: Option<BestSoFar>,
    pub links: JobLinks,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct BestSoFar {
    pub value: f64,
    pub child_index: i64,
}

impl From<JobRecord> for JobView {
    fn from(job: JobRecord) -> Self {
        JobView {
            links: JobLinks::for_id(&job.id),
            job_id: job.id,
            kind: job.kind,
            status: job.status,
            subject: job.subject,
            tags: job.tags,
            progress: job.progress,
            stage: job.stage,
            created_at: to_rfc3339(job.created_at),
            started_at: job.started_at.map(to_rfc3339),
            finished_at: job.finished_at.map(to_rfc3339),
            attempts: job.attempts,
            cancel_requested: job.cancel_requested,
            error: job.error,
            summary: job.summary,
            parent_id: job.parent_id,
            child_index: job.child_index,
            children: None,
            eta_seconds: None,
            best_so_far: job
                .best
                .map(|(value, child_index)| BestSoFar { value, child_index }),
        }
    }
}

/// What a job listing asks for (every filter optional; empty means none).
#[derive(Debug, Default, Clone, Copy)]
pub struct JobQuery<'a> {
    pub kind: Option<&'a str>,
    pub status: Option<&'a str>,
    /// Jobs whose subject names this strategy.
    pub strategy: Option<&'a str>,
    /// Jobs whose subject names this symbol.
    pub symbol: Option<&'a str>,
    /// Jobs tagged with this tag.
    pub tag: Option<&'a str>,
    pub limit: Option<i64>,
    pub cursor: Option<&'a str>,
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
    /// Keep each trade's nested `orders` (default: compact trades without them).
    pub include_orders: bool,
}

/// Any kind's result: `job_id`, `kind`, the kind's result body (see its
/// schema) and, for kinds with rows (a backtest's `trades`, a batch's
/// `leaderboard`), the requested page as `<rows>`, `<rows>_total`, `<rows>_offset`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ResultView {
    pub job_id: String,
    #[schemars(schema_with = "jesse_mcp_core::kinds::kind_schema")]
    pub kind: String,
    #[serde(flatten)]
    #[schemars(with = "serde_json::Map<String, Value>")]
    pub body: Value,
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
    /// The series' source after the upload: `csv`, or `mixed` with imported
    /// rows, or `unknown` for a series stored before sources were recorded.
    pub source: Option<String>,
    /// Synthetic (demo) rows of this series deleted before the upload: real and
    /// synthetic candles never share a series.
    pub replaced_synthetic_rows: u64,
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
    /// Where the rows came from: `synthetic` (demo data, not market prices),
    /// `csv`, `import` (an exchange import), `mixed` (csv and import) or
    /// `unknown` (stored before sources were recorded).
    pub source: String,
    /// What to know about that source (demo data above all); absent for csv and import.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
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
                engine: Engine::new(store, queue, strategies_dir),
                strategy_set_changed,
                write_probe: Default::default(),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        self.inner.engine.store()
    }

    pub async fn queue_depth(&self, lane: Lane) -> Result<i64, ApiError> {
        Ok(self.inner.engine.queue().depth(lane).await?)
    }

    /// Ready to take work: the store and the queue both answer.
    pub async fn ready(&self) -> Result<Value, ApiError> {
        self.inner.engine.store().ping().await.map_err(|e| {
            tracing::error!(error = %e, "readiness: store unreachable");
            ApiError::unavailable("the store is unreachable")
        })?;
        self.inner
            .engine
            .queue()
            .depth(Lane::Runner)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "readiness: queue unreachable");
                ApiError::unavailable("the queue is unreachable")
            })?;
        self.writable().await?;
        Ok(json!({"ready": true}))
    }

    /// The store takes writes: a probe write answers (a full disk fails
    /// writes while reads still work). A probe that waits for another
    /// writer's lock is not a failure.
    async fn writable(&self) -> Result<(), ApiError> {
        let mut last = self.inner.write_probe.lock().await;
        if let Some((at, answer)) = last.as_ref()
            && at.elapsed() < Duration::from_secs(1)
        {
            return answer.clone();
        }
        let answer = self.probe_write().await;
        *last = Some((Instant::now(), answer.clone()));
        answer
    }

    async fn probe_write(&self) -> Result<(), ApiError> {
        let probe = self.inner.engine.store().probe_write();
        match tokio::time::timeout(Duration::from_secs(2), probe).await {
            Ok(Err(e)) if jesse_mcp_core::error::is_full(&e) => {
                tracing::error!(error = %e, "the store is unwritable: its disk is full");
                Err(ApiError::new(
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "store_unwritable",
                    "the store's disk is full: reads work, writes fail; free space on the \
                     data directory's disk",
                ))
            }
            Ok(Err(e)) if !jesse_mcp_core::error::is_transient(&e) => Err(e.into()),
            _ => Ok(()),
        }
    }

    pub async fn health(&self) -> Result<Value, ApiError> {
        self.inner.engine.store().ping().await?;
        self.writable().await?;
        let mut queue = serde_json::Map::new();
        for lane in Lane::ALL {
            queue.insert(
                lane.queue_name().into(),
                json!(self.inner.engine.queue().depth(*lane).await?),
            );
        }
        Ok(json!({"status": "ok", "version": env!("CARGO_PKG_VERSION"), "queue": queue}))
    }

    // ---- submits ------------------------------------------------------------

    /// Submits a job of any kind users may submit: plans it (every check a
    /// worker would otherwise meet later) and enqueues it.
    pub async fn submit(
        &self,
        kind: &'static KindDef,
        request: Value,
        idempotency_key: Option<&str>,
    ) -> Result<JobAccepted, ApiError> {
        let accepted = self
            .inner
            .engine
            .submit(kind, request, idempotency_key)
            .await?;
        Ok(accepted_view(accepted))
    }

    /// Records an already planned job and enqueues it.
    async fn enqueue(
        &self,
        kind: &'static KindDef,
        params: Value,
        idempotency_key: Option<&str>,
    ) -> Result<JobAccepted, ApiError> {
        let accepted = self
            .inner
            .engine
            .enqueue(kind, params, idempotency_key)
            .await?;
        Ok(accepted_view(accepted))
    }

    /// Puts back work a crash or a lost queue entry stranded (see `Engine::requeue_lost`).
    pub async fn requeue_lost(&self, stale_ms: i64) -> Result<usize, ApiError> {
        self.inner.engine.requeue_lost(stale_ms).await
    }

    // ---- jobs ---------------------------------------------------------------

    pub async fn get_job(&self, id: &str) -> Result<JobView, ApiError> {
        let job = self.job_record(id).await?;
        self.view(job).await
    }

    /// A job as clients see it; a parent also shows its children's counts and ETA.
    async fn view(&self, job: JobRecord) -> Result<JobView, ApiError> {
        let parent = job.def().is_some_and(|k| k.parent);
        let counts = if parent {
            Some(self.inner.engine.store().child_counts(&job.id).await?)
        } else {
            None
        };
        let eta = match &counts {
            Some(c) if job.status == JobStatus::Running => eta_seconds(&job, c),
            _ => None,
        };
        let mut view = JobView::from(job);
        view.children = counts;
        view.eta_seconds = eta;
        Ok(view)
    }

    async fn job_record(&self, id: &str) -> Result<JobRecord, ApiError> {
        self.inner.engine.store().get_job(id.trim()).await?.ok_or_else(|| {
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
        self.find_jobs(&JobQuery {
            kind,
            status,
            limit,
            cursor,
            ..JobQuery::default()
        })
        .await
    }

    /// Jobs newest first, filtered (`GET /v1/jobs`, MCP `job_list`).
    pub async fn find_jobs(&self, query: &JobQuery<'_>) -> Result<JobList, ApiError> {
        let label = |value: Option<&str>, field: &str| -> Result<Option<String>, ApiError> {
            let Some(value) = value.filter(|v| !v.is_empty()) else {
                return Ok(None);
            };
            let bad = value.chars().count() > 200 || (field == "tag" && check_tag(value).is_err());
            if bad {
                return Err(ApiError::invalid(
                    "invalid_filter",
                    format!("{field} is not a {field} any job can have (too long, or a control character)"),
                )
                .with_details(json!({"field": field})));
            }
            Ok(Some(value.to_string()))
        };
        let strategy = label(query.strategy, "strategy")?;
        let symbol = label(query.symbol, "symbol")?;
        let tag = label(query.tag, "tag")?;
        let kind = query
            .kind
            .filter(|k| !k.is_empty())
            .map(|k| {
                find(k).map(|d| d.name.to_string()).ok_or_else(|| {
                    let names: Vec<&str> = REGISTRY.iter().map(|k| k.name).collect();
                    ApiError::invalid(
                        "invalid_kind",
                        format!("unknown job kind '{k}'; use one of: {}", names.join(", ")),
                    )
                })
            })
            .transpose()?;
        self.page(
            JobFilter {
                kind,
                strategy,
                symbol,
                tag,
                ..JobFilter::default()
            },
            query.status,
            query.limit,
            query.cursor,
        )
        .await
    }

    /// A parent's children in their order, paged (`GET /v1/jobs/{id}/children`).
    pub async fn list_children(
        &self,
        id: &str,
        status: Option<&str>,
        limit: Option<i64>,
        cursor: Option<&str>,
    ) -> Result<JobList, ApiError> {
        let parent = self.job_record(id).await?;
        self.page(
            JobFilter {
                parent_id: Some(parent.id),
                ..JobFilter::default()
            },
            status,
            limit,
            cursor,
        )
        .await
    }

    async fn page(
        &self,
        mut filter: JobFilter,
        status: Option<&str>,
        limit: Option<i64>,
        cursor: Option<&str>,
    ) -> Result<JobList, ApiError> {
        filter.status = status
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
        filter.before = cursor.filter(|c| !c.is_empty()).map(str::to_string);
        filter.limit = limit + 1;
        let mut jobs = self.inner.engine.store().list_jobs(&filter).await?;
        let next_cursor = if jobs.len() as i64 > limit {
            jobs.truncate(limit as usize);
            jobs.last().map(|j| j.id.clone())
        } else {
            None
        };
        let mut views = Vec::with_capacity(jobs.len());
        for job in jobs {
            views.push(self.view(job).await?);
        }
        Ok(JobList {
            jobs: views,
            next_cursor,
        })
    }

    /// Cancels a job for `actor` (a token's name, for the audit trail). Jobs
    /// are the deployment's, not a token's: any `run` token may cancel any
    /// job (docs/SECURITY.md, "Job ownership").
    pub async fn cancel_job(&self, id: &str, actor: &str) -> Result<JobView, ApiError> {
        let job = self.job_record(id).await?;
        tracing::info!(target: "audit", action = "job.cancel", token = actor, job.id = job.id, job.kind = job.kind, "job cancel");
        let outcome = self.inner.engine.cancel(&job.id).await?.ok_or_else(|| {
            ApiError::not_found("job_not_found", format!("no job with id '{id}'"))
        })?;
        match outcome {
            CancelOutcome::Cancelled(job) => {
                tracing::info!(job.id = job.id, "job cancelled");
                self.view(job).await
            }
            CancelOutcome::Requested(job) => {
                tracing::info!(job.id = job.id, "cancel requested for running job");
                self.view(job).await
            }
            CancelOutcome::AlreadyFinished(job) if job.status == JobStatus::Cancelled => {
                self.view(job).await
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
                return self.view(job).await;
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

    /// Any succeeded job's result: its kind's body, plus the requested page of
    /// its rows when it has them (`include_trades`/`trades_offset`/`trades_limit`
    /// name the rows of any kind, e.g. a batch's leaderboard). Trades and the
    /// equity curve are reshaped for users here, on the way out (see [`shapes`]):
    /// stored bodies stay as Jesse returned them for the code that reads them.
    pub async fn get_result(&self, id: &str, query: &ResultQuery) -> Result<ResultView, ApiError> {
        let job = self.job_record(id).await?;
        require_succeeded(&job)?;
        let mut body = self.stored_body(&job).await?;
        if query.include_equity_curve == Some(false)
            && let Some(object) = body.as_object_mut()
        {
            object.remove("equity_curve");
        }
        if let Some(rows) = job.def().and_then(|k| k.rows.as_ref()) {
            let total = self
                .inner
                .engine
                .store()
                .count_result_rows(&job.id, rows.name)
                .await?;
            body[format!("{}_total", rows.name)] = json!(total);
            // Asking for a page (offset or limit) asks for the rows.
            let included = query.include_trades.unwrap_or_else(|| {
                query.trades_offset > 0
                    || query.trades_limit.is_some()
                    || (rows.included_by_default)(&job.params)
            });
            if included {
                let limit = query.trades_limit.unwrap_or(10_000).min(10_000) as i64;
                let offset = query.trades_offset.min(i64::MAX as usize) as i64;
                let page = self
                    .inner
                    .engine
                    .store()
                    .result_rows(&job.id, rows.name, offset, limit)
                    .await?;
                // Rows as users read them (ms + ISO times, orders on request).
                let page = page
                    .into_iter()
                    .map(|r| shapes::row(rows.name, r, query.include_orders))
                    .collect();
                body[rows.name] = Value::Array(page);
                body[format!("{}_offset", rows.name)] = json!(offset);
            }
        }
        let body = shapes::body(&job.kind, body);
        Ok(ResultView {
            job_id: job.id,
            kind: job.kind,
            body,
        })
    }

    /// A succeeded job's stored result body.
    async fn stored_body(&self, job: &JobRecord) -> Result<Value, ApiError> {
        Ok(
            match self.inner.engine.store().result_body(&job.id).await? {
                Some((_, body)) => body,
                // A job that succeeded before results were kept for its kind.
                None => job.summary.clone().unwrap_or(json!({})),
            },
        )
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
        let replaced_synthetic_rows = if parsed.candles.is_empty() {
            0
        } else {
            self.inner
                .engine
                .store()
                .replace_synthetic(exchange, symbol)
                .await?
        };
        let counts: UpsertCounts = self
            .inner
            .engine
            .store()
            .upsert_candles(exchange, symbol, CandleSource::Csv, &parsed.candles)
            .await
            .map_err(|e| {
                // A write stopped part-way says what it stored, of what was sent.
                let mut error = ApiError::from(e);
                if error.body.details["committed"].is_object() {
                    error.body.details["rows_received"] = json!(received);
                    error.body.details["rejected"] = json!(parsed.rejected);
                }
                error
            })?;
        if counts.inserted > 0 {
            self.inner
                .engine
                .store()
                .refresh_gap_count(exchange, symbol)
                .await?;
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
            source: self
                .inner
                .engine
                .store()
                .series_source(exchange, symbol)
                .await?,
            replaced_synthetic_rows,
        })
    }

    pub async fn list_series(&self) -> Result<SeriesList, ApiError> {
        let series = self.inner.engine.store().list_series().await?;
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
                    note: series_source_note(&s.source),
                    source: s.source,
                })
                .collect(),
        })
    }
}

/// A result exists only once a job succeeded: 409 with the reason otherwise.
fn require_succeeded(job: &JobRecord) -> Result<(), ApiError> {
    match job.status {
        JobStatus::Succeeded => Ok(()),
        JobStatus::Queued | JobStatus::Running => Err(ApiError::conflict(
            "result_not_ready",
            format!(
                "job {} is {}; poll GET /v1/jobs/{} until it succeeds",
                job.id,
                job.status.as_str(),
                job.id
            ),
        )),
        JobStatus::Failed | JobStatus::Cancelled => Err(ApiError::conflict(
            "job_has_no_result",
            format!(
                "job {} {} and has no result; see its error",
                job.id,
                job.status.as_str()
            ),
        )
        .with_details(json!({"job_error": job.error}))),
    }
}

fn accepted_view(accepted: Accepted) -> JobAccepted {
    let job = accepted.job;
    JobAccepted {
        links: JobLinks::for_id(&job.id),
        job_id: job.id,
        status: job.status,
        kind: job.kind,
        created: accepted.created,
    }
}
