//! Shared vocabulary of jesse-mcp, used by both the API and the worker.
//!
//! Owns: job types and their status vocabulary, the results/candle store, the
//! queue handle, candle CSV parsing and synthetic candles, and the static facts
//! about the pinned Jesse release (exchanges, timeframes). It never links Python
//! and never runs strategy code.

pub mod analysis;
pub mod backends;
pub mod candles;
pub mod engine;
pub mod error;
pub mod jesse;
pub mod jobs;
pub mod kinds;
pub mod overfit;
pub mod planner;
pub mod queue;
pub mod rng;
pub mod special;
pub mod store;
pub mod strategies;
pub mod strategy_static;
pub mod subject;
pub mod time;

pub use error::{ApiError, ErrorBody, StoreError};

/// How durably the SQLite store commits (`JESSE_MCP_SQLITE_SYNCHRONOUS`).
///
/// `full` (the default) fsyncs the write-ahead log at every commit, so a job
/// answered with 202 survives a power loss, not only a crash. `normal` skips
/// that fsync: faster commits, but the last ones before a power loss can be
/// lost (never corrupted). The queue's own file stays `normal`: the store is
/// the record, and [`engine::Engine::requeue_lost`] re-enqueues a stored job
/// the queue lost. Postgres commits are durable with its default
/// `synchronous_commit = on`.
pub fn sqlite_synchronous() -> Result<sqlx::sqlite::SqliteSynchronous, StoreError> {
    use sqlx::sqlite::SqliteSynchronous;
    match std::env::var("JESSE_MCP_SQLITE_SYNCHRONOUS")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "" | "full" => Ok(SqliteSynchronous::Full),
        "normal" => Ok(SqliteSynchronous::Normal),
        other => Err(StoreError::Config(format!(
            "JESSE_MCP_SQLITE_SYNCHRONOUS={other:?} is not a choice: use `full` (the default: \
             a 202 survives a power loss) or `normal` (faster commits, the last ones can be \
             lost on power loss)"
        ))),
    }
}

/// Serialises creating and migrating the SQLite files of a data directory across
/// processes (API, workers and CLI may start together on a fresh directory, and
/// SQLite migrations take no lock of their own). Held until the file drops.
pub fn init_lock(data_dir: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::create_dir_all(data_dir)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(data_dir.join(".init.lock"))?;
    file.lock()?;
    Ok(file)
}
