//! A finished study's result: the leaderboard (best by the training
//! objective, testing metrics beside them and a rank by testing too), the
//! convergence, parameter importance, a two-parameter heatmap, and the
//! overfitting statistics over the trials' daily returns.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::trial::{TrialResult, TrialState, stop_point};
use super::{Direction, OptimizationPlan};
use crate::jobs::JobStatus;
use crate::kinds::{Outcome, Runtime};
use crate::overfit::Performance;
use crate::store::{JobRecord, JobResult};

/// Metrics each leaderboard row shows for both periods.
const KEY_METRICS: &[&str] = &[
    "total",
    "net_profit_percentage",
    "win_rate",
    "max_drawdown",
    "sharpe_ratio",
    "calmar_ratio",
    "sortino_ratio",
];

/// Partitions for the PBO's combinatorially symmetric cross-validation, at most.
const PBO_PARTITIONS: usize = 16;

#[derive(Debug, Serialize, JsonSchema)]
pub struct OptimizationResult {
    /// How the study ran: sampler, seed, trials, window, objectives.
    #[schemars(with = "Map<String, Value>")]
    pub study: Value,
    /// Trials by state: complete, infeasible, failed, not_run, duplicates;
    /// `unique` (distinct parameter sets that ran: the PBO's trials) and
    /// `trials_evaluated` (distinct parameter sets evaluated, failed ones
    /// included: the deflated Sharpe ratio's N).
    #[schemars(with = "Map<String, Value>")]
    pub counts: Value,
    /// The best feasible trial by the training objective (first of the
    /// leaderboard; for several objectives the Pareto front's first).
    #[schemars(with = "Option<Map<String, Value>>")]
    pub best: Option<Value>,
    /// The best `top` distinct trials by the training objective, each with its
    /// testing metrics and its rank by the testing objective among these rows.
    #[schemars(with = "Vec<Map<String, Value>>")]
    pub leaderboard: Vec<Value>,
    /// Per trial in trial order: its objective value and the best so far.
    #[schemars(with = "Vec<Map<String, Value>>")]
    pub convergence: Vec<Value>,
    /// Per searched parameter: the share of the objective's variance it
    /// explains alone (correlation ratio η², binned), over complete trials.
    #[schemars(with = "Map<String, Value>")]
    pub importance: Value,
    /// The two most important parameters' grid: best objective per cell.
    #[schemars(with = "Option<Map<String, Value>>")]
    pub heatmap: Option<Value>,
    /// Probability of backtest overfitting (CSCV), deflated and probabilistic
    /// Sharpe ratios of the best trial; each null with a reason when undefined.
    #[schemars(with = "Map<String, Value>")]
    pub overfitting: Value,
    /// Strategies' sha256, candles of both periods, Jesse version.
    #[schemars(with = "Map<String, Value>")]
    pub provenance: Value,
}

struct Trial {
    job_id: String,
    result: TrialResult,
}

impl Trial {
    /// The first objective value, ±inf included (Jesse ranks a +inf fitness best).
    fn value(&self) -> Option<f64> {
        self.result.summary.objective_value()
    }

    fn values(&self) -> Vec<Option<f64>> {
        self.result.summary.objective_values().unwrap_or_default()
    }
}

/// `x` as JSON carries it: a number, or null with `<key>_special` beside it.
fn put(object: &mut Value, key: &str, x: Option<f64>) {
    let (number, special) = x.map_or((None, None), crate::special::split);
    object[key] = json!(number);
    if let Some(special) = special {
        object[format!("{key}_special")] = json!(special);
    }
}

fn key_metrics(metrics: Option<&Value>) -> Value {
    match metrics {
        Some(m) => Value::Object(
            KEY_METRICS
                .iter()
                .map(|k| (k.to_string(), m.get(*k).cloned().unwrap_or(Value::Null)))
                .collect(),
        ),
        None => Value::Null,
    }
}

