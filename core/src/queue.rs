//! The job queue: apalis on its own SQLite file (`queue.db`, the default) or on
//! Redis (`JESSE_MCP_QUEUE_URL=redis://...`, for many workers on many hosts).
//!
//! The queue carries only `{job_id, kind}`; the job's definition and status live
//! in the store, which stays the authority: a worker claims a job there (with a
//! lease) before running it, so a task delivered twice never runs twice. Task ids
//! are the ULIDs we return at submit, so a queue entry and a job share their id.

use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use apalis::prelude::{TaskBuilder, TaskId, TaskSink};
use apalis_redis::{ConnectionManager, RedisStorage};
use apalis_sqlite::{SqliteConnectOptions, SqlitePool, SqliteStorage};
use sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};

use crate::error::StoreError;
use crate::jobs::QueuedJob;
use crate::kinds::Lane;

/// An apalis-sqlite task that will not be delivered again (our tasks have one
/// attempt; a redelivery after a worker died resets the status to Pending and
/// clears the lock; a Pending task still locked was acknowledged as "retry" and
/// is never fetched again).
macro_rules! sqlite_ended {
    () => {
        "(status IN ('Done', 'Killed') OR (status = 'Failed' AND attempts >= max_attempts) \
          OR (status = 'Pending' AND lock_by IS NOT NULL))"
    };
}

/// The apalis queue name of a lane; fixed so renaming a Rust type never orphans jobs.
pub fn queue_name(lane: Lane) -> &'static str {
    lane.queue_name()
}

#[derive(Clone)]
pub enum Queue {
    Sqlite(SqlitePool),
    Redis {
        conn: ConnectionManager,
        /// For the wake-up subscription (a connection of its own).
        client: apalis_redis::Client,
        /// Prefix of every key, so deployments (and tests) can share one Redis.
        namespace: Arc<str>,
    },
}

/// One lane's apalis backend, for a worker to consume.
pub enum KindBackend {
    Sqlite(SqliteStorage<QueuedJob>),
    Redis(RedisStorage<QueuedJob>),
}

fn queue_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Queue(e.to_string())
}

