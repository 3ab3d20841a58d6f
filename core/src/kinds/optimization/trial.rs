//! `optimization_trial`: one trial of a study, in a runner. It draws its
//! parameters (the grid point, or its sampler rebuilt from the study's stored
//! trials with the trial's own seed), runs the training backtest, scores it
//! with Jesse's fitness, runs the testing backtest exactly when Jesse's
//! fitness would, checks the constraints, and stores everything: parameters,
//! seed, metrics of both periods, fitness, objective values, the training
//! period's daily returns (for the study's overfitting statistics) and the
//! candles' provenance.
//!
//! Its job summary is the small record later draws read (state, parameters,
//! objective values, the sampler's per-trial state), so a draw never parses
//! result bodies.

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::fitness::{UNUSABLE, fitness};
use super::{OptimizationPlan, SamplerKind, grid_point};
use crate::ErrorBody;
use crate::jobs::{BacktestPlan, JobStatus};
use crate::kinds::{KindDef, Lane, Outcome, Runtime, read_plan, schema_of};
use crate::special::{self, Special};
use crate::store::{JobRecord, JobResult};

pub static KIND: KindDef = KindDef {
    name: "optimization_trial",
    description: "one trial of an optimization study (created by its parent)",
    lane: Lane::Runner,
    submit: None,
    request_schema: schema_of::<TrialParams>,
    result_schema: schema_of::<TrialResult>,
    rows: None,
    plan: |_, _| {
        Box::pin(async {
            Err(crate::ApiError::invalid(
                "not_submittable",
                "trials are created by their study",
            ))
        })
    },
    execute,
    parent: false,
};

/// A trial job's params: its number; everything else is its parent's plan.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TrialParams {
    pub trial: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TrialState {
    /// Scored, and meets every constraint.
    Complete,
    /// Scored, but breaks a constraint: never the best.
    Infeasible,
    /// The strategy raised (Jesse's fitness gives such a trial 0.0001).
    Failed,
    /// Past the study's early stop: not run.
    NotRun,
}

/// What later draws know of a trial (the trial job's summary).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TrialSummary {
    pub trial: i64,
    pub state: TrialState,
    /// The searched parameters only (fixed ones are the study's).
    #[schemars(with = "Map<String, Value>")]
    pub params: Map<String, Value>,
    /// Objective values in the study's order (None: not available, e.g. a NaN
    /// metric, or non-finite: see `values_special`).
    #[serde(default)]
    pub values: Option<Vec<Option<f64>>>,
    /// Beside each null of `values`, the non-finite number it stands for
    /// (`+inf`, `-inf`, `nan`; docs/OPTIMIZATION.md). ±inf ranks; NaN does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values_special: Option<Vec<Option<Special>>>,
    /// Constraint violations (≤ 0 met), in the study's order.
    #[serde(default)]
    pub constraints: Option<Vec<f64>>,
    /// The sampler's own per-trial state (e.g. NSGA-II's generation).
    #[serde(default)]
    #[schemars(with = "Map<String, Value>")]
    pub system_attrs: Map<String, Value>,
    /// Jesse's fitness (for a fitness objective); null with `fitness_special`
    /// when it is infinite.
    #[serde(default)]
    pub fitness: Option<f64>,
    /// `+inf` when Jesse's fitness is +inf (a ratio of +inf, e.g. sortino with
    /// no losing day): the best score, as Jesse ranks it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fitness_special: Option<Special>,
    pub seed: u64,
    /// The earlier trial with the same parameters whose evaluation this reuses.
    #[serde(default)]
    pub duplicate_of: Option<i64>,
}

impl TrialSummary {
    /// The objective values with their non-finite ones put back: ±inf as
    /// such, NaN as None (not rankable).
    pub fn objective_values(&self) -> Option<Vec<Option<f64>>> {
        let values = self.values.as_ref()?;
        let specials = self.values_special.as_deref().unwrap_or(&[]);
        Some(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.or_else(|| specials.get(i).copied().flatten().map(Special::value))
                        .filter(|v| !v.is_nan())
                })
                .collect(),
        )
    }

    /// The first objective's value (see [`Self::objective_values`]).
    pub fn objective_value(&self) -> Option<f64> {
        self.objective_values()
            .and_then(|v| v.first().copied().flatten())
    }

    /// Jesse's fitness, +inf included.
    pub fn fitness_value(&self) -> Option<f64> {
        self.fitness
            .or_else(|| self.fitness_special.map(Special::value))
    }

    fn set_values(&mut self, values: Vec<Option<f64>>) {
        let split: Vec<(Option<f64>, Option<Special>)> = values
            .iter()
            .map(|v| v.map_or((None, None), special::split))
            .collect();
        self.values_special = split
            .iter()
            .any(|(_, s)| s.is_some())
            .then(|| split.iter().map(|(_, s)| *s).collect());
        self.values = Some(split.into_iter().map(|(v, _)| v).collect());
    }

    fn set_fitness(&mut self, fitness: Option<f64>) {
        let (value, special) = fitness.map_or((None, None), special::split);
        self.fitness = value;
        self.fitness_special = special;
    }
}

