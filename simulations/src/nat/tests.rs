use std::net::Ipv4Addr;

use proptest::prelude::*;
use transitloom_proto_core::rng::Rng;

use super::*;

const PUBLIC: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));

fn nat(params: NatParams, seed: u64) -> NatBox {
    NatBox::new(params, PUBLIC, Rng::new(seed)).expect("valid params")
}

fn inside(host: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, host)), port)
}

fn outside(host: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, host)), port)
}

fn with(mapping: Mapping, filtering: Filtering, allocation: Allocation) -> NatParams {
    NatParams {
        mapping,
        filtering,
        allocation,
        ..NatParams::cone()
    }
}

fn public_port(nat: &mut NatBox, now: Instant, src: SocketAddr, dst: SocketAddr) -> u16 {
    let public = nat.outbound(now, src, dst).expect("a mapping");
    assert_eq!(public.ip(), nat.public_ip());
    public.port()
}

#[test]
fn endpoint_independent_mapping_keeps_the_port_for_every_destination() {
    let mut n = nat(NatParams::cone(), 1);
    let now = Instant::now();
    let a = public_port(&mut n, now, inside(1, 4000), outside(1, 53));
    let b = public_port(&mut n, now, inside(1, 4000), outside(2, 443));
    assert_eq!(a, b);
    assert_eq!(n.mapping_count(), 1);
}

#[test]
fn address_dependent_mapping_keeps_the_port_per_destination_ip() {
    let params = with(
        Mapping::AddressDependent,
        Filtering::EndpointIndependent,
        Allocation::Sequential,
    );
    let mut n = nat(params, 2);
    let now = Instant::now();
    let a = public_port(&mut n, now, inside(1, 4000), outside(1, 53));
    let same_ip = public_port(&mut n, now, inside(1, 4000), outside(1, 54));
    let other_ip = public_port(&mut n, now, inside(1, 4000), outside(2, 53));
    assert_eq!(a, same_ip);
    assert_ne!(a, other_ip);
    assert_eq!(n.mapping_count(), 2);
}

#[test]
fn address_and_port_dependent_mapping_gives_a_port_per_destination_port() {
    let mut n = nat(NatParams::symmetric(), 3);
    let now = Instant::now();
    let a = public_port(&mut n, now, inside(1, 4000), outside(1, 53));
    let b = public_port(&mut n, now, inside(1, 4000), outside(1, 54));
    let again = public_port(&mut n, now, inside(1, 4000), outside(1, 53));
    assert_ne!(a, b);
    assert_eq!(a, again);
    assert_eq!(n.mapping_count(), 2);
}

#[test]
fn endpoint_independent_filtering_passes_unsolicited_sources() {
    let mut n = nat(NatParams::cone(), 4);
    let now = Instant::now();
    let port = public_port(&mut n, now, inside(1, 4000), outside(1, 53));
    let to = SocketAddr::new(PUBLIC, port);
    assert_eq!(n.inbound(now, outside(9, 9999), to), Some(inside(1, 4000)));
    assert_eq!(n.inbound(now, outside(1, 7), to), Some(inside(1, 4000)));
    assert_eq!(n.stats().inbound_passed, 2);
}

#[test]
fn address_dependent_filtering_passes_contacted_ips_only() {
    let params = with(
        Mapping::EndpointIndependent,
        Filtering::AddressDependent,
        Allocation::Preserving,
    );
    let mut n = nat(params, 5);
    let now = Instant::now();
    let port = public_port(&mut n, now, inside(1, 4000), outside(1, 53));
    let to = SocketAddr::new(PUBLIC, port);
    assert_eq!(n.inbound(now, outside(1, 53), to), Some(inside(1, 4000)));
    assert_eq!(n.inbound(now, outside(1, 5353), to), Some(inside(1, 4000)));
    assert_eq!(n.inbound(now, outside(2, 53), to), None);
    assert_eq!(n.stats().inbound_filtered, 1);
}

