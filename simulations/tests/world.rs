//! The world engine end to end: routing through segments, NATs and links,
//! with real state machines on the hosts. Each test states its tolerance.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use transitloom_proto_core::SocketId;
use transitloom_simulations::apps::{Echo, Peer, UdpSink, UdpSource};
use transitloom_simulations::link::{LinkParams, Loss};
use transitloom_simulations::nat::{Allocation, Filtering, Mapping, NatParams};
use transitloom_simulations::scenario;
use transitloom_simulations::world::{HostId, NatId, World};

fn ip(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

const SERVER: [u8; 4] = [198, 51, 100, 20];

/// A host behind a NAT and a public server with two sockets (ports 3478 and 3479).
struct NatLab {
    world: World,
    inside: HostId,
    server: HostId,
    nat: NatId,
}

impl NatLab {
    fn new(params: NatParams) -> Self {
        let mut world = World::new(7);
        let internet = world.add_segment("internet");
        let lan = world.add_segment("lan");
        let nat = world
            .add_nat("nat", params, ip(203, 0, 113, 1), internet, lan)
            .unwrap();
        let inside = world.add_host("inside");
        let server = world.add_host("server");
        let link = LinkParams {
            delay: Duration::from_millis(5),
            ..LinkParams::ideal()
        };
        world
            .add_iface(inside, ip(10, 0, 0, 2), lan, link.clone(), link.clone())
            .unwrap();
        let [a, b, c, d] = SERVER;
        world
            .add_iface(server, ip(a, b, c, d), internet, link.clone(), link)
            .unwrap();
        let epoch = world.epoch();
        world.install(
            inside,
            Peer::new(
                &[addr([10, 0, 0, 2], 5000), addr([10, 0, 0, 2], 5001)],
                epoch,
            ),
        );
        world.install(
            server,
            Peer::new(&[addr(SERVER, 3478), addr(SERVER, 3479)], epoch),
        );
        world.run_for(Duration::from_millis(1));
        Self {
            world,
            inside,
            server,
            nat,
        }
    }

    fn send(&mut self, host: HostId, socket: u32, dst: SocketAddr, payload: &'static [u8]) {
        self.world
            .app::<Peer>(host)
            .unwrap()
            .machine
            .send(SocketId(socket), dst, payload);
        self.world.wake(host);
        self.world.run_for(Duration::from_millis(50));
    }

    fn received(&self, host: HostId) -> Vec<(SocketAddr, Vec<u8>)> {
        let peer = &self.world.app_ref::<Peer>(host).unwrap().machine;
        peer.received
            .iter()
            .map(|r| (r.src, r.payload.to_vec()))
            .collect()
    }
}

fn addr(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

fn nat(mapping: Mapping, filtering: Filtering, allocation: Allocation) -> NatParams {
    NatParams {
        mapping,
        filtering,
        allocation,
        ..NatParams::cone()
    }
}

#[test]
fn an_outbound_packet_is_translated_and_the_reply_comes_back() {
    let mut lab = NatLab::new(NatParams::symmetric());
    lab.world.app::<Peer>(lab.server).unwrap().machine.echo = Echo::Same;
    lab.send(lab.inside, 0, addr(SERVER, 3478), b"hello");
    let at_server = lab.received(lab.server);
    assert_eq!(at_server.len(), 1);
    assert_eq!(
        at_server[0].0.ip(),
        ip(203, 0, 113, 1),
        "source is the NAT's public address"
    );
    assert_eq!(
        lab.received(lab.inside),
        vec![(addr(SERVER, 3478), b"hello".to_vec())]
    );
}

#[test]
fn eif_passes_a_reply_from_another_port_and_apdf_drops_it() {
    for (filtering, passes) in [
        (Filtering::EndpointIndependent, true),
        (Filtering::AddressPortDependent, false),
    ] {
        let mut lab = NatLab::new(nat(
            Mapping::EndpointIndependent,
            filtering,
            Allocation::Preserving,
        ));
        // The server answers from its other port: a new source for the NAT.
        lab.world.app::<Peer>(lab.server).unwrap().machine.echo = Echo::From(SocketId(1));
        lab.send(lab.inside, 0, addr(SERVER, 3478), b"probe");
        let replies = lab.received(lab.inside);
        assert_eq!(!replies.is_empty(), passes, "{filtering:?}: {replies:?}");
        if passes {
            assert_eq!(replies[0].0, addr(SERVER, 3479));
        }
        assert_eq!(lab.world.stats().nat_dropped, u64::from(!passes));
    }
}

#[test]
fn eim_keeps_one_public_port_across_destinations_and_apdm_does_not() {
    for (mapping, same) in [
        (Mapping::EndpointIndependent, true),
        (Mapping::AddressPortDependent, false),
    ] {
        let mut lab = NatLab::new(nat(
            mapping,
            Filtering::EndpointIndependent,
            Allocation::Random,
        ));
        lab.send(lab.inside, 0, addr(SERVER, 3478), b"one");
        lab.send(lab.inside, 0, addr(SERVER, 3479), b"two");
        let seen = lab.received(lab.server);
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].0 == seen[1].0, same, "{mapping:?}: {seen:?}");
    }
}

