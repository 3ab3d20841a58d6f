//! Scheduled top-ups: series to keep current, each with a cron expression (UTC,
//! default 02:30 daily). Every API instance runs the tick loop, but only the
//! holder of the `candle-scheduler` lease acts, and each firing enqueues an
//! ordinary import job whose idempotency key is series + date, so even two
//! instances that both believed they held the lease cannot import twice.

use std::str::FromStr;

use chrono::{TimeZone, Utc};
use jesse_mcp_core::jesse::is_import_exchange;
use jesse_mcp_core::jobs::ImportPlan;
use jesse_mcp_core::kinds::Lane;
use jesse_mcp_core::store::ScheduleRecord;
use jesse_mcp_core::time::{DAY_MS, MINUTE_MS, now_ms, parse_day, to_rfc3339};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{Service, check_symbol};
use crate::error::ApiError;

pub const DEFAULT_CRON: &str = "0 30 2 * * *";
const LEASE: &str = "candle-scheduler";
const LEASE_MS: i64 = 30_000;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Exchange to import from, as Jesse spells it.
    pub exchange: String,
    /// Symbol, e.g. `BTC-USDT`.
    pub symbol: String,
    /// When to top up, UTC: 5 fields (`30 2 * * *`) or 6 with seconds; default 02:30 daily.
    #[serde(default)]
    pub cron: Option<String>,
    /// First day to import while nothing is stored yet (default: yesterday).
    #[serde(default)]
    pub start_date: Option<String>,
}

