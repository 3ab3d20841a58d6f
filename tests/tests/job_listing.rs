//! Jobs that say what they are: every listed job shows its subject (strategy,
//! exchange, symbol, timeframe, range in ms and RFC 3339, hyperparameters) and
//! its tags, over REST and MCP; listings filter by strategy, symbol and tag;
//! tags are bounded and part of an idempotent request; hyperparameter values
//! are checked at submit against what the strategy declares (its literal list,
//! or what its deep validation saw), for backtests, batches, studies and the
//! kinds built on them; a failed deep validation shows in `errors`.

use std::time::Duration;

use jesse_mcp_tests::*;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};

const ETH: &str = "ETH-USDT";

fn ms(day: &str) -> i64 {
    jesse_mcp_core::time::parse_day(day).unwrap()
}

async fn app_with_candles(start_worker: bool) -> TestApp {
    let app = TestApp::spawn(Options {
        start_worker,
        ..Default::default()
    })
    .await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-02-20", 21))
        .await;
    let path = format!(
        "/v1/candles/csv?exchange={}&symbol={ETH}",
        EXCHANGE.replace(' ', "%20")
    );
    let (status, body) = app
        .post_raw(
            &path,
            "text/csv",
            synthetic_csv("2024-01-01", "2024-02-20", 22),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app
}

async fn accepted(app: &TestApp, path: &str, body: &Value) -> String {
    let (status, answer) = app.post_json(path, body).await;
    assert_eq!(status, 202, "{path}: {answer}");
    answer["job_id"].as_str().unwrap().to_string()
}

async fn refused(app: &TestApp, path: &str, body: &Value, code: &str) -> Value {
    let (status, answer) = app.post_json(path, body).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some(code)),
        "{path} {body}: {answer}"
    );
    answer["error"].clone()
}

async fn listed(app: &TestApp, query: &str) -> Vec<Value> {
    let (status, list) = app.get(&format!("/v1/jobs?limit=200{query}")).await;
    assert_eq!(status, 200, "{query}: {list}");
    list["jobs"].as_array().unwrap().clone()
}

fn ids(jobs: &[Value]) -> Vec<String> {
    jobs.iter()
        .map(|j| j["job_id"].as_str().unwrap().to_string())
        .collect()
}

fn find<'a>(jobs: &'a [Value], id: &str) -> &'a Value {
    jobs.iter()
        .find(|j| j["job_id"] == id)
        .unwrap_or_else(|| panic!("{id} not listed"))
}

