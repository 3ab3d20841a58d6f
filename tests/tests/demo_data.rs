//! Demo data that cannot be mistaken for market data: the demo seeder
//! (`jesse-mcp-api candles demo`, run by `make run` and ops/mcp-stdio.sh) labels
//! its series `synthetic` in listings, gap reports and backtest results; an
//! exchange import never counts synthetic minutes as stored but replaces them
//! (against the fake exchange); synthetic and real rows never share a series,
//! on SQLite and Postgres; the stdio launcher seeds a fresh data dir as
//! `make run` does, so the README's example works over stdio. Also the
//! store's count of warm runners behind /ready and /health, on both engines.

use std::process::Stdio;
use std::time::Duration;

use jesse_mcp_core::candles::{CandleSource, demo, synthetic};
use jesse_mcp_core::store::Store;
use jesse_mcp_core::time::{MINUTE_MS, parse_day};
use jesse_mcp_tests::fake_exchange::FakeExchange;
use jesse_mcp_tests::*;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use serde_json::{Value, json};

const SERIES: &str = "Binance Perpetual Futures-BTC-USDT";
const DEMO_ROWS: i64 = 365 * 1440;

/// Runs `jesse-mcp-api candles demo` on the app's store; its stdout and stderr.
async fn seed_demo(app: &TestApp) -> (String, String) {
    let output = tokio::process::Command::new(bin("jesse-mcp-api"))
        .args(["candles", "demo"])
        .envs(app.env())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run jesse-mcp-api candles demo");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).to_string(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    );
    assert!(output.status.success(), "{stdout}\n{stderr}");
    (stdout, stderr)
}