/// `PUT /v1/schedules` and MCP `schedule_set`: the complete list (replaces the previous one).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SchedulesBody {
    pub schedules: Vec<ScheduleSpec>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ScheduleView {
    pub exchange: String,
    pub symbol: String,
    pub cron: String,
    pub start_date: Option<String>,
    pub next_run_at: Option<String>,
    pub last_fired_at: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ScheduleList {
    pub schedules: Vec<ScheduleView>,
}

/// Parses a cron expression; 5-field expressions get a leading seconds field.
fn parse_cron(expression: &str) -> Result<cron::Schedule, ApiError> {
    let fields = expression.split_whitespace().count();
    let full = if fields == 5 {
        format!("0 {expression}")
    } else {
        expression.to_string()
    };
    cron::Schedule::from_str(&full).map_err(|e| {
        ApiError::invalid(
            "invalid_cron",
            format!("'{expression}' is not a cron expression ({e}); use e.g. '30 2 * * *' for 02:30 UTC daily"),
        )
    })
}

fn next_after(schedule: &cron::Schedule, after_ms: i64) -> Option<i64> {
    let after = Utc.timestamp_millis_opt(after_ms).single()?;
    schedule.after(&after).next().map(|t| t.timestamp_millis())
}

fn view(record: &ScheduleRecord) -> ScheduleView {
    let next = parse_cron(&record.cron).ok().and_then(|s| {
        next_after(
            &s,
            record
                .last_fired_at
                .unwrap_or(record.created_at)
                .max(now_ms()),
        )
    });
    ScheduleView {
        exchange: record.exchange.clone(),
        symbol: record.symbol.clone(),
        cron: record.cron.clone(),
        start_date: record.start_date.clone(),
        next_run_at: next.map(to_rfc3339),
        last_fired_at: record.last_fired_at.map(to_rfc3339),
    }
}

/// How often the lease holder vacuums the queue (more often if the retention is shorter).
const VACUUM_EVERY_MS: i64 = 60_000;

/// The lease holder's chores besides schedules, and when it last vacuumed.
#[derive(Debug, Clone)]
pub struct Housekeeping {
    /// A job queued this long is checked against the queue (`requeue_lost`).
    pub requeue_after_ms: i64,
    /// How long the queue keeps the bookkeeping of tasks that ended.
    pub queue_retention: std::time::Duration,
    /// Epoch ms of the next vacuum (0: at the first tick).
    pub next_vacuum_ms: i64,
}

impl Service {
    pub async fn list_schedules(&self) -> Result<ScheduleList, ApiError> {
        let records = self.inner.engine.store().list_schedules().await?;
        Ok(ScheduleList {
            schedules: records.iter().map(view).collect(),
        })
    }

    pub async fn put_schedules(&self, body: SchedulesBody) -> Result<ScheduleList, ApiError> {
        let now = now_ms();
        let mut records: Vec<ScheduleRecord> = Vec::new();
        for spec in body.schedules {
            if !is_import_exchange(&spec.exchange) {
                return Err(ApiError::invalid(
                    "unsupported_exchange",
                    format!("Jesse cannot import candles from '{}'", spec.exchange),
                ));
            }
            check_symbol(&spec.symbol)?;
            let cron = spec.cron.unwrap_or_else(|| DEFAULT_CRON.to_string());
            parse_cron(&cron)?;
            if let Some(day) = &spec.start_date {
                parse_day(day)
                    .map_err(|m| ApiError::invalid("invalid_date", format!("start_date: {m}")))?;
            }
            if records
                .iter()
                .any(|r| r.exchange == spec.exchange && r.symbol == spec.symbol)
            {
                return Err(ApiError::invalid(
                    "duplicate_schedule",
                    format!(
                        "{} {} is listed twice; one schedule per series",
                        spec.exchange, spec.symbol
                    ),
                ));
            }
            records.push(ScheduleRecord {
                exchange: spec.exchange,
                symbol: spec.symbol,
                cron,
                start_date: spec.start_date,
                created_at: now,
                last_fired_at: None,
            });
        }
        self.inner
            .engine
            .store()
            .replace_schedules(&records)
            .await?;
        tracing::info!(count = records.len(), "schedules replaced");
        self.list_schedules().await
    }

    /// One scheduler tick: if this instance holds the lease, put back jobs the
    /// queue lost, vacuum the queue now and then, and enqueue a top-up for every
    /// schedule that is due. Returns the number of top-ups enqueued.
    pub async fn scheduler_tick(
        &self,
        holder: &str,
        housekeeping: &mut Housekeeping,
    ) -> Result<usize, ApiError> {
        if !self
            .inner
            .engine
            .store()
            .try_lease(LEASE, holder, LEASE_MS)
            .await?
        {
            return Ok(0);
        }
        self.requeue_lost(housekeeping.requeue_after_ms).await?;
        let now = now_ms();
        if now >= housekeeping.next_vacuum_ms {
            let retention_ms = housekeeping.queue_retention.as_millis() as i64;
            housekeeping.next_vacuum_ms = now + VACUUM_EVERY_MS.min(retention_ms);
            for lane in Lane::ALL {
                let removed = self
                    .inner
                    .engine
                    .queue()
                    .vacuum(*lane, housekeeping.queue_retention)
                    .await?;
                if removed > 0 {
                    tracing::info!(
                        queue = lane.queue_name(),
                        removed,
                        "vacuumed ended tasks from the queue"
                    );
                }
            }
        }
        let series = self.inner.engine.store().list_series().await?;
        let mut enqueued = 0;
        for schedule in self.inner.engine.store().list_schedules().await? {
            let Ok(cron) = parse_cron(&schedule.cron) else {
                continue;
            };
            let Some(due) =
                next_after(&cron, schedule.last_fired_at.unwrap_or(schedule.created_at))
            else {
                continue;
            };
            if due > now {
                continue;
            }
            let stored = series
                .iter()
                .find(|s| s.exchange == schedule.exchange && s.symbol == schedule.symbol);
            let start_ms = match (stored, &schedule.start_date) {
                (Some(s), _) => s.last + MINUTE_MS,
                (None, Some(day)) => parse_day(day).unwrap_or(now - DAY_MS),
                (None, None) => now - now.rem_euclid(DAY_MS) - DAY_MS,
            };
            let end_ms = now - now.rem_euclid(MINUTE_MS);
            if start_ms < end_ms {
                let plan = ImportPlan {
                    exchange: schedule.exchange.clone(),
                    symbol: schedule.symbol.clone(),
                    start_ms,
                    end_ms,
                };
                let day = to_rfc3339(due).chars().take(10).collect::<String>();
                let key = format!("schedule:{}:{}:{day}", schedule.exchange, schedule.symbol);
                match self
                    .enqueue(
                        &jesse_mcp_core::kinds::candle_import::KIND,
                        json!(plan),
                        Some(&key),
                    )
                    .await
                {
                    Ok(job) if job.created => {
                        enqueued += 1;
                        tracing::info!(
                            job.id = job.job_id,
                            exchange = schedule.exchange,
                            symbol = schedule.symbol,
                            "scheduled import enqueued"
                        );
                    }
                    Ok(_) => {}
                    // This series and day already has its job (another instance, or a restart).
                    Err(e) if e.body.code == "idempotency_key_reused" => {}
                    Err(e) => return Err(e),
                }
            }
            // Missed ticks (the service was down) collapse into this one run.
            self.inner
                .engine
                .store()
                .mark_fired(&schedule.exchange, &schedule.symbol, now)
                .await?;
        }
        Ok(enqueued)
    }
}