pub async fn report(
    rt: &dyn Runtime,
    job: &JobRecord,
    plan: &OptimizationPlan,
) -> anyhow::Result<Outcome> {
    let store = rt.store();
    let mut trials: Vec<Trial> = Vec::new();
    let mut ended: Vec<Value> = Vec::new();
    let mut pages = store.child_pages(&job.id, -1, 200);
    while let Some(page) = pages.next().await? {
        for child in page {
            let parsed = child
                .body
                .filter(|_| child.status == JobStatus::Succeeded)
                .and_then(|b| serde_json::from_value::<TrialResult>(b).ok());
            match parsed {
                Some(result) => trials.push(Trial {
                    job_id: child.id,
                    result,
                }),
                None => ended.push(json!({"trial": child.index, "job_id": child.id, "status": child.status, "error": child.error})),
            }
        }
    }
    // An early stop ends the study at its stop point, whatever ran past it.
    let direction = plan.objectives[0].direction;
    let stop = plan.early_stop.and_then(|patience| {
        let summaries: Vec<_> = trials.iter().map(|t| t.result.summary.clone()).collect();
        stop_point(&summaries, patience, direction)
    });
    let in_study = |t: &Trial| {
        stop.is_none_or(|s| t.result.summary.trial <= s)
            && t.result.summary.state != TrialState::NotRun
    };

    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for t in trials.iter().filter(|t| in_study(t)) {
        let state = match t.result.summary.state {
            TrialState::Complete => "complete",
            TrialState::Infeasible => "infeasible",
            TrialState::Failed => "failed",
            TrialState::NotRun => "not_run",
        };
        *counts.entry(state).or_default() += 1;
        if t.result.summary.duplicate_of.is_some() {
            *counts.entry("duplicates").or_default() += 1;
        }
    }
    let not_run = trials.iter().filter(|t| !in_study(t)).count() as i64
        + ended
            .iter()
            .filter(|e| e["error"]["code"] == "early_stopped")
            .count() as i64;
    let errored = ended.len() as i64
        - ended
            .iter()
            .filter(|e| e["error"]["code"] == "early_stopped")
            .count() as i64;
    // Distinct parameter sets evaluated (duplicates reuse an earlier evaluation).
    let unique: Vec<&Trial> = trials
        .iter()
        .filter(|t| in_study(t) && t.result.summary.duplicate_of.is_none())
        .filter(|t| t.result.summary.state != TrialState::Failed)
        .collect();

    // Ranking: feasible trials with a value, by the objective; ties by trial number.
    let mut ranked: Vec<&Trial> = unique
        .iter()
        .copied()
        .filter(|t| t.result.summary.state == TrialState::Complete && t.value().is_some())
        .collect();
    if plan.objectives.len() > 1 {
        let front = pareto_front(&ranked, plan);
        ranked.sort_by(|a, b| {
            let fa = front.contains(&a.result.summary.trial);
            let fb = front.contains(&b.result.summary.trial);
            fb.cmp(&fa).then_with(|| order(a, b, direction))
        });
    } else {
        ranked.sort_by(|a, b| order(a, b, direction));
    }
    let testing_metric = plan.objectives[0].testing_metric().to_string();
    let testing_value = |t: &Trial| {
        let metrics = t.result.testing.as_ref()?;
        let specials = t.result.testing_special.as_ref().unwrap_or(&Value::Null);
        Some(crate::special::metric(metrics, specials, &testing_metric)).filter(|v| !v.is_nan())
    };
    let top: Vec<&Trial> = ranked.iter().copied().take(plan.top as usize).collect();
    let mut by_testing: Vec<(usize, f64)> = top
        .iter()
        .enumerate()
        .filter_map(|(i, t)| testing_value(t).map(|v| (i, v)))
        .collect();
    let testing_direction = if plan.objectives[0].fitness {
        Direction::Maximize
    } else {
        direction
    };
    by_testing.sort_by(|(ia, a), (ib, b)| {
        let o = match testing_direction {
            Direction::Maximize => b.total_cmp(a),
            Direction::Minimize => a.total_cmp(b),
        };
        o.then(ia.cmp(ib))
    });
    let mut testing_rank = vec![Value::Null; top.len()];
    for (rank, (i, _)) in by_testing.iter().enumerate() {
        testing_rank[*i] = json!(rank + 1);
    }
    let row = |t: &Trial| {
        let summary = &t.result.summary;
        let mut r = json!({
            "trial": summary.trial,
            "job_id": t.job_id,
            "state": summary.state,
            "params": summary.params,
            "values": summary.values.clone().unwrap_or_default(),
            "training": key_metrics(t.result.training.as_ref()),
            "testing": key_metrics(t.result.testing.as_ref()),
            "duplicate_of": summary.duplicate_of,
            "seed": summary.seed,
        });
        if let Some(specials) = &summary.values_special {
            r["values_special"] = json!(specials);
        }
        put(&mut r, "fitness", summary.fitness_value());
        put(&mut r, "testing_objective", testing_value(t));
        for (key, specials) in [
            ("training_special", &t.result.training_special),
            ("testing_special", &t.result.testing_special),
        ] {
            if let Some(specials) = specials {
                r[key] = specials.clone();
            }
        }
        r
    };
    let leaderboard: Vec<Value> = top
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut r = row(t);
            r["rank"] = json!(i + 1);
            r["testing_rank"] = testing_rank[i].clone();
            r
        })
        .collect();

    // Convergence in trial order (duplicates included: they are draws too).
    let mut best_so_far: Option<f64> = None;
    let convergence: Vec<Value> = trials
        .iter()
        .filter(|t| in_study(t))
        .map(|t| {
            let value = t.value();
            if t.result.summary.state == TrialState::Complete
                && let Some(v) = value
                && best_so_far.is_none_or(|b| direction.better(v, b))
            {
                best_so_far = Some(v);
            }
            let mut point =
                json!({"trial": t.result.summary.trial, "state": t.result.summary.state});
            put(&mut point, "value", value);
            put(&mut point, "best", best_so_far);
            point
        })
        .collect();

    let scored: Vec<(&Map<String, Value>, f64)> = unique
        .iter()
        .filter_map(|t| t.value().map(|v| (&t.result.summary.params, v)))
        .collect();
    let names: Vec<String> = plan.space.iter().map(|d| d.name.clone()).collect();
    let importance = importance(&names, &scored);
    let heatmap = heatmap(&names, &importance, &scored, direction);
    // Every distinct parameter set evaluated, failed ones included: the N of
    // the deflated Sharpe ratio.
    let evaluated = trials
        .iter()
        .filter(|t| in_study(t) && t.result.summary.duplicate_of.is_none())
        .count();
    let overfitting = overfitting(plan, evaluated, &unique, &ranked);

    let provenance = trials
        .iter()
        .find(|t| !t.result.provenance.is_null())
        .map(|t| t.result.provenance.clone())
        .unwrap_or(Value::Null);
    let best = leaderboard.first().cloned();
    let mut counts_json: Map<String, Value> = counts
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    counts_json.insert("unique".into(), json!(unique.len()));
    counts_json.insert("trials_evaluated".into(), json!(evaluated));
    counts_json.insert("not_run".into(), json!(not_run));
    counts_json.insert("errored".into(), json!(errored));
    counts_json.insert("trials".into(), json!(plan.trials));
    let study = json!({
        "sampler": plan.sampler.as_str(),
        "seed": plan.seed,
        "trials": plan.trials,
        "window": plan.window,
        "objectives": plan.objectives,
        "optimal_total": plan.optimal_total,
        "constraints": plan.constraints,
        "early_stop": plan.early_stop,
        "stopped_after_trial": stop,
        "space": plan.space,
        "fixed": plan.fixed,
        "training": {"start_date": day(plan.training.start_ms), "end_date": day(plan.training.end_ms)},
        "testing": {"start_date": day(plan.testing.start_ms), "end_date": day(plan.testing.end_ms)},
    });
    let floor_only = plan.objectives.len() == 1
        && plan.objectives[0].fitness
        && best
            .as_ref()
            .and_then(|b| b["values"][0].as_f64())
            .is_some_and(|v| v <= super::fitness::UNUSABLE);
    let mut summary = json!({
        "trials": plan.trials,
        "unique": unique.len(),
        "best_trial": best.as_ref().map(|b| b["trial"].clone()),
        "best_value": best.as_ref().map(|b| b["values"][0].clone()),
        "best_value_special": best.as_ref().map(|b| b["values_special"][0].clone()),
        "best_params": best.as_ref().map(|b| b["params"].clone()),
        "pbo": overfitting["pbo"]["pbo"].clone(),
        "deflated_sharpe": overfitting["deflated_sharpe"]["dsr"].clone(),
        "trials_evaluated": evaluated,
    });
    if floor_only {
        summary["warning"] = json!(format!(
            "no trial scored above Jesse's fitness floor ({}: five trades or fewer, a negative ratio, or an error), \
             so the best trial is only the first of equals, not a finding; widen the search space, lengthen the \
             training range or change the objective",
            super::fitness::UNUSABLE
        ));
    }
    let rows: Vec<Value> = trials
        .iter()
        .map(|t| {
            let mut r = row(t);
            r["in_study"] = json!(in_study(t));
            r["error"] = t.result.error.clone().unwrap_or(Value::Null);
            r
        })
        .chain(ended)
        .collect();
    let result = OptimizationResult {
        study,
        counts: Value::Object(counts_json),
        best,
        leaderboard,
        convergence,
        importance: json!(
            importance
                .iter()
                .map(|(n, v)| (n.clone(), json!(v)))
                .collect::<Map<String, Value>>()
        ),
        heatmap,
        overfitting,
        provenance,
    };
    Ok(Outcome::Succeeded {
        result: Box::new(JobResult {
            body: serde_json::to_value(result).expect("results serialize"),
            parts: vec![("trials".into(), rows)],
        }),
        summary,
    })
}

