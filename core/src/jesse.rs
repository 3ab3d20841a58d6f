//! Static facts about the pinned Jesse release (3.5.3) that the API needs to
//! validate requests without starting Python. Checked against `jesse.info` and
//! `jesse.enums.timeframes` of that release; the worker reports the version it
//! actually runs, and a mismatch is logged at start-up.

/// The Jesse version the venv pins (`ops/requirements.lock`).
pub const PINNED_VERSION: &str = "3.5.3";

/// `jesse.info.backtesting_exchanges` in Jesse 3.5.3.
pub const BACKTESTING_EXCHANGES: &[&str] = &[
    "Binance Perpetual Futures",
    "Binance Spot",
    "Binance US Spot",
    "Bitfinex Spot",
    "Bybit Spot",
    "Bybit USDC Perpetual",
    "Bybit USDT Perpetual",
    "Coinbase Spot",
    "Custom Data",
    "Gate USDT Perpetual",
    "Kraken Pro Futures",
    "KuCoin Spot",
    "KuCoin USDT Perpetual",
    "Massive Currencies",
    "Massive Futures",
    "Massive Indices",
    "Massive Stocks",
];

/// Sources Jesse 3.5.3 can import candles from (`import_candles_mode.drivers`);
/// a superset of the backtesting exchanges (testnets and some venues are import-only).
pub const IMPORT_EXCHANGES: &[&str] = &[
    "Apex Omni Perpetual",
    "Apex Omni Perpetual Testnet",
    "Binance Perpetual Futures",
    "Binance Perpetual Futures Testnet",
    "Binance Spot",
    "Binance US Spot",
    "Bitfinex Spot",
    "Bybit Spot",
    "Bybit Spot Testnet",
    "Bybit USDC Perpetual",
    "Bybit USDC Perpetual Testnet",
    "Bybit USDT Perpetual",
    "Bybit USDT Perpetual Testnet",
    "Coinbase Spot",
    "Gate Spot",
    "Gate USDT Perpetual",
    "Hyperliquid Perpetual",
    "Hyperliquid Perpetual Testnet",
    "Kraken Pro Futures",
    "Kraken Pro Futures Testnet",
    "Kraken Pro Spot",
    "KuCoin Spot",
    "KuCoin USDT Perpetual",
    "Lighter Perpetual",
    "Lighter Perpetual Testnet",
];

pub fn is_import_exchange(exchange: &str) -> bool {
    IMPORT_EXCHANGES.contains(&exchange)
}

/// Timeframes Jesse 3.5.3 accepts, with their length in minutes.
pub const TIMEFRAMES: &[(&str, i64)] = &[
    ("1m", 1),
    ("3m", 3),
    ("5m", 5),
    ("15m", 15),
    ("30m", 30),
    ("45m", 45),
    ("1h", 60),
    ("2h", 120),
    ("3h", 180),
    ("4h", 240),
    ("6h", 360),
    ("8h", 480),
    ("12h", 720),
    ("1D", 1440),
    ("3D", 4320),
    ("1W", 10080),
    ("1M", 43200),
];

pub fn timeframe_minutes(timeframe: &str) -> Option<i64> {
    TIMEFRAMES
        .iter()
        .find(|(name, _)| *name == timeframe)
        .map(|(_, minutes)| *minutes)
}

pub fn is_backtesting_exchange(exchange: &str) -> bool {
    BACKTESTING_EXCHANGES.contains(&exchange)
}

/// Strategy names as Jesse lays them out on disk (`<Name>/__init__.py`),
/// restricted so a name can never leave the strategies directory.
pub fn is_valid_strategy_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && (bytes[0].is_ascii_alphabetic() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

pub const STRATEGY_NAME_RULE: &str = "strategy names must match ^[A-Za-z_][A-Za-z0-9_]{0,63}$ (letters, digits, underscore; no path separators)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategy_names_cannot_escape() {
        assert!(is_valid_strategy_name("SmaCross"));
        assert!(is_valid_strategy_name("_x1"));
        for bad in ["", "..", "a/b", "a-b", "1abc", "ä", &"a".repeat(65)] {
            assert!(!is_valid_strategy_name(bad), "{bad:?} accepted");
        }
    }

    #[test]
    fn timeframes_known() {
        assert_eq!(timeframe_minutes("1h"), Some(60));
        assert_eq!(timeframe_minutes("1D"), Some(1440));
        assert_eq!(timeframe_minutes("7m"), None);
    }
}
