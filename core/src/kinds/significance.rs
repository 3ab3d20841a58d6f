//! `significance_test`: Jesse's rule significance test
//! (`jesse.research.rule_significance_test`, a bootstrap test of whether a
//! strategy's mean daily return beats chance) in a runner, on stored candles,
//! seeded. Its p-value and simulated means equal a direct call with the same
//! seed (tested).

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{KindDef, Lane, Outcome, Runtime, Submit, read_plan, read_request};
use crate::error::ApiError;
use crate::jobs::{BacktestPlan, BacktestRequest};
use crate::planner::Planner;
use crate::store::JobRecord;

pub const MAX_SIMULATIONS: u32 = 100_000;

pub static KIND: KindDef = KindDef {
    name: "significance_test",
    description: "Jesse's rule significance test of a strategy on stored candles",
    lane: Lane::Runner,
    submit: Some(Submit {
        path: "/v1/significance-tests",
        tool: "significance_test",
        title: "Submit rule significance test",
        description: "Run Jesse's rule significance test (a bootstrap test of whether the strategy's mean return \
beats chance) on stored candles: the backtest request's fields (one route) plus `n_simulations` (default 2000), \
`seed` (default: drawn at submit and stored) and `bootstrap_mean_block_length` (default 10, in bars of the route's \
timeframe). Answers at once with the job_id; job_result gives Jesse's p_value (share of simulated means at or above \
the observed one; 0 means p < 1/n_simulations), observed_mean (mean next-bar log return of signal x detrended \
return), annualized_return, simulated_means and `reading`, which says what each number measured.",
        next: "job_result for the p-value and the simulated means",
        open_world: false,
    }),
    request_schema,
    result_schema: super::schema_of::<Map<String, Value>>,
    rows: None,
    plan,
    execute,
    parent: false,
};

/// The test's own fields (the rest of the request is a backtest's).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignificanceFields {
    /// Bootstrap simulations (default 2000).
    #[serde(default)]
    pub n_simulations: Option<u32>,
    /// Seed of the bootstrap (default: drawn at submit and stored).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Mean block length of the stationary bootstrap, in bars of the route's
    /// timeframe (default 10: ten 1h bars on a 1h route, not ten days).
    #[serde(default)]
    pub bootstrap_mean_block_length: Option<u32>,
}

const FIELDS: &[&str] = &["n_simulations", "seed", "bootstrap_mean_block_length"];

fn request_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = super::definition_of::<BacktestRequest>(generator);
    let fields = super::definition_of::<SignificanceFields>(generator);
    if let Some(props) = schema["properties"].as_object_mut() {
        for (name, s) in fields["properties"].as_object().into_iter().flatten() {
            props.insert(name.clone(), s.clone());
        }
    }
    schema["title"] = json!("SignificanceTestRequest");
    schemars::Schema::try_from(schema).expect("an object schema")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SignificancePlan {
    backtest: BacktestPlan,
    n_simulations: u32,
    seed: u64,
    bootstrap_mean_block_length: u32,
}

fn plan(planner: &Planner, request: Value) -> BoxFuture<'_, Result<Value, ApiError>> {
    Box::pin(async move {
        let Value::Object(mut body) = request else {
            return Err(ApiError::invalid(
                "invalid_request",
                "the request body must be a JSON object",
            ));
        };
        let mut own = Map::new();
        for name in FIELDS {
            if let Some(v) = body.remove(*name) {
                own.insert(name.to_string(), v);
            }
        }
        let fields: SignificanceFields = read_request(Value::Object(own))?;
        let backtest: BacktestRequest = read_request(Value::Object(body))?;
        let bad = |m: String, f: &str| {
            ApiError::invalid("invalid_number", m).with_details(json!({"field": f}))
        };
        let n = fields.n_simulations.unwrap_or(2000);
        if n == 0 || n > MAX_SIMULATIONS {
            return Err(bad(
                format!("n_simulations must be from 1 to {MAX_SIMULATIONS}"),
                "n_simulations",
            ));
        }
        let block = fields.bootstrap_mean_block_length.unwrap_or(10);
        if block == 0 || block > 10_000 {
            return Err(bad(
                "bootstrap_mean_block_length must be from 1 to 10000".into(),
                "bootstrap_mean_block_length",
            ));
        }
        if fields.seed.is_some_and(|s| s > u64::from(u32::MAX)) {
            return Err(bad(
                "seed must be from 0 to 4294967295 (numpy's range)".into(),
                "seed",
            ));
        }
        let plan = planner.plan_backtest(&backtest).await?;
        if plan.routes.len() != 1 {
            return Err(ApiError::invalid(
                "invalid_routes",
                "Jesse's rule significance test takes exactly one trading route",
            )
            .with_details(json!({"field": "routes"})));
        }
        let plan = SignificancePlan {
            backtest: plan,
            n_simulations: n,
            seed: fields
                .seed
                .unwrap_or_else(|| u64::from(rand::random::<u32>())),
            bootstrap_mean_block_length: block,
        };
        Ok(serde_json::to_value(plan).expect("plans serialize"))
    })
}

