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
pub mod store;
pub mod strategies;
pub mod strategy_static;
pub mod time;

pub use error::{ApiError, ErrorBody, StoreError};

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
