//! `pairs_screen_chunk`: one chunk of a pairs screen, in a runner. It loads
//! each symbol's stored 1m candles of the range once, fingerprints them,
//! resamples the closes to the screen's timeframe (see
//! [`super::resample_closes`]), aligns every pair on the bars both series
//! have and calls the runner's `pairs_stats` (statsmodels) once for the
//! chunk. Its result holds one row per pair, in the chunk's order, with the
//! Engle–Granger decision already made, and the candles' provenance.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{Closes, KALMAN_DELTA, MIN_OVERLAP_BARS, align, fingerprint, resample_closes};
use crate::kinds::{KindDef, Lane, Outcome, Runtime, read_plan, schema_of};
use crate::store::{JobRecord, JobResult};
use crate::time::to_rfc3339;

pub static KIND: KindDef = KindDef {
    name: "pairs_screen_chunk",
    description: "one chunk of a pairs screen's pairs (created by its screen)",
    lane: Lane::Runner,
    submit: None,
    request_schema: schema_of::<ChunkPlan>,
    result_schema: schema_of::<Map<String, Value>>,
    rows: None,
    plan: |_, _| {
        Box::pin(async {
            Err(crate::ApiError::invalid(
                "not_submittable",
                "screen chunks are created by their pairs screen",
            ))
        })
    },
    execute,
    parent: false,
};

/// A chunk job's params.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ChunkPlan {
    pub exchange: String,
    pub start_ms: i64,
    pub end_ms: i64,
    pub timeframe: String,
    pub minutes: i64,
    pub significance: f64,
    pub kalman: bool,
    /// The screen's index of this chunk's first pair.
    pub first_pair: usize,
    pub pairs: Vec<[String; 2]>,
}

