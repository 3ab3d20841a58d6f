//! Analysis, comparison and charts of real backtests (real workers, real
//! Jesse): the analysis agrees with the equity curve the result holds and with
//! Jesse's own metrics, comparisons align and correlate, every chart is a PNG
//! of the requested size and the same bytes twice, over REST and MCP; and the
//! refusals say why.

use std::time::Duration;

use base64::Engine as _;
use jesse_mcp_tests::*;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(180);

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.len() > 33, "{} bytes is no PNG", bytes.len());
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR", "IHDR first");
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

/// No subschema is the bare `true` schemars gives `serde_json::Value` fields:
/// the official TypeScript SDK refuses a whole tools/list holding one.
fn assert_no_bare_true(schema: &Value, at: &str) {
    let Some(object) = schema.as_object() else {
        return;
    };
    for (key, value) in object {
        let here = format!("{at}/{key}");
        let subschemas: Vec<&Value> = match key.as_str() {
            "properties" | "$defs" | "definitions" | "patternProperties" => value
                .as_object()
                .map(|m| m.values().collect())
                .unwrap_or_default(),
            "anyOf" | "oneOf" | "allOf" | "prefixItems" => value
                .as_array()
                .map(|a| a.iter().collect())
                .unwrap_or_default(),
            "items" | "additionalProperties" | "not" => vec![value],
            _ => continue,
        };
        for subschema in subschemas {
            assert_ne!(
                subschema,
                &Value::Bool(true),
                "bare `true` schema at {here}"
            );
            assert_no_bare_true(subschema, &here);
        }
    }
}

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance * a.abs().max(b.abs()).max(1.0)
}

