//! A backtest submitted over REST, over MCP (streamable HTTP) and over MCP
//! (stdio) gives exactly the metrics of `jesse.research.backtest` called directly
//! on the same candles, to the last bit.

use std::time::Duration;

use jesse_mcp_tests::*;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use serde_json::{Value, json};
use sha2::Digest;

const START: &str = "2024-01-15";
const END: &str = "2024-02-25";
const START_MS: i64 = 1_705_276_800_000;
const END_MS: i64 = 1_708_819_200_000;

fn object(value: Value) -> rmcp::model::JsonObject {
    value.as_object().expect("object").clone()
}

async fn call(
    client: &rmcp::service::RunningService<rmcp::RoleClient, ()>,
    tool: &str,
    args: Value,
) -> rmcp::model::CallToolResult {
    client
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(object(args)))
        .await
        .unwrap_or_else(|e| panic!("calling {tool}: {e}"))
}

/// Submits through an MCP client and waits with job_wait; returns the result.
async fn mcp_backtest(
    client: &rmcp::service::RunningService<rmcp::RoleClient, ()>,
    body: &Value,
) -> Value {
    let submitted = call(client, "backtest", body.clone()).await;
    assert_eq!(submitted.is_error, Some(false), "{submitted:?}");
    let job_id = submitted.structured_content.as_ref().expect("structured")["job_id"]
        .as_str()
        .expect("job_id")
        .to_string();
    let mut job = Value::Null;
    for _ in 0..10 {
        let waited = call(
            client,
            "job_wait",
            json!({"job_id": job_id, "timeout_seconds": 30}),
        )
        .await;
        job = waited.structured_content.clone().expect("structured job");
        if job["status"] != "queued" && job["status"] != "running" {
            break;
        }
    }
    assert_eq!(job["status"], "succeeded", "{job}");
    let result = call(
        client,
        "job_result",
        json!({"job_id": job_id, "trades_limit": 5}),
    )
    .await;
    assert_eq!(result.is_error, Some(false), "{result:?}");
    result.structured_content.expect("structured result")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_and_mcp_backtests_equal_bare_jesse() {
    let app = TestApp::spawn(Options {
        runners: 2,
        ..Default::default()
    })
    .await;
    let csv = synthetic_csv("2024-01-01", "2024-03-01", 11);
    let csv_path = app.dir.path().join("candles.csv");
    std::fs::write(&csv_path, &csv).unwrap();
    app.import_csv(&csv).await;

    let mut body = backtest_body("SmaCross", "1h", START, END);
    body["include_trades"] = json!(true);
    body["hyperparameters"] = json!({"fast": 12, "slow": 40});

    // REST
    let job_id = app.submit(&body).await;
    let job = app.wait(&job_id, Duration::from_secs(180)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (status, rest) = app.get(&format!("/v1/jobs/{job_id}/result")).await;
    assert_eq!(status, 200, "{rest}");

    // Bare Jesse on the same candles and configuration.
    let reference = reference_backtest(&json!({
        "csv": csv_path,
        "exchange": EXCHANGE,
        "symbol": SYMBOL,
        "strategy": "SmaCross",
        "strategy_path": app.strategies_dir().join("SmaCross/__init__.py"),
        "timeframe": "1h",
        "start_ms": START_MS,
        "end_ms": END_MS,
        "warmup_minutes": 240 * 60,
        "config": {"starting_balance": 10000, "fee": 0.001, "type": "futures", "futures_leverage": 1,
                   "futures_leverage_mode": "cross", "exchange": EXCHANGE, "warm_up_candles": 240},
        // Jesse replaces hp wholesale; the service merges overrides onto defaults.
        "hyperparameters": {"fast": 12, "slow": 40, "risk": 0.5},
    }))
    .await;
    assert!(
        reference["metrics"]["total"].as_i64().unwrap() > 5,
        "the strategy should trade: {reference}"
    );
    assert_metrics_identical(&rest["metrics"], &reference["metrics"]);
    assert_eq!(rest["trades_total"], reference["trades"]);
    assert_eq!(
        rest["trades"].as_array().unwrap().len(),
        reference["trades"].as_u64().unwrap() as usize
    );

    // Provenance: what ran, on what.
    let source = std::fs::read(app.strategies_dir().join("SmaCross/__init__.py")).unwrap();
    let provenance = &rest["provenance"];
    assert_eq!(provenance["jesse_version"], "3.5.3");
    assert_eq!(
        provenance["strategies"][0]["sha256"],
        hex::encode(sha2::Sha256::digest(&source))
    );
    let fingerprint = &provenance["candles"][format!("{EXCHANGE}-{SYMBOL}")];
    assert_eq!(fingerprint["rows"], (END_MS - START_MS) / 60_000 + 240 * 60);
    assert_eq!(fingerprint["first"], "2024-01-05T00:00:00.000Z");
    assert_eq!(fingerprint["last"], "2024-02-24T23:59:00.000Z");
    for key in [
        "queue_wait_ms",
        "candle_load_ms",
        "jesse_ms",
        "result_write_ms",
    ] {
        assert!(
            rest["timings"][key].is_number(),
            "timing {key} missing: {}",
            rest["timings"]
        );
    }

    // MCP over streamable HTTP.
    let transport = StreamableHttpClientTransport::from_uri(format!("{}/mcp", app.base));
    let client = ().serve(transport).await.expect("MCP HTTP client");
    let tools = client.list_all_tools().await.expect("list tools");
    let names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    for expected in [
        "backtest",
        "job_get",
        "job_wait",
        "job_result",
        "job_list",
        "job_cancel",
        "candles_available",
    ] {
        assert!(
            names.contains(&expected.to_string()),
            "tool {expected} missing from {names:?}"
        );
    }
    let job_get = tools.iter().find(|t| t.name == "job_get").unwrap();
    assert_eq!(
        job_get.annotations.as_ref().and_then(|a| a.read_only_hint),
        Some(true)
    );
    assert!(job_get.output_schema.is_some(), "structured output schema");
    let via_http = mcp_backtest(&client, &body).await;
    assert_metrics_identical(&via_http["metrics"], &reference["metrics"]);
    assert_eq!(
        via_http["trades"].as_array().unwrap().len(),
        5,
        "trades are paged"
    );
    let available = call(&client, "candles_available", json!({})).await;
    assert_eq!(
        available.structured_content.unwrap()["series"][0]["rows"],
        60 * 24 * 60
    );
    client.cancel().await.ok();

    // MCP over stdio: the real binary, as an MCP client would launch it.
    let command = tokio::process::Command::new(bin("jesse-mcp-api")).configure(|c| {
        c.arg("mcp-stdio").envs(app.env());
    });
    let client =
        ().serve(TokioChildProcess::new(command).expect("spawn stdio server"))
            .await
            .expect("MCP stdio client");
    let via_stdio = mcp_backtest(&client, &body).await;
    assert_metrics_identical(&via_stdio["metrics"], &reference["metrics"]);
    let bad = call(&client, "backtest", json!({"strategy": "Nope", "exchange": EXCHANGE, "symbol": SYMBOL, "timeframe": "1h", "start_date": START, "end_date": END})).await;
    assert_eq!(bad.is_error, Some(true));
    let text = bad.content[0].as_text().expect("text").text.clone();
    assert!(
        text.contains("unknown_strategy") && text.contains("SmaCross"),
        "{text}"
    );
    client.cancel().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifteen_minute_backtest_with_fast_mode_equals_bare_jesse() {
    let app = TestApp::spawn(Options::default()).await;
    let csv = synthetic_csv("2024-01-01", "2024-02-01", 5);
    let csv_path = app.dir.path().join("candles.csv");
    std::fs::write(&csv_path, &csv).unwrap();
    app.import_csv(&csv).await;

    let mut body = backtest_body("RsiReversion", "15m", "2024-01-10", "2024-02-01");
    body["fast_mode"] = json!(true);
    body["warm_up_candles"] = json!(100);
    body["starting_balance"] = json!(2500);
    body["fee"] = json!(0.0005);
    body["leverage"] = json!(3);
    body["include_equity_curve"] = json!(true);
    let job_id = app.submit(&body).await;
    let job = app.wait(&job_id, Duration::from_secs(180)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (_, result) = app.get(&format!("/v1/jobs/{job_id}/result")).await;
    // Read as users read it: integer ms and RFC 3339 per point (see result_shapes).
    let first = &result["equity_curve"][0]["points"][0];
    assert!(
        first["time"].is_i64() && first["date"].is_string() && first["value"].is_f64(),
        "equity curve: {}",
        result["equity_curve"]
    );
    assert!(result.get("trades").is_none(), "trades were not asked for");

    let reference = reference_backtest(&json!({
        "csv": csv_path, "exchange": EXCHANGE, "symbol": SYMBOL, "strategy": "RsiReversion",
        "strategy_path": app.strategies_dir().join("RsiReversion/__init__.py"), "timeframe": "15m",
        "start_ms": 1_704_844_800_000i64, "end_ms": 1_706_745_600_000i64, "warmup_minutes": 100 * 15,
        "config": {"starting_balance": 2500, "fee": 0.0005, "type": "futures", "futures_leverage": 3,
                   "futures_leverage_mode": "cross", "exchange": EXCHANGE, "warm_up_candles": 100},
        "fast_mode": true,
    }))
    .await;
    assert_metrics_identical(&result["metrics"], &reference["metrics"]);
    // NaN/inf metrics arrive as null, never as invalid JSON.
    let nulls: Vec<_> = result["metrics"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| v.is_null())
        .map(|(k, _)| k.clone())
        .collect();
    println!("metrics that were NaN/inf in Jesse: {nulls:?}");
}
