//! A fake exchange on 127.0.0.1 speaking the real wire formats Jesse's import
//! drivers use (Binance spot `/api/v3/klines`, Binance USDT-M `/fapi/v1/klines`,
//! Bybit v5 `/v5/market/kline`), serving deterministic 1m candles for a listing
//! period, with failures that tests schedule: a 429 with Retry-After, a 5xx,
//! unknown symbols. A test double for the outside world only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use jesse_mcp_core::candles::{Candle, synthetic};
use serde_json::{Value, json};

#[derive(Clone, Debug)]
pub enum Failure {
    RateLimited {
        retry_after_secs: u32,
    },
    ServerError,
    /// A 302 to `location` (what a hijacked or misconfigured mirror might send).
    Redirect {
        location: String,
    },
}

#[derive(Default)]
struct Inner {
    candles: HashMap<String, Vec<Candle>>,
    /// Request number (1-based, klines requests only) → failure to answer with.
    failures: HashMap<u64, Failure>,
    requests: u64,
}

#[derive(Clone, Default)]
pub struct FakeExchange {
    inner: Arc<Mutex<Inner>>,
    pub base: String,
}

impl FakeExchange {
    /// Starts the server; `listings` are (dashless symbol, first minute ms, end ms).
    pub async fn start(listings: &[(&str, i64, i64)]) -> FakeExchange {
        let mut inner = Inner::default();
        for (i, (symbol, start, end)) in listings.iter().enumerate() {
            inner.candles.insert(
                symbol.to_string(),
                synthetic(*start, *end, 30_000.0, 100 + i as u64),
            );
        }
        let exchange = FakeExchange {
            inner: Arc::new(Mutex::new(inner)),
            base: String::new(),
        };
        let app = Router::new()
            .route("/api/v3/klines", get(binance_klines))
            .route("/fapi/v1/klines", get(binance_klines))
            .route("/v5/market/kline", get(bybit_kline))
            .with_state(exchange.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake exchange");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await.expect("fake exchange") });
        FakeExchange { base, ..exchange }
    }

    pub fn fail_request(&self, number: u64, failure: Failure) {
        self.inner
            .lock()
            .expect("lock")
            .failures
            .insert(number, failure);
    }

    pub fn requests(&self) -> u64 {
        self.inner.lock().expect("lock").requests
    }

    pub fn candles(&self, symbol: &str) -> Vec<Candle> {
        self.inner
            .lock()
            .expect("lock")
            .candles
            .get(symbol)
            .cloned()
            .unwrap_or_default()
    }

    /// Counts the request and returns the failure scheduled for it, if any.
    fn next(&self) -> Option<Failure> {
        let mut inner = self.inner.lock().expect("lock");
        inner.requests += 1;
        let n = inner.requests;
        inner.failures.remove(&n)
    }

    fn page(
        &self,
        symbol: &str,
        start: i64,
        end: Option<i64>,
        limit: usize,
    ) -> Option<Vec<Candle>> {
        let inner = self.inner.lock().expect("lock");
        let candles = inner.candles.get(symbol)?;
        Some(
            candles
                .iter()
                .filter(|c| c.timestamp >= start && end.is_none_or(|e| c.timestamp <= e))
                .take(limit)
                .copied()
                .collect(),
        )
    }
}

fn failure_response(failure: Failure) -> Response {
    match failure {
        Failure::RateLimited { retry_after_secs } => (
            StatusCode::TOO_MANY_REQUESTS,
            [("Retry-After", retry_after_secs.to_string())],
            Json(json!({"code": -1003, "msg": "Too many requests; current limit is 2400 request weight per 1 MINUTE."})),
        )
            .into_response(),
        Failure::ServerError => (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response(),
        Failure::Redirect { location } => (StatusCode::FOUND, [("Location", location)]).into_response(),
    }
}

fn number(q: &HashMap<String, String>, key: &str) -> Option<i64> {
    q.get(key).and_then(|v| v.parse().ok())
}

async fn binance_klines(
    State(exchange): State<FakeExchange>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(failure) = exchange.next() {
        return failure_response(failure);
    }
    let symbol = q.get("symbol").cloned().unwrap_or_default();
    let limit = number(&q, "limit").unwrap_or(500).clamp(1, 1000) as usize;
    let start = number(&q, "startTime").unwrap_or(0);
    let Some(page) = exchange.page(&symbol, start, number(&q, "endTime"), limit) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"code": -1121, "msg": "Invalid symbol."})),
        )
            .into_response();
    };
    let rows: Vec<Value> = page
        .iter()
        .map(|c| {
            json!([
                c.timestamp,
                c.open.to_string(),
                c.high.to_string(),
                c.low.to_string(),
                c.close.to_string(),
                c.volume.to_string(),
                c.timestamp + 59_999,
                "0",
                100,
                "0",
                "0",
                "0"
            ])
        })
        .collect();
    Json(Value::Array(rows)).into_response()
}

async fn bybit_kline(
    State(exchange): State<FakeExchange>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(failure) = exchange.next() {
        return failure_response(failure);
    }
    let symbol = q.get("symbol").cloned().unwrap_or_default();
    let limit = number(&q, "limit").unwrap_or(200).clamp(1, 1000) as usize;
    let start = number(&q, "start").unwrap_or(0);
    let Some(page) = exchange.page(&symbol, start, number(&q, "end"), limit) else {
        return Json(json!({"retCode": 10001, "retMsg": "params error: symbol invalid", "result": {}, "time": 0})).into_response();
    };
    // Bybit lists newest first.
    let list: Vec<Value> = page
        .iter()
        .rev()
        .map(|c| {
            json!([
                c.timestamp.to_string(),
                c.open.to_string(),
                c.high.to_string(),
                c.low.to_string(),
                c.close.to_string(),
                c.volume.to_string(),
                "0"
            ])
        })
        .collect();
    Json(json!({"retCode": 0, "retMsg": "OK", "result": {"category": q.get("category"), "symbol": symbol, "list": list}, "time": 0}))
        .into_response()
}
