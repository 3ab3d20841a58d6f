//! The job kinds, each defined once, in one module: its request (serde +
//! JsonSchema), its planning (validation into the plan stored as the job's
//! params), the lane of workers it runs on, its result, and its handler.
//! Everything else derives from [`REGISTRY`]: the queue a job travels on, the
//! REST submit route and the MCP tool, the OpenAPI document, `/metrics` and
//! the worker's dispatch. To add a kind, write a module like `batch.rs` and
//! list its `KIND` in `REGISTRY`; see docs/ARCHITECTURE.md.
//!
//! Handlers run in a worker through the [`Runtime`] it provides: the store,
//! the engine (to create child jobs with the same planning as a user's submit)
//! and the calls into Jesse, which only the worker can make (it alone links
//! Python).

use futures::future::BoxFuture;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::Value;

use crate::ErrorBody;
use crate::engine::Engine;
use crate::error::ApiError;
use crate::jobs::{BacktestPlan, ImportPlan, ValidationPlan};
use crate::planner::Planner;
use crate::store::{JobRecord, JobResult, Store};

pub mod backtest;
pub mod batch;
pub mod candle_import;
pub mod monte_carlo;
pub mod optimization;
pub mod pairs;
pub mod pipeline;
pub mod significance;
pub mod strategy_validation;
pub mod walk_forward;

/// Every kind this binary knows.
pub static REGISTRY: &[&KindDef] = &[
    &backtest::KIND,
    &strategy_validation::KIND,
    &candle_import::KIND,
    &batch::KIND,
    &optimization::KIND,
    &optimization::trial::KIND,
    &walk_forward::KIND,
    &monte_carlo::KIND,
    &significance::KIND,
    &pairs::screen::KIND,
    &pairs::chunk::KIND,
    &pairs::trade::KIND,
    &pipeline::KIND,
];

/// The kind named `name`, if this binary knows it.
pub fn find(name: &str) -> Option<&'static KindDef> {
    REGISTRY.iter().copied().find(|k| k.name == name)
}

/// Which workers' line a kind waits in. A worker takes runner jobs only while
/// it has a free runner (so it never holds more than it can run), and control
/// jobs (parents planning children or combining results, no Jesse call) on a
/// few slots of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    Runner,
    Control,
}

impl Lane {
    pub const ALL: &[Lane] = &[Lane::Runner, Lane::Control];

    /// The apalis queue name; fixed, so renaming a Rust type never orphans jobs.
    pub fn queue_name(self) -> &'static str {
        match self {
            Lane::Runner => "runner",
            Lane::Control => "control",
        }
    }
}

/// How users submit a kind themselves (REST route and MCP tool). Kinds the
/// service creates on its own (deep validation after a write) have none.
pub struct Submit {
    /// `POST` route, e.g. `/v1/backtests`.
    pub path: &'static str,
    /// MCP tool name, e.g. `backtest`.
    pub tool: &'static str,
    /// Short title (MCP tool annotation, OpenAPI summary).
    pub title: &'static str,
    /// What it does and what to call next, for agents and the OpenAPI document.
    pub description: &'static str,
    /// What to read once the job is done (the MCP answer's `next` hint).
    pub next: &'static str,
    /// Whether the job reaches outside the service (an exchange): MCP's open-world hint.
    pub open_world: bool,
}

pub type PlanFn = for<'a> fn(&'a Planner, Value) -> BoxFuture<'a, Result<Value, ApiError>>;
pub type ExecuteFn =
    for<'a> fn(&'a dyn Runtime, &'a JobRecord) -> BoxFuture<'a, anyhow::Result<Outcome>>;
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

pub struct KindDef {
    /// Stored in `jobs.kind` and shown to clients.
    pub name: &'static str,
    pub description: &'static str,
    pub lane: Lane,
    pub submit: Option<Submit>,
    /// The request users send (JSON Schema).
    pub request_schema: SchemaFn,
    /// The result body `GET /v1/jobs/{id}/result` answers with (JSON Schema).
    pub result_schema: SchemaFn,
    /// The paged part of its result (`trades`, `leaderboard`), if any, and
    /// whether a plain result read includes it.
    pub rows: Option<RowsPart>,
    /// Validates a request into the plan stored as the job's params.
    pub plan: PlanFn,
    /// Runs a claimed job in a worker.
    pub execute: ExecuteFn,
    /// A parent kind: its children run as their own jobs and it waits for them
    /// holding no worker; cancelling it cancels them.
    pub parent: bool,
}

pub struct RowsPart {
    pub name: &'static str,
    /// Included in a result read unless the reader says otherwise; `plan` is
    /// the job's params (a backtest includes trades when submitted with them).
    pub included_by_default: fn(&Value) -> bool,
}

impl KindDef {
    /// Whether the kind starts children as others end (a pipeline's steps), so
    /// each ended child wakes it, not only the last one.
    pub fn wakes_per_child(&self) -> bool {
        self.name == pipeline::KIND.name
    }

