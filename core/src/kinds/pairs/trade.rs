//! `pairs_backtest`: sugar over an ordinary backtest of the shipped
//! `PairsTrading` strategy with two routes, one per leg (route 0 trades the
//! first symbol, route 1 the second, sized by the hedge ratio). The pair can
//! come from a succeeded `pairs_screen` (its exchange, timeframe, range and
//! OLS hedge ratio fill the gaps) or be named directly.
//!
//! The backtest is planned at submit exactly as `POST /v1/backtests` plans it
//! and runs as this job's only child, a normal `backtest` job: analysis,
//! charts and Monte Carlo take its job id (`backtest_job_id` in the result).

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::STRATEGY;
use super::screen::ScreenPlan;
use crate::ErrorBody;
use crate::error::ApiError;
use crate::jobs::{BacktestPlan, BacktestRequest, JobStatus};
use crate::kinds::{KindDef, Lane, Outcome, Runtime, Submit, read_plan, read_request, schema_of};
use crate::planner::Planner;
use crate::store::{JobRecord, JobResult};
use crate::time::to_rfc3339;

pub static KIND: KindDef = KindDef {
    name: "pairs_backtest",
    description: "a backtest of the PairsTrading strategy on two legs (a child backtest job)",
    lane: Lane::Control,
    submit: Some(Submit {
        path: "/v1/pairs/backtest",
        tool: "pairs_backtest",
        title: "Submit pairs backtest",
        description: "Backtest the shipped PairsTrading strategy on a pair: two Jesse routes, route 0 trades \
symbols[0] and route 1 symbols[1] sized by the hedge ratio, entering when the spread's z-score passes entry_z and \
leaving inside exit_z. Give `symbols` [a, b] with exchange, timeframe, start_date and end_date, or `screen_job_id` \
(a succeeded pairs_screen) and `pair_rank` (1 = its best pair): the screen's exchange, timeframe, range and OLS hedge \
ratio fill what is not given (hedge_method `fixed` with the screen's ratio unless `hyperparameters.hedge_method` is \
set; note the ratio was estimated over the screen's range). Backtest fields (starting_balance, fee, leverage, \
warm_up_candles, ...) are as for backtest. Validated like a backtest, then run as one ordinary child backtest job; \
job_result gives its metrics and `backtest_job_id` (read its trades with job_result include_trades).",
        next: "job_result for the metrics and backtest_job_id; job_result of backtest_job_id with include_trades for both legs' trades",
        open_world: false,
    }),
    request_schema: schema_of::<PairsBacktestRequest>,
    result_schema: schema_of::<PairsBacktestResult>,
    rows: None,
    plan,
    execute,
    parent: true,
};

/// `POST /v1/pairs/backtest` and MCP `pairs_backtest`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PairsBacktestRequest {
    /// A succeeded `pairs_screen` job whose pair to trade.
    #[serde(default)]
    pub screen_job_id: Option<String>,
    /// With `screen_job_id`: the pair's rank in the screen (1 = best, the default).
    #[serde(default)]
    pub pair_rank: Option<u32>,
    /// The two legs `[a, b]` (without a screen): route 0 trades a, route 1 trades b.
    #[serde(default)]
    pub symbols: Option<Vec<String>>,
    /// Exchange (default: the screen's).
    #[serde(default)]
    pub exchange: Option<String>,
    /// Timeframe of both routes (default: the screen's).
    #[serde(default)]
    pub timeframe: Option<String>,
    /// First day, `YYYY-MM-DD` UTC (default: the screen's).
    #[serde(default)]
    pub start_date: Option<String>,
    /// Last day, exclusive (default: the screen's).
    #[serde(default)]
    pub end_date: Option<String>,
    /// PairsTrading's hyperparameters: entry_z, exit_z, lookback, hedge_method (ols | kalman | fixed), hedge_ratio, risk.
    #[serde(default)]
    pub hyperparameters: Option<Map<String, Value>>,
    #[serde(default)]
    pub starting_balance: Option<f64>,
    #[serde(default)]
    pub fee: Option<f64>,
    /// `futures` (default) or `spot` (spot cannot short a leg).
    #[serde(default, rename = "type")]
    pub exchange_type: Option<String>,
    #[serde(default)]
    pub leverage: Option<f64>,
    #[serde(default)]
    pub leverage_mode: Option<String>,
    #[serde(default)]
    pub warm_up_candles: Option<i64>,
    #[serde(default)]
    pub fast_mode: bool,
    #[serde(default)]
    pub allow_gaps: bool,
}

/// What a pairs backtest job stores as its params.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PairsBacktestPlan {
    backtest: BacktestPlan,
    symbols: [String; 2],
    screen_job_id: Option<String>,
    pair_rank: Option<u32>,
    /// The screen's OLS hedge ratio (symbols[0] on symbols[1]), when from a screen.
    screen_hedge_ratio: Option<f64>,
}

