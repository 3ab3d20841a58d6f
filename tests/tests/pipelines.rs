//! Research pipelines with real Jesse: the evaluate_strategy template runs end
//! to end on stored candles and reports; step outputs feed later steps; a
//! failing gate stops the pipeline with the gate as its verdict and starts
//! nothing after it; a worker killed mid-pipeline loses nothing; malformed
//! pipelines are refused before anything is enqueued; MCP serves the prompts,
//! the template catalog and the report.

use std::time::Duration;

use jesse_mcp_tests::*;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, GetPromptRequestParams, ReadResourceRequestParams};
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};

async fn children(app: &TestApp, id: &str) -> Vec<Value> {
    let (status, page) = app.get(&format!("/v1/jobs/{id}/children?limit=200")).await;
    assert_eq!(status, 200, "{page}");
    page["jobs"].as_array().unwrap().clone()
}

async fn submit(app: &TestApp, body: &Value) -> String {
    let (status, accepted) = app.post_json("/v1/pipelines", body).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["kind"], "pipeline");
    accepted["job_id"].as_str().unwrap().to_string()
}

async fn result_of(app: &TestApp, id: &str) -> Value {
    let (status, result) = app.get(&format!("/v1/jobs/{id}/result")).await;
    assert_eq!(status, 200, "{result}");
    result
}

fn step<'a>(result: &'a Value, id: &str) -> &'a Value {
    result["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {result}"))
}

/// The hyperparameters a backtest ran with, from its provenance (its plan).
fn ran_with(backtest: &Value) -> Value {
    let plan = &backtest["provenance"]["params"];
    if plan["hyperparameters"].is_object() {
        plan["hyperparameters"].clone()
    } else {
        plan["routes"][0]["hyperparameters"].clone()
    }
}

