//! Non-finite numbers in JSON. JSON cannot carry NaN or ±infinity, yet Jesse
//! computes them (e.g. `sortino_ratio = +inf` when no day lost) and its
//! optimization fitness ranks +inf best. Such a number is written as `null`
//! with a `<field>_special` sibling saying which it was (`"+inf"`, `"-inf"`,
//! `"nan"`): a backtest's `metrics` go with `metrics_special` (metric key to
//! kind), a trial's `fitness` with `fitness_special`. Readers that rank or
//! score put the value back with [`read`].
//!
//! Must not: turn a non-finite value into a finite one, or drop the sibling.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which non-finite number a `null` stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Special {
    #[serde(rename = "+inf")]
    PosInf,
    #[serde(rename = "-inf")]
    NegInf,
    #[serde(rename = "nan")]
    Nan,
}

impl Special {
    /// The kind of a non-finite `x`; None for a finite one.
    pub fn of(x: f64) -> Option<Special> {
        if x.is_nan() {
            Some(Special::Nan)
        } else if x == f64::INFINITY {
            Some(Special::PosInf)
        } else if x == f64::NEG_INFINITY {
            Some(Special::NegInf)
        } else {
            None
        }
    }

    pub fn value(self) -> f64 {
        match self {
            Special::PosInf => f64::INFINITY,
            Special::NegInf => f64::NEG_INFINITY,
            Special::Nan => f64::NAN,
        }
    }
}

/// A number as JSON carries it: finite, or None beside its [`Special`].
pub fn split(x: f64) -> (Option<f64>, Option<Special>) {
    match Special::of(x) {
        None => (Some(x), None),
        special => (None, special),
    }
}

/// The number a JSON field and its `_special` sibling stand for: the number,
/// else the special value, else None (absent or not a number).
pub fn read(number: Option<&Value>, special: Option<&Value>) -> Option<f64> {
    number.and_then(Value::as_f64).or_else(|| {
        special
            .and_then(|s| serde_json::from_value::<Special>(s.clone()).ok())
            .map(Special::value)
    })
}

/// Metric `key` of a backtest's `metrics`, with its `metrics_special` entry
/// (NaN when neither holds a number, as Jesse's missing metrics compare).
pub fn metric(metrics: &Value, specials: &Value, key: &str) -> f64 {
    read(metrics.get(key), specials.get(key)).unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips() {
        for x in [f64::INFINITY, f64::NEG_INFINITY] {
            let (n, s) = split(x);
            assert_eq!(n, None);
            let s = serde_json::to_value(s).unwrap();
            assert_eq!(read(Some(&Value::Null), Some(&s)), Some(x));
        }
        assert_eq!(json!(Special::PosInf), json!("+inf"));
        assert!(read(None, Some(&json!("nan"))).unwrap().is_nan());
        assert_eq!(split(1.5), (Some(1.5), None));
        assert_eq!(read(Some(&json!(2.0)), Some(&json!("+inf"))), Some(2.0));
        assert_eq!(read(Some(&Value::Null), None), None);
        let m = json!({"sortino_ratio": null, "total": 7});
        let s = json!({"sortino_ratio": "+inf"});
        assert_eq!(metric(&m, &s, "sortino_ratio"), f64::INFINITY);
        assert_eq!(metric(&m, &s, "total"), 7.0);
        assert!(metric(&m, &Value::Null, "sortino_ratio").is_nan());
    }
}
