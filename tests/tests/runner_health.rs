//! Runners that cannot be replaced (issue 34, item 3). A worker respawns a dead
//! runner from its own binary, not from the file at its path (which a rebuild
//! in a shared build directory may have replaced); when no runner can start,
//! /health and /ready say so, /metrics counts the failures, and a claimed job
//! fails with `runner_unavailable` within JESSE_MCP_RUNNER_UNAVAILABLE_SECS
//! instead of staying `running`.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use jesse_mcp_tests::*;
use serde_json::Value;

/// Runner start-up takes seconds, but minutes on a loaded 2-core machine.
const LONG: Duration = Duration::from_secs(300);

fn kill(pid: u32) {
    // SAFETY: kill(2) on a runner process of a worker this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
}

async fn wait_log(log: &Path, needle: &str) {
    let deadline = Instant::now() + LONG;
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains(needle)
    {
        assert!(
            Instant::now() < deadline,
            "{needle:?} never appeared in {}:\n{}",
            log.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `path` until `runners.ready` is `ready`; returns the body.
async fn wait_runners_ready(app: &TestApp, path: &str, ready: i64, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (_, body) = app.get(path).await;
        if body["runners"]["ready"] == ready {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never reported {ready} ready runner(s) within {timeout:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn metric(app: &TestApp, name: &str) -> f64 {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} is not in /metrics:\n{text}"))
}

/// Another checkout rebuilt the worker's binary in the shared build directory
/// (here: the file is replaced by one that cannot start): the runner killed
/// afterwards is replaced from the binary the worker runs, and the job runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_runner_is_replaced_from_the_running_binary_after_the_file_was_rebuilt() {
    let app = TestApp::spawn(Options {
        start_worker: false,
        ..Default::default()
    })
    .await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-02-15", 3))
        .await;
    let exe = app.dir.path().join("bin/jesse-mcp-worker");
    std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
    std::fs::copy(bin("jesse-mcp-worker"), &exe).expect("copy the worker binary");
    let log = app.dir.path().join("worker-copy.log");
    let mut worker = tokio::process::Command::new(&exe)
        .envs(app.env())
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the copied worker");
    wait_log(&log, "worker ready").await;
    // What a rebuild does: a new file renamed over the old path.
    let rebuilt = exe.with_extension("new");
    std::fs::write(
        &rebuilt,
        "#!/bin/sh\necho \"ModuleNotFoundError: No module named 'math'\" >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(
        &rebuilt,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::rename(&rebuilt, &exe).unwrap();
    let runners = children_of(worker.id().expect("worker is running"));
    assert_eq!(runners.len(), 1, "{runners:?}");
    kill(runners[0]);

    let job_id = app
        .submit(&backtest_body("SmaCross", "1h", "2024-01-20", "2024-02-10"))
        .await;
    let job = app.wait(&job_id, LONG).await;
    assert_eq!(
        job["status"],
        "succeeded",
        "the replacement runner must start from the worker's own binary: {job}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    wait_runners_ready(&app, "/ready", 1, Duration::from_secs(10)).await;
    assert_eq!(
        metric(&app, "jesse_mcp_runner_start_failures_total").await,
        0.0
    );
    let _ = worker.start_kill();
}

/// The venv the worker was started with disappears: every respawn fails.
/// /health and /ready report no ready runner, /metrics counts the failures,
/// and a job fails with `runner_unavailable` within the bound; once the venv
/// is back the worker recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_fails_as_runner_unavailable_when_no_runner_can_start() {
    // The worker's python through a link this test can take away.
    let links = tempfile::tempdir().unwrap();
    let venv = links.path().join("venv");
    let real_venv = std::fs::canonicalize(repo_root().join(".venv")).expect("the venv");
    std::os::unix::fs::symlink(&real_venv, &venv).unwrap();
    let bound = 5;
    let app = TestApp::spawn(Options {
        worker_env: vec![
            (
                "JESSE_MCP_PYTHON",
                venv.join("bin/python").display().to_string(),
            ),
            ("JESSE_MCP_RUNNER_UNAVAILABLE_SECS", bound.to_string()),
        ],
        ..Default::default()
    })
    .await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-02-15", 3))
        .await;
    wait_log(&app.dir.path().join("worker-0.log"), "worker ready").await;
    wait_runners_ready(&app, "/ready", 1, Duration::from_secs(15)).await;

    std::fs::remove_file(&venv).unwrap();
    let runners = app.runner_pids(0);
    assert_eq!(runners.len(), 1, "{runners:?}");
    kill(runners[0]);
    let ready = wait_runners_ready(&app, "/ready", 0, Duration::from_secs(10)).await;
    assert_eq!(ready["runners"]["total"], 1, "{ready}");
    wait_runners_ready(&app, "/health", 0, Duration::from_secs(2)).await;

    let submitted = Instant::now();
    let job_id = app
        .submit(&backtest_body("SmaCross", "1h", "2024-01-20", "2024-02-10"))
        .await;
    let job = app.wait(&job_id, Duration::from_secs(60)).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "runner_unavailable", "{job}");
    let waited = submitted.elapsed();
    assert!(
        waited < Duration::from_secs(bound + 10),
        "failed after {waited:?}, the bound is {bound} s"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&app, "jesse_mcp_runner_start_failures_total").await < 1.0 {
        assert!(Instant::now() < deadline, "start failures never counted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The venv is back: the next respawn (backoff at most 30 s) succeeds.
    std::os::unix::fs::symlink(&real_venv, &venv).unwrap();
    wait_runners_ready(&app, "/ready", 1, LONG).await;
    let job_id = app
        .submit(&backtest_body("SmaCross", "1h", "2024-01-20", "2024-02-10"))
        .await;
    let job = app.wait(&job_id, LONG).await;
    assert_eq!(job["status"], "succeeded", "{job}");
}
