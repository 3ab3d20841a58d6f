//! Strategy management: list, read, write, validate, delete. Static checks run
//! here (never executing code); deep checks are short jobs in a runner. The
//! newest deep report of a source is looked up by its sha256, so an edit never
//! inherits an old verdict. Writes, deletes and deep validations (the calls
//! that put code where it runs) are logged to the `audit` tracing target with
//! the caller's token name and the source's sha256.

use std::time::Duration;

use jesse_mcp_core::jobs::{JobStatus, ValidationPlan};
use jesse_mcp_core::time::to_rfc3339;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Value, json};

use super::Service;
use crate::error::ApiError;
use crate::strategies::{StrategyFile, check_name, check_size, sha256_hex};
use crate::strategy_static::{Diagnostic, Hyperparameter, validate_static};
use jesse_mcp_core::planner::invalid_source;

/// How long `validate` with `deep: true` waits for the runner before answering
/// with the job to poll instead.
const DEEP_WAIT: Duration = Duration::from_secs(45);

/// The outcome (or progress) of a deep validation job.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct DeepValidation {
    pub job_id: String,
    pub status: JobStatus,
    /// Set once the validation ran.
    pub valid: Option<bool>,
    /// `{line, column, message}`; line is null when the problem has no place in the file.
    pub errors: Vec<Value>,
    pub warnings: Vec<Value>,
    /// What the smoke backtest did (timeframe, trades), when it ran.
    pub smoke: Option<Value>,
    /// What `hyperparameters()` returned when run.
    pub hyperparameters: Option<Value>,
}

/// A problem with a strategy: its place in the file (null when it has none,
/// e.g. a smoke backtest that raised outside the file) and what is wrong.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct StrategyError {
    pub line: Option<u32>,
    pub column: Option<u32>,
    pub message: String,
    /// Which check found it: `static` (the text, at once) or `deep` (the
    /// source run in a runner; also under `deep_validation`).
    pub check: &'static str,
}

