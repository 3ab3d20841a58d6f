//! Executes one queued job: claims it in the store, loads its candles, runs it
//! in a runner, and records the outcome. Failures of the user's making (strategy
//! errors, timeouts, missing data) end the job; a runner that dies under a job is
//! replaced and the job retried, up to the attempt limit.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use jesse_mcp_core::ErrorBody;
use jesse_mcp_core::engine::Engine;
use jesse_mcp_core::jobs::{BacktestPlan, ImportPlan, JobStatus, ValidationPlan};
use jesse_mcp_core::kinds::{Lane, Outcome, Runtime};
use jesse_mcp_core::queue::Queue;
use jesse_mcp_core::store::{Claim, JobRecord, JobResult, Store};
use jesse_mcp_core::time::{MINUTE_MS, to_rfc3339};
use serde_json::{Value, json};

use jesse_mcp_core::candles::{self, Candle, synthetic};

use crate::candle_cache::CandleCache;
use crate::config::WorkerConfig;
use crate::job_events::JobEvents;
use crate::pool::{Pool, RunError, RunnerUnavailable};
use crate::protocol::{RunRequest, SeriesHeader};

/// Deep validation is a smoke test: it must be short.
const VALIDATION_TIMEOUT_SECS: u64 = 60;

/// Another worker holds a live lease on the job: try again later.
#[derive(Debug, thiserror::Error)]
#[error("another worker holds this job's lease")]
pub struct HeldElsewhere;

pub struct Executor {
    /// This worker process, as a lease owner.
    pub owner: String,
    /// How often leases are renewed (the queue heartbeat).
    pub heartbeat: Duration,
    pub pacer: crate::import::Pacer,
    /// The store and the queue; plans and enqueues child jobs, advances parents.
    pub engine: Engine,
    pub candles: CandleCache,
    pub pool: Arc<Pool>,
    pub config: WorkerConfig,
    /// Jobs this worker is running now, with their lane.
    pub running: std::sync::Mutex<std::collections::HashMap<String, Lane>>,
    /// Set when shutdown hands running jobs back: no more claims or outcomes.
    pub draining: std::sync::atomic::AtomicBool,
}

/// The worker is shutting down and handed the job back to the queue.
#[derive(Debug, thiserror::Error)]
#[error("the worker is shutting down; the job was handed back to the queue")]
pub struct Draining;

impl Executor {
    pub async fn run_job(&self, job_id: &str) -> anyhow::Result<()> {
        // Keep the lease alive for as long as this worker works on the job.
        let keeper = {
            let (store, id, owner, lease_ms) = (
                self.engine.store().clone(),
                job_id.to_string(),
                self.owner.clone(),
                self.lease_ms(),
            );
            let every = self.heartbeat;
            tokio::spawn(async move {
                // Renews until this run ends, even after a renewal found the lease
                // not ours (between a parent's sleep and its rerun, or while another
                // worker still held it): the next claim in this run is kept alive
                // too. A renewal of a lease held elsewhere changes nothing.
                loop {
                    tokio::time::sleep(every).await;
                    let _ = store.renew_lease(&id, &owner, lease_ms).await;
                }
            })
        };
        let outcome = self.run_claimed(job_id).await;
        keeper.abort();
        outcome
    }

    /// How long a claim lasts without renewal: the queue's own orphan timeout.
    fn lease_ms(&self) -> i64 {
        (self.heartbeat * 3).as_millis() as i64
    }

