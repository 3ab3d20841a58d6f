//! `make run` (ops/run.sh) as a user starts it, on this build's binaries: a
//! worker that dies (kill -9) is restarted while the API keeps serving, and the
//! job it held completes; the banner comes once the runners are warm, names the
//! real data dir and the demo data, and Ctrl-C is a requested stop.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use jesse_mcp_tests::{bin_dir, repo_root, venv_python};
use serde_json::{Value, json};

/// The script's process group, stopped (TERM, then KILL) when the test ends.
struct Service {
    child: std::process::Child,
    base: String,
    data_dir: PathBuf,
    log: PathBuf,
}

impl Service {
    fn start(dir: &Path, processes: usize) -> Service {
        use std::os::unix::process::CommandExt;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let strategies = dir.join("strategies");
        std::fs::create_dir_all(&strategies).unwrap();
        for (from, name) in [
            (repo_root().join("strategies/SmaCross"), "SmaCross"),
            (
                repo_root().join("tests/fixtures/strategies/Sleeper"),
                "Sleeper",
            ),
        ] {
            std::fs::create_dir_all(strategies.join(name)).unwrap();
            std::fs::copy(
                from.join("__init__.py"),
                strategies.join(name).join("__init__.py"),
            )
            .unwrap();
        }
        let data_dir = dir.join("data");
        let log = dir.join("run.log");
        // One open file for both streams, so neither overwrites the other.
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = std::process::Command::new("bash")
            .arg(repo_root().join("ops/run.sh"))
            .current_dir(repo_root())
            .env("JESSE_MCP_BIN_DIR", bin_dir())
            .env("JESSE_MCP_DATA_DIR", &data_dir)
            .env("JESSE_MCP_STRATEGIES_DIR", &strategies)
            .env("JESSE_MCP_ADDR", format!("127.0.0.1:{port}"))
            .env("JESSE_MCP_PYTHON", venv_python())
            .env("JESSE_MCP_WORKERS", "1")
            .env("JESSE_MCP_WORKER_PROCESSES", processes.to_string())
            .env("JESSE_MCP_HEARTBEAT_SECS", "1")
            .env("JESSE_MCP_REQUEUE_AFTER_SECS", "3")
            .env("JESSE_MCP_POLL_MS", "100")
            .env("RUST_LOG", "info,sqlx=warn,apalis=warn,rmcp=warn")
            .env_remove("JESSE_MCP_DATABASE_URL")
            .env_remove("JESSE_MCP_QUEUE_URL")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .expect("start ops/run.sh");
        Service {
            child,
            base: format!("http://127.0.0.1:{port}"),
            data_dir,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn worker_pid(&self, slot: usize) -> Option<i32> {
        std::fs::read_to_string(self.data_dir.join(format!("run/worker-{slot}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    async fn get(&self, path: &str) -> Option<(u16, Value)> {
        let response = reqwest::get(format!("{}{path}", self.base)).await.ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.unwrap_or(Value::Null)))
    }

    async fn wait_healthy(&self) {
        // The first start seeds a year of demo candles (a debug build: slower).
        let deadline = Instant::now() + Duration::from_secs(240);
        while self.get("/health").await.map(|(s, _)| s) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "ops/run.sh never served /health; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn wait_status(&self, job_id: &str, wanted: &[&str], timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((_, job)) = self.get(&format!("/v1/jobs/{job_id}")).await
                && wanted.iter().any(|w| job["status"] == *w)
            {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {job_id} never reached {wanted:?}; the service's log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let group = -(self.child.id() as i32);
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // SAFETY: as above.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid, 0) } == 0;
    exists
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.split(") ").nth(1).unwrap_or("").starts_with('Z'))
            .unwrap_or(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_worker_is_restarted_and_its_job_completes_while_the_api_serves() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path(), 1);
    service.wait_healthy().await;
    let first = service.worker_pid(1).expect("worker-1.pid written");

    // The Sleeper takes about 0.2 s per 1h candle: ~10 s for these two days.
    let body = json!({
        "strategy": "Sleeper",
        "exchange": "Binance Perpetual Futures",
        "symbol": "BTC-USDT",
        "timeframe": "1h",
        "start_date": "2023-03-01",
        "end_date": "2023-03-03",
    });
    let response = reqwest::Client::new()
        .post(format!("{}/v1/backtests", service.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        202,
        "{:?}",
        response.text().await
    );
    let job_id = response.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    service
        .wait_status(&job_id, &["running"], Duration::from_secs(60))
        .await;

    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(first, libc::SIGKILL) }, 0);
    // The API keeps serving while the worker is down and restarting.
    let (status, _) = service.get("/health").await.expect("the API answers");
    assert_eq!(status, 200);
    let (status, listed) = service.get("/v1/jobs").await.expect("the API answers");
    assert_eq!(status, 200, "{listed}");

    // The supervisor starts a new worker process and logs the restart.
    let deadline = Instant::now() + Duration::from_secs(30);
    let second = loop {
        if let Some(pid) = service.worker_pid(1)
            && pid != first
            && alive(pid)
        {
            break pid;
        }
        assert!(
            Instant::now() < deadline,
            "the worker was not restarted; the log:\n{}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!alive(first));
    assert!(
        service.log().contains(&format!(
            "worker 1 (pid {first}) exited with status 137; restarting it"
        )),
        "the restart is not logged:\n{}",
        service.log()
    );

    // The job it held resumes after its lease and completes.
    let job = service
        .wait_status(
            &job_id,
            &["succeeded", "failed", "cancelled"],
            Duration::from_secs(120),
        )
        .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(job["attempts"].as_u64().unwrap_or(0) >= 2, "{job}");
    assert!(alive(second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_processes_sets_how_many_workers_run() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(dir.path(), 2);
    service.wait_healthy().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pids: Vec<i32> = (1..=2).filter_map(|s| service.worker_pid(s)).collect();
        if pids.len() == 2 && pids.iter().all(|p| alive(*p)) {
            assert_ne!(pids[0], pids[1]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "two worker processes did not start; the log:\n{}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(service.worker_pid(3).is_none());
    // The banner follows the runners' warm-up.
    let deadline = Instant::now() + Duration::from_secs(180);
    while !service.log().contains("with 2 worker process(es)") {
        assert!(Instant::now() < deadline, "{}", service.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_banner_follows_warm_runners_and_ctrl_c_is_a_requested_stop() {
    let dir = tempfile::tempdir().unwrap();
    let mut service = Service::start(dir.path(), 1);
    let deadline = Instant::now() + Duration::from_secs(300);
    while !service.log().contains("Ctrl-C (or SIGTERM) stops") {
        assert!(Instant::now() < deadline, "no banner:\n{}", service.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = service.log();
    assert!(log.contains("1 of 1 runner(s) warm."), "{log}");
    // By then /ready and /health count the runner warm.
    for path in ["/ready", "/health"] {
        let (status, body) = service.get(path).await.expect("the API answers");
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["runners"],
            json!({"ready": 1, "total": 1, "workers": 1}),
            "{path}: {body}"
        );
    }
    let data = service.data_dir.display().to_string();
    assert!(log.contains(&format!("Data: {data} ")), "{log}");
    assert!(log.contains(&format!("SQLite ({data}/store.db)")), "{log}");
    assert!(log.contains("DEMO DATA"), "the demo data is named:\n{log}");
    assert!(
        !log.contains('\u{1b}'),
        "no colour codes in a log that is not a terminal:\n{log}"
    );

    // Ctrl-C reaches the whole foreground process group.
    let group = -(service.child.id() as i32);
    // SAFETY: kill has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(group, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = service.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "did not stop:\n{}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let log = service.log();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains("jesse-mcp: stopped as asked (Ctrl-C)"),
        "{log}"
    );
    assert!(!log.contains("exited on its own"), "{log}");
    assert!(!log.contains("unexpectedly"), "{log}");
}

#[test]
fn make_help_lists_every_documented_target() {
    let makefile = std::fs::read_to_string(repo_root().join("Makefile")).unwrap();
    let output = std::process::Command::new("make")
        .args(["-s", "help"])
        .current_dir(repo_root())
        .output()
        .expect("run make help");
    assert!(output.status.success(), "{output:?}");
    let help = String::from_utf8_lossy(&output.stdout);
    let documented: Vec<&str> = makefile
        .lines()
        .filter_map(|l| l.strip_prefix("## ")?.split_once(": ").map(|(t, _)| t))
        .collect();
    for target in ["run", "test", "help", "bench", "clean-data"] {
        assert!(documented.contains(&target), "{target} is not documented");
    }
    for target in documented {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{target} "))),
            "make help does not list {target}:\n{help}"
        );
    }
}

#[test]
fn worker_processes_must_be_a_whole_number() {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new("bash")
        .arg(repo_root().join("ops/run.sh"))
        .current_dir(repo_root())
        .env("JESSE_MCP_BIN_DIR", bin_dir())
        .env("JESSE_MCP_DATA_DIR", dir.path())
        .env("JESSE_MCP_PYTHON", venv_python())
        .env("JESSE_MCP_WORKER_PROCESSES", "zero")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("JESSE_MCP_WORKER_PROCESSES must be a whole number from 1"),
        "{stderr}"
    );
}
