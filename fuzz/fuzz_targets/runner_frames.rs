//! The worker ↔ runner pipe protocol: any byte stream decodes to frames, run
//! requests and candle rows, or to an error, never a panic or an allocation
//! the stream's own length does not back.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../worker/src/protocol.rs"]
#[allow(dead_code)]
mod protocol;

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    while let Ok(Some(frame)) = protocol::read_frame(&mut input) {
        let Ok(request) = serde_json::from_slice::<protocol::RunRequest>(&frame) else {
            continue;
        };
        for series in &request.series {
            if protocol::read_rows(&mut input, series.rows).is_err()
                || protocol::read_rows(&mut input, series.warmup_rows).is_err()
            {
                return;
            }
        }
    }
});
