//! What one datagram costs the data plane, by where it comes from (issue 4,
//! bad input: "a flood from an unvalidated source costs no more than
//! dropping it"). Each case feeds a 1,400-byte datagram to a plane whose
//! path to its peer is validated and drains the outputs:
//!
//! - `forward/peer`: data from the validated peer, delivered to the service
//!   (the work a datagram is meant to cost);
//! - `forward/service`: data from the service into the ingress, sent on the
//!   path;
//! - `flood/stranger`: data from one unvalidated address, over and over;
//! - `flood/spoofed`: data from a new address every time (a spoofed flood);
//! - `flood/foreign-ingress`: data into the ingress from anyone but the
//!   service.
//!
//! `cargo bench -p transitloom-proto-core --bench receive`

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use criterion::Criterion;
use transitloom_proto_core::fuzzing::ValidatedPlane;
use transitloom_proto_core::machine::{Datagram, Input, StateMachine};
use transitloom_proto_core::SocketId;

#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    // A benchmark's only clock read: the plane runs on this anchor.
    Instant::now()
}

/// Feeds `payload` on `socket` from whatever `src` says, then drops the
/// outputs, as a driver would after sending them.
fn feed(rig: &mut ValidatedPlane, socket: SocketId, src: SocketAddr, payload: &[u8]) {
    rig.plane.handle_input(
        rig.now,
        Input::Datagram(Datagram {
            socket,
            src,
            payload,
        }),
    );
    while let Some(output) = rig.plane.poll_output() {
        black_box(output);
    }
}

fn bench(c: &mut Criterion) {
    let payload = [0x5au8; 1_400];
    let mut group = c.benchmark_group("receive");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(3));

    let mut rig = ValidatedPlane::new(epoch());
    let (mesh, ingress, peer, target) = (rig.mesh, rig.ingress, rig.peer, rig.target);
    group.bench_function("forward/peer", |b| {
        b.iter(|| feed(&mut rig, mesh, peer, &payload));
    });
    group.bench_function("forward/service", |b| {
        b.iter(|| feed(&mut rig, ingress, target, &payload));
    });
    let stranger = SocketAddr::from((Ipv4Addr::new(203, 0, 113, 66), 4_444));
    group.bench_function("flood/stranger", |b| {
        b.iter(|| feed(&mut rig, mesh, stranger, &payload));
    });
    let mut n = 0u32;
    group.bench_function("flood/spoofed", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let src = SocketAddr::from((Ipv4Addr::from(0x0a00_0000 | (n >> 16)), n as u16));
            feed(&mut rig, mesh, src, &payload);
        });
    });
    group.bench_function("flood/foreign-ingress", |b| {
        b.iter(|| feed(&mut rig, ingress, stranger, &payload));
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
