//! Pipelines beyond their submit (which is the generic one): the template
//! catalog and a finished pipeline's Markdown report, for REST and MCP alike.

use jesse_mcp_core::kinds::pipeline::templates;
use serde_json::Value;

use super::{Service, require_succeeded};
use crate::error::ApiError;

impl Service {
    /// Every built-in template: name, title, description, its params' JSON
    /// Schema and an example request.
    pub fn pipeline_templates(&self) -> Value {
        templates::catalog()
    }

    /// A succeeded pipeline's report (Markdown).
    pub async fn pipeline_report(&self, id: &str) -> Result<String, ApiError> {
        let job = self.job_record(id).await?;
        if job.kind != jesse_mcp_core::kinds::pipeline::KIND.name {
            return Err(ApiError::invalid(
                "not_a_pipeline",
                format!(
                    "job {} is a {} job; reports belong to pipeline jobs (research_pipeline, POST /v1/pipelines)",
                    job.id, job.kind
                ),
            )
            .with_details(serde_json::json!({"kind": job.kind})));
        }
        require_succeeded(&job)?;
        let body = self.stored_body(&job).await?;
        Ok(body["report"].as_str().unwrap_or_default().to_string())
    }
}
