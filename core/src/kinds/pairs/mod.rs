//! Pairs trading: a cointegration screen over stored series, and pairs
//! backtests of the shipped `PairsTrading` strategy.
//!
//! - [`screen`] (`pairs_screen`): a parent that validates the symbols, the
//!   range and their overlap, cuts every pair of symbols into chunks and runs
//!   each chunk as a [`chunk`] child (`pairs_screen_chunk`, a runner job) spread
//!   over the fleet; then ranks all pairs into its `pairs` rows.
//! - [`chunk`]: loads the stored 1m candles, resamples the closes to the
//!   screen's timeframe here in Rust, aligns each pair bar by bar and hands the
//!   arrays to the runner's `pairs_stats` (statsmodels from the pinned venv).
//! - [`trade`] (`pairs_backtest`): sugar that plans an ordinary two-route
//!   backtest of `PairsTrading` (optionally from a screened pair and its hedge
//!   ratio) as its child, so the backtest is a normal `backtest` job.
//!
//! docs/PAIRS.md describes every statistic, its statsmodels call and the
//! ranking. Nothing here invents numbers: a pair whose statistics cannot be
//! computed says why.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::time::{MINUTE_MS, to_rfc3339};

pub mod chunk;
pub mod screen;
pub mod trade;

/// The most symbols one screen takes (1225 pairs).
pub const MAX_SYMBOLS: usize = 50;
/// Fewest bars two series must share (after resampling) for a pair's statistics.
pub const MIN_OVERLAP_BARS: i64 = 100;
/// Most bars per series (after resampling): bounds each pair's arrays.
pub const MAX_BARS: i64 = 50_000;
/// Default significance of the Engle–Granger decision.
pub const DEFAULT_SIGNIFICANCE: f64 = 0.05;
/// The Kalman hedge-ratio filter's δ: its state noise per bar is
/// Q = δ/(1−δ)·W·P₀, the warm-up's OLS covariance P₀ scaled to one bar of
/// the W warm-up bars, so it remembers about 1/√δ = 100 bars (docs/PAIRS.md;
/// the filter is `kalman_hedge` in the runner and in PairsTrading).
pub const KALMAN_DELTA: f64 = 1e-4;
/// The most points of a Kalman hedge-ratio path kept per pair.
pub const KALMAN_PATH_POINTS: usize = 200;
/// The strategy a pairs backtest runs.
pub const STRATEGY: &str = "PairsTrading";

/// Timeframes a screen accepts: Jesse's, up to a day (their bars are aligned
/// to the epoch, as Jesse aligns them).
pub fn screen_timeframe_minutes(timeframe: &str) -> Option<i64> {
    crate::jesse::timeframe_minutes(timeframe).filter(|m| *m <= 1440)
}

/// One series' closes resampled to a timeframe: the bar's open time (ms,
/// a multiple of the timeframe since the epoch) and the close of the last 1m
/// candle stored in it. Bars without any stored minute are absent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Closes {
    pub time: Vec<i64>,
    pub close: Vec<f64>,
}

/// Resamples a flat `[N × 6]` buffer of 1m candles (Jesse's column order:
/// timestamp, open, close, high, low, volume; ascending) to the closes of
/// `minutes`-minute bars.
pub fn resample_closes(flat: &[f64], minutes: i64) -> Closes {
    let width = minutes * MINUTE_MS;
    let mut out = Closes::default();
    for row in flat.chunks_exact(6) {
        let ts = row[0] as i64;
        let bar = ts - ts.rem_euclid(width);
        if out.time.last() == Some(&bar) {
            *out.close.last_mut().expect("a bar") = row[2];
        } else {
            out.time.push(bar);
            out.close.push(row[2]);
        }
    }
    out
}

/// Two series aligned on the bars both have (an inner join on bar time).
pub fn align(a: &Closes, b: &Closes) -> (Vec<i64>, Vec<f64>, Vec<f64>) {
    let (mut i, mut j) = (0, 0);
    let (mut time, mut xa, mut xb) = (Vec::new(), Vec::new(), Vec::new());
    while i < a.time.len() && j < b.time.len() {
        match a.time[i].cmp(&b.time[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                time.push(a.time[i]);
                xa.push(a.close[i]);
                xb.push(b.close[j]);
                i += 1;
                j += 1;
            }
        }
    }
    (time, xa, xb)
}

/// A loaded series' provenance, as backtests record theirs: rows, first and
/// last minute, and the sha256 of the float64 buffer (little-endian, Jesse's
/// column order), equal to a backtest's fingerprint of the same rows.
pub fn fingerprint(flat: &[f64]) -> Value {
    let mut hasher = Sha256::new();
    for v in flat {
        hasher.update(v.to_le_bytes());
    }
    let rows = flat.len() / 6;
    json!({
        "rows": rows,
        "first": (rows > 0).then(|| to_rfc3339(flat[0] as i64)),
        "last": (rows > 0).then(|| to_rfc3339(flat[(rows - 1) * 6] as i64)),
        "sha256": hex::encode(hasher.finalize()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(minute: i64, close: f64) -> [f64; 6] {
        [(minute * MINUTE_MS) as f64, 1.0, close, 2.0, 0.5, 1.0]
    }

    #[test]
    fn resampling_keeps_the_last_close_of_each_bar() {
        // Minutes 0..=4 and 6 with 5-minute bars: bar 0 closes at minute 4's
        // close, bar 5 holds only minute 6.
        let flat: Vec<f64> = [0, 1, 2, 3, 4, 6]
            .iter()
            .flat_map(|m| row(*m, *m as f64 * 10.0))
            .collect();
        let closes = resample_closes(&flat, 5);
        assert_eq!(closes.time, vec![0, 5 * MINUTE_MS]);
        assert_eq!(closes.close, vec![40.0, 60.0]);
    }

    #[test]
    fn alignment_is_an_inner_join() {
        let a = Closes {
            time: vec![0, 1, 2, 4],
            close: vec![1.0, 2.0, 3.0, 5.0],
        };
        let b = Closes {
            time: vec![1, 3, 4],
            close: vec![10.0, 30.0, 50.0],
        };
        let (t, xa, xb) = align(&a, &b);
        assert_eq!(t, vec![1, 4]);
        assert_eq!(xa, vec![2.0, 5.0]);
        assert_eq!(xb, vec![10.0, 50.0]);
    }

    #[test]
    fn timeframes_up_to_a_day() {
        assert_eq!(screen_timeframe_minutes("15m"), Some(15));
        assert_eq!(screen_timeframe_minutes("1D"), Some(1440));
        assert_eq!(screen_timeframe_minutes("1W"), None);
        assert_eq!(screen_timeframe_minutes("7m"), None);
    }
}
