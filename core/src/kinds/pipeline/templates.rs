//! Built-in pipeline templates: a research plan filled with the caller's
//! strategy, market, dates and seed. Each expands into ordinary steps (the
//! stored plan shows them), so a template pipeline runs, resumes and reports
//! exactly like one written by hand.
//!
//! - `evaluate_strategy`: import missing candles → validate → baseline
//!   backtest → optimize (gate: PBO) and walk-forward (gate: efficiency) →
//!   the best parameters' backtest → Monte Carlo on its trades, a stationary
//!   bootstrap so the total return varies (gate: the probability of a loss)
//!   → report.
//! - `screen_pairs`: screen symbols for cointegration on an in-sample range
//!   (gate: at least one cointegrated pair) → backtest the best pair out of
//!   sample with the screen's hedge ratio → Monte Carlo on its trades.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::StepSpec;
use crate::error::ApiError;
use crate::jesse::{is_import_exchange, timeframe_minutes};
use crate::kinds::read_request;
use crate::planner::Planner;
use crate::time::{parse_day, to_rfc3339};

const DAY_MS: i64 = 86_400_000;
/// Seeds JSON clients keep exact (2^53 − 1).
const MAX_SEED: u64 = (1 << 53) - 1;

pub struct Template {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub params: fn() -> Value,
    pub example: fn() -> Value,
}

pub static TEMPLATES: &[Template] = &[
    Template {
        name: "evaluate_strategy",
        title: "Evaluate a strategy",
        description: "Imports the candles the range lacks (when the exchange can be imported from), validates the \
strategy in a runner, runs a baseline backtest with its default hyperparameters, optimizes it (gate: PBO ≤ max_pbo) \
while a walk-forward analysis re-optimizes window by window (gate: walk-forward efficiency ≥ min_efficiency), \
backtests the best parameters on the whole range and runs a trade Monte Carlo on that backtest, a stationary bootstrap \
of its trade returns (gate: probability of a loss ≤ max_loss_probability; a statistic that could not be computed \
fails its gate). The verdict is passed only when every gate holds.",
        params: || serde_json::to_value(schemars::schema_for!(EvaluateParams)).unwrap_or_default(),
        example: || {
            json!({"strategy": "SmaCross", "exchange": "Binance Perpetual Futures", "symbol": "BTC-USDT",
                   "timeframe": "1h", "start_date": "2023-03-01", "end_date": "2023-09-01",
                   "trials": 40, "seed": 7})
        },
    },
    Template {
        name: "screen_pairs",
        title: "Screen and test pairs",
        description: "Screens every pair of the symbols for cointegration on the in-sample part of the range (gate: \
at least one cointegrated pair), backtests the best pair with PairsTrading on the out-of-sample part only (the \
screen's OLS hedge ratio, fixed, so nothing is looked up from the future) and runs a trade Monte Carlo (stationary \
bootstrap of the trade returns) on that backtest.",
        params: || serde_json::to_value(schemars::schema_for!(PairsParams)).unwrap_or_default(),
        example: || {
            json!({"exchange": "Binance Perpetual Futures", "symbols": ["BTC-USDT", "ETH-USDT", "SOL-USDT"],
                   "timeframe": "1h", "start_date": "2024-01-01", "end_date": "2024-04-01",
                   "test_days": 30, "seed": 7})
        },
    },
];

pub fn find(name: &str) -> Option<&'static Template> {
    TEMPLATES.iter().find(|t| t.name == name)
}

/// What a template became.
pub struct Expanded {
    pub title: String,
    pub steps: Vec<StepSpec>,
    /// The parameters with defaults filled in (the seed drawn when absent).
    pub params: Value,
    pub notes: Vec<String>,
}

