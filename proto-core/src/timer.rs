//! Named timers: each machine declares an enum of the reasons it wakes up,
//! and keeps their deadlines in a [`TimerTable`], so a trace can say why a
//! timeout was set.

use std::collections::BTreeMap;
use std::time::Instant;

/// Deadlines keyed by a timer name (an enum of the owning machine).
#[derive(Debug, Clone)]
pub struct TimerTable<T: Ord + Copy> {
    deadlines: BTreeMap<T, Instant>,
}

impl<T: Ord + Copy> Default for TimerTable<T> {
    fn default() -> Self {
        Self {
            deadlines: BTreeMap::new(),
        }
    }
}

impl<T: Ord + Copy> TimerTable<T> {
    /// Arms (or re-arms) `timer` to fire at `at`.
    pub fn set(&mut self, timer: T, at: Instant) {
        self.deadlines.insert(timer, at);
    }

    /// Disarms `timer`.
    pub fn stop(&mut self, timer: T) {
        self.deadlines.remove(&timer);
    }

    /// When `timer` fires, if armed.
    pub fn get(&self, timer: T) -> Option<Instant> {
        self.deadlines.get(&timer).copied()
    }

    /// The earliest deadline of all armed timers.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.values().min().copied()
    }

    /// Removes and returns one timer due at `now`, earliest first (ties in
    /// name order), so callers loop until `None`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<T> {
        let (&timer, _) = self
            .deadlines
            .iter()
            .filter(|(_, &at)| at <= now)
            .min_by_key(|(_, &at)| at)?;
        self.deadlines.remove(&timer);
        Some(timer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Name {
        Probe,
        Keepalive,
    }

    #[test]
    fn fires_due_timers_earliest_first() {
        let t0 = crate::test_epoch();
        let mut table = TimerTable::default();
        table.set(Name::Keepalive, t0 + Duration::from_millis(5));
        table.set(Name::Probe, t0 + Duration::from_millis(10));
        assert_eq!(table.next_deadline(), Some(t0 + Duration::from_millis(5)));
        assert_eq!(table.pop_expired(t0), None);
        let later = t0 + Duration::from_millis(20);
        assert_eq!(table.pop_expired(later), Some(Name::Keepalive));
        assert_eq!(table.pop_expired(later), Some(Name::Probe));
        assert_eq!(table.pop_expired(later), None);
        assert_eq!(table.next_deadline(), None);
    }
}
