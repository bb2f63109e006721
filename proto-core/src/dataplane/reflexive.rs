//! What the coordinator's reflectors say about each mesh socket (DESIGN
//! §5, §7): the address a reflector saw a request come from is the
//! socket's server-reflexive candidate; the addresses two reflectors saw
//! for the same socket, compared, classify the NAT in front of it.
//!
//! Classification, from one socket's answers (the first reflector is the
//! coordinator address of the session, the others are extra addresses the
//! coordinator announces):
//!
//! - the first answer equals the socket's own address: no NAT;
//! - every answer the same address: endpoint-independent mapping, and then
//!   the peer can reach the socket at that address (subject to filtering);
//! - answers differ: the mapping depends on the destination, so no peer
//!   will see the reflexive address. Two reflectors on one IP address
//!   (different ports) tell more: the same answer from both means the
//!   mapping depends on the destination's address only (one port per peer
//!   address, whatever port of it is sent to), different answers that it
//!   depends on the port too. Ports that grow by a small step from
//!   one answer to the next are a sequential allocator, and the next
//!   mappings are predicted from the last port; otherwise allocation is
//!   random (or preserving when the first answer kept the socket's port),
//!   and the reflexive address is offered anyway: its port is useless but
//!   the peer's probes to its address open an address-filtering NAT.
//!
//! With only one reflector answering, the mapping is unknown and the
//! reflexive address is advertised as it is.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Answers are asked for again this often, to follow a public address that
/// changes (a NAT reboot, a new lease); each request also refreshes the
/// NAT mapping towards the reflector.
pub const REFLECT_REFRESH: Duration = Duration::from_secs(25);

/// How many ports past the last one seen are predicted for a sequential
/// allocator (each one a candidate the peer probes).
pub const PREDICTED_PORTS: u16 = 8;

/// Largest step between two consecutive mappings still taken as a
/// sequential allocator (other hosts behind the NAT take ports too).
pub const SEQUENTIAL_MAX_STEP: u16 = 16;

/// One reflector's view of one mesh socket.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Slot {
    /// The reflector's address.
    pub(crate) reflector: Option<SocketAddr>,
    /// The address the reflector saw, once it answered.
    pub(crate) observed: Option<SocketAddr>,
    /// The transaction id of the request in flight, and when it left.
    pub(crate) pending: Option<(u64, Instant)>,
    /// The transaction ids of the requests before it since the last
    /// answer: an answer to one of them counts too, so a reflector whose
    /// round trip is longer than the retry interval is still heard.
    pub(crate) earlier: [Option<u64>; EARLIER_REQUESTS],
    /// When it last answered.
    pub(crate) answered_at: Option<Instant>,
    /// Requests sent since the last answer.
    pub(crate) tries: u8,
}

/// Requests a silent reflector gets before a socket's candidates are
/// offered without its answer.
pub const SILENT_AFTER: u8 = 3;

/// Earlier requests whose answer still counts: with the request in
/// flight, a reflector is heard whose round trip is up to three retry
/// intervals (750 ms at the default 250 ms).
const EARLIER_REQUESTS: usize = 2;

/// Whether a socket's answers are complete enough to offer candidates:
/// every reflector answered, or those still silent were asked
/// [`SILENT_AFTER`] times. Offering the first answer alone would be
/// wrong for a NAT whose mapping depends on the destination (its
/// reflexive address reaches nobody), and each useless candidate costs
/// the peer a mapping, which breaks port prediction on its side.
pub(crate) fn settled(slots: &[Slot]) -> bool {
    slots.iter().any(|s| s.observed.is_some())
        && slots
            .iter()
            .all(|s| s.observed.is_some() || s.tries >= SILENT_AFTER)
}

impl Slot {
    /// The slot of the reflector at `reflector`, nothing asked yet.
    pub(crate) fn towards(reflector: SocketAddr) -> Self {
        Self {
            reflector: Some(reflector),
            ..Self::default()
        }
    }

    /// A request `txid` leaves at `now`.
    pub(crate) fn sent(&mut self, txid: u64, now: Instant) {
        if let Some((previous, _)) = self.pending.replace((txid, now)) {
            self.earlier.rotate_right(1);
            self.earlier[0] = Some(previous);
        }
        self.tries = self.tries.saturating_add(1);
    }

    /// Whether `txid` is one of the requests sent since the last answer.
    pub(crate) fn awaits(&self, txid: u64) -> bool {
        self.pending.is_some_and(|(t, _)| t == txid) || self.earlier.contains(&Some(txid))
    }

