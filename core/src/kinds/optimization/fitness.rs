//! Jesse's optimization fitness (`jesse.modes.optimize_mode.fitness.get_fitness`
//! in 3.5.3), computed from a training backtest's metrics with the same float
//! operations in the same order, so a trial's fitness is bit-identical to
//! Jesse's: 0.0001 for five trades or fewer, for a negative ratio and for a
//! NaN score; otherwise `min(log10(total)/log10(optimal_total), 1)` times the
//! ratio normalized from `[-0.5, max]`. Jesse runs the testing backtest only
//! when the ratio is not negative (NaN included); so do we.
//!
//! At infinity too: a ratio of +inf (e.g. `sortino_ratio` of a backtest with
//! no losing day) gives Jesse's score +inf, the best; −inf is negative, so
//! 0.0001. The metrics carry ±inf as null plus `metrics_special`
//! ([`crate::special`]), which is read back here, never taken as NaN.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The score Jesse gives a parameter set it cannot use.
pub const UNUSABLE: f64 = 0.0001;

/// Jesse's objective functions, with the metric each reads and its normalization maximum.
pub const FITNESS: &[(&str, &str, f64)] = &[
    ("sharpe", "sharpe_ratio", 5.0),
    ("calmar", "calmar_ratio", 30.0),
    ("sortino", "sortino_ratio", 15.0),
    ("omega", "omega_ratio", 5.0),
    ("serenity", "serenity_index", 15.0),
    ("smart sharpe", "smart_sharpe", 5.0),
    ("smart sortino", "smart_sortino", 15.0),
];

/// The Jesse objective function named `name` (`smart_sharpe` is accepted for
/// `smart sharpe`), as its canonical name.
pub fn fitness_name(name: &str) -> Option<&'static str> {
    let wanted = name.trim().to_lowercase().replace('_', " ");
    FITNESS
        .iter()
        .find(|(n, _, _)| *n == wanted)
        .map(|(n, _, _)| *n)
}

/// A fitness and whether Jesse would run the testing backtest for it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Fitness {
    pub score: f64,
    pub run_testing: bool,
}

/// Jesse's fitness of a training backtest's metrics; `specials` is the
/// backtest's `metrics_special` (which null metrics were ±inf or NaN). A null
/// metric without an entry there counts as NaN. The score may be +inf.
pub fn fitness(objective: &str, optimal_total: f64, training: &Value, specials: &Value) -> Fitness {
    let number = |key: &str| crate::special::metric(training, specials, key);
    let unusable = Fitness {
        score: UNUSABLE,
        run_testing: false,
    };
    let total = number("total");
    // Jesse: `if training_metrics['total'] > 5` (NaN compares false).
    if total.is_nan() || total <= 5.0 {
        return unusable;
    }
    let Some((_, metric, max)) = FITNESS.iter().find(|(n, _, _)| *n == objective) else {
        return unusable;
    };
    let total_effect_rate = (total.log10() / optimal_total.log10()).min(1.0);
    let ratio = number(metric);
    // jh.normalize(ratio, -.5, max) = (x - x_min) / (x_max - x_min)
    let ratio_normalized = (ratio - -0.5) / (max - -0.5);
    if ratio < 0.0 {
        return unusable;
    }
    let score = total_effect_rate * ratio_normalized;
    Fitness {
        score: if score.is_nan() { UNUSABLE } else { score },
        run_testing: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jesse_rules() {
        let f = fitness(
            "sharpe",
            200.0,
            &json!({"total": 5, "sharpe_ratio": 3.0}),
            &Value::Null,
        );
        assert_eq!(
            f,
            Fitness {
                score: UNUSABLE,
                run_testing: false
            }
        );
        let f = fitness(
            "sharpe",
            200.0,
            &json!({"total": 40, "sharpe_ratio": -0.1}),
            &Value::Null,
        );
        assert_eq!(
            f,
            Fitness {
                score: UNUSABLE,
                run_testing: false
            }
        );
        // NaN ratio: Jesse runs the testing backtest, then scores 0.0001.
        let f = fitness(
            "sharpe",
            200.0,
            &json!({"total": 40, "sharpe_ratio": null}),
            &Value::Null,
        );
        assert_eq!(
            f,
            Fitness {
                score: UNUSABLE,
                run_testing: true
            }
        );
        let f = fitness(
            "calmar",
            200.0,
            &json!({"total": 40, "calmar_ratio": 2.0}),
            &Value::Null,
        );
        let expected = ((40f64).log10() / (200f64).log10()).min(1.0) * ((2.0 + 0.5) / (30.0 + 0.5));
        assert_eq!(f.score.to_bits(), expected.to_bits());
        // More trades than optimal_total cap the effect at 1.
        let f = fitness(
            "sharpe",
            10.0,
            &json!({"total": 400, "sharpe_ratio": 1.0}),
            &Value::Null,
        );
        assert_eq!(f.score, 1.5 / 5.5);
        assert_eq!(fitness_name("Smart_Sortino"), Some("smart sortino"));
    }

    #[test]
    fn infinity_as_jesse() {
        // No losing day: Jesse's sortino is +inf and so is its score (the best).
        let metrics = json!({"total": 12, "sortino_ratio": null});
        let f = fitness(
            "sortino",
            200.0,
            &metrics,
            &json!({"sortino_ratio": "+inf"}),
        );
        assert_eq!(f.score, f64::INFINITY);
        assert!(f.run_testing);
        // −inf is a negative ratio: 0.0001, no testing run.
        let f = fitness(
            "sortino",
            200.0,
            &metrics,
            &json!({"sortino_ratio": "-inf"}),
        );
        assert_eq!(
            f,
            Fitness {
                score: UNUSABLE,
                run_testing: false
            }
        );
        // A null without a special entry is NaN, as before.
        let f = fitness("sortino", 200.0, &metrics, &Value::Null);
        assert_eq!(f.score, UNUSABLE);
        assert!(f.run_testing);
        assert_eq!(fitness_name("profit"), None);
    }
}
