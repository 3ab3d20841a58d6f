//! Everything a user can get wrong gets a specific 4xx in the error envelope,
//! and enqueues nothing.

use jesse_mcp_tests::*;
use serde_json::{Value, json};

fn with(mut body: Value, key: &str, value: Value) -> Value {
    body[key] = value;
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_submits_are_rejected_specifically_and_enqueue_nothing() {
    let app = TestApp::spawn(Options {
        start_worker: false,
        ..Default::default()
    })
    .await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-02-01", 1))
        .await;
    let good = backtest_body("SmaCross", "1h", "2024-01-15", "2024-01-25");

    let cases: Vec<(&str, Value, u16, &str, &str)> = vec![
        (
            "unknown strategy",
            with(good.clone(), "strategy", json!("NoSuchStrategy")),
            422,
            "unknown_strategy",
            "NoSuchStrategy",
        ),
        (
            "path in strategy",
            with(good.clone(), "strategy", json!("../etc")),
            422,
            "invalid_strategy_name",
            "A-Za-z",
        ),
        (
            "unsupported timeframe",
            with(good.clone(), "timeframe", json!("7m")),
            422,
            "unsupported_timeframe",
            "7m",
        ),
        (
            "unsupported exchange",
            with(good.clone(), "exchange", json!("Mt Gox")),
            422,
            "unsupported_exchange",
            "Mt Gox",
        ),
        (
            "end before start",
            with(good.clone(), "end_date", json!("2024-01-10")),
            422,
            "invalid_date_range",
            "before end_date",
        ),
        (
            "same day",
            with(good.clone(), "end_date", json!("2024-01-15")),
            422,
            "invalid_date_range",
            "exclusive",
        ),
        (
            "bad date",
            with(good.clone(), "start_date", json!("15/01/2024")),
            422,
            "invalid_date",
            "YYYY-MM-DD",
        ),
        (
            // Once accepted with allow_gaps, then the worker sized a buffer by
            // the span and aborted (issue 12).
            "absurd end date",
            with(
                with(good.clone(), "end_date", json!("+262142-12-31")),
                "allow_gaps",
                json!(true),
            ),
            422,
            "invalid_date",
            "outside the dates",
        ),
        (
            "negative balance",
            with(good.clone(), "starting_balance", json!(-5)),
            422,
            "invalid_number",
            "starting_balance",
        ),
        (
            "huge fee",
            with(good.clone(), "fee", json!(0.5)),
            422,
            "invalid_number",
            "fee",
        ),
        (
            "zero leverage",
            with(good.clone(), "leverage", json!(0)),
            422,
            "invalid_number",
            "leverage",
        ),
        (
            "bad type",
            with(good.clone(), "type", json!("options")),
            422,
            "invalid_type",
            "futures",
        ),
        (
            "bad symbol",
            with(good.clone(), "symbol", json!("btcusdt")),
            422,
            "invalid_symbol",
            "BTC-USDT",
        ),
        (
            "missing candles",
            with(good.clone(), "end_date", json!("2024-03-01")),
            422,
            "missing_candles",
            "2024-02-01T00:00:00.000Z",
        ),
        (
            "warm-up before data",
            with(good.clone(), "start_date", json!("2024-01-05")),
            422,
            "missing_candles",
            "warm-up",
        ),
        (
            "unknown field",
            with(good.clone(), "stratgey", json!("x")),
            422,
            "invalid_request",
            "stratgey",
        ),
        (
            "wrong type",
            with(good.clone(), "fee", json!("cheap")),
            422,
            "invalid_request",
            "fee",
        ),
        (
            "missing strategy",
            {
                let mut b = good.clone();
                b.as_object_mut().unwrap().remove("strategy");
                b
            },
            422,
            "missing_field",
            "strategy",
        ),
    ];
    for (name, body, status, code, mention) in cases {
        let (got, answer) = app.post_json("/v1/backtests", &body).await;
        assert_eq!(got, status, "{name}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{name}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(mention),
            "{name}: message should mention {mention:?}: {message}"
        );
    }

    // The missing-candles error names the missing range precisely.
    let (_, answer) = app
        .post_json(
            "/v1/backtests",
            &with(good.clone(), "end_date", json!("2024-03-01")),
        )
        .await;
    let gap = &answer["error"]["details"]["gaps"][0];
    assert_eq!(gap["start"], 1_706_745_600_000i64, "first missing minute");
    assert_eq!(
        gap["end"], 1_709_251_200_000i64,
        "end of the range (exclusive)"
    );

    // Transport-level mistakes.
    let (status, answer) = app
        .post_raw(
            "/v1/backtests",
            "application/json",
            b"{\"strategy\": ".to_vec(),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("malformed_json")),
        "{answer}"
    );
    let (status, answer) = app
        .post_raw("/v1/backtests", "text/plain", good.to_string().into_bytes())
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (415, Some("unsupported_media_type")),
        "{answer}"
    );
    let mut huge = good.clone();
    huge["hyperparameters"] = json!({"pad": "x".repeat(2 * 1024 * 1024)});
    let (status, answer) = app.post_json("/v1/backtests", &huge).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{answer}"
    );

    assert_eq!(app.job_count().await, 0, "no bad request may enqueue a job");

    // Unknown ids are 404, never "finished".
    for path in [
        "/v1/jobs/01JAAAAAAAAAAAAAAAAAAAAAAA",
        "/v1/jobs/nope/result",
    ] {
        let (status, answer) = app.get(path).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (404, Some("job_not_found")),
            "{path}: {answer}"
        );
    }
    let (status, _) = app
        .post_json("/v1/jobs/01JAAAAAAAAAAAAAAAAAAAAAAA/cancel", &json!({}))
        .await;
    assert_eq!(status, 404);
    let (status, answer) = app.get("/v1/jobs?status=done").await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("invalid_status"))
    );
    let (status, answer) = app.get("/v1/nothing-here").await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (status, answer) = app.get("/v1/backtests").await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_returns_the_same_job() {
    let app = TestApp::spawn(Options {
        start_worker: false,
        ..Default::default()
    })
    .await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-02-01", 1))
        .await;
    let body = backtest_body("SmaCross", "1h", "2024-01-15", "2024-01-25");
    let send = |body: Value| {
        let request = app
            .client
            .post(app.url("/v1/backtests"))
            .header("Idempotency-Key", "retry-42")
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let (status, first) = send(body.clone()).await;
    assert_eq!(status, 202);
    assert_eq!(first["created"], true);
    let (status, again) = send(body.clone()).await;
    assert_eq!(status, 202);
    assert_eq!(again["job_id"], first["job_id"]);
    assert_eq!(again["created"], false);
    let (status, conflict) = send(with(body, "fee", json!(0.002))).await;
    assert_eq!(
        (status, conflict["error"]["code"].as_str()),
        (409, Some("idempotency_key_reused"))
    );
    assert_eq!(app.job_count().await, 1);

    // Job listing and paging.
    app.submit(&backtest_body(
        "RsiReversion",
        "1h",
        "2024-01-15",
        "2024-01-25",
    ))
    .await;
    let (_, page) = app.get("/v1/jobs?limit=1").await;
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_string();
    let (_, next) = app.get(&format!("/v1/jobs?limit=1&cursor={cursor}")).await;
    assert_eq!(next["jobs"][0]["job_id"], first["job_id"]);
    assert!(next["next_cursor"].is_null());
    let (_, queued) = app.get("/v1/jobs?kind=backtest&status=queued").await;
    assert_eq!(queued["jobs"].as_array().unwrap().len(), 2);
    let (status, doc) = app.get("/v1/openapi.json").await;
    assert_eq!(status, 200);
    assert!(doc["paths"]["/v1/backtests"]["post"].is_object());
    assert!(doc["paths"]["/v1/strategies/{name}"]["put"].is_object());
    assert!(
        doc["components"]["schemas"]["BacktestRequest"].is_object(),
        "{}",
        doc["components"]
    );
}
