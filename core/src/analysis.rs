//! Analysis of one backtest result and comparison of several: pure functions
//! over what a backtest job stores, i.e. Jesse's daily equity curve (its
//! `Portfolio` series), Jesse's metrics, the closed trades and the provenance.
//!
//! Owns: reading the curve into dated samples, daily returns, drawdown periods,
//! monthly and yearly returns, the rolling Sharpe ratio, the return
//! distribution with historical VaR/CVaR, the probabilistic Sharpe ratio,
//! exposure and time in market, and the alignment and correlation of several
//! curves. The moments and the PSR are `overfit`'s.
//!
//! Conventions, chosen to agree with Jesse's own metrics (tested: the curve's
//! annualized Sharpe is Jesse's `sharpe_ratio`, its worst drawdown Jesse's
//! `max_drawdown`): returns are the curve's `pct_change`, one per daily sample;
//! Sharpe ratios are mean / sample std (ddof 1) with no risk-free rate,
//! annualized by √365; percentages are percent (−12.5 means −12.5 %).
//!
//! Must not: do I/O, read the store, or judge a job's status (the service does).
//! Golden values in the tests come from `ops/goldens/analysis_reference.py`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, NaiveDate};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::overfit;
use crate::time::{DAY_MS, MINUTE_MS};

/// Days in the rolling Sharpe window.
pub const ROLLING_WINDOW: usize = 30;
/// Periods per year of daily returns (crypto trades every day; Jesse's `annualization`).
pub const PERIODS_PER_YEAR: f64 = 365.0;
/// How many of the worst drawdown periods an analysis lists.
pub const TOP_DRAWDOWNS: usize = 5;

/// One sample of Jesse's daily equity curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EquityPoint {
    /// When Jesse sampled the balance, ms since the epoch.
    pub time_ms: i64,
    /// The balance (wallet plus open positions' PnL), in the quote currency.
    pub value: f64,
}

impl EquityPoint {
    /// The day this sample closes; see [`close_day`].
    pub fn day(&self) -> NaiveDate {
        close_day(self.time_ms)
    }
}

/// The day whose closing balance a sample holds. Jesse samples the balance on
/// the first 1m candle of each UTC day (stamped 00:01), and the starting and
/// final balances at 00:00 of the first and the end date: each is the balance
/// at the end of the day before. So the starting balance is dated the day
/// before the backtest's first day, and each return is dated the day it was
/// earned on.
pub fn close_day(time_ms: i64) -> NaiveDate {
    DateTime::from_timestamp_millis(time_ms - MINUTE_MS - 1)
        .map(|t| t.date_naive())
        .unwrap_or_default()
}

fn day_string(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

/// The `Portfolio` series of a stored `equity_curve` (Jesse's list of
/// `{name, data: [{time (s), value, color}], color}`), in time order. None
/// when the curve is null (Jesse keeps none for a backtest without trades) or
/// has no such series; samples without a finite value are skipped.
pub fn portfolio_curve(equity_curve: &Value) -> Option<Vec<EquityPoint>> {
    let series = equity_curve.as_array()?;
    let portfolio = series
        .iter()
        .find(|s| s["name"] == "Portfolio")
        .or_else(|| (series.len() == 1).then(|| &series[0]))?;
    let mut points: Vec<EquityPoint> = portfolio["data"]
        .as_array()?
        .iter()
        .filter_map(|p| {
            let time = p["time"].as_f64()?;
            let value = p["value"].as_f64()?;
            (time.is_finite() && value.is_finite()).then(|| EquityPoint {
                time_ms: (time * 1000.0).round() as i64,
                value,
            })
        })
        .collect();
    points.sort_by_key(|p| p.time_ms);
    (!points.is_empty()).then_some(points)
}

/// A return earned on one day, as a fraction (0.01 = 1 %).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DailyReturn {
    pub day: NaiveDate,
    pub value: f64,
}

/// One return per sample after the first (pandas' `pct_change`), dated by the
/// day it closes. A sample after a zero balance has no defined return and is skipped.
pub fn daily_returns(curve: &[EquityPoint]) -> Vec<DailyReturn> {
    curve
        .windows(2)
        .filter(|w| w[0].value != 0.0)
        .map(|w| DailyReturn {
            day: w[1].day(),
            value: w[1].value / w[0].value - 1.0,
        })
        .collect()
}

/// Drawdown of each sample from the running peak, in percent (≤ 0).
pub fn drawdown_series(values: &[f64]) -> Vec<f64> {
    let mut peak = f64::NEG_INFINITY;
    values
        .iter()
        .map(|&v| {
            peak = peak.max(v);
            if peak > 0.0 {
                (v / peak - 1.0) * 100.0
            } else {
                0.0
            }
        })
        .collect()
}

/// One period under water: from a peak to the first close back at or above it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DrawdownPeriod {
    /// The worst close of the period relative to its peak, percent (negative,
    /// as Jesse's `max_drawdown`).
    pub depth_pct: f64,
    /// The peak the period started from: the last day that closed at it (YYYY-MM-DD).
    pub start: String,
    /// The day of the worst close.
    pub trough: String,
    /// The first day that closed at or above the peak again; null if none did
    /// before the backtest ended.
    pub recovery: Option<String>,
    /// Days from `start` to `recovery`, or to the last day when not recovered.
    pub duration_days: i64,
    /// Days from `start` to `trough`.
    pub days_to_trough: i64,
    /// Equity at the peak and at the trough (quote currency).
    pub peak_equity: f64,
    pub trough_equity: f64,
}