#[test]
fn address_and_port_dependent_filtering_passes_exact_contacts_only() {
    let params = with(
        Mapping::EndpointIndependent,
        Filtering::AddressPortDependent,
        Allocation::Preserving,
    );
    let mut n = nat(params, 6);
    let now = Instant::now();
    let port = public_port(&mut n, now, inside(1, 4000), outside(1, 53));
    let to = SocketAddr::new(PUBLIC, port);
    assert_eq!(n.inbound(now, outside(1, 53), to), Some(inside(1, 4000)));
    assert_eq!(n.inbound(now, outside(1, 54), to), None);
    assert_eq!(n.inbound(now, outside(2, 53), to), None);
    // Contacting the new port opens it.
    public_port(&mut n, now, inside(1, 4000), outside(1, 54));
    assert_eq!(n.inbound(now, outside(1, 54), to), Some(inside(1, 4000)));
    assert_eq!(n.stats().inbound_filtered, 2);
}

#[test]
fn filtering_forgets_the_oldest_contact_beyond_the_bound() {
    let params = with(
        Mapping::EndpointIndependent,
        Filtering::AddressPortDependent,
        Allocation::Preserving,
    );
    let mut n = nat(params, 7);
    let now = Instant::now();
    let src = inside(1, 4000);
    for port in 0..MAX_REMOTES as u16 {
        public_port(&mut n, now, src, outside(1, 1000 + port));
    }
    // Re-contacting the first makes the second the oldest.
    public_port(&mut n, now, src, outside(1, 1000));
    public_port(&mut n, now, src, outside(2, 1));
    let to = SocketAddr::new(PUBLIC, 4000);
    assert_eq!(n.inbound(now, outside(1, 1001), to), None);
    assert_eq!(n.inbound(now, outside(1, 1000), to), Some(src));
    assert_eq!(n.inbound(now, outside(1, 1002), to), Some(src));
    assert_eq!(n.inbound(now, outside(2, 1), to), Some(src));
}

#[test]
fn inbound_to_an_unmapped_port_or_another_address_is_dropped() {
    let mut n = nat(NatParams::cone(), 8);
    let now = Instant::now();
    let port = public_port(&mut n, now, inside(1, 4000), outside(1, 53));
    let unmapped = SocketAddr::new(PUBLIC, port + 1);
    assert_eq!(n.inbound(now, outside(1, 53), unmapped), None);
    let elsewhere = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 2)), port);
    assert_eq!(n.inbound(now, outside(1, 53), elsewhere), None);
    assert_eq!(n.stats().inbound_unmapped, 2);
    assert_eq!(n.stats().inbound_passed, 0);
}

#[test]
fn preserving_keeps_the_inside_port_until_it_is_taken() {
    let mut n = nat(NatParams::cone(), 9);
    let now = Instant::now();
    assert_eq!(
        public_port(&mut n, now, inside(1, 4000), outside(1, 53)),
        4000
    );
    let second = public_port(&mut n, now, inside(2, 4000), outside(1, 53));
    assert_ne!(second, 4000);
    // An inside port outside the range is not preserved.
    let low = public_port(&mut n, now, inside(3, 80), outside(1, 53));
    assert!((1024..=65535).contains(&low), "{low}");
}

#[test]
fn sequential_allocation_gives_consecutive_ports_and_wraps() {
    let params = NatParams {
        ports: (40_000, 40_006),
        ..with(
            Mapping::AddressPortDependent,
            Filtering::AddressPortDependent,
            Allocation::Sequential,
        )
    };
    let mut n = nat(params, 10);
    let now = Instant::now();
    let ports: Vec<u16> = (0..5)
        .map(|i| public_port(&mut n, now, inside(1, 5000), outside(1, 100 + i)))
        .collect();
    for pair in ports.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "{ports:?}");
    }
    // Two more fill the range; after a rebind the counter wraps to the start.
    let more: Vec<u16> = (5..7)
        .map(|i| public_port(&mut n, now, inside(1, 5000), outside(1, 100 + i)))
        .collect();
    assert_eq!(more, [40_005, 40_006]);
    n.rebind(now);
    assert_eq!(
        public_port(&mut n, now, inside(1, 5000), outside(1, 1)),
        40_000
    );
}

