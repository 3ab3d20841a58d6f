//! Shared vocabulary of jesse-mcp, used by both the API and the worker.
//!
//! Owns: job types and their status vocabulary, the results/candle store, the
//! queue handle, candle CSV parsing and synthetic candles, and the static facts
//! about the pinned Jesse release (exchanges, timeframes). It never links Python
//! and never runs strategy code.

pub mod candles;
pub mod error;
pub mod jesse;
pub mod jobs;
pub mod queue;
pub mod store;
pub mod time;

pub use error::{ErrorBody, StoreError};
