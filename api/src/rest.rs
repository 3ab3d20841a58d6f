//! REST frontend (`/health`, `/v1/...`): JSON in, JSON out, every error in the
//! `{"error": {...}}` envelope. Handlers only translate HTTP to service calls.

use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use jesse_mcp_core::jobs::BacktestRequest;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::service::{ResultQuery, Service};

/// Limit for JSON bodies; backtest requests are small.
pub const JSON_BODY_LIMIT: usize = 1024 * 1024;
/// Limit for CSV uploads (a year of 1m candles is about 40 MB).
pub const CSV_BODY_LIMIT: usize = 512 * 1024 * 1024;

pub fn router(service: Service) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/v1/backtests", post(submit_backtest))
        .route("/v1/jobs", get(list_jobs))
        .route("/v1/jobs/{id}", get(get_job))
        .route("/v1/jobs/{id}/result", get(get_result))
        .route("/v1/jobs/{id}/cancel", post(cancel_job))
        .route("/v1/candles", get(list_candles))
        .route(
            "/v1/candles/csv",
            post(import_csv).layer(DefaultBodyLimit::max(CSV_BODY_LIMIT)),
        )
        .route("/v1/candles/imports", post(submit_import))
        .route(
            "/v1/candles/{exchange}/{symbol}",
            axum::routing::delete(delete_series),
        )
        .route("/v1/candles/{exchange}/{symbol}/gaps", get(gap_report))
        .route("/v1/candles/{exchange}/{symbol}/csv", get(export_csv))
        .route("/v1/schedules", get(list_schedules).put(put_schedules))
        .route("/v1/strategies", get(list_strategies))
        .route("/v1/strategies/validate", post(validate_strategy))
        .route(
            "/v1/strategies/{name}",
            get(get_strategy).put(put_strategy).delete(delete_strategy),
        )
        .route("/v1/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .with_state(service)
}

/// `Json<T>` whose rejections speak the error envelope.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::JsonDataError(e) => ApiError::invalid(
            "invalid_request",
            format!(
                "the request body does not match the expected shape: {}",
                e.body_text()
            ),
        ),
        JsonRejection::JsonSyntaxError(e) => ApiError::bad_request(
            "malformed_json",
            format!("the request body is not valid JSON: {}", e.body_text()),
        ),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with the header Content-Type: application/json",
        ),
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            payload_too_large(JSON_BODY_LIMIT)
        }
        other => ApiError::bad_request("invalid_body", other.body_text()),
    }
}

fn payload_too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body exceeds the limit of {limit} bytes"),
    )
}

/// `Query<T>` whose rejections speak the error envelope.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e: QueryRejection| {
                ApiError::invalid(
                    "invalid_query",
                    format!("invalid query string: {}", e.body_text()),
                )
            })
    }
}

async fn health(State(service): State<Service>) -> Response {
    match service.health().await {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn ready(State(service): State<Service>) -> Result<Response, ApiError> {
    Ok(Json(service.ready().await?).into_response())
}

async fn metrics(State(service): State<Service>) -> Result<Response, ApiError> {
    let text = crate::metrics::render(&service).await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        text,
    )
        .into_response())
}

async fn submit_backtest(
    State(service): State<Service>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<BacktestRequest>,
) -> Result<Response, ApiError> {
    let key = match headers.get("idempotency-key") {
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                "the Idempotency-Key header must be visible ASCII",
            )
        })?),
        None => None,
    };
    let accepted = service.submit_backtest(request, key).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    kind: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

async fn list_jobs(
    State(service): State<Service>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let list = service
        .list_jobs(
            q.kind.as_deref(),
            q.status.as_deref(),
            q.limit,
            q.cursor.as_deref(),
        )
        .await?;
    Ok(Json(list).into_response())
}

async fn get_job(
    State(service): State<Service>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(service.get_job(&id).await?).into_response())
}

#[derive(Deserialize)]
struct ResultParams {
    include_trades: Option<bool>,
    include_equity_curve: Option<bool>,
    trades_offset: Option<usize>,
    trades_limit: Option<usize>,
}

async fn get_result(
    State(service): State<Service>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ResultParams>,
) -> Result<Response, ApiError> {
    let query = ResultQuery {
        include_trades: q.include_trades,
        include_equity_curve: q.include_equity_curve,
        trades_offset: q.trades_offset.unwrap_or(0),
        trades_limit: q.trades_limit,
    };
    Ok(Json(service.get_result(&id, &query).await?).into_response())
}

async fn cancel_job(
    State(service): State<Service>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(service.cancel_job(&id).await?).into_response())
}

async fn list_candles(State(service): State<Service>) -> Result<Response, ApiError> {
    Ok(Json(service.list_series().await?).into_response())
}

#[derive(Deserialize)]
struct CsvParams {
    exchange: Option<String>,
    symbol: Option<String>,
}

