//! A client transport (side 0) and a server transport (side 1) joined by an
//! in-memory byte pipe in virtual time: each direction delivers writes in
//! order after a fixed delay; a close arrives after the bytes before it.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::*;
use crate::control::msg::{self, FrameDecoder, Message};
use crate::control::tls_config::test_pki::TestPki;
use crate::control::tls_config::{self, ClientAuth};

const DELAY: Duration = Duration::from_millis(10);
const NAME: &str = "coord-1";
const CLIENT: usize = 0;
const SERVER: usize = 1;

/// What crosses the pipe.
#[derive(Debug)]
enum Wire {
    Opened,
    Bytes(Bytes),
    Closed,
}

struct Side {
    transport: ControlTransport,
    addr: SocketAddr,
    events: Vec<(Instant, ControlEvent)>,
    received: BTreeMap<SessionId, Vec<u8>>,
    /// This side's stream id → the other side's.
    peer_of: BTreeMap<StreamId, StreamId>,
}

struct Pipe {
    now: Instant,
    sides: [Side; 2],
    /// (arrival, seq) -> (to side, its stream, what)
    in_flight: BTreeMap<(Instant, u64), (usize, StreamId, Wire)>,
    seq: u64,
    silent: bool,
    next_accepted: u64,
}

fn wall_clock(now: Instant) -> WallClock {
    WallClock::new(now, 1_700_000_000_000_000)
}

impl Pipe {
    fn new(pki: &TestPki, auth: ClientAuth, timing: QuicTiming) -> Self {
        let now = crate::test_epoch();
        let server = tls_config::server_config(&pki.root, pki.coordinator.tls(), auth).unwrap();
        let transport = |server, seed| {
            let config = QuicConfig {
                wall_clock: wall_clock(now),
                server,
                timing,
            };
            ControlTransport::new(config, Drbg::new([seed; 32])).unwrap()
        };
        let side = |transport, addr: &str| Side {
            transport,
            addr: addr.parse().unwrap(),
            events: Vec::new(),
            received: BTreeMap::new(),
            peer_of: BTreeMap::new(),
        };
        Self {
            now,
            sides: [
                side(transport(None, 1), "192.0.2.10:40000"),
                side(transport(Some(server), 2), "203.0.113.5:7443"),
            ],
            in_flight: BTreeMap::new(),
            seq: 0,
            silent: false,
            next_accepted: 0,
        }
    }

    fn connect(&mut self, tls: Arc<rustls::ClientConfig>) -> SessionId {
        let (now, remote) = (self.now, self.sides[SERVER].addr);
        let session = self.sides[CLIENT]
            .transport
            .connect(now, Carrier::Tcp, remote, NAME, tls)
            .unwrap();
        self.drain(CLIENT);
        session
    }

    fn send(&mut self, side: usize, session: SessionId, bytes: &[u8]) {
        let now = self.now;
        self.sides[side]
            .transport
            .send(now, session, bytes)
            .unwrap();
        self.drain(side);
    }

    fn post(&mut self, to: usize, stream: StreamId, wire: Wire) {
        if self.silent {
            return;
        }
        self.seq += 1;
        self.in_flight
            .insert((self.now + DELAY, self.seq), (to, stream, wire));
    }

    fn drain(&mut self, side: usize) {
        let now = self.now;
        let other = 1 - side;
        while let Some(command) = self.sides[side].transport.poll_stream_command() {
            match command {
                StreamCommand::Connect { stream, .. } => {
                    assert_eq!(side, CLIENT);
                    self.next_accepted += 1;
                    let accepted = StreamId(StreamId::ACCEPTED | self.next_accepted);
                    self.sides[CLIENT].peer_of.insert(stream, accepted);
                    self.sides[SERVER].peer_of.insert(accepted, stream);
                    let remote = self.sides[CLIENT].addr;
                    assert!(self.sides[SERVER]
                        .transport
                        .handle_stream_accepted(now, accepted, remote));
                    self.post(CLIENT, stream, Wire::Opened);
                }
                StreamCommand::Write { stream, bytes } => {
                    if let Some(&to) = self.sides[side].peer_of.get(&stream) {
                        self.post(other, to, Wire::Bytes(bytes));
                    }
                }
                StreamCommand::Close { stream } => {
                    if let Some(to) = self.sides[side].peer_of.remove(&stream) {
                        self.post(other, to, Wire::Closed);
                    }
                }
            }
        }
        let s = &mut self.sides[side];
        while let Some(event) = s.transport.poll_event() {
            if let ControlEvent::Received { session, bytes } = &event {
                s.received
                    .entry(*session)
                    .or_default()
                    .extend_from_slice(bytes);
            }
            s.events.push((now, event));
        }
    }