    /// The reflector answered at `now`, seeing `observed`.
    pub(crate) fn answered(&mut self, now: Instant, observed: SocketAddr) {
        self.pending = None;
        self.earlier = [None; EARLIER_REQUESTS];
        self.answered_at = Some(now);
        self.tries = 0;
        self.observed = Some(observed);
    }

    /// Whether to send a request now: never answered (retry each
    /// `interval`), or the answer is older than [`REFLECT_REFRESH`].
    pub(crate) fn due(&self, now: Instant, interval: Duration) -> bool {
        let recently_sent = self
            .pending
            .is_some_and(|(_, at)| now.saturating_duration_since(at) < interval);
        if recently_sent {
            return false;
        }
        self.answered_at
            .is_none_or(|at| now.saturating_duration_since(at) >= REFLECT_REFRESH)
    }
}

/// How a NAT maps an inside socket to outside addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatMapping {
    /// Not enough answers yet (or only one reflector).
    Unknown,
    /// The socket's own address is what the reflector sees: no NAT.
    None,
    /// One outside address for every destination.
    EndpointIndependent,
    /// A new outside address per destination: per destination address
    /// and port, or (without two reflectors on one address to tell) not
    /// known to be per address only.
    EndpointDependent,
    /// A new outside address per destination address; every port of one
    /// peer address shares it.
    AddressDependent,
}

impl NatMapping {
    /// A stable name for status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::None => "none",
            Self::EndpointIndependent => "endpoint-independent",
            Self::EndpointDependent => "endpoint-dependent",
            Self::AddressDependent => "address-dependent",
        }
    }

    /// Whether another destination gets another mapping.
    pub fn per_destination(self) -> bool {
        matches!(self, Self::EndpointDependent | Self::AddressDependent)
    }
}

/// How a NAT chooses the outside port of a new mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatAllocation {
    /// Not known (or not needed: one mapping serves every peer).
    Unknown,
    /// The inside port is kept.
    Preserving,
    /// Each new mapping takes the port `step` after the previous one.
    Sequential {
        /// The step seen between two consecutive mappings.
        step: u16,
    },
    /// No pattern.
    Random,
}

impl NatAllocation {
    /// A stable name for status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Preserving => "preserving",
            Self::Sequential { .. } => "sequential",
            Self::Random => "random",
        }
    }
}

/// What the reflectors' answers say about the NAT in front of a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatClass {
    /// Mapping behaviour.
    pub mapping: NatMapping,
    /// Port allocation behaviour.
    pub allocation: NatAllocation,
    /// The outside address the first reflector saw.
    pub reflexive: Option<SocketAddr>,
}

impl NatClass {
    /// Nothing known.
    pub const UNKNOWN: Self = Self {
        mapping: NatMapping::Unknown,
        allocation: NatAllocation::Unknown,
        reflexive: None,
    };

    /// Classifies one socket bound at `local` from its reflectors' answers
    /// (in reflector order).
    pub(crate) fn of(local: SocketAddr, slots: &[Slot]) -> Self {
        let seen = mappings(slots);
        let Some(&first) = seen.first() else {
            return Self::UNKNOWN;
        };
        let reflexive = Some(first);
        if first == local {
            return Self {
                mapping: NatMapping::None,
                allocation: NatAllocation::Unknown,
                reflexive,
            };
        }
        let preserving = first.port() == local.port();
        let answers = slots.iter().filter(|s| s.observed.is_some()).count();
        if answers < 2 {
            return Self {
                mapping: NatMapping::Unknown,
                allocation: if preserving {
                    NatAllocation::Preserving
                } else {
                    NatAllocation::Unknown
                },
                reflexive,
            };
        }
        if seen.len() == 1 {
            return Self {
                mapping: NatMapping::EndpointIndependent,
                allocation: if preserving {
                    NatAllocation::Preserving
                } else {
                    NatAllocation::Unknown
                },
                reflexive,
            };
        }
        let steps: Vec<u16> = seen
            .windows(2)
            .map(|w| w[1].port().wrapping_sub(w[0].port()))
            .collect();
        // Two reflectors on one address: did its two ports get one mapping?
        let mut per_address = None;
        for (i, a) in slots.iter().enumerate() {
            for b in &slots[i + 1..] {
                if let (Some(ra), Some(rb), Some(oa), Some(ob)) =
                    (a.reflector, b.reflector, a.observed, b.observed)
                {
                    if ra.ip() == rb.ip() && ra.port() != rb.port() {
                        per_address = Some(per_address.unwrap_or(true) && oa == ob);
                    }
                }
            }
        }
        let allocation = if steps
            .iter()
            .all(|&s| (1..=SEQUENTIAL_MAX_STEP).contains(&s))
        {
            NatAllocation::Sequential {
                step: steps.iter().copied().min().unwrap_or(1),
            }
        } else if preserving {
            NatAllocation::Preserving
        } else {
            NatAllocation::Random
        };
        Self {
            mapping: if per_address == Some(true) {
                NatMapping::AddressDependent
            } else {
                NatMapping::EndpointDependent
            },
            allocation,
            reflexive,
        }
    }