fn execute<'a>(rt: &'a dyn Runtime, job: &'a JobRecord) -> BoxFuture<'a, anyhow::Result<Outcome>> {
    Box::pin(async move {
        let plan: SignificancePlan = match read_plan(job) {
            Ok(plan) => plan,
            Err(outcome) => return Ok(outcome),
        };
        let extra = json!({
            "n_simulations": plan.n_simulations,
            "random_seed": plan.seed,
            "bootstrap_mean_block_length": plan.bootstrap_mean_block_length,
        });
        let outcome = rt
            .run_jesse(job, &plan.backtest, "significance_test", &extra)
            .await?;
        Ok(match outcome {
            Outcome::Succeeded { mut result, .. } => {
                result.body["seed"] = json!(plan.seed);
                let timeframe = plan.backtest.routes[0].timeframe.clone();
                result.body["reading"] = reading(
                    result.body["p_value"].as_f64(),
                    plan.n_simulations,
                    plan.bootstrap_mean_block_length,
                    &timeframe,
                );
                let summary = json!({
                    "p_value": result.body["p_value"],
                    "observed_mean": result.body["observed_mean"],
                    "n_simulations": plan.n_simulations,
                    "seed": plan.seed,
                    "p_value_upper_bound": result.body["reading"]["p_value_upper_bound"],
                });
                Outcome::Succeeded { result, summary }
            }
            other => other,
        })
    })
}

/// What the test's numbers measured, in words a reader can check against
/// Jesse's definition (`jesse.research.rule_significance_test` 3.5.3): the
/// statistic, the bootstrap's block unit, and the resolution of the p-value.
/// Jesse counts the share of simulated means at or above the observed one
/// without the +1 of a permutation p-value, so 0 is possible and means only
/// that no simulation reached the observed mean: p < 1/n_simulations.
pub fn reading(
    p_value: Option<f64>,
    n_simulations: u32,
    block_bars: u32,
    timeframe: &str,
) -> Value {
    let resolution = 1.0 / f64::from(n_simulations.max(1));
    let (bound, p_text) = match p_value {
        Some(0.0) => (
            Some(resolution),
            format!(
                "0: none of the {n_simulations} simulations reached the observed mean, so p < {resolution} (1/n_simulations); it is not evidence of p = 0"
            ),
        ),
        Some(p) => (
            None,
            format!(
                "{p}: the share of the {n_simulations} simulated means at or above the observed mean (Jesse's definition, no +1 correction; resolution {resolution})"
            ),
        ),
        None => (None, "not computed".to_string()),
    };
    json!({
        "statistic": "observed_mean: the mean over the route's bars of signal x next-bar detrended log return, where signal is +1 when should_long(), -1 when should_short(), else 0 at each completed bar (a signal-only run: no orders), and the detrended return is the bar's log return minus the mean log return of the range",
        "null_hypothesis": "H0: the rule's expected next-bar detrended return is not positive; simulated means come from the rule returns centred on observed_mean, resampled by a stationary bootstrap (geometric block lengths)",
        "block_length": format!("{block_bars} bars of {timeframe} (mean block length of the stationary bootstrap)"),
        "p_value": p_text,
        "p_value_upper_bound": bound,
    })
}

#[cfg(test)]
mod tests {
    use super::reading;

    #[test]
    fn a_zero_p_value_reads_as_below_the_resolution() {
        let r = reading(Some(0.0), 2000, 10, "1h");
        assert_eq!(r["p_value_upper_bound"], 0.0005);
        assert!(r["p_value"].as_str().unwrap().contains("p < 0.0005"));
        assert_eq!(
            r["block_length"],
            "10 bars of 1h (mean block length of the stationary bootstrap)"
        );
        let r = reading(Some(0.25), 400, 3, "4h");
        assert!(r["p_value_upper_bound"].is_null());
        assert!(
            r["p_value"]
                .as_str()
                .unwrap()
                .starts_with("0.25: the share of the 400")
        );
    }
}
