//! Restarting the servers under a running deployment: Redis (its own instance
//! with the append-only file on, on a spare port) and the machine's Postgres.
//! API and workers must reconnect and finish every acknowledged job.
//!
//! One test in its own binary: restarting Postgres would disturb any test
//! running beside it (cargo runs test binaries one after another).

use std::process::Stdio;
use std::time::{Duration, Instant};

use jesse_mcp_tests::backends::fresh_postgres;
use jesse_mcp_tests::*;

const LONG: Duration = Duration::from_secs(240);

/// A private redis-server with AOF (fsync on every write), in a temp directory.
struct Redis {
    port: u16,
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl Redis {
    fn start() -> Redis {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Self::spawn(port, dir.path());
        let redis = Redis { port, dir, child };
        redis.wait_up();
        redis
    }

    fn spawn(port: u16, dir: &std::path::Path) -> std::process::Child {
        std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (Debian: redis-server)")
    }

    fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SHUTDOWN (flushes the AOF) and start again on the same files.
    fn restart(&mut self) {
        let _ = std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown"])
            .output();
        let _ = self.child.wait();
        self.child = Self::spawn(self.port, self.dir.path());
        self.wait_up();
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn restart_postgres() {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("a Debian PostgreSQL cluster")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().to_string()))
        .max()
        .expect("a cluster version");
    let status = std::process::Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", "restart"])
        .status()
        .expect("pg_ctlcluster");
    assert!(status.success(), "restarting PostgreSQL failed");
}

/// Submits, retrying while the service answers 503 during an outage.
async fn submit_through_outage(app: &TestApp, body: &serde_json::Value) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, answer) = app.post_json("/v1/backtests", body).await;
        match status {
            202 => return answer["job_id"].as_str().unwrap().to_string(),
            503 => assert!(Instant::now() < deadline, "still unavailable: {answer}"),
            _ => panic!("unexpected answer {status}: {answer}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls through an outage (503s are expected while a server restarts).
async fn wait_through_outage(app: &TestApp, job_id: &str) -> serde_json::Value {
    let deadline = Instant::now() + LONG;
    loop {
        let (status, job) = app.get(&format!("/v1/jobs/{job_id}")).await;
        if status == 200
            && matches!(
                job["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
        {
            return job;
        }
        assert!(status == 200 || status == 503, "{status}: {job}");
        assert!(
            Instant::now() < deadline,
            "job {job_id} did not finish: {job}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_and_postgres_restarts_lose_no_acknowledged_job() {
    let mut redis = Redis::start();
    let app = TestApp::spawn(Options {
        fixtures: &["Sleeper"],
        database_url: Some(fresh_postgres().await),
        queue_url: Some(redis.url()),
        heartbeat_secs: 2,
        requeue_after_secs: 5,
        ..Default::default()
    })
    .await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-02-15", 3))
        .await;
    let slow = backtest_body("Sleeper", "1h", "2024-01-20", "2024-01-22");
    let quick = backtest_body("SmaCross", "1h", "2024-01-20", "2024-02-10");

    // Redis restarts while one job runs and two wait in the queue.
    let mut ids = vec![
        app.submit(&slow).await,
        app.submit(&quick).await,
        app.submit(&quick).await,
    ];
    app.wait_for_status(&ids[0], "running", LONG).await;
    redis.restart();
    ids.push(submit_through_outage(&app, &quick).await);

    // Postgres restarts while a job runs.
    let running = submit_through_outage(&app, &slow).await;
    app.wait_for_status(&running, "running", LONG).await;
    restart_postgres();
    ids.push(running);
    ids.push(submit_through_outage(&app, &quick).await);

    for id in &ids {
        let job = wait_through_outage(&app, id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        let (status, _) = app.get(&format!("/v1/jobs/{id}/result")).await;
        assert_eq!(status, 200);
    }
    assert_eq!(app.job_count().await, ids.len());
}
