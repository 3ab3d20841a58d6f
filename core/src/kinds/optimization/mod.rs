//! `optimization`: a hyperparameter study whose every trial is a child job
//! (`optimization_trial`) on any worker of the fleet, scored with Jesse's own
//! fitness, drawn by a seeded sampler (grid, random, Optuna's TPE or NSGA-II)
//! and reported with a leaderboard, convergence, parameter importance, a
//! two-parameter heatmap and overfitting statistics (PBO, deflated and
//! probabilistic Sharpe ratios).
//!
//! Reproducible by construction: trial k's seed derives from the study's seed
//! and k alone, and an adaptive sampler draws trial k knowing exactly trials
//! 0..k−window (the engine releases trial k only once those have ended), told
//! in trial order; so the same request and seed give the same trials on one
//! worker or many, interrupted or not. Nothing lives in a coordinator's
//! memory: each trial rebuilds the sampler from the stored trials.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{
    KindDef, Lane, Outcome, RowsPart, Runtime, Submit, read_plan, read_request, schema_of,
};
use crate::error::ApiError;
use crate::jobs::{BacktestPlan, BacktestRequest, DataRouteSpec, RouteSpec};
use crate::planner::Planner;
use crate::store::JobRecord;

pub mod fitness;
mod report;
pub mod trial;

/// Trials one study may hold: grid and random draws need no history; TPE and
/// NSGA-II re-read every earlier trial's summary on each draw.
pub const MAX_TRIALS: u32 = 10_000;
pub const MAX_ADAPTIVE_TRIALS: u32 = 2_000;
/// Trials an adaptive sampler draws without knowing each other's results, by default.
pub const DEFAULT_WINDOW: u32 = 8;

pub static KIND: KindDef = KindDef {
    name: "optimization",
    description: "a hyperparameter study: every trial a child job, scored with Jesse's fitness",
    lane: Lane::Control,
    submit: Some(Submit {
        path: "/v1/optimizations",
        tool: "optimize",
        title: "Submit optimization study",
        description: "Optimize a strategy's hyperparameters. Each trial (a training backtest, then the testing \
backtest when Jesse's fitness rules run it) is its own child job spread over every worker. Give the backtest fields \
(strategy, exchange, symbol, timeframe or routes, balance, fee...) without dates, plus `training` and `testing` \
periods (or start_date, end_date and testing_fraction), an optional search space (`hyperparameters`: per name \
{fixed} or {min, max, step} or {options}; default the strategy's hyperparameters()), `sampler` (grid | random | \
tpe | nsga2), `trials`, `seed`, `objective` (Jesse's fitness: sharpe, calmar, sortino, omega, serenity, smart \
sharpe, smart sortino; or any metric key with `direction`), `constraints` (min_trades, max_drawdown, metric \
bounds) and `early_stop`. Everything is validated first. Answers at once with the job_id; poll job_get (progress = \
trials done/total with an ETA), read job_result for the leaderboard (best by training fitness with testing metrics \
beside them), convergence, parameter importance, heatmap and overfitting statistics (PBO, deflated Sharpe), and page \
every trial with offset/limit. The same request and seed give the same trials.",
        next: "job_result for the leaderboard, convergence and overfitting statistics; its `trials` rows page every trial",
        open_world: false,
    }),
    request_schema: schema_of::<OptimizationRequest>,
    result_schema: schema_of::<report::OptimizationResult>,
    rows: Some(RowsPart {
        name: "trials",
        included_by_default: |_| false,
    }),
    plan,
    execute,
    parent: true,
};

