//! Queue conformance: the same tests on the embedded SQLite queue and on Redis
//! (a fresh key namespace on the machine's server), through the `Queue` API the
//! service uses. Delivery to workers is covered end to end by `distributed.rs`.

use jesse_mcp_core::jobs::{JobKind, QueuedJob};
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
    pushed_jobs_are_counted_per_kind,
    withdrawn_jobs_leave_the_queue,
    job_ids_must_be_ulids,
);

fn job(kind: JobKind) -> QueuedJob {
    QueuedJob {
        job_id: ulid::Ulid::generate().to_string(),
        kind,
    }
}

async fn pushed_jobs_are_counted_per_kind(queue: &Queue) {
    let backtests = [job(JobKind::Backtest), job(JobKind::Backtest)];
    let import = job(JobKind::CandleImport);
    for queued in backtests.iter().chain([&import]) {
        queue.push(queued).await.expect("push");
    }
    assert_eq!(queue.depth(JobKind::Backtest).await.unwrap(), 2);
    assert_eq!(queue.depth(JobKind::CandleImport).await.unwrap(), 1);
    assert_eq!(queue.depth(JobKind::StrategyValidation).await.unwrap(), 0);
    assert!(
        queue
            .contains(JobKind::Backtest, &backtests[0].job_id)
            .await
            .unwrap()
    );
    assert!(
        queue
            .contains(JobKind::CandleImport, &import.job_id)
            .await
            .unwrap()
    );
    assert!(
        !queue
            .contains(JobKind::Backtest, &import.job_id)
            .await
            .unwrap(),
        "queues are per kind"
    );
    assert!(
        !queue
            .contains(JobKind::Backtest, &ulid::Ulid::generate().to_string())
            .await
            .unwrap()
    );
}

async fn withdrawn_jobs_leave_the_queue(queue: &Queue) {
    let (first, second) = (job(JobKind::Backtest), job(JobKind::Backtest));
    queue.push(&first).await.unwrap();
    queue.push(&second).await.unwrap();
    assert!(
        queue
            .withdraw(JobKind::Backtest, &first.job_id)
            .await
            .unwrap()
    );
    assert!(
        !queue
            .withdraw(JobKind::Backtest, &first.job_id)
            .await
            .unwrap(),
        "a job is withdrawn once"
    );
    assert_eq!(queue.depth(JobKind::Backtest).await.unwrap(), 1);
    assert!(
        !queue
            .withdraw(JobKind::CandleImport, &second.job_id)
            .await
            .unwrap()
    );
    assert_eq!(queue.depth(JobKind::Backtest).await.unwrap(), 1);
}

async fn job_ids_must_be_ulids(queue: &Queue) {
    let bad = QueuedJob {
        job_id: "not-a-ulid".into(),
        kind: JobKind::Backtest,
    };
    let error = queue
        .push(&bad)
        .await
        .expect_err("a non-ULID id is refused");
    assert!(error.to_string().contains("ULID"), "{error}");
    assert_eq!(queue.depth(JobKind::Backtest).await.unwrap(), 0);
}
