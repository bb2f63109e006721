//! Bounded birthday probing (DESIGN §7), an opt-in for one *hard* side: a
//! NAT that maps per destination and picks ports at random, facing an
//! *easy* side whose NAT keeps one mapping for every port of the hard
//! side's address (it maps independently of the destination, or per
//! destination address with ports it allocates predictably) but filters
//! by address and port. The hard side's mapping towards the easy
//! side cannot be learnt, and the easy side's NAT lets nothing in from a
//! port it has not sent to, so the simple punch cannot meet. A NAT that
//! maps per destination *and port* with predictable ports is an easy side
//! too: each of its probes leaves through a new mapping, and the answer
//! to the one that lands comes back through exactly that mapping. That
//! meets a hard side that maps per destination address and filters by
//! address at most, and costs a mapping in its own NAT per probe (as many
//! as the hard side's sockets make in its own), so such a side sprays only
//! once the peer's pings have said its NAT maps per address with random
//! ports ([`crate::wire::control::PING_HARD_BY_ADDRESS`]).
//!
//! Once a punch has gone [`super::BirthdayConfig::after`] without a direct path:
//! - the hard side opens [`super::BirthdayConfig::sockets`] temporary sockets and
//!   pings the peer's public candidates once from each, the first
//!   candidate from every socket before the second from any: every socket
//!   gets its own outside port towards the easy side, and the likeliest
//!   candidate gets all of them first;
//! - the easy side pings [`super::BirthdayConfig::probes`] random ports of the
//!   hard side's public address from its mesh socket.
//!
//! A probe that lands on one of those ports crosses the hard NAT (the
//! mapping was made towards exactly the easy side's address) and reaches a
//! temporary socket as an authentic ping. The hard side answers, and from
//! then on its path to the easy side leaves from that socket (the
//! association's other traffic stays on its mesh socket); the easy side
//! learns the port from the answer, and pings it. The answer also goes
//! through the relay path when one is up: a NAT keeps a bounded number of
//! destinations per mapping, and on long round trips the spray has pushed
//! the landed port out of the easy side's NAT before the straight answer
//! comes back (two nodes on 150 ms access links never met without it).
//! With `k` sockets mapped towards the
//! easy side's port and `n` probes over a range of `r` ports the chance is
//! about `1 - exp(-k·n/r)`: 256 and 1,024
//! over 64,512 ports give 98 %, 256 and 2,048 give 99.97 %. Both sides send at most
//! [`super::BirthdayConfig::rate_per_s`] packets a second and stop after
//! [`super::BirthdayConfig::lifetime`]; the other sockets close once a path
//! through one of them answers. Every probe is a mesh control packet;
//! data is never touched.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::reflexive::{NatAllocation, NatClass, NatMapping};
use super::{DataPlane, PathKind, Timer, ADDR_LEN};
use crate::id::{AssocId, SocketId, UplinkId};
use crate::machine::{Output, Transmit};
use crate::wire::{ControlBody, ControlRepr};

/// The outside ports an easy side draws from (a NAT's usual range).
const PORTS: (u16, u16) = (1024, 65535);

/// Which side of a birthday attempt this node is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Opens temporary sockets.
    Hard,
    /// Probes random ports of the peer.
    Easy,
}

/// One birthday attempt of an association.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    pub(crate) role: Role,
    pub(crate) uplink: UplinkId,
    /// It stops then.
    pub(crate) ends: Instant,
    /// The peer's public candidates (hard side: what each socket pings;
    /// easy side: the first one's address gets the probes).
    pub(crate) targets: Vec<SocketAddr>,
    /// Hard side: the temporary sockets and where each is bound.
    pub(crate) sockets: BTreeMap<SocketId, Option<SocketAddr>>,
    /// Hard side: each bound socket's next ping, as (target index,
    /// socket); the lowest goes first, so every socket pings the first
    /// target before any pings the second (see [`DataPlane::birthday_tick`]).
    pub(crate) due: BTreeSet<(usize, SocketId)>,
    /// Easy side: where each probe went, by txid, until it is answered
    /// (at most [`BirthdayConfig::probes`](super::punch::BirthdayConfig)).
    pub(crate) probed: BTreeMap<u64, SocketAddr>,
    /// Packets sent.
    pub(crate) sent: u32,
    /// When the last one went.
    pub(crate) last: Option<Instant>,
    /// The attempt is over (won, or out of time).
    pub(crate) over: bool,
}