impl Queue {
    /// Opens the queue: Redis when `queue_url` is `redis://...`, else `queue.db`
    /// in `data_dir` (or the `sqlite:` file the URL names).
    pub async fn open(
        data_dir: &Path,
        queue_url: Option<&str>,
        namespace: &str,
    ) -> Result<Self, StoreError> {
        match queue_url.map(str::trim).filter(|u| !u.is_empty()) {
            Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
                let client = apalis_redis::Client::open(url).map_err(queue_error)?;
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(5)))
                    .set_response_timeout(Some(Duration::from_secs(10)))
                    .set_number_of_retries(6);
                let conn = ConnectionManager::new_with_config(client.clone(), config)
                    .await
                    .map_err(queue_error)?;
                Ok(Self::Redis {
                    conn,
                    client,
                    namespace: namespace.into(),
                })
            }
            Some(url) if !url.starts_with("sqlite:") => Err(StoreError::Queue(format!(
                "unsupported queue URL '{url}': use redis://host:port or sqlite:<path>"
            ))),
            url => {
                let _init = crate::init_lock(data_dir).map_err(queue_error)?;
                let default = format!("sqlite://{}", data_dir.join("queue.db").display());
                let options = SqliteConnectOptions::from_str(url.unwrap_or(&default))
                    .map_err(queue_error)?
                    .create_if_missing(true)
                    // Like the store: WAL, no fsync per commit (a commit survives a
                    // process crash; the store re-enqueues what a power loss drops).
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(30));
                let pool = crate::store::sqlite_pool_options()
                    .max_connections(4)
                    .connect_with(options)
                    .await
                    .map_err(queue_error)?;
                SqliteStorage::setup(&pool).await.map_err(queue_error)?;
                Ok(Self::Sqlite(pool))
            }
        }
    }

    /// The SQLite queue's database file (None on Redis).
    pub fn sqlite_file(&self) -> Option<std::path::PathBuf> {
        match self {
            Self::Sqlite(pool) => Some(pool.connect_options().get_filename().to_path_buf()),
            Self::Redis { .. } => None,
        }
    }

    /// `sqlite` or `redis`.
    pub fn engine(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Redis { .. } => "redis",
        }
    }

    /// A worker's backend for one kind, with its heartbeat: a worker missing two
    /// heartbeats is presumed dead and its claimed tasks are re-enqueued.
    pub fn backend(&self, lane: Lane, heartbeat: Duration) -> KindBackend {
        match self {
            Self::Sqlite(pool) => KindBackend::Sqlite(
                SqliteStorage::new(pool).with_config(
                    apalis_sqlite::Config::default()
                        .queue(queue_name(lane))
                        .batch_size(1)
                        .heartbeat_interval(heartbeat)
                        .missed_heartbeats(2),
                ),
            ),
            Self::Redis {
                conn, namespace, ..
            } => KindBackend::Redis(
                RedisStorage::new(conn.clone())
                    .with_config(redis_config(namespace, lane, heartbeat)),
            ),
        }
    }

    /// Enqueues a job under its own id. One delivery per push: retries after a
    /// runner crash are bounded by the worker against the job's attempt counter.
    pub async fn push(&self, lane: Lane, job: &QueuedJob) -> Result<(), StoreError> {
        let id = ulid::Ulid::from_string(&job.job_id)
            .map_err(|e| StoreError::Queue(format!("job id is not a ULID: {e}")))?;
        // On SQLite, tasks are taken by priority, then by the second they are due,
        // then by id; a child (created with its parent, so with an older id) must
        // not overtake a job a user submitted in the same second. Redis takes
        // tasks in push order.
        let task = TaskBuilder::new(job.clone())
            .task_id(TaskId::from_ulid(id))
            .max_attempts(1)
            .priority(if job.child { 0 } else { 1 })
            .build();
        match self {
            Self::Sqlite(pool) => {
                let mut storage = SqliteStorage::<QueuedJob>::new(pool)
                    .with_config(apalis_sqlite::Config::default().queue(queue_name(lane)));
                storage.push_task(task).await.map_err(queue_error)
            }
            Self::Redis {
                conn, namespace, ..
            } => {
                let mut storage = RedisStorage::<QueuedJob>::new(conn.clone())
                    .with_config(redis_config(namespace, lane, Duration::from_secs(10)));
                storage.push_task(task).await.map_err(queue_error)?;
                self.announce().await
            }
        }
    }

    /// Withdraws a job nobody has claimed yet; false if a worker already holds it.
    pub async fn withdraw(&self, lane: Lane, job_id: &str) -> Result<bool, StoreError> {
        match self {
            Self::Sqlite(pool) => {
                let done = sqlx::query(
                    "UPDATE Jobs SET status = 'Killed', done_at = strftime('%s','now'), \
                     last_result = '{\"Err\":\"cancelled\"}', lock_by = NULL \
                     WHERE id = ? AND job_type = ? AND status IN ('Pending', 'Failed') AND lock_by IS NULL",
                )
                .bind(job_id)
                .bind(queue_name(lane))
                .execute(pool)
                .await
                .map_err(queue_error)?;
                Ok(done.rows_affected() == 1)
            }
            Self::Redis {
                conn, namespace, ..
            } => {
                let config = redis_config(namespace, lane, Duration::from_secs(10));
                let removed: i64 = WITHDRAW
                    .key(config.active_jobs_list())
                    .key(config.scheduled_jobs_set())
                    .key(config.job_data_hash())
                    .key(config.job_meta_hash())
                    .arg(job_id)
                    .invoke_async(&mut conn.clone())
                    .await
                    .map_err(queue_error)?;
                Ok(removed > 0)
            }
        }
    }

    /// Puts a task that `worker` claimed but will not finish back at the head of
    /// the waiting line (a worker shutting down hands its running jobs back).
    pub async fn requeue(&self, lane: Lane, job_id: &str, worker: &str) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(pool) => {
                sqlx::query(
                    "UPDATE Jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL, \
                     run_at = strftime('%s','now') WHERE id = ? AND job_type = ?",
                )
                .bind(job_id)
                .bind(queue_name(lane))
                .execute(pool)
                .await
                .map_err(queue_error)?;
                Ok(())
            }
            Self::Redis {
                conn, namespace, ..
            } => {
                let config = redis_config(namespace, lane, Duration::from_secs(10));
                let _: i64 = REQUEUE
                    .key(format!("{}:{worker}", config.inflight_jobs_set()))
                    .key(config.active_jobs_list())
                    .key(config.signal_list())
                    .arg(job_id)
                    .invoke_async(&mut conn.clone())
                    .await
                    .map_err(queue_error)?;
                self.announce().await
            }
        }
    }

    /// The Redis channel on which pushes are announced to idle workers.
    fn wake_channel(namespace: &str) -> String {
        format!("{namespace}:wake")
    }

    /// Tells idle workers (on Redis) that a task is waiting, so they fetch at once
    /// instead of polling. Best effort: a missed announcement costs one backstop
    /// interval, never a job.
    async fn announce(&self) -> Result<(), StoreError> {
        if let Self::Redis {
            conn, namespace, ..
        } = self
        {
            let published: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(Self::wake_channel(namespace))
                .arg(1)
                .query_async(&mut conn.clone())
                .await;
            if let Err(e) = published {
                tracing::debug!(error = %e, "announcing a queued task failed");
            }
        }
        Ok(())
    }

    /// On Redis: a notification whenever a task is pushed or handed back, from a
    /// subscription kept alive in the background (re-subscribing after a Redis
    /// restart, with one wake-up then, since announcements may have been missed).
    /// None on SQLite, whose workers watch the queue file instead.
    pub fn watch(&self) -> Option<Arc<tokio::sync::Notify>> {
        let Self::Redis {
            client, namespace, ..
        } = self
        else {
            return None;
        };
        let notify = Arc::new(tokio::sync::Notify::new());
        let (wake, client, channel) = (
            notify.clone(),
            client.clone(),
            Self::wake_channel(namespace),
        );
        tokio::spawn(async move {
            use futures::StreamExt;
            loop {
                match client.get_async_pubsub().await {
                    Ok(mut pubsub) => {
                        if pubsub.subscribe(&channel).await.is_ok() {
                            wake.notify_waiters();
                            let mut messages = pubsub.on_message();
                            while messages.next().await.is_some() {
                                wake.notify_waiters();
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "queue wake-up subscription failed; retrying")
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Some(notify)
    }

    /// Marks a task `worker` ran as done, if the queue still has it as that
    /// worker's (a worker that stalled may have lost it to another). Never fails
    /// because of the task's state. SQLite tasks are acknowledged by apalis.
    pub async fn acknowledge(
        &self,
        lane: Lane,
        job_id: &str,
        worker: &str,
    ) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(_) => Ok(()),
            Self::Redis {
                conn, namespace, ..
            } => {
                let config = redis_config(namespace, lane, Duration::from_secs(10));
                let now = crate::time::now_ms() / 1000;
                let _: i64 = ACKNOWLEDGE
                    .key(format!("{}:{worker}", config.inflight_jobs_set()))
                    .key(config.done_jobs_set())
                    .key(config.job_meta_hash())
                    .arg(job_id)
                    .arg(now)
                    .invoke_async(&mut conn.clone())
                    .await
                    .map_err(queue_error)?;
                Ok(())
            }
        }
    }

    /// Whether the queue will still deliver this job: waiting, claimed, or failed
    /// with a retry left. A task that ended (done, killed, out of attempts) does
    /// not count, so a job the store still calls queued can be put back.
    pub async fn holds(&self, lane: Lane, job_id: &str) -> Result<bool, StoreError> {
        match self {
            Self::Sqlite(pool) => {
                let found: Option<i64> = sqlx::query_scalar(concat!(
                    "SELECT 1 FROM Jobs WHERE id = ? AND job_type = ? AND NOT ",
                    sqlite_ended!()
                ))
                .bind(job_id)
                .bind(queue_name(lane))
                .fetch_optional(pool)
                .await
                .map_err(queue_error)?;
                Ok(found.is_some())
            }
            Self::Redis {
                conn, namespace, ..
            } => {
                let config = redis_config(namespace, lane, Duration::from_secs(10));
                let (exists, done, dead): (bool, bool, bool) = redis::pipe()
                    .cmd("HEXISTS")
                    .arg(config.job_data_hash())
                    .arg(job_id)
                    .cmd("SISMEMBER")
                    .arg(config.done_jobs_set())
                    .arg(job_id)
                    .cmd("SISMEMBER")
                    .arg(config.dead_jobs_set())
                    .arg(job_id)
                    .query_async(&mut conn.clone())
                    .await
                    .map_err(queue_error)?;
                Ok(exists && !done && !dead)
            }
        }
    }

    /// Forgets an ended task so its id can be pushed again; a task the queue will
    /// still deliver is left alone.
    pub async fn forget_ended(&self, lane: Lane, job_id: &str) -> Result<(), StoreError> {
        match self {
            Self::Sqlite(pool) => {
                sqlx::query(concat!(
                    "DELETE FROM Jobs WHERE id = ? AND job_type = ? AND ",
                    sqlite_ended!()
                ))
                .bind(job_id)
                .bind(queue_name(lane))
                .execute(pool)
                .await
                .map_err(queue_error)?;
            }
            Self::Redis {
                conn, namespace, ..
            } => {
                let config = redis_config(namespace, lane, Duration::from_secs(10));
                let () = FORGET_ENDED
                    .key(config.job_data_hash())
                    .key(config.job_meta_hash())
                    .key(config.done_jobs_set())
                    .key(config.dead_jobs_set())
                    .arg(job_id)
                    .arg(0)
                    .invoke_async(&mut conn.clone())
                    .await
                    .map_err(queue_error)?;
            }
        }
        Ok(())
    }

    /// Deletes the bookkeeping of tasks that ended more than `age` ago (the store
    /// keeps the jobs' history); returns how many went.
    pub async fn vacuum(&self, lane: Lane, age: Duration) -> Result<u64, StoreError> {
        // Seconds, as both queues record end times.
        let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
        let cutoff = crate::time::now_ms().saturating_sub(age_ms) / 1000;
        match self {
            Self::Sqlite(pool) => Ok(sqlx::query(concat!(
                "DELETE FROM Jobs WHERE job_type = ? AND done_at <= ? AND ",
                sqlite_ended!()
            ))
            .bind(queue_name(lane))
            .bind(cutoff)
            .execute(pool)
            .await
            .map_err(queue_error)?
            .rows_affected()),
            Self::Redis {
                conn, namespace, ..
            } => {
                let config = redis_config(namespace, lane, Duration::from_secs(10));
                VACUUM
                    .key(config.job_data_hash())
                    .key(config.job_meta_hash())
                    .key(config.done_jobs_set())
                    .key(config.dead_jobs_set())
                    .arg(cutoff)
                    .arg(VACUUM_BATCH)
                    .invoke_async(&mut conn.clone())
                    .await
                    .map_err(queue_error)
            }
        }
    }

    /// Tasks the queue keeps in any state, ended ones included (until vacuumed).
    pub async fn retained(&self, lane: Lane) -> Result<i64, StoreError> {
        match self {
            Self::Sqlite(pool) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM Jobs WHERE job_type = ?")
                    .bind(queue_name(lane))
                    .fetch_one(pool)
                    .await
                    .map_err(queue_error)
            }
            Self::Redis {
                conn, namespace, ..
            } => {
                let config = redis_config(namespace, lane, Duration::from_secs(10));
                redis::cmd("HLEN")
                    .arg(config.job_data_hash())
                    .query_async(&mut conn.clone())
                    .await
                    .map_err(queue_error)
            }
        }
    }

    /// Jobs waiting to be claimed, per queue.
    pub async fn depth(&self, lane: Lane) -> Result<i64, StoreError> {
        match self {
            Self::Sqlite(pool) => sqlx::query_scalar(
                "SELECT COUNT(*) FROM Jobs WHERE job_type = ? AND status = 'Pending'",
            )
            .bind(queue_name(lane))
            .fetch_one(pool)
            .await
            .map_err(queue_error),
            Self::Redis {
                conn, namespace, ..
            } => {
                let config = redis_config(namespace, lane, Duration::from_secs(10));
                let (active, scheduled): (i64, i64) = redis::pipe()
                    .cmd("LLEN")
                    .arg(config.active_jobs_list())
                    .cmd("ZCARD")
                    .arg(config.scheduled_jobs_set())
                    .query_async(&mut conn.clone())
                    .await
                    .map_err(queue_error)?;
                Ok(active + scheduled)
            }
        }
    }
}

/// Ended Redis tasks removed per vacuum call, so one call never blocks Redis long.
const VACUUM_BATCH: i64 = 1_000;

/// Removes a task from the waiting line (active list or scheduled set) and, if it
/// was there, its data: a withdrawn task is gone, not left behind as garbage.
static WITHDRAW: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local removed = redis.call('LREM', KEYS[1], 0, ARGV[1]) + redis.call('ZREM', KEYS[2], ARGV[1])
if removed > 0 then
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('DEL', KEYS[4] .. ':' .. ARGV[1])
end
return removed
",
    )
});