/// The static errors, then those of a deep validation that failed.
fn all_errors(errors: Vec<Diagnostic>, deep: Option<&DeepValidation>) -> Vec<StrategyError> {
    let mut out: Vec<StrategyError> = errors
        .into_iter()
        .map(|d| StrategyError {
            line: Some(d.line),
            column: Some(d.column),
            message: d.message,
            check: "static",
        })
        .collect();
    if let Some(deep) = deep
        && (deep.valid == Some(false) || deep.status == JobStatus::Failed)
    {
        let place = |v: &Value| v.as_u64().and_then(|n| u32::try_from(n).ok());
        out.extend(deep.errors.iter().map(|e| StrategyError {
            line: place(&e["line"]),
            column: place(&e["column"]),
            message: e["message"].as_str().unwrap_or_default().to_string(),
            check: "deep",
        }));
    }
    out
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct StrategySummary {
    pub name: String,
    /// From `hyperparameters()` when it is a literal list (null otherwise; the deep
    /// validation then reports what it returns).
    pub hyperparameters: Option<Vec<Hyperparameter>>,
    pub sha256: String,
    pub modified_at: String,
    /// Static checks pass and no deep validation of this exact source failed.
    pub valid: bool,
    /// The static checks' errors, and the deep validation's when it failed.
    pub errors: Vec<StrategyError>,
    pub warnings: Vec<Diagnostic>,
    /// The newest deep validation of this exact source, if any.
    pub deep_validation: Option<DeepValidation>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct StrategyList {
    pub strategies: Vec<StrategySummary>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct StrategyView {
    #[serde(flatten)]
    pub strategy: StrategySummary,
    /// The source of `<name>/__init__.py`.
    pub code: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct StrategyWritten {
    #[serde(flatten)]
    pub strategy: StrategySummary,
    /// True when the strategy did not exist before.
    pub created: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ValidationReport {
    pub valid: bool,
    /// The static checks' errors, and the deep validation's when it failed.
    pub errors: Vec<StrategyError>,
    pub warnings: Vec<Diagnostic>,
    pub hyperparameters: Option<Vec<Hyperparameter>>,
    /// Present when `deep` was asked for and the static checks passed.
    pub deep: Option<DeepValidation>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct StrategyDeleted {
    pub name: String,
    pub deleted: bool,
}

fn deep_from_report(job_id: String, report: &Value) -> DeepValidation {
    let list = |key: &str| report[key].as_array().cloned().unwrap_or_default();
    DeepValidation {
        job_id,
        status: JobStatus::Succeeded,
        valid: report["valid"].as_bool(),
        errors: list("errors"),
        warnings: list("warnings"),
        smoke: report.get("smoke").filter(|s| !s.is_null()).cloned(),
        hyperparameters: report
            .get("hyperparameters")
            .filter(|s| !s.is_null())
            .cloned(),
    }
}

impl Service {
    fn strategy_not_found(&self, name: &str) -> ApiError {
        ApiError::not_found(
            "strategy_not_found",
            format!(
                "no strategy named '{name}' (expected {name}/__init__.py in the strategies directory)"
            ),
        )
    }

    async fn summarize(
        &self,
        file: &StrategyFile,
        deep: Option<DeepValidation>,
    ) -> Result<StrategySummary, ApiError> {
        let report = validate_static(Some(&file.name), &file.source);
        let deep = match deep {
            Some(deep) => Some(deep),
            None => self
                .inner
                .engine
                .store()
                .latest_validation(&file.name, &file.sha256)
                .await?
                .map(|(job_id, report)| deep_from_report(job_id, &report)),
        };
        Ok(StrategySummary {
            name: file.name.clone(),
            hyperparameters: report.hyperparameters.clone(),
            sha256: file.sha256.clone(),
            modified_at: to_rfc3339(file.modified_at),
            valid: report.valid && deep.as_ref().and_then(|d| d.valid) != Some(false),
            errors: all_errors(report.errors, deep.as_ref()),
            warnings: report.warnings,
            deep_validation: deep,
        })
    }

    pub async fn list_strategies(&self) -> Result<StrategyList, ApiError> {
        let mut strategies = Vec::new();
        for name in self.inner.engine.strategies().names()? {
            if let Some(file) = self.inner.engine.strategies().read(&name)? {
                strategies.push(self.summarize(&file, None).await?);
            }
        }
        Ok(StrategyList { strategies })
    }

    pub async fn get_strategy(&self, name: &str) -> Result<StrategyView, ApiError> {
        let file = self
            .inner
            .engine
            .strategies()
            .read(name)?
            .ok_or_else(|| self.strategy_not_found(name))?;
        let strategy = self.summarize(&file, None).await?;
        Ok(StrategyView {
            strategy,
            code: file.source,
        })
    }

    /// Creates or replaces a strategy after static validation, then starts a deep
    /// validation of what was written.
    pub async fn put_strategy(
        &self,
        name: &str,
        code: String,
        if_match: Option<String>,
        actor: &str,
    ) -> Result<StrategyWritten, ApiError> {
        check_name(name)?;
        check_size(&code)?;
        let report = validate_static(Some(name), &code);
        if !report.valid {
            return Err(invalid_source(&report));
        }
        let dir = self.inner.engine.strategies().clone();
        let owned = name.to_string();
        let (file, created) =
            tokio::task::spawn_blocking(move || dir.write(&owned, &code, if_match.as_deref()))
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "strategy write task failed");
                    ApiError::new(
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "internal error; see the service log",
                    )
                })??;
        if created {
            let _ = self.inner.strategy_set_changed.send(());
        }
        let deep = self.enqueue_validation(&file.name, &file.source).await?;
        tracing::info!(
            target: "audit",
            action = "strategy.write",
            token = actor,
            strategy = name,
            sha256 = file.sha256,
            created,
            validation_job = deep.job_id,
            "strategy written"
        );
        Ok(StrategyWritten {
            strategy: self.summarize(&file, Some(deep)).await?,
            created,
        })
    }

    pub async fn delete_strategy(
        &self,
        name: &str,
        if_match: Option<String>,
        actor: &str,
    ) -> Result<StrategyDeleted, ApiError> {
        check_name(name)?;
        // For the audit trail: what was there (a read racing the delete may miss it).
        let sha256 = self
            .inner
            .engine
            .strategies()
            .read(name)
            .ok()
            .flatten()
            .map(|file| file.sha256);
        let dir = self.inner.engine.strategies().clone();
        let owned = name.to_string();
        let deleted = tokio::task::spawn_blocking(move || dir.delete(&owned, if_match.as_deref()))
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "strategy delete task failed");
                ApiError::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the service log",
                )
            })??;
        if !deleted {
            return Err(self.strategy_not_found(name));
        }
        tracing::info!(
            target: "audit",
            action = "strategy.delete",
            token = actor,
            strategy = name,
            sha256 = sha256.as_deref().unwrap_or("unknown"),
            "strategy deleted"
        );
        let _ = self.inner.strategy_set_changed.send(());
        Ok(StrategyDeleted {
            name: name.to_string(),
            deleted,
        })
    }

    /// Static validation, and with `deep` a bounded run in a runner.
    pub async fn validate_strategy(
        &self,
        name: Option<&str>,
        code: &str,
        deep: bool,
        actor: &str,
    ) -> Result<ValidationReport, ApiError> {
        if let Some(name) = name {
            check_name(name)?;
        }
        check_size(code)?;
        let report = validate_static(name, code);
        let deep = if deep && report.valid {
            let class = report
                .class_name
                .clone()
                .expect("a valid report names its class");
            let queued = self
                .enqueue_validation(name.unwrap_or(&class), code)
                .await?;
            tracing::info!(
                target: "audit",
                action = "strategy.validate_deep",
                token = actor,
                strategy = name.unwrap_or(&class),
                sha256 = sha256_hex(code),
                validation_job = queued.job_id,
                "deep validation of submitted code"
            );
            Some(self.await_validation(queued).await?)
        } else {
            None
        };
        Ok(ValidationReport {
            valid: report.valid && deep.as_ref().and_then(|d| d.valid) != Some(false),
            errors: all_errors(report.errors, deep.as_ref()),
            warnings: report.warnings,
            hyperparameters: report.hyperparameters,
            deep,
        })
    }

    async fn enqueue_validation(
        &self,
        name: &str,
        source: &str,
    ) -> Result<DeepValidation, ApiError> {
        let plan = ValidationPlan {
            name: name.to_string(),
            sha256: sha256_hex(source),
            source: source.to_string(),
        };
        let accepted = self
            .enqueue(
                &jesse_mcp_core::kinds::strategy_validation::KIND,
                serde_json::to_value(&plan).expect("plans serialize"),
                None,
            )
            .await?;
        Ok(DeepValidation {
            job_id: accepted.job_id,
            status: accepted.status,
            valid: None,
            errors: Vec::new(),
            warnings: Vec::new(),
            smoke: None,
            hyperparameters: None,
        })
    }

    async fn await_validation(&self, queued: DeepValidation) -> Result<DeepValidation, ApiError> {
        let job = self
            .wait_job(&queued.job_id, DEEP_WAIT, |_, _| async {})
            .await?;
        if job.status == JobStatus::Succeeded
            && let Some((_, report)) = self.inner.engine.store().result_body(&job.job_id).await?
        {
            return Ok(deep_from_report(job.job_id, &report));
        }
        let errors = job
            .error
            .map(|e| vec![json!({"line": null, "column": null, "message": e.message})])
            .unwrap_or_default();
        Ok(DeepValidation {
            status: job.status,
            errors,
            ..queued
        })
    }

    pub fn subscribe_strategy_changes(&self) -> tokio::sync::broadcast::Receiver<()> {
        self.inner.strategy_set_changed.subscribe()
    }
}