#[test]
fn random_allocation_spreads_distinct_ports_the_same_way_per_seed() {
    let ports = |seed| {
        let mut n = nat(NatParams::symmetric(), seed);
        let now = Instant::now();
        (0..20)
            .map(|i| public_port(&mut n, now, inside(1, 5000), outside(1, 100 + i)))
            .collect::<Vec<u16>>()
    };
    let a = ports(11);
    assert_eq!(a, ports(11));
    assert_ne!(a, ports(12));
    let distinct: BTreeSet<u16> = a.iter().copied().collect();
    assert_eq!(distinct.len(), a.len());
    let consecutive = a.windows(2).filter(|w| w[1].abs_diff(w[0]) <= 1).count();
    assert_eq!(consecutive, 0, "{a:?}");
    // Spread over the range: some below and some above the middle.
    let middle: u16 = 1024 + (65535 - 1024) / 2;
    assert!(a.iter().any(|&p| p < middle) && a.iter().any(|&p| p > middle));
}

#[test]
fn mapping_lives_for_the_timeout_after_the_last_outbound_packet() {
    let params = NatParams {
        mapping_timeout: Duration::from_secs(30),
        ..NatParams::cone()
    };
    let mut n = nat(params, 13);
    let t0 = Instant::now();
    let secs = |s| t0 + Duration::from_secs(s);
    let src = inside(1, 4000);
    let port = public_port(&mut n, t0, src, outside(1, 53));
    let to = SocketAddr::new(PUBLIC, port);
    assert_eq!(n.inbound(secs(29), outside(1, 53), to), Some(src));
    // Outbound at 20 s keeps it alive until 50 s; inbound at 45 s does not
    // extend it.
    public_port(&mut n, secs(20), src, outside(1, 53));
    assert_eq!(n.inbound(secs(45), outside(1, 53), to), Some(src));
    assert_eq!(n.inbound(secs(49), outside(1, 53), to), Some(src));
    assert_eq!(n.inbound(secs(50), outside(1, 53), to), None);
    assert_eq!(n.mapping_count(), 0);
    assert_eq!(n.stats().mappings_expired, 1);
    assert_eq!(n.stats().inbound_unmapped, 1);
}

#[test]
fn after_expiry_a_new_mapping_gets_a_new_port() {
    for allocation in [Allocation::Sequential, Allocation::Random] {
        let params = NatParams {
            mapping_timeout: Duration::from_secs(30),
            ..with(
                Mapping::EndpointIndependent,
                Filtering::EndpointIndependent,
                allocation,
            )
        };
        let mut n = nat(params, 14);
        let t0 = Instant::now();
        let src = inside(1, 4000);
        let old = public_port(&mut n, t0, src, outside(1, 53));
        let later = t0 + Duration::from_secs(31);
        let new = public_port(&mut n, later, src, outside(1, 53));
        assert_ne!(old, new, "{allocation:?}");
        assert_eq!(n.stats().mappings_created, 2);
        let to_old = SocketAddr::new(PUBLIC, old);
        assert_eq!(n.inbound(later, outside(1, 53), to_old), None);
    }
}

#[test]
fn rebind_drops_old_mappings_and_moves_ports() {
    for allocation in [Allocation::Sequential, Allocation::Random] {
        let params = with(
            Mapping::EndpointIndependent,
            Filtering::EndpointIndependent,
            allocation,
        );
        let mut n = nat(params, 15);
        let now = Instant::now();
        let src = inside(1, 4000);
        let old = public_port(&mut n, now, src, outside(1, 53));
        n.rebind(now);
        assert_eq!(n.mapping_count(), 0);
        assert_eq!(
            n.inbound(now, outside(1, 53), SocketAddr::new(PUBLIC, old)),
            None
        );
        let new = public_port(&mut n, now, src, outside(1, 53));
        assert_ne!(old, new, "{allocation:?}");
        assert_eq!(n.stats().mappings_created, 2);
    }
}

#[test]
fn public_address_change_drops_mappings() {
    let mut n = nat(NatParams::cone(), 16);
    let now = Instant::now();
    let src = inside(1, 4000);
    let port = public_port(&mut n, now, src, outside(1, 53));
    let new_ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
    n.set_public_ip(new_ip);
    assert_eq!(n.public_ip(), new_ip);
    assert_eq!(n.mapping_count(), 0);
    assert_eq!(
        n.inbound(now, outside(1, 53), SocketAddr::new(new_ip, port)),
        None
    );
    let public = n.outbound(now, src, outside(1, 53)).unwrap();
    assert_eq!(public.ip(), new_ip);
    assert_eq!(n.stats().mappings_created, 2);
}