/// Puts a claimed task back at the head of the line, only if the worker still
/// had it (never a second copy of a task someone else now holds).
static REQUEUE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('LPUSH', KEYS[2], ARGV[1])
  redis.call('LPUSH', KEYS[3], 1)
  return 1
end
return 0
",
    )
});

/// Done, if the worker still had the task: out of its in-flight set, into the
/// done set, status and end time in its meta (what the vacuum reads).
static ACKNOWLEDGE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('SADD', KEYS[2], ARGV[1])
  redis.call('HSET', KEYS[3] .. ':' .. ARGV[1], 'status', 'Done', 'done_at', ARGV[2])
  return 1
end
return 0
",
    )
});

/// KEYS: data hash, meta prefix, done set, dead set. Deletes ended tasks (members
/// of the done or dead set) that ended at or before ARGV[1] (seconds), at most
/// ARGV[2] of them; with a task id in ARGV[1] and 0 in ARGV[2], only that task.
const ENDED_LUA: &str = r"
local function drop(id)
  redis.call('HDEL', KEYS[1], id)
  redis.call('HDEL', KEYS[2] .. ':result', id)
  redis.call('DEL', KEYS[2] .. ':' .. id)
  redis.call('SREM', KEYS[3], id)
  redis.call('SREM', KEYS[4], id)
