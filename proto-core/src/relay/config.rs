//! How a relay is configured, and what a host asks of it.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::RateLimit;
use crate::id::{AssocId, NodeId};
use crate::time::WallClock;
use crate::wire::KEY_LEN;

/// How a relay behaves.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Allocations one node may take part in at once (on either leg).
    pub quota_per_node: usize,
    /// Allocations at most, all nodes together.
    pub max_allocations: usize,
    /// Rate limit of each path, applied to each direction separately;
    /// `None` forwards as fast as datagrams come.
    pub rate_limit: Option<RateLimit>,
    /// An allocation with no accepted bind and no forwarded datagram for
    /// this long is released.
    pub idle_timeout: Duration,
    /// A leg's bind may be this much older than the newest bind the leg
    /// sent before it is refused as a replay.
    pub replay_window: Duration,
    /// Addresses this relay is reached at besides the sockets' own (a
    /// public address in front of a NAT, every address of a wildcard
    /// bind): a datagram from one of them on one of our allocation ports is
    /// our own and never forwarded.
    pub own_ips: Vec<IpAddr>,
    /// First socket id the relay names; a host that owns sockets of its own
    /// keeps its ids below this.
    pub socket_base: u32,
    /// Wall-clock anchor for acknowledgement timestamps.
    pub wall_clock: WallClock,
    /// Seed of the secret that makes bind cookies (each relay its own).
    pub seed: u64,
}

impl RelayConfig {
    /// Defaults: 16 allocations per node, 1,024 in all, 1 Gbit/s per path
    /// and direction, 30 s idle expiry, a 10 s replay window, socket ids
    /// from 2²⁴; the cookie secret from `seed`.
    pub fn new(wall_clock: WallClock, seed: u64) -> Self {
        Self {
            quota_per_node: 16,
            max_allocations: 1_024,
            rate_limit: Some(RateLimit::new(125_000_000)),
            idle_timeout: Duration::from_secs(30),
            replay_window: Duration::from_secs(10),
            own_ips: Vec::new(),
            socket_base: 1 << 24,
            wall_clock,
            seed,
        }
    }
}

/// An allocation as the host asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationSpec {
    /// Its id, unique at this relay (the coordinator's).
    pub allocation: u64,
    /// The association it carries, for status and withdrawal.
    pub assoc: AssocId,
    /// The key that authenticates binds, as pushed to both endpoints.
    pub key: [u8; KEY_LEN],
    /// The node expected on leg 0 and on leg 1.
    pub nodes: [NodeId; 2],
    /// The address its port binds to (port 0 lets the OS choose).
    pub local: SocketAddr,
}
