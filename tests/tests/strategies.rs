//! Strategy management over REST and MCP: every kind of validation error, unsafe
//! names and paths, concurrent edits, write → backtest with hyperparameters →
//! delete with provenance kept, and the MCP tools, resources and notifications.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use jesse_mcp_tests::*;
use rmcp::model::{CallToolRequestParams, ReadResourceRequestParams};
use rmcp::service::NotificationContext;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};

const GOOD: &str = r#"from jesse.strategies import Strategy
import jesse.indicators as ta
from jesse import utils


class MyCross(Strategy):
    def hyperparameters(self):
        return [
            {'name': 'fast', 'type': int, 'min': 3, 'max': 30, 'default': 8},
            {'name': 'slow', 'type': int, 'min': 10, 'max': 100, 'default': 30},
        ]

    def should_long(self) -> bool:
        return ta.sma(self.candles, self.hp['fast']) > ta.sma(self.candles, self.hp['slow'])

    def go_long(self):
        qty = utils.size_to_qty(self.balance * 0.5, self.price, fee_rate=self.fee_rate)
        self.buy = qty, self.price

    def update_position(self):
        if ta.sma(self.candles, self.hp['fast']) < ta.sma(self.candles, self.hp['slow']):
            self.liquidate()
"#;

async fn validate(app: &TestApp, name: &str, code: &str, deep: bool) -> Value {
    let (status, report) = app
        .post_json(
            "/v1/strategies/validate",
            &json!({"name": name, "code": code, "deep": deep}),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    report
}

fn first_error(report: &Value) -> (Value, String) {
    let error = &report["errors"][0];
    (
        error["line"].clone(),
        error["message"].as_str().unwrap_or_default().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_validation_error_is_reported_with_its_place() {
    let app = TestApp::spawn(Options::default()).await;

    let report = validate(
        &app,
        "MyCross",
        &GOOD.replace("def go_long(self):", "def go_long(self)"),
        false,
    )
    .await;
    assert_eq!(report["valid"], false);
    let (line, message) = first_error(&report);
    assert_eq!(line, 16, "{report}");
    assert!(message.starts_with("syntax error"), "{message}");
    assert!(report["errors"][0]["column"].as_u64().unwrap() > 1);

    let report = validate(
        &app,
        "MyCross",
        &GOOD.replace("def go_long(self):", "def go_lng(self):"),
        false,
    )
    .await;
    let (line, message) = first_error(&report);
    assert!(message.contains("go_long"), "{message}");
    assert_eq!(line, 6, "reported at the class line");

    let report = validate(
        &app,
        "MyCross",
        &GOOD.replace("class MyCross(Strategy):", "class MyCross(object):"),
        false,
    )
    .await;
    assert!(
        first_error(&report)
            .1
            .contains("no class deriving from Strategy"),
        "{report}"
    );

    let report = validate(&app, "Other", GOOD, false).await;
    assert!(
        first_error(&report)
            .1
            .contains("named MyCross but the strategy is Other"),
        "{report}"
    );

    let report = validate(
        &app,
        "MyCross",
        &GOOD.replace("'min': 3, 'max': 30", "'min': 30, 'max': 3"),
        false,
    )
    .await;
    let (line, message) = first_error(&report);
    assert!(
        message.contains("fast") && message.contains("min"),
        "{message}"
    );
    assert_eq!(line, 9);

    // Deep: passes statically, fails at run time in the smoke backtest, with its line.
    let broken = GOOD.replace(
        "qty = utils.size_to_qty(self.balance * 0.5",
        "qty = utils.size_to_qty(self.balanse * 0.5",
    );
    let report = validate(&app, "MyCross", &broken, false).await;
    assert_eq!(
        report["valid"], true,
        "static checks cannot see this: {report}"
    );
    let report = validate(&app, "MyCross", &broken, true).await;
    assert_eq!(report["valid"], false, "{report}");
    let deep = &report["deep"];
    assert_eq!(deep["status"], "succeeded");
    assert_eq!(deep["errors"][0]["line"], 17, "{deep}");
    assert!(
        deep["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("balanse"),
        "{deep}"
    );

    let report = validate(&app, "MyCross", GOOD, true).await;
    assert_eq!(report["valid"], true, "{report}");
    assert_eq!(report["deep"]["valid"], true);
    assert_eq!(report["hyperparameters"][0]["name"], "fast");
    assert_eq!(report["hyperparameters"][1]["default"], 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_names_paths_and_sizes_are_refused() {
    let app = TestApp::spawn(Options {
        start_worker: false,
        ..Default::default()
    })
    .await;
    for name in [
        "..%2Fetc",
        "a%2Fb",
        "a-b",
        "1abc",
        "Strat%C3%A9gie",
        &"A".repeat(65),
    ] {
        let path = format!("/v1/strategies/{name}");
        let (status, body) = app.get(&path).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (422, Some("invalid_strategy_name")),
            "{name}: {body}"
        );
        let response = app
            .client
            .put(app.url(&path))
            .json(&json!({"code": GOOD}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 422, "PUT {name}");
    }
    // URL parsers normalise a literal `..` path segment away; body fields carry it as is.
    let (status, body) = app
        .post_json(
            "/v1/strategies/validate",
            &json!({"name": "..", "code": GOOD}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_strategy_name")),
        "{body}"
    );
    let (status, body) = app
        .post_json(
            "/v1/backtests",
            &backtest_body("../strategies/SmaCross", "1h", "2024-01-02", "2024-01-03"),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_strategy_name")),
        "{body}"
    );
    // A symlink that leaves the strategies directory is never followed.
    let outside = app.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(
        outside.join("__init__.py"),
        GOOD.replace("MyCross", "Escape"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, app.strategies_dir().join("Escape")).unwrap();
    let (status, body) = app.get("/v1/strategies/Escape").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("unsafe_path")),
        "{body}"
    );
    let response = app
        .client
        .put(app.url("/v1/strategies/Escape"))
        .json(&json!({"code": GOOD.replace("MyCross", "Escape")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 422);
    assert_eq!(
        std::fs::read_to_string(outside.join("__init__.py")).unwrap(),
        GOOD.replace("MyCross", "Escape"),
        "outside file untouched"
    );
    let (_, list) = app.get("/v1/strategies").await;
    assert!(
        list["strategies"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["name"] != "Escape")
    );

    let huge = format!("{GOOD}\n# {}\n", "x".repeat(300 * 1024));
    let response = app
        .client
        .post(app.url("/v1/strategies/validate"))
        .json(&json!({"code": huge}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    let (status, body) = app.get("/v1/strategies/Nope").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("strategy_not_found"))
    );
    // Invalid code is never written.
    let response = app
        .client
        .put(app.url("/v1/strategies/MyCross"))
        .json(&json!({"code": "class MyCross(:"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 422);
    assert!(!app.strategies_dir().join("MyCross").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_edits_conflict_instead_of_overwriting() {
    let app = TestApp::spawn(Options {
        start_worker: false,
        ..Default::default()
    })
    .await;
    let response = app
        .client
        .put(app.url("/v1/strategies/MyCross"))
        .json(&json!({"code": GOOD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let etag = response.headers()["etag"].to_str().unwrap().to_string();

    // Ten writers all start from the same version; exactly one wins.
    let mut writers = Vec::new();
    for i in 0..10 {
        let request = app
            .client
            .put(app.url("/v1/strategies/MyCross"))
            .header("If-Match", etag.clone())
            .json(
                &json!({"code": GOOD.replace("'default': 8", &format!("'default': {}", 10 + i))}),
            );
        writers.push(tokio::spawn(async move {
            request.send().await.unwrap().status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for writer in writers {
        statuses.push(writer.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 412, 412, 412, 412, 412, 412, 412, 412, 412]);
    let (_, view) = app.get("/v1/strategies/MyCross").await;
    let code = view["code"].as_str().unwrap();
    assert!(
        (10..20).any(|d| code.contains(&format!("'default': {d}"))),
        "one complete version was written"
    );
    let (status, body) = app
        .post_json(
            "/v1/strategies/validate",
            &json!({"name": "MyCross", "code": code}),
        )
        .await;
    assert_eq!(
        (status, body["valid"].as_bool()),
        (200, Some(true)),
        "never a torn file"
    );

    let response = app
        .client
        .delete(app.url("/v1/strategies/MyCross"))
        .header("If-Match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        412,
        "a stale delete is refused too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_backtest_with_hyperparameters_delete_keeps_provenance() {
    let app = TestApp::spawn(Options::default()).await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-02-15", 21))
        .await;
    let response = app
        .client
        .put(app.url("/v1/strategies/MyCross"))
        .json(&json!({"code": GOOD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let written: Value = response.json().await.unwrap();
    let validation = written["deep_validation"]["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let job = app.wait(&validation, Duration::from_secs(120)).await;
    assert_eq!(job["kind"], "strategy_validation");
    assert_eq!(job["status"], "succeeded", "{job}");
    let (_, list) = app.get("/v1/strategies").await;
    let mine = list["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "MyCross")
        .unwrap()
        .clone();
    assert_eq!(mine["valid"], true);
    assert_eq!(mine["deep_validation"]["valid"], true, "{mine}");
    assert_eq!(mine["sha256"], written["sha256"]);

    let mut body = backtest_body("MyCross", "1h", "2024-01-20", "2024-02-10");
    body["hyperparameters"] = json!({"fastt": 5});
    let (status, answer) = app.post_json("/v1/backtests", &body).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("unknown_hyperparameter")),
        "{answer}"
    );
    body["hyperparameters"] = json!({"fast": 5});
    let job_id = app.submit(&body).await;

    // Editing and deleting the strategy afterwards never changes what the result means.
    let edited = GOOD.replace("0.5", "0.25");
    let response = app
        .client
        .put(app.url("/v1/strategies/MyCross"))
        .json(&json!({"code": edited}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let job = app.wait(&job_id, Duration::from_secs(120)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (status, deleted) = app
        .client
        .delete(app.url("/v1/strategies/MyCross"))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(status, 200, "{:?}", deleted.text().await);
    let (status, _) = app.get("/v1/strategies/MyCross").await;
    assert_eq!(status, 404);

    let (_, result) = app.get(&format!("/v1/jobs/{job_id}/result")).await;
    let ran = &result["provenance"]["strategies"][0];
    assert_eq!(ran["name"], "MyCross");
    assert_eq!(
        ran["sha256"], written["sha256"],
        "the result names the version that ran"
    );
    assert_eq!(ran["source"], GOOD, "and keeps its source");
    assert_eq!(
        result["provenance"]["params"]["hyperparameters"],
        json!({"fast": 5})
    );

    // A strategy that no longer passes static checks is refused at submit.
    std::fs::create_dir_all(app.strategies_dir().join("Broken")).unwrap();
    std::fs::write(
        app.strategies_dir().join("Broken/__init__.py"),
        "class Broken(:\n",
    )
    .unwrap();
    let (status, answer) = app
        .post_json(
            "/v1/backtests",
            &backtest_body("Broken", "1h", "2024-01-20", "2024-02-10"),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("invalid_strategy")),
        "{answer}"
    );
}

#[derive(Clone, Default)]
struct ListChanges(Arc<AtomicUsize>);

impl ClientHandler for ListChanges {
    async fn on_resource_list_changed(&self, _ctx: NotificationContext<RoleClient>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_strategy_tools_resources_and_notifications() {
    let app = TestApp::spawn(Options::default()).await;
    let changes = ListChanges::default();
    let client = changes
        .clone()
        .serve(StreamableHttpClientTransport::from_uri(format!(
            "{}/mcp",
            app.base
        )))
        .await
        .expect("MCP client");
    let call = |tool: &str, args: Value| {
        client.call_tool(
            CallToolRequestParams::new(tool.to_string())
                .with_arguments(args.as_object().unwrap().clone()),
        )
    };

    let listed = call("strategy_list", json!({})).await.unwrap();
    let names: Vec<Value> = listed.structured_content.unwrap()["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].clone())
        .collect();
    assert!(names.contains(&json!("SmaCross")) && names.contains(&json!("RsiReversion")));

    let bad = call(
        "strategy_write",
        json!({"name": "MyCross", "code": GOOD.replace("def go_long(self):", "def go_long(self)")}),
    )
    .await
    .unwrap();
    assert_eq!(bad.is_error, Some(true));
    let text = &bad.content[0].as_text().unwrap().text;
    assert!(
        text.contains("invalid_strategy") && text.contains("line 16"),
        "{text}"
    );

    let written = call("strategy_write", json!({"name": "MyCross", "code": GOOD}))
        .await
        .unwrap();
    assert_eq!(written.is_error, Some(false), "{written:?}");
    let written = written.structured_content.unwrap();
    assert_eq!(written["created"], true);

    let read = call("strategy_read", json!({"name": "MyCross"}))
        .await
        .unwrap()
        .structured_content
        .unwrap();
    assert_eq!(read["code"], GOOD);
    let stale = call(
        "strategy_write",
        json!({"name": "MyCross", "code": GOOD, "if_match": "0000"}),
    )
    .await
    .unwrap();
    assert_eq!(stale.is_error, Some(true));
    assert!(
        stale.content[0]
            .as_text()
            .unwrap()
            .text
            .contains("precondition_failed")
    );

    let validated = call(
        "strategy_validate",
        json!({"name": "MyCross", "code": GOOD, "deep": true}),
    )
    .await
    .unwrap();
    assert_eq!(validated.structured_content.unwrap()["deep"]["valid"], true);

    let resources = client.list_all_resources().await.unwrap();
    assert!(
        resources
            .iter()
            .any(|r| r.uri == "jesse://strategies/MyCross"),
        "{resources:?}"
    );
    let contents = client
        .read_resource(ReadResourceRequestParams::new("jesse://strategies/MyCross"))
        .await
        .unwrap();
    let text = serde_json::to_value(&contents.contents[0]).unwrap();
    assert_eq!(text["text"], GOOD);

    let deleted = call("strategy_delete", json!({"name": "MyCross"}))
        .await
        .unwrap();
    assert_eq!(deleted.structured_content.unwrap()["deleted"], true);
    let missing = call("strategy_read", json!({"name": "MyCross"}))
        .await
        .unwrap();
    assert_eq!(missing.is_error, Some(true));

    // Created, then deleted: two list-changed notifications reached this client.
    for _ in 0..50 {
        if changes.0.load(Ordering::SeqCst) >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(changes.0.load(Ordering::SeqCst), 2);
    client.cancel().await.ok();
}
