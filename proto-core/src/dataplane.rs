//! The zero-overhead data plane of a node (DESIGN §6): for each installed
//! association, a stable ingress socket that the local service (WireGuard)
//! talks to, one mesh socket per uplink, and authenticated path validation.
//! Data crosses byte-for-byte; only control packets (magic plus a tag under
//! the association key) are taken out of the stream.
//!
//! Associations and their keys come from the coordinator; this machine only
//! carries what is installed, and nothing else.

mod association;
mod birthday;
mod events;
mod path;
mod punch;
pub mod reflexive;
mod relay_leg;
pub mod scheduler;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

pub use association::{AssocCounters, PathChoice, MAX_PATHS, PREVIOUS_KEY_GRACE, REPLAY_CAPACITY};
pub use events::{PathEvent, PathEventKind, PathHistory, HISTORY_LEN};
pub use path::{
    Path, PathKind, PathState, Traffic, UplinkTraffic, MAX_PENDING, PROVING_GAP, PROVING_PINGS,
};
pub use punch::{BirthdayConfig, PunchConfig, PUNCH_SKEW_LIMIT};
pub use reflexive::{NatAllocation, NatClass, NatMapping, Predicted};
pub use relay_leg::{RelayOffer, RELAY_REFRESH, RELAY_RETIRE_MAX};
pub use scheduler::{Estimates, Reason, SchedulerConfig, DEFAULT_REORDER_BOUND};

use crate::id::{AssocId, PathId, ServiceId, SocketId, UplinkId};
use crate::machine::{Datagram, Input, Output, StateMachine, Transmit};
use crate::rng::Rng;
use crate::time::WallClock;
use crate::timer::TimerTable;
use crate::wire::control::{PING_BACKUP, PING_HARD_BY_ADDRESS, PING_METERED, PING_NEWER_KEY};
use crate::wire::{classify, AddrRepr, Classified, ControlBody, ControlRepr, ADDR_LEN, KEY_LEN};
use association::{Association, Learned, MeshSocket};

/// Size of the pings this machine sends; smaller unvalidated data does not
/// earn an immediate challenge (no amplification).
const PING_LEN: usize = crate::wire::control::MIN_LEN + ADDR_LEN;

/// An uplink the data plane may send from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkSpec {
    /// Its id.
    pub id: UplinkId,
    /// Its name, for status.
    pub name: String,
    /// The source address its mesh sockets bind to.
    pub bind: IpAddr,
    /// How the scheduler may use it.
    pub policy: UplinkPolicy,
}

impl UplinkSpec {
    /// A primary, unmetered uplink with no capacity hint.
    pub fn new(id: UplinkId, name: impl Into<String>, bind: IpAddr) -> Self {
        Self {
            id,
            name: name.into(),
            bind,
            policy: UplinkPolicy::default(),
        }
    }
}

/// Whether an uplink carries data normally or only when primaries cannot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum UplinkPriority {
    /// Carries data.
    #[default]
    Primary,
    /// Carries data only when no primary path can.
    Backup,
}

impl UplinkPriority {
    /// The name config, status and metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "primary",
            Self::Backup => "backup",
        }
    }
}

/// The operator's policy for an uplink (DESIGN §8).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UplinkPolicy {
    /// Primary or backup.
    pub priority: UplinkPriority,
    /// Metered (mobile data): carries no bulk while unmetered capacity
    /// suffices.
    pub metered: bool,
    /// The operator's capacity hint, bits per second.
    pub capacity_bps: Option<u64>,
}

/// The policy bits a ping from an uplink's socket carries, so the peer
/// learns it (its traffic to that address follows the same policy).
fn ping_policy(policy: UplinkPolicy) -> u8 {
    let backup = match policy.priority {
        UplinkPriority::Primary => 0,
        UplinkPriority::Backup => PING_BACKUP,
    };
    backup | if policy.metered { PING_METERED } else { 0 }
}

/// A ping's NAT bit for the uplink's mesh socket: whether its NAT is hard
/// by address ([`PING_HARD_BY_ADDRESS`]).
fn nat_bits(assoc: &Association, uplink: UplinkId) -> u8 {
    let hard = assoc.mesh.get(&uplink).is_some_and(|m| {
        m.local
            .is_some_and(|local| birthday::hard_by_address(&NatClass::of(local, &m.reflect)))
    });
    if hard {
        PING_HARD_BY_ADDRESS
    } else {
        0
    }
}

/// How a path is scheduled: by the local uplink's policy, made a backup or
/// metered too when the peer's uplink at the far end is one. Both ends of a
/// backup or metered uplink then keep their traffic off it alike (the peer's
/// ACKs included).
fn path_policy(local: UplinkPolicy, remote: u8) -> UplinkPolicy {
    let mut policy = local;
    if remote & PING_BACKUP != 0 {
        policy.priority = UplinkPriority::Backup;
    }
    policy.metered |= remote & PING_METERED != 0;
    policy
}

/// An association as the coordinator installs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssociationSpec {
    /// Its id.
    pub id: AssocId,
    /// The local service it belongs to.
    pub service: ServiceId,
    /// The remote side, `node/service`, for status.
    pub peer: String,
    /// The association key of the current epoch.
    pub key: [u8; KEY_LEN],
    /// The stable loopback address the local service sends to.
    pub ingress: SocketAddr,
    /// The local service's own address: the only accepted ingress source,
    /// and where mesh data is delivered.
    pub target: SocketAddr,
    /// The port of this association's mesh sockets (0: any).
    pub mesh_port: u16,
    /// The peer's candidate addresses.
    pub remotes: Vec<SocketAddr>,
}

/// How the data plane behaves.
#[derive(Debug, Clone)]
pub struct DataPlaneConfig {
    /// The uplinks.
    pub uplinks: Vec<UplinkSpec>,
    /// Time between probes of each path.
    pub probe_interval: Duration,
    /// Probe intervals without a pong before an idle active path fails
    /// (a path carrying data fails sooner, see [`SchedulerConfig`]).
    pub failed_after: u32,
    /// How data is spread across paths.
    pub scheduler: SchedulerConfig,
    /// How candidates are punched and paced.
    pub punch: PunchConfig,
    /// Seed of the machine's randomness (transaction ids).
    pub seed: u64,
    /// Wall-clock anchor for control packet timestamps.
    pub wall_clock: WallClock,
}

impl DataPlaneConfig {
    /// A configuration with the default probe interval (250 ms) and failure
    /// threshold (3 intervals): a dead path stops carrying data within a second.
    pub fn new(uplinks: Vec<UplinkSpec>, seed: u64, wall_clock: WallClock) -> Self {
        Self {
            uplinks,
            probe_interval: Duration::from_millis(250),
            failed_after: 3,
            scheduler: SchedulerConfig::default(),
            punch: PunchConfig::default(),
            seed,
            wall_clock,
        }
    }
}

/// Which of an association's sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SocketRole {
    /// The ingress socket the local service talks to.
    Ingress(AssocId),
    /// A mesh socket on an uplink.
    Mesh(AssocId, UplinkId),
}

/// What the data plane reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataEvent {
    /// A socket is open.
    Bound {
        /// Which socket.
        role: SocketRole,
        /// Its address.
        local: SocketAddr,
    },
    /// A socket could not be opened.
    BindFailed {
        /// Which socket.
        role: SocketRole,
        /// Why.
        reason: std::io::ErrorKind,
    },
    /// A path answered: it carries data now.
    PathValidated {
        /// The association.
        assoc: AssocId,
        /// The path.
        path: PathId,
        /// Its remote address.
        remote: SocketAddr,
        /// The round trip that validated it.
        rtt: Duration,
    },
    /// An active path stopped answering.
    PathFailed {
        /// The association.
        assoc: AssocId,
        /// The path.
        path: PathId,
        /// Its remote address.
        remote: SocketAddr,
    },
    /// Data moved to another path.
    PathSwitched {
        /// The association.
        assoc: AssocId,
        /// The path it left, if any.
        from: Option<PathId>,
        /// The path it uses now.
        to: PathId,
    },
    /// A reflector saw a mesh socket at a new outside address: its
    /// candidates changed.
    Reflexive {
        /// The association.
        assoc: AssocId,
        /// The mesh socket's uplink.
        uplink: UplinkId,
    },
    /// The association has an active path again.
    AssociationUp(AssocId),
    /// The association has no active path.
    AssociationDown(AssocId),
}