fn day(ms: i64) -> String {
    crate::time::to_rfc3339(ms)[..10].to_string()
}

fn order(a: &Trial, b: &Trial, direction: Direction) -> std::cmp::Ordering {
    let (va, vb) = (a.value().unwrap_or(f64::NAN), b.value().unwrap_or(f64::NAN));
    let o = match direction {
        Direction::Maximize => vb.total_cmp(&va),
        Direction::Minimize => va.total_cmp(&vb),
    };
    o.then(a.result.summary.trial.cmp(&b.result.summary.trial))
}

/// Trials no other trial dominates (at least as good in every objective,
/// better in one).
fn pareto_front(trials: &[&Trial], plan: &OptimizationPlan) -> Vec<i64> {
    let oriented = |t: &Trial| -> Option<Vec<f64>> {
        t.values()
            .iter()
            .zip(&plan.objectives)
            .map(|(v, o)| {
                v.map(|v| {
                    if o.direction == Direction::Maximize {
                        v
                    } else {
                        -v
                    }
                })
            })
            .collect()
    };
    let points: Vec<(i64, Vec<f64>)> = trials
        .iter()
        .filter_map(|t| oriented(t).map(|p| (t.result.summary.trial, p)))
        .collect();
    points
        .iter()
        .filter(|(_, p)| {
            !points.iter().any(|(_, q)| {
                q.iter().zip(p).all(|(a, b)| a >= b) && q.iter().zip(p).any(|(a, b)| a > b)
            })
        })
        .map(|(t, _)| *t)
        .collect()
}