/// `POST /v1/optimizations` and MCP `optimize`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OptimizationRequest {
    /// Strategy name (with symbol and timeframe), or give `routes`.
    #[serde(default)]
    pub strategy: Option<String>,
    pub exchange: String,
    #[serde(default)]
    pub symbol: Option<String>,
    #[serde(default)]
    pub timeframe: Option<String>,
    /// Several trading routes; the first route's strategy declares the hyperparameters.
    #[serde(default)]
    pub routes: Option<Vec<RouteSpec>>,
    #[serde(default)]
    pub data_routes: Option<Vec<DataRouteSpec>>,
    #[serde(default)]
    pub starting_balance: Option<f64>,
    #[serde(default)]
    pub fee: Option<f64>,
    /// `futures` or `spot`.
    #[serde(default, rename = "type")]
    pub exchange_type: Option<String>,
    #[serde(default)]
    pub leverage: Option<f64>,
    #[serde(default)]
    pub leverage_mode: Option<String>,
    #[serde(default)]
    pub warm_up_candles: Option<i64>,
    /// Jesse's fast mode for every trial (default true, as in Jesse's optimize).
    #[serde(default)]
    pub fast_mode: Option<bool>,
    /// The in-sample period trials are scored on.
    #[serde(default)]
    pub training: Option<Period>,
    /// The out-of-sample period shown beside each trial.
    #[serde(default)]
    pub testing: Option<Period>,
    /// Instead of training/testing: the whole range, split at a day by `testing_fraction`.
    #[serde(default)]
    pub start_date: Option<String>,
    #[serde(default)]
    pub end_date: Option<String>,
    /// Share of the range's days kept for testing, at its end (default 0.2).
    #[serde(default)]
    pub testing_fraction: Option<f64>,
    /// The search space: per hyperparameter, `{"fixed": v}`, or a range
    /// `{"min", "max", "step"}` (narrowed or widened from the declaration), or
    /// `{"options": [...]}`. Undeclared names are refused; declared names not
    /// listed are searched over their declared range.
    #[serde(default)]
    pub hyperparameters: Option<BTreeMap<String, ParamSpec>>,
    /// `grid` | `random` | `tpe` (default) | `nsga2` (several objectives).
    #[serde(default)]
    pub sampler: SamplerKind,
    /// Total trials (default 100; a grid study runs exactly its grid, which
    /// must not be larger).
    #[serde(default)]
    pub trials: Option<u32>,
    /// Seed of every random step (default: drawn at submit and stored with the job).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Trials queued or running at once (default: the fleet's runners).
    #[serde(default)]
    pub max_parallel: Option<u32>,
    /// Adaptive samplers: trial k is drawn knowing trials 0..k−window (default 8).
    /// Fixed by the request, never by the fleet, so results do not depend on
    /// how many workers ran the study; larger runs more trials at once and
    /// learns a little later.
    #[serde(default)]
    pub window: Option<u32>,
    /// Jesse's fitness (`sharpe` default, `calmar`, `sortino`, `omega`,
    /// `serenity`, `smart sharpe`, `smart sortino`) or a Jesse metric key.
    #[serde(default)]
    pub objective: Option<String>,
    /// For a metric objective: `maximize` (default) or `minimize`.
    #[serde(default)]
    pub direction: Option<Direction>,
    /// Several objectives (nsga2 only).
    #[serde(default)]
    pub objectives: Option<Vec<ObjectiveSpec>>,
    /// Trades at which Jesse's fitness stops rewarding more trades (default 200).
    #[serde(default)]
    pub optimal_total: Option<u32>,
    /// Marks trials infeasible (never best) from their training metrics.
    #[serde(default)]
    pub constraints: Option<Constraints>,
    /// Stop after this many trials in a row (in trial order) without improving
    /// the best feasible objective. Single objective only.
    #[serde(default)]
    pub early_stop: Option<u32>,
    /// Leaderboard rows in the result body (default 20, at most 1000; every
    /// trial is in the paged `trials` rows).
    #[serde(default)]
    pub top: Option<u32>,
    /// NSGA-II's population size (default 50).
    #[serde(default)]
    pub population_size: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Period {
    /// `YYYY-MM-DD`, inclusive.
    pub start_date: String,
    /// `YYYY-MM-DD`, exclusive.
    pub end_date: String,
}

/// How one hyperparameter is searched.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    /// Hold the parameter at this value.
    #[serde(default)]
    pub fixed: Option<Value>,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    /// Grid and sampling step (int default 1; a float needs one for `grid`).
    #[serde(default)]
    pub step: Option<f64>,
    /// Sample a float on a log scale (min > 0).
    #[serde(default)]
    pub log: Option<bool>,
    /// Choices of a categorical parameter.
    #[serde(default)]
    pub options: Option<Vec<Value>>,
    /// `int`, `float` or `categorical`; needed only for a parameter whose
    /// strategy computes hyperparameters() (not a literal list).
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SamplerKind {
    Grid,
    Random,
    #[default]
    Tpe,
    Nsga2,
}

impl SamplerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SamplerKind::Grid => "grid",
            SamplerKind::Random => "random",
            SamplerKind::Tpe => "tpe",
            SamplerKind::Nsga2 => "nsga2",
        }
    }

    /// Learns from finished trials (needs the release window).
    pub fn adaptive(self) -> bool {
        matches!(self, SamplerKind::Tpe | SamplerKind::Nsga2)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Maximize,
    Minimize,
}

