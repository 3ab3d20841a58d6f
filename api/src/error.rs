//! The API's one error type: an HTTP status plus the `{"error": {code, message,
//! details}}` body. REST renders it as a response, MCP as a tool error. 5xx
//! bodies never carry internals; those are logged once, here.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jesse_mcp_core::{ErrorBody, StoreError};
use serde_json::json;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody::new(code, message),
        }
    }

    /// The request is well-formed but asks for something invalid (422).
    pub fn invalid(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn conflict(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.body.details = details;
        self
    }

    pub fn envelope(&self) -> serde_json::Value {
        json!({ "error": self.body })
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        tracing::error!(error = %error, "store error");
        if let StoreError::Queue(_) = error {
            return ApiError::unavailable("the queue is unreachable right now; retry shortly");
        }
        if is_transient(&error) {
            return ApiError::unavailable("the store is busy or restarting; retry shortly");
        }
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the service log",
        )
    }
}

/// Errors that pass on their own: a busy SQLite file, a Postgres that is
/// restarting or unreachable, a connection that broke mid-request.
pub fn is_transient(error: &StoreError) -> bool {
    match error {
        StoreError::Database(
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed,
        ) => true,
        StoreError::Database(sqlx::Error::Database(db)) => {
            let code = db.code().unwrap_or_default();
            // Postgres: connection exceptions (08), shutting down / cannot connect
            // now (57P01-57P03); SQLite: locked or busy.
            code.starts_with("08")
                || code.starts_with("57P")
                || db.message().contains("database is locked")
        }
        StoreError::Database(sqlx::Error::Protocol(message)) => message.contains("connection"),
        _ => false,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.envelope())).into_response()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.body.code, self.body.message)
    }
}
