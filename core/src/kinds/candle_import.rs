//! `candle_import`: 1m candles of one series fetched through Jesse's own
//! import driver, page by page, only the minutes not stored yet. Its result
//! is the import report (counts and the gap report).

use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{KindDef, Lane, Outcome, Runtime, Submit, read_plan, read_request, schema_of};
use crate::error::ApiError;
use crate::jesse::{IMPORT_EXCHANGES, is_import_exchange};
use crate::jobs::ImportPlan;
use crate::planner::{Planner, check_symbol};
use crate::store::JobRecord;
use crate::time::{MINUTE_MS, now_ms, parse_day};

pub static KIND: KindDef = KindDef {
    name: "candle_import",
    description: "1m candles fetched through Jesse's import driver",
    lane: Lane::Runner,
    submit: Some(Submit {
        path: "/v1/candles/imports",
        tool: "candles_import",
        title: "Import candles",
        description: "Import 1m candles from an exchange through Jesse's own import driver, as a job: only the minutes \
not stored yet are fetched, and a re-run continues where an earlier one stopped. Answers at once with a job_id; \
poll job_get (progress with an ETA) and read job_result for the counts and the gap report.",
        next: "job_result for the counts and the gap report",
        open_world: true,
    }),
    request_schema: schema_of::<ImportRequest>,
    result_schema: schema_of::<serde_json::Map<String, Value>>,
    rows: None,
    plan,
    execute,
    parent: false,
};

/// `POST /v1/candles/imports` and MCP `candles_import`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// An exchange Jesse can import from, e.g. `Binance Perpetual Futures`, `Bybit USDT Perpetual`.
    pub exchange: String,
    /// Symbol in Jesse's form, e.g. `BTC-USDT`.
    pub symbol: String,
    /// First day to import (YYYY-MM-DD, UTC); earlier than the listing is fine.
    pub start_date: String,
    /// Day to stop before (exclusive); default: now.
    #[serde(default)]
    pub end_date: Option<String>,
}

fn plan(_: &Planner, request: Value) -> BoxFuture<'_, Result<Value, ApiError>> {
    Box::pin(async move {
        let request: ImportRequest = read_request(request)?;
        if !is_import_exchange(&request.exchange) {
            return Err(ApiError::invalid(
                "unsupported_exchange",
                format!(
                    "Jesse cannot import candles from '{}'; use one of the listed names",
                    request.exchange
                ),
            )
            .with_details(json!({"field": "exchange", "supported": IMPORT_EXCHANGES})));
        }
        check_symbol(&request.symbol)?;
        let start_ms = parse_day(&request.start_date)
            .map_err(|m| ApiError::invalid("invalid_date", format!("start_date: {m}")))?;
        let now = now_ms() - now_ms().rem_euclid(MINUTE_MS);
        let end_ms = match &request.end_date {
            Some(day) => parse_day(day)
                .map_err(|m| ApiError::invalid("invalid_date", format!("end_date: {m}")))?
                .min(now),
            None => now,
        };
        if start_ms >= end_ms {
            return Err(ApiError::invalid(
                "invalid_date_range",
                format!(
                    "start_date ({}) must be before end_date (exclusive; default now) and not in the future",
                    request.start_date
                ),
            ));
        }
        let plan = ImportPlan {
            exchange: request.exchange,
            symbol: request.symbol,
            start_ms,
            end_ms,
        };
        Ok(serde_json::to_value(plan).expect("plans serialize"))
    })
}

fn execute<'a>(rt: &'a dyn Runtime, job: &'a JobRecord) -> BoxFuture<'a, anyhow::Result<Outcome>> {
    Box::pin(async move {
        let plan: ImportPlan = match read_plan(job) {
            Ok(plan) => plan,
            Err(outcome) => return Ok(outcome),
        };
        rt.import_candles(&job.id, &plan).await
    })
}
