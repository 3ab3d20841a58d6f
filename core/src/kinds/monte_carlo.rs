//! `monte_carlo`: how much of a backtest's result is luck.
//!
//! - `trades`: the backtest's trades are turned into returns relative to the
//!   equity at their entry (never absolute PnL, which can push a drawdown past
//!   −100 %, jesse issue #607), then resampled per scenario (stationary
//!   bootstrap, the default; circular block bootstrap; bootstrap; shuffle)
//!   with the scenario's own seeded SplitMix64 stream; equity compounds from 1
//!   in exit order (concurrent trades of several routes too) and stops at 0
//!   (ruin). That equity is closed-trade equity, so its drawdown is named
//!   `closed_trade_max_drawdown` and Jesse's mark-to-market figures of the
//!   original stand beside it, never mixed with it. A shuffle only reorders
//!   the returns, so the compounded total cannot change: its probability of a
//!   loss is null with the reason, never a restated 0 or 1.
//! - `candles`: every scenario is a child backtest on candles transformed by
//!   one of Jesse's candle pipelines, seeded as Jesse seeds them (scenario i
//!   uses seed + i − 1) and spread over the fleet.
//!
//! Both report each metric's distribution (percentiles 5…95, 90 % and 95 %
//! intervals, the original's percentile rank), the probability of a loss and
//! of ruin at a drawdown the user names, and a fan of equity percentiles.
//! Candles mode's metrics are Jesse's own (mark-to-market) of each scenario.

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::optimization::trial::{daily_returns, trial_seed};
use super::{KindDef, Lane, Outcome, Runtime, Submit, read_plan, read_request, schema_of};
use crate::error::ApiError;
use crate::jobs::{BacktestPlan, BacktestRequest, CandlesPipeline, JobStatus};
use crate::planner::Planner;
use crate::rng::SplitMix64;
use crate::store::{JobRecord, JobResult};

pub const MAX_TRADE_SCENARIOS: u32 = 20_000;
pub const MAX_CANDLE_SCENARIOS: u32 = 2_000;
/// Points of the fan chart at most (scenarios keep only these).
const FAN_POINTS: usize = 200;
const PERCENTILES: &[f64] = &[5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0];

pub static KIND: KindDef = KindDef {
    name: "monte_carlo",
    description: "Monte Carlo robustness of a backtest: resampled trades, or candle scenarios as child backtests",
    lane: Lane::Control,
    submit: Some(Submit {
        path: "/v1/monte-carlo",
        tool: "monte_carlo",
        title: "Submit Monte Carlo analysis",
        description: "Monte Carlo analysis of a backtest. `source`: a succeeded backtest's job_id, or a backtest \
request (run first). `mode`: `trades` resamples the trades' returns relative to equity at entry (`method` \
stationary_bootstrap (default, geometric blocks of mean `mean_block_length`) | block_bootstrap with `block_length` | \
bootstrap | shuffle); `candles` runs each scenario as a child backtest on candles \
transformed by Jesse's candle pipelines (`pipeline`: {type: moving_block_bootstrap | gaussian_noise | \
gaussian_resampler, batch_size, and its parameters}), spread over the fleet. Every scenario is seeded from `seed`. \
Answers at once with the job_id; job_result gives the distribution of total return, max drawdown, Sharpe and Calmar \
(percentiles 5..95, 90 %/95 % intervals, the original's percentile rank), the probability of a loss and of ruin at \
`ruin_drawdown` percent, and a fan of equity percentiles. Trades mode measures closed-trade equity \
(`closed_trade_max_drawdown`, ...) and shows Jesse's mark-to-market figures of the original beside them; under \
`shuffle` the total return cannot change, so `probability_of_loss` is null with `probability_of_loss_reason`.",
        next: "job_result for the distributions, probabilities and the fan",
        open_world: false,
    }),
    request_schema: schema_of::<MonteCarloRequest>,
    result_schema: schema_of::<MonteCarloResult>,
    rows: None,
    plan,
    execute,
    parent: true,
};

/// `POST /v1/monte-carlo` and MCP `monte_carlo`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MonteCarloRequest {
    pub mode: McMode,
    /// A succeeded backtest's job id, or a backtest request to run first.
    pub source: Source,
    /// Scenarios (default 1000 for trades, 100 for candles).
    #[serde(default)]
    pub scenarios: Option<u32>,
    /// Seed of every scenario (default: drawn at submit and stored with the job).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Trades mode: `stationary_bootstrap` (default), `block_bootstrap`, `bootstrap` or `shuffle` (a shuffle
    /// cannot change the total return, so its probability of a loss is null).
    #[serde(default)]
    pub method: Option<Method>,
    /// Block bootstrap's block length in trades (default: the cube root of the trade count, at least 2).
    #[serde(default)]
    pub block_length: Option<u32>,
    /// Stationary bootstrap's mean block length in trades, at least 1 (default: the cube root of the trade
    /// count, at least 1); each block's length is geometric with this mean.
    #[serde(default)]
    pub mean_block_length: Option<f64>,
    /// The drawdown, in percent, that counts as ruin (default 50).
    #[serde(default)]
    pub ruin_drawdown: Option<f64>,
    /// Candles mode: Jesse's candle pipeline (default moving_block_bootstrap).
    #[serde(default)]
    pub pipeline: Option<PipelineSpec>,
    /// Candles mode: scenarios queued or running at once (default: the fleet's runners).
    #[serde(default)]
    pub max_parallel: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum McMode {
    Trades,
    Candles,
}

/// How trades mode draws a scenario's sequence of trade returns.
///
/// The default is the stationary bootstrap (Politis & Romano 1994): like the
/// block bootstrap it keeps runs of neighbouring trades together (streaks,
/// regimes) and, unlike a shuffle, lets the total return vary; unlike fixed
/// blocks its random (geometric) block lengths make the resampled series
/// stationary and the result less sensitive to the one length chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Shuffle,
    Bootstrap,
    BlockBootstrap,
    #[default]
    StationaryBootstrap,
}

