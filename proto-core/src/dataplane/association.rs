//! An installed association: its ingress binding, one mesh socket per
//! uplink, its key (and the previous one for a while after a rekey) and
//! replay cache, and its paths.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use smallvec::SmallVec;

use super::events::PathHistory;
use super::path::{Path, PathState, Traffic};
use super::scheduler::{self, Candidate, Reason, SchedulerConfig};
use super::{AssociationSpec, DataPlane, DataPlaneError, UplinkPolicy};
use crate::id::{AssocId, PathId, SocketId, UplinkId};
use crate::replay::ReplayCache;
use crate::wire::{classify, AuthKey, Classified, KEY_LEN};

/// Remote addresses tracked per association (configured plus learned).
pub const MAX_PATHS: usize = 32;
const REPLAY_WINDOW_US: u64 = 10_000_000;
/// Control transactions remembered per association against replays.
pub const REPLAY_CAPACITY: usize = 4_096;
/// How long after a rekey control packets under the previous key are still
/// accepted: the coordinator pushes the new key to both ends at once, but
/// they get it a round trip or so apart, and an end may be reconnecting.
pub const PREVIOUS_KEY_GRACE: Duration = Duration::from_secs(60);

/// Counters of one association.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AssocCounters {
    /// Data from the local service carried into the mesh.
    pub ingress: Traffic,
    /// Data from the mesh delivered to the local service.
    pub delivered: Traffic,
    /// Ingress datagrams from anyone but the service target, dropped.
    pub ingress_foreign: u64,
    /// Ingress datagrams dropped because no path was active.
    pub no_path: u64,
    /// Mesh data from a source that is not a validated path, dropped.
    pub unvalidated: u64,
    /// Control packets refused as replays.
    pub replays: u64,
    /// Authentic control packets that were not understood or not expected.
    pub unexpected_control: u64,
    /// Remote addresses not tracked because the path table was full.
    pub paths_refused: u64,
    /// Control packets accepted under the previous key after a rekey.
    pub previous_key: u64,
    /// Paths dropped to make room for a new address (never an active one).
    pub paths_evicted: u64,
    /// Data from a new address dropped unchallenged: the probe interval's
    /// budget of challenges for addresses learned from data was spent.
    pub challenges_suppressed: u64,
    /// Birthday probes sent (easy side), or pings from temporary sockets
    /// (hard side).
    pub birthday_probes: u64,
    /// Temporary sockets opened for birthday probing.
    pub birthday_sockets: u64,
}

/// Challenges to new addresses learned from data, per probe interval.
pub(crate) const DATA_CHALLENGES: u32 = 8;

/// How a path's remote address became known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Learned {
    /// From the coordinator (a candidate) or an authentic control packet.
    Trusted,
    /// From data on a mesh socket, which anyone can send: the address is
    /// challenged by that datagram (within a budget per probe interval) but
    /// never probed on a timer until it proves the key, so a spoofed source
    /// cannot make us ping a victim.
    FromData,
}

/// A mesh socket of one association on one uplink.
#[derive(Debug, Clone)]
pub(crate) struct MeshSocket {
    pub(crate) socket: SocketId,
    pub(crate) local: Option<SocketAddr>,
    /// What each reflector saw of it, in reflector order.
    pub(crate) reflect: Vec<super::reflexive::Slot>,
}

