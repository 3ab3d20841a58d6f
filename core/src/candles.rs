//! Candle rows in Jesse's shape, CSV parsing for offline imports, and a
//! deterministic synthetic-candle generator for demos and tests.
//!
//! Rows are `[timestamp_ms, open, close, high, low, volume]`: Jesse's column
//! order (close before high/low), so a loaded range can be handed to Jesse as is.

use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::time::{MINUTE_MS, parse_candle_timestamp};

/// 2100-01-01T00:00:00Z: no plausible candle is later; bounds keep range arithmetic far from overflow.
pub const LATEST_TIMESTAMP: i64 = 4_102_444_800_000;

/// One 1m candle in Jesse's column order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candle {
    pub timestamp: i64,
    pub open: f64,
    pub close: f64,
    pub high: f64,
    pub low: f64,
    pub volume: f64,
}

impl Candle {
    /// Why this row is not a plausible candle, if it is not.
    pub fn defect(&self) -> Option<String> {
        if !(0..LATEST_TIMESTAMP).contains(&self.timestamp) {
            return Some(format!(
                "timestamp {} is outside 1970-01-01 .. 2100-01-01 (milliseconds since the epoch expected)",
                self.timestamp
            ));
        }
        if self.timestamp % MINUTE_MS != 0 {
            return Some(format!(
                "timestamp {} is not on a minute boundary (1m candles only)",
                self.timestamp
            ));
        }
        let values = [self.open, self.close, self.high, self.low, self.volume];
        if values.iter().any(|v| !v.is_finite()) {
            return Some("prices and volume must be finite numbers".into());
        }
        if values.iter().any(|v| *v < 0.0) {
            return Some("prices and volume must not be negative".into());
        }
        if self.high < self.open.max(self.close) || self.low > self.open.min(self.close) {
            return Some(format!(
                "high {} / low {} do not bracket open {} and close {}",
                self.high, self.low, self.open, self.close
            ));
        }
        None
    }
}

/// The outcome of parsing a CSV body: good rows plus what was rejected.
#[derive(Debug, Default)]
pub struct ParsedCsv {
    pub candles: Vec<Candle>,
    pub rejected: u64,
    pub first_rejection: Option<Rejection>,
}

#[derive(Debug, Clone, Serialize, PartialEq, schemars::JsonSchema)]
pub struct Rejection {
    /// 1-based line number in the file (the header is line 1).
    pub line: u64,
    pub reason: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CsvError {
    #[error(
        "the CSV body is empty; send a header line `timestamp,open,high,low,close,volume` and 1m rows"
    )]
    Empty,
    #[error(
        "the CSV header must name the columns timestamp,open,high,low,close,volume (any order); missing: {0}"
    )]
    BadHeader(String),
    #[error("the CSV body is not valid UTF-8")]
    NotUtf8,
}

const COLUMNS: [&str; 6] = ["timestamp", "open", "high", "low", "close", "volume"];

