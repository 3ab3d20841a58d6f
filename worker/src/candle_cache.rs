//! Recently loaded candle ranges, kept in the worker so a research loop that
//! backtests the same data again skips the store read and the fingerprint hash.
//! Entries are keyed by the series' write counter, so any write to the series
//! makes them unreachable; memory is bounded by bytes, least recently used first.

use std::sync::{Arc, Mutex, OnceLock};

use jesse_mcp_core::store::Store;
use sha2::{Digest, Sha256};

/// The 1m rows a run needs for one series, and their fingerprint.
pub struct SeriesData {
    pub warmup: Vec<f64>,
    pub trading: Vec<f64>,
    sha256: OnceLock<String>,
}

impl SeriesData {
    /// sha256 over the raw f64 bytes of warm-up then trading rows: the exact
    /// input Jesse saw. Computed once per cached range, off the critical path:
    /// the worker hashes while Jesse runs.
    pub fn sha256(&self) -> &str {
        self.sha256.get_or_init(|| {
            let mut hasher = Sha256::new();
            hasher.update(bytemuck::cast_slice::<f64, u8>(&self.warmup));
            hasher.update(bytemuck::cast_slice::<f64, u8>(&self.trading));
            hex::encode(hasher.finalize())
        })
    }

    fn bytes(&self) -> usize {
        (self.warmup.len() + self.trading.len()) * 8
    }
}

#[derive(PartialEq, Eq, Clone)]
struct Key {
    exchange: String,
    symbol: String,
    warmup_start: i64,
    start: i64,
    end: i64,
    version: i64,
}

pub struct CandleCache {
    capacity_bytes: usize,
    entries: Mutex<Vec<(Key, Arc<SeriesData>, u64)>>,
    clock: std::sync::atomic::AtomicU64,
}

impl CandleCache {
    pub fn new(capacity_bytes: usize) -> Self {
        Self {
            capacity_bytes,
            entries: Mutex::new(Vec::new()),
            clock: Default::default(),
        }
    }

    /// Returns the rows of `[warmup_start, start)` and `[start, end)`, from the
    /// cache when the series has not changed since they were loaded.
    pub async fn load(
        &self,
        store: &Store,
        exchange: &str,
        symbol: &str,
        warmup_start: i64,
        start: i64,
        end: i64,
    ) -> Result<Arc<SeriesData>, jesse_mcp_core::StoreError> {
        let version = store.series_version(exchange, symbol).await?.unwrap_or(0);
        let key = Key {
            exchange: exchange.into(),
            symbol: symbol.into(),
            warmup_start,
            start,
            end,
            version,
        };
        let tick = self
            .clock
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(entry) = self
            .entries
            .lock()
            .expect("cache lock")
            .iter_mut()
            .find(|(k, _, _)| *k == key)
        {
            entry.2 = tick;
            return Ok(Arc::clone(&entry.1));
        }
        let warmup = store
            .load_candles(exchange, symbol, warmup_start, start)
            .await?;
        let trading = store.load_candles(exchange, symbol, start, end).await?;
        let data = Arc::new(SeriesData {
            warmup,
            trading,
            sha256: OnceLock::new(),
        });
        if data.bytes() <= self.capacity_bytes {
            let mut entries = self.entries.lock().expect("cache lock");
            entries.retain(|(k, _, _)| {
                !(k.exchange == key.exchange && k.symbol == key.symbol && k.version != key.version)
            });
            entries.push((key, Arc::clone(&data), tick));
            let mut total: usize = entries.iter().map(|(_, d, _)| d.bytes()).sum();
            while total > self.capacity_bytes {
                let oldest = entries
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, (_, _, t))| *t)
                    .map(|(i, _)| i)
                    .expect("non-empty");
                total -= entries.remove(oldest).1.bytes();
            }
        }
        Ok(data)
    }
}