end
";

static FORGET_ENDED: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        r"{ENDED_LUA}
local id = ARGV[1]
if redis.call('SISMEMBER', KEYS[3], id) == 1 or redis.call('SISMEMBER', KEYS[4], id) == 1 then
  drop(id)
end
"
    ))
});

static VACUUM: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(&format!(
        r"{ENDED_LUA}
local cutoff, limit, dropped = tonumber(ARGV[1]), tonumber(ARGV[2]), 0
for _, set in ipairs({{KEYS[3], KEYS[4]}}) do
  for _, id in ipairs(redis.call('SMEMBERS', set)) do
    if dropped >= limit then return dropped end
    local meta = redis.call('HMGET', KEYS[2] .. ':' .. id, 'done_at', 'status')
    local done_at, status = tonumber(meta[1]), meta[2]
    if status == 'Running' or status == 'Pending' or status == 'Queued' then
      -- delivered again since it ended: no longer ours to delete
      redis.call('SREM', set, id)
    elseif done_at == nil or done_at <= cutoff then
      drop(id)
      dropped = dropped + 1
    end
  end
end
return dropped
"
    ))
});

/// One kind's Redis queue: one task per fetch (jobs are long), liveness from
/// the heartbeat like the SQLite queue. The worker acknowledges each task itself
/// ([`Queue::acknowledge`]): that takes a finished task out of its in-flight set
/// (else a worker's death would re-deliver every task it ever ran) and marks it
/// done, for the vacuum; apalis's own acknowledgement errors, and stops the
/// worker, when a stalled worker has lost the task meanwhile.
fn redis_config(namespace: &str, lane: Lane, heartbeat: Duration) -> apalis_redis::Config {
    apalis_redis::Config::default()
        .queue(format!("{namespace}:{}", queue_name(lane)))
        .batch_size(1)
        .heartbeat_interval(heartbeat)
        .missed_heartbeats(2)
        .persist_results(false)
        .emit_events(false)
}
