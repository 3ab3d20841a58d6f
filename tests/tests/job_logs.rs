//! A strategy's `print` output and `self.log(...)` lines land in its job, in
//! order, readable a page at a time over REST (`GET /v1/jobs/{id}/logs`) and MCP
//! (`job_logs`), capped per job; they no longer reach the worker's own log.

use std::time::Duration;

use jesse_mcp_tests::*;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(180);

/// Every line of a job's log through REST pages of `limit` lines.
async fn all_lines(app: &TestApp, job_id: &str, limit: i64) -> Vec<Value> {
    let mut lines = Vec::new();
    let mut after: Option<i64> = None;
    for _ in 0..100_000 {
        let query = match after {
            Some(a) => format!("?limit={limit}&after={a}"),
            None => format!("?limit={limit}"),
        };
        let (status, page) = app.get(&format!("/v1/jobs/{job_id}/logs{query}")).await;
        assert_eq!(status, 200, "{page}");
        let got = page["lines"].as_array().unwrap();
        assert!(got.len() as i64 <= limit, "a page larger than its limit");
        lines.extend(got.iter().cloned());
        match page["next_after"].as_i64() {
            Some(next) => {
                assert_eq!(got.len() as i64, limit, "a page before the end is full");
                assert_eq!(Some(next), got.last().and_then(|l| l["seq"].as_i64()));
                after = Some(next);
            }
            None => return lines,
        }
    }
    panic!("paging did not end");
}