/// Parameters of `evaluate_strategy`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvaluateParams {
    pub strategy: String,
    pub exchange: String,
    pub symbol: String,
    pub timeframe: String,
    /// First day, YYYY-MM-DD (UTC), inclusive.
    pub start_date: String,
    /// Last day, exclusive.
    pub end_date: String,
    /// The optimization's search space (as `optimize` takes it); default: every declared hyperparameter over
    /// its declared range.
    #[serde(default)]
    #[schemars(with = "Option<Map<String, Value>>")]
    pub hyperparameters: Option<Value>,
    /// Trials of the optimization and of each walk-forward window's (default 40).
    #[serde(default)]
    pub trials: Option<u32>,
    /// `tpe` (default), `random` or `grid`.
    #[serde(default)]
    pub sampler: Option<String>,
    /// Jesse's fitness name or a metric (default sharpe).
    #[serde(default)]
    pub objective: Option<String>,
    /// Seed of every random step: optimization, walk-forward, Monte Carlo (default: drawn, stored).
    #[serde(default)]
    pub seed: Option<u64>,
    /// Walk-forward in-sample days (default half the range).
    #[serde(default)]
    pub train_days: Option<u32>,
    /// Walk-forward out-of-sample days per window (default: the rest of the range in 4 windows).
    #[serde(default)]
    pub test_days: Option<u32>,
    /// Monte Carlo scenarios (default 1000).
    #[serde(default)]
    pub scenarios: Option<u32>,
    /// Gate: the optimization's probability of backtest overfitting at most this (default 0.5).
    #[serde(default)]
    pub max_pbo: Option<f64>,
    /// Gate: walk-forward efficiency at least this (default 0.5, Pardo's threshold): Pardo's ratio of the
    /// linear annual rates of profit out of sample ÷ in sample (`walk_forward.efficiency.value`).
    #[serde(default)]
    pub min_efficiency: Option<f64>,
    /// Gate: the Monte Carlo probability of a loss (share of stationary-bootstrap scenarios of the best
    /// backtest's trade returns ending below the start) at most this (default 0.5).
    #[serde(default)]
    pub max_loss_probability: Option<f64>,
    /// Backtest settings for every step: starting_balance, fee, type, leverage, leverage_mode, warm_up_candles.
    #[serde(default)]
    #[schemars(with = "Option<Map<String, Value>>")]
    pub config: Option<Value>,
    /// Import candles the range lacks first (default true; only for exchanges Jesse imports from).
    #[serde(default)]
    pub import: Option<bool>,
    /// Jesse's fast mode for the backtests a verdict is read from: `baseline`, `best` (and so the Monte Carlo
    /// on its trades) and each walk-forward window's out-of-sample backtest (default false: fast mode changes
    /// metrics). The optimization trials keep Jesse's default (fast mode on).
    #[serde(default)]
    pub fast_mode: Option<bool>,
}

/// Parameters of `screen_pairs`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PairsParams {
    pub exchange: String,
    /// 2 to 50 symbols.
    pub symbols: Vec<String>,
    pub timeframe: String,
    pub start_date: String,
    pub end_date: String,
    /// Days at the end of the range kept out of the screen, for the backtest (default a third of the range).
    #[serde(default)]
    pub test_days: Option<u32>,
    /// Engle–Granger significance (default 0.05).
    #[serde(default)]
    pub significance: Option<f64>,
    /// PairsTrading hyperparameters besides the hedge ratio (entry_z, exit_z, lookback, risk).
    #[serde(default)]
    #[schemars(with = "Option<Map<String, Value>>")]
    pub hyperparameters: Option<Value>,
    /// Monte Carlo scenarios (default 1000).
    #[serde(default)]
    pub scenarios: Option<u32>,
    /// Seed of the Monte Carlo (default: drawn, stored).
    #[serde(default)]
    pub seed: Option<u64>,
}

const CONFIG_KEYS: &[&str] = &[
    "starting_balance",
    "fee",
    "type",
    "leverage",
    "leverage_mode",
    "warm_up_candles",
];

fn invalid(code: &str, message: impl Into<String>, field: &str) -> ApiError {
    ApiError::invalid(code, message).with_details(json!({"field": format!("params.{field}")}))
}

