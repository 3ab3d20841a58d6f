//! The MCP Tasks extension (`io.modelcontextprotocol/tasks`, SEP-2663) over jobs.
//! A task is a job: the task id is the job id, `tasks/get` reads the job (and,
//! once it succeeded, its result) from the store, `tasks/cancel` cancels the job.
//! Nothing about a task is held in this process, so a task outlives the API
//! instance that created it and answers through any other; rmcp's in-memory
//! `TaskManager` (which forgets tasks after a TTL) is deliberately not used.
//!
//! SEP-2663 has no per-tool marker, no `tasks/list` and no `tasks/result`: the
//! server advertises the extension, decides per call whether to answer with a
//! task, and inlines the final `CallToolResult` in `tasks/get`. Here every tool
//! that returns [`Submitted`] (a job id to poll) answers with a task when the
//! request declares the extension, and as before when it does not.

use jesse_mcp_core::ErrorBody;
use jesse_mcp_core::jobs::JobStatus;
use rmcp::handler::server::tool::schema_for_output;
use rmcp::model::{
    CallToolResponse, CallToolResult, ContentBlock, CreateTaskResult, DetailedTask, GetTaskResult,
    JsonObject, ProtocolVersion, Task, TaskPayload, TaskStatus, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::mcp::Submitted;
use crate::service::{JobView, ResultQuery, Service};

/// Suggested pause between `tasks/get` polls: backtests take seconds to minutes.
const POLL_INTERVAL_MS: u64 = 1_000;

/// Whether this request declared the tasks extension (per request, or at
/// `initialize` for a session-mode client).
pub(crate) fn client_declared(ctx: &RequestContext<RoleServer>) -> bool {
    ctx.client_capabilities()
        .is_some_and(|caps| caps.supports_tasks())
}

/// A job-creating tool is one whose output is [`Submitted`]: the same test
/// picks up every future submit tool without a list to keep in step.
pub(crate) fn is_job_tool(tool: &Tool) -> bool {
    // Tools are listed with portable schemas (`mcp::make_portable`): compare like with like.
    static SUBMITTED: std::sync::LazyLock<Value> = std::sync::LazyLock::new(|| {
        let mut schema = Value::Object((*schema_for_output::<Submitted>()).clone());
        crate::mcp::make_portable(&mut schema);
        schema
    });
    tool.output_schema
        .as_deref()
        .is_some_and(|schema| SUBMITTED.as_object() == Some(schema))
}

/// Peers before 2026-07-28 know no `resultType`; the handler strips it from
/// top-level results, and this does the same for the result inlined in a task.
pub(crate) fn legacy_peer(ctx: &RequestContext<RoleServer>) -> bool {
    ctx.protocol_version()
        .is_none_or(|v| v.as_str() < ProtocolVersion::V_2026_07_28.as_str())
}

/// Turns a job-creating tool's answer into a task handle for the job it
/// submitted. The job row is written before the submit returns, so `tasks/get`
/// resolves as soon as the handle is out, as SEP-2663 requires. A tool error
/// (invalid request: no job) stays a plain tool result, which a task-aware
/// client must accept too.
pub(crate) async fn into_task(
    service: &Service,
    response: CallToolResponse,
) -> Result<CallToolResponse, ErrorData> {
    let CallToolResponse::Complete(result) = &response else {
        return Ok(response);
    };
    if result.is_error == Some(true) {
        return Ok(response);
    }
    let Some(job_id) = result
        .structured_content
        .as_ref()
        .and_then(|s| s.get("job_id"))
        .and_then(Value::as_str)
    else {
        return Ok(response);
    };
    match service.get_job(job_id).await {
        Ok(job) => Ok(CallToolResponse::Task(CreateTaskResult::new(task_of(
            &JobState::of(&job),
        )))),
        Err(error) => {
            // The job exists (the submit stored it); answer the old way rather
            // than fail a call whose job will run anyway.
            tracing::warn!(job.id = job_id, error = %error, "reading a submitted job for its task handle failed");
            Ok(response)
        }
    }
}

/// `tasks/get`: the job's state, with the tool result once it is finished.
pub(crate) async fn get(
    service: &Service,
    task_id: &str,
    legacy: bool,
) -> Result<GetTaskResult, ErrorData> {
    let job = service.get_job(task_id).await.map_err(protocol_error)?;
    let task = task_of(&JobState::of(&job));
    let payload = match job.status {
        JobStatus::Queued | JobStatus::Running => TaskPayload::Working,
        JobStatus::Cancelled => TaskPayload::Cancelled,
        // A failed job is the tool's own error (a strategy exception, missing
        // candles...), not a JSON-RPC fault: SEP-2663 reports those as
        // `completed` with an `isError` result and keeps `failed` for
        // protocol errors. The status message still says "failed".
        JobStatus::Failed => TaskPayload::Completed {
            result: tool_result(failure_result(job.error.as_ref()), legacy),
        },
        JobStatus::Succeeded => TaskPayload::Completed {
            result: tool_result(success_result(service, job).await?, legacy),
        },
    };
    Ok(GetTaskResult::new(DetailedTask::new(task, payload)))
}

/// `tasks/cancel`: cancels the job. Cancellation is cooperative in SEP-2663:
/// a task that already finished is acknowledged and keeps its outcome.
pub(crate) async fn cancel(service: &Service, task_id: &str, actor: &str) -> Result<(), ErrorData> {
    match service.cancel_job(task_id, actor).await {
        Ok(_) => Ok(()),
        Err(error) if error.body.code == "job_already_finished" => Ok(()),
        Err(error) => Err(protocol_error(error)),
    }
}

/// `tasks/update`: jobs never ask the client for input, so there is nothing to
/// deliver; responses for keys never issued are ignored, as the spec asks.
pub(crate) async fn update(service: &Service, task_id: &str) -> Result<(), ErrorData> {
    service
        .get_job(task_id)
        .await
        .map(|_| ())
        .map_err(protocol_error)
}

/// Errors of task methods are protocol errors: an unknown id is invalid
/// params (-32602, as SEP-2663 requires), a store outage an internal error the
/// client may retry. The service's error envelope rides along as `data`.
pub(crate) fn protocol_error(error: ApiError) -> ErrorData {
    let error = crate::mcp::mcp_wording(error);
    let data = Some(error.envelope());
    let message = format!("{}: {}", error.body.code, error.body.message);
    match error.status.as_u16() {
        404 => ErrorData::invalid_params(format!("Failed to retrieve task: {message}"), data),
        403 => ErrorData::invalid_request(message, data),
        400..=499 => ErrorData::invalid_params(message, data),
        _ => ErrorData::internal_error(message, data),
    }
}

/// What a task shows of a job, apart from its result.
struct JobState<'a> {
    id: &'a str,
    status: JobStatus,
    progress: f64,
    stage: Option<&'a str>,
    error: Option<&'a ErrorBody>,
    created_at: &'a str,
    /// The last of created, started and finished.
    updated_at: &'a str,
}

