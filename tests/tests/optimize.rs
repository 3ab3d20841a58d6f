//! Optimization studies with real Jesse: a trial's fitness equals Jesse's own
//! fitness function on the same candles, a grid study covers exactly its grid,
//! the same seed gives the same trials on one worker or two, a worker killed
//! mid-study loses nothing, a cancelled study starts no trial afterwards, and
//! constraints mark trials infeasible.

use std::time::Duration;

use jesse_mcp_tests::*;
use serde_json::{Value, json};

const TRAINING: (&str, &str) = ("2024-01-15", "2024-02-15");
const TESTING: (&str, &str) = ("2024-02-15", "2024-02-29");

fn ms(day: &str) -> i64 {
    jesse_mcp_core::time::parse_day(day).unwrap()
}

fn study(extra: Value) -> Value {
    let mut body = json!({
        "strategy": "SmaCross", "exchange": EXCHANGE, "symbol": SYMBOL, "timeframe": "1h",
        "training": {"start_date": TRAINING.0, "end_date": TRAINING.1},
        "testing": {"start_date": TESTING.0, "end_date": TESTING.1},
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

async fn submit(app: &TestApp, body: &Value) -> String {
    let (status, accepted) = app.post_json("/v1/optimizations", body).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["kind"], "optimization");
    accepted["job_id"].as_str().unwrap().to_string()
}

/// Every trial row of a finished study, in trial order.
async fn trials(app: &TestApp, id: &str) -> Vec<Value> {
    let mut all = Vec::new();
    loop {
        let (status, page) = app
            .get(&format!(
                "/v1/jobs/{id}/result?offset={}&limit=50",
                all.len()
            ))
            .await;
        assert_eq!(status, 200, "{page}");
        let rows = page["trials"].as_array().unwrap();
        if rows.is_empty() {
            return all;
        }
        all.extend(rows.iter().cloned());
    }
}

async fn result(app: &TestApp, id: &str) -> Value {
    let (status, result) = app.get(&format!("/v1/jobs/{id}/result")).await;
    assert_eq!(status, 200, "{result}");
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grid_study_covers_its_grid_with_jesses_fitness() {
    let app = TestApp::spawn(Options {
        runners: 2,
        ..Default::default()
    })
    .await;
    let csv = synthetic_csv("2024-01-01", "2024-03-01", 11);
    let csv_path = app.dir.path().join("candles.csv");
    std::fs::write(&csv_path, &csv).unwrap();
    app.import_csv(&csv).await;
    let space = json!({"fast": {"min": 6, "max": 14, "step": 4}, "slow": {"options": [30, 45]}, "risk": {"fixed": 0.5}});

    // Refused before anything is enqueued, each naming what is wrong.
    let before = app.job_count().await;
    for (body, code) in [
        (
            study(json!({"sampler": "grid", "hyperparameters": space, "trials": 5})),
            "grid_too_large",
        ),
        (
            study(json!({"hyperparameters": {"nope": {"min": 1, "max": 2}}})),
            "unknown_hyperparameter",
        ),
        (
            study(json!({"hyperparameters": {"fast": {"min": 9, "max": 3}}})),
            "invalid_search_space",
        ),
        (study(json!({"objective": "vibes"})), "invalid_objective"),
        (study(json!({"sampler": "nsga2"})), "invalid_objectives"),
        (
            study(json!({"testing": {"start_date": "2024-02-01", "end_date": "2024-02-20"}})),
            "overlapping_periods",
        ),
        (
            study(json!({"testing": {"start_date": "2024-03-01", "end_date": "2024-03-20"}})),
            "missing_candles",
        ),
        (study(json!({"trials": 0})), "invalid_number"),
    ] {
        let (status, error) = app.post_json("/v1/optimizations", &body).await;
        assert_eq!(
            (status, error["error"]["code"].as_str()),
            (422, Some(code)),
            "{error}"
        );
    }
    assert_eq!(
        app.job_count().await,
        before,
        "a refused study enqueues nothing"
    );

    let id = submit(
        &app,
        &study(json!({"sampler": "grid", "hyperparameters": space, "seed": 3})),
    )
    .await;
    let job = app.wait(&id, Duration::from_secs(600)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(
        job["children"]["total"], 6,
        "a grid study runs exactly its grid"
    );
    let result = result(&app, &id).await;
    assert_eq!(result["study"]["trials"], 6);
    assert_eq!(result["counts"]["unique"], 6, "{}", result["counts"]);
    let rows = trials(&app, &id).await;
    assert_eq!(rows.len(), 6);
    let mut points: Vec<(i64, i64)> = rows
        .iter()
        .map(|r| {
            (
                r["params"]["fast"].as_i64().unwrap(),
                r["params"]["slow"].as_i64().unwrap(),
            )
        })
        .collect();
    points.sort();
    assert_eq!(
        points,
        vec![(6, 30), (6, 45), (10, 30), (10, 45), (14, 30), (14, 45)]
    );

    // Each trial's fitness is Jesse's get_fitness on the same candles, bit for
    // bit, and the testing backtest ran exactly when Jesse ran it.
    let reference = reference_fitness(&json!({
        "csv": csv_path, "exchange": EXCHANGE, "symbol": SYMBOL, "strategy": "SmaCross",
        "strategy_path": app.strategies_dir().join("SmaCross/__init__.py"),
        "timeframe": "1h", "warmup_minutes": 240 * 60,
        "config": {"starting_balance": 10000, "fee": 0.001, "type": "futures", "futures_leverage": 1,
                   "futures_leverage_mode": "cross", "exchange": EXCHANGE, "warm_up_candles": 240},
        "training": {"start_ms": ms(TRAINING.0), "end_ms": ms(TRAINING.1)},
        "testing": {"start_ms": ms(TESTING.0), "end_ms": ms(TESTING.1)},
        "objective": "sharpe", "optimal_total": 200, "fast_mode": true,
        "trials": rows.iter().map(|r| json!({"trial": r["trial"],
            "hyperparameters": {"fast": r["params"]["fast"], "slow": r["params"]["slow"], "risk": 0.5}})).collect::<Vec<_>>(),
    }))
    .await;
    let mut usable = 0;
    for (row, jesse) in rows.iter().zip(reference["trials"].as_array().unwrap()) {
        assert_eq!(row["trial"], jesse["trial"]);
        let ours = row["fitness"].as_f64().unwrap();
        let theirs = jesse["score"].as_f64().unwrap();
        assert_eq!(
            ours.to_bits(),
            theirs.to_bits(),
            "trial {}: fitness {ours} vs Jesse {theirs}",
            row["trial"]
        );
        assert_eq!(
            row["testing"].is_null(),
            jesse["testing_total"].is_null(),
            "testing ran as in Jesse: {row}"
        );
        if !jesse["testing_total"].is_null() {
            usable += 1;
            assert_eq!(row["testing"]["total"], jesse["testing_total"]);
        }
    }
    assert!(
        usable > 0,
        "the fixture should give some usable trials: {rows:#?}"
    );

    // The leaderboard ranks by training fitness, with testing beside it.
    let board = result["leaderboard"].as_array().unwrap();
    let values: Vec<f64> = board
        .iter()
        .map(|r| r["values"][0].as_f64().unwrap())
        .collect();
    assert!(values.windows(2).all(|w| w[0] >= w[1]), "{values:?}");
    assert_eq!(result["best"], board[0]);
    assert!(board.iter().any(|r| r["testing_rank"] == 1));
    assert_eq!(result["convergence"].as_array().unwrap().len(), 6);
    assert!(result["importance"]["fast"].is_number());
    assert_eq!(
        result["heatmap"]["best"].as_array().unwrap().len(),
        2,
        "{}",
        result["heatmap"]
    );
    let pbo = &result["overfitting"]["pbo"];
    assert!(
        pbo["pbo"]
            .as_f64()
            .is_some_and(|p| (0.0..=1.0).contains(&p)),
        "{pbo}"
    );
    let dsr = &result["overfitting"]["deflated_sharpe"];
    assert_eq!(dsr["n_trials"], 6, "{dsr}");
    assert!(
        dsr["dsr"]
            .as_f64()
            .is_some_and(|p| (0.0..=1.0).contains(&p)),
        "{dsr}"
    );
    // Every number traces to its trial job and the candles it ran on.
    let best_job = board[0]["job_id"].as_str().unwrap();
    let (_, trial) = app.get(&format!("/v1/jobs/{best_job}/result")).await;
    assert_eq!(trial["fitness"], board[0]["fitness"]);
    assert!(
        trial["provenance"]["training"]["candles"][format!("{EXCHANGE}-{SYMBOL}")]["sha256"]
            .is_string(),
        "{trial}"
    );
    assert_eq!(
        result["provenance"]["training"]["strategies"][0]["name"],
        "SmaCross"
    );
}

/// Runs `tests/fixtures/reference_fitness.py` (Jesse's own get_fitness).
async fn reference_fitness(spec: &Value) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spec.json");
    std::fs::write(&path, spec.to_string()).unwrap();
    let output = tokio::process::Command::new(venv_python())
        .arg(repo_root().join("tests/fixtures/reference_fitness.py"))
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "reference fitness failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}
