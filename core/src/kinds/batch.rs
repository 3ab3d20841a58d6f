//! `backtest_batch`: many backtest variants of one base request (a grid's
//! product and/or an explicit list), each an ordinary child backtest job with
//! its own result and provenance, spread over every worker of the fleet. The
//! parent's result is a leaderboard of the children, ranked by a metric.
//!
//! Submit plans every variant (so one bad variant fails the submit with a 422
//! naming it, before anything is enqueued). The parent then runs on a worker:
//! it plans the children again with the sources pinned at submit (exactly the
//! validation of a user's submit), records them, releases them up to its
//! in-flight cap, and waits without a worker. Once every child has ended it
//! runs again and writes the leaderboard, once.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{
    KindDef, Lane, Outcome, RowsPart, Runtime, Submit, read_plan, read_request, schema_of,
};
use crate::error::ApiError;
use crate::jobs::{BacktestRequest, StrategySource};
use crate::planner::Planner;
use crate::store::{JobRecord, JobResult};

/// The most variants one batch may hold.
pub const MAX_VARIANTS: usize = 10_000;

/// Jesse's numeric metrics a leaderboard can rank by.
pub const RANKABLE: &[&str] = &[
    "annual_return",
    "average_holding_period",
    "average_losing_holding_period",
    "average_loss",
    "average_win",
    "average_winning_holding_period",
    "avg_trades_per_day",
    "avg_trades_per_month",
    "avg_trades_per_week",
    "calmar_ratio",
    "current_streak",
    "expectancy",
    "expectancy_percentage",
    "fee",
    "finishing_balance",
    "gross_loss",
    "gross_profit",
    "largest_losing_trade",
    "largest_winning_trade",
    "longs_count",
    "longs_percentage",
    "losing_streak",
    "max_drawdown",
    "max_underwater_period",
    "net_profit",
    "net_profit_percentage",
    "omega_ratio",
    "open_pl",
    "ratio_avg_win_loss",
    "serenity_index",
    "sharpe_ratio",
    "shorts_count",
    "shorts_percentage",
    "smart_sharpe",
    "smart_sortino",
    "sortino_ratio",
    "total",
    "total_losing_trades",
    "total_open_trades",
    "total_winning_trades",
    "win_rate",
    "win_rate_longs",
    "win_rate_shorts",
    "winning_streak",
];

/// Metrics every leaderboard row shows (plus the ranking metric).
const KEY_METRICS: &[&str] = &[
    "total",
    "net_profit_percentage",
    "win_rate",
    "max_drawdown",
    "sharpe_ratio",
    "calmar_ratio",
    "sortino_ratio",
    "finishing_balance",
];

pub static KIND: KindDef = KindDef {
    name: "backtest_batch",
    description: "many backtest variants as child jobs, ranked in a leaderboard",
    lane: Lane::Control,
    submit: Some(Submit {
        path: "/v1/backtests/batch",
        tool: "backtest_batch",
        title: "Submit backtest batch",
        description: "Run many variants of one backtest (a grid of hyperparameters, symbols, timeframes and periods, \
and/or an explicit list of partial requests merged onto `base`), up to 10000, each as its own backtest job spread over \
every worker. Every variant is validated first; one invalid variant fails the submit naming it. Answers at once with \
the parent job_id: poll job_get (progress = children done/total, with failures and an ETA), list the children with \
job_children, and read job_result for the leaderboard ranked by `rank_by` (paged with offset/limit).",
        next: "job_result for the leaderboard (page it with offset/limit) and job_children for the children",
        open_world: false,
    }),
    request_schema: schema_of::<BatchRequest>,
    result_schema: schema_of::<BatchResult>,
    rows: Some(RowsPart {
        name: "leaderboard",
        included_by_default: |_| true,
    }),
    plan,
    execute,
    parent: true,
};

/// `POST /v1/backtests/batch` and MCP `backtest_batch`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The backtest every variant starts from (the same fields as a single backtest).
    pub base: BacktestRequest,
    /// Variants as the product of value lists; combined with `variants` when both are given.
    #[serde(default)]
    pub grid: Option<Grid>,
    /// Explicit variants: partial backtest requests merged onto `base` (their
    /// `hyperparameters` merge name by name onto the base's).
    #[serde(default)]
    #[schemars(with = "Option<Vec<Map<String, Value>>>")]
    pub variants: Option<Vec<Value>>,
    /// Jesse metric to rank the leaderboard by (default `sharpe_ratio`).
    #[serde(default = "default_rank_by")]
    pub rank_by: String,
    /// `desc` (default: highest first) or `asc`.
    #[serde(default)]
    pub order: Order,
    /// Children queued or running at once (default: the fleet's runners). Lower
    /// it to leave room for other work.
    #[serde(default)]
    pub max_parallel: Option<u32>,
}

