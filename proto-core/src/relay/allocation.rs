//! One relay allocation: its socket, its two legs and their counters.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::bucket::{RateLimit, TokenBucket};
use super::AllocationSpec;
use crate::id::SocketId;
use crate::replay::ReplayCache;
use crate::wire::{AuthKey, ControlBody, ControlRepr};

/// Bind transactions remembered per leg against replays. Binds are rare
/// (one per refresh), so a small cache covers far more than the window.
pub const BIND_REPLAY_CAPACITY: usize = 64;

/// Datagrams and bytes that crossed in one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Datagrams.
    pub packets: u64,
    /// Payload bytes.
    pub bytes: u64,
}

impl Traffic {
    fn count(&mut self, len: usize) {
        self.packets += 1;
        self.bytes += len as u64;
    }
}

/// Why a datagram on an allocation's port was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DropReason {
    /// From an address that is neither leg, and not an authentic bind.
    UnknownSource,
    /// Shaped like a bind from an unknown address, but its tag does not
    /// verify under the allocation's key (a spoofed bind).
    Unauthenticated,
    /// From a leg while the other leg is not bound yet.
    PeerUnbound,
    /// Over the path's rate limit.
    RateLimited,
    /// An authentic bind from one of this relay's own allocation ports (or
    /// an address that may be one): a leg pinned there would make a second
    /// hop, so it is refused.
    OwnSource,
    /// An authentic bind already answered, or too old.
    BindReplayed,
    /// An authentic bind for another allocation or leg, or a bind
    /// acknowledgement (only relays send those).
    BindMismatch,
    /// An authentic bind from the address the other leg is pinned to.
    LegConflict,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [Self; 8] = [
        Self::UnknownSource,
        Self::Unauthenticated,
        Self::PeerUnbound,
        Self::RateLimited,
        Self::OwnSource,
        Self::BindReplayed,
        Self::BindMismatch,
        Self::LegConflict,
    ];

    /// A short name for status and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownSource => "unknown-source",
            Self::Unauthenticated => "unauthenticated",
            Self::PeerUnbound => "peer-unbound",
            Self::RateLimited => "rate-limited",
            Self::OwnSource => "own-source",
            Self::BindReplayed => "bind-replayed",
            Self::BindMismatch => "bind-mismatch",
            Self::LegConflict => "leg-conflict",
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counters of one allocation, for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllocationCounters {
    /// Forwarded from leg 0 to leg 1 (`[0]`) and from leg 1 to leg 0 (`[1]`).
    pub forwarded: [Traffic; 2],
    /// Binds that pinned or refreshed a leg (each answered with an
    /// acknowledgement).
    pub binds: u64,
    /// Authentic binds without this source's cookie, answered with it and
    /// nothing else (no leg moves until the source sends it back).
    pub challenges: u64,
    /// Datagrams dropped, indexed like [`DropReason::ALL`].
    pub drops: [u64; DropReason::ALL.len()],
}

impl AllocationCounters {
    /// Datagrams dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Datagrams dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().sum()
    }

    pub(crate) fn drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }
}

/// What an admitted bind does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BindVerdict {
    /// It carried its source's cookie: pin (or refresh) this leg.
    Pin(u8),
    /// It did not: answer with the cookie, change nothing.
    Challenge(u8),
}

/// One side of a relay path: where the relay forwards that side's traffic
/// to, once an authentic bind pinned it.
#[derive(Debug, Clone)]
pub struct RelayLeg {
    /// The exact source address of the last accepted bind.
    pub addr: Option<SocketAddr>,
    /// When that leg last bound.
    pub last_bind: Option<Instant>,
    pub(crate) replay: ReplayCache,
    /// Tokens for what this leg sends.
    pub(crate) bucket: TokenBucket,
}

impl RelayLeg {
    fn new(replay_window_us: u64, limit: Option<RateLimit>) -> Self {
        Self {
            addr: None,
            last_bind: None,
            replay: ReplayCache::new(replay_window_us, BIND_REPLAY_CAPACITY),
            bucket: TokenBucket::new(limit),
        }
    }

