//! Static validation of a Jesse strategy source file (`<Name>/__init__.py`).
//!
//! This module owns the checks that can be made on the text alone: it parses the
//! Python source with Ruff's error-resilient parser and inspects the syntax tree.
//! It never imports, compiles or executes the strategy; anything that would need
//! to run code (computed hyperparameters, imports, runtime errors) is left to the
//! deep validation done by the worker.
//!
//! What is checked:
//! 1. syntax: every parse error, with its line and column;
//! 2. exactly one top-level class deriving from `Strategy`;
//! 3. that class is named like the strategy (Jesse loads the class named like its folder);
//! 4. the methods Jesse requires (`should_long`, `go_long`) and the short pair;
//! 5. `hyperparameters()`, when it returns a literal list, is extracted and checked
//!    against Jesse's schema.

use std::collections::HashSet;

use ruff_python_ast::{self as ast, Expr, Number, PySourceType, Stmt, UnaryOp};
use ruff_python_parser::parse_unchecked_source;
use ruff_text_size::{Ranged, TextSize};
use serde_json::Value;

/// A problem at a place in the source: 1-based line and 1-based column (in characters).
#[derive(Debug, Clone, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub struct Diagnostic {
    pub line: u32,
    pub column: u32,
    pub message: String,
}

/// One entry of `hyperparameters()` as Jesse declares it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Hyperparameter {
    pub name: String,
    /// "int" | "float" | "bool" | "str" | "categorical"
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub min: Option<Value>,
    #[serde(default)]
    pub max: Option<Value>,
    #[serde(default)]
    pub step: Option<Value>,
    #[serde(default)]
    pub options: Option<Vec<Value>>,
    #[serde(default)]
    pub default: Option<Value>,
}

