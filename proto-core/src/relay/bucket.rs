//! A token bucket in integer arithmetic, so a relay path's rate limit is
//! exact and deterministic.

use std::time::Instant;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// A path's rate limit: a sustained rate and the burst allowed above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained bytes per second.
    pub bytes_per_s: u64,
    /// Bytes that may pass at once after a quiet spell. Raised to at least
    /// one maximal UDP datagram, so every datagram can pass eventually.
    pub burst_bytes: u64,
}

impl RateLimit {
    /// `bytes_per_s` with a burst of 10 ms of it (at least one datagram).
    pub fn new(bytes_per_s: u64) -> Self {
        Self {
            bytes_per_s,
            burst_bytes: bytes_per_s / 100,
        }
    }

    fn burst(&self) -> u64 {
        self.burst_bytes.max(crate::driver::MAX_DATAGRAM as u64)
    }
}

/// Tokens of one direction of one path. Tokens are kept in byte-nanoseconds
/// (bytes × 10⁹) so refills of a few nanoseconds are not lost to rounding.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    limit: Option<RateLimit>,
    tokens: u128,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket (or no limit at all).
    pub(crate) fn new(limit: Option<RateLimit>) -> Self {
        Self {
            limit,
            tokens: 0,
            last: None,
        }
    }

    /// Takes `bytes` tokens at `now`; false (and nothing taken) when there
    /// are not enough.
    pub(crate) fn take(&mut self, now: Instant, bytes: usize) -> bool {
        let Some(limit) = self.limit else {
            return true;
        };
        let cap = u128::from(limit.burst()) * NANOS_PER_SEC;
        self.tokens = match self.last {
            None => cap,
            Some(last) => {
                let elapsed = now.saturating_duration_since(last).as_nanos();
                self.tokens
                    .saturating_add(elapsed.saturating_mul(u128::from(limit.bytes_per_s)))
                    .min(cap)
            }
        };
        self.last = Some(now);
        let need = bytes as u128 * NANOS_PER_SEC;
        if self.tokens >= need {
            self.tokens -= need;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let t0 = crate::test_epoch();
        let limit = RateLimit {
            bytes_per_s: 100_000,
            burst_bytes: 70_000,
        };
        let mut bucket = TokenBucket::new(Some(limit));
        // The full burst at once, then nothing.
        for _ in 0..70 {
            assert!(bucket.take(t0, 1_000));
        }
        assert!(!bucket.take(t0, 1_000));
        // 10 ms at 100 kB/s refills exactly 1,000 bytes.
        let t1 = t0 + Duration::from_millis(10);
        assert!(bucket.take(t1, 1_000));
        assert!(!bucket.take(t1, 1));
        // Refills of a microsecond add up instead of rounding to nothing.
        let mut now = t1;
        for _ in 0..9 {
            now += Duration::from_micros(1);
            assert!(!bucket.take(now, 1));
        }
        now += Duration::from_micros(1);
        assert!(bucket.take(now, 1), "ten 1 µs refills make one byte");
    }

    #[test]
    fn the_burst_never_falls_below_one_datagram() {
        let t0 = crate::test_epoch();
        let mut bucket = TokenBucket::new(Some(RateLimit::new(1_000)));
        assert!(bucket.take(t0, crate::driver::MAX_DATAGRAM));
        assert!(!bucket.take(t0, 1));
    }

    #[test]
    fn no_limit_passes_everything() {
        let t0 = crate::test_epoch();
        let mut bucket = TokenBucket::new(None);
        for _ in 0..1_000 {
            assert!(bucket.take(t0, 65_535));
        }
    }
}
