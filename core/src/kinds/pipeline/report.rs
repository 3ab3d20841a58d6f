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
        let _ = writeln!(md, "| gate | value | from job | result |");
        let _ = writeln!(md, "|---|---|---|---|");
        for (_, check) in input.checks {
            let result = if check.passed {
                "passed".to_string()
            } else {
                format!("**failed**: {}", check.reason.clone().unwrap_or_default())
            };
            let _ = writeln!(
                md,
                "| `{}` | {} | `{}` | {} |",
                check.gate,
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
    let _ = writeln!(
        md,
        "Probability of a loss {}; of ruin (drawdown ≥ {} %) {}.\n",
        number(&output["probability_of_loss"]),
        number(&output["ruin_drawdown"]),
        number(&output["probability_of_ruin"]),
    );
    let _ = writeln!(
        md,
        "| metric | p5 | p50 | p95 | original |\n|---|---|---|---|---|"
    );
    if let Some(metrics) = output["metrics"].as_object() {
        for (name, m) in metrics {
            let _ = writeln!(
                md,
                "| {name} | {} | {} | {} | {} |",
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
    }
}
