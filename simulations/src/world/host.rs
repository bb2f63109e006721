//! Hosts run real proto-core state machines: the world gives each one a
//! [`SimIo`] and a [`SimClock`] that implement the driver contract, and runs
//! the same [`Pump`] the runtimes use.

use std::any::Any;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use transitloom_proto_core::driver::Pump;
use transitloom_proto_core::driver::{Clock, PumpReport, RecvBatch, Sink, UdpIo};
use transitloom_proto_core::{ServiceId, SocketId, StateMachine, Transmit};

/// Datagrams a host holds before its machine reads them (its socket buffers).
pub const INBOX_LIMIT: usize = 65_536;

/// Virtual time, as the pump sees it.
#[derive(Debug, Clone, Copy)]
pub struct SimClock(pub Instant);

impl Clock for SimClock {
    fn now(&self) -> Instant {
        self.0
    }
}

/// A host's sockets, as its machine sees them through the driver contract.
#[derive(Debug, Default)]
pub struct SimIo {
    pub(crate) addrs: Vec<IpAddr>,
    pub(crate) sockets: BTreeMap<SocketId, SocketAddr>,
    pub(crate) inbox: VecDeque<(SocketId, SocketAddr, Bytes)>,
    pub(crate) outbox: Vec<Transmit>,
    next_ephemeral: u16,
}

impl SimIo {
    pub(crate) fn reset(&mut self) {
        self.sockets.clear();
        self.inbox.clear();
        self.outbox.clear();
    }

    /// The socket bound to `dst` on this host, if any.
    pub(crate) fn socket_for(&self, dst: SocketAddr) -> Option<SocketId> {
        self.sockets
            .iter()
            .find(|(_, local)| {
                local.port() == dst.port()
                    && (local.ip() == dst.ip() || local.ip().is_unspecified())
            })
            .map(|(&id, _)| id)
    }

    fn port_in_use(&self, ip: IpAddr, port: u16) -> bool {
        self.sockets.values().any(|local| {
            local.port() == port
                && (local.ip() == ip || local.ip().is_unspecified() || ip.is_unspecified())
        })
    }
}

impl UdpIo for SimIo {
    fn bind(&mut self, socket: SocketId, local: SocketAddr) -> io::Result<SocketAddr> {
        if !local.ip().is_unspecified() && !self.addrs.contains(&local.ip()) {
            return Err(io::ErrorKind::AddrNotAvailable.into());
        }
        if self.sockets.contains_key(&socket) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        let mut bound = local;
        if local.port() == 0 {
            let mut tries = 0u32;
            loop {
                self.next_ephemeral = self.next_ephemeral.max(49_152).wrapping_add(1).max(49_152);
                if !self.port_in_use(local.ip(), self.next_ephemeral) {
                    bound.set_port(self.next_ephemeral);
                    break;
                }
                tries += 1;
                if tries > 16_384 {
                    return Err(io::ErrorKind::AddrInUse.into());
                }
            }
        } else if self.port_in_use(local.ip(), local.port()) {
            return Err(io::ErrorKind::AddrInUse.into());
        }
        self.sockets.insert(socket, bound);
        Ok(bound)
    }

    fn close(&mut self, socket: SocketId) {
        self.sockets.remove(&socket);
        self.inbox.retain(|(id, _, _)| *id != socket);
    }

    fn recv(&mut self, batch: &mut RecvBatch) {
        while !batch.is_full() {
            let Some((socket, src, payload)) = self.inbox.pop_front() else {
                break;
            };
            batch.push(socket, src, &payload);
        }
    }

    fn send(&mut self, transmits: &[Transmit]) -> usize {
        let known = |t: &&Transmit| self.sockets.contains_key(&t.socket);
        let accepted: Vec<Transmit> = transmits.iter().filter(known).cloned().collect();
        let count = accepted.len();
        self.outbox.extend(accepted);
        count
    }
}

/// A machine the world can run on a host, whatever its event type.
pub trait HostApp: Any {
    /// Runs one pump over the host's sockets at virtual time `clock`.
    fn pump(&mut self, pump: &mut Pump, io: &mut SimIo, clock: &SimClock) -> PumpReport;
    /// For downcasting to [`Hosted`].
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// For downcasting to [`Hosted`].
    fn as_any(&self) -> &dyn Any;
}

/// A state machine on a host, with what it reported.
#[derive(Debug)]
pub struct Hosted<M: StateMachine> {
    /// The machine itself, for scenario steps (send data, read counters).
    pub machine: M,
    /// Events it emitted, with the virtual time since the world's start.
    pub events: Vec<(Duration, M::Event)>,
    /// Payloads it delivered to in-process services.
    pub delivered: Vec<(Duration, ServiceId, Bytes)>,
    epoch: Instant,
    now: Instant,
    /// Keep at most this many events and deliveries (oldest dropped).
    pub history_limit: usize,
}

impl<M: StateMachine> Hosted<M> {
    pub(crate) fn new(machine: M, epoch: Instant) -> Self {
        Self {
            machine,
            events: Vec::new(),
            delivered: Vec::new(),
            epoch,
            now: epoch,
            history_limit: 1_000_000,
        }
    }
}

struct HostedSink<'a, E> {
    events: &'a mut Vec<(Duration, E)>,
    delivered: &'a mut Vec<(Duration, ServiceId, Bytes)>,
    at: Duration,
    limit: usize,
}

impl<E> Sink<E> for HostedSink<'_, E> {
    fn event(&mut self, event: E) {
        if self.events.len() < self.limit {
            self.events.push((self.at, event));
        }
    }

    fn deliver(&mut self, service: ServiceId, payload: Bytes) {
        if self.delivered.len() < self.limit {
            self.delivered.push((self.at, service, payload));
        }
    }
}

impl<M> HostApp for Hosted<M>
where
    M: StateMachine + 'static,
    M::Event: Debug + 'static,
{
    fn pump(&mut self, pump: &mut Pump, io: &mut SimIo, clock: &SimClock) -> PumpReport {
        self.now = clock.0;
        let mut sink = HostedSink {
            events: &mut self.events,
            delivered: &mut self.delivered,
            at: self.now.saturating_duration_since(self.epoch),
            limit: self.history_limit,
        };
        pump.run(&mut self.machine, io, clock, &mut sink)
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
