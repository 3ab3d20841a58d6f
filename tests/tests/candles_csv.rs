//! Offline candle import: REST and CLI, idempotent upsert with honest counts,
//! and the stored-series listing.

use jesse_mcp_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_import_is_an_idempotent_upsert_with_counts() {
    let app = TestApp::spawn(Options {
        start_worker: false,
        ..Default::default()
    })
    .await;
    let csv = synthetic_csv("2024-01-01", "2024-01-03", 9);
    let report = app.import_csv(&csv).await;
    assert_eq!(report["inserted"], 2880);
    assert_eq!(report["rejected"], 0);

    let again = app.import_csv(&csv).await;
    assert_eq!(
        (
            again["inserted"].as_u64(),
            again["updated"].as_u64(),
            again["unchanged"].as_u64()
        ),
        (Some(0), Some(0), Some(2880))
    );

    // One changed row, one new ISO-timestamped row, one bad row.
    let text = "timestamp,open,high,low,close,volume\n\
                1704067200000,1,2,0.5,1.5,10\n\
                2024-01-03T00:00:00Z,1,2,0.5,1.5,10\n\
                2024-01-03T00:01:00Z,1,2,0.5,not-a-price,10\n";
    let mixed = app.import_csv(text.as_bytes()).await;
    assert_eq!(mixed["updated"], 1, "{mixed}");
    assert_eq!(mixed["inserted"], 1, "{mixed}");
    assert_eq!(mixed["rejected"], 1, "{mixed}");
    assert_eq!(mixed["first_rejection"]["line"], 4);
    assert!(
        mixed["first_rejection"]["reason"]
            .as_str()
            .unwrap()
            .contains("not-a-price")
    );

    let (status, listing) = app.get("/v1/candles").await;
    assert_eq!(status, 200);
    let series = &listing["series"][0];
    assert_eq!(series["exchange"], EXCHANGE);
    assert_eq!(series["rows"], 2881);
    assert_eq!(series["first"], 1_704_067_200_000i64);
    assert_eq!(series["last"], 1_704_240_000_000i64);
    assert_eq!(series["missing_minutes"], 0);

    // Bad requests change nothing.
    let path = format!(
        "/v1/candles/csv?exchange={}&symbol={SYMBOL}",
        EXCHANGE.replace(' ', "%20")
    );
    let (status, answer) = app
        .post_raw(&path, "text/csv", b"time,price\n1,2\n".to_vec())
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("invalid_csv")),
        "{answer}"
    );
    let (status, answer) = app
        .post_raw(
            "/v1/candles/csv?exchange=Nowhere&symbol=BTC-USDT",
            "text/csv",
            csv.clone(),
        )
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("unsupported_exchange"))
    );
    let (status, answer) = app
        .post_raw("/v1/candles/csv", "text/csv", csv.clone())
        .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("missing_parameter"))
    );
    let (_, listing) = app.get("/v1/candles").await;
    assert_eq!(listing["series"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_import_csv_writes_the_same_store() {
    let app = TestApp::spawn(Options {
        start_worker: false,
        ..Default::default()
    })
    .await;
    let file = app.dir.path().join("eth.csv");
    std::fs::write(&file, synthetic_csv("2024-02-01", "2024-02-02", 4)).unwrap();
    let output = tokio::process::Command::new(bin("jesse-mcp-api"))
        .envs(app.env())
        .args([
            "candles",
            "import-csv",
            "--exchange",
            "Bybit USDT Perpetual",
            "--symbol",
            "ETH-USDT",
        ])
        .arg(&file)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["inserted"], 1440);
    let (_, listing) = app.get("/v1/candles").await;
    assert_eq!(listing["series"][0]["symbol"], "ETH-USDT");
    assert_eq!(listing["series"][0]["rows"], 1440);

    let bad = tokio::process::Command::new(bin("jesse-mcp-api"))
        .envs(app.env())
        .args([
            "candles",
            "import-csv",
            "--exchange",
            "Bybit USDT Perpetual",
            "--symbol",
            "eth",
        ])
        .arg(&file)
        .output()
        .await
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("BASE-QUOTE"));
}