/// Parses a CSV of 1m candles. Bad rows are counted and the first one reported;
/// a timestamp repeated within the file is rejected (the first occurrence stays).
///
/// The dialect is RFC 4180 on one line per record: LF or CRLF line ends, an
/// optional UTF-8 byte order mark, fields optionally in double quotes (`""` is a
/// quote inside one). A line a record cannot be read from (a quote left open, a
/// carriage return inside the line, text after a closing quote) is rejected
/// with its number; candle fields never hold line breaks.
pub fn parse_csv(body: &[u8]) -> Result<ParsedCsv, CsvError> {
    let text = std::str::from_utf8(body).map_err(|_| CsvError::NotUtf8)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text
        .split('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .enumerate();
    let (header_no, header) = loop {
        match lines.next() {
            None => return Err(CsvError::Empty),
            Some((_, line)) if line.trim().is_empty() => continue,
            Some((number, line)) => break (number as u64 + 1, line),
        }
    };
    let names: Vec<String> = match split_fields(header) {
        Ok(fields) => fields
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect(),
        Err(reason) => {
            return Err(CsvError::BadHeader(format!(
                "{} (line {header_no}: {reason})",
                COLUMNS.join(",")
            )));
        }
    };
    let mut index = [0usize; 6];
    let mut missing = Vec::new();
    for (slot, column) in COLUMNS.iter().enumerate() {
        match names.iter().position(|n| n == column) {
            Some(i) => index[slot] = i,
            None => missing.push(*column),
        }
    }
    if !missing.is_empty() {
        return Err(CsvError::BadHeader(missing.join(",")));
    }

    let mut parsed = ParsedCsv::default();
    let mut seen = std::collections::HashSet::new();
    let reject = |parsed: &mut ParsedCsv, line: u64, reason: String| {
        parsed.rejected += 1;
        if parsed.first_rejection.is_none() {
            parsed.first_rejection = Some(Rejection { line, reason });
        }
    };
    for (number, line) in lines {
        let line_no = number as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fields = match split_fields(line) {
            Ok(fields) => fields,
            Err(reason) => {
                reject(&mut parsed, line_no, reason);
                continue;
            }
        };
        if fields.len() < names.len() {
            reject(
                &mut parsed,
                line_no,
                format!("expected {} fields, found {}", names.len(), fields.len()),
            );
            continue;
        }
        let timestamp = match parse_candle_timestamp(fields[index[0]].trim()) {
            Ok(ts) => ts,
            Err(e) => {
                reject(&mut parsed, line_no, e);
                continue;
            }
        };
        let mut values = [0.0f64; 5];
        let mut bad = None;
        for (slot, value) in values.iter_mut().enumerate() {
            let raw = fields[index[slot + 1]].trim();
            match raw.parse::<f64>() {
                Ok(v) => *value = v,
                Err(_) => {
                    bad = Some(format!("{} '{}' is not a number", COLUMNS[slot + 1], raw));
                    break;
                }
            }
        }
        if let Some(reason) = bad {
            reject(&mut parsed, line_no, reason);
            continue;
        }
        let [open, high, low, close, volume] = values;
        let candle = Candle {
            timestamp,
            open,
            close,
            high,
            low,
            volume,
        };
        if let Some(reason) = candle.defect() {
            reject(&mut parsed, line_no, reason);
            continue;
        }
        if !seen.insert(timestamp) {
            reject(
                &mut parsed,
                line_no,
                format!("timestamp {timestamp} appears earlier in the file"),
            );
            continue;
        }
        parsed.candles.push(candle);
    }
    parsed.candles.sort_by_key(|c| c.timestamp);
    Ok(parsed)
}

/// The fields of one CSV line (its line end already removed): unquoted fields
/// as they are, quoted ones without their quotes and with `""` read as `"`.
/// Why the line is not a record otherwise.
fn split_fields(line: &str) -> Result<Vec<std::borrow::Cow<'_, str>>, String> {
    use std::borrow::Cow;
    if line.contains('\r') {
        return Err("a carriage return inside the line (use LF or CRLF line ends)".into());
    }
    let mut fields = Vec::new();
    let mut rest = line;
    loop {
        let number = fields.len() + 1;
        let trimmed = rest.trim_start();
        if let Some(quoted) = trimmed.strip_prefix('"') {
            // A quoted field: up to the quote that is not doubled.
            let mut value: Option<String> = None;
            let mut from = 0;
            let close = loop {
                match quoted[from..].find('"') {
                    None => {
                        return Err(format!(
                            "field {number} opens a quote that does not close on this line"
                        ));
                    }
                    Some(at) if quoted[from + at + 1..].starts_with('"') => {
                        value
                            .get_or_insert_with(String::new)
                            .push_str(&quoted[from..from + at + 1]);
                        from += at + 2;
                    }
                    Some(at) => break from + at,
                }
            };
            let field = match value {
                Some(mut text) => {
                    text.push_str(&quoted[from..close]);
                    Cow::Owned(text)
                }
                None => Cow::Borrowed(&quoted[..close]),
            };
            fields.push(field);
            let after = quoted[close + 1..].trim_start();
            match after.strip_prefix(',') {
                Some(next) => rest = next,
                None if after.is_empty() => return Ok(fields),
                None => {
                    return Err(format!(
                        "unexpected text after the closing quote of field {number}"
                    ));
                }
            }
        } else {
            let (field, next) = match rest.find(',') {
                Some(at) => (&rest[..at], Some(&rest[at + 1..])),
                None => (rest, None),
            };
            if field.contains('"') {
                return Err(format!(
                    "a quote inside unquoted field {number} (quote the whole field, doubling inner quotes)"
                ));
            }
            fields.push(Cow::Borrowed(field));
            match next {
                Some(next) => rest = next,
                None => return Ok(fields),
            }
        }
    }
}

/// Writes candles as CSV in the import format (`timestamp,open,high,low,close,volume`).
pub fn write_csv(candles: &[Candle], out: &mut impl std::io::Write) -> std::io::Result<()> {
    writeln!(out, "timestamp,open,high,low,close,volume")?;
    for c in candles {
        writeln!(
            out,
            "{},{},{},{},{},{}",
            c.timestamp, c.open, c.high, c.low, c.close, c.volume
        )?;
    }
    Ok(())
}