    /// How many bind transactions its replay cache remembers.
    pub fn replay_len(&self) -> usize {
        self.replay.len()
    }
}

/// An allocation as the relay keeps it.
#[derive(Debug)]
pub(crate) struct Allocation {
    pub(crate) spec: AllocationSpec,
    pub(crate) key: AuthKey,
    pub(crate) socket: SocketId,
    /// Where the socket is bound, once the driver says so.
    pub(crate) local: Option<SocketAddr>,
    pub(crate) legs: [RelayLeg; 2],
    pub(crate) counters: AllocationCounters,
    /// Last accepted bind or forwarded datagram.
    pub(crate) last_activity: Instant,
    /// When a refused bind was last reported, so a replay flood does not
    /// flood the event stream too.
    pub(crate) last_refusal_event: Option<Instant>,
}

impl Allocation {
    pub(crate) fn new(
        now: Instant,
        spec: AllocationSpec,
        socket: SocketId,
        replay_window_us: u64,
        limit: Option<RateLimit>,
    ) -> Self {
        Self {
            key: AuthKey::new(&spec.key),
            spec,
            socket,
            local: None,
            legs: [
                RelayLeg::new(replay_window_us, limit),
                RelayLeg::new(replay_window_us, limit),
            ],
            counters: AllocationCounters::default(),
            last_activity: now,
            last_refusal_event: None,
        }
    }

    /// Which leg `src` is pinned as.
    pub(crate) fn leg_of(&self, src: SocketAddr) -> Option<usize> {
        self.legs.iter().position(|l| l.addr == Some(src))
    }

    /// True when both legs are pinned: data flows.
    pub(crate) fn is_ready(&self) -> bool {
        self.legs.iter().all(|l| l.addr.is_some())
    }

    /// Decides on an authentic bind (or acknowledgement) from `src`, whose
    /// cookie is `cookie`: pin its leg, answer it with the cookie, or refuse
    /// it and why. The replay cache is consulted last, so only an answered
    /// bind is remembered, and each is answered at most once.
    pub(crate) fn admit_bind(
        &mut self,
        repr: &ControlRepr,
        src: SocketAddr,
        own_source: bool,
        cookie: u64,
    ) -> Result<BindVerdict, DropReason> {
        let ControlBody::RelayBind {
            allocation,
            leg,
            cookie: offered,
        } = repr.body
        else {
            // An acknowledgement sent to a relay: only relays send those.
            return Err(DropReason::BindMismatch);
        };
        if allocation != self.spec.allocation || leg > 1 {
            return Err(DropReason::BindMismatch);
        }
        if own_source {
            // Pinning a leg to one of our own ports would make a second
            // hop (or a loop between two of our allocations).
            return Err(DropReason::OwnSource);
        }
        let this = usize::from(leg);
        if self.legs[1 - this].addr == Some(src) {
            // One address cannot be both legs: that would reflect a leg's
            // traffic back at itself.
            return Err(DropReason::LegConflict);
        }
        self.legs[this]
            .replay
            .check(repr.timestamp_us, repr.txid)
            .map_err(|_| DropReason::BindReplayed)?;
        Ok(if offered == cookie {
            BindVerdict::Pin(leg)
        } else {
            BindVerdict::Challenge(leg)
        })
    }

    /// Whether a refused bind at `now` should be reported (at most once per
    /// `interval`); remembers that it was.
    pub(crate) fn report_refusal(&mut self, now: Instant, interval: Duration) -> bool {
        let report = self
            .last_refusal_event
            .is_none_or(|at| now.saturating_duration_since(at) >= interval);
        if report {
            self.last_refusal_event = Some(now);
        }
        report
    }

    pub(crate) fn count_forwarded(&mut self, from: usize, len: usize, now: Instant) {
        self.counters.forwarded[from].count(len);
        self.last_activity = now;
    }
}
