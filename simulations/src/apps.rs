//! Traffic applications for hosts: a constant-rate or bursty UDP source, a
//! sink that measures what arrives, and a scriptable peer that can echo.
//! They are ordinary [`StateMachine`]s, run through the same pump as
//! proto-core machines. [`TcpOverUdp`] carries a real TCP flow (smoltcp)
//! inside UDP, as WireGuard would.

mod tcp;

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use transitloom_proto_core::{Input, Output, SocketId, StateMachine, Transmit};

pub use tcp::{mismatches, pattern, TcpFlow, TcpOverUdp, TcpStats};

/// Bytes of header every source packet starts with: sequence and send time.
pub const SOURCE_HEADER: usize = 16;

/// Events of the traffic apps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppEvent {
    /// A socket is open.
    Bound(SocketId, SocketAddr),
    /// A socket could not be opened.
    BindFailed(SocketId, std::io::ErrorKind),
}

fn bind(socket: SocketId, local: SocketAddr) -> Output<AppEvent> {
    Output::BindSocket { socket, local }
}

fn bind_event(input: &Input<'_>) -> Option<AppEvent> {
    match *input {
        Input::SocketBound { socket, local } => Some(AppEvent::Bound(socket, local)),
        Input::SocketFailed { socket, reason } => Some(AppEvent::BindFailed(socket, reason)),
        _ => None,
    }
}

/// Sends numbered datagrams of one size at a constant rate, in bursts.
#[derive(Debug)]
pub struct UdpSource {
    dst: SocketAddr,
    size: usize,
    /// Time between bursts.
    period: Duration,
    burst: u32,
    start: Instant,
    stop: Instant,
    epoch: Instant,
    next: Option<Instant>,
    seq: u64,
    outputs: VecDeque<Output<AppEvent>>,
}

impl UdpSource {
    /// Sends `size`-byte datagrams to `dst` at `bits_per_second`, in bursts
    /// of `burst` back-to-back packets, between `start` and `stop` (offsets
    /// from `epoch`, the world's start).
    ///
    /// # Panics
    /// If `size` is smaller than [`SOURCE_HEADER`] or the rate is not positive.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        local: SocketAddr,
        dst: SocketAddr,
        size: usize,
        bits_per_second: f64,
        burst: u32,
        epoch: Instant,
        start: Duration,
        stop: Duration,
    ) -> Self {
        assert!(
            size >= SOURCE_HEADER,
            "source packets carry a {SOURCE_HEADER}-byte header"
        );
        assert!(bits_per_second > 0.0, "a source needs a positive rate");
        let burst = burst.max(1);
        let packets_per_second = bits_per_second / (size as f64 * 8.0);
        let period = Duration::from_secs_f64(f64::from(burst) / packets_per_second);
        Self {
            dst,
            size,
            period,
            burst,
            start: epoch + start,
            stop: epoch + stop,
            epoch,
            next: None,
            seq: 0,
            outputs: VecDeque::from([bind(SocketId(0), local)]),
        }
    }

    /// Datagrams sent so far.
    pub fn sent(&self) -> u64 {
        self.seq
    }

    fn send_burst(&mut self, now: Instant) {
        for _ in 0..self.burst {
            let mut payload = BytesMut::with_capacity(self.size);
            payload.put_u64(self.seq);
            payload.put_u64((now - self.epoch).as_nanos() as u64);
            payload.put_bytes((self.seq % 251) as u8, self.size - SOURCE_HEADER);
            self.seq += 1;
            self.outputs.push_back(Output::Transmit(Transmit {
                socket: SocketId(0),
                dst: self.dst,
                payload: payload.freeze(),
            }));
        }
    }
}

impl StateMachine for UdpSource {
    type Event = AppEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        if let Some(event) = bind_event(&input) {
            if matches!(event, AppEvent::Bound(..)) {
                self.next = Some(self.start.max(now));
            }
            self.outputs.push_back(Output::Event(event));
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        while let Some(at) = self.next.filter(|&at| at <= now) {
            if at >= self.stop {
                self.next = None;
                break;
            }
            self.send_burst(now);
            self.next = Some(at + self.period);
        }
    }

    fn poll_output(&mut self) -> Option<Output<AppEvent>> {
        self.outputs.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }
}

/// One datagram as a [`UdpSink`] saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Arrival time since the world's start.
    pub at: Duration,
    /// The source's sequence number.
    pub seq: u64,
    /// Payload length.
    pub len: usize,
    /// One-way delay (the source stamps its send time).
    pub delay: Duration,
}

/// Receives a [`UdpSource`]'s datagrams and measures them.
#[derive(Debug)]
pub struct UdpSink {
    epoch: Instant,
    arrivals: Vec<Arrival>,
    seen: BTreeSet<u64>,
    max_seq: Option<u64>,
    /// Datagrams received.
    pub packets: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// Datagrams whose sequence number was already seen.
    pub duplicates: u64,
    /// Datagrams that arrived after a later-numbered one.
    pub reordered: u64,
    /// Datagrams too short to carry the source header, or whose filler
    /// bytes differ from what the source wrote (altered in transit).
    pub malformed: u64,
    outputs: VecDeque<Output<AppEvent>>,
}

/// Arrivals kept for analysis; counters go on past it.
const ARRIVAL_LIMIT: usize = 4_000_000;

