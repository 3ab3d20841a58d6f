//! The static strategy checker reads any source text (users and agents send
//! it) without panicking, with or without an expected class name.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(source) = std::str::from_utf8(data) {
        let _ = jesse_mcp_core::strategy_static::validate_static(None, source);
        let _ = jesse_mcp_core::strategy_static::validate_static(Some("Fuzzed"), source);
    }
});
