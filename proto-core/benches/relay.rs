//! What forwarding one datagram costs the relay (issue 5, "relay
//! forwarding against a minimal forwarder written as the baseline, in one
//! run"): a relay allocation with both legs bound, fed datagrams from the
//! legs in turn, against the smallest forwarder with the same input and
//! output shape — a `StateMachine` whose whole logic is
//! `match src { a => send to b, b => send to a, _ => drop }`, copying the
//! payload into an owned buffer the same way.
//!
//! Criterion measures each case; then an interleaved pass measures both
//! machines round by round on the same inputs and prints the ratio (the
//! median of the rounds' ratios), per size:
//!
//! `cargo bench -p transitloom-proto-core --bench relay`

use std::collections::VecDeque;
use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::Criterion;
use transitloom_proto_core::machine::{Datagram, Input, Output, StateMachine, Transmit};
use transitloom_proto_core::relay::{AllocationSpec, DropReason, RateLimit, Relay, RelayConfig};
use transitloom_proto_core::time::WallClock;
use transitloom_proto_core::wire::{classify, AuthKey, Classified, ControlBody, ControlRepr};
use transitloom_proto_core::{AssocId, NodeId, SocketId};

const KEY: [u8; 32] = [0x42; 32];
const SIZES: [usize; 2] = [1_400, 200];

#[allow(clippy::disallowed_methods)]
fn clock() -> Instant {
    // A benchmark's only clock reads: the relay runs on virtual time.
    Instant::now()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("a fixed address")
}

/// The baseline: forwards between two fixed addresses and nothing else.
#[derive(Debug)]
struct MinimalForwarder {
    socket: SocketId,
    a: SocketAddr,
    b: SocketAddr,
    outputs: VecDeque<Output<()>>,
    arena: BytesMut,
}

impl MinimalForwarder {
    fn new(socket: SocketId, a: SocketAddr, b: SocketAddr) -> Self {
        Self {
            socket,
            a,
            b,
            outputs: VecDeque::new(),
            arena: BytesMut::new(),
        }
    }

    /// The same copy the relay makes: into a shared block, no allocation
    /// per datagram.
    fn own(&mut self, payload: &[u8]) -> Bytes {
        if self.arena.capacity() < payload.len() {
            self.arena = BytesMut::with_capacity((256 * 1024).max(payload.len()));
        }
        self.arena.extend_from_slice(payload);
        self.arena.split().freeze()
    }
}

impl StateMachine for MinimalForwarder {
    type Event = ();

    fn handle_input(&mut self, _now: Instant, input: Input<'_>) {
        let Input::Datagram(d) = input else {
            return;
        };
        let dst = match d.src {
            src if src == self.a => self.b,
            src if src == self.b => self.a,
            _ => return,
        };
        let payload = self.own(d.payload);
        self.outputs.push_back(Output::Transmit(Transmit {
            socket: self.socket,
            dst,
            payload,
        }));
    }

    fn handle_timeout(&mut self, _now: Instant) {}

