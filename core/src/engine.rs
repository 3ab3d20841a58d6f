//! The job engine: records jobs and puts them on their lane's queue, creates
//! and releases child jobs, advances parents as their children end, cancels
//! whole trees, and puts back work a crash or a lost queue entry stranded.
//! The API (user submits) and workers (a running parent's children) call the
//! same functions, so a child is planned and enqueued exactly like a submit.
//!
//! A parent's state lives in the store: its children are rows with its id,
//! held back (`released = 0`) until it lets them go, at most its in-flight cap
//! at a time (so a 5,000-child study never starves a backtest submitted after
//! it: the queue never holds more of the study's children than the fleet can
//! run at once). While children run, the parent is `running` with `waiting`
//! set and no lease: it holds no worker and no claim slot. Whoever ends the
//! last child wakes it, and it runs once more to combine their results.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::ErrorBody;
use crate::error::ApiError;
use crate::jobs::{JobStatus, QueuedJob, new_job_id};
use crate::kinds::KindDef;
use crate::planner::Planner;
use crate::queue::Queue;
use crate::store::{CancelOutcome, ChildCounts, Inserted, JobRecord, NewChild, NewJob, Store};
use crate::strategies::StrategyDir;
use crate::time::now_ms;

#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    queue: Queue,
    strategies: StrategyDir,
}

/// A submit's answer: the job, and whether this call created it (false when an
/// idempotency key named an earlier one).
pub struct Accepted {
    pub job: JobRecord,
    pub created: bool,
}

impl Engine {
    pub fn new(store: Store, queue: Queue, strategies_dir: std::path::PathBuf) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                queue,
                strategies: StrategyDir::new(strategies_dir),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn queue(&self) -> &Queue {
        &self.inner.queue
    }

    pub fn strategies(&self) -> &StrategyDir {
        &self.inner.strategies
    }

    /// A planner for one planning session (its memos live as long as it does).
    pub fn planner(&self) -> Planner {
        Planner::new(self.inner.store.clone(), self.inner.strategies.clone())
    }

    /// Plans a request of `kind` and enqueues it. The `tags` every submit
    /// accepts are taken out first (the kind's request does not know them).
    pub async fn submit(
        &self,
        kind: &'static KindDef,
        mut request: Value,
        idempotency_key: Option<&str>,
    ) -> Result<Accepted, ApiError> {
        if let Some(key) = idempotency_key
            && (key.is_empty() || key.len() > 200)
        {
            return Err(ApiError::bad_request(
                "invalid_idempotency_key",
                "the Idempotency-Key header must be 1 to 200 characters",
            ));
        }
        let tags = crate::subject::take_tags(&mut request)?;
        let params = (kind.plan)(&self.planner(), request).await?;
        self.enqueue_tagged(kind, params, &tags, idempotency_key)
            .await
    }

    /// Records a planned job and puts it on its lane's queue; answers once both happened.
    pub async fn enqueue(
        &self,
        kind: &'static KindDef,
        params: Value,
        idempotency_key: Option<&str>,
    ) -> Result<Accepted, ApiError> {
        self.enqueue_tagged(kind, params, &[], idempotency_key)
            .await
    }