/// The whole template on stored candles: no import step (the candles are
/// there), every step ran as its own job in order, the best parameters the
/// optimization found are what the next backtest ran, Monte Carlo read that
/// backtest, and every number in the report names its job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_evaluate_template_runs_end_to_end_and_reports() {
    let app = TestApp::spawn(Options {
        runners: 2,
        job_timeout_secs: 300,
        ..Default::default()
    })
    .await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-03-20", 11))
        .await;
    let id = submit(
        &app,
        &json!({"template": "evaluate_strategy", "params": {
            "strategy": "SmaCross", "exchange": EXCHANGE, "symbol": SYMBOL, "timeframe": "1h",
            "start_date": "2024-01-20", "end_date": "2024-03-15",
            "hyperparameters": {"fast": {"min": 5, "max": 20}, "slow": {"fixed": 40}},
            "sampler": "random", "trials": 4, "seed": 5, "train_days": 25, "test_days": 10,
            "scenarios": 200,
            // Thresholds every outcome passes: this test is about the steps running and feeding each other;
            // the next one is about gates stopping a pipeline.
            "max_pbo": 1.0, "min_efficiency": -1.0e9, "max_loss_probability": 1.0,
        }}),
    )
    .await;
    let job = app.wait(&id, Duration::from_secs(900)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let result = result_of(&app, &id).await;
    assert_eq!(
        result["verdict"]["outcome"], "passed",
        "{:#} {:#}",
        result["gates"], result["steps"]
    );

    // The plan: the candles were stored, so no import; the seed is stored.
    let provenance = &result["provenance"];
    assert_eq!(provenance["params"]["seed"], 5);
    assert!(
        provenance["notes"][0]
            .as_str()
            .unwrap()
            .contains("No import step"),
        "{provenance}"
    );
    let ids: Vec<&str> = result["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "validate",
            "baseline",
            "optimize",
            "walk_forward",
            "best",
            "monte_carlo"
        ]
    );
    let kids = children(&app, &id).await;
    assert_eq!(kids.len(), 6, "{kids:#?}");

    // Outputs fed later steps: the best backtest ran the optimization's best
    // parameters, and Monte Carlo read the best backtest.
    let optimize = result_of(&app, step(&result, "optimize")["job_id"].as_str().unwrap()).await;
    let best_id = step(&result, "best")["job_id"].as_str().unwrap();
    let (_, best_job) = app.get(&format!("/v1/jobs/{best_id}")).await;
    let best = result_of(&app, best_id).await;
    let ran_with = ran_with(&best);
    for (name, value) in optimize["best"]["params"].as_object().unwrap() {
        assert_eq!(&ran_with[name], value, "{ran_with} vs {}", optimize["best"]);
    }
    assert_eq!(best_job["parent_id"], id.as_str());
    // The backtests the verdict is read from ran without Jesse's fast mode;
    // the trials with it (Jesse's default).
    assert_eq!(provenance["params"]["fast_mode"], false);
    assert_eq!(best["provenance"]["fast_mode"], false, "{best}");
    let baseline = result_of(&app, step(&result, "baseline")["job_id"].as_str().unwrap()).await;
    assert_eq!(baseline["provenance"]["fast_mode"], false);
    let walk = result_of(
        &app,
        step(&result, "walk_forward")["job_id"].as_str().unwrap(),
    )
    .await;
    for w in walk["windows"].as_array().unwrap() {
        assert_eq!(w["out_of_sample_fast_mode"], false, "{w}");
        assert_eq!(w["in_sample_fast_mode"], true, "{w}");
    }
    let mc = result_of(
        &app,
        step(&result, "monte_carlo")["job_id"].as_str().unwrap(),
    )
    .await;
    assert_eq!(
        mc["setup"]["source_job_id"].as_str(),
        Some(best_id),
        "{}",
        mc["setup"]
    );
    assert_eq!(mc["setup"]["seed"], 5);
    // The template's Monte Carlo is a stationary bootstrap: its total return varies.
    assert_eq!(mc["setup"]["method"], "stationary_bootstrap");
    assert!(mc["probability_of_loss"].is_number(), "{mc}");

    // Gates: each with the value it read and the job it read it from.
    let gates = result["gates"].as_array().unwrap();
    assert_eq!(gates.len(), 4, "{gates:#?}");
    for gate in gates {
        let from = gate["job_id"].as_str().unwrap();
        assert!(kids.iter().any(|k| k["job_id"] == from), "{gate}");
    }
    let verdict = &result["verdict"];
    match verdict["outcome"].as_str().unwrap() {
        "passed" => assert!(gates.iter().all(|g| g["passed"] == true)),
        "rejected" => {
            let failed = &verdict["failed_gate"];
            assert_eq!(failed["passed"], false);
            assert!(
                verdict["reason"]
                    .as_str()
                    .unwrap()
                    .contains(failed["gate"].as_str().unwrap())
            );
        }
        other => panic!("verdict {other}"),
    }

    // The report: every step's job id, the verdict, the gates; also as text/markdown.
    let report = result["report"].as_str().unwrap();
    for kid in &kids {
        assert!(report.contains(kid["job_id"].as_str().unwrap()), "{report}");
    }
    assert!(report.contains("**Verdict: "), "{report}");
    assert!(
        report.contains("probability of backtest overfitting"),
        "{report}"
    );
    // Each gate line says what its statistic measures.
    for clause in [
        "deep validation",
        "CSCV splits",
        "walk-forward efficiency over",
        "P(loss): share of 200 scenarios whose compounded total return is below 0, under stationary bootstrap",
    ] {
        assert!(report.contains(clause), "{clause}: {report}");
    }
    let response = app
        .client
        .get(app.url(&format!("/v1/jobs/{id}/report")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/markdown")
    );
    assert_eq!(response.text().await.unwrap(), report);
}

