//! `walk_forward`: walk-forward analysis. The range is cut into windows
//! (rolling or anchored), each an in-sample period followed by an
//! out-of-sample one. Every window's in-sample period is a child
//! optimization study (all windows at once, across the fleet); once they have
//! ended, each window's chosen parameters (the best training fitness) run as a
//! child backtest on its out-of-sample period. The result stitches the
//! out-of-sample daily returns into one curve and judges it: metrics of the
//! stitched series, walk-forward efficiency as Pardo defines it (linear
//! annual rates of profit, out of sample ÷ in sample, per window and whole),
//! the t-statistic of its daily returns, parameter stability, and a verdict
//! with its reasons. The out-of-sample backtests run with Jesse's fast mode
//! off unless the request asks (`fast_mode_out_of_sample`); the trials keep
//! Jesse's default (on). Every window and the result say which ran.
//!
//! Durable like every parent: its phases are read from its children in the
//! store (optimizations at indices 0..n, out-of-sample backtests at n..2n), so
//! a killed worker resumes where it was and finished children never re-run.

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::optimization::trial::{daily_returns, trial_seed};
use super::optimization::{OptimizationPlan, OptimizationRequest, plan_study};
use super::{KindDef, Lane, Outcome, Runtime, Submit, read_plan, read_request};
use crate::error::ApiError;
use crate::jobs::JobStatus;
use crate::planner::Planner;
use crate::store::{JobRecord, JobResult};

const DAY_MS: i64 = 86_400_000;
/// Windows one analysis may hold.
pub const MAX_WINDOWS: usize = 100;
/// Candles of the largest timeframe every in- and out-of-sample period holds at least.
const MIN_CANDLES: i64 = 10;

pub static KIND: KindDef = KindDef {
    name: "walk_forward",
    description: "walk-forward analysis: an optimization per window, its choice tested out of sample, stitched",
    lane: Lane::Control,
    submit: Some(Submit {
        path: "/v1/walk-forward",
        tool: "walk_forward",
        title: "Submit walk-forward analysis",
        description: "Walk-forward analysis of a strategy. Give the optimization fields (strategy, exchange, symbol, \
timeframe or routes, the search space `hyperparameters`, `sampler`, `trials` per window, `objective`, `constraints`, \
`seed`...) plus the range `start_date`/`end_date` and the windows: `mode` rolling | anchored, `train_days`, \
`test_days`, `step_days` (default test_days: out-of-sample windows neither overlap nor leave holes), or `windows` (a \
count) with `train_days`. Each window's in-sample part is a child optimization (all windows in parallel across the \
fleet); its best parameters (by training fitness) then run as an out-of-sample backtest on the next test window. \
Answers at once with the job_id; poll job_get, then job_result: per window its dates, chosen parameters, in- and \
out-of-sample metrics; the stitched out-of-sample equity curve and its metrics; walk-forward efficiency; the \
t-statistic of the stitched daily returns; parameter stability; a verdict with reasons.",
        next: "job_result for the windows, the stitched out-of-sample curve, efficiency and the verdict",
        open_world: false,
    }),
    request_schema,
    result_schema: super::schema_of::<WalkForwardResult>,
    rows: None,
    plan,
    execute,
    parent: true,
};

/// Fields of a walk-forward request beyond the optimization's (whose
/// `training`, `testing`, `testing_fraction` it replaces with windows).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowsSpec {
    /// First day of the whole range, `YYYY-MM-DD`, inclusive.
    pub start_date: String,
    /// End of the whole range, `YYYY-MM-DD`, exclusive.
    pub end_date: String,
    /// `rolling` (default: in-sample of fixed length moves forward) or
    /// `anchored` (in-sample always starts at start_date and grows).
    #[serde(default)]
    pub mode: Mode,
    /// In-sample days (the first window's, for anchored).
    #[serde(default)]
    pub train_days: Option<u32>,
    /// Out-of-sample days per window (the last window also takes the days left over).
    #[serde(default)]
    pub test_days: Option<u32>,
    /// Days between windows' starts (default test_days; smaller overlaps the
    /// out-of-sample windows, larger leaves holes).
    #[serde(default)]
    pub step_days: Option<u32>,
    /// Instead of test_days: this many windows after the first train_days.
    #[serde(default)]
    pub windows: Option<u32>,
    /// Jesse's fast mode for the out-of-sample backtests the verdict is read
    /// from (default false: fast mode changes metrics). The in-sample trials
    /// follow `fast_mode` (default true, as in Jesse's optimize).
    #[serde(default)]
    pub fast_mode_out_of_sample: Option<bool>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Rolling,
    Anchored,
}

