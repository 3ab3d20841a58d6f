//! Results people can use, on a real backtest (real worker, real Jesse): every
//! time a user reads is integer ms with an RFC 3339 sibling that agree with each
//! other and with bare Jesse's own trades and equity curve; trades leave out
//! their orders unless asked (REST and MCP); the trades and the equity curve
//! export as CSV that Python's `csv` module reads back row for row; and the
//! exports refuse what they cannot export with the right error.

use std::time::Duration;

use chrono::DateTime;
use jesse_mcp_tests::*;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};

const START: &str = "2024-01-15";
const END: &str = "2024-02-25";
const START_MS: i64 = 1_705_276_800_000;
const END_MS: i64 = 1_708_819_200_000;
const WAIT: Duration = Duration::from_secs(180);

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

/// An RFC 3339 string as ms since the epoch.
fn iso_ms(value: &Value) -> i64 {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"));
    assert!(text.ends_with('Z'), "UTC: {text}");
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .timestamp_millis()
}

/// A GET answering text: status, content type, body.
async fn get_text(app: &TestApp, path: &str) -> (u16, String, String) {
    let response = app.client.get(app.url(path)).send().await.expect("GET");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (status, content_type, response.text().await.expect("body"))
}

/// Parses CSV with Python's `csv` module (a reader we did not write): the
/// header and the rows as lists of strings.
async fn python_csv(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("export.csv");
    std::fs::write(&path, text).unwrap();
    let script = "import csv, json, sys\n\
                  with open(sys.argv[1], newline='') as f:\n    rows = list(csv.reader(f, strict=True))\n\
                  print(json.dumps(rows))";
    let output = tokio::process::Command::new(venv_python())
        .args(["-c", script])
        .arg(&path)
        .output()
        .await
        .expect("run python");
    assert!(
        output.status.success(),
        "python csv: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut rows: Vec<Vec<String>> = serde_json::from_slice(&output.stdout).unwrap();
    assert!(!rows.is_empty(), "no header row");
    let header = rows.remove(0);
    (header, rows)
}

/// A CSV cell as JSON would carry it: empty is null, numbers are numbers.
fn same_number(cell: &str, value: &Value, what: &str) {
    match value.as_f64() {
        Some(x) => assert_eq!(
            cell.parse::<f64>()
                .unwrap_or_else(|_| panic!("{what}: '{cell}'"))
                .to_bits(),
            x.to_bits(),
            "{what}: {cell} vs {value}"
        ),
        None => assert!(
            value.is_null() && cell.is_empty(),
            "{what}: '{cell}' vs {value}"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_read_in_ms_and_iso_agree_with_jesse_and_export_as_csv() {
    let app = TestApp::spawn(Options {
        runners: 2,
        fixtures: &["Sleeper", "Raiser"],
        ..Default::default()
    })
    .await;
    let csv = synthetic_csv("2024-01-01", "2024-03-01", 11);
    let csv_path = app.dir.path().join("candles.csv");
    std::fs::write(&csv_path, &csv).unwrap();
    app.import_csv(&csv).await;

    let mut body = backtest_body("SmaCross", "1h", START, END);
    body["include_trades"] = json!(true);
    body["include_equity_curve"] = json!(true);
    body["hyperparameters"] = json!({"fast": 12, "slow": 40});
    let job_id = app.submit(&body).await;
    // Never trades, and sleeps 0.2 s per 4h candle: still running below.
    let sleeper = app
        .submit(&backtest_body("Sleeper", "4h", "2024-02-15", "2024-02-20"))
        .await;

    // ---- the refusals ---------------------------------------------------------
    for export in ["trades.csv", "equity.csv"] {
        let (status, _, text) = get_text(&app, &format!("/v1/jobs/NOPE/{export}")).await;
        let error: Value = serde_json::from_str(&text).unwrap();
        assert_eq!((status, code(&error)), (404, "job_not_found"), "{text}");
        let (status, _, text) = get_text(&app, &format!("/v1/jobs/{sleeper}/{export}")).await;
        let error: Value = serde_json::from_str(&text).unwrap();
        assert_eq!((status, code(&error)), (409, "result_not_ready"), "{text}");
    }
    // A job of another kind: a deep strategy validation.
    let source =
        std::fs::read_to_string(app.strategies_dir().join("SmaCross/__init__.py")).unwrap();
    let (status, report) = app
        .post_json(
            "/v1/strategies/validate",
            &json!({"name": "SmaCross", "code": source, "deep": true}),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    let validation = report["deep"]["job_id"]
        .as_str()
        .expect("deep job")
        .to_string();
    for export in ["trades.csv", "equity.csv"] {
        let (status, _, text) = get_text(&app, &format!("/v1/jobs/{validation}/{export}")).await;
        let error: Value = serde_json::from_str(&text).unwrap();
        assert_eq!((status, code(&error)), (422, "not_exportable"), "{text}");
        assert_eq!(error["error"]["details"]["kind"], "strategy_validation");
    }
    // A failed backtest has no result to export.
    let raiser = app
        .submit(&backtest_body("Raiser", "1h", "2024-02-01", "2024-02-03"))
        .await;
    assert_eq!(app.wait(&raiser, WAIT).await["status"], "failed");
    let (status, _, text) = get_text(&app, &format!("/v1/jobs/{raiser}/trades.csv")).await;
    let error: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((status, code(&error)), (409, "job_has_no_result"), "{text}");

    // ---- the JSON result ------------------------------------------------------
    let job = app.wait(&job_id, WAIT).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (status, result) = app
        .get(&format!("/v1/jobs/{job_id}/result?trades_limit=10000"))
        .await;
    assert_eq!(status, 200, "{result}");
    let trades = result["trades"].as_array().expect("trades").clone();
    assert!(trades.len() > 5, "SmaCross should trade: {}", trades.len());
    assert_eq!(result["trades_total"], trades.len());

    let reference = reference_backtest(&json!({
        "csv": csv_path, "exchange": EXCHANGE, "symbol": SYMBOL, "strategy": "SmaCross",
        "strategy_path": app.strategies_dir().join("SmaCross/__init__.py"), "timeframe": "1h",
        "start_ms": START_MS, "end_ms": END_MS, "warmup_minutes": 240 * 60,
        "config": {"starting_balance": 10000, "fee": 0.001, "type": "futures", "futures_leverage": 1,
                   "futures_leverage_mode": "cross", "exchange": EXCHANGE, "warm_up_candles": 240},
        "hyperparameters": {"fast": 12, "slow": 40, "risk": 0.5},
        "generate_equity_curve": true, "full": true,
    }))
    .await;
    assert_metrics_identical(&result["metrics"], &reference["metrics"]);
    let jesse_trades = reference["trade_list"].as_array().expect("Jesse's trades");
    assert_eq!(trades.len(), jesse_trades.len());
    for (ours, jesse) in trades.iter().zip(jesse_trades) {
        assert!(ours.get("orders").is_none(), "compact by default: {ours}");
        for key in ["opened_at", "closed_at"] {
            let ms = ours[key]
                .as_i64()
                .unwrap_or_else(|| panic!("{key} is no integer: {ours}"));
            assert_eq!(
                ms,
                iso_ms(&ours[format!("{key}_iso")]),
                "{key} and its ISO: {ours}"
            );
            let theirs = jesse[key].as_f64().expect("Jesse's time");
            assert_eq!(ms as f64, theirs, "{key}: Jesse's time: {ours} vs {jesse}");
        }
        for key in ["entry_price", "exit_price", "qty", "PNL", "fee"] {
            assert_eq!(ours[key], jesse[key], "{key}");
        }
        assert_eq!(ours["type"], jesse["type"]);
    }

    // The equity curve: Jesse's points, ms + ISO, no colours.
    let curve = result["equity_curve"].as_array().expect("equity curve");
    let jesse_curve = reference["equity_curve"].as_array().expect("Jesse's curve");
    assert_eq!(curve.len(), jesse_curve.len());
    assert!(!result["equity_curve"].to_string().contains("color"));
    let mut points_total = 0;
    for (series, jesse) in curve.iter().zip(jesse_curve) {
        assert_eq!(series["name"], jesse["name"]);
        let points = series["points"].as_array().expect("points");
        let jesse_points = jesse["data"].as_array().unwrap();
        assert_eq!(points.len(), jesse_points.len());
        assert!(points.len() >= 40, "one point a day: {}", points.len());
        let mut last = i64::MIN;
        for (p, q) in points.iter().zip(jesse_points) {
            let ms = p["time"]
                .as_i64()
                .unwrap_or_else(|| panic!("time is no integer: {p}"));
            assert_eq!(ms, iso_ms(&p["date"]), "{p}");
            assert_eq!(ms, (q["time"].as_f64().unwrap() * 1000.0).round() as i64);
            assert_eq!(p["value"], q["value"], "{p} vs {q}");
            assert!(ms > last, "points in time order: {p}");
            last = ms;
        }
        points_total += points.len();
    }
    assert_eq!(curve[0]["name"], "Portfolio");
    assert_eq!(curve[0]["points"][0]["date"], "2024-01-15T00:00:00.000Z");

    // Orders on request, their times shaped the same way.
    let (status, with_orders) = app
        .get(&format!(
            "/v1/jobs/{job_id}/result?include_orders=true&trades_limit=3"
        ))
        .await;
    assert_eq!(status, 200, "{with_orders}");
    for trade in with_orders["trades"].as_array().unwrap() {
        let orders = trade["orders"].as_array().expect("orders when asked");
        assert!(!orders.is_empty(), "{trade}");
        for order in orders {
            let ms = order["executed_at"].as_i64().expect("integer executed_at");
            assert_eq!(ms, iso_ms(&order["executed_at_iso"]));
        }
    }
    // include_trades keeps its meaning: false leaves the trades out.
    let (_, without) = app
        .get(&format!(
            "/v1/jobs/{job_id}/result?include_trades=false&include_orders=true"
        ))
        .await;
    assert!(without.get("trades").is_none(), "{without}");
    assert_eq!(without["trades_total"], trades.len());

    // MCP job_result: the same shapes, orders only with include_orders.
    let transport = StreamableHttpClientTransport::from_uri(format!("{}/mcp", app.base));
    let client = ().serve(transport).await.expect("MCP HTTP client");
    for (include, expect_orders) in [(None, false), (Some(true), true)] {
        let mut args = json!({"job_id": job_id, "include_trades": true, "trades_limit": 2});
        if let Some(include) = include {
            args["include_orders"] = json!(include);
        }
        let answer = client
            .call_tool(
                CallToolRequestParams::new("job_result")
                    .with_arguments(args.as_object().unwrap().clone()),
            )
            .await
            .expect("job_result");
        assert_eq!(answer.is_error, Some(false), "{answer:?}");
        let structured = answer.structured_content.expect("structured");
        let first = &structured["trades"][0];
        assert_eq!(first["opened_at"], trades[0]["opened_at"]);
        assert_eq!(first["opened_at_iso"], trades[0]["opened_at_iso"]);
        assert_eq!(first.get("orders").is_some(), expect_orders, "{first}");
        assert_eq!(structured["equity_curve"], result["equity_curve"]);
    }
    client.cancel().await.ok();

    // ---- the CSV exports ------------------------------------------------------
    let (status, content_type, text) =
        get_text(&app, &format!("/v1/jobs/{job_id}/trades.csv")).await;
    assert_eq!(status, 200, "{text}");
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    // Downloads are named after the job.
    for export in ["trades", "equity"] {
        let response = app
            .client
            .get(app.url(&format!("/v1/jobs/{job_id}/{export}.csv")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers()["content-disposition"],
            format!("attachment; filename=\"{job_id}-{export}.csv\"").as_str()
        );
    }
    let (header, rows) = python_csv(&text).await;
    assert_eq!(
        header,
        [
            "id",
            "strategy_name",
            "symbol",
            "exchange",
            "type",
            "entry_price",
            "exit_price",
            "qty",
            "opened_at",
            "opened_at_iso",
            "closed_at",
            "closed_at_iso",
            "fee",
            "size",
            "PNL",
            "PNL_percentage",
            "holding_period"
        ]
    );
    assert_eq!(rows.len(), trades.len(), "one row per trade");
    for (row, trade) in rows.iter().zip(&trades) {
        assert_eq!(row.len(), header.len());
        for (cell, column) in row.iter().zip(&header) {
            let value = &trade[column.as_str()];
            match value {
                Value::String(s) => assert_eq!(cell, s, "{column}"),
                _ => same_number(cell, value, column),
            }
        }
    }

    let (status, content_type, text) =
        get_text(&app, &format!("/v1/jobs/{job_id}/equity.csv")).await;
    assert_eq!(status, 200, "{text}");
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    let (header, rows) = python_csv(&text).await;
    assert_eq!(header, ["series", "time", "date", "value"]);
    assert_eq!(rows.len(), points_total, "one row per point");
    let portfolio = curve[0]["points"].as_array().unwrap();
    for (row, point) in rows.iter().zip(portfolio) {
        assert_eq!(row[0], "Portfolio");
        assert_eq!(row[1], point["time"].to_string());
        assert_eq!(row[2], point["date"].as_str().unwrap());
        same_number(&row[3], &point["value"], "value");
    }

    // A backtest without trades: no equity curve, an export of the header alone.
    let job = app.wait(&sleeper, WAIT).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (_, result) = app.get(&format!("/v1/jobs/{sleeper}/result")).await;
    assert_eq!(result["equity_curve"], Value::Null, "{result}");
    for (export, header) in [
        ("equity.csv", "series,time,date,value\r\n"),
        (
            "trades.csv",
            "id,strategy_name,symbol,exchange,type,entry_price,exit_price,qty,opened_at,opened_at_iso,closed_at,closed_at_iso,fee,size,PNL,PNL_percentage,holding_period\r\n",
        ),
    ] {
        let (status, _, text) = get_text(&app, &format!("/v1/jobs/{sleeper}/{export}")).await;
        assert_eq!((status, text.as_str()), (200, header));
    }
}
