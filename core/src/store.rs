//! The results store: jobs, backtest results and 1m candles, in SQLite under the
//! data directory. Owns every SQL statement of the service; callers see typed
//! records only. The schema changes only through `migrations/`.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{AssertSqlSafe, QueryBuilder, Row, SqlitePool};

use crate::candles::Candle;
use crate::error::{ErrorBody, StoreError};
use crate::jobs::{JobKind, JobStatus};
use crate::time::{MINUTE_MS, now_ms};

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
}

/// A job as the store knows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobRecord {
    pub id: String,
    pub kind: JobKind,
    pub status: JobStatus,
    pub params: Value,
    pub progress: f64,
    pub stage: Option<String>,
    pub attempts: i64,
    pub cancel_requested: bool,
    pub error: Option<ErrorBody>,
    pub summary: Option<Value>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

pub struct NewJob<'a> {
    pub id: &'a str,
    pub kind: JobKind,
    pub params: &'a Value,
    pub idempotency_key: Option<&'a str>,
}

/// Whether a submit created a job or found the one its idempotency key names.
pub enum Inserted {
    Created(JobRecord),
    Existing(JobRecord),
}

#[derive(Debug, Default, Clone)]
pub struct JobFilter {
    pub kind: Option<JobKind>,
    pub status: Option<JobStatus>,
    /// Return jobs older than this id (ids are ULIDs, so they sort by time).
    pub before: Option<String>,
    pub limit: i64,
}

/// The outcome of trying to claim a job.
#[derive(Debug)]
pub enum Claim {
    Claimed(Box<JobRecord>),
    /// Cancelled, finished or gone: nothing to run.
    NotRunnable,
    /// Another worker holds a live lease on it.
    HeldElsewhere,
}

/// What a cancel request did.
#[derive(Debug)]
pub enum CancelOutcome {
    /// The job was queued and is now cancelled.
    Cancelled(JobRecord),
    /// The job is running; its worker has been asked to interrupt it.
    Requested(JobRecord),
    /// The job had already finished; nothing changed.
    AlreadyFinished(JobRecord),
}

