//! Wall-clock time as an input: the driver reads the system clock once and
//! hands proto-core an anchor, so certificate, token and packet timestamps
//! never need a clock read inside a state machine.

use std::time::{Duration, Instant};

/// Pairs a monotonic instant with the wall-clock time at that instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WallClock {
    /// A monotonic instant.
    pub at: Instant,
    /// Microseconds since the Unix epoch at `at`.
    pub unix_us: u64,
}

impl WallClock {
    /// The anchor `(at, unix_us)`.
    pub fn new(at: Instant, unix_us: u64) -> Self {
        Self { at, unix_us }
    }

    /// Wall-clock microseconds at `now`, assuming no clock step since the anchor.
    pub fn unix_us(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.at);
        self.unix_us.saturating_add(duration_us(since))
    }

    /// The instant at wall-clock microseconds `unix_us` (the anchor for
    /// times before it).
    pub fn instant(&self, unix_us: u64) -> Instant {
        self.at + Duration::from_micros(unix_us.saturating_sub(self.unix_us))
    }
}

/// A duration in whole microseconds, saturating.
pub fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