/// Why an operator or control-plane command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DataPlaneError {
    /// The id is installed already.
    #[error("association {0} is installed already")]
    AlreadyInstalled(AssocId),
    /// No association with this id.
    #[error("association {0} is not installed")]
    NotInstalled(AssocId),
    /// Another association uses this ingress address.
    #[error("ingress {ingress} is used by association {by}")]
    IngressInUse {
        /// The address asked for.
        ingress: SocketAddr,
        /// Who has it.
        by: AssocId,
    },
    /// The data plane has no uplink to send from.
    #[error("no uplink is configured")]
    NoUplink,
    /// No uplink has this id.
    #[error("no uplink has id {0}")]
    NoSuchUplink(UplinkId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// Time to ping every path of an association.
    Probe(AssocId),
    /// Time to probe busy paths, check their liveness and report
    /// statistics, while an association carries data.
    Tick(AssocId),
    /// The coordinated moment to start probing the peer's candidates.
    Punch(AssocId),
    /// Time for the next paced candidate probe.
    Pace(AssocId),
    /// Time to start, continue or end birthday probing.
    Birthday(AssocId),
}

/// An association is busy (its paths probed fast and measured) for this
/// long after its last data packet.
const BUSY: Duration = Duration::from_secs(1);
/// The shortest a path carrying data may go unanswered before it fails.
const LIVENESS_FLOOR: Duration = Duration::from_millis(100);
/// Fast pings of proving paths ([`path::PROVING_PINGS`]) the node sends
/// per [`PROVING_WINDOW`], over all associations: 1,000 a second (about
/// 80 kB/s). A hub whose uplink just changed address revalidates every
/// path at once; beyond this, paths prove themselves at the idle probe
/// interval instead.
const PROVING_BUDGET: u32 = 100;
const PROVING_WINDOW: Duration = Duration::from_millis(100);

/// The fast pings of proving paths sent in the current
/// [`PROVING_WINDOW`], node-wide.
#[derive(Debug, Default)]
struct ProvingBudget {
    window: Option<Instant>,
    spent: u32,
}

impl ProvingBudget {
    /// Takes one ping at `now`; false when the window's are spent.
    fn take(&mut self, now: Instant) -> bool {
        if self
            .window
            .is_none_or(|at| now.saturating_duration_since(at) >= PROVING_WINDOW)
        {
            *self = Self {
                window: Some(now),
                spent: 0,
            };
        }
        let left = self.spent < PROVING_BUDGET;
        self.spent += u32::from(left);
        left
    }
}

/// The node's data plane. See the module docs.
#[derive(Debug)]
pub struct DataPlane {
    config: DataPlaneConfig,
    rng: Rng,
    assocs: BTreeMap<AssocId, Association>,
    sockets: BTreeMap<SocketId, SocketRole>,
    next_socket: u32,
    timers: TimerTable<Timer>,
    outputs: VecDeque<Output<DataEvent>>,
    /// Where forwarded payloads are copied: one allocation shared by many
    /// datagrams instead of one each (see [`own`]).
    arena: BytesMut,
    /// Uplinks whose address is gone: they have no mesh sockets.
    uplinks_down: BTreeSet<UplinkId>,
    /// Reflector addresses: the coordinator's session address first.
    reflectors: Vec<SocketAddr>,
    /// Birthday probing's temporary sockets: their association and uplink.
    birthday_sockets: BTreeMap<SocketId, (AssocId, UplinkId)>,
    /// Fast pings of proving paths, node-wide.
    proving_budget: ProvingBudget,
    /// Data sent and received through each uplink since start, over every
    /// path there was (kept when paths and associations go).
    uplink_traffic: BTreeMap<UplinkId, UplinkTraffic>,
}

/// A read-only view of an installed association, for status.
#[derive(Debug, Clone, Copy)]
pub struct AssociationView<'a> {
    inner: &'a Association,
}

impl<'a> AssociationView<'a> {
    /// How it was installed.
    pub fn spec(&self) -> &'a AssociationSpec {
        &self.inner.spec
    }

    /// Where the ingress socket is bound, once it is.
    pub fn ingress_local(&self) -> Option<SocketAddr> {
        self.inner.ingress_local
    }

    /// The machine's id of its ingress socket (it changes only when the
    /// ingress address does).
    pub fn ingress_socket(&self) -> SocketId {
        self.inner.ingress_socket
    }

    /// The machine's id of each uplink's mesh socket.
    pub fn mesh_sockets(&self) -> impl Iterator<Item = (UplinkId, SocketId)> + 'a {
        self.inner.mesh.iter().map(|(&u, m)| (u, m.socket))
    }

    /// The candidates each uplink's mesh socket offers through its NAT:
    /// its reflexive address, or the predicted next mappings of a
    /// sequential allocator (see [`NatClass::candidates`]).
    pub fn mesh_reflexive(
        &self,
    ) -> impl Iterator<Item = (UplinkId, Vec<(SocketAddr, Predicted)>)> + 'a {
        self.inner.mesh.iter().filter_map(|(&uplink, m)| {
            if !reflexive::settled(&m.reflect) {
                return None;
            }
            let class = NatClass::of(m.local?, &m.reflect);
            Some((
                uplink,
                class.candidates(reflexive::last_observed(&m.reflect)),
            ))
        })
    }

    /// This node's leg of the association's relay allocation, if the
    /// coordinator offered one: the offer, and the uplinks whose mesh
    /// sockets have it pinned.
    pub fn relay(&self) -> Option<(&'a RelayOffer, Vec<UplinkId>)> {
        let binding = self.inner.relay.as_ref()?;
        let pinned = binding
            .legs
            .iter()
            .filter(|(_, leg)| leg.pinned)
            .map(|(&u, _)| u)
            .collect();
        Some((&binding.offer, pinned))
    }

    /// The NAT classification of each mesh socket, by uplink.
    pub fn mesh_nat(&self) -> impl Iterator<Item = (UplinkId, NatClass)> + 'a {
        self.inner
            .mesh
            .iter()
            .filter_map(|(&uplink, m)| Some((uplink, NatClass::of(m.local?, &m.reflect))))
    }

    /// Where each uplink's mesh socket is bound (`None` until it is).
    pub fn mesh_locals(&self) -> impl Iterator<Item = (UplinkId, Option<SocketAddr>)> + 'a {
        self.inner.mesh.iter().map(|(&u, m)| (u, m.local))
    }

    /// Its paths, ordered by uplink and remote address.
    pub fn paths(&self) -> impl Iterator<Item = &'a Path> + 'a {
        self.inner.paths.values()
    }

    /// How many control transactions its replay cache remembers (at most
    /// [`REPLAY_CAPACITY`]).
    pub fn replay_len(&self) -> usize {
        self.inner.replay.len()
    }

    /// Its counters.
    pub fn counters(&self) -> AssocCounters {
        self.inner.counters
    }

    /// True when at least one path is active.
    pub fn is_up(&self) -> bool {
        self.inner.is_up()
    }

    /// The path data last went on.
    pub fn current_path(&self) -> Option<PathId> {
        self.inner.current
    }

    /// What happened to its paths lately, and the scheduler's last choices.
    pub fn history(&self) -> &'a PathHistory {
        &self.inner.history
    }
}

impl DataPlane {
    /// A data plane with no association installed.
    pub fn new(config: DataPlaneConfig) -> Self {
        Self {
            rng: Rng::new(config.seed),
            config,
            assocs: BTreeMap::new(),
            sockets: BTreeMap::new(),
            next_socket: 0,
            timers: TimerTable::default(),
            outputs: VecDeque::new(),
            arena: BytesMut::new(),
            uplinks_down: BTreeSet::new(),
            reflectors: Vec::new(),
            birthday_sockets: BTreeMap::new(),
            proving_budget: ProvingBudget::default(),
            uplink_traffic: BTreeMap::new(),
        }
    }

    /// Sets how candidates are punched and paced, and whether birthday
    /// probing is on, for the punches from now on.
    pub fn set_punch(&mut self, punch: PunchConfig) {
        self.config.punch = punch;
    }

    /// The most packets a packet may be overtaken by, as the scheduler
    /// predicts (see [`DataPlane::set_reorder_bound`]).
    pub fn reorder_bound(&self) -> u32 {
        self.config.scheduler.reorder_bound
    }

