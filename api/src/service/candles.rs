//! Candle data beyond CSV: import jobs through Jesse's drivers, gap reports,
//! CSV export and deletion of a series.

use futures::StreamExt;
use jesse_mcp_core::candles::series_source_note;
use jesse_mcp_core::jesse::{is_backtesting_exchange, is_import_exchange};
use jesse_mcp_core::store::Gap;
use jesse_mcp_core::time::{MINUTE_MS, now_ms, parse_day, to_rfc3339};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::json;

use super::{Service, check_symbol};
use crate::error::ApiError;

pub use jesse_mcp_core::kinds::candle_import::ImportRequest;

/// Rows per page of a CSV export: each page is read from the store, written
/// out and dropped before the next is read.
pub const EXPORT_PAGE_ROWS: usize = 10_000;

const CSV_HEADER: &str = "timestamp,open,high,low,close,volume\n";

/// A CSV export: its chunks in order, read from the store as they are sent.
pub type CsvExport = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<String, jesse_mcp_core::StoreError>> + Send>,
>;

#[derive(Debug, Serialize, JsonSchema)]
pub struct GapReport {
    pub exchange: String,
    pub symbol: String,
    /// Range examined, ms since the epoch, half-open.
    pub start: i64,
    pub end: i64,
    /// Missing runs: `start` is the first missing minute, `end` the first present minute after it.
    pub gaps: Vec<Gap>,
    pub missing_minutes: i64,
    pub coverage_pct: f64,
    /// Where the stored rows came from (`synthetic` is demo data, not market
    /// prices; see `GET /v1/candles`); null if the series is not stored.
    pub source: Option<String>,
    /// What to know about that source; absent for csv and import.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
}

impl Service {
    /// A stored series' range from optional days: defaults to its first and last minute.
    async fn resolve_range(
        &self,
        exchange: &str,
        symbol: &str,
        start: Option<&str>,
        end: Option<&str>,
    ) -> Result<(i64, i64), ApiError> {
        check_symbol(symbol)?;
        let series = self.inner.engine.store().list_series().await?;
        let stored = series
            .iter()
            .find(|s| s.exchange == exchange && s.symbol == symbol);
        if stored.is_none() && !is_backtesting_exchange(exchange) && !is_import_exchange(exchange) {
            return Err(ApiError::invalid(
                "unsupported_exchange",
                format!("exchange '{exchange}' is not one of Jesse's; GET /v1/candles lists the stored series"),
            )
            .with_details(json!({"field": "exchange"})));
        }
        let start_ms = match start {
            Some(day) => parse_day(day)
                .map_err(|m| ApiError::invalid("invalid_date", format!("start_date: {m}")))?,
            None => stored
                .map(|s| s.first)
                .ok_or_else(|| self.series_not_found(exchange, symbol))?,
        };
        let end_ms = match end {
            Some(day) => parse_day(day)
                .map_err(|m| ApiError::invalid("invalid_date", format!("end_date: {m}")))?,
            None => stored
                .map(|s| s.last + MINUTE_MS)
                .ok_or_else(|| self.series_not_found(exchange, symbol))?,
        };
        if start_ms >= end_ms {
            return Err(ApiError::invalid(
                "invalid_date_range",
                "start_date must be before end_date (exclusive)",
            ));
        }
        Ok((start_ms, end_ms))
    }

    pub async fn gap_report(
        &self,
        exchange: &str,
        symbol: &str,
        start: Option<&str>,
        end: Option<&str>,
    ) -> Result<GapReport, ApiError> {
        let (start_ms, end_ms) = self.resolve_range(exchange, symbol, start, end).await?;
        let gaps = self
            .inner
            .engine
            .store()
            .gaps(exchange, symbol, start_ms, end_ms)
            .await?;
        let total = (end_ms - start_ms) / MINUTE_MS;
        let missing_minutes: i64 = gaps.iter().map(|g| g.minutes).sum();
        let source = self
            .inner
            .engine
            .store()
            .series_source(exchange, symbol)
            .await?;
        Ok(GapReport {
            note: source.as_deref().and_then(series_source_note),
            source,
            exchange: exchange.to_string(),
            symbol: symbol.to_string(),
            start: start_ms,
            end: end_ms,
            coverage_pct: 100.0 * (total - missing_minutes) as f64 / total as f64,
            missing_minutes,
            gaps,
        })
    }

    fn series_not_found(&self, exchange: &str, symbol: &str) -> ApiError {
        ApiError::not_found(
            "series_not_found",
            format!("no candles stored for {exchange} {symbol}; import some first"),
        )
    }

    /// The rows of `[start, end)` of a stored series as CSV in the import
    /// format, as a stream of chunks read from the store a page at a time
    /// (memory stays constant whatever the range). The range is cut to the
    /// stored one first; a series that is not stored is `series_not_found`.
    pub async fn export_csv(
        &self,
        exchange: &str,
        symbol: &str,
        start: Option<&str>,
        end: Option<&str>,
    ) -> Result<CsvExport, ApiError> {
        let (start_ms, end_ms) = self.resolve_range(exchange, symbol, start, end).await?;
        let series = self.inner.engine.store().list_series().await?;
        let stored = series
            .iter()
            .find(|s| s.exchange == exchange && s.symbol == symbol)
            .ok_or_else(|| self.series_not_found(exchange, symbol))?;
        let from = start_ms.max(stored.first);
        let until = end_ms.min(stored.last + MINUTE_MS);
        let store = self.inner.engine.store().clone();
        let (exchange, symbol) = (exchange.to_string(), symbol.to_string());
        let header = futures::stream::once(async { Ok(CSV_HEADER.to_string()) });
        let pages = futures::stream::try_unfold(Some(from), move |cursor| {
            let (store, exchange, symbol) = (store.clone(), exchange.clone(), symbol.clone());
            async move {
                let Some(from) = cursor.filter(|from| *from < until) else {
                    return Ok(None);
                };
                let rows = store
                    .candle_page(&exchange, &symbol, from, until, EXPORT_PAGE_ROWS)
                    .await?;
                let Some(last) = rows.last() else {
                    return Ok(None);
                };
                let next = (rows.len() == EXPORT_PAGE_ROWS).then_some(last.timestamp + MINUTE_MS);
                let mut chunk = String::with_capacity(rows.len() * 48);
                for c in &rows {
                    // Written as the import header says: open, high, low, close.
                    chunk.push_str(&format!(
                        "{},{},{},{},{},{}\n",
                        c.timestamp, c.open, c.high, c.low, c.close, c.volume
                    ));
                }
                Ok(Some((chunk, next)))
            }
        });
        Ok(Box::pin(header.chain(pages)))
    }

    pub async fn delete_series(
        &self,
        exchange: &str,
        symbol: &str,
    ) -> Result<serde_json::Value, ApiError> {
        check_symbol(symbol)?;
        let removed = self
            .inner
            .engine
            .store()
            .delete_series(exchange, symbol)
            .await?;
        if removed == 0 {
            return Err(self.series_not_found(exchange, symbol));
        }
        tracing::info!(exchange, symbol, removed, "candle series deleted");
        Ok(
            json!({"exchange": exchange, "symbol": symbol, "deleted_rows": removed, "deleted_at": to_rfc3339(now_ms())}),
        )
    }
}
