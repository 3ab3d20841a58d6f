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
}