/// Every drawdown period of a curve, deepest first (ties: earlier first).
pub fn drawdown_periods(curve: &[EquityPoint]) -> Vec<DrawdownPeriod> {
    let mut periods = Vec::new();
    let Some(first) = curve.first() else {
        return periods;
    };
    let last_day = curve[curve.len() - 1].day();
    let mut peak = *first;
    let mut trough: Option<EquityPoint> = None;
    let close = |peak: EquityPoint, trough: EquityPoint, recovery: Option<NaiveDate>| {
        let end = recovery.unwrap_or(last_day);
        DrawdownPeriod {
            depth_pct: (trough.value / peak.value - 1.0) * 100.0,
            start: day_string(peak.day()),
            trough: day_string(trough.day()),
            recovery: recovery.map(day_string),
            duration_days: (end - peak.day()).num_days(),
            days_to_trough: (trough.day() - peak.day()).num_days(),
            peak_equity: peak.value,
            trough_equity: trough.value,
        }
    };
    for point in &curve[1..] {
        if point.value >= peak.value {
            if let Some(t) = trough.take() {
                periods.push(close(peak, t, Some(point.day())));
            }
            peak = *point;
        } else if trough.is_none_or(|t| point.value < t.value) {
            trough = Some(*point);
        }
    }
    if let Some(t) = trough {
        periods.push(close(peak, t, None));
    }
    periods.sort_by(|a, b| a.depth_pct.total_cmp(&b.depth_pct));
    periods
}

/// The compounded return of a calendar month or year.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PeriodReturn {
    /// `YYYY-MM` for a month, `YYYY` for a year.
    pub period: String,
    pub year: i32,
    /// 1..12 for a month; null for a year.
    pub month: Option<u32>,
    /// The daily returns of the period compounded, percent: the equity at the
    /// period's last close over the equity at the close before it.
    pub return_pct: f64,
    /// Daily returns in the period.
    pub days: usize,
}

fn period_returns(returns: &[DailyReturn], monthly: bool) -> Vec<PeriodReturn> {
    let mut periods: BTreeMap<(i32, u32), (f64, usize)> = BTreeMap::new();
    for r in returns {
        let key = (r.day.year(), if monthly { r.day.month() } else { 0 });
        let entry = periods.entry(key).or_insert((1.0, 0));
        entry.0 *= 1.0 + r.value;
        entry.1 += 1;
    }
    periods
        .into_iter()
        .map(|((year, month), (growth, days))| PeriodReturn {
            period: if monthly {
                format!("{year}-{month:02}")
            } else {
                format!("{year}")
            },
            year,
            month: monthly.then_some(month),
            return_pct: (growth - 1.0) * 100.0,
            days,
        })
        .collect()
}

/// Calendar months' compounded returns, in order. Unlike Jesse's monthly
/// chart (first to last sample within each month), the return between two
/// months belongs to the later one, so the months compound to the total return.
pub fn monthly_returns(returns: &[DailyReturn]) -> Vec<PeriodReturn> {
    period_returns(returns, true)
}

/// Calendar years' compounded returns, in order.
pub fn yearly_returns(returns: &[DailyReturn]) -> Vec<PeriodReturn> {
    period_returns(returns, false)
}

/// The annualized Sharpe ratio of the window ending on a day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RollingPoint {
    /// The window's last day (YYYY-MM-DD).
    pub date: String,
    /// Null when the window's returns do not vary.
    pub value: Option<f64>,
}

/// Sharpe ratio of each `window` consecutive daily returns, annualized by
/// √`periods_per_year` (pandas `rolling(window)` of mean / std(ddof=1)).
pub fn rolling_sharpe(
    returns: &[DailyReturn],
    window: usize,
    periods_per_year: f64,
) -> Vec<RollingPoint> {
    if window < 2 || returns.len() < window {
        return Vec::new();
    }
    let values: Vec<f64> = returns.iter().map(|r| r.value).collect();
    (window - 1..values.len())
        .map(|end| RollingPoint {
            date: day_string(returns[end].day),
            value: overfit::sharpe(&values[end + 1 - window..=end])
                .map(|s| s * periods_per_year.sqrt()),
        })
        .collect()
}

/// The `q` quantile (0..1) of sorted values, interpolated linearly between
/// the two nearest ranks (NumPy's default `percentile` method).
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let position = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (position.floor() as usize, position.ceil() as usize);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (position - lo as f64))
}