fn seed(given: Option<u64>) -> Result<u64, ApiError> {
    match given {
        Some(s) if s > MAX_SEED => Err(invalid(
            "invalid_number",
            format!("seed must be from 0 to {MAX_SEED}"),
            "seed",
        )),
        Some(s) => Ok(s),
        None => Ok(u64::from(rand::random::<u32>())),
    }
}

fn unit_interval(value: Option<f64>, default: f64, field: &str) -> Result<f64, ApiError> {
    let v = value.unwrap_or(default);
    if !(0.0..=1.0).contains(&v) {
        return Err(invalid(
            "invalid_number",
            format!("{field} must be from 0 to 1, not {v}"),
            field,
        ));
    }
    Ok(v)
}

fn days(start: &str, end: &str) -> Result<(i64, i64), ApiError> {
    let start_ms = parse_day(start).map_err(|e| invalid("invalid_date", e, "start_date"))?;
    let end_ms = parse_day(end).map_err(|e| invalid("invalid_date", e, "end_date"))?;
    if end_ms <= start_ms {
        return Err(invalid(
            "invalid_date_range",
            "end_date must be after start_date",
            "end_date",
        ));
    }
    Ok((start_ms, end_ms))
}

fn day(ms: i64) -> String {
    to_rfc3339(ms)[..10].to_string()
}

fn step(id: &str, kind: &str, input: Value, needs: &[&str], gate: Option<String>) -> StepSpec {
    StepSpec {
        id: id.into(),
        kind: kind.into(),
        input,
        needs: needs.iter().map(|s| s.to_string()).collect(),
        gate: gate.map(super::GateSpec::One),
    }
}

/// Expands template `name` with `params`.
pub async fn expand(planner: &Planner, name: &str, params: Value) -> Result<Expanded, ApiError> {
    let Some(template) = find(name) else {
        return Err(ApiError::invalid(
            "unknown_template",
            format!("there is no pipeline template '{name}'"),
        )
        .with_details(json!({"field": "template",
                             "available": TEMPLATES.iter().map(|t| t.name).collect::<Vec<_>>()})));
    };
    match template.name {
        "evaluate_strategy" => evaluate(planner, read_params(params)?).await,
        _ => pairs(read_params(params)?),
    }
}

/// Template parameters are read like a request, with `params.` in front of
/// the field an error names.
fn read_params<T: serde::de::DeserializeOwned>(params: Value) -> Result<T, ApiError> {
    read_request(params).map_err(|mut e| {
        e.body.message = e
            .body
            .message
            .replace("the request body", "the template's params");
        if let Some(field) = e.body.details.get_mut("field") {
            let name = field.as_str().unwrap_or(".").to_string();
            *field = json!(if name == "." {
                "params".to_string()
            } else {
                format!("params.{name}")
            });
        }
        e
    })
}

