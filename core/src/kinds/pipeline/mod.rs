//! `pipeline`: a research plan handed over whole. A named list of steps, each
//! one of the job kinds (import, validation, backtest, batch, optimization,
//! walk-forward, Monte Carlo, significance test, pairs), whose inputs may name
//! earlier steps' outputs (`"${optimize.best.params}"`) and whose gates
//! (`"walk_forward.efficiency >= 0.5"`) stop the pipeline with that
//! gate as its verdict. Or a built-in template filled with the caller's
//! strategy, market, dates and seed (see `templates`).
//!
//! Each step is a child job of the pipeline, at the step's index, planned by
//! its kind exactly like a user's submit, as soon as every step it needs has
//! succeeded and passed its gates (each ended step wakes the pipeline), so
//! independent steps run side by side across the fleet. The pipeline's state is its children in the
//! store, so a killed worker resumes it where it was, and cancelling it
//! cancels every step. It ends with a verdict and a Markdown report whose
//! every number names the job that produced it.
//!
//! Everything checkable is checked at submit, before anything is enqueued:
//! step ids, kinds, references to missing or later steps (and cycles), output
//! paths against the producing kind's result schema, gates, and every step's
//! input that names no other step, planned as its kind would plan it.

pub mod refs;
pub mod report;
pub mod templates;

use std::collections::{BTreeSet, HashMap};

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{KindDef, Lane, Outcome, Runtime, Submit, read_plan, read_request};
use crate::ErrorBody;
use crate::error::ApiError;
use crate::jobs::{JobStatus, StrategySource, ValidationPlan};
use crate::planner::Planner;
use crate::store::{JobRecord, JobResult};
use refs::{Gate, GateCheck};

/// Steps one pipeline may hold.
pub const MAX_STEPS: usize = 20;
/// Bytes of one step's input (as JSON).
const MAX_INPUT_BYTES: usize = 64 * 1024;
/// Gates one step may carry.
const MAX_GATES: usize = 8;

pub static KIND: KindDef = KindDef {
    name: "pipeline",
    description: "a research pipeline: steps of other kinds, with references, gates, a verdict and a report",
    lane: Lane::Control,
    submit: Some(Submit {
        path: "/v1/pipelines",
        tool: "research_pipeline",
        title: "Submit a research pipeline",
        description: "Hand over a whole research plan. Either `{template, params}` (GET /v1/pipelines/templates or \
the resource jesse://pipelines/templates lists them: `evaluate_strategy` imports missing candles, validates, runs a \
baseline backtest, optimizes, walks forward and runs Monte Carlo on the best parameters; `screen_pairs` screens \
symbols for cointegration and backtests the best pair out of sample), or `{name, steps}` where each step is `{id, \
kind, input, needs?, gate?}`: `kind` is a job kind (candle_import, strategy_validation, backtest, batch, \
optimization, walk_forward, monte_carlo, significance_test, pairs_screen, pairs_backtest), `input` is what that \
kind's submit takes, and any string in it may be `\"${<step>.<path>}\"`, an earlier step's output (its result body \
plus job_id, status and summary), e.g. `\"${optimize.best.params}\"`. `gate` is one or a list of comparisons such \
as `\"walk_forward.efficiency >= 0.5\"`; a failing gate stops the pipeline and becomes its verdict. Steps \
whose needs are met run in parallel. Answers at once with the job_id; poll job_get (its children are the steps: \
job_children), then job_result for the verdict, every step's summary and gate values, and a Markdown `report` (also \
the resource jesse://reports/<job_id>).",
        next: "job_result for the verdict and the report (or read jesse://reports/<job_id>)",
        open_world: true,
    }),
    request_schema: super::schema_of::<PipelineRequest>,
    result_schema: super::schema_of::<PipelineResult>,
    rows: None,
    plan,
    execute,
    parent: true,
};

/// A pipeline request: `steps`, or a `template` with its `params`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineRequest {
    /// Shown in listings and the report (default: the template's title, or "pipeline"); at most 100 characters.
    #[serde(default)]
    pub name: Option<String>,
    /// The steps, in the order they run (a step may only need steps listed before it).
    #[serde(default)]
    pub steps: Option<Vec<StepSpec>>,
    /// A built-in template's name (instead of `steps`): `evaluate_strategy` or `screen_pairs`.
    #[serde(default)]
    pub template: Option<String>,
    /// The template's parameters (GET /v1/pipelines/templates documents each).
    #[serde(default)]
    #[schemars(with = "Option<Map<String, Value>>")]
    pub params: Option<Value>,
}

