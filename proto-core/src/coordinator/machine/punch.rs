//! Coordinated hole punching (DESIGN §7): once the coordinator holds both
//! ends' candidates for an association (and again whenever one end's
//! change), it tells both ends one moment to start probing, far enough
//! ahead that both have heard it by then. Both NATs then see their own
//! host's packet towards the peer before the peer's packet arrives, so
//! neither keeps an entry for the peer's packet that the host's own would
//! clash with.

use std::time::Duration;

use super::Coordinator;
use crate::control::msg::Message;
use crate::id::AssocId;

/// The start is at least this far ahead (a node's own scheduling).
pub const PUNCH_LEAD_MIN: Duration = Duration::from_millis(20);
/// ... and at most this far, however slow a session is: a later start
/// only delays the direct path.
pub const PUNCH_LEAD_MAX: Duration = Duration::from_millis(500);
/// The lead assumed for a session without an RTT estimate (TCP).
const UNMEASURED_RTT: Duration = Duration::from_millis(100);
/// Added to the slower session's round trip: its jitter.
const MARGIN: Duration = Duration::from_millis(10);

/// How far ahead to start a punch between two sessions of these round
/// trips: the slower one's full round trip (its message takes about half)
/// plus a margin, within [`PUNCH_LEAD_MIN`] ..= [`PUNCH_LEAD_MAX`].
pub fn lead(a: Option<Duration>, b: Option<Duration>) -> Duration {
    let slower = a.unwrap_or(UNMEASURED_RTT).max(b.unwrap_or(UNMEASURED_RTT));
    (slower + MARGIN).clamp(PUNCH_LEAD_MIN, PUNCH_LEAD_MAX)
}

impl Coordinator {
    /// Tells both ends of `assoc` to punch at one moment, when both are
    /// online and both have reported candidates.
    pub(super) fn punch(&mut self, now: std::time::Instant, assoc: AssocId) {
        let Some((ends, live)) = self.assocs.by_id_mut(assoc) else {
            return;
        };
        let nodes = [ends.0.node.clone(), ends.1.node.clone()];
        if nodes.iter().any(|n| !live.candidates.contains_key(n)) {
            return;
        }
        let (Some(&a), Some(&b)) = (self.online.get(&nodes[0]), self.online.get(&nodes[1])) else {
            return;
        };
        let lead = lead(self.transport.rtt(a), self.transport.rtt(b));
        let at_unix_ms = (self.config.wall_clock.unix_us(now + lead)).div_ceil(1_000);
        tracing::debug!(%assoc, ?lead, at_unix_ms, "punch");
        self.counters.punches += 1;
        let message = Message::Punch { assoc, at_unix_ms };
        for conn in [a, b] {
            self.send(now, conn, &message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lead_follows_the_slower_session_within_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(lead(Some(ms(30)), Some(ms(80))), ms(90));
        assert_eq!(lead(Some(ms(1)), Some(ms(2))), PUNCH_LEAD_MIN);
        assert_eq!(lead(Some(ms(900)), Some(ms(2))), PUNCH_LEAD_MAX);
        assert_eq!(lead(None, Some(ms(2))), UNMEASURED_RTT + MARGIN);
    }
}
