//! `pairs_screen`: every pair of a set of stored series, tested for
//! cointegration. Submit checks the symbols, the range and that every pair's
//! series overlap by at least [`MIN_OVERLAP_BARS`] bars; the job then fans the
//! pairs out in chunks (`pairs_screen_chunk` children, runner jobs) and, once
//! they have all ended, ranks every pair into its `pairs` rows.
//!
//! Ranking (best first): cointegrated pairs, then pairs with statistics, then
//! by the larger of the two Engle–Granger p-values, then the smaller one,
//! then by the symbols. A pair is cointegrated when the Engle–Granger test
//! rejects "no cointegration" at the significance in both orderings.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::chunk::{self, ChunkPlan};
use super::{
    DEFAULT_SIGNIFICANCE, MAX_BARS, MAX_SYMBOLS, MIN_OVERLAP_BARS, screen_timeframe_minutes,
};
use crate::ErrorBody;
use crate::error::ApiError;
use crate::jobs::JobStatus;
use crate::kinds::{
    KindDef, Lane, Outcome, RowsPart, Runtime, Submit, read_plan, read_request, schema_of,
};
use crate::planner::{Planner, check_symbol};
use crate::store::{JobRecord, JobResult};
use crate::time::{MINUTE_MS, parse_day, to_rfc3339};

/// Pairs per chunk at most.
const MAX_PAIRS_PER_JOB: usize = 100;
/// A chunk's arrays at most (bars × pairs), when the request does not say.
const BARS_PER_JOB: i64 = 200_000;

pub static KIND: KindDef = KindDef {
    name: "pairs_screen",
    description: "cointegration screen of every pair of stored series (Engle–Granger, Johansen, hedge ratios)",
    lane: Lane::Control,
    submit: Some(Submit {
        path: "/v1/pairs/screen",
        tool: "pairs_screen",
        title: "Submit pairs cointegration screen",
        description: "Screen every pair of stored series on one exchange for cointegration, on closes resampled to \
`timeframe` (1m..1D) over [start_date, end_date). Without `symbols`, every symbol stored for the exchange in the \
range (2 to 50). Per pair, with statsmodels: correlation of returns, Engle–Granger `coint` in both orderings (both \
p-values; `orderings_disagree` flags a split decision), Johansen trace test, OLS hedge ratio, optional Kalman hedge \
ratio path (`kalman: true`), OU half-life and the current spread z-score. A pair is `cointegrated` when Engle–Granger \
rejects at `significance` (default 0.05) in both orderings; rejected pairs carry a `reason`. Pairs run in chunks as \
child jobs over the fleet. Answers at once with the job_id; job_result gives the pairs ranked best first (paged with \
offset/limit). Then pairs_backtest runs a pair.",
        next: "job_result for the ranked pairs (page them with offset/limit); pairs_backtest to trade one",
        open_world: false,
    }),
    request_schema: schema_of::<PairsScreenRequest>,
    result_schema: schema_of::<PairsScreenResult>,
    rows: Some(RowsPart {
        name: "pairs",
        included_by_default: |_| true,
    }),
    plan,
    execute,
    parent: true,
};

/// `POST /v1/pairs/screen` and MCP `pairs_screen`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PairsScreenRequest {
    /// Exchange name exactly as Jesse spells it.
    pub exchange: String,
    /// 2 to 50 symbols (default: every symbol stored for the exchange with candles in the range).
    #[serde(default)]
    pub symbols: Option<Vec<String>>,
    /// First day, `YYYY-MM-DD` (UTC), inclusive.
    pub start_date: String,
    /// Last day, `YYYY-MM-DD` (UTC), exclusive.
    pub end_date: String,
    /// Bar size the closes are resampled to: one of Jesse's timeframes up to `1D`.
    pub timeframe: String,
    /// Significance of the Engle–Granger decision, above 0 and at most 0.5 (default 0.05).
    #[serde(default)]
    pub significance: Option<f64>,
    /// Also filter a time-varying hedge ratio with a Kalman filter (default false).
    #[serde(default)]
    pub kalman: bool,
    /// Pairs per child job (default: sized by the bars, at most 25); 1 to 100.
    #[serde(default)]
    pub pairs_per_job: Option<u32>,
    /// Child jobs queued or running at once (default: the fleet's runners).
    #[serde(default)]
    pub max_parallel: Option<u32>,
}

