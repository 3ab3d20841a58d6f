//! The pipeline's Markdown report: verdict, steps, gates, then each step's key
//! tables and charts. Every number sits under the id of the job that produced
//! it, so a reader can open that job and find the number again.

use std::fmt::Write;

use serde_json::{Map, Value};

use super::PipelinePlan;
use super::refs::GateCheck;

pub struct Input<'a> {
    pub job_id: &'a str,
    pub plan: &'a PipelinePlan,
    pub outputs: &'a Map<String, Value>,
    /// Steps that had started when the pipeline stopped: step id → job id.
    pub stopped: &'a std::collections::HashMap<String, String>,
    pub checks: &'a [(usize, GateCheck)],
    pub verdict: &'a Value,
}

/// Jesse metrics shown for a backtest, in this order.
const BACKTEST_METRICS: &[(&str, &str)] = &[
    ("total", "trades"),
    ("net_profit_percentage", "net profit %"),
    ("win_rate", "win rate"),
    ("sharpe_ratio", "Sharpe"),
    ("calmar_ratio", "Calmar"),
    ("max_drawdown", "max drawdown %"),
    ("annual_return", "annual return %"),
];

pub fn markdown(input: &Input) -> String {
    let mut md = String::new();
    let plan = input.plan;
    let _ = writeln!(md, "# {}\n", escape(&plan.name));
    let _ = writeln!(
        md,
        "Pipeline job `{}`{}.\n",
        input.job_id,
        plan.template
            .as_ref()
            .map(|t| format!(", template `{t}`"))
            .unwrap_or_default()
    );
    let outcome = input.verdict["outcome"].as_str().unwrap_or("?");
    let _ = writeln!(
        md,
        "**Verdict: {}.** {}\n",
        outcome.to_uppercase(),
        escape(input.verdict["reason"].as_str().unwrap_or(""))
    );
    if let Some(params) = plan.params.as_ref().and_then(Value::as_object) {
        let shown: Vec<String> = params
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| format!("{k} = {}", inline(v)))
            .collect();
        let _ = writeln!(md, "Parameters: {}.\n", escape(&shown.join(", ")));
    }
    for note in &plan.notes {
        let _ = writeln!(md, "> {}\n", escape(note));
    }
    if !plan.sources.is_empty() {
        let pinned: Vec<String> = plan
            .sources
            .iter()
            .map(|s| format!("{} (sha256 `{}`)", s.name, &s.sha256))
            .collect();
        let _ = writeln!(
            md,
            "Strategy code pinned at submit, the same in every step: {}.\n",
            pinned.join(", ")
        );
    }

    let _ = writeln!(md, "## Steps\n");
    let _ = writeln!(md, "| step | kind | job | status | headline |");
    let _ = writeln!(md, "|---|---|---|---|---|");
    for step in &plan.steps {
        let output = input.outputs.get(&step.id);
        let stopped = input.stopped.get(&step.id);
        let job = output
            .and_then(|o| o["job_id"].as_str())
            .or(stopped.map(String::as_str))
            .map_or("–".to_string(), |id| format!("`{id}`"));
        let status = if output.is_some() {
            "succeeded"
        } else if stopped.is_some() {
            "stopped by the pipeline"
        } else {
            "not run"
        };
        let headline = output.map(|o| headline(&o["summary"])).unwrap_or_default();
        let _ = writeln!(
            md,
            "| {} | {} | {job} | {status} | {} |",
            step.id,
            step.kind,
            escape(&headline)
        );
    }

    for step in &plan.steps {
        if let Some(warning) = input
            .outputs
            .get(&step.id)
            .and_then(|o| o["summary"]["warning"].as_str())
        {
            let _ = writeln!(
                md,
                "\n> **Warning** (step {}): {}",
                step.id,
                escape(warning)
            );
        }
    }

    if !input.checks.is_empty() {
        let _ = writeln!(md, "\n## Gates\n");
        let _ = writeln!(
            md,
            "| gate | what it measures | value | from job | result |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|");
        for (_, check) in input.checks {
            let result = if check.passed {
                "passed".to_string()
            } else {
                format!("**failed**: {}", check.reason.clone().unwrap_or_default())
            };
            let kind = plan
                .steps
                .iter()
                .find(|s| s.id == check.step)
                .map_or("", |s| s.kind.as_str());
            let path = super::refs::parse_gate(&check.gate)
                .map(|g| g.path)
                .unwrap_or_default();
            let _ = writeln!(
                md,
                "| `{}` | {} | {} | `{}` | {} |",
                check.gate,
                escape(&measures(kind, &path, input.outputs.get(&check.step))),
                number(&check.value),
                check.job_id.as_str().unwrap_or("?"),
                escape(&result)
            );
        }
    }

    for step in &plan.steps {
        let Some(output) = input.outputs.get(&step.id) else {
            continue;
        };
        let id = output["job_id"].as_str().unwrap_or("?");
        let _ = writeln!(md, "\n## {} ({}, job `{id}`)\n", step.id, step.kind);
        match step.kind.as_str() {
            "backtest" => backtest(&mut md, id, output),
            "optimization" => optimization(&mut md, output),
            "walk_forward" => walk_forward(&mut md, output),
            "monte_carlo" => monte_carlo(&mut md, id, output),
            "strategy_validation" => validation(&mut md, output),
            _ => summary_table(&mut md, &output["summary"]),
        }
    }
    md
}