impl<'a> JobState<'a> {
    fn of(job: &'a JobView) -> Self {
        Self {
            id: &job.job_id,
            status: job.status,
            progress: job.progress,
            stage: job.stage.as_deref(),
            error: job.error.as_ref(),
            created_at: &job.created_at,
            updated_at: job
                .finished_at
                .as_deref()
                .or(job.started_at.as_deref())
                .unwrap_or(&job.created_at),
        }
    }
}

fn task_of(job: &JobState) -> Task {
    let status = match job.status {
        JobStatus::Queued | JobStatus::Running => TaskStatus::Working,
        JobStatus::Succeeded | JobStatus::Failed => TaskStatus::Completed,
        JobStatus::Cancelled => TaskStatus::Cancelled,
    };
    // ttlMs stays null: a job is kept in the store until someone deletes it.
    let task = Task::new(job.id, status, job.created_at, job.updated_at)
        .with_status_message(status_message(job));
    if status == TaskStatus::Working {
        task.with_poll_interval_ms(POLL_INTERVAL_MS)
    } else {
        task
    }
}

fn status_message(job: &JobState) -> String {
    let status = job.status.as_str();
    let percent = job.progress * 100.0;
    match (job.status, job.error, job.stage) {
        (JobStatus::Failed | JobStatus::Cancelled, Some(error), _) if error.code == status => {
            format!("{status}: {}", error.message)
        }
        (JobStatus::Failed | JobStatus::Cancelled, Some(error), _) => {
            format!("{status}: {}: {}", error.code, error.message)
        }
        (JobStatus::Running, _, Some(stage)) => format!("{status}: {stage} ({percent:.0} %)"),
        (JobStatus::Running, _, None) => format!("{status} ({percent:.0} %)"),
        (_, _, Some(stage)) => format!("{status}: {stage}"),
        (_, _, None) => status.to_string(),
    }
}

/// The final result of a succeeded job as the tool's result: the job's result
/// (as `job_result` answers: a backtest's metrics, trades, equity curve and
/// provenance) beside the job as `job_get` shows it. The fields of the submit
/// answer are the job's, so the result still matches the tool's outputSchema,
/// which strict clients check.
async fn success_result(service: &Service, job: JobView) -> Result<CallToolResult, ErrorData> {
    let result = service
        .get_result(&job.job_id, &ResultQuery::default())
        .await
        .map_err(protocol_error)?;
    let next = format!(
        "job {} succeeded; its result is in this answer (job_result pages trades)",
        job.job_id
    );
    let job = to_object(&job)?;
    let mut content = job.clone();
    content.extend(to_object(&result)?);
    for key in ["job_id", "status", "kind", "links"] {
        if let Some(value) = job.get(key) {
            content.insert(key.into(), value.clone());
        }
    }
    // Tools submit without idempotency keys: the call created the job.
    content.insert("created".into(), Value::Bool(true));
    content.insert("next".into(), Value::String(next));
    Ok(CallToolResult::structured(Value::Object(content)))
}

