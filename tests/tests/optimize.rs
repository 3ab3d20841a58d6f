//! Optimization studies with real Jesse: a trial's fitness equals Jesse's own
//! fitness function on the same candles, a grid study covers exactly its grid,
//! the same seed gives the same trials on one worker or two, a worker killed
//! mid-study loses nothing, a cancelled study starts no trial afterwards, and
//! constraints mark trials infeasible.

use std::time::Duration;

use jesse_mcp_tests::*;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
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

async fn children_of(app: &TestApp, id: &str) -> Vec<Value> {
    let (status, page) = app.get(&format!("/v1/jobs/{id}/children?limit=200")).await;
    assert_eq!(status, 200, "{page}");
    page["jobs"].as_array().unwrap().clone()
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
    assert_eq!(job["best_so_far"]["value"], board[0]["values"][0], "{job}");
    assert_eq!(job["best_so_far"]["child_index"], board[0]["trial"]);
    assert_eq!(job["summary"]["best_trial"], board[0]["trial"]);
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

    // The same study over MCP (`optimize`): the same leaderboard; a bad
    // request is a tool error with the same envelope as REST's 422.
    let transport = StreamableHttpClientTransport::from_uri(format!("{}/mcp", app.base));
    let client = ().serve(transport).await.expect("MCP HTTP client");
    let call = |tool: &str, args: Value| {
        client.call_tool(
            CallToolRequestParams::new(tool.to_string())
                .with_arguments(args.as_object().unwrap().clone()),
        )
    };
    let bad = call(
        "optimize",
        study(json!({"sampler": "grid", "hyperparameters": space, "trials": 5})),
    )
    .await
    .unwrap();
    assert_eq!(bad.is_error, Some(true));
    assert!(
        bad.content[0]
            .as_text()
            .unwrap()
            .text
            .contains("grid_too_large"),
        "{bad:?}"
    );
    let submitted = call(
        "optimize",
        study(json!({"sampler": "grid", "hyperparameters": space, "seed": 3})),
    )
    .await
    .unwrap();
    assert_eq!(submitted.is_error, Some(false), "{submitted:?}");
    let mcp_id = submitted.structured_content.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let job = app.wait(&mcp_id, Duration::from_secs(600)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let over_mcp = call("job_result", json!({"job_id": mcp_id}))
        .await
        .unwrap()
        .structured_content
        .unwrap();
    let strip = |rows: &Value| -> Vec<Value> {
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| json!([r["params"], r["values"], r["testing"]]))
            .collect()
    };
    assert_eq!(
        strip(&over_mcp["leaderboard"]),
        strip(&result["leaderboard"])
    );
    client.cancel().await.ok();

    // A study none of whose trials clears Jesse's fitness floor (two days of
    // training: five trades or fewer) says its "best" is no finding.
    let floor = submit(
        &app,
        &json!({
            "strategy": "SmaCross", "exchange": EXCHANGE, "symbol": SYMBOL, "timeframe": "1h",
            "training": {"start_date": "2024-01-20", "end_date": "2024-01-22"},
            "testing": {"start_date": "2024-01-22", "end_date": "2024-01-24"},
            "hyperparameters": {"fast": {"min": 6, "max": 14}, "slow": {"options": [30, 45]}, "risk": {"fixed": 0.5}},
            "sampler": "random", "trials": 3, "seed": 5,
        }),
    )
    .await;
    let job = app.wait(&floor, Duration::from_secs(300)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["summary"]["best_value"], 0.0001, "{job}");
    assert!(
        job["summary"]["warning"]
            .as_str()
            .is_some_and(|w| w.contains("fitness floor")),
        "{job}"
    );
    // The grid study above found something: no such warning.
    let (_, grid_job) = app.get(&format!("/v1/jobs/{id}")).await;
    assert!(grid_job["summary"]["warning"].is_null(), "{grid_job}");
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

/// The trials of a finished study as (trial, params, values), the sampler's
/// decisions and their outcomes.
async fn decisions(app: &TestApp, id: &str) -> Vec<(Value, Value, Value)> {
    trials(app, id)
        .await
        .iter()
        .map(|r| (r["trial"].clone(), r["params"].clone(), r["values"].clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_gives_the_same_study_on_one_worker_or_two() {
    let csv = synthetic_csv("2024-01-01", "2024-03-01", 5);
    // TPE past its 10 random start-up trials, so its model decides the last ones.
    let body = study(json!({
        "sampler": "tpe", "trials": 14, "window": 3, "seed": 11,
        "hyperparameters": {"fast": {"min": 5, "max": 30}, "slow": {"min": 30, "max": 80, "step": 5}, "risk": {"fixed": 0.5}},
    }));
    let one = TestApp::spawn(Options::default()).await;
    one.import_csv(&csv).await;
    let id = submit(&one, &body).await;
    let job = one.wait(&id, Duration::from_secs(600)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let alone = decisions(&one, &id).await;
    let board = result(&one, &id).await["leaderboard"].clone();
    drop(one);

    // Two runners, and two copies of the study interleaving on them.
    let two = TestApp::spawn(Options {
        runners: 2,
        ..Default::default()
    })
    .await;
    two.import_csv(&csv).await;
    let a = submit(&two, &body).await;
    let b = submit(&two, &body).await;
    for id in [&a, &b] {
        let job = two.wait(id, Duration::from_secs(600)).await;
        assert_eq!(job["status"], "succeeded", "{job}");
    }
    assert_eq!(alone.len(), 14);
    let mut params: Vec<String> = alone.iter().map(|d| d.1.to_string()).collect();
    params.sort();
    params.dedup();
    assert!(params.len() > 5, "the sampler explores: {alone:?}");
    for id in [&a, &b] {
        assert_eq!(decisions(&two, id).await, alone, "same seed, same trials");
        let other = result(&two, id).await["leaderboard"].clone();
        let strip = |rows: &Value| -> Vec<Value> {
            rows.as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    json!([
                        r["trial"],
                        r["params"],
                        r["values"],
                        r["testing"],
                        r["rank"],
                        r["testing_rank"]
                    ])
                })
                .collect()
        };
        assert_eq!(strip(&other), strip(&board), "same leaderboard");
    }
    // A different seed draws differently.
    let mut reseeded = body.clone();
    reseeded["seed"] = json!(12);
    let c = submit(&two, &reseeded).await;
    two.wait(&c, Duration::from_secs(600)).await;
    assert_ne!(decisions(&two, &c).await, alone);
}

/// Postgres + Redis: kill -9 the worker mid-study; another finishes it. No
/// finished trial runs again, and the study equals an uninterrupted one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_study_loses_nothing() {
    let mut app = TestApp::spawn(Options {
        heartbeat_secs: 1,
        requeue_after_secs: 2,
        ..Options::distributed().await
    })
    .await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-03-01", 5))
        .await;
    let body = study(
        json!({"sampler": "random", "trials": 8, "seed": 5, "timeframe": "15m",
        "hyperparameters": {"fast": {"min": 5, "max": 30}, "risk": {"fixed": 0.5}}}),
    );
    let id = submit(&app, &body).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let (_, job) = app.get(&format!("/v1/jobs/{id}")).await;
        if job["children"]["succeeded"].as_i64().unwrap_or(0) >= 2
            && job["children"]["running"] == 1
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let finished_before: Vec<(Value, Value)> = children_of(&app, &id)
        .await
        .iter()
        .filter(|k| k["status"] == "succeeded")
        .map(|k| (k["job_id"].clone(), k["finished_at"].clone()))
        .collect();
    app.kill_worker(0).await;
    app.start_worker();
    let job = app.wait(&id, Duration::from_secs(300)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let after = children_of(&app, &id).await;
    assert!(
        after.iter().all(|k| k["status"] == "succeeded"),
        "{after:#?}"
    );
    for (child, finished) in &finished_before {
        let kid = after.iter().find(|k| &k["job_id"] == child).unwrap();
        assert_eq!(kid["attempts"], 1, "a finished trial never re-runs");
        assert_eq!(&kid["finished_at"], finished);
    }
    assert!(
        after.iter().any(|k| k["attempts"] == 2),
        "the trial killed with its worker ran again"
    );
    let interrupted = decisions(&app, &id).await;
    let again = submit(&app, &body).await;
    app.wait(&again, Duration::from_secs(300)).await;
    assert_eq!(
        decisions(&app, &again).await,
        interrupted,
        "interrupted or not, the same study"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constraints_nsga2_early_stop_and_cancel() {
    let app = TestApp::spawn(Options::default()).await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-03-01", 7))
        .await;
    let id = submit(
        &app,
        &study(json!({"sampler": "random", "trials": 3, "seed": 1,
        "constraints": {"min_trades": 100000, "metrics": [{"metric": "win_rate", "min": 0.0}]}})),
    )
    .await;
    let job = app.wait(&id, Duration::from_secs(300)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let result = self::result(&app, &id).await;
    assert_eq!(result["counts"]["infeasible"], 3, "{}", result["counts"]);
    assert!(
        result["best"].is_null(),
        "an infeasible trial is never best"
    );
    assert_eq!(result["leaderboard"], json!([]));
    for row in trials(&app, &id).await {
        assert_eq!(row["state"], "infeasible");
        assert_eq!(row["error"]["broken"][0]["metric"], "total", "{row}");
        assert!(row["fitness"].is_number(), "still scored: {row}");
    }

    // NSGA-II over two objectives: the leaderboard leads with the Pareto front.
    let id = submit(&app, &study(json!({"sampler": "nsga2", "trials": 6, "seed": 4, "population_size": 3, "window": 1,
        "objectives": [{"metric": "net_profit_percentage"}, {"metric": "max_drawdown", "direction": "maximize"}],
        "hyperparameters": {"slow": {"fixed": 40}, "risk": {"fixed": 0.5}}}))).await;
    let job = app.wait(&id, Duration::from_secs(300)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let rows = trials(&app, &id).await;
    assert_eq!(rows.len(), 6);
    assert!(
        rows.iter()
            .all(|r| r["values"].as_array().unwrap().len() == 2),
        "{rows:#?}"
    );
    let (_, nsga) = app
        .get(&format!(
            "/v1/jobs/{}/result",
            rows[5]["job_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(
        nsga["system_attrs"]["nsga2:generation"], 1,
        "NSGA-II's generations survive the rebuild: {nsga}"
    );

    // Early stop: once `early_stop` trials in a row do not improve the best, the
    // study ends there and the trials past it do not run.
    let id = submit(&app, &study(json!({"sampler": "random", "trials": 30, "seed": 9, "window": 1, "early_stop": 2,
        "hyperparameters": {"fast": {"options": [8, 8, 8, 9]}, "slow": {"fixed": 40}, "risk": {"fixed": 0.5}}}))).await;
    let job = app.wait(&id, Duration::from_secs(300)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let result = self::result(&app, &id).await;
    let last = result["study"]["stopped_after_trial"]
        .as_i64()
        .expect("stopped early");
    assert!(last < 29, "{}", result["study"]);
    assert_eq!(
        result["convergence"].as_array().unwrap().len() as i64,
        last + 1
    );
    assert!(
        result["counts"]["not_run"].as_i64().unwrap() > 0,
        "{}",
        result["counts"]
    );
    assert!(
        result["counts"]["duplicates"].as_i64().unwrap() > 0,
        "identical draws reuse the first evaluation: {}",
        result["counts"]
    );

    // Cancel: the study ends at once, and no trial starts afterwards.
    let id = submit(
        &app,
        &study(json!({"sampler": "random", "trials": 40, "seed": 2, "timeframe": "15m"})),
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, job) = app.get(&format!("/v1/jobs/{id}")).await;
        if job["children"]["succeeded"].as_i64().unwrap_or(0) >= 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, cancelled) = app
        .post_json(&format!("/v1/jobs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    let job = app.wait(&id, Duration::from_secs(30)).await;
    assert_eq!(job["status"], "cancelled");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let kids = children_of(&app, &id).await;
    assert_eq!(kids.len(), 40);
    let ran = kids.iter().filter(|k| !k["started_at"].is_null()).count();
    assert!(ran <= 3, "no trial starts after the cancel: {ran} ran");
    assert!(
        kids.iter()
            .all(|k| k["status"] != "queued" && k["status"] != "running"),
        "{kids:#?}"
    );
}

/// One-minute candles that rise from 00:00 to 12:00 UTC (+0.1 % an hour) and
/// fall slower after (−0.06 % an hour), as CSV.
fn half_day_rising_csv(start: &str, end: &str) -> Vec<u8> {
    let (start, end) = (ms(start), ms(end));
    let mut out = b"timestamp,open,high,low,close,volume\n".to_vec();
    let mut price = 40_000.0f64;
    let mut t = start;
    while t < end {
        let hour = (t / 3_600_000) % 24;
        let step = if hour < 12 {
            0.001 / 60.0
        } else {
            -0.0006 / 60.0
        };
        let close = price * (1.0 + step);
        out.extend(
            format!(
                "{t},{price:?},{:?},{:?},{close:?},1.0\n",
                price.max(close),
                price.min(close)
            )
            .bytes(),
        );
        price = close;
        t += 60_000;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trial_without_a_losing_day_has_jesses_infinite_fitness_and_ranks_best() {
    let app = TestApp::spawn(Options {
        runners: 2,
        fixtures: &["Stepper"],
        ..Default::default()
    })
    .await;
    let csv = half_day_rising_csv("2024-01-01", "2024-03-01");
    let csv_path = app.dir.path().join("candles.csv");
    std::fs::write(&csv_path, &csv).unwrap();
    app.import_csv(&csv).await;
    // every = 24 enters at 01:00 and leaves at 12:00, while the price only
    // rises: no day loses, Jesse's sortino is +inf and so is its fitness. The
    // others also hold through falling hours: finite scores.
    let space = json!({"every": {"options": [7, 24, 5]}, "hold": {"fixed": 11}});
    let id = submit(
        &app,
        &json!({
            "strategy": "Stepper", "exchange": EXCHANGE, "symbol": SYMBOL, "timeframe": "1h",
            "training": {"start_date": TRAINING.0, "end_date": TRAINING.1},
            "testing": {"start_date": TESTING.0, "end_date": TESTING.1},
            "hyperparameters": space, "sampler": "grid", "objective": "sortino", "seed": 1,
        }),
    )
    .await;
    let job = app.wait(&id, Duration::from_secs(600)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let result = result(&app, &id).await;
    let mut rows = trials(&app, &id).await;
    rows.sort_by_key(|r| r["trial"].as_i64());
    assert_eq!(rows.len(), 3);

    let reference = reference_fitness(&json!({
        "csv": csv_path, "exchange": EXCHANGE, "symbol": SYMBOL, "strategy": "Stepper",
        "strategy_path": app.strategies_dir().join("Stepper/__init__.py"),
        "timeframe": "1h", "warmup_minutes": 240 * 60,
        "config": {"starting_balance": 10000, "fee": 0.001, "type": "futures", "futures_leverage": 1,
                   "futures_leverage_mode": "cross", "exchange": EXCHANGE, "warm_up_candles": 240},
        "training": {"start_ms": ms(TRAINING.0), "end_ms": ms(TRAINING.1)},
        "testing": {"start_ms": ms(TESTING.0), "end_ms": ms(TESTING.1)},
        "objective": "sortino", "optimal_total": 200, "fast_mode": true,
        "trials": rows.iter().map(|r| json!({"trial": r["trial"],
            "hyperparameters": {"every": r["params"]["every"], "hold": 11}})).collect::<Vec<_>>(),
    }))
    .await;
    let mut infinite = Vec::new();
    for (row, jesse) in rows.iter().zip(reference["trials"].as_array().unwrap()) {
        assert_eq!(row["trial"], jesse["trial"]);
        // Equal to Jesse's get_fitness, at infinity too: null + "+inf" on both sides.
        assert_eq!(
            row["fitness_special"], jesse["score_special"],
            "{row}\n{jesse}"
        );
        match jesse["score"].as_f64() {
            Some(theirs) => assert_eq!(
                row["fitness"].as_f64().map(f64::to_bits),
                Some(theirs.to_bits()),
                "{row}"
            ),
            None => {
                assert!(row["fitness"].is_null(), "{row}");
                infinite.push(row["params"]["every"].clone());
                assert_eq!(row["values_special"][0], "+inf", "{row}");
                assert_eq!(row["training_special"]["sortino_ratio"], "+inf", "{row}");
            }
        }
        assert_eq!(
            row["testing"].is_null(),
            jesse["testing_total"].is_null(),
            "{row}"
        );
    }
    assert_eq!(infinite, vec![json!(24)], "{rows:#?}");
    assert!(
        rows.iter()
            .any(|r| r["fitness"].as_f64().is_some_and(|f| f > fitness_floor())),
        "a finite usable score beside it: {rows:#?}"
    );
    // Ranked best, as Jesse ranks +inf, above every finite score.
    let board = result["leaderboard"].as_array().unwrap();
    assert_eq!(board[0]["params"]["every"], 24, "{board:#?}");
    assert_eq!(board[0]["fitness_special"], "+inf");
    assert_eq!(result["best"]["params"]["every"], 24);
    assert_eq!(job["summary"]["best_value_special"], "+inf", "{job}");
    assert_eq!(
        result["convergence"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["value_special"] == "+inf")
            .count(),
        1
    );
    // The trial's backtest keeps the metric's meaning too.
    let best_job = board[0]["job_id"].as_str().unwrap();
    let (_, trial) = app.get(&format!("/v1/jobs/{best_job}/result")).await;
    assert_eq!(trial["fitness_special"], "+inf", "{trial}");
    assert!(trial["training"]["sortino_ratio"].is_null());
    // The overfitting statistics say what they counted.
    let dsr = &result["overfitting"]["deflated_sharpe"];
    assert_eq!(dsr["trials_evaluated"], 3, "{dsr}");
    assert_eq!(dsr["n_trials_used"], 3, "{dsr}");
    let pbo = &result["overfitting"]["pbo"];
    assert_eq!(pbo["selection"]["statistic"], "sortino", "{pbo}");
}

fn fitness_floor() -> f64 {
    jesse_mcp_core::kinds::optimization::fitness::UNUSABLE
}