/// This socket's role in an attempt, from what the reflectors say of its
/// NAT; `None` where birthday probing cannot help. `peer_hard_by_address`:
/// the peer's pings said its NAT maps per destination address with random
/// ports, the one hard side a NAT that maps per destination and port can
/// meet.
pub(crate) fn role_of(class: &NatClass, peer_hard_by_address: bool) -> Option<Role> {
    match (class.mapping, class.allocation) {
        (mapping, NatAllocation::Random) if mapping.per_destination() => Some(Role::Hard),
        (NatMapping::EndpointIndependent, _) => Some(Role::Easy),
        // One mapping towards the hard side's address, whatever port is
        // probed, and the hard side knows it: it was predicted.
        (
            NatMapping::AddressDependent,
            NatAllocation::Sequential { .. } | NatAllocation::Preserving,
        ) => Some(Role::Easy),
        // A new mapping per probe, predictably: the answer to the probe
        // that lands comes back through its mapping, if the hard side maps
        // per address (its socket's one mapping towards this address is
        // what the probe hit) and filters by address at most. Each probe
        // costs a mapping in this side's NAT, so only against a peer that
        // said it is hard by address.
        (
            NatMapping::EndpointDependent,
            NatAllocation::Sequential { .. } | NatAllocation::Preserving,
        ) if peer_hard_by_address => Some(Role::Easy),
        _ => None,
    }
}

/// Whether a socket's NAT is hard by address: it maps per destination
/// address and picks ports at random (its pings say so, see
/// [`crate::wire::control::PING_HARD_BY_ADDRESS`]).
pub(crate) fn hard_by_address(class: &NatClass) -> bool {
    class.mapping == NatMapping::AddressDependent && class.allocation == NatAllocation::Random
}

impl Attempt {
    /// Easy side: the port a probe answered by `txid` went to, once.
    pub(crate) fn landed(&mut self, txid: u64) -> Option<SocketAddr> {
        self.probed.remove(&txid)
    }
}

impl DataPlane {
    /// Schedules a birthday attempt `after` the punch at `now`, unless one
    /// is under way.
    pub(super) fn plan_birthday(&mut self, now: Instant, id: AssocId) {
        let Some(config) = self.config.punch.birthday else {
            return;
        };
        let Some(assoc) = self.assocs.get_mut(&id) else {
            return;
        };
        if assoc.birthday.as_ref().is_some_and(|a| !a.over) {
            return;
        }
        assoc.birthday = None;
        assoc.birthday_declined = false;
        self.timers.set(Timer::Birthday(id), now + config.after);
    }

    /// A ping of the peer said its NAT is hard by address (the first such
    /// since the association was installed): a side that can meet only
    /// such a peer, and declined an attempt before it knew, starts one now.
    pub(super) fn peer_said_hard(&mut self, now: Instant, id: AssocId) {
        let Some(assoc) = self.assocs.get(&id) else {
            return;
        };
        if assoc.birthday_declined
            && assoc.birthday.is_none()
            && self.timers.get(Timer::Birthday(id)).is_none()
        {
            self.timers.set(Timer::Birthday(id), now);
        }
    }

