//! Planning: checks a request against everything knowable before a worker is
//! used (strategy source, exchange, timeframes, dates, numbers, stored
//! candles) and turns it into the plan a job runs. The API's submits and a
//! worker's child jobs call the same code, so a child gets exactly the
//! validation a user's submit gets.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::jesse::{
    BACKTESTING_EXCHANGES, STRATEGY_NAME_RULE, TIMEFRAMES, is_backtesting_exchange,
    is_valid_strategy_name, timeframe_minutes,
};
use crate::jobs::{BacktestPlan, BacktestRequest, RouteSpec, StrategySource};
use crate::store::{Gap, Store};
use crate::strategies::StrategyDir;
use crate::strategy_static::{Hyperparameter, StaticReport, validate_static};
use crate::time::{MINUTE_MS, parse_day, to_rfc3339};

/// (exchange, symbol, start, end) of a gap scan.
type GapKey = (String, String, i64, i64);
/// A strategy's pinned source and what it declares.
#[derive(Clone)]
struct PinnedSource {
    source: StrategySource,
    /// Its hyperparameters: the literal `hyperparameters()` list, else the
    /// ones its deep validation saw when run (None: neither is known).
    declared: Option<Vec<Hyperparameter>>,
    /// Whether the deep validation verdict was looked up (once per session).
    deep_read: bool,
}

impl PinnedSource {
    fn new(source: StrategySource) -> Self {
        let declared = validate_static(Some(&source.name), &source.source).hyperparameters;
        Self {
            deep_read: declared.is_some(),
            declared,
            source,
        }
    }
}

pub struct Planner {
    store: Store,
    strategies: StrategyDir,
    /// Gap scans of this planning session: a batch of thousands of variants over
    /// the same series scans each range once.
    gaps: Mutex<HashMap<GapKey, Vec<Gap>>>,
    /// Sources read in this session: every variant of a batch pins the same bytes.
    sources: Mutex<HashMap<String, PinnedSource>>,
}

impl Planner {
    pub fn new(store: Store, strategies: StrategyDir) -> Self {
        Self {
            store,
            strategies,
            gaps: Mutex::default(),
            sources: Mutex::default(),
        }
    }

    /// The store plans read (jobs a request names, stored candles).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Plans with these sources instead of reading the strategy files: a
    /// parent's children run exactly the bytes validated at its submit.
    pub fn pin_sources(&self, sources: &[StrategySource]) {
        let mut memo = self.sources.lock().expect("source memo");
        for source in sources {
            memo.insert(source.name.clone(), PinnedSource::new(source.clone()));
        }
    }

    /// A strategy's source as every plan of this session pins it (read once,
    /// statically checked): what a pipeline pins at submit for all its steps.
    pub async fn strategy_source(&self, name: &str) -> Result<StrategySource, ApiError> {
        self.check_strategy(name, None).await
    }

    async fn gaps(
        &self,
        exchange: &str,
        symbol: &str,
        start: i64,
        end: i64,
    ) -> Result<Vec<Gap>, ApiError> {
        let key = (exchange.to_string(), symbol.to_string(), start, end);
        if let Some(gaps) = self.gaps.lock().expect("gap memo").get(&key) {
            return Ok(gaps.clone());
        }
        let gaps = self.store.gaps(exchange, symbol, start, end).await?;
        self.gaps
            .lock()
            .expect("gap memo")
            .insert(key, gaps.clone());
        Ok(gaps)
    }