/// Historical value at risk and expected shortfall at `confidence` (e.g.
/// 0.95) of fractional returns: the (1 − confidence) quantile, and the mean
/// of the returns at or below it. Both are returns (negative for a loss).
pub fn historical_var_cvar(returns: &[f64], confidence: f64) -> Option<(f64, f64)> {
    let mut sorted: Vec<f64> = returns.iter().copied().filter(|r| r.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let var = quantile(&sorted, 1.0 - confidence)?;
    let tail: Vec<f64> = sorted.iter().copied().filter(|&r| r <= var).collect();
    Some((var, overfit::mean(&tail)))
}

/// Pearson correlation; None for fewer than 2 pairs or a series that does not vary.
pub fn correlation(xs: &[f64], ys: &[f64]) -> Option<f64> {
    if xs.len() != ys.len() || xs.len() < 2 {
        return None;
    }
    let (mx, my) = (overfit::mean(xs), overfit::mean(ys));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in xs.iter().zip(ys) {
        let (dx, dy) = (x - mx, y - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    let r = sxy / (sxx.sqrt() * syy.sqrt());
    (sxx > 0.0 && syy > 0.0 && r.is_finite()).then_some(r.clamp(-1.0, 1.0))
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// The distribution of the daily returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReturnDistribution {
    /// Daily returns (samples of the curve after the first).
    pub observations: usize,
    /// Mean and sample standard deviation (ddof 1), percent per day.
    pub mean_pct: Option<f64>,
    pub std_pct: Option<f64>,
    pub min_pct: Option<f64>,
    pub max_pct: Option<f64>,
    /// Sample skewness m3 / m2^1.5 (biased, scipy.stats.skew's default).
    pub skew: Option<f64>,
    /// Pearson kurtosis m4 / m2² (3 for a normal distribution).
    pub kurtosis: Option<f64>,
    /// `kurtosis` − 3.
    pub excess_kurtosis: Option<f64>,
    /// Historical value at risk: the 5th (1st) percentile of daily returns,
    /// linearly interpolated, percent (negative: a loss).
    pub var_95_pct: Option<f64>,
    pub var_99_pct: Option<f64>,
    /// Conditional VaR (expected shortfall): the mean of the daily returns at
    /// or below the VaR, percent.
    pub cvar_95_pct: Option<f64>,
    pub cvar_99_pct: Option<f64>,
    /// Share of days with a positive return, percent.
    pub positive_days_pct: Option<f64>,
}

pub fn return_distribution(returns: &[f64]) -> ReturnDistribution {
    let pct = |x: f64| finite(x * 100.0);
    let (var95, cvar95) = historical_var_cvar(returns, 0.95).unzip();
    let (var99, cvar99) = historical_var_cvar(returns, 0.99).unzip();
    let kurtosis = finite(overfit::kurtosis(returns));
    let n = returns.len();
    ReturnDistribution {
        observations: n,
        mean_pct: pct(overfit::mean(returns)),
        std_pct: pct(overfit::std(returns)),
        min_pct: returns.iter().copied().reduce(f64::min).and_then(pct),
        max_pct: returns.iter().copied().reduce(f64::max).and_then(pct),
        skew: finite(overfit::skewness(returns)),
        kurtosis,
        excess_kurtosis: kurtosis.map(|k| k - 3.0),
        var_95_pct: var95.and_then(pct),
        var_99_pct: var99.and_then(pct),
        cvar_95_pct: cvar95.and_then(pct),
        cvar_99_pct: cvar99.and_then(pct),
        positive_days_pct: (n > 0)
            .then(|| returns.iter().filter(|&&r| r > 0.0).count() as f64 / n as f64 * 100.0),
    }
}

/// The Sharpe ratio of the daily returns and how sure it is to beat zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SharpeStats {
    pub observations: usize,
    /// Mean / std (ddof 1) of the daily returns.
    pub sharpe_daily: Option<f64>,
    /// `sharpe_daily` × √365: equals Jesse's `sharpe_ratio` metric.
    pub sharpe_annualized: Option<f64>,
    /// The benchmark Sharpe ratio (per day) the PSR is measured against.
    pub benchmark: f64,
    /// Probabilistic Sharpe ratio (Bailey & López de Prado 2012): the
    /// probability that the true daily Sharpe ratio exceeds `benchmark`, given
    /// the sample's length, skewness and kurtosis.
    pub probabilistic_sharpe_ratio: Option<f64>,
}

pub fn sharpe_stats(returns: &[f64]) -> SharpeStats {
    let sharpe = overfit::sharpe(returns);
    let psr = sharpe.and_then(|sr| {
        finite(overfit::probabilistic_sharpe_ratio(
            sr,
            0.0,
            returns.len(),
            overfit::skewness(returns),
            overfit::kurtosis(returns),
        ))
    });
    SharpeStats {
        observations: returns.len(),
        sharpe_daily: sharpe,
        sharpe_annualized: sharpe.map(|s| s * PERIODS_PER_YEAR.sqrt()),
        benchmark: 0.0,
        probabilistic_sharpe_ratio: psr,
    }
}

/// How much of the backtest a position was open, from the closed trades'
/// entry and exit times (overlapping trades of several routes count once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Exposure {
    /// Closed trades counted.
    pub trades: usize,
    /// Minutes with at least one open position, and of the whole backtest.
    pub minutes_in_market: f64,
    pub minutes_total: f64,
    /// `minutes_in_market` / `minutes_total`, percent.
    pub time_in_market_pct: f64,
    /// UTC days on which a position was open at some minute, and days in the backtest.
    pub days_with_position: usize,
    pub days_total: usize,
    /// `days_with_position` / `days_total`, percent.
    pub exposure_days_pct: f64,
    /// Positions still open when the backtest ended (Jesse's
    /// `total_open_trades`); they are not among the closed trades, so their
    /// time is not counted.
    pub open_at_end: Option<i64>,
}

/// Exposure of `[opened, closed)` intervals (ms) over `[start_ms, end_ms)`.
pub fn exposure(intervals: &[(i64, i64)], start_ms: i64, end_ms: i64) -> Exposure {
    let mut clipped: Vec<(i64, i64)> = intervals
        .iter()
        .map(|&(a, b)| (a.max(start_ms), b.min(end_ms)))
        .filter(|(a, b)| a < b)
        .collect();
    clipped.sort_unstable();
    let mut merged: Vec<(i64, i64)> = Vec::new();
    for (a, b) in clipped {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    let in_market: i64 = merged.iter().map(|(a, b)| b - a).sum();
    let total = (end_ms - start_ms).max(0);
    let first_day = start_ms.div_euclid(DAY_MS);
    let days_total = (end_ms - 1).div_euclid(DAY_MS) - first_day + 1;
    let mut days = BTreeSet::new();
    for (a, b) in &merged {
        days.extend(a.div_euclid(DAY_MS)..=(b - 1).div_euclid(DAY_MS));
    }
    let pct = |part: f64, whole: f64| {
        if whole > 0.0 {
            part / whole * 100.0
        } else {
            0.0
        }
    };
    let days_total = days_total.max(0) as usize;
    Exposure {
        trades: intervals.len(),
        minutes_in_market: in_market as f64 / MINUTE_MS as f64,
        minutes_total: total as f64 / MINUTE_MS as f64,
        time_in_market_pct: pct(in_market as f64, total as f64),
        days_with_position: days.len(),
        days_total,
        exposure_days_pct: pct(days.len() as f64, days_total as f64),
        open_at_end: None,
    }
}

/// A strategy that ran, by the sha256 of the exact source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StrategyRef {
    pub name: String,
    pub sha256: String,
}

/// A route of the backtest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RouteRef {
    pub strategy: String,
    pub symbol: String,
    pub timeframe: String,
}

/// The fingerprint of the candles a backtest read (as its provenance records it).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct CandleFingerprint {
    /// First and last 1m candle read (warm-up included), RFC 3339.
    #[serde(default)]
    pub first: Option<String>,
    #[serde(default)]
    pub last: Option<String>,
    #[serde(default)]
    pub rows: Option<i64>,
    /// sha256 of the exact float64 input.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Where the series' candles came from: synthetic, csv, import, mixed or unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Where the numbers come from: the backtest job and what it ran on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Source {
    pub job_id: String,
    pub jesse_version: Option<String>,
    pub exchange: Option<String>,
    pub routes: Vec<RouteRef>,
    /// First day and the day the backtest stopped before (YYYY-MM-DD, UTC).
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub starting_balance: Option<f64>,
    pub strategies: Vec<StrategyRef>,
    /// The backtest's `provenance.candles`: per `<exchange>-<symbol>`, the candles read.
    pub candles: BTreeMap<String, CandleFingerprint>,
}