fn study(extra: Value) -> Value {
    let mut body = json!({
        "strategy": "SmaCross", "exchange": EXCHANGE, "symbol": SYMBOL, "timeframe": "1h",
        "training": {"start_date": "2024-01-12", "end_date": "2024-02-01"},
        "testing": {"start_date": "2024-02-01", "end_date": "2024-02-15"},
        "sampler": "random", "trials": 4, "seed": 1,
        "hyperparameters": {"fast": {"min": 6, "max": 20}, "slow": {"options": [40, 60]}, "risk": {"fixed": 0.5}},
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_show_subjects_and_tags_and_filter_by_them() {
    // No worker: every job stays queued, its subject comes from its plan alone.
    let app = app_with_candles(false).await;

    let mut backtest = backtest_body("SmaCross", "1h", "2024-01-20", "2024-02-10");
    backtest["hyperparameters"] = json!({"fast": 12});
    backtest["tags"] = json!(["exp-1", "baseline", "exp-1"]);
    let bt = accepted(&app, "/v1/backtests", &backtest).await;

    let mut rsi = backtest_body("RsiReversion", "4h", "2024-01-15", "2024-02-01");
    rsi["symbol"] = json!(ETH);
    rsi["warm_up_candles"] = json!(30);
    rsi["tags"] = json!(["exp-2"]);
    let rsi_id = accepted(&app, "/v1/backtests", &rsi).await;

    let mut base = backtest_body("SmaCross", "1h", "2024-01-20", "2024-02-10");
    base["hyperparameters"] = json!({"slow": 40});
    let batch = accepted(
        &app,
        "/v1/backtests/batch",
        &json!({"base": base, "grid": {"hyperparameters": {"fast": [8, 16]}, "symbols": [SYMBOL, ETH]},
                "tags": ["exp-1"]}),
    )
    .await;
    let opt = accepted(
        &app,
        "/v1/optimizations",
        &study(json!({"tags": ["exp-1", "study"]})),
    )
    .await;
    let wf = accepted(
        &app,
        "/v1/walk-forward",
        &json!({
            "strategy": "SmaCross", "exchange": EXCHANGE, "symbol": SYMBOL, "timeframe": "1h",
            "start_date": "2024-01-12", "end_date": "2024-02-19", "train_days": 20, "test_days": 10,
            "sampler": "random", "trials": 3, "seed": 1,
            "hyperparameters": {"fast": {"min": 6, "max": 20}, "slow": {"fixed": 40}, "risk": {"fixed": 0.5}},
        }),
    )
    .await;
    let mut source = backtest_body("SmaCross", "1h", "2024-01-20", "2024-02-10");
    source["hyperparameters"] = json!({"fast": 10});
    let mc = accepted(
        &app,
        "/v1/monte-carlo",
        &json!({"mode": "candles", "source": source, "scenarios": 2, "seed": 3, "tags": ["robust"]}),
    )
    .await;
    let mut significance = backtest_body("SmaCross", "1h", "2024-01-20", "2024-02-10");
    significance["n_simulations"] = json!(200);
    let sig = accepted(&app, "/v1/significance-tests", &significance).await;
    let pairs = accepted(
        &app,
        "/v1/pairs/backtest",
        &json!({"symbols": [SYMBOL, ETH], "exchange": EXCHANGE, "timeframe": "1h",
                "start_date": "2024-01-20", "end_date": "2024-02-10",
                "hyperparameters": {"hedge_method": "ols"}, "tags": ["pairs"]}),
    )
    .await;

    let jobs = listed(&app, "").await;

    let job = find(&jobs, &bt);
    let subject = &job["subject"];
    assert_eq!(subject["strategy"], "SmaCross", "{job}");
    assert_eq!(subject["exchange"], EXCHANGE);
    assert_eq!(subject["symbol"], SYMBOL);
    assert_eq!(subject["timeframe"], "1h");
    assert_eq!(subject["range"]["start"], ms("2024-01-20"));
    assert_eq!(subject["range"]["end"], ms("2024-02-10"));
    assert_eq!(subject["range"]["start_date"], "2024-01-20T00:00:00.000Z");
    assert_eq!(subject["range"]["end_date"], "2024-02-10T00:00:00.000Z");
    assert_eq!(subject["hyperparameters"], json!({"fast": 12}));
    assert_eq!(
        job["tags"],
        json!(["exp-1", "baseline"]),
        "a repeated tag is kept once"
    );
    assert!(
        subject.get("symbols").is_none() && subject.get("strategies").is_none(),
        "fields that do not apply are left out: {subject}"
    );

    let subject = &find(&jobs, &rsi_id)["subject"];
    assert_eq!(
        (
            &subject["strategy"],
            &subject["symbol"],
            &subject["timeframe"]
        ),
        (&json!("RsiReversion"), &json!(ETH), &json!("4h"))
    );
    assert!(
        subject.get("hyperparameters").is_none(),
        "defaults only: {subject}"
    );

    let job = find(&jobs, &batch);
    let subject = &job["subject"];
    assert_eq!(subject["strategy"], "SmaCross", "{job}");
    assert_eq!(subject["symbols"], json!([SYMBOL, ETH]));
    assert!(subject.get("symbol").is_none());
    assert_eq!(
        subject["hyperparameters"],
        json!({"slow": 40, "fast": {"values": [8, 16]}})
    );
    assert_eq!(job["tags"], json!(["exp-1"]));

    let subject = &find(&jobs, &opt)["subject"];
    assert_eq!(subject["range"]["start"], ms("2024-01-12"), "{subject}");
    assert_eq!(
        subject["range"]["end"],
        ms("2024-02-15"),
        "training and testing"
    );
    assert_eq!(
        subject["hyperparameters"],
        json!({"fast": {"min": 6, "max": 20, "step": 1}, "slow": {"options": [40, 60]}, "risk": 0.5}),
        "the request's range with the declared step"
    );

    let subject = &find(&jobs, &wf)["subject"];
    assert_eq!(subject["strategy"], "SmaCross", "{subject}");
    assert_eq!(subject["range"]["start_date"], "2024-01-12T00:00:00.000Z");
    assert_eq!(
        subject["hyperparameters"]["fast"],
        json!({"min": 6, "max": 20, "step": 1})
    );

    for (id, hyperparameters) in [(&mc, json!({"fast": 10})), (&sig, Value::Null)] {
        let subject = &find(&jobs, id)["subject"];
        assert_eq!(subject["strategy"], "SmaCross", "{subject}");
        assert_eq!(subject["symbol"], SYMBOL);
        assert_eq!(subject["range"]["end"], ms("2024-02-10"));
        assert_eq!(
            subject
                .get("hyperparameters")
                .cloned()
                .unwrap_or(Value::Null),
            hyperparameters
        );
    }

    let subject = &find(&jobs, &pairs)["subject"];
    assert_eq!(subject["strategy"], "PairsTrading", "{subject}");
    assert_eq!(subject["symbols"], json!([SYMBOL, ETH]));
    assert_eq!(subject["hyperparameters"]["hedge_method"], "ols");

    // job_get shows the same.
    let (_, job) = app.get(&format!("/v1/jobs/{bt}")).await;
    assert_eq!(job["tags"], json!(["exp-1", "baseline"]));
    assert_eq!(job["subject"]["hyperparameters"], json!({"fast": 12}));

    // Filters, alone and with the others.
    let mut tagged = ids(&listed(&app, "&tag=exp-1").await);
    tagged.sort();
    let mut expected = vec![bt.clone(), batch.clone(), opt.clone()];
    expected.sort();
    assert_eq!(tagged, expected);
    assert_eq!(
        ids(&listed(&app, "&tag=exp-1&kind=optimization").await),
        vec![opt.clone()]
    );
    assert!(listed(&app, "&tag=nobody").await.is_empty());
    let eth = ids(&listed(&app, &format!("&symbol={ETH}")).await);
    for id in [&rsi_id, &batch, &pairs] {
        assert!(eth.contains(id), "{id} trades {ETH}: {eth:?}");
    }
    assert!(!eth.contains(&bt) && !eth.contains(&opt));
    let rsi_only = ids(&listed(&app, "&strategy=RsiReversion").await);
    assert_eq!(rsi_only, vec![rsi_id.clone()]);
    let sma_btc = ids(&listed(
        &app,
        &format!("&strategy=SmaCross&symbol={SYMBOL}&tag=baseline"),
    )
    .await);
    assert_eq!(sma_btc, vec![bt.clone()]);
    let (status, error) = app.get(&format!("/v1/jobs?tag={}", "x".repeat(65))).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (422, Some("invalid_filter")),
        "{error}"
    );
    // Paging keeps the filter.
    let (_, page) = app.get("/v1/jobs?tag=exp-1&limit=2").await;
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let (_, rest) = app
        .get(&format!("/v1/jobs?tag=exp-1&limit=2&cursor={cursor}"))
        .await;
    assert_eq!(rest["jobs"].as_array().unwrap().len(), 1, "{rest}");
    assert_eq!(rest["next_cursor"], Value::Null);

    // Tags are bounded, on every kind, with a specific 422.
    let before = app.job_count().await;
    let too_many: Vec<String> = (0..17).map(|i| format!("t{i}")).collect();
    for (tags, says) in [
        (json!(too_many), "at most 16"),
        (json!(["x".repeat(65)]), "1 to 64"),
        (json!([""]), "1 to 64"),
        (json!("exp-1"), "a list of strings"),
        (json!([7]), "tags are strings"),
    ] {
        let mut body = backtest.clone();
        body["tags"] = tags.clone();
        let error = refused(&app, "/v1/backtests", &body, "invalid_tags").await;
        assert!(
            error["message"].as_str().unwrap().contains(says),
            "{tags}: {error}"
        );
        assert_eq!(error["details"]["field"], "tags");
        let error = refused(
            &app,
            "/v1/optimizations",
            &study(json!({"tags": tags})),
            "invalid_tags",
        )
        .await;
        assert_eq!(error["details"]["max_tags"], 16);
    }
    assert_eq!(app.job_count().await, before, "nothing was queued");

    // Tags are part of an idempotent request.
    let send = |tags: Value| {
        let mut body = backtest.clone();
        body["tags"] = tags;
        app.client
            .post(app.url("/v1/backtests"))
            .header("Idempotency-Key", "listing-key")
            .json(&body)
            .send()
    };
    let first: Value = send(json!(["a"])).await.unwrap().json().await.unwrap();
    let again: Value = send(json!(["a"])).await.unwrap().json().await.unwrap();
    assert_eq!(first["job_id"], again["job_id"]);
    assert_eq!(again["created"], false);
    let other = send(json!(["b"])).await.unwrap();
    assert_eq!(other.status().as_u16(), 409);
    let other: Value = other.json().await.unwrap();
    assert_eq!(other["error"]["code"], "idempotency_key_reused", "{other}");

    // Every submit's schema has `tags`, on REST (OpenAPI) and MCP alike.
    let (_, document) = app.get("/v1/openapi.json").await;
    for path in [
        "/v1/backtests",
        "/v1/backtests/batch",
        "/v1/optimizations",
        "/v1/walk-forward",
        "/v1/monte-carlo",
        "/v1/significance-tests",
        "/v1/pairs/backtest",
    ] {
        let schema = &document["paths"][path]["post"]["requestBody"]["content"]["application/json"]
            ["schema"];
        assert_eq!(
            schema["properties"]["tags"]["maxItems"], 16,
            "{path}: {schema}"
        );
    }

    // MCP: job_list filters and shows the same; a tool submit takes tags.
    let client = ()
        .serve(StreamableHttpClientTransport::from_uri(format!(
            "{}/mcp",
            app.base
        )))
        .await
        .expect("MCP client");
    let call = |tool: &str, args: Value| {
        client.call_tool(
            CallToolRequestParams::new(tool.to_string())
                .with_arguments(args.as_object().unwrap().clone()),
        )
    };
    let tools = client.list_all_tools().await.unwrap();
    let backtest_tool = tools.iter().find(|t| t.name == "backtest").unwrap();
    assert!(
        backtest_tool.input_schema["properties"]
            .as_object()
            .unwrap()
            .contains_key("tags")
    );
    let mut body = backtest_body("SmaCross", "1h", "2024-01-20", "2024-02-10");
    body["tags"] = json!(["via-mcp"]);
    let submitted = call("backtest", body).await.unwrap();
    assert_eq!(submitted.is_error, Some(false), "{submitted:?}");
    let answer = call("job_list", json!({"tag": "via-mcp"}))
        .await
        .unwrap()
        .structured_content
        .unwrap();
    let jobs = answer["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 1, "{answer}");
    assert_eq!(jobs[0]["subject"]["strategy"], "SmaCross");
    assert_eq!(jobs[0]["subject"]["range"]["start"], ms("2024-01-20"));
    let answer = call(
        "job_list",
        json!({"strategy": "RsiReversion", "symbol": ETH}),
    )
    .await
    .unwrap()
    .structured_content
    .unwrap();
    assert_eq!(
        ids(answer["jobs"].as_array().unwrap()),
        vec![rsi_id.clone()]
    );
    let answer = call("job_get", json!({"job_id": batch}))
        .await
        .unwrap()
        .structured_content
        .unwrap();
    assert_eq!(answer["tags"], json!(["exp-1"]), "{answer}");
    let bad = call("backtest", json!({"tags": [""]})).await.unwrap();
    assert_eq!(bad.is_error, Some(true));
    client.cancel().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyperparameter_values_are_checked_against_the_declaration() {
    let app = app_with_candles(false).await;
    let body = |hyperparameters: Value| {
        let mut body = backtest_body("SmaCross", "1h", "2024-01-20", "2024-02-10");
        body["hyperparameters"] = hyperparameters;
        body
    };
    let before = app.job_count().await;

    // Backtests: out of range, wrong type, not a whole number, unknown option.
    let error = refused(
        &app,
        "/v1/backtests",
        &body(json!({"fast": 1000})),
        "invalid_hyperparameter",
    )
    .await;
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("hyperparameters.fast = 1000")
            && message.contains("above the maximum 50")
            && message.contains("fast as an int from 5 to 50"),
        "{message}"
    );
    assert_eq!(error["details"]["field"], "hyperparameters.fast");
    assert_eq!(error["details"]["value"], 1000);
    assert_eq!(error["details"]["declared"]["max"], 50);
    for (hyperparameters, says) in [
        (json!({"fast": "abc"}), "is not a number"),
        (json!({"fast": 12.5}), "not a whole number"),
        (json!({"fast": 20.0}), "written as a float"),
        (json!({"fast": true}), "is not a number"),
        (json!({"fast": 4}), "below the minimum 5"),
        (json!({"risk": 0.05}), "below the minimum 0.1"),
        (json!({"slow": 40, "risk": 1.5}), "above the maximum 1.0"),
    ] {
        let error = refused(
            &app,
            "/v1/backtests",
            &body(hyperparameters.clone()),
            "invalid_hyperparameter",
        )
        .await;
        assert!(
            error["message"].as_str().unwrap().contains(says),
            "{hyperparameters}: {error}"
        );
    }
    let mut pairs = backtest_body("PairsTrading", "1h", "2024-01-20", "2024-02-10");
    pairs["hyperparameters"] = json!({"hedge_method": "median"});
    let error = refused(&app, "/v1/backtests", &pairs, "invalid_hyperparameter").await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains(r#"with options ["ols","kalman","fixed"]"#),
        "{error}"
    );
    refused(
        &app,
        "/v1/pairs/backtest",
        &json!({"symbols": [SYMBOL, ETH], "exchange": EXCHANGE, "timeframe": "1h",
                "start_date": "2024-01-20", "end_date": "2024-02-10", "hyperparameters": {"lookback": 5}}),
        "invalid_hyperparameter",
    )
    .await;

    // Batches: a grid value or a variant out of range names the variant.
    let error = refused(
        &app,
        "/v1/backtests/batch",
        &json!({"base": body(json!({})), "grid": {"hyperparameters": {"fast": [8, 1000]}}}),
        "invalid_hyperparameter",
    )
    .await;
    assert_eq!(error["details"]["variant"], 1, "{error}");
    assert!(error["message"].as_str().unwrap().starts_with("variant 1:"));
    refused(
        &app,
        "/v1/backtests/batch",
        &json!({"base": body(json!({})), "variants": [{"hyperparameters": {"slow": "x"}}]}),
        "invalid_hyperparameter",
    )
    .await;

    // Studies: a range outside the declared bounds, an option or fixed value it does not take.
    for (space, says) in [
        (
            json!({"fast": {"min": 1, "max": 30}}),
            "below the minimum 5",
        ),
        (
            json!({"fast": {"min": 10, "max": 60}}),
            "above the maximum 50",
        ),
        (
            json!({"slow": {"options": [40, 1000]}}),
            "above the maximum 200",
        ),
        (json!({"risk": {"fixed": "high"}}), "is not a number"),
    ] {
        let error = refused(
            &app,
            "/v1/optimizations",
            &study(json!({"hyperparameters": space})),
            "invalid_hyperparameter",
        )
        .await;
        assert!(
            error["message"].as_str().unwrap().contains(says),
            "{space}: {error}"
        );
        assert!(
            error["details"]["field"]
                .as_str()
                .unwrap()
                .starts_with("hyperparameters.")
        );
    }
    refused(
        &app,
        "/v1/walk-forward",
        &json!({
            "strategy": "SmaCross", "exchange": EXCHANGE, "symbol": SYMBOL, "timeframe": "1h",
            "start_date": "2024-01-12", "end_date": "2024-02-19", "train_days": 20, "test_days": 10,
            "hyperparameters": {"fast": {"min": 6, "max": 51}},
        }),
        "invalid_hyperparameter",
    )
    .await;
    refused(
        &app,
        "/v1/monte-carlo",
        &json!({"mode": "candles", "source": body(json!({"fast": 0}))}),
        "invalid_hyperparameter",
    )
    .await;
    assert_eq!(app.job_count().await, before, "nothing was queued");

    // Valid values stay valid: bounds inclusive, ints for floats (an int spelled
    // 20.0 is refused above: Jesse would hand the strategy a float).
    for hyperparameters in [
        json!({"fast": 5, "slow": 200}),
        json!({"fast": 20}),
        json!({"risk": 1}),
    ] {
        accepted(&app, "/v1/backtests", &body(hyperparameters)).await;
    }
    accepted(
        &app,
        "/v1/optimizations",
        &study(json!({"hyperparameters": {"fast": {"min": 5, "max": 50}, "slow": {"options": [20, 200]}}})),
    )
    .await;
}

/// A strategy whose `hyperparameters()` is computed: static checks cannot read it.
const COMPUTED: &str = r#"from jesse.strategies import Strategy
import jesse.indicators as ta
from jesse import utils


class Computed(Strategy):
    def hyperparameters(self):
        periods = {'period': (5, 50, 20)}
        return [{'name': name, 'type': int, 'min': low, 'max': high, 'default': default}
                for name, (low, high, default) in periods.items()]

    def should_long(self) -> bool:
        return self.price > ta.sma(self.candles, self.hp['period'])

    def go_long(self):
        qty = utils.size_to_qty(self.balance * 0.5, self.price, fee_rate=self.fee_rate)
        self.buy = qty, self.price

    def update_position(self):
        if self.price < ta.sma(self.candles, self.hp['period']):
            self.liquidate()
"#;

/// Passes static checks, fails when imported.
const BROKEN_IMPORT: &str = r#"from jesse.strategies import Strategy
import jesse_mcp_no_such_module


class Unloadable(Strategy):
    def should_long(self) -> bool:
        return False

    def go_long(self):
        pass
"#;

async fn write(app: &TestApp, name: &str, code: &str) -> Value {
    let response = app
        .client
        .put(app.url(&format!("/v1/strategies/{name}")))
        .json(&json!({"code": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let written: Value = response.json().await.unwrap();
    let validation = written["deep_validation"]["job_id"].as_str().unwrap();
    let job = app.wait(validation, Duration::from_secs(120)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (_, strategy) = app.get(&format!("/v1/strategies/{name}")).await;
    strategy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_validation_declares_computed_hyperparameters_and_its_errors_show() {
    let app = app_with_candles(true).await;
    let body = |hyperparameters: Value| {
        let mut body = backtest_body("Computed", "1h", "2024-01-20", "2024-02-10");
        body["hyperparameters"] = hyperparameters;
        body
    };

    let strategy = write(&app, "Computed", COMPUTED).await;
    assert_eq!(
        strategy["hyperparameters"],
        Value::Null,
        "not literal: {strategy}"
    );
    assert_eq!(
        strategy["deep_validation"]["hyperparameters"][0]["max"], 50,
        "{strategy}"
    );
    let error = refused(
        &app,
        "/v1/backtests",
        &body(json!({"period": 1000})),
        "invalid_hyperparameter",
    )
    .await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("period as an int from 5 to 50"),
        "{error}"
    );
    refused(
        &app,
        "/v1/backtests",
        &body(json!({"period": "abc"})),
        "invalid_hyperparameter",
    )
    .await;
    refused(
        &app,
        "/v1/backtests",
        &body(json!({"perod": 10})),
        "unknown_hyperparameter",
    )
    .await;
    let mut optimization = study(
        json!({"strategy": "Computed", "hyperparameters": {"period": {"min": 2, "max": 30}}}),
    );
    refused(
        &app,
        "/v1/optimizations",
        &optimization,
        "invalid_hyperparameter",
    )
    .await;
    // The declared range is the search space's default, types included.
    optimization["hyperparameters"] = json!({});
    let study_id = accepted(&app, "/v1/optimizations", &optimization).await;
    let (status, _) = app
        .post_json(&format!("/v1/jobs/{study_id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200);
    let id = accepted(&app, "/v1/backtests", &body(json!({"period": 10}))).await;
    let job = app.wait(&id, Duration::from_secs(120)).await;
    assert_eq!(job["status"], "succeeded", "{job}");

    // A deep validation that failed shows its errors in `errors` too.
    let strategy = write(&app, "Unloadable", BROKEN_IMPORT).await;
    assert_eq!(strategy["valid"], false, "{strategy}");
    assert_eq!(strategy["deep_validation"]["valid"], false);
    let errors = strategy["errors"].as_array().unwrap();
    let deep: Vec<&Value> = errors.iter().filter(|e| e["check"] == "deep").collect();
    assert!(!deep.is_empty(), "{strategy}");
    assert!(
        deep[0]["message"]
            .as_str()
            .unwrap()
            .contains("jesse_mcp_no_such_module"),
        "{strategy}"
    );
    let (_, list) = app.get("/v1/strategies").await;
    let listed = list["strategies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "Unloadable")
        .unwrap();
    assert_eq!(listed["errors"], strategy["errors"]);
    let (_, computed) = app.get("/v1/strategies/Computed").await;
    assert_eq!(
        computed["errors"],
        json!([]),
        "a passing deep validation adds none"
    );
}

/// The store's side on both engines: subjects and labels recorded at insert
/// (children too, a trial inheriting its parent's), filters combined, tags kept.
async fn labels_are_recorded_and_filtered(store: &jesse_mcp_core::store::Store) {
    use jesse_mcp_core::jobs::new_job_id;
    use jesse_mcp_core::store::{Inserted, JobFilter, NewChild, NewJob};

    let plan = |strategy: &str, symbols: &[&str]| {
        let routes: Vec<Value> = symbols
            .iter()
            .map(|s| json!({"strategy": strategy, "symbol": s, "timeframe": "1h"}))
            .collect();
        json!({"exchange": EXCHANGE, "routes": routes, "data_routes": [], "config": {},
               "start_ms": ms("2024-01-02"), "end_ms": ms("2024-01-05"), "warmup_minutes": 0,
               "symbols": symbols, "hyperparameters": {"fast": 9}, "fast_mode": false,
               "include_trades": false, "include_equity_curve": false, "strategies": []})
    };
    let insert = |params: Value, tags: Vec<String>, key: Option<&'static str>| async move {
        let id = new_job_id();
        let inserted = store
            .insert_tagged_job(
                NewJob {
                    id: &id,
                    kind: "backtest",
                    params: &params,
                    idempotency_key: key,
                },
                &tags,
            )
            .await
            .unwrap();
        match inserted {
            Inserted::Created(job) | Inserted::Existing(job) => job,
        }
    };
    let tags = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let single = insert(plan("SmaCross", &[SYMBOL]), tags(&["a", "b"]), Some("k1")).await;
    assert_eq!(single.tags, tags(&["a", "b"]));
    assert_eq!(single.subject.strategy.as_deref(), Some("SmaCross"));
    assert_eq!(
        single.subject.range.as_ref().unwrap().start,
        ms("2024-01-02")
    );
    let again = insert(plan("SmaCross", &[SYMBOL]), tags(&["a", "b"]), Some("k1")).await;
    assert_eq!(again.id, single.id, "an idempotent insert adds no labels");
    let multi = insert(plan("RsiReversion", &[SYMBOL, ETH]), tags(&["b"]), None).await;
    assert_eq!(
        multi.subject.symbols,
        Some(vec![SYMBOL.to_string(), ETH.to_string()])
    );

    // A study's trials (plans that name nothing) show the parent's subject.
    let parent_plan = json!({"training": plan("SmaCross", &[ETH]), "testing": plan("SmaCross", &[ETH]),
                             "space": [{"name": "fast", "type": "int", "low": 5.0, "high": 9.0}], "fixed": {}});
    let id = new_job_id();
    store
        .insert_tagged_job(
            NewJob {
                id: &id,
                kind: "optimization",
                params: &parent_plan,
                idempotency_key: None,
            },
            &tags(&["study"]),
        )
        .await
        .unwrap();
    let children: Vec<NewChild> = (0..3)
        .map(|index| NewChild {
            id: new_job_id(),
            index,
            params: json!({"trial": index}),
        })
        .collect();
    assert_eq!(
        store
            .insert_children(&id, "optimization_trial", &children)
            .await
            .unwrap(),
        3
    );
    // Recorded again (a resumed parent): nothing new, no duplicate labels.
    let again: Vec<NewChild> = (0..3)
        .map(|index| NewChild {
            id: new_job_id(),
            index,
            params: json!({"trial": index}),
        })
        .collect();
    assert_eq!(
        store
            .insert_children(&id, "optimization_trial", &again)
            .await
            .unwrap(),
        0
    );

    let list = |filter: JobFilter| async move {
        store
            .list_jobs(&JobFilter {
                limit: 50,
                ..filter
            })
            .await
            .unwrap()
    };
    let by = |strategy: Option<&str>, symbol: Option<&str>, tag: Option<&str>| JobFilter {
        strategy: strategy.map(str::to_string),
        symbol: symbol.map(str::to_string),
        tag: tag.map(str::to_string),
        ..JobFilter::default()
    };
    let count = |jobs: &Vec<jesse_mcp_core::store::JobRecord>| jobs.len();
    assert_eq!(count(&list(by(None, None, Some("b"))).await), 2);
    assert_eq!(count(&list(by(None, None, Some("a"))).await), 1);
    assert_eq!(
        count(&list(by(Some("RsiReversion"), Some(ETH), None)).await),
        1
    );
    assert_eq!(
        count(&list(by(Some("RsiReversion"), None, Some("a"))).await),
        0
    );
    let eth = list(by(Some("SmaCross"), Some(ETH), None)).await;
    assert_eq!(count(&eth), 4, "the study and its three trials");
    let trial = eth.iter().find(|j| j.kind == "optimization_trial").unwrap();
    assert_eq!(trial.subject.symbol.as_deref(), Some(ETH));
    assert_eq!(trial.subject.hyperparameters, None, "a trial draws its own");
    assert!(trial.tags.is_empty());
    let study = eth.iter().find(|j| j.kind == "optimization").unwrap();
    assert_eq!(study.tags, tags(&["study"]));
    assert_eq!(study.params, Value::Null, "a listing reads no plans");
    let children = list(JobFilter {
        parent_id: Some(id.clone()),
        ..by(None, Some(ETH), None)
    })
    .await;
    assert_eq!(count(&children), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_labels_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = jesse_mcp_core::store::Store::open(dir.path(), None)
        .await
        .unwrap();
    labels_are_recorded_and_filtered(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_labels_on_postgres() {
    let url = jesse_mcp_tests::backends::fresh_postgres().await;
    let store = jesse_mcp_core::store::Store::open(&std::env::temp_dir(), Some(&url))
        .await
        .unwrap();
    labels_are_recorded_and_filtered(&store).await;
}