impl Method {
    /// What a scenario is, in a clause (reports and gate lines).
    pub fn describe(self) -> &'static str {
        match self {
            Method::Shuffle => "shuffle (reordering) of trade returns",
            Method::Bootstrap => "bootstrap (drawing with replacement) of trade returns",
            Method::BlockBootstrap => "circular block bootstrap of trade returns",
            Method::StationaryBootstrap => "stationary bootstrap of trade returns",
        }
    }
}

/// Why a shuffle has no probability of a loss.
pub const SHUFFLE_LOSS_REASON: &str = "method shuffle only reorders the trades, and reordering cannot change \
the compounded total return (every scenario ends where the backtest did), so the share of losing scenarios would \
only restate whether the backtest lost money (drawdown and ruin still vary); use stationary_bootstrap or \
block_bootstrap for a probability of a loss";

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Source {
    /// A succeeded backtest job.
    Job(String),
    /// A backtest request (the same fields as `POST /v1/backtests`).
    Request(Box<BacktestRequest>),
}

/// One of Jesse's candle pipelines and its parameters.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// `moving_block_bootstrap` (default), `gaussian_noise` or `gaussian_resampler`.
    #[serde(rename = "type", default)]
    pub kind: PipelineKind,
    /// 1m candles per regenerated batch (default 1440, a day); a multiple of every route's timeframe.
    #[serde(default)]
    pub batch_size: Option<u32>,
    /// gaussian_noise: the noise of close, high and low (required) and their means.
    #[serde(default)]
    pub close_sigma: Option<f64>,
    #[serde(default)]
    pub high_sigma: Option<f64>,
    #[serde(default)]
    pub low_sigma: Option<f64>,
    #[serde(default)]
    pub close_mu: Option<f64>,
    #[serde(default)]
    pub high_mu: Option<f64>,
    #[serde(default)]
    pub low_mu: Option<f64>,
    /// gaussian_resampler: drift added to the resampled deltas, and their sigma (default: the data's).
    #[serde(default)]
    pub mu: Option<f64>,
    #[serde(default)]
    pub sigma: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PipelineKind {
    #[default]
    MovingBlockBootstrap,
    GaussianNoise,
    GaussianResampler,
}

/// What a Monte Carlo job stores as its params.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct McPlan {
    mode: McMode,
    scenarios: u32,
    seed: u64,
    method: Method,
    block_length: Option<u32>,
    #[serde(default)]
    mean_block_length: Option<f64>,
    ruin_drawdown: f64,
    /// The backtest analysed, when the request named one.
    source_job: Option<String>,
    /// Its plan (the request's, or the named job's).
    backtest: BacktestPlan,
    /// Candles mode: the pipeline every scenario runs (its seed set per scenario).
    pipeline: Option<CandlesPipeline>,
    max_parallel: Option<u32>,
}

fn invalid(code: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(code, message)
}

fn plan(planner: &Planner, request: Value) -> BoxFuture<'_, Result<Value, ApiError>> {
    Box::pin(async move {
        let request: MonteCarloRequest = read_request(request)?;
        let field = |e: ApiError, name: &str| e.with_details(json!({"field": name}));
        let (max, default) = match request.mode {
            McMode::Trades => (MAX_TRADE_SCENARIOS, 1000),
            McMode::Candles => (MAX_CANDLE_SCENARIOS, 100),
        };
        let scenarios = request.scenarios.unwrap_or(default);
        if scenarios == 0 || scenarios > max {
            return Err(field(
                invalid(
                    "invalid_number",
                    format!(
                        "scenarios must be from 1 to {max} in {:?} mode",
                        request.mode
                    )
                    .to_lowercase(),
                ),
                "scenarios",
            ));
        }
        let ruin = request.ruin_drawdown.unwrap_or(50.0);
        if !(ruin > 0.0 && ruin <= 100.0) {
            return Err(field(
                invalid(
                    "invalid_number",
                    "ruin_drawdown is a percentage above 0 and at most 100",
                ),
                "ruin_drawdown",
            ));
        }
        if request.seed.is_some_and(|s| s > (1 << 53) - 1) {
            return Err(field(
                invalid("invalid_number", "seed must be from 0 to 2^53 − 1"),
                "seed",
            ));
        }
        if request.max_parallel.is_some_and(|m| m == 0 || m > 1024) {
            return Err(field(
                invalid("invalid_number", "max_parallel must be from 1 to 1024"),
                "max_parallel",
            ));
        }
        if request.block_length == Some(0) {
            return Err(field(
                invalid("invalid_number", "block_length must be at least 1"),
                "block_length",
            ));
        }
        if let Some(mean) = request.mean_block_length
            && !(mean.is_finite() && (1.0..=1e6).contains(&mean))
        {
            return Err(field(
                invalid(
                    "invalid_number",
                    "mean_block_length must be a number from 1 to 1000000 (trades)",
                ),
                "mean_block_length",
            ));
        }
        let method = request.method.unwrap_or_default();
        match request.mode {
            McMode::Trades if request.pipeline.is_some() => {
                return Err(field(
                    invalid(
                        "invalid_request",
                        "`pipeline` belongs to candles mode; trades mode resamples trades",
                    ),
                    "pipeline",
                ));
            }
            McMode::Candles
                if request.method.is_some()
                    || request.block_length.is_some()
                    || request.mean_block_length.is_some() =>
            {
                return Err(field(
                    invalid(
                        "invalid_request",
                        "`method`, `block_length` and `mean_block_length` belong to trades mode; candles mode uses `pipeline`",
                    ),
                    "method",
                ));
            }
            McMode::Trades
                if request.mean_block_length.is_some() && method != Method::StationaryBootstrap =>
            {
                return Err(field(
                    invalid(
                        "invalid_request",
                        "`mean_block_length` belongs to method stationary_bootstrap (block_bootstrap takes `block_length`)",
                    ),
                    "mean_block_length",
                ));
            }
            McMode::Trades
                if request.block_length.is_some() && method == Method::StationaryBootstrap =>
            {
                return Err(field(
                    invalid(
                        "invalid_request",
                        "`block_length` belongs to method block_bootstrap; stationary_bootstrap (the default) takes `mean_block_length`",
                    ),
                    "block_length",
                ));
            }
            _ => {}
        }
        let (source_job, backtest) = match &request.source {
            Source::Job(id) => {
                let job = planner.store().get_job(id.trim()).await?.ok_or_else(|| {
                    field(ApiError::invalid("unknown_source", format!("no job with id '{id}'; give a backtest's job_id or a backtest request")), "source")
                })?;
                if job.kind != super::backtest::KIND.name || job.status != JobStatus::Succeeded {
                    return Err(field(
                        invalid(
                            "invalid_source",
                            format!(
                                "job '{id}' is a {} {}, not a succeeded backtest",
                                job.status.as_str(),
                                job.kind
                            ),
                        ),
                        "source",
                    ));
                }
                let plan: BacktestPlan =
                    serde_json::from_value(job.params.clone()).map_err(|e| {
                        invalid(
                            "invalid_source",
                            format!("job '{id}' has unreadable parameters: {e}"),
                        )
                    })?;
                (Some(job.id), plan)
            }
            Source::Request(request) => (None, planner.plan_backtest(request).await?),
        };
        let pipeline = match request.mode {
            McMode::Candles => Some(pipeline(
                request.pipeline.clone().unwrap_or(PipelineSpec {
                    kind: PipelineKind::MovingBlockBootstrap,
                    batch_size: None,
                    close_sigma: None,
                    high_sigma: None,
                    low_sigma: None,
                    close_mu: None,
                    high_mu: None,
                    low_mu: None,
                    mu: None,
                    sigma: None,
                }),
                &backtest,
            )?),
            McMode::Trades => None,
        };
        let plan = McPlan {
            mode: request.mode,
            scenarios,
            seed: request
                .seed
                .unwrap_or_else(|| u64::from(rand::random::<u32>())),
            method,
            block_length: request.block_length,
            mean_block_length: request.mean_block_length,
            ruin_drawdown: ruin,
            source_job,
            backtest,
            pipeline,
            max_parallel: request.max_parallel,
        };
        Ok(serde_json::to_value(plan).expect("plans serialize"))
    })
}

