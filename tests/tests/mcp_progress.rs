//! MCP `job_wait` on a long job sends progress notifications and returns within
//! its timeout while the job still runs, and the progress moves during the Jesse
//! run itself (the simulated time reached); `job_cancel` over MCP interrupts it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jesse_mcp_tests::*;
use rmcp::model::{CallToolRequestParams, ProgressNotificationParam};
use rmcp::service::NotificationContext;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct CountProgress(Arc<AtomicUsize>, Arc<Mutex<Vec<(f64, String)>>>);

impl ClientHandler for CountProgress {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _ctx: NotificationContext<RoleClient>,
    ) {
        self.0.fetch_add(1, Ordering::SeqCst);
        self.1
            .lock()
            .unwrap()
            .push((params.progress, params.message.unwrap_or_default()));
    }
}

impl CountProgress {
    /// The distinct progress values reported while Jesse simulated, with their messages.
    fn simulating(&self) -> Vec<(f64, String)> {
        let mut seen: Vec<(f64, String)> = Vec::new();
        for (progress, message) in self.1.lock().unwrap().iter() {
            if message.contains("simulating") && !seen.iter().any(|(p, _)| p == progress) {
                seen.push((*progress, message.clone()));
            }
        }
        seen
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_wait_reports_progress_and_job_cancel_interrupts() {
    let app = TestApp::spawn(Options {
        fixtures: &["Sleeper"],
        ..Default::default()
    })
    .await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-02-15", 3))
        .await;
    let counter = CountProgress::default();
    let client = counter
        .clone()
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

    let submitted = call(
        "backtest",
        backtest_body("Sleeper", "1h", "2024-01-20", "2024-02-10"),
    )
    .await
    .unwrap();
    let job_id = submitted.structured_content.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    app.wait_for_status(&job_id, "running", Duration::from_secs(60))
        .await;

    let started = Instant::now();
    let waited = call("job_wait", json!({"job_id": job_id, "timeout_seconds": 2}))
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(waited.structured_content.unwrap()["status"], "running");
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(10),
        "waited {elapsed:?}"
    );
    assert!(
        counter.0.load(Ordering::SeqCst) >= 1,
        "job_wait sent no progress notification"
    );
    // While Jesse runs, progress follows the simulated time: several distinct
    // values between the run's start (0.15) and the result (0.95), each naming
    // the day reached.
    for _ in 0..10 {
        if counter.simulating().len() >= 3 {
            break;
        }
        let waited = call("job_wait", json!({"job_id": job_id, "timeout_seconds": 2}))
            .await
            .unwrap();
        assert_eq!(waited.structured_content.unwrap()["status"], "running");
    }
    let simulating = counter.simulating();
    assert!(
        simulating.len() >= 3,
        "fewer than 3 distinct progress values during the Jesse run: {:?}",
        counter.1.lock().unwrap()
    );
    for pair in simulating.windows(2) {
        assert!(pair[0].0 < pair[1].0, "progress went back: {simulating:?}");
    }
    for (progress, message) in &simulating {
        assert!(*progress > 0.15 && *progress < 0.95, "{progress} {message}");
        // "running: simulating 2024-01-2x (n%)", inside the backtest's range.
        let day = message
            .split("simulating ")
            .nth(1)
            .and_then(|rest| rest.get(..10))
            .unwrap_or_default();
        assert!(("2024-01-20".."2024-02-11").contains(&day), "{message}");
    }

    let cancelled = call("job_cancel", json!({"job_id": job_id})).await.unwrap();
    assert_eq!(cancelled.is_error, Some(false), "{cancelled:?}");
    let mut status = Value::Null;
    for _ in 0..5 {
        let waited = call("job_wait", json!({"job_id": job_id, "timeout_seconds": 20}))
            .await
            .unwrap();
        status = waited.structured_content.unwrap()["status"].clone();
        if status != "running" {
            break;
        }
    }
    assert_eq!(status, "cancelled");

    let unknown = call("job_get", json!({"job_id": "01JAAAAAAAAAAAAAAAAAAAAAAA"}))
        .await
        .unwrap();
    assert_eq!(unknown.is_error, Some(true));
    assert!(
        unknown.content[0]
            .as_text()
            .unwrap()
            .text
            .contains("job_not_found")
    );
    client.cancel().await.ok();
}