impl Direction {
    /// Whether `a` is better than `b` in this direction.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Direction::Maximize => a > b,
            Direction::Minimize => a < b,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectiveSpec {
    /// A Jesse fitness name or a Jesse metric key.
    pub metric: String,
    #[serde(default)]
    pub direction: Option<Direction>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    /// At least this many closed trades in training.
    #[serde(default)]
    pub min_trades: Option<u32>,
    /// Maximum drawdown no deeper than this many percent (e.g. 30 for −30 %).
    #[serde(default)]
    pub max_drawdown: Option<f64>,
    /// Bounds on any Jesse metric of the training backtest.
    #[serde(default)]
    pub metrics: Option<Vec<MetricBound>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricBound {
    pub metric: String,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
}

/// One searched dimension, as the sampler sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dimension {
    pub name: String,
    /// `int`, `float` or `categorical`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub low: Option<f64>,
    #[serde(default)]
    pub high: Option<f64>,
    #[serde(default)]
    pub step: Option<f64>,
    #[serde(default)]
    pub log: bool,
    #[serde(default)]
    pub choices: Option<Vec<Value>>,
}

/// An objective as planned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Objective {
    /// The fitness name or the metric key.
    pub name: String,
    pub direction: Direction,
    /// A Jesse fitness function (else a plain metric).
    pub fitness: bool,
}

impl Objective {
    /// The metric shown for the testing period: the fitness's ratio, or the metric.
    pub fn testing_metric(&self) -> &str {
        if self.fitness {
            fitness::FITNESS
                .iter()
                .find(|(n, _, _)| *n == self.name)
                .map_or("sharpe_ratio", |(_, m, _)| m)
        } else {
            &self.name
        }
    }
}

/// A bound a feasible trial's training metrics meet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bound {
    pub metric: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// What an optimization job stores as its params; every trial reads it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OptimizationPlan {
    pub training: BacktestPlan,
    pub testing: BacktestPlan,
    pub space: Vec<Dimension>,
    pub fixed: Map<String, Value>,
    pub sampler: SamplerKind,
    /// Trials the study runs (a grid's size for `grid`).
    pub trials: u32,
    pub seed: u64,
    /// Release window (adaptive samplers and early stop).
    pub window: Option<u32>,
    pub max_parallel: Option<u32>,
    pub objectives: Vec<Objective>,
    pub optimal_total: u32,
    pub constraints: Vec<Bound>,
    pub early_stop: Option<u32>,
    pub top: u32,
    pub population_size: u32,
}

fn invalid(code: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(code, message)
}

fn field(e: ApiError, name: &str) -> ApiError {
    e.with_details(json!({"field": name}))
}

/// The largest seed accepted: JSON clients (JavaScript) keep integers exact up to 2^53.
const MAX_SEED: u64 = (1 << 53) - 1;

fn plan(planner: &Planner, request: Value) -> BoxFuture<'_, Result<Value, ApiError>> {
    Box::pin(async move {
        let request: OptimizationRequest = read_request(request)?;
        let plan = plan_study(planner, &request).await?;
        Ok(serde_json::to_value(plan).expect("plans serialize"))
    })
}