/// Steps written by hand: an optimization's best parameters feed a backtest
/// whose gate cannot hold; the pipeline stops there with that gate as its
/// verdict, and the step after it never starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_gate_stops_the_pipeline_with_its_reason() {
    let app = TestApp::spawn(Options {
        runners: 2,
        ..Default::default()
    })
    .await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-03-01", 12))
        .await;
    let market = json!({"strategy": "SmaCross", "exchange": EXCHANGE, "symbol": SYMBOL,
                        "timeframe": "1h", "start_date": "2024-01-20", "end_date": "2024-02-25"});
    let mut study = market.clone();
    study["sampler"] = json!("random");
    study["trials"] = json!(3);
    study["seed"] = json!(9);
    study["hyperparameters"] = json!({"fast": {"min": 5, "max": 15}, "slow": {"fixed": 40}});
    let mut best = market.clone();
    best["hyperparameters"] = json!("${opt.best.params}");
    let id = submit(
        &app,
        &json!({"name": "gate check", "steps": [
            {"id": "opt", "kind": "optimize", "input": study},
            {"id": "best", "kind": "backtest", "input": best, "gate": "best.metrics.total >= 100000"},
            {"id": "mc", "kind": "monte_carlo", "input": {"mode": "trades", "source": "${best.job_id}", "seed": 1}},
        ]}),
    )
    .await;
    let job = app.wait(&id, Duration::from_secs(600)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let result = result_of(&app, &id).await;
    let verdict = &result["verdict"];
    assert_eq!(verdict["outcome"], "rejected", "{verdict}");
    let failed = &verdict["failed_gate"];
    assert_eq!(failed["gate"], "best.metrics.total >= 100000");
    let best_id = step(&result, "best")["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(failed["job_id"], best_id.as_str());
    let best = result_of(&app, &best_id).await;
    assert_eq!(
        failed["value"], best["metrics"]["total"],
        "the value the gate read"
    );
    assert!(
        verdict["reason"]
            .as_str()
            .unwrap()
            .contains("which is not >= 100000"),
        "{verdict}"
    );
    let kids = children(&app, &id).await;
    assert_eq!(
        kids.len(),
        2,
        "the step after a failed gate never starts: {kids:#?}"
    );
    assert_eq!(step(&result, "mc")["status"], "not_run");
    let opt = result_of(&app, step(&result, "opt")["job_id"].as_str().unwrap()).await;
    let ran_with = ran_with(&best);
    assert_eq!(
        ran_with["fast"], opt["best"]["params"]["fast"],
        "the optimization's output fed the backtest"
    );
    assert!(
        result["report"]
            .as_str()
            .unwrap()
            .contains("**Verdict: REJECTED.**")
    );
}

/// Postgres + Redis: kill -9 the worker while a step runs; a new worker
/// resumes the pipeline; a finished step never runs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_pipeline_resumes_it() {
    let mut app = TestApp::spawn(Options {
        heartbeat_secs: 1,
        requeue_after_secs: 2,
        ..Options::distributed().await
    })
    .await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-03-01", 13))
        .await;
    let backtest = |fast: i64| {
        let mut body = backtest_body("SmaCross", "15m", "2024-01-15", "2024-02-20");
        body["hyperparameters"] = json!({"fast": fast});
        body
    };
    let id = submit(
        &app,
        &json!({"steps": [
            {"id": "first", "kind": "backtest", "input": backtest(8)},
            {"id": "second", "kind": "backtest", "input": backtest(9), "needs": ["first"]},
            {"id": "third", "kind": "backtest", "input": backtest(10), "needs": ["second"]},
        ]}),
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let first = loop {
        let kids = children(&app, &id).await;
        if kids.len() == 2 && kids[0]["status"] == "succeeded" && kids[1]["status"] == "running" {
            break kids[0].clone();
        }
        assert!(std::time::Instant::now() < deadline, "{kids:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    app.kill_worker(0).await;
    app.start_worker();
    let job = app.wait(&id, Duration::from_secs(300)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let kids = children(&app, &id).await;
    assert_eq!(kids.len(), 3);
    assert!(kids.iter().all(|k| k["status"] == "succeeded"), "{kids:#?}");
    assert_eq!(kids[0]["attempts"], 1, "a finished step never re-runs");
    assert_eq!(kids[0]["finished_at"], first["finished_at"]);
    assert_eq!(
        kids[1]["attempts"], 2,
        "the step killed with its worker ran again"
    );
    assert_eq!(result_of(&app, &id).await["verdict"]["outcome"], "passed");
}

/// Everything wrong with a pipeline is a 422 naming it, and nothing is enqueued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_pipelines_are_refused_before_anything_is_enqueued() {
    let app = TestApp::spawn(Options {
        start_worker: false,
        ..Default::default()
    })
    .await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-02-01", 14))
        .await;
    let good = backtest_body("SmaCross", "1h", "2024-01-10", "2024-01-25");
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    let cases = [
        (
            json!({"steps": [{"id": "a", "kind": "teleport", "input": good}]}),
            "unknown_step_kind",
            Some("a"),
        ),
        (
            json!({"steps": [{"id": "a", "kind": "backtest", "input": with("strategy", json!("${b.job_id}"))},
                             {"id": "b", "kind": "backtest", "input": good}]}),
            "later_step_reference",
            Some("a"),
        ),
        (
            json!({"steps": [{"id": "a", "kind": "backtest", "input": good, "needs": ["b"]},
                             {"id": "b", "kind": "backtest", "input": good, "needs": ["a"]}]}),
            "pipeline_cycle",
            Some("a"),
        ),
        (
            json!({"steps": [{"id": "a", "kind": "backtest", "input": good},
                             {"id": "b", "kind": "monte_carlo", "input": {"mode": "trades", "source": "${a.jobid}"}}]}),
            "unknown_output_path",
            Some("b"),
        ),
        (
            json!({"steps": [{"id": "a", "kind": "backtest", "input": good, "needs": ["zz"]}]}),
            "unknown_step_reference",
            Some("a"),
        ),
        (
            json!({"steps": [{"id": "a", "kind": "backtest", "input": good, "gate": "a.metrics.total => 1"}]}),
            "invalid_gate",
            Some("a"),
        ),
        (
            json!({"steps": [{"id": "a", "kind": "backtest", "input": good},
                             {"id": "a", "kind": "backtest", "input": good}]}),
            "duplicate_step_id",
            Some("a"),
        ),
        (
            json!({"steps": [{"id": "a", "kind": "backtest", "input": with("strategy", json!("NoSuchStrategy"))}]}),
            "unknown_strategy",
            None,
        ),
        (
            json!({"steps": [{"id": "a", "kind": "backtest", "input": with("end_date", json!("2025-06-01"))}]}),
            "missing_candles",
            Some("a"),
        ),
        (json!({"steps": []}), "invalid_steps", None),
        (
            json!({"template": "evaluate_everything", "params": {}}),
            "unknown_template",
            None,
        ),
        (
            json!({"template": "evaluate_strategy", "params": {"strategy": "SmaCross"}}),
            "invalid_request",
            None,
        ),
        (
            json!({"steps": [], "template": "evaluate_strategy"}),
            "invalid_request",
            None,
        ),
    ];
    for (body, code, step) in cases {
        let (status, error) = app.post_json("/v1/pipelines", &body).await;
        assert_eq!(
            (status, error["error"]["code"].as_str()),
            (422, Some(code)),
            "{body} -> {error}"
        );
        if let Some(step) = step {
            assert_eq!(error["error"]["details"]["step"], step, "{error}");
            assert!(
                error["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("step '{step}'")),
                "{error}"
            );
        }
    }
    let (_, error) = app
        .post_json(
            "/v1/pipelines",
            &json!({"steps": [{"id": "a", "kind": "backtest", "input": good, "needs": ["c"]},
                              {"id": "b", "kind": "backtest", "input": good, "needs": ["a"]},
                              {"id": "c", "kind": "backtest", "input": good, "needs": ["b"]}]}),
        )
        .await;
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("a → c → b → a"),
        "the cycle is written out: {error}"
    );
    assert_eq!(app.job_count().await, 0, "nothing was enqueued");

    // The template catalog documents both templates with an example that plans.
    let (status, catalog) = app.get("/v1/pipelines/templates").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = catalog["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["evaluate_strategy", "screen_pairs"]);
    assert!(catalog["templates"][0]["params"]["properties"]["max_pbo"].is_object());
}

/// MCP: the research prompts, the template catalog resource, the
/// research_pipeline tool and the report resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_serves_prompts_templates_and_reports() {
    let app = TestApp::spawn(Options::default()).await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-02-15", 15))
        .await;
    let transport = StreamableHttpClientTransport::from_uri(format!("{}/mcp", app.base));
    let client = ().serve(transport).await.expect("MCP HTTP client");

    let prompts = client.list_all_prompts().await.unwrap();
    let names: Vec<&str> = prompts.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "evaluate_strategy",
            "improve_strategy",
            "compare_strategies"
        ]
    );
    let prompt = client
        .get_prompt(
            GetPromptRequestParams::new("evaluate_strategy").with_arguments(
                json!({"strategy": "SmaCross", "symbol": "ETH-USDT"})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await
        .unwrap();
    let text = serde_json::to_string(&prompt.messages).unwrap();
    for needle in [
        "SmaCross",
        "ETH-USDT",
        "research_pipeline",
        "job_wait",
        "PBO",
        "jesse://reports/",
    ] {
        assert!(text.contains(needle), "{needle} missing from {text}");
    }
    assert!(
        client
            .get_prompt(GetPromptRequestParams::new("evaluate_strategy"))
            .await
            .is_err(),
        "the strategy argument is required"
    );

    let templates = client
        .read_resource(ReadResourceRequestParams::new(
            "jesse://pipelines/templates",
        ))
        .await
        .unwrap();
    let text = serde_json::to_string(&templates).unwrap();
    assert!(text.contains("screen_pairs"), "{text}");

    let good = backtest_body("SmaCross", "1h", "2024-01-16", "2024-02-10");
    let accepted = client
        .call_tool(
            CallToolRequestParams::new("research_pipeline").with_arguments(
                json!({"name": "one step", "steps": [{"id": "base", "kind": "backtest", "input": good}]})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await
        .unwrap();
    assert_ne!(accepted.is_error, Some(true), "{accepted:?}");
    let id = accepted.structured_content.as_ref().unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let job = app.wait(&id, Duration::from_secs(300)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let report = client
        .read_resource(ReadResourceRequestParams::new(format!(
            "jesse://reports/{id}"
        )))
        .await
        .unwrap();
    let text = serde_json::to_string(&report).unwrap();
    assert!(
        text.contains("# one step") && text.contains("PASSED"),
        "{text}"
    );
    assert!(
        client
            .read_resource(ReadResourceRequestParams::new("jesse://reports/01NOPE"))
            .await
            .is_err()
    );
    client.cancel().await.unwrap();
}

/// Cancelling a pipeline cancels its running step, and no later step starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_pipeline_cancels_its_steps() {
    let app = TestApp::spawn(Options {
        fixtures: &["Sleeper"],
        ..Default::default()
    })
    .await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-02-15", 16))
        .await;
    let slow = backtest_body("Sleeper", "1h", "2024-01-16", "2024-02-10");
    let id = submit(
        &app,
        &json!({"steps": [
            {"id": "slow", "kind": "backtest", "input": slow},
            {"id": "after", "kind": "backtest", "input": backtest_body("SmaCross", "1h", "2024-01-16", "2024-02-10"),
             "needs": ["slow"]},
        ]}),
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let kids = children(&app, &id).await;
        if kids.first().is_some_and(|k| k["status"] == "running") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{kids:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, job) = app
        .post_json(&format!("/v1/jobs/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200, "{job}");
    assert_eq!(job["status"], "cancelled", "{job}");
    let first = children(&app, &id).await[0]["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let step = app.wait(&first, Duration::from_secs(60)).await;
    assert_eq!(step["status"], "cancelled", "{step}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        children(&app, &id).await.len(),
        1,
        "no step starts after a cancel"
    );
}

/// The template's import step: the range is not stored, so the pipeline
/// imports it from the exchange (a fake one on 127.0.0.1 speaking Binance's
/// wire format) before the steps that need candles run on what it imported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_evaluate_template_imports_missing_candles_first() {
    use jesse_mcp_tests::fake_exchange::FakeExchange;
    const JAN_1: i64 = 1_704_067_200_000;
    let exchange = FakeExchange::start(&[("BTCUSDT", JAN_1, JAN_1 + 50 * 86_400_000)]).await;
    let endpoints = json!({"Binance Perpetual Futures": format!("{}/fapi", exchange.base)});
    let app = TestApp::spawn(Options {
        runners: 2,
        exchange_endpoints: Some(endpoints.to_string()),
        ..Default::default()
    })
    .await;
    let id = submit(
        &app,
        &json!({"template": "evaluate_strategy", "params": {
            "strategy": "SmaCross", "exchange": EXCHANGE, "symbol": SYMBOL, "timeframe": "1h",
            "start_date": "2024-01-20", "end_date": "2024-02-15",
            "hyperparameters": {"fast": {"min": 5, "max": 20}, "slow": {"fixed": 40}},
            "sampler": "random", "trials": 2, "seed": 8, "train_days": 14, "test_days": 6, "scenarios": 100,
            "max_pbo": 1.0, "min_efficiency": -1.0e9, "max_loss_probability": 1.0,
        }}),
    )
    .await;
    let job = app.wait(&id, Duration::from_secs(900)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let result = result_of(&app, &id).await;
    assert_eq!(step(&result, "import")["kind"], "candle_import");
    assert!(
        result["provenance"]["notes"][0]
            .as_str()
            .unwrap()
            .starts_with("Import step"),
        "{}",
        result["provenance"]
    );
    assert!(exchange.requests() > 0, "the exchange was asked");
    let import = step(&result, "import")["summary"].clone();
    assert!(import["inserted"].as_i64().unwrap() > 0, "{import}");
    // The backtests ran on what the import stored, and say so.
    let baseline = step(&result, "baseline");
    assert_eq!(baseline["summary"]["data"], "import", "{baseline}");
    for id in ["validate", "optimize", "walk_forward"] {
        assert_eq!(step(&result, id)["status"], "succeeded", "{result}");
    }
}

/// A step starts as soon as the steps it needs have ended, while an unrelated
/// slow step is still running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_starts_as_soon_as_its_needs_end() {
    let app = TestApp::spawn(Options {
        runners: 2,
        fixtures: &["Sleeper"],
        ..Default::default()
    })
    .await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-02-15", 17))
        .await;
    let quick = backtest_body("SmaCross", "1h", "2024-01-16", "2024-02-10");
    let id = submit(
        &app,
        &json!({"steps": [
            {"id": "slow", "kind": "backtest", "input": backtest_body("Sleeper", "1h", "2024-01-16", "2024-01-19")},
            {"id": "quick", "kind": "backtest", "input": quick},
            {"id": "then", "kind": "backtest", "input": quick, "needs": ["quick"]},
        ]}),
    )
    .await;
    let job = app.wait(&id, Duration::from_secs(300)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let kids = children(&app, &id).await;
    let at = |step: usize, field: &str| kids[step][field].as_str().unwrap().to_string();
    assert!(
        at(2, "started_at") < at(0, "finished_at"),
        "`then` started ({}) before the unrelated slow step ended ({})",
        at(2, "started_at"),
        at(0, "finished_at")
    );
}

/// Candles and SmaCross (fast, slow) settings of the loss-gate test: on these
/// candles (2024-01-15 → 2024-03-15, 1h) the losing one nets −10.0 % (57
/// trades; P(loss) 0.605 under the stationary bootstrap, seed 3), the fragile
/// one +7.4 % (51 trades, a −29.9 % drawdown; P(loss) 0.431).
const LOSS_GATE_CANDLES: u64 = 13;
const LOSING: (i64, i64) = (15, 30);
const FRAGILE: (i64, i64) = (10, 40);

/// The Monte Carlo loss gate measures something the backtest alone does not
/// say. Under the stationary bootstrap (the default and the templates'
/// method) a losing strategy fails it, and a positive but fragile edge gets a
/// probability of a loss strictly between 0 and 1 (under the old default, a
/// shuffle, it could only be 0 or 1). Under shuffle the value is null, and a
/// gate on it fails with the reason: a pipeline never passes on a statistic
/// that was not computed. Every gate line of the report says what it measures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monte_carlo_loss_gate_fails_a_loser_and_never_passes_on_a_shuffle() {
    let app = TestApp::spawn(Options {
        runners: 2,
        ..Default::default()
    })
    .await;
    app.import_csv(&synthetic_csv(
        "2024-01-01",
        "2024-03-20",
        LOSS_GATE_CANDLES,
    ))
    .await;
    let backtest = |fast: i64, slow: i64| {
        let mut body = backtest_body("SmaCross", "1h", "2024-01-15", "2024-03-15");
        body["hyperparameters"] = json!({"fast": fast, "slow": slow});
        body
    };
    let losing = app.submit(&backtest(LOSING.0, LOSING.1)).await;
    let fragile = app.submit(&backtest(FRAGILE.0, FRAGILE.1)).await;
    for id in [&losing, &fragile] {
        assert_eq!(
            app.wait(id, Duration::from_secs(300)).await["status"],
            "succeeded"
        );
    }
    let net = |r: &Value| r["metrics"]["net_profit_percentage"].as_f64().unwrap();
    assert!(net(&result_of(&app, &losing).await) < 0.0);
    assert!(net(&result_of(&app, &fragile).await) > 0.0);

    let gated = |name: &str, source: &str, method: Option<&str>, gate: &str| {
        let mut input = json!({"mode": "trades", "source": source, "scenarios": 1000, "seed": 3});
        if let Some(m) = method {
            input["method"] = json!(m);
        }
        json!({"name": name, "steps": [{"id": "mc", "kind": "monte_carlo", "input": input, "gate": gate}]})
    };
    let run = |body: Value| {
        let app = &app;
        async move {
            let id = submit(app, &body).await;
            let job = app.wait(&id, Duration::from_secs(300)).await;
            assert_eq!(job["status"], "succeeded", "{job}");
            let result = result_of(app, &id).await;
            let mc = result_of(app, step(&result, "mc")["job_id"].as_str().unwrap()).await;
            (result, mc)
        }
    };

    // A losing strategy fails the template's gate (P(loss) ≤ 0.5) on the default method.
    let (result, mc) = run(gated(
        "loser",
        &losing,
        None,
        "mc.probability_of_loss <= 0.5",
    ))
    .await;
    assert_eq!(mc["setup"]["method"], "stationary_bootstrap");
    let verdict = &result["verdict"];
    assert_eq!(verdict["outcome"], "rejected", "{verdict}");
    let p = verdict["failed_gate"]["value"].as_f64().unwrap();
    assert!(p > 0.5, "{verdict}");
    assert!(
        verdict["reason"]
            .as_str()
            .unwrap()
            .contains("which is not <= 0.5"),
        "{verdict}"
    );
    let report = result["report"].as_str().unwrap();
    assert!(
        report.contains(
            "P(loss): share of 1,000 scenarios whose compounded total return is below 0, under stationary \
bootstrap of trade returns, mean block"
        ),
        "{report}"
    );

    // A positive but fragile edge: some scenarios lose, not all.
    let (result, mc) = run(gated(
        "fragile",
        &fragile,
        Some("stationary_bootstrap"),
        "mc.probability_of_loss < 1",
    ))
    .await;
    let p = mc["probability_of_loss"].as_f64().unwrap();
    assert!(p > 0.0 && p < 1.0, "P(loss) {p}");
    assert_eq!(
        result["verdict"]["outcome"], "passed",
        "{}",
        result["verdict"]
    );
    assert_eq!(result["gates"][0]["value"], json!(p));

    // Shuffle: the total cannot change, so no probability of a loss, and even
    // the loosest gate on it fails, with the reason.
    let (result, mc) = run(gated(
        "shuffled",
        &fragile,
        Some("shuffle"),
        "mc.probability_of_loss <= 1",
    ))
    .await;
    assert_eq!(mc["probability_of_loss"], Value::Null, "{mc}");
    let verdict = &result["verdict"];
    assert_eq!(verdict["outcome"], "rejected", "{verdict}");
    assert_eq!(verdict["failed_gate"]["value"], Value::Null);
    let reason = verdict["reason"].as_str().unwrap();
    assert!(
        reason.contains("mc.probability_of_loss is undefined")
            && reason.contains("reordering cannot change the compounded total return"),
        "{reason}"
    );
    // The drawdown is closed-trade, with Jesse's mark-to-market one beside it.
    let fragile_metrics = result_of(&app, &fragile).await["metrics"].clone();
    assert_eq!(
        mc["metrics"]["closed_trade_max_drawdown"]["original_mark_to_market"],
        fragile_metrics["max_drawdown"]
    );
    assert!(
        result["report"]
            .as_str()
            .unwrap()
            .contains("under shuffle (reordering) of trade returns")
    );
}