/// A trial's stored result.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct TrialResult {
    #[serde(flatten)]
    pub summary: TrialSummary,
    /// Every hyperparameter the backtests ran with (fixed and searched).
    #[schemars(with = "Map<String, Value>")]
    pub hyperparameters: Map<String, Value>,
    /// Jesse's metrics of the training backtest.
    #[schemars(with = "Option<Map<String, Value>>")]
    pub training: Option<Value>,
    /// The training metrics that are null because Jesse computed ±inf or NaN:
    /// metric key to `+inf`, `-inf` or `nan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Map<String, Value>>")]
    pub training_special: Option<Value>,
    /// Jesse's metrics of the testing backtest, when it ran.
    #[schemars(with = "Option<Map<String, Value>>")]
    pub testing: Option<Value>,
    /// The testing metrics' non-finite values, as `training_special`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Map<String, Value>>")]
    pub testing_special: Option<Value>,
    /// Daily returns of the training period (the overfitting statistics' input).
    pub daily_returns: Vec<f64>,
    /// Daily returns of the testing period, when it ran.
    #[serde(default)]
    pub testing_daily_returns: Option<Vec<f64>>,
    /// Why the trial failed or is infeasible.
    #[schemars(with = "Option<Map<String, Value>>")]
    pub error: Option<Value>,
    /// Candles (rows, first, last, sha256), strategies' sha256 and Jesse version of each backtest.
    #[schemars(with = "Map<String, Value>")]
    pub provenance: Value,
}

/// Trial `k`'s own seed: a SplitMix64 step of the study's seed and k, in
/// 0..2^32 (what numpy and Optuna accept).
pub fn trial_seed(seed: u64, k: i64) -> u64 {
    let mut z = seed.wrapping_add(
        (k as u64)
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) & 0xFFFF_FFFF
}

/// The first trial (in trial order) after which `patience` trials in a row
/// did not improve the best complete objective value: the study's last trial.
pub fn stop_point(
    history: &[TrialSummary],
    patience: u32,
    direction: super::Direction,
) -> Option<i64> {
    let mut best: Option<f64> = None;
    let mut since = 0u32;
    for t in history {
        let value = t.objective_value();
        match (t.state, value) {
            (TrialState::Complete, Some(v)) if best.is_none_or(|b| direction.better(v, b)) => {
                best = Some(v);
                since = 0;
            }
            (TrialState::NotRun, _) => return Some(t.trial - 1),
            _ => since += 1,
        }
        if since >= patience {
            return Some(t.trial);
        }
    }
    None
}

fn execute<'a>(rt: &'a dyn Runtime, job: &'a JobRecord) -> BoxFuture<'a, anyhow::Result<Outcome>> {
    Box::pin(async move {
        let params: TrialParams = match read_plan(job) {
            Ok(p) => p,
            Err(outcome) => return Ok(outcome),
        };
        let fail = |m: &str| {
            Ok(Outcome::Failed(ErrorBody::new(
                "invalid_job",
                m.to_string(),
            )))
        };
        let Some(parent_id) = job.parent_id.as_deref() else {
            return fail("a trial needs its study");
        };
        let Some(parent) = rt.store().get_job(parent_id).await? else {
            return fail("the trial's study is gone");
        };
        let plan: OptimizationPlan = match read_plan(&parent) {
            Ok(plan) => plan,
            Err(outcome) => return Ok(outcome),
        };
        run_trial(rt, job, parent_id, params.trial, &plan).await
    })
}

