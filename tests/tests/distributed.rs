//! Distributed mode with real processes: API instances and workers on one
//! Postgres store and one Redis queue (simulated hosts on 127.0.0.1), and the
//! crashes that must not lose an acknowledged job (worker crash and SIGTERM on
//! both the embedded and the Redis queue).

use std::time::{Duration, Instant};

use jesse_mcp_tests::*;
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(180);

async fn get_at(app: &TestApp, base: &str, path: &str) -> (u16, Value) {
    let response = app
        .client
        .get(format!("{base}{path}"))
        .send()
        .await
        .expect("GET");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn post_at(app: &TestApp, base: &str, path: &str, body: &Value) -> (u16, Value) {
    let response = app
        .client
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn wait_at(app: &TestApp, base: &str, job_id: &str) -> Value {
    let deadline = Instant::now() + LONG;
    loop {
        let (status, job) = get_at(app, base, &format!("/v1/jobs/{job_id}")).await;
        assert_eq!(status, 200, "{job}");
        if matches!(
            job["status"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        ) {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {job_id} did not finish: {job}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn distributed_app(options: Options) -> TestApp {
    let app = TestApp::spawn(Options {
        fixtures: &["Sleeper"],
        ..options
    })
    .await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-02-15", 3))
        .await;
    app
}

fn short_backtest() -> Value {
    backtest_body("SmaCross", "1h", "2024-01-20", "2024-01-24")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_apis_and_workers_share_one_postgres_and_redis() {
    let mut app = distributed_app(Options::distributed().await).await;
    app.start_worker();
    let apis = [
        app.base.clone(),
        app.start_api().await,
        app.start_api().await,
    ];
    app.wait_worker_ready(0).await;
    app.wait_worker_ready(1).await;

    for base in &apis {
        let (status, ready) = get_at(&app, base, "/ready").await;
        assert_eq!(status, 200, "{base}: {ready}");
    }
    // Submit through every instance; read every job back through another one.
    let body = backtest_body("SmaCross", "1h", "2024-01-20", "2024-02-10");
    let mut ids = Vec::new();
    for i in 0..6 {
        let (status, answer) = post_at(&app, &apis[i % 3], "/v1/backtests", &body).await;
        assert_eq!(status, 202, "{answer}");
        ids.push(answer["job_id"].as_str().unwrap().to_string());
    }
    let mut metrics = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let job = wait_at(&app, &apis[(i + 1) % 3], id).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["attempts"], 1, "{job}");
        let (status, result) =
            get_at(&app, &apis[(i + 2) % 3], &format!("/v1/jobs/{id}/result")).await;
        assert_eq!(status, 200, "{result}");
        metrics.push(result["metrics"].clone());
    }
    for other in &metrics[1..] {
        assert_metrics_identical(other, &metrics[0]);
    }
    // Both workers took jobs off the shared queue.
    for i in 0..2 {
        let log = std::fs::read_to_string(app.dir.path().join(format!("worker-{i}.log"))).unwrap();
        assert!(
            log.contains("job succeeded"),
            "worker {i} ran no job:\n{log}"
        );
        assert!(
            log.contains("\"postgres\"") && log.contains("\"redis\""),
            "{log}"
        );
    }

    // Cancellation crosses processes: submitted on one API, cancelled on another,
    // while a worker process runs it.
    let (_, answer) = post_at(
        &app,
        &apis[1],
        "/v1/backtests",
        &backtest_body("Sleeper", "1h", "2024-01-20", "2024-01-23"),
    )
    .await;
    let id = answer["job_id"].as_str().expect("job id").to_string();
    let deadline = Instant::now() + LONG;
    while get_at(&app, &apis[2], &format!("/v1/jobs/{id}")).await.1["status"] != "running" {
        assert!(Instant::now() < deadline, "the Sleeper job never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, answer) =
        post_at(&app, &apis[2], &format!("/v1/jobs/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 200, "{answer}");
    let job = wait_at(&app, &apis[0], &id).await;
    assert_eq!(job["status"], "cancelled", "{job}");

    let metrics = app
        .client
        .get(format!("{}/metrics", apis[1]))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("jesse_mcp_jobs{kind=\"backtest\",status=\"succeeded\"} 6"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_api_mid_burst_loses_no_acknowledged_job() {
    let mut app = distributed_app(Options {
        requeue_after_secs: 2,
        ..Options::distributed().await
    })
    .await;
    let victim = app.start_api().await;

    // A burst of submits, four at a time, against the API that will be killed.
    let burst = {
        let (client, base, body) = (app.client.clone(), victim.clone(), short_backtest());
        tokio::spawn(async move {
            let accepted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let mut tasks = Vec::new();
            for lane in 0..4 {
                let (client, base, body, accepted) =
                    (client.clone(), base.clone(), body.clone(), accepted.clone());
                tasks.push(tokio::spawn(async move {
                    for _ in 0..15 {
                        let sent = client
                            .post(format!("{base}/v1/backtests"))
                            .json(&body)
                            .send()
                            .await;
                        let Ok(response) = sent else { return };
                        if response.status().as_u16() == 202
                            && let Ok(answer) = response.json::<Value>().await
                        {
                            accepted
                                .lock()
                                .unwrap()
                                .push(answer["job_id"].as_str().unwrap().to_string());
                        }
                    }
                    let _ = lane;
                }));
            }
            for task in tasks {
                let _ = task.await;
            }
            std::sync::Arc::try_unwrap(accepted)
                .unwrap()
                .into_inner()
                .unwrap()
        })
    };
    // Kill it once part of the burst is in.
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.job_count().await < 12 {
        assert!(Instant::now() < deadline, "the burst never got going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    app.kill_api(0).await;
    let accepted = burst.await.unwrap();
    assert!(
        accepted.len() >= 8,
        "only {} submits were accepted",
        accepted.len()
    );
    assert!(
        accepted.len() < 60,
        "the API was killed too late to test anything"
    );

    // Every acknowledged job completes, exactly once.
    for id in &accepted {
        let job = app.wait(id, LONG).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["attempts"], 1, "{job}");
    }
    // And nothing the dead API recorded is left behind in the queue.
    let deadline = Instant::now() + LONG;
    loop {
        let (_, list) = app.get("/v1/jobs?limit=200").await;
        let pending: Vec<_> = list["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["status"] == "queued" || j["status"] == "running")
            .collect();
        if pending.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "jobs left behind: {pending:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// kill -9 of a worker mid-backtest: the queue hands the task to a live worker,
/// which takes the job over once the lease expires and runs it again, once. The
/// tasks the dead worker had finished stay finished: none is delivered again.
async fn a_worker_killed_mid_backtest_loses_no_job(options: Options) {
    let mut app = distributed_app(Options {
        heartbeat_secs: 1,
        ..options
    })
    .await;
    let finished = app
        .submit(&backtest_body("SmaCross", "1h", "2024-01-20", "2024-01-23"))
        .await;
    assert_eq!(app.wait(&finished, LONG).await["status"], "succeeded");
    // 72 hourly candles at 0.2 s each: long enough to die in the middle.
    let job_id = app
        .submit(&backtest_body("Sleeper", "1h", "2024-01-20", "2024-01-23"))
        .await;
    app.wait_for_status(&job_id, "running", LONG).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    app.kill_worker(0).await;
    app.start_worker();
    let job = app.wait(&job_id, LONG).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(
        job["attempts"], 2,
        "run again once, on the live worker: {job}"
    );
    let (status, result) = app.get(&format!("/v1/jobs/{job_id}/result")).await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(app.job_count().await, 2);
    let log = std::fs::read_to_string(app.dir.path().join("worker-1.log")).unwrap();
    assert!(
        !log.contains("no longer runnable"),
        "a task the dead worker had finished was delivered again: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_backtest_loses_no_job_on_redis() {
    a_worker_killed_mid_backtest_loses_no_job(Options::distributed().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_backtest_loses_no_job_on_sqlite() {
    a_worker_killed_mid_backtest_loses_no_job(Options::default()).await;
}

/// The worker running a job stalls (SIGSTOP) and the queue loses its data (a
/// Redis without its append-only file), so no queue will hand the job on: the
/// lost-job sweep puts it back once its lease has been expired for
/// JESSE_MCP_REQUEUE_AFTER_SECS, a live worker takes it over, and the stalled
/// worker, woken up, can no longer record anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_worker_under_a_lost_queue_loses_no_job() {
    let mut app = distributed_app(Options {
        heartbeat_secs: 1,
        requeue_after_secs: 2,
        ..Options::distributed().await
    })
    .await;
    let job_id = app
        .submit(&backtest_body("Sleeper", "1h", "2024-01-20", "2024-01-23"))
        .await;
    app.wait_for_status(&job_id, "running", LONG).await;
    app.signal_worker(0, libc::SIGSTOP);
    let lost = backends::lose_namespace(&app.options.queue_namespace).await;
    assert!(lost > 0, "the queue had keys to lose");
    app.start_worker();
    let job = app.wait(&job_id, LONG).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["attempts"], 2, "taken over by the live worker: {job}");

    app.signal_worker(0, libc::SIGCONT);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = app.get(&format!("/v1/jobs/{job_id}")).await.1;
    assert_eq!(after["status"], "succeeded", "{after}");
    assert_eq!(
        after["attempts"], 2,
        "the woken worker changed nothing: {after}"
    );
    assert_eq!(app.get(&format!("/v1/jobs/{job_id}/result")).await.0, 200);
    assert_eq!(app.job_count().await, 1);
    app.kill_worker(0).await;
}

/// SIGTERM: the worker stops taking jobs, gives running ones the grace period,
/// then hands them back; another worker finishes them, with no attempt lost.
async fn sigterm_hands_running_jobs_back(options: Options) {
    let mut app = distributed_app(Options {
        shutdown_grace_secs: 1,
        ..options
    })
    .await;
    let job_id = app
        .submit(&backtest_body("Sleeper", "1h", "2024-01-20", "2024-01-23"))
        .await;
    app.wait_for_status(&job_id, "running", LONG).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let signalled = Instant::now();
    app.signal_worker(0, libc::SIGTERM);
    assert_eq!(app.wait_worker(0, Duration::from_secs(30)).await, Some(0));
    let stopped_after = signalled.elapsed();
    let job = app.get(&format!("/v1/jobs/{job_id}")).await.1;
    assert_eq!(job["status"], "queued", "handed back, not failed: {job}");
    let log = std::fs::read_to_string(app.dir.path().join("worker-0.log")).unwrap();
    assert!(log.contains("handed back to the queue"), "{log}");

    app.start_worker();
    let job = app.wait(&job_id, LONG).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(
        job["attempts"], 1,
        "the handed-back attempt is not counted: {job}"
    );
    assert!(stopped_after < Duration::from_secs(15), "{stopped_after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_running_jobs_back_on_redis() {
    sigterm_hands_running_jobs_back(Options::distributed().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_running_jobs_back_on_sqlite() {
    sigterm_hands_running_jobs_back(Options::default()).await;
}