#[derive(Debug)]
pub(crate) struct Association {
    pub(crate) spec: AssociationSpec,
    pub(crate) key: AuthKey,
    /// The key before the last rekey, accepted until the instant given.
    previous_key: Option<(AuthKey, Instant)>,
    /// Whether the last authentic control packet came under the previous
    /// key: an answer goes back under the key its request used, so a peer
    /// that has not got the new key yet keeps its paths.
    answer_previous: bool,
    /// Whether the peer has shown it holds the current key: a packet
    /// authentic under it, or a ping under the previous key that says its
    /// sender holds a newer one. Until then, what this end sends on its
    /// own goes under the previous key (during its grace), so a peer that
    /// lags never gets a control packet it cannot tell from data.
    peer_has_key: bool,
    pub(crate) ingress_socket: SocketId,
    pub(crate) ingress_local: Option<SocketAddr>,
    pub(crate) mesh: BTreeMap<UplinkId, MeshSocket>,
    pub(crate) paths: BTreeMap<(UplinkId, SocketAddr), Path>,
    pub(crate) replay: ReplayCache,
    pub(crate) counters: AssocCounters,
    next_path: u32,
    /// The path data went on last, to report switches.
    pub(crate) current: Option<PathId>,
    /// Challenges to addresses learned from data: the start of the current
    /// window and how many were sent in it.
    challenge_window: Option<Instant>,
    challenges: u32,
    /// The uplinks' policies, for new paths and for scheduling.
    policies: BTreeMap<UplinkId, UplinkPolicy>,
    pub(crate) sched: SchedulerConfig,
    /// The path the previous data packet went on.
    previous: Option<(UplinkId, SocketAddr)>,
    /// Last data from the local service, to probe busy paths fast.
    pub(crate) last_ingress: Option<Instant>,
    /// This node's leg of the association's relay allocation, if offered.
    pub(crate) relay: Option<super::relay_leg::RelayBinding>,
    /// The leg of an allocation `relay` replaces: its paths stay, below
    /// the new allocation's, until the coordinator releases it, so data
    /// never waits for the new one to validate (make-before-break).
    pub(crate) retiring: Option<super::relay_leg::RelayBinding>,
    /// When the peer's candidates were first probed.
    pub(crate) first_probe: Option<Instant>,
    /// The coordinated punch and the pacing of candidate probes.
    pub(crate) pacer: super::punch::Pacer,
    /// The current or last birthday probing attempt.
    pub(crate) birthday: Option<super::birthday::Attempt>,
    /// A ping of the peer said its NAT is hard by address
    /// ([`crate::wire::control::PING_HARD_BY_ADDRESS`]).
    pub(crate) peer_hard_by_address: bool,
    /// The last punch's birthday timer found no role for this end (see
    /// [`super::DataPlane::peer_said_hard`]).
    pub(crate) birthday_declined: bool,
    /// What happened to its paths lately, for operators.
    pub(crate) history: PathHistory,
}

/// A path's share and the reason for it, as the scheduler sees it now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PathChoice {
    /// The path.
    pub path: PathId,
    /// Its planned share of the traffic (the shares sum to 1).
    pub weight: f64,
    /// Why it gets that share.
    pub reason: Reason,
}

impl Association {
    pub(crate) fn new(
        spec: AssociationSpec,
        ingress_socket: SocketId,
        policies: BTreeMap<UplinkId, UplinkPolicy>,
        sched: SchedulerConfig,
    ) -> Self {
        Self {
            key: AuthKey::new(&spec.key),
            previous_key: None,
            answer_previous: false,
            peer_has_key: true,
            spec,
            ingress_socket,
            ingress_local: None,
            mesh: BTreeMap::new(),
            paths: BTreeMap::new(),
            replay: ReplayCache::new(REPLAY_WINDOW_US, REPLAY_CAPACITY),
            counters: AssocCounters::default(),
            next_path: 0,
            current: None,
            challenge_window: None,
            challenges: 0,
            policies,
            sched,
            previous: None,
            last_ingress: None,
            relay: None,
            retiring: None,
            first_probe: None,
            pacer: super::punch::Pacer::default(),
            birthday: None,
            peer_hard_by_address: false,
            birthday_declined: false,
            history: PathHistory::default(),
        }
    }

    /// Tells a control packet (authentic under the current key, or under
    /// the previous one during its grace period) from data. Data, by far
    /// the most of the traffic, fails the magic check before any tag is
    /// computed, so the second key costs it nothing.
    pub(crate) fn classify(&mut self, now: Instant, datagram: &[u8]) -> Classified {
        self.answer_previous = false;
        let current = classify(datagram, &self.key);
        if !matches!(current, Classified::Data) {
            return current;
        }
        let Some((previous, until)) = &self.previous_key else {
            return current;
        };
        if now >= *until {
            self.previous_key = None;
            return current;
        }
        let verdict = classify(datagram, previous);
        if !matches!(verdict, Classified::Data) {
            self.answer_previous = true;
            self.counters.previous_key += 1;
        }
        verdict
    }

    /// The key to answer the last control packet under: the one it came
    /// under.
    pub(crate) fn answer_key(&self) -> &AuthKey {
        match &self.previous_key {
            Some((previous, _)) if self.answer_previous => previous,
            _ => &self.key,
        }
    }

