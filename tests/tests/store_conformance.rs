//! The store conformance suite: every test runs against SQLite (a fresh file)
//! and Postgres (a fresh database on the machine's server), through the same
//! `Store` API, and must see the same answers.

use std::time::Duration;

use jesse_mcp_core::candles::{Candle, CandleSource, synthetic};
use jesse_mcp_core::error::ErrorBody;
use jesse_mcp_core::jobs::JobStatus;
use jesse_mcp_core::store::{
    CancelOutcome, Claim, Gap, Inserted, JobFilter, JobResult, NewChild, NewJob, ScheduleRecord,
    Store, UpsertCounts,
};
use jesse_mcp_core::time::{DAY_MS, MINUTE_MS, parse_day};
use jesse_mcp_tests::backends::fresh_postgres;
use serde_json::json;

/// A store and whatever must live as long as it (the SQLite file's directory).
struct Fixture {
    store: Store,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), None)
        .await
        .expect("open SQLite store");
    assert_eq!(store.engine(), "sqlite");
    Fixture {
        store,
        _dir: Some(dir),
    }
}

async fn postgres() -> Fixture {
    let url = fresh_postgres().await;
    let dir = std::env::temp_dir();
    let store = Store::open(&dir, Some(&url))
        .await
        .expect("open Postgres store");
    assert_eq!(store.engine(), "postgres");
    Fixture { store, _dir: None }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::sqlite().await.store).await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::postgres().await.store).await;
                }
            )*
        }
    };
}

conformance!(
    jobs_insert_get_list_and_idempotency,
    claims_leases_and_outcomes,
    an_expired_lease_is_taken_over,
    cancel_queued_running_and_finished,
    released_jobs_are_queued_again,
    results_are_replaced_never_duplicated,
    children_are_created_once_released_under_a_cap_and_cancelled_with_their_parent,
    unknown_kinds_are_listed_as_they_are,
    candles_upsert_load_and_summaries,
    gaps_are_half_open_runs,
    schedules_leases_counters_validations,
    concurrent_imports_of_one_series_count_exactly,
    loading_a_wide_range_allocates_what_is_stored,
    candle_pages_walk_a_series_in_order,
    concurrent_schedule_replacements_all_succeed,
    a_large_upsert_commits_chunk_by_chunk,
);

fn new_id() -> String {
    jesse_mcp_core::jobs::new_job_id()
}

async fn insert(store: &Store, key: Option<&str>, params: serde_json::Value) -> Inserted {
    let id = new_id();
    store
        .insert_job(NewJob {
            id: &id,
            kind: "backtest",
            params: &params,
            idempotency_key: key,
        })
        .await
        .expect("insert job")
}

fn created(inserted: Inserted) -> jesse_mcp_core::store::JobRecord {
    match inserted {
        Inserted::Created(job) => job,
        Inserted::Existing(job) => panic!("expected a new job, got existing {}", job.id),
    }
}

