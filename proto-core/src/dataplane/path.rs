//! One path of an association: a local mesh socket (one per uplink) and a
//! remote address. It carries data only after an authentic pong from that
//! exact remote address, and stops when pongs stop.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::scheduler::{Estimates, Lane, SchedulerConfig};
use super::UplinkPolicy;
use crate::id::{PathId, UplinkId};

/// The first pings of a newly active path, which tell what it loses: one
/// that loses any of them carries nothing beside a clean path until they
/// are all answered or lost ([`Path::suspect`]). A path losing 5 % each way loses one
/// of 64 with a chance above 99 %, and two close together (which makes it
/// `lossy`) with about 97 %; a TCP flow that shared its first window with
/// such a path would lose a handful of segments and wait out a timeout
/// for each (multiwan case d).
pub const PROVING_PINGS: u64 = 64;
/// How far apart those pings go while the association carries no data
/// (more where the round trip would keep too many outstanding, see
/// `Path::probe_gap`): 64 take about 0.65 s.
pub const PROVING_GAP: Duration = Duration::from_millis(10);

/// Outstanding pings remembered per path.
pub const MAX_PENDING: usize = 16;

/// Where a path goes (DESIGN §11 `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum PathKind {
    /// A private (intranet) remote address: preferred when reachable.
    DirectIntranet,
    /// A public remote address.
    DirectPublic,
    /// Through the coordinator's relay.
    CoordinatorRelay,
    /// Through another node's relay.
    NodeRelay,
}

impl PathKind {
    /// The kind of a path to `remote`.
    pub fn of(remote: SocketAddr) -> Self {
        let private = match remote.ip() {
            IpAddr::V4(ip) => ip.is_private() || ip.is_loopback() || ip.is_link_local(),
            IpAddr::V6(ip) => ip.is_loopback() || (ip.segments()[0] & 0xfe00) == 0xfc00,
        };
        if private {
            Self::DirectIntranet
        } else {
            Self::DirectPublic
        }
    }

    /// The name status and metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DirectIntranet => "direct-intranet",
            Self::DirectPublic => "direct-public",
            Self::CoordinatorRelay => "coordinator-relay",
            Self::NodeRelay => "node-relay",
        }
    }

    /// Whether the path crosses a relay.
    pub fn is_relay(self) -> bool {
        matches!(self, Self::CoordinatorRelay | Self::NodeRelay)
    }
}

/// A path's state (DESIGN §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum PathState {
    /// Being pinged, never answered (or not since it failed).
    Probing,
    /// Answered recently: carries data.
    Active,
    /// Stopped answering.
    Failed,
}

impl PathState {
    /// The name status and metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Probing => "probing",
            Self::Active => "active",
            Self::Failed => "failed",
        }
    }
}

/// Byte and packet counts of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Data packets.
    pub packets: u64,
    /// Data bytes (payload, as carried).
    pub bytes: u64,
}

impl Traffic {
    pub(crate) fn count(&mut self, len: usize) {
        self.packets += 1;
        self.bytes += len as u64;
    }
}

/// Data through one uplink, over all its paths.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UplinkTraffic {
    /// Data sent on the uplink's paths (from its mesh socket, or a relay
    /// leg or birthday socket a path leaves from).
    pub sent: Traffic,
    /// Data received on it from active paths.
    pub received: Traffic,
}