    /// Checks a request against everything knowable before a worker is used.
    pub async fn plan_backtest(&self, request: &BacktestRequest) -> Result<BacktestPlan, ApiError> {
        if !is_backtesting_exchange(&request.exchange) {
            return Err(ApiError::invalid(
                "unsupported_exchange",
                format!(
                    "exchange '{}' is not one Jesse can backtest; use one of the listed names",
                    request.exchange
                ),
            )
            .with_details(json!({"field": "exchange", "supported": BACKTESTING_EXCHANGES})));
        }
        let routes: Vec<RouteSpec> = match &request.routes {
            Some(routes) if !routes.is_empty() => routes.clone(),
            Some(_) => {
                return Err(ApiError::invalid(
                    "invalid_routes",
                    "routes must not be empty when given",
                ));
            }
            None => {
                let field = |value: &Option<String>, name: &str| {
                    value.clone().ok_or_else(|| {
                        ApiError::invalid(
                            "missing_field",
                            format!(
                                "'{name}' is required (or give 'routes' for a multi-route backtest)"
                            ),
                        )
                        .with_details(json!({"field": name}))
                    })
                };
                vec![RouteSpec {
                    strategy: field(&request.strategy, "strategy")?,
                    symbol: field(&request.symbol, "symbol")?,
                    timeframe: field(&request.timeframe, "timeframe")?,
                }]
            }
        };
        let data_routes = request.data_routes.clone().unwrap_or_default();
        let mut max_minutes = 1;
        let mut seen = std::collections::HashSet::new();
        let mut sources: Vec<StrategySource> = Vec::new();
        for route in &routes {
            if !sources.iter().any(|s| s.name == route.strategy) {
                sources.push(
                    self.check_strategy(&route.strategy, request.hyperparameters.as_ref())
                        .await?,
                );
            }
            check_symbol(&route.symbol)?;
            max_minutes = max_minutes.max(check_timeframe(&route.timeframe)?);
            if !seen.insert(route.symbol.clone()) {
                return Err(ApiError::invalid(
                    "duplicate_route",
                    format!(
                        "symbol {} is traded by more than one route; Jesse allows one route per symbol",
                        route.symbol
                    ),
                ));
            }
        }
        for data_route in &data_routes {
            check_symbol(&data_route.symbol)?;
            max_minutes = max_minutes.max(check_timeframe(&data_route.timeframe)?);
            if routes
                .iter()
                .any(|r| r.symbol == data_route.symbol && r.timeframe == data_route.timeframe)
            {
                return Err(ApiError::invalid(
                    "duplicate_route",
                    format!(
                        "data route {} {} repeats a trading route",
                        data_route.symbol, data_route.timeframe
                    ),
                ));
            }
        }

        let start_ms = parse_day(&request.start_date).map_err(|m| {
            ApiError::invalid("invalid_date", format!("start_date: {m}"))
                .with_details(json!({"field": "start_date"}))
        })?;
        let end_ms = parse_day(&request.end_date).map_err(|m| {
            ApiError::invalid("invalid_date", format!("end_date: {m}"))
                .with_details(json!({"field": "end_date"}))
        })?;
        if start_ms >= end_ms {
            return Err(ApiError::invalid(
                "invalid_date_range",
                format!(
                    "start_date ({}) must be before end_date ({}); end_date is exclusive, so a one-day backtest of 2024-01-01 uses end_date 2024-01-02",
                    request.start_date, request.end_date
                ),
            ));
        }
        check_number(
            "starting_balance",
            request.starting_balance,
            |v| v > 0.0 && v <= 1e15,
            "a positive amount",
        )?;
        check_number(
            "fee",
            request.fee,
            |v| (0.0..0.1).contains(&v),
            "a rate from 0 to 0.1 (0.001 = 0.1 %)",
        )?;
        check_number(
            "leverage",
            request.leverage,
            |v| (1.0..=125.0).contains(&v),
            "from 1 to 125",
        )?;
        if !(0..=10_000).contains(&request.warm_up_candles) {
            return Err(ApiError::invalid(
                "invalid_number",
                "warm_up_candles must be from 0 to 10000",
            )
            .with_details(json!({"field": "warm_up_candles"})));
        }
        if !matches!(request.exchange_type.as_str(), "futures" | "spot") {
            return Err(
                ApiError::invalid("invalid_type", "type must be 'futures' or 'spot'")
                    .with_details(json!({"field": "type"})),
            );
        }
        if !matches!(request.leverage_mode.as_str(), "cross" | "isolated") {
            return Err(ApiError::invalid(
                "invalid_leverage_mode",
                "leverage_mode must be 'cross' or 'isolated'",
            )
            .with_details(json!({"field": "leverage_mode"})));
        }

        let warmup_minutes = request.warm_up_candles * max_minutes;
        let mut symbols: Vec<String> = routes.iter().map(|r| r.symbol.clone()).collect();
        symbols.extend(data_routes.iter().map(|r| r.symbol.clone()));
        symbols.sort();
        symbols.dedup();
        let load_start = start_ms - warmup_minutes * MINUTE_MS;
        let mut gap_report = serde_json::Map::new();
        for symbol in &symbols {
            let gaps = self
                .gaps(&request.exchange, symbol, load_start, end_ms)
                .await?;
            if gaps.is_empty() {
                continue;
            }
            if !request.allow_gaps {
                return Err(missing_candles(
                    &request.exchange,
                    symbol,
                    load_start,
                    start_ms,
                    end_ms,
                    &gaps,
                ));
            }
            let trading = self
                .store
                .count_candles(&request.exchange, symbol, start_ms, end_ms)
                .await?;
            let warm = self
                .store
                .count_candles(&request.exchange, symbol, load_start, start_ms)
                .await?;
            if trading == 0 || (warmup_minutes > 0 && warm == 0) {
                return Err(missing_candles(&request.exchange, symbol, load_start, start_ms, end_ms, &gaps)
                    .with_details(json!({"reason": "allow_gaps still needs candles in the trading range and in the warm-up"})));
            }
            let missing: i64 = gaps.iter().map(|g| g.minutes).sum();
            gap_report.insert(
                format!("{}-{symbol}", request.exchange),
                json!({"gaps": gaps, "missing_minutes": missing, "start": load_start, "end": end_ms}),
            );
        }

        let leverage = if request.leverage.fract() == 0.0 {
            json!(request.leverage as i64)
        } else {
            json!(request.leverage)
        };
        Ok(BacktestPlan {
            exchange: request.exchange.clone(),
            config: json!({
                "starting_balance": request.starting_balance,
                "fee": request.fee,
                "type": request.exchange_type,
                "futures_leverage": leverage,
                "futures_leverage_mode": request.leverage_mode,
                "exchange": request.exchange,
                "warm_up_candles": request.warm_up_candles,
            }),
            routes,
            data_routes,
            start_ms,
            end_ms,
            warmup_minutes,
            symbols,
            hyperparameters: request.hyperparameters.clone(),
            fast_mode: request.fast_mode,
            include_trades: request.include_trades,
            include_equity_curve: request.include_equity_curve,
            strategies: sources,
            gap_report: (!gap_report.is_empty()).then_some(Value::Object(gap_report)),
            candles_pipeline: None,
        })
    }