/// Checks a pipeline's parameters into Jesse's class and keyword arguments.
fn pipeline(spec: PipelineSpec, backtest: &BacktestPlan) -> Result<CandlesPipeline, ApiError> {
    let bad = |m: String| invalid("invalid_pipeline", m).with_details(json!({"field": "pipeline"}));
    let batch = spec.batch_size.unwrap_or(1440);
    if !(2..=525_600).contains(&batch) {
        return Err(bad(
            "pipeline.batch_size must be from 2 to 525600 minutes".into()
        ));
    }
    let timeframes = backtest
        .routes
        .iter()
        .map(|r| r.timeframe.as_str())
        .chain(backtest.data_routes.iter().map(|r| r.timeframe.as_str()));
    for tf in timeframes {
        let minutes = crate::jesse::timeframe_minutes(tf).unwrap_or(1);
        if i64::from(batch) % minutes != 0 {
            return Err(bad(format!(
                "pipeline.batch_size {batch} is not a multiple of the {tf} timeframe ({minutes} minutes), which Jesse's pipelines need"
            )));
        }
    }
    let mut kwargs = Map::new();
    kwargs.insert("batch_size".into(), json!(batch));
    let mut put = |name: &str, v: Option<f64>| -> Result<(), ApiError> {
        if let Some(v) = v {
            if !v.is_finite() {
                return Err(bad(format!("pipeline.{name} must be a finite number")));
            }
            kwargs.insert(name.into(), json!(v));
        }
        Ok(())
    };
    let class = match spec.kind {
        PipelineKind::MovingBlockBootstrap => {
            if spec
                .close_sigma
                .or(spec.high_sigma)
                .or(spec.low_sigma)
                .or(spec.mu)
                .or(spec.sigma)
                .is_some()
            {
                return Err(bad("moving_block_bootstrap takes only batch_size".into()));
            }
            "MovingBlockBootstrapCandlesPipeline"
        }
        PipelineKind::GaussianNoise => {
            let (Some(_), Some(_), Some(_)) = (spec.close_sigma, spec.high_sigma, spec.low_sigma)
            else {
                return Err(bad(
                    "gaussian_noise needs close_sigma, high_sigma and low_sigma".into(),
                ));
            };
            for (name, v) in [
                ("close_sigma", spec.close_sigma),
                ("high_sigma", spec.high_sigma),
                ("low_sigma", spec.low_sigma),
            ] {
                if v.is_some_and(|v| v < 0.0) {
                    return Err(bad(format!("pipeline.{name} must not be negative")));
                }
            }
            put("close_sigma", spec.close_sigma)?;
            put("high_sigma", spec.high_sigma)?;
            put("low_sigma", spec.low_sigma)?;
            put("close_mu", spec.close_mu)?;
            put("high_mu", spec.high_mu)?;
            put("low_mu", spec.low_mu)?;
            "GaussianNoiseCandlesPipeline"
        }
        PipelineKind::GaussianResampler => {
            if spec.sigma.is_some_and(|v| v < 0.0) {
                return Err(bad("pipeline.sigma must not be negative".into()));
            }
            put("mu", spec.mu)?;
            put("sigma", spec.sigma)?;
            "GaussianResamplerCandlesPipeline"
        }
    };
    Ok(CandlesPipeline {
        class: class.into(),
        kwargs,
        numpy_seed: None,
    })
}

/// A scenario's pipeline, seeded as Jesse's own Monte Carlo seeds scenario
/// `i` (1-based): `seed + i − 1`, as the pipeline's `seed` (moving block
/// bootstrap) or numpy's global seed (the Gaussian pipelines, which Jesse
/// leaves unseeded).
pub fn scenario_pipeline(template: &CandlesPipeline, seed: u64, i: u64) -> CandlesPipeline {
    let mut p = template.clone();
    let scenario_seed = seed + i - 1;
    if p.class == "MovingBlockBootstrapCandlesPipeline" {
        p.kwargs.insert("seed".into(), json!(scenario_seed));
    } else {
        p.numpy_seed = Some(scenario_seed & 0xFFFF_FFFF);
    }
    p
}

