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
    /// A write of many parts (a CSV upload's chunks) failed after some parts
    /// were committed: `committed` says exactly what is stored.
    #[error("{error} (after {} rows were committed)", committed.inserted + committed.updated + committed.unchanged)]
    Partial {
        committed: crate::store::UpsertCounts,
        error: Box<StoreError>,
    },
}

impl StoreError {
    /// The error under a [`StoreError::Partial`].
    pub fn cause(&self) -> &StoreError {
        match self {
            StoreError::Partial { error, .. } => error.cause(),
            other => other,
        }
    }
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
        let committed = match &error {
            StoreError::Partial { committed, .. } => Some(*committed),
            _ => None,
        };
        let mut answer = if is_full(&error) {
            ApiError::store_full(if committed.is_some() {
                "the store's disk is full: the write stopped part-way and `details.committed` says \
                 what is stored; free space on the data directory's disk and send it again \
                 (rows already stored count as unchanged)"
            } else {
                "the store's disk is full: nothing was written; free space on the data \
                 directory's disk and retry"
            })
        } else if let StoreError::Queue(_) = error {
            ApiError::unavailable("the queue is unreachable right now; retry shortly")
        } else if is_transient(&error) {
            ApiError::unavailable("the store is busy or restarting; retry shortly")
        } else {
            ApiError::internal()
        };
        if let Some(committed) = committed {
            answer = answer.with_details(serde_json::json!({ "committed": committed }));
        }
        answer
    }
}

impl ApiError {
    /// The store cannot grow (507 Insufficient Storage, `store_full`).
    pub fn store_full(message: impl Into<String>) -> Self {
        Self::new(
            http::StatusCode::INSUFFICIENT_STORAGE,
            "store_full",
            message,
        )
    }
}

/// The store's (or the SQLite queue's) disk is full: SQLite's SQLITE_FULL (13),
/// Postgres' disk_full (53100), or ENOSPC from the file system. Passes once
/// space is freed; the store needs no restart.
pub fn is_full(error: &StoreError) -> bool {
    match error.cause() {
        StoreError::Database(sqlx::Error::Database(db)) => {
            matches!(db.code().as_deref(), Some("13" | "53100"))
                || db.message().contains("disk is full")
        }
        StoreError::Database(sqlx::Error::Io(e)) => e.kind() == std::io::ErrorKind::StorageFull,
        StoreError::Queue(message) => message.contains("disk is full"),
        _ => false,
    }
}

/// Errors that pass on their own: a busy SQLite file, a Postgres that is
/// restarting or unreachable, a connection that broke mid-request.
pub fn is_transient(error: &StoreError) -> bool {
    match error.cause() {
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