async fn import_csv(
    State(service): State<Service>,
    ApiQuery(q): ApiQuery<CsvParams>,
    request: Request,
) -> Result<Response, ApiError> {
    let (Some(exchange), Some(symbol)) = (q.exchange, q.symbol) else {
        return Err(ApiError::invalid(
            "missing_parameter",
            "give the series as query parameters: /v1/candles/csv?exchange=Binance%20Perpetual%20Futures&symbol=BTC-USDT",
        ));
    };
    let body = Bytes::from_request(request, &()).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            payload_too_large(CSV_BODY_LIMIT)
        } else {
            ApiError::bad_request("invalid_body", e.body_text())
        }
    })?;
    Ok(Json(service.import_csv(&exchange, &symbol, &body).await?).into_response())
}

async fn submit_import(
    State(service): State<Service>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<crate::service::ImportRequest>,
) -> Result<Response, ApiError> {
    let key = match headers.get("idempotency-key") {
        Some(value) => Some(value.to_str().map_err(|_| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                "the Idempotency-Key header must be visible ASCII",
            )
        })?),
        None => None,
    };
    if key.is_some_and(|k| k.is_empty() || k.len() > 200) {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            "the Idempotency-Key header must be 1 to 200 characters",
        ));
    }
    let accepted = service.submit_import(request, key).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)).into_response())
}

#[derive(Deserialize)]
struct RangeQuery {
    start_date: Option<String>,
    end_date: Option<String>,
}

async fn gap_report(
    State(service): State<Service>,
    Path((exchange, symbol)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<Response, ApiError> {
    let report = service
        .gap_report(
            &exchange,
            &symbol,
            q.start_date.as_deref(),
            q.end_date.as_deref(),
        )
        .await?;
    Ok(Json(report).into_response())
}

async fn export_csv(
    State(service): State<Service>,
    Path((exchange, symbol)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<RangeQuery>,
) -> Result<Response, ApiError> {
    let chunks = service
        .export_csv(
            &exchange,
            &symbol,
            q.start_date.as_deref(),
            q.end_date.as_deref(),
        )
        .await?;
    let stream = futures::stream::iter(chunks.into_iter().map(Ok::<_, std::convert::Infallible>));
    Ok((
        [(axum::http::header::CONTENT_TYPE, "text/csv")],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

async fn delete_series(
    State(service): State<Service>,
    Path((exchange, symbol)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    Ok(Json(service.delete_series(&exchange, &symbol).await?).into_response())
}

async fn list_schedules(State(service): State<Service>) -> Result<Response, ApiError> {
    Ok(Json(service.list_schedules().await?).into_response())
}

async fn put_schedules(
    State(service): State<Service>,
    ApiJson(body): ApiJson<crate::service::SchedulesBody>,
) -> Result<Response, ApiError> {
    Ok(Json(service.put_schedules(body).await?).into_response())
}

async fn list_strategies(State(service): State<Service>) -> Result<Response, ApiError> {
    Ok(Json(service.list_strategies().await?).into_response())
}

fn etag(sha256: &str) -> [(axum::http::HeaderName, String); 1] {
    [(axum::http::header::ETAG, format!("\"{sha256}\""))]
}

fn if_match(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    headers
        .get(axum::http::header::IF_MATCH)
        .map(|v| {
            v.to_str().map(str::to_string).map_err(|_| {
                ApiError::bad_request(
                    "invalid_if_match",
                    "If-Match must be the strategy's sha256 (its ETag)",
                )
            })
        })
        .transpose()
}

async fn get_strategy(
    State(service): State<Service>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let view = service.get_strategy(&name).await?;
    Ok((etag(&view.strategy.sha256), Json(view)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StrategyBody {
    code: String,
}

async fn put_strategy(
    State(service): State<Service>,
    Path(name): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<StrategyBody>,
) -> Result<Response, ApiError> {
    let written = service
        .put_strategy(&name, body.code, if_match(&headers)?)
        .await?;
    let status = if written.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, etag(&written.strategy.sha256), Json(written)).into_response())
}

async fn delete_strategy(
    State(service): State<Service>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    Ok(Json(service.delete_strategy(&name, if_match(&headers)?).await?).into_response())
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateBody {
    /// The strategy name the code is meant for (its class must be named so).
    #[serde(default)]
    pub name: Option<String>,
    /// Python source of the strategy.
    pub code: String,
    /// Also import and smoke-test it in a runner (a few seconds).
    #[serde(default)]
    pub deep: bool,
}

async fn validate_strategy(
    State(service): State<Service>,
    ApiJson(body): ApiJson<ValidateBody>,
) -> Result<Response, ApiError> {
    Ok(Json(
        service
            .validate_strategy(body.name.as_deref(), &body.code, body.deep)
            .await?,
    )
    .into_response())
}

async fn openapi() -> Response {
    Json(crate::openapi::document()).into_response()
}

async fn not_found() -> ApiError {
    ApiError::not_found(
        "not_found",
        "no such endpoint; see GET /v1/openapi.json for the API",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept that method; see GET /v1/openapi.json",
    )
}
