//! Candle imports: Jesse's own exchange drivers fetch pages inside a runner;
//! this module decides what to fetch (only minutes not stored yet; synthetic
//! demo candles never count as stored: the import deletes them first), paces
//! each exchange, retries what is transient, writes every page to the store in
//! bulk, reports progress, and ends with a gap report of the requested range.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jesse_mcp_core::ErrorBody;
use jesse_mcp_core::candles::{Candle, CandleSource, demo, series_source_note};
use jesse_mcp_core::jobs::ImportPlan;
use jesse_mcp_core::time::{MINUTE_MS, to_rfc3339};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use jesse_mcp_core::kinds::Outcome;
use jesse_mcp_core::store::JobResult;

use crate::execute::Executor;
use crate::pool::{RunError, Runner};
use crate::protocol::RunRequest;

const MAX_RETRIES: u32 = 5;

/// Spaces requests to each exchange by its driver's own rate (shared by all
/// runners of this worker, so parallel imports from one exchange stay polite,
/// while different exchanges proceed in parallel).
#[derive(Default)]
pub struct Pacer {
    next: Mutex<HashMap<String, Instant>>,
}

impl Pacer {
    async fn wait(&self, exchange: &str, spacing: Duration) {
        let slot = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let slot = next
                .get(exchange)
                .copied()
                .filter(|t| *t > now)
                .unwrap_or(now);
            next.insert(exchange.to_string(), slot + spacing);
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }
}

enum Call {
    Ok(Value),
    Failed(ErrorBody),
    Cancelled,
    Lost(String),
    /// The job's own deadline passed (JESSE_MCP_JOB_TIMEOUT_SECS).
    TimedOut,
}