/// The state of one path.
#[derive(Debug, Clone)]
pub struct Path {
    /// Its id within the association.
    pub id: PathId,
    /// The uplink whose mesh socket it leaves from.
    pub uplink: UplinkId,
    /// The remote address.
    pub remote: SocketAddr,
    /// Where it goes.
    pub kind: PathKind,
    /// Its state.
    pub state: PathState,
    /// Smoothed round-trip time, once measured.
    pub srtt: Option<Duration>,
    /// Round-trip time variance.
    pub rttvar: Duration,
    /// Last authentic packet (pong, ping or validated data) from the remote.
    pub last_heard: Option<Instant>,
    /// Data sent on it.
    pub tx: Traffic,
    /// Data received on it.
    pub rx: Traffic,
    /// Pings sent.
    pub pings: u64,
    /// Pings answered or given up as lost since it last became active: it
    /// is proving itself until [`PROVING_PINGS`] have.
    settled_since_active: u64,
    /// A ping went unanswered (not to its own queue) since it became
    /// active; it counts while the path is proving.
    lost_while_proving: bool,
    /// Pongs matched.
    pub pongs: u64,
    /// When a ping was last answered.
    pub last_pong: Option<Instant>,
    /// Learned from data only and never proved the key: challenged, not
    /// probed on a timer.
    pub(crate) unproven: bool,
    pending: VecDeque<(u64, Instant)>,
    /// When the oldest ping not answered since the last pong went out;
    /// kept when [`MAX_PENDING`] pushes that ping out of `pending`, so a
    /// path pinged fast with a long deadline still fails when it dies.
    unanswered_since: Option<Instant>,
    /// Last data received on it (receiver statistics).
    pub(crate) last_data: Option<Instant>,
    /// The scheduler's model and estimates.
    pub(crate) lane: Lane,
    /// Since when it has been active without failing.
    pub(crate) active_since: Option<Instant>,
    /// The peer's uplink policy at the remote address, as its pings tell
    /// ([`crate::wire::control::PING_BACKUP`], `PING_METERED` bits): a path
    /// to a peer's backup or metered uplink is scheduled as one.
    pub remote_policy: u8,
    /// The socket it leaves from when not its uplink's mesh socket (one
    /// that birthday probing opened).
    pub(crate) via: Option<crate::id::SocketId>,
    /// Where the peer's answers on this path come from when not its remote
    /// address: behind a NAT that maps per destination, the peer's pong
    /// leaves from a new mapping (DESIGN §7). The ping got through, so the
    /// path carries data; the peer's data, reports and pings may arrive
    /// from here too.
    pub answers_from: Option<SocketAddr>,
    /// Where the data counted in `rx` last came from: the receiver's
    /// reports go back there, so they leave through the peer's NAT the
    /// way the data came in.
    pub(crate) data_from: Option<SocketAddr>,
    /// Another path leads through the same two NATs and carries instead
    /// (see [`Association::mark_redundant`](super::association::Association)).
    pub(crate) redundant: bool,
}

impl Path {
    pub(crate) fn new(
        id: PathId,
        uplink: UplinkId,
        remote: SocketAddr,
        policy: &UplinkPolicy,
        config: &SchedulerConfig,
    ) -> Self {
        Self {
            id,
            uplink,
            remote,
            kind: PathKind::of(remote),
            state: PathState::Probing,
            srtt: None,
            rttvar: Duration::ZERO,
            last_heard: None,
            tx: Traffic::default(),
            rx: Traffic::default(),
            pings: 0,
            settled_since_active: 0,
            lost_while_proving: false,
            pongs: 0,
            last_pong: None,
            unproven: false,
            pending: VecDeque::new(),
            unanswered_since: None,
            last_data: None,
            lane: Lane::new(policy, config),
            active_since: None,
            remote_policy: 0,
            via: None,
            answers_from: None,
            data_from: None,
            redundant: false,
        }
    }

    /// What is measured of it.
    pub fn estimates(&self) -> &Estimates {
        &self.lane.est
    }

    /// True when an active path has left a ping unanswered for longer than
    /// `deadline` (pongs to later pings clear earlier ones): it has stopped
    /// answering.
    pub(crate) fn overdue(&self, now: Instant, deadline: Duration) -> bool {
        self.state == PathState::Active
            && self
                .unanswered_since
                .is_some_and(|sent| now.saturating_duration_since(sent) > deadline)
    }

    /// Fails an active path (it stopped answering); true if it was active.
    pub(crate) fn fail(&mut self) -> bool {
        if self.state != PathState::Active {
            return false;
        }
        self.state = PathState::Failed;
        self.active_since = None;
        true
    }

