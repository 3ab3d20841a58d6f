//! A job's log: the lines its strategy printed (`print`, to stdout or stderr) and
//! logged (`self.log(...)`), captured in the job's process by the runner and
//! stored by the worker as the job runs, at most 10,000 lines / 1 MiB per job
//! (then one `system` line says the log was truncated). Served a page at a time
//! (`GET /v1/jobs/{id}/logs`, MCP `job_logs`), while the job runs too.

use jesse_mcp_core::store::JobLogLine;
use jesse_mcp_core::time::to_rfc3339;
use schemars::JsonSchema;
use serde::Serialize;

use super::Service;
use crate::error::ApiError;

/// Lines per page when none is asked for.
pub const DEFAULT_LOG_LIMIT: i64 = 200;
/// The most lines a page holds.
pub const MAX_LOG_LIMIT: i64 = 200;

/// A page of a job's log.
#[derive(Debug, Serialize, JsonSchema)]
pub struct JobLogs {
    pub job_id: String,
    /// The job's status when the page was read (a running job's log still grows).
    pub status: jesse_mcp_core::jobs::JobStatus,
    /// The lines after `after`, in the order they were written.
    pub lines: Vec<JobLogEntry>,
    /// Pass as `after` for the next page; null when this page reached the end
    /// of what is stored now (a running job may add more: ask again with the last
    /// `seq` you have).
    pub next_after: Option<i64>,
}

/// One line of a job's log.
#[derive(Debug, Serialize, JsonSchema)]
pub struct JobLogEntry {
    /// Position in the job's log, from 0.
    pub seq: i64,
    /// The attempt that wrote it (1 unless a runner died under the job and it ran again).
    pub attempt: i64,
    /// `stdout` or `stderr` (print output), `info` or `error` (`self.log`), `system`
    /// (the line that says the log was truncated).
    pub stream: String,
    /// The line, without its newline.
    pub line: String,
    /// Jesse's simulated time when the line was written (ms since the epoch, a
    /// candle's close); null outside the simulation (module import, set-up).
    pub simulated_ms: Option<i64>,
    /// `simulated_ms` as ISO-8601 (UTC).
    pub simulated_at: Option<String>,
    /// When the worker received it (ms since the epoch).
    pub logged_ms: i64,
    /// `logged_ms` as ISO-8601 (UTC).
    pub logged_at: String,
}

impl From<JobLogLine> for JobLogEntry {
    fn from(line: JobLogLine) -> Self {
        Self {
            seq: line.seq,
            attempt: line.attempt,
            stream: line.stream,
            line: line.line,
            simulated_ms: line.simulated_ms,
            simulated_at: line.simulated_ms.map(to_rfc3339),
            logged_ms: line.logged_at,
            logged_at: to_rfc3339(line.logged_at),
        }
    }
}

impl Service {
    /// Up to `limit` (1..200, default 200) lines of a job's log after the line
    /// numbered `after` (from the start without it).
    pub async fn job_logs(
        &self,
        id: &str,
        after: Option<u64>,
        limit: Option<i64>,
    ) -> Result<JobLogs, ApiError> {
        let job = self.job_record(id).await?;
        let limit = limit.unwrap_or(DEFAULT_LOG_LIMIT);
        if !(1..=MAX_LOG_LIMIT).contains(&limit) {
            return Err(ApiError::invalid(
                "invalid_limit",
                format!("limit must be from 1 to {MAX_LOG_LIMIT}"),
            ));
        }
        // Asked for one more than the page: whether the page reached the end.
        let mut lines = self
            .store()
            .job_logs(
                &job.id,
                after.map(|a| a.min(i64::MAX as u64) as i64),
                limit + 1,
            )
            .await?;
        let more = lines.len() as i64 > limit;
        lines.truncate(limit as usize);
        let next_after = if more {
            lines.last().map(|l| l.seq)
        } else {
            None
        };
        Ok(JobLogs {
            job_id: job.id,
            status: job.status,
            lines: lines.into_iter().map(JobLogEntry::from).collect(),
            next_after,
        })
    }
}

/// MCP `job_logs` arguments.
#[derive(Debug, serde::Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobLogsArgs {
    /// The job's id.
    pub job_id: String,
    /// The `seq` of the last line you have (`next_after` of the previous page);
    /// the page starts after it. Default: from the first line.
    #[serde(default)]
    pub after: Option<u64>,
    /// Lines per page, 1..200 (default 200).
    #[serde(default)]
    pub limit: Option<i64>,
}
