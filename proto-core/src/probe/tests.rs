//! Two probers wired back to back in virtual time, with a fixed one-way delay
//! and an optional drop rule: the smallest harness that exercises the whole
//! contract (bind requests, timers, transmits, events).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::*;

const DELAY: Duration = Duration::from_millis(10);

struct Pair {
    now: Instant,
    probers: [Prober; 2],
    addrs: [SocketAddr; 2],
    events: [Vec<ProbeEvent>; 2],
    delivered: [Vec<Bytes>; 2],
    /// (arrival, seq) -> (to, from, payload)
    in_flight: BTreeMap<(Instant, u64), (usize, SocketAddr, Bytes)>,
    seq: u64,
    /// Drop every datagram for which this returns true.
    drop: fn(&[u8]) -> bool,
    /// Rewrite the source address seen by side 1 (a NAT rebinding).
    rebind: Option<SocketAddr>,
}

fn config(local: SocketAddr, remote: SocketAddr, seed: u64, now: Instant) -> ProberConfig {
    ProberConfig {
        local,
        key: [7; 32],
        remotes: vec![remote],
        interval: Duration::from_millis(100),
        failed_after: 3,
        seed,
        wall_clock: WallClock::new(now, 1_700_000_000_000_000),
    }
}

impl Pair {
    fn new() -> Self {
        let now = crate::test_epoch();
        let a: SocketAddr = "192.0.2.1:1000".parse().unwrap();
        let b: SocketAddr = "198.51.100.2:2000".parse().unwrap();
        Self {
            now,
            probers: [
                Prober::new(config(a, b, 1, now)),
                Prober::new(config(b, a, 2, now)),
            ],
            addrs: [a, b],
            events: [Vec::new(), Vec::new()],
            delivered: [Vec::new(), Vec::new()],
            in_flight: BTreeMap::new(),
            seq: 0,
            drop: |_| false,
            rebind: None,
        }
    }

    fn drain(&mut self, side: usize) {
        while let Some(output) = self.probers[side].poll_output() {
            match output {
                Output::BindSocket { socket, local } => {
                    let now = self.now;
                    self.probers[side].handle_input(now, Input::SocketBound { socket, local });
                }
                Output::Transmit(t) => {
                    if (self.drop)(&t.payload) {
                        continue;
                    }
                    let to = usize::from(t.dst == self.addrs[1]);
                    let from = match (side, self.rebind) {
                        (0, Some(addr)) => addr,
                        _ => self.addrs[side],
                    };
                    self.seq += 1;
                    self.in_flight
                        .insert((self.now + DELAY, self.seq), (to, from, t.payload));
                }
                Output::Deliver { payload, .. } => self.delivered[side].push(payload),
                Output::Event(e) => self.events[side].push(e),
                Output::CloseSocket { .. } => {}
                other => unreachable!("the prober owns no streams: {other:?}"),
            }
        }
    }

