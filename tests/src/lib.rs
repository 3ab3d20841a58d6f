//! Test harness: a real API (in-process, on 127.0.0.1:0) and real worker
//! processes with real Jesse runners, over a fresh data directory per test.
//! Nothing is mocked; tests wait on job completion with deadlines, never sleeps.

pub mod backends;
pub mod fake_exchange;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use jesse_mcp_api::{ApiConfig, Application};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

pub const EXCHANGE: &str = "Binance Perpetual Futures";
pub const SYMBOL: &str = "BTC-USDT";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The cargo target profile directory holding the built binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is not built; run `make test` (it builds the binaries first)",
        path.display()
    );
    path
}

pub fn venv_python() -> PathBuf {
    let path = repo_root().join(".venv/bin/python");
    assert!(
        path.exists(),
        "{} is missing; run ops/python-env.sh",
        path.display()
    );
    path
}

pub struct Options {
    pub runners: usize,
    pub job_timeout_secs: u64,
    pub kill_grace_secs: u64,
    /// Fixture strategies to add beside the repository's examples.
    pub fixtures: &'static [&'static str],
    pub start_worker: bool,
    /// JESSE_MCP_EXCHANGE_ENDPOINTS for the worker.
    pub exchange_endpoints: Option<String>,
    /// JESSE_MCP_TOKENS for the API (empty: no authentication).
    pub tokens: String,
    /// JESSE_MCP_HEARTBEAT_SECS for workers (crash tests use short ones).
    pub heartbeat_secs: u64,
    /// JESSE_MCP_DATABASE_URL (None: SQLite in the test's data directory).
    pub database_url: Option<String>,
    /// JESSE_MCP_QUEUE_URL (None: SQLite in the test's data directory).
    pub queue_url: Option<String>,
    /// JESSE_MCP_QUEUE_NAMESPACE, fresh per test so tests can share one Redis.
    pub queue_namespace: String,
    /// JESSE_MCP_SHUTDOWN_GRACE_SECS for workers.
    pub shutdown_grace_secs: u64,
    /// JESSE_MCP_REQUEUE_AFTER_SECS for API instances.
    pub requeue_after_secs: u64,
    /// JESSE_MCP_QUEUE_RETENTION_SECS for API instances.
    pub queue_retention_secs: u64,
    /// Extra environment for worker processes (e.g. sandbox limits, planted secrets).
    pub worker_env: Vec<(&'static str, String)>,
    /// Extra environment for `jesse-mcp-api` processes (`start_api`), e.g. session caps.
    pub api_env: Vec<(&'static str, String)>,
}

impl Options {
    /// Where this app's store and queue live.
    pub fn backends(&self, data_dir: &Path) -> jesse_mcp_core::backends::Backends {
        jesse_mcp_core::backends::Backends {
            data_dir: data_dir.to_path_buf(),
            database_url: self.database_url.clone(),
            queue_url: self.queue_url.clone(),
            queue_namespace: self.queue_namespace.clone(),
        }
    }

    /// Postgres (a fresh database) and Redis (a fresh namespace): distributed mode.
    pub async fn distributed() -> Self {
        Self {
            database_url: Some(backends::fresh_postgres().await),
            queue_url: Some(backends::redis_url()),
            ..Self::default()
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            runners: 1,
            job_timeout_secs: 120,
            kill_grace_secs: 2,
            fixtures: &[],
            start_worker: true,
            exchange_endpoints: None,
            tokens: String::new(),
            heartbeat_secs: 10,
            database_url: None,
            queue_url: None,
            queue_namespace: backends::fresh_namespace(),
            shutdown_grace_secs: 10,
            requeue_after_secs: 60,
            queue_retention_secs: 3600,
            worker_env: Vec::new(),
            api_env: Vec::new(),
        }
    }
}

pub struct TestApp {
    pub base: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
    pub options: Options,
    workers: Vec<Child>,
    /// API instances in their own processes, beside the in-process one: `(base URL, process)`.
    apis: Vec<(String, Child)>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TestApp {
    pub async fn spawn(options: Options) -> TestApp {
        let dir = tempfile::tempdir().expect("tempdir");
        // Searchable by others (tempdirs are 0700), as a data dir under a
        // project is: as root, jobs switch to an unprivileged uid that must
        // reach the strategies and its scratch directory below this one.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod tempdir");
        let strategies = dir.path().join("strategies");
        copy_dir(&repo_root().join("strategies"), &strategies);
        for name in options.fixtures {
            copy_dir(
                &repo_root().join("tests/fixtures/strategies").join(name),
                &strategies.join(name),
            );
        }
        let config = ApiConfig {
            addr: "127.0.0.1:0".into(),
            backends: options.backends(&dir.path().join("data")),
            strategies_dir: strategies,
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            log_format: "pretty".into(),
            scheduler_tick_ms: 200,
            requeue_after_secs: options.requeue_after_secs,
            queue_retention_secs: options.queue_retention_secs,
            tokens: options.tokens.clone(),
            allowed_origins: Vec::new(),
            mcp_sessions: Default::default(),
        };
        let app = Application::build(&config).await.expect("build app");
        let port = app.port();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(app.run_until_stopped(async move {
            let _ = rx.await;
        }));
        let mut test_app = TestApp {
            base: format!("http://127.0.0.1:{port}"),
            port,
            dir,
            client: reqwest::Client::new(),
            options,
            workers: Vec::new(),
            apis: Vec::new(),
            shutdown: Some(tx),
        };
        if test_app.options.start_worker {
            test_app.start_worker();
        }
        test_app
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn strategies_dir(&self) -> PathBuf {
        self.dir.path().join("strategies")
    }

    /// The environment a worker or `jesse-mcp-api` subprocess needs for this app.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("JESSE_MCP_DATA_DIR", self.data_dir().display().to_string()),
            (
                "JESSE_MCP_STRATEGIES_DIR",
                self.strategies_dir().display().to_string(),
            ),
            ("JESSE_MCP_PYTHON", venv_python().display().to_string()),
            ("JESSE_MCP_WORKERS", self.options.runners.to_string()),
            (
                "JESSE_MCP_JOB_TIMEOUT_SECS",
                self.options.job_timeout_secs.to_string(),
            ),
            (
                "JESSE_MCP_KILL_GRACE_SECS",
                self.options.kill_grace_secs.to_string(),
            ),
            ("JESSE_MCP_POLL_MS", "100".into()),
            (
                "JESSE_MCP_HEARTBEAT_SECS",
                self.options.heartbeat_secs.to_string(),
            ),
            ("RUST_LOG", "info,sqlx=warn,apalis=warn,rmcp=warn".into()),
            (
                "JESSE_MCP_DATABASE_URL",
                self.options.database_url.clone().unwrap_or_default(),
            ),
            (
                "JESSE_MCP_QUEUE_URL",
                self.options.queue_url.clone().unwrap_or_default(),
            ),
            (
                "JESSE_MCP_QUEUE_NAMESPACE",
                self.options.queue_namespace.clone(),
            ),
            (
                "JESSE_MCP_REQUEUE_AFTER_SECS",
                self.options.requeue_after_secs.to_string(),
            ),
            (
                "JESSE_MCP_QUEUE_RETENTION_SECS",
                self.options.queue_retention_secs.to_string(),
            ),
            (
                "JESSE_MCP_SHUTDOWN_GRACE_SECS",
                self.options.shutdown_grace_secs.to_string(),
            ),
            (
                "JESSE_MCP_EXCHANGE_ENDPOINTS",
                self.options.exchange_endpoints.clone().unwrap_or_default(),
            ),
        ]
    }

    /// Starts a worker process; its log goes to `worker-N.log` in the test's
    /// directory and is printed if the test fails.
    pub fn start_worker(&mut self) {
        let log = self
            .dir
            .path()
            .join(format!("worker-{}.log", self.workers.len()));
        let file = std::fs::File::create(&log).expect("worker log");
        let mut command = Command::new(bin("jesse-mcp-worker"));
        command
            .envs(self.env())
            .envs(self.options.worker_env.iter().cloned())
            .stdin(Stdio::null())
            .stderr(file)
            .kill_on_drop(true);
        self.workers.push(command.spawn().expect("spawn worker"));
    }

    /// Starts a `jesse-mcp-api` process on the same store and queue (another
    /// "host"); returns its base URL. Its log goes to `api-N.log`.
    pub async fn start_api(&mut self) -> String {
        use tokio::io::AsyncBufReadExt;
        let log = self.dir.path().join(format!("api-{}.log", self.apis.len()));
        let file = std::fs::File::create(&log).expect("api log");
        let mut command = Command::new(bin("jesse-mcp-api"));
        command
            .envs(self.env())
            .env("JESSE_MCP_ADDR", "127.0.0.1:0")
            .env("JESSE_MCP_SCHEDULER_TICK_MS", "200")
            .envs(self.options.api_env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(file)
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn api");
        let stdout = child.stdout.take().expect("api stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the API process did not start within 30 s")
            .expect("api stdout")
            .unwrap_or_else(|| {
                panic!(
                    "the API process exited: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let base = line
            .rsplit_once(' ')
            .map(|(_, url)| url.to_string())
            .expect("listening line");
        self.apis.push((base.clone(), child));
        base
    }

    /// The pid of API process `index` (`start_api`).
    pub fn api_pid(&self, index: usize) -> u32 {
        self.apis[index].1.id().expect("the API process is running")
    }

    /// Kills API process `index` with SIGKILL.
    pub async fn kill_api(&mut self, index: usize) {
        let api = &mut self.apis[index].1;
        api.start_kill().expect("kill api");
        let _ = api.wait().await;
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to worker `index`.
    pub fn signal_worker(&self, index: usize, signal: i32) {
        let pid = self.workers[index].id().expect("worker is running");
        // SAFETY: kill(2) on a child we spawned and have not reaped.
        assert_eq!(
            unsafe { libc::kill(pid as i32, signal) },
            0,
            "kill({pid}, {signal})"
        );
    }

    /// Waits for worker `index` to exit; returns its exit code.
    pub async fn wait_worker(&mut self, index: usize, timeout: Duration) -> Option<i32> {
        let status = tokio::time::timeout(timeout, self.workers[index].wait())
            .await
            .unwrap_or_else(|_| panic!("worker {index} did not exit within {timeout:?}"))
            .expect("wait worker");
        status.code()
    }

    /// Waits until worker `index` has its runners up and polls the queue.
    pub async fn wait_worker_ready(&self, index: usize) {
        let log = self.dir.path().join(format!("worker-{index}.log"));
        let deadline = Instant::now() + Duration::from_secs(120);
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("worker ready")
        {
            assert!(
                Instant::now() < deadline,
                "worker {index} never became ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Worker `index`'s process id.
    pub fn worker_pid(&self, index: usize) -> u32 {
        self.workers[index].id().expect("worker is running")
    }

    /// The pids of worker `index`'s runner processes (its children).
    pub fn runner_pids(&self, index: usize) -> Vec<u32> {
        let worker = self.workers[index].id().expect("worker is running");
        std::fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| proc_stat(*pid).is_some_and(|stat| stat[1] == worker.to_string()))
            .collect()
    }

    /// Kills worker `index` with SIGKILL (its runners die with it).
    pub async fn kill_worker(&mut self, index: usize) {
        let worker = &mut self.workers[index];
        worker.start_kill().expect("kill worker");
        let _ = worker.wait().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.expect("GET");
        decode(response).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST");
        decode(response).await
    }

    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST");
        decode(response).await
    }

    pub async fn import_csv(&self, csv: &[u8]) -> Value {
        let path = format!(
            "/v1/candles/csv?exchange={}&symbol={SYMBOL}",
            EXCHANGE.replace(' ', "%20")
        );
        let (status, body) = self.post_raw(&path, "text/csv", csv.to_vec()).await;
        assert_eq!(status, 200, "csv import failed: {body}");
        body
    }

    pub async fn submit(&self, body: &Value) -> String {
        let (status, answer) = self.post_json("/v1/backtests", body).await;
        assert_eq!(status, 202, "submit failed: {answer}");
        answer["job_id"].as_str().expect("job_id").to_string()
    }

    /// Polls until the job is terminal; panics after `timeout`.
    pub async fn wait(&self, job_id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, job) = self.get(&format!("/v1/jobs/{job_id}")).await;
            assert_eq!(status, 200, "{job}");
            if matches!(
                job["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            ) {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {job_id} did not finish within {timeout:?}: {job}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls until the job reaches `status` (e.g. running); panics after `timeout`.
    pub async fn wait_for_status(&self, job_id: &str, status: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, job) = self.get(&format!("/v1/jobs/{job_id}")).await;
            if job["status"] == status {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {job_id} never became {status}: {job}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn job_count_with(&self, token: &str) -> usize {
        let response = self
            .client
            .get(self.url("/v1/jobs?limit=200"))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET");
        let (status, list) = decode(response).await;
        assert_eq!(status, 200, "{list}");
        list["jobs"].as_array().map_or(0, Vec::len)
    }

    pub async fn job_count(&self) -> usize {
        let (status, list) = self.get("/v1/jobs?limit=200").await;
        assert_eq!(status, 200);
        list["jobs"].as_array().map_or(0, Vec::len)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        for worker in &mut self.workers {
            let _ = worker.start_kill();
        }
        for (_, api) in &mut self.apis {
            let _ = api.start_kill();
        }
        if std::thread::panicking() {
            for i in 0..self.apis.len() {
                let log = self.dir.path().join(format!("api-{i}.log"));
                eprintln!(
                    "---- api-{i}.log ----\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            for i in 0..self.workers.len() {
                let log = self.dir.path().join(format!("worker-{i}.log"));
                eprintln!(
                    "---- worker-{i}.log ----\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
        }
    }
}

async fn decode(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let value = serde_json::from_str(&text).unwrap_or_else(|_| json!({"raw": text}));
    (status, value)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            if entry.file_name() != "__pycache__" {
                copy_dir(&entry.path(), &target);
            }
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Synthetic 1m candles for `[start, end)` days as CSV bytes.
/// The fields of `/proc/<pid>/stat` after the command name: `[0]` is the state,
/// `[1]` the parent pid, `[2]` the process group, `[3]` the session, `[16]` the
/// niceness. None once the process is gone.
pub fn proc_stat(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, fields) = stat.rsplit_once(')')?;
    Some(fields.split_whitespace().map(str::to_string).collect())
}

/// The children of `parent` (by /proc).
pub fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| proc_stat(*pid).is_some_and(|stat| stat[1] == parent.to_string()))
        .collect()
}

pub fn synthetic_csv(start: &str, end: &str, seed: u64) -> Vec<u8> {
    let start = jesse_mcp_core::time::parse_day(start).expect("start");
    let end = jesse_mcp_core::time::parse_day(end).expect("end");
    let candles = jesse_mcp_core::candles::synthetic(start, end, 40_000.0, seed);
    let mut out = Vec::new();
    jesse_mcp_core::candles::write_csv(&candles, &mut out).expect("csv");
    out
}

/// A backtest request body with the defaults the tests use.
pub fn backtest_body(strategy: &str, timeframe: &str, start: &str, end: &str) -> Value {
    json!({
        "strategy": strategy,
        "exchange": EXCHANGE,
        "symbol": SYMBOL,
        "timeframe": timeframe,
        "start_date": start,
        "end_date": end,
    })
}

/// Runs `tests/fixtures/reference_backtest.py` (bare Jesse) and returns its output.
pub async fn reference_backtest(spec: &Value) -> Value {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec_path = dir.path().join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).expect("write spec");
    let output = Command::new(venv_python())
        .arg(repo_root().join("tests/fixtures/reference_backtest.py"))
        .arg(&spec_path)
        .output()
        .await
        .expect("run reference backtest");
    assert!(
        output.status.success(),
        "reference backtest failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().expect("reference output");
    serde_json::from_str(last).expect("reference JSON")
}

/// Asserts two metric objects are identical: same keys, bit-identical numbers.
pub fn assert_metrics_identical(service: &Value, reference: &Value) {
    let (a, b) = (
        service.as_object().expect("metrics object"),
        reference.as_object().expect("metrics object"),
    );
    let keys_a: Vec<_> = a.keys().collect();
    let keys_b: Vec<_> = b.keys().collect();
    assert_eq!(keys_a, keys_b, "metric names differ");
    for (key, value) in a {
        let other = &b[key];
        match (value.as_f64(), other.as_f64()) {
            (Some(x), Some(y)) => assert_eq!(
                x.to_bits(),
                y.to_bits(),
                "metric {key}: service {x} vs Jesse {y}"
            ),
            _ => assert_eq!(value, other, "metric {key}"),
        }
    }
}
