//! A NAT box after RFC 4787: mapping and filtering behaviour (endpoint
//! independent, address dependent, address and port dependent), port
//! allocation (preserving, sequential, random), mapping timeout refreshed by
//! outbound traffic only, hairpinning, and rebinding.
//!
//! Sans-IO: the world asks [`NatBox::outbound`] and [`NatBox::inbound`] to
//! translate each packet; mappings expire lazily at the next call.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use transitloom_proto_core::rng::Rng;

/// Remote endpoints remembered per mapping for filtering; the oldest contact
/// is forgotten first.
pub const MAX_REMOTES: usize = 64;

/// Random allocation tries this many uniform draws before walking the free
/// ports; both ways pick uniformly among the free ports.
const RANDOM_TRIES: usize = 8;

/// What an outbound packet's mapping is keyed on, besides its inside source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mapping {
    /// One mapping per inside endpoint ("full cone" style).
    EndpointIndependent,
    /// One mapping per inside endpoint and destination IP.
    AddressDependent,
    /// One mapping per inside endpoint and destination IP and port ("symmetric").
    AddressPortDependent,
}

/// Which outside sources may send in through a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Filtering {
    /// Anyone.
    EndpointIndependent,
    /// Any port of an IP the inside endpoint has sent to.
    AddressDependent,
    /// Only the exact IP and port the inside endpoint has sent to.
    AddressPortDependent,
}

/// How a new mapping's public port is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Allocation {
    /// The inside port when it is free and in range, else [`Allocation::Sequential`].
    Preserving,
    /// The next free port after the last one allocated, wrapping in the range.
    Sequential,
    /// Uniformly among the free ports.
    Random,
}

/// The behaviour of a NAT box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatParams {
    /// Mapping behaviour.
    pub mapping: Mapping,
    /// Filtering behaviour.
    pub filtering: Filtering,
    /// Port allocation.
    pub allocation: Allocation,
    /// A mapping dies this long after its last outbound packet.
    pub mapping_timeout: Duration,
    /// Whether a packet from inside to the public address loops back in.
    pub hairpinning: bool,
    /// Inclusive range of public ports.
    pub ports: (u16, u16),
    /// Most live mappings at once.
    pub max_mappings: usize,
}

impl NatParams {
    /// The friendliest NAT: endpoint-independent mapping and filtering, port
    /// preserving, 120 s timeout, hairpinning, ports 1024..=65535.
    pub fn cone() -> Self {
        Self {
            mapping: Mapping::EndpointIndependent,
            filtering: Filtering::EndpointIndependent,
            allocation: Allocation::Preserving,
            mapping_timeout: Duration::from_secs(120),
            hairpinning: true,
            ports: (1024, 65535),
            max_mappings: 65536,
        }
    }

    /// The hardest NAT: address-and-port-dependent mapping and filtering with
    /// random ports; otherwise as [`NatParams::cone`].
    pub fn symmetric() -> Self {
        Self {
            mapping: Mapping::AddressPortDependent,
            filtering: Filtering::AddressPortDependent,
            allocation: Allocation::Random,
            ..Self::cone()
        }
    }

    /// Checks that the parameters describe a possible NAT.
    ///
    /// # Errors
    ///
    /// The first parameter found out of range, named in the message.
    pub fn validate(&self) -> Result<(), NatError> {
        let (first, last) = self.ports;
        if first > last {
            return Err(NatError::EmptyPortRange { first, last });
        }
        if first == 0 {
            return Err(NatError::PortZero { last });
        }
        if self.mapping_timeout.is_zero() {
            return Err(NatError::ZeroTimeout);
        }
        if self.max_mappings == 0 {
            return Err(NatError::ZeroMaxMappings);
        }
        Ok(())
    }

    fn port_count(&self) -> usize {
        usize::from(self.ports.1 - self.ports.0) + 1
    }
}

impl Default for NatParams {
    fn default() -> Self {
        Self::cone()
    }
}

/// Why NAT parameters were rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NatError {
    /// The port range holds no port.
    #[error("NAT port range {first}..={last} is empty: its start is above its end")]
    EmptyPortRange {
        /// First port given.
        first: u16,
        /// Last port given.
        last: u16,
    },
    /// Port 0 cannot be a public port.
    #[error("NAT port range 0..={last} includes port 0, which is not a usable port")]
    PortZero {
        /// Last port given.
        last: u16,
    },
    /// Mappings would die at once.
    #[error("NAT mapping_timeout must be positive")]
    ZeroTimeout,
    /// No mapping could ever be made.
    #[error("NAT max_mappings must be positive")]
    ZeroMaxMappings,
}