    async fn run_claimed(&self, job_id: &str) -> anyhow::Result<()> {
        let mut last_loss = String::new();
        let held_since = Instant::now();
        // Times a parent ran again here because it was woken while it ran;
        // bounded so a kind that keeps answering Waiting cannot spin.
        let mut reruns = 0u32;
        loop {
            if self.is_draining() {
                return Err(Draining.into());
            }
            // A kind this binary does not know (another version of the fleet) is
            // left alone: not claimed, not failed.
            let Some(kind) = self
                .engine
                .store()
                .get_job_head(job_id)
                .await?
                .and_then(|j| j.def())
            else {
                tracing::warn!(
                    job.id = job_id,
                    "job of a kind this worker does not know; leaving it"
                );
                return Ok(());
            };
            let job = match self
                .engine
                .store()
                .start_attempt(job_id, &self.owner, self.lease_ms())
                .await?
            {
                Claim::Claimed(job) => *job,
                // Handed to us because its worker went silent: its lease runs out within
                // a few heartbeats unless that worker is alive after all.
                Claim::HeldElsewhere
                    if held_since.elapsed().as_millis() < 2 * self.lease_ms() as u128 =>
                {
                    tokio::time::sleep(self.heartbeat).await;
                    continue;
                }
                Claim::HeldElsewhere => return Err(HeldElsewhere.into()),
                Claim::NotRunnable => {
                    tracing::info!(
                        job.id = job_id,
                        "job is no longer runnable (cancelled or finished); skipping"
                    );
                    return Ok(());
                }
            };
            if job.cancel_requested {
                // Cancelled while an earlier attempt ran, and that worker died or
                // restarted before it could stop: the cancel wins.
                let error = ErrorBody::new(
                    "cancelled",
                    "cancelled by request (the attempt running at the time was interrupted)",
                );
                self.finish(&job, JobStatus::Cancelled, Some(&error), None)
                    .await?;
                tracing::info!(job.id = job_id, "job cancelled before its next attempt");
                return Ok(());
            }
            if job.attempts > self.config.max_attempts {
                // Redelivered after the worker itself died under it, too often.
                let reason = if last_loss.is_empty() {
                    "the worker process stopped while running it"
                } else {
                    &last_loss
                };
                self.give_up(&job, job.attempts - 1, reason).await?;
                return Ok(());
            }
            let started = Instant::now();
            let outcome = (kind.execute)(self, &job).await;
            let elapsed_ms = started.elapsed().as_millis() as u64;
            match outcome {
                Ok(Outcome::Succeeded { result, summary }) => {
                    let write_started = Instant::now();
                    if !self.engine.store().holds_lease(job_id, &self.owner).await? {
                        tracing::warn!(
                            job.id = job_id,
                            "another worker took this job over; dropping this run's result"
                        );
                        return Ok(());
                    }
                    persist("saving the result", || {
                        self.engine.store().save_result(job_id, kind.name, &result)
                    })
                    .await?;
                    if let Some(timings) = result.body.get("timings").filter(|t| t.is_object()) {
                        let mut timings = timings.clone();
                        timings["result_write_ms"] =
                            json!(write_started.elapsed().as_secs_f64() * 1e3);
                        advisory(
                            job_id,
                            "timings",
                            self.engine
                                .store()
                                .patch_result(job_id, "timings", &timings)
                                .await,
                        );
                    }
                    self.finish(&job, JobStatus::Succeeded, None, Some(&summary))
                        .await?;
                    tracing::info!(
                        job.id = job_id,
                        job.kind = kind.name,
                        duration_ms = elapsed_ms,
                        "job succeeded"
                    );
                    return Ok(());
                }
                Ok(Outcome::Waiting) => {
                    // The parent holds no worker while its children run; whoever ends
                    // the last child wakes it. Children may all have ended already.
                    if self.engine.store().set_waiting(job_id, &self.owner).await? {
                        let counts = self.engine.advance(job_id).await.map_err(api_error)?;
                        tracing::info!(
                            job.id = job_id,
                            children = counts.total,
                            done = counts.done(),
                            "parent waiting on its children"
                        );
                        // Woken already (its children ended while it ran, or
                        // before it slept): no task can be pushed for it while
                        // this worker holds its queue task, so it runs again
                        // here rather than waiting for the lost-job sweep.
                        if reruns < 100
                            && self
                                .engine
                                .store()
                                .get_job_head(job_id)
                                .await?
                                .is_some_and(|j| j.status == JobStatus::Running && !j.waiting)
                        {
                            tracing::info!(
                                job.id = job_id,
                                "parent woken while it ran; running it again"
                            );
                            reruns += 1;
                            continue;
                        }
                        // A child that ends between that look and the release of
                        // this task wakes the parent while its task is still held
                        // here: look once more after the release (a task held by
                        // whoever runs it then is left alone).
                        let (engine, id) = (self.engine.clone(), job_id.to_string());
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_secs(2)).await;
                            if let Ok(Some(parent)) = engine.store().get_job_head(&id).await
                                && parent.status == JobStatus::Running
                                && !parent.waiting
                                && let Err(e) = engine.ensure_enqueued(&parent).await
                            {
                                tracing::warn!(job.id = id, error = %e, "re-enqueueing a woken parent failed");
                            }
                        });
                    }
                    return Ok(());
                }
                Ok(Outcome::Failed(error)) => {
                    tracing::info!(
                        job.id = job_id,
                        job.kind = kind.name,
                        code = error.code,
                        message = error.message,
                        "job failed"
                    );
                    self.finish(&job, JobStatus::Failed, Some(&error), None)
                        .await?;
                    return Ok(());
                }
                Ok(Outcome::Cancelled) => {
                    if !self.engine.store().holds_lease(job_id, &self.owner).await? {
                        // Stopped because another worker took the job over: its
                        // run, not this one, ends the job.
                        return Ok(());
                    }
                    // A child stopped because its parent ended (a pipeline's gate
                    // failed, a study stopped early, the parent was cancelled) says so.
                    let parent = match &job.parent_id {
                        Some(parent_id) => self.engine.store().get_job_head(parent_id).await?,
                        None => None,
                    };
                    let message = match parent {
                        Some(parent) if parent.status.is_terminal() => format!(
                            "cancelled while running: its parent job {} ({}) stopped it (the parent is {})",
                            parent.id,
                            parent.kind,
                            parent.status.as_str()
                        ),
                        _ => "cancelled by request while running".to_string(),
                    };
                    let error = ErrorBody::new("cancelled", message);
                    self.finish(&job, JobStatus::Cancelled, Some(&error), None)
                        .await?;
                    tracing::info!(job.id = job_id, "job cancelled");
                    return Ok(());
                }
                Ok(Outcome::RunnerLost(reason)) => {
                    tracing::warn!(
                        job.id = job_id,
                        attempt = job.attempts,
                        reason,
                        "runner lost under job"
                    );
                    if job.attempts >= self.config.max_attempts {
                        self.give_up(&job, job.attempts, &reason).await?;
                        return Ok(());
                    }
                    last_loss = reason;
                }
                Err(e) if e.downcast_ref::<RunnerUnavailable>().is_some() => {
                    tracing::error!(job.id = job_id, error = %e, "no runner to run the job");
                    let error = ErrorBody::new("runner_unavailable", e.to_string());
                    self.finish(&job, JobStatus::Failed, Some(&error), None)
                        .await?;
                    return Ok(());
                }
                Err(e) => {
                    tracing::error!(job.id = job_id, error = %format!("{e:#}"), "internal error running job");
                    let error =
                        ErrorBody::new("internal", "the worker hit an internal error; see its log");
                    self.finish(&job, JobStatus::Failed, Some(&error), None)
                        .await?;
                    return Ok(());
                }
            }
        }
    }

    fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Shutdown after the grace period: stops claiming and recording, and gives
    /// every job still running back (store lease released, queue task requeued
    /// ahead of the line) so a live worker takes it at once. `workers` names
    /// this process's apalis worker per lane, whose claims are returned.
    pub async fn hand_back_running(&self, queue: &Queue, workers: &[(Lane, String)]) {
        self.draining
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let running: Vec<(String, Lane)> = self
            .running
            .lock()
            .expect("running jobs lock")
            .iter()
            .map(|(id, kind)| (id.clone(), *kind))
            .collect();
        for (job_id, kind) in running {
            let released = self.engine.store().release_job(&job_id, &self.owner).await;
            let worker = workers
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, w)| w.as_str());
            let requeued = match worker {
                Some(worker) => queue.requeue(kind, &job_id, worker).await,
                None => Ok(()),
            };
            match (released, requeued) {
                (Ok(_), Ok(())) => {
                    tracing::info!(
                        job.id = job_id,
                        "shutdown: running job handed back to the queue"
                    )
                }
                (r, q) => tracing::warn!(
                    job.id = job_id,
                    store = ?r.err().map(|e| e.to_string()),
                    queue = ?q.err().map(|e| e.to_string()),
                    "shutdown: handing the job back failed; it runs again after its lease expires"
                ),
            }
        }
    }

    /// Records a job's outcome, retrying while the store is briefly unavailable;
    /// then moves its parent along (a child ended) or ends its children (a
    /// parent that failed or was cancelled).
    async fn finish(
        &self,
        job: &JobRecord,
        status: JobStatus,
        error: Option<&ErrorBody>,
        summary: Option<&Value>,
    ) -> anyhow::Result<bool> {
        if self.is_draining() {
            return Err(Draining.into());
        }
        let recorded = persist("recording the outcome", || {
            self.engine
                .store()
                .finish_job(&job.id, Some(&self.owner), status, error, summary)
        })
        .await?;
        if job.def().is_some_and(|k| k.parent) && status != JobStatus::Succeeded {
            self.engine
                .end_children(&job.id, "the parent job ended")
                .await
                .map_err(api_error)?;
        }
        if let Some(parent) = &job.parent_id {
            self.engine.advance(parent).await.map_err(api_error)?;
        }
        Ok(recorded)
    }

    async fn give_up(&self, job: &JobRecord, attempts: i64, reason: &str) -> anyhow::Result<()> {
        let error = ErrorBody::new(
            "runner_crashed",
            format!(
                "the runner process died under this job on all {attempts} attempts; last reason: {reason}"
            ),
        );
        tracing::warn!(job.id = job.id, attempts, reason, "giving up on job");
        self.finish(job, JobStatus::Failed, Some(&error), None)
            .await?;
        Ok(())
    }

    /// Runs `entry` of the runner module (`run_backtest`, or another Jesse call
    /// on the same candles such as `significance_test`, given `extra` fields)
    /// on the plan's candles.
    async fn attempt(
        &self,
        job: &JobRecord,
        plan: &BacktestPlan,
        entry: &str,
        extra: Option<&Value>,
    ) -> anyhow::Result<Outcome> {
        let job_id = job.id.as_str();
        let queue_wait_ms = (job.started_at.unwrap_or(job.created_at) - job.created_at).max(0);
        // Strategy sources are read and hashed once; exactly these bytes run.
        let mut strategies = serde_json::Map::new();
        let mut provenance = Vec::new();
        // The sources pinned at submit run, whatever happened to the files since.
        for pinned in &plan.strategies {
            let path = self
                .config
                .strategies_dir
                .join(&pinned.name)
                .join("__init__.py");
            let absolute = std::path::absolute(&path).unwrap_or(path);
            strategies.insert(
                pinned.name.clone(),
                json!({"path": absolute, "source": pinned.source}),
            );
            provenance.push(
                json!({"name": pinned.name, "sha256": pinned.sha256, "source": pinned.source}),
            );
        }

        advisory(
            job_id,
            "progress",
            self.engine
                .store()
                .set_progress(job_id, 0.05, "loading candles")
                .await,
        );
        let load_started = Instant::now();
        let mut series = Vec::new();
        let mut loaded = Vec::new();
        let mut fingerprints = serde_json::Map::new();
        for symbol in &plan.symbols {
            let data = self
                .candles
                .load(
                    self.engine.store(),
                    &plan.exchange,
                    symbol,
                    plan.load_start_ms(),
                    plan.start_ms,
                    plan.end_ms,
                )
                .await?;
            let (rows, warmup_rows) = (data.trading.len() / 6, data.warmup.len() / 6);
            let expected = ((plan.end_ms - plan.start_ms) / MINUTE_MS) as usize;
            let complete = rows == expected && warmup_rows as i64 == plan.warmup_minutes;
            let usable = rows > 0 && (plan.warmup_minutes == 0 || warmup_rows > 0);
            if !(complete || plan.gap_report.is_some() && usable) {
                return Ok(Outcome::Failed(ErrorBody::new(
                    "missing_candles",
                    format!(
                        "candles for {} {symbol} changed since submit: {rows} of {expected} trading minutes and {warmup_rows} of {} warm-up minutes are stored; import them and resubmit",
                        plan.exchange, plan.warmup_minutes
                    ),
                )));
            }
            let first = if warmup_rows > 0 {
                data.warmup[0]
            } else {
                data.trading[0]
            };
            // Where the rows came from: a result on synthetic candles says so.
            let source = self
                .engine
                .store()
                .series_source(&plan.exchange, symbol)
                .await?
                .unwrap_or_else(|| candles::SOURCE_UNKNOWN.into());
            fingerprints.insert(
                format!("{}-{symbol}", plan.exchange),
                json!({
                    "source": source,
                    "rows": rows + warmup_rows,
                    "first": to_rfc3339(first as i64),
                    "last": to_rfc3339(data.trading[data.trading.len() - 6] as i64),
                    "sha256": null, // hashed while Jesse runs, filled in below
                }),
            );
            series.push(SeriesHeader {
                key: format!("{}-{symbol}", plan.exchange),
                exchange: plan.exchange.clone(),
                symbol: symbol.clone(),
                rows,
                warmup_rows,
            });
            loaded.push(data);
        }
        let candle_load_ms = load_started.elapsed().as_secs_f64() * 1e3;

        let request_json = json!({
            "config": plan.config,
            "routes": plan.routes,
            "data_routes": plan.data_routes,
            "strategies": strategies,
            "hyperparameters": plan.hyperparameters,
            "fast_mode": plan.fast_mode,
            // Always: the daily equity is what analysis, charts and studies read.
            "generate_equity_curve": true,
            "candles_pipeline": plan.candles_pipeline,
            "extra": extra,
        })
        .to_string();
        let request = RunRequest {
            entry: entry.into(),
            request_json,
            series,
        };
        let payload: Vec<&[f64]> = loaded
            .iter()
            .flat_map(|d| [d.trading.as_slice(), d.warmup.as_slice()])
            .collect();

        advisory(
            job_id,
            "progress",
            self.engine
                .store()
                .set_progress(job_id, 0.15, "running Jesse")
                .await,
        );
        let mut runner = self.pool.checkout().await?;
        let deadline = Instant::now() + Duration::from_secs(self.config.job_timeout_secs);
        let hashing = {
            let loaded = loaded.clone();
            tokio::task::spawn_blocking(move || {
                loaded
                    .iter()
                    .map(|d| d.sha256().to_string())
                    .collect::<Vec<_>>()
            })
        };
        let run_started = Instant::now();
        // Progress of the simulation and the strategy's log lines, stored as they come.
        let mut events = JobEvents::start(self.engine.store(), job_id, job.attempts).await;
        let response = runner
            .run_with_events(
                self.pool.spec(),
                &request,
                &payload,
                deadline,
                self.cancel_requested(job_id),
                &mut |event| events.sink.take(event),
            )
            .await;
        events.finish().await;
        let run_ms = run_started.elapsed().as_secs_f64() * 1e3;
        let jesse_version = runner.jesse_version.clone();
        // A runner that broke the protocol is finished: reap (or kill) it so the
        // reason names its exit status and the pool replaces it.
        let lost_reason = match &response {
            Err(RunError::Lost(_)) => Some(runner.reap().await),
            _ => None,
        };
        self.pool.checkin(runner).await;

        let response = match response {
            Ok(response) => response,
            Err(RunError::TimedOut) => {
                return Ok(Outcome::Failed(ErrorBody::new(
                    "timed_out",
                    format!(
                        "timed out after {} s (JESSE_MCP_JOB_TIMEOUT_SECS)",
                        self.config.job_timeout_secs
                    ),
                )));
            }
            Err(RunError::Cancelled) => return Ok(Outcome::Cancelled),
            Err(RunError::BadResponse(reason)) => {
                return Ok(Outcome::Failed(ErrorBody::new(
                    "invalid_result",
                    format!("the backtest ran but its result could not be used: {reason}"),
                )));
            }
            Err(RunError::Lost(reason)) => {
                return Ok(Outcome::RunnerLost(
                    lost_reason.map_or(reason.clone(), |r| format!("{r} ({reason})")),
                ));
            }
        };
        let digests = hashing.await?;
        for (symbol, digest) in plan.symbols.iter().zip(digests) {
            fingerprints[&format!("{}-{symbol}", plan.exchange)]["sha256"] = json!(digest);
        }
        let mut result = response.result;
        if result["ok"] != json!(true) {
            return Ok(Outcome::Failed(python_error(&result["error"])));
        }
        advisory(
            job_id,
            "progress",
            self.engine
                .store()
                .set_progress(job_id, 0.95, "writing result")
                .await,
        );
        if entry != "run_backtest" {
            // Another Jesse call: its answer as it is, with the same provenance.
            let mut body = result;
            if let Some(o) = body.as_object_mut() {
                o.remove("ok");
            }
            body["provenance"] = json!({
                "jesse_version": body["jesse_version"].take(),
                "strategies": provenance,
                "data": data_source(&fingerprints),
                "candles": fingerprints,
            });
            body["timings"] = response.timings;
            return Ok(Outcome::Succeeded {
                summary: Value::Null,
                result: Box::new(JobResult {
                    body,
                    parts: Vec::new(),
                }),
            });
        }
        let metrics = result["metrics"].take();
        let mut summary = summary_of(&metrics);
        let data = data_source(&fingerprints);
        summary["data"] = json!(data);
        if let Some(note) = candles::series_source_note(&data) {
            summary["warning"] = json!(format!("computed on {data} candles: {note}"));
        }
        let mut timings = response.timings;
        if let (Some(all), Some(python)) = (timings.as_object_mut(), result["timings"].as_object())
        {
            all.extend(python.clone());
        }
        timings["queue_wait_ms"] = json!(queue_wait_ms);
        timings["candle_load_ms"] = json!(candle_load_ms);
        timings["runner_roundtrip_ms"] = json!(run_ms);
        let trades = match result["trades"].take() {
            Value::Array(trades) => trades,
            _ => Vec::new(),
        };
        let body = json!({
            "metrics": metrics,
            // Which null metrics Jesse computed as ±inf or NaN (core::special).
            "metrics_special": match result["metrics_special"].take() {
                Value::Null => json!({}),
                specials => specials,
            },
            "equity_curve": result["equity_curve"].take(),
            "provenance": {
                "jesse_version": result["jesse_version"].as_str().map(str::to_string).unwrap_or(jesse_version),
                "strategies": provenance,
                "data": data,
                "candles": fingerprints,
                "params": job.params,
                // Jesse's fast mode changes metrics: every result says which ran.
                "fast_mode": plan.fast_mode,
            },
            "gaps": plan.gap_report,
            "timings": timings,
        });
        let record = JobResult {
            body,
            parts: vec![("trades".to_string(), trades)],
        };
        Ok(Outcome::Succeeded {
            result: Box::new(record),
            summary,
        })
    }

    /// Deep validation: the exact source, imported and smoke-tested in a runner on
    /// synthetic candles (15m, 240 warm-up candles, three days), bounded in time.
    async fn validate(
        &self,
        job_id: &str,
        attempt: i64,
        plan: &ValidationPlan,
    ) -> anyhow::Result<Outcome> {
        const DAY: i64 = 86_400_000;
        let start = 1_672_531_200_000; // 2023-01-01; the candles are synthetic anyway
        let warmup_start = start - 240 * 15 * MINUTE_MS;
        let flat = |candles: Vec<Candle>| -> Vec<f64> {
            candles
                .iter()
                .flat_map(|c| [c.timestamp as f64, c.open, c.close, c.high, c.low, c.volume])
                .collect()
        };
        let warmup = flat(synthetic(warmup_start, start, 40_000.0, 7));
        let trading = flat(synthetic(start, start + 3 * DAY, 40_000.0, 8));
        let exchange = "Binance Perpetual Futures";
        let path = std::path::absolute(
            self.config
                .strategies_dir
                .join(&plan.name)
                .join("__init__.py"),
        )?;
        let request_json = json!({
            "name": plan.name, "path": path, "source": plan.source,
            "symbol": "BTC-USDT", "timeframe": "15m",
            "config": {"starting_balance": 10_000, "fee": 0.001, "type": "futures", "futures_leverage": 1,
                       "futures_leverage_mode": "cross", "exchange": exchange, "warm_up_candles": 240},
        })
        .to_string();
        let series = vec![SeriesHeader {
            key: format!("{exchange}-BTC-USDT"),
            exchange: exchange.into(),
            symbol: "BTC-USDT".into(),
            rows: trading.len() / 6,
            warmup_rows: warmup.len() / 6,
        }];
        let request = RunRequest {
            entry: "validate_strategy".into(),
            request_json,
            series,
        };
        let mut runner = self.pool.checkout().await?;
        let timeout =
            Duration::from_secs(self.config.job_timeout_secs.min(VALIDATION_TIMEOUT_SECS));
        // What the module prints on import or in the smoke backtest is the job's log.
        let mut events = JobEvents::start(self.engine.store(), job_id, attempt).await;
        let response = runner
            .run_with_events(
                self.pool.spec(),
                &request,
                &[&trading, &warmup],
                Instant::now() + timeout,
                self.cancel_requested(job_id),
                &mut |event| events.sink.take(event),
            )
            .await;
        events.finish().await;
        let lost = match &response {
            Err(RunError::Lost(_)) => Some(runner.reap().await),
            _ => None,
        };
        self.pool.checkin(runner).await;
        let mut report = match response {
            Ok(response) => response.result,
            Err(RunError::TimedOut) => {
                json!({"ok": true, "valid": false, "warnings": [], "hyperparameters": null,
                "errors": [{"line": null, "column": null,
                            "message": format!("validation did not finish within {} s (a loop that never returns?)", timeout.as_secs())}]})
            }
            Err(RunError::Lost(reason)) => return Ok(Outcome::RunnerLost(lost.unwrap_or(reason))),
            Err(RunError::BadResponse(reason)) => {
                return Ok(Outcome::Failed(ErrorBody::new("invalid_result", reason)));
            }
            Err(RunError::Cancelled) => return Ok(Outcome::Cancelled),
        };
        if report["ok"] != json!(true) {
            return Ok(Outcome::Failed(python_error(&report["error"])));
        }
        if let Some(object) = report.as_object_mut() {
            object.remove("ok");
        }
        Ok(Outcome::Succeeded {
            result: Box::new(JobResult {
                body: report,
                parts: Vec::new(),
            }),
            summary: Value::Null,
        })
    }

    /// One runner call without candles (see [`Runtime::call_python`]).
    async fn python(
        &self,
        job_id: &str,
        entry: &str,
        request: Value,
    ) -> anyhow::Result<Result<Value, Outcome>> {
        let request = RunRequest {
            entry: entry.into(),
            request_json: request.to_string(),
            series: Vec::new(),
        };
        let mut runner = self.pool.checkout().await?;
        let deadline = Instant::now() + Duration::from_secs(self.config.job_timeout_secs);
        let response = runner
            .run(
                self.pool.spec(),
                &request,
                &[],
                deadline,
                self.cancel_requested(job_id),
            )
            .await;
        let lost = match &response {
            Err(RunError::Lost(_)) => Some(runner.reap().await),
            _ => None,
        };
        self.pool.checkin(runner).await;
        let failed =
            |code: &str, message: String| Ok(Err(Outcome::Failed(ErrorBody::new(code, message))));
        match response {
            Ok(response) if response.result["ok"] == json!(true) => Ok(Ok(response.result)),
            Ok(response) => Ok(Err(Outcome::Failed(python_error(
                &response.result["error"],
            )))),
            Err(RunError::TimedOut) => failed(
                "timed_out",
                format!(
                    "{entry} timed out after {} s (JESSE_MCP_JOB_TIMEOUT_SECS)",
                    self.config.job_timeout_secs
                ),
            ),
            Err(RunError::Cancelled) => Ok(Err(Outcome::Cancelled)),
            Err(RunError::BadResponse(reason)) => failed("invalid_result", reason),
            Err(RunError::Lost(reason)) => Ok(Err(Outcome::RunnerLost(lost.unwrap_or(reason)))),
        }
    }

    /// Resolves once the job's run must stop: its cancel flag is set in the
    /// store (checked every 250 ms), or this worker lost its lease to another
    /// (checked every second), whose work would replace this run's anyway.
    pub(crate) async fn cancel_requested(&self, job_id: &str) {
        let store = self.engine.store();
        for tick in 1u64.. {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if store.cancel_requested(job_id).await.unwrap_or(false) {
                return;
            }
            if tick % 4 == 0 && matches!(store.holds_lease(job_id, &self.owner).await, Ok(false)) {
                tracing::warn!(
                    job.id = job_id,
                    "another worker took this job over; stopping this run"
                );
                return;
            }
        }
    }
}

