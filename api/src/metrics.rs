//! `GET /metrics` in the Prometheus text format: queue depth per kind, jobs by
//! kind and status, a job duration histogram, and counters workers report
//! through the store (runner restarts, runner start failures). Read from the
//! store and the queue, so any API instance reports the same numbers for the
//! whole deployment.

use std::fmt::Write;

use jesse_mcp_core::kinds::{Lane, REGISTRY};

use crate::error::ApiError;
use crate::service::Service;

const BUCKETS: &[f64] = &[0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

pub async fn render(service: &Service) -> Result<String, ApiError> {
    let mut out = String::new();
    out.push_str("# HELP jesse_mcp_queue_depth Jobs waiting to be claimed by a worker, per queue (lane).\n# TYPE jesse_mcp_queue_depth gauge\n");
    for lane in Lane::ALL {
        let depth = service.queue_depth(*lane).await?;
        let _ = writeln!(
            out,
            "jesse_mcp_queue_depth{{queue=\"{}\"}} {depth}",
            lane.queue_name()
        );
    }
    out.push_str("# HELP jesse_mcp_jobs Jobs by kind and status.\n# TYPE jesse_mcp_jobs gauge\n");
    for (kind, status, count) in service.store().job_counts().await? {
        let _ = writeln!(
            out,
            "jesse_mcp_jobs{{kind=\"{kind}\",status=\"{status}\"}} {count}"
        );
    }
    out.push_str("# HELP jesse_mcp_job_duration_seconds Run time of finished jobs (start to finish).\n# TYPE jesse_mcp_job_duration_seconds histogram\n");
    let durations = service.store().job_durations().await?;
    for kind in REGISTRY {
        let mine: Vec<f64> = durations
            .iter()
            .filter(|(k, _)| k == kind.name)
            .map(|(_, s)| *s)
            .collect();
        for bucket in BUCKETS {
            let n = mine.iter().filter(|s| **s <= *bucket).count();
            let _ = writeln!(
                out,
                "jesse_mcp_job_duration_seconds_bucket{{kind=\"{}\",le=\"{bucket}\"}} {n}",
                kind.name
            );
        }
        let _ = writeln!(
            out,
            "jesse_mcp_job_duration_seconds_bucket{{kind=\"{}\",le=\"+Inf\"}} {}",
            kind.name,
            mine.len()
        );
        let _ = writeln!(
            out,
            "jesse_mcp_job_duration_seconds_sum{{kind=\"{}\"}} {}",
            kind.name,
            mine.iter().sum::<f64>()
        );
        let _ = writeln!(
            out,
            "jesse_mcp_job_duration_seconds_count{{kind=\"{}\"}} {}",
            kind.name,
            mine.len()
        );
    }
    let counters = service.store().counters().await?;
    let restarts = counters
        .iter()
        .find(|(n, _)| n == "runner_restarts")
        .map_or(0, |(_, v)| *v);
    out.push_str("# HELP jesse_mcp_runner_restarts_total Runner processes replaced after dying or being killed.\n# TYPE jesse_mcp_runner_restarts_total counter\n");
    let _ = writeln!(out, "jesse_mcp_runner_restarts_total {restarts}");
    let start_failures = counters
        .iter()
        .find(|(n, _)| n == "runner_start_failures")
        .map_or(0, |(_, v)| *v);
    out.push_str("# HELP jesse_mcp_runner_start_failures_total Runner processes that failed to start (at worker start or when replacing a dead one).\n# TYPE jesse_mcp_runner_start_failures_total counter\n");
    let _ = writeln!(
        out,
        "jesse_mcp_runner_start_failures_total {start_failures}"
    );
    Ok(out)
}
