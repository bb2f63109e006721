//! A node (side 0) and a coordinator (side 1) wired back to back in virtual
//! time: datagrams arrive after a fixed one-way delay, optionally lost, and
//! the harness steps to whatever is due first (an arrival or a timer).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::*;
use crate::control::tls_config::test_pki::TestPki;
use crate::control::tls_config::{self, ClientAuth};
use crate::rng::Rng;

const DELAY: Duration = Duration::from_millis(10);
const COORDINATOR: &str = "coord-1";
const NODE: usize = 0;
const COORD: usize = 1;

struct Peer {
    endpoint: QuicEndpoint,
    addr: SocketAddr,
    events: Vec<(Instant, QuicEvent)>,
    received: BTreeMap<ConnId, Vec<u8>>,
}

struct Pair {
    now: Instant,
    peers: [Peer; 2],
    /// (arrival, seq) -> (to, from, payload)
    in_flight: BTreeMap<(Instant, u64), (usize, SocketAddr, Bytes)>,
    seq: u64,
    /// Every datagram sent, in order: (from, payload).
    sent: Vec<(usize, Bytes)>,
    /// Drop every datagram while set.
    silent: bool,
    /// Independent random loss: probability and the generator deciding it.
    loss: Option<(f64, Rng)>,
}

fn wall_clock(now: Instant) -> WallClock {
    WallClock::new(now, 1_700_000_000_000_000)
}

fn server_tls(pki: &TestPki, auth: ClientAuth) -> Arc<rustls::ServerConfig> {
    tls_config::server_config(&pki.root, pki.coordinator.tls(), auth).unwrap()
}

fn node_tls(pki: &TestPki) -> Arc<rustls::ClientConfig> {
    tls_config::client_config(&pki.root, Some(pki.node.tls())).unwrap()
}

impl Pair {
    fn new(server: Arc<rustls::ServerConfig>, seed: u8, timing: QuicTiming) -> Self {
        let now = crate::test_epoch();
        let endpoint = |server, seed| {
            let config = QuicConfig {
                wall_clock: wall_clock(now),
                server,
                timing,
            };
            QuicEndpoint::new(config, Drbg::new([seed; 32])).unwrap()
        };
        let peer = |endpoint, addr: &str| Peer {
            endpoint,
            addr: addr.parse().unwrap(),
            events: Vec::new(),
            received: BTreeMap::new(),
        };
        Self {
            now,
            peers: [
                peer(endpoint(None, seed), "192.0.2.10:40000"),
                peer(
                    endpoint(Some(server), seed.wrapping_add(100)),
                    "203.0.113.5:7443",
                ),
            ],
            in_flight: BTreeMap::new(),
            seq: 0,
            sent: Vec::new(),
            silent: false,
            loss: None,
        }
    }

    /// The node opens a session to the coordinator.
    fn connect(&mut self, tls: Arc<rustls::ClientConfig>, name: &str) -> ConnId {
        let (now, remote) = (self.now, self.peers[COORD].addr);
        let conn = self.peers[NODE]
            .endpoint
            .connect(now, remote, name, tls)
            .unwrap();
        self.drain(NODE);
        conn
    }

    fn send(&mut self, side: usize, conn: ConnId, bytes: &[u8]) {
        let now = self.now;
        self.peers[side].endpoint.send(now, conn, bytes).unwrap();
        self.drain(side);
    }

    fn drain(&mut self, side: usize) {
        let now = self.now;
        while let Some(t) = self.peers[side].endpoint.poll_transmit(now) {
            let to = usize::from(t.dst == self.peers[COORD].addr);
            assert_ne!(to, side, "sent to itself");
            self.sent.push((side, t.payload.clone()));
            let lost = match &mut self.loss {
                Some((p, rng)) => rng.chance(*p),
                None => false,
            };
            if self.silent || lost {
                continue;
            }
            self.seq += 1;
            let from = self.peers[side].addr;
            self.in_flight
                .insert((now + DELAY, self.seq), (to, from, t.payload));
        }
        let peer = &mut self.peers[side];
        while let Some(event) = peer.endpoint.poll_event() {
            if let QuicEvent::Received { conn, bytes } = &event {
                peer.received
                    .entry(*conn)
                    .or_default()
                    .extend_from_slice(bytes);
            }
            peer.events.push((now, event));
        }
    }

