//! A real TCP flow carried the way WireGuard carries it: a smoltcp stack
//! whose IP packets travel as the payloads of UDP datagrams between the
//! app's UDP socket (a service target, like WireGuard's socket) and one UDP
//! destination (a node's ingress, or the other end directly).
//!
//! smoltcp's clock is the world's virtual time and its randomness a seed
//! from the world, so a flow is as deterministic as the rest of the run.
//! The sender writes a stream whose every byte follows from its offset
//! ([`pattern`]); the receiver checks each byte, so a stream that arrives
//! shifted, duplicated or altered is caught, not just counted. The tunnel
//! numbers each packet it sends (in the IPv4 identification field), as
//! WireGuard numbers its packets, so each end counts the reordering the
//! path put in, as a replay window would see it.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpProtocol, Ipv4Packet, TcpPacket};
use transitloom_proto_core::{Input, Output, SocketId, StateMachine, Transmit};

use super::{bind, bind_event, AppEvent};

/// The sender's address inside the tunnel.
const SENDER_IP: IpAddress = IpAddress::v4(10, 99, 0, 1);
/// The receiver's address inside the tunnel.
const RECEIVER_IP: IpAddress = IpAddress::v4(10, 99, 0, 2);
/// The receiver's listening port.
const TCP_PORT: u16 = 5_001;
/// The sender's port (one connection per stack, so a fixed one is enough).
const SENDER_PORT: u16 = 40_001;
/// Receive arrivals kept for series; counters go on past it.
const ARRIVAL_LIMIT: usize = 1_000_000;

/// The byte at `offset` of every stream: the offset's 8-byte block number,
/// big-endian, so any shift, repeat or gap changes what is read.
pub fn pattern(offset: u64) -> u8 {
    (offset / 8).to_be_bytes()[(offset % 8) as usize]
}

/// How many bytes of `bytes`, read at stream offset `offset`, differ from
/// the [`pattern`].
pub fn mismatches(offset: u64, bytes: &[u8]) -> usize {
    bytes
        .iter()
        .zip(offset..)
        .filter(|&(&b, at)| b != pattern(at))
        .count()
}

/// How a [`TcpOverUdp`] is wired.
#[derive(Debug, Clone, Copy)]
pub struct TcpFlow {
    /// The app's UDP socket (the service target).
    pub local: SocketAddr,
    /// Where its IP packets go (a node's ingress, or the other end).
    pub peer: SocketAddr,
    /// The tunnel's IP MTU: the largest IP packet, so the largest datagram.
    pub ip_mtu: usize,
    /// Send and receive buffer of the TCP socket, in bytes (bounds the window).
    pub buffer: usize,
    /// When the sender connects, after the world's start.
    pub start: Duration,
    /// Seed of smoltcp's randomness (initial sequence numbers).
    pub seed: u64,
}

/// What the tunnel saw, counted from the packets themselves (smoltcp keeps
/// its own estimates private).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// IP packets sent as datagrams.
    pub packets_out: u64,
    /// IP packets received from the peer.
    pub packets_in: u64,
    /// Datagrams from another source than the peer (dropped).
    pub foreign: u64,
    /// Datagrams from the peer that are not an IPv4 TCP packet (dropped by smoltcp).
    pub not_tcp: u64,
    /// Segments sent again (their start below the highest sequence sent).
    pub retransmitted: u64,
    /// Payload bytes in those segments.
    pub retransmitted_bytes: u64,
    /// Round-trip samples: a new segment until the ACK covering it, none
    /// across a retransmission (Karn).
    pub rtt_samples: u64,
    /// Smallest sample.
    pub rtt_min: Duration,
    /// Largest sample.
    pub rtt_max: Duration,
    /// Sum of the samples, for the mean.
    pub rtt_sum: Duration,
    /// Packets from the peer that arrived after a later one: the tunnel
    /// numbers every packet it sends, as WireGuard does, so this is the
    /// reordering a replay window sees (losses and retransmissions are not
    /// counted).
    pub reordered: u64,
    /// The most packets one of those arrived behind (its distance from the
    /// highest number seen before it).
    pub reorder_extent: u64,
}

impl TcpStats {
    /// Mean round-trip time, if there was a sample.
    pub fn rtt_mean(&self) -> Option<Duration> {
        (self.rtt_samples > 0).then(|| self.rtt_sum / self.rtt_samples as u32)
    }

    fn rtt(&mut self, sample: Duration) {
        if self.rtt_samples == 0 || sample < self.rtt_min {
            self.rtt_min = sample;
        }
        self.rtt_max = self.rtt_max.max(sample);
        self.rtt_sum += sample;
        self.rtt_samples += 1;
    }
}