async fn run_trial(
    rt: &dyn Runtime,
    job: &JobRecord,
    parent_id: &str,
    k: i64,
    plan: &OptimizationPlan,
) -> anyhow::Result<Outcome> {
    let seed = trial_seed(plan.seed, k);
    // What the sampler may know: exactly trials 0..k−window (all ended: the
    // engine released this trial only then), in trial order.
    let history = match plan.window {
        Some(window) => {
            let below = k - i64::from(window) + 1;
            read_history(rt, parent_id, below).await?
        }
        None => Vec::new(),
    };
    if let Some(patience) = plan.early_stop
        && let Some(last) = stop_point(&history, patience, plan.objectives[0].direction)
    {
        let why = format!(
            "early stop: {patience} trials in a row after the best did not improve it; trial {last} was the study's last"
        );
        let error = ErrorBody::new("early_stopped", why.clone());
        let withdrawn = rt
            .store()
            .cancel_children_after(parent_id, last, &error)
            .await?;
        for id in withdrawn {
            let _ = rt.engine().queue().withdraw(Lane::Runner, &id).await;
        }
        let summary = TrialSummary {
            trial: k,
            state: TrialState::NotRun,
            params: Map::new(),
            values: None,
            constraints: None,
            system_attrs: Map::new(),
            fitness: None,
            fitness_special: None,
            values_special: None,
            seed,
            duplicate_of: None,
        };
        return Ok(succeeded(TrialResult {
            summary,
            hyperparameters: Map::new(),
            training: None,
            training_special: None,
            testing: None,
            testing_special: None,
            daily_returns: Vec::new(),
            testing_daily_returns: None,
            error: Some(json!(error)),
            provenance: Value::Null,
        }));
    }

    let (sampled, system_attrs) = match plan.sampler {
        SamplerKind::Grid => match grid_point(&plan.space, k as u64) {
            Ok(point) => (point, Map::new()),
            Err(e) => return Ok(Outcome::Failed(e.body)),
        },
        _ => {
            let request = json!({
                "sampler": plan.sampler.as_str(),
                "seed": seed,
                "space": plan.space,
                "directions": plan.objectives.iter().map(|o| o.direction).collect::<Vec<_>>(),
                "population_size": plan.population_size,
                "constrained": !plan.constraints.is_empty(),
                "history": history.iter().filter(|t| t.state != TrialState::NotRun).collect::<Vec<_>>(),
            });
            match rt.call_python(&job.id, "sample_trial", request).await? {
                Ok(reply) => (
                    reply["params"].as_object().cloned().unwrap_or_default(),
                    reply["system_attrs"]
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                ),
                Err(outcome) => return Ok(outcome),
            }
        }
    };
    let mut hyperparameters = plan.fixed.clone();
    hyperparameters.extend(sampled.clone());

    // An identical parameter set the sampler knows is not evaluated again.
    if let Some(earlier) = history.iter().find(|t| {
        t.params == sampled
            && matches!(
                t.state,
                TrialState::Complete | TrialState::Infeasible | TrialState::Failed
            )
    }) {
        let earlier_trial = earlier.duplicate_of.unwrap_or(earlier.trial);
        if let Some(copy) = reuse(rt, parent_id, earlier_trial).await? {
            let mut result = copy;
            result.summary.trial = k;
            result.summary.seed = seed;
            result.summary.system_attrs = system_attrs;
            result.summary.duplicate_of = Some(earlier_trial);
            return Ok(succeeded(result));
        }
    }

    let mut training = plan.training.clone();
    training.hyperparameters = Some(hyperparameters.clone());
    let mut provenance = Map::new();
    let train = match backtest(rt, job, &training).await? {
        Ran::Done(run) => run,
        Ran::Failed(error) => {
            // Jesse's fitness gives a trial whose backtest raised 0.0001.
            let summary = TrialSummary {
                trial: k,
                state: TrialState::Failed,
                params: sampled,
                values: None,
                constraints: None,
                system_attrs,
                fitness: plan
                    .objectives
                    .iter()
                    .any(|o| o.fitness)
                    .then_some(UNUSABLE),
                fitness_special: None,
                values_special: None,
                seed,
                duplicate_of: None,
            };
            return Ok(succeeded(TrialResult {
                summary,
                hyperparameters,
                training: None,
                training_special: None,
                testing: None,
                testing_special: None,
                daily_returns: Vec::new(),
                testing_daily_returns: None,
                error: Some(json!(error)),
                provenance: Value::Null,
            }));
        }
        Ran::Ended(outcome) => return Ok(outcome),
    };
    provenance.insert("training".into(), train.provenance);

    let fitness_objective = plan.objectives.iter().find(|o| o.fitness);
    let score = fitness_objective.map(|o| {
        fitness(
            &o.name,
            f64::from(plan.optimal_total),
            &train.metrics,
            &train.specials,
        )
    });
    // The testing backtest runs exactly when Jesse's fitness runs it; for a
    // plain metric objective, always.
    let run_testing = score.is_none_or(|s| s.run_testing);
    let mut testing_metrics = None;
    let mut testing_specials = None;
    let mut testing_returns = None;
    if run_testing {
        let mut testing = plan.testing.clone();
        testing.hyperparameters = Some(hyperparameters.clone());
        testing.include_equity_curve = true;
        match backtest(rt, job, &testing).await? {
            Ran::Done(run) => {
                provenance.insert("testing".into(), run.provenance);
                testing_specials = non_empty(&run.specials);
                testing_metrics = Some(run.metrics);
                testing_returns = Some(run.daily_returns);
            }
            Ran::Failed(error) => {
                provenance.insert("testing_error".into(), json!(error));
            }
            Ran::Ended(outcome) => return Ok(outcome),
        }
    }

    // A metric Jesse computed as ±inf or NaN is read back from its special
    // entry: ±inf ranks and bounds like any number; NaN stays unavailable.
    let train_metric = |key: &str| {
        Some(special::metric(&train.metrics, &train.specials, key)).filter(|v| !v.is_nan())
    };
    let values: Vec<Option<f64>> = plan
        .objectives
        .iter()
        .map(|o| {
            if o.fitness {
                score.map(|s| s.score)
            } else {
                train_metric(&o.name)
            }
        })
        .collect();
    let violations: Vec<f64> = plan
        .constraints
        .iter()
        .map(|b| match train_metric(&b.metric) {
            Some(v) => b
                .min
                .map_or(f64::NEG_INFINITY, |min| min - v)
                .max(b.max.map_or(f64::NEG_INFINITY, |max| v - max)),
            None => 1.0,
        })
        .collect();
    let broken: Vec<Value> = plan
        .constraints
        .iter()
        .zip(&violations)
        .filter(|(_, v)| **v > 0.0)
        .map(|(b, _)| json!({"metric": b.metric, "min": b.min, "max": b.max, "value": train.metrics.get(&b.metric)}))
        .collect();
    let state = if broken.is_empty() {
        TrialState::Complete
    } else {
        TrialState::Infeasible
    };
    // The store's running best holds finite values only: an infinite best
    // shows in the report, not in `best_so_far`.
    if state == TrialState::Complete
        && let Some(Some(value)) = values.first()
    {
        let maximize = plan.objectives[0].direction == super::Direction::Maximize;
        rt.store()
            .offer_best(parent_id, *value, k, maximize)
            .await?;
    }
    let mut summary = TrialSummary {
        trial: k,
        state,
        params: sampled,
        values: None,
        values_special: None,
        constraints: (!plan.constraints.is_empty()).then_some(violations),
        system_attrs,
        fitness: None,
        fitness_special: None,
        seed,
        duplicate_of: None,
    };
    summary.set_values(values);
    summary.set_fitness(score.map(|s| s.score));
    let training_special = non_empty(&train.specials);
    Ok(succeeded(TrialResult {
        summary,
        hyperparameters,
        training: Some(train.metrics),
        training_special,
        testing: testing_metrics,
        testing_special: testing_specials,
        daily_returns: train.daily_returns,
        testing_daily_returns: testing_returns,
        error: (!broken.is_empty()).then(|| json!({"code": "infeasible", "broken": broken})),
        provenance: Value::Object(provenance),
    }))
}