/// Validates a study request into its plan; nothing is enqueued on an error.
pub async fn plan_study(
    planner: &Planner,
    request: &OptimizationRequest,
) -> Result<OptimizationPlan, ApiError> {
    let (training_period, testing_period) = periods(request)?;
    let mut training = plan_period(planner, request, &training_period, "training").await?;
    let testing = plan_period(planner, request, &testing_period, "testing").await?;
    if training_period.start_date >= testing_period.start_date
        && training_period.start_date < testing_period.end_date
        || testing_period.start_date >= training_period.start_date
            && testing_period.start_date < training_period.end_date
    {
        return Err(invalid(
            "overlapping_periods",
            format!(
                "training {}..{} and testing {}..{} overlap; testing must be out of sample",
                training_period.start_date,
                training_period.end_date,
                testing_period.start_date,
                testing_period.end_date
            ),
        ));
    }
    training.include_equity_curve = true;

    let strategy_name = training.routes[0].strategy.clone();
    // The literal list, else what the strategy's deep validation saw.
    let declared = planner.declared_hyperparameters(&strategy_name).await?;
    let (space, fixed) = search_space(
        &strategy_name,
        declared.as_deref(),
        request.hyperparameters.as_ref(),
    )?;
    crate::planner::check_search_space(&strategy_name, declared.as_deref(), &space, &fixed)?;

    let sampler = request.sampler;
    let max = if sampler.adaptive() {
        MAX_ADAPTIVE_TRIALS
    } else {
        MAX_TRIALS
    };
    if request.trials.is_some_and(|t| t == 0 || t > max) {
        return Err(field(
            invalid(
                "invalid_number",
                format!(
                    "trials must be from 1 to {max} for the {} sampler",
                    sampler.as_str()
                ),
            ),
            "trials",
        ));
    }
    let mut trials = request.trials.unwrap_or(100);
    if sampler == SamplerKind::Grid {
        let size = grid_size(&space)?;
        if request.trials.is_some_and(|t| u64::from(t) < size) {
            return Err(field(
                invalid(
                    "grid_too_large",
                    format!(
                        "the grid has {size} points, more than trials = {trials}; raise trials, coarsen steps or fix parameters"
                    ),
                )
                .with_details(json!({"field": "trials", "grid_size": size})),
                "trials",
            ));
        }
        if size > u64::from(MAX_TRIALS) {
            return Err(invalid(
                "grid_too_large",
                format!(
                    "the grid has {size} points; a study holds at most {MAX_TRIALS}: coarsen steps or fix parameters"
                ),
            ));
        }
        trials = size as u32;
    }
    let objectives = objectives(request)?;
    if sampler == SamplerKind::Nsga2 && objectives.len() < 2 {
        return Err(field(
            invalid(
                "invalid_objectives",
                "the nsga2 sampler optimizes several objectives: give `objectives` with at least two",
            ),
            "objectives",
        ));
    }
    if sampler != SamplerKind::Nsga2 && objectives.len() > 1 {
        return Err(field(
            invalid(
                "invalid_objectives",
                "several objectives need the nsga2 sampler; other samplers optimize one",
            ),
            "objectives",
        ));
    }
    if let Some(patience) = request.early_stop {
        if objectives.len() > 1 {
            return Err(field(
                invalid("invalid_early_stop", "early_stop needs a single objective"),
                "early_stop",
            ));
        }
        if patience == 0 || patience >= trials {
            return Err(field(
                invalid(
                    "invalid_number",
                    format!(
                        "early_stop must be from 1 to trials − 1 ({})",
                        trials.saturating_sub(1)
                    ),
                ),
                "early_stop",
            ));
        }
    }
    let bounded = |name: &str, value: Option<u32>, low: u32, high: u32| -> Result<(), ApiError> {
        match value {
            Some(v) if v < low || v > high => Err(field(
                invalid(
                    "invalid_number",
                    format!("{name} must be from {low} to {high}"),
                ),
                name,
            )),
            _ => Ok(()),
        }
    };
    bounded("max_parallel", request.max_parallel, 1, 1024)?;
    bounded("window", request.window, 1, 256)?;
    bounded("top", request.top, 1, 1000)?;
    bounded("population_size", request.population_size, 2, 1000)?;
    bounded("optimal_total", request.optimal_total, 2, 1_000_000)?;
    if request.seed.is_some_and(|s| s > MAX_SEED) {
        return Err(field(
            invalid(
                "invalid_number",
                format!("seed must be from 0 to {MAX_SEED}"),
            ),
            "seed",
        ));
    }
    let window = if sampler.adaptive() || request.early_stop.is_some() {
        Some(request.window.unwrap_or(DEFAULT_WINDOW))
    } else {
        None
    };
    Ok(OptimizationPlan {
        training,
        testing,
        space,
        fixed,
        sampler,
        trials,
        seed: request
            .seed
            .unwrap_or_else(|| u64::from(rand::random::<u32>())),
        window,
        max_parallel: request.max_parallel,
        objectives,
        optimal_total: request.optimal_total.unwrap_or(200),
        constraints: constraints(request.constraints.as_ref())?,
        early_stop: request.early_stop,
        top: request.top.unwrap_or(20),
        population_size: request.population_size.unwrap_or(50),
    })
}

/// The training and testing periods, given directly or split from one range.
fn periods(request: &OptimizationRequest) -> Result<(Period, Period), ApiError> {
    match (
        &request.training,
        &request.testing,
        &request.start_date,
        &request.end_date,
    ) {
        (Some(training), Some(testing), None, None) => {
            if request.testing_fraction.is_some() {
                return Err(field(
                    invalid(
                        "invalid_dates",
                        "testing_fraction splits start_date..end_date; with training and testing it has no use",
                    ),
                    "testing_fraction",
                ));
            }
            Ok((training.clone(), testing.clone()))
        }
        (None, None, Some(start), Some(end)) => {
            let fraction = request.testing_fraction.unwrap_or(0.2);
            if !(fraction > 0.0 && fraction <= 0.9) {
                return Err(field(
                    invalid(
                        "invalid_number",
                        "testing_fraction must be above 0 and at most 0.9",
                    ),
                    "testing_fraction",
                ));
            }
            let day = 86_400_000;
            let parse = |v: &str, name: &str| {
                crate::time::parse_day(v)
                    .map_err(|e| field(invalid("invalid_date", format!("{name}: {e}")), name))
            };
            let (s, e) = (parse(start, "start_date")?, parse(end, "end_date")?);
            let days = (e - s) / day;
            if days < 2 {
                return Err(invalid(
                    "invalid_dates",
                    "start_date..end_date must span at least two days to split into training and testing",
                ));
            }
            let testing_days = ((days as f64 * fraction).round() as i64).clamp(1, days - 1);
            let split = crate::time::to_rfc3339(e - testing_days * day)[..10].to_string();
            Ok((
                Period {
                    start_date: start.clone(),
                    end_date: split.clone(),
                },
                Period {
                    start_date: split,
                    end_date: end.clone(),
                },
            ))
        }
        _ => Err(invalid(
            "invalid_dates",
            "give either `training` and `testing` ({start_date, end_date} each), or `start_date`, `end_date` and optionally `testing_fraction`",
        )),
    }
}