/// One step of a pipeline.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Unique within the pipeline: 1 to 40 of a-z, 0-9 and _, starting with a letter.
    pub id: String,
    /// A job kind (or its MCP tool name): candle_import, strategy_validation, backtest, batch, optimization,
    /// walk_forward, monte_carlo, significance_test, pairs_screen, pairs_backtest.
    pub kind: String,
    /// The kind's request, as its own submit takes it (strategy_validation: `{strategy}`); strings may hold
    /// `${step.path}` references to earlier steps' outputs.
    #[schemars(with = "Map<String, Value>")]
    pub input: Value,
    /// Steps that must succeed (and pass their gates) first; steps an input refers to are added.
    #[serde(default)]
    pub needs: Vec<String>,
    /// One comparison or a list, e.g. `"optimize.pbo <= 0.3"`: `<step>.<path> <op> <literal>` with
    /// >=, <=, >, <, ==, !=; on this step's output or an earlier step's.
    #[serde(default)]
    pub gate: Option<GateSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum GateSpec {
    One(String),
    Many(Vec<String>),
}

impl GateSpec {
    fn texts(&self) -> Vec<String> {
        match self {
            GateSpec::One(one) => vec![one.clone()],
            GateSpec::Many(many) => many.clone(),
        }
    }
}

/// What a pipeline stores as its params.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelinePlan {
    pub name: String,
    #[serde(default)]
    pub template: Option<String>,
    /// The template's parameters with their defaults filled in (its seed included).
    #[serde(default)]
    pub params: Option<Value>,
    /// In the order they were given; a step's index is its child's index.
    pub steps: Vec<StepPlan>,
    /// Decisions made at submit (e.g. an import step left out because the candles are stored).
    #[serde(default)]
    pub notes: Vec<String>,
    /// Every strategy the steps name, pinned at submit: every step runs these bytes.
    #[serde(default)]
    pub sources: Vec<StrategySource>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepPlan {
    pub id: String,
    /// The job kind's registered name.
    pub kind: String,
    pub input: Value,
    /// Given and implied (by references and gates) needs.
    pub needs: Vec<String>,
    pub gates: Vec<Gate>,
}

/// A finished pipeline.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PipelineResult {
    pub name: String,
    /// `outcome`: passed (every step ran and every gate held) or rejected (a gate failed: `failed_gate`
    /// names it, its value, the job that produced the value and why).
    #[schemars(with = "Map<String, Value>")]
    pub verdict: Value,
    /// Per step: id, kind, job_id, status, needs, its summary and its gates' values.
    #[schemars(with = "Vec<Map<String, Value>>")]
    pub steps: Vec<Value>,
    /// Every gate checked, in step order.
    #[schemars(with = "Vec<Map<String, Value>>")]
    pub gates: Vec<Value>,
    /// Markdown: the verdict, the steps, the gates and each step's key tables and charts, every number with
    /// the job id that produced it.
    pub report: String,
    /// Template and parameters (seed included), notes from submit, and the strategies' sha256.
    #[schemars(with = "Map<String, Value>")]
    pub provenance: Value,
}

/// The kinds a step may be, by registered name.
const STEP_KINDS: &[&str] = &[
    "candle_import",
    "strategy_validation",
    "backtest",
    "batch",
    "optimization",
    "walk_forward",
    "monte_carlo",
    "significance",
    "pairs_screen",
    "pairs_backtest",
];

/// A step kind by its name or its MCP tool's name.
fn step_kind(name: &str) -> Option<&'static KindDef> {
    super::REGISTRY.iter().copied().find(|k| {
        STEP_KINDS.contains(&k.name)
            && (k.name == name || k.submit.as_ref().is_some_and(|s| s.tool == name))
    })
}

fn step_error(step: &str, code: &str, message: String) -> ApiError {
    ApiError::invalid(code, format!("step '{step}': {message}")).with_details(json!({"step": step}))
}

