//! What a job is about, in a few fields: its strategy, exchange, symbol,
//! timeframe, range and hyperparameters, derived from its stored plan by one
//! function for every kind ([`subject_of`]), and the labels (strategy,
//! symbol, tag) listings filter on. Also the `tags` every submit accepts.
//!
//! The derivation reads the shapes plans are made of, not kind names: a
//! backtest plan (`routes` + `start_ms`), a backtest request (a batch's
//! variant: `exchange` + `start_date`), a study (`space` + `training`), and
//! series plans (`exchange` + `start_ms`: imports, pairs screens). So a new
//! kind whose plan holds any of them gets a subject without code here. It
//! never reads strategy sources (`strategies`, `sources` are skipped).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::time::{parse_day, to_rfc3339};

/// Most tags on one job.
pub const MAX_TAGS: usize = 16;
/// Most characters in one tag.
pub const MAX_TAG_CHARS: usize = 64;
/// Most distinct strategies, symbols or timeframes a subject lists (a screen
/// of 50 symbols lists them all).
const MAX_LISTED: usize = 50;
/// Most distinct values a subject shows for a hyperparameter that varies.
const MAX_VALUES: usize = 20;
/// Most hyperparameter names a subject shows.
const MAX_NAMES: usize = 50;
/// How deep the derivation looks into a plan.
const MAX_DEPTH: usize = 8;

/// A job's subject: the fields that apply to its kind (the others are left out).
/// A job over several strategies, symbols or timeframes (a batch's grid, a
/// multi-route backtest, a pairs screen) lists them in the plural field instead.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobSubject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// Several strategies (multi-route backtests, batches over routes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategies: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    /// Several symbols (multi-route and pairs backtests, screens, batches over symbols).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbols: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeframe: Option<String>,
    /// Several timeframes (batches over timeframes, routes on different ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeframes: Option<Vec<String>>,
    /// The trading range (warm-up excluded), the union of a job's periods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<SubjectRange>,
    /// A backtest's overrides (the strategy's defaults for the rest); for a
    /// batch, a name whose value varies shows `{values: [...]}`; for a study or
    /// walk-forward, its search space (`{min, max, step?}` or `{options}`) and
    /// fixed values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hyperparameters: Option<Map<String, Value>>,
}

/// A half-open range `[start, end)`: ms since the epoch and RFC 3339.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SubjectRange {
    /// First minute, ms since the epoch (inclusive).
    pub start: i64,
    /// First minute after the range, ms since the epoch (exclusive).
    pub end: i64,
    pub start_date: String,
    pub end_date: String,
}

impl JobSubject {
    pub fn is_empty(&self) -> bool {
        *self == JobSubject::default()
    }

    /// The `(name, value)` labels a listing filters on: every strategy and symbol.
    pub fn labels(&self) -> Vec<(&'static str, String)> {
        let mut labels = Vec::new();
        for strategy in self.strategy.iter().chain(self.strategies.iter().flatten()) {
            labels.push(("strategy", strategy.clone()));
        }
        for symbol in self.symbol.iter().chain(self.symbols.iter().flatten()) {
            labels.push(("symbol", symbol.clone()));
        }
        labels
    }

    /// The subject a child inherits from its parent when its own plan names
    /// nothing (a study's trial: its plan is its number): the parent's,
    /// without the search space (the trial draws its own values).
    pub fn inherited(mut self) -> Self {
        self.hyperparameters = None;
        self
    }
}

/// The subject of a job of `kind` with this stored plan.
pub fn subject_of(kind: &str, plan: &Value) -> JobSubject {
    let mut found = Found::default();
    if kind == "strategy_validation" {
        if let Some(name) = plan["name"].as_str() {
            found.strategies.add(name);
        }
        return found.subject();
    }
    found.visit(plan, 0, false);
    found.subject()
}

/// Distinct values in the order first seen.
#[derive(Default)]
struct Distinct(Vec<String>);

impl Distinct {
    /// Keeps at most [`MAX_LISTED`] (the listing and its filters know those).
    fn add(&mut self, value: &str) {
        if self.0.len() < MAX_LISTED && !self.0.iter().any(|v| v == value) {
            self.0.push(value.to_string());
        }
    }

    /// (the one value, or the list of several)
    fn split(self) -> (Option<String>, Option<Vec<String>>) {
        match self.0.len() {
            0 => (None, None),
            1 => (self.0.into_iter().next(), None),
            _ => (None, Some(self.0)),
        }
    }
}

