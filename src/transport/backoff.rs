//! Exponential reconnect backoff with deterministic jitter.

use std::time::Duration;

/// Default first delay after a failure.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(50);

/// Default longest delay between attempts.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Jitter removes up to `JITTER_STEPS / JITTER_SCALE` (a quarter) of each delay, so peers
/// that lost a node together do not all redial in the same instant.
const JITTER_STEPS: u64 = 1024;
const JITTER_SCALE: u32 = 4096;

/// Doubling stops after this many steps; `2^31` times any sane base already exceeds the cap.
const MAX_DOUBLINGS: u32 = 31;

/// Delays between reconnect attempts: `base`, doubling per failure up to `max`, each
/// shortened by a jitter of up to a quarter drawn from a seeded generator.
///
/// Pure and deterministic: the same seed gives the same sequence, which keeps the
/// simulator reproducible. Seed it with something that differs per (node, peer) pair.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    /// A backoff from [`DEFAULT_BACKOFF_BASE`] to [`DEFAULT_BACKOFF_MAX`].
    pub fn new(seed: u64) -> Self {
        Self::with_bounds(DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX, seed)
    }

    /// A backoff starting at `base` and capped at `max` (raised to `base` if smaller).
    pub fn with_bounds(base: Duration, max: Duration, seed: u64) -> Self {
        Self { base, max: max.max(base), attempt: 0, rng: seed }
    }

    /// The delay to wait before the next attempt; each call lengthens the following one.
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.nominal();
        self.attempt = self.attempt.saturating_add(1);
        // Scale down before multiplying so even a huge `nominal` cannot overflow.
        let steps = (self.next_random() % JITTER_STEPS) as u32;
        let jitter = (nominal / JITTER_SCALE).saturating_mul(steps);
        nominal.saturating_sub(jitter)
    }

    /// Starts over from `base`, after a connection succeeded.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The un-jittered delay for the current attempt.
    fn nominal(&self) -> Duration {
        let factor = 1u32 << self.attempt.min(MAX_DOUBLINGS);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// SplitMix64: tiny, fast, and good enough to spread reconnects.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Checks `got` lies within the jitter window below `nominal`.
    fn assert_jittered(got: Duration, nominal: Duration) {
        assert!(got <= nominal, "{got:?} above {nominal:?}");
        assert!(got >= nominal * 3 / 4, "{got:?} below 3/4 of {nominal:?}");
    }

    #[test]
    fn doubles_then_caps() {
        let mut b = Backoff::new(7);
        for nominal in [50, 100, 200, 400, 800, 1600, 2000, 2000, 2000] {
            assert_jittered(b.next_delay(), ms(nominal));
        }
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(7);
        for _ in 0..5 {
            b.next_delay();
        }
        b.reset();
        assert_jittered(b.next_delay(), ms(50));
    }

    #[test]
    fn same_seed_same_sequence_different_seed_differs() {
        let seq = |seed| {
            let mut b = Backoff::new(seed);
            (0..10).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(seq(1), seq(1));
        assert_ne!(seq(1), seq(2));
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut b = Backoff::with_bounds(Duration::from_secs(1), Duration::MAX, 3);
        for _ in 0..200 {
            b.next_delay();
        }
        assert!(b.next_delay() >= Duration::from_secs(1 << 31) * 3 / 4);
    }

    #[test]
    fn zero_base_stays_zero() {
        let mut b = Backoff::with_bounds(Duration::ZERO, ms(10), 3);
        assert_eq!(b.next_delay(), Duration::ZERO);
    }
}
