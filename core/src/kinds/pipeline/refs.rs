//! References to earlier steps' outputs (`"${optimize.best.params}"`) and
//! gates (`"walk_forward.efficiency.value >= 0.5"`): parsing at submit, path
//! checks against the producing kind's result schema, and evaluation on the
//! outputs once the steps have run.
//!
//! A step's output is its result body plus `job_id`, `status` and `summary`
//! (the headline numbers job listings show). A path is dot-separated; a
//! numeric segment indexes an array.

use serde_json::{Map, Value};

/// Fields every step's output has besides its result body.
pub const STEP_FIELDS: &[&str] = &["job_id", "status", "summary"];

/// A parsed `${step.path}` reference.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    pub step: String,
    pub path: Vec<String>,
}

impl Reference {
    pub fn text(&self) -> String {
        if self.path.is_empty() {
            self.step.clone()
        } else {
            format!("{}.{}", self.step, self.path.join("."))
        }
    }
}

/// Parses `step.a.b` (the inside of `${...}` or a gate's left side).
pub fn parse_path(text: &str) -> Result<Reference, String> {
    let text = text.trim();
    let mut parts = text.split('.');
    let step = parts.next().unwrap_or_default();
    if !is_step_id(step) {
        return Err(format!(
            "'{text}' must start with a step id (lowercase letters, digits and _, starting with a letter)"
        ));
    }
    let path: Vec<String> = parts.map(str::to_string).collect();
    let segment_ok = |p: &String| {
        (1..=64).contains(&p.len())
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if !path.iter().all(segment_ok) {
        return Err(format!(
            "'{text}' has an empty, over-long or malformed path segment (letters, digits, _ and -)"
        ));
    }
    if path.len() > 12 {
        return Err(format!("'{text}' is nested deeper than 12 levels"));
    }
    Ok(Reference {
        step: step.to_string(),
        path,
    })
}

/// A step id: 1 to 40 of `[a-z0-9_]`, starting with a letter.
pub fn is_step_id(id: &str) -> bool {
    (1..=40).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The pieces of a string that may hold references: literal text and `${...}`.
#[derive(Debug, PartialEq)]
enum Piece<'a> {
    Text(String),
    Ref(&'a str),
}

fn pieces(s: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        text.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(escaped) = after.strip_prefix("${") {
            // `$${` is a literal `${`.
            text.push_str("${");
            rest = escaped;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = inner
                .find('}')
                .ok_or_else(|| format!("'{s}' opens a reference with ${{ but never closes it"))?;
            if !text.is_empty() {
                out.push(Piece::Text(std::mem::take(&mut text)));
            }
            out.push(Piece::Ref(&inner[..end]));
            rest = &inner[end + 1..];
        } else {
            text.push('$');
            rest = after;
        }
    }
    text.push_str(rest);
    if !text.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

/// Every reference in a step's input, with the JSON path of the field holding it.
pub fn references(input: &Value) -> Result<Vec<(String, Reference)>, String> {
    let mut out = Vec::new();
    collect(input, String::new(), &mut out)?;
    Ok(out)
}

fn collect(value: &Value, at: String, out: &mut Vec<(String, Reference)>) -> Result<(), String> {
    match value {
        Value::String(s) => {
            for piece in pieces(s).map_err(|e| format!("{at}: {e}"))? {
                if let Piece::Ref(inner) = piece {
                    let reference = parse_path(inner).map_err(|e| format!("{at}: {e}"))?;
                    out.push((at.clone(), reference));
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect(item, format!("{at}[{i}]"), out)?;
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                let field = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                collect(v, field, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Headline fields each kind's `summary` carries (as job listings show them).
/// A path whose first field is not in the result body but is one of these
/// reads the summary: `optimize.pbo` is `optimize.summary.pbo`.
pub fn summary_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "backtest" => &[
            "total",
            "net_profit_percentage",
            "win_rate",
            "max_drawdown",
            "sharpe_ratio",
            "finishing_balance",
            "data",
            "warning",
        ],
        "optimization" => &[
            "trials",
            "unique",
            "best_trial",
            "best_value",
            "best_params",
            "pbo",
            "deflated_sharpe",
        ],
        "walk_forward" => &[
            "windows",
            "verdict",
            "efficiency",
            "t_statistic",
            "out_of_sample_return_percentage",
        ],
        "monte_carlo" => &[
            "scenarios",
            "probability_of_loss",
            "probability_of_ruin",
            "total_return_p5",
            "closed_trade_max_drawdown_p5",
            "max_drawdown_p5",
            "method",
        ],
        "pairs_screen" => &["pairs", "cointegrated", "best_pair", "best_cointegrated"],
        "pairs_backtest" => &[
            "backtest_job_id",
            "symbols",
            "total",
            "net_profit_percentage",
            "sharpe_ratio",
        ],
        "strategy_validation" => &["strategy", "sha256", "valid", "errors"],
        _ => &[],
    }
}

/// Looks a path up in a step's output (its result body, then, for a first
/// field the body lacks, its summary); `None` when it is in neither.
pub fn lookup<'a>(output: &'a Value, path: &[String]) -> Option<&'a Value> {
    let in_body = path
        .first()
        .is_none_or(|first| output.get(first).is_some_and(|v| !v.is_null()));
    if !in_body && let Some(summary) = output.get("summary").filter(|s| s.is_object()) {
        return lookup_in(summary, path);
    }
    lookup_in(output, path)
}

fn lookup_in<'a>(output: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut at = output;
    for segment in path {
        at = match at {
            Value::Object(map) => map.get(segment)?,
            Value::Array(items) => items.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(at)
}

/// Replaces every reference in `input` by the value it names in `outputs`
/// (step id → output). A string that is exactly one reference becomes the
/// referenced JSON value (an object of parameters stays an object); a
/// reference inside a longer string is written into it as text.
pub fn resolve(input: &Value, outputs: &Map<String, Value>) -> Result<Value, String> {
    Ok(match input {
        Value::String(s) => {
            let pieces = pieces(s)?;
            if let [Piece::Ref(inner)] = pieces.as_slice() {
                return value_of(inner, outputs).cloned();
            }
            let mut text = String::new();
            for piece in pieces {
                match piece {
                    Piece::Text(t) => text.push_str(&t),
                    Piece::Ref(inner) => match value_of(inner, outputs)? {
                        Value::String(s) => text.push_str(s),
                        other => text.push_str(&other.to_string()),
                    },
                }
            }
            Value::String(text)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| resolve(v, outputs))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), resolve(v, outputs)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

fn value_of<'a>(inner: &str, outputs: &'a Map<String, Value>) -> Result<&'a Value, String> {
    let reference = parse_path(inner)?;
    let output = outputs
        .get(&reference.step)
        .ok_or_else(|| format!("step '{}' has no output yet", reference.step))?;
    match lookup(output, &reference.path) {
        Some(Value::Null) | None => Err(format!(
            "${{{}}} is {} in the output of step '{}' (job {})",
            reference.text(),
            if lookup(output, &reference.path).is_some() {
                "null"
            } else {
                "missing"
            },
            reference.step,
            output["job_id"].as_str().unwrap_or("?"),
        )),
        Some(v) => Ok(v),
    }
}

/// Checks that `path` can exist in the output of a step of a kind whose
/// result body has `schema` (a JSON Schema document with `$defs`). Open
/// objects (maps of anything) accept any further path; unknown fields of a
/// closed object are refused with the known ones.
pub fn check_path(schema: &Value, kind: &str, path: &[String]) -> Result<(), String> {
    let Some(first) = path.first() else {
        return Ok(());
    };
    if STEP_FIELDS.contains(&first.as_str()) {
        return Ok(()); // summary is a free map; job_id and status are strings
    }
    let summary = summary_fields(kind);
    let top_level = resolve_ref(schema, schema)
        .get("properties")
        .is_some_and(|p| p.get(first).is_some());
    if !top_level && summary.contains(&first.as_str()) {
        return Ok(()); // read from the summary (see `lookup`)
    }
    walk(schema, schema, path).map_err(|e| {
        if path.len() == 1 && !summary.is_empty() {
            format!("{e}; or a summary field: {}", summary.join(", "))
        } else {
            e
        }
    })
}

fn resolve_ref<'a>(root: &'a Value, mut schema: &'a Value) -> &'a Value {
    for _ in 0..16 {
        let Some(reference) = schema.get("$ref").and_then(Value::as_str) else {
            break;
        };
        let name = reference.rsplit('/').next().unwrap_or_default();
        match root
            .get("$defs")
            .and_then(|d| d.get(name))
            .or_else(|| root.get("definitions").and_then(|d| d.get(name)))
        {
            Some(found) => schema = found,
            None => break,
        }
    }
    schema
}

fn walk(root: &Value, schema: &Value, path: &[String]) -> Result<(), String> {
    let schema = resolve_ref(root, schema);
    let Some(segment) = path.first() else {
        return Ok(());
    };
    // Option<T> and other unions: the path must fit one branch.
    for union in ["anyOf", "oneOf"] {
        if let Some(branches) = schema.get(union).and_then(Value::as_array) {
            let mut last = String::new();
            for branch in branches {
                let branch = resolve_ref(root, branch);
                if branch.get("type") == Some(&Value::from("null")) {
                    continue;
                }
                match walk(root, branch, path) {
                    Ok(()) => return Ok(()),
                    Err(e) => last = e,
                }
            }
            return Err(last);
        }
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return Ok(()), // untyped: anything may be below
    };
    if types.contains(&"object") {
        if let Some(sub) = schema.get("properties").and_then(|p| p.get(segment)) {
            return walk(root, sub, &path[1..]);
        }
        return match schema.get("additionalProperties") {
            Some(Value::Bool(false)) => Err(unknown_field(schema, segment)),
            Some(sub @ Value::Object(_)) => walk(root, sub, &path[1..]),
            _ if schema.get("properties").is_some() => Err(unknown_field(schema, segment)),
            _ => Ok(()),
        };
    }
    if types.contains(&"array") {
        if segment.parse::<usize>().is_err() {
            return Err(format!(
                "'{segment}' indexes a list; use a number (0 for the first)"
            ));
        }
        return match schema.get("items") {
            Some(items) => walk(root, items, &path[1..]),
            None => Ok(()),
        };
    }
    Err(format!(
        "'{segment}' goes below a {} value, which has no fields",
        types.join("/")
    ))
}

fn unknown_field(schema: &Value, segment: &str) -> String {
    let known: Vec<&str> = schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().map(String::as_str).collect())
        .unwrap_or_default();
    format!(
        "no field '{segment}' here; known fields: {}",
        known.join(", ")
    )
}

/// A comparison a step's output must pass for the pipeline to go on.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Gate {
    /// As written, e.g. `walk_forward.efficiency.value >= 0.5`.
    pub text: String,
    pub step: String,
    pub path: Vec<String>,
    pub op: Op,
    pub value: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

impl Op {
    const ALL: &[(&str, Op)] = &[
        (">=", Op::Ge),
        ("<=", Op::Le),
        ("==", Op::Eq),
        ("!=", Op::Ne),
        (">", Op::Gt),
        ("<", Op::Lt),
    ];

    fn symbol(self) -> &'static str {
        Op::ALL
            .iter()
            .find(|(_, o)| *o == self)
            .map_or("?", |(s, _)| s)
    }
}

/// Parses `step.path OP literal`; the literal is a number, true, false, null
/// or a JSON string.
pub fn parse_gate(text: &str) -> Result<Gate, String> {
    if text.len() > 300 {
        return Err("a gate is at most 300 characters".into());
    }
    let (at, symbol, op) = Op::ALL
        .iter()
        .filter_map(|(s, op)| text.find(s).map(|at| (at, *s, *op)))
        .min_by_key(|(at, s, _)| (*at, std::cmp::Reverse(s.len())))
        .ok_or_else(|| {
            format!(
                "gate '{text}' has no comparison; write e.g. 'walk_forward.efficiency.value >= 0.5' (>=, <=, >, <, ==, !=)"
            )
        })?;
    let left = &text[..at];
    let right = text[at + symbol.len()..].trim();
    let reference = parse_path(left).map_err(|e| format!("gate '{text}': {e}"))?;
    if reference.path.is_empty() {
        return Err(format!(
            "gate '{text}' compares a whole step; name a field, e.g. '{}.summary.total'",
            reference.step
        ));
    }
    let value: Value = serde_json::from_str(right).map_err(|_| {
        format!("gate '{text}': '{right}' is not a number, true, false, null or a \"string\"")
    })?;
    if matches!(value, Value::Array(_) | Value::Object(_)) {
        return Err(format!(
            "gate '{text}': compare with a number, boolean, null or string"
        ));
    }
    if matches!(op, Op::Ge | Op::Le | Op::Gt | Op::Lt) && !value.is_number() {
        return Err(format!(
            "gate '{text}': {symbol} compares numbers; use == or != for '{right}'"
        ));
    }
    Ok(Gate {
        text: text.trim().to_string(),
        step: reference.step,
        path: reference.path,
        op,
        value,
    })
}

/// A gate's outcome on a step's output.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GateCheck {
    pub gate: String,
    pub step: String,
    pub job_id: Value,
    /// The value found (null when missing or undefined).
    pub value: Value,
    pub passed: bool,
    /// Why it failed, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Gate {
    pub fn check(&self, output: &Value) -> GateCheck {
        let mut found = lookup(output, &self.path).cloned().unwrap_or(Value::Null);
        // A statistic kept with its reason (`{value, reason}`, e.g. a
        // walk-forward's efficiency) compares its value.
        let mut why_undefined = None;
        if let Some(statistic) = found.as_object()
            && statistic.contains_key("value")
        {
            why_undefined = statistic
                .get("reason")
                .and_then(Value::as_str)
                .map(str::to_string);
            found = statistic["value"].clone();
        }
        let passed = match (&found, &self.value) {
            // A missing or undefined value fails every gate but `== null`.
            (Value::Null, literal) if !literal.is_null() => false,
            (Value::Number(a), Value::Number(b)) => {
                let (a, b) = (
                    a.as_f64().unwrap_or(f64::NAN),
                    b.as_f64().unwrap_or(f64::NAN),
                );
                match self.op {
                    Op::Ge => a >= b,
                    Op::Le => a <= b,
                    Op::Gt => a > b,
                    Op::Lt => a < b,
                    Op::Eq => a == b,
                    Op::Ne => a != b,
                }
            }
            (a, b) if matches!(self.op, Op::Eq) => a == b,
            (a, b) if matches!(self.op, Op::Ne) => a != b,
            _ => false,
        };
        let reason = (!passed).then(|| {
            if found.is_null() {
                // Undefined statistics carry their reason beside them: in a
                // `{value, reason}` object, as a sibling `<name>_reason`
                // (a Monte Carlo's `probability_of_loss_reason`), or as the
                // parent's `reason`.
                let why = why_undefined.clone().or_else(|| {
                    self.path.split_last().and_then(|(name, parent)| {
                        let parent = lookup(output, parent)?;
                        parent
                            .get(format!("{name}_reason"))
                            .or_else(|| parent.get("reason"))
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                });
                match why {
                    Some(why) => format!("{} is undefined: {why}", self.path_text()),
                    None => format!("{} is missing or null", self.path_text()),
                }
            } else {
                format!(
                    "{} is {found}, which is not {} {}",
                    self.path_text(),
                    self.op.symbol(),
                    self.value
                )
            }
        });
        GateCheck {
            gate: self.text.clone(),
            step: self.step.clone(),
            job_id: output.get("job_id").cloned().unwrap_or(Value::Null),
            value: found,
            passed,
            reason,
        }
    }

    fn path_text(&self) -> String {
        format!("{}.{}", self.step, self.path.join("."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_are_found_with_their_field() {
        let input = json!({"source": {"hyperparameters": "${opt.best.params}"},
                           "note": "from $${literal} and ${base.job_id}", "n": 3});
        let refs = references(&input).unwrap();
        let texts: Vec<_> = refs.iter().map(|(f, r)| (f.as_str(), r.text())).collect();
        assert_eq!(
            texts,
            [
                ("note", "base.job_id".to_string()),
                ("source.hyperparameters", "opt.best.params".to_string())
            ]
        );
        assert!(references(&json!({"a": "${oops"})).is_err());
        assert!(references(&json!({"a": "${Bad.x}"})).is_err());
    }

    #[test]
    fn whole_references_keep_their_type_and_inline_ones_become_text() {
        let outputs: Map<String, Value> = json!({
            "opt": {"job_id": "J1", "best": {"params": {"fast": 9}}},
            "wf": {"job_id": "J2", "windows": [{"n": 1}, {"n": 2}], "x": null},
        })
        .as_object()
        .unwrap()
        .clone();
        let out = resolve(
            &json!({"h": "${opt.best.params}", "s": "job ${opt.job_id}/${wf.windows.1.n} $${x}", "k": 5}),
            &outputs,
        )
        .unwrap();
        assert_eq!(out, json!({"h": {"fast": 9}, "s": "job J1/2 ${x}", "k": 5}));
        let missing = resolve(&json!("${wf.nope}"), &outputs).unwrap_err();
        assert!(
            missing.contains("missing") && missing.contains("J2"),
            "{missing}"
        );
        assert!(
            resolve(&json!("${wf.x}"), &outputs)
                .unwrap_err()
                .contains("null")
        );
    }

    #[test]
    fn gates_parse_and_judge() {
        let gate = parse_gate("wf.efficiency.value >= 0.5").unwrap();
        assert_eq!((gate.op, gate.value.clone()), (Op::Ge, json!(0.5)));
        let output = json!({"job_id": "J", "efficiency": {"value": 0.7}});
        assert!(gate.check(&output).passed);
        let low = gate.check(&json!({"job_id": "J", "efficiency": {"value": 0.2}}));
        assert!(!low.passed && low.reason.unwrap().contains("0.2"));
        let undefined = gate.check(
            &json!({"job_id": "J", "efficiency": {"value": null, "reason": "in-sample lost money"}}),
        );
        assert!(undefined.reason.unwrap().contains("in-sample lost money"));
        assert!(
            parse_gate("wf.ok == true")
                .unwrap()
                .check(&json!({"ok": true}))
                .passed
        );
        assert!(
            !parse_gate("wf.n != 0")
                .unwrap()
                .check(&json!({"n": null}))
                .passed
        );
        assert!(!parse_gate("wf.n != 0").unwrap().check(&json!({})).passed);
        assert!(parse_gate("wf.n == null").unwrap().check(&json!({})).passed);
        // The issue's own spellings: summary fields and {value, reason} statistics.
        let wf = json!({"job_id": "J", "efficiency": {"value": 0.7, "reason": null},
                        "summary": {"efficiency": 0.7, "pbo": 0.2}});
        assert!(
            parse_gate("wf.efficiency >= 0.5")
                .unwrap()
                .check(&wf)
                .passed
        );
        assert!(parse_gate("wf.pbo <= 0.3").unwrap().check(&wf).passed);
        let undefined = json!({"efficiency": {"value": null, "reason": "no in-sample profit"}});
        let check = parse_gate("wf.efficiency >= 0.5")
            .unwrap()
            .check(&undefined);
        assert!(!check.passed && check.reason.unwrap().contains("no in-sample profit"));
        // A null read from the summary takes its reason from the body's sibling field.
        let shuffled = json!({"job_id": "M", "probability_of_loss": null,
                              "probability_of_loss_reason": "undefined under shuffle",
                              "summary": {"probability_of_loss": null}});
        let check = parse_gate("mc.probability_of_loss <= 0.5")
            .unwrap()
            .check(&shuffled);
        assert!(!check.passed);
        assert_eq!(
            check.reason.as_deref(),
            Some("mc.probability_of_loss is undefined: undefined under shuffle")
        );
        assert!(parse_gate("wf.x => 1").is_err());
        assert!(parse_gate("wf.x >= \"a\"").is_err());
        assert!(parse_gate("wf >= 1").is_err());
        assert!(parse_gate("wf.x 1").is_err());
        let le = parse_gate("o.pbo<=0.3").unwrap();
        assert_eq!((le.op, le.path.clone()), (Op::Le, vec!["pbo".to_string()]));
    }

    #[test]
    fn paths_are_checked_against_the_result_schema() {
        let schema = json!({
            "type": "object",
            "properties": {
                "best": {"anyOf": [{"$ref": "#/$defs/Best"}, {"type": "null"}]},
                "leaderboard": {"type": "array", "items": {"type": "object", "additionalProperties": true}},
                "count": {"type": "integer"},
                "open": {"type": "object", "additionalProperties": true},
            },
            "$defs": {"Best": {"type": "object", "properties": {"params": {"type": "object"}}}},
        });
        let p = |s: &str| s.split('.').map(str::to_string).collect::<Vec<_>>();
        assert!(check_path(&schema, "x", &p("best.params.fast")).is_ok());
        assert!(check_path(&schema, "x", &p("leaderboard.0.params")).is_ok());
        assert!(check_path(&schema, "x", &p("open.anything.below")).is_ok());
        assert!(check_path(&schema, "x", &p("summary.pbo")).is_ok());
        assert!(
            check_path(&schema, "x", &p("nope"))
                .unwrap_err()
                .contains("known fields")
        );
        assert!(check_path(&schema, "x", &p("best.nope")).is_err());
        assert!(check_path(&schema, "x", &p("leaderboard.first")).is_err());
        assert!(check_path(&schema, "x", &p("count.x")).is_err());
        assert!(check_path(&schema, "optimization", &p("pbo")).is_ok());
        assert!(check_path(&schema, "x", &p("pbo")).is_err());
        let e = check_path(&schema, "optimization", &p("pbx")).unwrap_err();
        assert!(e.contains("summary field") && e.contains("pbo"), "{e}");
    }
}