    /// [`Engine::enqueue`] with the submit's tags (part of the request an
    /// idempotency key stands for).
    pub async fn enqueue_tagged(
        &self,
        kind: &'static KindDef,
        params: Value,
        tags: &[String],
        idempotency_key: Option<&str>,
    ) -> Result<Accepted, ApiError> {
        let id = new_job_id();
        let inserted = self
            .inner
            .store
            .insert_tagged_job(
                NewJob {
                    id: &id,
                    kind: kind.name,
                    params: &params,
                    idempotency_key,
                },
                tags,
            )
            .await?;
        let job = match inserted {
            Inserted::Existing(job) => {
                if job.params != params || job.tags != tags {
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
                return Ok(Accepted {
                    job,
                    created: false,
                });
            }
            Inserted::Created(job) => job,
        };
        if let Err(e) = self.push(kind, &id, false).await {
            tracing::error!(job.id = id, error = %e, "enqueue failed; withdrawing the job");
            self.inner.store.delete_unqueued_job(&id).await?;
            return Err(ApiError::unavailable(
                "the queue is not accepting jobs right now; retry shortly",
            ));
        }
        tracing::info!(job.id = id, job.kind = kind.name, "job queued");
        Ok(Accepted { job, created: true })
    }

    async fn push(&self, kind: &KindDef, id: &str, child: bool) -> Result<(), crate::StoreError> {
        self.inner
            .queue
            .push(
                kind.lane,
                &QueuedJob {
                    job_id: id.to_string(),
                    kind: kind.name.to_string(),
                    child,
                },
            )
            .await
    }

    /// Pushes a recorded job onto its queue unless the queue will still deliver
    /// it; true if it had to be pushed. A task that ended while the store still
    /// says queued (a worker that could not reach the store gave it up) is
    /// replaced. Jobs of kinds this binary does not know are left alone.
    pub async fn ensure_enqueued(&self, job: &JobRecord) -> Result<bool, ApiError> {
        let Some(kind) = job.def() else {
            return Ok(false);
        };
        let queue = &self.inner.queue;
        if queue.holds(kind.lane, &job.id).await? {
            return Ok(false);
        }
        queue.forget_ended(kind.lane, &job.id).await?;
        self.push(kind, &job.id, job.parent_id.is_some()).await?;
        Ok(true)
    }

    /// Re-enqueues jobs that the queue will not deliver: a submit that died
    /// between recording the job and enqueueing it, a queue that lost data (a
    /// Redis restarted without its append-only file) under a queued job or under
    /// a running one whose worker then died or stalled, a parent woken while its
    /// own task was still held. Queued jobs are looked at once they have waited
    /// `stale_ms`, running ones once their lease has been expired that long (a
    /// live worker takes them over). Waiting parents untouched that long are
    /// advanced, in case the advance after a child's end was lost with its
    /// worker. Returns how many jobs were re-enqueued.
    pub async fn requeue_lost(&self, stale_ms: i64) -> Result<usize, ApiError> {
        let before = now_ms() - stale_ms;
        let mut requeued = 0;
        let store = &self.inner.store;
        for job in store.stale_jobs(before, 200).await? {
            if self.ensure_enqueued(&job).await? {
                tracing::warn!(
                    job.id = job.id,
                    job.status = job.status.as_str(),
                    "re-enqueued a job the queue would not deliver"
                );
                requeued += 1;
            }
            store.touch_job(&job.id).await?;
        }
        for parent in store.stale_waiting(before, 100).await? {
            self.advance(&parent.id).await?;
            store.touch_job(&parent.id).await?;
        }
        Ok(requeued)
    }

    /// Cancels a job: a queued one at once, a running one by flagging it for its
    /// worker. A parent is cancelled at once (it holds no runner) with its
    /// queued children, and its running children are flagged; none of its
    /// children starts afterwards.
    pub async fn cancel(&self, id: &str) -> Result<Option<CancelOutcome>, ApiError> {
        self.cancel_because(id, "cancelled by request").await
    }

    /// [`Engine::cancel`], with the reason a cancelled parent records.
    async fn cancel_because(&self, id: &str, why: &str) -> Result<Option<CancelOutcome>, ApiError> {
        let store = &self.inner.store;
        let Some(job) = store.get_job(id).await? else {
            return Ok(None);
        };
        let is_parent = job.def().is_some_and(|k| k.parent);
        let outcome = if is_parent && !job.status.is_terminal() {
            let error = ErrorBody::new("cancelled", why);
            store
                .finish_job(id, None, JobStatus::Cancelled, Some(&error), None)
                .await?;
            let job = store.get_job(id).await?.unwrap_or(job);
            if job.status == JobStatus::Cancelled {
                CancelOutcome::Cancelled(job)
            } else {
                CancelOutcome::AlreadyFinished(job)
            }
        } else {
            match store.request_cancel(id).await? {
                Some(outcome) => outcome,
                None => return Ok(None),
            }
        };
        if let CancelOutcome::Cancelled(job) = &outcome {
            if let Some(kind) = job.def()
                && let Err(e) = self.inner.queue.withdraw(kind.lane, &job.id).await
            {
                tracing::warn!(job.id = job.id, error = %e, "withdrawing a cancelled job from the queue failed");
            }
            if is_parent {
                self.end_children(&job.id, "the parent job was cancelled")
                    .await?;
            }
            if let Some(parent) = &job.parent_id {
                self.advance(parent).await?;
            }
        }
        Ok(Some(outcome))
    }

    /// Ends the children of a parent that ended without them (cancelled or
    /// failed): queued ones are cancelled and withdrawn, running ones flagged.
    pub async fn end_children(&self, parent_id: &str, why: &str) -> Result<(), ApiError> {
        let error = ErrorBody::new("cancelled", why);
        let withdrawn = self.inner.store.cancel_children(parent_id, &error).await?;
        for id in withdrawn {
            if let Some(job) = self.inner.store.get_job_head(&id).await?
                && let Some(kind) = job.def()
            {
                let _ = self.inner.queue.withdraw(kind.lane, &id).await;
            }
        }
        // A child that is itself a parent (a walk-forward's studies) holds no
        // worker that would see a flag: cancel it, and its children, here.
        for (id, kind) in self.inner.store.running_children(parent_id).await? {
            if crate::kinds::find(&kind).is_some_and(|k| k.parent) {
                Box::pin(self.cancel_because(&id, why)).await?;
            }
        }
        Ok(())
    }

    /// Records a parent's children (idempotent per index), held back until
    /// released. If the parent ended meanwhile, they are cancelled at once.
    pub async fn create_children(
        &self,
        parent: &JobRecord,
        kind: &'static KindDef,
        children: Vec<(i64, Value)>,
        cap: Option<i64>,
        window: Option<i64>,
    ) -> Result<u64, ApiError> {
        self.inner
            .store
            .set_child_cap(&parent.id, cap, window)
            .await?;
        let rows: Vec<NewChild> = children
            .into_iter()
            .map(|(index, params)| NewChild {
                id: new_job_id(),
                index,
                params,
            })
            .collect();
        let created = self
            .inner
            .store
            .insert_children(&parent.id, kind.name, &rows)
            .await?;
        let now = self.inner.store.get_job_head(&parent.id).await?;
        if now.is_none_or(|p| p.status.is_terminal()) {
            self.end_children(&parent.id, "the parent job ended")
                .await?;
        }
        Ok(created)
    }

    /// The in-flight cap of a parent: the one it set, else the runners of the
    /// live fleet (at least one).
    async fn cap(&self, parent: &JobRecord) -> Result<i64, ApiError> {
        if let Some(cap) = parent.child_cap.filter(|c| *c > 0) {
            return Ok(cap);
        }
        Ok(self.inner.store.fleet_runners().await?.max(1))
    }

    /// Moves a parent along: releases children up to its cap (and enqueues
    /// them), shows its progress, and wakes it to combine results once every
    /// child has ended. Safe to call any number of times from anywhere.
    pub async fn advance(&self, parent_id: &str) -> Result<ChildCounts, ApiError> {
        let store = &self.inner.store;
        let Some(parent) = store.get_job_head(parent_id).await? else {
            return Ok(ChildCounts::default());
        };
        if parent.status.is_terminal() {
            if parent.status != JobStatus::Succeeded {
                self.end_children(parent_id, "the parent job ended").await?;
            }
            return store.child_counts(parent_id).await.map_err(Into::into);
        }
        let cap = self.cap(&parent).await?;
        for (id, kind) in store
            .release_children(parent_id, cap, parent.child_window)
            .await?
        {
            if let Some(kind) = crate::kinds::find(&kind)
                && let Err(e) = self.push(kind, &id, true).await
            {
                // The lost-job sweep puts a released child back once it is stale.
                tracing::warn!(job.id = id, error = %e, "enqueueing a released child failed");
            }
        }
        let counts = store.child_counts(parent_id).await?;
        if counts.total > 0 {
            let (progress, stage) = progress_of(&parent, &counts);
            // Progress is shown, not relied on: the store retried a busy moment,
            // and a write that still failed does not stop the parent moving on.
            if let Err(e) = store.set_progress(parent_id, progress, &stage).await {
                tracing::warn!(job.id = parent_id, error = %e, "parent progress not recorded");
            }
        }
        // A parent that starts children as others end (a pipeline's steps) is
        // woken by each newly ended child; others once all have ended.
        let all_ended = counts.done() == counts.total;
        let newly_ended = !all_ended
            && parent.def().is_some_and(KindDef::wakes_per_child)
            && counts.done() > store.children_seen(parent_id).await?;
        if counts.total > 0 && (all_ended || newly_ended) && store.wake(parent_id).await? {
            tracing::info!(
                job.id = parent_id,
                all_ended,
                "children ended; the parent runs again to go on"
            );
            if let Some(parent) = store.get_job_head(parent_id).await? {
                self.ensure_enqueued(&parent).await?;
            }
        }
        Ok(counts)
    }
}

/// A parent's progress (children done / total) and a stage line with the
/// failures and an ETA from the pace so far.
pub fn progress_of(parent: &JobRecord, counts: &ChildCounts) -> (f64, String) {
    let done = counts.done();
    let progress = if counts.total > 0 {
        done as f64 / counts.total as f64
    } else {
        0.0
    };
    let mut stage = format!(
        "{done}/{} children done, {} running",
        counts.total, counts.running
    );
    if counts.failed > 0 {
        stage.push_str(&format!(", {} failed", counts.failed));
    }
    if let Some((value, index)) = parent.best {
        stage.push_str(&format!(", best {value:.6} (child {index})"));
    }
    if let Some(eta) = eta_seconds(parent, counts) {
        stage.push_str(&format!(", about {eta} s left"));
    }
    (progress, stage)
}

/// Seconds until every child has ended, at the pace of the children so far.
pub fn eta_seconds(parent: &JobRecord, counts: &ChildCounts) -> Option<i64> {
    let done = counts.done();
    let started = parent.started_at?;
    if done == 0 || done >= counts.total {
        return None;
    }
    let elapsed = (now_ms() - started).max(0) as f64;
    Some((elapsed / done as f64 * (counts.total - done) as f64 / 1000.0).ceil() as i64)
}