fn plan(planner: &Planner, request: Value) -> BoxFuture<'_, Result<Value, ApiError>> {
    Box::pin(async move {
        let request: PipelineRequest = read_request(request)?;
        if let Some(name) = &request.name
            && (name.trim().is_empty() || name.chars().count() > 100)
        {
            return Err(ApiError::invalid(
                "invalid_pipeline_name",
                "name must be 1 to 100 characters",
            )
            .with_details(json!({"field": "name"})));
        }
        let (name, steps, template, params, notes) = match (request.steps, request.template) {
            (Some(steps), None) => {
                if request.params.is_some() {
                    return Err(ApiError::invalid(
                        "invalid_request",
                        "params go with a template; a pipeline given as steps takes none",
                    )
                    .with_details(json!({"field": "params"})));
                }
                let name = request.name.unwrap_or_else(|| "pipeline".into());
                (name, steps, None, None, Vec::new())
            }
            (None, Some(template)) => {
                let expanded = templates::expand(
                    planner,
                    &template,
                    request.params.unwrap_or_else(|| json!({})),
                )
                .await?;
                let name = request.name.unwrap_or(expanded.title);
                (
                    name,
                    expanded.steps,
                    Some(template),
                    Some(expanded.params),
                    expanded.notes,
                )
            }
            _ => {
                return Err(ApiError::invalid(
                    "invalid_request",
                    "give either steps or a template (with its params); GET /v1/pipelines/templates lists the templates",
                ));
            }
        };
        let steps = check_steps(&steps)?;
        let sources = pin_strategies(planner, &steps).await?;
        dry_plan(planner, &steps).await?;
        Ok(serde_json::to_value(PipelinePlan {
            name,
            template,
            params,
            steps,
            notes,
            sources,
        })
        .expect("plans serialize"))
    })
}