async fn jobs_insert_get_list_and_idempotency(store: &Store) {
    let first = created(insert(store, Some("key-1"), json!({"n": 1})).await);
    assert_eq!(first.status, JobStatus::Queued);
    assert_eq!(first.params, json!({"n": 1}));
    assert_eq!(first.attempts, 0);
    assert!(!first.cancel_requested);

    match insert(store, Some("key-1"), json!({"n": 2})).await {
        Inserted::Existing(job) => {
            assert_eq!(job.id, first.id);
            assert_eq!(job.params, json!({"n": 1}), "the first request is kept");
        }
        Inserted::Created(job) => panic!("idempotency key ignored: new job {}", job.id),
    }
    let second = created(insert(store, None, json!({"n": 3})).await);
    let third = created(insert(store, None, json!({"n": 4})).await);

    let all = store
        .list_jobs(&JobFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let ids: Vec<_> = all.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, [&third.id, &second.id, &first.id], "newest first");

    let page = store
        .list_jobs(&JobFilter {
            before: Some(third.id.clone()),
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, second.id);

    store
        .finish_job(
            &second.id,
            None,
            JobStatus::Succeeded,
            None,
            Some(&json!({"x": 1})),
        )
        .await
        .unwrap();
    let done = store
        .list_jobs(&JobFilter {
            status: Some(JobStatus::Succeeded),
            kind: Some("backtest".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].summary, Some(json!({"x": 1})));
    assert_eq!(done[0].progress, 1.0);
    assert!(
        store
            .get_job("01ARZ3NDEKTSV4RRFFQ69G5FAV")
            .await
            .unwrap()
            .is_none()
    );

    let counts = store.job_counts().await.unwrap();
    assert!(
        counts.contains(&("backtest".into(), "queued".into(), 2)),
        "{counts:?}"
    );
    assert!(
        counts.contains(&("backtest".into(), "succeeded".into(), 1)),
        "{counts:?}"
    );
}

async fn claims_leases_and_outcomes(store: &Store) {
    let job = created(insert(store, None, json!({})).await);
    let claimed = match store
        .start_attempt(&job.id, "worker-a", 60_000)
        .await
        .unwrap()
    {
        Claim::Claimed(job) => job,
        other => panic!("expected a claim, got {other:?}"),
    };
    assert_eq!(claimed.status, JobStatus::Running);
    assert_eq!(claimed.attempts, 1);
    assert!(matches!(
        store
            .start_attempt(&job.id, "worker-b", 60_000)
            .await
            .unwrap(),
        Claim::HeldElsewhere
    ));
    assert!(store.holds_lease(&job.id, "worker-a").await.unwrap());
    assert!(!store.holds_lease(&job.id, "worker-b").await.unwrap());
    assert!(
        store
            .renew_lease(&job.id, "worker-a", 60_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .renew_lease(&job.id, "worker-b", 60_000)
            .await
            .unwrap()
    );

    store
        .set_progress(&job.id, 0.5, "running the backtest")
        .await
        .unwrap();
    let running = store.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!(running.progress, 0.5);
    assert_eq!(running.stage.as_deref(), Some("running the backtest"));

    let error = ErrorBody::new("strategy_error", "boom");
    assert!(
        !store
            .finish_job(
                &job.id,
                Some("worker-b"),
                JobStatus::Failed,
                Some(&error),
                None
            )
            .await
            .unwrap(),
        "a worker without the lease cannot record an outcome"
    );
    assert!(
        store
            .finish_job(
                &job.id,
                Some("worker-a"),
                JobStatus::Failed,
                Some(&error),
                None
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .finish_job(&job.id, Some("worker-a"), JobStatus::Succeeded, None, None)
            .await
            .unwrap(),
        "a terminal job keeps its first outcome"
    );
    let failed = store.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.error, Some(error));
    assert!(failed.finished_at.is_some() && failed.started_at.is_some());
    assert!(matches!(
        store
            .start_attempt(&job.id, "worker-a", 60_000)
            .await
            .unwrap(),
        Claim::NotRunnable
    ));
    let durations = store.job_durations().await.unwrap();
    assert_eq!(durations.len(), 1);
    assert!(durations[0].1 >= 0.0);
}

async fn an_expired_lease_is_taken_over(store: &Store) {
    let job = created(insert(store, None, json!({})).await);
    assert!(matches!(
        store
            .start_attempt(&job.id, "dead-worker", 1)
            .await
            .unwrap(),
        Claim::Claimed(_)
    ));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let taken = match store
        .start_attempt(&job.id, "live-worker", 60_000)
        .await
        .unwrap()
    {
        Claim::Claimed(job) => job,
        other => panic!("an expired lease must be taken over, got {other:?}"),
    };
    assert_eq!(taken.attempts, 2);
    assert!(!store.holds_lease(&job.id, "dead-worker").await.unwrap());
    assert!(
        !store
            .finish_job(
                &job.id,
                Some("dead-worker"),
                JobStatus::Succeeded,
                None,
                None
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .finish_job(
                &job.id,
                Some("live-worker"),
                JobStatus::Succeeded,
                None,
                None
            )
            .await
            .unwrap()
    );
}

async fn cancel_queued_running_and_finished(store: &Store) {
    let queued = created(insert(store, None, json!({})).await);
    match store.request_cancel(&queued.id).await.unwrap() {
        Some(CancelOutcome::Cancelled(job)) => assert_eq!(job.status, JobStatus::Cancelled),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.start_attempt(&queued.id, "w", 60_000).await.unwrap(),
        Claim::NotRunnable
    ));

    let running = created(insert(store, None, json!({})).await);
    store.start_attempt(&running.id, "w", 60_000).await.unwrap();
    match store.request_cancel(&running.id).await.unwrap() {
        Some(CancelOutcome::Requested(job)) => assert!(job.cancel_requested),
        other => panic!("{other:?}"),
    }
    assert!(store.cancel_requested(&running.id).await.unwrap());
    store
        .finish_job(&running.id, Some("w"), JobStatus::Succeeded, None, None)
        .await
        .unwrap();
    assert!(matches!(
        store.request_cancel(&running.id).await.unwrap(),
        Some(CancelOutcome::AlreadyFinished(_))
    ));
    assert!(store.request_cancel(&new_id()).await.unwrap().is_none());
}

async fn released_jobs_are_queued_again(store: &Store) {
    let job = created(insert(store, None, json!({})).await);
    store.start_attempt(&job.id, "w", 60_000).await.unwrap();
    assert!(!store.release_job(&job.id, "other").await.unwrap());
    assert!(store.release_job(&job.id, "w").await.unwrap());
    let back = store.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!(back.status, JobStatus::Queued);
    assert_eq!(back.attempts, 0, "a released attempt is not counted");
    assert!(matches!(
        store
            .start_attempt(&job.id, "another", 60_000)
            .await
            .unwrap(),
        Claim::Claimed(_)
    ));

    let stale = created(insert(store, None, json!({})).await);
    let later = jesse_mcp_core::time::now_ms() + 1_000;
    let found = store.stale_jobs(later, 10).await.unwrap();
    assert_eq!(
        found.iter().map(|j| &j.id).collect::<Vec<_>>(),
        [&stale.id],
        "a queued job, not a running one whose lease is still good"
    );
    assert!(
        store
            .stale_jobs(stale.created_at - 1, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A running job whose lease ran out is stale too (its worker died or stalled).
    let stalled = created(insert(store, None, json!({})).await);
    assert!(matches!(
        store
            .start_attempt(&stalled.id, "stalled", 1)
            .await
            .unwrap(),
        Claim::Claimed(_)
    ));
    let found = store.stale_jobs(later, 10).await.unwrap();
    assert_eq!(
        found.iter().map(|j| &j.id).collect::<Vec<_>>(),
        [&stale.id, &stalled.id]
    );
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let looked_at = jesse_mcp_core::time::now_ms();
    store.touch_job(&stalled.id).await.unwrap();
    let found = store.stale_jobs(looked_at, 10).await.unwrap();
    assert_eq!(
        found.iter().map(|j| &j.id).collect::<Vec<_>>(),
        [&stale.id],
        "a job just looked at waits for the next round"
    );
}

async fn results_are_replaced_never_duplicated(store: &Store) {
    let job = created(insert(store, None, json!({})).await);
    let trades: Vec<serde_json::Value> = (0..1203).map(|i| json!({"id": i})).collect();
    let mut result = JobResult {
        body: json!({"metrics": {"net_profit_percentage": 1.5, "sharpe_ratio": null}, "timings": {}}),
        parts: vec![("trades".into(), trades.clone())],
    };
    store
        .save_result(&job.id, "backtest", &result)
        .await
        .unwrap();
    result.body["metrics"] = json!({"net_profit_percentage": 2.5});
    result.parts[0].1.truncate(1001);
    store
        .save_result(&job.id, "backtest", &result)
        .await
        .unwrap();
    assert_eq!(store.count_results(&job.id).await.unwrap(), 1);
    store
        .patch_result(&job.id, "timings", &json!({"write_ms": 3.0}))
        .await
        .unwrap();
    let (kind, body) = store.result_body(&job.id).await.unwrap().unwrap();
    assert_eq!(kind, "backtest");
    assert_eq!(body["metrics"], json!({"net_profit_percentage": 2.5}));
    assert_eq!(body["timings"], json!({"write_ms": 3.0}));
    assert_eq!(
        store.count_result_rows(&job.id, "trades").await.unwrap(),
        1001,
        "a re-run's rows replace the old ones"
    );
    let page = store.result_rows(&job.id, "trades", 499, 3).await.unwrap();
    assert_eq!(
        page,
        trades[499..502].to_vec(),
        "a page across a chunk boundary keeps the order"
    );
    assert!(store.result_body(&new_id()).await.unwrap().is_none());
}

async fn children_are_created_once_released_under_a_cap_and_cancelled_with_their_parent(
    store: &Store,
) {
    let parent = created(insert(store, None, json!({})).await);
    let children: Vec<NewChild> = (0..7)
        .map(|index| NewChild {
            id: new_id(),
            index,
            params: json!({"i": index}),
        })
        .collect();
    assert_eq!(
        store
            .insert_children(&parent.id, "backtest", &children)
            .await
            .unwrap(),
        7
    );
    // A resumed parent creating them again adds nothing.
    let again: Vec<NewChild> = (0..7)
        .map(|index| NewChild {
            id: new_id(),
            index,
            params: json!({"i": index}),
        })
        .collect();
    assert_eq!(
        store
            .insert_children(&parent.id, "backtest", &again)
            .await
            .unwrap(),
        0
    );
    // Held back: the lost-job sweep never sees them.
    assert!(
        store
            .stale_jobs(i64::MAX, 100)
            .await
            .unwrap()
            .iter()
            .all(|j| j.parent_id.is_none())
    );
    assert!(
        store
            .release_children(&parent.id, 3, None)
            .await
            .unwrap()
            .is_empty(),
        "a parent that is not running releases nothing"
    );
    assert!(matches!(
        store.start_attempt(&parent.id, "w1", 60_000).await.unwrap(),
        Claim::Claimed(_)
    ));
    let first: Vec<String> = store
        .release_children(&parent.id, 3, None)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, kind)| {
            assert_eq!(kind, "backtest");
            id
        })
        .collect();
    assert_eq!(
        first,
        children[..3]
            .iter()
            .map(|c| c.id.clone())
            .collect::<Vec<_>>(),
        "in order"
    );
    assert!(
        store
            .release_children(&parent.id, 3, None)
            .await
            .unwrap()
            .is_empty(),
        "the cap holds"
    );
    // Concurrent releases never exceed the cap.
    assert!(matches!(
        store.start_attempt(&first[0], "w2", 60_000).await.unwrap(),
        Claim::Claimed(_)
    ));
    store
        .finish_job(&first[0], Some("w2"), JobStatus::Succeeded, None, None)
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        store.release_children(&parent.id, 3, None),
        store.release_children(&parent.id, 3, None)
    );
    assert_eq!(a.unwrap().len() + b.unwrap().len(), 1);
    let counts = store.child_counts(&parent.id).await.unwrap();
    assert_eq!(
        (
            counts.total,
            counts.succeeded,
            counts.queued,
            counts.in_flight
        ),
        (7, 1, 6, 3)
    );
    // Waiting parents hold no lease and wake once.
    assert!(store.set_waiting(&parent.id, "w1").await.unwrap());
    assert!(
        !store.set_waiting(&parent.id, "w1").await.unwrap(),
        "only its lease holder"
    );
    assert_eq!(
        store.stale_waiting(i64::MAX, 10).await.unwrap()[0].id,
        parent.id
    );
    assert!(store.wake(&parent.id).await.unwrap());
    assert!(!store.wake(&parent.id).await.unwrap(), "woken exactly once");
    assert!(
        matches!(store.start_attempt(&parent.id, "w3", 60_000).await.unwrap(), Claim::Claimed(p) if p.attempts == 1),
        "the run after a wake-up continues the parent; it is not another attempt"
    );
    let page = store.child_results(&parent.id, -1, 2).await.unwrap();
    assert_eq!(page.iter().map(|c| c.index).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(page[0].status, JobStatus::Succeeded);
    // Cancelling ends the queued ones, released or not, and flags the running.
    assert!(matches!(
        store.start_attempt(&first[1], "w2", 60_000).await.unwrap(),
        Claim::Claimed(_)
    ));
    let withdrawn = store
        .cancel_children(
            &parent.id,
            &jesse_mcp_core::ErrorBody::new("cancelled", "parent"),
        )
        .await
        .unwrap();
    assert_eq!(withdrawn.len(), 2, "released queued children to withdraw");
    let counts = store.child_counts(&parent.id).await.unwrap();
    assert_eq!((counts.running, counts.cancelled, counts.queued), (1, 5, 0));
    assert!(store.cancel_requested(&first[1]).await.unwrap());
    let listed = store
        .list_jobs(&JobFilter {
            parent_id: Some(parent.id.clone()),
            limit: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|j| j.child_index).collect::<Vec<_>>(),
        [Some(0), Some(1), Some(2)]
    );
    // Thousands of children: recorded, released and cancelled in bulk.
    let big = created(insert(store, None, json!({})).await);
    let many: Vec<NewChild> = (0..5_000)
        .map(|index| NewChild {
            id: new_id(),
            index,
            params: json!({"i": index}),
        })
        .collect();
    assert_eq!(
        store
            .insert_children(&big.id, "backtest", &many)
            .await
            .unwrap(),
        5_000
    );
    assert!(matches!(
        store.start_attempt(&big.id, "w4", 60_000).await.unwrap(),
        Claim::Claimed(_)
    ));
    assert_eq!(
        store
            .release_children(&big.id, 700, None)
            .await
            .unwrap()
            .len(),
        700
    );
    let withdrawn = store
        .cancel_children(
            &big.id,
            &jesse_mcp_core::ErrorBody::new("cancelled", "parent"),
        )
        .await
        .unwrap();
    assert_eq!(withdrawn.len(), 700);
    assert_eq!(store.child_counts(&big.id).await.unwrap().cancelled, 5_000);
    // The fleet's runners.
    store.heartbeat_worker("wa", 2, 60_000).await.unwrap();
    store.heartbeat_worker("wb", 3, -1).await.unwrap();
    assert_eq!(
        store.fleet_runners().await.unwrap(),
        2,
        "an expired worker does not count"
    );
}

async fn unknown_kinds_are_listed_as_they_are(store: &Store) {
    let id = new_id();
    store
        .insert_job(NewJob {
            id: &id,
            kind: "from_the_future",
            params: &json!({}),
            idempotency_key: None,
        })
        .await
        .unwrap();
    let listed = store
        .list_jobs(&JobFilter {
            limit: 5,
            ..Default::default()
        })
        .await
        .unwrap();
    let job = listed.iter().find(|j| j.id == id).expect("listed");
    assert_eq!(job.kind, "from_the_future");
    assert!(job.def().is_none());
}

fn day(text: &str) -> i64 {
    parse_day(text).unwrap()
}

async fn candles_upsert_load_and_summaries(store: &Store) {
    let (exchange, symbol) = ("Binance Spot", "ETH-USDT");
    let start = day("2024-03-01");
    let candles = synthetic(start, start + 2 * DAY_MS, 3_000.0, 7);
    let counts = store
        .upsert_candles(exchange, symbol, CandleSource::Csv, &candles)
        .await
        .unwrap();
    assert_eq!(
        counts,
        UpsertCounts {
            inserted: 2880,
            updated: 0,
            unchanged: 0
        }
    );
    let again = store
        .upsert_candles(exchange, symbol, CandleSource::Csv, &candles)
        .await
        .unwrap();
    assert_eq!(
        again,
        UpsertCounts {
            inserted: 0,
            updated: 0,
            unchanged: 2880
        }
    );
    let version = store
        .series_version(exchange, symbol)
        .await
        .unwrap()
        .unwrap();

    let mut changed = candles[100..102].to_vec();
    changed[0].close += 1.0;
    let more = synthetic(
        start + 2 * DAY_MS,
        start + 2 * DAY_MS + 10 * MINUTE_MS,
        3_000.0,
        8,
    );
    changed.extend_from_slice(&more);
    let mixed = store
        .upsert_candles(exchange, symbol, CandleSource::Csv, &changed)
        .await
        .unwrap();
    assert_eq!(
        mixed,
        UpsertCounts {
            inserted: 10,
            updated: 1,
            unchanged: 1
        }
    );
    assert!(
        store
            .series_version(exchange, symbol)
            .await
            .unwrap()
            .unwrap()
            > version
    );

    let series = store.list_series().await.unwrap();
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].first, start);
    assert_eq!(series[0].last, start + 2 * DAY_MS + 9 * MINUTE_MS);
    assert_eq!(series[0].rows, 2890);

    // Loaded rows are exactly what was written, in Jesse's column order.
    let loaded = store
        .load_candles(
            exchange,
            symbol,
            start + 99 * MINUTE_MS,
            start + 102 * MINUTE_MS,
        )
        .await
        .unwrap();
    let expect = |c: &Candle| [c.timestamp as f64, c.open, c.close, c.high, c.low, c.volume];
    let mut wanted = expect(&candles[99]).to_vec();
    wanted.extend(expect(&changed[0]));
    wanted.extend(expect(&changed[1]));
    assert_eq!(loaded.len(), 18);
    for (got, want) in loaded.iter().zip(&wanted) {
        assert_eq!(got.to_bits(), want.to_bits(), "{loaded:?} vs {wanted:?}");
    }
    let year = store
        .load_candles(exchange, symbol, start, start + 3 * DAY_MS)
        .await
        .unwrap();
    assert_eq!(year.len(), 2890 * 6);
    assert_eq!(
        store
            .count_candles(exchange, symbol, start, start + DAY_MS)
            .await
            .unwrap(),
        1440
    );
    assert!(
        store
            .load_candles("Bybit", symbol, start, start + DAY_MS)
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(store.delete_series(exchange, symbol).await.unwrap(), 2890);
    assert!(store.list_series().await.unwrap().is_empty());
    assert!(
        store
            .series_version(exchange, symbol)
            .await
            .unwrap()
            .is_none()
    );
}

async fn gaps_are_half_open_runs(store: &Store) {
    let (exchange, symbol) = ("Bybit USDT Perpetual", "BTC-USDT");
    let start = day("2024-01-01");
    let mut candles = synthetic(start, start + DAY_MS, 40_000.0, 1);
    // Remove minutes 10..15 and 600 (a 5-minute and a 1-minute gap).
    candles.retain(|c| {
        let minute = (c.timestamp - start) / MINUTE_MS;
        !(10..15).contains(&minute) && minute != 600
    });
    store
        .upsert_candles(exchange, symbol, CandleSource::Csv, &candles)
        .await
        .unwrap();
    let gaps = store
        .gaps(
            exchange,
            symbol,
            start - 2 * MINUTE_MS,
            start + DAY_MS + MINUTE_MS,
        )
        .await
        .unwrap();
    let at = |m: i64| start + m * MINUTE_MS;
    assert_eq!(
        gaps,
        [
            Gap {
                start: at(-2),
                end: at(0),
                minutes: 2
            },
            Gap {
                start: at(10),
                end: at(15),
                minutes: 5
            },
            Gap {
                start: at(600),
                end: at(601),
                minutes: 1
            },
            Gap {
                start: at(1440),
                end: at(1441),
                minutes: 1
            },
        ]
    );
    assert_eq!(store.refresh_gap_count(exchange, symbol).await.unwrap(), 2);
    assert_eq!(store.list_series().await.unwrap()[0].gaps, 2);
    store.mark_imported(exchange, symbol).await.unwrap();
    assert!(
        store.list_series().await.unwrap()[0]
            .last_import_at
            .is_some()
    );
    // A complete range inside the series answers from the summary.
    assert!(
        store
            .gaps(exchange, symbol, at(20), at(500))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn schedules_leases_counters_validations(store: &Store) {
    let schedule = |symbol: &str, created_at| ScheduleRecord {
        exchange: "Binance Spot".into(),
        symbol: symbol.into(),
        cron: "0 30 2 * * *".into(),
        start_date: Some("2024-01-01".into()),
        created_at,
        last_fired_at: None,
    };
    store
        .replace_schedules(&[schedule("BTC-USDT", 1), schedule("ETH-USDT", 1)])
        .await
        .unwrap();
    store
        .mark_fired("Binance Spot", "BTC-USDT", 42)
        .await
        .unwrap();
    store
        .replace_schedules(&[schedule("BTC-USDT", 5), schedule("SOL-USDT", 5)])
        .await
        .unwrap();
    let listed = store.list_schedules().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].symbol, "BTC-USDT");
    assert_eq!(
        listed[0].last_fired_at,
        Some(42),
        "a kept series keeps its last tick"
    );
    assert_eq!(listed[0].created_at, 1);
    assert_eq!(listed[1].symbol, "SOL-USDT");
    assert_eq!(listed[1].last_fired_at, None);

    assert!(store.try_lease("scheduler", "api-1", 60_000).await.unwrap());
    assert!(
        store.try_lease("scheduler", "api-1", 60_000).await.unwrap(),
        "renewal"
    );
    assert!(!store.try_lease("scheduler", "api-2", 60_000).await.unwrap());
    assert!(store.try_lease("other", "api-2", 1).await.unwrap());
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(
        store.try_lease("other", "api-1", 60_000).await.unwrap(),
        "expired lease taken"
    );

    store.add_to_counter("runner_restarts", 2).await.unwrap();
    store.add_to_counter("runner_restarts", 3).await.unwrap();
    assert_eq!(
        store.counters().await.unwrap(),
        [("runner_restarts".to_string(), 5)]
    );

    let job = created(insert(store, None, json!({})).await);
    let report = json!({"valid": true, "errors": []});
    store
        .save_validation(&job.id, "SmaCross", "abc", &report)
        .await
        .unwrap();
    store
        .save_validation(&job.id, "SmaCross", "abc", &json!({"valid": false}))
        .await
        .unwrap();
    let (id, latest) = store
        .latest_validation("SmaCross", "abc")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(id, job.id);
    assert_eq!(latest, json!({"valid": false}));
    assert!(
        store
            .latest_validation("SmaCross", "other")
            .await
            .unwrap()
            .is_none()
    );
}

/// Writers of overlapping ranges of one series at once (each with its own
/// prices, so some rows are updated): every writer's counts add up to its
/// rows, the inserted rows add up to what is stored, and so does the summary.
async fn concurrent_imports_of_one_series_count_exactly(store: &Store) {
    let (exchange, symbol) = ("Binance Spot", "CONC-USDT");
    let start = day("2024-05-01");
    for round in 0..4u64 {
        let symbol = format!("{symbol}{round}");
        let writers: Vec<_> = (0..6u64)
            .map(|writer| {
                let store = store.clone();
                let symbol = symbol.clone();
                // 4,000 rows (two chunks) starting 500 minutes after the previous writer's.
                let from = start + (writer as i64) * 500 * MINUTE_MS;
                let mut rows =
                    synthetic(from, from + 4_000 * MINUTE_MS, 100.0, round * 10 + writer);
                if writer % 2 == 1 {
                    rows.reverse(); // the store must not depend on the caller's order
                }
                tokio::spawn(async move {
                    let counts = store
                        .upsert_candles(exchange, &symbol, CandleSource::Csv, &rows)
                        .await;
                    (rows.len() as u64, counts)
                })
            })
            .collect();
        let mut inserted = 0;
        for writer in writers {
            let (len, counts) = writer.await.expect("writer panicked");
            let counts = counts.expect("upsert");
            assert_eq!(
                counts.inserted + counts.updated + counts.unchanged,
                len,
                "{counts:?}"
            );
            inserted += counts.inserted;
        }
        let stored = store
            .count_candles(exchange, &symbol, 0, i64::MAX / 2)
            .await
            .unwrap();
        assert_eq!(stored, 4_000 + 5 * 500, "round {round}");
        assert_eq!(inserted as i64, stored, "round {round}: inserted counts");
        let series = store.list_series().await.unwrap();
        let summary = series.iter().find(|s| s.symbol == symbol).expect("summary");
        assert_eq!(summary.rows, stored, "round {round}: summary rows");
        assert_eq!(summary.first, start);
        assert_eq!(summary.last, start + (stored - 1) * MINUTE_MS);
    }
}

/// A range of decades over a series of ten rows reserves room for ten rows,
/// not for every minute of the range (a far-future end once aborted a worker).
async fn loading_a_wide_range_allocates_what_is_stored(store: &Store) {
    let (exchange, symbol) = ("Binance Spot", "WIDE-USDT");
    let start = day("2024-01-01");
    let candles = synthetic(start, start + 10 * MINUTE_MS, 10.0, 3);
    store
        .upsert_candles(exchange, symbol, CandleSource::Csv, &candles)
        .await
        .unwrap();
    let loaded = store
        .load_candles(exchange, symbol, day("1970-01-01"), day("2099-12-31"))
        .await
        .unwrap();
    assert_eq!(loaded.len(), 60);
    assert!(loaded.capacity() <= 60, "capacity {}", loaded.capacity());
    let none = store
        .load_candles(exchange, "NONE-USDT", day("1970-01-01"), day("2099-12-31"))
        .await
        .unwrap();
    assert!(none.is_empty() && none.capacity() == 0);
    // Reversed and extreme bounds are empty, never an overflow.
    assert!(
        store
            .load_candles(exchange, symbol, i64::MAX, i64::MIN)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .load_candles(exchange, symbol, i64::MIN, i64::MAX)
            .await
            .unwrap()
            .len(),
        60
    );
}

/// Pages of a series (what the CSV export streams) are its rows in order,
/// each once, whatever the page size and the gaps.
async fn candle_pages_walk_a_series_in_order(store: &Store) {
    let (exchange, symbol) = ("Binance Spot", "PAGE-USDT");
    let start = day("2024-02-01");
    let mut candles = synthetic(start, start + 1_000 * MINUTE_MS, 10.0, 4);
    candles.retain(|c| (c.timestamp - start) / MINUTE_MS % 7 != 3);
    store
        .upsert_candles(exchange, symbol, CandleSource::Csv, &candles)
        .await
        .unwrap();
    for page in [1, 6, 250, 10_000] {
        let mut got = Vec::new();
        let mut from = day("1970-01-01");
        loop {
            let rows = store
                .candle_page(exchange, symbol, from, day("2099-01-01"), page)
                .await
                .unwrap();
            assert!(rows.len() <= page);
            let Some(last) = rows.last() else { break };
            from = last.timestamp + MINUTE_MS;
            got.extend(rows);
        }
        assert_eq!(got, candles, "page size {page}");
    }
    let inner = store
        .candle_page(
            exchange,
            symbol,
            start + MINUTE_MS,
            start + 3 * MINUTE_MS,
            100,
        )
        .await
        .unwrap();
    assert_eq!(inner, candles[1..3]);
}

/// Many replacements of the schedule list at once: each succeeds, and the
/// list ends as one of them left it.
async fn concurrent_schedule_replacements_all_succeed(store: &Store) {
    let schedule = |symbol: String| ScheduleRecord {
        exchange: "Binance Spot".into(),
        symbol,
        cron: "0 30 2 * * *".into(),
        start_date: None,
        created_at: 1,
        last_fired_at: None,
    };
    for round in 0..5 {
        let writers: Vec<_> = (0..8)
            .map(|writer| {
                let store = store.clone();
                // Overlapping lists: each writer keeps some series of the others.
                let list: Vec<ScheduleRecord> = (0..6)
                    .map(|i| schedule(format!("S{}-USDT", (writer + i) % 10)))
                    .collect();
                tokio::spawn(async move { store.replace_schedules(&list).await })
            })
            .collect();
        for writer in writers {
            writer
                .await
                .expect("writer panicked")
                .unwrap_or_else(|e| panic!("round {round}: replace_schedules failed: {e}"));
        }
        let listed = store.list_schedules().await.unwrap();
        assert_eq!(listed.len(), 6, "round {round}: {listed:?}");
    }
}

/// A large upsert is written a chunk per transaction: readers see it grow
/// while it runs (it never holds the write lock for its whole length), and
/// its counts and the summary come out the same as one transaction's.
async fn a_large_upsert_commits_chunk_by_chunk(store: &Store) {
    let (exchange, symbol) = ("Binance Spot", "BIG-USDT");
    let start = day("2023-01-01");
    let rows = synthetic(start, start + 90_000 * MINUTE_MS, 20.0, 9);
    let total = rows.len() as i64;
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .upsert_candles(exchange, symbol, CandleSource::Csv, &rows)
                .await
        })
    };
    let mut seen_partial = false;
    while !writer.is_finished() {
        let stored = store
            .count_candles(exchange, symbol, start, start + total * MINUTE_MS)
            .await
            .unwrap();
        seen_partial |= stored > 0 && stored < total;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let counts = writer.await.unwrap().unwrap();
    assert_eq!(
        counts,
        UpsertCounts {
            inserted: total as u64,
            updated: 0,
            unchanged: 0
        }
    );
    assert!(
        seen_partial,
        "no reader saw the upsert part-way: one long transaction"
    );
    let series = store.list_series().await.unwrap();
    let summary = series.iter().find(|s| s.symbol == symbol).unwrap();
    assert_eq!((summary.rows, summary.first), (total, start));
}
