//! The REST API fuzzed from its own OpenAPI document by schemathesis (pinned in
//! the tools venv, ops/tools-env.sh), with a bounded number of examples per
//! operation and a fixed seed: no response is a 5xx, and none violates the
//! document (status codes, content types, bodies).

use std::time::Duration;

use jesse_mcp_tests::{Options, TestApp, repo_root, synthetic_csv};

/// Examples per operation (`JESSE_MCP_FUZZ_EXAMPLES` to go further locally).
fn examples() -> u32 {
    std::env::var("JESSE_MCP_FUZZ_EXAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_response_outside_the_document() {
    let tools = tokio::process::Command::new(repo_root().join("ops/tools-env.sh"))
        .output()
        .await
        .expect("running ops/tools-env.sh");
    assert!(
        tools.status.success(),
        "ops/tools-env.sh failed: {}",
        String::from_utf8_lossy(&tools.stderr)
    );
    let python = String::from_utf8(tools.stdout).unwrap().trim().to_string();
    let schemathesis = std::path::Path::new(&python).with_file_name("schemathesis");

    // The API with stored candles and strategies, and no worker: submitted jobs
    // stay queued, so the run exercises the API alone.
    let app = TestApp::spawn(Options {
        start_worker: false,
        ..Default::default()
    })
    .await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-01-08", 5))
        .await;
    let report = app.data_dir().join("schemathesis");
    std::fs::create_dir_all(&report).unwrap();
    let mut command = tokio::process::Command::new(&schemathesis);
    command
        .arg("run")
        .arg(app.url("/v1/openapi.json"))
        .args(["--url", &app.url("")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", &examples().to_string()])
        .args(["--seed", "20261130"])
        .args(["--workers", "2"])
        .args(["--request-timeout", "30"])
        .args(["--generation-database", "none"])
        .arg("--no-color")
        .arg("--continue-on-failure")
        // The candle CSV download answers a stream of text/csv; the browsers'
        // dashboard is HTML: neither is JSON to conform to a schema.
        .args(["--report", "junit"])
        .args(["--report-dir", &report.display().to_string()])
        .env("NO_COLOR", "1")
        // Its own state directory (.schemathesis) lands in the test's scratch.
        .current_dir(&report)
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(900), command.output())
        .await
        .expect("schemathesis finished within 15 minutes")
        .expect("running schemathesis");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis found failures (exit {:?}):\n{stdout}\n{stderr}",
        output.status.code()
    );
    // It ran the operations (a broken document would test nothing and pass).
    assert!(
        stdout.contains("passed") && !stdout.contains("No operations"),
        "{stdout}"
    );
}