/// Counters of one NAT box.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatStats {
    /// Mappings made.
    pub mappings_created: u64,
    /// Mappings that timed out.
    pub mappings_expired: u64,
    /// Outbound packets translated.
    pub outbound: u64,
    /// Inbound packets let in.
    pub inbound_passed: u64,
    /// Inbound packets to a live mapping refused by filtering.
    pub inbound_filtered: u64,
    /// Inbound packets to no live mapping (or not to the public address).
    pub inbound_unmapped: u64,
    /// Outbound packets dropped for want of a port or a mapping slot.
    pub exhausted: u64,
}

/// What a mapping is found by: the inside source and, depending on
/// [`Mapping`], the destination IP and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct MappingKey {
    inside: SocketAddr,
    remote_ip: Option<IpAddr>,
    remote_port: Option<u16>,
}

/// A live mapping, found by its public port.
#[derive(Debug, Clone)]
struct Binding {
    key: MappingKey,
    /// `None` when the timeout reaches beyond what `Instant` can hold.
    expires: Option<Instant>,
    /// Remote endpoints contacted, oldest contact first.
    remotes: VecDeque<SocketAddr>,
}

/// A NAT box between an inside network and the public address.
#[derive(Debug, Clone)]
pub struct NatBox {
    params: NatParams,
    public_ip: IpAddr,
    rng: Rng,
    by_key: BTreeMap<MappingKey, u16>,
    by_port: BTreeMap<u16, Binding>,
    /// (expiry, public port) of every mapping that can expire, soonest first.
    expiry: BTreeSet<(Instant, u16)>,
    last_port: Option<u16>,
    stats: NatStats,
}

impl NatBox {
    /// A NAT box with no mappings, drawing ports from `rng`.
    ///
    /// # Errors
    ///
    /// When `params` fail [`NatParams::validate`].
    pub fn new(params: NatParams, public_ip: IpAddr, rng: Rng) -> Result<Self, NatError> {
        params.validate()?;
        Ok(Self {
            params,
            public_ip,
            rng,
            by_key: BTreeMap::new(),
            by_port: BTreeMap::new(),
            expiry: BTreeSet::new(),
            last_port: None,
            stats: NatStats::default(),
        })
    }

    /// The public address.
    pub fn public_ip(&self) -> IpAddr {
        self.public_ip
    }

    /// The behaviour.
    pub fn params(&self) -> &NatParams {
        &self.params
    }

    /// Whether packets from inside to the public address loop back in.
    pub fn hairpinning(&self) -> bool {
        self.params.hairpinning
    }

    /// Mappings held, including any that timed out since the last call
    /// that took `now` (see [`NatBox::expire`]).
    pub fn mapping_count(&self) -> usize {
        self.by_port.len()
    }

    /// The counters so far.
    pub fn stats(&self) -> &NatStats {
        &self.stats
    }

    /// A packet from inside `src` to outside `dst`: the translated (public)
    /// source, creating or refreshing the mapping; `None` when no port can be
    /// allocated (exhausted, counted).
    pub fn outbound(
        &mut self,
        now: Instant,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> Option<SocketAddr> {
        self.expire(now);
        let key = self.key(src, dst);
        let port = match self.by_key.get(&key) {
            Some(&port) => port,
            None => {
                let Some(port) = self.allocate(src.port()) else {
                    self.stats.exhausted += 1;
                    tracing::trace!(%src, %dst, "NAT exhausted");
                    return None;
                };
                self.by_key.insert(key, port);
                self.by_port.insert(
                    port,
                    Binding {
                        key,
                        expires: None,
                        remotes: VecDeque::new(),
                    },
                );
                self.last_port = Some(port);
                self.stats.mappings_created += 1;
                tracing::trace!(%src, %dst, port, "NAT mapping created");
                port
            }
        };
        self.refresh(port, now, dst);
        self.stats.outbound += 1;
        Some(SocketAddr::new(self.public_ip, port))
    }

    /// A packet from outside `src` to the public address `dst`: the inside
    /// destination when a live mapping for `dst`'s port exists and the
    /// filtering admits `src`; `None` otherwise (counted as filtered or
    /// unmapped). Inbound traffic never refreshes a mapping (RFC 4787 REQ-6).
    pub fn inbound(
        &mut self,
        now: Instant,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> Option<SocketAddr> {
        self.expire(now);
        let binding = (dst.ip() == self.public_ip)
            .then(|| self.by_port.get(&dst.port()))
            .flatten();
        let Some(binding) = binding else {
            self.stats.inbound_unmapped += 1;
            return None;
        };
        let admitted = match self.params.filtering {
            Filtering::EndpointIndependent => true,
            Filtering::AddressDependent => binding.remotes.iter().any(|r| r.ip() == src.ip()),
            Filtering::AddressPortDependent => binding.remotes.contains(&src),
        };
        if !admitted {
            self.stats.inbound_filtered += 1;
            return None;
        }
        self.stats.inbound_passed += 1;
        Some(binding.key.inside)
    }

    /// Forgets the mappings that timed out by `now`; [`NatBox::outbound`]
    /// and [`NatBox::inbound`] call it themselves.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(at, port)) = self.expiry.first() {
            if at > now {
                break;
            }
            self.expiry.pop_first();
            if let Some(binding) = self.by_port.remove(&port) {
                self.by_key.remove(&binding.key);
                self.stats.mappings_expired += 1;
                tracing::trace!(port, "NAT mapping expired");
            }
        }
    }