#[test]
fn max_mappings_exhaustion_returns_none_and_counts() {
    let params = NatParams {
        max_mappings: 3,
        ..NatParams::symmetric()
    };
    let mut n = nat(params, 17);
    let now = Instant::now();
    for i in 0..3 {
        public_port(&mut n, now, inside(1, 4000), outside(1, i + 1));
    }
    assert_eq!(n.outbound(now, inside(1, 4000), outside(1, 99)), None);
    assert_eq!(n.outbound(now, inside(2, 4000), outside(1, 1)), None);
    assert_eq!(n.stats().exhausted, 2);
    assert_eq!(n.mapping_count(), 3);
    // Existing mappings still work.
    assert!(n.outbound(now, inside(1, 4000), outside(1, 1)).is_some());
}

#[test]
fn a_port_range_of_n_holds_exactly_n_mappings() {
    for allocation in [
        Allocation::Preserving,
        Allocation::Sequential,
        Allocation::Random,
    ] {
        let params = NatParams {
            ports: (50_000, 50_015),
            ..with(
                Mapping::AddressPortDependent,
                Filtering::AddressPortDependent,
                allocation,
            )
        };
        let mut n = nat(params, 18);
        let now = Instant::now();
        let ports: BTreeSet<u16> = (0..16)
            .map(|i| public_port(&mut n, now, inside(1, 50_003), outside(1, i + 1)))
            .collect();
        assert_eq!(ports, (50_000..=50_015).collect(), "{allocation:?}");
        assert_eq!(n.outbound(now, inside(1, 50_003), outside(1, 99)), None);
        assert_eq!(n.stats().exhausted, 1);
    }
}

#[test]
fn validate_rejects_bad_params_with_clear_messages() {
    let cone = NatParams::cone;
    let cases = [
        (
            NatParams {
                ports: (5000, 4000),
                ..cone()
            },
            "port range 5000..=4000 is empty",
        ),
        (
            NatParams {
                ports: (0, 4000),
                ..cone()
            },
            "includes port 0",
        ),
        (
            NatParams {
                ports: (0, 0),
                ..cone()
            },
            "includes port 0",
        ),
        (
            NatParams {
                mapping_timeout: Duration::ZERO,
                ..cone()
            },
            "mapping_timeout must be positive",
        ),
        (
            NatParams {
                max_mappings: 0,
                ..cone()
            },
            "max_mappings must be positive",
        ),
    ];
    for (params, needle) in cases {
        let message = params.validate().expect_err(needle).to_string();
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        assert!(NatBox::new(params, PUBLIC, Rng::new(0)).is_err());
    }
    let single = NatParams {
        ports: (1, 1),
        ..cone()
    };
    assert_eq!(single.validate(), Ok(()));
    assert_eq!(NatParams::symmetric().validate(), Ok(()));
    assert_eq!(NatParams::default(), cone());
}

#[test]
fn never_expiring_timeout_does_not_overflow() {
    let params = NatParams {
        mapping_timeout: Duration::MAX,
        ..NatParams::cone()
    };
    let mut n = nat(params, 19);
    let now = Instant::now();
    let port = public_port(&mut n, now, inside(1, 4000), outside(1, 53));
    let later = now + Duration::from_secs(1_000_000);
    let to = SocketAddr::new(PUBLIC, port);
    assert_eq!(n.inbound(later, outside(1, 53), to), Some(inside(1, 4000)));
}

/// One step of the property test.
#[derive(Debug, Clone)]
enum Op {
    Out { host: u8, port: u8, remote: u8 },
    In { remote: u8, port: u8 },
    Wait(u8),
    Rebind,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3u8, 0..2u8, 0..4u8).prop_map(|(host, port, remote)| Op::Out { host, port, remote }),
        4 => (0..5u8, 0..20u8).prop_map(|(remote, port)| Op::In { remote, port }),
        2 => (0..40u8).prop_map(Op::Wait),
        1 => Just(Op::Rebind),
    ]
}

