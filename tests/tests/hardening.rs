//! Hardening: a store locked past its busy timeout under a running job's
//! bookkeeping, CSV exports bounded by what is stored and streamed page by
//! page, and concurrent schedule replacements on Postgres.

use std::time::Duration;

use jesse_mcp_core::candles::{Candle, parse_csv, synthetic};
use jesse_mcp_core::store::{Claim, JobResult, NewJob, Store};
use jesse_mcp_core::time::{MINUTE_MS, parse_day};
use jesse_mcp_tests::*;
use serde_json::{Value, json};
use sqlx::Connection;

/// A second connection that holds SQLite's write lock (BEGIN IMMEDIATE) until
/// released, as a long import in another process would.
async fn lock_writes(path: &std::path::Path) -> sqlx::SqliteConnection {
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("second connection");
    sqlx::raw_sql("BEGIN IMMEDIATE")
        .execute(&mut conn)
        .await
        .expect("take the write lock");
    conn
}

/// A job's progress, stage and timings writes that meet the store locked by
/// another writer for longer than the busy timeout wait the lock out (with a
/// short backoff) and land, instead of failing the job as `internal`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookkeeping_writes_wait_out_a_store_locked_past_its_busy_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let url = format!("sqlite://{}", path.display());
    let store = Store::connect_with(&url, Duration::from_millis(100))
        .await
        .unwrap();
    let id = jesse_mcp_core::jobs::new_job_id();
    store
        .insert_job(NewJob {
            id: &id,
            kind: "backtest",
            params: &json!({}),
            idempotency_key: None,
        })
        .await
        .unwrap();
    assert!(matches!(
        store.start_attempt(&id, "w1", 60_000).await.unwrap(),
        Claim::Claimed(_)
    ));
    let result = JobResult {
        body: json!({"timings": {}}),
        parts: Vec::new(),
    };
    store.save_result(&id, "backtest", &result).await.unwrap();

    for write in ["progress", "timings"] {
        let mut locked = lock_writes(&path).await;
        // The lock is held for ten busy timeouts, then released.
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1_000)).await;
            sqlx::raw_sql("ROLLBACK")
                .execute(&mut locked)
                .await
                .unwrap();
        });
        let written = match write {
            "progress" => store.set_progress(&id, 0.5, "halfway").await,
            _ => {
                store
                    .patch_result(&id, "timings", &json!({"result_write_ms": 7}))
                    .await
            }
        };
        written.unwrap_or_else(|e| panic!("{write} failed under a held lock: {e}"));
        release.await.unwrap();
    }
    let job = store.get_job(&id).await.unwrap().unwrap();
    assert_eq!((job.progress, job.stage.as_deref()), (0.5, Some("halfway")));
    let (_, body) = store.result_body(&id).await.unwrap().unwrap();
    assert_eq!(body["timings"]["result_write_ms"], 7);
}