#[derive(Default)]
struct Found {
    strategies: Distinct,
    exchanges: Distinct,
    symbols: Distinct,
    timeframes: Distinct,
    start: Option<i64>,
    end: Option<i64>,
    /// The hyperparameters of each backtest seen (overrides; empty: defaults).
    runs: Vec<Map<String, Value>>,
    /// A study's search space, when the plan is (or holds) one.
    space: Option<Map<String, Value>>,
}

impl Found {
    fn range(&mut self, start: Option<i64>, end: Option<i64>) {
        if let (Some(start), Some(end)) = (start, end) {
            self.start = Some(self.start.map_or(start, |s| s.min(start)));
            self.end = Some(self.end.map_or(end, |e| e.max(end)));
        }
    }

    fn routes(&mut self, object: &Map<String, Value>) {
        for route in object
            .get("routes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(s) = route["strategy"].as_str() {
                self.strategies.add(s);
            }
            if let Some(s) = route["symbol"].as_str() {
                self.symbols.add(s);
            }
            if let Some(t) = route["timeframe"].as_str() {
                self.timeframes.add(t);
            }
        }
    }

    fn run(&mut self, object: &Map<String, Value>, in_study: bool) {
        if !in_study {
            self.runs.push(
                object
                    .get("hyperparameters")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default(),
            );
        }
    }

    fn visit(&mut self, value: &Value, depth: usize, in_study: bool) {
        if depth > MAX_DEPTH {
            return;
        }
        let object = match value {
            Value::Array(items) => {
                for item in items {
                    self.visit(item, depth + 1, in_study);
                }
                return;
            }
            Value::Object(object) => object,
            _ => return,
        };
        let text = |key: &str| object.get(key).and_then(Value::as_str);
        let number = |key: &str| object.get(key).and_then(Value::as_i64);
        if object.get("routes").is_some_and(Value::is_array) && number("start_ms").is_some() {
            // A backtest plan.
            if let Some(e) = text("exchange") {
                self.exchanges.add(e);
            }
            self.routes(object);
            self.range(number("start_ms"), number("end_ms"));
            self.run(object, in_study);
            return;
        }
        if let (Some(exchange), Some(start), Some(end)) =
            (text("exchange"), text("start_date"), text("end_date"))
        {
            // A backtest request (a batch's variant).
            self.exchanges.add(exchange);
            if object.get("routes").is_some_and(Value::is_array) {
                self.routes(object);
            } else {
                if let Some(s) = text("strategy") {
                    self.strategies.add(s);
                }
                if let Some(s) = text("symbol") {
                    self.symbols.add(s);
                }
                if let Some(t) = text("timeframe") {
                    self.timeframes.add(t);
                }
            }
            self.range(parse_day(start).ok(), parse_day(end).ok());
            self.run(object, in_study);
            return;
        }
        if let (Some(space), Some(training)) = (
            object.get("space").and_then(Value::as_array),
            object.get("training"),
        ) {
            // A study: its periods, and its space instead of their overrides.
            self.visit(training, depth + 1, true);
            if let Some(testing) = object.get("testing") {
                self.visit(testing, depth + 1, true);
            }
            if self.space.is_none() {
                self.space = Some(space_of(space, object.get("fixed")));
            }
            return;
        }
        if let (Some(exchange), Some(start), Some(end)) =
            (text("exchange"), number("start_ms"), number("end_ms"))
        {
            // A series plan: an import, a pairs screen or one of its chunks.
            self.exchanges.add(exchange);
            self.range(Some(start), Some(end));
            if let Some(s) = text("symbol") {
                self.symbols.add(s);
            }
            if let Some(t) = text("timeframe") {
                self.timeframes.add(t);
            }
            for key in ["symbols", "pairs"] {
                for item in object
                    .get(key)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    match item {
                        Value::String(s) => self.symbols.add(s),
                        Value::Array(pair) => pair
                            .iter()
                            .filter_map(Value::as_str)
                            .for_each(|s| self.symbols.add(s)),
                        _ => {}
                    }
                }
            }
            return;
        }
        for (key, value) in object {
            // Strategy sources are large and name nothing new.
            if matches!(key.as_str(), "strategies" | "sources") {
                continue;
            }
            self.visit(value, depth + 1, in_study);
        }
    }

    fn subject(self) -> JobSubject {
        let (strategy, strategies) = self.strategies.split();
        let (exchange, exchanges) = self.exchanges.split();
        let (symbol, symbols) = self.symbols.split();
        let (timeframe, timeframes) = self.timeframes.split();
        let range = self.start.zip(self.end).map(|(start, end)| SubjectRange {
            start,
            end,
            start_date: to_rfc3339(start),
            end_date: to_rfc3339(end),
        });
        let hyperparameters = match self.space {
            Some(space) => Some(space),
            None => merge_runs(&self.runs),
        };
        JobSubject {
            strategy,
            strategies,
            // One exchange per request everywhere; a plan with several shows the first.
            exchange: exchange.or_else(|| exchanges.and_then(|e| e.into_iter().next())),
            symbol,
            symbols,
            timeframe,
            timeframes,
            range,
            hyperparameters,
        }
    }
}