fn execute<'a>(rt: &'a dyn Runtime, job: &'a JobRecord) -> BoxFuture<'a, anyhow::Result<Outcome>> {
    Box::pin(async move {
        let plan: McPlan = match read_plan(job) {
            Ok(plan) => plan,
            Err(outcome) => return Ok(outcome),
        };
        let engine = rt.engine();
        let counts = rt.store().child_counts(&job.id).await?;
        let mut children: Vec<(i64, Value)> = Vec::new();
        if counts.total == 0 {
            // Child 0: the original backtest, when only its request was given.
            if plan.source_job.is_none() {
                children.push((
                    0,
                    serde_json::to_value(&plan.backtest).expect("plans serialize"),
                ));
            }
            if plan.mode == McMode::Candles {
                let template = plan.pipeline.as_ref().expect("candles mode has a pipeline");
                for i in 1..=u64::from(plan.scenarios) {
                    let mut scenario = plan.backtest.clone();
                    scenario.candles_pipeline = Some(scenario_pipeline(template, plan.seed, i));
                    scenario.include_trades = false;
                    children.push((
                        i as i64,
                        serde_json::to_value(scenario).expect("plans serialize"),
                    ));
                }
            }
            if !children.is_empty() {
                engine
                    .create_children(
                        job,
                        &super::backtest::KIND,
                        children,
                        plan.max_parallel.map(i64::from),
                        None,
                    )
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let counts = engine
                    .advance(&job.id)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                if counts.done() < counts.total {
                    return Ok(Outcome::Waiting);
                }
            }
        } else if counts.done() < counts.total {
            engine
                .advance(&job.id)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            return Ok(Outcome::Waiting);
        }
        // The original: the named job, or child 0.
        let original_id = match &plan.source_job {
            Some(id) => id.clone(),
            None => match rt
                .store()
                .child_results(&job.id, -1, 1)
                .await?
                .into_iter()
                .next()
            {
                Some(c) if c.index == 0 && c.status == JobStatus::Succeeded => c.id,
                Some(c) => {
                    return Ok(Outcome::Failed(crate::ErrorBody::new(
                        "source_failed",
                        format!(
                            "the original backtest (job {}) did not succeed: {}",
                            c.id,
                            c.error.map(|e| e.message).unwrap_or_default()
                        ),
                    )));
                }
                None => {
                    return Ok(Outcome::Failed(crate::ErrorBody::new(
                        "source_failed",
                        "the original backtest is missing",
                    )));
                }
            },
        };
        let Some((_, original)) = rt.store().result_body(&original_id).await? else {
            return Ok(Outcome::Failed(crate::ErrorBody::new(
                "source_failed",
                format!("the result of backtest {original_id} is gone"),
            )));
        };
        match plan.mode {
            McMode::Trades => trades_mode(rt, &plan, &original_id, original).await,
            McMode::Candles => candles_mode(rt, job, &plan, &original_id, original).await,
        }
    })
}

/// Per trade, in closing order: its return on the equity at its entry (the
/// starting balance plus the PnL of trades closed by then), and its close time.
pub fn trade_returns(trades: &[Value], starting_balance: f64) -> Vec<(f64, i64)> {
    let mut closed: Vec<(i64, i64, f64)> = trades
        .iter()
        .filter_map(|t| {
            Some((
                t["opened_at"].as_f64()? as i64,
                t["closed_at"].as_f64()? as i64,
                t["PNL"].as_f64()?,
            ))
        })
        .collect();
    closed.sort_by_key(|(_, close, _)| *close);
    closed
        .iter()
        .map(|(open, close, pnl)| {
            let realized: f64 = closed
                .iter()
                .filter(|(_, c, _)| c <= open)
                .map(|(_, _, p)| p)
                .sum();
            let equity = starting_balance + realized;
            let r = if equity > 0.0 { pnl / equity } else { -1.0 };
            (r, *close)
        })
        .collect()
}

/// One scenario's order of the trade returns: a shuffle, a bootstrap draw, a
/// circular block bootstrap (blocks of `block` trades) or a stationary
/// bootstrap (blocks of geometric length with mean `mean_block`), from its
/// own SplitMix64 stream.
pub fn resample(
    n: usize,
    method: Method,
    block: usize,
    mean_block: f64,
    rng: &mut SplitMix64,
) -> Vec<usize> {
    match method {
        Method::Shuffle => {
            // Fisher–Yates, from the end.
            let mut order: Vec<usize> = (0..n).collect();
            for i in (1..n).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                order.swap(i, j);
            }
            order
        }
        Method::Bootstrap => (0..n).map(|_| rng.below(n as u64) as usize).collect(),
        Method::BlockBootstrap => {
            let mut order = Vec::with_capacity(n + block);
            while order.len() < n {
                let start = rng.below(n as u64) as usize;
                order.extend((0..block).map(|k| (start + k) % n));
            }
            order.truncate(n);
            order
        }
        Method::StationaryBootstrap => {
            // Politis & Romano (1994): a block starts at a uniform index and
            // runs, wrapping circularly, for a geometric number of trades
            // (P(L = k) = (1 − p)^(k−1) p, p = 1 / mean), so each next index
            // is the following trade with probability 1 − p, a fresh start
            // otherwise. Blocks are drawn start first, then length.
            let mut order = Vec::with_capacity(n);
            while order.len() < n {
                let start = rng.below(n as u64) as usize;
                let length = geometric_length(mean_block, n - order.len(), rng);
                order.extend((0..length).map(|k| (start + k) % n));
            }
            order
        }
    }
}