    /// How long a ping of an active path may go unanswered before the path
    /// fails: a round trip with its variance and two more probe intervals
    /// (so about three pings lost in a row), at least `floor`, at most
    /// `ceiling`; `ceiling` before the first round trip is measured. A
    /// path whose round trip and variance do not fit under `ceiling` (a
    /// relay over satellite hops) gets them and one probe interval: it
    /// cannot be heard sooner, and failing it at every pong would leave
    /// the association with no path at all.
    pub(crate) fn liveness_deadline(
        &self,
        probe: Duration,
        floor: Duration,
        ceiling: Duration,
    ) -> Duration {
        let Some(srtt) = self.srtt else {
            return ceiling.max(floor);
        };
        let heard = srtt + self.rttvar * 4;
        (heard + probe * 2)
            .min(ceiling.max(heard + probe))
            .max(floor)
    }

    /// How often to ping the path while it carries data: every `base`, or
    /// less often where the round trip would otherwise keep more than
    /// half of [`MAX_PENDING`] pings outstanding (an older one would be
    /// dropped as lost before its answer could come).
    pub(crate) fn probe_gap(&self, base: Duration) -> Duration {
        let srtt = self.srtt.unwrap_or_default();
        base.max(srtt / (MAX_PENDING as u32 / 2))
    }

    /// Active, and fewer than [`PROVING_PINGS`] pings answered or lost
    /// since it became so: what it loses is not known yet.
    pub fn proving(&self) -> bool {
        self.state == PathState::Active && self.settled_since_active < PROVING_PINGS
    }

    /// Proving, and it has lost a ping already: it may well be lossy.
    pub fn suspect(&self) -> bool {
        self.lost_while_proving && self.proving()
    }

    /// A ping given up as lost (a later one was answered, or it was pushed
    /// out of `pending`). Lost to its own queue (`congested`) is the
    /// flow's congestion, not the path's loss.
    fn given_up(&mut self, now: Instant, congested: bool) {
        self.lane.on_probe_outcome(now, false);
        self.lost_while_proving |= self.state == PathState::Active && !congested;
        self.settled_since_active += 1;
    }

    /// Records a ping sent at `now`.
    pub(crate) fn on_probe(&mut self, txid: u64, now: Instant) {
        if self.pending.len() == MAX_PENDING {
            self.pending.pop_front();
            let congested = self.lane.congested_lately(now);
            self.given_up(now, congested);
        }
        self.pending.push_back((txid, now));
        self.unanswered_since.get_or_insert(now);
        self.lane.on_probe_sent(now, txid);
        self.pings += 1;
    }

    /// True when a ping went out less than `gap` ago (to pace challenges).
    pub(crate) fn pinged_within(&self, now: Instant, gap: Duration) -> bool {
        self.pending
            .back()
            .is_some_and(|&(_, at)| now.saturating_duration_since(at) < gap)
    }

    /// True when the ping `txid` is outstanding.
    pub(crate) fn awaits(&self, txid: u64) -> bool {
        self.pending.iter().any(|&(id, _)| id == txid)
    }

    /// Matches a pong; returns when its ping was sent, the RTT, and whether
    /// the path just became active, or `None` for a pong that answers no
    /// outstanding ping.
    pub(crate) fn on_pong(&mut self, txid: u64, now: Instant) -> Option<(Instant, Duration, bool)> {
        let at = self.pending.iter().position(|&(id, _)| id == txid)?;
        let (_, sent) = self.pending.remove(at)?;
        // Everything older than the answered ping is lost; drop it so a late
        // path does not count as missing forever.
        let congested = self.lane.congested_lately(now);
        let lost = self.pending.drain(..at).count();
        for _ in 0..lost {
            self.given_up(now, congested);
        }
        self.settled_since_active += 1;
        self.lane.on_probe_outcome(now, true);
        self.unanswered_since = self.pending.front().map(|&(_, at)| at);
        let rtt = now.saturating_duration_since(sent);
        self.sample_rtt(rtt);
        self.unproven = false;
        self.pongs += 1;
        self.last_pong = Some(now);
        self.last_heard = Some(now);
        let validated = self.state != PathState::Active;
        if validated {
            self.active_since = Some(now);
            self.settled_since_active = 0;
            self.lost_while_proving = false;
        }
        self.state = PathState::Active;
        Some((sent, rtt, validated))
    }

