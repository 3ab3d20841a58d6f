//! The job queue: apalis on its own SQLite file (`queue.db`) beside the store.
//!
//! Kept apart from `store.db` because apalis runs its own migrations and polls
//! with short write transactions. The queue carries only `{job_id, kind}`; the
//! job's definition and status live in the store. Ids are the ULIDs we return
//! at submit, so a queue row and a job row always share their id.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use apalis::prelude::{TaskBuilder, TaskId, TaskSink};
use apalis_sqlite::{Config, SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteStorage};

use crate::error::StoreError;
use crate::jobs::{JobKind, QueuedJob};

/// The apalis queue name for a job kind; fixed so renaming a Rust type never orphans jobs.
pub fn queue_name(kind: JobKind) -> &'static str {
    kind.as_str()
}

#[derive(Clone)]
pub struct Queue {
    pool: SqlitePool,
}

impl Queue {
    pub async fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let _init = crate::init_lock(data_dir).map_err(|e| StoreError::Queue(e.to_string()))?;
        let url = format!("sqlite://{}", data_dir.join("queue.db").display());
        let options = SqliteConnectOptions::from_str(&url)
            .map_err(|e| StoreError::Queue(e.to_string()))?
            .create_if_missing(true)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Queue(e.to_string()))?;
        SqliteStorage::setup(&pool)
            .await
            .map_err(|e| StoreError::Queue(e.to_string()))?;
        Ok(Self { pool })
    }

    /// The apalis storage for one kind, for pushing or for a worker to consume.
    pub fn storage(&self, kind: JobKind) -> SqliteStorage<QueuedJob> {
        SqliteStorage::new(&self.pool)
            .with_config(Config::default().queue(queue_name(kind)).batch_size(1))
    }

    /// A worker's storage for one kind, with its heartbeat: a worker missing two
    /// heartbeats is presumed dead and its claimed tasks are re-enqueued.
    pub fn storage_with_heartbeat(
        &self,
        kind: JobKind,
        heartbeat: Duration,
    ) -> SqliteStorage<QueuedJob> {
        SqliteStorage::new(&self.pool).with_config(
            Config::default()
                .queue(queue_name(kind))
                .batch_size(1)
                .heartbeat_interval(heartbeat)
                .missed_heartbeats(2),
        )
    }

    /// Enqueues a job under its own id. One delivery per push: retries after a
    /// runner crash are bounded by the worker against the job's attempt counter.
    pub async fn push(&self, job: &QueuedJob) -> Result<(), StoreError> {
        let id = ulid::Ulid::from_string(&job.job_id)
            .map_err(|e| StoreError::Queue(format!("job id is not a ULID: {e}")))?;
        let task = TaskBuilder::new(job.clone())
            .task_id(TaskId::from_ulid(id))
            .max_attempts(1)
            .build();
        let mut storage = self.storage(job.kind);
        storage
            .push_task(task)
            .await
            .map_err(|e| StoreError::Queue(e.to_string()))
    }

    /// Withdraws a job nobody has claimed yet; false if a worker already holds it.
    pub async fn withdraw(&self, kind: JobKind, job_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE Jobs SET status = 'Killed', done_at = strftime('%s','now'), \
             last_result = '{\"Err\":\"cancelled\"}', lock_by = NULL \
             WHERE id = ? AND job_type = ? AND status IN ('Pending', 'Failed') AND lock_by IS NULL",
        )
        .bind(job_id)
        .bind(queue_name(kind))
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::Queue(e.to_string()))?;
        Ok(done.rows_affected() == 1)
    }

    /// Whether the queue holds a task for this job (in any state).
    pub async fn contains(&self, kind: JobKind, job_id: &str) -> Result<bool, StoreError> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM Jobs WHERE id = ? AND job_type = ?")
                .bind(job_id)
                .bind(queue_name(kind))
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| StoreError::Queue(e.to_string()))?;
        Ok(found.is_some())
    }

    /// Jobs waiting to be claimed, per queue.
    pub async fn depth(&self, kind: JobKind) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT COUNT(*) FROM Jobs WHERE job_type = ? AND status = 'Pending'")
            .bind(queue_name(kind))
            .fetch_one(&self.pool)
            .await
            .map_err(|e| StoreError::Queue(e.to_string()))
    }
}
