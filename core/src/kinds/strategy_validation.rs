//! `strategy_validation`: deep validation of a strategy source in a runner
//! (import in isolation, instantiate, hyperparameters as they run, a smoke
//! backtest on synthetic candles). Created by the service after a strategy
//! write or a `deep` validate, never submitted directly. Its result is the
//! report; the verdict is also indexed per source sha256.

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Value, json};

use super::{KindDef, Lane, Outcome, Runtime, read_plan, read_request, schema_of};
use crate::error::ApiError;
use crate::jobs::ValidationPlan;
use crate::planner::Planner;
use crate::store::JobRecord;

pub static KIND: KindDef = KindDef {
    name: "strategy_validation",
    description: "deep validation of a strategy source in a runner",
    lane: Lane::Runner,
    submit: None,
    request_schema: schema_of::<Value>,
    result_schema: schema_of::<ValidationResult>,
    rows: None,
    plan,
    execute,
    parent: false,
};

/// The deep validation report.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ValidationResult {
    pub valid: bool,
    /// Problems with their line and column when known.
    #[schemars(with = "Vec<serde_json::Map<String, Value>>")]
    pub errors: Value,
    #[schemars(with = "Vec<serde_json::Map<String, Value>>")]
    pub warnings: Value,
    /// The hyperparameters as `hyperparameters()` returned them when run.
    #[schemars(with = "Option<Vec<serde_json::Map<String, Value>>>")]
    pub hyperparameters: Value,
    /// The smoke backtest's outcome.
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    pub smoke: Value,
}

fn plan(_: &Planner, request: Value) -> BoxFuture<'_, Result<Value, ApiError>> {
    Box::pin(async move {
        let plan: ValidationPlan = read_request(request)?;
        Ok(serde_json::to_value(plan).expect("plans serialize"))
    })
}

fn execute<'a>(rt: &'a dyn Runtime, job: &'a JobRecord) -> BoxFuture<'a, anyhow::Result<Outcome>> {
    Box::pin(async move {
        let plan: ValidationPlan = match read_plan(job) {
            Ok(plan) => plan,
            Err(outcome) => return Ok(outcome),
        };
        let outcome = rt.validate_strategy(job, &plan).await?;
        if let Outcome::Succeeded { result, .. } = &outcome {
            rt.store()
                .save_validation(&job.id, &plan.name, &plan.sha256, &result.body)
                .await?;
            let report = &result.body;
            let summary = json!({"strategy": plan.name, "sha256": plan.sha256, "valid": report["valid"],
                                 "errors": report["errors"].as_array().map_or(0, Vec::len)});
            return Ok(Outcome::Succeeded {
                result: result.clone(),
                summary,
            });
        }
        Ok(outcome)
    })
}
