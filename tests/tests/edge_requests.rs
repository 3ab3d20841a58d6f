//! Requests at the edges of HTTP, each refused with the error envelope (or,
//! for job ownership, allowed as documented): duplicate Host, Origin and
//! Content-Type headers, a Host with user information, TRACE with a body, a
//! token in the query string (refused, and never in the log), a gap report for
//! an exchange Jesse does not know, and a cancel by another token (allowed,
//! audited). Raw requests go over a TCP socket so the headers are exactly the
//! ones written.

use std::time::Duration;

use jesse_mcp_tests::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `head` (request line and headers, `\r\n`-separated, without the
/// final blank line) and `body` to `base`; answers the status and the JSON body.
async fn raw(base: &str, head: &str, body: &str) -> (u16, Value) {
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // Chunked or not, the envelope is the one JSON object in the body.
    let json = body
        .find('{')
        .and_then(|start| body.rfind('}').map(|end| &body[start..=end]))
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or(json!({"raw": body}));
    (status, json)
}

fn code(answer: &Value) -> &str {
    answer["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_headers_userinfo_hosts_and_trace_are_refused() {
    let app = TestApp::spawn(Options {
        start_worker: false,
        ..Default::default()
    })
    .await;
    let host = format!("127.0.0.1:{}", app.port);
    let json_post =
        |extra: &str| format!("POST /v1/strategies/validate HTTP/1.1\r\nHost: {host}\r\n{extra}");
    let body = r#"{"name": "X", "code": "x"}"#;

    // The baseline: one of each passes the guard (the handler answers).
    let (status, answer) = raw(
        &app.base,
        &json_post("Content-Type: application/json"),
        body,
    )
    .await;
    assert_ne!(code(&answer), "duplicate_header", "{status} {answer}");

    for (header, head) in [
        (
            "host",
            json_post(&format!("Host: {host}\r\nContent-Type: application/json")),
        ),
        (
            "origin",
            json_post(&format!(
                "Content-Type: application/json\r\nOrigin: http://{host}\r\nOrigin: http://evil.example"
            )),
        ),
        (
            "content-type",
            json_post("Content-Type: application/json\r\nContent-Type: text/plain"),
        ),
    ] {
        let (status, answer) = raw(&app.base, &head, body).await;
        assert_eq!(status, 400, "{header}: {answer}");
        assert_eq!(code(&answer), "duplicate_header", "{header}: {answer}");
        assert_eq!(answer["error"]["details"]["header"], header, "{answer}");
    }

    // Host with user information: refused, whatever host follows the '@'.
    for userinfo in [
        format!("x@{host}"),
        format!("user:pass@{host}"),
        "x@127.0.0.1".to_string(),
    ] {
        let (status, answer) = raw(
            &app.base,
            &format!("GET /v1/jobs HTTP/1.1\r\nHost: {userinfo}"),
            "",
        )
        .await;
        assert_eq!(status, 400, "{userinfo}: {answer}");
        assert_eq!(code(&answer), "invalid_host", "{answer}");
    }

    // TRACE is served by no route: 405 with or without a body, not 415.
    for body in ["", "hello", r#"{"a": 1}"#] {
        let (status, answer) = raw(
            &app.base,
            &format!("TRACE /v1/jobs HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain"),
            body,
        )
        .await;
        assert_eq!(status, 405, "TRACE with {body:?}: {answer}");
        assert_eq!(code(&answer), "method_not_allowed", "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gap_reports_need_an_exchange_jesse_knows() {
    let app = TestApp::spawn(Options {
        start_worker: false,
        ..Default::default()
    })
    .await;
    let (status, answer) = app
        .get("/v1/candles/Mt%20Gox/BTC-USDT/gaps?start_date=2024-01-01&end_date=2024-01-02")
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(code(&answer), "unsupported_exchange", "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Mt Gox"),
        "{answer}"
    );
    let (status, answer) = app.get("/v1/candles/Mt%20Gox/BTC-USDT/gaps").await;
    assert_eq!(status, 422, "{answer}");
    // An exchange Jesse knows with nothing stored: the whole range is a gap.
    let (status, answer) = app
        .get("/v1/candles/Binance%20Spot/BTC-USDT/gaps?start_date=2024-01-01&end_date=2024-01-02")
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["missing_minutes"], 1440, "{answer}");
}

const TOKEN_A: &str = "alice-token-0123456789";
const TOKEN_B: &str = "bobby-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_tokens_stay_out_of_the_log_and_cancels_by_other_tokens_are_audited() {
    let mut app = TestApp::spawn(Options {
        start_worker: false,
        tokens: format!("a:{TOKEN_A}=read+run,b:{TOKEN_B}=read+run"),
        api_env: vec![
            (
                "JESSE_MCP_TOKENS",
                format!("a:{TOKEN_A}=read+run,b:{TOKEN_B}=read+run"),
            ),
            ("RUST_LOG", "debug,sqlx=warn,apalis=warn,hyper=warn".into()),
            ("JESSE_MCP_LOG_FORMAT", "json".into()),
        ],
        ..Default::default()
    })
    .await;
    let base = app.start_api().await;
    let client = reqwest::Client::new();

    // A token in the query string is refused, and the log never shows it.
    for query in [
        format!("token={TOKEN_A}"),
        format!("access_token={TOKEN_A}"),
        format!("limit=5&t={TOKEN_A}"),
    ] {
        let response = client
            .get(format!("{base}/v1/jobs?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{query}");
    }

    // Jobs are the deployment's: b cancels the job a submitted, and the audit
    // trail says b did (docs/SECURITY.md, "Job ownership").
    let submitted = client
        .post(format!("{base}/v1/candles/imports"))
        .bearer_auth(TOKEN_A)
        .json(&json!({"exchange": "Binance Spot", "symbol": "BTC-USDT", "start_date": "2024-01-01", "end_date": "2024-01-02"}))
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), 202);
    let job: Value = submitted.json().await.unwrap();
    let id = job["job_id"].as_str().unwrap().to_string();
    let cancelled = client
        .post(format!("{base}/v1/jobs/{id}/cancel"))
        .bearer_auth(TOKEN_B)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    let job: Value = cancelled.json().await.unwrap();
    assert_eq!(job["status"], "cancelled", "{job}");

    let log_path = app.dir.path().join("api-0.log");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("job.cancel") || tokio::time::Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        log.contains("/v1/jobs?"),
        "the debug log shows request URIs (else this test proves nothing): {log}"
    );
    assert!(!log.contains(TOKEN_A), "a token reached the log:\n{log}");
    assert!(log.contains("[redacted]"), "{log}");
    let audited = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .any(|l| {
            l["target"] == "audit"
                && l["fields"]["action"] == "job.cancel"
                && l["fields"]["token"] == "b"
                && l["fields"]["job.id"] == id.as_str()
        });
    assert!(audited, "no audit line for b's cancel of {id}:\n{log}");
}