/// The worker is the runtime handlers run in: the store, the engine, and the
/// Jesse calls only it can make.
impl Runtime for Executor {
    fn store(&self) -> &Store {
        self.engine.store()
    }

    fn engine(&self) -> &Engine {
        &self.engine
    }

    fn run_backtest<'a>(
        &'a self,
        job: &'a JobRecord,
        plan: &'a BacktestPlan,
    ) -> BoxFuture<'a, anyhow::Result<Outcome>> {
        Box::pin(self.attempt(job, plan, "run_backtest", None))
    }

    fn validate_strategy<'a>(
        &'a self,
        job: &'a JobRecord,
        plan: &'a ValidationPlan,
    ) -> BoxFuture<'a, anyhow::Result<Outcome>> {
        Box::pin(self.validate(&job.id, job.attempts, plan))
    }

    fn run_jesse<'a>(
        &'a self,
        job: &'a JobRecord,
        plan: &'a BacktestPlan,
        entry: &'static str,
        extra: &'a Value,
    ) -> BoxFuture<'a, anyhow::Result<Outcome>> {
        Box::pin(self.attempt(job, plan, entry, Some(extra)))
    }

    fn call_python<'a>(
        &'a self,
        job_id: &'a str,
        entry: &'static str,
        request: Value,
    ) -> BoxFuture<'a, anyhow::Result<Result<Value, Outcome>>> {
        Box::pin(self.python(job_id, entry, request))
    }

    fn import_candles<'a>(
        &'a self,
        job_id: &'a str,
        plan: &'a ImportPlan,
    ) -> BoxFuture<'a, anyhow::Result<Outcome>> {
        Box::pin(self.import(job_id, plan))
    }
}

