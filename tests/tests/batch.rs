//! Backtest batches, the first parent kind: children equal bare Jesse, a
//! cancelled batch starts no child afterwards, a worker killed mid-batch loses
//! nothing and re-runs no finished child, a single backtest is not starved by
//! a large batch, and rows of kinds this binary does not know are left alone.

use std::time::Duration;

use jesse_mcp_tests::*;
use serde_json::{Value, json};

const START_MS: i64 = 1_705_276_800_000; // 2024-01-15

async fn children(app: &TestApp, id: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = app
            .get(&format!("/v1/jobs/{id}/children?limit=200&cursor={cursor}"))
            .await;
        assert_eq!(status, 200, "{page}");
        all.extend(page["jobs"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_string(),
            None => return all,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_children_equal_bare_jesse_and_rank_into_a_leaderboard() {
    let app = TestApp::spawn(Options {
        runners: 2,
        ..Default::default()
    })
    .await;
    let csv = synthetic_csv("2024-01-01", "2024-03-01", 11);
    let csv_path = app.dir.path().join("candles.csv");
    std::fs::write(&csv_path, &csv).unwrap();
    app.import_csv(&csv).await;
    let mut base = backtest_body("SmaCross", "1h", "2024-01-15", "2024-02-25");
    base["hyperparameters"] = json!({"slow": 40});

    // One invalid variant fails the whole submit, naming it; nothing is enqueued.
    let before = app.job_count().await;
    let (status, error) = app
        .post_json(
            "/v1/backtests/batch",
            &json!({"base": base, "grid": {"hyperparameters": {"fast": [8, 12]}},
                    "variants": [{"timeframe": "7m"}]}),
        )
        .await;
    assert_eq!(status, 422, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("variant 2:"),
        "{error}"
    );
    assert_eq!(error["error"]["details"]["variant"], 2);
    let (status, error) = app
        .post_json("/v1/backtests/batch", &json!({"base": base, "rank_by": "vibes", "grid": {"periods": [{"start_date": "2024-01-15", "end_date": "2024-02-01"}]}}))
        .await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (422, Some("invalid_rank_by"))
    );
    assert_eq!(
        app.job_count().await,
        before,
        "a refused batch enqueues nothing"
    );

    let (status, accepted) = app
        .post_json(
            "/v1/backtests/batch",
            &json!({"base": base, "grid": {"hyperparameters": {"fast": [8, 12, 16]}},
                    "rank_by": "net_profit_percentage"}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["kind"], "backtest_batch");
    let id = accepted["job_id"].as_str().unwrap().to_string();
    let parent = app.wait(&id, Duration::from_secs(300)).await;
    assert_eq!(parent["status"], "succeeded", "{parent}");
    assert_eq!(parent["children"]["total"], 3);
    assert_eq!(parent["children"]["succeeded"], 3);
    assert_eq!(parent["progress"], 1.0);

    let kids = children(&app, &id).await;
    assert_eq!(kids.len(), 3);
    assert!(
        kids.iter()
            .all(|k| k["parent_id"] == id.as_str() && k["kind"] == "backtest")
    );
    let (_, result) = app.get(&format!("/v1/jobs/{id}/result")).await;
    assert_eq!(result["kind"], "backtest_batch");
    assert_eq!(result["leaderboard_total"], 3);
    let rows = result["leaderboard"].as_array().unwrap();
    let scores: Vec<f64> = rows.iter().map(|r| r["score"].as_f64().unwrap()).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "ranked descending: {scores:?}"
    );
    assert_eq!(result["best"]["job_id"], rows[0]["job_id"]);
    let (_, page) = app
        .get(&format!("/v1/jobs/{id}/result?offset=1&limit=1"))
        .await;
    assert_eq!(page["leaderboard"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["leaderboard"][0], rows[1]);

    // Every child is an ordinary backtest, bit-identical to bare Jesse.
    for kid in &kids {
        let index = kid["child_index"].as_i64().unwrap() as usize;
        let fast = [8, 12, 16][index];
        let (status, child) = app
            .get(&format!(
                "/v1/jobs/{}/result",
                kid["job_id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(status, 200, "{child}");
        let reference = reference_backtest(&json!({
            "csv": csv_path, "exchange": EXCHANGE, "symbol": SYMBOL, "strategy": "SmaCross",
            "strategy_path": app.strategies_dir().join("SmaCross/__init__.py"),
            "timeframe": "1h", "start_ms": START_MS, "end_ms": 1_708_819_200_000i64,
            "warmup_minutes": 240 * 60,
            "config": {"starting_balance": 10000, "fee": 0.001, "type": "futures", "futures_leverage": 1,
                       "futures_leverage_mode": "cross", "exchange": EXCHANGE, "warm_up_candles": 240},
            "hyperparameters": {"fast": fast, "slow": 40, "risk": 0.5},
        }))
        .await;
        assert_metrics_identical(&child["metrics"], &reference["metrics"]);
        let row = rows.iter().find(|r| r["job_id"] == kid["job_id"]).unwrap();
        assert_eq!(row["variant"], json!({"hyperparameters": {"fast": fast}}));
        assert_eq!(
            row["metrics"]["net_profit_percentage"],
            child["metrics"]["net_profit_percentage"]
        );
        // The child ran the source pinned by its parent, and says so.
        assert_eq!(
            child["provenance"]["strategies"][0]["sha256"],
            result["provenance"]["strategies"][0]["sha256"]
        );
        assert!(
            child["provenance"]["strategies"][0]["source"]
                .as_str()
                .unwrap()
                .contains("class SmaCross")
        );
    }

    // Results of every kind are readable: a deep validation's report.
    let (status, validation) = app
        .post_json("/v1/strategies/validate", &json!({"name": "SmaCross", "deep": true,
            "code": std::fs::read_to_string(app.strategies_dir().join("SmaCross/__init__.py")).unwrap()}))
        .await;
    assert_eq!(status, 200, "{validation}");
    let job_id = validation["deep"]["job_id"].as_str().unwrap().to_string();
    app.wait(&job_id, Duration::from_secs(120)).await;
    let (status, report) = app.get(&format!("/v1/jobs/{job_id}/result")).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (report["kind"].as_str(), report["valid"].as_bool()),
        (Some("strategy_validation"), Some(true))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_batch_starts_no_child_afterwards() {
    let app = TestApp::spawn(Options {
        fixtures: &["Sleeper"],
        ..Default::default()
    })
    .await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-01-20", 3))
        .await;
    let base = backtest_body("Sleeper", "1h", "2024-01-15", "2024-01-17");
    let periods: Vec<Value> = (0..6)
        .map(|_| json!({"start_date": "2024-01-15", "end_date": "2024-01-17"}))
        .collect();
    let (status, accepted) = app
        .post_json(
            "/v1/backtests/batch",
            &json!({"base": base, "grid": {"periods": periods}}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["job_id"].as_str().unwrap().to_string();
    // Wait for the first child to run (one runner: the cap keeps the rest held back).
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, job) = app.get(&format!("/v1/jobs/{id}")).await;
        if job["children"]["running"] == 1 {
            assert_eq!(job["children"]["total"], 6);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no child started: {job}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, cancelled) = app
        .post_json(&format!("/v1/jobs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    // The running child is interrupted; nothing else ever starts.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let kids = children(&app, &id).await;
    assert_eq!(kids.len(), 6);
    assert!(kids.iter().all(|k| k["status"] == "cancelled"), "{kids:#?}");
    let started = kids.iter().filter(|k| !k["started_at"].is_null()).count();
    assert_eq!(
        started, 1,
        "only the child running at the cancel ever started"
    );
    let (_, parent) = app.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(parent["status"], "cancelled");
    let (status, _) = app.get(&format!("/v1/jobs/{id}/result")).await;
    assert_eq!(status, 409);
}

/// One runner; a 12-child batch ahead of a single backtest. The batch keeps
/// only as many children in flight as the fleet has runners, so the single
/// backtest waits for at most the child running when it was submitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backtest_behind_a_large_batch_starts_within_about_one_child() {
    let app = TestApp::spawn(Options::default()).await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-03-01", 5))
        .await;
    let base = backtest_body("SmaCross", "15m", "2024-01-15", "2024-02-10");
    let fast: Vec<i64> = (5..17).collect();
    let (status, accepted) = app
        .post_json(
            "/v1/backtests/batch",
            &json!({"base": base, "grid": {"hyperparameters": {"fast": fast}}}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["job_id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (_, job) = app.get(&format!("/v1/jobs/{id}")).await;
        if job["children"]["succeeded"].as_i64().unwrap_or(0) >= 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let single = app
        .submit(&backtest_body("SmaCross", "1h", "2024-01-15", "2024-02-10"))
        .await;
    let done = app.wait(&single, Duration::from_secs(120)).await;
    assert_eq!(done["status"], "succeeded");
    let ms = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    let (submitted, started) = (ms(&done["created_at"]), ms(&done["started_at"]));
    let kids = children(&app, &id).await;
    let overtaking = kids
        .iter()
        .filter(|k| {
            !k["started_at"].is_null()
                && ms(&k["started_at"]) > submitted
                && ms(&k["started_at"]) < started
        })
        .count();
    // Children wait behind jobs users submit (lower queue priority), and at
    // most one (the cap: one runner) is queued at a time; without the cap, all
    // ten remaining would be ahead of it in the queue.
    assert!(
        overtaking <= 1,
        "{overtaking} children of the batch started between the submit and the single backtest's start"
    );
    let (_, parent) = app.get(&format!("/v1/jobs/{id}")).await;
    assert!(
        parent["children"]["in_flight"].as_i64().unwrap() <= 1,
        "{parent}"
    );
    app.wait(&id, Duration::from_secs(300)).await;
}

/// Postgres + Redis: kill -9 the worker while the batch runs; another worker
/// finishes it. The batch ends once, finished children never re-run, and the
/// leaderboard is complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_loses_nothing() {
    let mut app = TestApp::spawn(Options {
        heartbeat_secs: 1,
        requeue_after_secs: 2,
        ..Options::distributed().await
    })
    .await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-03-01", 5))
        .await;
    let base = backtest_body("SmaCross", "15m", "2024-01-15", "2024-02-10");
    let (status, accepted) = app
        .post_json(
            "/v1/backtests/batch",
            &json!({"base": base, "grid": {"hyperparameters": {"fast": [5, 6, 7, 8, 9, 10]}}}),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let id = accepted["job_id"].as_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
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
    let finished_before: Vec<(String, String)> = children(&app, &id)
        .await
        .iter()
        .filter(|k| k["status"] == "succeeded")
        .map(|k| {
            (
                k["job_id"].as_str().unwrap().to_string(),
                k["finished_at"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    app.kill_worker(0).await;
    app.start_worker();
    let parent = app.wait(&id, Duration::from_secs(300)).await;
    assert_eq!(parent["status"], "succeeded", "{parent}");
    let kids = children(&app, &id).await;
    assert!(kids.iter().all(|k| k["status"] == "succeeded"), "{kids:#?}");
    for (child, finished) in &finished_before {
        let kid = kids.iter().find(|k| k["job_id"] == child.as_str()).unwrap();
        assert_eq!(kid["attempts"], 1, "a finished child never re-runs");
        assert_eq!(kid["finished_at"].as_str().unwrap(), finished);
    }
    assert!(
        kids.iter().any(|k| k["attempts"] == 2),
        "the child killed with its worker ran again"
    );
    let (_, result) = app.get(&format!("/v1/jobs/{id}/result")).await;
    assert_eq!(result["leaderboard_total"], 6);
    assert_eq!(result["succeeded"], 6);
    let mut ids: Vec<&str> = result["leaderboard"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["job_id"].as_str().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 6, "one row per child");
}

/// A row of a kind this binary does not know (a newer fleet member's, a
/// rolled-back binary) is listed as it is and left alone by the worker and the
/// lost-job sweep, and breaks nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kinds_are_listed_and_left_alone() {
    let app = TestApp::spawn(Options {
        requeue_after_secs: 1,
        ..Default::default()
    })
    .await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-02-01", 5))
        .await;
    let store = jesse_mcp_core::store::Store::open(&app.data_dir(), None)
        .await
        .unwrap();
    let id = jesse_mcp_core::jobs::new_job_id();
    store
        .insert_job(jesse_mcp_core::store::NewJob {
            id: &id,
            kind: "from_the_future",
            params: &json!({"anything": 1}),
            idempotency_key: None,
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await; // a few sweeps
    let (status, list) = app.get("/v1/jobs").await;
    assert_eq!(status, 200, "{list}");
    let listed = list["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job_id"] == id.as_str())
        .expect("listed");
    assert_eq!(
        (listed["kind"].as_str(), listed["status"].as_str()),
        (Some("from_the_future"), Some("queued"))
    );
    let (status, _) = app.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 200);
    let job = app
        .submit(&backtest_body("SmaCross", "1h", "2024-01-15", "2024-01-25"))
        .await;
    assert_eq!(
        app.wait(&job, Duration::from_secs(120)).await["status"],
        "succeeded"
    );
    let (_, still) = app.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(still["status"], "queued", "left alone");
}

/// Idle workers on Redis wait for the queue's announcements instead of
/// polling every 10 ms (which cost 2-3 % of a core per worker), and still pick
/// up a job as soon as it is pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_workers_on_redis_wait_for_announcements() {
    let app = TestApp::spawn(Options::distributed().await).await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-02-01", 5))
        .await;
    app.wait_worker_ready(0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = app.worker_pid(0);
    // Wake-ups of the worker's threads (voluntary context switches), whatever
    // else the machine is doing.
    let wakeups = || -> u64 {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("worker threads")
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
            .filter_map(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                    .and_then(|n| n.trim().parse::<u64>().ok())
            })
            .sum()
    };
    let before = wakeups();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let used = wakeups() - before;
    eprintln!("idle worker wake-ups in 5 s: {used}");
    // Polling every 10 ms on two lanes woke the worker about 380 times in 5 s;
    // waiting for announcements (with a 1 s backstop), about 50.
    assert!(used < 150, "an idle worker woke {used} times in 5 s");
    let job = app
        .submit(&backtest_body("SmaCross", "1h", "2024-01-15", "2024-01-25"))
        .await;
    assert_eq!(
        app.wait(&job, Duration::from_secs(120)).await["status"],
        "succeeded"
    );
}