impl Executor {
    pub(crate) async fn import(&self, job_id: &str, plan: &ImportPlan) -> anyhow::Result<Outcome> {
        let endpoint = self
            .config
            .exchange_endpoints()?
            .get(&plan.exchange)
            .cloned();
        // Synthetic minutes are not data: the import fetches them all, and the
        // synthetic series is deleted when the first real rows are written (by
        // `upsert_candles`), so an import that fails first leaves it in place
        // (demo series stored before sources were recorded are recognised first).
        let store = self.engine.store();
        if plan.exchange == demo::EXCHANGE && plan.symbol == demo::SYMBOL {
            demo::settle_unknown(store).await?;
        }
        let synthetic_rows = match store.series_source(&plan.exchange, &plan.symbol).await? {
            Some(source) if source == "synthetic" => store
                .series_bounds(&plan.exchange, &plan.symbol)
                .await?
                .map_or(0, |(_, _, rows)| rows.max(0) as u64),
            _ => 0,
        };
        let missing = if synthetic_rows > 0 {
            vec![jesse_mcp_core::store::Gap {
                start: plan.start_ms,
                end: plan.end_ms,
                minutes: (plan.end_ms - plan.start_ms) / MINUTE_MS,
            }]
        } else {
            store
                .gaps(&plan.exchange, &plan.symbol, plan.start_ms, plan.end_ms)
                .await?
        };
        let to_fetch: i64 = missing.iter().map(|g| g.minutes).sum();
        let deadline = Instant::now() + Duration::from_secs(self.config.job_timeout_secs);
        let mut runner = self.pool.checkout().await?;
        let result = self
            .import_with(
                &mut runner,
                job_id,
                plan,
                endpoint.as_deref(),
                &missing,
                to_fetch,
                synthetic_rows,
                deadline,
            )
            .await;
        let lost = if runner.is_dead() {
            Some(runner.reap().await)
        } else {
            None
        };
        self.pool.checkin(runner).await;
        match (result, lost) {
            (_, Some(reason)) => Ok(Outcome::RunnerLost(reason)),
            (result, None) => result,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn import_with(
        &self,
        runner: &mut Runner,
        job_id: &str,
        plan: &ImportPlan,
        endpoint: Option<&str>,
        missing: &[jesse_mcp_core::store::Gap],
        to_fetch: i64,
        replaced_synthetic: u64,
        deadline: Instant,
    ) -> anyhow::Result<Outcome> {
        let started = Instant::now();
        let (mut inserted, mut updated, mut pages, mut fetched_minutes) = (0u64, 0u64, 0u64, 0i64);
        let mut spacing = Duration::from_millis(500);
        let mut listing: Option<i64> = None;
        if to_fetch > 0 {
            match self
                .call(
                    runner,
                    job_id,
                    plan,
                    endpoint,
                    json!({"op": "first"}),
                    &mut spacing,
                    deadline,
                )
                .await?
            {
                Call::Ok(answer) => listing = answer["first"].as_i64(),
                Call::Failed(error) => return Ok(Outcome::Failed(error)),
                Call::Cancelled => return Ok(Outcome::Cancelled),
                Call::Lost(reason) => return Ok(Outcome::RunnerLost(reason)),
                Call::TimedOut => return Ok(self.import_timed_out()),
            }
        }
        'gaps: for gap in missing {
            // Nothing exists before the listing minute; do not page through empty history.
            let mut cursor = listing.map_or(gap.start, |first| {
                gap.start.max(first - first.rem_euclid(MINUTE_MS))
            });
            fetched_minutes += (cursor.min(gap.end) - gap.start) / MINUTE_MS;
            while cursor < gap.end {
                if self.engine.store().cancel_requested(job_id).await? {
                    return Ok(Outcome::Cancelled);
                }
                let page = match self
                    .call(
                        runner,
                        job_id,
                        plan,
                        endpoint,
                        json!({"op": "page", "start": cursor}),
                        &mut spacing,
                        deadline,
                    )
                    .await?
                {
                    Call::Ok(answer) => answer,
                    Call::Failed(error) => return Ok(Outcome::Failed(error)),
                    Call::Cancelled => return Ok(Outcome::Cancelled),
                    Call::Lost(reason) => return Ok(Outcome::RunnerLost(reason)),
                    Call::TimedOut => return Ok(self.import_timed_out()),
                };
                pages += 1;
                let rows: Vec<Candle> = page["rows"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|r| {
                        let v = |i: usize| r.get(i).and_then(Value::as_f64);
                        Some(Candle {
                            timestamp: r.get(0)?.as_i64()?,
                            open: v(1)?,
                            close: v(2)?,
                            high: v(3)?,
                            low: v(4)?,
                            volume: v(5)?,
                        })
                    })
                    .filter(|c| {
                        c.timestamp >= cursor && c.timestamp < gap.end && c.defect().is_none()
                    })
                    .collect();
                let Some(last) = rows.iter().map(|c| c.timestamp).max() else {
                    // The exchange has nothing from here to the end of this gap.
                    fetched_minutes += (gap.end - cursor) / MINUTE_MS;
                    continue 'gaps;
                };
                let counts = self
                    .engine
                    .store()
                    .upsert_candles(&plan.exchange, &plan.symbol, CandleSource::Import, &rows)
                    .await?;
                inserted += counts.inserted;
                updated += counts.updated;
                fetched_minutes += (last + MINUTE_MS - cursor) / MINUTE_MS;
                cursor = last + MINUTE_MS;
                let fraction = if to_fetch > 0 {
                    (fetched_minutes as f64 / to_fetch as f64).min(1.0)
                } else {
                    1.0
                };
                let eta = if fraction > 0.0 {
                    started.elapsed().as_secs_f64() * (1.0 - fraction) / fraction
                } else {
                    0.0
                };
                let stage = format!(
                    "stored up to {}; {inserted} rows inserted; ETA {eta:.0} s",
                    to_rfc3339(last)
                );
                self.engine
                    .store()
                    .set_progress(job_id, 0.02 + 0.96 * fraction, &stage)
                    .await?;
            }
        }
        self.engine
            .store()
            .mark_imported(&plan.exchange, &plan.symbol)
            .await?;
        self.engine
            .store()
            .refresh_gap_count(&plan.exchange, &plan.symbol)
            .await?;
        let gaps = self
            .engine
            .store()
            .gaps(&plan.exchange, &plan.symbol, plan.start_ms, plan.end_ms)
            .await?;
        let total = (plan.end_ms - plan.start_ms) / MINUTE_MS;
        let missing_minutes: i64 = gaps.iter().map(|g| g.minutes).sum();
        let source = self
            .engine
            .store()
            .series_source(&plan.exchange, &plan.symbol)
            .await?;
        let report = json!({
            "exchange": plan.exchange,
            "symbol": plan.symbol,
            "source": source,
            "note": source.as_deref().and_then(series_source_note),
            // The synthetic rows went with the first real ones written.
            "replaced_synthetic_rows": if inserted + updated > 0 { replaced_synthetic } else { 0 },
            "start": plan.start_ms,
            "end": plan.end_ms,
            "minutes_requested": total,
            "minutes_missing_before": to_fetch,
            "inserted": inserted,
            "updated": updated,
            "pages": pages,
            "listing_start": listing,
            "gaps": gaps.iter().take(100).collect::<Vec<_>>(),
            "gaps_total": gaps.len(),
            "missing_minutes": missing_minutes,
            "coverage_pct": if total > 0 { 100.0 * (total - missing_minutes) as f64 / total as f64 } else { 100.0 },
            "seconds": started.elapsed().as_secs_f64(),
        });
        Ok(Outcome::Succeeded {
            result: Box::new(JobResult {
                body: report.clone(),
                parts: Vec::new(),
            }),
            summary: report,
        })
    }

    fn import_timed_out(&self) -> Outcome {
        Outcome::Failed(ErrorBody::new(
            "timed_out",
            format!(
                "the import did not finish within {} s (JESSE_MCP_JOB_TIMEOUT_SECS); the candles \
                 stored so far are kept, and a rerun continues from the first missing minute",
                self.config.job_timeout_secs
            ),
        ))
    }

    /// Waits `wait`, unless the job's cancel is requested (Some(Cancelled)) or
    /// its deadline comes first (Some(TimedOut)).
    async fn pause(&self, job_id: &str, wait: Duration, deadline: Instant) -> Option<Call> {
        let until = (Instant::now() + wait).min(deadline);
        tokio::select! {
            () = tokio::time::sleep_until(until.into()) => {
                (Instant::now() >= deadline).then_some(Call::TimedOut)
            }
            () = self.cancel_requested(job_id) => Some(Call::Cancelled),
        }
    }

    /// One driver call, paced per exchange, with bounded retries for rate limits
    /// and outages. Unknown symbols and other errors fail at once. Cancel and the
    /// job's deadline stop it at any point, between retries included.
    #[allow(clippy::too_many_arguments)]
    async fn call(
        &self,
        runner: &mut Runner,
        job_id: &str,
        plan: &ImportPlan,
        endpoint: Option<&str>,
        mut request: Value,
        spacing: &mut Duration,
        deadline: Instant,
    ) -> anyhow::Result<Call> {
        request["exchange"] = json!(plan.exchange);
        request["symbol"] = json!(plan.symbol);
        request["endpoint"] = json!(endpoint);
        let request = RunRequest {
            entry: "fetch_candles".into(),
            request_json: request.to_string(),
            series: Vec::new(),
        };
        let mut attempt = 0;
        loop {
            tokio::select! {
                () = self.pacer.wait(&plan.exchange, *spacing) => {}
                () = self.cancel_requested(job_id) => return Ok(Call::Cancelled),
                () = tokio::time::sleep_until(deadline.into()) => return Ok(Call::TimedOut),
            }
            let call_deadline = (Instant::now() + Duration::from_secs(120)).min(deadline);
            let answer = match runner
                .run(
                    self.pool.spec(),
                    &request,
                    &[],
                    call_deadline,
                    self.cancel_requested(job_id),
                )
                .await
            {
                Ok(response) => response.result,
                Err(RunError::TimedOut) if Instant::now() >= deadline => return Ok(Call::TimedOut),
                Err(RunError::TimedOut) => {
                    json!({"fetch_error": {"kind": "unavailable", "message": "no answer from the exchange within 120 s"}})
                }
                Err(RunError::Cancelled) => return Ok(Call::Cancelled),
                Err(RunError::Lost(reason)) => return Ok(Call::Lost(reason)),
                Err(RunError::BadResponse(reason)) => {
                    return Ok(Call::Failed(ErrorBody::new("invalid_result", reason)));
                }
            };
            if let Some(seconds) = answer["sleep"]
                .as_f64()
                .filter(|s| s.is_finite() && *s > 0.0)
            {
                *spacing = Duration::from_secs_f64(seconds.min(10.0));
            }
            let Some(error) = answer.get("fetch_error") else {
                return Ok(Call::Ok(answer));
            };
            let kind = error["kind"].as_str().unwrap_or("error");
            let message = error["message"].as_str().unwrap_or_default().to_string();
            attempt += 1;
            let wait = match kind {
                "rate_limited" if attempt <= MAX_RETRIES => Duration::from_secs_f64(
                    error["retry_after"]
                        .as_f64()
                        .unwrap_or(2.0)
                        .clamp(0.5, 60.0),
                ),
                "unavailable" if attempt <= MAX_RETRIES => {
                    Duration::from_millis(500 * (1 << (attempt - 1)))
                }
                "rate_limited" => {
                    return Ok(Call::Failed(ErrorBody::new(
                        "rate_limited",
                        format!(
                            "{} kept rate-limiting after {MAX_RETRIES} retries: {message}",
                            plan.exchange
                        ),
                    )));
                }
                "unavailable" => {
                    return Ok(Call::Failed(ErrorBody::new(
                        "exchange_unavailable",
                        format!(
                            "{} is down or unreachable after {MAX_RETRIES} retries: {message}",
                            plan.exchange
                        ),
                    )));
                }
                "egress_refused" => {
                    return Ok(Call::Failed(ErrorBody::new(
                        "egress_refused",
                        format!(
                            "{} made the import connect somewhere other than its endpoint (e.g. a redirect); \
                             imports reach only the exchange's configured endpoint: {message}",
                            plan.exchange
                        ),
                    )));
                }
                "unknown_symbol" => {
                    return Ok(Call::Failed(ErrorBody::new(
                        "unknown_symbol",
                        format!("{} does not list {}: {message}", plan.exchange, plan.symbol),
                    )));
                }
                _ => {
                    return Ok(Call::Failed(ErrorBody::new(
                        "exchange_error",
                        format!("{}: {message}", plan.exchange),
                    )));
                }
            };
            tracing::warn!(
                exchange = plan.exchange,
                kind,
                attempt,
                wait_ms = wait.as_millis() as u64,
                "exchange call failed; retrying"
            );
            if let Some(stop) = self.pause(job_id, wait, deadline).await {
                return Ok(stop);
            }
        }
    }
}