    /// Runs until `until`, delivering datagrams and timers in time order.
    fn run_until(&mut self, until: Instant) {
        loop {
            self.drain(NODE);
            self.drain(COORD);
            let next_packet = self.in_flight.keys().next().map(|&(at, _)| at);
            let next_timer = self
                .peers
                .iter()
                .filter_map(|p| p.endpoint.poll_timeout())
                .min();
            let Some(next) = [next_packet, next_timer].into_iter().flatten().min() else {
                self.now = until;
                return;
            };
            if next > until {
                self.now = until;
                return;
            }
            self.now = self.now.max(next);
            let now = self.now;
            if next_packet == Some(next) {
                let (_, (to, src, payload)) = self.in_flight.pop_first().unwrap();
                let local = self.peers[to].addr;
                self.peers[to]
                    .endpoint
                    .handle_datagram(now, local, src, &payload);
            } else {
                for peer in &mut self.peers {
                    if peer.endpoint.poll_timeout().is_some_and(|at| at <= now) {
                        peer.endpoint.handle_timeout(now);
                    }
                }
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        self.run_until(until);
    }

    /// Advances in small steps until `done` holds; panics after `limit`.
    fn advance_until(&mut self, limit: Duration, done: impl Fn(&Self) -> bool) {
        let deadline = self.now + limit;
        while !done(self) {
            assert!(self.now < deadline, "condition not met within {limit:?}");
            self.advance(Duration::from_millis(5));
        }
    }

    fn events(&self, side: usize) -> impl Iterator<Item = &QuicEvent> {
        self.peers[side].events.iter().map(|(_, e)| e)
    }

    fn connected(&self, side: usize) -> Option<(ConnId, Vec<CertificateDer<'static>>)> {
        self.events(side).find_map(|e| match e {
            QuicEvent::Connected {
                conn, peer_chain, ..
            } => Some((*conn, peer_chain.clone())),
            _ => None,
        })
    }

    fn closed(&self, side: usize) -> Option<(Instant, CloseReason)> {
        self.peers[side].events.iter().find_map(|(at, e)| match e {
            QuicEvent::Closed { reason, .. } => Some((*at, reason.clone())),
            _ => None,
        })
    }

    fn received_nothing(&self) -> bool {
        self.peers.iter().all(|p| p.received.is_empty())
    }
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ salt).collect()
}

/// Connects with mutual TLS and waits until both sides report it.
fn established(pki: &TestPki, seed: u8, timing: QuicTiming) -> (Pair, ConnId, ConnId) {
    let mut pair = Pair::new(server_tls(pki, ClientAuth::Required), seed, timing);
    let node_conn = pair.connect(node_tls(pki), COORDINATOR);
    pair.advance_until(Duration::from_secs(2), |p| {
        p.connected(NODE).is_some() && p.connected(COORD).is_some()
    });
    let coord_conn = pair.connected(COORD).unwrap().0;
    (pair, node_conn, coord_conn)
}

/// Both sides end in a failed handshake, neither reported a connection, and
/// nothing crosses.
fn assert_refused(pair: &Pair) {
    for side in [NODE, COORD] {
        assert!(pair.connected(side).is_none(), "side {side} connected");
        match pair.closed(side) {
            Some((_, CloseReason::HandshakeFailed(why))) => {
                eprintln!("side {side}: handshake failed: {why}");
            }
            other => panic!("side {side}: expected a failed handshake, got {other:?}"),
        }
    }
    assert!(pair.received_nothing());
}

#[test]
fn mutual_handshake_then_a_mebibyte_each_way_in_order() {
    let pki = TestPki::new(1, COORDINATOR);
    let (mut pair, node_conn, coord_conn) = established(&pki, 1, QuicTiming::default());
    let (_, coord_sees) = pair.connected(COORD).unwrap();
    let (_, node_sees) = pair.connected(NODE).unwrap();
    assert_eq!(
        coord_sees[0], pki.node.chain[0],
        "the coordinator sees the node's leaf"
    );
    assert_eq!(
        node_sees, pki.coordinator.chain,
        "the node sees the coordinator's chain"
    );

    const MIB: usize = 1 << 20;
    let up = pattern(MIB, 0x5a);
    let down = pattern(MIB, 0xa5);
    pair.send(NODE, node_conn, &up);
    pair.send(COORD, coord_conn, &down);
    pair.advance_until(Duration::from_secs(30), |p| {
        p.peers[COORD].received.get(&coord_conn).map_or(0, Vec::len) >= MIB
            && p.peers[NODE].received.get(&node_conn).map_or(0, Vec::len) >= MIB
    });
    assert!(pair.peers[COORD].received[&coord_conn] == up);
    assert!(pair.peers[NODE].received[&node_conn] == down);
    assert!(pair.closed(NODE).is_none() && pair.closed(COORD).is_none());
}

#[test]
fn an_admin_certificate_signed_by_the_root_is_accepted() {
    let pki = TestPki::new(2, COORDINATOR);
    let mut pair = Pair::new(
        server_tls(&pki, ClientAuth::Required),
        2,
        QuicTiming::default(),
    );
    let admin = tls_config::client_config(&pki.root, Some(pki.admin.tls())).unwrap();
    pair.connect(admin, COORDINATOR);
    pair.advance(Duration::from_secs(1));
    assert_eq!(pair.connected(COORD).unwrap().1, pki.admin.chain);
    assert!(pair.connected(NODE).is_some());
}

#[test]
fn a_client_of_another_root_is_refused_on_both_sides() {
    let pki = TestPki::new(3, COORDINATOR);
    let stranger = TestPki::new(4, COORDINATOR);
    let mut pair = Pair::new(
        server_tls(&pki, ClientAuth::Required),
        3,
        QuicTiming::default(),
    );
    // Trusts the right root but presents a certificate from another one.
    let tls = tls_config::client_config(&pki.root, Some(stranger.node.tls())).unwrap();
    let conn = pair.connect(tls, COORDINATOR);
    pair.send(NODE, conn, b"hello before acceptance");
    pair.advance(Duration::from_secs(2));
    assert_refused(&pair);
}

#[test]
fn a_client_without_certificate_needs_optional_auth() {
    let pki = TestPki::new(5, COORDINATOR);
    let anonymous = || tls_config::client_config(&pki.root, None).unwrap();

    let mut pair = Pair::new(
        server_tls(&pki, ClientAuth::Required),
        5,
        QuicTiming::default(),
    );
    pair.connect(anonymous(), COORDINATOR);
    pair.advance(Duration::from_secs(2));
    assert_refused(&pair);

    let mut pair = Pair::new(
        server_tls(&pki, ClientAuth::Optional),
        5,
        QuicTiming::default(),
    );
    let conn = pair.connect(anonymous(), COORDINATOR);
    pair.send(NODE, conn, b"join token");
    pair.advance(Duration::from_secs(1));
    let (coord_conn, chain) = pair.connected(COORD).unwrap();
    assert!(chain.is_empty(), "no peer certificate");
    assert_eq!(pair.peers[COORD].received[&coord_conn], b"join token");
}

#[test]
fn a_wrong_alpn_is_refused() {
    let pki = TestPki::new(6, COORDINATOR);
    let mut pair = Pair::new(
        server_tls(&pki, ClientAuth::Required),
        6,
        QuicTiming::default(),
    );
    let mut tls = (*node_tls(&pki)).clone();
    tls.alpn_protocols = vec![b"transitloom/0".to_vec()];
    pair.connect(Arc::new(tls), COORDINATOR);
    pair.advance(Duration::from_secs(2));
    assert_refused(&pair);
}

#[test]
fn a_wrong_server_name_is_refused() {
    let pki = TestPki::new(7, COORDINATOR);
    let mut pair = Pair::new(
        server_tls(&pki, ClientAuth::Required),
        7,
        QuicTiming::default(),
    );
    pair.connect(node_tls(&pki), "coord-2");
    pair.advance(Duration::from_secs(2));
    assert_refused(&pair);
}

#[test]
fn certificates_are_checked_against_the_wall_clock_input() {
    let pki = TestPki::new(15, COORDINATOR);
    let mut pair = Pair::new(
        server_tls(&pki, ClientAuth::Required),
        15,
        QuicTiming::default(),
    );
    // The year 5000: after every test certificate's notAfter (4096).
    let far_future = WallClock::new(pair.now, 95_617_584_000 * 1_000_000);
    for peer in &mut pair.peers {
        peer.endpoint.set_wall_clock(far_future);
    }
    pair.connect(node_tls(&pki), COORDINATOR);
    pair.advance(Duration::from_secs(2));
    assert_refused(&pair);
    match pair.closed(NODE) {
        Some((_, CloseReason::HandshakeFailed(why))) => assert!(why.contains("expired"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_coordinator_can_refuse_after_inspecting_the_chain() {
    let pki = TestPki::new(8, COORDINATOR);
    let (mut pair, _, coord_conn) = established(&pki, 8, QuicTiming::default());
    let now = pair.now;
    pair.peers[COORD]
        .endpoint
        .close(now, coord_conn, 7, b"revoked")
        .unwrap();
    pair.advance(Duration::from_secs(1));
    assert_eq!(pair.closed(COORD).unwrap().1, CloseReason::Local);
    assert_eq!(
        pair.closed(NODE).unwrap().1,
        CloseReason::PeerClosed {
            code: 7,
            reason: Bytes::from_static(b"revoked")
        }
    );
    // Closed sessions drain, then their ids are unknown.
    pair.advance(Duration::from_secs(5));
    assert_eq!(pair.peers[COORD].endpoint.open_sessions(), 0);
    let err = pair.peers[COORD].endpoint.send(now, coord_conn, b"x");
    assert!(
        matches!(err, Err(QuicError::UnknownConnection(_))),
        "{err:?}"
    );
}

#[test]
fn silence_closes_both_sides_within_two_keepalives_and_margin() {
    let pki = TestPki::new(9, COORDINATOR);
    let timing = QuicTiming::default();
    // The network dies at several points of the keepalive cycle.
    for quiet_ms in [12_000, 13_300, 14_600, 15_900] {
        let (mut pair, _, _) = established(&pki, 9, timing);
        pair.advance(Duration::from_millis(quiet_ms));
        let silent_from = pair.now;
        pair.silent = true;
        pair.advance(timing.dead_session_bound() + Duration::from_secs(1));
        for side in [NODE, COORD] {
            let (at, reason) = pair.closed(side).expect("closed");
            assert_eq!(reason, CloseReason::TimedOut, "side {side}");
            let after = at - silent_from;
            eprintln!("side {side} closed {after:?} after the network went silent");
            // Two keepalive intervals plus one of margin, plus the last
            // packet's flight time.
            assert!(
                after >= timing.idle_timeout - timing.keepalive
                    && after <= timing.dead_session_bound() + DELAY,
                "side {side} noticed after {after:?}"
            );
        }
    }
}

#[test]
fn keepalives_hold_an_idle_session_open_for_minutes() {
    let pki = TestPki::new(10, COORDINATOR);
    let (mut pair, node_conn, coord_conn) = established(&pki, 10, QuicTiming::default());
    pair.advance(Duration::from_secs(300));
    assert!(pair.closed(NODE).is_none() && pair.closed(COORD).is_none());
    pair.send(NODE, node_conn, b"still here");
    pair.advance(Duration::from_secs(1));
    assert_eq!(pair.peers[COORD].received[&coord_conn], b"still here");
}

/// Every datagram of a handshake plus a short exchange.
fn transcript(pki: &TestPki, seed: u8) -> Vec<(usize, Bytes)> {
    let (mut pair, node_conn, coord_conn) = established(pki, seed, QuicTiming::default());
    pair.send(NODE, node_conn, &pattern(50_000, 1));
    pair.send(COORD, coord_conn, &pattern(50_000, 2));
    pair.advance(Duration::from_secs(2));
    pair.sent
}

#[test]
fn the_same_seeds_give_the_same_datagrams() {
    let pki = TestPki::new(11, COORDINATOR);
    let first = transcript(&pki, 11);
    let sizes = |t: &[(usize, Bytes)]| t.iter().map(|(s, b)| (*s, b.len())).collect::<Vec<_>>();
    let again = transcript(&pki, 11);
    assert_eq!(sizes(&first), sizes(&again));
    assert!(first == again, "byte-for-byte identical");
    let other = transcript(&pki, 12);
    assert!(first[0].1 != other[0].1, "another seed, other bytes");
}

#[test]
fn one_percent_loss_still_delivers_the_stream_intact() {
    let pki = TestPki::new(13, COORDINATOR);
    let mut pair = Pair::new(
        server_tls(&pki, ClientAuth::Required),
        13,
        QuicTiming::default(),
    );
    pair.loss = Some((0.01, Rng::new(13)));
    let node_conn = pair.connect(node_tls(&pki), COORDINATOR);
    let up = pattern(1 << 20, 3);
    pair.send(NODE, node_conn, &up);
    pair.advance_until(Duration::from_secs(60), |p| {
        p.peers[COORD].received.values().next().map_or(0, Vec::len) >= up.len()
    });
    let coord_conn = pair.connected(COORD).unwrap().0;
    let down = pattern(1 << 20, 4);
    pair.send(COORD, coord_conn, &down);
    pair.advance_until(Duration::from_secs(60), |p| {
        p.peers[NODE].received.get(&node_conn).map_or(0, Vec::len) >= down.len()
    });
    assert!(pair.peers[COORD].received[&coord_conn] == up);
    assert!(pair.peers[NODE].received[&node_conn] == down);
    let lost = pair.sent.len() - pair.seq as usize;
    assert!(lost > 0, "some datagrams were lost");
}

#[test]
fn commands_name_their_failure() {
    let pki = TestPki::new(14, COORDINATOR);
    let (mut pair, node_conn, _) = established(&pki, 14, QuicTiming::default());
    let now = pair.now;
    let node = &mut pair.peers[NODE].endpoint;
    assert!(matches!(
        node.send(now, ConnId(99), b"x"),
        Err(QuicError::UnknownConnection(ConnId(99)))
    ));
    let too_much = vec![0u8; MAX_UNSENT + 1];
    assert!(matches!(
        node.send(now, node_conn, &too_much),
        Err(QuicError::SendBufferFull { .. })
    ));
    node.close(now, node_conn, 0, b"bye").unwrap();
    node.close(now, node_conn, 0, b"again").unwrap();
    assert!(matches!(
        node.send(now, node_conn, b"x"),
        Err(QuicError::Closed(_))
    ));
    let bad = QuicConfig {
        wall_clock: wall_clock(now),
        server: None,
        timing: QuicTiming {
            keepalive: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(5),
        },
    };
    assert!(matches!(
        QuicEndpoint::new(bad, Drbg::new([0; 32])),
        Err(QuicError::Timing(_))
    ));
}