/// Plans one period's backtest exactly like a backtest submit; errors name the period.
async fn plan_period(
    planner: &Planner,
    request: &OptimizationRequest,
    period: &Period,
    name: &str,
) -> Result<BacktestPlan, ApiError> {
    let mut body = Map::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            body.insert(key.to_string(), value);
        }
    };
    put("strategy", request.strategy.clone().map(Value::from));
    put("exchange", Some(Value::from(request.exchange.clone())));
    put("symbol", request.symbol.clone().map(Value::from));
    put("timeframe", request.timeframe.clone().map(Value::from));
    put("routes", request.routes.as_ref().map(|r| json!(r)));
    put(
        "data_routes",
        request.data_routes.as_ref().map(|r| json!(r)),
    );
    put(
        "starting_balance",
        request.starting_balance.map(Value::from),
    );
    put("fee", request.fee.map(Value::from));
    put("type", request.exchange_type.clone().map(Value::from));
    put("leverage", request.leverage.map(Value::from));
    put(
        "leverage_mode",
        request.leverage_mode.clone().map(Value::from),
    );
    put("warm_up_candles", request.warm_up_candles.map(Value::from));
    put(
        "fast_mode",
        Some(Value::from(request.fast_mode.unwrap_or(true))),
    );
    put("start_date", Some(Value::from(period.start_date.clone())));
    put("end_date", Some(Value::from(period.end_date.clone())));
    let named = |mut e: ApiError| {
        e.body.message = format!("{name}: {}", e.body.message);
        let details = std::mem::take(&mut e.body.details);
        e.with_details(json!({"period": name, "cause": details}))
    };
    let backtest: BacktestRequest = read_request(Value::Object(body)).map_err(named)?;
    planner.plan_backtest(&backtest).await.map_err(named)
}