    /// The key to send a packet of this end's own under (a ping, a
    /// report): the current one once the peer has shown it holds it,
    /// until then the previous one while its grace lasts.
    pub(crate) fn send_key(&self, now: Instant) -> &AuthKey {
        match &self.previous_key {
            Some((previous, _)) if self.awaits_confirmation(now) => previous,
            _ => &self.key,
        }
    }

    /// True while this end sends under the previous key for want of the
    /// peer's confirmation: its pings then say it holds a newer key.
    pub(crate) fn awaits_confirmation(&self, now: Instant) -> bool {
        !self.peer_has_key
            && self
                .previous_key
                .as_ref()
                .is_some_and(|(_, until)| now < *until)
    }

    /// An authentic packet from the peer (not a reflector's answer, which
    /// the coordinator signs with the current key whatever the peer holds)
    /// was just classified: under the current key, the peer holds it.
    pub(crate) fn heard_peer(&mut self) {
        if !self.answer_previous {
            self.peer_has_key = true;
        }
    }

    /// A ping under the previous key said its sender holds a newer key:
    /// the current one.
    pub(crate) fn peer_holds_newer(&mut self) {
        if self.answer_previous {
            self.peer_has_key = true;
        }
    }

    /// Switches to a new key. The previous one is still accepted for
    /// `grace`, and sent under until the peer shows it holds the new one
    /// ([`send_key`](Self::send_key)). Paths, sockets and counters stay.
    pub(crate) fn rekey(&mut self, now: Instant, key: &[u8; KEY_LEN], grace: Duration) {
        let previous = std::mem::replace(&mut self.key, AuthKey::new(key));
        self.previous_key = Some((previous, now + grace));
        self.answer_previous = false;
        self.peer_has_key = false;
        self.spec.key = *key;
    }

    /// Takes one challenge for an address learned from data from the
    /// budget of `DATA_CHALLENGES` per `window`; false when it is spent.
    /// Under a flood of spoofed sources this keeps each datagram's cost at
    /// a lookup and a count. An authentic peer behind a new NAT mapping is
    /// not starved by it: its own pings, authenticated, teach the address.
    pub(crate) fn take_challenge(&mut self, now: Instant, window: Duration) -> bool {
        let start = self.challenge_window.get_or_insert(now);
        if now.saturating_duration_since(*start) >= window {
            *start = now;
            self.challenges = 0;
        }
        if self.challenges >= DATA_CHALLENGES {
            self.counters.challenges_suppressed += 1;
            return false;
        }
        self.challenges += 1;
        true
    }

    /// Adds a path to `remote` from every bound mesh socket, up to the bound.
    pub(crate) fn add_remote(&mut self, remote: SocketAddr) {
        let uplinks: Vec<UplinkId> = self.mesh.keys().copied().collect();
        for uplink in uplinks {
            self.add_path(uplink, remote, Learned::Trusted);
        }
    }

    /// Adds one path if it is new, making room if the table is full; true
    /// if it exists now. A trusted source vouches for a known address too.
    pub(crate) fn add_path(
        &mut self,
        uplink: UplinkId,
        remote: SocketAddr,
        learned: Learned,
    ) -> bool {
        if let Some(path) = self.paths.get_mut(&(uplink, remote)) {
            if learned == Learned::Trusted {
                path.unproven = false;
            }
            return true;
        }
        if self.paths.len() >= MAX_PATHS && !self.evict() {
            self.counters.paths_refused += 1;
            return false;
        }
        let id = PathId(self.next_path);
        self.next_path += 1;
        let policy = self.policies.get(&uplink).copied().unwrap_or_default();
        let mut path = Path::new(id, uplink, remote, &policy, &self.sched);
        path.unproven = learned == Learned::FromData;
        if let Some(r) = self.relay.as_ref().filter(|r| r.offer.relay == remote) {
            path.kind = r.offer.kind;
        }
        self.paths.insert((uplink, remote), path);
        true
    }

    /// The path the peer's traffic from `src` belongs to: the path to `src`
    /// when the peer answers it from there, else an active path whose
    /// answers come from `src` (the peer's NAT maps per destination), else
    /// the path to `src` whatever it is.
    pub(crate) fn path_from(
        &self,
        uplink: UplinkId,
        src: SocketAddr,
    ) -> Option<(UplinkId, SocketAddr)> {
        let key = (uplink, src);
        let exact = self.paths.get(&key);
        if exact.is_some_and(|p| p.answers_from.is_none()) {
            return Some(key);
        }
        self.paths
            .iter()
            .filter(|(k, p)| k.0 == uplink && p.answers_from == Some(src))
            .max_by_key(|(_, p)| p.state == PathState::Active)
            .map(|(k, _)| *k)
            .or(exact.map(|_| key))
    }