/// A reproducible random walk of 1m candles over `[start_ms, end_ms)`, for demos
/// and tests. Prices drift with regime changes so trend strategies trade.
pub fn synthetic(start_ms: i64, end_ms: i64, start_price: f64, seed: u64) -> Vec<Candle> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let minutes = ((end_ms - start_ms) / MINUTE_MS).max(0) as usize;
    let mut out = Vec::with_capacity(minutes);
    let mut price = start_price;
    let mut drift = 0.0f64;
    for i in 0..minutes {
        if i % 720 == 0 {
            drift = rng.random_range(-0.00025..0.00025);
        }
        let shock: f64 = rng.random_range(-0.0012..0.0012);
        let open = price;
        let close = (open * (1.0 + drift + shock)).max(0.01);
        let wick_up: f64 = rng.random_range(0.0..0.0006);
        let wick_down: f64 = rng.random_range(0.0..0.0006);
        let high = open.max(close) * (1.0 + wick_up);
        let low = open.min(close) * (1.0 - wick_down);
        let volume: f64 = rng.random_range(1.0..100.0);
        // Round to cents so CSV round-trips are exact and readable.
        let r = |v: f64| (v * 100.0).round() / 100.0;
        let (open, close) = (r(open), r(close));
        let candle = Candle {
            timestamp: start_ms + i as i64 * MINUTE_MS,
            open,
            close,
            high: r(high).max(open.max(close)),
            low: r(low).min(open.min(close)),
            volume: (volume * 1000.0).round() / 1000.0,
        };
        price = close;
        out.push(candle);
    }
    out
}

/// Who wrote a series' rows. A series records one source; see [`series_source_note`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandleSource {
    /// Generated by [`synthetic`]: demo and test data, not market prices.
    Synthetic,
    /// Uploaded as CSV (`POST /v1/candles/csv`, `candles import-csv`).
    Csv,
    /// Fetched from the exchange by an import job (Jesse's drivers).
    Import,
}

impl CandleSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Synthetic => "synthetic",
            Self::Csv => "csv",
            Self::Import => "import",
        }
    }
}

/// The series' `source` values beyond [`CandleSource`]: rows of both CSV and
/// imports, and rows stored before sources were recorded.
pub const SOURCE_MIXED: &str = "mixed";
pub const SOURCE_UNKNOWN: &str = "unknown";

/// What a reader of a listing, gap report or result should know about a
/// series' source, when it is anything but market data of one origin.
pub fn series_source_note(source: &str) -> Option<&'static str> {
    match source {
        "synthetic" => Some(
            "DEMO DATA: synthetic candles generated by jesse-mcp, not market prices; results on them say \
             nothing about any market. An exchange import or CSV upload for this exchange and symbol replaces \
             them (the whole synthetic series is deleted first).",
        ),
        SOURCE_UNKNOWN => Some(
            "stored before jesse-mcp recorded where candles come from: may be synthetic; delete the series and \
             import it again to be sure",
        ),
        SOURCE_MIXED => Some("rows from both CSV uploads and exchange imports"),
        _ => None,
    }
}

/// The source of a run over several series: theirs if they agree, else `mixed`
/// (`synthetic` if any is synthetic, so the flag is never lost).
pub fn combined_source<'a>(sources: impl IntoIterator<Item = &'a str>) -> String {
    let mut all: Vec<&str> = sources.into_iter().collect();
    all.sort_unstable();
    all.dedup();
    match all.as_slice() {
        [] => SOURCE_UNKNOWN.into(),
        [one] => (*one).into(),
        many if many.contains(&"synthetic") => "synthetic".into(),
        // Unknown may be synthetic: its warning must not be lost in "mixed".
        many if many.contains(&SOURCE_UNKNOWN) => SOURCE_UNKNOWN.into(),
        _ => SOURCE_MIXED.into(),
    }
}

/// The demo series `make run` and the stdio launcher store on a fresh data dir
/// (`jesse-mcp-api candles demo`): a year of [`synthetic`] candles, labelled
/// `synthetic` wherever it appears.
pub mod demo {
    use super::{Candle, synthetic};

    pub const EXCHANGE: &str = "Binance Perpetual Futures";
    pub const SYMBOL: &str = "BTC-USDT";
    /// 2023-01-01T00:00Z .. 2024-01-01T00:00Z.
    pub const START_MS: i64 = 1_672_531_200_000;
    pub const END_MS: i64 = 1_704_067_200_000;
    pub const START_PRICE: f64 = 40_000.0;
    pub const SEED: u64 = 42;