/// What a screen job stores as its params.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScreenPlan {
    pub exchange: String,
    /// Sorted; pair k is the k-th (i < j) of these in row-major order.
    pub symbols: Vec<String>,
    /// Symbols stored for the exchange but without candles in the range (no `symbols` given).
    pub excluded: Vec<String>,
    pub start_ms: i64,
    pub end_ms: i64,
    pub timeframe: String,
    pub minutes: i64,
    pub significance: f64,
    pub kalman: bool,
    pub pairs_per_job: usize,
    pub max_parallel: Option<u32>,
}

impl ScreenPlan {
    /// Every pair, in screen order.
    pub fn pairs(&self) -> Vec<[String; 2]> {
        let n = self.symbols.len();
        let mut pairs = Vec::with_capacity(n * n.saturating_sub(1) / 2);
        for i in 0..n {
            for j in i + 1..n {
                pairs.push([self.symbols[i].clone(), self.symbols[j].clone()]);
            }
        }
        pairs
    }
}

/// A screen's headline (its rows are the `pairs` part, best first).
#[derive(Debug, Serialize, JsonSchema)]
pub struct PairsScreenResult {
    /// Pairs screened.
    pub total: usize,
    /// Pairs cointegrated at the significance.
    pub cointegrated: usize,
    /// Pairs whose statistics could not be computed (their rows say why).
    pub without_statistics: usize,
    pub significance: f64,
    /// The top row.
    #[schemars(with = "Option<Map<String, Value>>")]
    pub best: Option<Value>,
    /// Exchange, symbols, range, timeframe, the ranking and decision rules, children.
    #[schemars(with = "Map<String, Value>")]
    pub setup: Value,
    /// Each series' candles (rows, first, last, sha256), identical in every chunk,
    /// and the statsmodels and numpy versions.
    #[schemars(with = "Map<String, Value>")]
    pub provenance: Value,
}

fn field(e: ApiError, name: &str) -> ApiError {
    e.with_details(json!({"field": name}))
}

fn plan(planner: &Planner, request: Value) -> BoxFuture<'_, Result<Value, ApiError>> {
    Box::pin(async move {
        let request: PairsScreenRequest = read_request(request)?;
        let plan = plan_screen(planner, &request).await?;
        Ok(serde_json::to_value(plan).expect("plans serialize"))
    })
}

