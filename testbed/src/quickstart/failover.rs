//! What the quickstart's services see of a failover: every datagram
//! carries its send time (from the start of traffic), so a receiver knows
//! which datagrams never came and, within one datagram's spacing, when
//! they were sent; and it notes every pause in delivery. The run measures
//! from that how long the flows through the node that lost an uplink were
//! disturbed, with no clock but this process's.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Pauses in delivery shorter than this are not noted (datagrams come
/// every millisecond).
const PAUSE: Duration = Duration::from_millis(20);
/// Most pauses and missing datagrams noted per flow; beyond, the oldest
/// are forgotten (a run of hours must not grow).
const MAX_PAUSES: usize = 4_096;
const MAX_MISSING: usize = 100_000;

/// One flow's deliveries as its receiver saw them.
#[derive(Debug, Default, Clone)]
pub(super) struct FlowLog {
    highest: Option<u64>,
    /// Datagrams not delivered (yet): sequence number → send time (µs
    /// since traffic started) of the datagram that showed it missing,
    /// which left at most one datagram's spacing after it.
    missing: BTreeMap<u64, u64>,
    last: Option<Instant>,
    /// Pauses in delivery: (last arrival before, first arrival after).
    pauses: Vec<(Instant, Instant)>,
}

impl FlowLog {
    /// Datagram `seq`, sent `sent_us` after traffic started, arrived at `at`.
    pub(super) fn arrived(&mut self, seq: u64, sent_us: u64, at: Instant) {
        if let Some(last) = self.last.replace(at) {
            if at.saturating_duration_since(last) >= PAUSE {
                if self.pauses.len() == MAX_PAUSES {
                    self.pauses.remove(0);
                }
                self.pauses.push((last, at));
            }
        }
        match self.highest {
            Some(high) if seq <= high => {
                // Late, not lost.
                self.missing.remove(&seq);
            }
            _ => {
                let next = self.highest.map_or(0, |h| h + 1);
                for gone in next..seq {
                    if self.missing.len() == MAX_MISSING {
                        self.missing.pop_first();
                    }
                    self.missing.insert(gone, sent_us);
                }
                self.highest = Some(seq);
            }
        }
    }
}

/// What a failover did to the flows through a node, as measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Failover {
    /// The node that lost an uplink.
    pub node: String,
    /// The uplink taken out of service.
    pub uplink: String,
    /// The uplink left to carry.
    pub other: String,
    /// When it was taken out, from the start of traffic.
    pub at: Duration,
    /// How long after the cut the measurement window ends.
    pub window: Duration,
    /// Datagrams through the node sent in the window and never delivered.
    pub lost: u64,
    /// The longest pause in delivery of a flow through the node in the
    /// window.
    pub longest_pause: Duration,
    /// How long the flows through the node were disturbed: from the cut
    /// until the last datagram that was lost was sent (to within one
    /// datagram's spacing), or the longest pause if longer.
    pub stall: Duration,
    /// Mbit/s through the cut uplink and the other one in the second
    /// before the cut.
    pub before_mbps: [f64; 2],
    /// Mbit/s through each from the cut to the end of the window.
    pub after_mbps: [f64; 2],
    /// Bytes through each from the cut to the end of the window.
    pub after_bytes: [u64; 2],
}

/// The disturbance to `flows` (logs of the flows through the node) from
/// `cut` to `end`, both from `epoch` (when traffic started): lost
/// datagrams, the longest pause, and the stall.
pub(super) fn measure(
    flows: &[&FlowLog],
    epoch: Instant,
    cut: Duration,
    end: Duration,
) -> (u64, Duration, Duration) {
    let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    let (from, to) = (us(cut), us(end));
    let mut lost = 0;
    let mut last_loss = None;
    let mut longest = Duration::ZERO;
    for flow in flows {
        for &shown_at in flow.missing.values() {
            if (from..to).contains(&shown_at) {
                lost += 1;
                last_loss = last_loss.max(Some(shown_at));
            }
        }
        for &(before, after) in &flow.pauses {
            let start = before.max(epoch + cut);
            let stop = after.min(epoch + end);
            longest = longest.max(stop.saturating_duration_since(start));
        }
    }
    let loss_span = last_loss.map_or(Duration::ZERO, |at| Duration::from_micros(at - from));
    (lost, longest, loss_span.max(longest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_pauses_and_late_arrivals_are_told_apart() {
        let epoch = Instant::now();
        let ms = Duration::from_millis;
        let mut log = FlowLog::default();
        // One datagram a millisecond; 1000 ms in, the path dies: datagrams
        // 1000 to 1149 are lost, except 1003, which comes late; delivery
        // resumes with 1150, sent at 1150 ms, arriving 1 ms later.
        for seq in (0..1_000).chain(1_150..1_300) {
            let sent = ms(seq);
            log.arrived(seq, sent.as_micros() as u64, epoch + sent + ms(1));
        }
        log.arrived(1_003, 1_003_000, epoch + ms(1_302));
        let (lost, pause, stall) = measure(&[&log], epoch, ms(1_000), ms(1_290));
        assert_eq!(lost, 149);
        assert_eq!(
            pause,
            ms(151),
            "from the last arrival before to the first after"
        );
        assert_eq!(
            stall,
            ms(151),
            "the pause is longer than the loss span (150 ms)"
        );
        // Nothing is lost before the cut.
        assert_eq!(measure(&[&log], epoch, ms(0), ms(999)).0, 0);
    }
}
