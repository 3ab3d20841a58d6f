//! The results store: jobs, backtest results and 1m candles, in SQLite under the
//! data directory (the default) or in Postgres (`JESSE_MCP_DATABASE_URL`). Owns
//! every SQL statement of the service; callers see typed records only. The
//! schema changes only through `migrations/sqlite` and `migrations/postgres`,
//! which describe the same tables.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, QueryBuilder, SqlitePool};

use crate::candles::{Candle, CandleSource};
use crate::error::{ErrorBody, StoreError};
use crate::jobs::JobStatus;
use crate::time::{MINUTE_MS, now_ms};

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
}

/// A job as the store knows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobRecord {
    pub id: String,
    /// The kind's name; a kind this binary does not know (a newer or older
    /// fleet member's) is kept as it is and left alone.
    pub kind: String,
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
    /// The parent job of a child (a batch's backtest, a study's trial).
    pub parent_id: Option<String>,
    /// A child's position among its parent's children.
    pub child_index: Option<i64>,
    /// False while a child is held back by its parent's in-flight cap.
    pub released: bool,
    /// A parent waiting on its children: running, holding no lease and no worker.
    pub waiting: bool,
    /// A parent's in-flight cap (None: the runners of the live fleet).
    pub child_cap: Option<i64>,
    /// A parent's release window: child k is released only once every child
    /// before k - window has ended (None: no window).
    pub child_window: Option<i64>,
    /// A study's best objective value so far and the child that reached it.
    pub best: Option<(f64, i64)>,
    /// What the job is about (strategy, symbol, range...), from its plan.
    pub subject: crate::subject::JobSubject,
    /// The tags given at submit.
    pub tags: Vec<String>,
}

impl JobRecord {
    /// The kind's definition, if this binary knows the kind.
    pub fn def(&self) -> Option<&'static crate::kinds::KindDef> {
        crate::kinds::find(&self.kind)
    }
}

pub struct NewJob<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    pub params: &'a Value,
    pub idempotency_key: Option<&'a str>,
}

/// A child job to record under its parent (held back until the parent releases it).
pub struct NewChild {
    pub id: String,
    pub index: i64,
    pub params: Value,
}

/// How a parent's children stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ChildCounts {
    pub total: i64,
    /// Waiting: held back by the in-flight cap or queued.
    pub queued: i64,
    pub running: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
    /// Queued or running children the parent has let go (at most its in-flight cap).
    pub in_flight: i64,
    /// Finished children's run time (sum of finished_at - started_at), ms.
    #[serde(skip)]
    #[schemars(skip)]
    pub busy_ms: i64,
}

impl ChildCounts {
    pub fn done(&self) -> i64 {
        self.succeeded + self.failed + self.cancelled
    }
}

/// Whether a submit created a job or found the one its idempotency key names.
pub enum Inserted {
    Created(JobRecord),
    Existing(JobRecord),
}

#[derive(Debug, Default, Clone)]
pub struct JobFilter {
    pub kind: Option<String>,
    /// Only jobs whose subject names this strategy (one of them, for several).
    pub strategy: Option<String>,
    /// Only jobs whose subject names this symbol (one of them, for several).
    pub symbol: Option<String>,
    /// Only jobs tagged with this tag.
    pub tag: Option<String>,
    /// Only the children of this job (ascending by id when set).
    pub parent_id: Option<String>,
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

/// A finished job's result: one JSON body and its large parts as rows
/// (`part` name → rows in order), so a page of a part is read from the store
/// without parsing the whole set.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobResult {
    pub body: Value,
    pub parts: Vec<(String, Vec<Value>)>,
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
    /// Where the rows came from: `synthetic` (demo data), `csv`, `import`,
    /// `mixed` (csv and import) or `unknown` (stored before sources were recorded).
    pub source: String,
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
                           error, summary, created_at, started_at, finished_at, parent_id, child_index, \
                           released, waiting, child_cap, child_window, best_value, best_child, \
                           subject, tags";
/// The same columns without the params (a parent's plan can be megabytes; its
/// children's bookkeeping never needs it).
const JOB_HEAD_COLUMNS: &str = "id, kind, status, 'null' AS params, progress, stage, attempts, \
                                cancel_requested, error, summary, created_at, started_at, finished_at, \
                                parent_id, child_index, released, waiting, child_cap, child_window, \
                                best_value, best_child, subject, tags";
/// A listing's columns: the subject instead of the params, which are read
/// only for a job recorded before subjects were (its subject is derived then).
const JOB_LIST_COLUMNS: &str = "id, kind, status, CASE WHEN subject IS NULL THEN params ELSE 'null' END \
                                AS params, progress, stage, attempts, cancel_requested, error, summary, \
                                created_at, started_at, finished_at, parent_id, child_index, released, \
                                waiting, child_cap, child_window, best_value, best_child, subject, tags";
const UPSERT_CHUNK: usize = 3_000;
/// How long a SQLite statement waits for another connection's write lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// The database behind the store. Every statement is written once, in SQL both
/// engines accept (`$n` parameters, `ON CONFLICT`, `IS DISTINCT FROM`), and runs
/// on either through [`on_db!`]; only the candle scans take an engine's fast path.
#[derive(Clone, Debug)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the store's pool, whichever engine it is.
macro_rules! on_db {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.db {
            Db::Sqlite($pool) => $body,
            Db::Postgres($pool) => $body,
        }
    };
}