/// Validates a screen request into its plan (also used by nothing else; kept
/// separate for readability).
async fn plan_screen(
    planner: &Planner,
    request: &PairsScreenRequest,
) -> Result<ScreenPlan, ApiError> {
    if !crate::jesse::is_backtesting_exchange(&request.exchange)
        && !crate::jesse::is_import_exchange(&request.exchange)
    {
        return Err(field(
            ApiError::invalid(
                "unsupported_exchange",
                format!("exchange '{}' is not one of Jesse's", request.exchange),
            ),
            "exchange",
        ));
    }
    let minutes = screen_timeframe_minutes(&request.timeframe).ok_or_else(|| {
        field(
            ApiError::invalid(
                "unsupported_timeframe",
                format!(
                    "timeframe '{}' is not one a screen takes: one of Jesse's timeframes from 1m to 1D",
                    request.timeframe
                ),
            ),
            "timeframe",
        )
    })?;
    let start_ms = parse_day(&request.start_date).map_err(|m| {
        field(
            ApiError::invalid("invalid_date", format!("start_date: {m}")),
            "start_date",
        )
    })?;
    let end_ms = parse_day(&request.end_date).map_err(|m| {
        field(
            ApiError::invalid("invalid_date", format!("end_date: {m}")),
            "end_date",
        )
    })?;
    if start_ms >= end_ms {
        return Err(field(
            ApiError::invalid(
                "invalid_date_range",
                format!(
                    "start_date ({}) must be before end_date ({}); end_date is exclusive",
                    request.start_date, request.end_date
                ),
            ),
            "end_date",
        ));
    }
    let bars = (end_ms - start_ms) / (minutes * MINUTE_MS);
    if bars > MAX_BARS {
        return Err(field(
            ApiError::invalid(
                "too_many_bars",
                format!(
                    "the range holds {bars} bars of {}; a screen takes at most {MAX_BARS} per series: use a larger timeframe or a shorter range",
                    request.timeframe
                ),
            ),
            "timeframe",
        ));
    }
    let significance = request.significance.unwrap_or(DEFAULT_SIGNIFICANCE);
    if !(significance > 0.0 && significance <= 0.5) {
        return Err(field(
            ApiError::invalid(
                "invalid_number",
                "significance must be above 0 and at most 0.5 (e.g. 0.05)",
            ),
            "significance",
        ));
    }
    if request
        .pairs_per_job
        .is_some_and(|n| n == 0 || n as usize > MAX_PAIRS_PER_JOB)
    {
        return Err(field(
            ApiError::invalid(
                "invalid_number",
                format!("pairs_per_job must be from 1 to {MAX_PAIRS_PER_JOB}"),
            ),
            "pairs_per_job",
        ));
    }
    if request.max_parallel.is_some_and(|m| m == 0 || m > 1024) {
        return Err(field(
            ApiError::invalid("invalid_number", "max_parallel must be from 1 to 1024"),
            "max_parallel",
        ));
    }

    // Where each stored series of the exchange starts and ends.
    let stored: BTreeMap<String, (i64, i64)> = planner
        .store()
        .list_series()
        .await?
        .into_iter()
        .filter(|s| s.exchange == request.exchange && s.timeframe == "1m")
        .map(|s| (s.symbol, (s.first, s.last + MINUTE_MS)))
        .collect();
    let in_range = |bounds: &(i64, i64)| bounds.0 < end_ms && bounds.1 > start_ms;
    let (symbols, excluded) = match &request.symbols {
        Some(symbols) => {
            let mut seen = std::collections::BTreeSet::new();
            for symbol in symbols {
                check_symbol(symbol).map_err(|e| field(e, "symbols"))?;
                if !seen.insert(symbol.clone()) {
                    return Err(field(
                        ApiError::invalid(
                            "invalid_symbols",
                            format!("symbol {symbol} is listed twice"),
                        ),
                        "symbols",
                    ));
                }
                if !stored.get(symbol).is_some_and(in_range) {
                    return Err(ApiError::invalid(
                        "no_candles",
                        format!(
                            "no 1m candles of {} {symbol} are stored between {} and {}; import them first",
                            request.exchange, request.start_date, request.end_date
                        ),
                    )
                    .with_details(json!({"field": "symbols", "symbol": symbol})));
                }
            }
            (seen.into_iter().collect::<Vec<_>>(), Vec::new())
        }
        None => {
            let (with, without): (Vec<_>, Vec<_>) =
                stored.iter().partition(|(_, bounds)| in_range(bounds));
            (
                with.into_iter().map(|(s, _)| s.clone()).collect(),
                without.into_iter().map(|(s, _)| s.clone()).collect(),
            )
        }
    };
    if symbols.len() < 2 {
        return Err(field(
            ApiError::invalid(
                "too_few_symbols",
                format!(
                    "a screen needs at least 2 symbols with candles of {} in the range; found {}",
                    request.exchange,
                    symbols.len()
                ),
            ),
            "symbols",
        ));
    }
    if symbols.len() > MAX_SYMBOLS {
        return Err(field(
            ApiError::invalid(
                "too_many_symbols",
                format!(
                    "{} symbols make {} pairs; a screen takes at most {MAX_SYMBOLS} symbols: list the ones to screen in `symbols`",
                    symbols.len(),
                    symbols.len() * (symbols.len() - 1) / 2
                ),
            ),
            "symbols",
        ));
    }
    // Every pair's stored ranges must share enough bars (gaps inside are
    // found by the chunk, which then rejects the pair naming its bar count).
    let width = minutes * MINUTE_MS;
    for (i, a) in symbols.iter().enumerate() {
        for b in &symbols[i + 1..] {
            let (fa, la) = stored[a];
            let (fb, lb) = stored[b];
            let from = start_ms.max(fa).max(fb);
            let to = end_ms.min(la).min(lb);
            let shared = if to > from {
                (to - 1).div_euclid(width) - from.div_euclid(width) + 1
            } else {
                0
            };
            if shared < MIN_OVERLAP_BARS {
                return Err(ApiError::invalid(
                    "insufficient_overlap",
                    format!(
                        "{a} and {b} share {shared} bars of {} in the range; a pair needs at least {MIN_OVERLAP_BARS}",
                        request.timeframe
                    ),
                )
                .with_details(json!({"field": "symbols", "pair": [a, b], "bars": shared, "minimum": MIN_OVERLAP_BARS})));
            }
        }
    }
    let pairs_per_job = match request.pairs_per_job {
        Some(n) => n as usize,
        None => (BARS_PER_JOB / bars.max(1)).clamp(1, 25) as usize,
    };
    Ok(ScreenPlan {
        exchange: request.exchange.clone(),
        symbols,
        excluded,
        start_ms,
        end_ms,
        timeframe: request.timeframe.clone(),
        minutes,
        significance,
        kalman: request.kalman,
        pairs_per_job,
        max_parallel: request.max_parallel,
    })
}

