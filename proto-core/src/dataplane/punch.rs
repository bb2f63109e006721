//! Coordinated, paced hole punching on the node (DESIGN §7).
//!
//! New peer candidates are not probed at once: they wait for the
//! coordinator's `Punch`, which names one moment for both ends, so each
//! NAT sees its own host's packet towards the peer before the peer's
//! arrives (a NAT that keeps an entry for an unsolicited packet would
//! otherwise move the host's own first packet to another outside port).
//! A coordinator that never sends one (an older version) costs
//! [`PunchConfig::wait`]. From then on the unvalidated candidate pairs
//! are probed one after the other, [`PunchConfig::pace`] apart and at most
//! [`PunchConfig::max_probes_per_s`] a second per association, instead of
//! in one burst; active paths and relay paths are pinged unpaced.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::id::UplinkId;

/// A `Punch` time further ahead than this is taken for a clock that
/// disagrees with the coordinator's, and the punch starts on receipt.
pub const PUNCH_SKEW_LIMIT: Duration = Duration::from_secs(2);

/// How candidate probing is spread out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PunchConfig {
    /// The gap between two candidate probes of one association.
    pub pace: Duration,
    /// At most this many candidate probes per association in any second.
    pub max_probes_per_s: u32,
    /// How long new candidates wait for the coordinator's `Punch` before
    /// they are probed anyway.
    pub wait: Duration,
    /// Birthday probing towards or from a hard NAT (`None`: off).
    pub birthday: Option<BirthdayConfig>,
}

impl Default for PunchConfig {
    /// 5 ms apart, 100 a second, 500 ms for the punch, no birthday
    /// probing.
    fn default() -> Self {
        Self {
            pace: Duration::from_millis(5),
            max_probes_per_s: 100,
            wait: Duration::from_millis(500),
            birthday: None,
        }
    }
}

/// Bounded birthday probing (DESIGN §7's opt-in for one hard side), see
/// `dataplane/birthday.rs`. Both ends must have it on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BirthdayConfig {
    /// On a hard side: temporary sockets opened, each of which gets its
    /// own outside port towards the peer.
    pub sockets: u16,
    /// On the easy side: probes to random ports of the hard side's
    /// address, per attempt.
    pub probes: u32,
    /// At most this many birthday probes (easy side) or socket pings
    /// (hard side) per second.
    pub rate_per_s: u32,
    /// How long after the punch without a direct path an attempt starts.
    pub after: Duration,
    /// How long an attempt lasts (the hard side's sockets stay open).
    pub lifetime: Duration,
}

impl Default for BirthdayConfig {
    /// 256 sockets, 2,048 probes at 250 a second, starting 1 s after the
    /// punch and lasting 15 s: all probes go within about 8 s, with a
    /// 99.97 % chance against a NAT that draws from the whole port range.
    fn default() -> Self {
        Self {
            sockets: 256,
            probes: 2_048,
            rate_per_s: 250,
            after: Duration::from_secs(1),
            lifetime: Duration::from_secs(15),
        }
    }
}

/// One association's punch and pacing state.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pacer {
    /// New candidates are held until then (the punch, or the fallback).
    pub(crate) hold_until: Option<Instant>,
    /// Candidate pairs waiting for their probe, in order.
    pub(crate) queue: VecDeque<(UplinkId, SocketAddr)>,
    /// When the last probes went out, at most `max_probes_per_s` of
    /// them: the cap holds over any one-second window.
    recent: VecDeque<Instant>,
    /// When the last paced probe went out.
    last: Option<Instant>,
    /// Punches taken from the coordinator.
    pub(crate) punches: u64,
    /// Candidate probes sent.
    pub(crate) sent: u64,
}

impl Pacer {
    /// Whether new candidates still wait for the punch at `now`.
    pub(crate) fn holding(&self, now: Instant) -> bool {
        self.hold_until.is_some_and(|at| now < at)
    }

    /// Holds new candidates until `now + wait`, unless a punch is due
    /// later already.
    pub(crate) fn hold(&mut self, now: Instant, wait: Duration) {
        let until = now + wait;
        if self.hold_until.is_none_or(|at| at < until) {
            self.hold_until = Some(until);
        }
    }

    /// Queues a pair for a probe unless it waits already.
    pub(crate) fn enqueue(&mut self, key: (UplinkId, SocketAddr)) {
        if !self.queue.contains(&key) {
            self.queue.push_back(key);
        }
    }