/// A uniform draw in (0, 1]: the top 53 bits of the next output, plus one,
/// over 2^53.
fn uniform_open_closed(rng: &mut SplitMix64) -> f64 {
    ((rng.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
}

/// A geometric block length with mean `mean` (≥ 1): by inversion,
/// 1 + ⌊ln U / ln(1 − 1/mean)⌋ for U uniform in (0, 1], capped at `cap`
/// (the trades still to draw; a longer block would be cut there anyway).
/// Always takes exactly one draw from `rng`, so streams stay aligned.
pub fn geometric_length(mean: f64, cap: usize, rng: &mut SplitMix64) -> usize {
    let u = uniform_open_closed(rng);
    if mean <= 1.0 {
        return 1;
    }
    let extra = (u.ln() / (1.0 - 1.0 / mean).ln()).floor();
    // `extra` is finite and ≥ 0 (ln U ≤ 0 over a negative number); the cap
    // also keeps the cast in range.
    if extra < cap as f64 {
        (1 + extra as usize).min(cap.max(1))
    } else {
        cap.max(1)
    }
}

/// A path's metrics: total return and max drawdown in percent (never below
/// −100: equity stops at 0), daily Sharpe (√365) and Calmar.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PathMetrics {
    pub total_return: f64,
    pub max_drawdown: f64,
    pub sharpe: Option<f64>,
    pub calmar: Option<f64>,
}

/// Compounds returns (the k-th closing at `closes[k]`) into an equity path from
/// 1, and measures it. `start`/`end` bound the backtest (ms), for daily returns.
pub fn path(
    returns: &[f64],
    closes: &[i64],
    start: i64,
    end: i64,
    fan_at: &[usize],
    fan: &mut Vec<f64>,
) -> PathMetrics {
    let mut equity = 1.0f64;
    let mut peak = 1.0f64;
    let mut max_dd = 0.0f64;
    let days = ((end - start) / 86_400_000).max(1) as usize;
    let mut daily = vec![f64::NAN; days + 1];
    daily[0] = 1.0;
    let mut next_fan = 0;
    if fan_at.first() == Some(&0) {
        fan.push(1.0);
        next_fan = 1;
    }
    for (k, r) in returns.iter().enumerate() {
        equity = (equity * (1.0 + r)).max(0.0);
        peak = peak.max(equity);
        if peak > 0.0 {
            max_dd = max_dd.min(equity / peak - 1.0);
        }
        let day = (((closes[k] - start).max(0) / 86_400_000) as usize + 1).min(days);
        daily[day] = equity;
        while next_fan < fan_at.len() && fan_at[next_fan] == k + 1 {
            fan.push(equity);
            next_fan += 1;
        }
    }
    // Carry equity over days without a close.
    for d in 1..=days {
        if daily[d].is_nan() {
            daily[d] = daily[d - 1];
        }
    }
    let day_returns: Vec<f64> = daily
        .windows(2)
        .map(|w| if w[0] > 0.0 { w[1] / w[0] - 1.0 } else { 0.0 })
        .collect();
    let sharpe = crate::overfit::sharpe(&day_returns).map(|s| s * 365f64.sqrt());
    let annual = equity.powf(365.0 / days as f64) - 1.0;
    let calmar = (max_dd < 0.0).then(|| annual / max_dd.abs());
    PathMetrics {
        total_return: (equity - 1.0) * 100.0,
        max_drawdown: max_dd * 100.0,
        sharpe,
        calmar,
    }
}

/// numpy's default (linear) percentile of sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// A metric's distribution over the scenarios (finite values), with the
/// original's percentile rank (scipy's `percentileofscore`, kind "weak": the
/// share of scenarios at or below it).
pub fn distribution(values: &[f64], original: Option<f64>) -> Value {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return json!({"scenarios": 0, "original": original});
    }
    let n = sorted.len() as f64;
    let mean = sorted.iter().sum::<f64>() / n;
    let percentiles: Map<String, Value> = PERCENTILES
        .iter()
        .map(|q| (format!("{q}"), json!(percentile(&sorted, *q))))
        .collect();
    json!({
        "scenarios": sorted.len(),
        "original": original,
        "mean": mean,
        "std": if sorted.len() > 1 { crate::overfit::std(&sorted) } else { 0.0 },
        "min": sorted[0],
        "max": sorted[sorted.len() - 1],
        "percentiles": percentiles,
        "interval_90": [percentile(&sorted, 5.0), percentile(&sorted, 95.0)],
        "interval_95": [percentile(&sorted, 2.5), percentile(&sorted, 97.5)],
        "original_percentile_rank": original.filter(|o| o.is_finite()).map(|o| sorted.iter().filter(|v| **v <= o).count() as f64 / n * 100.0),
    })
}

/// The fan: per x, the equity percentiles over scenarios.
fn fan(x_label: &str, x: Vec<f64>, per_scenario: &[Vec<f64>], original: Vec<f64>) -> Value {
    let mut bands: Map<String, Value> = Map::new();
    for q in [5.0, 25.0, 50.0, 75.0, 95.0] {
        let band: Vec<f64> = (0..x.len())
            .map(|i| {
                let mut column: Vec<f64> = per_scenario
                    .iter()
                    .filter_map(|s| s.get(i).copied())
                    .filter(|v| v.is_finite())
                    .collect();
                column.sort_by(f64::total_cmp);
                percentile(&column, q)
            })
            .collect();
        bands.insert(format!("{q}"), json!(band));
    }
    json!({"x_label": x_label, "x": x, "bands": bands, "original": original,
           "unit": "equity relative to the starting balance (1.0 = start)"})
}

/// Evenly spaced indices 0..=n, at most FAN_POINTS of them.
fn fan_points(n: usize) -> Vec<usize> {
    if n < FAN_POINTS {
        return (0..=n).collect();
    }
    let mut points: Vec<usize> = (0..FAN_POINTS).map(|i| i * n / (FAN_POINTS - 1)).collect();
    points.dedup();
    points
}

