//! What a relay reports, and why a host's request is refused.

use std::net::SocketAddr;

use super::{AllocationCounters, DropReason};
use crate::id::NodeId;

/// Why an allocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReleaseReason {
    /// The host released it.
    Released,
    /// The association it carries was withdrawn.
    Withdrawn,
    /// One of its nodes was revoked.
    NodeRevoked(NodeId),
    /// Nothing crossed it and no leg bound for the idle timeout.
    Expired,
}

/// What the relay reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayEvent {
    /// An allocation's port is open: tell both endpoints.
    Allocated {
        /// The allocation.
        allocation: u64,
        /// Its port's address.
        local: SocketAddr,
    },
    /// An allocation's port could not be opened; the allocation is gone.
    AllocationFailed {
        /// The allocation.
        allocation: u64,
        /// The operating system's reason.
        reason: std::io::ErrorKind,
    },
    /// A leg was pinned, or moved, by an authentic bind.
    LegBound {
        /// The allocation.
        allocation: u64,
        /// Which leg.
        leg: u8,
        /// Where it is pinned now.
        addr: SocketAddr,
        /// Where it was pinned before, when it moved.
        moved_from: Option<SocketAddr>,
        /// True when both legs are pinned: data flows.
        ready: bool,
    },
    /// An authentic bind was refused (reported at most once a second per
    /// allocation; every refusal is counted).
    BindRefused {
        /// The allocation.
        allocation: u64,
        /// Where it came from.
        src: SocketAddr,
        /// Why.
        reason: DropReason,
    },
    /// An allocation is gone and its port closed.
    Released {
        /// The allocation.
        allocation: u64,
        /// Why.
        reason: ReleaseReason,
        /// Its counters at the end.
        counters: AllocationCounters,
    },
}

/// Why a host's request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// The id is allocated already.
    #[error("allocation {0} exists already")]
    Exists(u64),
    /// No allocation with this id.
    #[error("allocation {0} does not exist")]
    Unknown(u64),
    /// The node holds its quota of allocations.
    #[error("{node} holds {quota} relay allocations, its quota")]
    QuotaExceeded {
        /// The node.
        node: NodeId,
        /// The quota.
        quota: usize,
    },
    /// The relay holds as many allocations as it may.
    #[error("the relay holds {0} allocations, its maximum")]
    Full(usize),
}