    /// The birthday timer: starts an attempt, sends its next packet within
    /// the rate, or ends it.
    pub(super) fn birthday_tick(&mut self, now: Instant, id: AssocId) {
        let Some(config) = self.config.punch.birthday else {
            return;
        };
        let Some(assoc) = self.assocs.get_mut(&id) else {
            return;
        };
        let direct_up = assoc.direct_up();
        // The policy bits the probes carry, like every ping from the uplink.
        let policy = assoc.birthday.as_ref().map_or(0, |a| {
            super::ping_policy(assoc.policy(a.uplink)) | super::nat_bits(assoc, a.uplink)
        });
        let key = assoc.send_key(now).clone();
        let Some(attempt) = assoc.birthday.as_mut() else {
            if !direct_up {
                self.start_birthday(now, id);
            }
            if let Some(assoc) = self.assocs.get_mut(&id) {
                assoc.birthday_declined = assoc.birthday.is_none();
            }
            return;
        };
        if attempt.over {
            return;
        }
        if direct_up || now >= attempt.ends {
            self.end_birthday(id);
            return;
        }
        let gap = Duration::from_secs(1) / config.rate_per_s.max(1);
        if attempt.last.is_some_and(|at| now < at + gap) {
            let at = attempt.last.map_or(now, |at| at + gap);
            self.timers.set(Timer::Birthday(id), at.min(attempt.ends));
            return;
        }
        let Some(mesh) = assoc.mesh.get(&attempt.uplink) else {
            return;
        };
        let mut send = None;
        match attempt.role {
            Role::Easy if attempt.sent < config.probes => {
                let ip = attempt.targets[0].ip();
                let port = self.rng.range(u64::from(PORTS.0), u64::from(PORTS.1) + 1) as u16;
                send = Some((mesh.socket, SocketAddr::new(ip, port)));
            }
            Role::Hard => {
                // Every socket pings the first target (the peer's likeliest
                // mapping) before any pings the next: a probe of the easy
                // side can only land on a mapping made towards its own
                // port, and pinging each socket's targets in turn made
                // those for the first target slowly (8 targets at the
                // default rate: 69 of 256 in the first 2.2 s, and 1 seed
                // in 5 found none against an `adm` easy side).
                if let Some((index, socket)) = attempt.due.pop_first() {
                    send = Some((socket, attempt.targets[index]));
                    if index + 1 < attempt.targets.len() {
                        attempt.due.insert((index + 1, socket));
                    }
                }
            }
            Role::Easy => {}
        }
        let next = if let Some((socket, dst)) = send {
            attempt.sent += 1;
            attempt.last = Some(now);
            assoc.counters.birthday_probes += 1;
            let txid = self.rng.next_u64();
            if attempt.role == Role::Easy {
                attempt.probed.insert(txid, dst);
            }
            let ping = ControlRepr {
                txid,
                timestamp_us: self.config.wall_clock.unix_us(now),
                body: ControlBody::Ping {
                    pad: ADDR_LEN as u16,
                    policy,
                },
            };
            self.outputs.push_back(Output::Transmit(Transmit {
                socket,
                dst,
                payload: ping.to_bytes(&key),
            }));
            now + gap
        } else {
            // Nothing to send until a socket binds, or the probes are
            // spent: wait for the end (or a path).
            attempt.ends.min(now + gap.max(Duration::from_millis(50)))
        };
        self.timers.set(Timer::Birthday(id), next.min(attempt.ends));
    }

    /// Starts an attempt on the first uplink whose NAT gives this node a
    /// role, towards the peer's public candidates of its address family.
    fn start_birthday(&mut self, now: Instant, id: AssocId) {
        let Some(config) = self.config.punch.birthday else {
            return;
        };
        let Some(assoc) = self.assocs.get(&id) else {
            return;
        };
        let chosen = assoc.mesh.iter().find_map(|(&uplink, m)| {
            let local = m.local?;
            let role = role_of(&NatClass::of(local, &m.reflect), assoc.peer_hard_by_address)?;
            let targets: Vec<SocketAddr> = assoc
                .spec
                .remotes
                .iter()
                .copied()
                .filter(|r| {
                    PathKind::of(*r) == PathKind::DirectPublic && r.is_ipv4() == local.is_ipv4()
                })
                .collect();
            (!targets.is_empty()).then_some((uplink, local.ip(), role, targets))
        });
        let Some((uplink, bind, role, targets)) = chosen else {
            return;
        };
        tracing::debug!(assoc = %id, ?role, targets = targets.len(), "birthday probing");
        let mut attempt = Attempt {
            role,
            uplink,
            ends: now + config.lifetime,
            targets,
            sockets: BTreeMap::new(),
            due: BTreeSet::new(),
            probed: BTreeMap::new(),
            sent: 0,
            last: None,
            over: false,
        };
        if role == Role::Hard {
            for _ in 0..config.sockets {
                self.next_socket += 1;
                let socket = SocketId(self.next_socket);
                self.birthday_sockets.insert(socket, (id, uplink));
                attempt.sockets.insert(socket, None);
                self.outputs.push_back(Output::BindSocket {
                    socket,
                    local: SocketAddr::new(bind, 0),
                });
            }
        }
        let Some(assoc) = self.assocs.get_mut(&id) else {
            return;
        };
        assoc.counters.birthday_sockets +=
            u64::from(config.sockets) * u64::from(role == Role::Hard);
        assoc.birthday = Some(attempt);
        self.timers.set(Timer::Birthday(id), now);
    }

    /// A temporary socket is bound: it pings when the rate allows.
    pub(super) fn birthday_bound(&mut self, now: Instant, socket: SocketId, local: SocketAddr) {
        let Some(&(id, _)) = self.birthday_sockets.get(&socket) else {
            return;
        };
        let Some(attempt) = self.assocs.get_mut(&id).and_then(|a| a.birthday.as_mut()) else {
            return;
        };
        if attempt.over {
            return;
        }
        if let Some(slot) = attempt.sockets.get_mut(&socket) {
            *slot = Some(local);
            attempt.due.insert((0, socket));
        }
        // The tick keeps the rate; it only needs to look now.
        if self
            .timers
            .get(Timer::Birthday(id))
            .is_none_or(|at| at > now)
        {
            self.timers.set(Timer::Birthday(id), now);
        }
    }