    /// Sets the most packets a packet may be overtaken by, as the
    /// scheduler predicts, for every association (at least one).
    pub fn set_reorder_bound(&mut self, packets: u32) {
        let packets = packets.max(1);
        self.config.scheduler.reorder_bound = packets;
        for assoc in self.assocs.values_mut() {
            assoc.sched.reorder_bound = packets;
        }
    }

    /// Sets the reflectors every mesh socket asks for its outside address
    /// (DESIGN §5): the coordinator address of the control session first,
    /// then the extra ones it announced. A change forgets the earlier
    /// answers and asks again at once.
    pub fn set_reflectors(&mut self, now: Instant, reflectors: Vec<SocketAddr>) {
        if reflectors == self.reflectors {
            return;
        }
        self.reflectors = reflectors;
        let slots: Vec<reflexive::Slot> = self
            .reflectors
            .iter()
            .map(|&r| reflexive::Slot::towards(r))
            .collect();
        for (&id, assoc) in &mut self.assocs {
            for mesh in assoc.mesh.values_mut() {
                mesh.reflect = slots.clone();
            }
            self.timers.set(Timer::Probe(id), now);
        }
    }

    /// Takes this node's leg of an association's relay allocation (from
    /// the coordinator): every mesh socket binds it, and once pinned the
    /// relay's address is a path like the others, scheduled below the
    /// direct ones. A new allocation at another address replaces the old
    /// one, which retires: its paths stay, used only while the new one's
    /// are not, until the coordinator releases it ([`drop_relay`]), so a
    /// move between relays loses nothing (make-before-break).
    ///
    /// [`drop_relay`]: Self::drop_relay
    ///
    /// # Errors
    /// When the association is not installed.
    pub fn add_relay(
        &mut self,
        now: Instant,
        id: AssocId,
        offer: RelayOffer,
    ) -> Result<(), DataPlaneError> {
        let assoc = self
            .assocs
            .get_mut(&id)
            .ok_or(DataPlaneError::NotInstalled(id))?;
        if assoc.relay.as_ref().is_some_and(|r| r.offer == offer) {
            return Ok(());
        }
        if let Some(old) = assoc.relay.take() {
            if old.offer.relay == offer.relay {
                assoc
                    .paths
                    .retain(|&(_, remote), _| remote != old.offer.relay);
            } else {
                if let Some(older) = assoc.retiring.replace(old) {
                    assoc
                        .paths
                        .retain(|&(_, remote), _| remote != older.offer.relay);
                }
                tracing::debug!(assoc = %id, relay = %offer.relay, "relay leg retires for a new one");
            }
        }
        if assoc
            .retiring
            .as_ref()
            .is_some_and(|r| r.offer.relay == offer.relay)
        {
            assoc.retiring = None;
        }
        tracing::debug!(assoc = %id, relay = %offer.relay, leg = offer.leg, "relay leg offered");
        assoc.relay = Some(relay_leg::RelayBinding::new(now, offer));
        self.timers.set(Timer::Probe(id), now);
        Ok(())
    }

    /// Drops this node's leg of an association's relay allocation (the
    /// coordinator released it) and the relay's paths; true when it was
    /// that allocation.
    pub fn drop_relay(&mut self, id: AssocId, allocation: u64) -> bool {
        let Some(assoc) = self.assocs.get_mut(&id) else {
            return false;
        };
        if let Some(old) = assoc.retiring.take_if(|r| r.offer.allocation == allocation) {
            assoc
                .paths
                .retain(|&(_, remote), _| remote != old.offer.relay);
            tracing::debug!(assoc = %id, relay = %old.offer.relay, allocation, "retired relay leg dropped");
            return true;
        }
        if assoc
            .relay
            .as_ref()
            .is_none_or(|r| r.offer.allocation != allocation)
        {
            return false;
        }
        if let Some(old) = assoc.relay.take() {
            assoc
                .paths
                .retain(|&(_, remote), _| remote != old.offer.relay);
            tracing::debug!(assoc = %id, relay = %old.offer.relay, allocation, "relay leg dropped");
        }
        true
    }

    /// The reflector addresses in use.
    pub fn reflectors(&self) -> &[SocketAddr] {
        &self.reflectors
    }

    /// What the reflectors say about the NAT in front of an uplink: the
    /// classification of its first mesh socket with the most answers.
    pub fn nat_class(&self, uplink: UplinkId) -> NatClass {
        self.assocs
            .values()
            .filter_map(|a| a.mesh.get(&uplink))
            .filter_map(|m| Some((m.local?, &m.reflect)))
            .max_by_key(|(_, slots)| slots.iter().filter(|s| s.observed.is_some()).count())
            .map_or(NatClass::UNKNOWN, |(local, slots)| {
                NatClass::of(local, slots)
            })
    }

    /// The configuration.
    pub fn config(&self) -> &DataPlaneConfig {
        &self.config
    }

    /// Installs an association: asks for its ingress socket and one mesh
    /// socket per uplink; probing starts when they are bound.
    ///
    /// # Errors
    /// When the id or the ingress address is taken, or there is no uplink.
    pub fn install(&mut self, spec: AssociationSpec) -> Result<(), DataPlaneError> {
        if self.assocs.contains_key(&spec.id) {
            return Err(DataPlaneError::AlreadyInstalled(spec.id));
        }
        if let Some(other) = self
            .assocs
            .values()
            .find(|a| a.spec.ingress == spec.ingress)
        {
            return Err(DataPlaneError::IngressInUse {
                ingress: spec.ingress,
                by: other.spec.id,
            });
        }
        if self.config.uplinks.is_empty() {
            return Err(DataPlaneError::NoUplink);
        }
        let id = spec.id;
        let ingress_socket = self.allocate_socket(SocketRole::Ingress(id));
        self.outputs.push_back(Output::BindSocket {
            socket: ingress_socket,
            local: spec.ingress,
        });
        let policies = self
            .config
            .uplinks
            .iter()
            .map(|u| (u.id, u.policy))
            .collect();
        let mut assoc = Association::new(spec, ingress_socket, policies, self.config.scheduler);
        for uplink in self.config.uplinks.clone() {
            if !self.uplinks_down.contains(&uplink.id) {
                self.open_mesh(&mut assoc, uplink.id, uplink.bind);
            }
        }
        tracing::debug!(assoc = %id, peer = %assoc.spec.peer, "association installed");
        self.assocs.insert(id, assoc);
        Ok(())
    }

    /// Asks for `assoc`'s mesh socket on an uplink.
    fn open_mesh(&mut self, assoc: &mut Association, uplink: UplinkId, bind: IpAddr) {
        let socket = self.allocate_socket(SocketRole::Mesh(assoc.spec.id, uplink));
        let local = SocketAddr::new(bind, assoc.spec.mesh_port);
        self.outputs.push_back(Output::BindSocket { socket, local });
        assoc.mesh.insert(
            uplink,
            MeshSocket {
                socket,
                local: None,
                reflect: self
                    .reflectors
                    .iter()
                    .map(|&r| reflexive::Slot::towards(r))
                    .collect(),
            },
        );
    }