    /// Marks the paths that duplicate another. Where the peer's NAT maps
    /// per destination, every candidate port of it that lets a ping in
    /// validates, its answer leaving from yet another mapping, and all of
    /// them lead through the same two NATs: counted as separate paths,
    /// they would be scheduled as separate capacity. Of the paths heard
    /// within `fresh` to one peer address from one uplink, one carries: one
    /// answered from its own address if any (those are never marked), else
    /// the one active longest. The others stand by, validated.
    pub(crate) fn mark_redundant(&mut self, now: Instant, fresh: Duration) {
        let mut carrier: BTreeMap<(UplinkId, IpAddr), (bool, Option<Instant>, PathId)> =
            BTreeMap::new();
        let heard = |p: &Path| {
            p.state == PathState::Active
                && !p.kind.is_relay()
                && p.last_heard
                    .is_some_and(|at| now.saturating_duration_since(at) <= fresh)
        };
        for p in self.paths.values().filter(|p| heard(p)) {
            let rank = (p.answers_from.is_some(), p.active_since, p.id);
            carrier
                .entry((p.uplink, p.remote.ip()))
                .and_modify(|best| *best = (*best).min(rank))
                .or_insert(rank);
        }
        for p in self.paths.values_mut() {
            p.redundant = p.answers_from.is_some()
                && carrier
                    .get(&(p.uplink, p.remote.ip()))
                    .is_some_and(|best| best.2 != p.id);
        }
    }

    /// The path that sent the ping `txid`: the one to `src`, or one to
    /// another port of the same address (the peer's answer left from a new
    /// mapping of a NAT that maps per destination).
    pub(crate) fn pinged(
        &self,
        uplink: UplinkId,
        src: SocketAddr,
        txid: u64,
    ) -> Option<(UplinkId, SocketAddr)> {
        let key = (uplink, src);
        if self.paths.get(&key).is_some_and(|p| p.awaits(txid)) {
            return Some(key);
        }
        self.paths
            .iter()
            .find(|(k, p)| k.0 == uplink && k.1.ip() == src.ip() && p.awaits(txid))
            .map(|(k, _)| *k)
    }

    /// Drops the path least worth keeping, so a flood of sources cannot
    /// lock the peer out of a new address (NAT rebinding): never an active
    /// path; first addresses that only sent data, then those that never
    /// answered, then failed ones; the coordinator's candidates last; the
    /// oldest first. False when every path is active.
    fn evict(&mut self) -> bool {
        let victim = self
            .paths
            .iter()
            .filter(|(_, p)| p.state != PathState::Active)
            .min_by_key(|(key, p)| {
                (
                    self.spec.remotes.contains(&key.1),
                    !p.unproven,
                    p.pongs > 0,
                    p.id,
                )
            })
            .map(|(&key, _)| key);
        let Some(key) = victim else {
            return false;
        };
        self.paths.remove(&key);
        self.counters.paths_evicted += 1;
        true
    }

    /// The operator's policy of an uplink.
    pub(crate) fn policy(&self, uplink: UplinkId) -> UplinkPolicy {
        self.policies.get(&uplink).copied().unwrap_or_default()
    }

    /// The scheduler's view of every path, in path-table order.
    fn candidates(
        &mut self,
        now: Instant,
        fresh: Duration,
    ) -> SmallVec<[Candidate<'_, (UplinkId, SocketAddr)>; 8]> {
        let policies = &self.policies;
        // Back from a relay only once a direct path has held a while.
        let on_relay = self
            .previous
            .and_then(|k| self.paths.get(&k))
            .is_some_and(|p| p.kind.is_relay() && p.state == PathState::Active);
        let hold = self.sched.relay_return_hold;
        let retiring = self.retiring.as_ref().map(|r| r.offer.relay);
        self.paths
            .iter_mut()
            .map(|(&key, p)| Candidate {
                key,
                policy: super::path_policy(
                    policies.get(&key.0).copied().unwrap_or_default(),
                    p.remote_policy,
                ),
                active: p.state == PathState::Active,
                redundant: p.redundant,
                relay: p.kind.is_relay(),
                retiring: retiring == Some(key.1),
                settling: on_relay
                    && !p.kind.is_relay()
                    && p.active_since
                        .is_none_or(|at| now.saturating_duration_since(at) < hold),
                fresh: p
                    .last_heard
                    .is_some_and(|at| now.saturating_duration_since(at) <= fresh),
                // An intranet path wins a tie with a public one.
                penalty: match p.kind {
                    super::PathKind::DirectIntranet => Duration::ZERO,
                    super::PathKind::DirectPublic => Duration::from_micros(500),
                    super::PathKind::CoordinatorRelay | super::PathKind::NodeRelay => {
                        Duration::from_millis(5)
                    }
                },
                half_rtt: p.srtt.unwrap_or_default() / 2,
                suspect: p.suspect(),
                lane: &mut p.lane,
            })
            .collect()
    }

