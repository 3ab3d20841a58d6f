//! Walk-forward analysis with real Jesse: the out-of-sample windows tile the
//! range, a window's out-of-sample metrics equal bare Jesse with its chosen
//! parameters, the stitched curve is continuous, and a killed worker loses
//! nothing.

use std::time::Duration;

use jesse_mcp_tests::*;
use serde_json::{Value, json};

fn ms(day: &str) -> i64 {
    jesse_mcp_core::time::parse_day(day).unwrap()
}

fn analysis(extra: Value) -> Value {
    let mut body = json!({
        "strategy": "SmaCross", "exchange": EXCHANGE, "symbol": SYMBOL, "timeframe": "1h",
        "start_date": "2024-01-15", "end_date": "2024-03-25", "train_days": 30, "test_days": 10,
        "sampler": "random", "trials": 3, "seed": 1,
        "hyperparameters": {"fast": {"min": 6, "max": 20}, "slow": {"fixed": 40}, "risk": {"fixed": 0.5}},
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

async fn submit(app: &TestApp, body: &Value) -> String {
    let (status, accepted) = app.post_json("/v1/walk-forward", body).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["kind"], "walk_forward");
    accepted["job_id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_tile_the_range_and_match_bare_jesse_out_of_sample() {
    let app = TestApp::spawn(Options {
        runners: 2,
        ..Default::default()
    })
    .await;
    let csv = synthetic_csv("2024-01-01", "2024-04-01", 21);
    let csv_path = app.dir.path().join("candles.csv");
    std::fs::write(&csv_path, &csv).unwrap();
    app.import_csv(&csv).await;

    let before = app.job_count().await;
    for (body, code) in [
        (analysis(json!({"train_days": 69})), "invalid_windows"),
        (
            analysis(json!({"training": {"start_date": "2024-01-15", "end_date": "2024-02-01"}})),
            "invalid_request",
        ),
        (
            analysis(json!({"end_date": "2024-04-20"})),
            "missing_candles",
        ),
        (
            analysis(json!({"test_days": 10, "windows": 3})),
            "invalid_windows",
        ),
        (analysis(json!({"mode": "sideways"})), "invalid_request"),
        (
            analysis(json!({"timeframe": "1D", "test_days": 5})),
            "window_too_short",
        ),
    ] {
        let (status, error) = app.post_json("/v1/walk-forward", &body).await;
        assert_eq!(
            (status, error["error"]["code"].as_str()),
            (422, Some(code)),
            "{error}"
        );
    }
    let (_, error) = app
        .post_json(
            "/v1/walk-forward",
            &analysis(json!({"end_date": "2024-04-20"})),
        )
        .await;
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("window 4 "),
        "{error}"
    );
    assert_eq!(
        app.job_count().await,
        before,
        "a refused analysis enqueues nothing"
    );

    let id = submit(&app, &analysis(json!({}))).await;
    let job = app.wait(&id, Duration::from_secs(900)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (_, result) = app.get(&format!("/v1/jobs/{id}/result")).await;
    let windows = result["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 4, "{result}");
    // The out-of-sample windows tile [start + train_days, end) exactly.
    assert_eq!(windows[0]["out_of_sample"]["start_date"], "2024-02-14");
    assert_eq!(windows[3]["out_of_sample"]["end_date"], "2024-03-25");
    for pair in windows.windows(2) {
        assert_eq!(
            pair[0]["out_of_sample"]["end_date"],
            pair[1]["out_of_sample"]["start_date"]
        );
    }
    for w in windows {
        assert_eq!(
            w["in_sample"]["end_date"], w["out_of_sample"]["start_date"],
            "{w}"
        );
        assert!(w["params"]["fast"].is_i64(), "every window chose: {w}");
    }
    // The stitched curve: one return per out-of-sample day, continuous.
    let stitched = &result["stitched"];
    assert_eq!(stitched["days"], 40);
    assert_eq!(stitched["holes"], false);
    let curve = stitched["equity_curve"].as_array().unwrap();
    assert_eq!(curve.len(), 41);
    assert_eq!(curve[0]["equity"], 10000.0);
    for pair in curve.windows(2) {
        let (a, b) = (
            ms(pair[0]["date"].as_str().unwrap()),
            ms(pair[1]["date"].as_str().unwrap()),
        );
        assert_eq!(b - a, 86_400_000, "one point per day, no gap");
        // Each day also as integer ms (docs/RESULTS.md).
        assert_eq!(pair[0]["time"].as_i64(), Some(a), "{}", pair[0]);
    }
    let last = curve.last().unwrap()["equity"].as_f64().unwrap();
    assert!((last - stitched["finishing_balance"].as_f64().unwrap()).abs() < 1e-9);
    assert!(
        result["verdict"]["verdict"].is_string()
            && !result["verdict"]["reasons"].as_array().unwrap().is_empty()
    );
    assert!(
        result["parameter_stability"]["fast"]["values"]
            .as_array()
            .unwrap()
            .len()
            == 4
    );

    // Window 1's out-of-sample metrics are bare Jesse's with its parameters.
    let w = &windows[1];
    let (status, oos) = app
        .get(&format!(
            "/v1/jobs/{}/result",
            w["out_of_sample_job_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200, "{oos}");
    assert_eq!(oos["metrics"], w["out_of_sample_metrics"]);
    let reference = reference_backtest(&json!({
        "csv": csv_path, "exchange": EXCHANGE, "symbol": SYMBOL, "strategy": "SmaCross",
        "strategy_path": app.strategies_dir().join("SmaCross/__init__.py"),
        "timeframe": "1h", "start_ms": ms(w["out_of_sample"]["start_date"].as_str().unwrap()),
        "end_ms": ms(w["out_of_sample"]["end_date"].as_str().unwrap()), "warmup_minutes": 240 * 60,
        "config": {"starting_balance": 10000, "fee": 0.001, "type": "futures", "futures_leverage": 1,
                   "futures_leverage_mode": "cross", "exchange": EXCHANGE, "warm_up_candles": 240},
        "hyperparameters": {"fast": w["params"]["fast"], "slow": 40, "risk": 0.5},
        // Out of sample runs without fast mode (it changes metrics).
        "fast_mode": false,
    }))
    .await;
    assert_metrics_identical(&oos["metrics"], &reference["metrics"]);
    // The window's study is an ordinary optimization whose best it chose.
    let (_, study) = app
        .get(&format!(
            "/v1/jobs/{}/result",
            w["optimization_job_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(study["best"]["params"], w["params"]);

    // Cancelling the analysis cancels its studies and their trials.
    let id = submit(&app, &analysis(json!({"trials": 30, "timeframe": "15m"}))).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let studies = loop {
        let (_, page) = app.get(&format!("/v1/jobs/{id}/children?limit=50")).await;
        let studies: Vec<String> = page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["job_id"].as_str().unwrap().to_string())
            .collect();
        let mut trials_done = 0;
        for s in &studies {
            let (_, job) = app.get(&format!("/v1/jobs/{s}")).await;
            trials_done += job["children"]["succeeded"].as_i64().unwrap_or(0);
        }
        if trials_done > 0 {
            break studies;
        }
        assert!(std::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (status, _) = app
        .post_json(&format!("/v1/jobs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        app.wait(&id, Duration::from_secs(30)).await["status"],
        "cancelled"
    );
    for s in &studies {
        let study = app.wait(s, Duration::from_secs(30)).await;
        assert_eq!(study["status"], "cancelled", "{study}");
        let study = app.wait(s, Duration::from_secs(30)).await;
        assert_eq!(study["children"]["queued"], 0, "{study}");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for s in &studies {
        let (_, study) = app.get(&format!("/v1/jobs/{s}")).await;
        assert_eq!(
            (
                study["children"]["queued"].as_i64(),
                study["children"]["running"].as_i64()
            ),
            (Some(0), Some(0)),
            "{study}"
        );
    }
    assert_eq!(
        study["study"]["training"]["start_date"],
        w["in_sample"]["start_date"]
    );
}

fn days_of(period: &Value) -> f64 {
    let day = |k: &str| ms(period[k].as_str().unwrap()) / 86_400_000;
    (day("end_date") - day("start_date")) as f64
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

/// Walk-forward efficiency is Pardo's, recomputed here from the result's own
/// window metrics: linear annual rates (net % × 365 / days), out of sample ÷
/// in sample, per window and for the whole analysis. The out-of-sample
/// backtests ran with fast mode off; the trials with Jesse's default (on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn efficiency_is_pardos_and_out_of_sample_runs_without_fast_mode() {
    let app = TestApp::spawn(Options {
        runners: 2,
        ..Default::default()
    })
    .await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-03-10", 21))
        .await;
    let (status, error) = app
        .post_json(
            "/v1/walk-forward",
            &analysis(json!({"fast_mode_out_of_sample": "no"})),
        )
        .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (422, Some("invalid_request")),
        "{error}"
    );
    // Two windows: 30 in-sample days, then 10 out of sample, twice.
    let id = submit(&app, &analysis(json!({"end_date": "2024-03-05"}))).await;
    let job = app.wait(&id, Duration::from_secs(600)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (_, result) = app.get(&format!("/v1/jobs/{id}/result")).await;
    let windows = result["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 2, "{result}");
    let mut in_sample_rates = Vec::new();
    for w in windows {
        let in_net = w["in_sample_metrics"]["net_profit_percentage"]
            .as_f64()
            .unwrap();
        let out_net = w["out_of_sample_metrics"]["net_profit_percentage"]
            .as_f64()
            .unwrap();
        let in_rate = in_net * 365.0 / days_of(&w["in_sample"]);
        let out_rate = out_net * 365.0 / days_of(&w["out_of_sample"]);
        in_sample_rates.push(in_rate);
        let e = &w["efficiency"];
        if in_rate > 0.0 {
            let value = e["value"].as_f64().unwrap_or(f64::NAN);
            assert!(close(value, out_rate / in_rate), "{w}");
        } else {
            assert!(e["value"].is_null() && e["reason"].is_string(), "{w}");
        }
        assert!(close(
            e["in_sample_annual_rate_percentage"].as_f64().unwrap(),
            in_rate
        ));
        // The out-of-sample backtest says it ran without fast mode; the trials with it.
        assert_eq!(w["out_of_sample_fast_mode"], false, "{w}");
        assert_eq!(w["in_sample_fast_mode"], true, "{w}");
        let (_, oos) = app
            .get(&format!(
                "/v1/jobs/{}/result",
                w["out_of_sample_job_id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(oos["provenance"]["fast_mode"], false, "{oos}");
        assert_eq!(oos["provenance"]["params"]["fast_mode"], false);
    }
    let mean = in_sample_rates.iter().sum::<f64>() / in_sample_rates.len() as f64;
    assert!(mean > 0.0, "the set-up needs an in-sample profit: {result}");
    let stitched = &result["stitched"];
    let out_rate = stitched["total_return_percentage"].as_f64().unwrap() * 365.0
        / stitched["days"].as_f64().unwrap();
    let efficiency = &result["efficiency"];
    assert!(
        close(efficiency["value"].as_f64().unwrap(), out_rate / mean),
        "reported {efficiency}, Pardo's {}",
        out_rate / mean
    );
    assert!(
        result["efficiency_method"]
            .as_str()
            .unwrap()
            .contains("× 365 ÷ days")
    );
    assert!(
        result["efficiency_compounded"]["method"]
            .as_str()
            .unwrap()
            .starts_with("compounded")
    );
    assert_eq!(stitched["fast_mode"], false);
    assert_eq!(result["setup"]["fast_mode_out_of_sample"], false);
    assert_eq!(result["setup"]["fast_mode_trials"], true);
    assert_eq!(job["summary"]["efficiency"], efficiency["value"], "{job}");
}

/// Postgres + Redis: kill -9 the worker mid-analysis; another finishes it, and
/// windows that had finished are not re-run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_resumes_the_analysis() {
    let mut app = TestApp::spawn(Options {
        heartbeat_secs: 1,
        requeue_after_secs: 2,
        ..Options::distributed().await
    })
    .await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-04-01", 21))
        .await;
    let id = submit(
        &app,
        &analysis(json!({"timeframe": "30m", "max_parallel": 1})),
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let finished_before = loop {
        let (_, page) = app.get(&format!("/v1/jobs/{id}/children?limit=50")).await;
        let done: Vec<(Value, Value)> = page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|k| k["status"] == "succeeded")
            .map(|k| (k["job_id"].clone(), k["finished_at"].clone()))
            .collect();
        if !done.is_empty() {
            break done;
        }
        assert!(std::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    app.kill_worker(0).await;
    app.start_worker();
    let job = app.wait(&id, Duration::from_secs(600)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (_, page) = app.get(&format!("/v1/jobs/{id}/children?limit=50")).await;
    let kids = page["jobs"].as_array().unwrap();
    assert_eq!(kids.len(), 8, "4 studies and 4 out-of-sample backtests");
    for (child, finished) in &finished_before {
        let kid = kids.iter().find(|k| &k["job_id"] == child).unwrap();
        assert_eq!(
            &kid["finished_at"], finished,
            "a finished window is not re-run"
        );
    }
    let (_, result) = app.get(&format!("/v1/jobs/{id}/result")).await;
    assert_eq!(result["stitched"]["days"], 40, "{result}");
}
