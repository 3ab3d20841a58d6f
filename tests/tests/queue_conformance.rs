//! Queue conformance: the same tests on the embedded SQLite queue and on Redis
//! (a fresh key namespace on the machine's server), through the `Queue` API the
//! service uses. Delivery to workers is covered end to end by `distributed.rs`.

use std::time::Duration;

use jesse_mcp_core::jobs::QueuedJob;
use jesse_mcp_core::kinds::Lane;
use jesse_mcp_core::queue::Queue;
use jesse_mcp_tests::backends::{fresh_namespace, redis_url};

struct Fixture {
    queue: Queue,
    _dir: tempfile::TempDir,
}

async fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Queue::open(dir.path(), None, "unused")
        .await
        .expect("open SQLite queue");
    assert_eq!(queue.engine(), "sqlite");
    Fixture { queue, _dir: dir }
}

async fn redis() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = Queue::open(dir.path(), Some(&redis_url()), &fresh_namespace())
        .await
        .expect("open Redis queue (run ops/services.sh)");
    assert_eq!(queue.engine(), "redis");
    Fixture { queue, _dir: dir }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::sqlite().await.queue).await;
                }
            )*
        }
        mod on_redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::redis().await.queue).await;
                }
            )*
        }
    };
}

conformance!(
    pushed_jobs_are_counted_per_lane,
    withdrawn_jobs_leave_the_queue,
    ended_tasks_are_vacuumed_and_their_ids_can_be_pushed_again,
    job_ids_must_be_ulids,
);

/// A queued job and the lane its kind travels on.
fn job(kind: &str) -> (Lane, QueuedJob) {
    let lane = jesse_mcp_core::kinds::find(kind)
        .expect("a known kind")
        .lane;
    (
        lane,
        QueuedJob {
            job_id: ulid::Ulid::generate().to_string(),
            kind: kind.to_string(),
            child: false,
        },
    )
}

async fn pushed_jobs_are_counted_per_lane(queue: &Queue) {
    let backtests = [job("backtest"), job("backtest")];
    let batch = job("backtest_batch");
    for (lane, queued) in backtests.iter().chain([&batch]) {
        queue.push(*lane, queued).await.expect("push");
    }
    assert_eq!(queue.depth(Lane::Runner).await.unwrap(), 2);
    assert_eq!(queue.depth(Lane::Control).await.unwrap(), 1);
    assert!(
        queue
            .holds(Lane::Runner, &backtests[0].1.job_id)
            .await
            .unwrap()
    );
    assert!(queue.holds(Lane::Control, &batch.1.job_id).await.unwrap());
    assert!(
        !queue.holds(Lane::Runner, &batch.1.job_id).await.unwrap(),
        "queues are per lane"
    );
    assert!(
        !queue
            .holds(Lane::Runner, &ulid::Ulid::generate().to_string())
            .await
            .unwrap()
    );
}

async fn withdrawn_jobs_leave_the_queue(queue: &Queue) {
    let ((lane, first), (_, second)) = (job("backtest"), job("backtest"));
    queue.push(lane, &first).await.unwrap();
    queue.push(lane, &second).await.unwrap();
    assert!(queue.withdraw(lane, &first.job_id).await.unwrap());
    assert!(
        !queue.withdraw(lane, &first.job_id).await.unwrap(),
        "a job is withdrawn once"
    );
    assert_eq!(queue.depth(lane).await.unwrap(), 1);
    assert!(!queue.withdraw(Lane::Control, &second.job_id).await.unwrap());
    assert_eq!(queue.depth(lane).await.unwrap(), 1);
}

async fn ended_tasks_are_vacuumed_and_their_ids_can_be_pushed_again(queue: &Queue) {
    let ((kind, ended), (_, live)) = (job("backtest"), job("backtest"));
    queue.push(kind, &ended).await.unwrap();
    queue.push(kind, &live).await.unwrap();
    assert!(queue.withdraw(kind, &ended.job_id).await.unwrap());
    assert!(
        !queue.holds(kind, &ended.job_id).await.unwrap(),
        "a withdrawn task has ended"
    );
    assert!(queue.holds(kind, &live.job_id).await.unwrap());

    // Vacuuming everything that ended (age 0) keeps the live task.
    queue.vacuum(kind, Duration::ZERO).await.unwrap();
    assert_eq!(
        queue.retained(kind).await.unwrap(),
        1,
        "only the live task is kept"
    );
    assert_eq!(queue.depth(kind).await.unwrap(), 1);
    // Forgetting leaves a live task alone.
    queue.forget_ended(kind, &live.job_id).await.unwrap();
    assert!(queue.holds(kind, &live.job_id).await.unwrap());

    // An ended task's id can be pushed again once forgotten (the lost-job sweep
    // puts back a job whose task ended while the store still says queued).
    queue.forget_ended(kind, &ended.job_id).await.unwrap();
    queue
        .push(kind, &ended)
        .await
        .expect("push the ended id again");
    assert!(queue.holds(kind, &ended.job_id).await.unwrap());
    assert_eq!(queue.depth(kind).await.unwrap(), 2);
    assert_eq!(
        queue.vacuum(kind, Duration::ZERO).await.unwrap(),
        0,
        "nothing has ended"
    );
    assert_eq!(queue.retained(kind).await.unwrap(), 2);
}

async fn job_ids_must_be_ulids(queue: &Queue) {
    let bad = QueuedJob {
        job_id: "not-a-ulid".into(),
        kind: "backtest".into(),
        child: false,
    };
    let error = queue
        .push(Lane::Runner, &bad)
        .await
        .expect_err("a non-ULID id is refused");
    assert!(error.to_string().contains("ULID"), "{error}");
    assert_eq!(queue.depth(Lane::Runner).await.unwrap(), 0);
}

/// With a worker: a task that ran to the end is vacuumed by the API's
/// housekeeping once it is older than JESSE_MCP_QUEUE_RETENTION_SECS.
async fn finished_tasks_are_vacuumed(options: jesse_mcp_tests::Options) {
    use jesse_mcp_tests::*;
    let app = TestApp::spawn(Options {
        queue_retention_secs: 0,
        ..options
    })
    .await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-02-15", 3))
        .await;
    let job_id = app
        .submit(&backtest_body("SmaCross", "1h", "2024-01-20", "2024-02-10"))
        .await;
    let job = app.wait(&job_id, Duration::from_secs(120)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let queue = app
        .options
        .backends(&app.data_dir())
        .open()
        .await
        .expect("open the queue")
        .1;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while queue.retained(Lane::Runner).await.unwrap() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the finished task was never vacuumed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.job_count().await, 1, "the store keeps the job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_tasks_are_vacuumed_on_sqlite() {
    finished_tasks_are_vacuumed(jesse_mcp_tests::Options::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_tasks_are_vacuumed_on_redis() {
    finished_tasks_are_vacuumed(jesse_mcp_tests::Options {
        queue_url: Some(redis_url()),
        ..Default::default()
    })
    .await;
}