const WINDOW_FIELDS: &[&str] = &[
    "start_date",
    "end_date",
    "mode",
    "train_days",
    "test_days",
    "step_days",
    "windows",
    "fast_mode_out_of_sample",
];
const REPLACED_FIELDS: &[&str] = &["training", "testing", "testing_fraction"];

/// The request's schema: the optimization request without its periods, plus
/// the windows.
fn request_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    // Registered through the generator, so nested references follow its
    // convention (OpenAPI components, MCP $defs) and resolve.
    let mut study = super::definition_of::<OptimizationRequest>(generator);
    let windows = super::definition_of::<WindowsSpec>(generator);
    if let Some(props) = study["properties"].as_object_mut() {
        for name in REPLACED_FIELDS.iter().chain(WINDOW_FIELDS) {
            props.remove(*name);
        }
        for (name, schema) in windows["properties"].as_object().into_iter().flatten() {
            props.insert(name.clone(), schema.clone());
        }
    }
    let mut required: Vec<Value> = study["required"].as_array().cloned().unwrap_or_default();
    required.extend(windows["required"].as_array().cloned().unwrap_or_default());
    study["required"] = Value::Array(required);
    study["title"] = json!("WalkForwardRequest");
    schemars::Schema::try_from(study).expect("an object schema")
}

/// One window's dates, in days since the epoch (start inclusive, end exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub train_start: i64,
    pub train_end: i64,
    pub test_start: i64,
    pub test_end: i64,
}

/// Cuts `[start, end)` (days) into windows. The out-of-sample windows start
/// `step` days apart from `start + train`; the last one runs to `end`.
pub fn windows(start: i64, end: i64, mode: Mode, train: i64, test: i64, step: i64) -> Vec<Window> {
    let mut out = Vec::new();
    let mut test_start = start + train;
    while test_start + test <= end && out.len() <= MAX_WINDOWS {
        let next = test_start + step;
        // The last window takes the days left over (fewer than a step).
        let test_end = if next + test > end && step >= test {
            end
        } else {
            test_start + test
        };
        out.push(Window {
            train_start: match mode {
                Mode::Rolling => test_start - train,
                Mode::Anchored => start,
            },
            train_end: test_start,
            test_start,
            test_end,
        });
        test_start = next;
    }
    out
}

/// What a walk-forward job stores as its params.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WalkForwardPlan {
    windows: Vec<Window>,
    mode: Mode,
    step_days: i64,
    /// Each window's optimization, planned at submit.
    studies: Vec<OptimizationPlan>,
    seed: u64,
    /// Jesse's fast mode for the out-of-sample backtests.
    #[serde(default)]
    fast_mode_out_of_sample: bool,
}

fn day_string(day: i64) -> String {
    crate::time::to_rfc3339(day * DAY_MS)[..10].to_string()
}

fn invalid(code: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(code, message)
}