fn default_rank_by() -> String {
    "sharpe_ratio".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    #[default]
    Desc,
    Asc,
}

/// Value lists whose product makes variants; every list is optional.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Grid {
    /// Hyperparameter name → values to try.
    #[serde(default)]
    pub hyperparameters: Option<BTreeMap<String, Vec<Value>>>,
    /// Symbols to trade (needs a single-route base).
    #[serde(default)]
    pub symbols: Option<Vec<String>>,
    /// Timeframes to trade on (needs a single-route base).
    #[serde(default)]
    pub timeframes: Option<Vec<String>>,
    /// Date ranges (`start_date` inclusive, `end_date` exclusive, YYYY-MM-DD).
    #[serde(default)]
    pub periods: Option<Vec<Period>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Period {
    pub start_date: String,
    pub end_date: String,
}

/// What a batch job stores as its params.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct BatchPlan {
    /// Each variant as a full backtest request.
    variants: Vec<Value>,
    /// Each variant's overrides of the base, for the leaderboard.
    overrides: Vec<Value>,
    rank_by: String,
    order: Order,
    max_parallel: Option<u32>,
    /// The strategy sources validated at submit; every child runs exactly these.
    sources: Vec<StrategySource>,
}

/// The leaderboard's headline (its rows are the `leaderboard` part).
#[derive(Debug, Serialize, JsonSchema)]
pub struct BatchResult {
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub rank_by: String,
    pub order: Order,
    /// The top row, if any child succeeded.
    #[schemars(with = "Option<Map<String, Value>>")]
    pub best: Option<Value>,
    /// The strategies' sha256 every child ran, and the variants' base.
    #[schemars(with = "Map<String, Value>")]
    pub provenance: Value,
}

fn invalid(code: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid(code, message)
}

/// Expands a request into its variants (full requests) and their overrides.
fn expand(request: &BatchRequest) -> Result<(Vec<Value>, Vec<Value>), ApiError> {
    let base = serde_json::to_value(&request.base).expect("requests serialize");
    let mut overrides: Vec<Value> = Vec::new();
    if let Some(grid) = &request.grid {
        let single_route = request.base.routes.as_ref().is_none_or(Vec::is_empty);
        if !single_route && (grid.symbols.is_some() || grid.timeframes.is_some()) {
            return Err(invalid(
                "invalid_grid",
                "grid.symbols and grid.timeframes need a single-route base (strategy, symbol, timeframe); with routes, list the variants explicitly",
            ));
        }
        // Each axis: a list of partial requests; the grid is their product.
        let mut axes: Vec<Vec<Value>> = Vec::new();
        if let Some(hps) = &grid.hyperparameters {
            for (name, values) in hps {
                if values.is_empty() {
                    return Err(invalid(
                        "invalid_grid",
                        format!("grid.hyperparameters.{name} is empty; give at least one value"),
                    ));
                }
                axes.push(
                    values
                        .iter()
                        .map(|v| json!({"hyperparameters": {name: v}}))
                        .collect(),
                );
            }
        }
        let mut axis = |name: &str, values: Vec<Value>| -> Result<(), ApiError> {
            if values.is_empty() {
                return Err(invalid(
                    "invalid_grid",
                    format!("grid.{name} is empty; give at least one value or leave it out"),
                ));
            }
            axes.push(values);
            Ok(())
        };
        if let Some(symbols) = &grid.symbols {
            axis(
                "symbols",
                symbols.iter().map(|s| json!({"symbol": s})).collect(),
            )?;
        }
        if let Some(timeframes) = &grid.timeframes {
            axis(
                "timeframes",
                timeframes.iter().map(|t| json!({"timeframe": t})).collect(),
            )?;
        }
        if let Some(periods) = &grid.periods {
            axis(
                "periods",
                periods
                    .iter()
                    .map(|p| json!({"start_date": p.start_date, "end_date": p.end_date}))
                    .collect(),
            )?;
        }
        let size = axes.iter().try_fold(1usize, |n, a| n.checked_mul(a.len()));
        match size {
            Some(n) if n <= MAX_VARIANTS => {}
            _ => {
                return Err(invalid(
                    "too_many_variants",
                    format!(
                        "the grid makes more than {MAX_VARIANTS} variants; narrow its lists or split the batch"
                    ),
                ));
            }
        }
        if !axes.is_empty() {
            let mut product = vec![json!({})];
            for axis in &axes {
                let mut next = Vec::with_capacity(product.len() * axis.len());
                for partial in &product {
                    for value in axis {
                        let mut merged = partial.clone();
                        merge(&mut merged, value);
                        next.push(merged);
                    }
                }
                product = next;
            }
            overrides.extend(product);
        }
    }
    if let Some(variants) = &request.variants {
        for (i, variant) in variants.iter().enumerate() {
            if !variant.is_object() {
                return Err(invalid(
                    "invalid_variant",
                    format!("variants[{i}] must be an object of backtest fields"),
                ));
            }
            overrides.push(variant.clone());
        }
    }
    if overrides.is_empty() {
        return Err(invalid(
            "empty_batch",
            "the batch has no variants: give a grid with at least one list, and/or variants",
        ));
    }
    if overrides.len() > MAX_VARIANTS {
        return Err(invalid(
            "too_many_variants",
            format!(
                "{} variants; a batch holds at most {MAX_VARIANTS}",
                overrides.len()
            ),
        ));
    }
    let variants = overrides
        .iter()
        .map(|o| {
            let mut full = base.clone();
            merge(&mut full, o);
            full
        })
        .collect();
    Ok((variants, overrides))
}