    /// RFC 6298 smoothing.
    fn sample_rtt(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                self.rttvar = (self.rttvar * 3 + srtt.abs_diff(rtt)) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
    }

    /// Pings sent and not answered yet (at most [`MAX_PENDING`]).
    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }

    /// The fraction of the last pings that went unanswered (a coarse loss
    /// estimate until receiver statistics exist).
    pub fn probe_loss(&self) -> f64 {
        if self.pings == 0 {
            return 0.0;
        }
        let outstanding = self.pending.len().saturating_sub(1) as f64;
        (outstanding / MAX_PENDING as f64).min(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_address() {
        assert_eq!(
            PathKind::of("10.1.2.3:1".parse().unwrap()),
            PathKind::DirectIntranet
        );
        assert_eq!(
            PathKind::of("192.168.1.1:1".parse().unwrap()),
            PathKind::DirectIntranet
        );
        assert_eq!(
            PathKind::of("127.0.0.2:1".parse().unwrap()),
            PathKind::DirectIntranet
        );
        assert_eq!(
            PathKind::of("[fd00::1]:1".parse().unwrap()),
            PathKind::DirectIntranet
        );
        assert_eq!(
            PathKind::of("203.0.113.9:1".parse().unwrap()),
            PathKind::DirectPublic
        );
        assert_eq!(
            PathKind::of("[2001:db8::1]:1".parse().unwrap()),
            PathKind::DirectPublic
        );
    }

    fn public_path() -> Path {
        Path::new(
            PathId(1),
            UplinkId(0),
            "203.0.113.9:1".parse().unwrap(),
            &UplinkPolicy::default(),
            &SchedulerConfig::default(),
        )
    }

    #[test]
    fn a_path_pinged_faster_than_its_deadline_allows_for_still_fails() {
        // 300 ms round trip with 150 ms variance, pinged every 50 ms under
        // data: the deadline (950 ms) is longer than the 16 pings it
        // remembers span (800 ms). The first unanswered ping still counts
        // once pushed out.
        let t0 = crate::test_epoch();
        let gap = Duration::from_millis(50);
        let mut path = public_path();
        path.on_probe(1, t0);
        path.on_pong(1, t0 + Duration::from_millis(300));
        let deadline = path.liveness_deadline(gap, gap * 2, Duration::from_millis(750));
        assert_eq!(deadline, Duration::from_millis(950));
        let start = t0 + Duration::from_secs(1);
        for i in 0..40u32 {
            path.on_probe(u64::from(i) + 2, start + gap * i);
        }
        assert!(
            path.overdue(start + gap * 39, deadline),
            "2 s without an answer"
        );
        assert!(!path.overdue(start + Duration::from_millis(900), deadline));
    }

    #[test]
    fn a_path_activates_on_a_matching_pong_and_fails_after_silence() {
        let t0 = crate::test_epoch();
        let step = Duration::from_millis(100);
        let mut path = public_path();
        path.on_probe(1, t0);
        assert!(!path.overdue(t0 + step * 9, step), "not active yet");
        assert_eq!(path.on_pong(99, t0 + step), None, "unknown txid");
        assert_eq!(path.on_pong(1, t0 + step), Some((t0, step, true)));
        assert_eq!(path.state, PathState::Active);
        assert_eq!(path.on_pong(1, t0 + step), None, "answered once only");
        let deadline = path.liveness_deadline(step, step, step * 10);
        // srtt 100 ms, rttvar 50 ms: 100 + 4 × 50 + 2 × 100.
        assert_eq!(deadline, Duration::from_millis(500));
        for i in 2..8 {
            path.on_probe(i, t0 + step * i as u32);
        }
        assert!(
            !path.overdue(t0 + step * 7, deadline),
            "the ping at 200 ms is 500 ms old"
        );
        assert!(path.overdue(t0 + step * 7 + Duration::from_millis(1), deadline));
        assert!(path.fail());
        assert_eq!(path.state, PathState::Failed);
        assert_eq!(
            path.on_pong(5, t0 + step * 6).map(|(_, _, v)| v),
            Some(true)
        );
    }
}
