//! A full disk under the SQLite store (issue 34, item 4), on a small tmpfs data
//! directory: a CSV upload that fills it answers 507 `store_full` saying
//! exactly which rows it committed, writes fail with the envelope (never a
//! bare 500), /health and /ready report the store unwritable, and as soon as
//! space is freed every write succeeds again (no pooled connection is left
//! inside a failed transaction). Needs root (mount); skipped otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use jesse_mcp_api::{ApiConfig, Application};
use jesse_mcp_tests::*;
use serde_json::{Value, json};

/// The tmpfs, unmounted when the test ends.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).ok()?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs (needs root): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(Tmpfs(at.to_path_buf()))
    }

    fn free_bytes(&self) -> u64 {
        let path = std::ffi::CString::new(self.0.to_str().unwrap()).unwrap();
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: a NUL-terminated path and a statvfs to fill.
        assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut stat) }, 0);
        stat.f_bavail * stat.f_frsize
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

struct Api {
    base: String,
    client: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Api {
    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET");
        decode(response).await
    }

    async fn post(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST");
        decode(response).await
    }

    async fn upload(&self, symbol: &str, csv: Vec<u8>) -> (u16, Value) {
        let path = format!(
            "/v1/candles/csv?exchange={}&symbol={symbol}",
            EXCHANGE.replace(' ', "%20")
        );
        self.post(&path, "text/csv", csv).await
    }

    async fn submit(&self) -> (u16, Value) {
        let body = backtest_body("SmaCross", "1h", "2024-01-12", "2024-01-14");
        self.post(
            "/v1/backtests",
            "application/json",
            serde_json::to_vec(&body).unwrap(),
        )
        .await
    }

    async fn stored_rows(&self, symbol: &str) -> i64 {
        let (status, list) = self.get("/v1/candles").await;
        assert_eq!(status, 200, "{list}");
        list["series"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["symbol"] == symbol)
            .map_or(0, |s| s["rows"].as_i64().unwrap())
    }
}

async fn decode(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or_else(|_| json!({"raw": text}));
    (status, value)
}

fn copy_strategies(to: &Path) {
    let status = Command::new("cp")
        .arg("-r")
        .arg(repo_root().join("strategies"))
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_store_full_and_the_store_recovers_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = Tmpfs::mount(&dir.path().join("data"), "64m") else {
        return;
    };
    copy_strategies(&dir.path().join("strategies"));
    let config = ApiConfig {
        addr: "127.0.0.1:0".into(),
        backends: jesse_mcp_core::backends::Backends {
            data_dir: disk.0.clone(),
            database_url: None,
            queue_url: None,
            queue_namespace: "store-full".into(),
        },
        strategies_dir: dir.path().join("strategies"),
        allowed_hosts: vec!["127.0.0.1".into()],
        log_format: "pretty".into(),
        scheduler_tick_ms: 200,
        requeue_after_secs: 60,
        queue_retention_secs: 3600,
        tokens: String::new(),
        allowed_origins: Vec::new(),
        mcp_sessions: Default::default(),
    };
    let app = Application::build(&config).await.expect("build app");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let api = Api {
        base,
        client: reqwest::Client::new(),
        _stop: stop,
    };
    let (status, body) = api
        .upload(SYMBOL, synthetic_csv("2024-01-01", "2024-01-15", 1))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api.submit().await;
    assert_eq!(status, 202, "{body}");

    // Leave about 8 MB: a 200,000-row upload (about 12 MB of CSV) fills it.
    let free = disk.free_bytes();
    let filler = disk.0.join("filler");
    std::fs::write(&filler, vec![0u8; (free - 8 * 1024 * 1024) as usize]).unwrap();
    let csv = synthetic_csv("2024-01-01", "2024-05-20", 2);
    let rows = (csv.iter().filter(|b| **b == b'\n').count() - 1) as i64;
    let (status, body) = api.upload("ETH-USDT", csv.clone()).await;
    assert_eq!(status, 507, "a full disk is 507 store_full: {body}");
    assert_eq!(body["error"]["code"], "store_full", "{body}");
    let stored = api.stored_rows("ETH-USDT").await;
    let committed = &body["error"]["details"]["committed"];
    if stored > 0 {
        assert_eq!(
            committed["inserted"], stored,
            "the answer says exactly what was committed: {body}"
        );
        assert_eq!(body["error"]["details"]["rows_received"], rows, "{body}");
    } else {
        assert!(committed.is_null(), "nothing was committed: {body}");
    }
    assert!(stored < rows, "the disk was meant to fill: {stored} rows");

    let (status, body) = api.get("/health").await;
    assert_eq!(status, 503, "/health reports the store unwritable: {body}");
    assert_eq!(body["error"]["code"], "store_unwritable", "{body}");
    let (status, body) = api.get("/ready").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "store_unwritable", "{body}");
    // A submit is small: it may still fit; if not, it fails with the envelope.
    for _ in 0..12 {
        let (status, body) = api.submit().await;
        assert!(
            status == 202 || (matches!(status, 503 | 507) && body["error"]["code"].is_string()),
            "a submit on a full disk is 202 or fails with the envelope: {status} {body}"
        );
    }
    // A second large write fails the same way, committing nothing new it does not report.
    let (status, body) = api.upload("ETH-USDT", csv.clone()).await;
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["error"]["code"], "store_full", "{body}");
    let stored = api.stored_rows("ETH-USDT").await;
    let committed = &body["error"]["details"]["committed"];
    assert!(
        committed.is_null() || committed["inserted"].as_i64().is_some(),
        "{body}"
    );

    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = api.get("/health").await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the store did not recover once space was freed: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every pooled connection works again (sqlx pools 8; more submits than that).
    for i in 0..24 {
        let (status, body) = api.submit().await;
        assert_eq!(status, 202, "submit {i} after space came back: {body}");
    }
    let (status, body) = api.upload("ETH-USDT", csv).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["inserted"].as_i64().unwrap(), rows - stored, "{body}");
    assert_eq!(api.stored_rows("ETH-USDT").await, rows);
}
