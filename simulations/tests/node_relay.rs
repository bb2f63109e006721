//! Node relays in the simulator (DESIGN §7): two hard NATs (mapping per
//! destination, random ports) on either side, so no direct path can
//! form, and a third node, gamma, on a public address that hosts the same
//! relay machine as the coordinator.
//!
//! Asserted, over several seeds:
//! - the pair meets over gamma's relay (path kind `node-relay`) and the
//!   whole flow crosses it;
//! - when an end is revoked, gamma forwards nothing more for the
//!   withdrawn association (an invariant checked throughout the run);
//! - when gamma itself is revoked, the pair moves to the coordinator's
//!   relay within a second, and gamma forwards nothing more.

use std::time::Duration;

use transitloom_simulations::nat::{Allocation, Filtering, Mapping, NatParams};
use transitloom_simulations::scenario::nat_traversal::{
    longest_gap_after, run_pair, PairOptions, PairOutcome, Side, GAMMA_IP,
};

const SEEDS: [u64; 3] = [1, 2, 3];

fn hard() -> Side {
    Side {
        nat: Some(NatParams {
            mapping: Mapping::AddressPortDependent,
            filtering: Filtering::AddressPortDependent,
            allocation: Allocation::Random,
            ..NatParams::cone()
        }),
    }
}

/// One run of two hard NATs with gamma relaying, over 6 s; no invariant
/// may be violated.
fn over_gamma(
    seed: u64,
    revoke: Option<(Duration, &'static str)>,
    coordinator_relay: bool,
) -> PairOutcome {
    let options = PairOptions {
        relay: coordinator_relay,
        relay_node: true,
        revoke,
        duration: Duration::from_secs(6),
        ..PairOptions::default()
    };
    let out = run_pair(seed, &hard(), &hard(), options).unwrap();
    assert!(
        out.violations.is_empty(),
        "seed {seed}: {:?}",
        out.violations
    );
    out
}

#[test]
fn two_hard_nats_meet_over_a_node_relay() {
    for seed in SEEDS {
        let out = over_gamma(seed, None, false);
        assert_eq!(out.first_direct, None, "seed {seed}");
        assert_eq!(out.ends_kind, Some("node-relay"), "seed {seed}");
        assert_eq!(out.remote.map(|r| r.ip()), Some(GAMMA_IP), "seed {seed}");
        assert!(out.sent > 500, "seed {seed}: {}", out.sent);
        assert_eq!(out.delivered, out.sent, "seed {seed}");
        let (bytes, allocations) = out.gamma.unwrap();
        assert_eq!(allocations, 1, "seed {seed}");
        assert!(bytes >= out.delivered * 200, "seed {seed}: {bytes}");
    }
}

#[test]
fn a_revoked_end_leaves_the_node_relay_forwarding_nothing() {
    let at = Duration::from_secs(3);
    for seed in SEEDS {
        let out = over_gamma(seed, Some((at, "beta")), false);
        assert_eq!(out.gamma, Some((0, 0)), "seed {seed}");
        let late = out
            .arrivals
            .iter()
            .filter(|&&t| t > at + Duration::from_secs(1));
        assert_eq!(late.count(), 0, "seed {seed}");
        assert!(
            out.delivered > 100,
            "seed {seed}: carried before the revoke"
        );
    }
}

#[test]
fn a_revoked_relay_node_hands_the_pair_to_the_coordinator_relay() {
    let at = Duration::from_secs(3);
    for seed in SEEDS {
        let out = over_gamma(seed, Some((at, "gamma")), true);
        assert_eq!(
            out.remote.map(|r| r.ip()),
            Some(GAMMA_IP),
            "seed {seed}: gamma first"
        );
        assert_eq!(out.ends_kind, Some("coordinator-relay"), "seed {seed}");
        assert_eq!(out.gamma, Some((0, 0)), "seed {seed}");
        let gap = longest_gap_after(&out.arrivals, at).unwrap();
        assert!(gap < Duration::from_secs(1), "seed {seed}: {gap:?}");
        println!("seed {seed}: the flow paused {gap:?} when gamma was revoked");
    }
}

#[test]
fn a_relay_node_that_starts_later_takes_the_pair_off_the_coordinator_relay_losing_nothing() {
    let at = Duration::from_secs(4);
    for seed in SEEDS {
        let options = PairOptions {
            relay: true,
            relay_node: true,
            relay_node_at: Some(at),
            duration: Duration::from_secs(12),
            ..PairOptions::default()
        };
        let out = run_pair(seed, &hard(), &hard(), options).unwrap();
        assert!(
            out.violations.is_empty(),
            "seed {seed}: {:?}",
            out.violations
        );
        assert_eq!(out.first_direct, None, "seed {seed}");
        assert_ne!(
            out.remote.map(|r| r.ip()),
            Some(GAMMA_IP),
            "seed {seed}: the coordinator's relay first"
        );
        assert_eq!(out.ends_kind, Some("node-relay"), "seed {seed}");
        assert_eq!(
            out.ends_remote.map(|r| r.ip()),
            Some(GAMMA_IP),
            "seed {seed}"
        );
        assert_eq!(out.hub_allocations, Some(0), "seed {seed}: released");
        let (bytes, allocations) = out.gamma.unwrap();
        assert_eq!(allocations, 1, "seed {seed}");
        assert!(bytes > 0, "seed {seed}");
        assert!(out.sent > 1_000, "seed {seed}: {}", out.sent);
        assert_eq!(out.delivered, out.sent, "seed {seed}: nothing lost");
        let gap = longest_gap_after(&out.arrivals, at).unwrap();
        println!("seed {seed}: longest gap between arrivals after gamma started: {gap:?}");
    }
}