#[test]
fn a_sequential_nat_allocates_predictable_ports() {
    let mut lab = NatLab::new(nat(
        Mapping::AddressPortDependent,
        Filtering::AddressPortDependent,
        Allocation::Sequential,
    ));
    for port in [3478, 3479] {
        lab.send(lab.inside, 0, addr(SERVER, port), b"x");
        lab.send(lab.inside, 1, addr(SERVER, port), b"y");
    }
    let ports: Vec<u16> = lab
        .received(lab.server)
        .iter()
        .map(|(src, _)| src.port())
        .collect();
    assert_eq!(ports.len(), 4);
    for pair in ports.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "{ports:?}");
    }
}

#[test]
fn unsolicited_traffic_to_the_nat_is_dropped() {
    let mut lab = NatLab::new(NatParams::cone());
    lab.send(lab.server, 0, addr([203, 0, 113, 1], 5000), b"knock");
    assert!(lab.received(lab.inside).is_empty());
    assert_eq!(lab.world.stats().nat_dropped, 1);
}

#[test]
fn hairpinning_reaches_an_inside_host_through_the_public_address() {
    for hairpinning in [true, false] {
        let mut lab = NatLab::new(NatParams {
            hairpinning,
            ..NatParams::cone()
        });
        // Socket 0 gets a public mapping by talking to the server.
        lab.send(lab.inside, 0, addr(SERVER, 3478), b"map me");
        let public = lab.received(lab.server)[0].0;
        lab.send(lab.inside, 1, public, b"hairpin");
        let got: Vec<_> = lab
            .received(lab.inside)
            .into_iter()
            .filter(|(_, p)| p == b"hairpin")
            .collect();
        assert_eq!(
            got.len(),
            usize::from(hairpinning),
            "hairpinning {hairpinning}"
        );
        if hairpinning {
            assert_eq!(
                got[0].0.ip(),
                ip(203, 0, 113, 1),
                "hairpinned source is translated"
            );
        }
    }
}

#[test]
fn rebinding_and_a_new_public_address_change_what_the_server_sees() {
    let mut lab = NatLab::new(nat(
        Mapping::EndpointIndependent,
        Filtering::EndpointIndependent,
        Allocation::Random,
    ));
    lab.send(lab.inside, 0, addr(SERVER, 3478), b"before");
    let now = lab.world.now();
    lab.world.nat_mut(lab.nat).rebind(now);
    lab.send(lab.inside, 0, addr(SERVER, 3478), b"after rebind");
    lab.world
        .set_nat_public_ip(lab.nat, ip(203, 0, 113, 99))
        .unwrap();
    lab.send(lab.inside, 0, addr(SERVER, 3478), b"after move");
    let seen: Vec<SocketAddr> = lab
        .received(lab.server)
        .iter()
        .map(|(src, _)| *src)
        .collect();
    assert_eq!(seen.len(), 3);
    assert_ne!(seen[0].port(), seen[1].port(), "rebinding gave a new port");
    assert_eq!(seen[2].ip(), ip(203, 0, 113, 99));
}

