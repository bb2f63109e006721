//! This node's leg of an association's relay allocation (DESIGN §7): from
//! every mesh socket, a bind signed with the allocation's key; the relay
//! answers with a cookie for the address it saw; the bind that carries the
//! cookie back pins the leg, and a bind each [`RELAY_REFRESH`] keeps it.
//! Once pinned, the relay's address is a path like any other on that
//! uplink: probed, validated by the peer's pong through the relay (which
//! needs the peer's leg pinned too), and scheduled below direct paths.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::reflexive::{settled, NatAllocation, NatClass, Slot};
use super::PathKind;
use crate::id::UplinkId;
use crate::wire::{AuthKey, KEY_LEN};

/// A pinned leg binds again this often: the relay's replay window and
/// idle expiry both allow it with room to spare.
pub const RELAY_REFRESH: Duration = Duration::from_secs(8);

/// A retiring leg (replaced by a new allocation) that the coordinator never
/// released, e.g. because it restarted and forgot it, goes this long after
/// its successor was offered: the coordinator releases it after 5 s.
pub const RELAY_RETIRE_MAX: Duration = Duration::from_secs(30);

/// A relay leg behind a NAT that allocates ports in sequence (or one the
/// reflectors have not classified yet) is not bound before the peer's
/// candidates have been probed this long (or a direct path answered): the
/// bind's new mapping would take a port the peer predicted for the direct
/// path.
pub const RELAY_DEFER: Duration = Duration::from_millis(500);

/// ... nor later than this after the offer, candidates or not.
pub const RELAY_DEFER_MAX: Duration = Duration::from_secs(3);

/// Whether a socket may bind its relay leg before the punch: the
/// reflectors have answered and its NAT does not allocate ports in
/// sequence (see [`RELAY_DEFER`]).
pub(crate) fn binds_freely(local: SocketAddr, slots: &[Slot]) -> bool {
    if !settled(slots) {
        return false;
    }
    let class = NatClass::of(local, slots);
    !(class.mapping.per_destination()
        && matches!(class.allocation, NatAllocation::Sequential { .. }))
}

/// A relay allocation as the coordinator offers it to this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayOffer {
    /// The relay's address for this allocation.
    pub relay: SocketAddr,
    /// The allocation.
    pub allocation: u64,
    /// Which leg this node binds.
    pub leg: u8,
    /// The key that signs binds and their acknowledgements.
    pub key: [u8; KEY_LEN],
    /// What its path is labelled: [`PathKind::CoordinatorRelay`] or
    /// [`PathKind::NodeRelay`].
    pub kind: PathKind,
}

/// One mesh socket's leg state.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LegState {
    /// The cookie the relay gave this socket's address (0: none yet).
    pub(crate) cookie: u64,
    /// The relay acknowledged a bind carrying `cookie`.
    pub(crate) pinned: bool,
    pub(crate) last_sent: Option<Instant>,
    pub(crate) last_ack: Option<Instant>,
}

impl LegState {
    /// Whether to send a bind now: not pinned (retry each `interval`), or
    /// pinned longer ago than [`RELAY_REFRESH`].
    pub(crate) fn due(&self, now: Instant, interval: Duration) -> bool {
        let since = |at: Option<Instant>, d: Duration| {
            at.is_none_or(|at| now.saturating_duration_since(at) >= d)
        };
        if !since(self.last_sent, interval) {
            return false;
        }
        !self.pinned || since(self.last_ack, RELAY_REFRESH)
    }

    /// Takes an acknowledgement's cookie; returns whether to bind again at
    /// once (a new cookie to carry back).
    pub(crate) fn on_ack(&mut self, now: Instant, cookie: u64) -> bool {
        self.last_ack = Some(now);
        if cookie == self.cookie && cookie != 0 {
            self.pinned = true;
            return false;
        }
        self.cookie = cookie;
        self.pinned = false;
        true
    }
}

/// The association's relay leg on every uplink.
#[derive(Debug, Clone)]
pub(crate) struct RelayBinding {
    pub(crate) offer: RelayOffer,
    pub(crate) key: AuthKey,
    pub(crate) legs: BTreeMap<UplinkId, LegState>,
    pub(crate) offered_at: Instant,
}

impl RelayBinding {
    pub(crate) fn new(now: Instant, offer: RelayOffer) -> Self {
        Self {
            key: AuthKey::new(&offer.key),
            offer,
            legs: BTreeMap::new(),
            offered_at: now,
        }
    }

    /// Whether binding may start: a direct path answered, the peer's
    /// candidates were first probed at least [`RELAY_DEFER`] ago, or the
    /// offer is [`RELAY_DEFER_MAX`] old.
    pub(crate) fn may_bind(
        &self,
        now: Instant,
        direct_up: bool,
        first_probe: Option<Instant>,
    ) -> bool {
        direct_up || now >= self.bind_from(first_probe)
    }

    /// When binding may start if no direct path answers first.
    pub(crate) fn bind_from(&self, first_probe: Option<Instant>) -> Instant {
        let latest = self.offered_at + RELAY_DEFER_MAX;
        first_probe.map_or(latest, |at| (at + RELAY_DEFER).min(latest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leg_pins_on_its_cookie_coming_back_and_refreshes_later() {
        let t0 = crate::test_epoch();
        let interval = Duration::from_millis(250);
        let mut leg = LegState::default();
        assert!(leg.due(t0, interval));
        leg.last_sent = Some(t0);
        assert!(!leg.due(t0 + Duration::from_millis(10), interval));
        // The first answer brings a cookie: bind again with it at once.
        assert!(leg.on_ack(t0 + Duration::from_millis(20), 77));
        assert!(!leg.pinned);
        // The answer to the bind that carried it pins the leg.
        assert!(!leg.on_ack(t0 + Duration::from_millis(40), 77));
        assert!(leg.pinned);
        assert!(!leg.due(t0 + Duration::from_secs(1), interval));
        assert!(leg.due(t0 + Duration::from_millis(40) + RELAY_REFRESH, interval));
        // Another cookie (our address changed): unpinned, bind again.
        assert!(leg.on_ack(t0 + Duration::from_secs(9), 78));
        assert!(!leg.pinned);
    }
}
