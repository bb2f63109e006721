//! What the scheduler's per-packet decision costs as paths are added
//! (DESIGN §8, issue 6): a 1,400-byte datagram from the service into the
//! ingress of an association with 1, 2, 4 or 8 validated paths (one uplink,
//! one peer address per path, answered as a peer would), sent on the path
//! the scheduler picks; the outputs are drained as a driver would after
//! sending them. `paths=1` is the `receive` bench's `forward/service`.
//!
//! `cargo bench -p transitloom-proto-core --bench multipath`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use transitloom_proto_core::dataplane::{
    AssociationSpec, DataPlane, DataPlaneConfig, PathState, UplinkSpec,
};
use transitloom_proto_core::machine::{Datagram, Input, Output, StateMachine};
use transitloom_proto_core::time::WallClock;
use transitloom_proto_core::wire::{
    classify, AddrRepr, AuthKey, Classified, ControlBody, ControlRepr,
};
use transitloom_proto_core::{AssocId, ServiceId, SocketId, UplinkId};

const KEY: [u8; 32] = [0x42; 32];
const ASSOC: AssocId = AssocId(1);

#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    // A benchmark's only clock read: the plane runs on this anchor.
    Instant::now()
}

/// A plane whose association has `paths` validated paths.
struct Rig {
    plane: DataPlane,
    ingress: SocketId,
    target: SocketAddr,
    now: Instant,
}

impl Rig {
    fn new(paths: usize) -> Self {
        let now = epoch();
        let wall = WallClock::new(now, 1_760_000_000_000_000);
        let bind = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let uplink = UplinkSpec::new(UplinkId(0), "wan", bind);
        let mut plane = DataPlane::new(DataPlaneConfig::new(vec![uplink], 7, wall));
        let remotes = (0..paths)
            .map(|i| SocketAddr::from((Ipv4Addr::new(198, 51, 100, 10 + i as u8), 40_000)))
            .collect();
        let target = SocketAddr::from((Ipv4Addr::LOCALHOST, 51_820));
        let ingress_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 41_000));
        plane
            .install(AssociationSpec {
                id: ASSOC,
                service: ServiceId(1),
                peer: "peer/wg0".to_owned(),
                key: KEY,
                ingress: ingress_addr,
                target,
                mesh_port: 40_000,
                remotes,
            })
            .expect("installs");
        let mut rig = Self {
            plane,
            ingress: SocketId(0),
            target,
            now,
        };
        let key = AuthKey::new(&KEY);
        // Bind every socket, answer every ping, until each path is active.
        for _ in 0..200 {
            rig.answer(&key, &wall);
            let view = rig.plane.association(ASSOC).expect("installed");
            let active = view.paths().filter(|p| p.state == PathState::Active);
            if active.count() == paths {
                break;
            }
            let next = rig.plane.poll_timeout().unwrap_or(rig.now);
            rig.now = rig.now.max(next.min(rig.now + Duration::from_millis(10)));
            rig.plane.handle_timeout(rig.now);
        }
        let view = rig.plane.association(ASSOC).expect("installed");
        assert_eq!(
            view.paths()
                .filter(|p| p.state == PathState::Active)
                .count(),
            paths,
            "every path validated"
        );
        rig.ingress = view.ingress_socket();
        rig
    }

    /// Drains the outputs: binds sockets, answers pings as the peer at
    /// their destination would.
    fn answer(&mut self, key: &AuthKey, wall: &WallClock) {
        let mut answers = Vec::new();
        while let Some(output) = self.plane.poll_output() {
            match output {
                Output::BindSocket { socket, local } => {
                    self.plane
                        .handle_input(self.now, Input::SocketBound { socket, local });
                }
                Output::Transmit(t) => {
                    if let Classified::Control(ControlRepr {
                        txid,
                        body: ControlBody::Ping { .. },
                        ..
                    }) = classify(&t.payload, key)
                    {
                        let pong = ControlRepr {
                            txid,
                            timestamp_us: wall.unix_us(self.now),
                            body: ControlBody::Pong {
                                observed: AddrRepr(SocketAddr::from(([192, 0, 2, 1], 40_000))),
                            },
                        };
                        answers.push((t.socket, t.dst, pong.to_bytes(key)));
                    }
                }
                _ => {}
            }
        }
        for (socket, src, payload) in answers {
            let datagram = Datagram {
                socket,
                src,
                payload: &payload,
            };
            self.plane.handle_input(self.now, Input::Datagram(datagram));
        }
    }

    /// The service sends one datagram; the outputs go, as a driver sends
    /// them.
    fn send(&mut self, payload: &[u8]) {
        let datagram = Datagram {
            socket: self.ingress,
            src: self.target,
            payload,
        };
        self.plane.handle_input(self.now, Input::Datagram(datagram));
        while let Some(output) = self.plane.poll_output() {
            black_box(output);
        }
    }
}

fn bench(c: &mut Criterion) {
    let payload = [0x5au8; 1_400];
    let mut group = c.benchmark_group("multipath");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(3));
    for paths in [1, 2, 4, 8] {
        let mut rig = Rig::new(paths);
        group.bench_with_input(BenchmarkId::new("paths", paths), &paths, |b, _| {
            b.iter(|| rig.send(&payload));
        });
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