    fn run_until(&mut self, until: Instant) {
        loop {
            self.drain(CLIENT);
            self.drain(SERVER);
            let next_wire = self.in_flight.keys().next().map(|&(at, _)| at);
            let next_timer = self
                .sides
                .iter()
                .filter_map(|s| s.transport.poll_timeout())
                .min();
            let Some(next) = [next_wire, next_timer].into_iter().flatten().min() else {
                self.now = until;
                return;
            };
            if next > until {
                self.now = until;
                return;
            }
            self.now = self.now.max(next);
            let now = self.now;
            if next_wire == Some(next) {
                let (_, (to, stream, wire)) = self.in_flight.pop_first().unwrap();
                let t = &mut self.sides[to].transport;
                match wire {
                    Wire::Opened => t.handle_stream_opened(now, stream),
                    Wire::Bytes(bytes) => t.handle_stream_data(now, stream, &bytes),
                    Wire::Closed => {
                        self.sides[to].peer_of.remove(&stream);
                        t.handle_stream_closed(now, stream, None)
                    }
                }
            } else {
                for s in &mut self.sides {
                    if s.transport.poll_timeout().is_some_and(|at| at <= now) {
                        s.transport.handle_timeout(now);
                    }
                }
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        self.run_until(until);
    }

    fn connected(&self, side: usize) -> Option<(SessionId, Carrier, Vec<CertificateDer<'static>>)> {
        self.sides[side].events.iter().find_map(|(_, e)| match e {
            ControlEvent::Connected {
                session,
                carrier,
                peer_chain,
                ..
            } => Some((*session, *carrier, peer_chain.clone())),
            _ => None,
        })
    }

    fn closed(&self, side: usize) -> Option<(Instant, CloseReason)> {
        self.sides[side].events.iter().find_map(|(at, e)| match e {
            ControlEvent::Closed { reason, .. } => Some((*at, reason.clone())),
            _ => None,
        })
    }

    /// Application messages a side received, keepalives left out.
    fn messages(&self, side: usize, session: SessionId) -> Vec<Message> {
        let mut decoder = FrameDecoder::new();
        decoder.push(
            self.sides[side]
                .received
                .get(&session)
                .map_or(&[][..], |v| v),
        );
        let mut out = Vec::new();
        while let Some(m) = decoder.next().unwrap() {
            if !matches!(m, Message::Keepalive { .. }) {
                out.push(m);
            }
        }
        out
    }
}

fn frame(message: &Message) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    msg::encode(message, &mut buf).unwrap();
    buf.to_vec()
}

fn node_tls(pki: &TestPki) -> Arc<rustls::ClientConfig> {
    tls_config::client_config(&pki.root, Some(pki.node.tls())).unwrap()
}

fn assert_refused(pipe: &Pipe) {
    for side in [CLIENT, SERVER] {
        assert!(pipe.connected(side).is_none(), "side {side} connected");
        match pipe.closed(side) {
            Some((_, CloseReason::HandshakeFailed(why))) => eprintln!("side {side}: {why}"),
            other => panic!("side {side}: expected a failed handshake, got {other:?}"),
        }
    }
    assert!(pipe.sides.iter().all(|s| s.received.is_empty()));
    assert_eq!(pipe.sides[SERVER].transport.open_streams(), 0);
}

#[test]
fn mutual_handshake_over_tcp_then_frames_both_ways() {
    let pki = TestPki::new(1, NAME);
    let mut pipe = Pipe::new(&pki, ClientAuth::Required, QuicTiming::default());
    let client = pipe.connect(node_tls(&pki));
    pipe.advance(Duration::from_secs(1));
    let (server, carrier, chain) = pipe.connected(SERVER).expect("server connected");
    assert_eq!(carrier, Carrier::Tcp);
    assert_eq!(chain, pki.node.chain, "the server sees the node's chain");
    let (_, carrier, chain) = pipe.connected(CLIENT).expect("client connected");
    assert_eq!(carrier, Carrier::Tcp);
    assert_eq!(chain[0], pki.coordinator.chain[0]);
    assert_eq!(
        pipe.sides[CLIENT].transport.carrier(client),
        Some(Carrier::Tcp)
    );

    let big = Message::Reject {
        code: msg::RejectCode::Malformed,
        reason: "x".repeat(200),
    };
    for _ in 0..500 {
        pipe.send(CLIENT, client, &frame(&Message::TokenRequest));
        pipe.send(SERVER, server, &frame(&big));
    }
    pipe.advance(Duration::from_secs(1));
    assert_eq!(
        pipe.messages(SERVER, server),
        vec![Message::TokenRequest; 500]
    );
    assert_eq!(pipe.messages(CLIENT, client), vec![big; 500]);
    assert_eq!(pipe.sides[SERVER].transport.stream_counters().accepted, 1);
}

#[test]
fn a_client_of_another_root_is_refused_on_both_sides() {
    let pki = TestPki::new(2, NAME);
    let foreign = TestPki::new(3, NAME);
    let mut pipe = Pipe::new(&pki, ClientAuth::Optional, QuicTiming::default());
    let tls = tls_config::client_config(&pki.root, Some(foreign.node.tls())).unwrap();
    pipe.connect(tls);
    pipe.advance(Duration::from_secs(2));
    assert_refused(&pipe);
}

#[test]
fn a_server_of_another_root_is_refused() {
    let pki = TestPki::new(4, NAME);
    let foreign = TestPki::new(5, NAME);
    let mut pipe = Pipe::new(&pki, ClientAuth::Required, QuicTiming::default());
    let tls = tls_config::client_config(&foreign.root, Some(foreign.node.tls())).unwrap();
    pipe.connect(tls);
    pipe.advance(Duration::from_secs(2));
    assert_refused(&pipe);
}

#[test]
fn a_wrong_or_missing_alpn_is_refused() {
    for alpn in [vec![b"transitloom/0".to_vec()], Vec::new()] {
        let pki = TestPki::new(6, NAME);
        let mut pipe = Pipe::new(&pki, ClientAuth::Required, QuicTiming::default());
        let mut tls = (*node_tls(&pki)).clone();
        tls.alpn_protocols = alpn.clone();
        pipe.connect(Arc::new(tls));
        pipe.advance(Duration::from_secs(2));
        assert_refused(&pipe);
    }
}

#[test]
fn a_client_without_certificate_needs_optional_auth() {
    let pki = TestPki::new(7, NAME);
    let anonymous = || tls_config::client_config(&pki.root, None).unwrap();
    let mut pipe = Pipe::new(&pki, ClientAuth::Required, QuicTiming::default());
    pipe.connect(anonymous());
    pipe.advance(Duration::from_secs(2));
    assert_refused(&pipe);

    let mut pipe = Pipe::new(&pki, ClientAuth::Optional, QuicTiming::default());
    pipe.connect(anonymous());
    pipe.advance(Duration::from_secs(2));
    let (_, _, chain) = pipe.connected(SERVER).expect("connected");
    assert!(chain.is_empty());
}

#[test]
fn silence_closes_both_sides_within_two_keepalive_intervals() {
    let pki = TestPki::new(8, NAME);
    let timing = QuicTiming::from_keepalive(Duration::from_secs(5));
    let mut pipe = Pipe::new(&pki, ClientAuth::Required, timing);
    pipe.connect(node_tls(&pki));
    pipe.advance(Duration::from_secs(1));
    assert!(pipe.connected(SERVER).is_some() && pipe.connected(CLIENT).is_some());
    // The last bytes crossed during the handshake; from now on nothing
    // crosses, as with a peer that died or a path that broke.
    pipe.advance(Duration::from_secs(30));
    assert!(pipe.closed(CLIENT).is_none(), "keepalives hold it open");
    let cut = pipe.now;
    pipe.silent = true;
    pipe.advance(Duration::from_secs(30));
    for side in [CLIENT, SERVER] {
        let (at, reason) = pipe.closed(side).expect("closed");
        assert_eq!(reason, CloseReason::TimedOut, "side {side}");
        assert!(
            at - cut <= timing.keepalive * 2,
            "side {side} noticed after {:?}",
            at - cut
        );
    }
}

#[test]
fn an_orderly_close_reaches_the_peer_after_the_last_frame() {
    let pki = TestPki::new(9, NAME);
    let mut pipe = Pipe::new(&pki, ClientAuth::Required, QuicTiming::default());
    let client = pipe.connect(node_tls(&pki));
    pipe.advance(Duration::from_secs(1));
    let (server, _, _) = pipe.connected(SERVER).unwrap();
    let reject = Message::Reject {
        code: msg::RejectCode::Revoked,
        reason: "revoked".to_owned(),
    };
    pipe.send(SERVER, server, &frame(&reject));
    let now = pipe.now;
    pipe.sides[SERVER]
        .transport
        .close_when_sent(now, server, 7, b"revoked")
        .unwrap();
    pipe.drain(SERVER);
    pipe.advance(Duration::from_secs(1));
    assert_eq!(pipe.closed(SERVER).unwrap().1, CloseReason::Local);
    assert_eq!(pipe.messages(CLIENT, client), vec![reject]);
    assert!(matches!(
        pipe.closed(CLIENT).unwrap().1,
        CloseReason::PeerClosed { .. }
    ));
    assert!(pipe.sides[CLIENT]
        .transport
        .send(now, client, b"x")
        .is_err());
}

#[test]
fn a_throttled_stream_is_closed_unopened() {
    let pki = TestPki::new(10, NAME);
    let mut pipe = Pipe::new(&pki, ClientAuth::Required, QuicTiming::default());
    pipe.sides[SERVER].transport.set_accepting(false);
    let now = pipe.now;
    let remote = pipe.sides[CLIENT].addr;
    let t = &mut pipe.sides[SERVER].transport;
    assert!(!t.handle_stream_accepted(now, StreamId(StreamId::ACCEPTED | 9), remote));
    assert_eq!(t.stream_counters().throttled, 1);
    assert_eq!(
        t.poll_stream_command(),
        Some(StreamCommand::Close {
            stream: StreamId(StreamId::ACCEPTED | 9)
        })
    );
}
