//! Cancelling a running backtest stops it within about a second, whatever its
//! strategy does (sleeping, or spinning and swallowing KeyboardInterrupt): the
//! runner kills the job's own process at once, answers, and stays warm, so the
//! worker runs the next job on the same runner.

use std::time::{Duration, Instant};

use jesse_mcp_tests::*;
use serde_json::json;

const LONG: Duration = Duration::from_secs(120);
/// Generous for the 250 ms cancel poll plus the kill: the old path waited for
/// SIGINT and then the grace period (10 s here).
const PROMPT: Duration = Duration::from_secs(2);

async fn cancel_and_time(app: &TestApp, job_id: &str) -> Duration {
    app.wait_for_status(job_id, "running", LONG).await;
    // Let it get well into Jesse's loop.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, body) = app
        .post_json(&format!("/v1/jobs/{job_id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let asked = Instant::now();
    let job = app.wait(job_id, LONG).await;
    let took = asked.elapsed();
    eprintln!("{job_id} cancelled {took:?} after the request");
    assert_eq!(job["status"], "cancelled", "{job}");
    assert_eq!(job["error"]["code"], "cancelled", "{job}");
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_backtest_is_cancelled_within_a_second_or_two_and_the_runner_stays() {
    let app = TestApp::spawn(Options {
        fixtures: &["Sleeper", "Runaway"],
        // The old path (SIGINT, then SIGKILL after the grace) would take this long.
        kill_grace_secs: 10,
        ..Default::default()
    })
    .await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-02-15", 3))
        .await;
    app.wait_worker_ready(0).await;
    let runners = app.runner_pids(0);
    assert_eq!(runners.len(), 1, "{runners:?}");

    // A well-behaved but slow strategy (sleeps 0.2 s a candle: minutes of work).
    let sleeper = app
        .submit(&backtest_body("Sleeper", "1h", "2024-01-20", "2024-02-10"))
        .await;
    let took = cancel_and_time(&app, &sleeper).await;
    assert!(took < PROMPT, "Sleeper took {took:?} to be cancelled");

    // One that spins and swallows KeyboardInterrupt: no signal handler helps.
    let runaway = app
        .submit(&backtest_body("Runaway", "1h", "2024-01-20", "2024-02-10"))
        .await;
    let took = cancel_and_time(&app, &runaway).await;
    assert!(took < PROMPT, "Runaway took {took:?} to be cancelled");

    // The same runner (not a respawned one) runs the next job normally.
    assert_eq!(app.runner_pids(0), runners, "the runner was replaced");
    let next = app
        .submit(&backtest_body("SmaCross", "1h", "2024-01-20", "2024-02-10"))
        .await;
    let job = app.wait(&next, LONG).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    assert_eq!(app.runner_pids(0), runners, "the runner was replaced");
}
