//! The coordinator's handshake admission limit: a bound on how many new
//! sessions start per second, so a storm of reconnecting nodes (after a
//! coordinator restart) is spread over time instead of starving every
//! session of CPU. Excess attempts are refused before any TLS work; the
//! node's jittered backoff (DESIGN §5) spreads its retries.
//!
//! A generic cell rate algorithm: integer arithmetic on virtual time, no
//! counters to refill, and the same answers for the same arrival times.

use std::time::{Duration, Instant};

/// How many new sessions a coordinator starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimit {
    /// Sustained rate: new sessions per second (at least 1).
    pub per_s: u32,
    /// How many may start back to back after a quiet spell (at least 1).
    pub burst: u32,
}

impl HandshakeLimit {
    /// The default sustained rate, per second.
    pub const DEFAULT_PER_S: u32 = 500;

    /// `per_s` sessions per second, with a burst of one second's worth.
    pub fn per_second(per_s: u32) -> Self {
        Self {
            per_s,
            burst: per_s,
        }
    }

    /// The spacing between sessions at the sustained rate.
    fn interval(&self) -> Duration {
        Duration::from_secs(1) / self.per_s.max(1)
    }
}

impl Default for HandshakeLimit {
    /// [`HandshakeLimit::DEFAULT_PER_S`] per second, one second's burst.
    fn default() -> Self {
        Self::per_second(Self::DEFAULT_PER_S)
    }
}

/// The limit's state: when the next session is due at the sustained rate.
#[derive(Debug, Clone)]
pub(crate) struct HandshakeBudget {
    limit: HandshakeLimit,
    /// The theoretical arrival time of the next session; `None` while no
    /// session started yet.
    due: Option<Instant>,
}

impl HandshakeBudget {
    pub(crate) fn new(limit: HandshakeLimit) -> Self {
        Self { limit, due: None }
    }

    /// How far ahead of the sustained rate the burst may run.
    fn tolerance(&self) -> Duration {
        self.limit.interval() * self.limit.burst.max(1).saturating_sub(1)
    }

    /// Whether a session may start at `now`.
    pub(crate) fn available(&self, now: Instant) -> bool {
        self.due
            .is_none_or(|due| due <= now || due - now <= self.tolerance())
    }

    /// A session started at `now`.
    pub(crate) fn take(&mut self, now: Instant) {
        let from = self.due.map_or(now, |due| due.max(now));
        self.due = Some(from + self.limit.interval());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(budget: &mut HandshakeBudget, now: Instant, tries: u32) -> u32 {
        let mut n = 0;
        for _ in 0..tries {
            if budget.available(now) {
                budget.take(now);
                n += 1;
            }
        }
        n
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let t0 = crate::test_epoch();
        let mut budget = HandshakeBudget::new(HandshakeLimit {
            per_s: 100,
            burst: 20,
        });
        assert_eq!(admitted(&mut budget, t0, 1_000), 20);
        // Each further 10 ms frees one more.
        assert_eq!(admitted(&mut budget, t0 + Duration::from_millis(10), 50), 1);
        assert_eq!(admitted(&mut budget, t0 + Duration::from_millis(15), 50), 0);
        // Over one second of steady attempts, about `per_s` get in.
        let mut total = 0;
        for ms in 20..1_020 {
            total += admitted(&mut budget, t0 + Duration::from_millis(ms), 5);
        }
        assert!((99..=101).contains(&total), "{total}");
    }

    #[test]
    fn a_quiet_spell_refills_only_the_burst() {
        let t0 = crate::test_epoch();
        let mut budget = HandshakeBudget::new(HandshakeLimit::per_second(10));
        assert_eq!(admitted(&mut budget, t0, 100), 10);
        let later = t0 + Duration::from_secs(3_600);
        assert_eq!(admitted(&mut budget, later, 100), 10);
    }
}
