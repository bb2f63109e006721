//! NAT traversal across the matrix of DESIGN §7 (issue 5, item 6): both
//! nodes behind NATs of every mapping × filtering × allocation (or none),
//! the real coordinator with its reflector on two addresses, the real node
//! machines, two seeds per pair.
//!
//! Asserted:
//! - every pair connects in every seed (directly, or through the
//!   coordinator's relay), within a second of the association being
//!   installed, and carries the flow;
//! - every pair [`direct_expected`] says meets directly gets a direct
//!   path, and that is the path carrying data at the end: every pair where
//!   neither side is *hard* (a NAT that maps per destination and allocates
//!   ports at random), and those with a hard side where one side's probes
//!   get in and the answers back (a pong from another port of the pinged
//!   address validates the path);
//! - every other pair gets no direct path and ends on the relay;
//! - each node's reflectors classify its NAT's mapping (and a sequential
//!   allocator) as configured;
//! - with one reflector address only, endpoint-independent NATs still
//!   meet directly (the reflexive address is offered as it is).
//!
//! - a NAT that forgets its mappings, or gets a new public address,
//!   mid-flow costs the flow less than a second, and cone NATs end on a
//!   direct path again;
//! - cutting the direct path mid-flow moves the data onto the relay within
//!   300 ms (round trips here are 40 ms), restoring it brings the data back
//!   after the 2 s hold, and a direct path that flaps every 500 ms moves
//!   the data no more than a cut and a restore would.
//!
//! - with birthday probing off, a hard side against an address-and-port
//!   filtering side with one known mapping towards it (endpoint-independent,
//!   or address-dependent with predictable ports) stays on the relay and
//!   no birthday packet is sent; with it on (default caps) such pairs go
//!   direct within the time the probes take at their rate, and neither side
//!   exceeds its socket or probe cap.
//!
//! How many pairs with a hard side meet directly is printed
//! (`-- --nocapture`).

use std::time::Duration;

use transitloom_proto_core::dataplane::reflexive::PREDICTED_PORTS;
use transitloom_proto_core::dataplane::BirthdayConfig;
use transitloom_simulations::nat::{Allocation, Filtering, Mapping};
use transitloom_simulations::scenario::nat_traversal::{
    all_sides, direct_expected, longest_gap_after, run_pair, Cut, PairOptions, PairOutcome, Side,
    BIRTHDAY_RUN,
};

const SEEDS: [u64; 2] = [1, 2];
/// Birthday probing is a draw: its pairs run on more seeds.
const BIRTHDAY_SEEDS: [u64; 5] = [1, 2, 3, 4, 5];

fn options() -> PairOptions {
    PairOptions {
        duration: Duration::from_secs(4),
        ..PairOptions::default()
    }
}