async fn all_trades(rt: &dyn Runtime, job_id: &str) -> anyhow::Result<Vec<Value>> {
    let mut trades = Vec::new();
    loop {
        let page = rt
            .store()
            .result_rows(job_id, "trades", trades.len() as i64, 10_000)
            .await?;
        if page.is_empty() {
            return Ok(trades);
        }
        trades.extend(page);
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct MonteCarloResult {
    /// Mode, method or pipeline, scenarios, seed, block lengths and the original backtest's job id.
    #[schemars(with = "Map<String, Value>")]
    pub setup: Value,
    /// `closed_trade` (trades mode: equity moves only when a trade closes, in exit order) or
    /// `mark_to_market` (candles mode: Jesse's own metrics of each scenario backtest).
    pub equity_basis: String,
    /// Per metric: mean, std, percentiles 5..95, interval_90, interval_95, the original (on the same basis)
    /// and its percentile rank. Trades mode: total_return, closed_trade_max_drawdown (percent),
    /// closed_trade_sharpe_ratio, closed_trade_calmar_ratio, each with `original_mark_to_market`: Jesse's
    /// figure of the original backtest, shown beside the distribution, not comparable to it. Candles mode:
    /// total_return, max_drawdown, sharpe_ratio, calmar_ratio (Jesse's).
    #[schemars(with = "Map<String, Value>")]
    pub metrics: Value,
    /// Share of scenarios whose total return is below 0; null under `shuffle`, which cannot change the total.
    pub probability_of_loss: Option<f64>,
    /// Why `probability_of_loss` is null.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probability_of_loss_reason: Option<String>,
    /// Share of scenarios whose max drawdown (closed-trade in trades mode) reaches `ruin_drawdown` percent.
    pub probability_of_ruin: f64,
    pub ruin_drawdown: f64,
    /// Equity percentile bands per trade (trades mode) or per day (candles mode).
    #[schemars(with = "Map<String, Value>")]
    pub fan: Value,
    /// Per-scenario values in scenario order (for histograms and checks): total_return and the drawdown
    /// (closed_trade_max_drawdown or max_drawdown).
    #[schemars(with = "Map<String, Value>")]
    pub distribution: Value,
}

async fn trades_mode(
    rt: &dyn Runtime,
    plan: &McPlan,
    original_id: &str,
    original: Value,
) -> anyhow::Result<Outcome> {
    let trades = all_trades(rt, original_id).await?;
    let balance = plan.backtest.config["starting_balance"]
        .as_f64()
        .unwrap_or(10_000.0);
    let returns = trade_returns(&trades, balance);
    if returns.len() < 2 {
        return Ok(Outcome::Failed(crate::ErrorBody::new(
            "too_few_trades",
            format!(
                "backtest {original_id} closed {} trade(s); a trade Monte Carlo needs at least 2",
                returns.len()
            ),
        )));
    }
    let plan = plan.clone();
    let original_id = original_id.to_string();
    let outcome = tokio::task::spawn_blocking(move || {
        let (start, end) = (plan.backtest.start_ms, plan.backtest.end_ms);
        let values: Vec<f64> = returns.iter().map(|(r, _)| *r).collect();
        let closes: Vec<i64> = returns.iter().map(|(_, c)| *c).collect();
        let n = values.len();
        let block = plan.block_length.map_or_else(|| ((n as f64).cbrt().round() as usize).max(2), |b| b as usize).min(n);
        let mean_block = plan.mean_block_length.unwrap_or_else(|| (n as f64).cbrt().max(1.0));
        let points = fan_points(n);
        let mut original_fan = Vec::new();
        let original_path = path(&values, &closes, start, end, &points, &mut original_fan);
        let mut scenarios = Vec::with_capacity(plan.scenarios as usize);
        let mut fans = Vec::with_capacity(plan.scenarios as usize);
        for i in 0..plan.scenarios {
            let mut rng = SplitMix64::new(trial_seed(plan.seed, i64::from(i)));
            let order = resample(n, plan.method, block, mean_block, &mut rng);
            let drawn: Vec<f64> = order.iter().map(|k| values[*k]).collect();
            let mut f = Vec::with_capacity(points.len());
            scenarios.push(path(&drawn, &closes, start, end, &points, &mut f));
            fans.push(f);
        }
        let x: Vec<f64> = points.iter().map(|p| *p as f64).collect();
        let setup = json!({"mode": "trades", "method": plan.method, "block_length": (plan.method == Method::BlockBootstrap).then_some(block),
            "mean_block_length": (plan.method == Method::StationaryBootstrap).then_some(mean_block),
            "scenarios": plan.scenarios, "seed": plan.seed, "trades": n, "source_job_id": original_id,
            "returns": "each trade's PnL over the equity at its entry (starting balance plus PnL closed before it); equity compounds from 1 and stops at 0",
            "order": "trades are compounded in exit order, whatever route they belong to: concurrent trades (several routes) are one sequence by closing time",
            "equity": "closed-trade equity: it moves only when a trade closes, so the drawdown, Sharpe and Calmar are closed-trade figures, not Jesse's mark-to-market ones (shown beside them as original_mark_to_market)",
            "scenario_seeds": "scenario i draws from SplitMix64 seeded with trial_seed(seed, i)"});
        summarize(setup, &plan, &scenarios, original_path, fan("trade", x, &fans, original_fan), &original)
    })
    .await?;
    Ok(outcome)
}

async fn candles_mode(
    rt: &dyn Runtime,
    job: &JobRecord,
    plan: &McPlan,
    original_id: &str,
    original: Value,
) -> anyhow::Result<Outcome> {
    let days = ((plan.backtest.end_ms - plan.backtest.start_ms) / 86_400_000).max(1) as usize;
    let balance = plan.backtest.config["starting_balance"]
        .as_f64()
        .unwrap_or(10_000.0);
    let metrics_of = |body: &Value| {
        let m = &body["metrics"];
        let returns = daily_returns(&body["equity_curve"], days);
        let mut equity = vec![1.0];
        for r in &returns {
            equity.push(equity.last().copied().unwrap_or(1.0) * (1.0 + r));
        }
        (
            PathMetrics {
                total_return: m["net_profit_percentage"].as_f64().unwrap_or(0.0),
                max_drawdown: m["max_drawdown"].as_f64().unwrap_or(0.0),
                sharpe: m["sharpe_ratio"].as_f64(),
                calmar: m["calmar_ratio"].as_f64(),
            },
            equity,
        )
    };
    let (original_metrics, original_equity) = metrics_of(&original);
    let mut scenarios = Vec::new();
    let mut fans = Vec::new();
    let mut failed = Vec::new();
    // Child 0 is the original backtest; the scenarios follow it.
    let mut pages = rt.store().child_pages(&job.id, 0, 200);
    while let Some(page) = pages.next().await? {
        for c in page {
            match (c.status, c.body) {
                (JobStatus::Succeeded, Some(body)) => {
                    let (m, e) = metrics_of(&body);
                    scenarios.push(m);
                    fans.push(e);
                }
                _ => failed.push(json!({"scenario": c.index, "job_id": c.id, "status": c.status, "error": c.error})),
            }
        }
    }
    let points = fan_points(days);
    let pick = |e: &Vec<f64>| -> Vec<f64> {
        points
            .iter()
            .map(|p| e.get(*p).copied().unwrap_or(f64::NAN))
            .collect()
    };
    let fans: Vec<Vec<f64>> = fans.iter().map(pick).collect();
    let x: Vec<f64> = points.iter().map(|p| *p as f64).collect();
    let setup = json!({"mode": "candles", "pipeline": plan.pipeline, "scenarios": plan.scenarios, "seed": plan.seed,
        "succeeded": scenarios.len(), "failed": failed, "source_job_id": original_id, "starting_balance": balance,
        "scenario_seeds": "scenario i (1-based) runs its pipeline with seed + i − 1 (as jesse.research.monte_carlo_candles); the Gaussian pipelines get it as numpy's global seed"});
    Ok(summarize(
        setup,
        plan,
        &scenarios,
        original_metrics,
        fan("day", x, &fans, pick(&original_equity)),
        &original,
    ))
}

fn summarize(
    setup: Value,
    plan: &McPlan,
    scenarios: &[PathMetrics],
    original: PathMetrics,
    fan: Value,
    original_body: &Value,
) -> Outcome {
    let column = |f: fn(&PathMetrics) -> Option<f64>| -> Vec<f64> {
        scenarios.iter().filter_map(f).collect()
    };
    let closed_trade = plan.mode == McMode::Trades;
    // Trades mode measures closed-trade equity: its names say so, and Jesse's
    // mark-to-market figure of the original stands beside each.
    let (drawdown_key, sharpe_key, calmar_key) = if closed_trade {
        (
            "closed_trade_max_drawdown",
            "closed_trade_sharpe_ratio",
            "closed_trade_calmar_ratio",
        )
    } else {
        ("max_drawdown", "sharpe_ratio", "calmar_ratio")
    };
    let total = column(|m| Some(m.total_return));
    let drawdown = column(|m| Some(m.max_drawdown));
    let n = scenarios.len().max(1) as f64;
    let (loss, loss_reason) = if closed_trade && plan.method == Method::Shuffle {
        (None, Some(SHUFFLE_LOSS_REASON.to_string()))
    } else {
        let losing = scenarios.iter().filter(|m| m.total_return < 0.0).count();
        (Some(losing as f64 / n), None)
    };
    let ruin = scenarios
        .iter()
        .filter(|m| m.max_drawdown <= -plan.ruin_drawdown)
        .count() as f64
        / n;
    let jesse = &original_body["metrics"];
    let beside = |mut d: Value, jesse_key: &str| {
        if closed_trade {
            d["original_mark_to_market"] = jesse[jesse_key].clone();
        }
        d
    };
    let mut metrics = Map::new();
    metrics.insert(
        "total_return".into(),
        distribution(&total, Some(original.total_return)),
    );
    metrics.insert(
        drawdown_key.into(),
        beside(
            distribution(&drawdown, Some(original.max_drawdown)),
            "max_drawdown",
        ),
    );
    metrics.insert(
        sharpe_key.into(),
        beside(
            distribution(&column(|m| m.sharpe), original.sharpe),
            "sharpe_ratio",
        ),
    );
    metrics.insert(
        calmar_key.into(),
        beside(
            distribution(&column(|m| m.calmar), original.calmar),
            "calmar_ratio",
        ),
    );
    let metrics = Value::Object(metrics);
    let mut setup = setup;
    setup["provenance"] = original_body["provenance"].clone();
    if let Some(p) = setup["provenance"].as_object_mut() {
        p.remove("params");
        if let Some(strategies) = p.get_mut("strategies").and_then(Value::as_array_mut) {
            for s in strategies {
                if let Some(s) = s.as_object_mut() {
                    s.remove("source");
                }
            }
        }
    }
    let mut summary = json!({
        "scenarios": scenarios.len(),
        "probability_of_loss": loss,
        "probability_of_ruin": ruin,
        "total_return_p5": metrics["total_return"]["percentiles"]["5"],
    });
    summary[format!("{drawdown_key}_p5")] = metrics[drawdown_key]["percentiles"]["5"].clone();
    if closed_trade {
        summary["method"] = json!(plan.method);
    }
    let result = MonteCarloResult {
        setup,
        equity_basis: if closed_trade {
            "closed_trade"
        } else {
            "mark_to_market"
        }
        .into(),
        metrics,
        probability_of_loss: loss,
        probability_of_loss_reason: loss_reason,
        probability_of_ruin: ruin,
        ruin_drawdown: plan.ruin_drawdown,
        fan,
        distribution: json!({"total_return": total, drawdown_key: drawdown}),
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

    fn trade(open: i64, close: i64, pnl: f64) -> Value {
        json!({"opened_at": open, "closed_at": close, "PNL": pnl})
    }

    #[test]
    fn returns_are_relative_to_equity_at_entry() {
        let day = 86_400_000;
        // Two overlapping trades, then one after both closed.
        let trades = [
            trade(0, 2 * day, 100.0),
            trade(day, 3 * day, -50.0),
            trade(4 * day, 5 * day, 105.0),
        ];
        let r = trade_returns(&trades, 1000.0);
        assert_eq!(r[0], (0.1, 2 * day));
        assert_eq!(r[1], (-0.05, 3 * day)); // opened before the first closed
        assert!((r[2].0 - 105.0 / 1050.0).abs() < 1e-15);
    }

    #[test]
    fn a_drawdown_never_passes_minus_100_percent() {
        // Trades that each lose more than the equity they started with (leverage).
        let returns = [-0.9, 0.5, -1.7, 0.3, -0.95, 2.0];
        let closes: Vec<i64> = (1..=6).map(|d| d * 86_400_000).collect();
        for seed in 0..200 {
            let mut rng = SplitMix64::new(seed);
            let order = resample(6, Method::Bootstrap, 2, 2.0, &mut rng);
            let drawn: Vec<f64> = order.iter().map(|k| returns[*k]).collect();
            let m = path(&drawn, &closes, 0, 7 * 86_400_000, &[], &mut Vec::new());
            assert!(
                m.max_drawdown >= -100.0 && m.total_return >= -100.0,
                "{m:?}"
            );
        }
    }

    #[test]
    fn shuffles_are_permutations_and_blocks_are_contiguous() {
        let mut rng = SplitMix64::new(3);
        let mut order = resample(50, Method::Shuffle, 0, 1.0, &mut rng);
        order.sort();
        assert_eq!(order, (0..50).collect::<Vec<_>>());
        let blocks = resample(10, Method::BlockBootstrap, 3, 1.0, &mut rng);
        assert_eq!(blocks.len(), 10);
        assert_eq!((blocks[0] + 1) % 10, blocks[1]);
        assert_eq!((blocks[1] + 1) % 10, blocks[2]);
    }

    #[test]
    fn stationary_bootstrap_blocks_are_geometric_with_the_stated_mean() {
        // Many draws of a block length: the mean is the stated one (a
        // geometric law with p = 1/4 has mean 4 and standard deviation
        // √(1 − p)/p ≈ 3.46, so 200,000 draws put the sample mean within
        // ±0.05 of 4 with a margin of over six standard errors), the share of
        // length 1 is p, and no length is below 1.
        for mean in [4.0, 1.7, 25.0] {
            let mut rng = SplitMix64::new(11);
            let draws: Vec<usize> = (0..200_000)
                .map(|_| geometric_length(mean, usize::MAX, &mut rng))
                .collect();
            let sample_mean = draws.iter().sum::<usize>() as f64 / draws.len() as f64;
            let sd = (1.0 - 1.0 / mean).sqrt() * mean;
            assert!(
                (sample_mean - mean).abs() < 6.0 * sd / (draws.len() as f64).sqrt(),
                "mean {mean}: {sample_mean}"
            );
            let ones = draws.iter().filter(|l| **l == 1).count() as f64 / draws.len() as f64;
            assert!(
                (ones - 1.0 / mean).abs() < 0.01,
                "mean {mean}: P(L=1) {ones}"
            );
            assert!(draws.iter().all(|l| *l >= 1));
        }
        // Mean 1 is the plain bootstrap: every block one trade long.
        let mut rng = SplitMix64::new(2);
        assert!((0..1000).all(|_| geometric_length(1.0, 50, &mut rng) == 1));
        // A length never passes the cap (the trades still to draw).
        let mut rng = SplitMix64::new(3);
        assert!((0..1000).all(|_| geometric_length(1e6, 7, &mut rng) <= 7));
    }

    #[test]
    fn stationary_bootstrap_wraps_circularly_and_reproduces_from_its_seed() {
        let n = 12;
        let mut wrapped = 0;
        let mut runs = Vec::new();
        for seed in 0..500 {
            let order = resample(
                n,
                Method::StationaryBootstrap,
                0,
                6.0,
                &mut SplitMix64::new(seed),
            );
            assert_eq!(order.len(), n);
            assert!(order.iter().all(|k| *k < n));
            // The same seed, the same scenario.
            let again = resample(
                n,
                Method::StationaryBootstrap,
                0,
                6.0,
                &mut SplitMix64::new(seed),
            );
            assert_eq!(order, again);
            // Within a block the next index is the following trade, and the
            // last trade is followed by the first.
            wrapped += order
                .windows(2)
                .filter(|w| w[0] == n - 1 && w[1] == 0)
                .count();
            let mut run = 1;
            for w in order.windows(2) {
                if w[1] == (w[0] + 1) % n {
                    run += 1;
                } else {
                    runs.push(run);
                    run = 1;
                }
            }
            runs.push(run);
        }
        assert!(
            wrapped > 50,
            "blocks wrap from the last trade to the first: {wrapped}"
        );
        // Runs of consecutive indices are blocks (occasionally two adjacent
        // blocks join): long on average, unlike a bootstrap's.
        let mean_run = runs.iter().sum::<usize>() as f64 / runs.len() as f64;
        assert!(mean_run > 3.0, "{mean_run}");
        // The stream is the scenario's: another seed, another order.
        let a = resample(
            n,
            Method::StationaryBootstrap,
            0,
            6.0,
            &mut SplitMix64::new(1),
        );
        let b = resample(
            n,
            Method::StationaryBootstrap,
            0,
            6.0,
            &mut SplitMix64::new(2),
        );
        assert_ne!(a, b);
        // The exact draw sequence: start (below n), then the length from the
        // next output, block after block.
        let mut rng = SplitMix64::new(42);
        let mut expected = Vec::new();
        while expected.len() < n {
            let start = rng.below(n as u64) as usize;
            let u = ((rng.next_u64() >> 11) as f64 + 1.0) / 9_007_199_254_740_992.0;
            let length =
                (1 + (u.ln() / (1.0 - 1.0 / 6.0f64).ln()).floor() as usize).min(n - expected.len());
            expected.extend((0..length).map(|k| (start + k) % n));
        }
        assert_eq!(
            resample(
                n,
                Method::StationaryBootstrap,
                0,
                6.0,
                &mut SplitMix64::new(42)
            ),
            expected
        );
    }

    #[test]
    fn percentiles_as_numpy() {
        // numpy.percentile([1, 2, 3, 4, 10], [5, 50, 90]) = [1.2, 3.0, 7.6]
        let v = [1.0, 2.0, 3.0, 4.0, 10.0];
        assert!((percentile(&v, 5.0) - 1.2).abs() < 1e-12);
        assert_eq!(percentile(&v, 50.0), 3.0);
        assert!((percentile(&v, 90.0) - 7.6).abs() < 1e-12);
        // scipy.stats.percentileofscore([1, 2, 3, 4, 10], 3, kind="weak") = 60.0
        assert_eq!(
            distribution(&v, Some(3.0))["original_percentile_rank"],
            60.0
        );
    }
}
