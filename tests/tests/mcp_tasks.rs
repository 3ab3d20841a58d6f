//! The MCP Tasks extension (SEP-2663) over jobs, driven by rmcp's own client:
//! a backtest submitted as a task completes with the metrics REST reports, and
//! the task (it is the job) is read through another API process after the one
//! that created it was killed; `tasks/cancel` ends a long job cancelled; a
//! failed job is a completed task with a tool error; unknown ids are invalid
//! params; clients without the extension keep the job-id answer; a candle
//! import as a task ends with the job's report.

use std::time::{Duration, Instant};

use jesse_mcp_tests::fake_exchange::FakeExchange;
use jesse_mcp_tests::*;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CancelTaskParams, ClientCapabilities, ClientConfig,
    ErrorCode, GetTaskParams, Implementation, JsonObject, ProtocolVersion, TaskPayload, TaskStatus,
};
use rmcp::service::{RunningService, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(240);

type Client = RunningService<RoleClient, ClientConfig>;

/// An MCP client on `base`/mcp that declares the tasks extension (or not),
/// speaking `version` (2026-07-28: per-request metadata; older: a session).
async fn client(base: &str, tasks: bool, version: ProtocolVersion) -> Client {
    let capabilities = if tasks {
        ClientCapabilities::builder().enable_tasks().build()
    } else {
        ClientCapabilities::default()
    };
    ClientConfig::new(capabilities, Implementation::new("mcp-tasks-test", "0"))
        .with_protocol_version(version)
        .serve(StreamableHttpClientTransport::from_uri(format!(
            "{base}/mcp"
        )))
        .await
        .expect("MCP client")
}

fn call(tool: &str, args: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(tool.to_string()).with_arguments(args.as_object().unwrap().clone())
}

/// Calls a job-creating tool and returns the task id of the task it answered with.
async fn submit_task(client: &Client, tool: &str, args: Value) -> String {
    match client.call_tool_once(call(tool, args)).await.expect(tool) {
        CallToolResponse::Task(created) => {
            assert!(created.result_type.is_task());
            assert_eq!(created.task.status, TaskStatus::Working, "{created:?}");
            assert!(created.task.poll_interval_ms.is_some());
            assert_eq!(created.task.ttl_ms, None, "jobs do not expire");
            created.task.task_id
        }
        other => panic!("{tool} did not answer with a task: {other:?}"),
    }
}

/// Polls `tasks/get` (at the suggested interval) until the task is terminal.
async fn wait_task(client: &Client, task_id: &str) -> (TaskStatus, Option<String>, TaskPayload) {
    let deadline = Instant::now() + LONG;
    loop {
        let got = client
            .get_task(GetTaskParams::new(task_id))
            .await
            .expect("tasks/get")
            .task;
        assert_eq!(got.task.task_id, task_id);
        if got.status().is_terminal() {
            return (got.status(), got.task.status_message, got.payload);
        }
        assert!(
            Instant::now() < deadline,
            "task {task_id} did not finish: {got:?}"
        );
        let pause = got.task.poll_interval_ms.unwrap_or(1000).min(1000);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

fn completed(payload: TaskPayload) -> JsonObject {
    match payload {
        TaskPayload::Completed { result } => result,
        other => panic!("expected a completed payload: {other:?}"),
    }
}

/// The error of a request that must fail with a JSON-RPC error.
fn protocol_error<T: std::fmt::Debug>(result: Result<T, ServiceError>) -> rmcp::ErrorData {
    match result {
        Err(ServiceError::McpError(error)) => error,
        other => panic!("expected a JSON-RPC error: {other:?}"),
    }
}

/// Checks a completed backtest task's result against the REST result.
async fn assert_result_matches_rest(app: &TestApp, task_id: &str, result: &JsonObject) {
    assert_eq!(result["isError"], false, "{result:?}");
    let structured = &result["structuredContent"];
    assert_eq!(structured["job_id"], task_id);
    assert_eq!(structured["status"], "succeeded");
    assert_eq!(structured["kind"], "backtest");
    let text = result["content"][0]["text"].as_str().expect("text copy");
    assert_eq!(
        &serde_json::from_str::<Value>(text).unwrap(),
        structured,
        "the text copy is the structured content"
    );
    let (status, rest) = app.get(&format!("/v1/jobs/{task_id}/result")).await;
    assert_eq!(status, 200, "{rest}");
    assert!(
        rest["metrics"]["total"].as_f64().is_some(),
        "{}",
        rest["metrics"]
    );
    assert_metrics_identical(&structured["metrics"], &rest["metrics"]);
    assert_eq!(structured["provenance"], rest["provenance"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backtest_task_completes_with_rest_metrics_and_outlives_its_api() {
    let mut app = TestApp::spawn(Options::default()).await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-02-15", 3))
        .await;
    let body = backtest_body("SmaCross", "1h", "2024-01-20", "2024-02-10");

    let tasks = client(&app.base, true, ProtocolVersion::LATEST).await;
    let info = tasks.peer_info().expect("server info");
    assert!(
        info.capabilities.supports_tasks(),
        "the server advertises io.modelcontextprotocol/tasks: {:?}",
        info.capabilities
    );
    let task_id = submit_task(&tasks, "backtest", body.clone()).await;
    let (status, message, payload) = wait_task(&tasks, &task_id).await;
    assert_eq!(status, TaskStatus::Completed, "{message:?}");
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.starts_with("succeeded")),
        "{message:?}"
    );
    assert_result_matches_rest(&app, &task_id, &completed(payload)).await;

    // Without the extension: the job id at once, as before; tasks/* refused.
    for version in [ProtocolVersion::LATEST, ProtocolVersion::V_2025_11_25] {
        let plain = client(&app.base, false, version).await;
        match plain.call_tool_once(call("backtest", body.clone())).await {
            Ok(CallToolResponse::Complete(result)) => {
                let job_id = result.structured_content.unwrap()["job_id"]
                    .as_str()
                    .unwrap()
                    .to_string();
                assert_eq!(
                    app.wait(&job_id, LONG).await["status"],
                    "succeeded",
                    "{job_id}"
                );
            }
            other => panic!("a client without the extension got {other:?}"),
        }
        let refused = protocol_error(plain.get_task(GetTaskParams::new(&task_id)).await);
        assert_eq!(refused.code, ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY);
        plain.cancel().await.ok();
    }
    tasks.cancel().await.ok();

    // The task is the job in the store: created through one API process that
    // is then killed, it is read through another (a session-mode client there).
    let first = app.start_api().await;
    let creator = client(&first, true, ProtocolVersion::LATEST).await;
    let task_id = submit_task(&creator, "backtest", body.clone()).await;
    drop(creator);
    app.kill_api(0).await;
    let second = app.start_api().await;
    let reader = client(&second, true, ProtocolVersion::V_2025_11_25).await;
    let (status, message, payload) = wait_task(&reader, &task_id).await;
    assert_eq!(status, TaskStatus::Completed, "{message:?}");
    let result = completed(payload);
    assert!(
        result.get("resultType").is_none(),
        "a 2025-11-25 peer gets no resultType: {result:?}"
    );
    assert_result_matches_rest(&app, &task_id, &result).await;
    reader.cancel().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_cancel_failure_and_unknown_ids() {
    let app = TestApp::spawn(Options {
        fixtures: &["Sleeper", "Raiser"],
        ..Default::default()
    })
    .await;
    app.import_csv(&synthetic_csv("2024-01-01", "2024-02-15", 3))
        .await;
    let tasks = client(&app.base, true, ProtocolVersion::LATEST).await;

    // A long job: cancelled through tasks/cancel while it runs.
    let task_id = submit_task(
        &tasks,
        "backtest",
        backtest_body("Sleeper", "1h", "2024-01-20", "2024-02-10"),
    )
    .await;
    app.wait_for_status(&task_id, "running", LONG).await;
    let running = tasks
        .get_task(GetTaskParams::new(&task_id))
        .await
        .unwrap()
        .task;
    assert_eq!(running.status(), TaskStatus::Working);
    assert!(
        running
            .task
            .status_message
            .as_deref()
            .is_some_and(|m| m.starts_with("running")),
        "{running:?}"
    );
    tasks
        .cancel_task(CancelTaskParams::new(&task_id))
        .await
        .expect("tasks/cancel");
    let (status, message, payload) = wait_task(&tasks, &task_id).await;
    assert_eq!(status, TaskStatus::Cancelled, "{message:?}");
    assert!(matches!(payload, TaskPayload::Cancelled));
    assert_eq!(app.wait(&task_id, LONG).await["status"], "cancelled");
    // Cancelling a finished task is acknowledged; it stays as it ended.
    tasks
        .cancel_task(CancelTaskParams::new(&task_id))
        .await
        .expect("tasks/cancel of a finished task");

    // A job that fails is the tool's error: a completed task with isError.
    let task_id = submit_task(
        &tasks,
        "backtest",
        backtest_body("Raiser", "1h", "2024-01-20", "2024-02-10"),
    )
    .await;
    let (status, message, payload) = wait_task(&tasks, &task_id).await;
    assert_eq!(status, TaskStatus::Completed);
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.starts_with("failed: ")),
        "{message:?}"
    );
    let result = completed(payload);
    assert_eq!(result["isError"], true, "{result:?}");
    let error: Value =
        serde_json::from_str(result["content"][0]["text"].as_str().unwrap()).unwrap();
    let (_, job) = app.get(&format!("/v1/jobs/{task_id}")).await;
    assert_eq!(job["status"], "failed");
    assert_eq!(error["error"], job["error"]);

    // An invalid submit is a plain tool error, not a task.
    match tasks
        .call_tool_once(call(
            "backtest",
            backtest_body("NoSuchStrategy", "1h", "2024-01-20", "2024-02-10"),
        ))
        .await
        .unwrap()
    {
        CallToolResponse::Complete(result) => assert_eq!(result.is_error, Some(true)),
        other => panic!("an invalid submit answered {other:?}"),
    }

    // Unknown ids: invalid params, with the service's error code in the data.
    let unknown = "01JAAAAAAAAAAAAAAAAAAAAAAA";
    let error = protocol_error(tasks.get_task(GetTaskParams::new(unknown)).await);
    assert_eq!(error.code, ErrorCode::INVALID_PARAMS);
    assert!(error.message.contains("job_not_found"), "{error:?}");
    assert_eq!(
        error.data.as_ref().unwrap()["error"]["code"],
        json!("job_not_found")
    );
    let error = protocol_error(tasks.cancel_task(CancelTaskParams::new(unknown)).await);
    assert_eq!(error.code, ErrorCode::INVALID_PARAMS);
    tasks.cancel().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candle_import_task_completes_with_the_jobs_report() {
    const JAN_1: i64 = 1_704_067_200_000;
    let exchange = FakeExchange::start(&[("BTCUSDT", JAN_1, JAN_1 + 2 * 86_400_000)]).await;
    let app = TestApp::spawn(Options {
        exchange_endpoints: Some(
            json!({"Binance Spot": format!("{}/api", exchange.base)}).to_string(),
        ),
        ..Default::default()
    })
    .await;
    let tasks = client(&app.base, true, ProtocolVersion::LATEST).await;
    let task_id = submit_task(
        &tasks,
        "candles_import",
        json!({"exchange": "Binance Spot", "symbol": "BTC-USDT", "start_date": "2024-01-01", "end_date": "2024-01-03"}),
    )
    .await;
    let (status, message, payload) = wait_task(&tasks, &task_id).await;
    assert_eq!(status, TaskStatus::Completed, "{message:?}");
    let result = completed(payload);
    assert_eq!(result["isError"], false, "{result:?}");
    let structured = &result["structuredContent"];
    let (_, job) = app.get(&format!("/v1/jobs/{task_id}")).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(structured["job_id"], task_id);
    assert_eq!(structured["kind"], "candle_import");
    assert_eq!(structured["summary"], job["summary"]);
    assert_eq!(structured["summary"]["inserted"], 2880, "{structured}");
    tasks.cancel().await.ok();
}
