//! Jobs that go wrong: a raising strategy, a runaway strategy stopped by the
//! timeout, a strategy that kills its runner, and cancellation of queued and
//! running jobs. After each, the worker must still serve the next job. (Workers
//! that die or stop under a job, on either queue: `distributed.rs`.)

use std::time::Duration;

use jesse_mcp_tests::*;
use serde_json::json;

const LONG: Duration = Duration::from_secs(120);

async fn app_with_candles(options: Options) -> TestApp {
    let app = TestApp::spawn(options).await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-02-15", 3))
        .await;
    app
}

async fn assert_next_job_succeeds(app: &TestApp) {
    let job_id = app
        .submit(&backtest_body("SmaCross", "1h", "2024-01-20", "2024-02-10"))
        .await;
    let job = app.wait(&job_id, LONG).await;
    assert_eq!(
        job["status"], "succeeded",
        "the worker must serve the next job: {job}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raising_strategy_fails_with_type_message_and_line_and_runner_survives() {
    let app = app_with_candles(Options {
        fixtures: &["Raiser"],
        ..Default::default()
    })
    .await;
    let job_id = app
        .submit(&backtest_body("Raiser", "1h", "2024-01-20", "2024-02-10"))
        .await;
    let job = app.wait(&job_id, LONG).await;
    assert_eq!(job["status"], "failed", "{job}");
    let error = &job["error"];
    assert_eq!(error["code"], "strategy_error");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("ZeroDivisionError") && message.contains("line 13"),
        "{message}"
    );
    assert_eq!(error["details"]["location"]["line"], 13);
    assert_eq!(error["details"]["location"]["function"], "broken_ratio");
    assert_eq!(job["attempts"], 1, "a strategy error is not retried");
    let (status, body) = app.get(&format!("/v1/jobs/{job_id}/result")).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "job_has_no_result");
    assert_next_job_succeeds(&app).await;
}

