//! Bearer tokens with scopes: no token → 401, a token without the route's scope
//! → 403 naming it, over REST and MCP alike; and no listening on a non-loopback
//! address without tokens.

use jesse_mcp_tests::*;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};

const READ: &str = "read-token-0123456789";
const RUN: &str = "run-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = app.client.request(method, app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scopes_guard_rest_and_mcp() {
    let tokens = format!("{READ}=read,{RUN}=run,{ADMIN}=admin");
    let app = TestApp::spawn(Options {
        start_worker: false,
        tokens,
        ..Default::default()
    })
    .await;
    use reqwest::Method;

    assert_eq!(
        call(&app, Method::GET, "/health", None, None).await.0,
        200,
        "health stays open"
    );
    let (status, body) = call(&app, Method::GET, "/v1/jobs", None, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    assert_eq!(
        call(
            &app,
            Method::GET,
            "/v1/jobs",
            Some("wrong-token-0123456789"),
            None
        )
        .await
        .0,
        401
    );
    assert_eq!(
        call(&app, Method::GET, "/v1/jobs", Some(READ), None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(&app, Method::GET, "/metrics", Some(READ), None)
            .await
            .0,
        200
    );

    let submit = backtest_body("SmaCross", "1h", "2024-01-15", "2024-01-25");
    let (status, body) = call(
        &app,
        Method::POST,
        "/v1/backtests",
        Some(READ),
        Some(submit.clone()),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "a read token cannot submit"
    );
    assert!(body["error"]["message"].as_str().unwrap().contains("'run'"));
    let (status, body) = call(&app, Method::POST, "/v1/backtests", Some(RUN), Some(submit)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("missing_candles")),
        "authorised, then validated"
    );
    let (status, _) = call(
        &app,
        Method::PUT,
        "/v1/strategies/MyCross",
        Some(RUN),
        Some(json!({"code": "x"})),
    )
    .await;
    assert_eq!(status, 403, "writing strategies needs strategies:write");
    let (status, _) = call(
        &app,
        Method::PUT,
        "/v1/schedules",
        Some(RUN),
        Some(json!({"schedules": []})),
    )
    .await;
    assert_eq!(status, 403, "schedules need admin");
    let (status, _) = call(
        &app,
        Method::PUT,
        "/v1/schedules",
        Some(ADMIN),
        Some(json!({"schedules": []})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(app.job_count_with(READ).await, 0);

    // MCP over HTTP honours the same tokens, per tool.
    let without = ()
        .serve(StreamableHttpClientTransport::from_uri(format!(
            "{}/mcp",
            app.base
        )))
        .await;
    assert!(without.is_err(), "no token, no MCP session");
    let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", app.base))
        .auth_header(READ);
    let client =
        ().serve(StreamableHttpClientTransport::from_config(config))
            .await
            .expect("read token connects");
    let listed = client
        .call_tool(
            CallToolRequestParams::new("job_list")
                .with_arguments(json!({}).as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    assert_eq!(listed.is_error, Some(false));
    let args = backtest_body("SmaCross", "1h", "2024-01-15", "2024-01-25");
    let refused = client
        .call_tool(
            CallToolRequestParams::new("backtest")
                .with_arguments(args.as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    assert_eq!(refused.is_error, Some(true));
    assert!(
        refused.content[0]
            .as_text()
            .unwrap()
            .text
            .contains("forbidden")
    );
    client.cancel().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_public_listening_without_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = jesse_mcp_api::ApiConfig {
        addr: "0.0.0.0:0".into(),
        backends: jesse_mcp_tests::Options::default().backends(&dir.path().join("data")),
        strategies_dir: dir.path().join("strategies"),
        allowed_hosts: vec!["localhost".into()],
        log_format: "pretty".into(),
        scheduler_tick_ms: 1000,
        requeue_after_secs: 60,
        queue_retention_secs: 3600,
        tokens: String::new(),
        allowed_origins: Vec::new(),
        mcp_sessions: Default::default(),
    };
    let refused = jesse_mcp_api::Application::build(&config)
        .await
        .err()
        .expect("must refuse");
    assert!(
        refused.to_string().contains("JESSE_MCP_TOKENS"),
        "{refused}"
    );
    config.tokens = "short=read".into();
    assert!(
        jesse_mcp_api::Application::build(&config).await.is_err(),
        "tokens under 16 characters are refused"
    );
    config.tokens = format!("{ADMIN}=admin");
    assert!(jesse_mcp_api::Application::build(&config).await.is_ok());
}