    /// The request users submit: the kind's own request plus the fields every
    /// submit takes (`tags`, see [`crate::subject::take_tags`]), as one object
    /// schema. REST (OpenAPI) and MCP both describe submits with it.
    pub fn request_schema(&self, generator: &mut SchemaGenerator) -> Schema {
        let schema = (self.request_schema)(generator);
        if self.submit.is_none() {
            return schema;
        }
        let reference = schema.to_value();
        let mut object = match reference["$ref"]
            .as_str()
            .and_then(|r| r.rsplit('/').next())
        {
            Some(name) => match generator.definitions().get(name) {
                Some(definition) => definition.clone(),
                None => reference.clone(),
            },
            None => reference.clone(),
        };
        match object["properties"].as_object_mut() {
            Some(properties) => {
                properties.insert("tags".into(), crate::subject::tags_schema());
                Schema::try_from(object).expect("an object schema")
            }
            None => Schema::try_from(reference).expect("a schema"),
        }
    }
}

/// Schema helper for a kind's request and result types.
pub fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// A type's schema as an object (not a reference), registered with the
/// generator so its nested references resolve in the generator's document:
/// for request schemas composed from other requests' fields.
pub fn definition_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    let reference = generator.subschema_for::<T>().to_value();
    match reference["$ref"]
        .as_str()
        .and_then(|r| r.rsplit('/').next())
    {
        Some(name) => generator
            .definitions()
            .get(name)
            .cloned()
            .unwrap_or(reference),
        None => reference,
    }
}

/// JSON Schema of a job's `kind` field: a string naming one of the registered
/// kinds (a fleet member of another version may show others).
pub fn kind_schema(_: &mut SchemaGenerator) -> Schema {
    let names: Vec<&str> = REGISTRY.iter().map(|k| k.name).collect();
    let described: Vec<String> = REGISTRY
        .iter()
        .map(|k| format!("`{}`: {}", k.name, k.description))
        .collect();
    schemars::json_schema!({
        "type": "string",
        "description": format!("The job's kind. {}", described.join("; ")),
        "examples": names,
    })
}

/// How an attempt ended, before it is written to the store.
pub enum Outcome {
    Succeeded {
        result: Box<JobResult>,
        /// Headline numbers shown in job listings.
        summary: Value,
    },
    Failed(ErrorBody),
    Cancelled,
    /// The runner process died under the job: retried up to the attempt limit.
    RunnerLost(String),
    /// A parent whose children are still running: it waits without a worker,
    /// and runs again once they have all ended.
    Waiting,
}

/// What a worker provides to handlers.
pub trait Runtime: Send + Sync {
    fn store(&self) -> &Store;
    fn engine(&self) -> &Engine;
    /// Runs one backtest in a Jesse runner of this worker.
    fn run_backtest<'a>(
        &'a self,
        job: &'a JobRecord,
        plan: &'a BacktestPlan,
    ) -> BoxFuture<'a, anyhow::Result<Outcome>>;
    /// Imports and smoke-tests a strategy source in a runner (stopped when
    /// the job's cancel is requested).
    fn validate_strategy<'a>(
        &'a self,
        job: &'a JobRecord,
        plan: &'a ValidationPlan,
    ) -> BoxFuture<'a, anyhow::Result<Outcome>>;
    /// Runs another Jesse call of the runner module on a backtest plan's candles
    /// (e.g. `significance_test`); `extra` reaches it as the request's `extra`.
    /// Its answer is the result body, with the candles' provenance.
    fn run_jesse<'a>(
        &'a self,
        job: &'a JobRecord,
        plan: &'a BacktestPlan,
        entry: &'static str,
        extra: &'a Value,
    ) -> BoxFuture<'a, anyhow::Result<Outcome>>;
    /// Calls a runner entry that needs no candles (a sampler's draw, a
    /// statistic from the pinned venv) with a JSON request; answers its JSON
    /// reply, or the outcome the job ends with when the call failed (runner
    /// lost, cancelled, timed out, a Python error).
    fn call_python<'a>(
        &'a self,
        job_id: &'a str,
        entry: &'static str,
        request: Value,
    ) -> BoxFuture<'a, anyhow::Result<Result<Value, Outcome>>>;
    /// Fetches candles through Jesse's import driver, page by page.
    fn import_candles<'a>(
        &'a self,
        job_id: &'a str,
        plan: &'a ImportPlan,
    ) -> BoxFuture<'a, anyhow::Result<Outcome>>;
}

/// Reads a stored plan, or fails the job clearly when it cannot be read.
pub fn read_plan<T: serde::de::DeserializeOwned>(job: &JobRecord) -> Result<T, Outcome> {
    serde_json::from_value(job.params.clone()).map_err(|e| {
        Outcome::Failed(ErrorBody::new(
            "invalid_job",
            format!("stored job parameters are unreadable: {e}"),
        ))
    })
}

/// Parses a request body into a kind's request type, with the error a client
/// sees for a body of the wrong shape.
pub fn read_request<T: serde::de::DeserializeOwned>(request: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(request).map_err(|e| {
        let path = e.path().to_string();
        let message = if path == "." {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        };
        ApiError::invalid(
            "invalid_request",
            format!("the request body does not match the expected shape: {message}"),
        )
        .with_details(serde_json::json!({"field": path}))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_routes_are_unique() {
        let mut names: Vec<_> = REGISTRY.iter().map(|k| k.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), REGISTRY.len());
        let mut tools: Vec<_> = REGISTRY
            .iter()
            .filter_map(|k| k.submit.as_ref().map(|s| s.tool))
            .collect();
        tools.sort();
        tools.dedup();
        let submits = REGISTRY.iter().filter(|k| k.submit.is_some()).count();
        assert_eq!(tools.len(), submits);
    }
}
