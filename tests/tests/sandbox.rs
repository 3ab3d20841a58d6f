//! The runner sandbox (worker/src/sandbox.rs) against hostile strategies, in
//! backtests and in deep validation: no writes outside the job's scratch
//! directory, no network, no service secrets in the environment, an
//! unprivileged (or capability-less) user, a memory limit with a clear error,
//! and no state from one job's code in the next job on the same runner.

use std::io::ErrorKind;
use std::net::TcpListener;
use std::time::Duration;

use jesse_mcp_tests::*;
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(180);
const START: &str = "2024-01-15";
const END: &str = "2024-02-25";
const START_MS: i64 = 1_705_276_800_000;
const END_MS: i64 = 1_708_819_200_000;
/// Planted in the worker's environment; no job may see it.
const SECRET: &str = "planted-secret-6b1f0e";

fn hostile_options(fixtures: &'static [&'static str]) -> Options {
    Options {
        fixtures,
        worker_env: vec![
            ("JESSE_MCP_RUNNER_MEMORY_MB", "1536".into()),
            ("JESSE_MCP_TOKENS", format!("admin:{SECRET}")),
            (
                "DATABASE_URL",
                format!("postgres://jesse:{SECRET}@db/jesse"),
            ),
            ("AWS_SECRET_ACCESS_KEY", SECRET.into()),
        ],
        ..Default::default()
    }
}

async fn app_with_candles(options: Options) -> (TestApp, std::path::PathBuf) {
    let app = TestApp::spawn(options).await;
    let csv = synthetic_csv("2024-01-01", "2024-03-01", 11);
    let csv_path = app.dir.path().join("candles.csv");
    std::fs::write(&csv_path, &csv).unwrap();
    app.import_csv(&csv).await;
    app.wait_worker_ready(0).await;
    (app, csv_path)
}

/// The probe's source with its listener port and file tag filled in.
fn probe_source(port: u16, tag: &str) -> String {
    let template = std::fs::read_to_string(
        repo_root().join("tests/fixtures/strategies/SandboxProbe/__init__.py"),
    )
    .unwrap();
    assert!(template.contains("PORT = 0\n") && template.contains("TAG = \"tag\"\n"));
    template
        .replace("PORT = 0\n", &format!("PORT = {port}\n"))
        .replace("TAG = \"tag\"\n", &format!("TAG = \"{tag}\"\n"))
}

/// The JSON report the probe raised with, out of an error message.
fn probe_report(message: &str) -> Value {
    let start = message
        .find("REPORT ")
        .unwrap_or_else(|| panic!("no probe report in: {message}"))
        + "REPORT ".len();
    serde_json::Deserializer::from_str(&message[start..])
        .into_iter::<Value>()
        .next()
        .expect("a JSON report")
        .expect("valid JSON")
}

/// Whether this test runs as root with a venv uid 65534 can run: then jobs
/// must switch to that uid.
fn uid_switch_possible() -> bool {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0");
    root && std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(venv_python())
        .args(["-c", "import jesse.version, numpy"])
        .status()
        .is_ok_and(|status| status.success())
}

async fn sandbox_status(app: &TestApp) -> Value {
    let (status, ready) = app.get("/ready").await;
    assert_eq!(status, 200, "{ready}");
    ready["sandbox"].clone()
}

