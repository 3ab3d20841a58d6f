//! The notebook client (clients/python, package `jesse_mcp_client`) against the
//! real service on a fresh store: tests/python-client/check_client.py, in the
//! tools venv of ops/tools-env.sh with clients/python on PYTHONPATH, checks each
//! method against the service's own REST answer (a backtest's trades DataFrame
//! equals its trades.csv row for row, a batch's leaderboard equals the JSON),
//! typed errors from the envelope (and a failed job's as `JobFailed`),
//! Idempotency-Key replays, cancel, a Monte Carlo and a study, strategy CRUD,
//! and that every route the client's table names is in the OpenAPI document
//! (the drift check). Before that, against a small HTTP server of its own that
//! answers 503 first, which calls the client retries and with what key.

use std::path::PathBuf;
use std::time::Duration;

use jesse_mcp_tests::*;
use serde_json::json;

/// The tools venv's python (created on first use).
async fn tools_python() -> PathBuf {
    let out = tokio::process::Command::new(repo_root().join("ops/tools-env.sh"))
        .output()
        .await
        .expect("running ops/tools-env.sh");
    assert!(
        out.status.success(),
        "ops/tools-env.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_reads_every_answer_as_the_rest_api_gives_it() {
    let python = tools_python().await;
    let app = TestApp::spawn(Options {
        fixtures: &["Raiser"],
        ..Options::default()
    })
    .await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-02-15", 3))
        .await;
    let config = json!({
        "url": app.base,
        "failing_strategy": "Raiser",
        "backtest": backtest_body("SmaCross", "1h", "2024-01-20", "2024-02-10"),
    });
    let mut command = tokio::process::Command::new(&python);
    command
        .arg(repo_root().join("tests/python-client/check_client.py"))
        .env("JESSE_MCP_CLIENT_CONFIG", config.to_string())
        .env("PYTHONPATH", repo_root().join("clients/python"))
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(400), command.output())
        .await
        .expect("check_client.py did not finish in 400 s")
        .expect("running check_client.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "check_client.py failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("ok: "),
        "check_client.py did not finish: {stdout}"
    );
}