/// The searched dimensions and the fixed values, from the declaration and the
/// request's overrides.
fn search_space(
    strategy: &str,
    declared: Option<&[crate::strategy_static::Hyperparameter]>,
    overrides: Option<&BTreeMap<String, ParamSpec>>,
) -> Result<(Vec<Dimension>, Map<String, Value>), ApiError> {
    let empty = BTreeMap::new();
    let overrides = overrides.unwrap_or(&empty);
    let bad = |name: &str, message: String| {
        invalid(
            "invalid_search_space",
            format!("hyperparameters.{name}: {message}"),
        )
        .with_details(json!({"field": format!("hyperparameters.{name}")}))
    };
    let mut entries: Vec<(String, Option<crate::strategy_static::Hyperparameter>)> = Vec::new();
    match declared {
        Some(declared) => {
            for name in overrides.keys() {
                if !declared.iter().any(|h| &h.name == name) {
                    let names: Vec<&str> = declared.iter().map(|h| h.name.as_str()).collect();
                    return Err(invalid(
                        "unknown_hyperparameter",
                        format!(
                            "hyperparameter '{name}' is not declared by {strategy}; declared: {}",
                            if names.is_empty() {
                                "none".to_string()
                            } else {
                                names.join(", ")
                            }
                        ),
                    )
                    .with_details(
                        json!({"field": format!("hyperparameters.{name}"), "declared": names}),
                    ));
                }
            }
            entries.extend(declared.iter().map(|h| (h.name.clone(), Some(h.clone()))));
        }
        None => {
            // hyperparameters() is computed: only what the request spells out.
            entries.extend(overrides.keys().map(|n| (n.clone(), None)));
        }
    }
    let mut space = Vec::new();
    let mut fixed = Map::new();
    for (name, hp) in entries {
        let spec = overrides.get(&name).cloned().unwrap_or_default();
        if let Some(value) = &spec.fixed {
            if spec.min.is_some()
                || spec.max.is_some()
                || spec.step.is_some()
                || spec.options.is_some()
            {
                return Err(bad(
                    &name,
                    "`fixed` excludes min, max, step and options".into(),
                ));
            }
            fixed.insert(name, value.clone());
            continue;
        }
        let number = |v: &Option<Value>| v.as_ref().and_then(Value::as_f64);
        let declared_kind = hp.as_ref().map(|h| h.kind.as_str());
        let kind = match (spec.kind.as_deref(), declared_kind) {
            (Some(k), _) => k.to_string(),
            // Options turn any parameter into a choice among them.
            (None, _) if spec.options.is_some() => "categorical".into(),
            (None, Some(k)) => k.to_string(),
            (None, None) => {
                return Err(bad(
                    &name,
                    "the strategy's hyperparameters() is not a literal list, so give this parameter's `type` (int, float or categorical) with its range or options".into(),
                ));
            }
        };
        match kind.as_str() {
            "int" | "float" => {
                let low = spec
                    .min
                    .or_else(|| hp.as_ref().and_then(|h| number(&h.min)));
                let high = spec
                    .max
                    .or_else(|| hp.as_ref().and_then(|h| number(&h.max)));
                let step = spec
                    .step
                    .or_else(|| hp.as_ref().and_then(|h| number(&h.step)));
                let (Some(low), Some(high)) = (low, high) else {
                    return Err(bad(&name, "needs min and max".into()));
                };
                if !low.is_finite() || !high.is_finite() || low > high {
                    return Err(bad(
                        &name,
                        format!("empty range: min {low} is above max {high}"),
                    ));
                }
                if let Some(step) = step
                    && !(step > 0.0 && step.is_finite())
                {
                    return Err(bad(
                        &name,
                        format!("step must be a positive number, not {step}"),
                    ));
                }
                let log = spec.log.unwrap_or(false);
                if log && (low <= 0.0 || step.is_some()) {
                    return Err(bad(&name, "a log scale needs min > 0 and no step".into()));
                }
                if kind == "int" {
                    if low.fract() != 0.0
                        || high.fract() != 0.0
                        || step.is_some_and(|s| s.fract() != 0.0)
                    {
                        return Err(bad(
                            &name,
                            "an int parameter needs whole min, max and step".into(),
                        ));
                    }
                    if (high - low) / step.unwrap_or(1.0) > 1e9 {
                        return Err(bad(&name, "the range holds more than 10^9 values".into()));
                    }
                }
                space.push(Dimension {
                    name,
                    kind,
                    low: Some(low),
                    high: Some(high),
                    step,
                    log,
                    choices: None,
                });
            }
            "categorical" | "bool" | "str" => {
                if spec.min.is_some() || spec.max.is_some() || spec.step.is_some() {
                    return Err(bad(&name, "options exclude min, max and step".into()));
                }
                let choices = spec
                    .options
                    .clone()
                    .or_else(|| hp.as_ref().and_then(|h| h.options.clone()))
                    .or_else(|| (kind == "bool").then(|| vec![json!(true), json!(false)]));
                match choices {
                    Some(choices) if !choices.is_empty() => {
                        if choices.len() > 10_000 {
                            return Err(bad(&name, "at most 10000 options".into()));
                        }
                        space.push(Dimension {
                            name,
                            kind: "categorical".into(),
                            low: None,
                            high: None,
                            step: None,
                            log: false,
                            choices: Some(choices),
                        });
                    }
                    Some(_) => return Err(bad(&name, "options is empty".into())),
                    // A plain str parameter without options is not searchable: keep its default.
                    None => {
                        if let Some(default) = hp.as_ref().and_then(|h| h.default.clone()) {
                            fixed.insert(name, default);
                        }
                    }
                }
            }
            other => {
                return Err(bad(
                    &name,
                    format!("unknown type '{other}'; use int, float or categorical"),
                ));
            }
        }
    }
    if space.is_empty() {
        return Err(invalid(
            "empty_search_space",
            format!(
                "nothing to optimize: {strategy} declares no searchable hyperparameter{}; declare some or give ranges in `hyperparameters`",
                if fixed.is_empty() {
                    ""
                } else {
                    " (all are fixed)"
                }
            ),
        ));
    }
    Ok((space, fixed))
}

/// The values a grid takes along one dimension.
pub fn grid_values(dimension: &Dimension) -> Result<Vec<Value>, ApiError> {
    if let Some(choices) = &dimension.choices {
        return Ok(choices.clone());
    }
    let (low, high) = (dimension.low.unwrap_or(0.0), dimension.high.unwrap_or(0.0));
    let step = match (dimension.kind.as_str(), dimension.step) {
        ("int", step) => step.unwrap_or(1.0),
        (_, Some(step)) => step,
        _ => {
            return Err(invalid(
                "invalid_search_space",
                format!(
                    "hyperparameters.{}: a float parameter needs a `step` for the grid sampler",
                    dimension.name
                ),
            )
            .with_details(json!({"field": format!("hyperparameters.{}", dimension.name)})));
        }
    };
    let count = ((high - low) / step + 1e-9).floor() as u64 + 1;
    if count > u64::from(MAX_TRIALS) {
        return Err(invalid(
            "grid_too_large",
            format!(
                "hyperparameters.{} alone has {count} grid values; a study holds at most {MAX_TRIALS}",
                dimension.name
            ),
        ));
    }
    Ok((0..count)
        .map(|i| {
            let v = low + i as f64 * step;
            if dimension.kind == "int" {
                json!(v.round() as i64)
            } else {
                json!((v * 1e10).round() / 1e10)
            }
        })
        .collect())
}