impl Hyperparameter {
    /// Whether `value` is one this parameter takes, as Jesse hands it to the
    /// strategy (`self.hp[name]` is the value as given): an `int` a whole
    /// number (`20.0` too, as a JSON number may spell it), a `float` any
    /// number, both within `[min, max]` when declared; a `bool` true or
    /// false; a `categorical` (or a `str` with options) one of its options
    /// (`1 == 1.0`, as in Python); a `str` a string. Answers why not.
    pub fn check(&self, value: &Value) -> Result<(), String> {
        match self.kind.as_str() {
            "int" | "float" => self.check_range(value),
            "bool" if !value.is_boolean() => Err("is not a boolean (true or false)".into()),
            "str" if !value.is_string() => Err("is not a string".into()),
            "categorical" | "str" => match &self.options {
                Some(options) if !options.iter().any(|o| python_eq(o, value)) => {
                    Err("is not one of its options".into())
                }
                _ => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// A numeric parameter's type and bounds (inclusive, as Jesse's and
    /// Optuna's ranges are).
    pub fn check_range(&self, value: &Value) -> Result<(), String> {
        let Some(number) = value.as_f64().filter(|_| value.is_number()) else {
            return Err(format!("is not a number (an {})", self.kind));
        };
        if self.kind == "int" && !(number.is_finite() && number.fract() == 0.0) {
            return Err("is not a whole number".into());
        }
        if self.kind == "int" && !(value.is_i64() || value.is_u64()) {
            // 20.0 would reach the strategy as a float (Jesse does not cast),
            // where e.g. a period must be an int: refused, not silently cast.
            return Err(format!(
                "is written as a float; an int takes a whole number without a decimal point (e.g. {})",
                number as i64
            ));
        }
        let bound = |v: &Option<Value>| v.as_ref().and_then(Value::as_f64);
        if let Some(min) = bound(&self.min)
            && number < min
        {
            return Err(format!("is below the minimum {}", show(&self.min)));
        }
        if let Some(max) = bound(&self.max)
            && number > max
        {
            return Err(format!("is above the maximum {}", show(&self.max)));
        }
        Ok(())
    }

    /// What the declaration allows, in words: "fast as an int from 5 to 50".
    pub fn allowed(&self) -> String {
        let name = &self.name;
        match self.kind.as_str() {
            "int" | "float" => match (&self.min, &self.max) {
                (Some(min), Some(max)) => {
                    format!("{name} as {} from {min} to {max}", article(&self.kind))
                }
                _ => format!("{name} as {}", article(&self.kind)),
            },
            "categorical" | "str" if self.options.is_some() => format!(
                "{name} with options {}",
                Value::Array(self.options.clone().unwrap_or_default())
            ),
            "bool" => format!("{name} as a bool (true or false)"),
            "str" => format!("{name} as a string"),
            other => format!("{name} as {other}"),
        }
    }
}

fn article(kind: &str) -> String {
    match kind {
        "int" => "an int".into(),
        other => format!("a {other}"),
    }
}

/// The outcome of [`validate_static`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub struct StaticReport {
    /// True when `errors` is empty.
    pub valid: bool,
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
    /// `Some(vec![])` when the strategy has no `hyperparameters()` method; `None` when it
    /// has one that is not a literal list (it is then left to deep validation), and when the
    /// source has syntax errors.
    pub hyperparameters: Option<Vec<Hyperparameter>>,
    /// The name of the class deriving from `Strategy`, when there is one.
    pub class_name: Option<String>,
}

/// Warning given when `hyperparameters()` cannot be read without running it.
const NOT_LITERAL: &str =
    "hyperparameters() is not a literal list; it will be checked by deep validation";

/// Checks a strategy's source without executing it.
///
/// `expected_name` is the strategy's name (its folder), when known: the class must
/// then be named the same.
pub fn validate_static(expected_name: Option<&str>, source: &str) -> StaticReport {
    let index = LineIndex::new(source);
    let parsed = parse_unchecked_source(source, PySourceType::Python);

    let mut errors: Vec<Diagnostic> = parsed
        .errors()
        .iter()
        .map(|e| index.diagnostic(e.location.start(), format!("syntax error: {}", e.error)))
        .collect();
    if !errors.is_empty() {
        errors.sort_by_key(|d| (d.line, d.column));
        return StaticReport {
            valid: false,
            errors,
            warnings: Vec::new(),
            hyperparameters: None,
            class_name: None,
        };
    }

    let mut checker = Checker {
        index: &index,
        errors,
        warnings: Vec::new(),
    };
    let (class_name, hyperparameters) = checker.check_module(expected_name, parsed.syntax());
    let Checker {
        errors, warnings, ..
    } = checker;
    StaticReport {
        valid: errors.is_empty(),
        errors,
        warnings,
        hyperparameters,
        class_name,
    }
}

/// Maps byte offsets to 1-based (line, column-in-characters).
struct LineIndex<'a> {
    source: &'a str,
    /// Byte offset where each line starts; lines end at `\n`, `\r\n` or a lone `\r`.
    line_starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    fn new(source: &'a str) -> Self {
        let bytes = source.as_bytes();
        let mut line_starts = vec![0];
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\n' => line_starts.push(i + 1),
                b'\r' if bytes.get(i + 1) != Some(&b'\n') => line_starts.push(i + 1),
                _ => {}
            }
            i += 1;
        }
        Self {
            source,
            line_starts,
        }
    }

    fn position(&self, offset: TextSize) -> (u32, u32) {
        let mut offset = offset.to_usize().min(self.source.len());
        while !self.source.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self.line_starts[line - 1];
        let column = self.source[start..offset].chars().count() + 1;
        (to_u32(line), to_u32(column))
    }

    fn diagnostic(&self, offset: TextSize, message: impl Into<String>) -> Diagnostic {
        let (line, column) = self.position(offset);
        Diagnostic {
            line,
            column,
            message: message.into(),
        }
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

struct Checker<'a> {
    index: &'a LineIndex<'a>,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn error(&mut self, offset: TextSize, message: impl Into<String>) {
        self.errors.push(self.index.diagnostic(offset, message));
    }

    fn warning(&mut self, offset: TextSize, message: impl Into<String>) {
        self.warnings.push(self.index.diagnostic(offset, message));
    }

    /// Returns the strategy class's name and its hyperparameters.
    fn check_module(
        &mut self,
        expected_name: Option<&str>,
        module: &ast::ModModule,
    ) -> (Option<String>, Option<Vec<Hyperparameter>>) {
        let strategies: Vec<&ast::StmtClassDef> = module
            .body
            .iter()
            .filter_map(|stmt| match stmt {
                Stmt::ClassDef(class) if derives_from_strategy(class) => Some(class),
                _ => None,
            })
            .collect();

        let Some((class, extra)) = strategies.split_first() else {
            self.error(
                TextSize::new(0),
                "no class deriving from Strategy; define `class <Name>(Strategy):` \
                 after `from jesse.strategies import Strategy`",
            );
            return (None, Some(Vec::new()));
        };
        for other in extra {
            self.error(
                other.name.start(),
                "more than one class derives from Strategy; keep one per file",
            );
        }

        let class_name = class.name.as_str();
        if let Some(expected) = expected_name
            && class_name != expected
        {
            self.error(
                class.name.start(),
                format!(
                    "the class is named {class_name} but the strategy is {expected}: Jesse loads \
                     the class named like its folder ({expected}/__init__.py)"
                ),
            );
        }

        let methods: Vec<&ast::StmtFunctionDef> = class
            .body
            .iter()
            .filter_map(|stmt| match stmt {
                Stmt::FunctionDef(def) => Some(def),
                _ => None,
            })
            .collect();
        let defines = |name: &str| methods.iter().any(|m| m.name.as_str() == name);

        for (method, signature) in [
            ("should_long", "should_long(self) -> bool"),
            ("go_long", "go_long(self)"),
        ] {
            if !defines(method) {
                self.error(
                    class.name.start(),
                    format!("missing method {signature} (Jesse requires should_long and go_long)"),
                );
            }
        }
        for (present, absent) in [("should_short", "go_short"), ("go_short", "should_short")] {
            if defines(present) && !defines(absent) {
                self.warning(
                    class.name.start(),
                    format!(
                        "{present} is defined but {absent} is not; Jesse needs both \
                         should_short and go_short to open short positions"
                    ),
                );
            }
        }

        // Python keeps the last definition of a name in a class body.
        let hyperparameters = match methods
            .iter()
            .rev()
            .find(|m| m.name.as_str() == "hyperparameters")
        {
            None => Some(Vec::new()),
            Some(def) => self.check_hyperparameters(def),
        };
        (Some(class_name.to_owned()), hyperparameters)
    }

    /// Extracts and checks a literal `hyperparameters()`; `None` when it is not literal.
    fn check_hyperparameters(&mut self, def: &ast::StmtFunctionDef) -> Option<Vec<Hyperparameter>> {
        match literal_hyperparameters(def) {
            Some(raw) => Some(self.check_schema(raw)),
            None => {
                self.warning(def.name.start(), NOT_LITERAL);
                None
            }
        }
    }

    fn check_schema(&mut self, raw: Vec<RawEntry>) -> Vec<Hyperparameter> {
        let mut seen: HashSet<String> = HashSet::new();
        let mut out = Vec::new();
        for entry in raw {
            let at = entry.at;
            let name = match entry.get("name") {
                Some(Value::String(name)) if !name.is_empty() => name.clone(),
                Some(_) => {
                    self.error(at, "hyperparameter name must be a non-empty string");
                    continue;
                }
                None => {
                    self.error(at, "hyperparameter has no 'name'");
                    continue;
                }
            };
            if !seen.insert(name.clone()) {
                self.error(at, format!("duplicate hyperparameter name '{name}'"));
            }
            let kind = match entry.get("type") {
                None => {
                    self.error(at, format!("hyperparameter '{name}' has no 'type'"));
                    continue;
                }
                Some(Value::String(t))
                    if matches!(t.as_str(), "int" | "float" | "bool" | "str" | "categorical") =>
                {
                    t.clone()
                }
                Some(other) => {
                    self.error(
                        at,
                        format!(
                            "hyperparameter '{name}' has unknown type {other}; use int, float, \
                             bool, str or 'categorical'"
                        ),
                    );
                    continue;
                }
            };
            let hp = Hyperparameter {
                name,
                kind,
                min: entry.get("min").cloned(),
                max: entry.get("max").cloned(),
                step: entry.get("step").cloned(),
                options: match entry.get("options") {
                    Some(Value::Array(items)) => Some(items.clone()),
                    _ => None,
                },
                default: entry.get("default").cloned(),
            };
            match hp.kind.as_str() {
                "int" | "float" => self.check_numeric(at, &hp),
                "categorical" => self.check_categorical(at, &hp, entry.get("options")),
                _ => {
                    if hp.default.is_none() {
                        self.error(at, format!("hyperparameter '{}' has no default", hp.name));
                    }
                }
            }
            out.push(hp);
        }
        out
    }

    fn check_numeric(&mut self, at: TextSize, hp: &Hyperparameter) {
        let name = &hp.name;
        let bound = |this: &mut Self, key: &str, value: &Option<Value>| match value {
            None => {
                this.error(at, format!("hyperparameter '{name}' needs '{key}'"));
                None
            }
            Some(v) => match v.as_f64() {
                Some(n) => Some(n),
                None => {
                    this.error(
                        at,
                        format!("hyperparameter '{name}': '{key}' must be a number, not {v}"),
                    );
                    None
                }
            },
        };
        let min = bound(self, "min", &hp.min);
        let max = bound(self, "max", &hp.max);
        let default = bound(self, "default", &hp.default);
        if let (Some(lo), Some(hi)) = (min, max) {
            if lo >= hi {
                self.error(
                    at,
                    format!(
                        "hyperparameter '{name}': min ({}) must be less than max ({})",
                        show(&hp.min),
                        show(&hp.max)
                    ),
                );
            } else if let Some(d) = default
                && !(lo..=hi).contains(&d)
            {
                self.error(
                    at,
                    format!(
                        "hyperparameter '{name}': default {} is outside [{}, {}]",
                        show(&hp.default),
                        show(&hp.min),
                        show(&hp.max)
                    ),
                );
            }
        }
        if let Some(step) = &hp.step
            && !step.as_f64().is_some_and(|s| s > 0.0)
        {
            self.error(
                at,
                format!("hyperparameter '{name}': step must be a positive number, not {step}"),
            );
        }
    }

    fn check_categorical(&mut self, at: TextSize, hp: &Hyperparameter, options: Option<&Value>) {
        let name = &hp.name;
        let options = match options {
            Some(Value::Array(items)) if !items.is_empty() => items,
            Some(Value::Array(_)) => {
                self.error(
                    at,
                    format!("categorical hyperparameter '{name}' has no options"),
                );
                return;
            }
            Some(other) => {
                self.error(
                    at,
                    format!(
                        "categorical hyperparameter '{name}': options must be a list, not {other}"
                    ),
                );
                return;
            }
            None => {
                self.error(
                    at,
                    format!("categorical hyperparameter '{name}' needs 'options'"),
                );
                return;
            }
        };
        match &hp.default {
            None => self.error(at, format!("hyperparameter '{name}' has no default")),
            Some(default) if !options.iter().any(|o| python_eq(o, default)) => self.error(
                at,
                format!("categorical hyperparameter '{name}': default {default} is not among its options"),
            ),
            Some(_) => {}
        }
    }
}