async fn evaluate(planner: &Planner, p: EvaluateParams) -> Result<Expanded, ApiError> {
    let (start_ms, end_ms) = days(&p.start_date, &p.end_date)?;
    let total_days = (end_ms - start_ms) / DAY_MS;
    let seed = seed(p.seed)?;
    let max_pbo = unit_interval(p.max_pbo, 0.5, "max_pbo")?;
    let min_efficiency = p.min_efficiency.unwrap_or(0.5);
    if !min_efficiency.is_finite() {
        return Err(invalid(
            "invalid_number",
            "min_efficiency must be a finite number",
            "min_efficiency",
        ));
    }
    let max_loss = unit_interval(p.max_loss_probability, 0.5, "max_loss_probability")?;
    let config = match &p.config {
        None => Map::new(),
        Some(Value::Object(c)) => {
            if let Some(bad) = c.keys().find(|k| !CONFIG_KEYS.contains(&k.as_str())) {
                return Err(invalid(
                    "invalid_request",
                    format!(
                        "config.{bad} is not a backtest setting; use {}",
                        CONFIG_KEYS.join(", ")
                    ),
                    "config",
                ));
            }
            c.clone()
        }
        Some(_) => {
            return Err(invalid(
                "invalid_request",
                "config must be an object",
                "config",
            ));
        }
    };
    let train_days = p.train_days.map_or(total_days / 2, i64::from);
    let test_days = p
        .test_days
        .map_or(((total_days - train_days) / 4).max(1), i64::from);
    let trials = p.trials.unwrap_or(40);
    let mut market = json!({
        "strategy": p.strategy, "exchange": p.exchange, "symbol": p.symbol, "timeframe": p.timeframe,
        "start_date": p.start_date, "end_date": p.end_date,
    });
    for (k, v) in &config {
        market[k] = v.clone();
    }
    let mut study = market.clone();
    study["trials"] = json!(trials);
    study["seed"] = json!(seed);
    if let Some(sampler) = &p.sampler {
        study["sampler"] = json!(sampler);
    }
    if let Some(objective) = &p.objective {
        study["objective"] = json!(objective);
    }
    if let Some(space) = &p.hyperparameters {
        study["hyperparameters"] = space.clone();
    }
    let mut walk = study.clone();
    walk["train_days"] = json!(train_days);
    walk["test_days"] = json!(test_days);
    let fast_mode = p.fast_mode.unwrap_or(false);
    walk["fast_mode_out_of_sample"] = json!(fast_mode);
    let mut baseline = market.clone();
    baseline["fast_mode"] = json!(fast_mode);
    let mut best = baseline.clone();
    best["hyperparameters"] = json!("${optimize.best.params}");

    let mut steps = Vec::new();
    let mut notes = Vec::new();
    let mut after: Vec<&str> = vec!["validate"];
    if p.import.unwrap_or(true) {
        if is_import_exchange(&p.exchange) {
            let warm_up = config
                .get("warm_up_candles")
                .and_then(Value::as_i64)
                .unwrap_or(240)
                .clamp(0, 10_000); // bounded before the arithmetic; planning refuses the rest
            let minutes = timeframe_minutes(&p.timeframe).unwrap_or(1);
            let from = start_ms - (warm_up * minutes * 60_000).div_euclid(DAY_MS) * DAY_MS - DAY_MS;
            let gaps = planner
                .store()
                .gaps(&p.exchange, &p.symbol, from, end_ms)
                .await?;
            if gaps.is_empty() {
                notes.push(format!(
                    "No import step: {} {} candles from {} to {} (warm-up included) are all stored.",
                    p.exchange,
                    p.symbol,
                    day(from),
                    p.end_date
                ));
            } else {
                let missing: i64 = gaps.iter().map(|g| g.minutes).sum();
                notes.push(format!(
                    "Import step: {missing} minutes of {} {} between {} and {} are not stored.",
                    p.exchange,
                    p.symbol,
                    day(from),
                    p.end_date
                ));
                steps.push(step(
                    "import",
                    "candle_import",
                    json!({"exchange": p.exchange, "symbol": p.symbol, "start_date": day(from),
                           "end_date": p.end_date}),
                    &[],
                    None,
                ));
                after.push("import");
            }
        } else {
            notes.push(format!(
                "No import step: Jesse cannot import from '{}'; the candles must be stored.",
                p.exchange
            ));
        }
    }
    steps.push(step(
        "validate",
        "strategy_validation",
        json!({"strategy": p.strategy}),
        &[],
        Some("validate.valid == true".into()),
    ));
    steps.push(step("baseline", "backtest", baseline, &after, None));
    steps.push(step(
        "optimize",
        "optimization",
        study,
        &after,
        Some(format!("optimize.pbo <= {max_pbo}")),
    ));
    steps.push(step(
        "walk_forward",
        "walk_forward",
        walk,
        &after,
        Some(format!("walk_forward.efficiency >= {min_efficiency}")),
    ));
    steps.push(step("best", "backtest", best, &["optimize"], None));
    // The stationary bootstrap lets the total return vary (a shuffle cannot),
    // so the loss gate measures something the backtest alone does not say.
    let mut mc = json!({"mode": "trades", "source": "${best.job_id}", "method": "stationary_bootstrap",
                        "seed": seed});
    if let Some(n) = p.scenarios {
        mc["scenarios"] = json!(n);
    }
    steps.push(step(
        "monte_carlo",
        "monte_carlo",
        mc,
        &[],
        Some(format!("monte_carlo.probability_of_loss <= {max_loss}")),
    ));
    let mut filled = serde_json::to_value(&p).expect("params serialize");
    filled["seed"] = json!(seed);
    filled["train_days"] = json!(train_days);
    filled["test_days"] = json!(test_days);
    filled["trials"] = json!(trials);
    filled["max_pbo"] = json!(max_pbo);
    filled["min_efficiency"] = json!(min_efficiency);
    filled["fast_mode"] = json!(fast_mode);
    filled["max_loss_probability"] = json!(max_loss);
    Ok(Expanded {
        title: format!(
            "Evaluate {} on {} {} {}",
            p.strategy, p.exchange, p.symbol, p.timeframe
        ),
        steps,
        params: strip_nulls(filled),
        notes,
    })
}