/// A parameter value's bin: categorical and few-valued parameters by value,
/// numeric ones with many values in ten equal-width bins.
fn binner(name: &str, scored: &[(&Map<String, Value>, f64)]) -> impl Fn(&Value) -> String {
    let mut distinct: Vec<String> = scored
        .iter()
        .map(|(p, _)| p.get(name).map(Value::to_string).unwrap_or_default())
        .collect();
    distinct.sort();
    distinct.dedup();
    let numbers: Vec<f64> = scored
        .iter()
        .filter_map(|(p, _)| p.get(name).and_then(Value::as_f64))
        .collect();
    let numeric = distinct.len() > 10 && numbers.len() == scored.len();
    let (low, high) = numbers
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(*v), h.max(*v))
        });
    move |v: &Value| {
        if numeric && let Some(x) = v.as_f64() {
            let width = (high - low) / 10.0;
            let bin = if width > 0.0 {
                (((x - low) / width).floor() as i64).clamp(0, 9)
            } else {
                0
            };
            let from = low + bin as f64 * width;
            return format!(
                "[{:.6}, {:.6}{}",
                from,
                from + width,
                if bin == 9 { "]" } else { ")" }
            );
        }
        v.to_string()
    }
}

/// η² of the objective on each parameter's bins (between-bin variance over
/// total variance), over complete trials.
fn importance(names: &[String], scored: &[(&Map<String, Value>, f64)]) -> Vec<(String, f64)> {
    let values: Vec<f64> = scored
        .iter()
        .map(|(_, v)| *v)
        .filter(|v| v.is_finite())
        .collect();
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n.max(1.0);
    let total: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
    let mut out: Vec<(String, f64)> = names
        .iter()
        .map(|name| {
            if total <= 0.0 || scored.len() < 3 {
                return (name.clone(), 0.0);
            }
            let bin = binner(name, scored);
            let mut groups: BTreeMap<String, (f64, f64)> = BTreeMap::new();
            for (p, v) in scored.iter().filter(|(_, v)| v.is_finite()) {
                let g = groups
                    .entry(bin(p.get(name).unwrap_or(&Value::Null)))
                    .or_default();
                g.0 += v;
                g.1 += 1.0;
            }
            let between: f64 = groups
                .values()
                .map(|(sum, count)| count * (sum / count - mean).powi(2))
                .sum();
            (name.clone(), between / total)
        })
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

fn heatmap(
    names: &[String],
    importance: &[(String, f64)],
    scored: &[(&Map<String, Value>, f64)],
    direction: Direction,
) -> Option<Value> {
    if names.len() < 2 || scored.is_empty() {
        return None;
    }
    let (x, y) = (&importance[0].0, &importance[1].0);
    let (bx, by) = (binner(x, scored), binner(y, scored));
    let mut cells: BTreeMap<(String, String), f64> = BTreeMap::new();
    for (p, v) in scored.iter().filter(|(_, v)| v.is_finite()) {
        let key = (
            bx(p.get(x).unwrap_or(&Value::Null)),
            by(p.get(y).unwrap_or(&Value::Null)),
        );
        let cell = cells.entry(key).or_insert(*v);
        if direction.better(*v, *cell) {
            *cell = *v;
        }
    }
    let sorted_axis = |pick: fn(&(String, String)) -> &String| {
        let mut axis: Vec<String> = cells.keys().map(|k| pick(k).clone()).collect();
        axis.sort_by(|a, b| match (a.parse::<f64>(), b.parse::<f64>()) {
            (Ok(a), Ok(b)) => a.total_cmp(&b),
            _ => a.cmp(b),
        });
        axis.dedup();
        axis
    };
    let xs = sorted_axis(|k| &k.0);
    let ys = sorted_axis(|k| &k.1);
    let grid: Vec<Vec<Option<f64>>> = ys
        .iter()
        .map(|yv| {
            xs.iter()
                .map(|xv| cells.get(&(xv.clone(), yv.clone())).copied())
                .collect()
        })
        .collect();
    Some(json!({
        "x": {"name": x, "values": xs},
        "y": {"name": y, "values": ys},
        "best": grid,
        "note": "best objective value among the trials in each cell (rows: y, columns: x)",
    }))
}

/// The statistic CSCV selects by for the study's first objective: the same
/// quantity on the blocks' daily returns (a fitness by its ratio), or None
/// when the objective is not a function of daily returns (e.g. `win_rate`,
/// `serenity`).
pub fn performance_of(objective: &super::Objective) -> Option<Performance> {
    Some(match objective.name.as_str() {
        "sharpe" | "sharpe_ratio" => Performance::Sharpe,
        "smart sharpe" | "smart_sharpe" => Performance::SmartSharpe,
        "sortino" | "sortino_ratio" => Performance::Sortino,
        "smart sortino" | "smart_sortino" => Performance::SmartSortino,
        "omega" | "omega_ratio" => Performance::Omega,
        "calmar" | "calmar_ratio" => Performance::Calmar,
        "max_drawdown" => Performance::MaxDrawdown,
        "net_profit_percentage" | "net_profit" | "finishing_balance" | "annual_return" => {
            Performance::TotalReturn
        }
        _ => return None,
    })
}

/// Element operations a non-Sharpe CSCV may take (C(S, S/2)·N·T); past it S
/// is lowered (about a second or two here).
const PBO_BUDGET: f64 = 1e9;

/// PBO over the distinct evaluated trials' training daily returns, selecting
/// by the study's own objective, and the deflated (and probabilistic) Sharpe
/// ratio of the best with N = every distinct parameter set evaluated.
///
/// `evaluated`: the distinct parameter sets evaluated (failed ones included);
/// `unique`: those that ran (they have daily returns); `ranked`: the
/// feasible ones by the objective, best first.
fn overfitting(
    plan: &OptimizationPlan,
    evaluated: usize,
    unique: &[&Trial],
    ranked: &[&Trial],
) -> Value {
    let with_returns: Vec<&Trial> = unique
        .iter()
        .copied()
        .filter(|t| !t.result.daily_returns.is_empty())
        .collect();
    // Align on the most common length (backtests of one period have one).
    let mut lengths: BTreeMap<usize, usize> = BTreeMap::new();
    for t in &with_returns {
        *lengths.entry(t.result.daily_returns.len()).or_default() += 1;
    }
    let length = lengths
        .iter()
        .max_by_key(|(len, n)| (**n, **len))
        .map(|(l, _)| *l)
        .unwrap_or(0);
    let series: Vec<Vec<f64>> = with_returns
        .iter()
        .map(|t| {
            let mut r = t.result.daily_returns.clone();
            r.resize(length, 0.0);
            r
        })
        .collect();
    let pbo = pbo_section(&series, length, &plan.objectives[0]);
    let (sharpes, n_trials, n_reason) = dsr_inputs(&series, evaluated);
    let dsr = match ranked.first() {
        None => json!({"dsr": null, "reason": "no complete trial"}),
        Some(best) if best.result.daily_returns.is_empty() => {
            json!({"dsr": null, "reason": "the best trial has no daily returns"})
        }
        Some(best) => {
            let returns = &best.result.daily_returns;
            match crate::overfit::deflated_sharpe_ratio_n(returns, &sharpes, n_trials) {
                Some(d) => {
                    let mut v = json!(d);
                    v["trial"] = json!(best.result.summary.trial);
                    v
                }
                None => {
                    // Still say how likely a true Sharpe > 0 is, ignoring the selection.
                    let sr = crate::overfit::sharpe(returns);
                    let (skew, kurtosis) = (
                        crate::overfit::skewness(returns),
                        crate::overfit::kurtosis(returns),
                    );
                    let psr = sr
                        .map(|sr| {
                            crate::overfit::probabilistic_sharpe_ratio(
                                sr,
                                0.0,
                                returns.len(),
                                skew,
                                kurtosis,
                            )
                        })
                        .filter(|p| p.is_finite());
                    json!({
                        "dsr": null,
                        "reason": if n_trials < 2 {
                            "undefined with one trial: nothing was selected, so there is nothing to deflate (psr is the probability that the true Sharpe is above 0)"
                        } else {
                            "undefined: needs at least two trials with varying Sharpe ratios, and a best trial with three or more daily returns that vary"
                        },
                        "psr": psr,
                        "sharpe": sr,
                        "n_obs": returns.len(),
                        "skew": Some(skew).filter(|x| x.is_finite()),
                        "kurtosis": Some(kurtosis).filter(|x| x.is_finite()),
                        "n_trials": n_trials,
                        "trial": best.result.summary.trial,
                    })
                }
            }
        }
    };
    let dsr = {
        let mut dsr = dsr;
        dsr["trials_evaluated"] = json!(evaluated);
        dsr["n_trials_used"] = json!(n_trials);
        dsr["n_trials_reason"] = json!(n_reason);
        dsr
    };
    json!({
        "pbo": pbo,
        "deflated_sharpe": dsr,
        "trials_evaluated": evaluated,
        "input": "daily returns of each distinct evaluated trial's training backtest (Jesse's daily Portfolio balance); statistics per day, not annualized",
    })
}

/// The PBO section: CSCV over `series` (each `length` daily returns),
/// selecting by `objective`, or null with the reason it is undefined.
fn pbo_section(series: &[Vec<f64>], length: usize, objective: &super::Objective) -> Value {
    let performance = performance_of(objective);
    let maximize = objective.direction == Direction::Maximize;
    let selection = json!({
        "objective": objective.name,
        "direction": objective.direction,
        "statistic": performance,
        "note": if objective.fitness {
            "a fitness selects by its ratio on the blocks' daily returns (Jesse's trade-count factor and \
             five-trade floor need trades, which are not split by block)"
        } else {
            "the objective's metric recomputed on the blocks' daily returns"
        },
    });
    let pbo = if series.len() < 2 {
        json!({"pbo": null, "reason": "needs at least two distinct evaluated trials with daily returns"})
    } else if series.iter().all(|r| r == &series[0]) {
        json!({"pbo": null, "reason": format!(
            "all {} trials have the same daily returns ({}), so there is no selection to overfit",
            series.len(),
            if series[0].iter().all(|r| *r == 0.0) { "all flat: no trial traded" } else { "identical" }
        )})
    } else if let Some(performance) = performance {
        let mut partitions = (PBO_PARTITIONS.min(length / 2) / 2) * 2;
        let mut lowered = None;
        if performance != Performance::Sharpe {
            let cost = |s: usize| {
                crate::overfit::binomial_f64(s, s / 2) * series.len() as f64 * length as f64
            };
            let wanted = partitions;
            while partitions > 2 && cost(partitions) > PBO_BUDGET {
                partitions -= 2;
            }
            if partitions < wanted {
                lowered = Some(format!(
                    "S lowered from {wanted} to {partitions}: {} is recomputed on every block combination \
                     of {} trials × {length} days",
                    objective.name,
                    series.len()
                ));
            }
        }
        if partitions < 2 {
            json!({"pbo": null, "reason": format!("{length} daily returns are too few to partition")})
        } else {
            match crate::overfit::pbo_cscv_by(series, partitions, performance, maximize) {
                Ok(pbo) => {
                    let histogram = histogram(&pbo.logits, 20);
                    let combinations = pbo.n_combinations;
                    let mut v = json!(pbo);
                    // Thousands of logits: the histogram says what they do.
                    if let Some(o) = v.as_object_mut() {
                        o.remove("logits");
                    }
                    v["logit_histogram"] = histogram;
                    v["partitions"] = json!(partitions);
                    v["blocks_s"] = json!(partitions);
                    v["trials"] = json!(series.len());
                    if partitions < 8 {
                        v["warning"] = json!(format!(
                            "only S = {partitions} CSCV blocks ({combinations} combinations; with S = 2 PBO can \
                             only be 0, 0.5 or 1): too coarse to read as a probability; S = min(16, training \
                             days / 2), so a training period of 16 days or more gives S ≥ 8{}",
                            lowered
                                .as_deref()
                                .map(|l| format!("; {l}"))
                                .unwrap_or_default()
                        ));
                    } else if let Some(l) = lowered {
                        v["note"] = json!(l);
                    }
                    v
                }
                Err(reason) => json!({"pbo": null, "reason": reason}),
            }
        }
    } else {
        json!({"pbo": null, "reason": format!(
            "the objective '{}' is not a function of daily returns, so CSCV cannot select by it; a PBO by another \
             statistic would not measure this study's selection",
            objective.name
        )})
    };
    let mut pbo = pbo;
    pbo["selection"] = selection;
    pbo
}

/// The deflated Sharpe ratio's inputs: the Sharpe ratios its variance is
/// over (each trial with daily returns; a flat one's is 0), N (every
/// distinct parameter set evaluated) and why.
fn dsr_inputs(series: &[Vec<f64>], evaluated: usize) -> (Vec<f64>, usize, String) {
    // DSR: N is every distinct parameter set evaluated (failed ones were
    // tried too); the Sharpe variance is over those with daily returns, a
    // flat (no-trade) trial's Sharpe being 0.
    let sharpes: Vec<f64> = series
        .iter()
        .map(|r| {
            if r.iter().all(|x| *x == r[0]) {
                0.0
            } else {
                crate::overfit::sharpe(r).unwrap_or(0.0)
            }
        })
        .collect();
    let failed = evaluated.saturating_sub(series.len());
    let n_trials = evaluated.max(sharpes.len());
    let n_reason = format!(
        "N = {n_trials}: every distinct parameter set evaluated ({} with daily returns{}{}); \
         the Sharpe variance is over the {} with daily returns",
        sharpes.len(),
        if failed > 0 {
            format!(", {failed} failed: tried, so counted, but without a Sharpe ratio")
        } else {
            String::new()
        },
        {
            let flat = series
                .iter()
                .filter(|r| r.iter().all(|x| *x == 0.0))
                .count();
            if flat > 0 {
                format!(", {flat} flat: Sharpe 0")
            } else {
                String::new()
            }
        },
        sharpes.len()
    );
    (sharpes, n_trials, n_reason)
}

/// Equal-width histogram of finite values: bin edges and counts.
fn histogram(values: &[f64], bins: usize) -> Value {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return json!({"edges": [], "counts": []});
    }
    let (low, high) = finite
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(*v), h.max(*v))
        });
    let width = if high > low {
        (high - low) / bins as f64
    } else {
        1.0
    };
    let mut counts = vec![0u64; bins];
    for v in finite {
        let i = (((v - low) / width).floor() as usize).min(bins - 1);
        counts[i] += 1;
    }
    let edges: Vec<f64> = (0..=bins).map(|i| low + i as f64 * width).collect();
    json!({"edges": edges, "counts": counts})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::optimization::Objective;

    fn objective(name: &str, direction: Direction, fitness: bool) -> Objective {
        Objective {
            name: name.into(),
            direction,
            fitness,
        }
    }

    #[test]
    fn an_all_flat_study_has_no_pbo() {
        let flat = vec![vec![0.0; 40]; 5];
        let pbo = pbo_section(&flat, 40, &objective("sharpe", Direction::Maximize, true));
        assert!(pbo["pbo"].is_null(), "{pbo}");
        assert!(
            pbo["reason"].as_str().unwrap().contains("all flat"),
            "{pbo}"
        );
        // pbo_cscv alone would call it certain overfitting.
        assert_eq!(crate::overfit::pbo_cscv(&flat, 16).unwrap().pbo, 1.0);
    }

    #[test]
    fn pbo_selects_by_the_studys_objective_and_warns_on_few_blocks() {
        let m = vec![
            vec![0.01, 0.01, -0.02, 0.0],
            vec![0.0, -0.01, 0.03, 0.01],
            vec![0.02, -0.03, 0.0, 0.02],
        ];
        let pbo = pbo_section(
            &m,
            4,
            &objective("net_profit_percentage", Direction::Minimize, false),
        );
        let direct = crate::overfit::pbo_cscv_by(&m, 2, Performance::TotalReturn, false).unwrap();
        assert_eq!(pbo["pbo"], json!(direct.pbo));
        assert_eq!(pbo["logit_mean"], json!(direct.logit_mean));
        assert_eq!(pbo["performance"], "total_return");
        assert_eq!(pbo["maximize"], false);
        assert_eq!(pbo["blocks_s"], 2);
        assert!(pbo["warning"].as_str().unwrap().contains("S = 2"), "{pbo}");
        assert_eq!(pbo["selection"]["direction"], "minimize");
        // By Sharpe the logits differ: the objective, not Sharpe, selected.
        let sharpe = crate::overfit::pbo_cscv(&m, 2).unwrap();
        assert_ne!(pbo["logit_mean"], json!(sharpe.logit_mean));
        // An objective that is no function of daily returns: null, with why.
        let pbo = pbo_section(&m, 4, &objective("win_rate", Direction::Maximize, false));
        assert!(pbo["pbo"].is_null());
        assert!(pbo["reason"].as_str().unwrap().contains("win_rate"));
    }

    #[test]
    fn dsr_n_counts_every_evaluated_parameter_set() {
        // Three trials ran (one flat), one more failed: N = 4, the variance
        // over the three Sharpe ratios with the flat one's 0.
        let a = vec![0.01, -0.005, 0.02, 0.0, 0.01];
        let b = vec![-0.01, 0.004, 0.0, 0.003, -0.002];
        let flat = vec![0.0; 5];
        let series = vec![a.clone(), b.clone(), flat];
        let (sharpes, n, why) = dsr_inputs(&series, 4);
        assert_eq!(n, 4);
        assert_eq!(
            sharpes,
            vec![
                crate::overfit::sharpe(&a).unwrap(),
                crate::overfit::sharpe(&b).unwrap(),
                0.0
            ]
        );
        assert!(why.contains("1 failed") && why.contains("1 flat"), "{why}");
        let d = crate::overfit::deflated_sharpe_ratio_n(&a, &sharpes, n).unwrap();
        assert_eq!(d.n_trials, 4);
        let variance = crate::overfit::std(&sharpes).powi(2);
        assert_eq!(
            d.expected_max_sharpe,
            crate::overfit::expected_max_sharpe(4, variance)
        );
        // The old count (trials with a non-flat Sharpe) would have been 2.
        assert_ne!(
            d.expected_max_sharpe,
            crate::overfit::expected_max_sharpe(2, variance)
        );
    }
}