/// Every containment the probe tried held.
fn assert_contained(report: &Value, sandbox: &Value, tag: &str, app: &TestApp, where_: &str) {
    let text = |key: &str| report[key].as_str().unwrap_or_default().to_string();
    // (a) no writes outside the scratch directory; writing inside it works.
    assert!(
        text("write_strategies_dir").starts_with("denied"),
        "{where_}: {report}"
    );
    assert!(
        text("write_tmp").starts_with("denied"),
        "{where_}: {report}"
    );
    assert_eq!(text("write_scratch"), "written", "{where_}: {report}");
    assert!(
        !app.strategies_dir()
            .join("SandboxProbe/planted.txt")
            .exists(),
        "{where_}: a file was planted in the strategies directory"
    );
    assert!(
        !std::path::Path::new(&format!("/tmp/jesse-mcp-sandbox-{tag}.txt")).exists(),
        "{where_}: a file was planted in /tmp"
    );
    // (b) no network.
    assert!(text("tcp").starts_with("failed"), "{where_}: {report}");
    // (c) a clean environment: none of the service's variables, no secret.
    assert_eq!(report["secret_seen"], false, "{where_}: {report}");
    for key in report["env_keys"].as_array().unwrap() {
        let key = key.as_str().unwrap();
        assert!(
            !key.starts_with("JESSE_MCP") && !key.contains("SECRET") && key != "DATABASE_URL",
            "{where_}: the job sees {key}: {report}"
        );
    }
    // (f) an unprivileged uid, or (when that uid cannot read the Python
    // install, as with a venv under a 0700 /root) uid 0 without any capability.
    let id = text("id");
    if sandbox["uid"] == true {
        assert!(id.starts_with("uid=65534"), "{where_}: {report}");
        assert_eq!(report["uid"], 65534);
    } else {
        assert_eq!(report["cap_eff"], "0000000000000000", "{where_}: {report}");
    }
    assert!(
        id.starts_with("uid="),
        "{where_}: os.popen('id') ran: {report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_code_is_contained_in_backtests_and_deep_validation() {
    let (app, _) = app_with_candles(hostile_options(&[])).await;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();

    let sandbox = sandbox_status(&app).await;
    for part in [
        "enabled",
        "filesystem",
        "network",
        "environment",
        "rlimits",
        "sockets",
    ] {
        assert_eq!(sandbox[part], true, "/ready sandbox.{part}: {sandbox}");
    }
    if uid_switch_possible() {
        // ops/python-env.sh puts the venv where the runner uid can read it
        // when run as root, so the switch must be on (not the fallback).
        assert_eq!(sandbox["uid"], true, "/ready sandbox.uid: {sandbox}");
    }

    // A backtest: the probe runs at import and reports through its error.
    let tag = format!("bt-{}", std::process::id());
    let dir = app.strategies_dir().join("SandboxProbe");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("__init__.py"), probe_source(port, &tag)).unwrap();
    let job_id = app
        .submit(&backtest_body("SandboxProbe", "1h", START, END))
        .await;
    let job = app.wait(&job_id, LONG).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "strategy_load_error", "{job}");
    let report = probe_report(job["error"]["message"].as_str().unwrap());
    assert_contained(&report, &sandbox, &tag, &app, "backtest");

    // Deep validation of submitted code.
    let tag = format!("dv-{}", std::process::id());
    let (status, answer) = app
        .post_json(
            "/v1/strategies/validate",
            &json!({"name": "SandboxProbe", "code": probe_source(port, &tag), "deep": true}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let message = answer["deep"]["errors"][0]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("deep validation reported no error: {answer}"));
    let report = probe_report(message);
    assert_contained(&report, &sandbox, &tag, &app, "deep validation");

    // The listener never saw a connection.
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("a strategy reached the listener: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_over_its_memory_limit_fails_with_memory_limit_exceeded() {
    let (app, _) = app_with_candles(hostile_options(&["MemoryHog"])).await;
    let job_id = app
        .submit(&backtest_body("MemoryHog", "1h", START, END))
        .await;
    let job = app.wait(&job_id, LONG).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "memory_limit_exceeded", "{job}");
    assert_eq!(job["attempts"], 1, "a limit is not retried: {job}");

    let code = std::fs::read_to_string(app.strategies_dir().join("MemoryHog/__init__.py")).unwrap();
    let (status, answer) = app
        .post_json(
            "/v1/strategies/validate",
            &json!({"name": "MemoryHog", "code": code, "deep": true}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["deep"]["status"], "failed", "{answer}");
    let job_id = answer["deep"]["job_id"].as_str().unwrap();
    let (_, job) = app.get(&format!("/v1/jobs/{job_id}")).await;
    assert_eq!(job["error"]["code"], "memory_limit_exceeded", "{job}");

    // The runner carries on.
    let job_id = app
        .submit(&backtest_body("SmaCross", "1h", START, END))
        .await;
    assert_eq!(app.wait(&job_id, LONG).await["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_time_and_file_size_limits_end_jobs_with_their_codes() {
    let mut options = hostile_options(&["CpuHog", "FileHog"]);
    options
        .worker_env
        .push(("JESSE_MCP_RUNNER_CPU_SECS", "3".into()));
    options
        .worker_env
        .push(("JESSE_MCP_RUNNER_FILE_SIZE_MB", "8".into()));
    let (app, _) = app_with_candles(options).await;
    for (strategy, code) in [
        ("CpuHog", "cpu_limit_exceeded"),
        ("FileHog", "file_size_limit_exceeded"),
    ] {
        let job_id = app.submit(&backtest_body(strategy, "1h", START, END)).await;
        let job = app.wait(&job_id, LONG).await;
        assert_eq!(job["status"], "failed", "{strategy}: {job}");
        assert_eq!(job["error"]["code"], code, "{strategy}: {job}");
        assert_eq!(job["attempts"], 1, "a limit is not retried: {job}");
    }
    assert_eq!(sandbox_status(&app).await["rlimits"], true);
    let log = std::fs::read_to_string(app.dir.path().join("worker-0.log")).unwrap();
    assert!(
        log.contains("CPU 3 s, file size 8 MiB"),
        "the worker says at start-up which limits it enforces: {log}"
    );
    // The runner carries on, within the same limits.
    let job_id = app
        .submit(&backtest_body("SmaCross", "1h", START, END))
        .await;
    assert_eq!(app.wait(&job_id, LONG).await["status"], "succeeded");
}

/// SmaCross on the one runner, compared with bare Jesse.
async fn assert_honest_backtest_equals_jesse(app: &TestApp, reference: &Value, after: &str) {
    let job_id = app
        .submit(&backtest_body("SmaCross", "1h", START, END))
        .await;
    let job = app.wait(&job_id, LONG).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (_, result) = app.get(&format!("/v1/jobs/{job_id}/result")).await;
    assert_ne!(result["metrics"]["sharpe_ratio"], 42.0, "after {after}");
    assert_metrics_identical(&result["metrics"], &reference["metrics"]);
    // It ran in the process the runner forked and warmed up ahead of it, after the
    // previous job had ended (a process forked on the spot reports job_fork_ms).
    let timings = &result["timings"];
    assert!(
        timings["job_spare_wait_ms"].is_number(),
        "after {after}: {timings}"
    );
    assert!(timings["job_fork_ms"].is_null(), "after {after}: {timings}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strategy_patching_jesse_and_numpy_does_not_change_the_next_job() {
    let (app, csv_path) = app_with_candles(hostile_options(&["Patcher"])).await;
    let reference = reference_backtest(&json!({
        "csv": csv_path, "exchange": EXCHANGE, "symbol": SYMBOL, "strategy": "SmaCross",
        "strategy_path": app.strategies_dir().join("SmaCross/__init__.py"), "timeframe": "1h",
        "start_ms": START_MS, "end_ms": END_MS, "warmup_minutes": 240 * 60,
        "config": {"starting_balance": 10000, "fee": 0.001, "type": "futures", "futures_leverage": 1,
                   "futures_leverage_mode": "cross", "exchange": EXCHANGE, "warm_up_candles": 240},
    }))
    .await;
    assert!(
        reference["metrics"]["total"].as_i64().unwrap() > 5,
        "{reference}"
    );

    // The patch works in the patcher's own job (so the check below can fail).
    let job_id = app
        .submit(&backtest_body("Patcher", "1h", START, END))
        .await;
    let job = app.wait(&job_id, LONG).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (_, patched) = app.get(&format!("/v1/jobs/{job_id}/result")).await;
    assert_eq!(patched["metrics"]["sharpe_ratio"], 42.0, "{patched}");
    assert_honest_backtest_equals_jesse(&app, &reference, "a patching backtest").await;

    // Deep validation runs the module too.
    let code = std::fs::read_to_string(app.strategies_dir().join("Patcher/__init__.py")).unwrap();
    let (status, answer) = app
        .post_json(
            "/v1/strategies/validate",
            &json!({"name": "Patcher", "code": code, "deep": true}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["deep"]["valid"], true, "{answer}");
    assert_honest_backtest_equals_jesse(&app, &reference, "a patching deep validation").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_sandbox_off_ready_says_so_and_jobs_still_get_fresh_processes() {
    let mut options = hostile_options(&["Patcher"]);
    options.worker_env.push(("JESSE_MCP_SANDBOX", "off".into()));
    let (app, csv_path) = app_with_candles(options).await;
    let sandbox = sandbox_status(&app).await;
    assert_eq!(sandbox["enabled"], false, "{sandbox}");
    assert_eq!(sandbox["filesystem"], false, "{sandbox}");
    let log = std::fs::read_to_string(app.dir.path().join("worker-0.log")).unwrap();
    assert!(log.contains("JESSE_MCP_SANDBOX=off"), "{log}");

    let reference = reference_backtest(&json!({
        "csv": csv_path, "exchange": EXCHANGE, "symbol": SYMBOL, "strategy": "SmaCross",
        "strategy_path": app.strategies_dir().join("SmaCross/__init__.py"), "timeframe": "1h",
        "start_ms": START_MS, "end_ms": END_MS, "warmup_minutes": 240 * 60,
        "config": {"starting_balance": 10000, "fee": 0.001, "type": "futures", "futures_leverage": 1,
                   "futures_leverage_mode": "cross", "exchange": EXCHANGE, "warm_up_candles": 240},
    }))
    .await;
    let job_id = app
        .submit(&backtest_body("Patcher", "1h", START, END))
        .await;
    assert_eq!(app.wait(&job_id, LONG).await["status"], "succeeded");
    assert_honest_backtest_equals_jesse(&app, &reference, "a patching backtest, sandbox off").await;
}

/// A SmaCross backtest over the test's range: its result.
async fn smacross_result(app: &TestApp) -> Value {
    let job_id = app
        .submit(&backtest_body("SmaCross", "1h", START, END))
        .await;
    let job = app.wait(&job_id, LONG).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    app.get(&format!("/v1/jobs/{job_id}/result")).await.1
}

/// The process forked ahead of a job is killed before the job comes (as the OOM
/// killer might): the job still runs, in a process forked for it, with the same
/// numbers, and the job after it finds a spare again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_spare_was_killed_runs_in_a_process_forked_for_it() {
    let (app, _) = app_with_candles(hostile_options(&[])).await;
    let first = smacross_result(&app).await;
    assert!(first["timings"]["job_fork_ms"].is_null(), "{first}");

    let runner = app.runner_pids(0);
    assert_eq!(runner.len(), 1, "one runner: {runner:?}");
    let mut spares = Vec::new();
    for _ in 0..600 {
        spares = children_of(runner[0]);
        if !spares.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(spares.len(), 1, "the runner's spare: {spares:?}");
    // SAFETY: signalling a process of this test's own worker.
    assert_eq!(unsafe { libc::kill(spares[0] as i32, libc::SIGKILL) }, 0);

    let second = smacross_result(&app).await;
    assert_metrics_identical(&second["metrics"], &first["metrics"]);
    assert!(second["timings"]["job_fork_ms"].is_number(), "{second}");
    assert_eq!(app.runner_pids(0), runner, "the runner was replaced");

    let third = smacross_result(&app).await;
    assert_metrics_identical(&third["metrics"], &first["metrics"]);
    assert!(third["timings"]["job_fork_ms"].is_null(), "{third}");
}

/// Socket files under `dir` (not following symbolic links), `depth` levels down.
fn sockets_under(dir: &std::path::Path, depth: u32, found: &mut Vec<std::path::PathBuf>) {
    use std::os::unix::fs::FileTypeExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_socket() {
            found.push(entry.path());
        } else if kind.is_dir() && depth > 0 {
            sockets_under(&entry.path(), depth - 1, found);
        }
    }
}

/// The pathname UNIX sockets of local services on this machine: a Postgres
/// socket, MariaDB/MySQL and Redis sockets where they exist, and every `*.sock`,
/// `.s.PGSQL.*` or other socket file under /run, /var/run and /tmp.
fn local_sockets() -> Vec<String> {
    let mut found = Vec::new();
    for dir in ["/run", "/var/run", "/tmp"] {
        sockets_under(std::path::Path::new(dir), 4, &mut found);
    }
    for known in [
        "/var/run/postgresql/.s.PGSQL.5432",
        "/run/mysqld/mysqld.sock",
        "/var/run/mysqld/mysqld.sock",
        "/var/lib/mysql/mysql.sock",
        "/run/redis/redis-server.sock",
        "/var/run/redis/redis-server.sock",
        "/run/redis/redis.sock",
        "/tmp/redis.sock",
        "/var/run/docker.sock",
    ] {
        if std::path::Path::new(known).exists() {
            found.push(known.into());
        }
    }
    let mut paths: Vec<String> = found
        .into_iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// A strategy connecting to local services' pathname UNIX sockets (Landlock
/// does not cover them, they are often 0777, and local auth is often `trust`)
/// is refused at `socket()` whatever the host's configuration; the honest job
/// after it is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_sockets_of_local_services_are_refused() {
    let (app, csv_path) = app_with_candles(hostile_options(&[])).await;
    let sandbox = sandbox_status(&app).await;
    assert_eq!(
        sandbox["sockets"], true,
        "/ready sandbox.sockets: {sandbox}"
    );
    let paths = local_sockets();
    let postgres = "/var/run/postgresql/.s.PGSQL.5432";
    assert!(
        paths.iter().any(|p| p == postgres),
        "this machine's Postgres socket is where the test expects it: {paths:?}"
    );

    let template = std::fs::read_to_string(
        repo_root().join("tests/fixtures/strategies/SocketProbe/__init__.py"),
    )
    .unwrap();
    assert!(template.contains("PATHS = []\n"));
    let source = template.replace(
        "PATHS = []\n",
        &format!("PATHS = {}\n", serde_json::to_string(&paths).unwrap()),
    );
    let dir = app.strategies_dir().join("SocketProbe");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("__init__.py"), source).unwrap();
    let job_id = app
        .submit(&backtest_body("SocketProbe", "1h", START, END))
        .await;
    let job = app.wait(&job_id, LONG).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "strategy_load_error", "{job}");
    let report = probe_report(job["error"]["message"].as_str().unwrap());

    let tried = report["paths"].as_object().expect("paths tried");
    assert_eq!(tried.len(), paths.len(), "{report}");
    assert_eq!(tried[postgres]["exists"], true, "{report}");
    let permission = |attempt: &Value| [1, 13].contains(&attempt["errno"].as_i64().unwrap_or(-1));
    for path in &paths {
        for kind in ["stream", "dgram"] {
            let attempt = &tried[path.as_str()][kind];
            assert!(
                permission(attempt),
                "{path} ({kind}) was not refused with EPERM/EACCES: {attempt}"
            );
        }
    }
    assert!(permission(&report["dgram_pair"]), "{report}");
    // What Python itself may need (multiprocessing.Pipe) still works.
    assert_eq!(report["stream_pair"], "ping", "{report}");
    assert_eq!(report["inherited_sockets"], json!([]), "{report}");
    eprintln!("refused: {paths:?}");

    let reference = reference_backtest(&json!({
        "csv": csv_path, "exchange": EXCHANGE, "symbol": SYMBOL, "strategy": "SmaCross",
        "strategy_path": app.strategies_dir().join("SmaCross/__init__.py"), "timeframe": "1h",
        "start_ms": START_MS, "end_ms": END_MS, "warmup_minutes": 240 * 60,
        "config": {"starting_balance": 10000, "fee": 0.001, "type": "futures", "futures_leverage": 1,
                   "futures_leverage_mode": "cross", "exchange": EXCHANGE, "warm_up_candles": 240},
    }))
    .await;
    assert_honest_backtest_equals_jesse(&app, &reference, "a socket probe").await;
}