impl Source {
    /// The provenance of a stored backtest body.
    pub fn of(job_id: &str, body: &Value) -> Source {
        let provenance = &body["provenance"];
        let params = &provenance["params"];
        let day = |v: &Value| {
            v.as_i64()
                .and_then(DateTime::from_timestamp_millis)
                .map(|t| day_string(t.date_naive()))
        };
        Source {
            job_id: job_id.to_string(),
            jesse_version: provenance["jesse_version"].as_str().map(str::to_string),
            exchange: params["exchange"].as_str().map(str::to_string),
            routes: serde_json::from_value(params["routes"].clone()).unwrap_or_default(),
            start_date: day(&params["start_ms"]),
            end_date: day(&params["end_ms"]),
            starting_balance: params["config"]["starting_balance"]
                .as_f64()
                .or_else(|| body["metrics"]["starting_balance"].as_f64()),
            strategies: provenance["strategies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| {
                    Some(StrategyRef {
                        name: s["name"].as_str()?.to_string(),
                        sha256: s["sha256"].as_str()?.to_string(),
                    })
                })
                .collect(),
            candles: serde_json::from_value(provenance["candles"].clone()).unwrap_or_default(),
        }
    }

    /// The quote currency of the first route's symbol (`BTC-USDT` → `USDT`).
    pub fn quote_currency(&self) -> Option<&str> {
        self.routes.first()?.symbol.rsplit_once('-').map(|(_, q)| q)
    }
}

/// What the curve covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CurveSummary {
    /// Samples of Jesse's daily equity curve (the starting balance plus one per day).
    pub samples: usize,
    /// The day the starting balance closes (the day before the first) and the last day.
    pub first_day: String,
    pub last_day: String,
    pub starting_equity: f64,
    pub final_equity: f64,
    /// Final over starting equity, percent.
    pub total_return_pct: f64,
    /// The worst drawdown of the curve, percent (Jesse's `max_drawdown`).
    pub max_drawdown_pct: f64,
}

/// The rolling Sharpe ratio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RollingSharpe {
    /// Daily returns per window.
    pub window_days: usize,
    /// The √ of it annualizes each window's daily Sharpe ratio.
    pub periods_per_year: f64,
    pub points: Vec<RollingPoint>,
}

/// `GET /v1/jobs/{id}/analysis`: everything computed from one backtest's stored
/// result. A section is null when the result lacks what it needs; `unavailable`
/// then says why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Analysis {
    pub job_id: String,
    /// The job, Jesse version, routes, strategies' sha256 and candle fingerprints.
    pub source: Source,
    pub curve: Option<CurveSummary>,
    /// The worst drawdown periods (at most 5), deepest first.
    pub drawdowns: Option<Vec<DrawdownPeriod>>,
    pub monthly_returns: Option<Vec<PeriodReturn>>,
    pub yearly_returns: Option<Vec<PeriodReturn>>,
    /// 30-day rolling Sharpe ratio of daily returns, annualized by √365.
    pub rolling_sharpe: Option<RollingSharpe>,
    /// The daily returns' moments, VaR and CVaR.
    pub distribution: Option<ReturnDistribution>,
    /// Sharpe ratio of the daily returns and its PSR against 0.
    pub sharpe: Option<SharpeStats>,
    pub exposure: Option<Exposure>,
    /// Why a section is null: section name → reason.
    pub unavailable: BTreeMap<String, String>,
}

/// Entry and exit of each closed trade (`opened_at`, `closed_at`, ms).
pub fn trade_intervals(trades: &[Value]) -> Vec<(i64, i64)> {
    trades
        .iter()
        .filter_map(|t| {
            let open = t["opened_at"].as_f64()?;
            let close = t["closed_at"].as_f64()?;
            (open.is_finite() && close.is_finite()).then_some((open as i64, close as i64))
        })
        .collect()
}

/// Why a backtest body has no equity curve.
fn no_curve_reason(body: &Value, trades: usize) -> String {
    let total = body["metrics"]["total"].as_i64().unwrap_or(trades as i64);
    if total == 0 && trades == 0 {
        "the backtest closed no trades, and Jesse keeps no equity curve without trades".into()
    } else {
        "the result holds no daily equity curve (a backtest run before curves were always kept); run it again".into()
    }
}