fn params() -> impl Strategy<Value = NatParams> {
    let mapping = prop_oneof![
        Just(Mapping::EndpointIndependent),
        Just(Mapping::AddressDependent),
        Just(Mapping::AddressPortDependent),
    ];
    let filtering = prop_oneof![
        Just(Filtering::EndpointIndependent),
        Just(Filtering::AddressDependent),
        Just(Filtering::AddressPortDependent),
    ];
    let allocation = prop_oneof![
        Just(Allocation::Preserving),
        Just(Allocation::Sequential),
        Just(Allocation::Random),
    ];
    (mapping, filtering, allocation, 1..12u16, 1..16usize).prop_map(
        |(mapping, filtering, allocation, span, max_mappings)| NatParams {
            mapping,
            filtering,
            allocation,
            mapping_timeout: Duration::from_secs(30),
            hairpinning: false,
            ports: (2000, 2000 + span - 1),
            max_mappings,
        },
    )
}

/// A reference mapping: its public port, last outbound time and contacts.
struct Expected {
    port: u16,
    last: Instant,
    remotes: Vec<SocketAddr>,
}

proptest! {
    /// A reference model predicts every translation: inbound passes only to
    /// the inside endpoint of a live mapping the filter admits; live public
    /// ports are unique and in range; mapping_count stays within bounds.
    #[test]
    fn translations_match_a_reference_model(
        params in params(),
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let mut n = nat(params.clone(), seed);
        let timeout = params.mapping_timeout;
        let (first, last) = params.ports;
        let remote = |i: u8| outside(1 + i / 2, 53 + u16::from(i % 2));
        let mut now = Instant::now();
        let mut model: BTreeMap<MappingKey, Expected> = BTreeMap::new();
        for op in ops {
            model.retain(|_, e| now < e.last + timeout);
            match op {
                Op::Out { host, port, remote: r } => {
                    let src = inside(host + 1, 1999 + u16::from(port));
                    let dst = remote(r);
                    let key = n.key(src, dst);
                    let got = n.outbound(now, src, dst);
                    if let Some(e) = model.get_mut(&key) {
                        prop_assert_eq!(got, Some(SocketAddr::new(PUBLIC, e.port)));
                        e.last = now;
                        e.remotes.push(dst);
                    } else if model.len() >= params.max_mappings.min(params.port_count()) {
                        prop_assert_eq!(got, None);
                    } else {
                        let got = got.expect("a free port");
                        prop_assert_eq!(got.ip(), PUBLIC);
                        let port = got.port();
                        prop_assert!((first..=last).contains(&port));
                        prop_assert!(model.values().all(|e| e.port != port), "port {} reused", port);
                        let preservable = (first..=last).contains(&src.port())
                            && model.values().all(|e| e.port != src.port());
                        if params.allocation == Allocation::Preserving && preservable {
                            prop_assert_eq!(port, src.port());
                        }
                        model.insert(key, Expected { port, last: now, remotes: vec![dst] });
                    }
                }
                Op::In { remote: r, port } => {
                    let src = remote(r);
                    let dst = SocketAddr::new(PUBLIC, first + u16::from(port));
                    let expected = model
                        .iter()
                        .find(|(_, e)| e.port == dst.port())
                        .filter(|(_, e)| match params.filtering {
                            Filtering::EndpointIndependent => true,
                            Filtering::AddressDependent => e.remotes.iter().any(|a| a.ip() == src.ip()),
                            Filtering::AddressPortDependent => e.remotes.contains(&src),
                        })
                        .map(|(key, _)| key.inside);
                    prop_assert_eq!(n.inbound(now, src, dst), expected);
                }
                Op::Wait(secs) => now += Duration::from_secs(u64::from(secs)),
                Op::Rebind => {
                    n.rebind(now);
                    model.clear();
                }
            }
            prop_assert!(n.mapping_count() <= params.max_mappings);
            // The two indexes agree, and once expired the table is the model.
            prop_assert_eq!(n.by_key.len(), n.by_port.len());
            for (key, port) in &n.by_key {
                prop_assert_eq!(&n.by_port[port].key, key);
            }
            let mut probe = n.clone();
            probe.expire(now);
            let live = model.values().filter(|e| now < e.last + timeout).count();
            prop_assert_eq!(probe.mapping_count(), live);
        }
    }
}