async fn get_text(app: &TestApp, path: &str) -> (u16, String) {
    let response = app.client.get(app.url(path)).send().await.expect("GET");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

fn csv_path(symbol: &str, query: &str) -> String {
    format!(
        "/v1/candles/{}/{symbol}/csv{query}",
        EXCHANGE.replace(' ', "%20")
    )
}

/// The export of a series that is not stored is a 404 in the error envelope,
/// with or without dates; a range far wider than the series is its rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_export_is_404_for_a_missing_series_and_cut_to_the_stored_range() {
    let app = TestApp::spawn(Options {
        start_worker: false,
        ..Default::default()
    })
    .await;
    for query in ["", "?start_date=1970-01-01&end_date=2200-12-31"] {
        let (status, body) = get_text(&app, &csv_path("NOPE-USDT", query)).await;
        assert_eq!(status, 404, "{query}: {body}");
        let body: Value = serde_json::from_str(&body).expect("error envelope");
        assert_eq!(body["error"]["code"], "series_not_found", "{body}");
    }

    let start = parse_day("2024-01-01").unwrap();
    let candles = synthetic(start, start + 10 * MINUTE_MS, 100.0, 5);
    let mut csv = Vec::new();
    jesse_mcp_core::candles::write_csv(&candles, &mut csv).unwrap();
    app.import_csv(&csv).await;
    let (status, text) = get_text(
        &app,
        &csv_path(SYMBOL, "?start_date=1970-01-01&end_date=2200-12-31"),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(text.as_bytes(), csv.as_slice());
    // A range beside the stored one is the header alone.
    let (status, text) = get_text(
        &app,
        &csv_path(SYMBOL, "?start_date=1970-01-01&end_date=1971-01-01"),
    )
    .await;
    assert_eq!(
        (status, text.as_str()),
        (200, "timestamp,open,high,low,close,volume\n")
    );
}

/// An export longer than a page is every row once, in order, across pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_export_streams_every_page_in_order() {
    let app = TestApp::spawn(Options {
        start_worker: false,
        ..Default::default()
    })
    .await;
    let start = parse_day("2024-03-01").unwrap();
    // 25,000 rows with gaps: three pages of 10,000.
    let mut candles = synthetic(start, start + 27_000 * MINUTE_MS, 50.0, 6);
    candles.retain(|c| {
        (c.timestamp - start) / MINUTE_MS % 13 != 0 || c.timestamp < start + 1_000 * MINUTE_MS
    });
    let mut csv = Vec::new();
    jesse_mcp_core::candles::write_csv(&candles, &mut csv).unwrap();
    app.import_csv(&csv).await;
    let (status, text) = get_text(&app, &csv_path(SYMBOL, "")).await;
    assert_eq!(status, 200);
    let parsed = parse_csv(text.as_bytes()).unwrap();
    assert_eq!(parsed.rejected, 0);
    let got: Vec<Candle> = parsed.candles;
    assert!(got.len() > 20_000, "{}", got.len());
    assert_eq!(got, candles);
    assert_eq!(text.as_bytes(), csv.as_slice());
}

/// Many `PUT /v1/schedules` at once on Postgres: every one answers 200 (none
/// a 500 from a key conflict), and the list ends as one of them left it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_schedule_puts_on_postgres_never_answer_500() {
    let app = TestApp::spawn(Options {
        start_worker: false,
        ..Options::distributed().await
    })
    .await;
    let lists: Vec<Value> = (0..12)
        .map(|writer| {
            let schedules: Vec<Value> = (0..4)
                .map(|i| {
                    json!({"exchange": "Binance Spot", "symbol": format!("S{}-USDT", (writer + i) % 6)})
                })
                .collect();
            json!({ "schedules": schedules })
        })
        .collect();
    for round in 0..3 {
        let puts = lists.iter().map(|body| {
            let request = app.client.put(app.url("/v1/schedules")).json(body);
            async move {
                let response = request.send().await.expect("PUT");
                let status = response.status().as_u16();
                (
                    status,
                    response.json::<Value>().await.unwrap_or(Value::Null),
                )
            }
        });
        for (status, body) in futures::future::join_all(puts).await {
            assert_eq!(status, 200, "round {round}: {body}");
            assert_eq!(
                body["schedules"].as_array().map(Vec::len),
                Some(4),
                "{body}"
            );
        }
        let (status, listed) = app.get("/v1/schedules").await;
        assert_eq!(status, 200);
        let symbols: Vec<&str> = listed["schedules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["symbol"].as_str().unwrap())
            .collect();
        assert_eq!(symbols.len(), 4, "round {round}: {listed}");
        assert!(
            lists.iter().any(|l| {
                let mut want: Vec<&str> = l["schedules"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["symbol"].as_str().unwrap())
                    .collect();
                want.sort();
                want == symbols
            }),
            "round {round}: {symbols:?} is no writer's list"
        );
    }
}
