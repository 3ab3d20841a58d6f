//! The shapes users read results in. Stored result bodies keep what Jesse
//! returned (trades with float ms times and nested orders, the equity curve in
//! Jesse's chart format: seconds, colours), because the analysis, charts,
//! optimization, walk-forward and Monte Carlo code read them as stored. This
//! module turns them into one convention at the read boundary only
//! (`GET /v1/jobs/{id}/result`, MCP `job_result`, the CSV exports): every time
//! an integer of milliseconds since the epoch beside an RFC 3339 string, no
//! presentation-only fields, nested orders only on request. It never writes.

use futures::StreamExt;
use jesse_mcp_core::store::JobRecord;
use jesse_mcp_core::time::{parse_day, to_rfc3339};
use serde_json::{Map, Value, json};

use super::candles::{CsvExport, EXPORT_PAGE_ROWS};
use super::{Service, require_succeeded};
use crate::error::ApiError;

/// The columns of `trades.csv`: the fields of Jesse's closed trade (without
/// its orders), each time as ms and as RFC 3339.
pub const TRADE_COLUMNS: &[&str] = &[
    "id",
    "strategy_name",
    "symbol",
    "exchange",
    "type",
    "entry_price",
    "exit_price",
    "qty",
    "opened_at",
    "opened_at_iso",
    "closed_at",
    "closed_at_iso",
    "fee",
    "size",
    "PNL",
    "PNL_percentage",
    "holding_period",
];

/// The columns of `equity.csv`: one row per point of each series.
pub const EQUITY_COLUMNS: &[&str] = &["series", "time", "date", "value"];

/// A stored time (ms, integer or float) as integer ms; `None` for anything else.
fn millis(value: &Value) -> Option<i64> {
    if let Some(ms) = value.as_i64() {
        return Some(ms);
    }
    let ms = value.as_f64()?;
    // Beyond ±2^53 a float is no longer an exact ms count; no real trade gets there.
    (ms.is_finite() && ms.abs() < 9.0e15).then(|| ms.round() as i64)
}

/// Every `*_at` field that holds a time becomes integer ms with an `*_at_iso`
/// sibling (null when the time is null: an order that was never cancelled).
fn shape_times(object: &mut Map<String, Value>) {
    let keys: Vec<String> = object
        .keys()
        .filter(|k| k.ends_with("_at"))
        .cloned()
        .collect();
    for key in keys {
        let value = &object[&key];
        let (ms, iso) = match millis(value) {
            Some(ms) => (json!(ms), json!(to_rfc3339(ms))),
            None if value.is_null() => (Value::Null, Value::Null),
            // A string or anything else: not a time this module knows; left as is.
            None => continue,
        };
        object.insert(key.clone(), ms);
        object.insert(format!("{key}_iso"), iso);
    }
}

/// A stored closed trade as users read it: times as ms + ISO; its nested
/// `orders` (times shaped the same way) only when asked for.
pub fn trade(mut trade: Value, include_orders: bool) -> Value {
    let Some(object) = trade.as_object_mut() else {
        return trade;
    };
    shape_times(object);
    if include_orders {
        if let Some(orders) = object.get_mut("orders").and_then(Value::as_array_mut) {
            for order in orders.iter_mut().filter_map(Value::as_object_mut) {
                shape_times(order);
            }
        }
    } else {
        object.remove("orders");
    }
    trade
}

/// Jesse's equity curve (`[{name, color, data: [{time (s), value, color}]}]`)
/// as users read it: `[{name, points: [{time (ms), date (RFC 3339), value}]}]`,
/// colours dropped. Null stays null (Jesse keeps no curve without trades).
pub fn equity_curve(stored: &Value) -> Value {
    let Some(series) = stored.as_array() else {
        return stored.clone();
    };
    Value::Array(
        series
            .iter()
            .map(|s| {
                let Some(data) = s.get("data").and_then(Value::as_array) else {
                    // Not Jesse's chart format: nothing to convert.
                    return s.clone();
                };
                let points: Vec<Value> = data
                    .iter()
                    .filter_map(|p| {
                        let seconds = p.get("time")?.as_f64()?;
                        let ms = millis(&json!(seconds * 1000.0))?;
                        Some(json!({"time": ms, "date": to_rfc3339(ms), "value": p.get("value").cloned().unwrap_or(Value::Null)}))
                    })
                    .collect();
                json!({"name": s.get("name").cloned().unwrap_or(Value::Null), "points": points})
            })
            .collect(),
    )
}