    /// The addresses a peer should probe to reach this socket through its
    /// NAT, besides host addresses: the reflexive one where the mapping
    /// serves every destination (or may), the next ports of a sequential
    /// allocator where it does not. `last` is the last outside address
    /// the reflectors saw.
    pub fn candidates(&self, last: Option<SocketAddr>) -> Vec<(SocketAddr, Predicted)> {
        match (self.mapping, self.allocation) {
            (NatMapping::None, _) => Vec::new(),
            (
                NatMapping::EndpointDependent | NatMapping::AddressDependent,
                NatAllocation::Sequential { step },
            ) => {
                let Some(last) = last else {
                    return Vec::new();
                };
                (1..=PREDICTED_PORTS)
                    .filter_map(|k| {
                        let port = last.port().checked_add(step.checked_mul(k)?)?;
                        Some((SocketAddr::new(last.ip(), port), Predicted::Yes))
                    })
                    .collect()
            }
            // Another destination gets another mapping, so the port
            // reaches nobody but the reflector; the address is still
            // worth probing: that opens an address-filtering NAT on the
            // peer's side to whatever port this socket's probes come from.
            _ => self
                .reflexive
                .map(|r| vec![(r, Predicted::No)])
                .unwrap_or_default(),
        }
    }
}

/// Whether a candidate is a prediction or an address a reflector saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Predicted {
    /// Seen by a reflector.
    No,
    /// Predicted from a sequential allocator.
    Yes,
}

/// The outside addresses the reflectors saw, in reflector order, each once
/// (reflectors that share an address share a mapping behind a NAT that
/// maps per destination address).
fn mappings(slots: &[Slot]) -> Vec<SocketAddr> {
    let mut seen: Vec<SocketAddr> = Vec::with_capacity(slots.len());
    for observed in slots.iter().filter_map(|s| s.observed) {
        if !seen.contains(&observed) {
            seen.push(observed);
        }
    }
    seen
}

/// The newest outside address the reflectors saw for a socket: the last
/// mapping made, in reflector order (the highest port, for a sequential
/// allocator).
pub(crate) fn last_observed(slots: &[Slot]) -> Option<SocketAddr> {
    mappings(slots).last().copied()
}

/// Whether `ip` is where a reflector answered from.
pub(crate) fn reflector_index(reflectors: &[SocketAddr], src: SocketAddr) -> Option<usize> {
    reflectors.iter().position(|&r| r == src)
}