fn texts(lines: &[Value]) -> Vec<(String, String)> {
    lines
        .iter()
        .map(|l| {
            (
                l["stream"].as_str().unwrap().to_string(),
                l["line"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// What Chatty (one line a candle) writes over two days of 1h candles, in order.
fn expected() -> Vec<(String, String)> {
    let candles = 48;
    let mut expected = vec![("stdout".to_string(), "chatty: module loaded".to_string())];
    for i in 0..candles {
        expected.push(("stdout".into(), format!("chatty: print {i}")));
        expected.push(("info".into(), format!("chatty: log {i}")));
        if i % 10 == 0 {
            expected.push(("stderr".into(), format!("chatty: stderr {i}")));
            expected.push(("error".into(), format!("chatty: error {i}")));
        }
    }
    expected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prints_and_self_log_land_in_the_job_in_order_over_rest_and_mcp() {
    let app = TestApp::spawn(Options {
        fixtures: &["Chatty"],
        ..Default::default()
    })
    .await;
    app.import_csv(&synthetic_csv("2023-12-20", "2024-01-12", 5))
        .await;
    let job_id = app
        .submit(&backtest_body("Chatty", "1h", "2024-01-10", "2024-01-12"))
        .await;
    let job = app.wait(&job_id, LONG).await;
    assert_eq!(job["status"], "succeeded", "{job}");

    // One page (the default limit is the largest) and pages of 7 read the same lines.
    let (status, page) = app.get(&format!("/v1/jobs/{job_id}/logs")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["job_id"], job_id.as_str());
    assert_eq!(page["status"], "succeeded");
    let lines = all_lines(&app, &job_id, 200).await;
    let paged = all_lines(&app, &job_id, 7).await;
    assert_eq!(lines, paged, "pages of 7 differ from pages of 200");
    for (index, line) in lines.iter().enumerate() {
        assert_eq!(line["seq"], index as i64, "seq numbers the lines from 0");
        assert_eq!(line["attempt"], 1);
    }

    // Exactly what the strategy wrote, in the order it wrote it.
    assert_eq!(texts(&lines), expected());

    // The module's line is outside the simulation; the others carry Jesse's clock,
    // inside the range and never going back.
    assert!(lines[0]["simulated_ms"].is_null(), "{}", lines[0]);
    let start = jesse_mcp_core::time::parse_day("2024-01-10").unwrap();
    let end = jesse_mcp_core::time::parse_day("2024-01-12").unwrap();
    let mut last = start;
    for line in &lines[1..] {
        let at = line["simulated_ms"]
            .as_i64()
            .unwrap_or_else(|| panic!("no simulated time: {line}"));
        assert!(at >= last && at <= end, "{line}");
        assert_eq!(
            line["simulated_at"].as_str().unwrap(),
            jesse_mcp_core::time::to_rfc3339(at)
        );
        last = at;
    }

    // MCP's job_logs is the same service function.
    let client = ()
        .serve(StreamableHttpClientTransport::from_uri(format!(
            "{}/mcp",
            app.base
        )))
        .await
        .expect("MCP client");
    let call = |args: Value| {
        client.call_tool(
            CallToolRequestParams::new("job_logs".to_string())
                .with_arguments(args.as_object().unwrap().clone()),
        )
    };
    let first = call(json!({"job_id": job_id, "limit": 5})).await.unwrap();
    let first = first.structured_content.expect("structured content");
    assert_eq!(first["lines"].as_array().unwrap()[..], lines[..5]);
    assert_eq!(first["next_after"], 4);
    let second = call(json!({"job_id": job_id, "after": 4, "limit": 200}))
        .await
        .unwrap()
        .structured_content
        .unwrap();
    assert_eq!(second["lines"].as_array().unwrap()[..], lines[5..]);
    assert!(second["next_after"].is_null());
    let unknown = call(json!({"job_id": "01JAAAAAAAAAAAAAAAAAAAAAAA"}))
        .await
        .unwrap();
    assert_eq!(unknown.is_error, Some(true));
    assert!(
        format!("{:?}", unknown.content).contains("job_not_found"),
        "{unknown:?}"
    );
    client.cancel().await.ok();

    // Unknown jobs and out-of-range limits are refused with their codes.
    let (status, body) = app.get("/v1/jobs/01JAAAAAAAAAAAAAAAAAAAAAAA/logs").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "job_not_found");
    for limit in ["0", "201", "-3"] {
        let (status, body) = app
            .get(&format!("/v1/jobs/{job_id}/logs?limit={limit}"))
            .await;
        assert_eq!(status, 422, "limit={limit}: {body}");
        assert_eq!(body["error"]["code"], "invalid_limit", "{body}");
    }
    let (status, body) = app.get(&format!("/v1/jobs/{job_id}/logs?after=-1")).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_query", "{body}");

    // The lines are the job's, not the worker's log's.
    let worker_log =
        std::fs::read_to_string(app.dir.path().join("worker-0.log")).unwrap_or_default();
    assert!(
        !worker_log.contains("chatty:"),
        "the strategy's output reached the worker's log:\n{worker_log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_log_is_capped_with_a_final_truncated_line() {
    let app = TestApp::spawn(Options {
        fixtures: &["Chatty"],
        ..Default::default()
    })
    .await;
    app.import_csv(&synthetic_csv("2023-12-20", "2024-01-12", 5))
        .await;
    // 48 candles × 300 printed lines: well past 10,000 lines.
    let mut body = backtest_body("Chatty", "1h", "2024-01-10", "2024-01-12");
    body["hyperparameters"] = json!({"lines": 300});
    let job_id = app.submit(&body).await;
    let job = app.wait(&job_id, LONG).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let lines = all_lines(&app, &job_id, 200).await;
    assert_eq!(lines.len(), 10_001, "10,000 lines and the truncation line");
    let last = lines.last().unwrap();
    assert_eq!(last["stream"], "system");
    assert!(
        last["line"].as_str().unwrap().contains("log truncated"),
        "{last}"
    );
    assert!(
        lines[..10_000].iter().all(|l| l["stream"] != "system"),
        "only the last line is the system's"
    );
    // The kept lines are the first ones, in order.
    assert_eq!(lines[1]["line"], "chatty: print 0");
    assert_eq!(lines[2]["line"], "chatty: print 0.1");
    // The job itself is unaffected: it ran to the end.
    assert_eq!(job["summary"]["total"], 0, "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_the_same_on_postgres_and_redis() {
    let app = TestApp::spawn(Options {
        fixtures: &["Chatty"],
        ..Options::distributed().await
    })
    .await;
    app.import_csv(&synthetic_csv("2023-12-20", "2024-01-12", 5))
        .await;
    let job_id = app
        .submit(&backtest_body("Chatty", "1h", "2024-01-10", "2024-01-12"))
        .await;
    let job = app.wait(&job_id, LONG).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let lines = all_lines(&app, &job_id, 9).await;
    assert_eq!(texts(&lines), expected());
    assert!(lines[0]["simulated_ms"].is_null());
    assert!(lines[1]["simulated_ms"].is_i64());
}

/// Output written past Python's streams (`os.write(1|2, ...)`, as native code
/// writes) goes to the job's log through the same cap, never to the worker's
/// own log (no forged lines, no terminal escapes there); the job succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_writes_to_fds_1_and_2_land_in_the_capped_job_log_not_the_workers() {
    let app = TestApp::spawn(Options {
        fixtures: &["Shouter"],
        ..Default::default()
    })
    .await;
    app.import_csv(&synthetic_csv("2023-12-20", "2024-01-12", 5))
        .await;
    let job_id = app
        .submit(&backtest_body("Shouter", "1h", "2024-01-10", "2024-01-12"))
        .await;
    let job = app.wait(&job_id, LONG).await;
    assert_eq!(job["status"], "succeeded", "{job}");

    let worker_log =
        std::fs::read_to_string(app.dir.path().join("worker-0.log")).unwrap_or_default();
    assert!(
        !worker_log.contains("shouter:") && !worker_log.contains("\u{1b}]0;owned"),
        "the strategy's raw output reached the worker's log ({} bytes)",
        worker_log.len()
    );
    assert!(
        worker_log.len() < 1 << 20,
        "the worker's log grew to {} bytes",
        worker_log.len()
    );

    let lines = all_lines(&app, &job_id, 200).await;
    assert!(lines.len() <= 10_001, "{} lines", lines.len());
    let (kept, last) = lines.split_at(lines.len() - 1);
    assert_eq!(last[0]["stream"], "system", "{}", last[0]);
    assert!(
        last[0]["line"].as_str().unwrap().contains("log truncated"),
        "{}",
        last[0]
    );
    assert!(kept.iter().all(|l| l["stream"] != "system"));
    let bytes: usize = kept.iter().map(|l| l["line"].as_str().unwrap().len()).sum();
    assert!(bytes <= 1 << 20, "{bytes} bytes kept");
    let texts = texts(kept);
    assert!(
        texts.contains(&(
            "stderr".into(),
            "shouter: raw stderr \u{1b}[2J\u{1b}]0;owned\u{7} ERROR jesse_mcp_worker: forged"
                .into()
        )),
        "{:?}",
        &texts[..texts.len().min(5)]
    );
    let raw = format!("shouter: raw stdout {}", "x".repeat(79));
    let raw_lines = texts
        .iter()
        .filter(|(s, l)| s == "stdout" && *l == raw)
        .count();
    assert!(raw_lines > 5_000, "{raw_lines} raw stdout lines kept");
}