/// The structure of a pipeline: ids, kinds, needs, references and gates.
pub fn check_steps(steps: &[StepSpec]) -> Result<Vec<StepPlan>, ApiError> {
    if steps.is_empty() || steps.len() > MAX_STEPS {
        return Err(ApiError::invalid(
            "invalid_steps",
            format!("a pipeline has 1 to {MAX_STEPS} steps, not {}", steps.len()),
        )
        .with_details(json!({"field": "steps"})));
    }
    let mut position: HashMap<&str, usize> = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        if !refs::is_step_id(&step.id) {
            return Err(step_error(
                &step.id,
                "invalid_step_id",
                "a step id is 1 to 40 of a-z, 0-9 and _, starting with a letter".into(),
            ));
        }
        if position.insert(&step.id, i).is_some() {
            return Err(step_error(
                &step.id,
                "duplicate_step_id",
                "two steps have this id; ids must be unique".into(),
            ));
        }
    }
    let mut planned: Vec<StepPlan> = Vec::with_capacity(steps.len());
    for (i, step) in steps.iter().enumerate() {
        let kind = step_kind(&step.kind).ok_or_else(|| {
            step_error(
                &step.id,
                "unknown_step_kind",
                format!("'{}' is not a kind a step can be", step.kind),
            )
            .with_details(json!({"step": step.id, "field": "kind", "allowed": STEP_KINDS}))
        })?;
        if !step.input.is_object() {
            return Err(step_error(
                &step.id,
                "invalid_step_input",
                "input must be an object: the request the step's kind takes".into(),
            ));
        }
        if serde_json::to_string(&step.input).map_or(0, |s| s.len()) > MAX_INPUT_BYTES {
            return Err(step_error(
                &step.id,
                "invalid_step_input",
                format!("input is larger than {MAX_INPUT_BYTES} bytes"),
            ));
        }
        let references = refs::references(&step.input)
            .map_err(|e| step_error(&step.id, "invalid_reference", e))?;
        let texts = step.gate.as_ref().map(GateSpec::texts).unwrap_or_default();
        if texts.len() > MAX_GATES {
            return Err(step_error(
                &step.id,
                "invalid_gate",
                format!("at most {MAX_GATES} gates per step"),
            ));
        }
        let gates = texts
            .iter()
            .map(|t| refs::parse_gate(t).map_err(|e| step_error(&step.id, "invalid_gate", e)))
            .collect::<Result<Vec<_>, _>>()?;
        // Every step this one depends on, with what names it (for errors).
        let mut needs: Vec<(String, String)> = step
            .needs
            .iter()
            .map(|n| (n.clone(), "needs".to_string()))
            .collect();
        for (field, r) in &references {
            needs.push((r.step.clone(), format!("input.{field}")));
        }
        for gate in &gates {
            if gate.step != step.id {
                needs.push((gate.step.clone(), format!("gate '{}'", gate.text)));
            }
        }
        let mut need_ids = BTreeSet::new();
        for (need, at) in &needs {
            match position.get(need.as_str()) {
                None => {
                    return Err(step_error(
                        &step.id,
                        "unknown_step_reference",
                        format!("{at} names step '{need}', which this pipeline does not have"),
                    )
                    .with_details(json!({"step": step.id, "field": at, "missing": need})));
                }
                Some(&j) if j == i && at != "needs" && !at.starts_with("input") => {}
                Some(&j) if j >= i => {
                    let details = json!({"step": step.id, "field": at, "names": need});
                    return Err(match cycle_through(steps, &position, i, j) {
                        Some(path) => step_error(
                            &step.id,
                            "pipeline_cycle",
                            format!(
                                "{at} names step '{need}', which depends on this one: {}",
                                path.join(" → ")
                            ),
                        ),
                        None => step_error(
                            &step.id,
                            "later_step_reference",
                            format!(
                                "{at} names step '{need}', which is listed after it (or is itself); \
                                 list steps in the order they run"
                            ),
                        ),
                    }
                    .with_details(details));
                }
                Some(_) => {
                    need_ids.insert(need.clone());
                }
            }
        }
        // Paths into an earlier step's output must exist in its kind's result.
        let checks = references
            .iter()
            .map(|(field, r)| (format!("input.{field}"), r.step.as_str(), &r.path))
            .chain(
                gates
                    .iter()
                    .map(|g| (format!("gate '{}'", g.text), g.step.as_str(), &g.path)),
            );
        for (at, producer, path) in checks {
            let producer_kind = if producer == step.id {
                kind
            } else {
                let j = position[producer];
                step_kind(&planned[j].kind).expect("checked above")
            };
            let schema = result_schema(producer_kind);
            refs::check_path(&schema, producer_kind.name, path).map_err(|e| {
                step_error(
                    &step.id,
                    "unknown_output_path",
                    format!(
                        "{at}: {producer}.{} is not in a {} result: {e}",
                        path.join("."),
                        producer_kind.name
                    ),
                )
                .with_details(json!({"step": step.id, "field": at, "kind": producer_kind.name}))
            })?;
        }
        planned.push(StepPlan {
            id: step.id.clone(),
            kind: kind.name.to_string(),
            input: step.input.clone(),
            needs: need_ids.into_iter().collect(),
            gates,
        });
    }
    Ok(planned)
}

/// A kind's result schema as one JSON document with its definitions.
fn result_schema(kind: &KindDef) -> Value {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let mut schema = (kind.result_schema)(&mut generator).to_value();
    let defs: Map<String, Value> = generator
        .definitions()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(object) = schema.as_object_mut() {
        object.insert("$defs".into(), Value::Object(defs));
    }
    schema
}

/// The steps from `from` back to `to` through needs and references, if `from`
/// (which names `to`) is itself needed by `to`: a cycle, written out.
fn cycle_through(
    steps: &[StepSpec],
    position: &HashMap<&str, usize>,
    from: usize,
    to: usize,
) -> Option<Vec<String>> {
    let deps = |i: usize| -> Vec<usize> {
        let step = &steps[i];
        let mut out: Vec<usize> = step
            .needs
            .iter()
            .filter_map(|n| position.get(n.as_str()).copied())
            .collect();
        if let Ok(found) = refs::references(&step.input) {
            out.extend(
                found
                    .iter()
                    .filter_map(|(_, r)| position.get(r.step.as_str()).copied()),
            );
        }
        for text in step.gate.as_ref().map(GateSpec::texts).unwrap_or_default() {
            if let Ok(g) = refs::parse_gate(&text)
                && let Some(&j) = position.get(g.step.as_str())
                && j != i
            {
                out.push(j);
            }
        }
        out
    };
    // Depth-first from `to` looking for `from`.
    let mut stack = vec![(to, vec![to])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        if at == from {
            let mut names: Vec<String> = std::iter::once(from)
                .chain(path.iter().copied())
                .map(|i| steps[i].id.clone())
                .collect();
            names.dedup();
            return Some(names);
        }
        if !seen.insert(at) {
            continue;
        }
        for next in deps(at) {
            let mut longer = path.clone();
            longer.push(next);
            stack.push((next, longer));
        }
    }
    None
}

