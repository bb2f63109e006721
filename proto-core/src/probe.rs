//! Authenticated path probing on one mesh socket: pings every configured or
//! learned remote, answers pings with the address they came from, validates a
//! path on the first authentic pong from that exact address, measures RTT,
//! declares a path failed after missed probes, and carries data only over
//! validated paths. It is the smallest machine that exercises the driver
//! contract end to end (the runtimes' loopback tests and the simulator's
//! probe scenarios run it); the node's data plane (`dataplane`) shares its
//! `Path` type but keeps its own per-association path logic.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use crate::dataplane::{Path, PathState};
use crate::dataplane::{SchedulerConfig, UplinkPolicy};
use crate::id::{PathId, ServiceId, SocketId, UplinkId};
use crate::machine::{Datagram, Input, Output, StateMachine, Transmit};
use crate::replay::ReplayCache;
use crate::rng::Rng;
use crate::time::WallClock;
use crate::timer::TimerTable;
use crate::wire::{
    classify, AddrRepr, AuthKey, Classified, ControlBody, ControlRepr, ADDR_LEN, KEY_LEN,
};

/// The socket a prober owns.
pub const PROBE_SOCKET: SocketId = SocketId(0);
/// The service id data is delivered to.
pub const PROBE_SERVICE: ServiceId = ServiceId(0);
/// At most this many remotes (configured plus learned) per prober.
pub const MAX_PATHS: usize = 16;
/// Replay window for the peer's timestamps.
const REPLAY_WINDOW_US: u64 = 10_000_000;
const REPLAY_CAPACITY: usize = 4_096;

/// How a prober behaves.
#[derive(Debug, Clone)]
pub struct ProberConfig {
    /// Address to bind the mesh socket to.
    pub local: SocketAddr,
    /// The association key shared with the peer.
    pub key: [u8; KEY_LEN],
    /// Remote addresses to probe.
    pub remotes: Vec<SocketAddr>,
    /// Time between probes of a path.
    pub interval: Duration,
    /// Probe intervals without a pong before a path is declared failed.
    pub failed_after: u32,
    /// Seed of the prober's randomness (transaction ids).
    pub seed: u64,
    /// Wall-clock anchor for packet timestamps.
    pub wall_clock: WallClock,
}

/// What a prober reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProbeEvent {
    /// The socket is open at this address.
    Bound(SocketAddr),
    /// The socket could not be opened.
    BindFailed(std::io::ErrorKind),
    /// A path answered for the first time since it was probing or failed.
    PathValidated {
        /// The remote address.
        remote: SocketAddr,
        /// The round trip that validated it.
        rtt: Duration,
    },
    /// A validated path stopped answering.
    PathFailed {
        /// The remote address.
        remote: SocketAddr,
    },
    /// The peer reported a different address for us (reflexive address).
    Observed {
        /// The address the peer saw our pings come from.
        observed: SocketAddr,
    },
}

/// Counters for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeCounters {
    /// Pings sent.
    pub pings_sent: u64,
    /// Pongs sent.
    pub pongs_sent: u64,
    /// Pongs that matched an outstanding ping.
    pub pongs_matched: u64,
    /// Control packets refused by the replay cache.
    pub replays: u64,
    /// Authentic control packets that could not be understood or were unexpected.
    pub unintelligible: u64,
    /// Data sent over a validated path.
    pub data_sent: u64,
    /// Data dropped on send because no path was validated.
    pub data_no_path: u64,
    /// Data delivered from validated paths.
    pub data_delivered: u64,
    /// Data dropped because its source was not a validated path.
    pub data_unvalidated: u64,
    /// Remotes not learned because the table was full.
    pub paths_refused: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// Time to ping every path.
    Probe,
}

/// Probes the paths of one mesh socket. See the module docs.
#[derive(Debug)]
pub struct Prober {
    config: ProberConfig,
    key: AuthKey,
    rng: Rng,
    bound: Option<SocketAddr>,
    paths: BTreeMap<SocketAddr, Path>,
    observed: Option<SocketAddr>,
    replay: ReplayCache,
    timers: TimerTable<Timer>,
    outputs: VecDeque<Output<ProbeEvent>>,
    counters: ProbeCounters,
}