    /// Forgets every mapping (a NAT reboot): the next outbound packets get new
    /// mappings (and, unless preserving with a free port, new ports); this
    /// models "rebinding".
    pub fn rebind(&mut self, now: Instant) {
        // Count what had timed out anyway as expired, the rest as forgotten.
        self.expire(now);
        tracing::debug!(dropped = self.by_port.len(), "NAT rebind");
        self.clear();
    }

    /// A new public address; all mappings are dropped.
    pub fn set_public_ip(&mut self, ip: IpAddr) {
        tracing::debug!(old = %self.public_ip, new = %ip, "NAT public address change");
        self.public_ip = ip;
        self.clear();
    }

    fn clear(&mut self) {
        self.by_key.clear();
        self.by_port.clear();
        self.expiry.clear();
    }

    fn key(&self, src: SocketAddr, dst: SocketAddr) -> MappingKey {
        let (remote_ip, remote_port) = match self.params.mapping {
            Mapping::EndpointIndependent => (None, None),
            Mapping::AddressDependent => (Some(dst.ip()), None),
            Mapping::AddressPortDependent => (Some(dst.ip()), Some(dst.port())),
        };
        MappingKey {
            inside: src,
            remote_ip,
            remote_port,
        }
    }

    /// Restarts the mapping's timeout and remembers `dst` for filtering.
    fn refresh(&mut self, port: u16, now: Instant, dst: SocketAddr) {
        let Some(binding) = self.by_port.get_mut(&port) else {
            return;
        };
        if let Some(old) = binding.expires {
            self.expiry.remove(&(old, port));
        }
        // A timeout too long for `Instant` never expires.
        binding.expires = now.checked_add(self.params.mapping_timeout);
        if let Some(at) = binding.expires {
            self.expiry.insert((at, port));
        }
        // Most recent contact last; the oldest is evicted when full.
        if let Some(i) = binding.remotes.iter().position(|&r| r == dst) {
            binding.remotes.remove(i);
        } else if binding.remotes.len() >= MAX_REMOTES {
            binding.remotes.pop_front();
        }
        binding.remotes.push_back(dst);
    }

    /// A free public port for a new mapping from inside port `inside_port`,
    /// or `None` when the table or the port range is full.
    fn allocate(&mut self, inside_port: u16) -> Option<u16> {
        let used = self.by_port.len();
        if used >= self.params.max_mappings || used >= self.params.port_count() {
            return None;
        }
        let (first, last) = self.params.ports;
        match self.params.allocation {
            Allocation::Preserving
                if (first..=last).contains(&inside_port)
                    && !self.by_port.contains_key(&inside_port) =>
            {
                Some(inside_port)
            }
            Allocation::Preserving | Allocation::Sequential => Some(self.next_free_port()),
            Allocation::Random => Some(self.random_free_port()),
        }
    }

    /// The first free port after the last allocated one, wrapping in the
    /// range; the caller made sure one is free.
    fn next_free_port(&self) -> u16 {
        let (first, last) = self.params.ports;
        let mut port = match self.last_port {
            Some(p) if p >= first && p < last => p + 1,
            _ => first,
        };
        while self.by_port.contains_key(&port) {
            port = if port == last { first } else { port + 1 };
        }
        port
    }

    /// A port drawn uniformly among the free ones; the caller made sure one
    /// is free.
    fn random_free_port(&mut self) -> u16 {
        let (first, last) = self.params.ports;
        for _ in 0..RANDOM_TRIES {
            let port = self.rng.range(u64::from(first), u64::from(last) + 1) as u16;
            if !self.by_port.contains_key(&port) {
                return port;
            }
        }
        // Crowded: pick the k-th free port by walking the gaps between used ones.
        let free = self.params.port_count() - self.by_port.len();
        let mut k = self.rng.range(0, free as u64) as u32;
        let mut gap_start = u32::from(first);
        for &used in self.by_port.keys() {
            let gap = u32::from(used) - gap_start;
            if k < gap {
                break;
            }
            k -= gap;
            gap_start = u32::from(used) + 1;
        }
        (gap_start + k) as u16
    }
}
