//! NAT traversal across the matrix of DESIGN §7 (issue 5, item 6): both
//! nodes behind NATs of every mapping × filtering × allocation (or none),
//! the real coordinator with its reflector on two addresses, the real node
//! machines, two seeds per pair.
//!
//! Asserted:
//! - every pair where neither side is *hard* (a NAT that maps per
//!   destination and allocates ports at random) gets a direct path in
//!   every seed, within a second of the association being installed, and
//!   carries the flow;
//! - each node's reflectors classify its NAT's mapping (and a sequential
//!   allocator) as configured;
//! - with one reflector address only, endpoint-independent NATs still
//!   meet directly (the reflexive address is offered as it is).
//!
//! Pairs with a hard side are printed (`-- --nocapture`): some meet
//! directly where the other NAT lets the hard side's probes in, the others
//! need the relay, which this matrix does not include yet.

use std::time::Duration;

use transitloom_simulations::nat::{Allocation, Mapping};
use transitloom_simulations::scenario::nat_traversal::{
    all_sides, direct_expected, run_pair, Side,
};

const SEEDS: [u64; 2] = [1, 2];
const DELAY: Duration = Duration::from_millis(10);
const DURATION: Duration = Duration::from_secs(4);

#[test]
fn every_pair_with_a_usable_candidate_on_both_sides_meets_directly() {
    let sides = all_sides();
    let mut failures = Vec::new();
    let (mut guaranteed, mut hard_direct, mut hard_none) = (0, 0, 0);
    for (i, a) in sides.iter().enumerate() {
        for b in &sides[i..] {
            let (expected, _) = direct_expected(a, b);
            for seed in SEEDS {
                let out = run_pair(seed, a, b, true, DELAY, DURATION).expect("the world builds");
                let label = format!("{} ↔ {} (seed {seed})", a.label(), b.label());
                if !expected {
                    if out.first_path.is_some() {
                        hard_direct += 1;
                    } else {
                        hard_none += 1;
                    }
                    continue;
                }
                guaranteed += 1;
                match out.first_path {
                    None => failures.push(format!("{label}: no direct path")),
                    Some(t) if t > Duration::from_secs(1) => {
                        failures.push(format!("{label}: first path after {t:?}"))
                    }
                    Some(_) => {}
                }
                // The flow starts at 1 s; the path is up well before.
                if out.delivered + 2 < out.sent {
                    failures.push(format!(
                        "{label}: {} of {} datagrams delivered",
                        out.delivered, out.sent
                    ));
                }
            }
        }
    }
    println!(
        "{guaranteed} runs with a usable candidate on both sides; with a hard side: \
         {hard_direct} direct anyway, {hard_none} without a path (relay needed)"
    );
    assert!(guaranteed > 500, "the matrix shrank: {guaranteed} runs");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn reflectors_classify_each_nat_as_configured() {
    let public = Side { nat: None };
    for side in all_sides() {
        let out = run_pair(1, &side, &public, true, DELAY, Duration::from_secs(2))
            .expect("the world builds");
        let want = match &side.nat {
            None => "none/unknown".to_owned(),
            Some(nat) => match (nat.mapping, nat.allocation) {
                (Mapping::EndpointIndependent, Allocation::Preserving) => {
                    "endpoint-independent/preserving".to_owned()
                }
                (Mapping::EndpointIndependent, _) => "endpoint-independent/unknown".to_owned(),
                // A preserving NAT keeps the first mapping's port; the
                // second one (port taken) comes from its sequential
                // fallback.
                (_, Allocation::Preserving | Allocation::Sequential) => {
                    "endpoint-dependent/sequential".to_owned()
                }
                (_, Allocation::Random) => "endpoint-dependent/random".to_owned(),
            },
        };
        assert_eq!(out.alpha_saw, want, "{}", side.label());
    }
}

#[test]
fn one_reflector_address_is_enough_between_endpoint_independent_nats() {
    let cone = all_sides()
        .into_iter()
        .filter(|s| {
            s.nat
                .as_ref()
                .is_some_and(|n| n.mapping == Mapping::EndpointIndependent)
        })
        .collect::<Vec<_>>();
    assert_eq!(cone.len(), 9);
    for a in &cone {
        for b in &cone {
            let out = run_pair(3, a, b, false, DELAY, DURATION).expect("the world builds");
            assert!(
                out.first_path.is_some(),
                "{} ↔ {} with one reflector address",
                a.label(),
                b.label()
            );
        }
    }
}