    pub fn candles() -> Vec<Candle> {
        synthetic(START_MS, END_MS, START_PRICE, SEED)
    }

    /// Labels the demo series `synthetic` if it was stored before sources were
    /// recorded (source `unknown`) and holds rows of the demo generator: read a
    /// few rows at the start of each month and compare. True if relabelled.
    pub async fn settle_unknown(
        store: &crate::store::Store,
    ) -> Result<bool, crate::error::StoreError> {
        if store.series_source(EXCHANGE, SYMBOL).await?.as_deref() != Some(super::SOURCE_UNKNOWN) {
            return Ok(false);
        }
        let demo = candles();
        let mut sampled = Vec::new();
        for month in 0..12 {
            let from = START_MS + month * 30 * 1440 * super::MINUTE_MS;
            sampled.extend(store.candle_page(EXCHANGE, SYMBOL, from, END_MS, 5).await?);
        }
        if !contains_demo_rows(&sampled, &demo) {
            return Ok(false);
        }
        store
            .settle_unknown_source(EXCHANGE, SYMBOL, super::CandleSource::Synthetic)
            .await
    }

    /// Whether any of `stored` (rows read from a series) is exactly a row of the
    /// demo series: the generator's values to the cent, which market data never
    /// repeats at the same minutes.
    pub fn contains_demo_rows(stored: &[Candle], demo: &[Candle]) -> bool {
        stored.iter().any(|row| {
            row.timestamp >= START_MS
                && row.timestamp < END_MS
                && demo
                    .get(((row.timestamp - START_MS) / super::MINUTE_MS) as usize)
                    .is_some_and(|d| d == row)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ms_and_iso_and_reports_first_bad_line() {
        let csv = "timestamp,open,high,low,close,volume\n\
                   1704067200000,1,2,0.5,1.5,10\n\
                   2024-01-01T00:01:00Z,1.5,2,1,1.2,3\n\
                   1704067230000,1,2,0.5,1.5,10\n\
                   1704067320000,1,abc,0.5,1.5,10\n";
        let parsed = parse_csv(csv.as_bytes()).unwrap();
        assert_eq!(parsed.candles.len(), 2);
        assert_eq!(parsed.candles[1].timestamp, 1_704_067_260_000);
        assert_eq!(parsed.candles[1].close, 1.2);
        assert_eq!(parsed.rejected, 2);
        let first = parsed.first_rejection.unwrap();
        assert_eq!(first.line, 4);
        assert!(first.reason.contains("minute boundary"), "{}", first.reason);
    }

    #[test]
    fn header_any_order_and_missing_columns() {
        let parsed =
            parse_csv(b"close,open,high,low,volume,timestamp\n2,1,3,0.5,7,60000\n").unwrap();
        assert_eq!(
            parsed.candles[0],
            Candle {
                timestamp: 60_000,
                open: 1.0,
                close: 2.0,
                high: 3.0,
                low: 0.5,
                volume: 7.0
            }
        );
        assert_eq!(
            parse_csv(b"timestamp,open\n").unwrap_err(),
            CsvError::BadHeader("high,low,close,volume".into())
        );
        assert_eq!(parse_csv(b"\n\n").unwrap_err(), CsvError::Empty);
    }

    #[test]
    fn rejects_duplicates_and_inconsistent_prices() {
        let csv = "timestamp,open,high,low,close,volume\n60000,1,2,0.5,1.5,1\n60000,1,2,0.5,1.5,1\n120000,1,1.2,0.5,1.5,1\n";
        let parsed = parse_csv(csv.as_bytes()).unwrap();
        assert_eq!(parsed.candles.len(), 1);
        assert_eq!(parsed.rejected, 2);
    }

    #[test]
    fn crlf_line_ends_and_a_byte_order_mark() {
        let csv = "\u{feff}timestamp,open,high,low,close,volume\r\n\
                   60000,1,2,0.5,1.5,10\r\n\
                   \r\n\
                   120000,1,2,0.5,1.5,11\r\n";
        let parsed = parse_csv(csv.as_bytes()).unwrap();
        assert_eq!(parsed.rejected, 0, "{:?}", parsed.first_rejection);
        assert_eq!(parsed.candles.len(), 2);
        assert_eq!(parsed.candles[1].volume, 11.0);
        // A BOM before a first data field that is not the header's is still only a BOM.
        let parsed = parse_csv(
            "\u{feff}\"timestamp\",open,high,low,close,volume\n60000,1,2,0.5,1.5,1\n".as_bytes(),
        )
        .unwrap();
        assert_eq!(parsed.candles.len(), 1);
    }

    #[test]
    fn quoted_fields_are_read_as_rfc_4180_says() {
        let csv = "\"timestamp\",\"open\",\"high\",\"low\",\"close\",\"volume\"\n\
                   \"60000\",\"1\", \"2\" ,0.5,1.5,10\n\
                   \"2024-01-01T00:01:00Z\",1,2,0.5,1.5,10,\"a note, with a comma and \"\"quotes\"\"\"\n";
        let parsed = parse_csv(csv.as_bytes()).unwrap();
        assert_eq!(parsed.rejected, 0, "{:?}", parsed.first_rejection);
        assert_eq!(parsed.candles.len(), 2);
        assert_eq!(parsed.candles[0].high, 2.0);
        assert_eq!(
            split_fields("\"a,b\",\"c\"\"d\",,e").unwrap(),
            ["a,b", "c\"d", "", "e"]
        );
        assert_eq!(split_fields("\"\"").unwrap(), [""]);
    }

    #[test]
    fn unreadable_lines_are_rejected_with_their_number() {
        let csv = "timestamp,open,high,low,close,volume\n\
                   60000,1,2,0.5,1.5,10\n\
                   \"120000,1,2,0.5,1.5,10\n\
                   180000,\"1\"x,2,0.5,1.5,10\n\
                   240000,1\"5,2,0.5,1.5,10\n\
                   300000,1,2,0.5,1.5,10\r300000,1,2,0.5,1.5,10\n\
                   360000,\"1,5\",2,0.5,1.5,10\n\
                   420000,1,2,0.5,1.5,10\n";
        let parsed = parse_csv(csv.as_bytes()).unwrap();
        assert_eq!(parsed.candles.len(), 2);
        assert_eq!(parsed.rejected, 5);
        let first = parsed.first_rejection.unwrap();
        assert_eq!(first.line, 3);
        assert!(first.reason.contains("does not close"), "{}", first.reason);
        let reason = |line: &str| split_fields(line).unwrap_err();
        assert!(reason("1,\"2\"x").contains("after the closing quote of field 2"));
        assert!(reason("1,2\"3").contains("quote inside unquoted field 2"));
        assert!(reason("1,2\r3").contains("carriage return"));
        // A quoted number with a thousands separator is one field, and not a number.
        let parsed =
            parse_csv(b"timestamp,open,high,low,close,volume\n60000,\"1,5\",2,0.5,1.5,10\n")
                .unwrap();
        assert_eq!(
            parsed.first_rejection.unwrap().reason,
            "open '1,5' is not a number"
        );
        // A header that cannot be read names its line.
        let header = parse_csv(b"\n\"timestamp,open,high,low,close,volume\n").unwrap_err();
        assert!(header.to_string().contains("line 2"), "{header}");
    }

    #[test]
    fn synthetic_is_valid_and_reproducible() {
        let a = synthetic(0, 3 * 1440 * MINUTE_MS, 100.0, 7);
        assert_eq!(a.len(), 3 * 1440);
        assert!(a.iter().all(|c| c.defect().is_none()));
        assert_eq!(a, synthetic(0, 3 * 1440 * MINUTE_MS, 100.0, 7));
        let mut csv = Vec::new();
        write_csv(&a, &mut csv).unwrap();
        assert_eq!(parse_csv(&csv).unwrap().candles, a);
    }

    #[test]
    fn demo_rows_are_recognised_and_sources_combine() {
        let demo = demo::candles();
        assert_eq!(demo.len(), 365 * 1440);
        let sample = [demo[0], demo[200_000]];
        assert!(demo::contains_demo_rows(&sample, &demo));
        let mut moved = demo[5];
        moved.close += 0.01;
        let other = synthetic(
            demo::START_MS,
            demo::START_MS + 60 * MINUTE_MS,
            40_000.0,
            43,
        );
        assert!(!demo::contains_demo_rows(&[moved], &demo));
        assert!(!demo::contains_demo_rows(&other[1..], &demo));
        assert_eq!(combined_source(["import", "import"]), "import");
        assert_eq!(combined_source(["import", "csv"]), SOURCE_MIXED);
        assert_eq!(combined_source(["csv", "synthetic"]), "synthetic");
        assert_eq!(combined_source([]), SOURCE_UNKNOWN);
        assert_eq!(combined_source(["import", "unknown"]), SOURCE_UNKNOWN);
        assert!(
            series_source_note("synthetic")
                .unwrap()
                .starts_with("DEMO DATA")
        );
        assert!(series_source_note("import").is_none());
    }
}