/// Reads every strategy the steps name, so every step runs the bytes of submit.
async fn pin_strategies(
    planner: &Planner,
    steps: &[StepPlan],
) -> Result<Vec<StrategySource>, ApiError> {
    let mut names = BTreeSet::new();
    for step in steps {
        strategy_names(&step.input, &mut names);
    }
    let mut sources = Vec::new();
    for name in names {
        let step = steps
            .iter()
            .find(|s| {
                let mut found = BTreeSet::new();
                strategy_names(&s.input, &mut found);
                found.contains(&name)
            })
            .map_or("", |s| s.id.as_str());
        let source = planner
            .strategy_source(&name)
            .await
            .map_err(|e| in_step(step, e))?;
        sources.push(source);
    }
    Ok(sources)
}

/// `strategy` values (without references) anywhere in an input.
fn strategy_names(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "strategy"
                    && let Some(name) = v.as_str()
                    && !name.contains("${")
                {
                    out.insert(name.to_string());
                }
                strategy_names(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| strategy_names(v, out)),
        _ => {}
    }
}

/// Plans every step that names no other step, as its kind will when it runs,
/// so a wrong field or a strategy that does not exist is a 422 now. Candles a
/// step needs may be missing when an import step comes before it.
async fn dry_plan(planner: &Planner, steps: &[StepPlan]) -> Result<(), ApiError> {
    let imports: BTreeSet<&str> = steps
        .iter()
        .filter(|s| s.kind == "candle_import")
        .map(|s| s.id.as_str())
        .collect();
    for step in steps {
        let has_refs = refs::references(&step.input).is_ok_and(|r| !r.is_empty());
        if has_refs {
            continue;
        }
        let after_import = upstream(steps, &step.id)
            .iter()
            .any(|s| imports.contains(s));
        match step_request(planner, step, &step.input).await {
            Ok(_) => {}
            Err(e) if after_import && e.body.code == "missing_candles" => {}
            Err(e) => return Err(in_step(&step.id, e)),
        }
    }
    Ok(())
}

/// A step's planning error, saying which step it is.
fn in_step(step: &str, mut e: ApiError) -> ApiError {
    e.body.message = format!("step '{step}': {}", e.body.message);
    if !e.body.details.is_object() {
        e.body.details = json!({});
    }
    if let Some(d) = e.body.details.as_object_mut() {
        d.insert("step".into(), json!(step));
    }
    e
}

/// Every step `id` depends on, directly or not.
fn upstream<'a>(steps: &'a [StepPlan], id: &str) -> BTreeSet<&'a str> {
    let mut out = BTreeSet::new();
    let mut todo = vec![id.to_string()];
    while let Some(at) = todo.pop() {
        if let Some(step) = steps.iter().find(|s| s.id == at) {
            for need in &step.needs {
                if out.insert(need.as_str()) {
                    todo.push(need.clone());
                }
            }
        }
    }
    out
}

/// A step's resolved input planned by its kind: the child job's params.
async fn step_request(
    planner: &Planner,
    step: &StepPlan,
    input: &Value,
) -> Result<Value, ApiError> {
    let kind = step_kind(&step.kind).expect("kinds are checked at submit");
    if kind.name == "strategy_validation" {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct ValidateStep {
            strategy: String,
        }
        let request: ValidateStep = read_request(input.clone())?;
        let source = planner.strategy_source(&request.strategy).await?;
        return Ok(serde_json::to_value(ValidationPlan {
            name: source.name,
            sha256: source.sha256,
            source: source.source,
        })
        .expect("plans serialize"));
    }
    (kind.plan)(planner, input.clone()).await
}

/// One step's state as the pipeline sees it.
struct StepState {
    job_id: String,
    status: JobStatus,
    error: Option<ErrorBody>,
    /// Result body plus job_id, status and summary (succeeded steps).
    output: Option<Value>,
}