/// A planning or engine error met inside a worker (logged where it is handled).
fn api_error(error: jesse_mcp_core::ApiError) -> anyhow::Error {
    anyhow::anyhow!("{error}")
}

/// Turns the runner's description of a Python exception into the job's error.
fn python_error(error: &Value) -> ErrorBody {
    let kind = error["kind"].as_str().unwrap_or("runner");
    let type_name = error["type"].as_str().unwrap_or("Exception");
    let message = error["message"].as_str().unwrap_or("");
    let location = &error["location"];
    let code = match kind {
        "strategy_load" => "strategy_load_error",
        "strategy_runtime" => "strategy_error",
        "interrupted" => "interrupted",
        "invalid_hyperparameters" => "invalid_hyperparameters",
        // Sandbox limits (see worker/src/sandbox.rs).
        "memory_limit" => "memory_limit_exceeded",
        "cpu_limit" => "cpu_limit_exceeded",
        "file_size_limit" => "file_size_limit_exceeded",
        "sandbox" => "sandbox_failed",
        _ => "runner_error",
    };
    let mut text = if kind == "invalid_hyperparameters" {
        message.to_string()
    } else {
        format!("{type_name}: {message}")
    };
    if let (Some(file), Some(line)) = (location["file"].as_str(), location["line"].as_i64()) {
        let file_name = Path::new(file)
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| format!("{}/__init__.py", n.to_string_lossy()))
            .unwrap_or_else(|| file.to_string());
        text.push_str(&format!(" (at {file_name} line {line}"));
        if let Some(code) = location["code"].as_str().filter(|c| !c.is_empty()) {
            text.push_str(&format!(": `{code}`"));
        }
        text.push(')');
    }
    ErrorBody::new(code, text).with_details(json!({
        "exception_type": type_name,
        "exception_message": message,
        "location": location,
        "traceback": error["traceback"],
    }))
}

