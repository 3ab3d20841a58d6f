//! The API's one error type lives in core (planning there returns it too); its
//! HTTP rendering is core's `axum` feature. Re-exported here for the frontends.

pub use jesse_mcp_core::error::{ApiError, is_transient};