    /// An uplink's address changed (`Some`) or went away (`None`), seen by
    /// the host at runtime: its mesh sockets close, every path through it
    /// fails at once, and with a new address fresh sockets are bound and
    /// probed, with no restart. The other uplinks are not touched.
    ///
    /// # Errors
    /// When no uplink has this id.
    pub fn set_uplink_address(
        &mut self,
        now: Instant,
        uplink: UplinkId,
        bind: Option<IpAddr>,
    ) -> Result<(), DataPlaneError> {
        let spec = self
            .config
            .uplinks
            .iter_mut()
            .find(|u| u.id == uplink)
            .ok_or(DataPlaneError::NoSuchUplink(uplink))?;
        let was_down = self.uplinks_down.contains(&uplink);
        if bind.is_none_or(|ip| ip == spec.bind) && bind.is_none() == was_down {
            return Ok(());
        }
        if let Some(ip) = bind {
            spec.bind = ip;
        }
        tracing::info!(uplink = %spec.name, address = ?bind, "uplink address changed");
        let ids: Vec<AssocId> = self.assocs.keys().copied().collect();
        for id in ids {
            self.close_birthday(id, Some(uplink));
            let assoc = self.assocs.get_mut(&id).expect("listed above");
            let was_up = assoc.is_up();
            if let Some(mesh) = assoc.mesh.remove(&uplink) {
                self.sockets.remove(&mesh.socket);
                self.outputs.push_back(Output::CloseSocket {
                    socket: mesh.socket,
                });
            }
            let gone: Vec<(UplinkId, SocketAddr)> = assoc
                .paths
                .keys()
                .filter(|key| key.0 == uplink)
                .copied()
                .collect();
            for key in gone {
                let path = assoc.paths.remove(&key).expect("listed above");
                if path.state == PathState::Active {
                    self.outputs.push_back(Output::Event(DataEvent::PathFailed {
                        assoc: id,
                        path: path.id,
                        remote: path.remote,
                    }));
                }
            }
            if was_up && !assoc.is_up() {
                self.outputs
                    .push_back(Output::Event(DataEvent::AssociationDown(id)));
            }
            if let Some(ip) = bind {
                let mut assoc = self.assocs.remove(&id).expect("listed above");
                self.open_mesh(&mut assoc, uplink, ip);
                self.assocs.insert(id, assoc);
            }
            self.observe(now, id);
        }
        if bind.is_some() {
            self.uplinks_down.remove(&uplink);
        } else {
            self.uplinks_down.insert(uplink);
        }
        Ok(())
    }

    /// Withdraws an association: its sockets close and its forwarding state
    /// is dropped at once.
    ///
    /// # Errors
    /// When it is not installed.
    pub fn withdraw(&mut self, id: AssocId) -> Result<(), DataPlaneError> {
        self.close_birthday(id, None);
        let assoc = self
            .assocs
            .remove(&id)
            .ok_or(DataPlaneError::NotInstalled(id))?;
        self.timers.stop(Timer::Probe(id));
        self.timers.stop(Timer::Tick(id));
        self.timers.stop(Timer::Punch(id));
        self.timers.stop(Timer::Pace(id));
        self.timers.stop(Timer::Birthday(id));
        let sockets =
            std::iter::once(assoc.ingress_socket).chain(assoc.mesh.values().map(|m| m.socket));
        for socket in sockets {
            self.sockets.remove(&socket);
            self.outputs.push_back(Output::CloseSocket { socket });
        }
        tracing::debug!(assoc = %id, "association withdrawn");
        Ok(())
    }

    /// Moves installed associations' ingress sockets to new addresses (an
    /// operator edited them): every moved socket closes before any new one
    /// is bound, so two associations may swap addresses. Mesh sockets,
    /// paths and counters stay as they are.
    ///
    /// # Errors
    /// When an association is not installed, or two associations would end
    /// up on one address; nothing changes then.
    pub fn move_ingress(&mut self, moves: &[(AssocId, SocketAddr)]) -> Result<(), DataPlaneError> {
        let mut after: BTreeMap<AssocId, SocketAddr> = self
            .assocs
            .iter()
            .map(|(&id, a)| (id, a.spec.ingress))
            .collect();
        for &(id, ingress) in moves {
            *after.get_mut(&id).ok_or(DataPlaneError::NotInstalled(id))? = ingress;
        }
        let mut owners: BTreeMap<SocketAddr, AssocId> = BTreeMap::new();
        for (&id, &ingress) in &after {
            if let Some(&first) = owners.get(&ingress) {
                // Name the association that holds it, not the one moving in.
                let by = if moves.iter().any(|m| m.0 == first) {
                    id
                } else {
                    first
                };
                return Err(DataPlaneError::IngressInUse { ingress, by });
            }
            owners.insert(ingress, id);
        }
        let moved: Vec<(AssocId, SocketAddr)> = moves
            .iter()
            .copied()
            .filter(|&(id, ingress)| self.assocs[&id].spec.ingress != ingress)
            .collect();
        for &(id, _) in &moved {
            let old = self.assocs[&id].ingress_socket;
            self.sockets.remove(&old);
            self.outputs.push_back(Output::CloseSocket { socket: old });
        }
        for (id, ingress) in moved {
            let socket = self.allocate_socket(SocketRole::Ingress(id));
            let assoc = self.assocs.get_mut(&id).expect("checked above");
            tracing::debug!(assoc = %id, from = %assoc.spec.ingress, to = %ingress, "ingress moved");
            assoc.spec.ingress = ingress;
            assoc.ingress_socket = socket;
            assoc.ingress_local = None;
            self.outputs.push_back(Output::BindSocket {
                socket,
                local: ingress,
            });
        }
        Ok(())
    }

    /// Points an installed association at a local service of another id or
    /// address (where mesh data is delivered, and the only accepted ingress
    /// source); nothing else changes.
    ///
    /// # Errors
    /// When it is not installed.
    pub fn retarget(
        &mut self,
        id: AssocId,
        service: ServiceId,
        target: SocketAddr,
    ) -> Result<(), DataPlaneError> {
        let assoc = self
            .assocs
            .get_mut(&id)
            .ok_or(DataPlaneError::NotInstalled(id))?;
        assoc.spec.service = service;
        assoc.spec.target = target;
        Ok(())
    }

    /// Adds candidate addresses of the peer (from the coordinator). New
    /// ones are probed from the coordinator's punch (see [`Self::punch`]),
    /// or after [`PunchConfig::wait`] if none comes.
    ///
    /// # Errors
    /// When the association is not installed.
    pub fn add_remotes(
        &mut self,
        now: Instant,
        id: AssocId,
        remotes: &[SocketAddr],
    ) -> Result<(), DataPlaneError> {
        let wait = self.config.punch.wait;
        let assoc = self
            .assocs
            .get_mut(&id)
            .ok_or(DataPlaneError::NotInstalled(id))?;
        let mut new = false;
        for &remote in remotes {
            if !assoc.spec.remotes.contains(&remote) {
                assoc.spec.remotes.push(remote);
                new = true;
            }
            assoc.add_remote(remote);
        }
        if new {
            assoc.pacer.hold(now, wait);
            if let Some(until) = assoc.pacer.hold_until {
                if self
                    .timers
                    .get(Timer::Punch(id))
                    .is_none_or(|at| at > until)
                {
                    self.timers.set(Timer::Punch(id), until);
                }
            }
        }
        self.timers.set(Timer::Probe(id), now);
        Ok(())
    }

    /// The coordinator's punch (DESIGN §7): at `at_unix_ms` (by this
    /// node's wall clock; at once if that is past or more than
    /// [`PUNCH_SKEW_LIMIT`] ahead) every unvalidated candidate pair of the
    /// association is probed, paced, the peer doing the same at the same
    /// moment.
    ///
    /// # Errors
    /// When the association is not installed.
    pub fn punch(
        &mut self,
        now: Instant,
        id: AssocId,
        at_unix_ms: u64,
    ) -> Result<(), DataPlaneError> {
        let start = punch::start_at(now, at_unix_ms, &self.config.wall_clock);
        let assoc = self
            .assocs
            .get_mut(&id)
            .ok_or(DataPlaneError::NotInstalled(id))?;
        assoc.pacer.hold_until = Some(start);
        assoc.pacer.punches += 1;
        tracing::debug!(assoc = %id, in_ms = start.saturating_duration_since(now).as_millis() as u64, "punch");
        self.timers.set(Timer::Punch(id), start);
        Ok(())
    }

    /// Each path's planned share of an association's traffic and why, in
    /// the order of [`AssociationView::paths`].
    ///
    /// # Errors
    /// When the association is not installed.
    pub fn path_choices(
        &mut self,
        now: Instant,
        id: AssocId,
    ) -> Result<Vec<PathChoice>, DataPlaneError> {
        let fresh = self.config.probe_interval * 2;
        let assoc = self
            .assocs
            .get_mut(&id)
            .ok_or(DataPlaneError::NotInstalled(id))?;
        Ok(assoc.choices(now, fresh))
    }

    /// Every installed association, in id order.
    pub fn associations(&self) -> impl Iterator<Item = AssociationView<'_>> + '_ {
        self.assocs.values().map(|inner| AssociationView { inner })
    }

    /// Data sent and received through `uplink` since start, over every
    /// path of every association there has been.
    pub fn uplink_traffic(&self, uplink: UplinkId) -> UplinkTraffic {
        self.uplink_traffic
            .get(&uplink)
            .copied()
            .unwrap_or_default()
    }