/// The source of the candles a run used: the series' own, or `mixed`
/// (`synthetic` when any series is synthetic).
fn data_source(fingerprints: &serde_json::Map<String, Value>) -> String {
    candles::combined_source(fingerprints.values().filter_map(|f| f["source"].as_str()))
}

fn summary_of(metrics: &Value) -> Value {
    let mut summary = serde_json::Map::new();
    for key in [
        "total",
        "net_profit_percentage",
        "win_rate",
        "max_drawdown",
        "sharpe_ratio",
        "finishing_balance",
    ] {
        if let Some(value) = metrics.get(key) {
            summary.insert(key.to_string(), value.clone());
        }
    }
    Value::Object(summary)
}

/// A running job's bookkeeping write (progress, stage, timings): the store
/// already waited out a busy or unreachable moment (`retry_transient`); if it
/// still failed, the job goes on without it, as it is no part of its outcome.
fn advisory(job_id: &str, what: &str, written: Result<(), jesse_mcp_core::StoreError>) {
    if let Err(e) = written {
        tracing::warn!(job.id = job_id, error = %e, "{what} not recorded; the job goes on");
    }
}

/// Runs a store write until it succeeds or two minutes pass: an outcome that
/// was computed must not be lost to a store that is locked for a moment (for
/// example by a large candle import).
async fn persist<T, F, Fut>(what: &str, mut write: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, jesse_mcp_core::StoreError>>,
{
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut delay = Duration::from_millis(100);
    loop {
        match write().await {
            Ok(value) => return Ok(value),
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = %e, "{what} failed; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(anyhow::Error::new(e).context(what.to_string())),
        }
    }
}