    /// Ends an attempt: closes every temporary socket no path leaves from.
    pub(super) fn end_birthday(&mut self, id: AssocId) {
        let Some(assoc) = self.assocs.get_mut(&id) else {
            return;
        };
        let Some(attempt) = assoc.birthday.as_mut() else {
            return;
        };
        attempt.over = true;
        attempt.probed.clear();
        self.timers.stop(Timer::Birthday(id));
        let kept: Vec<SocketId> = assoc.paths.values().filter_map(|p| p.via).collect();
        let sockets: Vec<SocketId> = std::mem::take(&mut attempt.sockets).into_keys().collect();
        attempt.due.clear();
        for socket in sockets {
            if kept.contains(&socket) {
                continue;
            }
            self.birthday_sockets.remove(&socket);
            self.outputs.push_back(Output::CloseSocket { socket });
        }
        tracing::debug!(assoc = %id, sent = attempt.sent, kept = kept.len(), "birthday probing over");
    }

    /// Closes every temporary socket of `id` (withdrawn), or of one of its
    /// uplinks.
    pub(super) fn close_birthday(&mut self, id: AssocId, uplink: Option<UplinkId>) {
        let gone: Vec<SocketId> = self
            .birthday_sockets
            .iter()
            .filter(|(_, &(a, u))| a == id && uplink.is_none_or(|x| x == u))
            .map(|(&s, _)| s)
            .collect();
        for socket in gone {
            self.birthday_sockets.remove(&socket);
            self.outputs.push_back(Output::CloseSocket { socket });
        }
        if let Some(assoc) = self.assocs.get_mut(&id) {
            if uplink.is_none_or(|u| assoc.birthday.as_ref().is_some_and(|a| a.uplink == u)) {
                if let Some(attempt) = assoc.birthday.as_mut() {
                    attempt.over = true;
                    attempt.probed.clear();
                    attempt.sockets.clear();
                    attempt.due.clear();
                }
                self.timers.stop(Timer::Birthday(id));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role_of_alone(class: &NatClass) -> Option<Role> {
        role_of(class, false)
    }

    fn class(mapping: NatMapping, allocation: NatAllocation) -> NatClass {
        NatClass {
            mapping,
            allocation,
            reflexive: None,
        }
    }

    #[test]
    fn only_a_random_per_destination_nat_is_hard_and_a_predictable_one_is_easy() {
        use NatAllocation::{Preserving, Random, Sequential, Unknown};
        use NatMapping::{EndpointDependent, EndpointIndependent};
        assert_eq!(
            role_of_alone(&class(EndpointDependent, Random)),
            Some(Role::Hard)
        );
        assert_eq!(
            role_of_alone(&class(EndpointIndependent, Unknown)),
            Some(Role::Easy)
        );
        assert_eq!(
            role_of_alone(&class(EndpointIndependent, Random)),
            Some(Role::Easy)
        );
        // Per destination and port, predictably: every probe makes a new
        // mapping, and the answer of a peer hard by address comes back
        // through it; only against a peer that said it is.
        for allocation in [Sequential { step: 1 }, Preserving] {
            let apdm = class(EndpointDependent, allocation);
            assert_eq!(role_of(&apdm, false), None);
            assert_eq!(role_of(&apdm, true), Some(Role::Easy));
        }
        assert!(hard_by_address(&class(
            NatMapping::AddressDependent,
            Random
        )));
        assert!(!hard_by_address(&class(EndpointDependent, Random)));
        // Per destination address, predictably: one known mapping towards
        // the hard side, so it can be easy; at random it is hard itself.
        use NatMapping::AddressDependent;
        for allocation in [Sequential { step: 2 }, Preserving] {
            assert_eq!(
                role_of_alone(&class(AddressDependent, allocation)),
                Some(Role::Easy)
            );
        }
        assert_eq!(
            role_of_alone(&class(AddressDependent, Random)),
            Some(Role::Hard)
        );
        assert_eq!(role_of_alone(&class(AddressDependent, Unknown)), None);
        assert_eq!(role_of_alone(&class(NatMapping::Unknown, Unknown)), None);
        assert_eq!(role_of_alone(&class(NatMapping::None, Unknown)), None);
    }
}