#[test]
fn every_pair_connects_and_every_pair_with_usable_candidates_directly() {
    let sides = all_sides();
    let mut failures = Vec::new();
    let (mut guaranteed, mut hard_direct, mut hard_relayed) = (0, 0, 0);
    for (i, a) in sides.iter().enumerate() {
        for b in &sides[i..] {
            let (expected, why) = direct_expected(a, b);
            for seed in SEEDS {
                let out = run_pair(seed, a, b, options()).expect("the world builds");
                let label = format!("{} ↔ {} (seed {seed})", a.label(), b.label());
                match out.first_path {
                    None => failures.push(format!("{label}: no path at all")),
                    Some(t) if t > Duration::from_secs(1) => {
                        failures.push(format!("{label}: first path after {t:?}"))
                    }
                    Some(_) => {}
                }
                // The flow starts at 1 s; a path is up well before.
                if out.delivered + 2 < out.sent {
                    failures.push(format!(
                        "{label}: {} of {} datagrams delivered",
                        out.delivered, out.sent
                    ));
                }
                if expected {
                    guaranteed += 1;
                    if out.first_direct.is_none() || out.ends_relayed != Some(false) {
                        failures.push(format!(
                            "{label}: expected direct, first direct path {:?}, data ends relayed {:?}",
                            out.first_direct, out.ends_relayed
                        ));
                    }
                    if a.hard() || b.hard() {
                        hard_direct += 1;
                    }
                } else {
                    hard_relayed += 1;
                    if out.first_direct.is_some() || out.ends_relayed != Some(true) {
                        failures.push(format!(
                            "{label} ({why}): expected the relay, first direct path {:?}, \
                             data ends relayed {:?}",
                            out.first_direct, out.ends_relayed
                        ));
                    }
                }
            }
        }
    }
    println!(
        "{guaranteed} runs expected direct, all direct ({hard_direct} of them with a hard \
         side); {hard_relayed} through the relay, as expected"
    );
    assert!(guaranteed >= 500, "the matrix shrank: {guaranteed} runs");
    assert!(hard_relayed > 0, "no run needed the relay");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The side of the matrix labelled `label` (`eim/apdf/random`, …).
fn side(label: &str) -> Side {
    all_sides()
        .into_iter()
        .find(|s| s.label() == label)
        .unwrap_or_else(|| panic!("no side {label} in the matrix"))
}

/// Cone NATs on both sides: a direct path, then the cut of `cut`.
fn cone_pair_with(cut: Cut, duration: Duration) -> PairOutcome {
    let cone = side("eim/apdf/random");
    run_pair(
        1,
        &cone,
        &cone,
        PairOptions {
            duration,
            cut: Some(cut),
            ..PairOptions::default()
        },
    )
    .expect("the world builds")
}

#[test]
fn a_cut_direct_path_fails_over_to_the_relay_and_comes_back_after_the_hold() {
    let (at, restore) = (Duration::from_secs(3), Duration::from_secs(6));
    let out = cone_pair_with(
        Cut {
            at,
            restore: Some(restore),
            flap: None,
        },
        Duration::from_secs(10),
    );
    let onto_relay = out
        .switches
        .iter()
        .find(|(t, relayed)| *t >= at && *relayed)
        .map(|(t, _)| *t - at)
        .expect("data moved onto the relay");
    assert!(onto_relay <= Duration::from_millis(300), "{onto_relay:?}");
    let back = out
        .switches
        .iter()
        .find(|(t, relayed)| *t >= restore && !*relayed)
        .map(|(t, _)| *t - restore)
        .expect("data came back to a direct path");
    // The hold is 2 s: not before, and not much after.
    assert!(
        back >= Duration::from_secs(2) && back <= Duration::from_secs(3),
        "{back:?}"
    );
    let gap = out
        .arrivals
        .windows(2)
        .filter(|w| w[1] >= at)
        .map(|w| w[1] - w[0])
        .max()
        .expect("arrivals");
    assert!(gap <= Duration::from_millis(400), "longest gap {gap:?}");
    assert_eq!(out.switches.len(), 3, "{:?}", out.switches);
}

#[test]
fn a_flapping_direct_path_does_not_pull_the_data_back_and_forth() {
    let out = cone_pair_with(
        Cut {
            at: Duration::from_secs(3),
            restore: Some(Duration::from_secs(9)),
            flap: Some(Duration::from_millis(500)),
        },
        Duration::from_secs(12),
    );
    // First path, onto the relay, back after the restore: nothing more
    // while it flaps.
    assert!(out.switches.len() <= 3, "{:?}", out.switches);
    assert_eq!(out.ends_relayed, Some(false));
}

#[test]
fn reflectors_classify_each_nat_as_configured() {
    let public = Side { nat: None };
    for side in all_sides() {
        let out = run_pair(
            1,
            &side,
            &public,
            PairOptions {
                duration: Duration::from_secs(2),
                relay: false,
                ..PairOptions::default()
            },
        )
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
                // The coordinator's own address reflects on two ports: an
                // address-dependent NAT maps both to one port.
                (Mapping::AddressDependent, Allocation::Preserving | Allocation::Sequential) => {
                    "address-dependent/sequential".to_owned()
                }
                (Mapping::AddressDependent, Allocation::Random) => {
                    "address-dependent/random".to_owned()
                }
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
            let out = run_pair(
                3,
                a,
                b,
                PairOptions {
                    extra_reflector: false,
                    relay: false,
                    ..options()
                },
            )
            .expect("the world builds");
            assert!(
                out.first_direct.is_some(),
                "{} ↔ {} with one reflector address",
                a.label(),
                b.label()
            );
        }
    }
}