/// Runners are batch work: niceness 10 (JESSE_MCP_RUNNER_NICE) and their own
/// session, so that where the kernel groups tasks by session (autogroup) their
/// group is niced too and the API and the databases are served first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runners_lead_their_own_session_at_the_runner_niceness() {
    let app = app_with_candles(Options {
        runners: 2,
        ..Default::default()
    })
    .await;
    app.wait_worker_ready(0).await;
    let runners = app.runner_pids(0);
    assert_eq!(runners.len(), 2, "one process per runner: {runners:?}");
    for pid in runners {
        let stat = proc_stat(pid).expect("runner is alive");
        assert_eq!(
            stat[3],
            pid.to_string(),
            "runner {pid} leads its own session"
        );
        assert_eq!(stat[2], pid.to_string(), "and its own process group");
        assert_eq!(stat[16], "10", "runner {pid} runs at niceness 10");
        if let Ok(group) = std::fs::read_to_string(format!("/proc/{pid}/autogroup")) {
            assert!(group.trim_end().ends_with("nice 10"), "autogroup: {group}");
        }
    }
    assert_next_job_succeeds(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeclared_hyperparameter_is_refused_at_submit() {
    let app = app_with_candles(Options {
        start_worker: false,
        ..Default::default()
    })
    .await;
    let mut body = backtest_body("SmaCross", "1h", "2024-01-20", "2024-02-10");
    body["hyperparameters"] = json!({"fastest": 3});
    let (status, answer) = app.post_json("/v1/backtests", &body).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("unknown_hyperparameter")),
        "{answer}"
    );
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("fastest") && message.contains("fast, slow, risk"),
        "{message}"
    );
    assert_eq!(app.job_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_strategy_is_stopped_by_the_timeout_and_the_worker_carries_on() {
    let app = app_with_candles(Options {
        fixtures: &["Runaway"],
        job_timeout_secs: 4,
        kill_grace_secs: 1,
        ..Default::default()
    })
    .await;
    let job_id = app
        .submit(&backtest_body("Runaway", "1h", "2024-01-20", "2024-02-10"))
        .await;
    let job = app.wait(&job_id, LONG).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "timed_out");
    assert!(
        job["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timed out after 4 s"),
        "{job}"
    );
    assert_next_job_succeeds(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strategy_that_kills_its_runner_fails_after_bounded_attempts() {
    let app = app_with_candles(Options {
        fixtures: &["Crasher"],
        ..Default::default()
    })
    .await;
    let job_id = app
        .submit(&backtest_body("Crasher", "1h", "2024-01-20", "2024-02-10"))
        .await;
    let job = app.wait(&job_id, Duration::from_secs(240)).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "runner_crashed");
    assert_eq!(job["attempts"], 3);
    let message = job["error"]["message"].as_str().unwrap();
    assert!(message.contains("exited with code 3"), "{message}");
    assert_next_job_succeeds(&app).await;

    // The deaths show in /metrics (workers report restarts through the store).
    let mut text = String::new();
    for _ in 0..50 {
        text = app
            .client
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("jesse_mcp_runner_restarts_total 3") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(text.contains("jesse_mcp_runner_restarts_total 3"), "{text}");
    assert!(
        text.contains("jesse_mcp_jobs{kind=\"backtest\",status=\"failed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("jesse_mcp_job_duration_seconds_count{kind=\"backtest\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("jesse_mcp_queue_depth{queue=\"runner\"} 0"),
        "{text}"
    );
    let (status, ready) = app.get("/ready").await;
    assert_eq!((status, ready["ready"].as_bool()), (200, Some(true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_queued_and_running_jobs() {
    let app = app_with_candles(Options {
        fixtures: &["Sleeper"],
        ..Default::default()
    })
    .await;
    // One runner: the sleeper occupies it, so the next job stays queued.
    let slow = app
        .submit(&backtest_body("Sleeper", "1h", "2024-01-20", "2024-02-10"))
        .await;
    app.wait_for_status(&slow, "running", LONG).await;
    let queued = app
        .submit(&backtest_body("SmaCross", "1h", "2024-01-20", "2024-02-10"))
        .await;

    let (status, job) = app
        .post_json(&format!("/v1/jobs/{queued}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(
        job["status"], "cancelled",
        "a queued job is cancelled at once"
    );

    let (status, job) = app
        .post_json(&format!("/v1/jobs/{slow}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["cancel_requested"], true);
    let job = app.wait(&slow, Duration::from_secs(30)).await;
    assert_eq!(job["status"], "cancelled", "{job}");

    // The cancelled queued job never ran, and the runner serves new work.
    assert_next_job_succeeds(&app).await;
    let (_, job) = app.get(&format!("/v1/jobs/{queued}")).await;
    assert_eq!(job["status"], "cancelled");
    assert!(
        job["started_at"].is_null(),
        "a cancelled queued job must never start: {job}"
    );

    let (status, body) = app
        .post_json(&format!("/v1/jobs/{queued}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "cancelling twice is harmless: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_are_refused_unless_allowed_and_then_reported_with_the_result() {
    let app = TestApp::spawn(Options::default()).await;
    // 2024-01-01 .. 2024-02-15 with one missing hour on 2024-01-25 from 10:00.
    let hole_start = 1_706_176_800_000i64;
    let csv = String::from_utf8(synthetic_csv("2024-01-01", "2024-02-15", 3)).unwrap();
    let kept: Vec<&str> = csv
        .lines()
        .filter(|line| {
            let ts: i64 = line.split(',').next().unwrap().parse().unwrap_or(0);
            !(hole_start..hole_start + 3_600_000).contains(&ts)
        })
        .collect();
    app.import_csv((kept.join("\n") + "\n").as_bytes()).await;
    let (_, listing) = app.get("/v1/candles").await;
    assert_eq!(listing["series"][0]["gaps"], 1, "{listing}");
    assert_eq!(listing["series"][0]["missing_minutes"], 60);

    let mut body = backtest_body("SmaCross", "1h", "2024-01-20", "2024-02-10");
    let (status, answer) = app.post_json("/v1/backtests", &body).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("missing_candles")),
        "{answer}"
    );
    assert_eq!(answer["error"]["details"]["gaps"][0]["start"], hole_start);

    body["allow_gaps"] = json!(true);
    let job_id = app.submit(&body).await;
    let job = app.wait(&job_id, LONG).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (_, result) = app.get(&format!("/v1/jobs/{job_id}/result")).await;
    let report = &result["gaps"][format!("{EXCHANGE}-{SYMBOL}")];
    assert_eq!(report["missing_minutes"], 60, "{result}");
    assert_eq!(report["gaps"][0]["end"], hole_start + 3_600_000);
    assert!(result["metrics"]["total"].is_number());
}