/// Whether an address is public enough to be worth a reflector's word:
/// reflection of a loopback socket is meaningless.
pub(crate) fn reflectable(local: IpAddr) -> bool {
    !local.is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("an address")
    }

    fn slots(seen: &[&str]) -> Vec<Slot> {
        seen.iter()
            .map(|s| Slot {
                observed: Some(addr(s)),
                ..Slot::default()
            })
            .collect()
    }

    #[test]
    fn a_public_socket_has_no_nat_and_no_extra_candidates() {
        let local = addr("198.51.100.7:4000");
        let class = NatClass::of(local, &slots(&["198.51.100.7:4000", "198.51.100.7:4000"]));
        assert_eq!(class.mapping, NatMapping::None);
        assert!(class.candidates(Some(local)).is_empty());
    }

    #[test]
    fn one_mapping_for_every_destination_is_endpoint_independent() {
        let local = addr("10.0.0.2:4000");
        let s = slots(&["203.0.113.5:4000", "203.0.113.5:4000"]);
        let class = NatClass::of(local, &s);
        assert_eq!(class.mapping, NatMapping::EndpointIndependent);
        assert_eq!(class.allocation, NatAllocation::Preserving);
        assert_eq!(
            class.candidates(last_observed(&s)),
            vec![(addr("203.0.113.5:4000"), Predicted::No)]
        );
    }

    #[test]
    fn consecutive_ports_per_destination_predict_the_next_ones() {
        let local = addr("10.0.0.2:4000");
        let s = slots(&["203.0.113.5:30001", "203.0.113.5:30002"]);
        let class = NatClass::of(local, &s);
        assert_eq!(class.mapping, NatMapping::EndpointDependent);
        assert_eq!(class.allocation, NatAllocation::Sequential { step: 1 });
        let predicted = class.candidates(last_observed(&s));
        assert_eq!(predicted.len(), usize::from(PREDICTED_PORTS));
        assert_eq!(predicted[0], (addr("203.0.113.5:30003"), Predicted::Yes));
        assert_eq!(predicted[7].0, addr("203.0.113.5:30010"));
    }

    #[test]
    fn unrelated_ports_per_destination_are_random_and_advertise_the_address() {
        let local = addr("10.0.0.2:4000");
        let s = slots(&["203.0.113.5:30001", "203.0.113.5:51234"]);
        let class = NatClass::of(local, &s);
        assert_eq!(class.mapping, NatMapping::EndpointDependent);
        assert_eq!(class.allocation, NatAllocation::Random);
        assert_eq!(
            class.candidates(last_observed(&s)),
            vec![(addr("203.0.113.5:30001"), Predicted::No)]
        );
    }

    fn towards(pairs: &[(&str, &str)]) -> Vec<Slot> {
        pairs
            .iter()
            .map(|(reflector, seen)| Slot {
                observed: Some(addr(seen)),
                ..Slot::towards(addr(reflector))
            })
            .collect()
    }

    #[test]
    fn two_reflectors_on_one_address_tell_an_address_dependent_mapping() {
        let local = addr("10.0.0.2:4000");
        // The first and third reflectors share an address: one mapping for
        // both, and the prediction continues after the second's.
        let s = towards(&[
            ("192.0.2.1:7443", "203.0.113.5:30001"),
            ("192.0.2.9:7443", "203.0.113.5:30002"),
            ("192.0.2.1:7444", "203.0.113.5:30001"),
        ]);
        let class = NatClass::of(local, &s);
        assert_eq!(class.mapping, NatMapping::AddressDependent);
        assert_eq!(class.allocation, NatAllocation::Sequential { step: 1 });
        let predicted = class.candidates(last_observed(&s));
        assert_eq!(predicted[0], (addr("203.0.113.5:30003"), Predicted::Yes));
        // A new mapping for the other port: it depends on the port too.
        let s = towards(&[
            ("192.0.2.1:7443", "203.0.113.5:30001"),
            ("192.0.2.9:7443", "203.0.113.5:30002"),
            ("192.0.2.1:7444", "203.0.113.5:30003"),
        ]);
        let class = NatClass::of(local, &s);
        assert_eq!(class.mapping, NatMapping::EndpointDependent);
        assert_eq!(class.allocation, NatAllocation::Sequential { step: 1 });
        assert_eq!(
            class.candidates(last_observed(&s))[0].0,
            addr("203.0.113.5:30004")
        );
        // One mapping for everything stays endpoint-independent.
        let s = towards(&[
            ("192.0.2.1:7443", "203.0.113.5:30001"),
            ("192.0.2.9:7443", "203.0.113.5:30001"),
            ("192.0.2.1:7444", "203.0.113.5:30001"),
        ]);
        assert_eq!(
            NatClass::of(local, &s).mapping,
            NatMapping::EndpointIndependent
        );
    }

    #[test]
    fn one_reflector_leaves_the_mapping_unknown_and_advertises_what_it_saw() {
        let local = addr("10.0.0.2:4000");
        let s = slots(&["203.0.113.5:30001"]);
        let class = NatClass::of(local, &s);
        assert_eq!(class.mapping, NatMapping::Unknown);
        assert_eq!(
            class.candidates(last_observed(&s)),
            vec![(addr("203.0.113.5:30001"), Predicted::No)]
        );
    }

    #[test]
    fn predictions_stop_at_the_top_of_the_port_range() {
        let local = addr("10.0.0.2:4000");
        let s = slots(&["203.0.113.5:65532", "203.0.113.5:65533"]);
        let class = NatClass::of(local, &s);
        assert_eq!(class.candidates(last_observed(&s)).len(), 2);
    }

    #[test]
    fn a_slot_is_asked_again_after_the_refresh_and_not_while_in_flight() {
        let t0 = crate::test_epoch();
        let interval = Duration::from_millis(250);
        let mut slot = Slot::default();
        assert!(slot.due(t0, interval));
        slot.pending = Some((1, t0));
        assert!(!slot.due(t0 + Duration::from_millis(100), interval));
        assert!(slot.due(t0 + interval, interval));
        slot.answered_at = Some(t0);
        slot.pending = Some((1, t0));
        assert!(!slot.due(t0 + Duration::from_secs(1), interval));
        assert!(slot.due(t0 + REFLECT_REFRESH, interval));
    }
}