/// What a store written before sources were recorded looks like: `unknown`.
async fn forget_source(app: &TestApp) {
    use sqlx::Connection;
    let url = format!("sqlite://{}", app.data_dir().join("store.db").display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("UPDATE candle_series SET source = 'unknown'")
        .execute(&mut conn)
        .await
        .unwrap();
}

async fn listed(app: &TestApp) -> Value {
    let (status, listing) = app.get("/v1/candles").await;
    assert_eq!(status, 200, "{listing}");
    assert_eq!(listing["series"].as_array().unwrap().len(), 1, "{listing}");
    listing["series"][0].clone()
}

async fn backtest(app: &TestApp, start: &str, end: &str, warm_up: i64) -> (Value, Value) {
    let mut body = backtest_body("SmaCross", "1h", start, end);
    body["warm_up_candles"] = json!(warm_up);
    let job_id = app.submit(&body).await;
    let job = app.wait(&job_id, Duration::from_secs(180)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (status, result) = app.get(&format!("/v1/jobs/{job_id}/result")).await;
    assert_eq!(status, 200, "{result}");
    (job, result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_candles_are_labelled_synthetic_and_an_import_replaces_them() {
    // The exchange lists five days inside the demo year.
    let (from, to) = (
        parse_day("2023-03-01").unwrap(),
        parse_day("2023-03-06").unwrap(),
    );
    let exchange = FakeExchange::start(&[("BTCUSDT", from, to)]).await;
    let app = TestApp::spawn(Options {
        exchange_endpoints: Some(
            json!({"Binance Perpetual Futures": format!("{}/fapi", exchange.base)}).to_string(),
        ),
        ..Default::default()
    })
    .await;

    // The seeder stores the year once, says it is demo data, and only on stderr.
    let (stdout, stderr) = seed_demo(&app).await;
    assert_eq!(stdout, "", "stdout stays free (the stdio launcher runs it)");
    assert!(stderr.contains("DEMO DATA"), "{stderr}");
    let (_, again) = seed_demo(&app).await;
    assert_eq!(again, "", "a second run leaves a stored series alone");

    let series = listed(&app).await;
    assert_eq!(series["source"], "synthetic", "{series}");
    assert_eq!(series["rows"], DEMO_ROWS);
    assert!(
        series["note"].as_str().unwrap().starts_with("DEMO DATA"),
        "{series}"
    );
    let (status, gaps) = app
        .get("/v1/candles/Binance%20Perpetual%20Futures/BTC-USDT/gaps?start_date=2023-03-01&end_date=2023-03-06")
        .await;
    assert_eq!(status, 200, "{gaps}");
    assert_eq!(gaps["source"], "synthetic", "{gaps}");
    assert_eq!(gaps["coverage_pct"], 100.0);
    assert!(gaps["note"].as_str().unwrap().contains("not market prices"));

    // A result on them says so: in its summary and its provenance.
    let (job, result) = backtest(&app, "2023-02-01", "2023-02-10", 240).await;
    assert_eq!(job["summary"]["data"], "synthetic", "{job}");
    assert!(
        job["summary"]["warning"]
            .as_str()
            .unwrap()
            .contains("DEMO DATA"),
        "{job}"
    );
    assert_eq!(result["provenance"]["data"], "synthetic");
    assert_eq!(
        result["provenance"]["candles"][SERIES]["source"], "synthetic",
        "{}",
        result["provenance"]
    );

    // A store from before sources were recorded: the seeder recognises its rows.
    forget_source(&app).await;
    let series = listed(&app).await;
    assert_eq!(series["source"], "unknown");
    assert!(
        series["note"]
            .as_str()
            .unwrap()
            .contains("may be synthetic")
    );
    let (_, relabelled) = seed_demo(&app).await;
    assert!(relabelled.contains("labelled"), "{relabelled}");
    assert_eq!(listed(&app).await["source"], "synthetic");

    // The case, on such a store: an import of days the demo "covers"
    // fetches them, replaces the whole synthetic series and stores the exchange's prices.
    forget_source(&app).await;
    let (status, accepted) = app
        .post_json(
            "/v1/candles/imports",
            &json!({"exchange": "Binance Perpetual Futures", "symbol": "BTC-USDT",
                    "start_date": "2023-03-01", "end_date": "2023-03-06"}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let job = app
        .wait(
            accepted["job_id"].as_str().unwrap(),
            Duration::from_secs(180),
        )
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let report = &job["summary"];
    assert!(exchange.requests() >= 5, "{} requests", exchange.requests());
    assert_eq!(report["replaced_synthetic_rows"], DEMO_ROWS, "{report}");
    assert_eq!(report["minutes_missing_before"], 5 * 1440, "{report}");
    assert_eq!(report["inserted"], 5 * 1440, "{report}");
    assert_eq!(report["source"], "import", "{report}");
    assert_eq!(report["coverage_pct"], 100.0);

    let csv = app
        .client
        .get(app.url(
            "/v1/candles/Binance%20Perpetual%20Futures/BTC-USDT/csv?start_date=2023-03-01&end_date=2023-03-06",
        ))
        .send()
        .await
        .unwrap();
    let mut expected = Vec::new();
    jesse_mcp_core::candles::write_csv(&exchange.candles("BTCUSDT"), &mut expected).unwrap();
    assert_eq!(
        csv.text().await.unwrap(),
        String::from_utf8(expected).unwrap(),
        "the exchange's prices are stored"
    );

    let series = listed(&app).await;
    assert_eq!(series["source"], "import", "{series}");
    assert_eq!(series["rows"], 5 * 1440);
    assert!(series.get("note").is_none(), "{series}");
    let (_, gaps) = app
        .get("/v1/candles/Binance%20Perpetual%20Futures/BTC-USDT/gaps?start_date=2023-03-01&end_date=2023-03-06")
        .await;
    assert_eq!(gaps["source"], "import", "{gaps}");
    // The demo days outside the import are gone, not silently kept.
    let (status, refused) = app
        .post_json(
            "/v1/backtests",
            &backtest_body("SmaCross", "1h", "2023-02-01", "2023-02-10"),
        )
        .await;
    assert_eq!(status, 422, "{refused}");
    assert_eq!(refused["error"]["code"], "missing_candles", "{refused}");

    let (job, result) = backtest(&app, "2023-03-02", "2023-03-06", 24).await;
    assert_eq!(job["summary"]["data"], "import", "{job}");
    assert!(job["summary"].get("warning").is_none(), "{job}");
    assert_eq!(result["provenance"]["data"], "import");
    assert_eq!(result["provenance"]["candles"][SERIES]["source"], "import");

    // The seeder never writes into a store that holds candles.
    seed_demo(&app).await;
    assert_eq!(listed(&app).await["source"], "import");
}

/// Store rules on both engines: synthetic rows are replaced, never mixed.
async fn synthetic_never_mixes(store: &Store) {
    let (exchange, symbol) = ("Binance Spot", "ETH-USDT");
    let source = || async { store.series_source(exchange, symbol).await.unwrap() };
    let day = parse_day("2024-01-01").unwrap();
    let fake = synthetic(day, day + 1440 * MINUTE_MS, 2_000.0, 1);
    store
        .upsert_candles(exchange, symbol, CandleSource::Synthetic, &fake)
        .await
        .unwrap();
    assert_eq!(source().await.as_deref(), Some("synthetic"));

    // A CSV of one hour replaces the synthetic day: 60 rows, all csv.
    let real = synthetic(day + 600 * MINUTE_MS, day + 660 * MINUTE_MS, 2_100.0, 2);
    let counts = store
        .upsert_candles(exchange, symbol, CandleSource::Csv, &real)
        .await
        .unwrap();
    assert_eq!(counts.inserted, 60);
    assert_eq!(source().await.as_deref(), Some("csv"));
    assert_eq!(
        store
            .count_candles(exchange, symbol, day, day + 1440 * MINUTE_MS)
            .await
            .unwrap(),
        60
    );
    // Nothing synthetic is left to replace.
    assert_eq!(store.replace_synthetic(exchange, symbol).await.unwrap(), 0);

    // Imported rows beside CSV rows: `mixed`.
    let imported = synthetic(day + 700 * MINUTE_MS, day + 720 * MINUTE_MS, 2_100.0, 3);
    store
        .upsert_candles(exchange, symbol, CandleSource::Import, &imported)
        .await
        .unwrap();
    assert_eq!(source().await.as_deref(), Some("mixed"));
    let series = store.list_series().await.unwrap();
    assert_eq!((series[0].rows, series[0].source.as_str()), (80, "mixed"));

    // An import into a synthetic series starts from nothing.
    store
        .upsert_candles(
            "Bybit USDT Perpetual",
            symbol,
            CandleSource::Synthetic,
            &fake,
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .replace_synthetic("Bybit USDT Perpetual", symbol)
            .await
            .unwrap(),
        1440
    );
    assert_eq!(
        store
            .series_source("Bybit USDT Perpetual", symbol)
            .await
            .unwrap(),
        None
    );

    // The seeder relabels only a series that holds its generator's rows.
    assert!(!demo::settle_unknown(store).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_rows_never_share_a_series_sqlite_and_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::open(dir.path(), None).await.unwrap();
    synthetic_never_mixes(&sqlite).await;
    let postgres = Store::connect(&backends::fresh_postgres().await)
        .await
        .unwrap();
    synthetic_never_mixes(&postgres).await;
}

/// /ready's `runners`: a worker announces its runners cold, then warm.
async fn readiness(store: &Store) {
    assert_eq!(store.fleet_readiness().await.unwrap(), (0, 0, 0));
    store.announce_worker("wa", 0, 2, 60_000).await.unwrap();
    store.heartbeat_worker("wb", 3, 60_000).await.unwrap();
    store.announce_worker("gone", 1, 1, -1).await.unwrap();
    assert_eq!(store.fleet_readiness().await.unwrap(), (3, 5, 2));
    store.announce_worker("wa", 2, 2, 60_000).await.unwrap();
    assert_eq!(store.fleet_readiness().await.unwrap(), (5, 5, 2));
    assert_eq!(store.fleet_runners().await.unwrap(), 5);
    store.remove_worker("wb").await.unwrap();
    assert_eq!(store.fleet_readiness().await.unwrap(), (2, 2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runner_readiness_on_sqlite_and_postgres() {
    let dir = tempfile::tempdir().unwrap();
    readiness(&Store::open(dir.path(), None).await.unwrap()).await;
    let postgres = Store::connect(&backends::fresh_postgres().await)
        .await
        .unwrap();
    readiness(&postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stdio_launcher_seeds_a_fresh_data_dir_like_make_run() {
    let app = TestApp::spawn(Options {
        start_worker: false,
        ..Default::default()
    })
    .await;
    // ops/mcp-stdio.sh as an MCP client starts it, on a data dir with no candles,
    // on this build's binaries; no worker: accepting the README's request is enough.
    let command = tokio::process::Command::new("bash").configure(|c| {
        c.arg(repo_root().join("ops/mcp-stdio.sh"))
            .current_dir(repo_root())
            .envs(app.env())
            .env("JESSE_MCP_BIN_DIR", bin_dir())
            .env("JESSE_MCP_STDIO_WORKER", "0");
    });
    let client =
        ().serve(TokioChildProcess::new(command).expect("spawn the launcher"))
            .await
            .expect("MCP over the stdio launcher");
    let call = |tool: &str, args: Value| {
        CallToolRequestParams::new(tool.to_string())
            .with_arguments(args.as_object().unwrap().clone())
    };
    let available = client
        .call_tool(call("candles_available", json!({})))
        .await
        .expect("candles_available");
    let listing = available.structured_content.expect("structured");
    let series = &listing["series"][0];
    assert_eq!(series["source"], "synthetic", "{listing}");
    assert_eq!(series["exchange"], demo::EXCHANGE);
    assert!(series["note"].as_str().unwrap().starts_with("DEMO DATA"));

    // The README's request.
    let submitted = client
        .call_tool(call(
            "backtest",
            json!({"strategy": "SmaCross", "exchange": "Binance Perpetual Futures", "symbol": "BTC-USDT",
                   "timeframe": "1h", "start_date": "2023-02-01", "end_date": "2023-12-01",
                   "hyperparameters": {"fast": 12}}),
        ))
        .await
        .expect("backtest");
    assert_ne!(submitted.is_error, Some(true), "{submitted:?}");
    let accepted = submitted.structured_content.expect("structured");
    assert_eq!(accepted["status"], "queued", "{accepted}");
    client.cancel().await.ok();
}