/// The pairs backtest's result: the child backtest's metrics and where to read the rest.
#[derive(Debug, Serialize, JsonSchema)]
pub struct PairsBacktestResult {
    /// The child backtest job (trades, equity curve, charts, analysis).
    pub backtest_job_id: String,
    /// `[a, b]`: route 0 trades a, route 1 trades b.
    pub symbols: Vec<String>,
    /// The screen and rank the pair came from, and its OLS hedge ratio.
    #[schemars(with = "Map<String, Value>")]
    pub pair: Value,
    /// The hyperparameters the strategy ran with (overrides; the rest are its defaults).
    #[schemars(with = "Option<Map<String, Value>>")]
    pub hyperparameters: Option<Value>,
    /// Jesse's metrics of the child backtest (NaN and ±inf as null).
    #[schemars(with = "Map<String, Value>")]
    pub metrics: Value,
    /// The child backtest's provenance (Jesse version, strategy sha256, candle fingerprints).
    #[schemars(with = "Map<String, Value>")]
    pub provenance: Value,
}

fn invalid(code: &str, message: impl Into<String>, field: &str) -> ApiError {
    ApiError::invalid(code, message).with_details(json!({"field": field}))
}

fn day(ms: i64) -> String {
    to_rfc3339(ms)[..10].to_string()
}

fn plan(planner: &Planner, request: Value) -> BoxFuture<'_, Result<Value, ApiError>> {
    Box::pin(async move {
        let request: PairsBacktestRequest = read_request(request)?;
        let mut hyperparameters = request.hyperparameters.clone().unwrap_or_default();
        let (symbols, exchange, timeframe, start, end, screen_ratio) = match &request.screen_job_id
        {
            Some(id) => {
                if request.symbols.is_some() {
                    return Err(invalid(
                        "invalid_request",
                        "give either screen_job_id (and pair_rank) or symbols, not both",
                        "symbols",
                    ));
                }
                let job = planner.store().get_job(id.trim()).await?.ok_or_else(|| {
                    invalid(
                        "unknown_source",
                        format!("no job with id '{id}'; give a succeeded pairs_screen's job_id"),
                        "screen_job_id",
                    )
                })?;
                if job.kind != super::screen::KIND.name || job.status != JobStatus::Succeeded {
                    return Err(invalid(
                        "invalid_source",
                        format!(
                            "job '{id}' is a {} {}, not a succeeded pairs_screen",
                            job.status.as_str(),
                            job.kind
                        ),
                        "screen_job_id",
                    ));
                }
                let screen: ScreenPlan =
                    serde_json::from_value(job.params.clone()).map_err(|e| {
                        invalid(
                            "invalid_source",
                            format!("job '{id}' has unreadable parameters: {e}"),
                            "screen_job_id",
                        )
                    })?;
                let rank = request.pair_rank.unwrap_or(1);
                let rows = planner
                    .store()
                    .result_rows(&job.id, "pairs", i64::from(rank.max(1)) - 1, 1)
                    .await?;
                let row = match rows.first() {
                    Some(row) if rank >= 1 => row.clone(),
                    _ => {
                        return Err(invalid(
                            "invalid_number",
                            format!(
                                "pair_rank {rank} is not a rank of screen '{id}' (1 to its number of pairs)"
                            ),
                            "pair_rank",
                        ));
                    }
                };
                let pair: Vec<String> =
                    serde_json::from_value(row["symbols"].clone()).unwrap_or_default();
                let [a, b] = <[String; 2]>::try_from(pair).map_err(|_| {
                    invalid(
                        "invalid_source",
                        "the screen's row names no pair",
                        "screen_job_id",
                    )
                })?;
                let ratio = row["ols"]["hedge_ratio"].as_f64();
                if !hyperparameters.contains_key("hedge_method") {
                    let Some(ratio) = ratio else {
                        return Err(invalid(
                            "invalid_source",
                            format!(
                                "the screen has no hedge ratio for {a}/{b} (its row: {}); set hyperparameters.hedge_method to ols or kalman",
                                row["reason"]
                            ),
                            "screen_job_id",
                        ));
                    };
                    hyperparameters.insert("hedge_method".into(), json!("fixed"));
                    hyperparameters.insert("hedge_ratio".into(), json!(ratio));
                }
                (
                    [a, b],
                    request.exchange.clone().unwrap_or(screen.exchange.clone()),
                    request
                        .timeframe
                        .clone()
                        .unwrap_or(screen.timeframe.clone()),
                    request
                        .start_date
                        .clone()
                        .unwrap_or_else(|| day(screen.start_ms)),
                    request
                        .end_date
                        .clone()
                        .unwrap_or_else(|| day(screen.end_ms)),
                    ratio,
                )
            }
            None => {
                let Some(symbols) = &request.symbols else {
                    return Err(invalid(
                        "missing_field",
                        "give symbols [a, b] (with exchange, timeframe, start_date, end_date) or a screen_job_id",
                        "symbols",
                    ));
                };
                let pair = <[String; 2]>::try_from(symbols.clone()).map_err(|_| {
                    invalid(
                        "invalid_symbols",
                        format!("symbols must name exactly two legs; got {}", symbols.len()),
                        "symbols",
                    )
                })?;
                if pair[0] == pair[1] {
                    return Err(invalid(
                        "invalid_symbols",
                        "the two legs must be different symbols",
                        "symbols",
                    ));
                }
                let need = |v: &Option<String>, name: &str| {
                    v.clone().ok_or_else(|| {
                        invalid(
                            "missing_field",
                            format!("'{name}' is required without a screen_job_id"),
                            name,
                        )
                    })
                };
                (
                    pair,
                    need(&request.exchange, "exchange")?,
                    need(&request.timeframe, "timeframe")?,
                    need(&request.start_date, "start_date")?,
                    need(&request.end_date, "end_date")?,
                    None,
                )
            }
        };
        let mut body = json!({
            "exchange": exchange,
            "start_date": start,
            "end_date": end,
            "routes": [
                {"strategy": STRATEGY, "symbol": symbols[0], "timeframe": timeframe},
                {"strategy": STRATEGY, "symbol": symbols[1], "timeframe": timeframe},
            ],
            "hyperparameters": hyperparameters,
            "fast_mode": request.fast_mode,
            "allow_gaps": request.allow_gaps,
        });
        for (name, value) in [
            (
                "starting_balance",
                request.starting_balance.map(|v| json!(v)),
            ),
            ("fee", request.fee.map(|v| json!(v))),
            ("type", request.exchange_type.clone().map(|v| json!(v))),
            ("leverage", request.leverage.map(|v| json!(v))),
            (
                "leverage_mode",
                request.leverage_mode.clone().map(|v| json!(v)),
            ),
            ("warm_up_candles", request.warm_up_candles.map(|v| json!(v))),
        ] {
            if let Some(value) = value {
                body[name] = value;
            }
        }
        let backtest: BacktestRequest = read_request(body)?;
        let backtest = planner.plan_backtest(&backtest).await?;
        let plan = PairsBacktestPlan {
            backtest,
            symbols,
            screen_job_id: request.screen_job_id.clone(),
            pair_rank: request
                .screen_job_id
                .as_ref()
                .map(|_| request.pair_rank.unwrap_or(1)),
            screen_hedge_ratio: screen_ratio,
        };
        Ok(serde_json::to_value(plan).expect("plans serialize"))
    })
}