    async fn check_strategy(
        &self,
        name: &str,
        hyperparameters: Option<&serde_json::Map<String, Value>>,
    ) -> Result<StrategySource, ApiError> {
        if !is_valid_strategy_name(name) {
            return Err(ApiError::invalid(
                "invalid_strategy_name",
                format!("'{name}' is not a valid strategy name: {STRATEGY_NAME_RULE}"),
            )
            .with_details(json!({"field": "strategy"})));
        }
        let pinned = self.pinned(name).await?;
        check_hyperparameters(name, pinned.declared.as_deref(), hyperparameters)?;
        Ok(pinned.source)
    }

    /// The strategy's source for this session (read and validated once) and
    /// its declared hyperparameters, from the deep validation of the same
    /// bytes when `hyperparameters()` is not a literal list.
    async fn pinned(&self, name: &str) -> Result<PinnedSource, ApiError> {
        let memo = self.sources.lock().expect("source memo").get(name).cloned();
        let mut pinned = match memo {
            Some(found) => found,
            None => PinnedSource::new(self.read_strategy(name)?),
        };
        if !pinned.deep_read {
            pinned.deep_read = true;
            pinned.declared = self
                .store
                .latest_validation(name, &pinned.source.sha256)
                .await?
                .and_then(|(_, report)| deep_hyperparameters(&report));
        }
        self.sources
            .lock()
            .expect("source memo")
            .insert(name.to_string(), pinned.clone());
        Ok(pinned)
    }

    /// What a strategy planned in this session declares (see [`Planner::pinned`]).
    pub async fn declared_hyperparameters(
        &self,
        name: &str,
    ) -> Result<Option<Vec<Hyperparameter>>, ApiError> {
        Ok(self.pinned(name).await?.declared)
    }

    /// Static checks of a strategy before a job is queued: broken code is
    /// answered at submit, not after a worker ran. Returns the source to pin.
    fn read_strategy(&self, name: &str) -> Result<StrategySource, ApiError> {
        let file = self.strategies.read(name)?.ok_or_else(|| {
            ApiError::invalid(
                "unknown_strategy",
                format!("strategy '{name}' does not exist; expected {name}/__init__.py in the strategies directory"),
            )
            .with_details(json!({"field": "strategy", "available": self.strategies.names().unwrap_or_default()}))
        })?;
        let report = validate_static(Some(name), &file.source);
        if !report.valid {
            return Err(invalid_source(&report)
                .with_details(json!({"strategy": name, "errors": report.errors})));
        }
        Ok(StrategySource {
            name: file.name,
            sha256: file.sha256,
            source: file.source,
        })
    }
}