/// Runs `$body` in a write transaction bound to `$tx`, committed when the body
/// succeeds. On SQLite it is IMMEDIATE: a transaction that reads before it
/// writes cannot upgrade after another process commits (SQLITE_BUSY_SNAPSHOT).
macro_rules! in_tx {
    ($store:expr, $tx:ident => $body:block) => {
        match &$store.db {
            Db::Sqlite(pool) => {
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
            Db::Postgres(pool) => {
                let mut $tx = pool.begin().await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
        }
    };
}

/// SQLite pool options under which a connection whose transaction did not
/// end cleanly is closed instead of pooled. When a statement or the COMMIT
/// fails with SQLITE_FULL (or IOERR), SQLite may already have rolled the
/// transaction back; the ROLLBACK sqlx then issues fails, its transaction depth
/// stays 1, and every later `begin_with` on that connection would fail
/// ("attempted to call begin_with at non-zero transaction depth") long after
/// space is back. The queue's pool uses the same options.
pub fn sqlite_pool_options() -> SqlitePoolOptions {
    SqlitePoolOptions::new().after_release(|conn, _| {
        Box::pin(async move {
            use sqlx::Connection;
            // Runs the ROLLBACK a dropped transaction queued, then looks.
            conn.ping().await?;
            if conn.is_in_transaction() {
                tracing::warn!("closing a store connection left inside a failed transaction");
                return Ok(false);
            }
            Ok(true)
        })
    })
}

/// Free space below which a SQLite store counts as full (see [`Store::probe_write`]).
pub const MIN_FREE_BYTES: u64 = 1 << 20;

/// Bytes available to this process on the file system holding `file`.
fn free_bytes(file: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let dir = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a NUL-terminated path and a statvfs buffer the call fills.
    if unsafe { libc::statvfs(dir.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs succeeded, so it filled the buffer.
    let stat = unsafe { stat.assume_init() };
    // The field types differ between targets (u32 on some 32-bit ones).
    #[allow(clippy::unnecessary_cast)]
    let free = stat.f_bavail as u64 * stat.f_frsize as u64;
    Some(free)
}

/// A `jobs` row as both engines return it.
#[derive(sqlx::FromRow)]
struct JobRow {
    id: String,
    kind: String,
    status: String,
    params: String,
    progress: f64,
    stage: Option<String>,
    attempts: i64,
    cancel_requested: i64,
    error: Option<String>,
    summary: Option<String>,
    created_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    parent_id: Option<String>,
    child_index: Option<i64>,
    released: i64,
    waiting: i64,
    child_cap: Option<i64>,
    child_window: Option<i64>,
    best_value: Option<f64>,
    best_child: Option<i64>,
    subject: Option<String>,
    tags: Option<String>,
}

#[derive(sqlx::FromRow)]
struct SeriesRow {
    exchange: String,
    symbol: String,
    timeframe: String,
    first_ts: i64,
    last_ts: i64,
    row_count: i64,
    last_import_at: Option<i64>,
    gap_count: i64,
    source: String,
}

impl Store {
    /// Opens the store: `database_url` (`sqlite:...` or `postgres://...`) when
    /// given, else `store.db` in `data_dir`; applies migrations either way.
    pub async fn open(data_dir: &Path, database_url: Option<&str>) -> Result<Self> {
        match database_url {
            Some(url) if !url.starts_with("sqlite:") => Self::connect(url).await,
            url => {
                let _init = crate::init_lock(data_dir)
                    .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
                let default = format!("sqlite://{}", data_dir.join("store.db").display());
                Self::connect(url.unwrap_or(&default)).await
            }
        }
    }

    /// Connects to `url` and applies migrations. Postgres migrations take an
    /// advisory lock, so many processes may start against one database at once.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, SQLITE_BUSY_TIMEOUT).await
    }

    /// [`Store::connect`] with a SQLite busy timeout of its own: how long a
    /// statement waits for another connection's write lock before it fails
    /// as busy (Postgres waits for row locks as long as they are held).
    pub async fn connect_with(url: &str, sqlite_busy_timeout: Duration) -> Result<Self> {
        let db = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await?;
            sqlx::migrate!("../migrations/postgres").run(&pool).await?;
            Db::Postgres(pool)
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // A 202 is durable: see `crate::sqlite_synchronous`.
                .synchronous(crate::sqlite_synchronous()?)
                .busy_timeout(sqlite_busy_timeout)
                .foreign_keys(true)
                // Range scans of candles read pages through a memory map instead of
                // copying each one out of the OS cache (about a third faster for a year).
                .pragma("mmap_size", "4294967296");
            let pool = sqlite_pool_options()
                .max_connections(8)
                .connect_with(options)
                .await?;
            sqlx::migrate!("../migrations/sqlite").run(&pool).await?;
            Db::Sqlite(pool)
        } else {
            return Err(StoreError::Database(sqlx::Error::Configuration(
                format!(
                    "unsupported database URL '{}': use sqlite:<path> or postgres://...",
                    redact(url)
                )
                .into(),
            )));
        };
        Ok(Self { db })
    }

    /// `sqlite` or `postgres`.
    pub fn engine(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    pub async fn ping(&self) -> Result<()> {
        on_db!(self, pool => sqlx::query("SELECT 1").execute(pool).await?.rows_affected());
        Ok(())
    }

    // ---- jobs ---------------------------------------------------------------

    /// Inserts a queued job, or returns the job an idempotency key already names.
    pub async fn insert_job(&self, job: NewJob<'_>) -> Result<Inserted> {
        self.insert_tagged_job(job, &[]).await
    }

    /// [`Store::insert_job`] with the submit's tags. The job's subject is
    /// derived from its plan here, and its labels (strategies, symbols, tags)
    /// recorded with it for the listing's filters.
    pub async fn insert_tagged_job(&self, job: NewJob<'_>, tags: &[String]) -> Result<Inserted> {
        let now = now_ms();
        let params = serde_json::to_string(job.params)?;
        let subject = crate::subject::subject_of(job.kind, job.params);
        let mut labels = subject.labels();
        labels.extend(tags.iter().map(|t| ("tag", t.clone())));
        let subject = serde_json::to_string(&subject)?;
        let tags = serde_json::to_string(tags)?;
        // One statement: RETURNING gives the new row, or nothing on a key conflict.
        let sql = format!(
            "INSERT INTO jobs (id, kind, status, params, created_at, updated_at, idempotency_key, \
             subject, tags) VALUES ($1, $2, 'queued', $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (idempotency_key) DO NOTHING RETURNING {JOB_COLUMNS}"
        );
        let created: Option<JobRow> = in_tx!(self, tx => {
            let created: Option<JobRow> = sqlx::query_as(AssertSqlSafe(sql.as_str()))
                .bind(job.id)
                .bind(job.kind)
                .bind(&params)
                .bind(now)
                .bind(now)
                .bind(job.idempotency_key)
                .bind(&subject)
                .bind(&tags)
                .fetch_optional(&mut *tx)
                .await?;
            if created.is_some() && !labels.is_empty() {
                let mut query = QueryBuilder::new("INSERT INTO job_labels (name, value, job_id) ");
                query.push_values(labels.iter(), |mut b, (name, value)| {
                    b.push_bind(*name).push_bind(value.clone()).push_bind(job.id);
                });
                query.push(" ON CONFLICT DO NOTHING");
                query.build().execute(&mut *tx).await?;
            }
            created
        });
        if let Some(row) = created {
            return Ok(Inserted::Created(row.try_into()?));
        }
        let key = job
            .idempotency_key
            .expect("only the idempotency key can conflict");
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE idempotency_key = $1");
        let row: JobRow = on_db!(self, pool => sqlx::query_as(AssertSqlSafe(sql.as_str()))
            .bind(key)
            .fetch_one(pool)
            .await?);
        Ok(Inserted::Existing(row.try_into()?))
    }

    /// Removes a job that never reached the queue (its push failed).
    pub async fn delete_unqueued_job(&self, id: &str) -> Result<()> {
        on_db!(self, pool => sqlx::query("DELETE FROM jobs WHERE id = $1 AND status = 'queued'")
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }

    pub async fn get_job(&self, id: &str) -> Result<Option<JobRecord>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
        let row: Option<JobRow> = on_db!(self, pool => sqlx::query_as(AssertSqlSafe(sql.as_str()))
            .bind(id)
            .fetch_optional(pool)
            .await?);
        row.map(JobRecord::try_from).transpose()
    }

    pub async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>> {
        let rows: Vec<JobRow> = on_db!(self, pool => {
            let mut query =
                QueryBuilder::new(format!("SELECT {JOB_LIST_COLUMNS} FROM jobs WHERE 1 = 1"));
            if let Some(kind) = &filter.kind {
                query.push(" AND kind = ").push_bind(kind.clone());
            }
            for (name, value) in [("strategy", &filter.strategy), ("symbol", &filter.symbol), ("tag", &filter.tag)] {
                if let Some(value) = value {
                    query
                        .push(" AND id IN (SELECT job_id FROM job_labels WHERE name = ")
                        .push_bind(name)
                        .push(" AND value = ")
                        .push_bind(value.clone())
                        .push(")");
                }
            }
            if let Some(parent) = &filter.parent_id {
                query.push(" AND parent_id = ").push_bind(parent.clone());
            }
            if let Some(status) = filter.status {
                query.push(" AND status = ").push_bind(status.as_str());
            }
            // Children page in their order (ascending), other listings newest first.
            let ascending = filter.parent_id.is_some();
            if let Some(before) = &filter.before {
                query.push(if ascending { " AND id > " } else { " AND id < " }).push_bind(before.clone());
            }
            query
                .push(if ascending { " ORDER BY id ASC LIMIT " } else { " ORDER BY id DESC LIMIT " })
                .push_bind(filter.limit);
            query.build_query_as().fetch_all(pool).await?
        });
        rows.into_iter().map(JobRecord::try_from).collect()
    }

    /// Jobs a queue entry should exist for but that have not moved since
    /// `before_ms`, oldest first: queued jobs last touched before then, and running
    /// jobs whose lease ran out before then (their worker is gone, or stalled).
    /// Candidates for re-enqueueing when their queue entry was lost.
    pub async fn stale_jobs(&self, before_ms: i64, limit: i64) -> Result<Vec<JobRecord>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE updated_at < $1 AND released = 1 AND waiting = 0 \
             AND (status = 'queued' OR (status = 'running' AND (lease_expires_at < $1 \
             OR lease_owner IS NULL))) ORDER BY id LIMIT $2"
        );
        let rows: Vec<JobRow> = on_db!(self, pool => sqlx::query_as(AssertSqlSafe(sql.as_str()))
            .bind(before_ms)
            .bind(limit)
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(JobRecord::try_from).collect()
    }

    /// Marks a job as looked at (by the re-enqueue sweep), so it is not
    /// picked again until it is stale once more.
    pub async fn touch_job(&self, id: &str) -> Result<()> {
        on_db!(self, pool => sqlx::query("UPDATE jobs SET updated_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }

    /// Claims a job for `owner`: queued → running, counting the attempt, with a
    /// lease of `lease_ms`. A running job is taken over only when its lease has
    /// expired (its owner is presumed dead).
    pub async fn start_attempt(&self, id: &str, owner: &str, lease_ms: i64) -> Result<Claim> {
        let now = now_ms();
        let done = on_db!(self, pool => sqlx::query(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, \
             started_at = COALESCE(started_at, $1), updated_at = $2, stage = 'starting', \
             lease_owner = $3, lease_expires_at = $4, waiting = 0 \
             WHERE id = $5 AND status IN ('queued', 'running') \
             AND (lease_owner IS NULL OR lease_owner = $6 OR lease_expires_at < $7)",
        )
        .bind(now)
        .bind(now)
        .bind(owner)
        .bind(now + lease_ms)
        .bind(id)
        .bind(owner)
        .bind(now)
        .execute(pool)
        .await?
        .rows_affected());
        let job = self.get_job(id).await?;
        Ok(match job {
            Some(job) if done == 1 => Claim::Claimed(Box::new(job)),
            Some(job) if job.status == JobStatus::Running => Claim::HeldElsewhere,
            _ => Claim::NotRunnable,
        })
    }

    /// Extends `owner`'s lease; false when it no longer holds the job.
    pub async fn renew_lease(&self, id: &str, owner: &str, lease_ms: i64) -> Result<bool> {
        let done = on_db!(self, pool => sqlx::query(
            "UPDATE jobs SET lease_expires_at = $1 WHERE id = $2 AND lease_owner = $3 AND status = 'running'",
        )
        .bind(now_ms() + lease_ms)
        .bind(id)
        .bind(owner)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done == 1)
    }

    /// Gives a running job back: `owner` drops its lease and the job is queued
    /// again (its attempt is not counted), for any worker to claim at once.
    pub async fn release_job(&self, id: &str, owner: &str) -> Result<bool> {
        let done = on_db!(self, pool => sqlx::query(
            "UPDATE jobs SET status = 'queued', attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, \
             lease_owner = NULL, lease_expires_at = NULL, stage = NULL, progress = 0, updated_at = $1 \
             WHERE id = $2 AND lease_owner = $3 AND status = 'running'",
        )
        .bind(now_ms())
        .bind(id)
        .bind(owner)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done == 1)
    }

    pub async fn holds_lease(&self, id: &str, owner: &str) -> Result<bool> {
        let holder: Option<Option<String>> = on_db!(self, pool =>
            sqlx::query_scalar("SELECT lease_owner FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?);
        Ok(holder.flatten().is_none_or(|h| h == owner))
    }

    /// Shows a running job's progress and stage. A store that is busy or
    /// unreachable for a moment (a lock held past the busy timeout, a dropped
    /// connection) is waited out: see [`retry_transient`].
    pub async fn set_progress(&self, id: &str, progress: f64, stage: &str) -> Result<()> {
        retry_transient("writing progress", || async {
            on_db!(self, pool => sqlx::query(
                "UPDATE jobs SET progress = $1, stage = $2, updated_at = $3 WHERE id = $4 AND status = 'running'",
            )
            .bind(progress)
            .bind(stage)
            .bind(now_ms())
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected());
            Ok(())
        })
        .await
    }

    /// Moves a job to a terminal status. A job that is already terminal keeps
    /// its first outcome, so a late worker cannot overwrite a cancellation; with
    /// an `owner`, only the current lease holder may record it.
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
        let succeeded = i64::from(status == JobStatus::Succeeded);
        let error = error.map(serde_json::to_string).transpose()?;
        let summary = summary.map(serde_json::to_string).transpose()?;
        let done = on_db!(self, pool => sqlx::query(
            "UPDATE jobs SET status = $1, error = $2, summary = $3, finished_at = $4, updated_at = $5, \
             stage = NULL, progress = CASE WHEN $6 = 1 THEN 1.0 ELSE progress END \
             WHERE id = $7 AND status IN ('queued', 'running') \
             AND (CAST($8 AS TEXT) IS NULL OR lease_owner = $8)",
        )
        .bind(status.as_str())
        .bind(&error)
        .bind(&summary)
        .bind(now)
        .bind(now)
        .bind(succeeded)
        .bind(id)
        .bind(owner)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done == 1)
    }

    /// Cancels a queued job at once, or flags a running one for its worker.
    pub async fn request_cancel(&self, id: &str) -> Result<Option<CancelOutcome>> {
        let now = now_ms();
        let error = serde_json::to_string(&ErrorBody::new("cancelled", "cancelled by request"))?;
        let queued = on_db!(self, pool => sqlx::query(
            "UPDATE jobs SET status = 'cancelled', finished_at = $1, updated_at = $2, error = $3 \
             WHERE id = $4 AND status = 'queued'",
        )
        .bind(now)
        .bind(now)
        .bind(&error)
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected());
        if queued == 1 {
            return Ok(self.get_job(id).await?.map(CancelOutcome::Cancelled));
        }
        on_db!(self, pool => sqlx::query(
            "UPDATE jobs SET cancel_requested = 1, updated_at = $1 WHERE id = $2 AND status = 'running'",
        )
        .bind(now)
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(self.get_job(id).await?.map(|job| {
            if job.status.is_terminal() {
                CancelOutcome::AlreadyFinished(job)
            } else {
                CancelOutcome::Requested(job)
            }
        }))
    }

    pub async fn cancel_requested(&self, id: &str) -> Result<bool> {
        let flag: Option<i64> = on_db!(self, pool =>
            sqlx::query_scalar("SELECT cancel_requested FROM jobs WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?);
        Ok(flag.unwrap_or(0) != 0)
    }

    // ---- results ------------------------------------------------------------

    /// Stores a job's result, replacing a re-run's (never duplicated).
    pub async fn save_result(&self, job_id: &str, kind: &str, result: &JobResult) -> Result<()> {
        let body = serde_json::to_string(&result.body)?;
        let now = now_ms();
        in_tx!(self, tx => {
            sqlx::query("DELETE FROM job_result_rows WHERE job_id = $1")
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO job_results (job_id, kind, body, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (job_id) DO UPDATE SET kind = excluded.kind, body = excluded.body, \
                 created_at = excluded.created_at",
            )
            .bind(job_id)
            .bind(kind)
            .bind(&body)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            for (part, rows) in &result.parts {
                for (chunk_index, chunk) in rows.chunks(500).enumerate() {
                    let mut query = QueryBuilder::new(
                        "INSERT INTO job_result_rows (job_id, part, seq, body) ",
                    );
                    let mut bodies = Vec::with_capacity(chunk.len());
                    for row in chunk {
                        bodies.push(serde_json::to_string(row)?);
                    }
                    query.push_values(bodies.into_iter().enumerate(), |mut b, (i, row)| {
                        b.push_bind(job_id)
                            .push_bind(part.as_str())
                            .push_bind((chunk_index * 500 + i) as i64)
                            .push_bind(row);
                    });
                    query.build().execute(&mut *tx).await?;
                }
            }
        });
        Ok(())
    }

    /// Merges `patch`'s keys into a stored result's body (e.g. the time the
    /// write took), waiting out a store that is busy for a moment.
    pub async fn patch_result(&self, job_id: &str, key: &str, value: &Value) -> Result<()> {
        retry_transient("patching a result", || async {
            let Some((_, mut body)) = self.result_body(job_id).await? else {
                return Ok(());
            };
            body[key] = value.clone();
            let text = serde_json::to_string(&body)?;
            on_db!(self, pool => sqlx::query("UPDATE job_results SET body = $1 WHERE job_id = $2")
                .bind(&text)
                .bind(job_id)
                .execute(pool)
                .await?
                .rows_affected());
            Ok(())
        })
        .await
    }

    /// A result's kind and body.
    pub async fn result_body(&self, job_id: &str) -> Result<Option<(String, Value)>> {
        let row: Option<(String, String)> = on_db!(self, pool =>
            sqlx::query_as("SELECT kind, body FROM job_results WHERE job_id = $1")
                .bind(job_id)
                .fetch_optional(pool)
                .await?);
        row.map(|(kind, body)| Ok((kind, serde_json::from_str(&body)?)))
            .transpose()
    }

    /// Rows `[offset, offset + limit)` of a result's part, in order.
    pub async fn result_rows(
        &self,
        job_id: &str,
        part: &str,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<Value>> {
        let rows: Vec<String> = on_db!(self, pool => sqlx::query_scalar(
            "SELECT body FROM job_result_rows WHERE job_id = $1 AND part = $2 AND seq >= $3 \
             ORDER BY seq LIMIT $4",
        )
        .bind(job_id)
        .bind(part)
        .bind(offset)
        .bind(limit)
        .fetch_all(pool)
        .await?);
        rows.iter().map(|r| Ok(serde_json::from_str(r)?)).collect()
    }

    /// How many rows a result's part has.
    pub async fn count_result_rows(&self, job_id: &str, part: &str) -> Result<i64> {
        Ok(on_db!(self, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM job_result_rows WHERE job_id = $1 AND part = $2",
        )
        .bind(job_id)
        .bind(part)
        .fetch_one(pool)
        .await?))
    }

    /// How many result rows a job has (0 or 1; re-runs replace, never add).
    pub async fn count_results(&self, job_id: &str) -> Result<i64> {
        Ok(on_db!(self, pool =>
            sqlx::query_scalar("SELECT COUNT(*) FROM job_results WHERE job_id = $1")
                .bind(job_id)
                .fetch_one(pool)
                .await?))
    }

    /// Stores a deep validation report (replacing a re-run's).
    pub async fn save_validation(
        &self,
        job_id: &str,
        strategy: &str,
        sha256: &str,
        report: &Value,
    ) -> Result<()> {
        let valid = i64::from(report["valid"].as_bool().unwrap_or(false));
        let report = serde_json::to_string(report)?;
        on_db!(self, pool => sqlx::query(
            "INSERT INTO strategy_validations (job_id, strategy, sha256, valid, report, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (job_id) DO UPDATE SET valid = excluded.valid, \
             report = excluded.report, created_at = excluded.created_at",
        )
        .bind(job_id)
        .bind(strategy)
        .bind(sha256)
        .bind(valid)
        .bind(&report)
        .bind(now_ms())
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }

    /// The newest deep validation of this exact source: `(job_id, report)`.
    pub async fn latest_validation(
        &self,
        strategy: &str,
        sha256: &str,
    ) -> Result<Option<(String, Value)>> {
        let row: Option<(String, String)> = on_db!(self, pool => sqlx::query_as(
            "SELECT job_id, report FROM strategy_validations WHERE strategy = $1 AND sha256 = $2 \
             ORDER BY created_at DESC LIMIT 1",
        )
        .bind(strategy)
        .bind(sha256)
        .fetch_optional(pool)
        .await?);
        row.map(|(id, report)| Ok((id, serde_json::from_str(&report)?)))
            .transpose()
    }

    // ---- candles ------------------------------------------------------------

    /// Idempotent upsert of 1m candles, counting inserted, changed and unchanged rows.
    ///
    /// Written a chunk per transaction, so a large upload never holds the
    /// store's write lock for its whole length (a chunk that was written stays
    /// written; the upsert is idempotent, so repeating the call completes it).
    /// The counts are exact under concurrent writers of the same series on
    /// both engines: each chunk's rows are counted by the statement that writes
    /// them, and the summary's row count moves by the rows inserted in the same
    /// transaction. Rows are written in timestamp order, so concurrent writers
    /// take row locks in the same order and never deadlock; a timestamp given
    /// twice is written once (the last one given wins), the other counted unchanged.
    ///
    /// `source` is recorded on the series. Synthetic rows never share a series
    /// with others: writing CSV or imported rows into a synthetic series deletes
    /// its rows first ([`Store::replace_synthetic`]); a series written by both
    /// CSV and imports is `mixed`, one stored before sources were recorded stays
    /// `unknown`.
    pub async fn upsert_candles(
        &self,
        exchange: &str,
        symbol: &str,
        source: CandleSource,
        candles: &[Candle],
    ) -> Result<UpsertCounts> {
        // Read first: the write lock is taken only when there is something to replace.
        if source != CandleSource::Synthetic
            && !candles.is_empty()
            && self.series_source(exchange, symbol).await?.as_deref() == Some("synthetic")
        {
            self.replace_synthetic(exchange, symbol).await?;
        }
        let ordered;
        let rows = if candles.windows(2).all(|w| w[0].timestamp < w[1].timestamp) {
            candles
        } else {
            let mut sorted = candles.to_vec();
            sorted.sort_by_key(|c| c.timestamp);
            let mut unique: Vec<Candle> = Vec::with_capacity(sorted.len());
            for candle in sorted {
                match unique.last_mut() {
                    Some(last) if last.timestamp == candle.timestamp => *last = candle,
                    _ => unique.push(candle),
                }
            }
            ordered = unique;
            &ordered[..]
        };
        let mut counts = UpsertCounts {
            unchanged: (candles.len() - rows.len()) as u64,
            ..UpsertCounts::default()
        };
        let mut committed_any = false;
        for chunk in rows.chunks(UPSERT_CHUNK) {
            // Each chunk commits on its own (the write lock is held for one chunk
            // at a time); a failure part-way says what the earlier ones stored.
            let (inserted, affected) = match self
                .upsert_chunk(exchange, symbol, source.as_str(), chunk)
                .await
            {
                Ok(written) => written,
                Err(error) if committed_any => {
                    return Err(StoreError::Partial {
                        committed: counts,
                        error: Box::new(error),
                    });
                }
                Err(error) => return Err(error),
            };
            counts.inserted += inserted;
            counts.updated += affected.saturating_sub(inserted);
            counts.unchanged += (chunk.len() as u64).saturating_sub(affected);
            committed_any = true;
        }
        Ok(counts)
    }

    /// Writes one chunk of ordered, distinct candles and moves the series'
    /// summary, in one transaction: `(inserted, inserted + updated)`.
    async fn upsert_chunk(
        &self,
        exchange: &str,
        symbol: &str,
        source: &str,
        chunk: &[Candle],
    ) -> Result<(u64, u64)> {
        let (Some(first), Some(last)) = (chunk.first(), chunk.last()) else {
            return Ok((0, 0));
        };
        let (lo, hi) = (first.timestamp, last.timestamp);
        // The upsert statement: an unchanged row is left alone (not counted as written).
        macro_rules! upsert {
            () => {{
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
                     WHERE candles.open IS DISTINCT FROM excluded.open \
                     OR candles.close IS DISTINCT FROM excluded.close \
                     OR candles.high IS DISTINCT FROM excluded.high \
                     OR candles.low IS DISTINCT FROM excluded.low \
                     OR candles.volume IS DISTINCT FROM excluded.volume",
                );
                query
            }};
        }
        // A new row's version is the clock (ms), not 1: a series deleted and
        // written again (synthetic rows replaced) never repeats a version a
        // worker's candle cache holds rows under.
        const SUMMARY: &str = "INSERT INTO candle_series (exchange, symbol, timeframe, first_ts, last_ts, row_count, updated_at, source, version) \
             VALUES ($1, $2, '1m', $3, $4, $5, $6, $7, $6) ON CONFLICT (exchange, symbol, timeframe) DO UPDATE SET \
             source = CASE WHEN candle_series.source = excluded.source THEN candle_series.source \
                           WHEN candle_series.source = 'unknown' THEN 'unknown' ELSE 'mixed' END, \
             first_ts = CASE WHEN excluded.first_ts < candle_series.first_ts \
                             THEN excluded.first_ts ELSE candle_series.first_ts END, \
             last_ts = CASE WHEN excluded.last_ts > candle_series.last_ts \
                            THEN excluded.last_ts ELSE candle_series.last_ts END, \
             row_count = candle_series.row_count + excluded.row_count, \
             version = candle_series.version + 1, updated_at = excluded.updated_at";
        match &self.db {
            Db::Sqlite(pool) => {
                // BEGIN IMMEDIATE serialises writers, so the rows counted before and
                // after the statement differ by exactly the rows it inserted.
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let count_range = "SELECT COUNT(*) FROM candles WHERE exchange = $1 AND symbol = $2 \
                                   AND timeframe = '1m' AND timestamp BETWEEN $3 AND $4";
                let before: i64 = sqlx::query_scalar(count_range)
                    .bind(exchange)
                    .bind(symbol)
                    .bind(lo)
                    .bind(hi)
                    .fetch_one(&mut *tx)
                    .await?;
                let affected = upsert!().build().execute(&mut *tx).await?.rows_affected();
                let after: i64 = sqlx::query_scalar(count_range)
                    .bind(exchange)
                    .bind(symbol)
                    .bind(lo)
                    .bind(hi)
                    .fetch_one(&mut *tx)
                    .await?;
                let inserted = u64::try_from(after - before).unwrap_or(0);
                sqlx::query(SUMMARY)
                    .bind(exchange)
                    .bind(symbol)
                    .bind(lo)
                    .bind(hi)
                    .bind(inserted as i64)
                    .bind(now_ms())
                    .bind(source)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok((inserted, affected))
            }
            Db::Postgres(pool) => {
                // Under READ COMMITTED other writers commit between any two
                // statements, so the rows are counted by the upsert itself: a row
                // it inserted has no xmax, a row it updated has this transaction's.
                let mut tx = pool.begin().await?;
                let mut query = upsert!();
                query.push(" RETURNING (xmax = 0)");
                let written: Vec<bool> = query.build_query_scalar().fetch_all(&mut *tx).await?;
                let inserted = written.iter().filter(|fresh| **fresh).count() as u64;
                sqlx::query(SUMMARY)
                    .bind(exchange)
                    .bind(symbol)
                    .bind(lo)
                    .bind(hi)
                    .bind(inserted as i64)
                    .bind(now_ms())
                    .bind(source)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok((inserted, written.len() as u64))
            }
        }
    }

    /// Deletes the series if its rows are synthetic (the demo seeder's), so real
    /// rows written next never mix with them; returns the rows deleted.
    pub async fn replace_synthetic(&self, exchange: &str, symbol: &str) -> Result<u64> {
        let removed = in_tx!(self, tx => {
            // The summary row first, on its condition: on Postgres the DELETE
            // locks the row and re-checks `source` after a concurrent writer
            // commits, so only one writer ever deletes, and never a summary a
            // real write already re-created.
            let deleted = sqlx::query(
                "DELETE FROM candle_series WHERE exchange = $1 AND symbol = $2 \
                 AND timeframe = '1m' AND source = 'synthetic'",
            )
            .bind(exchange)
            .bind(symbol)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if deleted == 1 {
                sqlx::query(
                    "DELETE FROM candles WHERE exchange = $1 AND symbol = $2 AND timeframe = '1m'",
                )
                .bind(exchange)
                .bind(symbol)
                .execute(&mut *tx)
                .await?
                .rows_affected()
            } else {
                0
            }
        });
        Ok(removed)
    }

    /// The series' source (see [`SeriesSummary::source`]); None if not stored.
    pub async fn series_source(&self, exchange: &str, symbol: &str) -> Result<Option<String>> {
        Ok(on_db!(self, pool => sqlx::query_scalar(
            "SELECT source FROM candle_series WHERE exchange = $1 AND symbol = $2 AND timeframe = '1m'",
        )
        .bind(exchange)
        .bind(symbol)
        .fetch_optional(pool)
        .await?))
    }

    /// Relabels a series whose source was `unknown` (stored before sources were
    /// recorded) once its origin is established; true if it was relabelled.
    pub async fn settle_unknown_source(
        &self,
        exchange: &str,
        symbol: &str,
        source: CandleSource,
    ) -> Result<bool> {
        let changed = on_db!(self, pool => sqlx::query(
            "UPDATE candle_series SET source = $1 \
             WHERE exchange = $2 AND symbol = $3 AND timeframe = '1m' AND source = 'unknown'",
        )
        .bind(source.as_str())
        .bind(exchange)
        .bind(symbol)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(changed == 1)
    }

    /// Recounts the series' gaps between its first and last row into the summary.
    pub async fn refresh_gap_count(&self, exchange: &str, symbol: &str) -> Result<i64> {
        let Some((first, last, rows)) = self.series_bounds(exchange, symbol).await? else {
            return Ok(0);
        };
        let count = if rows == (last - first) / MINUTE_MS + 1 {
            0
        } else {
            self.gaps(exchange, symbol, first, last + MINUTE_MS)
                .await?
                .len() as i64
        };
        on_db!(self, pool => sqlx::query(
            "UPDATE candle_series SET gap_count = $1 WHERE exchange = $2 AND symbol = $3 AND timeframe = '1m'",
        )
        .bind(count)
        .bind(exchange)
        .bind(symbol)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(count)
    }

    /// `(first, last, rows)` of a series, from its summary row.
    pub async fn series_bounds(
        &self,
        exchange: &str,
        symbol: &str,
    ) -> Result<Option<(i64, i64, i64)>> {
        Ok(on_db!(self, pool => sqlx::query_as(
            "SELECT first_ts, last_ts, row_count FROM candle_series \
             WHERE exchange = $1 AND symbol = $2 AND timeframe = '1m'",
        )
        .bind(exchange)
        .bind(symbol)
        .fetch_optional(pool)
        .await?))
    }

    /// Records that an import of the series just finished.
    pub async fn mark_imported(&self, exchange: &str, symbol: &str) -> Result<()> {
        on_db!(self, pool => sqlx::query(
            "UPDATE candle_series SET last_import_at = $1 WHERE exchange = $2 AND symbol = $3 AND timeframe = '1m'",
        )
        .bind(now_ms())
        .bind(exchange)
        .bind(symbol)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }

    // ---- metrics ------------------------------------------------------------

    pub async fn add_to_counter(&self, name: &str, delta: i64) -> Result<()> {
        on_db!(self, pool => sqlx::query(
            "INSERT INTO counters (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value",
        )
        .bind(name)
        .bind(delta)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }

    /// Writes (and commits) one small row: fails when the store cannot take
    /// writes (a full disk: SQLITE_FULL, disk_full), which a read never shows.
    /// On SQLite, a disk with less than [`MIN_FREE_BYTES`] free also fails the
    /// probe: a small write may still fit (in the write-ahead log's space)
    /// while a chunk of candles or a result no longer does.
    pub async fn probe_write(&self) -> Result<()> {
        if let Db::Sqlite(pool) = &self.db
            && let Some(free) = free_bytes(pool.connect_options().get_filename())
            && free < MIN_FREE_BYTES
        {
            return Err(StoreError::Database(sqlx::Error::Io(
                std::io::ErrorKind::StorageFull.into(),
            )));
        }
        on_db!(self, pool => sqlx::query(
            "INSERT INTO counters (name, value) VALUES ('store_write_probe', $1) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(now_ms())
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }

    pub async fn counters(&self) -> Result<Vec<(String, i64)>> {
        Ok(on_db!(self, pool =>
            sqlx::query_as("SELECT name, value FROM counters ORDER BY name")
                .fetch_all(pool)
                .await?))
    }

    /// `(kind, status, count)` over all jobs.
    pub async fn job_counts(&self) -> Result<Vec<(String, String, i64)>> {
        Ok(on_db!(self, pool => sqlx::query_as(
            "SELECT kind, status, COUNT(*) FROM jobs GROUP BY kind, status ORDER BY kind, status",
        )
        .fetch_all(pool)
        .await?))
    }

    /// `(kind, seconds)` of every finished job that ran.
    pub async fn job_durations(&self) -> Result<Vec<(String, f64)>> {
        Ok(on_db!(self, pool => sqlx::query_as(
            "SELECT kind, CAST(finished_at - started_at AS DOUBLE PRECISION) / 1000.0 FROM jobs \
             WHERE finished_at IS NOT NULL AND started_at IS NOT NULL",
        )
        .fetch_all(pool)
        .await?))
    }

    // ---- schedules ----------------------------------------------------------

    pub async fn list_schedules(&self) -> Result<Vec<ScheduleRecord>> {
        Ok(on_db!(self, pool => sqlx::query_as(
            "SELECT exchange, symbol, cron, start_date, created_at, last_fired_at FROM schedules \
             ORDER BY exchange, symbol",
        )
        .fetch_all(pool)
        .await?))
    }

    /// Replaces the whole schedule list; series kept keep their creation time
    /// and last tick. One transaction of upserts and a delete of the series no
    /// longer listed, serialised against other replacements (SQLite's write
    /// lock; a table lock on Postgres, which readers pass), so concurrent
    /// replacements each succeed and the list ends as the last one left it.
    pub async fn replace_schedules(&self, schedules: &[ScheduleRecord]) -> Result<()> {
        let postgres = matches!(self.db, Db::Postgres(_));
        in_tx!(self, tx => {
            if postgres {
                sqlx::query("LOCK TABLE schedules IN SHARE ROW EXCLUSIVE MODE")
                    .execute(&mut *tx)
                    .await?;
            }
            let mut drop = QueryBuilder::new("DELETE FROM schedules");
            if !schedules.is_empty() {
                drop.push(" WHERE (exchange, symbol) NOT IN (");
                let mut list = drop.separated(", ");
                for schedule in schedules {
                    list.push("(")
                        .push_bind_unseparated(&schedule.exchange)
                        .push_unseparated(", ")
                        .push_bind_unseparated(&schedule.symbol)
                        .push_unseparated(")");
                }
                drop.push(")");
            }
            drop.build().execute(&mut *tx).await?;
            for schedule in schedules {
                sqlx::query(
                    "INSERT INTO schedules (exchange, symbol, cron, start_date, created_at, last_fired_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (exchange, symbol) DO UPDATE SET \
                     cron = excluded.cron, start_date = excluded.start_date",
                )
                .bind(&schedule.exchange)
                .bind(&schedule.symbol)
                .bind(&schedule.cron)
                .bind(&schedule.start_date)
                .bind(schedule.created_at)
                .bind(schedule.last_fired_at)
                .execute(&mut *tx)
                .await?;
            }
        });
        Ok(())
    }

    pub async fn mark_fired(&self, exchange: &str, symbol: &str, at: i64) -> Result<()> {
        on_db!(self, pool => sqlx::query(
            "UPDATE schedules SET last_fired_at = $1 WHERE exchange = $2 AND symbol = $3",
        )
        .bind(at)
        .bind(exchange)
        .bind(symbol)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }

    /// Takes or renews a named lease for `ttl_ms`; true if `holder` now holds it.
    pub async fn try_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool> {
        let now = now_ms();
        let done = on_db!(self, pool => sqlx::query(
            "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE SET \
             holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.holder = excluded.holder OR leases.expires_at < $4",
        )
        .bind(name)
        .bind(holder)
        .bind(now + ttl_ms)
        .bind(now)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done == 1)
    }

    /// Deletes a series (all its 1m rows and its summary); returns the rows removed.
    pub async fn delete_series(&self, exchange: &str, symbol: &str) -> Result<u64> {
        let removed = in_tx!(self, tx => {
            let removed = sqlx::query(
                "DELETE FROM candles WHERE exchange = $1 AND symbol = $2 AND timeframe = '1m'",
            )
            .bind(exchange)
            .bind(symbol)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query(
                "DELETE FROM candle_series WHERE exchange = $1 AND symbol = $2 AND timeframe = '1m'",
            )
            .bind(exchange)
            .bind(symbol)
            .execute(&mut *tx)
            .await?;
            removed
        });
        Ok(removed)
    }

    /// Stored series, answered from the summary table (never scans candles).
    pub async fn list_series(&self) -> Result<Vec<SeriesSummary>> {
        let rows: Vec<SeriesRow> = on_db!(self, pool => sqlx::query_as(
            "SELECT exchange, symbol, timeframe, first_ts, last_ts, row_count, last_import_at, gap_count, source \
             FROM candle_series ORDER BY exchange, symbol, timeframe",
        )
        .fetch_all(pool)
        .await?);
        Ok(rows
            .into_iter()
            .map(|row| SeriesSummary {
                exchange: row.exchange,
                symbol: row.symbol,
                timeframe: row.timeframe,
                first: row.first_ts,
                last: row.last_ts,
                rows: row.row_count,
                last_import_at: row.last_import_at,
                gaps: row.gap_count,
                source: row.source,
            })
            .collect())
    }

    /// The series' write counter: changes whenever any of its rows change.
    pub async fn series_version(&self, exchange: &str, symbol: &str) -> Result<Option<i64>> {
        Ok(on_db!(self, pool => sqlx::query_scalar(
            "SELECT version FROM candle_series WHERE exchange = $1 AND symbol = $2 AND timeframe = '1m'",
        )
        .bind(exchange)
        .bind(symbol)
        .fetch_optional(pool)
        .await?))
    }

    pub async fn count_candles(
        &self,
        exchange: &str,
        symbol: &str,
        start: i64,
        end: i64,
    ) -> Result<i64> {
        Ok(on_db!(self, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM candles WHERE exchange = $1 AND symbol = $2 AND timeframe = '1m' \
             AND timestamp >= $3 AND timestamp < $4",
        )
        .bind(exchange)
        .bind(symbol)
        .bind(start)
        .bind(end)
        .fetch_one(pool)
        .await?))
    }

    /// The first `limit` rows of `[start, end)` of a series, in order: a page
    /// of an export (the next page starts a minute after the last row).
    pub async fn candle_page(
        &self,
        exchange: &str,
        symbol: &str,
        start: i64,
        end: i64,
        limit: usize,
    ) -> Result<Vec<Candle>> {
        type Row = (i64, f64, f64, f64, f64, f64);
        let rows: Vec<Row> = on_db!(self, pool => sqlx::query_as(
            "SELECT timestamp, open, close, high, low, volume FROM candles WHERE exchange = $1 \
             AND symbol = $2 AND timeframe = '1m' AND timestamp >= $3 AND timestamp < $4 \
             ORDER BY timestamp LIMIT $5",
        )
        .bind(exchange)
        .bind(symbol)
        .bind(start)
        .bind(end)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await?);
        Ok(rows
            .into_iter()
            .map(|(timestamp, open, close, high, low, volume)| Candle {
                timestamp,
                open,
                close,
                high,
                low,
                volume,
            })
            .collect())
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
        if let Some((first, last, rows)) = self.series_bounds(exchange, symbol).await?
            && rows == (last - first) / MINUTE_MS + 1
            && first <= start
            && end - MINUTE_MS <= last
        {
            return Ok(Vec::new());
        }
        // Otherwise one ordered scan of the timestamps (primary-key order); a year
        // takes tens of milliseconds, unlike a window query.
        let mut scan = GapScan::new(start);
        match &self.db {
            Db::Sqlite(pool) => {
                let mut conn = pool.acquire().await?;
                let mut handle = conn.lock_handle().await?;
                let db = handle.as_raw_handle().as_ptr();
                blocking(|| raw::timestamps(db, exchange, symbol, start, end, |ts| scan.push(ts)))
                    .map_err(|message| StoreError::Database(sqlx::Error::Protocol(message)))?;
            }
            Db::Postgres(pool) => {
                let sql = pg::range_copy("timestamp::float8", exchange, symbol, start, end);
                let mut conn = pool.acquire().await?;
                pg::copy_rows(&mut conn, &sql, 1, |fields| scan.push(fields[0] as i64)).await?;
            }
        }
        Ok(scan.finish(end))
    }

    /// Loads `[start, end)` of a series as a flat row-major `[N × 6]` buffer in
    /// Jesse's column order, ready to become a numpy array without conversion.
    ///
    /// This is the hot path of every backtest (a year is 525,600 rows), so it
    /// bypasses sqlx's per-row decoding: on SQLite it steps a prepared statement
    /// on the raw connection, on Postgres it reads a binary COPY.
    pub async fn load_candles(
        &self,
        exchange: &str,
        symbol: &str,
        start: i64,
        end: i64,
    ) -> Result<Vec<f64>> {
        // Room for the rows the range can hold, but never more than the series
        // has: a range of centuries over a few rows reserves a few rows.
        let minutes = (end.saturating_sub(start) / MINUTE_MS).max(0);
        let stored = match self.series_bounds(exchange, symbol).await? {
            Some((_, _, rows)) => rows.max(0),
            None => 0,
        };
        let mut out = Vec::with_capacity(usize::try_from(minutes.min(stored)).unwrap_or(0) * 6);
        match &self.db {
            Db::Sqlite(pool) => {
                let mut conn = pool.acquire().await?;
                let mut handle = conn.lock_handle().await?;
                let db = handle.as_raw_handle().as_ptr();
                blocking(|| raw::load_candles(db, exchange, symbol, start, end, &mut out))
                    .map_err(|message| StoreError::Database(sqlx::Error::Protocol(message)))?;
            }
            Db::Postgres(pool) => {
                let sql = pg::range_copy(
                    "timestamp::float8, open, close, high, low, volume",
                    exchange,
                    symbol,
                    start,
                    end,
                );
                let mut conn = pool.acquire().await?;
                pg::copy_rows(&mut conn, &sql, 6, |fields| out.extend_from_slice(fields)).await?;
            }
        }
        Ok(out)
    }
}

/// How long a running job's bookkeeping writes (progress, stage, timings)
/// keep retrying a store that is busy or unreachable before giving up.
pub const TRANSIENT_RETRY_FOR: Duration = Duration::from_secs(60);

/// Whether a store error is a moment's trouble rather than a fault of the
/// statement: SQLite busy or locked (a writer held the lock past the busy
/// timeout), a Postgres deadlock, serialisation failure, lock timeout, server
/// restart or connection failure, or a pool with no free connection.
pub fn is_transient(error: &StoreError) -> bool {
    let StoreError::Database(error) = error else {
        return false;
    };
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => {
            let Some(code) = db.code() else {
                return false;
            };
            if let Ok(sqlite) = code.parse::<i32>() {
                // Extended result codes keep the primary code in the low byte.
                return matches!(sqlite & 0xff, 5 | 6); // SQLITE_BUSY, SQLITE_LOCKED
            }
            matches!(
                code.as_ref(),
                "40001" | "40P01" | "55P03" | "57P01" | "57P02" | "57P03" | "53300"
            ) || code.starts_with("08")
        }
        _ => false,
    }
}

/// Runs `op` again while it fails with a transient error (see [`is_transient`]),
/// with a short doubling backoff, for up to [`TRANSIENT_RETRY_FOR`]; any
/// other error, or the last transient one, is returned.
pub async fn retry_transient<T, F, Fut>(what: &str, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let deadline = std::time::Instant::now() + TRANSIENT_RETRY_FOR;
    let mut delay = Duration::from_millis(50);
    loop {
        match op().await {
            Err(e) if is_transient(&e) && std::time::Instant::now() + delay < deadline => {
                tracing::warn!(error = %e, "{what}: the store is busy; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// Runs a blocking scan without stalling other tasks of a multi-threaded runtime.
fn blocking<T>(scan: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(scan),
        _ => scan(),
    }
}

/// Turns an ordered run of present minutes into half-open runs of missing ones.
struct GapScan {
    expected: i64,
    gaps: Vec<Gap>,
}

impl GapScan {
    fn new(start: i64) -> Self {
        Self {
            expected: start,
            gaps: Vec::new(),
        }
    }

    fn push(&mut self, ts: i64) {
        self.missing_until(ts);
        self.expected = ts + MINUTE_MS;
    }

    fn missing_until(&mut self, to: i64) {
        if to > self.expected {
            self.gaps.push(Gap {
                start: self.expected,
                end: to,
                minutes: (to - self.expected) / MINUTE_MS,
            });
        }
    }

    fn finish(mut self, end: i64) -> Vec<Gap> {
        self.missing_until(end);
        self.gaps
    }
}

/// Hides the password of a database URL for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// Parent and child jobs, and the fleet's workers.
impl Store {
    /// Records a parent's children, held back until the parent releases them.
    /// Idempotent per (parent, index): a parent resumed after a crash never
    /// creates a child twice. Returns how many rows were new.
    pub async fn insert_children(
        &self,
        parent_id: &str,
        kind: &str,
        children: &[NewChild],
    ) -> Result<u64> {
        let now = now_ms();
        let mut inserted = 0;
        // A child whose plan names nothing (a study's trial) shows its parent's subject.
        let mut inherited: Option<crate::subject::JobSubject> = None;
        for chunk in children.chunks(200) {
            let mut rows = Vec::with_capacity(chunk.len());
            let mut labels: Vec<(String, &'static str, String)> = Vec::new();
            for child in chunk {
                let mut subject = crate::subject::subject_of(kind, &child.params);
                if subject.is_empty() {
                    if inherited.is_none() {
                        inherited = Some(self.parent_subject(parent_id).await?);
                    }
                    subject = inherited.clone().unwrap_or_default();
                }
                labels.extend(
                    subject
                        .labels()
                        .into_iter()
                        .map(|(name, value)| (child.id.clone(), name, value)),
                );
                rows.push((
                    child,
                    serde_json::to_string(&child.params)?,
                    format!("{parent_id}:{}", child.index),
                    serde_json::to_string(&subject)?,
                ));
            }
            inserted += in_tx!(self, tx => {
                let mut query = QueryBuilder::new(
                    "INSERT INTO jobs (id, kind, status, params, created_at, updated_at, \
                     idempotency_key, parent_id, child_index, released, subject, tags) ",
                );
                query.push_values(rows.iter(), |mut b, (child, params, key, subject)| {
                    b.push_bind(child.id.clone())
                        .push_bind(kind)
                        .push_bind("queued")
                        .push_bind(params.clone())
                        .push_bind(now)
                        .push_bind(now)
                        .push_bind(key.clone())
                        .push_bind(parent_id)
                        .push_bind(child.index)
                        .push_bind(0i64)
                        .push_bind(subject.clone())
                        .push_bind("[]");
                });
                query.push(" ON CONFLICT (idempotency_key) DO NOTHING RETURNING id");
                let created: Vec<String> = query.build_query_scalar().fetch_all(&mut *tx).await?;
                // Labels of the rows this call created (a resumed parent's earlier
                // children keep theirs).
                let fresh: Vec<&(String, &'static str, String)> =
                    labels.iter().filter(|(id, _, _)| created.contains(id)).collect();
                for part in fresh.chunks(1000) {
                    let mut query = QueryBuilder::new("INSERT INTO job_labels (name, value, job_id) ");
                    query.push_values(part.iter(), |mut b, (id, name, value)| {
                        b.push_bind(*name).push_bind(value.clone()).push_bind(id.clone());
                    });
                    query.push(" ON CONFLICT DO NOTHING");
                    query.build().execute(&mut *tx).await?;
                }
                created.len() as u64
            });
        }
        Ok(inserted)
    }

    /// A parent's subject as its children inherit it.
    async fn parent_subject(&self, parent_id: &str) -> Result<crate::subject::JobSubject> {
        let subject: Option<Option<String>> = on_db!(self, pool =>
            sqlx::query_scalar("SELECT subject FROM jobs WHERE id = $1")
                .bind(parent_id)
                .fetch_optional(pool)
                .await?);
        Ok(match subject.flatten() {
            Some(text) => serde_json::from_str::<crate::subject::JobSubject>(&text)?.inherited(),
            None => crate::subject::JobSubject::default(),
        })
    }

    /// Lets the next held-back children of a running parent go, keeping at most
    /// `cap` of them queued or running; returns the ids released (in order).
    /// Serialised per parent (the parent's row is locked first), so concurrent
    /// callers never exceed the cap. A parent that is not running releases none.
    pub async fn release_children(
        &self,
        parent_id: &str,
        cap: i64,
        window: Option<i64>,
    ) -> Result<Vec<(String, String)>> {
        let now = now_ms();
        let released = in_tx!(self, tx => {
            let running = sqlx::query(
                "UPDATE jobs SET updated_at = updated_at WHERE id = $1 AND status = 'running'",
            )
            .bind(parent_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if running == 0 {
                Vec::new()
            } else {
                let in_flight: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM jobs WHERE parent_id = $1 AND released = 1 \
                     AND status IN ('queued', 'running')",
                )
                .bind(parent_id)
                .fetch_one(&mut *tx)
                .await?;
                let room = cap - in_flight;
                // With a window, nothing past the first open child + window.
                let below = match window {
                    Some(window) => {
                        let first_open: Option<i64> = sqlx::query_scalar(
                            "SELECT MIN(child_index) FROM jobs WHERE parent_id = $1 \
                             AND status IN ('queued', 'running')",
                        )
                        .bind(parent_id)
                        .fetch_one(&mut *tx)
                        .await?;
                        first_open.unwrap_or(0).saturating_add(window.max(1))
                    }
                    None => i64::MAX,
                };
                if room <= 0 {
                    Vec::new()
                } else {
                    let ids: Vec<(String, String)> = sqlx::query_as(
                        "SELECT id, kind FROM jobs WHERE parent_id = $1 AND released = 0 AND status = 'queued' \
                         AND child_index < $2 ORDER BY id LIMIT $3",
                    )
                    .bind(parent_id)
                    .bind(below)
                    .bind(room)
                    .fetch_all(&mut *tx)
                    .await?;
                    for chunk in ids.chunks(200) {
                        let mut query = QueryBuilder::new("UPDATE jobs SET released = 1, updated_at = ");
                        query.push_bind(now).push(" WHERE id IN (");
                        let mut list = query.separated(", ");
                        for (id, _) in chunk {
                            list.push_bind(id.clone());
                        }
                        query.push(")");
                        query.build().execute(&mut *tx).await?;
                    }
                    ids
                }
            }
        });
        Ok(released)
    }

    /// How a parent's children stand.
    pub async fn child_counts(&self, parent_id: &str) -> Result<ChildCounts> {
        let rows: Vec<(String, i64, i64, Option<i64>)> = on_db!(self, pool => sqlx::query_as(
            "SELECT status, released, COUNT(*), \
             CAST(SUM(CASE WHEN finished_at IS NOT NULL AND started_at IS NOT NULL \
                  THEN finished_at - started_at ELSE 0 END) AS BIGINT) \
             FROM jobs WHERE parent_id = $1 GROUP BY status, released",
        )
        .bind(parent_id)
        .fetch_all(pool)
        .await?);
        let mut counts = ChildCounts::default();
        for (status, released, n, busy) in rows {
            counts.total += n;
            counts.busy_ms += busy.unwrap_or(0);
            match status.as_str() {
                "queued" => counts.queued += n,
                "running" => counts.running += n,
                "succeeded" => counts.succeeded += n,
                "failed" => counts.failed += n,
                _ => counts.cancelled += n,
            }
            if released != 0 && matches!(status.as_str(), "queued" | "running") {
                counts.in_flight += n;
            }
        }
        Ok(counts)
    }

    /// Cancels a parent's queued children at once and flags its running ones
    /// for their workers; returns the ids of released children it cancelled
    /// (their queue tasks can be withdrawn).
    pub async fn cancel_children(&self, parent_id: &str, error: &ErrorBody) -> Result<Vec<String>> {
        self.cancel_children_after(parent_id, -1, error).await
    }

    /// [`Store::cancel_children`] for the children placed after `after_index`
    /// only (a study that stopped early drops the trials past its stop).
    pub async fn cancel_children_after(
        &self,
        parent_id: &str,
        after_index: i64,
        error: &ErrorBody,
    ) -> Result<Vec<String>> {
        let now = now_ms();
        let error = serde_json::to_string(error)?;
        let ids = in_tx!(self, tx => {
            let ids: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM jobs WHERE parent_id = $1 AND status = 'queued' AND released = 1 \
                 AND child_index > $2",
            )
            .bind(parent_id)
            .bind(after_index)
            .fetch_all(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE jobs SET status = 'cancelled', finished_at = $1, updated_at = $2, error = $3 \
                 WHERE parent_id = $4 AND status = 'queued' AND child_index > $5",
            )
            .bind(now)
            .bind(now)
            .bind(&error)
            .bind(parent_id)
            .bind(after_index)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE jobs SET cancel_requested = 1, updated_at = $1 \
                 WHERE parent_id = $2 AND status = 'running' AND child_index > $3",
            )
            .bind(now)
            .bind(parent_id)
            .bind(after_index)
            .execute(&mut *tx)
            .await?;
            ids
        });
        Ok(ids)
    }

    /// A claimed parent starts waiting on its children: it keeps its status
    /// (running) and gives up its lease, so it holds no worker meanwhile.
    pub async fn set_waiting(&self, id: &str, owner: &str) -> Result<bool> {
        let done = on_db!(self, pool => sqlx::query(
            "UPDATE jobs SET waiting = 1, lease_owner = NULL, lease_expires_at = NULL, updated_at = $1 \
             WHERE id = $2 AND lease_owner = $3 AND status = 'running'",
        )
        .bind(now_ms())
        .bind(id)
        .bind(owner)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done == 1)
    }

    /// Records how many of a parent's children had ended when it last looked:
    /// a parent woken per ended child is woken again only for a newer end.
    pub async fn set_children_seen(&self, id: &str, seen: i64) -> Result<()> {
        on_db!(self, pool => sqlx::query("UPDATE jobs SET children_seen = $1 WHERE id = $2")
            .bind(seen)
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }

    /// What [`Store::set_children_seen`] recorded (0 before it ever did).
    pub async fn children_seen(&self, id: &str) -> Result<i64> {
        let seen: Option<Option<i64>> = on_db!(self, pool => sqlx::query_scalar(
            "SELECT children_seen FROM jobs WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(pool)
        .await?);
        Ok(seen.flatten().unwrap_or(0))
    }

    /// Takes a waiting parent out of waiting so it can be run again (to combine
    /// its children's results); true for exactly one caller. The run that
    /// follows is a continuation, not a retry: it does not count as an attempt,
    /// so a parent is never given up for having waited.
    pub async fn wake(&self, id: &str) -> Result<bool> {
        let done = on_db!(self, pool => sqlx::query(
            "UPDATE jobs SET waiting = 0, updated_at = $1, \
             attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END \
             WHERE id = $2 AND waiting = 1 AND status = 'running'",
        )
        .bind(now_ms())
        .bind(id)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(done == 1)
    }

    /// Waiting parents nothing has touched since `before_ms`, oldest first: the
    /// sweep checks them in case the advance after a child's end was lost.
    pub async fn stale_waiting(&self, before_ms: i64, limit: i64) -> Result<Vec<JobRecord>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE waiting = 1 AND status = 'running' \
             AND updated_at < $1 ORDER BY updated_at LIMIT $2"
        );
        let rows: Vec<JobRow> = on_db!(self, pool => sqlx::query_as(AssertSqlSafe(sql.as_str()))
            .bind(before_ms)
            .bind(limit)
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(JobRecord::try_from).collect()
    }

    /// A job without its params (see `JOB_HEAD_COLUMNS`).
    pub async fn get_job_head(&self, id: &str) -> Result<Option<JobRecord>> {
        let sql = format!("SELECT {JOB_HEAD_COLUMNS} FROM jobs WHERE id = $1");
        let row: Option<JobRow> = on_db!(self, pool => sqlx::query_as(AssertSqlSafe(sql.as_str()))
            .bind(id)
            .fetch_optional(pool)
            .await?);
        row.map(JobRecord::try_from).transpose()
    }

    /// Sets a parent's in-flight cap (None: the fleet's runners) and release
    /// window (None: none).
    pub async fn set_child_cap(
        &self,
        id: &str,
        cap: Option<i64>,
        window: Option<i64>,
    ) -> Result<()> {
        on_db!(self, pool => sqlx::query("UPDATE jobs SET child_cap = $1, child_window = $2 WHERE id = $3")
            .bind(cap)
            .bind(window)
            .bind(id)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }

    /// Keeps strategy sources by their sha256 (idempotent).
    pub async fn put_sources(&self, sources: &[crate::jobs::StrategySource]) -> Result<()> {
        for source in sources {
            on_db!(self, pool => sqlx::query(
                "INSERT INTO strategy_sources (sha256, name, source) VALUES ($1, $2, $3) \
                 ON CONFLICT (sha256) DO NOTHING",
            )
            .bind(&source.sha256)
            .bind(&source.name)
            .bind(&source.source)
            .execute(pool)
            .await?
            .rows_affected());
        }
        Ok(())
    }

    /// A source kept by `put_sources`.
    pub async fn get_source(&self, sha256: &str) -> Result<Option<crate::jobs::StrategySource>> {
        let row: Option<(String, String, String)> = on_db!(self, pool => sqlx::query_as(
            "SELECT name, sha256, source FROM strategy_sources WHERE sha256 = $1",
        )
        .bind(sha256)
        .fetch_optional(pool)
        .await?);
        Ok(
            row.map(|(name, sha256, source)| crate::jobs::StrategySource {
                name,
                sha256,
                source,
            }),
        )
    }

    /// A page of a parent's children with their result bodies, by index.
    /// The children after `after_index`, `page` at a time (see [`ChildPages`]).
    pub fn child_pages<'a>(
        &'a self,
        parent_id: &'a str,
        after_index: i64,
        page: i64,
    ) -> ChildPages<'a> {
        ChildPages {
            store: self,
            parent_id,
            after: after_index,
            page,
        }
    }

    pub async fn child_results(
        &self,
        parent_id: &str,
        after_index: i64,
        limit: i64,
    ) -> Result<Vec<ChildResult>> {
        type Row = (String, i64, String, Option<String>, Option<String>);
        let rows: Vec<Row> = on_db!(self, pool => sqlx::query_as(
            "SELECT j.id, j.child_index, j.status, j.error, r.body FROM jobs j \
             LEFT JOIN job_results r ON r.job_id = j.id \
             WHERE j.parent_id = $1 AND j.child_index > $2 ORDER BY j.child_index LIMIT $3",
        )
        .bind(parent_id)
        .bind(after_index)
        .bind(limit)
        .fetch_all(pool)
        .await?);
        rows.into_iter()
            .map(|(id, index, status, error, body)| {
                Ok(ChildResult {
                    id,
                    index,
                    status: JobStatus::parse(&status).unwrap_or(JobStatus::Failed),
                    error: error.map(|e| serde_json::from_str(&e)).transpose()?,
                    body: body.map(|b| serde_json::from_str(&b)).transpose()?,
                })
            })
            .collect()
    }

    /// Raises a parent's best-so-far to `value` (reached by child `index`) if
    /// it is better in `direction` (maximize when true), atomically: trials
    /// ending at once on many workers keep the true best.
    pub async fn offer_best(
        &self,
        parent_id: &str,
        value: f64,
        index: i64,
        maximize: bool,
    ) -> Result<()> {
        if !value.is_finite() {
            return Ok(());
        }
        let sql = if maximize {
            "UPDATE jobs SET best_value = $1, best_child = $2 WHERE id = $3 \
             AND (best_value IS NULL OR best_value < $1 OR (best_value = $1 AND best_child > $2))"
        } else {
            "UPDATE jobs SET best_value = $1, best_child = $2 WHERE id = $3 \
             AND (best_value IS NULL OR best_value > $1 OR (best_value = $1 AND best_child > $2))"
        };
        on_db!(self, pool => sqlx::query(sql)
            .bind(value)
            .bind(index)
            .bind(parent_id)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }

    /// A parent's running children with their kinds (to cancel nested parents).
    pub async fn running_children(&self, parent_id: &str) -> Result<Vec<(String, String)>> {
        let rows: Vec<(String, String)> = on_db!(self, pool => sqlx::query_as(
            "SELECT id, kind FROM jobs WHERE parent_id = $1 AND status = 'running' ORDER BY id",
        )
        .bind(parent_id)
        .fetch_all(pool)
        .await?);
        Ok(rows)
    }

    /// The summaries of a parent's children placed before `below_index`, by
    /// index (a study's trials read what the sampler may know this way: a few
    /// hundred bytes each, never the result bodies).
    pub async fn child_summaries(
        &self,
        parent_id: &str,
        below_index: i64,
    ) -> Result<Vec<(i64, JobStatus, Option<Value>)>> {
        let rows: Vec<(i64, String, Option<String>)> = on_db!(self, pool => sqlx::query_as(
            "SELECT child_index, status, summary FROM jobs \
             WHERE parent_id = $1 AND child_index < $2 ORDER BY child_index",
        )
        .bind(parent_id)
        .bind(below_index)
        .fetch_all(pool)
        .await?);
        rows.into_iter()
            .map(|(index, status, summary)| {
                Ok((
                    index,
                    JobStatus::parse(&status).unwrap_or(JobStatus::Failed),
                    summary.map(|s| serde_json::from_str(&s)).transpose()?,
                ))
            })
            .collect()
    }

    /// Announces (or renews) a live worker process and its runner count, all warm.
    pub async fn heartbeat_worker(&self, id: &str, runners: i64, ttl_ms: i64) -> Result<()> {
        self.announce_worker(id, runners, runners, ttl_ms).await
    }

    /// Announces (or renews) a live worker process: `ready` of its `runners`
    /// are warm (a worker announces 0 while its runners start).
    pub async fn announce_worker(
        &self,
        id: &str,
        ready: i64,
        runners: i64,
        ttl_ms: i64,
    ) -> Result<()> {
        on_db!(self, pool => sqlx::query(
            "INSERT INTO workers (id, runners, ready, expires_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET runners = excluded.runners, ready = excluded.ready, \
             expires_at = excluded.expires_at",
        )
        .bind(id)
        .bind(runners)
        .bind(ready.clamp(0, runners))
        .bind(now_ms() + ttl_ms)
        .execute(pool)
        .await?
        .rows_affected());
        Ok(())
    }

    /// `(ready, total, workers)`: warm runners, runners, and worker processes of
    /// the live fleet, for /ready and /health.
    pub async fn fleet_readiness(&self) -> Result<(i64, i64, i64)> {
        let (ready, total, workers): (Option<i64>, Option<i64>, i64) = on_db!(self, pool => sqlx::query_as(
            "SELECT CAST(SUM(ready) AS BIGINT), CAST(SUM(runners) AS BIGINT), COUNT(*) FROM workers \
             WHERE expires_at > $1",
        )
        .bind(now_ms())
        .fetch_one(pool)
        .await?);
        Ok((ready.unwrap_or(0), total.unwrap_or(0), workers))
    }

    pub async fn remove_worker(&self, id: &str) -> Result<()> {
        on_db!(self, pool => sqlx::query("DELETE FROM workers WHERE id = $1 OR expires_at < $2")
            .bind(id)
            .bind(now_ms() - 3_600_000)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(())
    }

    /// Runners of the live workers of the fleet (0 when none has announced itself).
    pub async fn fleet_runners(&self) -> Result<i64> {
        let total: Option<i64> = on_db!(self, pool => sqlx::query_scalar(
            "SELECT CAST(SUM(runners) AS BIGINT) FROM workers WHERE expires_at > $1",
        )
        .bind(now_ms())
        .fetch_one(pool)
        .await?);
        Ok(total.unwrap_or(0))
    }
}

/// A parent's children in child order, read a page at a time as they are
/// asked for (a parent combining thousands of children never holds them all).
pub struct ChildPages<'a> {
    store: &'a Store,
    parent_id: &'a str,
    after: i64,
    page: i64,
}

impl ChildPages<'_> {
    /// The next page, or None once every child has been read.
    pub async fn next(&mut self) -> Result<Option<Vec<ChildResult>>> {
        let rows = self
            .store
            .child_results(self.parent_id, self.after, self.page)
            .await?;
        Ok(rows.last().map(|last| last.index).map(|last| {
            self.after = last;
            rows
        }))
    }
}

/// One child of a parent, with its result body when it succeeded.
#[derive(Debug, Clone)]
pub struct ChildResult {
    pub id: String,
    pub index: i64,
    pub status: JobStatus,
    pub error: Option<ErrorBody>,
    pub body: Option<Value>,
}

impl TryFrom<JobRow> for JobRecord {
    type Error = StoreError;

    fn try_from(row: JobRow) -> Result<Self> {
        let corrupt = |what: &str, value: &str| {
            StoreError::Database(sqlx::Error::Decode(
                format!("unknown job {what} '{value}'").into(),
            ))
        };
        let params: Value = serde_json::from_str(&row.params)?;
        let subject = match &row.subject {
            Some(subject) => serde_json::from_str(subject)?,
            // A job recorded before subjects were: derived from its plan.
            None => crate::subject::subject_of(&row.kind, &params),
        };
        Ok(JobRecord {
            kind: row.kind,
            status: JobStatus::parse(&row.status).ok_or_else(|| corrupt("status", &row.status))?,
            params,
            progress: row.progress,
            stage: row.stage,
            attempts: row.attempts,
            cancel_requested: row.cancel_requested != 0,
            error: row.error.map(|e| serde_json::from_str(&e)).transpose()?,
            summary: row.summary.map(|s| serde_json::from_str(&s)).transpose()?,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
            parent_id: row.parent_id,
            child_index: row.child_index,
            released: row.released != 0,
            waiting: row.waiting != 0,
            child_cap: row.child_cap,
            child_window: row.child_window,
            best: row.best_value.zip(row.best_child),
            subject,
            tags: row
                .tags
                .map(|t| serde_json::from_str(&t))
                .transpose()?
                .unwrap_or_default(),
            id: row.id,
        })
    }
}

mod pg {
    //! Postgres' fast path for candle scans: a binary COPY, decoded in place.
    use sqlx::postgres::PgConnection;

    use super::{Result, StoreError};

    /// `COPY (SELECT <columns> ... ORDER BY timestamp) TO STDOUT` for a range of
    /// a series. COPY takes no bind parameters, so the two names are quoted as
    /// SQL literals (standard_conforming_strings is on since Postgres 9.1).
    pub fn range_copy(columns: &str, exchange: &str, symbol: &str, start: i64, end: i64) -> String {
        format!(
            "COPY (SELECT {columns} FROM candles WHERE exchange = {} AND symbol = {} \
             AND timeframe = '1m' AND timestamp >= {start} AND timestamp < {end} \
             ORDER BY timestamp) TO STDOUT (FORMAT binary)",
            literal(exchange),
            literal(symbol)
        )
    }

    fn literal(text: &str) -> String {
        format!("'{}'", text.replace('\'', "''"))
    }

    /// Streams a binary COPY of `width` float8 columns, calling `on_row` with
    /// each row's values in order. (Timestamps in ms are exact as float8.)
    pub async fn copy_rows(
        conn: &mut PgConnection,
        sql: &str,
        width: usize,
        mut on_row: impl FnMut(&[f64]),
    ) -> Result<()> {
        use futures::TryStreamExt;
        let mut stream = conn.copy_out_raw(sql).await?;
        let mut buf: Vec<u8> = Vec::new();
        let mut pos = 0;
        let mut header_done = false;
        let mut row = vec![0.0; width];
        while let Some(chunk) = stream.try_next().await? {
            buf.drain(..pos);
            pos = 0;
            buf.extend_from_slice(&chunk);
            if !header_done {
                // "PGCOPY\n\xff\r\n\0", flags (i32), extension length (i32) + extension.
                if buf.len() < 19 {
                    continue;
                }
                let ext = i32::from_be_bytes(buf[15..19].try_into().expect("4 bytes")) as usize;
                if buf.len() < 19 + ext {
                    continue;
                }
                pos = 19 + ext;
                header_done = true;
            }
            let row_len = 2 + width * 12;
            while buf.len() - pos >= 2 {
                let fields = i16::from_be_bytes([buf[pos], buf[pos + 1]]);
                if fields == -1 {
                    // The trailer; the stream still has to be read to its end,
                    // or the connection goes back to the pool mid-protocol.
                    pos = buf.len();
                    break;
                }
                if fields as usize != width {
                    return Err(corrupt(format!(
                        "COPY row has {fields} fields, expected {width}"
                    )));
                }
                if buf.len() - pos < row_len {
                    break;
                }
                let mut at = pos + 2;
                for value in row.iter_mut() {
                    let len = i32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
                    if len != 8 {
                        return Err(corrupt(format!("COPY field of {len} bytes, expected 8")));
                    }
                    *value = f64::from_be_bytes(buf[at + 4..at + 12].try_into().expect("8 bytes"));
                    at += 12;
                }
                on_row(&row);
                pos += row_len;
            }
        }
        Ok(())
    }

    fn corrupt(message: String) -> StoreError {
        StoreError::Database(sqlx::Error::Protocol(message))
    }
}

mod raw {
    //! The one place the store talks to SQLite's C API directly.
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
        out: &mut Vec<f64>,
    ) -> Result<(), String> {
        scan(db, SQL, exchange, symbol, start, end, |stmt| {
            // SAFETY: `stmt` is positioned on a row of the six-column SELECT.
            unsafe {
                out.push(ffi::sqlite3_column_int64(stmt, 0) as f64);
                for column in 1..6 {
                    out.push(ffi::sqlite3_column_double(stmt, column));
                }
            }
        })
    }

    const TIMESTAMPS: &CStr = c"SELECT timestamp FROM candles \
        WHERE exchange = ?1 AND symbol = ?2 AND timeframe = '1m' AND timestamp >= ?3 AND timestamp < ?4 \
        ORDER BY timestamp";

    /// Calls `on_timestamp` for every stored minute of `[start, end)`, in order.
    pub fn timestamps(
        db: *mut ffi::sqlite3,
        exchange: &str,
        symbol: &str,
        start: i64,
        end: i64,
        mut on_timestamp: impl FnMut(i64),
    ) -> Result<(), String> {
        scan(db, TIMESTAMPS, exchange, symbol, start, end, |stmt| {
            // SAFETY: `stmt` is positioned on a row of the one-column SELECT.
            on_timestamp(unsafe { ffi::sqlite3_column_int64(stmt, 0) });
        })
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

// ---- job logs -------------------------------------------------------------------
//
// What a job's strategy printed and logged (`migrations/*/..._job_logs.sql`),
// written by the worker as the job runs and read a page at a time.

/// One line of a job's log.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct JobLogLine {
    /// Position in the job's log, from 0, across attempts.
    pub seq: i64,
    /// The attempt that wrote it (1 unless a runner died under the job).
    pub attempt: i64,
    /// `stdout` or `stderr` (print output), `info` or `error` (`self.log`), or
    /// `system` (the line that says the log was truncated).
    pub stream: String,
    pub line: String,
    /// Jesse's clock when it was written (ms); None outside the simulation.
    pub simulated_ms: Option<i64>,
    /// Wall clock when the worker received it (ms).
    pub logged_at: i64,
}

/// How much of its log a job has used.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JobLogUsage {
    pub lines: i64,
    /// Bytes of text (UTF-8), what the cap counts.
    pub bytes: i64,
    /// The `seq` of the next line.
    pub next_seq: i64,
    /// A `system` line already says the log was truncated (by lines or bytes).
    pub truncated: bool,
}

impl Store {
    /// Lines, bytes, the next `seq` and whether a job's log was truncated (zeros when it has none).
    pub async fn job_log_usage(&self, job_id: &str) -> Result<JobLogUsage> {
        // OCTET_LENGTH: bytes on Postgres and on SQLite (3.43+; the bundled one is newer).
        let (lines, bytes, next_seq, system): (i64, i64, i64, i64) = on_db!(self, pool => sqlx::query_as(
            "SELECT COUNT(*), CAST(COALESCE(SUM(OCTET_LENGTH(line)), 0) AS BIGINT), \
             CAST(COALESCE(MAX(seq) + 1, 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN stream = 'system' THEN 1 ELSE 0 END), 0) AS BIGINT) \
             FROM job_logs WHERE job_id = $1",
        )
        .bind(job_id)
        .fetch_one(pool)
        .await?);
        Ok(JobLogUsage {
            lines,
            bytes,
            next_seq,
            truncated: system > 0,
        })
    }

    /// Appends lines (numbered by the caller) to a job's log; a line whose `seq`
    /// is already there is kept as it was. A busy store is waited out.
    pub async fn append_job_logs(&self, job_id: &str, lines: &[JobLogLine]) -> Result<()> {
        // 7 parameters a line, well under SQLite's 32,766 per statement.
        for chunk in lines.chunks(1_000) {
            retry_transient("writing job logs", || async {
                on_db!(self, pool => {
                    let mut query = QueryBuilder::new(
                        "INSERT INTO job_logs (job_id, seq, attempt, stream, line, simulated_ms, logged_at) ",
                    );
                    query.push_values(chunk.iter(), |mut b, l| {
                        b.push_bind(job_id)
                            .push_bind(l.seq)
                            .push_bind(l.attempt)
                            .push_bind(l.stream.as_str())
                            .push_bind(l.line.as_str())
                            .push_bind(l.simulated_ms)
                            .push_bind(l.logged_at);
                    });
                    query.push(" ON CONFLICT (job_id, seq) DO NOTHING");
                    query.build().execute(pool).await?.rows_affected()
                });
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    /// Up to `limit` lines of a job's log after `seq` `after` (from the start
    /// without it), in order.
    pub async fn job_logs(
        &self,
        job_id: &str,
        after: Option<i64>,
        limit: i64,
    ) -> Result<Vec<JobLogLine>> {
        Ok(on_db!(self, pool => sqlx::query_as(
            "SELECT seq, attempt, stream, line, simulated_ms, logged_at FROM job_logs \
             WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(job_id)
        .bind(after.unwrap_or(-1))
        .bind(limit)
        .fetch_all(pool)
        .await?))
    }
}