/// A study's space as the request spells it: `{min, max, step?, log?}` or
/// `{options}` per searched name, the value for a fixed one.
fn space_of(space: &[Value], fixed: Option<&Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for dimension in space {
        let Some(name) = dimension["name"].as_str() else {
            continue;
        };
        let spec = if dimension["choices"].is_array() {
            json!({"options": dimension["choices"]})
        } else {
            let whole = dimension["type"] == "int";
            let number = |v: &Value| match v.as_f64() {
                Some(n) if whole && n.fract() == 0.0 => json!(n as i64),
                _ => v.clone(),
            };
            let mut spec = Map::new();
            spec.insert("min".into(), number(&dimension["low"]));
            spec.insert("max".into(), number(&dimension["high"]));
            if !dimension["step"].is_null() {
                spec.insert("step".into(), number(&dimension["step"]));
            }
            if dimension["log"] == true {
                spec.insert("log".into(), json!(true));
            }
            Value::Object(spec)
        };
        out.insert(name.to_string(), spec);
    }
    for (name, value) in fixed.and_then(Value::as_object).into_iter().flatten() {
        out.insert(name.clone(), value.clone());
    }
    out
}

/// The hyperparameters of a job's backtests: a name set to one value in every
/// backtest shows that value; one that varies (or is left to the default in
/// some) shows `{values: [...]}`. None when no backtest sets any.
fn merge_runs(runs: &[Map<String, Value>]) -> Option<Map<String, Value>> {
    let mut names: Vec<&String> = Vec::new();
    for run in runs {
        for name in run.keys() {
            if names.len() < MAX_NAMES && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    if names.is_empty() {
        return None;
    }
    let mut out = Map::new();
    for name in names {
        let mut values: Vec<&Value> = Vec::new();
        let mut everywhere = true;
        // Every distinct value, shown or not (a grid repeats each value in
        // many runs; only the first MAX_VALUES are shown).
        let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
        for run in runs {
            match run.get(name) {
                Some(v) => {
                    if seen.insert(v.to_string()) && values.len() < MAX_VALUES {
                        values.push(v);
                    }
                }
                None => everywhere = false,
            }
        }
        let distinct = seen.len();
        let shown = if distinct == 1 && everywhere {
            values[0].clone()
        } else {
            let mut spec = json!({"values": values});
            if distinct > values.len() {
                spec["distinct"] = json!(distinct);
            }
            if !everywhere {
                spec["default_too"] = json!(true);
            }
            spec
        };
        out.insert(name.clone(), shown);
    }
    Some(out)
}

/// Takes a submit's `tags` out of its request (the kind's request does not
/// know them): at most [`MAX_TAGS`] strings of 1 to [`MAX_TAG_CHARS`]
/// characters, without control characters; repeats are kept once.
pub fn take_tags(request: &mut Value) -> Result<Vec<String>, ApiError> {
    let Some(value) = request.as_object_mut().and_then(|o| o.remove("tags")) else {
        return Ok(Vec::new());
    };
    let bad = |message: String| {
        ApiError::invalid("invalid_tags", message).with_details(
            json!({"field": "tags", "max_tags": MAX_TAGS, "max_tag_chars": MAX_TAG_CHARS}),
        )
    };
    let items = match value {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        other => {
            return Err(bad(format!(
                "tags must be a list of strings, not {}",
                kind_of(&other)
            )));
        }
    };
    if items.len() > MAX_TAGS {
        return Err(bad(format!(
            "{} tags given; a job takes at most {MAX_TAGS}",
            items.len()
        )));
    }
    let mut tags: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let Value::String(tag) = item else {
            return Err(bad(format!(
                "tags[{i}] is {}; tags are strings",
                kind_of(&item)
            )));
        };
        check_tag(&tag).map_err(|why| bad(format!("tags[{i}] {why}")))?;
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    Ok(tags)
}

/// Why a tag is not acceptable, if it is not.
pub fn check_tag(tag: &str) -> Result<(), String> {
    let chars = tag.chars().count();
    if chars == 0 || chars > MAX_TAG_CHARS {
        return Err(format!(
            "has {chars} characters; a tag has 1 to {MAX_TAG_CHARS}"
        ));
    }
    if tag.chars().any(char::is_control) {
        return Err("contains a control character".into());
    }
    Ok(())
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// JSON Schema of `tags` on a submit.
pub fn tags_schema() -> Value {
    json!({
        "type": "array",
        "description": format!(
            "Labels for this job, shown in listings and filterable (`GET /v1/jobs?tag=`, MCP `job_list` `tag`): at most {MAX_TAGS} strings of 1 to {MAX_TAG_CHARS} characters. Part of the request for `Idempotency-Key`."
        ),
        "items": {"type": "string", "minLength": 1, "maxLength": MAX_TAG_CHARS},
        "maxItems": MAX_TAGS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backtest_plan(strategy: &str, symbol: &str, hp: Value) -> Value {
        json!({
            "exchange": "Binance Spot",
            "routes": [{"strategy": strategy, "symbol": symbol, "timeframe": "1h"}],
            "data_routes": [], "config": {}, "start_ms": 1_700_000_000_000i64,
            "end_ms": 1_700_086_400_000i64, "warmup_minutes": 0, "symbols": [symbol],
            "hyperparameters": hp, "fast_mode": false, "include_trades": false,
            "include_equity_curve": false,
            "strategies": [{"name": strategy, "sha256": "x", "source": "class X: pass"}],
        })
    }

    #[test]
    fn a_backtest_names_its_route_range_and_overrides() {
        let s = subject_of(
            "backtest",
            &backtest_plan("SmaCross", "BTC-USDT", json!({"fast": 12})),
        );
        assert_eq!(s.strategy.as_deref(), Some("SmaCross"));
        assert_eq!(s.exchange.as_deref(), Some("Binance Spot"));
        assert_eq!(s.symbol.as_deref(), Some("BTC-USDT"));
        assert_eq!(s.timeframe.as_deref(), Some("1h"));
        let range = s.range.clone().unwrap();
        assert_eq!(range.start, 1_700_000_000_000);
        assert_eq!(range.end_date, to_rfc3339(1_700_086_400_000));
        assert_eq!(
            s.hyperparameters,
            Some(json!({"fast": 12}).as_object().unwrap().clone())
        );
        assert_eq!(
            s.labels(),
            vec![
                ("strategy", "SmaCross".into()),
                ("symbol", "BTC-USDT".into())
            ]
        );
        // A Monte Carlo or significance plan holds one: the same subject.
        let wrapped = json!({"backtest": backtest_plan("SmaCross", "BTC-USDT", json!({"fast": 12})), "seed": 1});
        assert_eq!(subject_of("monte_carlo", &wrapped), s);
        let none = subject_of(
            "backtest",
            &backtest_plan("SmaCross", "BTC-USDT", Value::Null),
        );
        assert_eq!(none.hyperparameters, None);
    }

    #[test]
    fn a_batch_shows_what_varies() {
        let variant = |symbol: &str, fast: i64| {
            json!({"strategy": "SmaCross", "exchange": "Binance Spot", "symbol": symbol,
                   "timeframe": "1h", "start_date": "2023-01-01", "end_date": "2023-02-01",
                   "hyperparameters": {"fast": fast, "slow": 40}})
        };
        let plan = json!({"variants": [variant("BTC-USDT", 8), variant("ETH-USDT", 12)],
                          "overrides": [{"hyperparameters": {"fast": 8}}], "sources": []});
        let s = subject_of("backtest_batch", &plan);
        assert_eq!(s.strategy.as_deref(), Some("SmaCross"));
        assert_eq!(s.symbol, None);
        assert_eq!(s.symbols, Some(vec!["BTC-USDT".into(), "ETH-USDT".into()]));
        assert_eq!(s.range.unwrap().start_date, "2023-01-01T00:00:00.000Z");
        let hp = s.hyperparameters.unwrap();
        assert_eq!(hp["slow"], json!(40));
        assert_eq!(hp["fast"], json!({"values": [8, 12]}));
    }

    #[test]
    fn a_study_shows_its_space_and_both_periods() {
        let mut testing = backtest_plan("SmaCross", "BTC-USDT", Value::Null);
        testing["start_ms"] = json!(1_700_086_400_000i64);
        testing["end_ms"] = json!(1_700_172_800_000i64);
        let plan = json!({
            "training": backtest_plan("SmaCross", "BTC-USDT", Value::Null), "testing": testing,
            "space": [{"name": "fast", "type": "int", "low": 5.0, "high": 30.0, "step": null, "log": false, "choices": null},
                      {"name": "slow", "type": "categorical", "choices": [40, 60]}],
            "fixed": {"risk": 0.5},
        });
        let s = subject_of("optimization", &plan);
        let range = s.range.unwrap();
        assert_eq!(
            (range.start, range.end),
            (1_700_000_000_000, 1_700_172_800_000)
        );
        assert_eq!(
            Value::Object(s.hyperparameters.unwrap()),
            json!({"fast": {"min": 5, "max": 30}, "slow": {"options": [40, 60]}, "risk": 0.5})
        );
        // A walk-forward holds several studies: the union of their ranges.
        let wf = subject_of("walk_forward", &json!({"studies": [plan], "windows": []}));
        assert_eq!(wf.strategy.as_deref(), Some("SmaCross"));
    }

    #[test]
    fn series_plans_and_validations() {
        let import = json!({"exchange": "Binance Spot", "symbol": "ETH-USDT", "start_ms": 0, "end_ms": 60_000});
        let s = subject_of("candle_import", &import);
        assert_eq!((s.symbol.as_deref(), s.strategy), (Some("ETH-USDT"), None));
        let chunk = json!({"exchange": "Binance Spot", "start_ms": 0, "end_ms": 60_000, "timeframe": "1h",
                           "pairs": [["A-USDT", "B-USDT"], ["A-USDT", "C-USDT"]]});
        let s = subject_of("pairs_screen_chunk", &chunk);
        assert_eq!(s.symbols.unwrap().len(), 3);
        let s = subject_of(
            "strategy_validation",
            &json!({"name": "SmaCross", "sha256": "x", "source": ""}),
        );
        assert_eq!(s.strategy.as_deref(), Some("SmaCross"));
        assert!(subject_of("optimization_trial", &json!({"trial": 3})).is_empty());
    }

    #[test]
    fn tags_are_bounded() {
        let mut request = json!({"strategy": "S", "tags": ["a", "b", "a"]});
        assert_eq!(take_tags(&mut request).unwrap(), vec!["a", "b"]);
        assert_eq!(request, json!({"strategy": "S"}), "tags are taken out");
        let too_many: Vec<String> = (0..=MAX_TAGS).map(|i| i.to_string()).collect();
        for bad in [
            json!(too_many),
            json!("a"),
            json!([""]),
            json!(["x".repeat(65)]),
            json!([1]),
        ] {
            let mut request = json!({"tags": bad});
            let error = take_tags(&mut request).unwrap_err();
            assert_eq!(error.body.code, "invalid_tags");
        }
        assert!(take_tags(&mut json!({"tags": ["é".repeat(64)]})).is_ok());
    }

    #[test]
    fn a_grid_counts_each_distinct_value_once() {
        // 46 values of `fast`, each in 123 runs (a grid over `fast` × `slow`).
        let runs: Vec<Map<String, Value>> = (0..46)
            .flat_map(|fast| (0..123).map(move |slow| (fast, slow)))
            .map(|(fast, slow)| {
                json!({"fast": fast, "slow": slow})
                    .as_object()
                    .unwrap()
                    .clone()
            })
            .collect();
        let merged = merge_runs(&runs).unwrap();
        assert_eq!(merged["fast"]["distinct"], 46, "{}", merged["fast"]);
        assert_eq!(
            merged["fast"]["values"].as_array().unwrap().len(),
            MAX_VALUES
        );
        assert_eq!(merged["slow"]["distinct"], 123, "{}", merged["slow"]);
        // Within the shown values there is no `distinct`.
        let few: Vec<Map<String, Value>> = (0..60)
            .map(|i| json!({"fast": i % 3}).as_object().unwrap().clone())
            .collect();
        assert_eq!(
            merge_runs(&few).unwrap()["fast"],
            json!({"values": [0, 1, 2]})
        );
    }
}