/// What a gate's statistic measures, in one clause, from the producing
/// step's kind, the path the gate reads and that step's output (its setup:
/// method, scenarios, blocks), so a reader can judge the threshold.
pub fn measures(kind: &str, path: &[String], output: Option<&Value>) -> String {
    let null = Value::Null;
    let output = output.unwrap_or(&null);
    let last = path.last().map_or("", String::as_str);
    let first = path.first().map_or("", String::as_str);
    let count = |v: &Value| match v.as_u64() {
        Some(n) => thousands(n),
        None => "the".into(),
    };
    match kind {
        "monte_carlo" => {
            let setup = &output["setup"];
            let scenarios = count(&setup["scenarios"]);
            let under = match setup["mode"].as_str() {
                Some("candles") => format!(
                    "under candle scenarios from Jesse's {} (each a backtest; mark-to-market)",
                    setup["pipeline"]["class"].as_str().unwrap_or("candle pipeline")
                ),
                _ => {
                    let method: Option<crate::kinds::monte_carlo::Method> =
                        serde_json::from_value(setup["method"].clone()).ok();
                    let blocks = if let Some(mean) = setup["mean_block_length"].as_f64() {
                        format!(", mean block {} trades", number(&Value::from(mean)))
                    } else if let Some(b) = setup["block_length"].as_u64() {
                        format!(", blocks of {b} trades")
                    } else {
                        String::new()
                    };
                    format!(
                        "under {}{blocks}",
                        method.map_or("resampling of trade returns", |m| m.describe())
                    )
                }
            };
            match last {
                "probability_of_loss" => format!(
                    "P(loss): share of {scenarios} scenarios whose compounded total return is below 0, {under}"
                ),
                "probability_of_ruin" => format!(
                    "P(ruin): share of {scenarios} scenarios whose {} max drawdown reaches {} %, {under}",
                    if setup["mode"] == "candles" {
                        "mark-to-market"
                    } else {
                        "closed-trade"
                    },
                    number(&output["ruin_drawdown"])
                ),
                _ => format!(
                    "{} over {scenarios} scenarios, {under}",
                    path.join(".")
                ),
            }
        }
        "optimization" if last == "pbo" => {
            let pbo = &output["overfitting"]["pbo"];
            format!(
                "PBO (Bailey et al. 2015): share of {} CSCV splits ({} blocks of daily returns, {} trials) in which \
the in-sample best trial ranks at or below the out-of-sample median",
                count(&pbo["n_combinations"]),
                number(&pbo["partitions"]),
                number(&pbo["n_trials"]),
            )
        }
        "optimization" if matches!(last, "deflated_sharpe" | "dsr") => {
            let dsr = &output["overfitting"]["deflated_sharpe"];
            format!(
                "DSR (Bailey & López de Prado 2014): probability that the best trial's true Sharpe ratio is above \
the best expected of {} skill-less trials",
                number(&dsr["n_trials"])
            )
        }
        "optimization" if last == "psr" => {
            "PSR: probability that the best trial's true Sharpe ratio is above 0, ignoring the search".into()
        }
        "walk_forward" if first == "efficiency" => {
            let method = output["efficiency_method"]
                .as_str()
                .or_else(|| output["efficiency"]["method"].as_str())
                .unwrap_or(
                    "annualized out-of-sample return of the stitched windows ÷ mean annualized in-sample return",
                );
            format!(
                "walk-forward efficiency over {} windows: {method}",
                number(&output["summary"]["windows"])
            )
        }
        "significance_test" if last == "p_value" => format!(
            "p-value of Jesse's rule significance test: share of {} bootstrap simulations (mean block {} bars) \
whose mean next-bar return of signal × detrended return is ≥ the observed; 0 means p < 1/{}",
            count(&output["n_simulations"]),
            number(&output["bootstrap_mean_block_length"]),
            number(&output["n_simulations"]),
        ),
        "strategy_validation" if last == "valid" => {
            "the strategy loaded and passed deep validation in a runner".into()
        }
        "pairs_screen" if last == "cointegrated" => {
            "pairs cointegrated (Engle–Granger) at the screen's significance on the in-sample range".into()
        }
        "backtest" | "pairs_backtest" => {
            format!("Jesse's {last} of the backtest (mark-to-market)")
        }
        _ => format!("{} of the {kind} step's result", path.join(".")),
    }
}