/// The hyperparameters a deep validation report saw `hyperparameters()`
/// return. An entry it could not read keeps its name (its values are then
/// not checked), so the name is never refused as undeclared.
fn deep_hyperparameters(report: &Value) -> Option<Vec<Hyperparameter>> {
    let entries = report["hyperparameters"].as_array()?;
    Some(
        entries
            .iter()
            .filter_map(|entry| {
                serde_json::from_value(entry.clone()).ok().or_else(|| {
                    Some(Hyperparameter {
                        name: entry["name"].as_str()?.to_string(),
                        kind: "unknown".into(),
                        min: None,
                        max: None,
                        step: None,
                        options: None,
                        default: None,
                    })
                })
            })
            .collect(),
    )
}

/// Checks a request's hyperparameters against what the strategy declares:
/// the names, then each value's type, range and options.
fn check_hyperparameters(
    name: &str,
    declared: Option<&[Hyperparameter]>,
    hyperparameters: Option<&serde_json::Map<String, Value>>,
) -> Result<(), ApiError> {
    let names: Option<Vec<String>> = declared.map(|d| d.iter().map(|h| h.name.clone()).collect());
    check_hyperparameter_names(name, names.as_deref(), hyperparameters)?;
    let (Some(declared), Some(values)) = (declared, hyperparameters) else {
        return Ok(());
    };
    for (key, value) in values {
        if let Some(hp) = declared.iter().find(|h| &h.name == key) {
            check_value(name, hp, value, &format!("hyperparameters.{key}"))?;
        }
    }
    Ok(())
}

/// A value for a declared hyperparameter, or a 422 naming it and what is allowed.
pub fn check_value(
    strategy: &str,
    hp: &Hyperparameter,
    value: &Value,
    field: &str,
) -> Result<(), ApiError> {
    hp.check(value).map_err(|why| {
        ApiError::invalid(
            "invalid_hyperparameter",
            format!(
                "{field} = {value} {why}; {strategy} declares {}",
                hp.allowed()
            ),
        )
        .with_details(json!({
            "field": field,
            "value": value,
            "strategy": strategy,
            "declared": hp,
        }))
    })
}

/// Checks a study's search space against the declared hyperparameters: a
/// range inside the declared bounds, options and fixed values each a value
/// the parameter takes.
pub fn check_search_space(
    strategy: &str,
    declared: Option<&[Hyperparameter]>,
    space: &[crate::kinds::optimization::Dimension],
    fixed: &serde_json::Map<String, Value>,
) -> Result<(), ApiError> {
    let Some(declared) = declared else {
        return Ok(());
    };
    let find = |name: &str| declared.iter().find(|h| h.name == name);
    for dimension in space {
        let Some(hp) = find(&dimension.name) else {
            continue;
        };
        let field = format!("hyperparameters.{}", dimension.name);
        if let Some(choices) = &dimension.choices {
            for choice in choices {
                check_value(strategy, hp, choice, &field)?;
            }
            continue;
        }
        for bound in [dimension.low, dimension.high].into_iter().flatten() {
            // A whole bound of an int parameter is checked as the int it is.
            let value = if bound.fract() == 0.0 && bound.abs() < 9.0e15 {
                json!(bound as i64)
            } else {
                json!(bound)
            };
            hp.check_range(&value).map_err(|why| {
                ApiError::invalid(
                    "invalid_hyperparameter",
                    format!(
                        "{field}: the range [{}, {}] reaches {value}, which {why}; {strategy} declares {}",
                        show_number(dimension.low),
                        show_number(dimension.high),
                        hp.allowed()
                    ),
                )
                .with_details(json!({
                    "field": field,
                    "min": dimension.low,
                    "max": dimension.high,
                    "strategy": strategy,
                    "declared": hp,
                }))
            })?;
        }
    }
    for (name, value) in fixed {
        if let Some(hp) = find(name) {
            check_value(strategy, hp, value, &format!("hyperparameters.{name}"))?;
        }
    }
    Ok(())
}