/// The sender's sequence bookkeeping for [`TcpStats`].
#[derive(Debug, Default)]
struct SequenceLog {
    /// One past the highest sequence number sent.
    highest_end: Option<i32>,
    /// New segments not yet acknowledged: (sequence end, sent at).
    unacked: VecDeque<(i32, Instant)>,
}

/// Whether sequence number `a` is before `b` (RFC 793 modular order).
fn before(a: i32, b: i32) -> bool {
    a.wrapping_sub(b) < 0
}

impl SequenceLog {
    fn sent(&mut self, stats: &mut TcpStats, now: Instant, seq: i32, len: u32, payload: usize) {
        if len == 0 {
            return;
        }
        let end = seq.wrapping_add(len as i32);
        match self.highest_end {
            Some(highest) if before(seq, highest) => {
                stats.retransmitted += 1;
                stats.retransmitted_bytes += payload as u64;
                // Karn: an ACK after a retransmission says nothing about RTT.
                self.unacked.clear();
                if before(highest, end) {
                    self.highest_end = Some(end);
                }
            }
            _ => {
                self.highest_end = Some(end);
                self.unacked.push_back((end, now));
            }
        }
    }

    fn acked(&mut self, stats: &mut TcpStats, now: Instant, ack: i32) {
        let mut newest = None;
        while let Some(&(end, sent)) = self.unacked.front() {
            if before(ack, end) {
                break;
            }
            newest = Some(sent);
            self.unacked.pop_front();
        }
        if let Some(sent) = newest {
            stats.rtt(now - sent);
        }
    }
}

/// The tunnel's packet numbers in arrival order, for [`TcpStats`].
#[derive(Debug, Default)]
struct ArrivalOrder {
    /// The highest number seen.
    highest: Option<u16>,
}

impl ArrivalOrder {
    /// Records packet `number`; 16-bit numbers wrap, compared serially.
    fn arrived(&mut self, stats: &mut TcpStats, number: u16) {
        match self.highest {
            Some(highest) if (number.wrapping_sub(highest) as i16) < 0 => {
                stats.reordered += 1;
                let behind = u64::from(highest.wrapping_sub(number));
                stats.reorder_extent = stats.reorder_extent.max(behind);
            }
            _ => self.highest = Some(number),
        }
    }
}

/// The smoltcp device: IP packets in from datagrams, out to datagrams.
#[derive(Debug)]
struct Tunnel {
    mtu: usize,
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
    /// The number the next packet sent carries.
    next_number: u16,
}

impl Tunnel {
    /// Numbers an outgoing IPv4 packet in its identification field (smoltcp
    /// leaves it 0 when it does not fragment), the way WireGuard's counter
    /// numbers each packet, so the far end can see reordering.
    fn number(&mut self, packet: &mut [u8]) {
        if let Ok(mut ip) = Ipv4Packet::new_checked(packet) {
            ip.set_ident(self.next_number);
            ip.fill_checksum();
            self.next_number = self.next_number.wrapping_add(1);
        }
    }
}

impl Device for Tunnel {
    type RxToken<'a> = Received;
    type TxToken<'a> = Sending<'a>;

    fn receive(
        &mut self,
        _timestamp: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((Received(packet), Sending(&mut self.tx)))
    }