    /// One association.
    pub fn association(&self, id: AssocId) -> Option<AssociationView<'_>> {
        self.assocs.get(&id).map(|inner| AssociationView { inner })
    }

    fn allocate_socket(&mut self, role: SocketRole) -> SocketId {
        self.next_socket += 1;
        let socket = SocketId(self.next_socket);
        self.sockets.insert(socket, role);
        socket
    }

    fn on_bound(&mut self, now: Instant, role: SocketRole, local: SocketAddr) {
        match role {
            SocketRole::Ingress(id) => {
                if let Some(assoc) = self.assocs.get_mut(&id) {
                    assoc.ingress_local = Some(local);
                }
            }
            SocketRole::Mesh(id, uplink) => {
                if let Some(assoc) = self.assocs.get_mut(&id) {
                    if let Some(mesh) = assoc.mesh.get_mut(&uplink) {
                        mesh.local = Some(local);
                    }
                    for remote in assoc.spec.remotes.clone() {
                        assoc.add_path(uplink, remote, Learned::Trusted);
                    }
                    self.timers.set(Timer::Probe(id), now);
                }
            }
        }
        self.outputs
            .push_back(Output::Event(DataEvent::Bound { role, local }));
    }

    fn on_datagram(&mut self, now: Instant, datagram: Datagram<'_>) {
        match self.sockets.get(&datagram.socket) {
            Some(&SocketRole::Ingress(id)) => self.on_ingress(now, id, datagram),
            Some(&SocketRole::Mesh(id, uplink)) => self.on_mesh(now, id, uplink, datagram),
            None => {
                if let Some(&(id, uplink)) = self.birthday_sockets.get(&datagram.socket) {
                    self.on_mesh(now, id, uplink, datagram);
                }
            }
        }
    }

    fn on_ingress(&mut self, now: Instant, id: AssocId, datagram: Datagram<'_>) {
        let fresh = self.config.probe_interval * 2;
        let Some(assoc) = self.assocs.get_mut(&id) else {
            return;
        };
        if datagram.src != assoc.spec.target {
            assoc.counters.ingress_foreign += 1;
            tracing::trace!(assoc = %id, src = %datagram.src, "ingress from a foreign source dropped");
            return;
        }
        let Some(key) = assoc.schedule(now, fresh, datagram.payload.len()) else {
            assoc.counters.no_path += 1;
            return;
        };
        if assoc
            .last_ingress
            .is_none_or(|at| now.saturating_duration_since(at) >= BUSY)
        {
            // Busy from now: probe and measure its paths fast.
            self.timers.set(Timer::Tick(id), now);
        }
        assoc.last_ingress = Some(now);
        let Some(mesh_socket) = assoc.mesh.get(&key.0).map(|m| m.socket) else {
            return;
        };
        let Some(path) = assoc.paths.get_mut(&key) else {
            return;
        };
        let socket = path.via.unwrap_or(mesh_socket);
        path.tx.count(datagram.payload.len());
        self.uplink_traffic
            .entry(key.0)
            .or_default()
            .sent
            .count(datagram.payload.len());
        let span = path.srtt.unwrap_or_default() + self.config.scheduler.stats_interval;
        path.lane.on_sent(now, path.tx, span);
        assoc.counters.ingress.count(datagram.payload.len());
        if assoc.current != Some(path.id) {
            let event = DataEvent::PathSwitched {
                assoc: id,
                from: assoc.current,
                to: path.id,
            };
            assoc.current = Some(path.id);
            tracing::debug!(assoc = %id, path = %path.id, remote = %path.remote, "data moved to path");
            self.outputs.push_back(Output::Event(event));
        }
        self.outputs.push_back(Output::Transmit(Transmit {
            socket,
            dst: key.1,
            payload: own(&mut self.arena, datagram.payload),
        }));
    }

    fn on_mesh(&mut self, now: Instant, id: AssocId, uplink: UplinkId, datagram: Datagram<'_>) {
        let Some(assoc) = self.assocs.get_mut(&id) else {
            return;
        };
        // The relay's own answers (bind-sized) are signed with the
        // allocation's key; everything else from its address is the
        // peer's, relayed, and takes no second tag check.
        if let Some(binding) = assoc.relay.as_ref().filter(|b| {
            b.offer.relay == datagram.src && datagram.payload.len() == crate::relay::BIND_LEN
        }) {
            if let Classified::Control(repr) = classify(datagram.payload, &binding.key) {
                self.on_relay_ack(now, id, uplink, repr);
                return;
            }
        }
        match assoc.classify(now, datagram.payload) {
            Classified::Data => self.on_mesh_data(now, id, uplink, datagram),
            Classified::Unintelligible(err) => {
                assoc.counters.unexpected_control += 1;
                tracing::debug!(assoc = %id, src = %datagram.src, %err, "control packet not understood");
            }
            Classified::Control(repr) => {
                // Everything under the association key is the peer's but a
                // reflector's answer. That one carries the reflector's own
                // time, which may run well ahead of the peer's, so it stays
                // out of the replay window (it is taken once, by the txid of
                // the request it answers), and it says nothing of which key
                // the peer holds.
                let reflected = matches!(repr.body, ControlBody::ReflectResponse { .. });
                if !reflected {
                    if let Err(err) = assoc.replay.check(repr.timestamp_us, repr.txid) {
                        assoc.counters.replays += 1;
                        tracing::debug!(assoc = %id, src = %datagram.src, %err, "control packet refused");
                        return;
                    }
                    assoc.heard_peer();
                }
                self.on_control(now, id, uplink, datagram.socket, datagram.src, repr);
            }
        }
    }

    fn on_mesh_data(
        &mut self,
        now: Instant,
        id: AssocId,
        uplink: UplinkId,
        datagram: Datagram<'_>,
    ) {
        let interval = self.config.probe_interval;
        let Some(assoc) = self.assocs.get_mut(&id) else {
            return;
        };
        let key = (uplink, datagram.src);
        let from = assoc.path_from(uplink, datagram.src);
        if let Some(path) = from
            .and_then(|k| assoc.paths.get_mut(&k))
            .filter(|p| p.state == PathState::Active)
        {
            path.rx.count(datagram.payload.len());
            self.uplink_traffic
                .entry(uplink)
                .or_default()
                .received
                .count(datagram.payload.len());
            path.data_from = Some(datagram.src);
            path.last_heard = Some(now);
            let idle = path
                .last_data
                .is_none_or(|at| now.saturating_duration_since(at) >= BUSY);
            path.last_data = Some(now);
            assoc.counters.delivered.count(datagram.payload.len());
            if idle && self.timers.get(Timer::Tick(id)).is_none() {
                // Data flows in: report it to the sender.
                self.timers
                    .set(Timer::Tick(id), now + self.config.scheduler.stats_interval);
            }
            let (socket, dst) = (assoc.ingress_socket, assoc.spec.target);
            self.outputs.push_back(Output::Transmit(Transmit {
                socket,
                dst,
                payload: own(&mut self.arena, datagram.payload),
            }));
            return;
        }
        assoc.counters.unvalidated += 1;
        tracing::trace!(assoc = %id, src = %datagram.src, "data from an unvalidated source dropped");
        // Challenge the source now, unless that would answer a small packet
        // with a larger one or repeat a recent challenge.
        if datagram.payload.len() < PING_LEN {
            return;
        }
        let known = assoc.paths.contains_key(&key);
        if !known
            && (!assoc.take_challenge(now, interval)
                || !assoc.add_path(uplink, datagram.src, Learned::FromData))
        {
            return;
        }
        let recently = assoc
            .paths
            .get(&key)
            .is_some_and(|p| p.pinged_within(now, interval / 4));
        if !recently {
            self.ping(now, id, key);
        }
    }

    fn on_control(
        &mut self,
        now: Instant,
        id: AssocId,
        uplink: UplinkId,
        socket: SocketId,
        src: SocketAddr,
        repr: ControlRepr,
    ) {
        let wall = self.config.wall_clock.unix_us(now);
        let Some(assoc) = self.assocs.get_mut(&id) else {
            return;
        };
        match repr.body {
            ControlBody::Ping { policy, .. } => {
                if policy & PING_NEWER_KEY != 0 {
                    assoc.peer_holds_newer();
                }
                let newly_hard = policy & PING_HARD_BY_ADDRESS != 0 && !assoc.peer_hard_by_address;
                assoc.peer_hard_by_address |= newly_hard;
                // The peer reaches us from `src`: a peer-reflexive candidate,
                // unless `src` is where a path of ours already hears the
                // peer from (its NAT maps per destination: a path to `src`
                // would only teach it yet another mapping of ours).
                // The pong is never larger than the ping (no amplification).
                let temporary = self.birthday_sockets.contains_key(&socket);
                let answering = assoc
                    .path_from(uplink, src)
                    .filter(|k| k.1 != src && !temporary);
                let known = assoc.paths.contains_key(&(uplink, src));
                let learned =
                    answering.is_none() && assoc.add_path(uplink, src, Learned::Trusted) && !known;
                let mut unvalidated = false;
                let mut rerouted = false;
                if let Some(path) = answering.and_then(|k| assoc.paths.get_mut(&k)) {
                    path.last_heard = Some(now);
                    path.remote_policy = policy & (PING_BACKUP | PING_METERED);
                } else if let Some(path) = assoc.paths.get_mut(&(uplink, src)) {
                    path.last_heard = Some(now);
                    path.remote_policy = policy & (PING_BACKUP | PING_METERED);
                    // Birthday probing found a port: the path leaves from
                    // the temporary socket that was reached.
                    if temporary && path.state != PathState::Active && path.via != Some(socket) {
                        tracing::debug!(assoc = %id, remote = %src, "a birthday probe got through");
                        path.via = Some(socket);
                        rerouted = true;
                    }
                    // The peer reaches us here and we do not know it
                    // answers yet: check at once rather than at the next
                    // tick (the peer just became reachable, e.g. its relay
                    // leg was pinned), at most once per a quarter interval.
                    unvalidated = path.state != PathState::Active
                        && !path.pinged_within(now, self.config.probe_interval / 4);
                }
                let pong = ControlRepr {
                    txid: repr.txid,
                    timestamp_us: wall,
                    body: ControlBody::Pong {
                        observed: AddrRepr(src),
                    },
                };
                let payload = pong.to_bytes(assoc.answer_key());
                // A birthday probe landed. By the time this answer reaches
                // the easy side, its NAT may have forgotten the port the
                // probe went to (a NAT keeps a bounded number of
                // destinations per mapping, and the spray goes on): the
                // same answer through an active relay path tells the easy
                // side which probe landed, and its own ping to that port
                // opens it again.
                let relayed = if rerouted {
                    assoc
                        .paths
                        .iter()
                        .find(|(k, p)| {
                            k.0 == uplink && p.kind.is_relay() && p.state == PathState::Active
                        })
                        .and_then(|(k, p)| {
                            let mesh = assoc.mesh.get(&k.0)?.socket;
                            Some((p.via.unwrap_or(mesh), k.1))
                        })
                } else {
                    None
                };
                if let Some((socket, dst)) = relayed {
                    self.outputs.push_back(Output::Transmit(Transmit {
                        socket,
                        dst,
                        payload: payload.clone(),
                    }));
                }
                self.outputs.push_back(Output::Transmit(Transmit {
                    socket,
                    dst: src,
                    payload,
                }));
                if learned || unvalidated || rerouted {
                    // A triggered check: validate the path now rather than
                    // at the next probe tick. Our ping is no larger than
                    // the authentic ping that taught us the address.
                    self.ping(now, id, (uplink, src));
                }
                if newly_hard {
                    self.peer_said_hard(now, id);
                }
            }
            ControlBody::Pong { .. } => {
                let landed = assoc.birthday.as_mut().and_then(|a| {
                    (a.role == birthday::Role::Easy)
                        .then(|| a.landed(repr.txid))
                        .flatten()
                        .map(|dst| (a.uplink, dst))
                });
                if let Some(key) = landed {
                    // The answer to a birthday probe, straight or through
                    // the relay: that port of the hard side leads to one of
                    // its temporary sockets. Ping it from the mesh socket.
                    tracing::debug!(assoc = %id, remote = %key.1, via = %src, "a birthday probe landed");
                    if assoc.add_path(key.0, key.1, Learned::Trusted) {
                        self.ping(now, id, key);
                    }
                    return;
                }
                let was_up = assoc.is_up();
                let Some(path) = assoc
                    .pinged(uplink, src, repr.txid)
                    .and_then(|k| assoc.paths.get_mut(&k))
                else {
                    assoc.counters.unexpected_control += 1;
                    return;
                };
                let Some((sent, rtt, validated)) = path.on_pong(repr.txid, now) else {
                    assoc.counters.unexpected_control += 1;
                    return;
                };
                let answers_from = (src != path.remote).then_some(src);
                if path.answers_from != answers_from {
                    tracing::debug!(assoc = %id, remote = %path.remote, answers = %src, "the peer answers from another port");
                    path.answers_from = answers_from;
                }
                let sent_us = self.config.wall_clock.unix_us(sent);
                path.lane
                    .on_timing(now, repr.txid, sent_us, repr.timestamp_us);
                if validated {
                    // Its first pings go fast while no data goes (see
                    // `tick`).
                    if self
                        .timers
                        .get(Timer::Tick(id))
                        .is_none_or(|at| at > now + path::PROVING_GAP)
                    {
                        self.timers.set(Timer::Tick(id), now + path::PROVING_GAP);
                    }
                    let (path, remote) = (path.id, path.remote);
                    tracing::debug!(assoc = %id, %path, %remote, answers = %src, ?rtt, "path validated");
                    self.outputs
                        .push_back(Output::Event(DataEvent::PathValidated {
                            assoc: id,
                            path,
                            remote,
                            rtt,
                        }));
                    if !was_up {
                        self.outputs
                            .push_back(Output::Event(DataEvent::AssociationUp(id)));
                    }
                    self.observe(now, id);
                }
            }
            ControlBody::PathStats {
                seq,
                rx_packets,
                rx_bytes,
                last_rx_us,
            } => {
                let Some(path) = assoc
                    .path_from(uplink, src)
                    .and_then(|k| assoc.paths.get_mut(&k))
                    .filter(|p| p.state == PathState::Active)
                else {
                    assoc.counters.unexpected_control += 1;
                    return;
                };
                let rx = Traffic {
                    packets: rx_packets,
                    bytes: rx_bytes,
                };
                let wall = self.config.wall_clock;
                path.lane.on_report(now, &wall, (seq, rx, last_rx_us));
            }
            ControlBody::ReflectResponse { observed } => {
                let slot = reflexive::reflector_index(&self.reflectors, src).and_then(|i| {
                    assoc
                        .mesh
                        .get_mut(&uplink)
                        .and_then(|m| m.reflect.get_mut(i))
                });
                let Some(slot) = slot.filter(|s| s.awaits(repr.txid)) else {
                    assoc.counters.unexpected_control += 1;
                    return;
                };
                let changed = slot.observed != Some(observed.0);
                slot.answered(now, observed.0);
                let settled = assoc
                    .mesh
                    .get(&uplink)
                    .is_some_and(|m| reflexive::settled(&m.reflect));
                if changed && settled {
                    tracing::debug!(assoc = %id, %uplink, reflector = %src, observed = %observed.0, "reflexive address");
                    self.outputs
                        .push_back(Output::Event(DataEvent::Reflexive { assoc: id, uplink }));
                }
            }
            _ => assoc.counters.unexpected_control += 1,
        }
    }

    fn ping(&mut self, now: Instant, id: AssocId, key: (UplinkId, SocketAddr)) {
        let txid = self.rng.next_u64();
        let wall = self.config.wall_clock.unix_us(now);
        self.check_liveness(now, id, key);
        let Some(assoc) = self.assocs.get_mut(&id) else {
            return;
        };
        let Some(socket) = assoc
            .mesh
            .get(&key.0)
            .and_then(|m| m.local.map(|_| m.socket))
        else {
            return;
        };
        let Some(path) = assoc.paths.get_mut(&key) else {
            return;
        };
        let socket = path.via.unwrap_or(socket);
        path.on_probe(txid, now);
        let ping = ControlRepr {
            txid,
            timestamp_us: wall,
            body: ControlBody::Ping {
                pad: ADDR_LEN as u16,
                policy: ping_policy(assoc.policy(key.0))
                    | if assoc.awaits_confirmation(now) {
                        PING_NEWER_KEY
                    } else {
                        0
                    }
                    | nat_bits(assoc, key.0),
            },
        };
        let payload = ping.to_bytes(assoc.send_key(now));
        self.outputs.push_back(Output::Transmit(Transmit {
            socket,
            dst: key.1,
            payload,
        }));
    }

    /// Fails an active path whose oldest unanswered ping is overdue. The
    /// deadline follows the path's round trip and how often it is probed:
    /// a path carrying data is probed every `active_probe_interval` (every
    /// eighth of its round trip beyond 400 ms) and fails about three lost
    /// pings after it dies (well under 300 ms where the round trip is
    /// 50 ms or less); an idle one after `failed_after` probe intervals,
    /// or its round trip and one interval where that is longer.
    fn check_liveness(&mut self, now: Instant, id: AssocId, key: (UplinkId, SocketAddr)) {
        let ceiling = self.config.probe_interval * self.config.failed_after;
        let Some(assoc) = self.assocs.get_mut(&id) else {
            return;
        };
        let busy = assoc.is_busy(now, BUSY);
        let was_up = assoc.is_up();
        let Some(path) = assoc.paths.get_mut(&key) else {
            return;
        };
        let interval = if busy {
            path.probe_gap(self.config.scheduler.active_probe_interval)
        } else {
            self.config.probe_interval
        };
        let deadline = path.liveness_deadline(interval, LIVENESS_FLOOR, ceiling);
        if !path.overdue(now, deadline) || !path.fail() {
            return;
        }
        let (path_id, remote) = (path.id, path.remote);
        tracing::debug!(assoc = %id, path = %path_id, %remote, ?deadline, "path failed");
        // Our own NAT may have moved us (a rebinding, a new public
        // address): ask the reflectors again and bind the relay leg again
        // at once, instead of at their refresh, so the peer learns the new
        // address and the relay follows it within a round trip.
        if let Some(mesh) = assoc.mesh.get_mut(&key.0) {
            for slot in &mut mesh.reflect {
                slot.answered_at = None;
            }
        }
        if let Some(leg) = assoc.relay.as_mut().and_then(|r| r.legs.get_mut(&key.0)) {
            leg.pinned = false;
        }
        self.timers.set(Timer::Probe(id), now);
        self.outputs.push_back(Output::Event(DataEvent::PathFailed {
            assoc: id,
            path: path_id,
            remote,
        }));
        if was_up && !assoc.is_up() {
            self.outputs
                .push_back(Output::Event(DataEvent::AssociationDown(id)));
        }
        self.observe(now, id);
    }

    /// While an association carries data (in either direction): probes its
    /// active paths fast, fails the overdue ones, samples what each has
    /// sent, and reports what each has received to the peer.
    fn tick(&mut self, now: Instant, id: AssocId) {
        let config = self.config.scheduler;
        let wall = self.config.wall_clock.unix_us(now);
        let Some(assoc) = self.assocs.get_mut(&id) else {
            return;
        };
        let sending = assoc.is_busy(now, BUSY);
        let receiving = assoc.paths.values().any(|p| {
            p.last_data
                .is_some_and(|at| now.saturating_duration_since(at) < BUSY)
        });
        let mut to_ping = Vec::new();
        let mut to_check = Vec::new();
        let mut proving = false;
        let send_key = assoc.send_key(now).clone();
        for (&key, path) in &mut assoc.paths {
            if path.state != PathState::Active {
                continue;
            }
            if sending {
                path.lane.snapshot(now, path.tx);
            }
            to_check.push(key);
            // A direct path validated lately, while no data goes out, is
            // pinged fast until it has told what it loses; never with more
            // than half the outstanding pings a path remembers, so one that
            // dies meanwhile still has an unanswered ping old enough to
            // fail it; within the node's budget. While data goes out it is
            // pinged at the usual interval (fast pings then upset the
            // multiwan b case's plan).
            let fast = !sending && path.proving() && !path.kind.is_relay();
            proving |= fast;
            let gap = if fast && path.outstanding() < MAX_PENDING / 2 {
                Some(path.probe_gap(path::PROVING_GAP))
            } else if sending {
                Some(path.probe_gap(config.active_probe_interval))
            } else {
                None
            };
            // Only the fast pings (no data going out) count on the budget.
            if gap.is_some_and(|gap| !path.pinged_within(now, gap))
                && (sending || self.proving_budget.take(now))
            {
                to_ping.push(key);
            }
            let due = path
                .lane
                .stats_at
                .is_none_or(|at| now.saturating_duration_since(at) >= config.stats_interval);
            if due && path.rx.packets > path.lane.reported {
                let Some(socket) = assoc.mesh.get(&key.0).map(|m| m.socket) else {
                    continue;
                };
                let socket = path.via.unwrap_or(socket);
                path.lane.stats_seq += 1;
                path.lane.reported = path.rx.packets;
                path.lane.stats_at = Some(now);
                let last_rx_us = path
                    .last_data
                    .map_or(wall, |at| self.config.wall_clock.unix_us(at));
                let stats = ControlRepr {
                    txid: self.rng.next_u64(),
                    timestamp_us: wall,
                    body: ControlBody::PathStats {
                        seq: path.lane.stats_seq,
                        rx_packets: path.rx.packets,
                        rx_bytes: path.rx.bytes,
                        last_rx_us,
                    },
                };
                // Back to where the data came from.
                self.outputs.push_back(Output::Transmit(Transmit {
                    socket,
                    dst: path.data_from.unwrap_or(key.1),
                    payload: stats.to_bytes(&send_key),
                }));
            }
        }
        for key in to_check {
            self.check_liveness(now, id, key);
        }
        for key in to_ping {
            self.ping(now, id, key);
        }
        if proving {
            self.timers.set(Timer::Tick(id), now + path::PROVING_GAP);
        } else if sending || receiving {
            self.timers
                .set(Timer::Tick(id), now + config.active_probe_interval);
        }
        self.observe(now, id);
    }

    fn probe(&mut self, now: Instant, id: AssocId) {
        let Some(assoc) = self.assocs.get_mut(&id) else {
            return;
        };
        // Addresses that only sent data are challenged when they send, not
        // pinged on a timer (a spoofed source must not aim us at a victim).
        // Active and relay paths are pinged now; the candidates queue for
        // the pacer, those never probed only once the punch is on.
        let holding = assoc.pacer.holding(now);
        let mut now_keys = Vec::new();
        for key in assoc.candidate_order() {
            let path = &assoc.paths[&key];
            if path.state == PathState::Active || path.kind.is_relay() {
                now_keys.push(key);
            } else if !(holding && path.pings == 0) {
                assoc.pacer.enqueue(key);
            }
        }
        for key in now_keys {
            self.ping(now, id, key);
        }
        self.pace(now, id);
        // Set before the relay bind, which may want a round sooner.
        self.timers
            .set(Timer::Probe(id), now + self.config.probe_interval);
        // The relay bind first: behind a sequential NAT a new relay
        // mapping taken after the reflectors' would shift the ports they
        // let us predict.
        self.bind_relay(now, id, None);
        self.reflect(now, id);
        self.observe(now, id);
    }

    /// The punch is on: every unvalidated candidate pair queues for a
    /// paced probe now.
    fn start_punch(&mut self, now: Instant, id: AssocId) {
        let Some(assoc) = self.assocs.get_mut(&id) else {
            return;
        };
        assoc.pacer.hold_until = None;
        for key in assoc.candidate_order() {
            let path = &assoc.paths[&key];
            if path.state != PathState::Active && !path.kind.is_relay() {
                assoc.pacer.enqueue(key);
            }
        }
        self.pace(now, id);
        self.plan_birthday(now, id);
    }

    /// Sends the next queued candidate probe if the pace and the cap allow
    /// it, and sets the timer for the one after.
    fn pace(&mut self, now: Instant, id: AssocId) {
        let config = self.config.punch;
        let Some(assoc) = self.assocs.get_mut(&id) else {
            return;
        };
        let mut due = None;
        if assoc.pacer.next_at(now, &config) <= now {
            while let Some(key) = assoc.pacer.queue.pop_front() {
                let wanted = assoc
                    .paths
                    .get(&key)
                    .is_some_and(|p| p.state != PathState::Active && !p.unproven);
                if wanted {
                    due = Some(key);
                    break;
                }
            }
        }
        if due.is_some() {
            assoc.pacer.sent(now, config.max_probes_per_s);
            assoc.first_probe.get_or_insert(now);
        }
        if assoc.pacer.queue.is_empty() {
            self.timers.stop(Timer::Pace(id));
        } else {
            let at = assoc.pacer.next_at(now, &config);
            self.timers.set(Timer::Pace(id), at);
        }
        if let Some(key) = due {
            self.ping(now, id, key);
        }
    }

    /// Sends a relay bind from every mesh socket whose leg is due (or only
    /// from `only`'s, at once): see [`relay_leg`].
    fn bind_relay(&mut self, now: Instant, id: AssocId, only: Option<UplinkId>) {
        let interval = self.config.probe_interval;
        let wall = self.config.wall_clock.unix_us(now);
        let Some(assoc) = self.assocs.get_mut(&id) else {
            return;
        };
        let direct_up = assoc.direct_up();
        let Some(binding) = assoc.relay.as_mut() else {
            return;
        };
        let retired_by = binding.offered_at + relay_leg::RELAY_RETIRE_MAX;
        if let Some(old) = assoc.retiring.take_if(|_| now >= retired_by) {
            assoc
                .paths
                .retain(|&(_, remote), _| remote != old.offer.relay);
            tracing::debug!(assoc = %id, relay = %old.offer.relay, "retired relay leg never released; dropped");
        }
        let deferred = !binding.may_bind(now, direct_up, assoc.first_probe);
        if deferred {
            // Bind the moment it may, not at the next probe round.
            let from = binding.bind_from(assoc.first_probe);
            if self.timers.get(Timer::Probe(id)).is_none_or(|at| at > from) {
                self.timers.set(Timer::Probe(id), from);
            }
        }
        for (&uplink, mesh) in &assoc.mesh {
            let Some(local) = mesh.local else {
                continue;
            };
            if only.is_some_and(|o| o != uplink) {
                continue;
            }
            // Only a NAT that allocates in sequence (or one not classified
            // yet) must wait for the punch: any other loses nothing to the
            // bind's new mapping.
            if deferred && !relay_leg::binds_freely(local, &mesh.reflect) {
                continue;
            }
            if mesh
                .local
                .is_some_and(|l| l.is_ipv4() != binding.offer.relay.is_ipv4())
            {
                continue;
            }
            let leg = binding.legs.entry(uplink).or_default();
            if only.is_none() && !leg.due(now, interval) {
                continue;
            }
            leg.last_sent = Some(now);
            let bind = ControlRepr {
                txid: self.rng.next_u64(),
                timestamp_us: wall,
                body: ControlBody::RelayBind {
                    allocation: binding.offer.allocation,
                    leg: binding.offer.leg,
                    cookie: leg.cookie,
                },
            };
            self.outputs.push_back(Output::Transmit(Transmit {
                socket: mesh.socket,
                dst: binding.offer.relay,
                payload: bind.to_bytes(&binding.key),
            }));
        }
    }

    /// The relay's answer to one of our binds, on `uplink`'s socket.
    fn on_relay_ack(&mut self, now: Instant, id: AssocId, uplink: UplinkId, repr: ControlRepr) {
        let Some(assoc) = self.assocs.get_mut(&id) else {
            return;
        };
        let Some(binding) = assoc.relay.as_mut() else {
            return;
        };
        let ControlBody::RelayBindAck {
            allocation,
            leg,
            cookie,
            ..
        } = repr.body
        else {
            assoc.counters.unexpected_control += 1;
            return;
        };
        if allocation != binding.offer.allocation || leg != binding.offer.leg {
            assoc.counters.unexpected_control += 1;
            return;
        }
        let (relay, kind) = (binding.offer.relay, binding.offer.kind);
        let Some(state) = binding.legs.get_mut(&uplink) else {
            assoc.counters.unexpected_control += 1;
            return;
        };
        let was_pinned = state.pinned;
        if state.on_ack(now, cookie) {
            self.bind_relay(now, id, Some(uplink));
            return;
        }
        if !was_pinned {
            tracing::debug!(assoc = %id, %uplink, %relay, "relay leg pinned");
            if assoc.add_path(uplink, relay, Learned::Trusted) {
                if let Some(path) = assoc.paths.get_mut(&(uplink, relay)) {
                    path.kind = kind;
                }
                self.ping(now, id, (uplink, relay));
            }
        }
    }

    /// Asks each reflector for every mesh socket's outside address, where
    /// it never answered (again each probe interval) or its answer is old.
    /// A request is as large as the answer (no amplification).
    fn reflect(&mut self, now: Instant, id: AssocId) {
        let interval = self.config.probe_interval;
        let wall = self.config.wall_clock.unix_us(now);
        let Some(assoc) = self.assocs.get_mut(&id) else {
            return;
        };
        let mut gave_up = Vec::new();
        for (&uplink, mesh) in assoc.mesh.iter_mut() {
            let Some(local) = mesh.local else {
                continue;
            };
            if !reflexive::reflectable(local.ip()) {
                continue;
            }
            let mut silent = false;
            for (slot, &reflector) in mesh.reflect.iter_mut().zip(&self.reflectors) {
                if !slot.due(now, interval) || reflector.is_ipv4() != local.is_ipv4() {
                    continue;
                }
                let txid = self.rng.next_u64();
                let last_try = slot.tries == reflexive::SILENT_AFTER - 1;
                slot.sent(txid, now);
                if last_try && slot.observed.is_none() {
                    // Silent long enough: offer what the others said.
                    silent = true;
                }
                let request = ControlRepr {
                    txid,
                    timestamp_us: wall,
                    body: ControlBody::ReflectRequest {
                        assoc: id.0,
                        pad: ADDR_LEN as u16,
                    },
                };
                self.outputs.push_back(Output::Transmit(Transmit {
                    socket: mesh.socket,
                    dst: reflector,
                    payload: request.to_bytes(&assoc.key),
                }));
            }
            if silent && reflexive::settled(&mesh.reflect) {
                gave_up.push(uplink);
            }
        }
        for uplink in gave_up {
            self.outputs
                .push_back(Output::Event(DataEvent::Reflexive { assoc: id, uplink }));
        }
    }
}

