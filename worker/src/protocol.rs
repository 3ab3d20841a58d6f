//! The pipe protocol between the worker and its runner processes.
//!
//! Frames are a little-endian u32 length and a UTF-8 JSON body. A run request
//! frame is followed by the raw candle payload: for each series, its trading
//! rows then its warm-up rows, as little-endian f64 in Jesse's column order.
//! The runner answers once with a ready frame, then one response per request.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

/// Largest frame either side accepts (JSON bodies only; candles travel raw).
pub const MAX_FRAME: usize = 512 * 1024 * 1024;

#[derive(Debug, Serialize, Deserialize)]
pub struct Ready {
    pub ok: bool,
    pub jesse_version: Option<String>,
    pub error: Option<String>,
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
    let mut body = vec![0u8; len];
    input.read_exact(&mut body)?;
    Ok(Some(body))
}

/// Reads `rows` candles (6 f64 each) straight into an f64 buffer.
pub fn read_rows(input: &mut impl Read, rows: usize) -> std::io::Result<Vec<f64>> {
    let mut values = vec![0f64; rows * 6];
    input.read_exact(bytemuck::cast_slice_mut(&mut values))?;
    Ok(values)
}