fn pairs(p: PairsParams) -> Result<Expanded, ApiError> {
    let (start_ms, end_ms) = days(&p.start_date, &p.end_date)?;
    let total_days = (end_ms - start_ms) / DAY_MS;
    let test_days = p.test_days.map_or(total_days / 3, i64::from);
    if test_days < 1 || test_days >= total_days {
        return Err(invalid(
            "invalid_number",
            format!(
                "test_days must leave days for both the screen and the backtest (1 to {})",
                total_days - 1
            ),
            "test_days",
        ));
    }
    let seed = seed(p.seed)?;
    let split = day(end_ms - test_days * DAY_MS);
    let mut screen = json!({"exchange": p.exchange, "symbols": p.symbols, "timeframe": p.timeframe,
                            "start_date": p.start_date, "end_date": split});
    if let Some(s) = p.significance {
        screen["significance"] = json!(s);
    }
    let mut trade = json!({"screen_job_id": "${screen.job_id}", "pair_rank": 1,
                           "start_date": split, "end_date": p.end_date});
    if let Some(h) = &p.hyperparameters {
        trade["hyperparameters"] = h.clone();
    }
    let mut mc = json!({"mode": "trades", "source": "${pair_backtest.backtest_job_id}",
                        "method": "stationary_bootstrap", "seed": seed});
    if let Some(n) = p.scenarios {
        mc["scenarios"] = json!(n);
    }
    let steps = vec![
        step(
            "screen",
            "pairs_screen",
            screen,
            &[],
            Some("screen.cointegrated >= 1".into()),
        ),
        step("pair_backtest", "pairs_backtest", trade, &[], None),
        step("monte_carlo", "monte_carlo", mc, &[], None),
    ];
    let mut filled = serde_json::to_value(&p).expect("params serialize");
    filled["seed"] = json!(seed);
    filled["test_days"] = json!(test_days);
    Ok(Expanded {
        title: format!(
            "Screen and test pairs of {} on {}",
            p.symbols.join(", "),
            p.exchange
        ),
        steps,
        params: strip_nulls(filled),
        notes: vec![format!(
            "The screen uses {} to {}; the pair is backtested on {} to {}, after it.",
            p.start_date, split, split, p.end_date
        )],
    })
}

fn strip_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            Value::Object(map.into_iter().filter(|(_, v)| !v.is_null()).collect())
        }
        other => other,
    }
}

/// `GET /v1/pipelines/templates`: every template with its parameters' schema and an example request.
pub fn catalog() -> Value {
    let templates: Vec<Value> = TEMPLATES
        .iter()
        .map(|t| {
            let schema = (t.params)();
            json!({
                "name": t.name,
                "title": t.title,
                "description": t.description,
                "params": schema,
                "example": {"template": t.name, "params": (t.example)()},
            })
        })
        .collect();
    json!({"templates": templates})
}