/// 1000 → "1,000".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn backtest(md: &mut String, id: &str, output: &Value) {
    let metrics = &output["metrics"];
    let _ = writeln!(md, "| metric | value |\n|---|---|");
    for (key, label) in BACKTEST_METRICS {
        let _ = writeln!(md, "| {label} | {} |", number(&metrics[*key]));
    }
    if let Some(data) = output["provenance"].get("data").and_then(Value::as_str) {
        let _ = writeln!(md, "\nCandles: {}.", escape(data));
    }
    let _ = writeln!(
        md,
        "\n![equity of job {id}](/v1/jobs/{id}/charts/equity.png)\n![drawdown of job {id}](/v1/jobs/{id}/charts/drawdown.png)"
    );
}

fn optimization(md: &mut String, output: &Value) {
    let best = &output["best"];
    let _ = writeln!(
        md,
        "Best trial {} by the training objective {}; its parameters: {}.\n",
        number(&best["trial"]),
        number(&best["values"][0]),
        inline(&best["params"])
    );
    let overfitting = &output["overfitting"];
    let _ = writeln!(
        md,
        "| overfitting statistic | value | note |\n|---|---|---|"
    );
    for (label, value, reason) in [
        (
            "PBO (probability of backtest overfitting)",
            &overfitting["pbo"]["pbo"],
            &overfitting["pbo"]["reason"],
        ),
        (
            "deflated Sharpe ratio",
            &overfitting["deflated_sharpe"]["dsr"],
            &overfitting["deflated_sharpe"]["reason"],
        ),
    ] {
        let _ = writeln!(
            md,
            "| {label} | {} | {} |",
            number(value),
            escape(reason.as_str().unwrap_or(""))
        );
    }
    if let Some(rows) = output["leaderboard"].as_array() {
        let _ = writeln!(
            md,
            "\n| rank | trial | job | parameters | training | testing |\n|---|---|---|---|---|---|"
        );
        for (rank, row) in rows.iter().take(5).enumerate() {
            let _ = writeln!(
                md,
                "| {} | {} | `{}` | {} | {} | {} |",
                rank + 1,
                number(&row["trial"]),
                row["job_id"].as_str().unwrap_or("?"),
                escape(&inline(&row["params"])),
                number(&row["values"][0]),
                number(&row["testing_objective"]),
            );
        }
    }
}

