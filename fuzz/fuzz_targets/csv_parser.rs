//! Candle CSV uploads: any bytes parse to candles or a `CsvError`, never a
//! panic; every candle accepted is well formed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = jesse_mcp_core::candles::parse_csv(data) {
        for candle in &parsed.candles {
            assert!(
                candle.defect().is_none(),
                "accepted a defective candle: {candle:?}"
            );
        }
    }
});
