//! The jesse-mcp API: REST (`/v1`) and MCP (`/mcp`, stdio) frontends over one
//! service layer. It validates and enqueues; it never runs strategy code and
//! never links Python (the worker does that).

pub mod app;
pub mod auth;
pub mod charts;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod mcp;
pub mod metrics;
pub mod openapi;
pub mod rest;
pub mod service;
pub use jesse_mcp_core::strategies;
pub use jesse_mcp_core::strategy_static;

pub use app::Application;
pub use config::ApiConfig;