    /// The path to carry the next data packet of `len` bytes (DESIGN §8,
    /// see [`scheduler`]); paths not heard from within `fresh` are used
    /// only when no other is (a rebound NAT leaves a stale one behind).
    pub(crate) fn schedule(
        &mut self,
        now: Instant,
        fresh: Duration,
        len: usize,
    ) -> Option<(UplinkId, SocketAddr)> {
        let previous = self.previous;
        let config = self.sched;
        let mut candidates = self.candidates(now, fresh);
        let chosen = scheduler::pick(now, &mut candidates, len, previous.as_ref(), &config)?;
        let key = candidates[chosen].key;
        drop(candidates);
        self.previous = Some(key);
        Some(key)
    }

    /// Each path's planned share and why, in path-table order.
    pub(crate) fn choices(&mut self, now: Instant, fresh: Duration) -> Vec<PathChoice> {
        self.mark_redundant(now, fresh);
        let ids: Vec<PathId> = self.paths.values().map(|p| p.id).collect();
        let candidates = self.candidates(now, fresh);
        let reasons = scheduler::eligibility(now, &candidates);
        let weights = scheduler::weights(now, &candidates);
        ids.into_iter()
            .zip(reasons)
            .zip(weights)
            .map(|((path, reason), weight)| PathChoice {
                path,
                weight,
                reason,
            })
            .collect()
    }

    /// Its paths that may be probed on a timer (not those only learned
    /// from data), the peer's candidates first in the order the peer gave
    /// them (so both ends probe alike), then the addresses learned since.
    pub(crate) fn candidate_order(&self) -> Vec<(UplinkId, SocketAddr)> {
        let mut keys: Vec<(UplinkId, SocketAddr)> = self
            .paths
            .iter()
            .filter(|(_, p)| !p.unproven)
            .map(|(&key, _)| key)
            .collect();
        let remotes = &self.spec.remotes;
        keys.sort_by_key(|key| {
            let rank = remotes.iter().position(|r| *r == key.1);
            (rank.is_none(), rank, *key)
        });
        keys
    }

    /// True when the local service sent data within `busy`.
    pub(crate) fn is_busy(&self, now: Instant, busy: Duration) -> bool {
        self.last_ingress
            .is_some_and(|at| now.saturating_duration_since(at) < busy)
    }

    /// True when at least one path is active.
    pub(crate) fn is_up(&self) -> bool {
        self.paths.values().any(|p| p.state == PathState::Active)
    }

    /// True when a direct (not relayed) path is active.
    pub(crate) fn direct_up(&self) -> bool {
        self.paths
            .values()
            .any(|p| p.state == PathState::Active && !p.kind.is_relay())
    }
}

impl DataPlane {
    /// Installs a new key (a new epoch from the coordinator) for an
    /// installed association without disturbing it: control packets go
    /// out under the new key at once, those under the previous key are
    /// accepted for [`PREVIOUS_KEY_GRACE`], and paths, sockets and
    /// counters stay as they are, so data keeps flowing.
    ///
    /// # Errors
    /// When the association is not installed.
    pub fn rekey(
        &mut self,
        now: Instant,
        id: AssocId,
        epoch: u32,
        key: &[u8; KEY_LEN],
    ) -> Result<(), DataPlaneError> {
        let assoc = self
            .assocs
            .get_mut(&id)
            .ok_or(DataPlaneError::NotInstalled(id))?;
        assoc.rekey(now, key, PREVIOUS_KEY_GRACE);
        tracing::debug!(assoc = %id, epoch, "association key replaced");
        Ok(())
    }
}