fn walk_forward(md: &mut String, output: &Value) {
    let _ = writeln!(
        md,
        "Walk-forward efficiency {}; t-statistic of the stitched out-of-sample daily returns {}; verdict: {}.\n",
        number(&output["efficiency"]["value"]),
        number(&output["summary"]["t_statistic"]),
        escape(&inline(&output["summary"]["verdict"]))
    );
    if let Some(windows) = output["windows"].as_array() {
        let _ = writeln!(
            md,
            "| window | out of sample | parameters | out-of-sample net profit % | job |\n|---|---|---|---|---|"
        );
        for (i, w) in windows.iter().enumerate() {
            let test = &w["out_of_sample"];
            let _ = writeln!(
                md,
                "| {} | {} → {} | {} | {} | `{}` |",
                i + 1,
                inline(&test["start_date"]),
                inline(&test["end_date"]),
                escape(&inline(&w["params"])),
                number(&w["out_of_sample_metrics"]["net_profit_percentage"]),
                w["out_of_sample_job_id"].as_str().unwrap_or("–"),
            );
        }
    }
}

fn monte_carlo(md: &mut String, id: &str, output: &Value) {
    let loss = match output["probability_of_loss_reason"].as_str() {
        Some(why) => format!("not computed ({why})"),
        None => number(&output["probability_of_loss"]),
    };
    let _ = writeln!(
        md,
        "Probability of a loss {}; of ruin (drawdown ≥ {} %) {}.\n",
        escape(&loss),
        number(&output["ruin_drawdown"]),
        number(&output["probability_of_ruin"]),
    );
    let closed_trade = output["equity_basis"] == "closed_trade";
    if closed_trade {
        let _ = writeln!(
            md,
            "Scenarios compound closed-trade equity (in exit order, every route's trades in one sequence); the \
last column is Jesse's mark-to-market figure of the original backtest, shown beside the distribution, not \
comparable to it.\n"
        );
        let _ = writeln!(
            md,
            "| metric | p5 | p50 | p95 | original (same basis) | Jesse, mark-to-market |\n|---|---|---|---|---|---|"
        );
    } else {
        let _ = writeln!(
            md,
            "| metric | p5 | p50 | p95 | original |\n|---|---|---|---|---|"
        );
    }
    if let Some(metrics) = output["metrics"].as_object() {
        for (name, m) in metrics {
            let beside = if closed_trade {
                format!(" {} |", number(&m["original_mark_to_market"]))
            } else {
                String::new()
            };
            let _ = writeln!(
                md,
                "| {name} | {} | {} | {} | {} |{beside}",
                number(&m["percentiles"]["5"]),
                number(&m["percentiles"]["50"]),
                number(&m["percentiles"]["95"]),
                number(&m["original"]),
            );
        }
    }
    let _ = writeln!(
        md,
        "\n![Monte Carlo fan of job {id}](/v1/jobs/{id}/charts/fan.png)"
    );
}

fn validation(md: &mut String, output: &Value) {
    let valid = output["valid"].as_bool().unwrap_or(false);
    let _ = writeln!(
        md,
        "{}; {} error(s), {} warning(s).",
        if valid { "Valid" } else { "Invalid" },
        output["errors"].as_array().map_or(0, Vec::len),
        output["warnings"].as_array().map_or(0, Vec::len)
    );
}

fn summary_table(md: &mut String, summary: &Value) {
    let Some(summary) = summary.as_object() else {
        return;
    };
    let _ = writeln!(md, "| field | value |\n|---|---|");
    for (k, v) in summary {
        let _ = writeln!(md, "| {k} | {} |", escape(&inline(v)));
    }
}

