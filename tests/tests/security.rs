//! The API's defences (issue 11; docs/SECURITY.md): running submitted code
//! (deep validation) needs `strategies:write` over REST and MCP and nothing runs
//! without it; a foreign Host (DNS rebinding) is refused on REST and MCP, and
//! the hosts allowed come from JESSE_MCP_ALLOWED_HOSTS; cross-origin requests are
//! refused unless their origin is the service's own or listed; bodies without
//! their route's exact content type (the "simple" ones a cross-site page can
//! send) are refused with 415 and change nothing; wrong tokens of the same
//! length and prefixes are refused; writes, deletes and deep validations reach
//! the audit log with the token's name; and no token ever reaches the log.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use jesse_mcp_tests::*;
use reqwest::Method;
use reqwest::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_ORIGIN, AUTHORIZATION, CONTENT_TYPE, HOST,
    ORIGIN,
};
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use sha2::Digest;
use tokio::process::{Child, Command};

const READ_RUN: &str = "reader-token-0123456789abcdef";
const WRITER: &str = "writer-token-0123456789abcdef";

fn tokens() -> String {
    format!("reader:{READ_RUN}=read+run,writer:{WRITER}=read+run+strategies:write")
}

/// A strategy whose module, when imported, writes `marker`.
fn marker_strategy(name: &str, marker: &Path) -> String {
    format!(
        r#"import pathlib
pathlib.Path({marker:?}).write_text("executed")

from jesse.strategies import Strategy


class {name}(Strategy):
    def should_long(self) -> bool:
        return False

    def go_long(self):
        pass
"#,
        marker = marker.display().to_string()
    )
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"security-test","version":"0"}}}"#;