impl UdpSink {
    /// A sink on `local`; `epoch` is the world's start (for one-way delay).
    pub fn new(local: SocketAddr, epoch: Instant) -> Self {
        Self {
            epoch,
            arrivals: Vec::new(),
            seen: BTreeSet::new(),
            max_seq: None,
            packets: 0,
            bytes: 0,
            duplicates: 0,
            reordered: 0,
            malformed: 0,
            outputs: VecDeque::from([bind(SocketId(0), local)]),
        }
    }

    /// Every datagram received, in arrival order (bounded).
    pub fn arrivals(&self) -> &[Arrival] {
        &self.arrivals
    }

    /// Payload bytes that arrived within `[from, to)` (offsets from the start).
    pub fn bytes_between(&self, from: Duration, to: Duration) -> u64 {
        self.arrivals
            .iter()
            .filter(|a| a.at >= from && a.at < to)
            .map(|a| a.len as u64)
            .sum()
    }

    /// Distinct sequence numbers received.
    pub fn unique(&self) -> u64 {
        self.seen.len() as u64
    }
}

impl StateMachine for UdpSink {
    type Event = AppEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        if let Some(event) = bind_event(&input) {
            self.outputs.push_back(Output::Event(event));
            return;
        }
        let Input::Datagram(d) = input else {
            return;
        };
        self.packets += 1;
        self.bytes += d.payload.len() as u64;
        if d.payload.len() < SOURCE_HEADER {
            self.malformed += 1;
            return;
        }
        let mut word = [0u8; 8];
        word.copy_from_slice(&d.payload[..8]);
        let seq = u64::from_be_bytes(word);
        let filler = (seq % 251) as u8;
        if d.payload[SOURCE_HEADER..].iter().any(|&b| b != filler) {
            self.malformed += 1;
            return;
        }
        word.copy_from_slice(&d.payload[8..16]);
        let sent = Duration::from_nanos(u64::from_be_bytes(word));
        if !self.seen.insert(seq) {
            self.duplicates += 1;
        } else if self.max_seq.is_some_and(|max| seq < max) {
            self.reordered += 1;
        }
        self.max_seq = self.max_seq.max(Some(seq));
        if self.arrivals.len() < ARRIVAL_LIMIT {
            let at = now - self.epoch;
            self.arrivals.push(Arrival {
                at,
                seq,
                len: d.payload.len(),
                delay: at.saturating_sub(sent),
            });
        }
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_output(&mut self) -> Option<Output<AppEvent>> {
        self.outputs.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

/// A datagram a [`Peer`] received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Arrival time since the world's start.
    pub at: Duration,
    /// The socket (index into the peer's socket list).
    pub socket: SocketId,
    /// The sender as seen by this host.
    pub src: SocketAddr,
    /// The payload.
    pub payload: Bytes,
}

/// How a [`Peer`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// It does not.
    Off,
    /// Back to the sender from the socket the datagram arrived on.
    Same,
    /// Back to the sender from another socket (to test NAT filtering).
    From(SocketId),
}

/// A scriptable host: opens sockets, sends what a scenario tells it to,
/// records what arrives, and optionally echoes each datagram back to its
/// sender from a chosen socket.
#[derive(Debug)]
pub struct Peer {
    epoch: Instant,
    /// Sockets that are open, by index.
    pub bound: Vec<Option<SocketAddr>>,
    /// Everything received (bounded).
    pub received: Vec<Received>,
    /// Whether and from where to echo what arrives.
    pub echo: Echo,
    outputs: VecDeque<Output<AppEvent>>,
}

const RECEIVED_LIMIT: usize = 100_000;

impl Peer {
    /// A peer with one socket per address in `locals` (`SocketId(i)`).
    pub fn new(locals: &[SocketAddr], epoch: Instant) -> Self {
        let outputs = locals
            .iter()
            .enumerate()
            .map(|(i, &local)| bind(SocketId(i as u32), local))
            .collect();
        Self {
            epoch,
            bound: vec![None; locals.len()],
            received: Vec::new(),
            echo: Echo::Off,
            outputs,
        }
    }

    /// Queues a datagram; wake the host afterwards so it is sent.
    pub fn send(&mut self, socket: SocketId, dst: SocketAddr, payload: impl Into<Bytes>) {
        self.outputs.push_back(Output::Transmit(Transmit {
            socket,
            dst,
            payload: payload.into(),
        }));
    }
}

impl StateMachine for Peer {
    type Event = AppEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        if let Some(event) = bind_event(&input) {
            if let AppEvent::Bound(socket, local) = event {
                if let Some(slot) = self.bound.get_mut(socket.0 as usize) {
                    *slot = Some(local);
                }
            }
            self.outputs.push_back(Output::Event(event));
            return;
        }
        let Input::Datagram(d) = input else {
            return;
        };
        let payload = Bytes::copy_from_slice(d.payload);
        match self.echo {
            Echo::Off => {}
            Echo::Same => self.send(d.socket, d.src, payload.clone()),
            Echo::From(socket) => self.send(socket, d.src, payload.clone()),
        }
        if self.received.len() < RECEIVED_LIMIT {
            self.received.push(Received {
                at: now - self.epoch,
                socket: d.socket,
                src: d.src,
                payload,
            });
        }
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_output(&mut self) -> Option<Output<AppEvent>> {
        self.outputs.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}
