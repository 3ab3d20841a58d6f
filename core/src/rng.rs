//! The one random generator every seeded statistic uses: SplitMix64 (Steele,
//! Lea, Flood 2014), chosen because it is tiny, fast, passes BigCrush for this
//! use, and is specified exactly, so a scenario drawn here can be redrawn by
//! an independent implementation in any language (the tests do, in Python).
//! A crate's generator could change its stream between versions; this cannot.

/// SplitMix64 with a 64-bit state.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), without modulo bias: draws below the largest
    /// multiple of n are kept.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_stream() {
        // SplitMix64 from seed 0: the published reference values
        // (e.g. the test vectors of Vigna's splitmix64.c).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(r.next_u64(), 0x06C4_5D18_8009_454F);
        let mut r = SplitMix64::new(7);
        let draws: Vec<u64> = (0..1000).map(|_| r.below(10)).collect();
        assert!(draws.iter().all(|d| *d < 10));
        for digit in 0..10 {
            let n = draws.iter().filter(|d| **d == digit).count();
            assert!((60..140).contains(&n), "{digit}: {n}");
        }
    }
}
