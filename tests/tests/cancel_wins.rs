//! Cancel and timeouts always win: during a candle import's waits between
//! retries, during deep validation, across a worker restart, and against a
//! worker that lost its lease while stalled.

use std::time::Duration;

use jesse_mcp_tests::fake_exchange::{Failure, FakeExchange};
use jesse_mcp_tests::{Options, TestApp, backtest_body, synthetic_csv};
use serde_json::json;

const DAY: i64 = 86_400_000;
const JAN_1: i64 = 1_704_067_200_000;
const LONG: Duration = Duration::from_secs(120);

async fn import_app(exchange: &FakeExchange, job_timeout_secs: u64) -> TestApp {
    let endpoints = json!({"Binance Perpetual Futures": format!("{}/fapi", exchange.base)});
    TestApp::spawn(Options {
        exchange_endpoints: Some(endpoints.to_string()),
        job_timeout_secs,
        ..Default::default()
    })
    .await
}

/// Every klines request from the second on answers 429 with Retry-After: 60,
/// so the import sits in a minute-long wait between retries.
fn rate_limit_from_second_request(exchange: &FakeExchange) {
    for number in 2..=20 {
        exchange.fail_request(
            number,
            Failure::RateLimited {
                retry_after_secs: 60,
            },
        );
    }
}

async fn wait_for_requests(exchange: &FakeExchange, at_least: u64) {
    for _ in 0..600 {
        if exchange.requests() >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the import made only {} requests to the exchange",
        exchange.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_waiting_between_retries_is_cancelled_at_once() {
    let exchange = FakeExchange::start(&[("BTCUSDT", JAN_1, JAN_1 + 3 * DAY)]).await;
    rate_limit_from_second_request(&exchange);
    let app = import_app(&exchange, 1800).await;
    let (status, answer) = app
        .post_json(
            "/v1/candles/imports",
            &json!({"exchange": "Binance Perpetual Futures", "symbol": "BTC-USDT",
                    "start_date": "2024-01-01", "end_date": "2024-01-04"}),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let job_id = answer["job_id"].as_str().unwrap().to_string();
    // The listing probe, then the first page: rate-limited, a 60 s wait begins.
    wait_for_requests(&exchange, 2).await;
    let (status, _) = app
        .post_json(&format!("/v1/jobs/{job_id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200);
    // Within the cancel poll, not after the 60 s wait (the wait's deadline here
    // is well under it).
    let job = app.wait(&job_id, Duration::from_secs(20)).await;
    assert_eq!(job["status"], "cancelled", "{job}");
    assert_eq!(exchange.requests(), 2, "no request after the cancel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_waiting_between_retries_ends_at_the_job_timeout() {
    let exchange = FakeExchange::start(&[("BTCUSDT", JAN_1, JAN_1 + 3 * DAY)]).await;
    rate_limit_from_second_request(&exchange);
    let app = import_app(&exchange, 5).await;
    let (status, answer) = app
        .post_json(
            "/v1/candles/imports",
            &json!({"exchange": "Binance Perpetual Futures", "symbol": "BTC-USDT",
                    "start_date": "2024-01-01", "end_date": "2024-01-04"}),
        )
        .await;
    assert_eq!(status, 202, "{answer}");
    let job_id = answer["job_id"].as_str().unwrap();
    let job = app.wait(job_id, Duration::from_secs(30)).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "timed_out", "{job}");
    assert!(
        job["error"]["message"]
            .as_str()
            .unwrap()
            .contains("JESSE_MCP_JOB_TIMEOUT_SECS"),
        "{job}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_validation_is_cancelled() {
    let app = TestApp::spawn(Options::default()).await;
    // Module-level code that takes its time (interruptible), as a slow import would.
    let code = "import time\nfrom jesse.strategies import Strategy\ntime.sleep(40)\n\n\
                class Slow(Strategy):\n    def should_long(self):\n        return False\n\n    \
                def go_long(self):\n        pass\n";
    // The call waits for the deep report a while; the job is found meanwhile.
    let request = reqwest::Client::new()
        .post(app.url("/v1/strategies/validate"))
        .json(&json!({"name": "Slow", "code": code, "deep": true}))
        .send();
    let call = tokio::spawn(request);
    let deadline = std::time::Instant::now() + LONG;
    let job_id = loop {
        let (_, listed) = app.get("/v1/jobs").await;
        let found = listed["jobs"].as_array().and_then(|jobs| {
            jobs.iter()
                .find(|j| j["kind"] == "strategy_validation")
                .and_then(|j| j["job_id"].as_str().or(j["id"].as_str()))
                .map(str::to_string)
        });
        if let Some(id) = found {
            break id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no validation job: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    app.wait_for_status(&job_id, "running", LONG).await;
    let (status, _) = app
        .post_json(&format!("/v1/jobs/{job_id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200);
    let job = app.wait(&job_id, Duration::from_secs(20)).await;
    assert_eq!(job["status"], "cancelled", "{job}");
    let answer: serde_json::Value = call.await.unwrap().unwrap().json().await.unwrap();
    assert_eq!(answer["deep"]["status"], "cancelled", "{answer}");
}

/// A cancel requested for a job whose worker died under it before it could
/// act on it: the next worker to get the job ends it cancelled instead of
/// running it. (The worker is killed first: frozen instead, it can hold
/// SQLite's write lock, and the cancel itself would wait on it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cancelled_before_a_restart_is_not_run_again() {
    let mut app = TestApp::spawn(Options {
        fixtures: &["Sleeper"],
        heartbeat_secs: 1,
        requeue_after_secs: 2,
        ..Default::default()
    })
    .await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-02-01", 3))
        .await;
    let job_id = app
        .submit(&backtest_body("Sleeper", "1h", "2024-01-20", "2024-01-23"))
        .await;
    app.wait_for_status(&job_id, "running", LONG).await;
    app.kill_worker(0).await;
    let (status, _) = app
        .post_json(&format!("/v1/jobs/{job_id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200);
    app.start_worker();
    let job = app.wait(&job_id, LONG).await;
    assert_eq!(job["status"], "cancelled", "{job}");
    assert!(
        job["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("was interrupted"),
        "ended by the next attempt's check, not by running again: {job}"
    );
}

/// A worker frozen past its lease (SIGSTOP), whose job another worker took
/// over, stops its own run when it wakes instead of finishing work it would
/// discard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_lost_its_lease_stops_its_run() {
    let mut app = TestApp::spawn(Options {
        fixtures: &["Sleeper"],
        heartbeat_secs: 1,
        requeue_after_secs: 2,
        ..Default::default()
    })
    .await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-02-01", 3))
        .await;
    // About 0.2 s per candle: 144 hourly candles, ~30 s.
    let job_id = app
        .submit(&backtest_body("Sleeper", "1h", "2024-01-20", "2024-01-26"))
        .await;
    app.wait_for_status(&job_id, "running", LONG).await;
    app.signal_worker(0, libc::SIGSTOP);
    app.start_worker();
    // The second worker takes the job over once the frozen one's lease expires.
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let (_, job) = app.get(&format!("/v1/jobs/{job_id}")).await;
        if job["attempts"].as_u64() == Some(2) && job["status"] == "running" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never taken over: {job}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.signal_worker(0, libc::SIGCONT);
    let log = app.data_dir().parent().unwrap().join("worker-0.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("another worker took this job over; stopping this run") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the woken worker did not stop its run:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let job = app.wait(&job_id, LONG).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 2, "{job}");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !text.contains("dropping this run's result"),
        "the woken worker ran to the end:\n{text}"
    );
}
