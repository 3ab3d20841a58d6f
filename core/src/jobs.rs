//! Job vocabulary shared by producer (API) and consumer (worker): the one
//! status set, the backtest request as users send it, and the validated plan the
//! worker executes. The queue payload carries only the job id; everything else is
//! read from the store, so a job's definition has one source of truth.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: &[JobStatus] = &[
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.as_str() == value)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

/// What travels through the queue: a pointer to the job row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueuedJob {
    pub job_id: String,
    /// The kind's name (see `kinds::REGISTRY`).
    pub kind: String,
    /// A parent's child: waits behind jobs users submitted themselves.
    #[serde(default)]
    pub child: bool,
}

fn default_balance() -> f64 {
    10_000.0
}
fn default_fee() -> f64 {
    0.001
}
fn default_type() -> String {
    "futures".into()
}
fn default_leverage() -> f64 {
    1.0
}
fn default_leverage_mode() -> String {
    "cross".into()
}
fn default_warm_up() -> i64 {
    240
}

/// One trading route of a multi-route backtest; the exchange is the request's.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Strategy name: a folder `<strategies dir>/<Name>/__init__.py`.
    pub strategy: String,
    /// Symbol in Jesse's form, e.g. `BTC-USDT`.
    pub symbol: String,
    /// Trading timeframe, e.g. `1h`.
    pub timeframe: String,
}

/// An extra candle feed a strategy can read but does not trade.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DataRouteSpec {
    pub symbol: String,
    pub timeframe: String,
}

/// A backtest as users submit it (REST body and MCP `backtest` arguments).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BacktestRequest {
    /// Strategy name (folder in the strategies directory). Ignored when `routes` is given.
    #[serde(default)]
    pub strategy: Option<String>,
    /// Exchange name exactly as Jesse spells it, e.g. `Binance Perpetual Futures`.
    pub exchange: String,
    /// Symbol, e.g. `BTC-USDT`. Ignored when `routes` is given.
    #[serde(default)]
    pub symbol: Option<String>,
    /// Timeframe, e.g. `1h`. Ignored when `routes` is given.
    #[serde(default)]
    pub timeframe: Option<String>,
    /// First day, `YYYY-MM-DD` (UTC), inclusive from 00:00.
    pub start_date: String,
    /// Last day, `YYYY-MM-DD` (UTC), exclusive: the last candle is the minute before it.
    pub end_date: String,
    #[serde(default = "default_balance")]
    pub starting_balance: f64,
    /// Fee rate per trade, e.g. 0.001 for 0.1 %.
    #[serde(default = "default_fee")]
    pub fee: f64,
    /// `futures` or `spot`.
    #[serde(default = "default_type", rename = "type")]
    pub exchange_type: String,
    /// Futures leverage (1..=125).
    #[serde(default = "default_leverage")]
    pub leverage: f64,
    /// `cross` or `isolated`.
    #[serde(default = "default_leverage_mode")]
    pub leverage_mode: String,
    /// Candles of the largest timeframe loaded before `start_date` for indicators.
    #[serde(default = "default_warm_up")]
    pub warm_up_candles: i64,
    /// Overrides for the strategy's `hyperparameters()` defaults.
    #[serde(default)]
    pub hyperparameters: Option<Map<String, Value>>,
    /// Jesse's fast mode (same results for most strategies, several times faster).
    #[serde(default)]
    pub fast_mode: bool,
    /// Keep the list of closed trades in the result.
    #[serde(default)]
    pub include_trades: bool,
    /// Compute and keep the daily equity curve.
    #[serde(default)]
    pub include_equity_curve: bool,
    /// Several trading routes on the same exchange (replaces strategy/symbol/timeframe).
    #[serde(default)]
    pub routes: Option<Vec<RouteSpec>>,
    /// Extra candle feeds for the strategies.
    #[serde(default)]
    pub data_routes: Option<Vec<DataRouteSpec>>,
    /// Run even if stored candles have gaps in the range (Jesse replays the minutes
    /// it has); the gap report is attached to the result. Default: refuse with 422.
    #[serde(default)]
    pub allow_gaps: bool,
}

/// A validated backtest, stored as the job's params and executed by the worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BacktestPlan {
    pub exchange: String,
    pub routes: Vec<RouteSpec>,
    pub data_routes: Vec<DataRouteSpec>,
    /// Jesse's `config` argument, exactly as the worker passes it.
    pub config: Value,
    /// First trading minute (inclusive), ms.
    pub start_ms: i64,
    /// First minute after the range (exclusive), ms.
    pub end_ms: i64,
    /// 1m rows needed before `start_ms` for warm-up.
    pub warmup_minutes: i64,
    /// Distinct symbols whose 1m candles the run needs.
    pub symbols: Vec<String>,
    pub hyperparameters: Option<Map<String, Value>>,
    pub fast_mode: bool,
    pub include_trades: bool,
    pub include_equity_curve: bool,
    /// The strategies' sources as validated at submit: the job runs exactly these,
    /// whatever happens to the files meanwhile.
    pub strategies: Vec<StrategySource>,
    /// With `allow_gaps`: the missing runs per series at submit (null otherwise).
    #[serde(default)]
    pub gap_report: Option<Value>,
    /// A Monte Carlo scenario: the candles go through this Jesse candle
    /// pipeline (`jesse.candle_pipelines`) before the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candles_pipeline: Option<CandlesPipeline>,
}

/// One of Jesse's candle pipelines with its arguments, seeded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CandlesPipeline {
    /// The class in `jesse.candle_pipelines`, e.g. `MovingBlockBootstrapCandlesPipeline`.
    pub class: String,
    /// Its keyword arguments (`batch_size` included).
    pub kwargs: Map<String, Value>,
    /// Seeds numpy's global generator before the run (the Gaussian pipelines
    /// draw from it; Jesse's own Monte Carlo leaves it unseeded).
    #[serde(default)]
    pub numpy_seed: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StrategySource {
    pub name: String,
    pub sha256: String,
    pub source: String,
}

impl BacktestPlan {
    /// First 1m timestamp that must be stored (warm-up included).
    pub fn load_start_ms(&self) -> i64 {
        self.start_ms - self.warmup_minutes * crate::time::MINUTE_MS
    }
}

/// A strategy source to validate deeply: the exact text, so what is checked is
/// what was submitted even if the file changes meanwhile.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ValidationPlan {
    pub name: String,
    pub sha256: String,
    pub source: String,
}

/// A candle import: `[start_ms, end_ms)` of one series; only minutes not yet
/// stored are fetched.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImportPlan {
    pub exchange: String,
    pub symbol: String,
    pub start_ms: i64,
    pub end_ms: i64,
}

/// A new job id: a ULID, strictly increasing within this process even for jobs
/// created in the same millisecond, so "newest first" listings keep submit order.
pub fn new_job_id() -> String {
    static GENERATOR: std::sync::Mutex<Option<ulid::Generator>> = std::sync::Mutex::new(None);
    let mut generator = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
    let generator = generator.get_or_insert_with(ulid::Generator::new);
    // Overflow needs 2^80 ids in one millisecond; fall back to a fresh ULID.
    generator
        .generate()
        .unwrap_or_else(|_| ulid::Ulid::generate())
        .to_string()
}