    /// Runs until `until`, delivering datagrams and timers in time order.
    fn run_until(&mut self, until: Instant) {
        loop {
            self.drain(0);
            self.drain(1);
            let next_packet = self.in_flight.keys().next().map(|&(at, _)| at);
            let next_timer = self.probers.iter().filter_map(|p| p.poll_timeout()).min();
            let Some(next) = [next_packet, next_timer].into_iter().flatten().min() else {
                return;
            };
            if next > until {
                self.now = until;
                return;
            }
            self.now = next;
            if next_packet == Some(next) {
                let (_, (to, src, payload)) = self.in_flight.pop_first().unwrap();
                let datagram = Datagram {
                    socket: PROBE_SOCKET,
                    src,
                    payload: &payload,
                };
                let now = self.now;
                self.probers[to].handle_input(now, Input::Datagram(datagram));
            } else {
                for side in 0..2 {
                    if self.probers[side].poll_timeout() == Some(next) {
                        self.probers[side].handle_timeout(next);
                    }
                }
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        self.run_until(until);
    }
}

#[test]
fn both_sides_validate_with_the_round_trip() {
    let mut pair = Pair::new();
    pair.advance(Duration::from_millis(50));
    for side in 0..2 {
        let remote = pair.addrs[1 - side];
        assert!(
            pair.events[side].contains(&ProbeEvent::PathValidated {
                remote,
                rtt: DELAY * 2
            }),
            "side {side}: {:?}",
            pair.events[side]
        );
        assert_eq!(pair.probers[side].best_path(), Some(remote));
    }
    assert!(pair.events[0].contains(&ProbeEvent::Observed {
        observed: pair.addrs[0]
    }));
}

#[test]
fn data_crosses_unchanged_only_after_validation() {
    let mut pair = Pair::new();
    assert!(!pair.probers[0].send_data(Bytes::from_static(b"too early")));
    pair.advance(Duration::from_millis(50));
    let payload = Bytes::from(crate::wire::MAGIC.repeat(4));
    assert!(pair.probers[0].send_data(payload.clone()));
    pair.advance(Duration::from_millis(50));
    assert_eq!(pair.delivered[1], vec![payload]);
}

#[test]
fn a_silent_path_fails_and_comes_back() {
    let mut pair = Pair::new();
    pair.advance(Duration::from_millis(50));
    pair.drop = |_| true;
    pair.advance(Duration::from_millis(500));
    assert!(pair.events[0].contains(&ProbeEvent::PathFailed {
        remote: pair.addrs[1]
    }));
    assert_eq!(pair.probers[0].best_path(), None);
    pair.drop = |_| false;
    pair.events[0].clear();
    pair.advance(Duration::from_millis(250));
    assert!(matches!(
        pair.events[0][..],
        [ProbeEvent::PathValidated { .. }, ..]
    ));
}

#[test]
fn a_rebound_source_is_validated_before_it_carries_data() {
    let mut pair = Pair::new();
    pair.advance(Duration::from_millis(50));
    let rebound: SocketAddr = "192.0.2.1:1999".parse().unwrap();
    pair.rebind = Some(rebound);
    assert!(pair.probers[0].send_data(Bytes::from_static(b"after rebind")));
    pair.advance(Duration::from_millis(15));
    // Side 1 has not validated the new source: the packet is dropped.
    assert!(pair.delivered[1].is_empty());
    assert_eq!(pair.probers[1].counters().data_unvalidated, 1);
    // Within one probe interval side 1 pings the new source and validates it.
    pair.advance(Duration::from_millis(120));
    let state = pair.probers[1]
        .paths()
        .find(|(remote, _)| *remote == rebound)
        .map(|(_, p)| p.state);
    assert_eq!(state, Some(PathState::Active));
}

#[test]
fn replayed_pings_are_refused() {
    let mut pair = Pair::new();
    pair.advance(Duration::from_millis(50));
    let now = pair.now;
    let ping = ControlRepr {
        txid: 99,
        timestamp_us: WallClock::new(now, 1_700_000_000_000_000).unix_us(now),
        body: ControlBody::Ping { pad: 19, policy: 0 },
    }
    .to_bytes(&AuthKey::new(&[7; 32]));
    for _ in 0..3 {
        let datagram = Datagram {
            socket: PROBE_SOCKET,
            src: pair.addrs[0],
            payload: &ping,
        };
        pair.probers[1].handle_input(now, Input::Datagram(datagram));
    }
    assert_eq!(pair.probers[1].counters().replays, 2);
}

#[test]
fn learned_paths_are_bounded() {
    let mut pair = Pair::new();
    pair.advance(Duration::from_millis(50));
    let now = pair.now;
    for port in 0..100u16 {
        let src = SocketAddr::new(pair.addrs[0].ip(), 20_000 + port);
        let datagram = Datagram {
            socket: PROBE_SOCKET,
            src,
            payload: b"junk",
        };
        pair.probers[1].handle_input(now, Input::Datagram(datagram));
    }
    assert_eq!(pair.probers[1].paths().count(), MAX_PATHS);
    assert!(pair.probers[1].counters().paths_refused > 0);
}