/// A pairs screen row: its Kalman hedge-ratio path is stored with RFC 3339
/// `time`s; users read `time` as ms with the string as `date`, as elsewhere.
fn pair_row(mut row: Value) -> Value {
    if let Some(path) = row
        .pointer_mut("/kalman/path")
        .and_then(Value::as_array_mut)
    {
        for point in path.iter_mut().filter_map(Value::as_object_mut) {
            let Some(ms) = point
                .get("time")
                .and_then(Value::as_str)
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp_millis())
            else {
                continue;
            };
            point.insert("time".into(), json!(ms));
            point.insert("date".into(), json!(to_rfc3339(ms)));
        }
    }
    row
}

/// One of a result's rows as users read it (`part` is the kind's rows name).
pub fn row(part: &str, row: Value, include_orders: bool) -> Value {
    match part {
        "trades" => trade(row, include_orders),
        "pairs" => pair_row(row),
        _ => row,
    }
}

/// A result body as users read it: the equity curve reshaped where a kind has
/// one; a walk-forward's stitched daily curve gains each day's `time` in ms; a
/// pairs screen's `best` row is shaped as its rows are.
pub fn body(kind: &str, mut body: Value) -> Value {
    if let Some(curve) = body.get_mut("equity_curve") {
        *curve = equity_curve(curve);
    }
    if let Some(points) = body
        .pointer_mut("/stitched/equity_curve")
        .and_then(Value::as_array_mut)
    {
        for point in points.iter_mut().filter_map(Value::as_object_mut) {
            let day = point.get("date").and_then(Value::as_str).map(parse_day);
            if let Some(Ok(ms)) = day {
                point.insert("time".into(), json!(ms));
            }
        }
    }
    if kind == "pairs_screen"
        && let Some(best) = body.get_mut("best")
    {
        *best = pair_row(best.take());
    }
    body
}

/// One CSV field (RFC 4180): quoted when it holds a comma, a quote or a line
/// break; numbers as JSON writes them; null as an empty field.
fn field(value: &Value, out: &mut String) {
    let text = match value {
        Value::Null => return,
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&text.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(&text);
    }
}

/// A CSV header line (CRLF-terminated, as RFC 4180 has it).
pub fn header(columns: &[&str]) -> String {
    let mut line = columns.join(",");
    line.push_str("\r\n");
    line
}

/// One row of `trades.csv` from a stored trade.
pub fn trade_line(stored: &Value) -> String {
    let shaped = trade(stored.clone(), false);
    let mut line = String::with_capacity(256);
    for (i, column) in TRADE_COLUMNS.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        field(shaped.get(*column).unwrap_or(&Value::Null), &mut line);
    }
    line.push_str("\r\n");
    line
}

/// The rows of `equity.csv` from a stored equity curve (null: none).
pub fn equity_lines(stored: &Value) -> String {
    let mut out = String::new();
    let Value::Array(series) = equity_curve(stored) else {
        return out;
    };
    for s in &series {
        let name = s.get("name").cloned().unwrap_or(Value::Null);
        for p in s
            .get("points")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for (i, value) in [&name, &p["time"], &p["date"], &p["value"]]
                .into_iter()
                .enumerate()
            {
                if i > 0 {
                    out.push(',');
                }
                field(value, &mut out);
            }
            out.push_str("\r\n");
        }
    }
    out
}

impl Service {
    /// A succeeded backtest, or why its trades / equity curve cannot be exported.
    async fn exportable(&self, id: &str, what: &str) -> Result<JobRecord, ApiError> {
        let job = self.job_record(id).await?;
        if job.kind != "backtest" {
            let hint = if job.kind == "pairs_backtest" {
                "; a pairs backtest's trades and equity curve are its backtest_job_id's"
            } else {
                ""
            };
            return Err(ApiError::invalid(
                "not_exportable",
                format!(
                    "job {} is a {} job; {what} exports a backtest's result (kind backtest){hint}",
                    job.id, job.kind
                ),
            )
            .with_details(json!({"job_id": job.id, "kind": job.kind})));
        }
        require_succeeded(&job)?;
        Ok(job)
    }