fn execute<'a>(rt: &'a dyn Runtime, job: &'a JobRecord) -> BoxFuture<'a, anyhow::Result<Outcome>> {
    Box::pin(async move {
        let plan: ChunkPlan = match read_plan(job) {
            Ok(plan) => plan,
            Err(outcome) => return Ok(outcome),
        };
        let store = rt.store();
        store.set_progress(&job.id, 0.05, "loading candles").await?;
        let mut series: BTreeMap<String, Closes> = BTreeMap::new();
        let mut prints = Map::new();
        for symbol in plan.pairs.iter().flatten() {
            if series.contains_key(symbol) {
                continue;
            }
            let flat = store
                .load_candles(&plan.exchange, symbol, plan.start_ms, plan.end_ms)
                .await?;
            let minutes = plan.minutes;
            let (closes, print) = tokio::task::spawn_blocking(move || {
                (resample_closes(&flat, minutes), fingerprint(&flat))
            })
            .await?;
            prints.insert(format!("{}-{symbol}", plan.exchange), print);
            series.insert(symbol.clone(), closes);
        }

        // Pairs with enough shared bars go to statsmodels; the others are rejected here.
        let mut inputs = Vec::new();
        let mut aligned = Vec::with_capacity(plan.pairs.len());
        for [a, b] in &plan.pairs {
            let (time, xa, xb) = align(&series[a], &series[b]);
            let usable = time.len() as i64 >= MIN_OVERLAP_BARS;
            if usable {
                inputs.push(json!({"a": xa, "b": xb}));
            }
            aligned.push((time, usable));
        }
        store
            .set_progress(&job.id, 0.3, "computing statistics")
            .await?;
        let answer = if inputs.is_empty() {
            json!({"results": []})
        } else {
            let request =
                json!({"pairs": inputs, "kalman": plan.kalman, "kalman_delta": KALMAN_DELTA});
            match rt.call_python(&job.id, "pairs_stats", request).await? {
                Ok(answer) => answer,
                Err(outcome) => return Ok(outcome),
            }
        };
        let mut results = answer["results"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter();
        let mut rows = Vec::with_capacity(plan.pairs.len());
        for (pair, (time, usable)) in plan.pairs.iter().zip(aligned) {
            let stats = if usable { results.next() } else { None };
            rows.push(row(&plan, pair, &time, stats));
        }
        let body = json!({
            "rows": rows,
            "provenance": {
                "candles": prints,
                "statsmodels_version": answer["statsmodels_version"],
                "numpy_version": answer["numpy_version"],
            },
        });
        let summary = json!({
            "pairs": rows.len(),
            "cointegrated": rows.iter().filter(|r| r["cointegrated"] == true).count(),
        });
        Ok(Outcome::Succeeded {
            result: Box::new(JobResult {
                body,
                parts: Vec::new(),
            }),
            summary,
        })
    })
}

fn fmt_p(p: f64) -> String {
    if p < 0.0001 {
        format!("{p:.2e}")
    } else {
        format!("{p:.4}")
    }
}

/// One pair's row: its statistics (as `pairs_stats` answered them, with the
/// Kalman path's bar indices turned into times), the decision and its reason.
pub fn row(plan: &ChunkPlan, pair: &[String; 2], time: &[i64], stats: Option<Value>) -> Value {
    let [a, b] = pair;
    let bars = time.len();
    let mut row = json!({
        "symbols": pair,
        "bars": bars,
        "first_bar": time.first().map(|t| to_rfc3339(*t)),
        "last_bar": time.last().map(|t| to_rfc3339(*t)),
    });
    let Some(mut stats) = stats else {
        row["cointegrated"] = json!(false);
        row["reason"] = json!(format!(
            "{a} and {b} share only {bars} bars of {} (at least {MIN_OVERLAP_BARS} needed)",
            plan.timeframe
        ));
        return row;
    };
    if let Some(error) = stats["error"].as_str() {
        row["cointegrated"] = json!(false);
        row["reason"] = json!(format!("the statistics could not be computed: {error}"));
        return row;
    }
    if let Some(path) = stats["kalman"]["path"].as_array_mut() {
        for point in path.iter_mut() {
            let index = point[0].as_u64().unwrap_or(0) as usize;
            *point =
                json!({"time": time.get(index).map(|t| to_rfc3339(*t)), "hedge_ratio": point[1]});
        }
    }
    let s = plan.significance;
    let p_ab = stats["engle_granger"]["a_on_b"]["p_value"].as_f64();
    let p_ba = stats["engle_granger"]["b_on_a"]["p_value"].as_f64();
    let rejects = |p: Option<f64>| p.is_some_and(|p| p < s);
    let cointegrated = rejects(p_ab) && rejects(p_ba);
    stats["engle_granger"]["orderings_disagree"] = json!(rejects(p_ab) != rejects(p_ba));
    let reason = match (p_ab, p_ba) {
        (Some(x), Some(y)) if !rejects(Some(x)) && !rejects(Some(y)) => Some(format!(
            "engle_granger_p={} ({a} on {b}) and {} ({b} on {a}), both ≥ {s}: no cointegration in either ordering",
            fmt_p(x),
            fmt_p(y)
        )),
        (Some(x), Some(y)) if !cointegrated => {
            let (fails, p_fail, holds, p_hold) = if rejects(Some(x)) {
                (format!("{b} on {a}"), y, format!("{a} on {b}"), x)
            } else {
                (format!("{a} on {b}"), x, format!("{b} on {a}"), y)
            };
            Some(format!(
                "engle_granger_p={} ≥ {s} for {fails}; the orderings disagree ({holds}: {})",
                fmt_p(p_fail),
                fmt_p(p_hold)
            ))
        }
        (Some(_), Some(_)) => None,
        _ => Some("an Engle–Granger p-value is not a number".to_string()),
    };
    if let Some(bars) = stats["half_life_bars"].as_f64() {
        stats["half_life_minutes"] = json!(bars * plan.minutes as f64);
    }
    if let (Some(row_map), Some(stats)) = (row.as_object_mut(), stats.as_object()) {
        for (k, v) in stats {
            row_map.insert(k.clone(), v.clone());
        }
    }
    row["cointegrated"] = json!(cointegrated);
    row["reason"] = json!(reason);
    row["bar_minutes"] = json!(plan.minutes);
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> ChunkPlan {
        ChunkPlan {
            exchange: "x".into(),
            start_ms: 0,
            end_ms: 1,
            timeframe: "15m".into(),
            minutes: 15,
            significance: 0.05,
            kalman: false,
            first_pair: 0,
            pairs: vec![],
        }
    }

    fn stats(ab: f64, ba: f64) -> Value {
        json!({"engle_granger": {"a_on_b": {"p_value": ab}, "b_on_a": {"p_value": ba}}, "half_life_bars": 2.0})
    }

    #[test]
    fn decisions_and_reasons() {
        let pair = ["A-U".to_string(), "B-U".to_string()];
        let time: Vec<i64> = (0..200).collect();
        let yes = row(&plan(), &pair, &time, Some(stats(0.01, 0.02)));
        assert_eq!(yes["cointegrated"], true);
        assert!(yes["reason"].is_null());
        assert_eq!(yes["engle_granger"]["orderings_disagree"], false);
        assert_eq!(yes["half_life_minutes"], 30.0);
        let no = row(&plan(), &pair, &time, Some(stats(0.41, 0.3)));
        assert_eq!(no["cointegrated"], false);
        assert!(
            no["reason"]
                .as_str()
                .unwrap()
                .starts_with("engle_granger_p=0.4100 (A-U on B-U) and 0.3000"),
            "{no}"
        );
        let split = row(&plan(), &pair, &time, Some(stats(0.01, 0.3)));
        assert_eq!(split["cointegrated"], false);
        assert_eq!(split["engle_granger"]["orderings_disagree"], true);
        assert!(split["reason"].as_str().unwrap().contains("disagree"));
        let short = row(&plan(), &pair, &time[..50], None);
        assert!(
            short["reason"]
                .as_str()
                .unwrap()
                .contains("share only 50 bars")
        );
    }
}
