//! The pipe protocol between the worker and its runner processes.
//!
//! Frames are a little-endian u32 length and a UTF-8 JSON body. A run request
//! frame is followed by the raw candle payload: for each series, its trading
//! rows then its warm-up rows, as little-endian f64 in Jesse's column order.
//! The runner answers once with a ready frame, then, per request, any number of
//! event frames (`{"event": {...}}`: the job's progress and log lines, see
//! [`EVENT_KEY`]) and one response.
//!
//! While a request runs, the only frame the worker sends is [`CANCEL`]: the runner
//! kills the job's process at once and answers. A cancel that crosses the answer
//! arrives between requests, where the runner skips it.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

/// Largest frame either side accepts (JSON bodies only; candles travel raw).
pub const MAX_FRAME: usize = 512 * 1024 * 1024;

/// The worker's "stop this job now" frame (a cancel or a timeout).
pub const CANCEL: &[u8] = br#"{"cancel":true}"#;

/// The key of an event frame: `{"event": {"progress": 0..1, "simulated_ms": ms}}` or
/// `{"event": {"logs": [{"stream", "line", "simulated_ms"}]}}`, as the job's process
/// sent it (untrusted: the worker checks and bounds what it keeps).
pub const EVENT_KEY: &str = "event";

#[derive(Debug, Serialize, Deserialize)]
pub struct Ready {
    pub ok: bool,
    pub jesse_version: Option<String>,
    pub error: Option<String>,
    /// What the runner's jobs are held to (`crate::sandbox::SandboxStatus`).
    #[serde(default)]
    pub sandbox: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SeriesHeader {
    /// Jesse's candle key, `<exchange>-<symbol>`.
    pub key: String,
    pub exchange: String,
    pub symbol: String,
    pub rows: usize,
    pub warmup_rows: usize,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RunRequest {
    /// The `jesse_mcp_runner` function to call: `run_backtest` or `validate_strategy`.
    pub entry: String,
    /// Passed to that function as is.
    pub request_json: String,
    pub series: Vec<SeriesHeader>,
}

pub fn write_frame(out: &mut impl Write, body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| std::io::Error::other("frame too large"))?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(body)?;
    out.flush()
}

/// Reads one frame; `Ok(None)` on a clean end of stream.
pub fn read_frame(input: &mut impl Read) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "frame of {len} bytes exceeds the limit"
        )));
    }
    // Grown as bytes arrive: a length prefix alone never reserves memory.
    let mut body = Vec::with_capacity(len.min(CHUNK_BYTES));
    input.take(len as u64).read_to_end(&mut body)?;
    if body.len() != len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some(body))
}

/// The most memory a read reserves ahead of the bytes that fill it.
const CHUNK_BYTES: usize = 8 << 20;

/// Reads `rows` candles (6 f64 each) straight into an f64 buffer, which grows
/// as rows arrive (a header claiming more rows than are sent reserves nothing).
pub fn read_rows(input: &mut impl Read, rows: usize) -> std::io::Result<Vec<f64>> {
    let total = rows
        .checked_mul(6)
        .ok_or_else(|| std::io::Error::other(format!("{rows} rows is not a row count")))?;
    let chunk = CHUNK_BYTES / 8;
    let mut values: Vec<f64> = Vec::with_capacity(total.min(chunk));
    while values.len() < total {
        let filled = values.len();
        let next = (total - filled).min(chunk);
        values.resize(filled + next, 0.0);
        input.read_exact(bytemuck::cast_slice_mut(&mut values[filled..]))?;
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_length_prefix_without_its_bytes_is_an_error() {
        let mut stream = Vec::from(((MAX_FRAME) as u32).to_le_bytes());
        stream.extend_from_slice(b"{}");
        let error = read_frame(&mut stream.as_slice()).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof);
        let too_long = Vec::from(((MAX_FRAME + 1) as u32).to_le_bytes());
        assert!(read_frame(&mut too_long.as_slice()).is_err());
        assert!(read_frame(&mut [].as_slice()).unwrap().is_none());
    }

    #[test]
    fn row_counts_that_overflow_or_outrun_the_stream_are_errors() {
        // Found while writing fuzz/fuzz_targets/runner_frames.rs: `rows * 6` overflowed.
        assert!(read_rows(&mut [0u8; 48].as_slice(), usize::MAX).is_err());
        assert!(read_rows(&mut [0u8; 48].as_slice(), 1 << 40).is_err());
        let row: Vec<u8> = (0..6).flat_map(|i| f64::from(i).to_le_bytes()).collect();
        assert_eq!(
            read_rows(&mut row.as_slice(), 1).unwrap(),
            vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        );
        let mut frame = Vec::new();
        write_frame(&mut frame, b"{\"a\":1}").unwrap();
        assert_eq!(
            read_frame(&mut frame.as_slice()).unwrap().unwrap(),
            b"{\"a\":1}"
        );
    }
}