    fn transmit(&mut self, _timestamp: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        Some(Sending(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps
    }
}

/// A received IP packet, handed to smoltcp.
#[derive(Debug)]
struct Received(Vec<u8>);

impl phy::RxToken for Received {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

/// Room for one IP packet smoltcp sends.
#[derive(Debug)]
struct Sending<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::TxToken for Sending<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = vec![0; len];
        let result = f(&mut packet);
        self.0.push_back(packet);
        result
    }
}

/// The TCP header fields the stats need, if `packet` is IPv4 carrying TCP.
struct Segment {
    seq: i32,
    /// Sequence space used: payload plus SYN and FIN.
    len: u32,
    payload: usize,
    ack: Option<i32>,
}

fn segment(packet: &[u8]) -> Option<Segment> {
    let ip = Ipv4Packet::new_checked(packet).ok()?;
    if ip.next_header() != IpProtocol::Tcp {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    let payload = tcp.payload().len();
    Some(Segment {
        seq: tcp.seq_number().0,
        len: payload as u32 + u32::from(tcp.syn()) + u32::from(tcp.fin()),
        payload,
        ack: tcp.ack().then(|| tcp.ack_number().0),
    })
}

#[derive(Debug)]
enum Role {
    Sender {
        /// Stream length; `None` writes until the run ends.
        limit: Option<u64>,
        written: u64,
        connected: bool,
        closed: bool,
    },
    Receiver {
        received: u64,
        /// Bytes that differ from [`pattern`] at their offset.
        corrupt: u64,
        /// (arrival since the start, bytes), one per read.
        arrivals: Vec<(Duration, u64)>,
        /// When the sender's FIN arrived after the whole stream.
        finished_at: Option<Duration>,
    },
}

/// One end of a TCP connection tunnelled over UDP. See the module docs.
pub struct TcpOverUdp {
    flow: TcpFlow,
    epoch: Instant,
    role: Role,
    iface: Interface,
    sockets: SocketSet<'static>,
    tcp: SocketHandle,
    tunnel: Tunnel,
    log: SequenceLog,
    order: ArrivalOrder,
    stats: TcpStats,
    established_at: Option<Duration>,
    next_poll: Option<Instant>,
    outputs: VecDeque<Output<AppEvent>>,
}

impl std::fmt::Debug for TcpOverUdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpOverUdp")
            .field("flow", &self.flow)
            .field("role", &self.role)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl TcpOverUdp {
    /// The connecting end: writes `limit` bytes of [`pattern`] (or writes
    /// until the run ends with `None`), then closes.
    pub fn sender(flow: TcpFlow, limit: Option<u64>, epoch: Instant) -> Self {
        let role = Role::Sender {
            limit,
            written: 0,
            connected: false,
            closed: false,
        };
        Self::new(flow, role, SENDER_IP, epoch)
    }

    /// The listening end: reads, checks and counts.
    pub fn receiver(flow: TcpFlow, epoch: Instant) -> Self {
        let role = Role::Receiver {
            received: 0,
            corrupt: 0,
            arrivals: Vec::new(),
            finished_at: None,
        };
        let mut app = Self::new(flow, role, RECEIVER_IP, epoch);
        app.sockets
            .get_mut::<tcp::Socket>(app.tcp)
            .listen(TCP_PORT)
            .expect("a fresh socket listens on a non-zero port");
        app
    }

    fn new(flow: TcpFlow, role: Role, ip: IpAddress, epoch: Instant) -> Self {
        let mut tunnel = Tunnel {
            mtu: flow.ip_mtu,
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            next_number: 0,
        };
        let mut config = Config::new(HardwareAddress::Ip);
        config.random_seed = flow.seed;
        let mut iface = Interface::new(config, &mut tunnel, smoltcp::time::Instant::ZERO);
        iface.update_ip_addrs(|addrs| {
            addrs
                .push(IpCidr::new(ip, 24))
                .expect("a fresh interface has room for one address");
        });
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; flow.buffer]),
            tcp::SocketBuffer::new(vec![0; flow.buffer]),
        );
        socket.set_congestion_control(tcp::CongestionControl::Cubic);
        let mut sockets = SocketSet::new(Vec::new());
        let tcp = sockets.add(socket);
        Self {
            flow,
            epoch,
            role,
            iface,
            sockets,
            tcp,
            tunnel,
            log: SequenceLog::default(),
            order: ArrivalOrder::default(),
            stats: TcpStats::default(),
            established_at: None,
            next_poll: None,
            outputs: VecDeque::from([bind(SocketId(0), flow.local)]),
        }
    }

    /// What the tunnel counted.
    pub fn stats(&self) -> &TcpStats {
        &self.stats
    }

    /// When the connection was first established, since the world's start.
    pub fn established_at(&self) -> Option<Duration> {
        self.established_at
    }

    /// Bytes the sender wrote into its socket (0 for a receiver).
    pub fn written(&self) -> u64 {
        match self.role {
            Role::Sender { written, .. } => written,
            Role::Receiver { .. } => 0,
        }
    }

    /// Bytes the receiver read (0 for a sender).
    pub fn received(&self) -> u64 {
        match self.role {
            Role::Receiver { received, .. } => received,
            Role::Sender { .. } => 0,
        }
    }

    /// Bytes the receiver read that differ from the sender's stream.
    pub fn corrupt(&self) -> u64 {
        match self.role {
            Role::Receiver { corrupt, .. } => corrupt,
            Role::Sender { .. } => 0,
        }
    }

    /// When the receiver saw the sender's close after the whole stream.
    pub fn finished_at(&self) -> Option<Duration> {
        match self.role {
            Role::Receiver { finished_at, .. } => finished_at,
            Role::Sender { .. } => None,
        }
    }

    /// Every read: (time since the world's start, bytes), bounded.
    pub fn arrivals(&self) -> &[(Duration, u64)] {
        match &self.role {
            Role::Receiver { arrivals, .. } => arrivals,
            Role::Sender { .. } => &[],
        }
    }

    /// Bytes read within `[from, to)` (offsets from the start).
    pub fn bytes_between(&self, from: Duration, to: Duration) -> u64 {
        self.arrivals()
            .iter()
            .filter(|(at, _)| *at >= from && *at < to)
            .map(|(_, bytes)| bytes)
            .sum()
    }

    fn stamp(&self, now: Instant) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros((now - self.epoch).as_micros() as i64)
    }

    /// Runs smoltcp at `now`: packets in, the application's reads or
    /// writes, packets out, and the next time it wants to run.
    fn drive(&mut self, now: Instant) {
        let stamp = self.stamp(now);
        self.connect_if_due(now);
        loop {
            self.iface.poll(stamp, &mut self.tunnel, &mut self.sockets);
            if !self.serve(now) {
                break;
            }
        }
        if self.established_at.is_none()
            && self.sockets.get::<tcp::Socket>(self.tcp).state() == tcp::State::Established
        {
            self.established_at = Some(now - self.epoch);
        }
        while let Some(mut packet) = self.tunnel.tx.pop_front() {
            self.tunnel.number(&mut packet);
            if let Some(s) = segment(&packet) {
                self.log.sent(&mut self.stats, now, s.seq, s.len, s.payload);
            }
            self.stats.packets_out += 1;
            self.outputs.push_back(Output::Transmit(Transmit {
                socket: SocketId(0),
                dst: self.flow.peer,
                payload: Bytes::from(packet),
            }));
        }
        let wanted = self
            .iface
            .poll_at(stamp, &self.sockets)
            .map(|at| self.epoch + Duration::from_micros(at.total_micros().max(0) as u64));
        let start = match self.role {
            Role::Sender {
                connected: false, ..
            } => Some(self.epoch + self.flow.start),
            _ => None,
        };
        // smoltcp was just polled dry: a deadline at or before now would
        // only spin, so it gets the clock's next tick (a microsecond).
        let next = wanted.map(|at| at.max(now + Duration::from_micros(1)));
        self.next_poll = match (next, start) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }

    fn connect_if_due(&mut self, now: Instant) {
        let Role::Sender { connected, .. } = &mut self.role else {
            return;
        };
        if *connected || now < self.epoch + self.flow.start {
            return;
        }
        *connected = true;
        let socket = self.sockets.get_mut::<tcp::Socket>(self.tcp);
        socket
            .connect(
                self.iface.context(),
                (RECEIVER_IP, TCP_PORT),
                (SENDER_IP, SENDER_PORT),
            )
            .expect("a fresh socket connects to a fixed endpoint");
    }

    /// The application's part: the sender fills its socket, the receiver
    /// drains and checks it. Whether any byte moved.
    fn serve(&mut self, now: Instant) -> bool {
        let at = now - self.epoch;
        let socket = self.sockets.get_mut::<tcp::Socket>(self.tcp);
        match &mut self.role {
            Role::Sender {
                limit,
                written,
                closed,
                ..
            } => {
                let mut moved = false;
                while socket.can_send() && limit.is_none_or(|l| *written < l) {
                    let left = limit.map_or(u64::MAX, |l| l - *written);
                    let offset = *written;
                    let n = socket
                        .send(|buf| {
                            let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                            for (i, byte) in buf[..n].iter_mut().enumerate() {
                                *byte = pattern(offset + i as u64);
                            }
                            (n, n)
                        })
                        .unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    *written += n as u64;
                    moved = true;
                }
                if !*closed && limit.is_some_and(|l| *written == l) {
                    socket.close();
                    *closed = true;
                    moved = true;
                }
                moved
            }
            Role::Receiver {
                received,
                corrupt,
                arrivals,
                finished_at,
            } => {
                let mut read = 0u64;
                while socket.can_recv() {
                    let offset = *received + read;
                    let (n, bad) = socket
                        .recv(|buf| (buf.len(), (buf.len(), mismatches(offset, buf))))
                        .unwrap_or((0, 0));
                    if n == 0 {
                        break;
                    }
                    read += n as u64;
                    *corrupt += bad as u64;
                }
                *received += read;
                if read > 0 && arrivals.len() < ARRIVAL_LIMIT {
                    arrivals.push((at, read));
                }
                // CloseWait: the peer's FIN is in and every byte before it read.
                if finished_at.is_none() && socket.state() == tcp::State::CloseWait {
                    *finished_at = Some(at);
                    socket.close();
                    return true;
                }
                read > 0
            }
        }
    }
}