async fn get_png(app: &TestApp, path: &str) -> (u16, String, Vec<u8>) {
    let response = app.client.get(app.url(path)).send().await.expect("GET");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    (
        status,
        content_type,
        response.bytes().await.unwrap().to_vec(),
    )
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

async fn call(
    client: &rmcp::service::RunningService<rmcp::RoleClient, ()>,
    tool: &str,
    args: Value,
) -> rmcp::model::CallToolResult {
    client
        .call_tool(
            CallToolRequestParams::new(tool.to_string())
                .with_arguments(args.as_object().unwrap().clone()),
        )
        .await
        .unwrap_or_else(|e| panic!("calling {tool}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysis_comparison_and_charts_of_real_backtests() {
    let app = TestApp::spawn(Options {
        runners: 2,
        fixtures: &["Sleeper", "Raiser"],
        ..Default::default()
    })
    .await;
    app.import_csv(&synthetic_csv("2023-01-01", "2023-05-01", 7))
        .await;

    let a = app
        .submit(&backtest_body("SmaCross", "1h", "2023-01-15", "2023-05-01"))
        .await;
    let mut body_b = backtest_body("SmaCross", "2h", "2023-02-01", "2023-05-01");
    body_b["hyperparameters"] = json!({"fast": 10, "slow": 40});
    let b = app.submit(&body_b).await;
    // Never trades, and sleeps 0.2 s per 4h candle: 6 s or more.
    let sleeper = app
        .submit(&backtest_body("Sleeper", "4h", "2023-03-01", "2023-03-06"))
        .await;
    let raiser = app
        .submit(&backtest_body("Raiser", "1h", "2023-03-01", "2023-03-03"))
        .await;

    // Not finished yet: 409, as for its result.
    let (status, body) = app.get(&format!("/v1/jobs/{sleeper}/analysis")).await;
    assert_eq!((status, code(&body)), (409, "result_not_ready"), "{body}");
    let (status, _, bytes) = get_png(&app, &format!("/v1/jobs/{sleeper}/charts/equity.png")).await;
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!((status, code(&body)), (409, "result_not_ready"), "{body}");

    for (job, expected) in [
        (&a, "succeeded"),
        (&b, "succeeded"),
        (&sleeper, "succeeded"),
        (&raiser, "failed"),
    ] {
        let finished = app.wait(job, WAIT).await;
        assert_eq!(finished["status"], expected, "{finished}");
    }

    // ---- analysis: consistent with the curve the result holds ----------------
    let (status, result) = app.get(&format!("/v1/jobs/{a}/result")).await;
    assert_eq!(status, 200, "{result}");
    let metrics = &result["metrics"];
    assert!(
        metrics["total"].as_i64().unwrap() > 5,
        "SmaCross should trade: {metrics}"
    );
    let series = result["equity_curve"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "Portfolio")
        .expect("Jesse's Portfolio series");
    let values: Vec<f64> = series["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_f64().unwrap())
        .collect();
    let mut peak = f64::MIN;
    let curve_max_drawdown = values
        .iter()
        .map(|v| {
            peak = peak.max(*v);
            (v / peak - 1.0) * 100.0
        })
        .fold(0.0, f64::min);
    let total_return = (values[values.len() - 1] / values[0] - 1.0) * 100.0;

    let (status, analysis) = app.get(&format!("/v1/jobs/{a}/analysis")).await;
    assert_eq!(status, 200, "{analysis}");
    assert_eq!(analysis["job_id"], a.as_str());
    assert_eq!(analysis["unavailable"], json!({}), "{analysis}");
    for section in [
        "curve",
        "drawdowns",
        "monthly_returns",
        "yearly_returns",
        "rolling_sharpe",
        "distribution",
        "sharpe",
        "exposure",
    ] {
        assert!(
            !analysis[section].is_null(),
            "{section} missing: {analysis}"
        );
    }
    // Traceable: the candles and the exact strategy source behind every number.
    let source = &analysis["source"];
    assert_eq!(source["candles"], result["provenance"]["candles"]);
    assert_eq!(
        source["strategies"][0]["sha256"],
        result["provenance"]["strategies"][0]["sha256"]
    );
    assert_eq!(source["start_date"], "2023-01-15");
    assert_eq!(source["end_date"], "2023-05-01");

    let drawdowns = analysis["drawdowns"].as_array().unwrap();
    assert!(!drawdowns.is_empty() && drawdowns.len() <= 5);
    let worst = drawdowns[0]["depth_pct"].as_f64().unwrap();
    assert!(
        close(worst, curve_max_drawdown, 1e-12),
        "{worst} vs {curve_max_drawdown}"
    );
    assert!(
        close(worst, metrics["max_drawdown"].as_f64().unwrap(), 1e-9),
        "Jesse's max_drawdown"
    );
    let depths: Vec<f64> = drawdowns
        .iter()
        .map(|d| d["depth_pct"].as_f64().unwrap())
        .collect();
    assert!(
        depths.windows(2).all(|w| w[0] <= w[1]),
        "deepest first: {depths:?}"
    );
    for d in drawdowns {
        assert!(
            d["start"].as_str().unwrap() <= d["trough"].as_str().unwrap(),
            "{d}"
        );
        if let Some(recovery) = d["recovery"].as_str() {
            assert!(d["trough"].as_str().unwrap() < recovery, "{d}");
        }
        assert!(d["duration_days"].as_i64().unwrap() >= d["days_to_trough"].as_i64().unwrap());
    }

    let compound = |rows: &Value| -> f64 {
        let growth: f64 = rows
            .as_array()
            .unwrap()
            .iter()
            .map(|m| 1.0 + m["return_pct"].as_f64().unwrap() / 100.0)
            .product();
        (growth - 1.0) * 100.0
    };
    let months: Vec<&str> = analysis["monthly_returns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["period"].as_str().unwrap())
        .collect();
    assert_eq!(months, ["2023-01", "2023-02", "2023-03", "2023-04"]);
    assert!(close(
        compound(&analysis["monthly_returns"]),
        total_return,
        1e-9
    ));
    assert!(close(
        compound(&analysis["yearly_returns"]),
        total_return,
        1e-9
    ));
    assert!(close(
        analysis["curve"]["total_return_pct"].as_f64().unwrap(),
        total_return,
        1e-12
    ));

    let observations = values.len() - 1;
    assert_eq!(analysis["distribution"]["observations"], observations);
    assert_eq!(
        analysis["rolling_sharpe"]["points"]
            .as_array()
            .unwrap()
            .len(),
        observations - 29
    );
    let sharpe = &analysis["sharpe"];
    assert!(
        close(
            sharpe["sharpe_annualized"].as_f64().unwrap(),
            metrics["sharpe_ratio"].as_f64().unwrap(),
            1e-9
        ),
        "the curve's annualized Sharpe is Jesse's sharpe_ratio: {sharpe} vs {}",
        metrics["sharpe_ratio"]
    );
    let psr = sharpe["probabilistic_sharpe_ratio"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&psr));
    let d = &analysis["distribution"];
    let (var95, cvar95, var99) = (
        d["var_95_pct"].as_f64().unwrap(),
        d["cvar_95_pct"].as_f64().unwrap(),
        d["var_99_pct"].as_f64().unwrap(),
    );
    assert!(cvar95 <= var95 && var99 <= var95, "{d}");
    let exposure = &analysis["exposure"];
    assert_eq!(exposure["trades"], result["trades_total"]);
    let in_market = exposure["time_in_market_pct"].as_f64().unwrap();
    assert!(in_market > 0.0 && in_market <= 100.0, "{exposure}");
    assert_eq!(exposure["days_total"], 106);

    // ---- a backtest without trades: sections null, each with a reason ----------
    let (status, empty) = app.get(&format!("/v1/jobs/{sleeper}/analysis")).await;
    assert_eq!(status, 200, "{empty}");
    for section in [
        "curve",
        "drawdowns",
        "monthly_returns",
        "distribution",
        "sharpe",
        "exposure",
    ] {
        assert!(empty[section].is_null(), "{section}: {empty}");
        assert!(
            empty["unavailable"][section]
                .as_str()
                .is_some_and(|r| r.contains("no trades")),
            "{section}: {}",
            empty["unavailable"]
        );
    }
    let (status, _, bytes) = get_png(&app, &format!("/v1/jobs/{sleeper}/charts/equity.png")).await;
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!((status, code(&body)), (422, "chart_unavailable"), "{body}");

    // ---- refusals -------------------------------------------------------------
    let unknown = "01J00000000000000000000000";
    let (status, body) = app.get(&format!("/v1/jobs/{unknown}/analysis")).await;
    assert_eq!((status, code(&body)), (404, "job_not_found"), "{body}");
    let (status, body) = app.get(&format!("/v1/jobs/{raiser}/analysis")).await;
    assert_eq!((status, code(&body)), (409, "job_has_no_result"), "{body}");
    let (status, report) = app
        .post_json(
            "/v1/strategies/validate",
            &json!({"name": "SmaCross", "code": std::fs::read_to_string(app.strategies_dir().join("SmaCross/__init__.py")).unwrap(), "deep": true}),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    let validation = report["deep"]["job_id"]
        .as_str()
        .expect("a validation job")
        .to_string();
    let (status, body) = app.get(&format!("/v1/jobs/{validation}/analysis")).await;
    assert_eq!((status, code(&body)), (422, "not_a_backtest"), "{body}");
    assert_eq!(body["error"]["details"]["kind"], "strategy_validation");

    // ---- comparison -----------------------------------------------------------
    let (status, comparison) = app
        .post_json("/v1/compare", &json!({"job_ids": [a, b]}))
        .await;
    assert_eq!(status, 200, "{comparison}");
    let jobs = comparison["jobs"].as_array().unwrap();
    assert_eq!(
        (jobs[0]["job_id"].as_str(), jobs[1]["job_id"].as_str()),
        (Some(a.as_str()), Some(b.as_str()))
    );
    assert_eq!(jobs[0]["metrics"]["sharpe_ratio"], metrics["sharpe_ratio"]);
    assert_eq!(jobs[0]["metrics"]["total"], metrics["total"]);
    let matrix = &comparison["correlation"]["matrix"];
    for i in 0..2 {
        assert!(
            close(matrix[i][i].as_f64().unwrap(), 1.0, 1e-12),
            "a job with itself: {matrix}"
        );
    }
    let r = matrix[0][1].as_f64().unwrap();
    assert!(
        (-1.0..=1.0).contains(&r) && matrix[1][0] == matrix[0][1],
        "{matrix}"
    );
    // B starts on 2023-02-01: its first return is that day's.
    let common = comparison["correlation"]["common_days"][0][1]
        .as_u64()
        .unwrap();
    assert_eq!(common, 89, "{}", comparison["correlation"]);
    let dates: Vec<&str> = comparison["equity"]["dates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(dates.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        (dates[0], dates[dates.len() - 1]),
        ("2023-01-14", "2023-04-30")
    );
    let series_a = comparison["equity"]["series"][0]["values"]
        .as_array()
        .unwrap();
    let series_b = comparison["equity"]["series"][1]["values"]
        .as_array()
        .unwrap();
    assert_eq!((series_a.len(), series_b.len()), (dates.len(), dates.len()));
    assert_eq!(series_a[0], 100.0);
    let b_first = dates.iter().position(|d| *d == "2023-01-31").unwrap();
    assert!(series_b[..b_first].iter().all(Value::is_null));
    assert_eq!(series_b[b_first], 100.0);
    assert!(close(
        series_a[dates.len() - 1].as_f64().unwrap(),
        100.0 + total_return,
        1e-12
    ));

    for (ids, expected, named) in [
        (json!([a]), "invalid_job_ids", None),
        (json!([a, a]), "invalid_job_ids", Some(&a)),
        (
            json!([a, unknown]),
            "unknown_job_id",
            Some(&unknown.to_string()),
        ),
        (json!([a, validation]), "not_a_backtest", Some(&validation)),
        (json!([a, raiser]), "job_not_succeeded", Some(&raiser)),
    ] {
        let (status, body) = app.post_json("/v1/compare", &json!({"job_ids": ids})).await;
        assert_eq!((status, code(&body)), (422, expected), "{ids}: {body}");
        if let Some(id) = named {
            assert_eq!(body["error"]["details"]["job_id"], id.as_str(), "{body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains(id.as_str())
            );
        }
    }

    // ---- charts ---------------------------------------------------------------
    for name in ["equity", "drawdown", "monthly", "histogram"] {
        let path = format!("/v1/jobs/{a}/charts/{name}.png?width=640&height=400");
        let (status, content_type, png) = get_png(&app, &path).await;
        assert_eq!(status, 200, "{name}: {}", String::from_utf8_lossy(&png));
        assert_eq!(content_type, "image/png");
        assert_eq!(png_size(&png), (640, 400), "{name}");
        let (_, _, again) = get_png(&app, &path).await;
        assert!(png == again, "{name}: the same chart twice differs");
    }
    let (status, _, png) = get_png(&app, &format!("/v1/jobs/{b}/charts/equity.png")).await;
    assert_eq!((status, png_size(&png)), (200, (1000, 600)), "default size");
    for (path, status_code, expected) in [
        (
            format!("/v1/jobs/{a}/charts/fan.png"),
            422,
            "chart_not_applicable",
        ),
        (format!("/v1/jobs/{a}/charts/pie.png"), 404, "unknown_chart"),
        (
            format!("/v1/jobs/{a}/charts/equity.png?width=100"),
            422,
            "invalid_chart_size",
        ),
        (
            format!("/v1/jobs/{a}/charts/equity.png?height=5000"),
            422,
            "invalid_chart_size",
        ),
        (
            format!("/v1/jobs/{validation}/charts/equity.png"),
            422,
            "chart_not_applicable",
        ),
        (
            format!("/v1/jobs/{unknown}/charts/equity.png"),
            404,
            "job_not_found",
        ),
    ] {
        let (status, _, bytes) = get_png(&app, &path).await;
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            (status, code(&body)),
            (status_code, expected),
            "{path}: {body}"
        );
    }
    let (_, _, bytes) = get_png(&app, &format!("/v1/jobs/{a}/charts/fan.png")).await;
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        body["error"]["details"]["names"],
        json!(["equity", "drawdown", "monthly", "histogram"]),
        "the names that apply: {body}"
    );

    // A real Monte Carlo of A's trades: its fan and its histogram of total returns.
    let (status, accepted) = app
        .post_json(
            "/v1/monte-carlo",
            &json!({"mode": "trades", "source": a, "scenarios": 200, "seed": 5, "method": "bootstrap"}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let monte_carlo = accepted["job_id"].as_str().unwrap().to_string();
    let finished = app.wait(&monte_carlo, WAIT).await;
    assert_eq!(finished["status"], "succeeded", "{finished}");
    for name in ["fan", "histogram"] {
        let path = format!("/v1/jobs/{monte_carlo}/charts/{name}.png?width=800&height=500");
        let (status, content_type, png) = get_png(&app, &path).await;
        assert_eq!(status, 200, "{name}: {}", String::from_utf8_lossy(&png));
        assert_eq!(content_type, "image/png");
        assert_eq!(png_size(&png), (800, 500), "{name}");
        let (_, _, again) = get_png(&app, &path).await;
        assert!(png == again, "{name}: the same chart twice differs");
    }
    let (status, _, bytes) =
        get_png(&app, &format!("/v1/jobs/{monte_carlo}/charts/equity.png")).await;
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        (status, code(&body)),
        (422, "chart_not_applicable"),
        "{body}"
    );
    assert_eq!(
        body["error"]["details"]["names"],
        json!(["fan", "histogram"])
    );
    let (status, body) = app.get(&format!("/v1/jobs/{monte_carlo}/analysis")).await;
    assert_eq!((status, code(&body)), (422, "not_a_backtest"), "{body}");

    // ---- MCP: the same answers, the chart as image content ----------------------
    let transport = StreamableHttpClientTransport::from_uri(format!("{}/mcp", app.base));
    let client = ().serve(transport).await.expect("MCP HTTP client");
    let tools = client.list_all_tools().await.expect("tools/list");
    for name in ["analyze", "compare"] {
        let tool = tools.iter().find(|t| t.name == name).unwrap();
        let schema = Value::Object((*tool.output_schema.clone().expect("output schema")).clone());
        assert_no_bare_true(&schema, name);
    }
    for name in ["analyze", "compare", "chart"] {
        let tool = tools
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("{name} listed"));
        assert_eq!(
            tool.annotations.as_ref().and_then(|a| a.read_only_hint),
            Some(true),
            "{name}"
        );
    }
    let charted = call(
        &client,
        "chart",
        json!({"job_id": a, "name": "monthly", "width": 500, "height": 300}),
    )
    .await;
    assert_eq!(charted.is_error, Some(false), "{charted:?}");
    let image = charted.content[0].as_image().expect("image content");
    assert_eq!(image.mime_type, "image/png");
    let png = base64::engine::general_purpose::STANDARD
        .decode(&image.data)
        .expect("base64");
    assert_eq!(png_size(&png), (500, 300));
    let (_, _, rest_png) = get_png(
        &app,
        &format!("/v1/jobs/{a}/charts/monthly.png?width=500&height=300"),
    )
    .await;
    assert!(png == rest_png, "MCP and REST draw the same bytes");
    let analyzed = call(&client, "analyze", json!({"job_id": a})).await;
    assert_eq!(
        analyzed.structured_content.as_ref(),
        Some(&analysis),
        "MCP analyze equals REST"
    );
    let refused = call(&client, "chart", json!({"job_id": a, "name": "fan"})).await;
    assert_eq!(refused.is_error, Some(true));
    let text = &refused.content[0].as_text().expect("text").text;
    let envelope: Value = serde_json::from_str(text).expect("the error envelope");
    assert_eq!(code(&envelope), "chart_not_applicable");
    let compared = call(&client, "compare", json!({"job_ids": [a, unknown]})).await;
    assert_eq!(compared.is_error, Some(true));
    assert!(
        compared.content[0]
            .as_text()
            .unwrap()
            .text
            .contains("unknown_job_id")
    );
    client.cancel().await.ok();
}