/// A short line from a step's summary.
fn headline(summary: &Value) -> String {
    let Some(summary) = summary.as_object() else {
        return String::new();
    };
    summary
        .iter()
        .filter(|(_, v)| v.is_number() || v.is_boolean() || v.is_string())
        .take(5)
        .map(|(k, v)| format!("{k} {}", inline(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A number rounded for reading (6 significant digits), or the value as text.
fn number(value: &Value) -> String {
    match value {
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if x != 0.0 && (x.abs() >= 1e9 || x.abs() < 1e-4) {
                format!("{x:.4e}")
            } else {
                let s = format!("{x:.6}");
                s.trim_end_matches('0').trim_end_matches('.').to_string()
            }
        }
        Value::Number(n) => n.to_string(),
        Value::Null => "–".into(),
        other => inline(other),
    }
}

fn inline(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "–".into(),
        Value::Number(_) => number(value),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}={}", inline(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

/// Keeps table cells and headings intact.
fn escape(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_read_well() {
        assert_eq!(number(&json!(0.123456789)), "0.123457");
        assert_eq!(number(&json!(2.0)), "2");
        assert_eq!(number(&json!(12)), "12");
        assert_eq!(number(&json!(null)), "–");
        assert_eq!(number(&json!(0.00001234)), "1.2340e-5");
        assert_eq!(escape("a|b\nc"), "a\\|b c");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn every_template_gate_says_what_it_measures() {
        let p = |s: &str| s.split('.').map(str::to_string).collect::<Vec<_>>();
        let mc = json!({"setup": {"mode": "trades", "method": "stationary_bootstrap", "scenarios": 1000,
                                  "mean_block_length": 3.5}, "ruin_drawdown": 50.0});
        assert_eq!(
            measures("monte_carlo", &p("probability_of_loss"), Some(&mc)),
            "P(loss): share of 1,000 scenarios whose compounded total return is below 0, under stationary \
bootstrap of trade returns, mean block 3.5 trades"
        );
        let ruin = measures("monte_carlo", &p("probability_of_ruin"), Some(&mc));
        assert!(
            ruin.contains("closed-trade max drawdown reaches 50 %"),
            "{ruin}"
        );
        let candles = json!({"setup": {"mode": "candles", "scenarios": 100,
                                       "pipeline": {"class": "MovingBlockBootstrapCandlesPipeline"}}});
        assert!(
            measures("monte_carlo", &p("probability_of_loss"), Some(&candles))
                .contains("100 scenarios whose compounded total return is below 0, under candle scenarios from \
Jesse's MovingBlockBootstrapCandlesPipeline")
        );
        let opt = json!({"overfitting": {"pbo": {"n_combinations": 924, "partitions": 12, "n_trials": 40},
                                         "deflated_sharpe": {"n_trials": 40}}});
        assert_eq!(
            measures("optimization", &p("pbo"), Some(&opt)),
            "PBO (Bailey et al. 2015): share of 924 CSCV splits (12 blocks of daily returns, 40 trials) in which \
the in-sample best trial ranks at or below the out-of-sample median"
        );
        assert!(
            measures("optimization", &p("deflated_sharpe"), Some(&opt))
                .contains("40 skill-less trials")
        );
        let wf = json!({"summary": {"windows": 4}, "efficiency_method": "Pardo: linear OOS rate ÷ IS rate"});
        assert_eq!(
            measures("walk_forward", &p("efficiency"), Some(&wf)),
            "walk-forward efficiency over 4 windows: Pardo: linear OOS rate ÷ IS rate"
        );
        let sig = json!({"n_simulations": 2000, "bootstrap_mean_block_length": 10});
        let text = measures("significance_test", &p("p_value"), Some(&sig));
        assert!(
            text.contains("2,000 bootstrap simulations (mean block 10 bars)")
                && text.contains("p < 1/2000"),
            "{text}"
        );
        assert!(measures("strategy_validation", &p("valid"), None).contains("deep validation"));
        assert!(measures("pairs_screen", &p("cointegrated"), None).contains("Engle–Granger"));
        assert_eq!(
            measures("backtest", &p("metrics.total"), None),
            "Jesse's total of the backtest (mark-to-market)"
        );
    }
}