/// The analysis of a backtest's stored result `body` and all its `trades` rows.
pub fn analyze(job_id: &str, body: &Value, trades: &[Value]) -> Analysis {
    let source = Source::of(job_id, body);
    let mut unavailable = BTreeMap::new();
    let mut analysis = Analysis {
        job_id: job_id.to_string(),
        source,
        curve: None,
        drawdowns: None,
        monthly_returns: None,
        yearly_returns: None,
        rolling_sharpe: None,
        distribution: None,
        sharpe: None,
        exposure: None,
        unavailable: BTreeMap::new(),
    };
    match portfolio_curve(&body["equity_curve"]) {
        Some(curve) => {
            let values: Vec<f64> = curve.iter().map(|p| p.value).collect();
            let returns = daily_returns(&curve);
            let fractions: Vec<f64> = returns.iter().map(|r| r.value).collect();
            let (first, last) = (curve[0], curve[curve.len() - 1]);
            analysis.curve = Some(CurveSummary {
                samples: curve.len(),
                first_day: day_string(first.day()),
                last_day: day_string(last.day()),
                starting_equity: first.value,
                final_equity: last.value,
                total_return_pct: (last.value / first.value - 1.0) * 100.0,
                max_drawdown_pct: drawdown_series(&values).into_iter().fold(0.0, f64::min),
            });
            let mut periods = drawdown_periods(&curve);
            periods.truncate(TOP_DRAWDOWNS);
            analysis.drawdowns = Some(periods);
            analysis.monthly_returns = Some(monthly_returns(&returns));
            analysis.yearly_returns = Some(yearly_returns(&returns));
            if returns.len() >= ROLLING_WINDOW {
                analysis.rolling_sharpe = Some(RollingSharpe {
                    window_days: ROLLING_WINDOW,
                    periods_per_year: PERIODS_PER_YEAR,
                    points: rolling_sharpe(&returns, ROLLING_WINDOW, PERIODS_PER_YEAR),
                });
            } else {
                unavailable.insert(
                    "rolling_sharpe".into(),
                    format!(
                        "{} daily returns, fewer than the {ROLLING_WINDOW}-day window",
                        returns.len()
                    ),
                );
            }
            if returns.len() >= 2 {
                analysis.distribution = Some(return_distribution(&fractions));
                analysis.sharpe = Some(sharpe_stats(&fractions));
            } else {
                for section in ["distribution", "sharpe"] {
                    unavailable.insert(
                        section.into(),
                        format!("{} daily returns; at least 2 are needed", returns.len()),
                    );
                }
            }
        }
        None => {
            let reason = no_curve_reason(body, trades.len());
            for section in [
                "curve",
                "drawdowns",
                "monthly_returns",
                "yearly_returns",
                "rolling_sharpe",
                "distribution",
                "sharpe",
            ] {
                unavailable.insert(section.into(), reason.clone());
            }
        }
    }
    let params = &body["provenance"]["params"];
    match (params["start_ms"].as_i64(), params["end_ms"].as_i64()) {
        _ if trades.is_empty() => {
            unavailable.insert(
                "exposure".into(),
                "the backtest closed no trades (a position still open at the end is not among the trades)".into(),
            );
        }
        (Some(start), Some(end)) => {
            let mut found = exposure(&trade_intervals(trades), start, end);
            found.open_at_end = body["metrics"]["total_open_trades"].as_i64();
            analysis.exposure = Some(found);
        }
        _ => {
            unavailable.insert(
                "exposure".into(),
                "the result's provenance does not record the backtest's range".into(),
            );
        }
    }
    analysis.unavailable = unavailable;
    analysis
}

/// A few of Jesse's metrics, side by side (null where Jesse gives none:
/// without trades, or NaN/±infinity).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct KeyMetrics {
    /// Closed trades.
    pub total: Option<i64>,
    pub win_rate: Option<f64>,
    pub net_profit_percentage: Option<f64>,
    pub annual_return: Option<f64>,
    pub max_drawdown: Option<f64>,
    pub sharpe_ratio: Option<f64>,
    pub sortino_ratio: Option<f64>,
    pub calmar_ratio: Option<f64>,
    pub omega_ratio: Option<f64>,
    pub expectancy_percentage: Option<f64>,
    pub ratio_avg_win_loss: Option<f64>,
    pub max_underwater_period: Option<f64>,
    pub fee: Option<f64>,
    pub starting_balance: Option<f64>,
    pub finishing_balance: Option<f64>,
}

impl KeyMetrics {
    pub fn of(metrics: &Value) -> KeyMetrics {
        let f = |name: &str| metrics[name].as_f64();
        KeyMetrics {
            total: metrics["total"].as_i64(),
            win_rate: f("win_rate"),
            net_profit_percentage: f("net_profit_percentage"),
            annual_return: f("annual_return"),
            max_drawdown: f("max_drawdown"),
            sharpe_ratio: f("sharpe_ratio"),
            sortino_ratio: f("sortino_ratio"),
            calmar_ratio: f("calmar_ratio"),
            omega_ratio: f("omega_ratio"),
            expectancy_percentage: f("expectancy_percentage"),
            ratio_avg_win_loss: f("ratio_avg_win_loss"),
            max_underwater_period: f("max_underwater_period"),
            fee: f("fee"),
            starting_balance: f("starting_balance"),
            finishing_balance: f("finishing_balance"),
        }
    }
}

/// One backtest of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ComparedJob {
    pub job_id: String,
    pub source: Source,
    pub metrics: KeyMetrics,
    /// Why this job has no equity curve (null when it has one).
    pub no_curve: Option<String>,
}

/// Equity curves on one calendar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AlignedEquity {
    /// Every day any job closed (the union), YYYY-MM-DD, in order.
    pub dates: Vec<String>,
    /// What the values are.
    pub unit: String,
    /// One per job, in the request's order.
    pub series: Vec<AlignedSeries>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AlignedSeries {
    pub job_id: String,
    /// Equity at each date's close as percent of the job's starting balance
    /// (100 = start); null where the job has no sample.
    pub values: Vec<Option<f64>>,
}

/// Pairwise correlation of daily returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CorrelationMatrix {
    /// Rows and columns, in the request's order.
    pub job_ids: Vec<String>,
    /// Pearson correlation of each pair's daily returns over the days both
    /// have a return; null for fewer than 2 common days or a flat series.
    pub matrix: Vec<Vec<Option<f64>>>,
    /// The number of common days behind each entry.
    pub common_days: Vec<Vec<usize>>,
}

/// `POST /v1/compare`: backtests side by side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Comparison {
    /// One row per job, in the request's order.
    pub jobs: Vec<ComparedJob>,
    pub equity: AlignedEquity,
    pub correlation: CorrelationMatrix,
}

/// The last sample of each close day, in order.
fn by_day(curve: &[EquityPoint]) -> BTreeMap<NaiveDate, f64> {
    curve.iter().map(|p| (p.day(), p.value)).collect()
}