impl StateMachine for DataPlane {
    type Event = DataEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        match input {
            Input::Datagram(datagram) => self.on_datagram(now, datagram),
            Input::SocketBound { socket, local } => {
                if let Some(&role) = self.sockets.get(&socket) {
                    self.on_bound(now, role, local);
                } else {
                    self.birthday_bound(now, socket, local);
                }
            }
            Input::SocketFailed { socket, reason } => {
                // A temporary socket that could not be bound just stays out.
                self.birthday_sockets.remove(&socket);
                if let Some(&role) = self.sockets.get(&socket) {
                    tracing::warn!(?role, ?reason, "socket could not be bound");
                    self.outputs
                        .push_back(Output::Event(DataEvent::BindFailed { role, reason }));
                }
            }
            // The data plane owns no byte streams (they carry the control
            // plane's TCP fallback).
            Input::StreamAccepted { .. }
            | Input::StreamOpened { .. }
            | Input::StreamData { .. }
            | Input::StreamClosed { .. } => {}
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_expired(now) {
            match timer {
                Timer::Probe(id) => self.probe(now, id),
                Timer::Tick(id) => self.tick(now, id),
                Timer::Punch(id) => self.start_punch(now, id),
                Timer::Pace(id) => self.pace(now, id),
                Timer::Birthday(id) => self.birthday_tick(now, id),
            }
        }
    }

    fn poll_output(&mut self) -> Option<Output<DataEvent>> {
        self.outputs.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }
}

#[cfg(test)]
mod tests;

/// Size of each block [`own`] copies payloads into.
const ARENA_BLOCK: usize = 256 * 1024;

/// An owned copy of `payload` for an output, carved from a shared block:
/// forwarding costs a copy but no allocation per datagram. A block is freed
/// once the last datagram carved from it has been sent.
fn own(arena: &mut BytesMut, payload: &[u8]) -> Bytes {
    if arena.capacity() < payload.len() {
        *arena = BytesMut::with_capacity(ARENA_BLOCK.max(payload.len()));
    }
    arena.extend_from_slice(payload);
    arena.split().freeze()
}