fn grid_size(space: &[Dimension]) -> Result<u64, ApiError> {
    let mut size: u64 = 1;
    for d in space {
        size = size.saturating_mul(grid_values(d)?.len() as u64);
    }
    Ok(size)
}

/// Grid point `index`: the first dimension varies slowest.
pub fn grid_point(space: &[Dimension], index: u64) -> Result<Map<String, Value>, ApiError> {
    let axes: Vec<Vec<Value>> = space.iter().map(grid_values).collect::<Result<_, _>>()?;
    let mut rest = index;
    let mut point = Map::new();
    for (d, values) in space.iter().zip(&axes).rev() {
        let n = values.len() as u64;
        point.insert(d.name.clone(), values[(rest % n) as usize].clone());
        rest /= n;
    }
    // Keep the space's order in the map for readability.
    Ok(space
        .iter()
        .map(|d| (d.name.clone(), point[&d.name].clone()))
        .collect())
}

fn objectives(request: &OptimizationRequest) -> Result<Vec<Objective>, ApiError> {
    let specs: Vec<ObjectiveSpec> = match (&request.objectives, &request.objective) {
        (Some(_), Some(_)) => {
            return Err(field(
                invalid(
                    "invalid_objectives",
                    "give `objective` or `objectives`, not both",
                ),
                "objectives",
            ));
        }
        (Some(list), None) => {
            if list.is_empty() || list.len() > 8 {
                return Err(field(
                    invalid("invalid_objectives", "objectives must hold 1 to 8 entries"),
                    "objectives",
                ));
            }
            list.clone()
        }
        (None, one) => vec![ObjectiveSpec {
            metric: one.clone().unwrap_or_else(|| "sharpe".into()),
            direction: request.direction,
        }],
    };
    specs
        .into_iter()
        .map(|spec| {
            if let Some(name) = fitness::fitness_name(&spec.metric) {
                if spec.direction == Some(Direction::Minimize) {
                    return Err(field(
                        invalid("invalid_objectives", format!("Jesse's fitness '{name}' is maximized; drop direction")),
                        "direction",
                    ));
                }
                return Ok(Objective {
                    name: name.into(),
                    direction: Direction::Maximize,
                    fitness: true,
                });
            }
            if super::batch::RANKABLE.contains(&spec.metric.as_str()) {
                return Ok(Objective {
                    name: spec.metric,
                    direction: spec.direction.unwrap_or_default(),
                    fitness: false,
                });
            }
            let fitness: Vec<&str> = fitness::FITNESS.iter().map(|(n, _, _)| *n).collect();
            Err(invalid(
                "invalid_objective",
                format!(
                    "objective '{}' is neither Jesse's fitness ({}) nor a numeric Jesse metric",
                    spec.metric,
                    fitness.join(", ")
                ),
            )
            .with_details(json!({"field": "objective", "fitness": fitness, "metrics": super::batch::RANKABLE})))
        })
        .collect()
}

fn constraints(request: Option<&Constraints>) -> Result<Vec<Bound>, ApiError> {
    let Some(request) = request else {
        return Ok(Vec::new());
    };
    let mut bounds = Vec::new();
    if let Some(min) = request.min_trades {
        bounds.push(Bound {
            metric: "total".into(),
            min: Some(f64::from(min)),
            max: None,
        });
    }
    if let Some(limit) = request.max_drawdown {
        if !(limit > 0.0 && limit <= 100.0) {
            return Err(field(
                invalid(
                    "invalid_number",
                    "constraints.max_drawdown is a percentage above 0 and at most 100 (30 means no worse than −30 %)",
                ),
                "constraints.max_drawdown",
            ));
        }
        bounds.push(Bound {
            metric: "max_drawdown".into(),
            min: Some(-limit),
            max: None,
        });
    }
    for (i, bound) in request.metrics.iter().flatten().enumerate() {
        let name = format!("constraints.metrics[{i}]");
        if !super::batch::RANKABLE.contains(&bound.metric.as_str()) {
            return Err(field(
                invalid(
                    "invalid_constraint",
                    format!("{name}: '{}' is not a numeric Jesse metric", bound.metric),
                ),
                &name,
            ));
        }
        if bound.min.is_none() && bound.max.is_none()
            || bound.min.zip(bound.max).is_some_and(|(a, b)| a > b)
            || bound.min.is_some_and(|v| !v.is_finite())
            || bound.max.is_some_and(|v| !v.is_finite())
        {
            return Err(field(
                invalid(
                    "invalid_constraint",
                    format!("{name}: give a finite min and/or max, min not above max"),
                ),
                &name,
            ));
        }
        bounds.push(Bound {
            metric: bound.metric.clone(),
            min: bound.min,
            max: bound.max,
        });
    }
    if bounds.len() > 32 {
        return Err(invalid("invalid_constraint", "at most 32 constraints"));
    }
    Ok(bounds)
}