    /// When the next paced probe may go: `pace` after the last, and a
    /// second after the probe `max_probes_per_s` back.
    pub(crate) fn next_at(&self, now: Instant, config: &PunchConfig) -> Instant {
        let mut at = self.last.map_or(now, |last| (last + config.pace).max(now));
        let cap = config.max_probes_per_s.max(1) as usize;
        if self.recent.len() >= cap {
            let oldest = self.recent[self.recent.len() - cap];
            at = at.max(oldest + Duration::from_secs(1));
        }
        at
    }

    /// Counts a probe sent at `now`; remembers no more than `cap` of them.
    pub(crate) fn sent(&mut self, now: Instant, cap: u32) {
        self.recent.push_back(now);
        while self.recent.len() > cap.max(1) as usize {
            self.recent.pop_front();
        }
        self.last = Some(now);
        self.sent += 1;
    }
}

/// The instant of a punch at `at_unix_ms` by `wall`: at once when it is
/// past, or so far ahead that the clocks must disagree.
pub(crate) fn start_at(now: Instant, at_unix_ms: u64, wall: &crate::time::WallClock) -> Instant {
    let at = wall.instant(at_unix_ms.saturating_mul(1_000));
    if at <= now || at > now + PUNCH_SKEW_LIMIT {
        now
    } else {
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::WallClock;

    fn key(port: u16) -> (UplinkId, SocketAddr) {
        (UplinkId(0), SocketAddr::from(([192, 0, 2, 1], port)))
    }

    #[test]
    fn probes_keep_the_pace_and_the_cap() {
        let t0 = crate::test_epoch();
        let config = PunchConfig {
            pace: Duration::from_millis(5),
            max_probes_per_s: 3,
            ..PunchConfig::default()
        };
        let cap = config.max_probes_per_s;
        let mut pacer = Pacer::default();
        assert_eq!(pacer.next_at(t0, &config), t0);
        pacer.sent(t0, cap);
        assert_eq!(pacer.next_at(t0, &config), t0 + config.pace);
        let t1 = t0 + Duration::from_millis(40);
        assert_eq!(pacer.next_at(t1, &config), t1, "pace is a floor");
        pacer.sent(t1, cap);
        pacer.sent(t1 + config.pace, cap);
        // Three within a second: the fourth waits a second after the first,
        // the fifth a second after the second.
        assert_eq!(
            pacer.next_at(t1 + config.pace * 2, &config),
            t0 + Duration::from_secs(1)
        );
        pacer.sent(t0 + Duration::from_secs(1), cap);
        assert_eq!(
            pacer.next_at(t0 + Duration::from_secs(1), &config),
            t1 + Duration::from_secs(1)
        );
        assert_eq!(pacer.sent, 4);
        assert_eq!(pacer.recent.len(), 3, "remembers no more than the cap");
    }

    #[test]
    fn a_queue_holds_each_pair_once() {
        let mut pacer = Pacer::default();
        pacer.enqueue(key(1));
        pacer.enqueue(key(2));
        pacer.enqueue(key(1));
        assert_eq!(pacer.queue, [key(1), key(2)]);
    }

    #[test]
    fn a_hold_is_only_ever_extended_and_ends_on_time() {
        let t0 = crate::test_epoch();
        let mut pacer = Pacer::default();
        assert!(!pacer.holding(t0));
        pacer.hold(t0, Duration::from_millis(500));
        pacer.hold(t0, Duration::from_millis(100));
        assert!(pacer.holding(t0 + Duration::from_millis(499)));
        assert!(!pacer.holding(t0 + Duration::from_millis(500)));
    }

    #[test]
    fn a_punch_time_maps_through_the_wall_clock_or_starts_at_once() {
        let t0 = crate::test_epoch();
        let wall = WallClock::new(t0, 1_000_000_000);
        let now = t0 + Duration::from_millis(10);
        // 1_000_000 ms is the anchor; 60 ms after it is 50 ms from now.
        assert_eq!(
            start_at(now, 1_000_060, &wall),
            t0 + Duration::from_millis(60)
        );
        assert_eq!(start_at(now, 1_000_005, &wall), now, "past");
        assert_eq!(start_at(now, 1_003_000, &wall), now, "skewed clock");
    }
}