/// A failed job as the tool error it is, in the envelope every tool error uses.
fn failure_result(error: Option<&ErrorBody>) -> CallToolResult {
    let envelope = match error {
        Some(error) => {
            let mut error = error.clone();
            error.message = crate::mcp::mcp_message(&error.message);
            json!({ "error": error })
        }
        None => {
            json!({ "error": { "code": "failed", "message": "the job failed without a reason" } })
        }
    };
    CallToolResult::error(vec![ContentBlock::text(envelope.to_string())])
}

fn tool_result(mut result: CallToolResult, legacy: bool) -> JsonObject {
    if legacy {
        result.result_type = None;
    }
    match serde_json::to_value(result) {
        Ok(Value::Object(object)) => object,
        _ => unreachable!("CallToolResult serializes to an object"),
    }
}

fn to_object(value: &impl serde::Serialize) -> Result<JsonObject, ErrorData> {
    match serde_json::to_value(value) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(ErrorData::internal_error("result is not an object", None)),
        Err(e) => Err(ErrorData::internal_error(
            format!("serializing the result failed: {e}"),
            None,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(status: JobStatus) -> JobState<'static> {
        JobState {
            id: "01JAAAAAAAAAAAAAAAAAAAAAAA",
            status,
            progress: 0.4,
            stage: Some("simulating"),
            error: None,
            created_at: "2026-01-01T00:00:00Z",
            updated_at: "2026-01-01T00:00:01Z",
        }
    }

    #[test]
    fn job_statuses_map_onto_task_statuses() {
        let running = task_of(&job(JobStatus::Running));
        assert_eq!(running.status, TaskStatus::Working);
        assert_eq!(running.task_id, "01JAAAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(running.last_updated_at, "2026-01-01T00:00:01Z");
        assert_eq!(
            running.status_message.as_deref(),
            Some("running: simulating (40 %)")
        );
        assert_eq!(running.poll_interval_ms, Some(POLL_INTERVAL_MS));
        assert_eq!(running.ttl_ms, None);
        assert_eq!(task_of(&job(JobStatus::Queued)).status, TaskStatus::Working);
        assert_eq!(
            task_of(&job(JobStatus::Succeeded)).status,
            TaskStatus::Completed
        );
        let cancelled = ErrorBody::new("cancelled", "cancelled by request while running");
        let task = task_of(&JobState {
            error: Some(&cancelled),
            ..job(JobStatus::Cancelled)
        });
        assert_eq!(task.status, TaskStatus::Cancelled);
        assert_eq!(
            task.status_message.as_deref(),
            Some("cancelled: cancelled by request while running")
        );
        let error = ErrorBody::new("strategy_error", "boom");
        let failed = JobState {
            error: Some(&error),
            ..job(JobStatus::Failed)
        };
        let task = task_of(&failed);
        assert_eq!(task.status, TaskStatus::Completed);
        assert_eq!(
            task.status_message.as_deref(),
            Some("failed: strategy_error: boom")
        );
        let result = tool_result(failure_result(failed.error), true);
        assert_eq!(result["isError"], true);
        assert!(result.get("resultType").is_none());
    }

    #[test]
    fn the_submit_tools_are_the_job_tools() {
        let router = crate::mcp::JesseMcp::tools();
        let job_tools: Vec<_> = router
            .list_all()
            .into_iter()
            .filter(is_job_tool)
            .map(|tool| tool.name.to_string())
            .collect();
        assert!(job_tools.contains(&"backtest".to_string()), "{job_tools:?}");
        assert!(
            job_tools.contains(&"candles_import".to_string()),
            "{job_tools:?}"
        );
        assert!(
            job_tools.contains(&"backtest_batch".to_string()),
            "{job_tools:?}"
        );
        assert!(!job_tools.contains(&"job_get".to_string()));
    }

    #[test]
    fn unknown_ids_are_invalid_params() {
        let error = protocol_error(ApiError::not_found("job_not_found", "no job"));
        assert_eq!(error.code, rmcp::model::ErrorCode::INVALID_PARAMS);
        let error = protocol_error(ApiError::unavailable("busy"));
        assert_eq!(error.code, rmcp::model::ErrorCode::INTERNAL_ERROR);
    }
}
