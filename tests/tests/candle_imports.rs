//! Candle imports through Jesse's own drivers against a fake exchange on
//! 127.0.0.1 (real Binance and Bybit wire formats): pagination, a 429 with a
//! retry hint and a 5xx in the middle, unknown symbols, ranges without data,
//! re-runs that fetch nothing twice; then gap reports, CSV export and delete.

use std::time::Duration;

use jesse_mcp_tests::fake_exchange::{Failure, FakeExchange};
use jesse_mcp_tests::*;
use serde_json::{Value, json};

const DAY: i64 = 86_400_000;
const JAN_1: i64 = 1_704_067_200_000;

async fn app_with(exchange: &FakeExchange) -> TestApp {
    let endpoints = json!({
        "Binance Spot": format!("{}/api", exchange.base),
        "Binance Perpetual Futures": format!("{}/fapi", exchange.base),
        "Bybit USDT Perpetual": exchange.base,
    });
    TestApp::spawn(Options {
        exchange_endpoints: Some(endpoints.to_string()),
        ..Default::default()
    })
    .await
}

/// A forward HTTP proxy on 127.0.0.1 (absolute-form requests, as requests
/// sends them to an `http_proxy`) that records every URL it is asked for and
/// forwards it without following redirects.
struct ForwardProxy {
    base: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl ForwardProxy {
    async fn start() -> ForwardProxy {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .unwrap();
        let log = seen.clone();
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let (client, log) = (client.clone(), log.clone());
            async move {
                let url = request.uri().to_string();
                log.lock().unwrap().push(url.clone());
                let answer = client.get(&url).send().await.unwrap();
                let mut response =
                    axum::response::Response::builder().status(answer.status().as_u16());
                for (name, value) in answer.headers() {
                    if name != "transfer-encoding" && name != "content-length" {
                        response = response.header(name.as_str(), value.as_bytes());
                    }
                }
                response
                    .body(axum::body::Body::from(answer.bytes().await.unwrap()))
                    .unwrap()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        ForwardProxy { base, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

async fn import(app: &TestApp, body: Value) -> Value {
    let (status, answer) = app.post_json("/v1/candles/imports", &body).await;
    assert_eq!(status, 202, "{answer}");
    app.wait(answer["job_id"].as_str().unwrap(), Duration::from_secs(120))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binance_spot_import_paginates_survives_429_and_5xx_and_never_duplicates() {
    let exchange = FakeExchange::start(&[("BTCUSDT", JAN_1, JAN_1 + 2 * DAY)]).await;
    exchange.fail_request(
        2,
        Failure::RateLimited {
            retry_after_secs: 1,
        },
    );
    exchange.fail_request(4, Failure::ServerError);
    let app = app_with(&exchange).await;

    let request = json!({"exchange": "Binance Spot", "symbol": "BTC-USDT", "start_date": "2023-12-30", "end_date": "2024-01-04"});
    let job = import(&app, request.clone()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["kind"], "candle_import");
    let report = &job["summary"];
    assert_eq!(report["inserted"], 2880, "{report}");
    assert_eq!(report["listing_start"], JAN_1);
    assert!(
        exchange.requests() >= 6,
        "the 429 and the 503 were retried: {} requests",
        exchange.requests()
    );
    let gaps = report["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 2, "{report}");
    assert_eq!(
        (gaps[0]["start"].as_i64(), gaps[0]["end"].as_i64()),
        (Some(JAN_1 - 2 * DAY), Some(JAN_1))
    );
    assert_eq!(
        (gaps[1]["start"].as_i64(), gaps[1]["end"].as_i64()),
        (Some(JAN_1 + 2 * DAY), Some(JAN_1 + 3 * DAY))
    );
    assert_eq!(report["coverage_pct"], 40.0);
    // The import's result is its report, like every kind's result.
    let (status, result) = app
        .get(&format!(
            "/v1/jobs/{}/result",
            job["job_id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["kind"], "candle_import");
    assert_eq!(result["inserted"], 2880);
    assert_eq!(result["gaps"], report["gaps"]);

    // Exactly the exchange's numbers were stored.
    let csv = app
        .client
        .get(app.url(
            "/v1/candles/Binance%20Spot/BTC-USDT/csv?start_date=2024-01-01&end_date=2024-01-03",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(csv.status().as_u16(), 200);
    let mut expected = Vec::new();
    jesse_mcp_core::candles::write_csv(&exchange.candles("BTCUSDT"), &mut expected).unwrap();
    assert_eq!(
        csv.text().await.unwrap(),
        String::from_utf8(expected).unwrap()
    );

    // A re-run fetches only what is missing and duplicates nothing.
    let before = exchange.requests();
    let again = import(&app, request).await;
    assert_eq!(again["summary"]["inserted"], 0, "{again}");
    assert!(
        exchange.requests() - before <= 2,
        "a re-run must not page through stored data"
    );
    let (_, listing) = app.get("/v1/candles").await;
    assert_eq!(listing["series"][0]["rows"], 2880);
    assert!(
        listing["series"][0]["last_import_at"].is_string(),
        "{listing}"
    );

    let (status, gaps) = app
        .get("/v1/candles/Binance%20Spot/BTC-USDT/gaps?start_date=2023-12-31&end_date=2024-01-04")
        .await;
    assert_eq!(status, 200, "{gaps}");
    assert_eq!(gaps["missing_minutes"], 2 * 1440);
    assert_eq!(gaps["gaps"][0]["start"], JAN_1 - DAY);
    assert_eq!(
        gaps["gaps"][0]["end"], JAN_1,
        "end is the first present minute"
    );

    let deleted = app
        .client
        .delete(app.url("/v1/candles/Binance%20Spot/BTC-USDT"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status().as_u16(), 200);
    let (_, listing) = app.get("/v1/candles").await;
    assert_eq!(listing["series"].as_array().unwrap().len(), 0);
    let (status, _) = app.get("/v1/candles/Binance%20Spot/BTC-USDT/gaps").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_symbols_and_empty_ranges_are_clear() {
    let exchange = FakeExchange::start(&[("ETHUSDT", JAN_1 + 31 * DAY, JAN_1 + 32 * DAY)]).await;
    let app = app_with(&exchange).await;

    let job = import(&app, json!({"exchange": "Binance Perpetual Futures", "symbol": "NOPE-USDT", "start_date": "2024-01-01", "end_date": "2024-01-02"})).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "unknown_symbol");
    assert!(
        job["error"]["message"]
            .as_str()
            .unwrap()
            .contains("NOPE-USDT"),
        "{job}"
    );

    // Bybit: before the listing there is nothing; the job says so instead of failing.
    let job = import(&app, json!({"exchange": "Bybit USDT Perpetual", "symbol": "ETH-USDT", "start_date": "2024-01-20", "end_date": "2024-01-21"})).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["summary"]["inserted"], 0);
    assert_eq!(job["summary"]["coverage_pct"], 0.0);

    // And the listed day arrives in Bybit's 200-row pages, newest-first lists reversed.
    let job = import(&app, json!({"exchange": "Bybit USDT Perpetual", "symbol": "ETH-USDT", "start_date": "2024-02-01", "end_date": "2024-02-02"})).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["summary"]["inserted"], 1440);
    assert_eq!(job["summary"]["coverage_pct"], 100.0);
    assert!(job["summary"]["pages"].as_u64().unwrap() >= 8);

    let (status, answer) = app
        .post_json(
            "/v1/candles/imports",
            &json!({"exchange": "Mt Gox", "symbol": "BTC-USD", "start_date": "2024-01-01"}),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("unsupported_exchange"))
    );
    let (status, answer) = app
        .post_json(
            "/v1/candles/imports",
            &json!({"exchange": "Binance Spot", "symbol": "BTC-USDT", "start_date": "2199-01-01"}),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("invalid_date_range"))
    );
    // Past the dates the service accepts at all.
    let (status, answer) = app
        .post_json(
            "/v1/candles/imports",
            &json!({"exchange": "Binance Spot", "symbol": "BTC-USDT", "start_date": "2999-01-01"}),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("invalid_date"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_fire_once_per_series_and_day_across_instances_and_survive_restarts() {
    let exchange = FakeExchange::start(&[("BTCUSDT", JAN_1, JAN_1 + 2 * DAY)]).await;
    let app = app_with(&exchange).await;
    // A second API instance on the same store and queue: both run the scheduler loop.
    let config = jesse_mcp_api::ApiConfig {
        addr: "127.0.0.1:0".into(),
        backends: app.options.backends(&app.data_dir()),
        strategies_dir: app.strategies_dir(),
        allowed_hosts: vec!["127.0.0.1".into()],
        log_format: "pretty".into(),
        scheduler_tick_ms: 100,
        requeue_after_secs: 60,
        queue_retention_secs: 3600,
        tokens: String::new(),
        allowed_origins: Vec::new(),
        mcp_sessions: Default::default(),
    };
    let second = jesse_mcp_api::Application::build(&config).await.unwrap();
    let (stop_second, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(second.run_until_stopped(async move {
        let _ = stopped.await;
    }));

    let (status, answer) = app.client.put(app.url("/v1/schedules")).json(&json!({"schedules": [{"exchange": "Binance Spot", "symbol": "BTC-USDT", "cron": "nonsense"}]})).send().await.map(|r| (r.status().as_u16(), r)).unwrap();
    assert_eq!(status, 422, "{:?}", answer.text().await);
    let (status, listed) = {
        let r = app.client.put(app.url("/v1/schedules"))
            .json(&json!({"schedules": [{"exchange": "Binance Spot", "symbol": "BTC-USDT", "cron": "* * * * * *", "start_date": "2024-01-01"}]}))
            .send().await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 200, "{listed}");
    assert!(listed["schedules"][0]["next_run_at"].is_string());

    // The cron fires every second on both instances, for several seconds: one job for today.
    let mut job = Value::Null;
    for _ in 0..100 {
        let (_, jobs) = app.get("/v1/jobs?kind=candle_import").await;
        if let Some(first) = jobs["jobs"].as_array().and_then(|j| j.first()) {
            job = first.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let job_id = job["job_id"]
        .as_str()
        .expect("a scheduled import job appeared")
        .to_string();
    let finished = app.wait(&job_id, Duration::from_secs(60)).await;
    assert_eq!(finished["status"], "succeeded", "{finished}");
    assert_eq!(finished["summary"]["inserted"], 2880);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, jobs) = app.get("/v1/jobs?kind=candle_import").await;
    assert_eq!(
        jobs["jobs"].as_array().unwrap().len(),
        1,
        "exactly one run per series and day: {jobs}"
    );

    // The schedule is stored, not held in memory: a new instance sees it.
    let _ = stop_second.send(());
    let third = jesse_mcp_api::Application::build(&config).await.unwrap();
    let base = format!("http://127.0.0.1:{}", third.port());
    tokio::spawn(third.run_until_stopped(std::future::pending()));
    let listed: Value = app
        .client
        .get(format!("{base}/v1/schedules"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["schedules"][0]["symbol"], "BTC-USDT");
    assert!(
        listed["schedules"][0]["last_fired_at"].is_string(),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_import_can_be_cancelled_and_a_rerun_continues() {
    // 12 days = 18 Binance pages at the driver's 2 requests/s: long enough to cancel.
    let exchange = FakeExchange::start(&[("BTCUSDT", JAN_1, JAN_1 + 12 * DAY)]).await;
    let app = app_with(&exchange).await;
    // The cancel below must land mid-import, not during a slow runner start.
    app.wait_worker_ready(0).await;
    let request = json!({"exchange": "Binance Perpetual Futures", "symbol": "BTC-USDT", "start_date": "2024-01-01", "end_date": "2024-01-13"});
    let (_, answer) = app.post_json("/v1/candles/imports", &request).await;
    let job_id = answer["job_id"].as_str().unwrap().to_string();
    for _ in 0..200 {
        let (_, job) = app.get(&format!("/v1/jobs/{job_id}")).await;
        if job["progress"].as_f64().unwrap_or(0.0) > 0.05 {
            assert!(job["stage"].as_str().unwrap().contains("ETA"), "{job}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = app
        .post_json(&format!("/v1/jobs/{job_id}/cancel"), &json!({}))
        .await;
    assert_eq!(status, 200);
    let job = app.wait(&job_id, Duration::from_secs(30)).await;
    assert_eq!(job["status"], "cancelled", "{job}");
    let (_, listing) = app.get("/v1/candles").await;
    let partial = listing["series"][0]["rows"].as_i64().unwrap();
    assert!(
        partial > 0 && partial < 12 * 1440,
        "pages stored before the cancel are kept: {partial}"
    );

    let job = import(&app, request).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(
        job["summary"]["inserted"].as_i64().unwrap(),
        12 * 1440 - partial,
        "the re-run fetched only the rest"
    );
    assert_eq!(job["summary"]["coverage_pct"], 100.0);
}

/// A listener on another local port (an internal service) and the fake
/// exchange's first answer: a 302 to it. Returns the listener and its port.
fn redirect_first_request_elsewhere(exchange: &FakeExchange) -> (std::net::TcpListener, u16) {
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    other.set_nonblocking(true).unwrap();
    let port = other.local_addr().unwrap().port();
    exchange.fail_request(
        1,
        Failure::Redirect {
            location: format!("http://127.0.0.1:{port}/internal/metadata"),
        },
    );
    (other, port)
}

/// No connection ever reached `listener`.
fn assert_never_reached(listener: &std::net::TcpListener) {
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the redirect target was reached: {other:?}"),
    }
}

/// Issue 11: an import runner reaches only its exchange's endpoint. The fake
/// exchange answers the first request with a redirect to another local
/// service (a listener on another port); the import fails with
/// `egress_refused` naming both, the listener never sees a connection, and
/// the next import from the same endpoint works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_reaches_only_its_exchange_endpoint() {
    let exchange = FakeExchange::start(&[("BTCUSDT", JAN_1, JAN_1 + DAY)]).await;
    let (other, other_port) = redirect_first_request_elsewhere(&exchange);
    let app = app_with(&exchange).await;

    let request = json!({"exchange": "Binance Spot", "symbol": "BTC-USDT", "start_date": "2024-01-01", "end_date": "2024-01-02"});
    let job = import(&app, request.clone()).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "egress_refused", "{job}");
    let message = job["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&other_port.to_string())
            && message.contains(exchange.base.trim_start_matches("http://")),
        "the message names where it tried to go and what is allowed: {message}"
    );
    assert_never_reached(&other);

    // The guard closed with that call; the endpoint itself still works.
    let job = import(&app, request).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["summary"]["inserted"], 1440, "{job}");
}

/// The same through a proxy: the TCP peer is then always the (allowed) proxy,
/// so the guard must check the URL itself. The redirect to another local port
/// is refused before it reaches the proxy; imports otherwise go through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_proxy_an_import_still_reaches_only_its_exchange_endpoint() {
    let exchange = FakeExchange::start(&[("BTCUSDT", JAN_1, JAN_1 + DAY)]).await;
    let proxy = ForwardProxy::start().await;
    let (other, other_port) = redirect_first_request_elsewhere(&exchange);
    let endpoints = json!({"Binance Spot": format!("{}/api", exchange.base)});
    let app = TestApp::spawn(Options {
        exchange_endpoints: Some(endpoints.to_string()),
        worker_env: vec![
            ("http_proxy", proxy.base.clone()),
            ("HTTP_PROXY", proxy.base.clone()),
        ],
        ..Default::default()
    })
    .await;

    let request = json!({"exchange": "Binance Spot", "symbol": "BTC-USDT", "start_date": "2024-01-01", "end_date": "2024-01-02"});
    let job = import(&app, request.clone()).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "egress_refused", "{job}");
    let seen = proxy.seen();
    assert!(
        !seen.is_empty(),
        "the first request went through the proxy: {seen:?}"
    );
    assert!(
        seen.iter()
            .all(|url| !url.contains(&other_port.to_string())),
        "the proxy was asked for the redirect target: {seen:?}"
    );
    assert_never_reached(&other);

    let job = import(&app, request).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["summary"]["inserted"], 1440, "{job}");
    let exchange_port = exchange.base.rsplit(':').next().unwrap().to_string();
    assert!(
        proxy
            .seen()
            .iter()
            .filter(|url| url.contains(&exchange_port))
            .count()
            >= 2,
        "the import's pages went through the proxy: {:?}",
        proxy.seen()
    );
}