fn execute<'a>(rt: &'a dyn Runtime, job: &'a JobRecord) -> BoxFuture<'a, anyhow::Result<Outcome>> {
    Box::pin(async move {
        let plan: PairsBacktestPlan = match read_plan(job) {
            Ok(plan) => plan,
            Err(outcome) => return Ok(outcome),
        };
        let engine = rt.engine();
        let counts = rt.store().child_counts(&job.id).await?;
        if counts.total == 0 {
            let child = serde_json::to_value(&plan.backtest).expect("plans serialize");
            engine
                .create_children(
                    job,
                    &crate::kinds::backtest::KIND,
                    vec![(0, child)],
                    None,
                    None,
                )
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let counts = engine
            .advance(&job.id)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if counts.done() < counts.total {
            return Ok(Outcome::Waiting);
        }
        let Some(child) = rt
            .store()
            .child_results(&job.id, -1, 1)
            .await?
            .into_iter()
            .next()
        else {
            return Ok(Outcome::Failed(ErrorBody::new(
                "backtest_failed",
                "the pairs backtest's child backtest is missing",
            )));
        };
        let body = match (child.status, child.body) {
            (JobStatus::Succeeded, Some(body)) => body,
            (status, _) => {
                let error = child.error.unwrap_or_else(|| {
                    ErrorBody::new(
                        "cancelled",
                        format!("the backtest ended {}", status.as_str()),
                    )
                });
                return Ok(Outcome::Failed(
                    ErrorBody::new(
                        "backtest_failed",
                        format!("backtest {} failed: {}", child.id, error.message),
                    )
                    .with_details(json!({"backtest_job_id": child.id, "error": error})),
                ));
            }
        };
        let mut provenance = body["provenance"].clone();
        if let Some(p) = provenance.as_object_mut() {
            p.remove("params");
            for s in p
                .get_mut("strategies")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(s) = s.as_object_mut() {
                    s.remove("source");
                }
            }
        }
        let summary = json!({
            "backtest_job_id": child.id,
            "symbols": plan.symbols,
            "total": body["metrics"]["total"],
            "net_profit_percentage": body["metrics"]["net_profit_percentage"],
            "sharpe_ratio": body["metrics"]["sharpe_ratio"],
        });
        let result = PairsBacktestResult {
            backtest_job_id: child.id,
            symbols: plan.symbols.to_vec(),
            pair: json!({
                "screen_job_id": plan.screen_job_id,
                "pair_rank": plan.pair_rank,
                "screen_hedge_ratio": plan.screen_hedge_ratio,
                "legs": {"route_0": plan.symbols[0], "route_1": plan.symbols[1]},
            }),
            hyperparameters: plan.backtest.hyperparameters.clone().map(Value::Object),
            metrics: body["metrics"].clone(),
            provenance,
        };
        Ok(Outcome::Succeeded {
            result: Box::new(JobResult {
                body: serde_json::to_value(result).expect("results serialize"),
                parts: Vec::new(),
            }),
            summary,
        })
    })
}