fn show(value: &Option<Value>) -> String {
    value
        .as_ref()
        .map_or_else(|| "None".to_owned(), Value::to_string)
}

/// Equality as Python sees it for literals: `1 == 1.0`.
fn python_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn derives_from_strategy(class: &ast::StmtClassDef) -> bool {
    class.bases().iter().any(|base| match base {
        Expr::Name(name) => name.id.as_str() == "Strategy",
        Expr::Attribute(attr) => attr.attr.as_str() == "Strategy",
        _ => false,
    })
}

/// One dict of the literal list, with its keys in source order.
struct RawEntry {
    at: TextSize,
    fields: Vec<(String, Value)>,
}

impl RawEntry {
    /// The last value given for `key` (as a Python dict literal keeps it).
    fn get(&self, key: &str) -> Option<&Value> {
        self.fields
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

/// Reads `return [ {...}, ... ]` (after an optional docstring); `None` if not literal.
fn literal_hyperparameters(def: &ast::StmtFunctionDef) -> Option<Vec<RawEntry>> {
    let body: &[Stmt] = match def.body.split_first() {
        Some((Stmt::Expr(first), rest)) if first.value.is_string_literal_expr() => rest,
        _ => &def.body,
    };
    let [Stmt::Return(ret)] = body else {
        return None;
    };
    let Some(Expr::List(list)) = ret.value.as_deref() else {
        return None;
    };
    list.elts
        .iter()
        .map(|item| {
            let Expr::Dict(dict) = item else {
                return None;
            };
            let fields = dict
                .items
                .iter()
                .map(|entry| {
                    let Some(Expr::StringLiteral(key)) = &entry.key else {
                        return None;
                    };
                    let key = key.value.to_str().to_owned();
                    let value = if key == "type" {
                        type_literal(&entry.value)?
                    } else {
                        literal(&entry.value)?
                    };
                    Some((key, value))
                })
                .collect::<Option<Vec<_>>>()?;
            Some(RawEntry {
                at: dict.start(),
                fields,
            })
        })
        .collect()
}

/// The value of `'type'`: a literal or one of the bare names `int`, `float`, `bool`, `str`.
fn type_literal(expr: &Expr) -> Option<Value> {
    match expr {
        Expr::Name(name) => match name.id.as_str() {
            id @ ("int" | "float" | "bool" | "str") => Some(Value::String(id.to_owned())),
            _ => None,
        },
        _ => literal(expr),
    }
}

/// A literal value: number (possibly signed), string, True/False/None, or a list/tuple of them.
fn literal(expr: &Expr) -> Option<Value> {
    match expr {
        Expr::NumberLiteral(number) => number_value(&number.value, false),
        Expr::UnaryOp(unary) => {
            let negate = match unary.op {
                UnaryOp::USub => true,
                UnaryOp::UAdd => false,
                UnaryOp::Not | UnaryOp::Invert => return None,
            };
            match unary.operand.as_ref() {
                Expr::NumberLiteral(number) => number_value(&number.value, negate),
                _ => None,
            }
        }
        Expr::StringLiteral(string) => Some(Value::String(string.value.to_str().to_owned())),
        Expr::BooleanLiteral(boolean) => Some(Value::Bool(boolean.value)),
        Expr::NoneLiteral(_) => Some(Value::Null),
        Expr::List(ast::ExprList { elts, .. }) | Expr::Tuple(ast::ExprTuple { elts, .. }) => elts
            .iter()
            .map(literal)
            .collect::<Option<Vec<_>>>()
            .map(Value::Array),
        _ => None,
    }
}

fn number_value(number: &Number, negate: bool) -> Option<Value> {
    match number {
        Number::Int(int) => match int.as_i64() {
            Some(n) => Some(Value::from(if negate { -n } else { n })),
            // Too large for i64: keep it as a float if it reads as one.
            None => {
                let n: f64 = int.to_string().replace('_', "").parse().ok()?;
                float_value(if negate { -n } else { n })
            }
        },
        Number::Float(f) => float_value(if negate { -*f } else { *f }),
        Number::Complex { .. } => None,
    }
}

fn float_value(f: f64) -> Option<Value> {
    serde_json::Number::from_f64(f).map(Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HEADER: &str = "from jesse.strategies import Strategy\nimport jesse.indicators as ta\n\n";

    fn strategy(name: &str, extra: &str) -> String {
        format!(
            "{HEADER}class {name}(Strategy):\n    def should_long(self) -> bool:\n        return True\n\n    def go_long(self):\n        pass\n{extra}"
        )
    }

    fn with_hp(list: &str) -> String {
        strategy(
            "Demo",
            &format!("\n    def hyperparameters(self):\n        return {list}\n"),
        )
    }

    fn messages(d: &[Diagnostic]) -> Vec<&str> {
        d.iter().map(|d| d.message.as_str()).collect()
    }

    #[test]
    fn valid_strategy_with_literal_hyperparameters() {
        let src = with_hp(
            r#"[
            {'name': 'fast', 'type': int, 'min': 5, 'max': 50, 'default': 10},
            {'name': 'ratio', 'type': 'float', 'min': 0.5, 'max': 3.0, 'step': 0.1, 'default': 1.5},
            {'name': 'mode', 'type': 'categorical', 'options': ['a', 'b', 3], 'default': 'b'},
            {"name": "flag", "type": bool, "default": True},
            {'name': 'label', 'type': 'str', 'default': None},
        ]"#,
        );
        let report = validate_static(Some("Demo"), &src);
        assert!(report.valid, "{report:?}");
        assert!(report.errors.is_empty());
        assert!(report.warnings.is_empty());
        assert_eq!(report.class_name.as_deref(), Some("Demo"));
        let hps = report.hyperparameters.unwrap();
        assert_eq!(hps.len(), 5);
        assert_eq!(
            hps[0],
            Hyperparameter {
                name: "fast".into(),
                kind: "int".into(),
                min: Some(json!(5)),
                max: Some(json!(50)),
                step: None,
                options: None,
                default: Some(json!(10)),
            }
        );
        assert_eq!(hps[1].kind, "float");
        assert_eq!(hps[1].min, Some(json!(0.5)));
        assert_eq!(hps[1].max, Some(json!(3.0)));
        assert_eq!(hps[1].step, Some(json!(0.1)));
        assert_eq!(hps[1].default, Some(json!(1.5)));
        assert_eq!(hps[2].kind, "categorical");
        assert_eq!(hps[2].options, Some(vec![json!("a"), json!("b"), json!(3)]));
        assert_eq!(hps[2].default, Some(json!("b")));
        assert_eq!(hps[3].kind, "bool");
        assert_eq!(hps[3].default, Some(json!(true)));
        assert_eq!(hps[4].kind, "str");
        assert_eq!(hps[4].default, Some(Value::Null));

        // Serialized with `type`, not `kind`.
        let v = serde_json::to_value(&hps[0]).unwrap();
        assert_eq!(v["type"], "int");
        assert!(v.get("kind").is_none());
    }

    #[test]
    fn docstring_and_async_methods_are_accepted() {
        let src = format!(
            "{HEADER}class Demo(Strategy):\n    async def should_long(self):\n        return True\n\n    async def go_long(self):\n        pass\n\n    def hyperparameters(self):\n        \"\"\"Tunable knobs.\"\"\"\n        return [{{'name': 'n', 'type': int, 'min': 1, 'max': 2, 'default': 1}}]\n"
        );
        let report = validate_static(Some("Demo"), &src);
        assert!(report.valid, "{report:?}");
        assert_eq!(report.hyperparameters.unwrap().len(), 1);
    }

    #[test]
    fn no_hyperparameters_method_gives_empty_list() {
        let report = validate_static(None, &strategy("Demo", ""));
        assert!(report.valid, "{report:?}");
        assert_eq!(report.hyperparameters, Some(vec![]));
        assert_eq!(report.class_name.as_deref(), Some("Demo"));
    }

    #[test]
    fn qualified_strategy_base_is_recognised() {
        let src = "import jesse.strategies\n\nclass Demo(jesse.strategies.Strategy):\n    def should_long(self):\n        return False\n    def go_long(self):\n        pass\n";
        let report = validate_static(Some("Demo"), src);
        assert!(report.valid, "{report:?}");
    }

    #[test]
    fn syntax_error_missing_colon_reports_line_and_column() {
        let src = "from jesse.strategies import Strategy\n\nclass Demo(Strategy)\n    def should_long(self):\n        return True\n";
        let report = validate_static(Some("Demo"), src);
        assert!(!report.valid);
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
        let e = &report.errors[0];
        assert_eq!(e.line, 3);
        assert_eq!(e.column, 21);
        assert!(e.message.starts_with("syntax error: "), "{}", e.message);
        assert_eq!(e.message, "syntax error: Expected `:`, found newline");
        // Structural checks are skipped.
        assert!(report.warnings.is_empty());
        assert_eq!(report.class_name, None);
    }

    #[test]
    fn several_syntax_errors_are_all_reported() {
        let src = "from jesse.strategies import Strategy\n\nclass Demo(Strategy)\n    def should_long(self):\n        return (1 +\n\n    def go_long(self)\n        x = = 2\n";
        let report = validate_static(Some("Demo"), src);
        assert!(!report.valid);
        assert!(report.errors.len() >= 3, "{:?}", report.errors);
        assert!(
            report
                .errors
                .iter()
                .all(|e| e.message.starts_with("syntax error: "))
        );
        let lines: Vec<u32> = report.errors.iter().map(|e| e.line).collect();
        assert!(lines.contains(&3), "{lines:?}");
        assert!(lines.iter().any(|&l| l >= 7), "{lines:?}");
        let mut sorted = lines.clone();
        sorted.sort();
        assert_eq!(lines, sorted);
    }

    #[test]
    fn unicode_before_an_error_counts_characters() {
        // "é" and "€" are 2 and 3 bytes: the column must count them as one each.
        let src = "x = 'é€'; y = = 1\n";
        let report = validate_static(None, src);
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
        let e = &report.errors[0];
        assert_eq!(e.line, 1);
        // `x = 'é€'; y = ` is 14 characters, the second `=` is at column 15.
        assert_eq!(e.column, 15, "{e:?}");
    }

    #[test]
    fn line_index_handles_crlf_and_multibyte() {
        let src = "a\r\nbé\rc\nd";
        let index = LineIndex::new(src);
        assert_eq!(index.position(TextSize::new(0)), (1, 1));
        assert_eq!(index.position(TextSize::new(3)), (2, 1));
        assert_eq!(index.position(TextSize::new(6)), (2, 3)); // the \r after é
        assert_eq!(index.position(TextSize::new(7)), (3, 1));
        assert_eq!(index.position(TextSize::new(9)), (4, 1));
        assert_eq!(index.position(TextSize::new(100)), (4, 2));
    }

    #[test]
    fn no_strategy_class() {
        let src = "from jesse.strategies import Strategy\n\nclass Demo:\n    pass\n";
        let report = validate_static(Some("Demo"), src);
        assert!(!report.valid);
        assert_eq!(
            report.errors,
            vec![Diagnostic {
                line: 1,
                column: 1,
                message: "no class deriving from Strategy; define `class <Name>(Strategy):` \
                          after `from jesse.strategies import Strategy`"
                    .into()
            }]
        );
        assert_eq!(report.class_name, None);
    }

    #[test]
    fn an_int_takes_json_integers_only() {
        let hp: Hyperparameter = serde_json::from_value(
            serde_json::json!({"name": "fast", "type": "int", "min": 5, "max": 50, "default": 10}),
        )
        .unwrap();
        assert_eq!(hp.check(&serde_json::json!(20)), Ok(()));
        let error = hp.check(&serde_json::json!(20.0)).unwrap_err();
        assert!(
            error.contains("written as a float") && error.contains("e.g. 20"),
            "{error}"
        );
        assert!(
            hp.check(&serde_json::json!(20.5))
                .unwrap_err()
                .contains("whole number")
        );
        assert!(
            hp.check(&serde_json::json!(60))
                .unwrap_err()
                .contains("maximum 50")
        );
    }

    #[test]
    fn empty_source_has_no_strategy_class() {
        let report = validate_static(None, "");
        assert!(!report.valid);
        assert_eq!(report.errors.len(), 1);
        assert_eq!((report.errors[0].line, report.errors[0].column), (1, 1));
    }

    #[test]
    fn two_strategy_classes() {
        let src = format!(
            "{}\n\nclass Other(Strategy):\n    def should_long(self):\n        return False\n    def go_long(self):\n        pass\n",
            strategy("Demo", "")
        );
        let report = validate_static(Some("Demo"), &src);
        assert!(!report.valid);
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
        let e = &report.errors[0];
        assert_eq!(
            e.message,
            "more than one class derives from Strategy; keep one per file"
        );
        assert_eq!(e.line, 12);
        assert_eq!(e.column, 7);
        assert_eq!(report.class_name.as_deref(), Some("Demo"));
    }

    #[test]
    fn wrong_class_name() {
        let report = validate_static(Some("Golden"), &strategy("Demo", ""));
        assert!(!report.valid);
        assert_eq!(report.errors.len(), 1);
        let e = &report.errors[0];
        assert_eq!(
            e.message,
            "the class is named Demo but the strategy is Golden: Jesse loads the class named \
             like its folder (Golden/__init__.py)"
        );
        assert_eq!(e.line, 4);
        assert_eq!(report.class_name.as_deref(), Some("Demo"));
    }

    #[test]
    fn missing_go_long() {
        let src = format!(
            "{HEADER}class Demo(Strategy):\n    def should_long(self) -> bool:\n        return True\n"
        );
        let report = validate_static(Some("Demo"), &src);
        assert!(!report.valid);
        assert_eq!(report.errors.len(), 1);
        assert_eq!(report.errors[0].line, 4);
        assert!(
            report.errors[0]
                .message
                .starts_with("missing method go_long"),
            "{}",
            report.errors[0].message
        );
    }

    #[test]
    fn missing_both_required_methods() {
        let src = format!("{HEADER}class Demo(Strategy):\n    pass\n");
        let report = validate_static(Some("Demo"), &src);
        assert_eq!(
            messages(&report.errors),
            vec![
                "missing method should_long(self) -> bool (Jesse requires should_long and go_long)",
                "missing method go_long(self) (Jesse requires should_long and go_long)",
            ]
        );
    }

    #[test]
    fn unpaired_short_methods_warn() {
        let src = strategy(
            "Demo",
            "\n    def should_short(self) -> bool:\n        return False\n",
        );
        let report = validate_static(Some("Demo"), &src);
        assert!(report.valid, "{report:?}");
        assert_eq!(report.warnings.len(), 1);
        assert!(report.warnings[0].message.contains("go_short"));

        let src = strategy("Demo", "\n    def go_short(self):\n        pass\n");
        let report = validate_static(Some("Demo"), &src);
        assert!(report.valid);
        assert_eq!(report.warnings.len(), 1);

        let src = strategy(
            "Demo",
            "\n    def should_short(self):\n        return False\n    def go_short(self):\n        pass\n",
        );
        assert!(validate_static(Some("Demo"), &src).warnings.is_empty());
    }

    #[test]
    fn duplicate_hyperparameter_name() {
        let src = with_hp(
            "[\n            {'name': 'n', 'type': int, 'min': 1, 'max': 5, 'default': 2},\n            {'name': 'n', 'type': int, 'min': 1, 'max': 5, 'default': 2},\n        ]",
        );
        let report = validate_static(Some("Demo"), &src);
        assert!(!report.valid);
        assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
        assert_eq!(
            report.errors[0].message,
            "duplicate hyperparameter name 'n'"
        );
        // The hyperparameters list starts on line 12: the duplicate is line 14.
        assert_eq!(report.errors[0].line, 14);
        assert_eq!(report.errors[0].column, 13);
    }

    #[test]
    fn min_not_below_max() {
        let src = with_hp("[{'name': 'n', 'type': int, 'min': 5, 'max': 5, 'default': 5}]");
        let report = validate_static(Some("Demo"), &src);
        assert_eq!(
            messages(&report.errors),
            vec!["hyperparameter 'n': min (5) must be less than max (5)"]
        );
        assert_eq!(report.errors[0].line, 12);
    }

    #[test]
    fn default_out_of_range() {
        let src = with_hp("[{'name': 'x', 'type': float, 'min': 0.1, 'max': 1.0, 'default': 2}]");
        let report = validate_static(Some("Demo"), &src);
        assert_eq!(
            messages(&report.errors),
            vec!["hyperparameter 'x': default 2 is outside [0.1, 1.0]"]
        );
    }

    #[test]
    fn numeric_requires_bounds_and_default() {
        let src = with_hp("[{'name': 'x', 'type': 'int', 'max': 'ten'}]");
        let report = validate_static(Some("Demo"), &src);
        assert_eq!(
            messages(&report.errors),
            vec![
                "hyperparameter 'x' needs 'min'",
                "hyperparameter 'x': 'max' must be a number, not \"ten\"",
                "hyperparameter 'x' needs 'default'",
            ]
        );
    }

    #[test]
    fn categorical_default_not_in_options() {
        let src = with_hp(
            "[{'name': 'm', 'type': 'categorical', 'options': ['a', 'b'], 'default': 'c'}]",
        );
        let report = validate_static(Some("Demo"), &src);
        assert_eq!(
            messages(&report.errors),
            vec!["categorical hyperparameter 'm': default \"c\" is not among its options"]
        );

        let src = with_hp("[{'name': 'm', 'type': 'categorical', 'options': [], 'default': 1}]");
        let report = validate_static(Some("Demo"), &src);
        assert_eq!(
            messages(&report.errors),
            vec!["categorical hyperparameter 'm' has no options"]
        );

        // 1 == 1.0 in Python.
        let src =
            with_hp("[{'name': 'm', 'type': 'categorical', 'options': [1.0, 2.0], 'default': 1}]");
        assert!(validate_static(Some("Demo"), &src).valid);
    }

    #[test]
    fn unknown_type_and_missing_name() {
        let src = with_hp(
            "[{'name': 'a', 'type': 'integer', 'default': 1}, {'type': int, 'min': 0, 'max': 1, 'default': 0}, {'name': 3, 'type': int}]",
        );
        let report = validate_static(Some("Demo"), &src);
        assert_eq!(
            messages(&report.errors),
            vec![
                "hyperparameter 'a' has unknown type \"integer\"; use int, float, bool, str or 'categorical'",
                "hyperparameter has no 'name'",
                "hyperparameter name must be a non-empty string",
            ]
        );
        assert_eq!(report.hyperparameters, Some(vec![]));
    }

    #[test]
    fn non_literal_hyperparameters_warn() {
        for list in [
            "[{'name': n, 'type': int, 'min': 1, 'max': 5, 'default': 2} for n in 'ab']",
            "[{'name': 'n', 'type': int, 'min': 1, 'max': 5 * 2, 'default': 2}]",
            "[{'name': 'n', 'type': int, 'min': LOW, 'max': 5, 'default': 2}]",
            "HPS",
            "[dict(name='n', type=int, min=1, max=5, default=2)]",
            "[{**BASE, 'name': 'n'}]",
        ] {
            let report = validate_static(Some("Demo"), &with_hp(list));
            assert!(report.valid, "{list}: {report:?}");
            assert_eq!(report.hyperparameters, None, "{list}");
            assert_eq!(messages(&report.warnings), vec![NOT_LITERAL], "{list}");
            assert_eq!(report.warnings[0].line, 11, "{list}");
        }

        // More than a single return statement.
        let src = strategy(
            "Demo",
            "\n    def hyperparameters(self):\n        hps = []\n        return hps\n",
        );
        let report = validate_static(Some("Demo"), &src);
        assert_eq!(report.hyperparameters, None);
        assert_eq!(report.warnings.len(), 1);
    }

    #[test]
    fn negative_numbers_are_literals() {
        let src = with_hp(
            "[{'name': 'off', 'type': float, 'min': -2.5, 'max': -0.5, 'default': -1, 'step': +0.5}, {'name': 'k', 'type': int, 'min': -10, 'max': 10, 'default': -3}]",
        );
        let report = validate_static(Some("Demo"), &src);
        assert!(report.valid, "{report:?}");
        let hps = report.hyperparameters.unwrap();
        assert_eq!(hps[0].min, Some(json!(-2.5)));
        assert_eq!(hps[0].max, Some(json!(-0.5)));
        assert_eq!(hps[0].default, Some(json!(-1)));
        assert_eq!(hps[0].step, Some(json!(0.5)));
        assert_eq!(hps[1].min, Some(json!(-10)));
        assert_eq!(hps[1].default, Some(json!(-3)));
    }

    #[test]
    fn report_serializes() {
        let report = validate_static(Some("Demo"), &strategy("Demo", ""));
        let v = serde_json::to_value(&report).unwrap();
        assert_eq!(v["valid"], true);
        assert_eq!(v["class_name"], "Demo");
        assert_eq!(v["hyperparameters"], json!([]));
        let schema = schemars::schema_for!(StaticReport);
        assert!(
            serde_json::to_string(&schema)
                .unwrap()
                .contains("hyperparameters")
        );
    }

    #[test]
    fn values_are_checked_as_jesse_takes_them() {
        let src = with_hp(
            r#"[
            {'name': 'fast', 'type': int, 'min': 5, 'max': 50, 'default': 10},
            {'name': 'ratio', 'type': float, 'min': 0.5, 'max': 3.0, 'default': 1.5},
            {'name': 'mode', 'type': 'categorical', 'options': ['a', 1], 'default': 'a'},
            {'name': 'on', 'type': bool, 'default': True},
            {'name': 'label', 'type': str, 'default': 'x'},
        ]"#,
        );
        let hps = validate_static(Some("Demo"), &src).hyperparameters.unwrap();
        let (fast, ratio, mode, on, label) = (&hps[0], &hps[1], &hps[2], &hps[3], &hps[4]);
        for ok in [json!(5), json!(50)] {
            assert_eq!(fast.check(&ok), Ok(()), "{ok}");
        }
        for bad in [
            json!(20.0),
            json!(4),
            json!(51),
            json!(12.5),
            json!("12"),
            json!(true),
            json!(null),
        ] {
            assert!(fast.check(&bad).is_err(), "{bad}");
        }
        assert_eq!(ratio.check(&json!(1)), Ok(()), "an int is a float");
        assert!(
            ratio
                .check(&json!(0.4))
                .unwrap_err()
                .contains("minimum 0.5")
        );
        assert_eq!(mode.check(&json!(1.0)), Ok(()), "1 == 1.0 as in Python");
        assert!(mode.check(&json!("b")).is_err());
        assert_eq!(on.check(&json!(false)), Ok(()));
        assert!(on.check(&json!(1)).is_err());
        assert_eq!(label.check(&json!("y")), Ok(()));
        assert!(label.check(&json!(3)).is_err());
        assert_eq!(fast.allowed(), "fast as an int from 5 to 50");
        assert_eq!(mode.allowed(), r#"mode with options ["a",1]"#);
    }
}
