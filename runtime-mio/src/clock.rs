//! The operating system's clocks, read once per use and handed to proto-core
//! as inputs.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use transitloom_proto_core::driver::Clock;
use transitloom_proto_core::time::{duration_us, WallClock};

/// The monotonic system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A wall-clock anchor for now: the monotonic instant paired with the system
/// time in microseconds since the Unix epoch (0 if the clock is before it).
pub fn wall_clock_now() -> WallClock {
    let at = Instant::now();
    let unix_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, duration_us);
    WallClock::new(at, unix_us)
}

/// The earlier of two optional deadlines (`None` is "never").
pub fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_anchor_is_after_2020() {
        let anchor = wall_clock_now();
        assert!(anchor.unix_us > 1_577_836_800_000_000);
        assert!(
            anchor.unix_us(anchor.at + std::time::Duration::from_micros(5)) >= anchor.unix_us + 5
        );
    }
}