/// Source and sink across one bottleneck: goodput over the steady part.
fn saturate(rate_bps: u64, offered_bps: f64) -> f64 {
    let mut world = World::new(3);
    let internet = world.add_segment("internet");
    let a = world.add_host("a");
    let b = world.add_host("b");
    let bottleneck = LinkParams {
        rate_bps: Some(rate_bps),
        queue_bytes: 64 * 1024,
        delay: Duration::from_millis(10),
        ..LinkParams::ideal()
    };
    world
        .add_iface(
            a,
            ip(192, 0, 2, 1),
            internet,
            bottleneck,
            LinkParams::ideal(),
        )
        .unwrap();
    world
        .add_iface(
            b,
            ip(192, 0, 2, 2),
            internet,
            LinkParams::ideal(),
            LinkParams::ideal(),
        )
        .unwrap();
    let epoch = world.epoch();
    let (sa, sb) = (addr([192, 0, 2, 1], 9), addr([192, 0, 2, 2], 9));
    world.install(
        a,
        UdpSource::new(
            sa,
            sb,
            1_200,
            offered_bps,
            1,
            epoch,
            Duration::ZERO,
            Duration::from_secs(11),
        ),
    );
    world.install(b, UdpSink::new(sb, epoch));
    world.run_for(Duration::from_secs(12));
    let sink = &world.app_ref::<UdpSink>(b).unwrap().machine;
    sink.bytes_between(Duration::from_secs(1), Duration::from_secs(11)) as f64 * 8.0 / 10.0
}

#[test]
fn a_10_mbit_link_delivers_10_mbit_under_saturation_within_2_percent() {
    let goodput = saturate(10_000_000, 15e6);
    assert!((goodput / 10e6 - 1.0).abs() < 0.02, "goodput {goodput}");
    // Under capacity, everything offered arrives.
    let light = saturate(10_000_000, 5e6);
    assert!((light / 5e6 - 1.0).abs() < 0.02, "light goodput {light}");
}

#[test]
fn the_same_seed_gives_the_same_trace_and_another_seed_another() {
    for name in ["probe-pair", "nat-rebind", "saturate"] {
        let s = scenario::find(name).unwrap();
        let params = ["duration_s=3".to_owned()];
        let one = s.run(11, &params).unwrap();
        let two = s.run(11, &params).unwrap();
        let other = s.run(12, &params).unwrap();
        assert_eq!(one.trace_hash, two.trace_hash, "{name}");
        assert_eq!(one.rows, two.rows, "{name}");
        assert_ne!(one.trace_hash, other.trace_hash, "{name}");
    }
}

#[test]
fn impossible_scenario_parameters_are_refused_with_a_reason() {
    let s = scenario::find("saturate").unwrap();
    let err = s.run(1, &["rate_mbps=0".to_owned()]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "parameter rate_mbps: 0 is outside [0.01, 100000]"
    );
    let err = scenario::find("nope").unwrap_err();
    assert!(err.to_string().contains("no scenario named \"nope\""));
    let mut world = World::new(1);
    let segment = world.add_segment("internet");
    let host = world.add_host("h");
    let bad = LinkParams {
        loss: Loss::Independent(1.5),
        ..LinkParams::ideal()
    };
    let err = world
        .add_iface(host, ip(192, 0, 2, 1), segment, bad, LinkParams::ideal())
        .unwrap_err();
    assert!(err.to_string().contains("loss"), "{err}");
    world
        .add_iface(
            host,
            ip(192, 0, 2, 1),
            segment,
            LinkParams::ideal(),
            LinkParams::ideal(),
        )
        .unwrap();
    let err = world
        .add_iface(
            host,
            ip(192, 0, 2, 1),
            segment,
            LinkParams::ideal(),
            LinkParams::ideal(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("used twice"), "{err}");
}