impl Prober {
    /// A prober that asks for its socket straight away.
    pub fn new(config: ProberConfig) -> Self {
        let mut outputs = VecDeque::new();
        outputs.push_back(Output::BindSocket {
            socket: PROBE_SOCKET,
            local: config.local,
        });
        let paths = config
            .remotes
            .iter()
            .take(MAX_PATHS)
            .enumerate()
            .map(|(i, &remote)| (remote, new_path(PathId(i as u32), remote)))
            .collect();
        Self {
            key: AuthKey::new(&config.key),
            rng: Rng::new(config.seed),
            bound: None,
            paths,
            observed: None,
            replay: ReplayCache::new(REPLAY_WINDOW_US, REPLAY_CAPACITY),
            timers: TimerTable::default(),
            outputs,
            counters: ProbeCounters::default(),
            config,
        }
    }

    /// Each path and its state, in address order.
    pub fn paths(&self) -> impl Iterator<Item = (SocketAddr, &Path)> + '_ {
        self.paths.iter().map(|(&remote, path)| (remote, path))
    }

    /// The counters so far.
    pub fn counters(&self) -> ProbeCounters {
        self.counters
    }

    /// The active path with the lowest smoothed RTT.
    pub fn best_path(&self) -> Option<SocketAddr> {
        self.paths
            .iter()
            .filter(|(_, p)| p.state == PathState::Active)
            .min_by_key(|(_, p)| p.srtt)
            .map(|(&remote, _)| remote)
    }

    /// Sends `payload` unchanged over the best active path; false when no
    /// path is validated (the payload is dropped).
    pub fn send_data(&mut self, payload: Bytes) -> bool {
        let Some(dst) = self.best_path() else {
            self.counters.data_no_path += 1;
            return false;
        };
        self.counters.data_sent += 1;
        self.outputs.push_back(Output::Transmit(Transmit {
            socket: PROBE_SOCKET,
            dst,
            payload,
        }));
        true
    }

    fn on_datagram(&mut self, now: Instant, datagram: Datagram<'_>) {
        match classify(datagram.payload, &self.key) {
            Classified::Data => self.on_data(datagram),
            Classified::Unintelligible(err) => {
                self.counters.unintelligible += 1;
                tracing::debug!(src = %datagram.src, %err, "unintelligible control packet");
            }
            Classified::Control(repr) => {
                if let Err(err) = self.replay.check(repr.timestamp_us, repr.txid) {
                    self.counters.replays += 1;
                    tracing::debug!(src = %datagram.src, %err, "control packet refused");
                    return;
                }
                self.on_control(now, datagram.src, repr);
            }
        }
    }

    fn on_data(&mut self, datagram: Datagram<'_>) {
        let validated = self
            .paths
            .get(&datagram.src)
            .is_some_and(|p| p.state == PathState::Active);
        if validated {
            self.counters.data_delivered += 1;
            self.outputs.push_back(Output::Deliver {
                service: PROBE_SERVICE,
                payload: Bytes::copy_from_slice(datagram.payload),
            });
        } else {
            // Challenge the source at the next probe rather than answer now:
            // an answer here could be larger than what provoked it.
            self.counters.data_unvalidated += 1;
            self.learn(datagram.src);
            tracing::trace!(src = %datagram.src, "data from unvalidated source dropped");
        }
    }

    fn on_control(&mut self, now: Instant, src: SocketAddr, repr: ControlRepr) {
        match repr.body {
            ControlBody::Ping { .. } => {
                // The peer reached us from `src`: probe it back (peer-reflexive).
                self.learn(src);
                let pong = ControlRepr {
                    txid: repr.txid,
                    timestamp_us: self.config.wall_clock.unix_us(now),
                    body: ControlBody::Pong {
                        observed: AddrRepr(src),
                    },
                };
                self.counters.pongs_sent += 1;
                self.transmit(src, pong);
            }
            ControlBody::Pong { observed } => self.on_pong(now, src, repr.txid, observed.0),
            _ => self.counters.unintelligible += 1,
        }
    }

    fn on_pong(&mut self, now: Instant, src: SocketAddr, txid: u64, observed: SocketAddr) {
        let Some(path) = self.paths.get_mut(&src) else {
            self.counters.unintelligible += 1;
            return;
        };
        let Some((_, rtt, validated)) = path.on_pong(txid, now) else {
            self.counters.unintelligible += 1;
            return;
        };
        self.counters.pongs_matched += 1;
        if validated {
            tracing::debug!(remote = %src, ?rtt, "path validated");
            self.outputs
                .push_back(Output::Event(ProbeEvent::PathValidated {
                    remote: src,
                    rtt,
                }));
        }
        if self.observed != Some(observed) {
            self.observed = Some(observed);
            self.outputs
                .push_back(Output::Event(ProbeEvent::Observed { observed }));
        }
    }

    fn learn(&mut self, remote: SocketAddr) {
        if self.paths.contains_key(&remote) {
            return;
        }
        if self.paths.len() >= MAX_PATHS {
            self.counters.paths_refused += 1;
            return;
        }
        let id = PathId(self.paths.len() as u32);
        self.paths.insert(remote, new_path(id, remote));
    }

    fn probe_all(&mut self, now: Instant) {
        let remotes: Vec<SocketAddr> = self.paths.keys().copied().collect();
        for remote in remotes {
            let txid = self.rng.next_u64();
            // Failed once `failed_after` probe intervals passed with a ping
            // unanswered.
            let deadline = (self.config.interval * self.config.failed_after)
                .saturating_sub(Duration::from_nanos(1));
            let Some(path) = self.paths.get_mut(&remote) else {
                continue;
            };
            let failed = path.overdue(now, deadline) && path.fail();
            path.on_probe(txid, now);
            if failed {
                tracing::debug!(%remote, "path failed");
                self.outputs
                    .push_back(Output::Event(ProbeEvent::PathFailed { remote }));
            }
            let ping = ControlRepr {
                txid,
                timestamp_us: self.config.wall_clock.unix_us(now),
                body: ControlBody::Ping {
                    pad: ADDR_LEN as u16,
                    policy: 0,
                },
            };
            self.counters.pings_sent += 1;
            self.transmit(remote, ping);
        }
        self.timers.set(Timer::Probe, now + self.config.interval);
    }

    fn transmit(&mut self, dst: SocketAddr, repr: ControlRepr) {
        self.outputs.push_back(Output::Transmit(Transmit {
            socket: PROBE_SOCKET,
            dst,
            payload: repr.to_bytes(&self.key),
        }));
    }
}

impl StateMachine for Prober {
    type Event = ProbeEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        match input {
            Input::Datagram(datagram)
                if datagram.socket == PROBE_SOCKET && self.bound.is_some() =>
            {
                self.on_datagram(now, datagram);
            }
            Input::SocketBound { socket, local } if socket == PROBE_SOCKET => {
                self.bound = Some(local);
                self.outputs
                    .push_back(Output::Event(ProbeEvent::Bound(local)));
                self.probe_all(now);
            }
            Input::SocketFailed { socket, reason } if socket == PROBE_SOCKET => {
                self.outputs
                    .push_back(Output::Event(ProbeEvent::BindFailed(reason)));
            }
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_expired(now) {
            match timer {
                Timer::Probe => self.probe_all(now),
            }
        }
    }

    fn poll_output(&mut self) -> Option<Output<ProbeEvent>> {
        self.outputs.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }
}

#[cfg(test)]
mod tests;

/// A path of the prober's one socket.
fn new_path(id: PathId, remote: SocketAddr) -> Path {
    Path::new(
        id,
        UplinkId(0),
        remote,
        &UplinkPolicy::default(),
        &SchedulerConfig::default(),
    )
}