#[derive(Debug, Clone, Serialize)]
pub struct BacktestResultRecord {
    pub job_id: String,
    pub metrics: Value,
    pub trades: Option<Value>,
    pub equity_curve: Option<Value>,
    pub jesse_version: String,
    pub strategies: Value,
    pub candles: Value,
    pub timings: Value,
    pub created_at: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct UpsertCounts {
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SeriesSummary {
    pub exchange: String,
    pub symbol: String,
    pub timeframe: String,
    /// First stored minute, ms since the epoch.
    pub first: i64,
    /// Last stored minute, ms since the epoch.
    pub last: i64,
    pub rows: i64,
    /// When an import job last finished for this series, ms since the epoch.
    pub last_import_at: Option<i64>,
    /// Runs of missing minutes between first and last (as of the last write).
    pub gaps: i64,
}

/// A series kept current by scheduled imports.
#[derive(Debug, Clone, Serialize, PartialEq, sqlx::FromRow)]
pub struct ScheduleRecord {
    pub exchange: String,
    pub symbol: String,
    pub cron: String,
    pub start_date: Option<String>,
    pub created_at: i64,
    pub last_fired_at: Option<i64>,
}

/// A half-open run of missing minutes: `start` is the first missing minute and
/// `end` the first minute after it that is present (or the end of the range).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Gap {
    pub start: i64,
    pub end: i64,
    pub minutes: i64,
}

const JOB_COLUMNS: &str = "id, kind, status, params, progress, stage, attempts, cancel_requested, \
                           error, summary, created_at, started_at, finished_at";
const UPSERT_CHUNK: usize = 3_000;

impl Store {
    /// Opens (creating if needed) `store.db` in `data_dir` and applies migrations.
    pub async fn open(data_dir: &Path) -> Result<Self> {
        let _init =
            crate::init_lock(data_dir).map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        let url = format!("sqlite://{}", data_dir.join("store.db").display());
        Self::connect(&url).await
    }

    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true)
            // Range scans of candles read pages through a memory map instead of
            // copying each one out of the OS cache (about a third faster for a year).
            .pragma("mmap_size", "4294967296");
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("../migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    // ---- jobs ---------------------------------------------------------------

    /// Inserts a queued job, or returns the job an idempotency key already names.
    pub async fn insert_job(&self, job: NewJob<'_>) -> Result<Inserted> {
        let now = now_ms();
        let params = serde_json::to_string(job.params)?;
        let done = sqlx::query(
            "INSERT INTO jobs (id, kind, status, params, created_at, updated_at, idempotency_key) \
             VALUES (?, ?, 'queued', ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(job.id)
        .bind(job.kind.as_str())
        .bind(&params)
        .bind(now)
        .bind(now)
        .bind(job.idempotency_key)
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 1 {
            let record = self.get_job(job.id).await?.expect("row just inserted");
            return Ok(Inserted::Created(record));
        }
        let key = job
            .idempotency_key
            .expect("only the idempotency key can conflict");
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE idempotency_key = ?"
        )))
        .bind(key)
        .fetch_one(&self.pool)
        .await?;
        Ok(Inserted::Existing(job_from_row(&row)?))
    }

    /// Removes a job that never reached the queue (its push failed).
    pub async fn delete_unqueued_job(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM jobs WHERE id = ? AND status = 'queued'")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn get_job(&self, id: &str) -> Result<Option<JobRecord>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    pub async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>> {
        let mut query = QueryBuilder::new(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1 = 1"));
        if let Some(kind) = filter.kind {
            query.push(" AND kind = ").push_bind(kind.as_str());
        }
        if let Some(status) = filter.status {
            query.push(" AND status = ").push_bind(status.as_str());
        }
        if let Some(before) = &filter.before {
            query.push(" AND id < ").push_bind(before.clone());
        }
        query
            .push(" ORDER BY id DESC LIMIT ")
            .push_bind(filter.limit);
        let rows = query.build().fetch_all(&self.pool).await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Claims a job for `owner`: queued → running, counting the attempt, with a
    /// lease of `lease_ms`. A running job is taken over only when its lease has
    /// expired (its owner is presumed dead).
    pub async fn start_attempt(&self, id: &str, owner: &str, lease_ms: i64) -> Result<Claim> {
        let now = now_ms();
        let done = sqlx::query(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, \
             started_at = COALESCE(started_at, ?), updated_at = ?, stage = 'starting', \
             lease_owner = ?, lease_expires_at = ? \
             WHERE id = ? AND status IN ('queued', 'running') \
             AND (lease_owner IS NULL OR lease_owner = ? OR lease_expires_at < ?)",
        )
        .bind(now)
        .bind(now)
        .bind(owner)
        .bind(now + lease_ms)
        .bind(id)
        .bind(owner)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let job = self.get_job(id).await?;
        Ok(match job {
            Some(job) if done.rows_affected() == 1 => Claim::Claimed(Box::new(job)),
            Some(job) if job.status == JobStatus::Running => Claim::HeldElsewhere,
            _ => Claim::NotRunnable,
        })
    }

    /// Extends `owner`'s lease; false when it no longer holds the job.
    pub async fn renew_lease(&self, id: &str, owner: &str, lease_ms: i64) -> Result<bool> {
        let done = sqlx::query("UPDATE jobs SET lease_expires_at = ? WHERE id = ? AND lease_owner = ? AND status = 'running'")
            .bind(now_ms() + lease_ms)
            .bind(id)
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn holds_lease(&self, id: &str, owner: &str) -> Result<bool> {
        let holder: Option<Option<String>> =
            sqlx::query_scalar("SELECT lease_owner FROM jobs WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(holder.flatten().is_none_or(|h| h == owner))
    }

    pub async fn set_progress(&self, id: &str, progress: f64, stage: &str) -> Result<()> {
        sqlx::query(
            "UPDATE jobs SET progress = ?, stage = ?, updated_at = ? WHERE id = ? AND status = 'running'",
        )
        .bind(progress)
        .bind(stage)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Moves a job to a terminal status. A job that is already terminal keeps
    /// its first outcome, so a late worker cannot overwrite a cancellation.
    pub async fn finish_job(
        &self,
        id: &str,
        owner: Option<&str>,
        status: JobStatus,
        error: Option<&ErrorBody>,
        summary: Option<&Value>,
    ) -> Result<bool> {
        debug_assert!(status.is_terminal());
        let now = now_ms();
        let progress = if status == JobStatus::Succeeded {
            1.0
        } else {
            0.0
        };
        let done = sqlx::query(
            "UPDATE jobs SET status = ?, error = ?, summary = ?, finished_at = ?, updated_at = ?, \
             stage = NULL, progress = CASE WHEN ? = 1.0 THEN 1.0 ELSE progress END \
             WHERE id = ? AND status IN ('queued', 'running') AND (lease_owner IS NULL OR lease_owner = ?)",
        )
        .bind(status.as_str())
        .bind(error.map(serde_json::to_string).transpose()?)
        .bind(summary.map(serde_json::to_string).transpose()?)
        .bind(now)
        .bind(now)
        .bind(progress)
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Cancels a queued job at once, or flags a running one for its worker.
    pub async fn request_cancel(&self, id: &str) -> Result<Option<CancelOutcome>> {
        let now = now_ms();
        let error = serde_json::to_string(&ErrorBody::new("cancelled", "cancelled by request"))?;
        let queued = sqlx::query(
            "UPDATE jobs SET status = 'cancelled', finished_at = ?, updated_at = ?, error = ? \
             WHERE id = ? AND status = 'queued'",
        )
        .bind(now)
        .bind(now)
        .bind(&error)
        .bind(id)
        .execute(&self.pool)
        .await?;
        if queued.rows_affected() == 1 {
            return Ok(self.get_job(id).await?.map(CancelOutcome::Cancelled));
        }
        sqlx::query(
            "UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ? AND status = 'running'",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(self.get_job(id).await?.map(|job| {
            if job.status.is_terminal() {
                CancelOutcome::AlreadyFinished(job)
            } else {
                CancelOutcome::Requested(job)
            }
        }))
    }

    pub async fn cancel_requested(&self, id: &str) -> Result<bool> {
        let flag: Option<i64> =
            sqlx::query_scalar("SELECT cancel_requested FROM jobs WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(flag.unwrap_or(0) != 0)
    }

    // ---- results ------------------------------------------------------------

    /// Stores a backtest's result. Re-running a job replaces its row, never duplicates it.
    pub async fn save_backtest_result(&self, result: &BacktestResultRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO backtest_results (job_id, metrics, trades, equity_curve, jesse_version, \
             strategies, candles, timings, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (job_id) DO UPDATE SET metrics = excluded.metrics, trades = excluded.trades, \
             equity_curve = excluded.equity_curve, jesse_version = excluded.jesse_version, \
             strategies = excluded.strategies, candles = excluded.candles, timings = excluded.timings, \
             created_at = excluded.created_at",
        )
        .bind(&result.job_id)
        .bind(serde_json::to_string(&result.metrics)?)
        .bind(result.trades.as_ref().map(serde_json::to_string).transpose()?)
        .bind(result.equity_curve.as_ref().map(serde_json::to_string).transpose()?)
        .bind(&result.jesse_version)
        .bind(serde_json::to_string(&result.strategies)?)
        .bind(serde_json::to_string(&result.candles)?)
        .bind(serde_json::to_string(&result.timings)?)
        .bind(result.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records how long the result write itself took (known only after it).
    pub async fn set_result_timings(&self, job_id: &str, timings: &Value) -> Result<()> {
        sqlx::query("UPDATE backtest_results SET timings = ? WHERE job_id = ?")
            .bind(serde_json::to_string(timings)?)
            .bind(job_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores a deep validation report (replacing a re-run's).
    pub async fn save_validation(
        &self,
        job_id: &str,
        strategy: &str,
        sha256: &str,
        report: &Value,
    ) -> Result<()> {
        let valid = report["valid"].as_bool().unwrap_or(false);
        sqlx::query(
            "INSERT INTO strategy_validations (job_id, strategy, sha256, valid, report, created_at) \
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (job_id) DO UPDATE SET valid = excluded.valid, \
             report = excluded.report, created_at = excluded.created_at",
        )
        .bind(job_id)
        .bind(strategy)
        .bind(sha256)
        .bind(valid)
        .bind(serde_json::to_string(report)?)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The newest deep validation of this exact source: `(job_id, report)`.
    pub async fn latest_validation(
        &self,
        strategy: &str,
        sha256: &str,
    ) -> Result<Option<(String, Value)>> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT job_id, report FROM strategy_validations WHERE strategy = ? AND sha256 = ? \
             ORDER BY created_at DESC LIMIT 1",
        )
        .bind(strategy)
        .bind(sha256)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(id, report)| Ok((id, serde_json::from_str(&report)?)))
            .transpose()
    }

    pub async fn get_validation(&self, job_id: &str) -> Result<Option<Value>> {
        let report: Option<String> =
            sqlx::query_scalar("SELECT report FROM strategy_validations WHERE job_id = ?")
                .bind(job_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(report.map(|r| serde_json::from_str(&r)).transpose()?)
    }

    pub async fn get_backtest_result(&self, job_id: &str) -> Result<Option<BacktestResultRecord>> {
        let row = sqlx::query(
            "SELECT job_id, metrics, trades, equity_curve, jesse_version, strategies, candles, \
             timings, created_at FROM backtest_results WHERE job_id = ?",
        )
        .bind(job_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let json = |name: &str| -> Result<Option<Value>> {
            let text: Option<String> = row.try_get(name)?;
            Ok(text.map(|t| serde_json::from_str(&t)).transpose()?)
        };
        Ok(Some(BacktestResultRecord {
            job_id: row.try_get("job_id")?,
            metrics: json("metrics")?.unwrap_or(Value::Null),
            trades: json("trades")?,
            equity_curve: json("equity_curve")?,
            jesse_version: row.try_get("jesse_version")?,
            strategies: json("strategies")?.unwrap_or(Value::Null),
            candles: json("candles")?.unwrap_or(Value::Null),
            timings: json("timings")?.unwrap_or(Value::Null),
            created_at: row.try_get("created_at")?,
        }))
    }

    // ---- candles ------------------------------------------------------------

    /// Idempotent upsert of 1m candles, counting inserted, changed and unchanged rows.
    pub async fn upsert_candles(
        &self,
        exchange: &str,
        symbol: &str,
        candles: &[Candle],
    ) -> Result<UpsertCounts> {
        let mut counts = UpsertCounts::default();
        if candles.is_empty() {
            return Ok(counts);
        }
        // IMMEDIATE: this transaction reads (counts) before it writes; a deferred one
        // cannot upgrade after another process commits (SQLITE_BUSY_SNAPSHOT).
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for chunk in candles.chunks(UPSERT_CHUNK) {
            let (lo, hi) = chunk.iter().fold((i64::MAX, i64::MIN), |(lo, hi), c| {
                (lo.min(c.timestamp), hi.max(c.timestamp))
            });
            let count_range = "SELECT COUNT(*) FROM candles WHERE exchange = ? AND symbol = ? \
                               AND timeframe = '1m' AND timestamp BETWEEN ? AND ?";
            let before: i64 = sqlx::query_scalar(count_range)
                .bind(exchange)
                .bind(symbol)
                .bind(lo)
                .bind(hi)
                .fetch_one(&mut *tx)
                .await?;
            let mut query = QueryBuilder::new(
                "INSERT INTO candles (exchange, symbol, timeframe, timestamp, open, close, high, low, volume) ",
            );
            query.push_values(chunk, |mut row, c| {
                row.push_bind(exchange)
                    .push_bind(symbol)
                    .push_bind("1m")
                    .push_bind(c.timestamp)
                    .push_bind(c.open)
                    .push_bind(c.close)
                    .push_bind(c.high)
                    .push_bind(c.low)
                    .push_bind(c.volume);
            });
            query.push(
                " ON CONFLICT (exchange, symbol, timeframe, timestamp) DO UPDATE SET \
                 open = excluded.open, close = excluded.close, high = excluded.high, \
                 low = excluded.low, volume = excluded.volume \
                 WHERE candles.open IS NOT excluded.open OR candles.close IS NOT excluded.close \
                 OR candles.high IS NOT excluded.high OR candles.low IS NOT excluded.low \
                 OR candles.volume IS NOT excluded.volume",
            );
            let affected = query.build().execute(&mut *tx).await?.rows_affected();
            let after: i64 = sqlx::query_scalar(count_range)
                .bind(exchange)
                .bind(symbol)
                .bind(lo)
                .bind(hi)
                .fetch_one(&mut *tx)
                .await?;
            let inserted = (after - before) as u64;
            counts.inserted += inserted;
            counts.updated += affected - inserted;
            counts.unchanged += chunk.len() as u64 - affected;
        }
        let first = candles
            .iter()
            .map(|c| c.timestamp)
            .min()
            .expect("non-empty");
        let last = candles
            .iter()
            .map(|c| c.timestamp)
            .max()
            .expect("non-empty");
        sqlx::query(
            "INSERT INTO candle_series (exchange, symbol, timeframe, first_ts, last_ts, row_count, updated_at) \
             VALUES (?, ?, '1m', ?, ?, ?, ?) ON CONFLICT (exchange, symbol, timeframe) DO UPDATE SET \
             first_ts = MIN(first_ts, excluded.first_ts), last_ts = MAX(last_ts, excluded.last_ts), \
             row_count = row_count + excluded.row_count, version = version + 1, \
             updated_at = excluded.updated_at",
        )
        .bind(exchange)
        .bind(symbol)
        .bind(first)
        .bind(last)
        .bind(counts.inserted as i64)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(counts)
    }

    /// Recounts the series' gaps between its first and last row into the summary.
    pub async fn refresh_gap_count(&self, exchange: &str, symbol: &str) -> Result<i64> {
        let Some((first, last, rows)) = sqlx::query_as::<_, (i64, i64, i64)>(
            "SELECT first_ts, last_ts, row_count FROM candle_series WHERE exchange = ? AND symbol = ? AND timeframe = '1m'",
        )
        .bind(exchange)
        .bind(symbol)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(0);
        };
        let count = if rows == (last - first) / MINUTE_MS + 1 {
            0
        } else {
            self.gaps(exchange, symbol, first, last + MINUTE_MS)
                .await?
                .len() as i64
        };
        sqlx::query("UPDATE candle_series SET gap_count = ? WHERE exchange = ? AND symbol = ? AND timeframe = '1m'")
            .bind(count)
            .bind(exchange)
            .bind(symbol)
            .execute(&self.pool)
            .await?;
        Ok(count)
    }

    /// Records that an import of the series just finished.
    pub async fn mark_imported(&self, exchange: &str, symbol: &str) -> Result<()> {
        sqlx::query("UPDATE candle_series SET last_import_at = ? WHERE exchange = ? AND symbol = ? AND timeframe = '1m'")
            .bind(now_ms())
            .bind(exchange)
            .bind(symbol)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- metrics ------------------------------------------------------------

    pub async fn add_to_counter(&self, name: &str, delta: i64) -> Result<()> {
        sqlx::query("INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = value + excluded.value")
            .bind(name)
            .bind(delta)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn counters(&self) -> Result<Vec<(String, i64)>> {
        Ok(
            sqlx::query_as("SELECT name, value FROM counters ORDER BY name")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// `(kind, status, count)` over all jobs.
    pub async fn job_counts(&self) -> Result<Vec<(String, String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT kind, status, COUNT(*) FROM jobs GROUP BY kind, status ORDER BY kind, status",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// `(kind, seconds)` of every finished job that ran.
    pub async fn job_durations(&self) -> Result<Vec<(String, f64)>> {
        Ok(sqlx::query_as(
            "SELECT kind, (finished_at - started_at) / 1000.0 FROM jobs \
             WHERE finished_at IS NOT NULL AND started_at IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    // ---- schedules ----------------------------------------------------------

    pub async fn list_schedules(&self) -> Result<Vec<ScheduleRecord>> {
        Ok(sqlx::query_as::<_, ScheduleRecord>(
            "SELECT exchange, symbol, cron, start_date, created_at, last_fired_at FROM schedules ORDER BY exchange, symbol",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Replaces the whole schedule list; series kept keep their last tick.
    pub async fn replace_schedules(&self, schedules: &[ScheduleRecord]) -> Result<()> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let existing: Vec<(String, String, Option<i64>, i64)> =
            sqlx::query_as("SELECT exchange, symbol, last_fired_at, created_at FROM schedules")
                .fetch_all(&mut *tx)
                .await?;
        sqlx::query("DELETE FROM schedules")
            .execute(&mut *tx)
            .await?;
        for schedule in schedules {
            let previous = existing
                .iter()
                .find(|(e, s, _, _)| *e == schedule.exchange && *s == schedule.symbol);
            sqlx::query(
                "INSERT INTO schedules (exchange, symbol, cron, start_date, created_at, last_fired_at) VALUES (?, ?, ?, ?, ?, ?)",
            )
            .bind(&schedule.exchange)
            .bind(&schedule.symbol)
            .bind(&schedule.cron)
            .bind(&schedule.start_date)
            .bind(previous.map_or(schedule.created_at, |p| p.3))
            .bind(previous.and_then(|p| p.2))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn mark_fired(&self, exchange: &str, symbol: &str, at: i64) -> Result<()> {
        sqlx::query("UPDATE schedules SET last_fired_at = ? WHERE exchange = ? AND symbol = ?")
            .bind(at)
            .bind(exchange)
            .bind(symbol)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Takes or renews a named lease for `ttl_ms`; true if `holder` now holds it.
    pub async fn try_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool> {
        let now = now_ms();
        let done = sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET \
             holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at < ?",
        )
        .bind(name)
        .bind(holder)
        .bind(now + ttl_ms)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes a series (all its 1m rows and its summary); returns the rows removed.
    pub async fn delete_series(&self, exchange: &str, symbol: &str) -> Result<u64> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let removed = sqlx::query(
            "DELETE FROM candles WHERE exchange = ? AND symbol = ? AND timeframe = '1m'",
        )
        .bind(exchange)
        .bind(symbol)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "DELETE FROM candle_series WHERE exchange = ? AND symbol = ? AND timeframe = '1m'",
        )
        .bind(exchange)
        .bind(symbol)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(removed)
    }

    /// Stored series, answered from the summary table (never scans candles).
    pub async fn list_series(&self) -> Result<Vec<SeriesSummary>> {
        let rows = sqlx::query(
            "SELECT exchange, symbol, timeframe, first_ts, last_ts, row_count, last_import_at, gap_count FROM candle_series \
             ORDER BY exchange, symbol, timeframe",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(SeriesSummary {
                    exchange: row.try_get("exchange")?,
                    symbol: row.try_get("symbol")?,
                    timeframe: row.try_get("timeframe")?,
                    first: row.try_get("first_ts")?,
                    last: row.try_get("last_ts")?,
                    rows: row.try_get("row_count")?,
                    last_import_at: row.try_get("last_import_at")?,
                    gaps: row.try_get("gap_count")?,
                })
            })
            .collect()
    }

    /// The series' write counter: changes whenever any of its rows change.
    pub async fn series_version(&self, exchange: &str, symbol: &str) -> Result<Option<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT version FROM candle_series WHERE exchange = ? AND symbol = ? AND timeframe = '1m'",
        )
        .bind(exchange)
        .bind(symbol)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn count_candles(
        &self,
        exchange: &str,
        symbol: &str,
        start: i64,
        end: i64,
    ) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM candles WHERE exchange = ? AND symbol = ? AND timeframe = '1m' \
             AND timestamp >= ? AND timestamp < ?",
        )
        .bind(exchange)
        .bind(symbol)
        .bind(start)
        .bind(end)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Missing minutes of `[start, end)`, as half-open runs.
    pub async fn gaps(
        &self,
        exchange: &str,
        symbol: &str,
        start: i64,
        end: i64,
    ) -> Result<Vec<Gap>> {
        // A series with no missing minute between its first and last row covers any
        // range inside those bounds: answer from the summary without touching candles.
        let summary: Option<(i64, i64, i64)> = sqlx::query_as(
            "SELECT first_ts, last_ts, row_count FROM candle_series \
             WHERE exchange = ? AND symbol = ? AND timeframe = '1m'",
        )
        .bind(exchange)
        .bind(symbol)
        .fetch_optional(&self.pool)
        .await?;
        if let Some((first, last, rows)) = summary
            && rows == (last - first) / MINUTE_MS + 1
            && first <= start
            && end - MINUTE_MS <= last
        {
            return Ok(Vec::new());
        }
        // Otherwise one ordered scan of the timestamps (primary-key order) on the raw
        // connection; a year takes tens of milliseconds, unlike a window query.
        let mut conn = self.pool.acquire().await?;
        let mut handle = conn.lock_handle().await?;
        let db = handle.as_raw_handle().as_ptr();
        let scan = || raw::gaps(db, exchange, symbol, start, end);
        let gaps = match tokio::runtime::Handle::current().runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(scan),
            _ => scan(),
        };
        gaps.map_err(|message| StoreError::Database(sqlx::Error::Protocol(message)))
    }

    /// Loads `[start, end)` of a series as a flat row-major `[N × 6]` buffer in
    /// Jesse's column order, ready to become a numpy array without conversion.
    ///
    /// This is the hot path of every backtest (a year is 525,600 rows), so it
    /// steps a prepared statement on the raw connection instead of streaming rows
    /// through sqlx's per-row channel, which is several times slower.
    pub async fn load_candles(
        &self,
        exchange: &str,
        symbol: &str,
        start: i64,
        end: i64,
    ) -> Result<Vec<f64>> {
        let expected = ((end - start) / MINUTE_MS).max(0) as usize;
        let mut conn = self.pool.acquire().await?;
        let mut handle = conn.lock_handle().await?;
        let db = handle.as_raw_handle().as_ptr();
        let read = || raw::load_candles(db, exchange, symbol, start, end, expected);
        let loaded = match tokio::runtime::Handle::current().runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(read),
            _ => read(),
        };
        loaded.map_err(|message| StoreError::Database(sqlx::Error::Protocol(message)))
    }
}

mod raw {
    //! The one place the store talks to SQLite's C API directly.
    use super::{Gap, MINUTE_MS};
    use libsqlite3_sys as ffi;
    use std::ffi::{CStr, c_int};

    const SQL: &CStr = c"SELECT timestamp, open, close, high, low, volume FROM candles \
        WHERE exchange = ?1 AND symbol = ?2 AND timeframe = '1m' AND timestamp >= ?3 AND timestamp < ?4 \
        ORDER BY timestamp";

    pub fn load_candles(
        db: *mut ffi::sqlite3,
        exchange: &str,
        symbol: &str,
        start: i64,
        end: i64,
        expected: usize,
    ) -> Result<Vec<f64>, String> {
        let mut out = Vec::with_capacity(expected * 6);
        scan(db, SQL, exchange, symbol, start, end, |stmt| {
            // SAFETY: `stmt` is positioned on a row of the six-column SELECT.
            unsafe {
                out.push(ffi::sqlite3_column_int64(stmt, 0) as f64);
                for column in 1..6 {
                    out.push(ffi::sqlite3_column_double(stmt, column));
                }
            }
        })?;
        Ok(out)
    }

    const TIMESTAMPS: &CStr = c"SELECT timestamp FROM candles \
        WHERE exchange = ?1 AND symbol = ?2 AND timeframe = '1m' AND timestamp >= ?3 AND timestamp < ?4 \
        ORDER BY timestamp";

    /// Half-open runs of missing minutes in `[start, end)`.
    pub fn gaps(
        db: *mut ffi::sqlite3,
        exchange: &str,
        symbol: &str,
        start: i64,
        end: i64,
    ) -> Result<Vec<Gap>, String> {
        let mut gaps = Vec::new();
        let mut expected = start;
        let mut push = |from: i64, to: i64| {
            if to > from {
                gaps.push(Gap {
                    start: from,
                    end: to,
                    minutes: (to - from) / MINUTE_MS,
                });
            }
        };
        scan(db, TIMESTAMPS, exchange, symbol, start, end, |stmt| {
            // SAFETY: `stmt` is positioned on a row of the one-column SELECT.
            let ts = unsafe { ffi::sqlite3_column_int64(stmt, 0) };
            push(expected, ts);
            expected = ts + MINUTE_MS;
        })?;
        push(expected, end);
        Ok(gaps)
    }

    /// Runs `sql` (parameters: exchange, symbol, start, end) and calls `on_row`
    /// for every row, in order.
    fn scan(
        db: *mut ffi::sqlite3,
        sql: &CStr,
        exchange: &str,
        symbol: &str,
        start: i64,
        end: i64,
        mut on_row: impl FnMut(*mut ffi::sqlite3_stmt),
    ) -> Result<(), String> {
        // SAFETY: `db` is a live connection locked for our exclusive use by the
        // caller's handle guard; the statement is finalized on every path, and the
        // bound text is copied by SQLite (SQLITE_TRANSIENT).
        unsafe {
            let mut stmt = std::ptr::null_mut();
            if ffi::sqlite3_prepare_v2(db, sql.as_ptr(), -1, &mut stmt, std::ptr::null_mut())
                != ffi::SQLITE_OK
            {
                return Err(error(db, "prepare"));
            }
            let bind_text = |index: c_int, text: &str| {
                ffi::sqlite3_bind_text(
                    stmt,
                    index,
                    text.as_ptr().cast(),
                    text.len() as c_int,
                    ffi::SQLITE_TRANSIENT(),
                )
            };
            let bound = bind_text(1, exchange)
                | bind_text(2, symbol)
                | ffi::sqlite3_bind_int64(stmt, 3, start)
                | ffi::sqlite3_bind_int64(stmt, 4, end);
            let result = if bound != ffi::SQLITE_OK {
                Err(error(db, "bind"))
            } else {
                loop {
                    match ffi::sqlite3_step(stmt) {
                        ffi::SQLITE_ROW => on_row(stmt),
                        ffi::SQLITE_DONE => break Ok(()),
                        _ => break Err(error(db, "step")),
                    }
                }
            };
            ffi::sqlite3_finalize(stmt);
            result
        }
    }

    unsafe fn error(db: *mut ffi::sqlite3, step: &str) -> String {
        // SAFETY: sqlite3_errmsg returns a NUL-terminated string owned by the connection.
        let message = unsafe { CStr::from_ptr(ffi::sqlite3_errmsg(db)) };
        format!("loading candles ({step}): {}", message.to_string_lossy())
    }
}

fn job_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<JobRecord> {
    let kind: String = row.try_get("kind")?;
    let status: String = row.try_get("status")?;
    let params: String = row.try_get("params")?;
    let error: Option<String> = row.try_get("error")?;
    let summary: Option<String> = row.try_get("summary")?;
    let corrupt = |what: &str, value: &str| {
        StoreError::Database(sqlx::Error::Decode(
            format!("unknown job {what} '{value}'").into(),
        ))
    };
    Ok(JobRecord {
        id: row.try_get("id")?,
        kind: JobKind::parse(&kind).ok_or_else(|| corrupt("kind", &kind))?,
        status: JobStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        params: serde_json::from_str(&params)?,
        progress: row.try_get("progress")?,
        stage: row.try_get("stage")?,
        attempts: row.try_get("attempts")?,
        cancel_requested: row.try_get::<i64, _>("cancel_requested")? != 0,
        error: error.map(|e| serde_json::from_str(&e)).transpose()?,
        summary: summary.map(|s| serde_json::from_str(&s)).transpose()?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}