fn succeeded(result: TrialResult) -> Outcome {
    let summary = serde_json::to_value(&result.summary).expect("summaries serialize");
    Outcome::Succeeded {
        result: Box::new(JobResult {
            body: serde_json::to_value(result).expect("results serialize"),
            parts: Vec::new(),
        }),
        summary,
    }
}

async fn read_history(
    rt: &dyn Runtime,
    parent_id: &str,
    below: i64,
) -> anyhow::Result<Vec<TrialSummary>> {
    if below <= 0 {
        return Ok(Vec::new());
    }
    let rows = rt.store().child_summaries(parent_id, below).await?;
    Ok(rows
        .into_iter()
        .filter(|(_, status, _)| *status == JobStatus::Succeeded)
        .filter_map(|(_, _, summary)| summary.and_then(|s| serde_json::from_value(s).ok()))
        .collect())
}

/// The evaluation of an earlier trial, to stand for an identical parameter set.
async fn reuse(
    rt: &dyn Runtime,
    parent_id: &str,
    trial: i64,
) -> anyhow::Result<Option<TrialResult>> {
    let Some(child) = rt
        .store()
        .child_results(parent_id, trial - 1, 1)
        .await?
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    Ok(child
        .body
        .filter(|_| child.index == trial)
        .and_then(|b| serde_json::from_value(b).ok()))
}

