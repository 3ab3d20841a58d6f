//! `backtest`: one `jesse.research.backtest` call on stored candles, in a runner.
//! Its result is Jesse's metrics (unchanged; NaN and ±inf as null), the equity
//! curve when asked, provenance and timings; the closed trades are its rows.

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use super::{
    KindDef, Lane, Outcome, RowsPart, Runtime, Submit, read_plan, read_request, schema_of,
};
use crate::error::ApiError;
use crate::jobs::{BacktestPlan, BacktestRequest};
use crate::planner::Planner;
use crate::store::{JobRecord, Store};

pub static KIND: KindDef = KindDef {
    name: "backtest",
    description: "one Jesse backtest on stored candles",
    lane: Lane::Runner,
    submit: Some(Submit {
        path: "/v1/backtests",
        tool: "backtest",
        title: "Submit backtest",
        description: "Submit a Jesse backtest. Validates everything first (strategy exists, exchange and timeframe \
supported, dates, numbers, candles stored for the whole range including warm-up) and answers at once with a \
job_id; it does not wait for the backtest. Then call job_wait (or job_get) with the job_id until status is \
succeeded, failed or cancelled, and job_result for the metrics. Dates: YYYY-MM-DD UTC, start inclusive, end exclusive.",
        next: "job_result for Jesse's metrics (and the trades or equity curve if asked)",
        open_world: false,
    }),
    request_schema: schema_of::<BacktestRequest>,
    result_schema: schema_of::<BacktestResult>,
    rows: Some(RowsPart {
        name: "trades",
        included_by_default: |plan| plan["include_trades"].as_bool().unwrap_or(false),
    }),
    plan,
    execute,
    parent: false,
};

/// A backtest's result body (its trades are paged rows: `trades`, `trades_total`).
#[derive(Debug, Serialize, JsonSchema)]
pub struct BacktestResult {
    /// Jesse's metrics, unchanged; NaN and ±infinity (e.g. average_loss with no
    /// losing trade) are null because JSON cannot represent them, and
    /// `metrics_special` says which.
    #[schemars(with = "serde_json::Map<String, Value>")]
    pub metrics: Value,
    /// Which metrics are null because Jesse computed ±inf or NaN: metric key
    /// to `"+inf"`, `"-inf"` or `"nan"` (e.g. `sortino_ratio: "+inf"` when no
    /// day lost; Jesse's optimization fitness ranks that best).
    #[schemars(with = "serde_json::Map<String, Value>")]
    pub metrics_special: Value,
    /// Jesse's daily equity curve (its `Portfolio` series; null without trades),
    /// read as `[{name, points: [{time (ms), date (RFC 3339), value}]}]` (docs/RESULTS.md).
    #[schemars(with = "Option<Vec<serde_json::Map<String, Value>>>")]
    pub equity_curve: Option<Value>,
    /// Jesse version, each strategy's sha256 and source, each series' candle
    /// fingerprint (source, rows, first, last, sha256), `data` (the candles'
    /// source for the run: `synthetic` is demo data, not market prices), and
    /// the job's plan.
    #[schemars(with = "serde_json::Map<String, Value>")]
    pub provenance: Value,
    /// With `allow_gaps`: the missing runs of each series the backtest ran over.
    #[schemars(with = "Option<serde_json::Map<String, Value>>")]
    pub gaps: Option<Value>,
    /// Where the time went, in milliseconds.
    #[schemars(with = "serde_json::Map<String, Value>")]
    pub timings: Value,
}

fn plan(planner: &Planner, request: Value) -> BoxFuture<'_, Result<Value, ApiError>> {
    Box::pin(async move {
        let request: BacktestRequest = read_request(request)?;
        let plan = planner.plan_backtest(&request).await?;
        Ok(serde_json::to_value(plan).expect("plans serialize"))
    })
}

fn execute<'a>(rt: &'a dyn Runtime, job: &'a JobRecord) -> BoxFuture<'a, anyhow::Result<Outcome>> {
    Box::pin(async move {
        let plan: BacktestPlan = match read_plan(job) {
            Ok(plan) => plan,
            Err(outcome) => return Ok(outcome),
        };
        let plan = match with_pinned_sources(rt.store(), plan).await? {
            Ok(plan) => plan,
            Err(outcome) => return Ok(outcome),
        };
        rt.run_backtest(job, &plan).await
    })
}

/// A child's plan names its strategies by sha256 only; the bytes its parent
/// pinned are kept once (`strategy_sources`), so ten thousand children do not
/// store ten thousand copies.
async fn with_pinned_sources(
    store: &Store,
    mut plan: BacktestPlan,
) -> anyhow::Result<Result<BacktestPlan, Outcome>> {
    if plan.strategies.iter().all(|s| !s.source.is_empty()) {
        return Ok(Ok(plan));
    }
    for strategy in plan.strategies.iter_mut().filter(|s| s.source.is_empty()) {
        match store.get_source(&strategy.sha256).await? {
            Some(found) => strategy.source = found.source,
            None => {
                return Ok(Err(Outcome::Failed(crate::ErrorBody::new(
                    "invalid_job",
                    format!(
                        "the source of strategy {} (sha256 {}) pinned by the parent job is missing",
                        strategy.name, strategy.sha256
                    ),
                ))));
            }
        }
    }
    Ok(Ok(plan))
}