fn plan(planner: &Planner, request: Value) -> BoxFuture<'_, Result<Value, ApiError>> {
    Box::pin(async move {
        let Value::Object(mut body) = request else {
            return Err(invalid(
                "invalid_request",
                "the request body must be a JSON object",
            ));
        };
        for name in REPLACED_FIELDS {
            if body.contains_key(*name) {
                return Err(invalid(
                    "invalid_request",
                    format!("`{name}` has no use in a walk-forward analysis: its windows set the periods"),
                )
                .with_details(json!({"field": name})));
            }
        }
        let mut spec = Map::new();
        for name in WINDOW_FIELDS {
            if let Some(v) = body.remove(*name) {
                spec.insert(name.to_string(), v);
            }
        }
        let spec: WindowsSpec = read_request(Value::Object(spec))?;
        let parse = |v: &str, name: &str| {
            crate::time::parse_day(v)
                .map(|ms| ms / DAY_MS)
                .map_err(|e| {
                    invalid("invalid_date", format!("{name}: {e}"))
                        .with_details(json!({"field": name}))
                })
        };
        let (start, end) = (
            parse(&spec.start_date, "start_date")?,
            parse(&spec.end_date, "end_date")?,
        );
        let days = end - start;
        let positive = |v: Option<u32>, name: &str| -> Result<Option<i64>, ApiError> {
            match v {
                Some(0) => Err(
                    invalid("invalid_number", format!("{name} must be at least 1"))
                        .with_details(json!({"field": name})),
                ),
                v => Ok(v.map(i64::from)),
            }
        };
        let train = positive(spec.train_days, "train_days")?.ok_or_else(|| {
            invalid("invalid_windows", "give train_days (the in-sample length)")
                .with_details(json!({"field": "train_days"}))
        })?;
        let test = match (
            positive(spec.test_days, "test_days")?,
            positive(spec.windows, "windows")?,
        ) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "invalid_windows",
                    "give test_days or windows, not both",
                ));
            }
            (Some(test), None) => test,
            (None, Some(n)) => (days - train) / n,
            (None, None) => {
                return Err(invalid(
                    "invalid_windows",
                    "give test_days (the out-of-sample length) or windows (a count)",
                ));
            }
        };
        if test < 1 || train + test > days {
            return Err(invalid(
                "invalid_windows",
                format!(
                    "{} to {} is {days} days: too short for {train} in-sample days and out-of-sample windows of {test}",
                    spec.start_date, spec.end_date
                ),
            ));
        }
        let step = positive(spec.step_days, "step_days")?.unwrap_or(test);
        let cut = windows(start, end, spec.mode, train, test, step);
        if cut.len() > MAX_WINDOWS {
            return Err(invalid(
                "too_many_windows",
                format!(
                    "the range makes more than {MAX_WINDOWS} windows; lengthen test_days or step_days"
                ),
            ));
        }
        // A period shorter than a few candles of the largest timeframe cannot trade.
        let largest = ["timeframe"]
            .iter()
            .filter_map(|k| body.get(*k).and_then(Value::as_str).map(str::to_string))
            .chain(
                body.get("routes")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r["timeframe"].as_str().map(str::to_string)),
            )
            .filter_map(|tf| crate::jesse::timeframe_minutes(&tf))
            .max()
            .unwrap_or(1);
        let shortest = train.min(test) * 1440;
        if shortest < MIN_CANDLES * largest {
            return Err(invalid(
                "window_too_short",
                format!(
                    "a {}-day period holds fewer than {MIN_CANDLES} candles of the {largest}-minute timeframe; lengthen train_days and test_days",
                    train.min(test)
                ),
            ));
        }
        let seed = match body.get("seed").and_then(Value::as_u64) {
            Some(seed) => seed,
            None => u64::from(rand::random::<u32>()),
        };
        let mut studies = Vec::with_capacity(cut.len());
        for (i, w) in cut.iter().enumerate() {
            let mut study = body.clone();
            study.insert(
                "training".into(),
                json!({"start_date": day_string(w.train_start), "end_date": day_string(w.train_end)}),
            );
            study.insert(
                "testing".into(),
                json!({"start_date": day_string(w.test_start), "end_date": day_string(w.test_end)}),
            );
            // Each window's study has its own seed, derived from the analysis's.
            study.insert("seed".into(), json!(trial_seed(seed, i as i64)));
            let named = |mut e: ApiError| {
                e.body.message = format!(
                    "window {i} ({} to {}): {}",
                    day_string(w.train_start),
                    day_string(w.test_end),
                    e.body.message
                );
                let details = std::mem::take(&mut e.body.details);
                e.with_details(json!({"window": i, "cause": details}))
            };
            let request: OptimizationRequest = read_request(Value::Object(study)).map_err(named)?;
            studies.push(plan_study(planner, &request).await.map_err(named)?);
        }
        let plan = WalkForwardPlan {
            windows: cut,
            mode: spec.mode,
            step_days: step,
            studies,
            seed,
            fast_mode_out_of_sample: spec.fast_mode_out_of_sample.unwrap_or(false),
        };
        Ok(serde_json::to_value(plan).expect("plans serialize"))
    })
}