/// One request with whatever headers a test needs; answers status, JSON body
/// (or `{"raw": text}`) and the response headers.
async fn send(
    client: &reqwest::Client,
    method: Method,
    url: &str,
    headers: &[(reqwest::header::HeaderName, &str)],
    body: Option<Vec<u8>>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = client.request(method, url);
    for (name, value) in headers {
        request = request.header(name.clone(), *value);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap_or_default();
    let value = serde_json::from_str(&text).unwrap_or_else(|_| json!({ "raw": text }));
    (status, value, headers)
}

fn code(body: &Value) -> Option<&str> {
    body["error"]["code"].as_str()
}

async fn mcp_client(
    app: &TestApp,
    token: &str,
) -> rmcp::service::RunningService<rmcp::RoleClient, ()> {
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", app.base))
        .auth_header(token);
    ().serve(StreamableHttpClientTransport::from_config(config))
        .await
        .expect("MCP client connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_validation_needs_strategies_write_and_runs_nothing_without_it() {
    let app = TestApp::spawn(Options {
        tokens: tokens(),
        ..Default::default()
    })
    .await;
    let marker = app.dir.path().join("marker");
    let source = marker_strategy("Marker", &marker);
    let validate = |token: &'static str, deep: bool| {
        let body = json!({"name": "Marker", "code": source, "deep": deep}).to_string();
        let url = app.url("/v1/strategies/validate");
        let client = app.client.clone();
        async move {
            let auth = format!("Bearer {token}");
            send(
                &client,
                Method::POST,
                &url,
                &[(AUTHORIZATION, &auth), (CONTENT_TYPE, "application/json")],
                Some(body.into_bytes()),
            )
            .await
        }
    };

    // REST: read+run validates statically, but may not run the code.
    let (status, report, _) = validate(READ_RUN, false).await;
    assert_eq!((status, &report["valid"]), (200, &json!(true)), "{report}");
    assert!(report["deep"].is_null(), "{report}");
    let (status, refused, _) = validate(READ_RUN, true).await;
    assert_eq!(
        (status, code(&refused)),
        (403, Some("forbidden")),
        "{refused}"
    );
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'strategies:write'"),
        "{refused}"
    );
    assert_eq!(
        refused["error"]["details"]["missing_scope"],
        "strategies:write"
    );

    // MCP: the same refusal as a tool error with the same envelope.
    let client = mcp_client(&app, READ_RUN).await;
    let args = json!({"name": "Marker", "code": source, "deep": true});
    let answer = client
        .call_tool(
            CallToolRequestParams::new("strategy_validate")
                .with_arguments(args.as_object().unwrap().clone()),
        )
        .await
        .expect("tool call");
    assert_eq!(answer.is_error, Some(true), "{answer:?}");
    let text = &answer.content[0].as_text().expect("text").text;
    let envelope: Value = serde_json::from_str(text).expect("error envelope");
    assert_eq!(code(&envelope), Some("forbidden"), "{envelope}");
    assert_eq!(
        envelope["error"]["details"]["missing_scope"],
        "strategies:write"
    );
    let statically = client
        .call_tool(
            CallToolRequestParams::new("strategy_validate").with_arguments(
                json!({"name": "Marker", "code": source, "deep": false})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await
        .expect("tool call");
    assert_eq!(statically.is_error, Some(false), "{statically:?}");
    client.cancel().await.ok();

    // Nothing ran: no validation job exists and the module never wrote its marker.
    assert_eq!(app.job_count_with(WRITER).await, 0, "no job was created");
    assert!(!marker.exists(), "the strategy's module was executed");

    // With strategies:write the same request starts the job that runs the code
    // (the sandbox tests check what that code can do).
    let (status, report, _) = validate(WRITER, true).await;
    assert_eq!(status, 200, "{report}");
    assert!(report["deep"]["job_id"].is_string(), "{report}");
    assert_eq!(app.job_count_with(WRITER).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_hosts_and_origins_are_refused_on_rest_and_mcp() {
    let app = TestApp::spawn(Options {
        start_worker: false,
        ..Default::default()
    })
    .await;
    let port = app.port;
    let json = (CONTENT_TYPE, "application/json");
    let mcp_accept = (
        reqwest::header::ACCEPT,
        "application/json, text/event-stream",
    );
    let submit = backtest_body("SmaCross", "1h", "2024-01-15", "2024-01-25")
        .to_string()
        .into_bytes();

    // DNS rebinding: a page of evil.example, its name now resolving to 127.0.0.1.
    for host in [
        format!("evil.example:{port}"),
        "evil.example".to_string(),
        format!("127.0.0.1.evil.example:{port}"),
    ] {
        for (method, path, body) in [
            (Method::GET, "/v1/jobs", None),
            (Method::GET, "/health", None),
            (Method::POST, "/v1/backtests", Some(submit.clone())),
            (Method::POST, "/mcp", Some(INITIALIZE.as_bytes().to_vec())),
        ] {
            let (status, answer, _) = send(
                &app.client,
                method.clone(),
                &app.url(path),
                &[(HOST, &host), json.clone(), mcp_accept.clone()],
                body,
            )
            .await;
            assert_eq!(
                (status, code(&answer)),
                (421, Some("host_not_allowed")),
                "{method} {path} with Host {host}: {answer}"
            );
        }
    }
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let (status, answer, _) = send(
            &app.client,
            Method::GET,
            &app.url("/v1/jobs"),
            &[(HOST, &host)],
            None,
        )
        .await;
        assert_eq!(status, 200, "Host {host}: {answer}");
    }

    // Cross-origin: refused, whatever the method, MCP included; a page on
    // another loopback port is refused by REST (MCP allows loopback origins,
    // as its transport spec says: below).
    let other_loopback = format!("http://127.0.0.1:{}", port + 1);
    for origin in ["http://evil.example", "null", other_loopback.as_str()] {
        for (method, path, body) in [
            (Method::GET, "/v1/jobs", None),
            (Method::POST, "/v1/backtests", Some(submit.clone())),
            (Method::POST, "/mcp", Some(INITIALIZE.as_bytes().to_vec())),
            (Method::OPTIONS, "/v1/backtests", None),
        ] {
            if path == "/mcp" && origin == other_loopback {
                continue;
            }
            let (status, answer, headers) = send(
                &app.client,
                method.clone(),
                &app.url(path),
                &[
                    (ORIGIN, origin),
                    json.clone(),
                    mcp_accept.clone(),
                    (reqwest::header::ACCESS_CONTROL_REQUEST_METHOD, "POST"),
                ],
                body,
            )
            .await;
            assert_eq!(
                (status, code(&answer)),
                (403, Some("origin_not_allowed")),
                "{method} {path} from {origin}: {answer}"
            );
            assert!(headers.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        }
    }
    assert_eq!(app.job_count().await, 0, "a refused submit queued nothing");

    // MCP from another loopback origin (an Inspector web UI beside the service): allowed.
    for loopback in [
        other_loopback.clone(),
        "http://localhost:6274".to_string(),
        "http://[::1]:3000".to_string(),
    ] {
        let (status, answer, _) = send(
            &app.client,
            Method::POST,
            &app.url("/mcp"),
            &[(ORIGIN, &loopback), json.clone(), mcp_accept.clone()],
            Some(INITIALIZE.as_bytes().to_vec()),
        )
        .await;
        assert_eq!(status, 200, "MCP from {loopback}: {answer}");
    }

    // Same origin (the dashboard's case): allowed, then handled as usual.
    let own = format!("http://127.0.0.1:{port}");
    let (status, answer, _) = send(
        &app.client,
        Method::POST,
        &app.url("/v1/backtests"),
        &[(ORIGIN, &own), json.clone()],
        Some(submit.clone()),
    )
    .await;
    assert_eq!(
        (status, code(&answer)),
        (422, Some("missing_candles")),
        "same origin passes the guard: {answer}"
    );
    let (status, answer, _) = send(
        &app.client,
        Method::POST,
        &app.url("/mcp"),
        &[(ORIGIN, &own), json.clone(), mcp_accept.clone()],
        Some(INITIALIZE.as_bytes().to_vec()),
    )
    .await;
    assert_eq!(status, 200, "MCP from the same origin: {answer}");
    // A client that is no browser sends no Origin at all.
    let (status, _, _) = send(
        &app.client,
        Method::POST,
        &app.url("/mcp"),
        &[json.clone(), mcp_accept.clone()],
        Some(INITIALIZE.as_bytes().to_vec()),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_cross_site_bodies_are_refused_and_change_nothing() {
    let app = TestApp::spawn(Options {
        start_worker: false,
        ..Default::default()
    })
    .await;
    let csv_path = format!(
        "/v1/candles/csv?exchange={}&symbol={SYMBOL}",
        EXCHANGE.replace(' ', "%20")
    );
    // The backtest below needs 10 days of warm-up before its range.
    let csv = synthetic_csv("2023-12-20", "2024-01-03", 7);
    let simple = [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=----x",
    ];
    let marker = app.dir.path().join("marker");
    let strategy = json!({"code": marker_strategy("Evil", &marker)}).to_string();
    let validate =
        json!({"name": "Evil", "code": marker_strategy("Evil", &marker), "deep": true}).to_string();
    let submit = backtest_body("SmaCross", "1h", "2024-01-01", "2024-01-03").to_string();

    // The CSV upload takes text/csv only.
    for content_type in simple.iter().copied().chain(["application/json"]) {
        let (status, answer, _) = send(
            &app.client,
            Method::POST,
            &app.url(&csv_path),
            &[(CONTENT_TYPE, content_type)],
            Some(csv.clone()),
        )
        .await;
        assert_eq!(
            (status, code(&answer)),
            (415, Some("unsupported_media_type")),
            "CSV as {content_type}: {answer}"
        );
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("text/csv"),
            "the message names the type to send: {answer}"
        );
    }
    let (status, answer, _) = send(
        &app.client,
        Method::POST,
        &app.url(&csv_path),
        &[],
        Some(csv.clone()),
    )
    .await;
    assert_eq!(
        (status, code(&answer)),
        (415, Some("unsupported_media_type")),
        "no type: {answer}"
    );
    let (_, listing) = app.get("/v1/candles").await;
    assert_eq!(listing["series"], json!([]), "no candle was imported");

    // JSON endpoints take application/json only.
    for content_type in simple {
        for (method, path, body) in [
            (Method::POST, "/v1/backtests", &submit),
            (Method::POST, "/v1/strategies/validate", &validate),
            (Method::PUT, "/v1/strategies/Evil", &strategy),
            (
                Method::PUT,
                "/v1/schedules",
                &r#"{"schedules": []}"#.to_string(),
            ),
            (Method::POST, "/mcp", &INITIALIZE.to_string()),
        ] {
            let (status, answer, _) = send(
                &app.client,
                method.clone(),
                &app.url(path),
                &[
                    (CONTENT_TYPE, content_type),
                    (
                        reqwest::header::ACCEPT,
                        "application/json, text/event-stream",
                    ),
                ],
                Some(body.clone().into_bytes()),
            )
            .await;
            assert_eq!(
                (status, code(&answer)),
                (415, Some("unsupported_media_type")),
                "{method} {path} as {content_type}: {answer}"
            );
            assert!(
                answer["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("application/json"),
                "{answer}"
            );
        }
    }
    assert_eq!(app.job_count().await, 0, "no job was queued");
    let (status, _) = app.get("/v1/strategies/Evil").await;
    assert_eq!(status, 404, "no strategy was written");
    assert!(!marker.exists(), "no code ran");

    // Bodiless routes refuse a form too: a queued job survives a form "cancel".
    app.import_csv(&csv).await;
    let (status, answer, _) = send(
        &app.client,
        Method::POST,
        &app.url(&csv_path),
        &[(CONTENT_TYPE, "text/csv; charset=utf-8")],
        Some(csv.clone()),
    )
    .await;
    assert_eq!(status, 200, "text/csv with a charset is text/csv: {answer}");
    let job = app.submit(&serde_json::from_str(&submit).unwrap()).await;
    let cancel = app.url(&format!("/v1/jobs/{job}/cancel"));
    for content_type in simple {
        for body in [Vec::new(), b"x=1".to_vec()] {
            let (status, answer, _) = send(
                &app.client,
                Method::POST,
                &cancel,
                &[(CONTENT_TYPE, content_type)],
                Some(body),
            )
            .await;
            assert_eq!(
                (status, code(&answer)),
                (415, Some("unsupported_media_type")),
                "cancel as {content_type}: {answer}"
            );
        }
    }
    let (_, view) = app.get(&format!("/v1/jobs/{job}")).await;
    assert_eq!(view["status"], "queued", "{view}");
    // Without a body the same cancel is an ordinary request.
    let (status, answer, _) = send(&app.client, Method::POST, &cancel, &[], None).await;
    assert_eq!(
        (status, &answer["status"]),
        (200, &json!("cancelled")),
        "{answer}"
    );
}

/// A `jesse-mcp-api` process over `app`'s store with `env` added; its log goes
/// to `log`. Returns the process and its port.
async fn spawn_api(app: &TestApp, env: &[(&str, String)], log: &Path) -> (Child, u16) {
    use tokio::io::AsyncBufReadExt;
    let file = std::fs::File::create(log).expect("api log");
    let mut command = Command::new(bin("jesse-mcp-api"));
    command
        .envs(app.env())
        .env("JESSE_MCP_ADDR", "127.0.0.1:0")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(file)
        .kill_on_drop(true);
    let mut child = command.spawn().expect("spawn api");
    let stdout = child.stdout.take().expect("api stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the API process did not start within 30 s")
        .expect("api stdout")
        .unwrap_or_else(|| {
            panic!(
                "the API process exited: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        });
    let port = line
        .rsplit_once(':')
        .and_then(|(_, port)| port.trim().parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    (child, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_origins_and_tokens_from_the_environment_and_a_log_without_tokens() {
    let app = TestApp::spawn(Options {
        start_worker: false,
        ..Default::default()
    })
    .await;
    let log = app.dir.path().join("api-security.log");
    let (mut api, port) = spawn_api(
        &app,
        &[
            ("JESSE_MCP_TOKENS", tokens()),
            ("JESSE_MCP_ALLOWED_HOSTS", "api.example.test".into()),
            (
                "JESSE_MCP_ALLOWED_ORIGINS",
                "http://app.example.test:5173".into(),
            ),
            // Everything every crate logs, at every level.
            ("RUST_LOG", "trace".into()),
        ],
        &log,
    )
    .await;
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let host = format!("api.example.test:{port}");
    let reader = format!("Bearer {READ_RUN}");
    let writer = format!("Bearer {WRITER}");
    let client = &app.client;

    // Only the listed host is served now: loopback names are no longer implied.
    for refused in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let (status, answer, _) = send(
            client,
            Method::GET,
            &url("/v1/jobs"),
            &[(HOST, &refused), (AUTHORIZATION, &reader)],
            None,
        )
        .await;
        assert_eq!(
            (status, code(&answer)),
            (421, Some("host_not_allowed")),
            "{answer}\n{}",
            log_text()
        );
    }
    let (status, answer, _) = send(
        client,
        Method::GET,
        &url("/v1/jobs"),
        &[(HOST, &host), (AUTHORIZATION, &reader)],
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}\n{}", log_text());

    // The listed origin may call, with CORS headers; its preflight needs no token.
    let allowed = "http://app.example.test:5173";
    let (status, answer, headers) = send(
        client,
        Method::GET,
        &url("/v1/jobs"),
        &[(HOST, &host), (ORIGIN, allowed), (AUTHORIZATION, &reader)],
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(headers[ACCESS_CONTROL_ALLOW_ORIGIN], allowed);
    let (status, _, headers) = send(
        client,
        Method::OPTIONS,
        &url("/v1/backtests"),
        &[
            (HOST, &host),
            (ORIGIN, allowed),
            (reqwest::header::ACCESS_CONTROL_REQUEST_METHOD, "POST"),
            (
                reqwest::header::ACCESS_CONTROL_REQUEST_HEADERS,
                "authorization, content-type",
            ),
        ],
        None,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(headers[ACCESS_CONTROL_ALLOW_ORIGIN], allowed);
    let allow_headers = headers[ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap();
    assert!(allow_headers.contains("authorization") && allow_headers.contains("content-type"));
    for origin in [
        "http://app.example.test:5174",
        "https://app.example.test:5173",
        "http://evil.example",
    ] {
        let (status, answer, _) = send(
            client,
            Method::GET,
            &url("/v1/jobs"),
            &[(HOST, &host), (ORIGIN, origin), (AUTHORIZATION, &reader)],
            None,
        )
        .await;
        assert_eq!(
            (status, code(&answer)),
            (403, Some("origin_not_allowed")),
            "{origin}: {answer}"
        );
    }

    // Tokens: equal length but wrong, a prefix, an extension, another case.
    let mut flipped = READ_RUN.as_bytes().to_vec();
    *flipped.last_mut().unwrap() ^= 1;
    let flipped = String::from_utf8(flipped).unwrap();
    let near_misses = [
        flipped.clone(),
        READ_RUN[..READ_RUN.len() - 1].to_string(),
        READ_RUN[..16].to_string(),
        format!("{READ_RUN}0"),
        READ_RUN.to_uppercase(),
        String::new(),
    ];
    for wrong in &near_misses {
        let bearer = format!("Bearer {wrong}");
        let (status, answer, _) = send(
            client,
            Method::GET,
            &url("/v1/jobs"),
            &[(HOST, &host), (AUTHORIZATION, &bearer)],
            None,
        )
        .await;
        assert_eq!(
            (status, code(&answer)),
            (401, Some("unauthorized")),
            "{wrong:?}: {answer}"
        );
        assert!(!answer.to_string().contains(READ_RUN));
    }

    // The audit trail: write, deep validation refused, delete — by token name,
    // with the source's sha256.
    let marker = app.dir.path().join("marker");
    let source = marker_strategy("Audited", &marker);
    let sha256 = hex::encode(sha2::Sha256::digest(source.as_bytes()));
    let (status, answer, _) = send(
        client,
        Method::PUT,
        &url("/v1/strategies/Audited"),
        &[
            (HOST, &host),
            (AUTHORIZATION, &writer),
            (CONTENT_TYPE, "application/json"),
        ],
        Some(json!({"code": source}).to_string().into_bytes()),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    let (status, _, _) = send(
        client,
        Method::POST,
        &url("/v1/strategies/validate"),
        &[
            (HOST, &host),
            (AUTHORIZATION, &reader),
            (CONTENT_TYPE, "application/json"),
        ],
        Some(
            json!({"code": source, "deep": true})
                .to_string()
                .into_bytes(),
        ),
    )
    .await;
    assert_eq!(status, 403);
    let (status, answer, _) = send(
        client,
        Method::DELETE,
        &url("/v1/strategies/Audited"),
        &[(HOST, &host), (AUTHORIZATION, &writer)],
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    // The log is written as events happen; stop the process so it is complete.
    api.start_kill().ok();
    api.wait().await.ok();
    let text = log_text();
    let audit: Vec<&str> = text.lines().filter(|l| l.contains("audit")).collect();
    let written = audit
        .iter()
        .find(|l| l.contains("strategy.write"))
        .unwrap_or_else(|| panic!("no audit line for the write:\n{text}"));
    assert!(
        written.contains("writer") && written.contains(&sha256),
        "{written}"
    );
    let deleted = audit
        .iter()
        .find(|l| l.contains("strategy.delete"))
        .unwrap_or_else(|| panic!("no audit line for the delete:\n{text}"));
    assert!(
        deleted.contains("writer") && deleted.contains(&sha256),
        "{deleted}"
    );
    assert!(
        audit
            .iter()
            .any(|l| l.contains("reader") && l.contains("strategies:write")),
        "the refused deep validation is in the audit log:\n{}",
        audit.join("\n")
    );
    for secret in [READ_RUN, WRITER, &flipped, &READ_RUN.to_uppercase()] {
        assert!(
            !text.contains(secret),
            "the log contains a token ({secret}):\n{text}"
        );
    }
    // The tokens' digests are no secret, but they are not logged either.
    let digest = hex::encode(sha2::Sha256::digest(WRITER.as_bytes()));
    assert!(!text.contains(&digest));
}