fn execute<'a>(rt: &'a dyn Runtime, job: &'a JobRecord) -> BoxFuture<'a, anyhow::Result<Outcome>> {
    Box::pin(async move {
        let plan: OptimizationPlan = match read_plan(job) {
            Ok(plan) => plan,
            Err(outcome) => return Ok(outcome),
        };
        let counts = rt.store().child_counts(&job.id).await?;
        if counts.total < i64::from(plan.trials) {
            let children = (0..i64::from(plan.trials))
                .map(|k| (k, json!({"trial": k})))
                .collect();
            rt.engine()
                .create_children(
                    job,
                    &trial::KIND,
                    children,
                    plan.max_parallel.map(i64::from),
                    plan.window.map(i64::from),
                )
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let counts = rt
            .engine()
            .advance(&job.id)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if counts.done() < counts.total {
            return Ok(Outcome::Waiting);
        }
        report::report(rt, job, &plan).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dim(name: &str, kind: &str, low: f64, high: f64, step: Option<f64>) -> Dimension {
        Dimension {
            name: name.into(),
            kind: kind.into(),
            low: Some(low),
            high: Some(high),
            step,
            log: false,
            choices: None,
        }
    }

    #[test]
    fn grid_covers_every_point_once() {
        let space = vec![
            dim("fast", "int", 5.0, 15.0, Some(5.0)),
            dim("risk", "float", 0.1, 0.3, Some(0.1)),
        ];
        assert_eq!(grid_size(&space).unwrap(), 9);
        let points: Vec<_> = (0..9).map(|k| grid_point(&space, k).unwrap()).collect();
        assert_eq!(
            points[0],
            json!({"fast": 5, "risk": 0.1}).as_object().unwrap().clone()
        );
        assert_eq!(points[1]["risk"], json!(0.2));
        assert_eq!(
            points[8],
            json!({"fast": 15, "risk": 0.3})
                .as_object()
                .unwrap()
                .clone()
        );
        let mut unique: Vec<String> = points
            .iter()
            .map(|p| Value::Object(p.clone()).to_string())
            .collect();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 9);
        assert_eq!(
            grid_values(&dim("x", "float", 0.0, 1.0, None))
                .unwrap_err()
                .body
                .code,
            "invalid_search_space"
        );
    }

    #[test]
    fn search_space_from_declaration_and_overrides() {
        let report = crate::strategy_static::validate_static(
            Some("S"),
            "from jesse.strategies import Strategy\nclass S(Strategy):\n    def should_long(self):\n        return False\n    def go_long(self):\n        pass\n    def hyperparameters(self):\n        return [{'name': 'a', 'type': int, 'min': 1, 'max': 9, 'default': 2}, {'name': 'b', 'type': float, 'min': 0.1, 'max': 1.0, 'default': 0.5}, {'name': 'c', 'type': 'categorical', 'options': ['x', 'y'], 'default': 'x'}]\n",
        );
        let declared = report.hyperparameters.unwrap();
        let overrides: BTreeMap<String, ParamSpec> =
            serde_json::from_value(json!({"a": {"min": 3, "max": 5}, "b": {"fixed": 0.7}}))
                .unwrap();
        let (space, fixed) = search_space("S", Some(&declared), Some(&overrides)).unwrap();
        assert_eq!(space.len(), 2);
        assert_eq!((space[0].low, space[0].high), (Some(3.0), Some(5.0)));
        assert_eq!(space[1].choices, Some(vec![json!("x"), json!("y")]));
        assert_eq!(fixed["b"], json!(0.7));
        let unknown: BTreeMap<String, ParamSpec> =
            serde_json::from_value(json!({"z": {"min": 1, "max": 2}})).unwrap();
        assert_eq!(
            search_space("S", Some(&declared), Some(&unknown))
                .unwrap_err()
                .body
                .code,
            "unknown_hyperparameter"
        );
        let empty: BTreeMap<String, ParamSpec> =
            serde_json::from_value(json!({"a": {"min": 5, "max": 3}})).unwrap();
        assert_eq!(
            search_space("S", Some(&declared), Some(&empty))
                .unwrap_err()
                .body
                .code,
            "invalid_search_space"
        );
    }
}