fn execute<'a>(rt: &'a dyn Runtime, job: &'a JobRecord) -> BoxFuture<'a, anyhow::Result<Outcome>> {
    Box::pin(async move {
        let plan: ScreenPlan = match read_plan(job) {
            Ok(plan) => plan,
            Err(outcome) => return Ok(outcome),
        };
        let engine = rt.engine();
        let pairs = plan.pairs();
        let chunks: Vec<(i64, Value)> = pairs
            .chunks(plan.pairs_per_job)
            .enumerate()
            .map(|(c, chunk)| {
                let child = ChunkPlan {
                    exchange: plan.exchange.clone(),
                    start_ms: plan.start_ms,
                    end_ms: plan.end_ms,
                    timeframe: plan.timeframe.clone(),
                    minutes: plan.minutes,
                    significance: plan.significance,
                    kalman: plan.kalman,
                    first_pair: c * plan.pairs_per_job,
                    pairs: chunk.to_vec(),
                };
                (
                    c as i64,
                    serde_json::to_value(child).expect("plans serialize"),
                )
            })
            .collect();
        let counts = rt.store().child_counts(&job.id).await?;
        if counts.total < chunks.len() as i64 {
            engine
                .create_children(
                    job,
                    &chunk::KIND,
                    chunks.clone(),
                    plan.max_parallel.map(i64::from),
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
        combine(rt, job, &plan, &pairs).await
    })
}

/// Every chunk has ended: checks that they all read the same candles, then
/// ranks the pairs.
async fn combine(
    rt: &dyn Runtime,
    job: &JobRecord,
    plan: &ScreenPlan,
    pairs: &[[String; 2]],
) -> anyhow::Result<Outcome> {
    let mut rows: Vec<Option<Value>> = vec![None; pairs.len()];
    let mut candles: Map<String, Value> = Map::new();
    let mut versions = Value::Null;
    let mut children = Vec::new();
    let mut pages = rt.store().child_pages(&job.id, -1, 100);
    while let Some(page) = pages.next().await? {
        for child in page {
            children
                .push(json!({"index": child.index, "job_id": child.id, "status": child.status}));
            let first = child.index as usize * plan.pairs_per_job;
            let last = (first + plan.pairs_per_job).min(pairs.len());
            match (child.status, child.body) {
                (JobStatus::Succeeded, Some(body)) => {
                    for (series, print) in body["provenance"]["candles"]
                        .as_object()
                        .into_iter()
                        .flatten()
                    {
                        match candles.get(series) {
                            Some(seen) if seen != print => {
                                return Ok(Outcome::Failed(ErrorBody::new(
                                    "candles_changed",
                                    format!(
                                        "the candles of {series} changed while the screen ran (chunks read different rows); nothing was mixed: resubmit the screen"
                                    ),
                                ).with_details(json!({"series": series, "one": seen, "other": print}))));
                            }
                            Some(_) => {}
                            None => {
                                candles.insert(series.clone(), print.clone());
                            }
                        }
                    }
                    if versions.is_null() {
                        versions = json!({
                            "statsmodels": body["provenance"]["statsmodels_version"],
                            "numpy": body["provenance"]["numpy_version"],
                        });
                    }
                    for (k, row) in body["rows"].as_array().into_iter().flatten().enumerate() {
                        if let Some(slot) = rows.get_mut(first + k) {
                            *slot = Some(row.clone());
                        }
                    }
                }
                (status, _) => {
                    let why = child.error.map_or_else(
                        || format!("the chunk computing this pair ended {}", status.as_str()),
                        |e| format!("the chunk computing this pair failed: {}", e.message),
                    );
                    for slot in rows.iter_mut().take(last).skip(first) {
                        *slot = Some(
                            json!({"cointegrated": false, "reason": why, "chunk_job_id": child.id}),
                        );
                    }
                }
            }
        }
    }
    let mut rows: Vec<Value> = rows
        .into_iter()
        .zip(pairs)
        .map(|(row, pair)| {
            let mut row = row.unwrap_or_else(|| {
                json!({"cointegrated": false, "reason": "the chunk computing this pair is missing"})
            });
            row["symbols"] = json!(pair);
            row
        })
        .collect();
    rank(&mut rows);
    for (i, row) in rows.iter_mut().enumerate() {
        row["rank"] = json!(i + 1);
    }
    let cointegrated = rows.iter().filter(|r| r["cointegrated"] == true).count();
    let without = rows.iter().filter(|r| r["engle_granger"].is_null()).count();
    let best = rows.first().cloned();
    let summary = json!({
        "pairs": rows.len(),
        "cointegrated": cointegrated,
        "best_pair": best.as_ref().map(|b| b["symbols"].clone()),
        "best_cointegrated": best.as_ref().map(|b| b["cointegrated"].clone()),
    });
    let result = PairsScreenResult {
        total: rows.len(),
        cointegrated,
        without_statistics: without,
        significance: plan.significance,
        best,
        setup: json!({
            "exchange": plan.exchange,
            "symbols": plan.symbols,
            "excluded_symbols": plan.excluded,
            "start": to_rfc3339(plan.start_ms),
            "end": to_rfc3339(plan.end_ms),
            "timeframe": plan.timeframe,
            "kalman": plan.kalman,
            "minimum_overlap_bars": MIN_OVERLAP_BARS,
            "resampling": "closes of 1m candles resampled in Rust: a bar is the epoch-aligned timeframe interval, its close the last stored 1m close in it; pairs are aligned on the bars both series have",
            "decision": "cointegrated when the Engle–Granger p-value is below the significance in both orderings",
            "ranking": "cointegrated first, then pairs with statistics, then by the larger Engle–Granger p-value ascending, then the smaller, then by symbols",
            "pairs_per_job": plan.pairs_per_job,
            "children": children,
        }),
        provenance: json!({
            "candles": candles,
            "versions": versions,
            "params": job.params,
        }),
    };
    Ok(Outcome::Succeeded {
        result: Box::new(JobResult {
            body: serde_json::to_value(result).expect("results serialize"),
            parts: vec![("pairs".into(), rows)],
        }),
        summary,
    })
}

/// The screen's order: cointegrated first, then pairs with statistics, then
/// the larger Engle–Granger p-value, the smaller one, the symbols.
pub fn rank(rows: &mut [Value]) {
    fn key(row: &Value) -> (bool, bool, f64, f64, String) {
        let p = |name: &str| row["engle_granger"][name]["p_value"].as_f64();
        let (ab, ba) = (p("a_on_b"), p("b_on_a"));
        let worst = match (ab, ba) {
            (Some(x), Some(y)) => x.max(y),
            _ => f64::INFINITY,
        };
        let better = match (ab, ba) {
            (Some(x), Some(y)) => x.min(y),
            _ => f64::INFINITY,
        };
        (
            row["cointegrated"] == true,
            ab.is_some() && ba.is_some(),
            worst,
            better,
            row["symbols"].to_string(),
        )
    }
    rows.sort_by(|x, y| {
        let (a, b) = (key(x), key(y));
        b.0.cmp(&a.0)
            .then(b.1.cmp(&a.1))
            .then(a.2.total_cmp(&b.2))
            .then(a.3.total_cmp(&b.3))
            .then_with(|| a.4.cmp(&b.4))
            .then(Ordering::Equal)
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(symbols: [&str; 2], cointegrated: bool, ab: Option<f64>, ba: Option<f64>) -> Value {
        let mut eg = json!({});
        if let (Some(ab), Some(ba)) = (ab, ba) {
            eg = json!({"a_on_b": {"p_value": ab}, "b_on_a": {"p_value": ba}});
        }
        let mut row = json!({"symbols": symbols, "cointegrated": cointegrated});
        if !eg.as_object().unwrap().is_empty() {
            row["engle_granger"] = eg;
        }
        row
    }

    #[test]
    fn ranking_puts_cointegrated_pairs_first_then_p_values() {
        let mut rows = vec![
            row(["A", "B"], false, Some(0.3), Some(0.02)),
            row(["A", "C"], false, None, None),
            row(["B", "C"], true, Some(0.01), Some(0.04)),
            row(["A", "D"], true, Some(0.001), Some(0.002)),
            row(["B", "D"], false, Some(0.2), Some(0.25)),
        ];
        rank(&mut rows);
        let order: Vec<String> = rows.iter().map(|r| r["symbols"].to_string()).collect();
        assert_eq!(
            order,
            vec![
                r#"["A","D"]"#,
                r#"["B","C"]"#,
                r#"["B","D"]"#,
                r#"["A","B"]"#,
                r#"["A","C"]"#
            ]
        );
    }

    #[test]
    fn pairs_in_row_major_order() {
        let plan = ScreenPlan {
            exchange: "x".into(),
            symbols: vec!["A-U".into(), "B-U".into(), "C-U".into()],
            excluded: vec![],
            start_ms: 0,
            end_ms: 1,
            timeframe: "1m".into(),
            minutes: 1,
            significance: 0.05,
            kalman: false,
            pairs_per_job: 2,
            max_parallel: None,
        };
        let pairs = plan.pairs();
        assert_eq!(pairs.len(), 3);
        assert_eq!(pairs[1], ["A-U".to_string(), "C-U".to_string()]);
        assert_eq!(pairs[2], ["B-U".to_string(), "C-U".to_string()]);
    }
}