    fn poll_output(&mut self) -> Option<Output<()>> {
        self.outputs.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

/// A relay with one allocation whose two legs are bound, its outputs
/// drained; returns it with the allocation's socket and the time.
fn ready_relay(epoch: Instant, a: SocketAddr, b: SocketAddr) -> (Relay, SocketId, Instant) {
    let wall = WallClock::new(epoch, 1_760_000_000_000_000);
    let mut config = RelayConfig::new(wall, 1);
    // The token bucket runs on every datagram, but never refuses one here.
    config.rate_limit = Some(RateLimit::new(1 << 40));
    config.idle_timeout = Duration::from_secs(1 << 20);
    let mut relay = Relay::new(config);
    let now = epoch;
    relay
        .allocate(
            now,
            AllocationSpec {
                allocation: 1,
                assoc: AssocId(1),
                key: KEY,
                nodes: [NodeId(1), NodeId(2)],
                local: addr("192.0.2.1:0"),
            },
        )
        .expect("one allocation");
    let mut socket = None;
    while let Some(output) = relay.poll_output() {
        if let Output::BindSocket { socket: s, .. } = output {
            socket = Some(s);
        }
    }
    let socket = socket.expect("a port was asked for");
    relay.handle_input(
        now,
        Input::SocketBound {
            socket,
            local: addr("192.0.2.1:3478"),
        },
    );
    // Each leg binds as an endpoint does: without a cookie, then with the
    // cookie the answer carried.
    let auth = AuthKey::new(&KEY);
    for (leg, src) in [(0u8, a), (1u8, b)] {
        let mut cookie = 0;
        for txid in 0..2 {
            let bind = ControlRepr {
                txid: u64::from(leg) * 2 + txid,
                timestamp_us: wall.unix_us(now),
                body: ControlBody::RelayBind {
                    allocation: 1,
                    leg,
                    cookie,
                },
            }
            .to_bytes(&auth);
            relay.handle_input(
                now,
                Input::Datagram(Datagram {
                    socket,
                    src,
                    payload: &bind,
                }),
            );
            while let Some(output) = relay.poll_output() {
                if let Output::Transmit(t) = output {
                    if let Classified::Control(ControlRepr {
                        body: ControlBody::RelayBindAck { cookie: c, .. },
                        ..
                    }) = classify(&t.payload, &auth)
                    {
                        cookie = c;
                    }
                }
            }
        }
    }
    while relay.poll_output().is_some() {}
    assert!(relay.allocation(1).is_some_and(|v| v.is_ready()));
    (relay, socket, now)
}

/// Feeds one datagram and drops the outputs, as a driver would after
/// sending them.
fn feed<M: StateMachine>(m: &mut M, now: Instant, socket: SocketId, src: SocketAddr, p: &[u8]) {
    m.handle_input(
        now,
        Input::Datagram(Datagram {
            socket,
            src,
            payload: p,
        }),
    );
    while let Some(output) = m.poll_output() {
        black_box(output);
    }
}

/// Nanoseconds per datagram over `n` datagrams, alternating legs.
fn time_per_datagram<M: StateMachine>(
    m: &mut M,
    now: &mut Instant,
    socket: SocketId,
    legs: [SocketAddr; 2],
    payload: &[u8],
    n: u32,
) -> f64 {
    let start = clock();
    for i in 0..n {
        *now += Duration::from_nanos(100);
        feed(m, *now, socket, legs[(i & 1) as usize], payload);
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn bench(c: &mut Criterion) {
    let (a, b) = (addr("198.51.100.7:40000"), addr("203.0.113.9:41000"));
    let epoch = clock();
    let (mut relay, socket, mut now) = ready_relay(epoch, a, b);
    let mut baseline = MinimalForwarder::new(socket, a, b);

    let mut group = c.benchmark_group("relay");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(3));
    for size in SIZES {
        let payload = vec![0x5au8; size];
        let mut i = 0usize;
        group.bench_function(format!("forward/{size}"), |bench| {
            bench.iter(|| {
                i += 1;
                now += Duration::from_nanos(100);
                feed(&mut relay, now, socket, [a, b][i & 1], &payload);
            });
        });
        group.bench_function(format!("baseline/{size}"), |bench| {
            bench.iter(|| {
                i += 1;
                feed(&mut baseline, now, socket, [a, b][i & 1], &payload);
            });
        });
    }
    let stranger = addr("192.0.2.66:6666");
    let payload = vec![0x5au8; 1_400];
    group.bench_function("drop/stranger/1400", |bench| {
        bench.iter(|| feed(&mut relay, now, socket, stranger, &payload));
    });
    group.finish();

    // The ratio, measured in one run: rounds alternate between the two
    // machines on the same inputs, so a disturbance hits both alike.
    println!();
    println!("relay against the minimal forwarder, interleaved rounds of 200,000 datagrams:");
    for size in SIZES {
        let payload = vec![0x5au8; size];
        let (mut relay_ns, mut base_ns, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..15 {
            let r = time_per_datagram(&mut relay, &mut now, socket, [a, b], &payload, 200_000);
            let base =
                time_per_datagram(&mut baseline, &mut now, socket, [a, b], &payload, 200_000);
            relay_ns.push(r);
            base_ns.push(base);
            ratios.push(r / base);
        }
        let (r, base) = (median(relay_ns), median(base_ns));
        println!(
            "  {size:>5} B: relay {r:6.1} ns/datagram ({:.2} M/s), baseline {base:6.1} ns/datagram ({:.2} M/s), relay/baseline {:.2}",
            1e3 / r,
            1e3 / base,
            median(ratios)
        );
    }
    let counters = relay.allocation(1).expect("allocated").counters();
    assert_eq!(
        counters.dropped_total(),
        counters.dropped(DropReason::UnknownSource),
        "only strangers were dropped"
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