#[test]
fn a_rebinding_or_renumbered_nat_loses_the_flow_for_less_than_a_second() {
    let at = Duration::from_secs(3);
    // A sequential NAT that rebinds or renumbers mid-flow ends on the
    // relay: alpha's pings to the failed direct path take the first new
    // mapping, below the ports the reflectors then let it predict.
    for (a, b, direct) in [
        ("eim/apdf/random", "eim/apdf/random", true),
        ("apdm/apdf/random", "apdm/apdf/random", false),
        ("apdm/apdf/sequential", "eim/apdf/preserving", false),
    ] {
        for renumber in [false, true] {
            let out = run_pair(
                1,
                &side(a),
                &side(b),
                PairOptions {
                    duration: Duration::from_secs(8),
                    rebind_at: (!renumber).then_some(at),
                    renumber_at: renumber.then_some(at),
                    ..PairOptions::default()
                },
            )
            .expect("the world builds");
            let what = format!("{a} ↔ {b}, renumbered {renumber}");
            let gap = longest_gap_after(&out.arrivals, at).expect("arrivals after the event");
            assert!(gap < Duration::from_secs(1), "{what}: gap {gap:?}");
            assert!(
                out.delivered + 60 >= out.sent,
                "{what}: {} of {}",
                out.delivered,
                out.sent
            );
            if direct {
                assert_eq!(
                    out.ends_relayed,
                    Some(false),
                    "{what}: back on a direct path"
                );
            }
        }
    }
}

/// The pairs birthday probing is for: a hard side (maps per destination,
/// random ports) against an easy side that filters by address and port
/// but keeps one known mapping towards the hard side's address (maps
/// independently of the destination, or per destination address with
/// predictable ports); and a hard side that maps per destination address
/// and filters by address at most against one that maps per destination
/// and port with predictable ports (each of its probes makes a new
/// mapping, and the answer to the probe that lands comes back through it).
fn birthday_pairs() -> Vec<(Side, Side)> {
    let sides = all_sides();
    let hard: Vec<&Side> = sides
        .iter()
        .filter(|s| {
            s.nat.as_ref().is_some_and(|n| {
                n.mapping != Mapping::EndpointIndependent && n.allocation == Allocation::Random
            })
        })
        .collect();
    let easy: Vec<&Side> = sides
        .iter()
        .filter(|s| {
            s.nat.as_ref().is_some_and(|n| {
                n.filtering == Filtering::AddressPortDependent
                    && (n.mapping == Mapping::EndpointIndependent
                        || n.allocation != Allocation::Random)
            })
        })
        .collect();
    assert_eq!((hard.len(), easy.len()), (6, 7));
    let meets = |h: &Side, e: &Side| {
        let (h, e) = (h.nat.as_ref(), e.nat.as_ref());
        h.zip(e).is_some_and(|(h, e)| {
            e.mapping != Mapping::AddressPortDependent
                || (h.mapping == Mapping::AddressDependent
                    && h.filtering != Filtering::AddressPortDependent)
        })
    };
    let pairs: Vec<(Side, Side)> = hard
        .iter()
        .flat_map(|h| easy.iter().map(move |e| ((*h).clone(), (*e).clone())))
        .filter(|(h, e)| meets(h, e))
        .collect();
    assert_eq!(pairs.len(), 34);
    pairs
}