/// Merges `patch` onto `target`: top-level fields replace, `hyperparameters`
/// merge name by name.
fn merge(target: &mut Value, patch: &Value) {
    let (Some(target), Some(patch)) = (target.as_object_mut(), patch.as_object()) else {
        return;
    };
    for (key, value) in patch {
        match (key.as_str(), target.get_mut(key)) {
            ("hyperparameters", Some(Value::Object(existing))) if value.is_object() => {
                for (name, v) in value.as_object().expect("checked") {
                    existing.insert(name.clone(), v.clone());
                }
            }
            _ => {
                target.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Plans one variant exactly like a single backtest submit; errors name the variant.
async fn plan_variant(
    planner: &Planner,
    index: usize,
    variant: &Value,
    overrides: &Value,
) -> Result<crate::jobs::BacktestPlan, ApiError> {
    let named = |mut e: ApiError| {
        e.body.message = format!("variant {index}: {}", e.body.message);
        let details = std::mem::take(&mut e.body.details);
        e.with_details(json!({"variant": index, "overrides": overrides, "cause": details}))
    };
    let request: BacktestRequest = read_request(variant.clone()).map_err(named)?;
    planner.plan_backtest(&request).await.map_err(named)
}

/// For a rank_by that names one of Jesse's fitness functions (as an optimization's
/// `objective` does): the metric to rank by instead.
fn fitness_hint(rank_by: &str) -> String {
    let Some(name) = super::optimization::fitness::fitness_name(rank_by) else {
        return String::new();
    };
    super::optimization::fitness::FITNESS
        .iter()
        .find(|(fitness, _, _)| *fitness == name)
        .map(|(_, metric, _)| {
            format!(
                "; '{name}' is Jesse's fitness function (an optimization's objective), which reads the metric '{metric}': rank by '{metric}'"
            )
        })
        .unwrap_or_default()
}

fn plan(planner: &Planner, request: Value) -> BoxFuture<'_, Result<Value, ApiError>> {
    Box::pin(async move {
        let request: BatchRequest = read_request(request)?;
        if !RANKABLE.contains(&request.rank_by.as_str()) {
            return Err(invalid(
                "invalid_rank_by",
                format!(
                    "rank_by '{}' is not one of Jesse's numeric metrics{}",
                    request.rank_by,
                    fitness_hint(&request.rank_by)
                ),
            )
            .with_details(json!({"field": "rank_by", "supported": RANKABLE})));
        }
        if request.max_parallel == Some(0) || request.max_parallel.is_some_and(|m| m > 1024) {
            return Err(
                invalid("invalid_number", "max_parallel must be from 1 to 1024")
                    .with_details(json!({"field": "max_parallel"})),
            );
        }
        let (variants, overrides) = expand(&request)?;
        let mut sources: Vec<StrategySource> = Vec::new();
        for (i, (variant, o)) in variants.iter().zip(&overrides).enumerate() {
            let plan = plan_variant(planner, i, variant, o).await?;
            for s in plan.strategies {
                if !sources.iter().any(|p| p.sha256 == s.sha256) {
                    sources.push(s);
                }
            }
        }
        let plan = BatchPlan {
            variants,
            overrides,
            rank_by: request.rank_by,
            order: request.order,
            max_parallel: request.max_parallel,
            sources,
        };
        Ok(serde_json::to_value(plan).expect("plans serialize"))
    })
}

fn execute<'a>(rt: &'a dyn Runtime, job: &'a JobRecord) -> BoxFuture<'a, anyhow::Result<Outcome>> {
    Box::pin(async move {
        let plan: BatchPlan = match read_plan(job) {
            Ok(plan) => plan,
            Err(outcome) => return Ok(outcome),
        };
        let store = rt.store();
        let engine = rt.engine();
        let counts = store.child_counts(&job.id).await?;
        if counts.total < plan.variants.len() as i64 {
            create_children(rt, job, &plan).await?;
        }
        let counts = engine
            .advance(&job.id)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if counts.done() < counts.total {
            return Ok(Outcome::Waiting);
        }
        leaderboard(rt, job, &plan).await
    })
}

/// Records every variant as a child backtest, planned with the sources pinned
/// at submit (a variant that no longer plans, e.g. its candles were deleted,
/// becomes a failed child naming why).
async fn create_children(
    rt: &dyn Runtime,
    job: &JobRecord,
    plan: &BatchPlan,
) -> anyhow::Result<()> {
    let planner = rt.engine().planner();
    planner.pin_sources(&plan.sources);
    let mut children = Vec::with_capacity(plan.variants.len());
    let mut failures = Vec::new();
    for (i, (variant, o)) in plan.variants.iter().zip(&plan.overrides).enumerate() {
        match plan_variant(&planner, i, variant, o).await {
            Ok(mut child) => {
                for s in &mut child.strategies {
                    s.source.clear(); // kept once, by sha256 (strategy_sources)
                }
                children.push((
                    i as i64,
                    serde_json::to_value(child).expect("plans serialize"),
                ));
            }
            Err(e) => {
                children.push((i as i64, json!({"variant": o})));
                failures.push((i as i64, e.body));
            }
        }
    }
    rt.store().put_sources(&plan.sources).await?;
    let cap = plan.max_parallel.map(i64::from);
    rt.engine()
        .create_children(job, &super::backtest::KIND, children, cap, None)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (index, error) in failures {
        if let Some(child) = rt
            .store()
            .child_results(&job.id, index - 1, 1)
            .await?
            .first()
        {
            rt.store()
                .finish_job(
                    &child.id,
                    None,
                    crate::jobs::JobStatus::Failed,
                    Some(&error),
                    None,
                )
                .await?;
        }
    }
    Ok(())
}

/// Every child has ended: ranks them into the leaderboard.
async fn leaderboard(
    rt: &dyn Runtime,
    job: &JobRecord,
    plan: &BatchPlan,
) -> anyhow::Result<Outcome> {
    let store = rt.store();
    let mut ranked: Vec<(Option<f64>, Value)> = Vec::new();
    let mut ended: Vec<Value> = Vec::new();
    let (mut succeeded, mut failed, mut cancelled) = (0, 0, 0);
    let mut pages = store.child_pages(&job.id, -1, 500);
    while let Some(page) = pages.next().await? {
        for child in page {
            let overrides = plan
                .overrides
                .get(child.index as usize)
                .cloned()
                .unwrap_or(Value::Null);
            let mut row = json!({
                "job_id": child.id,
                "index": child.index,
                "variant": overrides,
                "status": child.status,
            });
            match (child.status, child.body) {
                (crate::jobs::JobStatus::Succeeded, Some(body)) => {
                    succeeded += 1;
                    let metrics = &body["metrics"];
                    let mut shown = Map::new();
                    for key in KEY_METRICS.iter().copied().chain([plan.rank_by.as_str()]) {
                        shown.insert(
                            key.to_string(),
                            metrics.get(key).cloned().unwrap_or(Value::Null),
                        );
                    }
                    let score = metrics.get(&plan.rank_by).and_then(Value::as_f64);
                    row["metrics"] = Value::Object(shown);
                    row["score"] = json!(score);
                    ranked.push((score, row));
                }
                (status, _) => {
                    if status == crate::jobs::JobStatus::Cancelled {
                        cancelled += 1;
                    } else {
                        failed += 1;
                    }
                    row["error"] = json!(child.error);
                    ended.push(row);
                }
            }
        }
    }
    // Ranked by the metric; children without it (no trades, NaN) after those
    // with it; ties keep the variants' order.
    ranked.sort_by(|(a, ra), (b, rb)| {
        let by_score = match (a, b) {
            (Some(a), Some(b)) => match plan.order {
                Order::Desc => b.total_cmp(a),
                Order::Asc => a.total_cmp(b),
            },
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => std::cmp::Ordering::Equal,
        };
        by_score.then(ra["index"].as_i64().cmp(&rb["index"].as_i64()))
    });
    let mut rows: Vec<Value> = Vec::with_capacity(ranked.len() + ended.len());
    for (rank, (_, mut row)) in ranked.into_iter().enumerate() {
        row["rank"] = json!(rank + 1);
        rows.push(row);
    }
    rows.extend(ended);
    let total = rows.len() as i64;
    let best = rows.first().filter(|r| r["rank"].is_number()).cloned();
    let summary = json!({
        "total": total, "succeeded": succeeded, "failed": failed, "cancelled": cancelled,
        "rank_by": plan.rank_by,
        "best_job_id": best.as_ref().map(|b| b["job_id"].clone()),
        "best_score": best.as_ref().map(|b| b["score"].clone()),
    });
    let result = BatchResult {
        total,
        succeeded,
        failed,
        cancelled,
        rank_by: plan.rank_by.clone(),
        order: plan.order,
        best,
        provenance: json!({
            "strategies": plan.sources.iter().map(|s| json!({"name": s.name, "sha256": s.sha256})).collect::<Vec<_>>(),
            "variants": plan.variants.len(),
        }),
    };
    Ok(Outcome::Succeeded {
        result: Box::new(JobResult {
            body: serde_json::to_value(result).expect("results serialize"),
            parts: vec![("leaderboard".into(), rows)],
        }),
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(value: Value) -> BatchRequest {
        serde_json::from_value(value).unwrap()
    }

    fn base() -> Value {
        json!({"strategy": "SmaCross", "exchange": "Binance Perpetual Futures", "symbol": "BTC-USDT",
               "timeframe": "1h", "start_date": "2023-02-01", "end_date": "2023-03-01",
               "hyperparameters": {"slow": 50}})
    }

    #[test]
    fn a_fitness_name_as_rank_by_points_at_its_metric() {
        assert!(fitness_hint("sharpe").contains("rank by 'sharpe_ratio'"));
        assert!(fitness_hint("Smart_Sortino").contains("rank by 'smart_sortino'"));
        assert_eq!(fitness_hint("profit"), "");
        assert_eq!(fitness_hint("net_profit_percentage"), "");
    }

    #[test]
    fn grid_product_and_explicit_variants() {
        let r = request(json!({"base": base(),
            "grid": {"hyperparameters": {"fast": [5, 10, 20]}, "timeframes": ["1h", "4h"]},
            "variants": [{"symbol": "ETH-USDT", "hyperparameters": {"fast": 7}}]}));
        let (variants, overrides) = expand(&r).unwrap();
        assert_eq!(variants.len(), 7);
        assert_eq!(
            overrides[0],
            json!({"hyperparameters": {"fast": 5}, "timeframe": "1h"})
        );
        assert_eq!(
            overrides[5],
            json!({"hyperparameters": {"fast": 20}, "timeframe": "4h"})
        );
        // hyperparameters merge name by name onto the base's
        assert_eq!(
            variants[6]["hyperparameters"],
            json!({"slow": 50, "fast": 7})
        );
        assert_eq!(variants[6]["symbol"], "ETH-USDT");
    }

    #[test]
    fn too_many_and_empty() {
        let values: Vec<i64> = (0..101).collect();
        let r = request(
            json!({"base": base(), "grid": {"hyperparameters": {"a": values, "b": values}}}),
        );
        assert_eq!(expand(&r).unwrap_err().body.code, "too_many_variants");
        let r = request(json!({"base": base()}));
        assert_eq!(expand(&r).unwrap_err().body.code, "empty_batch");
        let r = request(json!({"base": base(), "grid": {"symbols": []}}));
        assert_eq!(expand(&r).unwrap_err().body.code, "invalid_grid");
    }
}