/// Compares backtests given as `(job_id, stored result body)`.
pub fn compare(jobs: &[(String, Value)]) -> Comparison {
    let curves: Vec<Option<BTreeMap<NaiveDate, f64>>> = jobs
        .iter()
        .map(|(_, body)| portfolio_curve(&body["equity_curve"]).map(|c| by_day(&c)))
        .collect();
    let dates: BTreeSet<NaiveDate> = curves
        .iter()
        .flatten()
        .flat_map(|c| c.keys().copied())
        .collect();
    let series = jobs
        .iter()
        .zip(&curves)
        .map(|((job_id, _), curve)| AlignedSeries {
            job_id: job_id.clone(),
            values: dates
                .iter()
                .map(|d| {
                    let curve = curve.as_ref()?;
                    let start = *curve.values().next()?;
                    let value = curve.get(d)?;
                    (start != 0.0).then(|| value / start * 100.0)
                })
                .collect(),
        })
        .collect();
    let returns: Vec<BTreeMap<NaiveDate, f64>> = curves
        .iter()
        .map(|curve| {
            let Some(curve) = curve else {
                return BTreeMap::new();
            };
            let days: Vec<(&NaiveDate, &f64)> = curve.iter().collect();
            days.windows(2)
                .filter(|w| *w[0].1 != 0.0)
                .map(|w| (*w[1].0, w[1].1 / w[0].1 - 1.0))
                .collect()
        })
        .collect();
    let n = jobs.len();
    let mut matrix = vec![vec![None; n]; n];
    let mut common_days = vec![vec![0; n]; n];
    for i in 0..n {
        for j in i..n {
            let (xs, ys): (Vec<f64>, Vec<f64>) = returns[i]
                .iter()
                .filter_map(|(d, x)| Some((*x, *returns[j].get(d)?)))
                .unzip();
            // A series with itself: exactly 1 where it varies.
            let r = if i == j {
                correlation(&xs, &ys).map(|_| 1.0)
            } else {
                correlation(&xs, &ys)
            };
            matrix[i][j] = r;
            matrix[j][i] = r;
            common_days[i][j] = xs.len();
            common_days[j][i] = xs.len();
        }
    }
    Comparison {
        jobs: jobs
            .iter()
            .zip(&curves)
            .map(|((job_id, body), curve)| ComparedJob {
                job_id: job_id.clone(),
                source: Source::of(job_id, body),
                metrics: KeyMetrics::of(&body["metrics"]),
                no_curve: curve.is_none().then(|| no_curve_reason(body, 0)),
            })
            .collect(),
        equity: AlignedEquity {
            dates: dates.into_iter().map(day_string).collect(),
            unit: "percent of the job's starting balance (100 = start)".into(),
            series,
        },
        correlation: CorrelationMatrix {
            job_ids: jobs.iter().map(|(id, _)| id.clone()).collect(),
            matrix,
            common_days,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const START_A: i64 = 1_701_388_800_000; // 2023-12-01 00:00 UTC

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1e-300)
    }

    fn assert_close(a: f64, b: f64, what: &str) {
        assert!(close(a, b), "{what}: {a} vs {b}");
    }

    /// Jesse-shaped samples: the start at 00:00, then one a day at 00:01 of the
    /// next day, the last at 00:00 (as ops/goldens/analysis_reference.py builds them).
    fn jesse_curve(start_ms: i64, balance: f64, returns: &[f64]) -> Vec<EquityPoint> {
        let mut values = vec![balance];
        for r in returns {
            values.push(values[values.len() - 1] * (1.0 + r));
        }
        let n = values.len();
        values
            .into_iter()
            .enumerate()
            .map(|(i, value)| EquityPoint {
                time_ms: start_ms
                    + i as i64 * DAY_MS
                    + if i == 0 || i == n - 1 { 0 } else { MINUTE_MS },
                value,
            })
            .collect()
    }

    fn returns_a() -> Vec<f64> {
        (1..75)
            .map(|k: i64| ((k * 37 + 11) % 23 - 11) as f64 / 1000.0)
            .collect()
    }

    fn curve_a() -> Vec<EquityPoint> {
        jesse_curve(START_A, 10_000.0, &returns_a())
    }

    fn curve_b() -> Vec<EquityPoint> {
        let ra = returns_a();
        let rb: Vec<f64> = (1..61)
            .map(|k: i64| ((k * 19 + 5) % 17 - 8) as f64 / 1000.0 + 0.5 * ra[(k + 10 - 1) as usize])
            .collect();
        jesse_curve(START_A + 10 * DAY_MS, 5_000.0, &rb)
    }

    fn as_stored(curve: &[EquityPoint]) -> Value {
        let data: Vec<Value> = curve
            .iter()
            .map(|p| json!({"time": p.time_ms as f64 / 1000.0, "value": p.value, "color": "#818CF8"}))
            .collect();
        json!([{"name": "Portfolio", "data": data, "color": "#818CF8"}])
    }

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn samples_close_the_day_before() {
        // Timestamps of a real Jesse 3.5.3 curve (2023-02-01 .. 2023-06-01).
        assert_eq!(close_day(1_675_209_600_000), day("2023-01-31"));
        assert_eq!(close_day(1_675_296_060_000), day("2023-02-01"));
        assert_eq!(close_day(1_685_577_600_000), day("2023-05-31"));
        let stored = json!([
            {"name": "BTC-USDT", "data": [{"time": 1.0, "value": 1.0}]},
            {"name": "Portfolio", "data": [
                {"time": 1675296060.0, "value": 9774.33, "color": "#818CF8"},
                {"time": 1675209600.0, "value": 10000.0, "color": "#818CF8"},
                {"time": 1675382460.0, "value": null}]},
        ]);
        let curve = portfolio_curve(&stored).unwrap();
        assert_eq!(curve.len(), 2);
        assert_eq!(curve[0].value, 10000.0);
        assert_eq!(portfolio_curve(&Value::Null), None);
    }

    /// Hand-computed: peaks 110, 121 and 130; troughs 99 (−10 %), 96.8 (−20 %), 117 (−10 %, open).
    #[test]
    fn drawdown_periods_by_hand() {
        let values = [100.0, 110.0, 99.0, 121.0, 121.0, 96.8, 130.0, 117.0];
        let curve = jesse_curve(
            START_A,
            100.0,
            &values
                .windows(2)
                .map(|w| w[1] / w[0] - 1.0)
                .collect::<Vec<_>>(),
        );
        let periods = drawdown_periods(&curve);
        assert_eq!(periods.len(), 3);
        let deepest = &periods[0];
        assert_close(deepest.depth_pct, -20.0, "deepest");
        // Samples close 11-30 (start), 12-01, 12-02...: the peak 121 was last at 12-04.
        assert_eq!(
            (
                deepest.start.as_str(),
                deepest.trough.as_str(),
                deepest.recovery.as_deref()
            ),
            ("2023-12-04", "2023-12-05", Some("2023-12-06"))
        );
        assert_eq!((deepest.duration_days, deepest.days_to_trough), (2, 1));
        assert_close(periods[1].depth_pct, -10.0, "first");
        assert_eq!(periods[1].start, "2023-12-01");
        assert_eq!(periods[1].recovery.as_deref(), Some("2023-12-03"));
        assert_close(periods[2].depth_pct, -10.0, "open");
        assert_eq!(periods[2].recovery, None);
        assert_eq!(periods[2].duration_days, 1);
        let dd = drawdown_series(&values);
        assert_close(dd.iter().copied().fold(0.0, f64::min), -20.0, "series");
        assert_eq!(dd[3], 0.0);
    }

    #[test]
    fn months_compound_to_the_total() {
        // +10 % on Jan 31, −50 % on Feb 1, +100 % on Feb 2 → Jan +10 %, Feb 0 %.
        let curve = jesse_curve(1_706_572_800_000, 100.0, &[0.0, 0.1, -0.5, 1.0]); // from 2024-01-30
        let returns = daily_returns(&curve);
        assert_eq!(returns[0].day, day("2024-01-30"));
        let months = monthly_returns(&returns);
        assert_eq!(months.len(), 2);
        assert_eq!((months[0].period.as_str(), months[0].days), ("2024-01", 2));
        assert_close(months[0].return_pct, 10.0, "january");
        assert_eq!(months[1].return_pct, 0.0);
        let years = yearly_returns(&returns);
        assert_eq!(years.len(), 1);
        assert_eq!(years[0].month, None);
        assert_close(years[0].return_pct, 10.0, "2024");
    }

    // Goldens: pandas 2.2.3 / NumPy 1.26.4 / SciPy 1.15.3 on the same curves
    // (ops/goldens/analysis_reference.py).
    #[test]
    fn statistics_match_numpy_scipy_and_pandas() {
        let curve = curve_a();
        let returns = daily_returns(&curve);
        let x: Vec<f64> = returns.iter().map(|r| r.value).collect();
        assert_eq!(x.len(), 74);
        let d = return_distribution(&x);
        assert_close(d.mean_pct.unwrap(), 4.054054054051357e-05 * 100.0, "mean");
        assert_close(d.std_pct.unwrap(), 0.006681479594133837 * 100.0, "std");
        assert!((d.skew.unwrap() - -0.0029295070727302806).abs() < 1e-12);
        assert_close(d.kurtosis.unwrap(), 1.7925709391138722, "kurtosis");
        assert_close(d.min_pct.unwrap(), -0.01100000000000012 * 100.0, "min");
        assert_close(
            d.var_95_pct.unwrap(),
            -0.010000000000000047 * 100.0,
            "var95",
        );
        assert_close(
            d.cvar_95_pct.unwrap(),
            -0.010750000000000037 * 100.0,
            "cvar95",
        );
        assert_close(d.var_99_pct.unwrap(), -0.01100000000000004 * 100.0, "var99");
        assert_close(
            d.cvar_99_pct.unwrap(),
            -0.01100000000000012 * 100.0,
            "cvar99",
        );
        let s = sharpe_stats(&x);
        // The mean is ~0 (4e-5 over values of 1e-2): NumPy's pairwise sum and
        // ours differ in the last digits of it, hence 1e-9 here.
        let near = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs();
        assert!(near(s.sharpe_daily.unwrap(), 0.00606759924494974));
        assert!(near(s.sharpe_annualized.unwrap(), 0.11592132080864093));
        assert!((s.probabilistic_sharpe_ratio.unwrap() - 0.5206722833464864).abs() < 1e-12);

        let rolling = rolling_sharpe(&returns, 30, 365.0);
        assert_eq!(rolling.len(), 45);
        assert_eq!(rolling[0].date, "2023-12-30");
        assert_eq!(rolling[44].date, "2024-02-12");
        let near = |a: f64, b: f64| (a - b).abs() <= 1e-11 * b.abs().max(1.0);
        assert!(near(rolling[0].value.unwrap(), 0.09386181882453726));
        assert!(near(rolling[9].value.unwrap(), -1.3433136373804668));
        assert!(near(rolling[44].value.unwrap(), 1.1365039571691982));

        let months = monthly_returns(&returns);
        let expected = [
            ("2023-12", -0.26684557063141323),
            ("2024-01", -0.3695745722485433),
            ("2024-02", 0.7775232271719723),
        ];
        assert_eq!(months.len(), 3);
        for (m, (period, value)) in months.iter().zip(expected) {
            assert_eq!(m.period, period);
            assert_close(m.return_pct, value, period);
        }
        let years = yearly_returns(&returns);
        assert_close(years[0].return_pct, -0.26684557063141323, "2023");
        assert_close(years[1].return_pct, 0.4050751267824726, "2024");

        let periods = drawdown_periods(&curve);
        assert_eq!(periods.len(), 3);
        let expected = [
            (-2.110485358046321, "2023-12-10", "2024-02-08", None),
            (
                -0.9000000000000008,
                "2023-11-30",
                "2023-12-01",
                Some("2023-12-04"),
            ),
            (
                -0.8000000000000118,
                "2023-12-05",
                "2023-12-06",
                Some("2023-12-09"),
            ),
        ];
        for (p, (depth, start, trough, recovery)) in periods.iter().zip(expected) {
            assert!((p.depth_pct - depth).abs() < 1e-12, "{p:?}");
            assert_eq!(
                (p.start.as_str(), p.trough.as_str(), p.recovery.as_deref()),
                (start, trough, recovery)
            );
        }
    }

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let sorted = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&sorted, 0.5), Some(2.5));
        assert_eq!(quantile(&sorted, 0.05), Some(1.15));
        assert_eq!(quantile(&[], 0.5), None);
        // VaR 95 % of 1..=20 % losses: the 0.95th of 19 gaps above −20 → −19.05 %;
        // the tail at or below it is −20 alone.
        let returns: Vec<f64> = (1..=20).map(|k| -f64::from(k) / 100.0).collect();
        let (var, cvar) = historical_var_cvar(&returns, 0.95).unwrap();
        assert_close(var, -0.1905, "var");
        assert_close(cvar, -0.2, "cvar");
    }

    #[test]
    fn exposure_by_hand() {
        let day0 = START_A;
        // Two overlapping trades on day 0 (06:00–12:00 and 10:00–14:00: 8 h),
        // one from 23:00 of day 2 to 01:00 of day 3 (2 h); a 5-day backtest.
        let hour = 3_600_000;
        let intervals = [
            (day0 + 6 * hour, day0 + 12 * hour),
            (day0 + 10 * hour, day0 + 14 * hour),
            (day0 + 2 * DAY_MS + 23 * hour, day0 + 3 * DAY_MS + hour),
        ];
        let e = exposure(&intervals, day0, day0 + 5 * DAY_MS);
        assert_eq!(e.trades, 3);
        assert_close(e.minutes_in_market, 600.0, "minutes");
        assert_close(e.minutes_total, 5.0 * 1440.0, "total");
        assert_close(e.time_in_market_pct, 600.0 / 7200.0 * 100.0, "pct");
        assert_eq!((e.days_with_position, e.days_total), (3, 5));
        assert_close(e.exposure_days_pct, 60.0, "days");
        // A trade closing exactly at midnight does not touch the next day.
        let e = exposure(&[(day0, day0 + DAY_MS)], day0, day0 + 2 * DAY_MS);
        assert_eq!(e.days_with_position, 1);
    }

    fn body(curve: Option<&[EquityPoint]>, total: i64) -> Value {
        json!({
            "metrics": {"total": total, "starting_balance": 10000.0, "sharpe_ratio": 0.1, "total_open_trades": 1},
            "equity_curve": curve.map(as_stored),
            "provenance": {
                "jesse_version": "3.5.3",
                "strategies": [{"name": "SmaCross", "sha256": "abc", "source": "..."}],
                "candles": {"Binance Perpetual Futures-BTC-USDT": {"first": "2023-11-20T00:00:00.000Z", "last": "2024-02-12T23:59:00.000Z", "rows": 10, "sha256": "def"}},
                "params": {"exchange": "Binance Perpetual Futures", "start_ms": START_A, "end_ms": START_A + 74 * DAY_MS,
                           "config": {"starting_balance": 10000.0},
                           "routes": [{"strategy": "SmaCross", "symbol": "BTC-USDT", "timeframe": "1h"}]},
            },
        })
    }

    #[test]
    fn analysis_of_a_body_and_of_one_without_trades() {
        let curve = curve_a();
        let trades =
            vec![json!({"opened_at": START_A as f64, "closed_at": (START_A + DAY_MS) as f64})];
        let a = analyze("01J", &body(Some(&curve), 1), &trades);
        assert!(a.unavailable.is_empty(), "{:?}", a.unavailable);
        assert_eq!(a.source.strategies[0].sha256, "abc");
        assert_eq!(
            a.source.candles["Binance Perpetual Futures-BTC-USDT"]
                .sha256
                .as_deref(),
            Some("def")
        );
        assert_eq!(a.source.quote_currency(), Some("USDT"));
        assert_eq!(a.source.start_date.as_deref(), Some("2023-12-01"));
        assert_eq!(a.source.end_date.as_deref(), Some("2024-02-13"));
        let summary = a.curve.as_ref().unwrap();
        assert_close(summary.total_return_pct, 0.13714863111753406, "total");
        assert_close(summary.max_drawdown_pct, -2.110485358046321, "max dd");
        assert_eq!(summary.first_day, "2023-11-30");
        assert_eq!(a.drawdowns.as_ref().unwrap().len(), 3);
        let growth: f64 = a
            .monthly_returns
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| 1.0 + m.return_pct / 100.0)
            .product();
        assert_close(
            (growth - 1.0) * 100.0,
            summary.total_return_pct,
            "compounded months",
        );
        let exposure = a.exposure.as_ref().unwrap();
        assert_eq!((exposure.days_with_position, exposure.days_total), (1, 74));
        assert_eq!(exposure.open_at_end, Some(1));

        let none = analyze("01K", &body(None, 0), &[]);
        assert!(none.curve.is_none() && none.drawdowns.is_none() && none.exposure.is_none());
        assert!(none.unavailable["drawdowns"].contains("no trades"));
        assert!(none.unavailable.contains_key("exposure"));
        let serialized = serde_json::to_value(&none).unwrap();
        assert_eq!(serialized["monthly_returns"], Value::Null);
    }

    #[test]
    fn comparison_aligns_days_and_correlates_like_numpy() {
        let (a, b) = (curve_a(), curve_b());
        let c = compare(&[
            ("A".into(), body(Some(&a), 1)),
            ("B".into(), body(Some(&b), 1)),
            ("C".into(), body(None, 0)),
        ]);
        assert_eq!(c.equity.dates.len(), 75);
        assert_eq!(c.equity.dates[0], "2023-11-30");
        assert_eq!(c.equity.dates[74], "2024-02-12");
        let sb = &c.equity.series[1].values;
        assert_eq!(sb.iter().position(Option::is_some), Some(10));
        assert_eq!(sb[10], Some(100.0));
        assert_close(sb[70].unwrap(), 98.40517434781255, "B last");
        assert_eq!(sb[71], None);
        assert_close(
            c.equity.series[0].values[74].unwrap(),
            100.13714863111754,
            "A last",
        );
        assert!(c.equity.series[2].values.iter().all(Option::is_none));
        assert!(c.jobs[2].no_curve.is_some() && c.jobs[0].no_curve.is_none());

        let m = &c.correlation;
        assert_eq!(m.common_days[0][1], 60);
        assert!((m.matrix[0][1].unwrap() - 0.5795577475993734).abs() < 1e-12);
        assert_eq!(m.matrix[1][0], m.matrix[0][1]);
        assert_eq!((m.matrix[0][0], m.matrix[1][1]), (Some(1.0), Some(1.0)));
        assert_eq!((m.matrix[2][2], m.matrix[0][2]), (None, None));
        assert_eq!(m.common_days[0][0], 74);
    }
}
