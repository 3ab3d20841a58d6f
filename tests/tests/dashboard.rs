//! The dashboard in a real browser: headless Debian `chromium` driven by
//! playwright-core (tests/browser/*.mjs, installed by ops/browser-env.sh)
//! against the real service with real workers and real Jesse. The jobs the
//! pages show are submitted through the API here; the browser scripts check
//! that each page renders them, that charts draw, that a backtest submitted
//! while the Jobs page is open appears there and completes, that cancel works,
//! that no page logs an error, and that a page of another origin cannot change
//! the service. Screenshots: `<target>/test-artifacts/dashboard/` (printed).

use std::path::PathBuf;
use std::time::Duration;

use jesse_mcp_tests::fake_exchange::FakeExchange;
use jesse_mcp_tests::*;
use serde_json::{Value, json};

const DAY: i64 = 86_400_000;
const JAN_1: i64 = 1_704_067_200_000;

/// The node_modules of tests/browser's lock, and the browser; a clear failure if missing.
fn browser_env() -> (PathBuf, PathBuf) {
    let out = std::process::Command::new(repo_root().join("ops/browser-env.sh"))
        .arg("--check")
        .output()
        .expect("running ops/browser-env.sh --check");
    assert!(
        out.status.success(),
        "the browser tests need Debian's chromium and the npm packages of tests/browser/package-lock.json; \
         `make test` installs them (ops/browser-env.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let modules = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let chromium = PathBuf::from(
        std::env::var("JESSE_MCP_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    (modules, chromium)
}

fn artifacts(name: &str) -> PathBuf {
    let target = bin_dir()
        .parent()
        .expect("target/<profile> has a parent")
        .to_path_buf();
    let dir = target.join("test-artifacts").join(name);
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

/// Runs `tests/browser/<script>` with `config` (plus base URL, browser and
/// artifacts); panics with its output when it fails.
async fn run_browser(script: &str, config: Value) {
    let (modules, chromium) = browser_env();
    let mut config = config;
    config["chromium"] = json!(chromium);
    let output = tokio::process::Command::new("node")
        .arg(repo_root().join("tests/browser").join(script))
        .env("JESSE_MCP_NODE_MODULES", &modules)
        .env("JESSE_MCP_BROWSER_CONFIG", config.to_string())
        .kill_on_drop(true)
        .output()
        .await
        .expect("running node (Node >= 20 is needed for the browser tests)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "tests/browser/{script} failed (screenshots in {}):\n{stdout}\n{stderr}",
        config["artifacts"]
    );
}

async fn accepted(app: &TestApp, path: &str, body: &Value) -> String {
    let (status, answer) = app.post_json(path, body).await;
    assert_eq!(status, 202, "{path}: {answer}");
    answer["job_id"].as_str().unwrap().to_string()
}

async fn csv_into(app: &TestApp, exchange: &str, symbol: &str, csv: Vec<u8>) {
    let path = format!(
        "/v1/candles/csv?exchange={}&symbol={symbol}",
        exchange.replace(' ', "%20")
    );
    let (status, body) = app.post_raw(&path, "text/csv", csv).await;
    assert_eq!(status, 200, "{body}");
}

/// A strategy edited on disk into one that does not parse (line 6).
const BROKEN: &str = "from jesse.strategies import Strategy\n\n\nclass Broken(Strategy):\n    def should_long(self) -> bool:\n        return False +\n\n    def go_long(self):\n        pass\n";
const BROKEN_LINE: i64 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_renders_the_service_in_a_real_browser() {
    browser_env();
    let out = std::process::Command::new(repo_root().join("ops/vendor-web.sh"))
        .arg("--check")
        .output()
        .expect("ops/vendor-web.sh");
    assert!(
        out.status.success(),
        "web/vendor/ is not the locked lightweight-charts: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let exchange = FakeExchange::start(&[("SOLUSDT", JAN_1, JAN_1 + DAY)]).await;
    let endpoints = json!({"Binance Spot": format!("{}/api", exchange.base)});
    let app = TestApp::spawn(Options {
        runners: 1,
        exchange_endpoints: Some(endpoints.to_string()),
        ..Default::default()
    })
    .await;
    std::fs::create_dir_all(app.strategies_dir().join("Broken")).unwrap();
    std::fs::write(app.strategies_dir().join("Broken/__init__.py"), BROKEN).unwrap();

    app.import_csv(&synthetic_csv("2024-01-01", "2024-04-01", 21))
        .await;
    // A series with one gap (2024-01-03).
    csv_into(
        &app,
        EXCHANGE,
        "ETH-USDT",
        synthetic_csv("2024-01-01", "2024-01-03", 4),
    )
    .await;
    csv_into(
        &app,
        EXCHANGE,
        "ETH-USDT",
        synthetic_csv("2024-01-04", "2024-01-06", 5),
    )
    .await;
    let schedules = app
        .client
        .put(app.url("/v1/schedules"))
        .json(&json!({"schedules": [{"exchange": "Binance Spot", "symbol": "SOL-USDT", "cron": "0 3 1 1 *", "start_date": "2024-01-01"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(schedules.status(), 200, "{:?}", schedules.text().await);

    let mut backtest = backtest_body("SmaCross", "1h", "2024-01-15", "2024-02-15");
    backtest["include_trades"] = json!(true);
    let base = backtest_body("SmaCross", "1h", "2024-01-15", "2024-02-15");
    let mut jobs = serde_json::Map::new();
    jobs.insert(
        "backtest".into(),
        json!(accepted(&app, "/v1/backtests", &backtest).await),
    );
    jobs.insert(
        "batch".into(),
        json!(
            accepted(
                &app,
                "/v1/backtests/batch",
                &json!({"base": base, "grid": {"hyperparameters": {"fast": [8, 16]}}})
            )
            .await
        ),
    );
    jobs.insert(
        "optimization".into(),
        json!(accepted(&app, "/v1/optimizations", &json!({
            "strategy": "SmaCross", "exchange": EXCHANGE, "symbol": SYMBOL, "timeframe": "1h",
            "training": {"start_date": "2024-01-15", "end_date": "2024-02-15"},
            "testing": {"start_date": "2024-02-15", "end_date": "2024-02-29"},
            "sampler": "grid", "seed": 3,
            "hyperparameters": {"fast": {"min": 6, "max": 10, "step": 4}, "slow": {"options": [30, 45]}, "risk": {"fixed": 0.5}},
        })).await),
    );
    jobs.insert(
        "walk_forward".into(),
        json!(accepted(&app, "/v1/walk-forward", &json!({
            "strategy": "SmaCross", "exchange": EXCHANGE, "symbol": SYMBOL, "timeframe": "1h",
            "start_date": "2024-01-15", "end_date": "2024-03-05", "train_days": 30, "test_days": 10,
            "sampler": "random", "trials": 2, "seed": 1,
            "hyperparameters": {"fast": {"min": 6, "max": 20}, "slow": {"fixed": 40}, "risk": {"fixed": 0.5}},
        })).await),
    );
    jobs.insert(
        "monte_carlo".into(),
        json!(
            accepted(
                &app,
                "/v1/monte-carlo",
                &json!({"mode": "trades", "source": backtest, "scenarios": 200, "seed": 7, "method": "bootstrap"})
            )
            .await
        ),
    );
    jobs.insert(
        "pipeline".into(),
        json!(accepted(&app, "/v1/pipelines", &json!({"name": "dashboard pipeline", "steps": [
            {"id": "base", "kind": "backtest", "input": backtest_body("SmaCross", "1h", "2024-02-01", "2024-03-01"),
             "gate": "base.metrics.total >= 0"},
            {"id": "mc", "kind": "monte_carlo",
             "input": {"mode": "trades", "source": "${base.job_id}", "scenarios": 100, "seed": 2}},
        ]})).await),
    );
    jobs.insert(
        "import".into(),
        json!(
            accepted(
                &app,
                "/v1/candles/imports",
                &json!({"exchange": "Binance Spot", "symbol": "SOL-USDT", "start_date": "2024-01-01", "end_date": "2024-01-02"})
            )
            .await
        ),
    );
    for (name, id) in &jobs {
        let job = app
            .wait(id.as_str().unwrap(), Duration::from_secs(300))
            .await;
        assert_eq!(job["status"], "succeeded", "{name}: {job}");
    }

    let (_, broken) = app.get("/v1/strategies/Broken").await;
    assert_eq!(broken["valid"], false, "{broken}");
    let at_line = broken["errors"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["line"] == BROKEN_LINE);
    assert!(at_line, "an error at line {BROKEN_LINE}: {broken}");
    let (_, sma) = app.get("/v1/strategies/SmaCross").await;
    let hyperparameters = sma["hyperparameters"].as_array().map_or(0, Vec::len);
    assert!(hyperparameters > 0, "{sma}");

    let long_batch = json!({"base": base, "max_parallel": 1,
        "grid": {"hyperparameters": {"fast": (5..35).collect::<Vec<i64>>()}}});
    let dir = artifacts("dashboard");
    println!("dashboard screenshots: {}", dir.display());
    run_browser(
        "dashboard.mjs",
        json!({
            "base": app.base,
            "artifacts": dir,
            "jobs": jobs,
            "live_backtest": backtest_body("SmaCross", "1h", "2024-02-01", "2024-03-01"),
            "long_batch": long_batch,
            "gappy_series": format!("{EXCHANGE} ETH-USDT"),
            "gappy_series_gaps": 1,
            "schedule_cron": "0 3 1 1 *",
            "broken_strategy": "Broken",
            "broken_line": BROKEN_LINE,
            "smacross_hyperparameters": hyperparameters,
        }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_the_page_asks_for_one() {
    browser_env();
    let token = "dashboard-token-0123456789";
    let app = TestApp::spawn(Options {
        tokens: format!("viewer:{token}=read"),
        start_worker: false,
        ..Default::default()
    })
    .await;
    // The page itself loads without a token (it holds no data); the API does not.
    let page = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert_eq!(app.get("/v1/jobs").await.0, 401);
    let dir = artifacts("dashboard");
    run_browser(
        "tokens.mjs",
        json!({"base": app.base, "artifacts": dir, "token": token}),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_another_origin_cannot_change_the_service() {
    browser_env();
    let app = TestApp::spawn(Options {
        start_worker: false,
        ..Default::default()
    })
    .await;
    let dir = artifacts("dashboard");
    run_browser(
        "cross_origin.mjs",
        json!({
            "base": app.base,
            "artifacts": dir,
            "exchange": EXCHANGE,
            "csv_symbol": "XRP-USDT",
            "backtest": backtest_body("SmaCross", "1h", "2024-01-15", "2024-02-15"),
        }),
    )
    .await;
    assert_eq!(app.job_count().await, 0, "no job was created");
}

#[test]
fn every_file_of_web_is_embedded() {
    let web = repo_root().join("web");
    let mut files = Vec::new();
    let mut stack = vec![web.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(
                    path.strip_prefix(&web)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    files.sort();
    let mut embedded: Vec<String> = jesse_mcp_api::dashboard::asset_paths()
        .into_iter()
        .map(String::from)
        .collect();
    embedded.sort();
    assert_eq!(files, embedded, "web/ and api/src/dashboard.rs disagree");
}