impl StateMachine for TcpOverUdp {
    type Event = AppEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        if let Some(event) = bind_event(&input) {
            self.outputs.push_back(Output::Event(event));
            self.drive(now);
            return;
        }
        let Input::Datagram(d) = input else {
            return;
        };
        if d.src != self.flow.peer {
            self.stats.foreign += 1;
            return;
        }
        self.stats.packets_in += 1;
        if let Ok(ip) = Ipv4Packet::new_checked(d.payload) {
            self.order.arrived(&mut self.stats, ip.ident());
        }
        match segment(d.payload) {
            Some(s) => {
                if let Some(ack) = s.ack {
                    self.log.acked(&mut self.stats, now, ack);
                }
            }
            None => self.stats.not_tcp += 1,
        }
        self.tunnel.rx.push_back(d.payload.to_vec());
        self.drive(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.drive(now);
    }

    fn poll_output(&mut self) -> Option<Output<AppEvent>> {
        self.outputs.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_poll
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shifted_repeated_or_altered_stream_is_caught() {
        let stream: Vec<u8> = (0..4_096).map(pattern).collect();
        assert_eq!(mismatches(0, &stream), 0);
        assert_eq!(mismatches(1_000, &stream[1_000..]), 0);
        for shift in 1..64 {
            // Bytes lost or repeated at the start of a read.
            assert!(mismatches(0, &stream[shift..shift + 1_024]) > 0, "{shift}");
            assert!(mismatches(shift as u64, &stream[..1_024]) > 0, "{shift}");
        }
        let mut altered = stream.clone();
        altered[2_000] ^= 1;
        assert_eq!(mismatches(0, &altered), 1);
    }

    #[test]
    fn late_packets_are_counted_with_how_far_behind_across_the_wrap() {
        let mut order = ArrivalOrder::default();
        let mut stats = TcpStats::default();
        // 65534, 65535, 0 and 2 in order (1 overtaken), then 1 late by one,
        // then 65535 again, late by three.
        for number in [65_534, 65_535, 0, 2, 1, 65_535] {
            order.arrived(&mut stats, number);
        }
        assert_eq!((stats.reordered, stats.reorder_extent), (2, 3));
        // A number far ahead (a long loss) is new, not late.
        order.arrived(&mut stats, 20_000);
        assert_eq!(stats.reordered, 2);
    }

    #[test]
    fn sent_packets_are_numbered_and_keep_a_valid_checksum() {
        let mut tunnel = Tunnel {
            mtu: 1_380,
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            next_number: u16::MAX,
        };
        let mut packet = vec![0u8; 40];
        let mut ip = Ipv4Packet::new_unchecked(&mut packet[..]);
        ip.set_version(4);
        ip.set_header_len(20);
        ip.set_total_len(40);
        ip.set_hop_limit(64);
        ip.set_next_header(IpProtocol::Tcp);
        ip.fill_checksum();
        for want in [u16::MAX, 0] {
            tunnel.number(&mut packet);
            let ip = Ipv4Packet::new_checked(&packet[..]).unwrap();
            assert_eq!(ip.ident(), want);
            assert!(ip.verify_checksum());
        }
    }

    #[test]
    fn retransmissions_are_counted_and_not_sampled() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut log = SequenceLog::default();
        let mut stats = TcpStats::default();
        // Near the wrap, to check modular order.
        let base = i32::MAX - 1_000;
        log.sent(&mut stats, ms(0), base, 1_000, 1_000);
        log.sent(&mut stats, ms(1), base.wrapping_add(1_000), 1_000, 1_000);
        log.acked(&mut stats, ms(40), base.wrapping_add(1_000));
        assert_eq!(
            (stats.rtt_samples, stats.rtt_min),
            (1, Duration::from_millis(40))
        );
        log.sent(&mut stats, ms(50), base.wrapping_add(1_000), 1_000, 1_000);
        assert_eq!((stats.retransmitted, stats.retransmitted_bytes), (1, 1_000));
        log.acked(&mut stats, ms(90), base.wrapping_add(2_000));
        assert_eq!(stats.rtt_samples, 1, "no sample across a retransmission");
        log.sent(&mut stats, ms(100), base.wrapping_add(2_000), 500, 500);
        log.acked(&mut stats, ms(130), base.wrapping_add(2_500));
        assert_eq!(stats.rtt_samples, 2);
        assert_eq!(stats.rtt_mean(), Some(Duration::from_millis(35)));
    }
}