#[test]
fn birthday_probing_takes_a_hard_side_direct_within_its_caps_and_changes_nothing_when_off() {
    let caps = BirthdayConfig::default();
    // Starts a second after the punch, spends its probes at the rate.
    let bound = Duration::from_secs(2)
        + Duration::from_secs_f64(f64::from(caps.probes) / f64::from(caps.rate_per_s));
    let mut failures = Vec::new();
    let mut slowest = Duration::ZERO;
    for (hard, easy) in birthday_pairs() {
        for seed in BIRTHDAY_SEEDS {
            let label = format!("{} ↔ {} (seed {seed})", hard.label(), easy.label());
            let run = |birthday| {
                run_pair(
                    seed,
                    &hard,
                    &easy,
                    PairOptions {
                        duration: BIRTHDAY_RUN,
                        birthday,
                        ..PairOptions::default()
                    },
                )
                .expect("the world builds")
            };
            let off = run(None);
            if off.first_direct.is_some() {
                failures.push(format!("{label}: direct without birthday probing"));
            }
            if off.birthday_probes != [0, 0] || off.birthday_sockets != [0, 0] {
                failures.push(format!("{label}: birthday packets while it is off"));
            }
            let on = run(Some(caps));
            match on.first_direct {
                Some(t) if t <= bound => slowest = slowest.max(t),
                other => failures.push(format!("{label}: first direct path {other:?}")),
            }
            if on.ends_relayed != Some(false) {
                failures.push(format!("{label}: data ends relayed {:?}", on.ends_relayed));
            }
            // Alpha is the hard side: temporary sockets, one ping to each
            // of the easy side's public candidates from each (its
            // reflexive address, or its predicted ports).
            let candidates = match easy.nat.as_ref().map(|n| n.mapping) {
                Some(Mapping::EndpointIndependent) => 1,
                _ => u64::from(PREDICTED_PORTS),
            };
            let [hard_probes, easy_probes] = on.birthday_probes;
            if on.birthday_sockets != [u64::from(caps.sockets), 0]
                || hard_probes > u64::from(caps.sockets) * candidates
                || easy_probes > u64::from(caps.probes)
                || easy_probes == 0
            {
                failures.push(format!(
                    "{label}: sockets {:?}, probes {:?} against caps {caps:?}",
                    on.birthday_sockets, on.birthday_probes
                ));
            }
            if on.delivered + 2 < on.sent {
                failures.push(format!(
                    "{label}: {} of {} delivered",
                    on.delivered, on.sent
                ));
            }
        }
    }
    println!("birthday probing: slowest first direct path {slowest:?} (bound {bound:?})");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_reflector_further_than_the_retry_interval_is_heard() {
    // 100 ms each access link way: 400 ms round trips to the coordinator,
    // more than the 250 ms between reflector requests. The answer to an
    // earlier request counts, so two cone NATs still meet directly.
    let cone = side("eim/eif/preserving");
    let out = run_pair(
        1,
        &cone,
        &cone,
        PairOptions {
            delay: Duration::from_millis(100),
            duration: Duration::from_secs(10),
            ..PairOptions::default()
        },
    )
    .expect("the world builds");
    assert_eq!(out.ends_relayed, Some(false), "{out:?}");
    assert!(
        out.first_direct.is_some_and(|t| t < Duration::from_secs(3)),
        "{out:?}"
    );
}

#[test]
fn long_access_links_still_carry_data_and_birthday_probing_still_meets() {
    // 150 ms each access link way: 1.2 s round trips through the relay,
    // longer than the liveness deadline's 750 ms cap and than 16 pings
    // 50 ms apart. Two symmetric NATs must still carry their data through
    // the relay, and birthday probing must still meet, though the easy
    // side's NAT (64 destinations a mapping) has forgotten the port a
    // probe went to by the time its answer comes back straight.
    let long = PairOptions {
        delay: Duration::from_millis(150),
        duration: Duration::from_secs(16),
        ..PairOptions::default()
    };
    let symmetric = side("apdm/apdf/random");
    let out = run_pair(1, &symmetric, &symmetric, long).expect("the world builds");
    assert_eq!(out.ends_relayed, Some(true), "{out:?}");
    // Data flows from 1 s; the relay path is up about 5 s after install
    // (3 s in): everything after that arrives.
    let after_up = out
        .arrivals
        .iter()
        .filter(|&&at| at > Duration::from_secs(7))
        .count();
    assert!(
        out.delivered * 10 >= out.sent * 6 && after_up > 1_000,
        "sent {}, delivered {}, after 7 s {after_up}",
        out.sent,
        out.delivered
    );
    let birthday = PairOptions {
        birthday: Some(BirthdayConfig::default()),
        ..long
    };
    let out = run_pair(
        1,
        &side("adm/eif/random"),
        &side("eim/apdf/random"),
        birthday,
    )
    .expect("the world builds");
    assert_eq!(out.ends_relayed, Some(false), "{out:?}");
}

#[test]
fn a_sprayer_that_learns_late_its_peer_is_hard_by_address_sprays_then() {
    // The only way the predictable side hears the hard side's NAT bit is
    // a relay, and the relay node starts 6 s in: the sprayer's birthday
    // timer fired long before and declined. It starts when the bit comes
    // (with `peer_said_hard` a no-op, this test fails: no probe is sent).
    let out = run_pair(
        1,
        &side("adm/eif/random"),
        &side("apdm/apdf/sequential"),
        PairOptions {
            relay: false,
            relay_node: true,
            relay_node_at: Some(Duration::from_secs(6)),
            duration: Duration::from_secs(16),
            birthday: Some(BirthdayConfig::default()),
            ..PairOptions::default()
        },
    )
    .expect("the world builds");
    assert!(out.birthday_probes[1] > 0, "{out:?}");
    assert_eq!(out.ends_relayed, Some(false), "{out:?}");
}

#[test]
fn a_side_that_sprays_from_new_mappings_does_so_only_against_a_peer_hard_by_address() {
    // A NAT that maps per destination and port with predictable ports
    // sprays from a new mapping per probe. Against a hard side that maps
    // per address (it says so in its pings) the spray meets; against one
    // that maps per port it cannot, and the predictable side sends none.
    let sprayer = side("apdm/apdf/sequential");
    for (hard, meets) in [("adm/eif/random", true), ("apdm/eif/random", false)] {
        let out = run_pair(
            1,
            &side(hard),
            &sprayer,
            PairOptions {
                duration: BIRTHDAY_RUN,
                birthday: Some(BirthdayConfig::default()),
                ..PairOptions::default()
            },
        )
        .expect("the world builds");
        let [hard_probes, sprayed] = out.birthday_probes;
        assert!(hard_probes > 0, "{hard}: the hard side probes");
        if meets {
            assert!(out.first_direct.is_some(), "{hard}: {out:?}");
            assert!(sprayed > 0, "{hard}: {out:?}");
        } else {
            assert_eq!(sprayed, 0, "{hard}: sprayed against a peer hard by port");
        }
    }
}

#[test]
fn birthday_probes_keep_their_rate_and_stop_with_the_attempt() {
    // One temporary socket: the easy side most likely misses it (and the
    // hard side's own mesh mapping towards it) and probes until its rate
    // and the attempt's lifetime stop it; if it hits, it stops there.
    let caps = BirthdayConfig {
        sockets: 1,
        probes: 2_048,
        rate_per_s: 100,
        ..BirthdayConfig::default()
    };
    let mut missed = 0;
    let (hard, easy) = birthday_pairs().remove(0);
    // Pairs of one seed draw the same ports: vary the seed instead.
    for seed in 1..=4 {
        let out = run_pair(
            seed,
            &hard,
            &easy,
            PairOptions {
                duration: caps.after + caps.lifetime + Duration::from_secs(4),
                birthday: Some(caps),
                ..PairOptions::default()
            },
        )
        .expect("the world builds");
        let label = format!("{} ↔ {} (seed {seed})", hard.label(), easy.label());
        let [hard_probes, easy_probes] = out.birthday_probes;
        let rate = u64::from(caps.rate_per_s);
        // Probing runs at most from a second after the install to the
        // end of the attempt, or to the hit.
        let span = out.first_direct.unwrap_or(caps.after + caps.lifetime);
        assert!(
            easy_probes <= rate * span.as_millis() as u64 / 1_000 + 1,
            "{label}: {easy_probes} probes within {span:?} at {rate} a second"
        );
        assert_eq!(out.birthday_sockets, [1, 0], "{label}");
        assert_eq!(hard_probes, 1, "{label}: one ping per socket and candidate");
        if out.first_direct.is_none() {
            missed += 1;
            let by_rate = rate * caps.lifetime.as_secs();
            assert!(
                easy_probes >= by_rate * 9 / 10,
                "{label}: only {easy_probes} probes in the attempt"
            );
            assert_eq!(out.ends_relayed, Some(true), "{label}: the relay carries");
        }
    }
    assert!(missed > 0, "every attempt hit one socket");
}
