//! Errors of the shared layer, and the one error body every frontend speaks.

use serde::{Deserialize, Serialize};

/// The `{"error": {...}}` envelope's inner object; also what a failed job records.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `unknown_strategy`, `timed_out`.
    pub code: String,
    /// What went wrong and, for input errors, how to fix it.
    pub message: String,
    /// Structured specifics (the offending field, missing ranges, Python traceback...).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            details: serde_json::Value::Null,
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored JSON is corrupt: {0}")]
    Json(#[from] serde_json::Error),
    #[error("queue error: {0}")]
    Queue(String),
    #[error("configuration error: {0}")]
    Config(String),
}

/// A refusal or failure as the frontends report it: an HTTP status plus the
/// `{"error": {code, message, details}}` body. REST renders it as a response,
/// MCP as a tool error; planning in core (the API's submits and a worker's
/// child jobs alike) returns it. 5xx bodies never carry internals; those are
/// logged once, where the error is converted.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: http::StatusCode,
    pub body: ErrorBody,
}

impl ApiError {
    pub fn new(status: http::StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody::new(code, message),
        }
    }

    /// The request is well-formed but asks for something invalid (422).
    pub fn invalid(code: &str, message: impl Into<String>) -> Self {
        Self::new(http::StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(http::StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::new(http::StatusCode::NOT_FOUND, code, message)
    }

    pub fn conflict(code: &str, message: impl Into<String>) -> Self {
        Self::new(http::StatusCode::CONFLICT, code, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            message,
        )
    }

    pub fn internal() -> Self {
        Self::new(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the service log",
        )
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.body.details = details;
        self
    }

    pub fn envelope(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.body })
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
        ApiError::internal()
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

#[cfg(feature = "axum")]
impl axum_core::response::IntoResponse for ApiError {
    fn into_response(self) -> axum_core::response::Response {
        let body = serde_json::to_vec(&self.envelope()).unwrap_or_default();
        let mut response = axum_core::response::Response::new(axum_core::body::Body::from(body));
        *response.status_mut() = self.status;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        response
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.body.code, self.body.message)
    }
}