fn execute<'a>(rt: &'a dyn Runtime, job: &'a JobRecord) -> BoxFuture<'a, anyhow::Result<Outcome>> {
    Box::pin(async move {
        let plan: WalkForwardPlan = match read_plan(job) {
            Ok(plan) => plan,
            Err(outcome) => return Ok(outcome),
        };
        let n = plan.windows.len() as i64;
        let engine = rt.engine();
        let counts = rt.store().child_counts(&job.id).await?;
        if counts.total == 0 {
            // Phase 1: every window's optimization at once.
            let children = plan
                .studies
                .iter()
                .enumerate()
                .map(|(i, s)| (i as i64, serde_json::to_value(s).expect("plans serialize")))
                .collect();
            engine
                .create_children(job, &super::optimization::KIND, children, Some(n), None)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        } else if counts.done() == counts.total && counts.total == n {
            // Phase 2: each window's choice, out of sample.
            let studies = children(rt, &job.id, 0, n).await?;
            let mut backtests = Vec::new();
            for (i, study) in studies.iter().enumerate() {
                let Some(params) = chosen(study) else {
                    continue;
                };
                let mut testing = plan.studies[i].testing.clone();
                let mut hyperparameters = plan.studies[i].fixed.clone();
                hyperparameters.extend(params);
                testing.hyperparameters = Some(hyperparameters);
                testing.include_equity_curve = true;
                testing.fast_mode = plan.fast_mode_out_of_sample;
                backtests.push((
                    n + i as i64,
                    serde_json::to_value(testing).expect("plans serialize"),
                ));
            }
            if !backtests.is_empty() {
                engine
                    .create_children(job, &super::backtest::KIND, backtests, None, None)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
        }
        let counts = engine
            .advance(&job.id)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if counts.done() < counts.total {
            return Ok(Outcome::Waiting);
        }
        if counts.total == n && n > 0 {
            // Optimizations just ended and none chose anything: report as is.
            let studies = children(rt, &job.id, 0, n).await?;
            if studies.iter().any(|s| chosen(s).is_some()) {
                // Their backtests were created above by another run; wait for them.
                return Ok(Outcome::Waiting);
            }
        }
        report(rt, job, &plan).await
    })
}

/// A child's status and result body.
struct Child {
    index: i64,
    id: String,
    status: JobStatus,
    body: Option<Value>,
    error: Option<crate::ErrorBody>,
}

async fn children(
    rt: &dyn Runtime,
    parent: &str,
    from: i64,
    count: i64,
) -> anyhow::Result<Vec<Child>> {
    let mut out = Vec::new();
    let mut pages = rt.store().child_pages(parent, from - 1, 50);
    while (out.len() as i64) < count {
        let Some(page) = pages.next().await? else {
            break;
        };
        for c in page {
            if c.index >= from + count {
                break;
            }
            out.push(Child {
                index: c.index,
                id: c.id,
                status: c.status,
                body: c.body,
                error: c.error,
            });
        }
    }
    Ok(out)
}

/// A window's chosen parameters: its study's best trial by training fitness.
fn chosen(study: &Child) -> Option<Map<String, Value>> {
    study
        .body
        .as_ref()
        .filter(|_| study.status == JobStatus::Succeeded)
        .and_then(|b| b["best"]["params"].as_object().cloned())
}

/// What `efficiency.value` means, stated in every result.
pub const EFFICIENCY_METHOD: &str = "Pardo (The Evaluation and Optimization of Trading Strategies, 2008): \
annualized rate of profit out of sample ÷ annualized rate of profit in sample, both annualized linearly \
(net profit % × 365 ÷ days, no compounding). Per window: (its out-of-sample net % × 365 ÷ its out-of-sample days) \
÷ (its chosen trial's in-sample net % × 365 ÷ its in-sample days). Whole analysis: (the stitched out-of-sample net \
% × 365 ÷ the stitched out-of-sample days) ÷ the mean of the linear in-sample rates of the windows that have an \
out-of-sample result. Undefined (null, with the reason) when that in-sample rate is not positive.";

/// Pardo's annualized rate of profit: the net profit in percent scaled to a
/// year linearly (a 30 % 90-day period is 121.7 % a year, not 190 %).
pub fn linear_annual_rate(net_percentage: f64, days: f64) -> f64 {
    net_percentage * 365.0 / days
}

/// Out-of-sample rate ÷ in-sample rate (percent a year each), or null with
/// the reason: a ratio over an in-sample rate that is not positive means
/// nothing (a loss in sample would turn an out-of-sample loss into a
/// positive efficiency).
pub fn efficiency_of(out_of_sample_rate: Option<f64>, in_sample_rate: Option<f64>) -> Value {
    let finite = |v: Option<f64>| v.filter(|v| v.is_finite());
    let (out, inside) = (finite(out_of_sample_rate), finite(in_sample_rate));
    let mut value = json!({
        "value": null,
        "out_of_sample_annual_rate_percentage": out,
        "in_sample_annual_rate_percentage": inside,
    });
    match (out, inside) {
        (Some(_), Some(i)) if i <= 0.0 => {
            value["flag"] = json!("in_sample_return_not_positive");
            value["reason"] =
                json!("the in-sample rate of profit is not positive, so the ratio means nothing");
        }
        (Some(o), Some(i)) => value["value"] = json!(o / i),
        (None, _) => value["reason"] = json!("no out-of-sample result"),
        (_, None) => value["reason"] = json!("no in-sample result of the chosen trial"),
    }
    value
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct WalkForwardResult {
    /// Per window: dates (end exclusive), chosen parameters, in- and out-of-sample metrics and job ids.
    #[schemars(with = "Vec<Map<String, Value>>")]
    pub windows: Vec<Value>,
    /// The out-of-sample daily returns of every window, in order, as one curve.
    #[schemars(with = "Map<String, Value>")]
    pub stitched: Value,
    /// Pardo's walk-forward efficiency of the whole analysis (`efficiency_method`
    /// says how): `value` (null with a `reason` when undefined), the two linear
    /// annual rates of profit it divides, in percent per year.
    #[schemars(with = "Map<String, Value>")]
    pub efficiency: Value,
    /// The formula `efficiency.value` (and each window's) follows, in words.
    pub efficiency_method: String,
    /// The same ratio with both returns compounded to a year instead, labelled
    /// as such; not Pardo's, and the 0.5 / 0.2 thresholds do not apply to it.
    #[schemars(with = "Map<String, Value>")]
    pub efficiency_compounded: Value,
    /// The t-statistic of the stitched out-of-sample daily returns.
    pub t_statistic: Option<f64>,
    /// Per parameter: its chosen values across windows and how much they move.
    #[schemars(with = "Map<String, Value>")]
    pub parameter_stability: Value,
    /// `robust` | `inconclusive` | `overfit`, with the reasons.
    #[schemars(with = "Map<String, Value>")]
    pub verdict: Value,
    #[schemars(with = "Map<String, Value>")]
    pub setup: Value,
}

async fn report(
    rt: &dyn Runtime,
    job: &JobRecord,
    plan: &WalkForwardPlan,
) -> anyhow::Result<Outcome> {
    let n = plan.windows.len() as i64;
    let studies = children(rt, &job.id, 0, n).await?;
    let backtests = children(rt, &job.id, n, n).await?;
    let balance = plan
        .studies
        .first()
        .and_then(|s| s.testing.config["starting_balance"].as_f64())
        .unwrap_or(10_000.0);
    let mut rows = Vec::new();
    let mut stitched: Vec<(i64, f64)> = Vec::new();
    // Per window with an out-of-sample result: (linear, compounded) annual in-sample rate.
    let mut in_sample_rates: Vec<(f64, f64)> = Vec::new();
    let trials_fast_mode = plan.studies.first().map(|s| s.training.fast_mode);
    let mut chosen_params: Vec<Map<String, Value>> = Vec::new();
    let mut oos_modes: Vec<bool> = Vec::new();
    let mut reasons_missing = Vec::new();
    for (i, (w, study)) in plan.windows.iter().zip(&studies).enumerate() {
        let best = study
            .body
            .as_ref()
            .map(|b| b["best"].clone())
            .unwrap_or(Value::Null);
        let params = chosen(study);
        // Window i's out-of-sample backtest is child n + i (when it had a choice).
        let oos = backtests.iter().find(|b| b.index == n + i as i64);
        let oos_metrics = oos
            .and_then(|b| b.body.as_ref())
            .map(|b| b["metrics"].clone());
        let test_days = (w.test_end - w.test_start) as usize;
        let train_days = (w.train_end - w.train_start) as f64;
        let in_sample_net = best["training"]["net_profit_percentage"].as_f64();
        let succeeded = oos
            .and_then(|b| b.body.as_ref())
            .filter(|_| oos.is_some_and(|b| b.status == JobStatus::Succeeded));
        let out_of_sample_net =
            succeeded.and_then(|b| b["metrics"]["net_profit_percentage"].as_f64());
        let window_efficiency = efficiency_of(
            out_of_sample_net.map(|net| linear_annual_rate(net, test_days as f64)),
            in_sample_net.map(|net| linear_annual_rate(net, train_days)),
        );
        // The mode the backtest itself recorded, else the one it was planned with.
        let oos_fast_mode = oos.map(|b| {
            b.body
                .as_ref()
                .and_then(|b| {
                    let p = &b["provenance"];
                    p["fast_mode"]
                        .as_bool()
                        .or(p["params"]["fast_mode"].as_bool())
                })
                .unwrap_or(plan.fast_mode_out_of_sample)
        });
        let row = json!({
            "window": i,
            "in_sample": {"start_date": day_string(w.train_start), "end_date": day_string(w.train_end)},
            "out_of_sample": {"start_date": day_string(w.test_start), "end_date": day_string(w.test_end)},
            "optimization_job_id": study.id,
            "optimization_status": study.status,
            "chosen_trial": best["trial"],
            "params": params,
            "in_sample_metrics": best["training"],
            "in_sample_fitness": best["fitness"],
            "in_sample_fast_mode": plan.studies.get(i).map(|s| s.training.fast_mode),
            "out_of_sample_job_id": oos.map(|b| b.id.clone()),
            "out_of_sample_metrics": oos_metrics,
            "out_of_sample_fast_mode": oos_fast_mode,
            "efficiency": window_efficiency,
            "error": match (&params, oos) {
                (None, _) => json!(study.error.clone().map_or_else(|| json!({"code": "no_feasible_trial", "message": "the window's study found no complete feasible trial"}), |e| json!(e))),
                (Some(_), Some(b)) if b.status != JobStatus::Succeeded => json!(b.error),
                _ => Value::Null,
            },
        });
        // The part of this window no later window's out-of-sample covers.
        let own_days = plan.windows.get(i + 1).map_or(test_days, |next| {
            ((next.test_start - w.test_start) as usize).min(test_days)
        });
        match succeeded {
            Some(body) => {
                oos_modes.extend(oos_fast_mode);
                let returns = daily_returns(&body["equity_curve"], test_days);
                for (d, r) in returns.iter().take(own_days).enumerate() {
                    stitched.push((w.test_start + d as i64, *r));
                }
                if let Some(p) = &params {
                    chosen_params.push(p.clone());
                }
                if let Some(net) = in_sample_net {
                    in_sample_rates.push((
                        linear_annual_rate(net, train_days),
                        ((1.0 + net / 100.0).powf(365.0 / train_days) - 1.0) * 100.0,
                    ));
                }
            }
            None => reasons_missing.push(i),
        }
        rows.push(row);
    }

    // The stitched curve: one equity value per day, continuous across windows.
    let mut equity = Vec::with_capacity(stitched.len() + 1);
    let mut value = balance;
    if let Some((first, _)) = stitched.first() {
        equity.push(json!({"date": day_string(*first), "equity": value}));
    }
    for (day, r) in &stitched {
        value *= 1.0 + r;
        equity.push(json!({"date": day_string(day + 1), "equity": value}));
    }
    let returns: Vec<f64> = stitched.iter().map(|(_, r)| *r).collect();
    let holes = stitched.windows(2).any(|p| p[1].0 != p[0].0 + 1);
    let days = returns.len() as f64;
    let total_return = value / balance - 1.0;
    let annual = if days > 0.0 {
        (value / balance).powf(365.0 / days) - 1.0
    } else {
        f64::NAN
    };
    let mut peak = balance;
    let mut max_drawdown: f64 = 0.0;
    let mut running = balance;
    for r in &returns {
        running *= 1.0 + r;
        peak = peak.max(running);
        max_drawdown = max_drawdown.min(running / peak - 1.0);
    }
    let sharpe = crate::overfit::sharpe(&returns);
    let t_statistic = sharpe.map(|s| s * days.sqrt());
    let mean_of = |pick: fn(&(f64, f64)) -> f64| {
        (!in_sample_rates.is_empty())
            .then(|| in_sample_rates.iter().map(pick).sum::<f64>() / in_sample_rates.len() as f64)
    };
    let both = |mut e: Value| {
        if in_sample_rates.is_empty() || days == 0.0 {
            e["value"] = Value::Null;
            e["reason"] =
                json!("no window has both an in-sample choice and an out-of-sample result");
            if let Some(o) = e.as_object_mut() {
                o.remove("flag");
            }
        }
        e
    };
    let mut efficiency = both(efficiency_of(
        Some(linear_annual_rate(total_return * 100.0, days)),
        mean_of(|r| r.0),
    ));
    efficiency["out_of_sample_net_profit_percentage"] =
        json!(Some(total_return * 100.0).filter(|v| v.is_finite()));
    efficiency["out_of_sample_days"] = json!(returns.len());
    efficiency["windows"] = json!(in_sample_rates.len());
    let mut compounded = both(efficiency_of(Some(annual * 100.0), mean_of(|r| r.1)));
    compounded["method"] = json!(
        "compounded, not Pardo's: the stitched out-of-sample return compounded to 365 days ÷ the mean of the \
windows' in-sample returns compounded to 365 days; a short high-return window inflates it, so the 0.5 / 0.2 \
thresholds do not apply"
    );
    let stability = stability(&chosen_params);
    let verdict = verdict(
        &efficiency,
        t_statistic,
        total_return,
        &reasons_missing,
        plan.windows.len(),
    );
    let finite = |v: f64| if v.is_finite() { json!(v) } else { Value::Null };
    let stitched_json = json!({
        "days": returns.len(),
        // Every window's mode when they agree (null when they do not).
        "fast_mode": oos_modes.first().filter(|m| oos_modes.iter().all(|x| x == *m)),
        "start_date": stitched.first().map(|(d, _)| day_string(*d)),
        "end_date": stitched.last().map(|(d, _)| day_string(d + 1)),
        "holes": holes,
        "starting_balance": balance,
        "finishing_balance": finite(value),
        "total_return_percentage": finite(total_return * 100.0),
        "annual_return_percentage": finite(annual * 100.0),
        "max_drawdown_percentage": finite(max_drawdown * 100.0),
        "sharpe_ratio": sharpe.map(|s| s * 365f64.sqrt()),
        "equity_curve": equity,
        "daily_returns": returns,
    });
    let summary = json!({
        "windows": plan.windows.len(),
        "verdict": verdict["verdict"],
        "efficiency": efficiency["value"],
        "t_statistic": t_statistic,
        "out_of_sample_return_percentage": finite(total_return * 100.0),
    });
    let setup = json!({
        "mode": plan.mode,
        "step_days": plan.step_days,
        "seed": plan.seed,
        "choice_rule": "each window's best complete, feasible trial by training objective (ties: lower trial number)",
        "window_seeds": plan.studies.iter().map(|s| s.seed).collect::<Vec<_>>(),
        "fast_mode_trials": trials_fast_mode,
        "fast_mode_out_of_sample": plan.fast_mode_out_of_sample,
    });
    let result = WalkForwardResult {
        windows: rows,
        stitched: stitched_json,
        efficiency,
        efficiency_method: EFFICIENCY_METHOD.to_string(),
        efficiency_compounded: compounded,
        t_statistic,
        parameter_stability: stability,
        verdict,
        setup,
    };
    Ok(Outcome::Succeeded {
        result: Box::new(JobResult {
            body: serde_json::to_value(result).expect("results serialize"),
            parts: Vec::new(),
        }),
        summary,
    })
}

/// Per parameter: the chosen values in window order, and for numbers their
/// mean, standard deviation and coefficient of variation; the changes between
/// consecutive windows.
fn stability(chosen: &[Map<String, Value>]) -> Value {
    let mut names: Vec<&String> = chosen.iter().flat_map(|p| p.keys()).collect();
    names.sort();
    names.dedup();
    let mut out = Map::new();
    for name in names {
        let values: Vec<Value> = chosen
            .iter()
            .map(|p| p.get(name).cloned().unwrap_or(Value::Null))
            .collect();
        let changes = values.windows(2).filter(|w| w[0] != w[1]).count();
        let numbers: Vec<f64> = values.iter().filter_map(Value::as_f64).collect();
        let mut entry = json!({"values": values, "changes": changes});
        if numbers.len() == values.len() && !numbers.is_empty() {
            let mean = crate::overfit::mean(&numbers);
            let std = if numbers.len() > 1 {
                crate::overfit::std(&numbers)
            } else {
                0.0
            };
            entry["mean"] = json!(mean);
            entry["std"] = json!(std);
            entry["coefficient_of_variation"] = if mean != 0.0 {
                json!(std / mean.abs())
            } else {
                Value::Null
            };
        } else {
            let mut distinct: Vec<String> = values.iter().map(Value::to_string).collect();
            distinct.sort();
            distinct.dedup();
            entry["distinct"] = json!(distinct.len());
        }
        out.insert(name.clone(), entry);
    }
    Value::Object(out)
}

/// `robust` when the out-of-sample returns are positive and significant and
/// keep at least half of the in-sample's rate of profit (Pardo's efficiency
/// ≥ 0.5, the threshold his definition comes with); `overfit` when they lose money or
/// keep almost nothing; `inconclusive` otherwise. The reasons say which.
fn verdict(
    efficiency: &Value,
    t: Option<f64>,
    total_return: f64,
    missing: &[usize],
    windows: usize,
) -> Value {
    let mut reasons = Vec::new();
    let mut good = 0;
    let mut bad = 0;
    if total_return > 0.0 {
        good += 1;
        reasons.push(format!(
            "the stitched out-of-sample return is positive ({:.2} %)",
            total_return * 100.0
        ));
    } else {
        bad += 1;
        reasons.push(format!(
            "the stitched out-of-sample return is not positive ({:.2} %)",
            total_return * 100.0
        ));
    }
    match efficiency["value"].as_f64() {
        Some(e) if e >= 0.5 => {
            good += 1;
            reasons.push(format!(
                "walk-forward efficiency {e:.2} ≥ 0.5 (Pardo: linear annual rate of profit out of sample ÷ in sample)"
            ));
        }
        Some(e) if e < 0.2 => {
            bad += 1;
            reasons.push(format!(
                "walk-forward efficiency {e:.2} < 0.2 (Pardo: linear annual rate of profit out of sample ÷ in sample): out of sample keeps little of in-sample"
            ));
        }
        Some(e) => reasons.push(format!(
            "walk-forward efficiency {e:.2} is between 0.2 and 0.5 (Pardo: linear annual rate of profit out of sample ÷ in sample)"
        )),
        None => reasons.push(format!(
            "walk-forward efficiency undefined: {}",
            efficiency["reason"]
                .as_str()
                .unwrap_or("no in-sample return")
        )),
    }
    match t {
        Some(t) if t >= 2.0 => {
            good += 1;
            reasons.push(format!("t-statistic of daily returns {t:.2} ≥ 2"));
        }
        Some(t) => reasons.push(format!(
            "t-statistic of daily returns {t:.2} < 2: not significant"
        )),
        None => reasons.push("t-statistic undefined (flat or too few days)".into()),
    }
    if !missing.is_empty() {
        bad += 1;
        reasons.push(format!(
            "{} of {windows} windows have no out-of-sample result",
            missing.len()
        ));
    }
    let verdict = if bad > 0 && good < 2 {
        "overfit"
    } else if good == 3 && bad == 0 {
        "robust"
    } else {
        "inconclusive"
    };
    json!({"verdict": verdict, "reasons": reasons})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rolling_windows_tile_the_range() {
        let w = windows(0, 100, Mode::Rolling, 30, 20, 20);
        assert_eq!(w.len(), 3);
        assert_eq!(
            (w[0].train_start, w[0].test_start, w[0].test_end),
            (0, 30, 50)
        );
        assert_eq!(
            (w[1].train_start, w[1].test_start, w[1].test_end),
            (20, 50, 70)
        );
        // The last takes what is left.
        assert_eq!((w[2].test_start, w[2].test_end), (70, 100));
        for pair in w.windows(2) {
            assert_eq!(pair[0].test_end, pair[1].test_start, "no overlap, no hole");
        }
        let a = windows(0, 100, Mode::Anchored, 30, 35, 35);
        assert_eq!(a.len(), 2);
        assert!(a.iter().all(|w| w.train_start == 0));
        assert_eq!(a[1].test_end, 100);
        // Overlap only when asked.
        let o = windows(0, 100, Mode::Rolling, 30, 20, 10);
        assert!(
            o.windows(2)
                .all(|p| p[1].test_start - p[0].test_start == 10)
        );
        assert!(o.iter().all(|w| w.test_end - w.test_start == 20));
    }

    #[test]
    fn efficiency_is_pardos_linear_ratio() {
        // The case: 30 % in 90 days is 121.7 % a year linearly
        // (compounding would make it 190 %).
        let rate = linear_annual_rate(30.0, 90.0);
        assert!((rate - 30.0 * 365.0 / 90.0).abs() < 1e-12);
        assert!((rate - 121.666_666_666_666_67).abs() < 1e-9);
        assert!(((1.3f64).powf(365.0 / 90.0) - 1.0 - 1.898).abs() < 1e-3);
        // Two windows' in-sample rates (30 % and 10 % in 90 days each) and a
        // stitched 5 % in 60 out-of-sample days.
        let inside = (linear_annual_rate(30.0, 90.0) + linear_annual_rate(10.0, 90.0)) / 2.0;
        let e = efficiency_of(Some(linear_annual_rate(5.0, 60.0)), Some(inside));
        // (5 × 365 / 60) ÷ ((30 + 10) / 2 × 365 / 90) = 30.4167 ÷ 81.1111 = 0.375.
        assert!((e["value"].as_f64().unwrap() - 0.375).abs() < 1e-12, "{e}");
        assert!(
            (e["out_of_sample_annual_rate_percentage"].as_f64().unwrap() - 5.0 * 365.0 / 60.0)
                .abs()
                < 1e-12
        );
        assert!((e["in_sample_annual_rate_percentage"].as_f64().unwrap() - inside).abs() < 1e-12);
        assert!(e.get("reason").is_none());
        // Equal lengths: the ratio of the net profits; a loss out of sample is negative.
        let e = efficiency_of(
            Some(linear_annual_rate(-2.0, 30.0)),
            Some(linear_annual_rate(8.0, 30.0)),
        );
        assert!((e["value"].as_f64().unwrap() + 0.25).abs() < 1e-12, "{e}");
    }

    #[test]
    fn efficiency_is_undefined_without_an_in_sample_profit() {
        for inside in [0.0, -12.5] {
            let e = efficiency_of(Some(-40.0), Some(inside));
            assert!(e["value"].is_null(), "{e}");
            assert_eq!(e["flag"], "in_sample_return_not_positive");
            assert!(e["reason"].as_str().unwrap().contains("not positive"));
        }
        let e = efficiency_of(None, Some(10.0));
        assert!(e["value"].is_null() && e["reason"] == "no out-of-sample result");
        let e = efficiency_of(Some(f64::NAN), Some(10.0));
        assert!(e["value"].is_null(), "NaN never reaches JSON: {e}");
        let e = efficiency_of(Some(10.0), None);
        assert!(e["value"].is_null() && e["reason"].is_string());
        // The method says what the number is.
        assert!(EFFICIENCY_METHOD.contains("× 365 ÷ days"));
        assert!(EFFICIENCY_METHOD.contains("Pardo"));
    }

    #[test]
    fn verdicts_say_why() {
        let v = verdict(&json!({"value": 0.8}), Some(2.5), 0.12, &[], 3);
        assert_eq!(v["verdict"], "robust");
        let v = verdict(&json!({"value": 0.1}), Some(0.3), -0.05, &[], 3);
        assert_eq!(v["verdict"], "overfit");
        assert!(v["reasons"][0].as_str().unwrap().contains("not positive"));
        let v = verdict(
            &json!({"value": null, "reason": "x"}),
            Some(1.0),
            0.02,
            &[],
            3,
        );
        assert_eq!(v["verdict"], "inconclusive");
    }
}
