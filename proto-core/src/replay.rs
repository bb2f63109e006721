//! Replay protection for control packets: a bounded cache of recently seen
//! (timestamp, transaction id) pairs plus a time window on the sender's
//! timestamps, so a captured packet is refused both soon after and long after.

use std::collections::BTreeSet;

/// Why a control packet was refused as a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Replay {
    /// Already seen.
    #[error("duplicate transaction")]
    Duplicate,
    /// Older than the window (or than what the bounded cache still remembers).
    #[error("timestamp outside the replay window")]
    TooOld,
}

/// Remembers what one key's sender already sent.
#[derive(Debug, Clone)]
pub struct ReplayCache {
    window_us: u64,
    capacity: usize,
    newest_us: u64,
    /// Everything at or below this timestamp is refused: it fell out of the
    /// window or was evicted from the bounded cache.
    floor_us: Option<u64>,
    seen: BTreeSet<(u64, u64)>,
}

impl ReplayCache {
    /// A cache that accepts timestamps up to `window_us` behind the newest one
    /// seen, remembering at most `capacity` transactions.
    pub fn new(window_us: u64, capacity: usize) -> Self {
        Self {
            window_us,
            capacity: capacity.max(1),
            newest_us: 0,
            floor_us: None,
            seen: BTreeSet::new(),
        }
    }

    /// Accepts a fresh (timestamp, txid) and remembers it, or refuses a replay.
    ///
    /// # Errors
    /// [`Replay`] when the packet must be dropped.
    pub fn check(&mut self, timestamp_us: u64, txid: u64) -> Result<(), Replay> {
        if self.floor_us.is_some_and(|floor| timestamp_us <= floor)
            || timestamp_us < self.newest_us.saturating_sub(self.window_us)
        {
            return Err(Replay::TooOld);
        }
        if !self.seen.insert((timestamp_us, txid)) {
            return Err(Replay::Duplicate);
        }
        self.newest_us = self.newest_us.max(timestamp_us);
        let horizon = self.newest_us.saturating_sub(self.window_us);
        while let Some(&(ts, _)) = self.seen.first() {
            if ts >= horizon && self.seen.len() <= self.capacity {
                break;
            }
            self.seen.pop_first();
            self.floor_us = Some(self.floor_us.map_or(ts, |floor| floor.max(ts)));
        }
        Ok(())
    }

    /// How many transactions are remembered (bounded by the capacity).
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn duplicates_and_stale_packets_are_refused() {
        let mut cache = ReplayCache::new(1_000, 16);
        assert_eq!(cache.check(10_000, 1), Ok(()));
        assert_eq!(cache.check(10_000, 1), Err(Replay::Duplicate));
        assert_eq!(cache.check(10_000, 2), Ok(()));
        assert_eq!(cache.check(12_000, 3), Ok(()));
        // 10_000 is now more than a window behind 12_000.
        assert_eq!(cache.check(10_000, 1), Err(Replay::TooOld));
        assert_eq!(cache.check(10_500, 9), Err(Replay::TooOld));
        assert_eq!(cache.check(11_500, 9), Ok(()));
    }

    #[test]
    fn eviction_raises_the_floor_instead_of_forgetting() {
        let mut cache = ReplayCache::new(u64::MAX, 4);
        for i in 0..10 {
            assert_eq!(cache.check(100 + i, i), Ok(()));
        }
        assert_eq!(cache.len(), 4);
        // Evicted entries can not come back as fresh.
        assert_eq!(cache.check(100, 0), Err(Replay::TooOld));
        assert_eq!(cache.check(105, 5), Err(Replay::TooOld));
        assert_eq!(cache.check(109, 9), Err(Replay::Duplicate));
    }

    proptest! {
        #[test]
        fn nothing_is_accepted_twice_and_the_cache_stays_bounded(
            packets in prop::collection::vec((0u64..5_000, 0u64..8), 1..400),
            capacity in 1usize..64,
        ) {
            let mut cache = ReplayCache::new(2_000, capacity);
            let mut accepted = std::collections::BTreeSet::new();
            for (ts, txid) in packets {
                if cache.check(ts, txid).is_ok() {
                    prop_assert!(accepted.insert((ts, txid)), "accepted twice: {ts} {txid}");
                }
                prop_assert!(cache.len() <= capacity);
            }
        }
    }
}