struct Run {
    metrics: Value,
    /// The backtest's `metrics_special` (which null metrics are ±inf or NaN).
    specials: Value,
    daily_returns: Vec<f64>,
    provenance: Value,
}

/// A `metrics_special` map worth storing: a non-empty one.
fn non_empty(specials: &Value) -> Option<Value> {
    specials
        .as_object()
        .is_some_and(|m| !m.is_empty())
        .then(|| specials.clone())
}

enum Ran {
    Done(Run),
    /// The strategy raised, timed out or its candles are gone: the trial failed.
    Failed(ErrorBody),
    /// Cancelled or runner lost: the job itself ends (or is retried) so.
    Ended(Outcome),
}

async fn backtest(rt: &dyn Runtime, job: &JobRecord, plan: &BacktestPlan) -> anyhow::Result<Ran> {
    Ok(match rt.run_backtest(job, plan).await? {
        Outcome::Succeeded { result, .. } => {
            let mut body = result.body;
            let days = ((plan.end_ms - plan.start_ms) / 86_400_000).max(0) as usize;
            let daily_returns = daily_returns(&body["equity_curve"], days);
            let mut provenance = body["provenance"].take();
            if let Some(strategies) = provenance["strategies"].as_array_mut() {
                for s in strategies {
                    if let Some(s) = s.as_object_mut() {
                        s.remove("source");
                    }
                }
            }
            if let Some(p) = provenance.as_object_mut() {
                p.remove("params");
            }
            Ran::Done(Run {
                metrics: body["metrics"].take(),
                specials: body["metrics_special"].take(),
                daily_returns,
                provenance,
            })
        }
        Outcome::Failed(error) => Ran::Failed(error),
        other => Ran::Ended(other),
    })
}

/// Daily returns from Jesse's equity curve (its `Portfolio` series of daily
/// balances); a backtest without trades has no curve: flat, `days` zeros.
pub fn daily_returns(equity_curve: &Value, days: usize) -> Vec<f64> {
    let balances: Vec<f64> = equity_curve
        .as_array()
        .and_then(|series| {
            series
                .iter()
                .find(|s| s["name"] == "Portfolio")
                .or_else(|| series.first())
        })
        .and_then(|s| s["data"].as_array())
        .map(|points| points.iter().filter_map(|p| p["value"].as_f64()).collect())
        .unwrap_or_default();
    if balances.len() < 2 {
        return vec![0.0; days];
    }
    balances
        .windows(2)
        .map(|w| if w[0] != 0.0 { w[1] / w[0] - 1.0 } else { 0.0 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::optimization::Direction;

    fn t(trial: i64, value: Option<f64>) -> TrialSummary {
        TrialSummary {
            trial,
            state: TrialState::Complete,
            params: Map::new(),
            values: Some(vec![value]),
            constraints: None,
            system_attrs: Map::new(),
            fitness: value,
            fitness_special: None,
            values_special: None,
            seed: 0,
            duplicate_of: None,
        }
    }

    #[test]
    fn early_stop_in_trial_order() {
        let h = vec![
            t(0, Some(1.0)),
            t(1, Some(2.0)),
            t(2, Some(1.5)),
            t(3, None),
            t(4, Some(3.0)),
        ];
        assert_eq!(stop_point(&h, 2, Direction::Maximize), Some(3));
        assert_eq!(stop_point(&h, 3, Direction::Maximize), None);
        assert_eq!(stop_point(&h, 1, Direction::Minimize), Some(1));
    }

    #[test]
    fn seeds_differ_per_trial_and_fit_numpy() {
        let seeds: Vec<u64> = (0..1000).map(|k| trial_seed(42, k)).collect();
        let mut unique = seeds.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 1000);
        assert!(seeds.iter().all(|s| *s < 1 << 32));
        assert_eq!(trial_seed(42, 7), trial_seed(42, 7));
    }

    #[test]
    fn returns_from_the_portfolio_curve() {
        let curve = json!([{"name": "Portfolio", "data": [{"time": 1, "value": 100.0}, {"time": 2, "value": 110.0}, {"time": 3, "value": 99.0}]}]);
        let r = daily_returns(&curve, 2);
        assert!((r[0] - 0.1).abs() < 1e-12 && (r[1] + 0.1).abs() < 1e-12);
        assert_eq!(daily_returns(&Value::Null, 3), vec![0.0; 3]);
    }
}