fn show_number(value: Option<f64>) -> String {
    value.map_or_else(|| "?".into(), |v| v.to_string())
}

/// Refuses hyperparameter names the strategy does not declare.
fn check_hyperparameter_names(
    name: &str,
    declared: Option<&[String]>,
    hyperparameters: Option<&serde_json::Map<String, Value>>,
) -> Result<(), ApiError> {
    let (Some(overrides), Some(declared)) = (hyperparameters, declared) else {
        return Ok(());
    };
    let unknown: Vec<&String> = overrides.keys().filter(|k| !declared.contains(k)).collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid(
        "unknown_hyperparameter",
        format!(
            "{name} does not declare hyperparameter(s) {unknown:?}; declared: {}",
            declared.join(", ")
        ),
    )
    .with_details(json!({"field": "hyperparameters", "declared": declared})))
}

/// A strategy source that fails static validation, as a 422.
pub fn invalid_source(report: &StaticReport) -> ApiError {
    let first = report.errors.first().map_or_else(String::new, |d| {
        format!(" line {}, column {}: {}", d.line, d.column, d.message)
    });
    ApiError::invalid(
        "invalid_strategy",
        format!(
            "the strategy does not pass validation ({} error(s)); first at{first}",
            report.errors.len()
        ),
    )
    .with_details(json!({"errors": report.errors, "warnings": report.warnings}))
}

pub fn check_symbol(symbol: &str) -> Result<(), ApiError> {
    let valid = symbol.len() <= 40
        && symbol.split_once('-').is_some_and(|(base, quote)| {
            !base.is_empty()
                && !quote.is_empty()
                && symbol
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-')
                && !quote.contains('-')
        });
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "invalid_symbol",
            format!(
                "symbol '{symbol}' is not in Jesse's form BASE-QUOTE in capitals, e.g. BTC-USDT"
            ),
        )
        .with_details(json!({"field": "symbol"})))
    }
}

fn check_timeframe(timeframe: &str) -> Result<i64, ApiError> {
    timeframe_minutes(timeframe).ok_or_else(|| {
        ApiError::invalid("unsupported_timeframe", format!("timeframe '{timeframe}' is not supported by Jesse"))
            .with_details(json!({"field": "timeframe", "supported": TIMEFRAMES.iter().map(|(t, _)| *t).collect::<Vec<_>>()}))
    })
}

fn check_number(
    field: &str,
    value: f64,
    ok: impl Fn(f64) -> bool,
    rule: &str,
) -> Result<(), ApiError> {
    if value.is_finite() && ok(value) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "invalid_number",
            format!("{field} is {value}; it must be {rule}"),
        )
        .with_details(json!({"field": field})))
    }
}

fn missing_candles(
    exchange: &str,
    symbol: &str,
    load_start: i64,
    start: i64,
    end: i64,
    gaps: &[Gap],
) -> ApiError {
    let missing: i64 = gaps.iter().map(|g| g.minutes).sum();
    let first = gaps[0];
    let shown: Vec<Value> = gaps
        .iter()
        .take(20)
        .map(|g| json!({"start": g.start, "end": g.end, "minutes": g.minutes, "start_date": to_rfc3339(g.start), "end_date": to_rfc3339(g.end)}))
        .collect();
    ApiError::invalid(
        "missing_candles",
        format!(
            "{missing} of the {} 1m candles needed for {exchange} {symbol} are not stored (range {} to {} including {} warm-up minutes); the first missing run is {} to {}. Import them from the exchange (POST /v1/candles/imports) or as CSV (POST /v1/candles/csv), start later, or lower warm_up_candles; GET /v1/candles lists what is stored.",
            (end - load_start) / MINUTE_MS,
            to_rfc3339(load_start),
            to_rfc3339(end),
            (start - load_start) / MINUTE_MS,
            to_rfc3339(first.start),
            to_rfc3339(first.end),
        ),
    )
    .with_details(json!({
        "exchange": exchange,
        "symbol": symbol,
        "required": {"start": load_start, "end": end, "start_date": to_rfc3339(load_start), "end_date": to_rfc3339(end)},
        "missing_minutes": missing,
        "gaps": shown,
        "gaps_total": gaps.len(),
    }))
}