fn execute<'a>(rt: &'a dyn Runtime, job: &'a JobRecord) -> BoxFuture<'a, anyhow::Result<Outcome>> {
    Box::pin(async move {
        let plan: PipelinePlan = match read_plan(job) {
            Ok(plan) => plan,
            Err(outcome) => return Ok(outcome),
        };
        let engine = rt.engine();
        // Looks again while steps end under it: the wake a step's end sends
        // cannot reach a pipeline that is running (its own queue task is still
        // held), so it must not go to sleep having missed one.
        for round in 0.. {
            let states = load_steps(rt, &job.id, plan.steps.len()).await?;
            // Outputs of succeeded steps, and their gates.
            let mut outputs = Map::new();
            let mut checks: Vec<(usize, GateCheck)> = Vec::new();
            for (i, step) in plan.steps.iter().enumerate() {
                let Some(state) = states.get(&(i as i64)) else {
                    continue;
                };
                match state.status {
                    JobStatus::Succeeded => {
                        outputs
                            .insert(step.id.clone(), state.output.clone().unwrap_or(Value::Null));
                    }
                    JobStatus::Failed | JobStatus::Cancelled => {
                        engine
                            .end_children(&job.id, "an earlier step of the pipeline failed")
                            .await
                            .map_err(|e| anyhow::anyhow!("{e}"))?;
                        let error = state.error.clone().unwrap_or_else(|| {
                            ErrorBody::new(state.status.as_str(), "the step ended without a result")
                        });
                        return Ok(Outcome::Failed(
                            ErrorBody::new(
                                "step_failed",
                                format!(
                                    "step '{}' ({}, job {}) {}: {}",
                                    step.id,
                                    step.kind,
                                    state.job_id,
                                    state.status.as_str(),
                                    error.message
                                ),
                            )
                            .with_details(
                                json!({"step": step.id, "job_id": state.job_id, "error": error}),
                            ),
                        ));
                    }
                    _ => {}
                }
            }
            let mut rejected = None;
            for (i, step) in plan.steps.iter().enumerate() {
                if !outputs.contains_key(&step.id) {
                    continue;
                }
                for gate in &step.gates {
                    let check = gate.check(&outputs[&gate.step]);
                    if !check.passed && rejected.is_none() {
                        rejected = Some((step.id.clone(), check.clone()));
                    }
                    checks.push((i, check));
                }
            }
            if rejected.is_none() {
                // Start every step whose needs have all succeeded.
                let planner = engine.planner();
                planner.pin_sources(&plan.sources);
                for (i, step) in plan.steps.iter().enumerate() {
                    if states.contains_key(&(i as i64))
                        || !step.needs.iter().all(|n| outputs.contains_key(n))
                    {
                        continue;
                    }
                    let refused = |why: String, details: Value| {
                        ErrorBody::new(
                            "step_input_rejected",
                            format!("step '{}' ({}) could not start: {why}", step.id, step.kind),
                        )
                        .with_details(json!({"step": step.id, "error": details}))
                    };
                    let params = match refs::resolve(&step.input, &outputs) {
                        Err(why) => Err(refused(why.clone(), json!({"message": why}))),
                        Ok(input) => step_request(&planner, step, &input)
                            .await
                            .map_err(|e| refused(e.body.message.clone(), json!(e.body))),
                    };
                    let params = match params {
                        Ok(params) => params,
                        Err(error) => {
                            engine
                                .end_children(&job.id, "the pipeline stopped")
                                .await
                                .map_err(|e| anyhow::anyhow!("{e}"))?;
                            return Ok(Outcome::Failed(error));
                        }
                    };
                    let kind = step_kind(&step.kind).expect("kinds are checked at submit");
                    engine
                        .create_children(job, kind, vec![(i as i64, params)], None, None)
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                }
                let counts = engine
                    .advance(&job.id)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                // Each step ending after what this run saw wakes the pipeline again;
                // steps that ended while it ran (the store moved past `states`) are
                // looked at in a fresh run, never judged from stale states.
                let seen = states.values().filter(|s| s.status.is_terminal()).count();
                let moved = counts.total as usize != states.len() || counts.done() as usize != seen;
                if moved && round < 50 {
                    continue;
                }
                if counts.done() < counts.total || moved {
                    rt.store().set_children_seen(&job.id, seen as i64).await?;
                    return Ok(Outcome::Waiting);
                }
                if (counts.total as usize) < plan.steps.len() {
                    // Every child ended and none could start: a step's needs never
                    // succeeded (cannot happen once failures end the pipeline).
                    return Ok(Outcome::Failed(ErrorBody::new(
                        "invalid_job",
                        "the pipeline's remaining steps can never start",
                    )));
                }
            } else {
                engine
                    .end_children(&job.id, "a gate of the pipeline failed")
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            // Steps that had started but gave no output: ended by the stop.
            let stopped: HashMap<String, String> = states
                .iter()
                .filter_map(|(i, state)| {
                    let step = plan.steps.get(*i as usize)?;
                    (!outputs.contains_key(&step.id))
                        .then(|| (step.id.clone(), state.job_id.clone()))
                })
                .collect();
            return Ok(finish(job, &plan, &outputs, &stopped, &checks, rejected));
        }
        unreachable!("the loop returns")
    })
}

async fn load_steps(
    rt: &dyn Runtime,
    parent: &str,
    count: usize,
) -> anyhow::Result<HashMap<i64, StepState>> {
    let mut states = HashMap::new();
    let mut pages = rt.store().child_pages(parent, -1, MAX_STEPS as i64);
    while let Some(page) = pages.next().await? {
        for child in page {
            if child.index as usize >= count {
                continue;
            }
            let summary = match child.status {
                JobStatus::Succeeded => rt
                    .store()
                    .get_job_head(&child.id)
                    .await?
                    .and_then(|j| j.summary)
                    .unwrap_or(Value::Null),
                _ => Value::Null,
            };
            let output = (child.status == JobStatus::Succeeded).then(|| {
                let mut output = match &child.body {
                    Some(Value::Object(body)) => body.clone(),
                    _ => Map::new(),
                };
                output.insert("job_id".into(), json!(child.id));
                output.insert("status".into(), json!(child.status.as_str()));
                output.insert("summary".into(), summary);
                Value::Object(output)
            });
            states.insert(
                child.index,
                StepState {
                    job_id: child.id,
                    status: child.status,
                    error: child.error,
                    output,
                },
            );
        }
    }
    Ok(states)
}

fn finish(
    job: &JobRecord,
    plan: &PipelinePlan,
    outputs: &Map<String, Value>,
    stopped: &HashMap<String, String>,
    checks: &[(usize, GateCheck)],
    rejected: Option<(String, GateCheck)>,
) -> Outcome {
    let verdict = match &rejected {
        Some((step, check)) => json!({
            "outcome": "rejected",
            "reason": format!("gate '{}' of step '{step}' failed: {}", check.gate,
                              check.reason.clone().unwrap_or_default()),
            "failed_gate": check,
        }),
        None => json!({
            "outcome": "passed",
            "reason": format!("all {} steps succeeded and all {} gates held", plan.steps.len(), checks.len()),
        }),
    };
    let steps: Vec<Value> = plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let output = outputs.get(&step.id);
            let gates: Vec<&GateCheck> = checks
                .iter()
                .filter(|(at, _)| *at == i)
                .map(|(_, c)| c)
                .collect();
            json!({
                "id": step.id,
                "kind": step.kind,
                "job_id": output
                    .and_then(|o| o.get("job_id")).cloned()
                    .or_else(|| stopped.get(&step.id).map(|id| json!(id)))
                    .unwrap_or(Value::Null),
                "status": if output.is_some() {
                    "succeeded"
                } else if stopped.contains_key(&step.id) {
                    "stopped"
                } else {
                    "not_run"
                },
                "needs": step.needs,
                "summary": output.and_then(|o| o.get("summary")).cloned().unwrap_or(Value::Null),
                "gates": gates,
            })
        })
        .collect();
    let strategies: Vec<Value> = plan
        .sources
        .iter()
        .map(|s| json!({"name": s.name, "sha256": s.sha256}))
        .collect();
    let provenance = json!({
        "template": plan.template,
        "params": plan.params,
        "notes": plan.notes,
        "strategies": strategies,
        "steps": plan.steps.iter().map(|s| json!({"id": s.id, "kind": s.kind, "input": s.input})).collect::<Vec<_>>(),
    });
    let gates: Vec<Value> = checks
        .iter()
        .map(|(_, c)| serde_json::to_value(c).unwrap_or(Value::Null))
        .collect();
    let report = report::markdown(&report::Input {
        job_id: &job.id,
        plan,
        outputs,
        stopped,
        checks,
        verdict: &verdict,
    });
    let summary = json!({
        "name": plan.name,
        "template": plan.template,
        "verdict": verdict["outcome"],
        "steps": plan.steps.len(),
        "steps_run": outputs.len(),
        "failed_gate": rejected.as_ref().map(|(_, c)| c.gate.clone()),
    });
    let result = PipelineResult {
        name: plan.name.clone(),
        verdict,
        steps,
        gates,
        report,
        provenance,
    };
    Outcome::Succeeded {
        result: Box::new(JobResult {
            body: serde_json::to_value(result).expect("results serialize"),
            parts: Vec::new(),
        }),
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(value: Value) -> Vec<StepSpec> {
        serde_json::from_value(value).unwrap()
    }

    fn code(value: Value) -> String {
        check_steps(&steps(value))
            .unwrap_err()
            .body
            .code
            .to_string()
    }

    #[test]
    fn structure_errors_name_the_problem() {
        let ok = check_steps(&steps(json!([
            {"id": "base", "kind": "backtest", "input": {}},
            {"id": "opt", "kind": "optimize", "input": {}, "gate": "opt.summary.pbo <= 0.3"},
            {"id": "mc", "kind": "monte_carlo", "input": {"source": {"hyperparameters": "${opt.best.params}"}},
             "gate": ["mc.summary.total_return_p5 > 0", "base.metrics.total >= 10"]},
        ])))
        .unwrap();
        assert_eq!(ok[1].kind, "optimization");
        assert_eq!(ok[2].needs, ["base", "opt"]);
        assert_eq!(
            code(json!([{"id": "a", "kind": "nope", "input": {}}])),
            "unknown_step_kind"
        );
        assert_eq!(
            code(json!([{"id": "a", "kind": "optimization_trial", "input": {}}])),
            "unknown_step_kind"
        );
        assert_eq!(
            code(json!([{"id": "A", "kind": "backtest", "input": {}}])),
            "invalid_step_id"
        );
        assert_eq!(
            code(
                json!([{"id": "a", "kind": "backtest", "input": {}}, {"id": "a", "kind": "backtest", "input": {}}])
            ),
            "duplicate_step_id"
        );
        assert_eq!(
            code(json!([{"id": "a", "kind": "backtest", "input": {"x": "${b.job_id}"}}])),
            "unknown_step_reference"
        );
        assert_eq!(
            code(
                json!([{"id": "a", "kind": "backtest", "input": {"x": "${b.job_id}"}},
                        {"id": "b", "kind": "backtest", "input": {}}])
            ),
            "later_step_reference"
        );
        assert_eq!(
            code(
                json!([{"id": "a", "kind": "backtest", "input": {}, "needs": ["b"]},
                        {"id": "b", "kind": "backtest", "input": {}, "needs": ["a"]}])
            ),
            "pipeline_cycle"
        );
        assert_eq!(
            code(json!([{"id": "a", "kind": "optimization", "input": {}},
                        {"id": "b", "kind": "backtest", "input": {"h": "${a.bestest.params}"}}])),
            "unknown_output_path"
        );
        assert_eq!(
            code(
                json!([{"id": "a", "kind": "walk_forward", "input": {}, "gate": "a.efficiency >= "}])
            ),
            "invalid_gate"
        );
        assert_eq!(code(json!([])), "invalid_steps");
    }

    #[test]
    fn cycles_are_written_out() {
        let e = check_steps(&steps(json!([
            {"id": "a", "kind": "backtest", "input": {"x": "${c.job_id}"}},
            {"id": "b", "kind": "backtest", "input": {}, "needs": ["a"]},
            {"id": "c", "kind": "backtest", "input": {}, "needs": ["b"]},
        ])))
        .unwrap_err();
        assert_eq!(e.body.code, "pipeline_cycle");
        assert!(
            e.body.message.contains("a → c → b → a"),
            "{}",
            e.body.message
        );
    }
}