    /// A backtest's closed trades as CSV ([`TRADE_COLUMNS`]), read from the
    /// store a page at a time as they are sent (`GET /v1/jobs/{id}/trades.csv`).
    pub async fn trades_csv(&self, id: &str) -> Result<CsvExport, ApiError> {
        let job = self.exportable(id, "trades.csv").await?;
        let store = self.inner.engine.store().clone();
        let header = futures::stream::once(async { Ok(header(TRADE_COLUMNS)) });
        let pages = futures::stream::try_unfold(Some(0i64), move |cursor| {
            let (store, job_id) = (store.clone(), job.id.clone());
            async move {
                let Some(offset) = cursor else {
                    return Ok(None);
                };
                let rows = store
                    .result_rows(&job_id, "trades", offset, EXPORT_PAGE_ROWS as i64)
                    .await?;
                if rows.is_empty() {
                    return Ok(None);
                }
                let next =
                    (rows.len() == EXPORT_PAGE_ROWS).then_some(offset + EXPORT_PAGE_ROWS as i64);
                Ok(Some((
                    rows.iter().map(trade_line).collect::<String>(),
                    next,
                )))
            }
        });
        Ok(Box::pin(header.chain(pages)))
    }

    /// A backtest's equity curve as CSV ([`EQUITY_COLUMNS`], one row per point
    /// of each series; `GET /v1/jobs/{id}/equity.csv`). The worker always keeps
    /// the curve; a result stored without one (before it did) is 422
    /// `equity_curve_not_computed`. An empty curve (Jesse keeps none without
    /// trades) is the header alone.
    pub async fn equity_csv(&self, id: &str) -> Result<String, ApiError> {
        let job = self.exportable(id, "equity.csv").await?;
        let body = self.stored_body(&job).await?;
        if body.get("equity_curve").is_none() {
            return Err(ApiError::invalid(
                "equity_curve_not_computed",
                format!(
                    "backtest {} stored no equity curve; run it again to get one",
                    job.id
                ),
            )
            .with_details(json!({"job_id": job.id})));
        }
        let mut csv = header(EQUITY_COLUMNS);
        csv.push_str(&equity_lines(&body["equity_curve"]));
        Ok(csv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trade as the worker stores it (Jesse's `to_dict_with_orders`).
    fn stored_trade() -> Value {
        json!({
            "id": "7f1c", "strategy_name": "SmaCross", "symbol": "BTC-USDT",
            "exchange": "Binance Perpetual Futures", "type": "long",
            "entry_price": 42000.5, "exit_price": 43000.0, "qty": 0.25,
            "opened_at": 1705312800000.0, "closed_at": 1705399200000.0,
            "fee": 1.5, "size": 10500.125, "PNL": 248.4, "PNL_percentage": 2.36,
            "holding_period": 86400.0,
            "orders": [{"id": "o1", "side": "buy", "created_at": 1705312800000.0,
                        "executed_at": 1705312800000.0, "canceled_at": null,
                        "updated_at": 1705312800000.0, "price": 42000.5}]
        })
    }

    #[test]
    fn trade_times_become_integer_ms_with_iso_siblings_and_orders_go() {
        let t = trade(stored_trade(), false);
        assert_eq!(t["opened_at"], json!(1_705_312_800_000i64));
        assert!(
            t["opened_at"].is_i64(),
            "an integer, not 1.7e12: {}",
            t["opened_at"]
        );
        assert_eq!(t["opened_at_iso"], "2024-01-15T10:00:00.000Z");
        assert_eq!(t["closed_at"], json!(1_705_399_200_000i64));
        assert_eq!(t["closed_at_iso"], "2024-01-16T10:00:00.000Z");
        assert!(t.get("orders").is_none(), "{t}");
        // Everything else as Jesse gave it.
        assert_eq!(t["PNL"], 248.4);
        assert_eq!(t["holding_period"], 86400.0);
        assert_eq!(t["symbol"], "BTC-USDT");
    }

    #[test]
    fn orders_on_request_have_the_same_times() {
        let t = trade(stored_trade(), true);
        let order = &t["orders"][0];
        assert_eq!(order["created_at"], json!(1_705_312_800_000i64));
        assert_eq!(order["created_at_iso"], "2024-01-15T10:00:00.000Z");
        assert_eq!(order["canceled_at"], Value::Null);
        assert_eq!(order["canceled_at_iso"], Value::Null);
        assert_eq!(order["price"], 42000.5);
    }

    #[test]
    fn fractional_and_integer_times_round_to_ms_and_other_values_stay() {
        let t = trade(
            json!({"opened_at": 1705312800000.4, "closed_at": 1705312860000i64, "label_at": "x"}),
            false,
        );
        assert_eq!(t["opened_at"], json!(1_705_312_800_000i64));
        assert_eq!(t["closed_at"], json!(1_705_312_860_000i64));
        assert_eq!(t["label_at"], "x");
        assert!(t.get("label_at_iso").is_none());
        assert_eq!(trade(json!(null), false), json!(null));
    }

    #[test]
    fn equity_curve_is_ms_and_iso_without_colours() {
        let stored = json!([
            {"name": "Portfolio", "color": "#818CF8", "data": [
                {"time": 1704844800.0, "value": 10000.0, "color": "#818CF8"},
                {"time": 1704931200.0, "value": 10012.5, "color": "#818CF8"},
                {"time": 1705017600.0, "value": null, "color": "#818CF8"}]},
            {"name": "BTC-USDT", "color": "#fbbf24", "data": [{"time": 1704844800, "value": 1.0}]}
        ]);
        let curve = equity_curve(&stored);
        assert_eq!(
            curve[0],
            json!({"name": "Portfolio", "points": [
                {"time": 1_704_844_800_000i64, "date": "2024-01-10T00:00:00.000Z", "value": 10000.0},
                {"time": 1_704_931_200_000i64, "date": "2024-01-11T00:00:00.000Z", "value": 10012.5},
                {"time": 1_705_017_600_000i64, "date": "2024-01-12T00:00:00.000Z", "value": null}]})
        );
        assert_eq!(curve[1]["points"][0]["time"], json!(1_704_844_800_000i64));
        assert!(!curve.to_string().contains("color"));
        assert_eq!(equity_curve(&Value::Null), Value::Null);
        // Reshaping twice changes nothing more.
        assert_eq!(equity_curve(&curve), curve);
        // A body: only its equity curve changes.
        let shaped = body(
            "backtest",
            json!({"metrics": {"total": 3}, "equity_curve": stored}),
        );
        assert_eq!(shaped["equity_curve"], curve);
        assert_eq!(shaped["metrics"], json!({"total": 3}));
    }

    #[test]
    fn other_kinds_times_gain_ms() {
        let stitched = body(
            "walk_forward",
            json!({"stitched": {"equity_curve": [{"date": "2024-01-10", "equity": 10000.0}]}}),
        );
        assert_eq!(
            stitched["stitched"]["equity_curve"][0],
            json!({"date": "2024-01-10", "time": 1_704_844_800_000i64, "equity": 10000.0})
        );
        let stored = json!({"symbols": ["A", "B"], "kalman": {"path": [
            {"time": "2024-01-10T01:00:00.000Z", "hedge_ratio": 1.5}, {"time": null, "hedge_ratio": 1.4}]}});
        let shaped = row("pairs", stored.clone(), false);
        assert_eq!(
            shaped["kalman"]["path"][0],
            json!({"time": 1_704_848_400_000i64, "date": "2024-01-10T01:00:00.000Z", "hedge_ratio": 1.5})
        );
        assert_eq!(shaped["kalman"]["path"][1], stored["kalman"]["path"][1]);
        let screen = body("pairs_screen", json!({"best": stored}));
        assert_eq!(screen["best"], shaped);
        let leaderboard_row = json!({"rank": 1, "score": 1.2});
        assert_eq!(
            row("leaderboard", leaderboard_row.clone(), false),
            leaderboard_row
        );
    }

    #[test]
    fn csv_rows_follow_rfc_4180() {
        assert_eq!(header(EQUITY_COLUMNS), "series,time,date,value\r\n");
        let mut t = stored_trade();
        t["strategy_name"] = json!("Say \"hi\", then go");
        t["PNL"] = Value::Null;
        let line = trade_line(&t);
        assert!(line.ends_with("\r\n"));
        assert_eq!(
            line,
            "7f1c,\"Say \"\"hi\"\", then go\",BTC-USDT,Binance Perpetual Futures,long,42000.5,43000.0,0.25,\
             1705312800000,2024-01-15T10:00:00.000Z,1705399200000,2024-01-16T10:00:00.000Z,1.5,10500.125,,2.36,86400.0\r\n"
        );
        let lines = equity_lines(&json!([{"name": "Portfolio", "data": [
            {"time": 1704844800.0, "value": 10000.0}, {"time": 1704931200.0, "value": null}]}]));
        assert_eq!(
            lines,
            "Portfolio,1704844800000,2024-01-10T00:00:00.000Z,10000.0\r\nPortfolio,1704931200000,2024-01-11T00:00:00.000Z,\r\n"
        );
        assert_eq!(equity_lines(&Value::Null), "");
    }
}
