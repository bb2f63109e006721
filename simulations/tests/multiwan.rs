//! Issue 6, item 5: a real TCP flow (smoltcp) from a node with two uplinks,
//! the cases a–e (`scenario::multiwan::CASES`), one seed each.
//!
//! Every test asserts what any correct data plane must do, and what holds
//! with the data plane as it is: the receiver reads exactly the sender's
//! stream and no data goes on a failed or probing path (the scenario's
//! invariants), the per-path counters add up to what was carried, a dead
//! uplink stops carrying data and ACKs within a second (DESIGN §6), a
//! backup uplink carries no data while alpha has an active primary path,
//! and a backup or metered uplink carries the flow once the primary is dead.
//!
//! The targets for the scheduler are in [`SCHEDULER_TARGETS`],
//! except b's, which compares two runs (`b_a_fast_short_link_and_a_slow_long_one`).
//! Each test evaluates, prints and asserts its case's targets (see them
//! with `cargo test -p transitloom-simulations --test multiwan --
//! --nocapture`).

use transitloom_proto_core::dataplane::DEFAULT_REORDER_BOUND;
use transitloom_simulations::scenario::multiwan::{Case, CASES, SCENARIO_NAME};
use transitloom_simulations::scenario::{self, Summary};

/// A target the issue sets for the scheduler, checked on one case's summary.
struct Target {
    /// The case it is checked on.
    case: &'static str,
    /// What it asks, in the words where it has them.
    what: &'static str,
    check: fn(&Summary) -> Result<(), String>,
}

/// The targets, per case.
const SCHEDULER_TARGETS: &[Target] = &[
    Target {
        case: "a",
        what: "TCP goodput at least 90 % of the sum of the links",
        check: |s| at_least(s, "goodput / sum of links", 90.0),
    },
    Target {
        case: "b-fit",
        what: "with a window link 1 holds, TCP goodput at least 95 % of the best link",
        check: |s| at_least(s, "goodput / best link", 95.0),
    },
    Target {
        case: "c",
        what: "link 2 carried at least 1 MB in the second before the cut, and data left it within 300 ms (RTT <= 50 ms)",
        check: |s| {
            at_least(s, "uplink 2 data in the second before the cut", 1e6)?;
            at_most(s, "uplink 2 data stopped after cut", 300.0)
        },
    },
    Target {
        case: "c",
        what: "the peer's ACKs (if any went on link 2) left it within 300 ms",
        check: |s| at_most(s, "uplink 2 acks stopped after cut", 300.0),
    },
    Target {
        case: "d",
        what: "the lossy link is de-weighted: its share of data at most half the clean one's",
        check: |s| {
            let (lossy, clean) = (
                number(s, "uplink 2 data share"),
                number(s, "uplink 1 data share"),
            );
            check(
                lossy <= clean / 2.0,
                format!("lossy {lossy} % against clean {clean} %"),
            )
        },
    },
    Target {
        case: "e-backup",
        what: "the peer sends nothing to the backup uplink while the primary is active (beta must learn alpha's policy)",
        check: |s| at_most(s, "uplink 2 ack bytes while uplink 1 active", 0.0),
    },
    Target {
        case: "e-metered",
        what: "the metered uplink carries no bulk (at most 1 % of the data) while the unmetered one suffices",
        check: |s| {
            let share = 100.0 * number(s, "uplink 2 data while uplink 1 active")
                / number(s, "data bytes carried (alpha's ingress)").max(1.0);
            check(share <= 1.0, format!("{share:.2} % of the data"))
        },
    },
    Target {
        case: "e-metered",
        what: "the peer sends at most 1 % of the ACK bytes to the metered uplink while the unmetered one is active (beta must learn alpha's policy)",
        check: |s| {
            let acks = number(s, "uplink 1 ack bytes") + number(s, "uplink 2 ack bytes");
            let share = 100.0 * number(s, "uplink 2 ack bytes while uplink 1 active") / acks.max(1.0);
            check(share <= 1.0, format!("{share:.2} % of the ACK bytes"))
        },
    },
];

fn check(ok: bool, detail: String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(detail)
    }
}

fn at_least(s: &Summary, row: &str, min: f64) -> Result<(), String> {
    let value = number(s, row);
    check(
        value >= min,
        format!("{row}: {value}, wanted at least {min}"),
    )
}

fn at_most(s: &Summary, row: &str, max: f64) -> Result<(), String> {
    let value = number(s, row);
    check(
        value <= max,
        format!("{row}: {value}, wanted at most {max}"),
    )
}

/// The number a row starts with ("48.54 Mbit/s", "97.1 %", "612.0 ms").
fn number(summary: &Summary, row: &str) -> f64 {
    let value = summary.get(row).unwrap_or_else(|| panic!("no row {row:?}"));
    value
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{row}: {value}"))
}

fn case(name: &str) -> &'static Case {
    CASES
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no case {name}"))
}

/// Runs a case and checks what every run must satisfy.
fn run(name: &str, seed: u64) -> Summary {
    let summary = case(name).run(seed).unwrap();
    assert!(
        summary.violations.is_empty(),
        "case {name}, seed {seed}: {:?}",
        summary.violations
    );
    assert_eq!(summary.get("corrupt bytes"), Some("0"), "case {name}");
    within_the_reorder_bound(&summary, name);
    assert!(number(&summary, "bytes delivered") > 0.0, "case {name}");
    // Every datagram taken in at alpha's ingress left on some path, and the
    // per-path counters account for all of it.
    let per_path =
        number(&summary, "uplink 1 data bytes") + number(&summary, "uplink 2 data bytes");
    assert_eq!(
        per_path,
        number(&summary, "data bytes carried (alpha's ingress)"),
        "case {name}"
    );
    summary
}

/// No packet of the flow arrived behind more packets than the reorder
/// bound (the scheduler predicts arrivals; this is what happened).
fn within_the_reorder_bound(summary: &Summary, name: &str) {
    let extent = number(summary, "reorder extent");
    assert!(
        extent <= f64::from(DEFAULT_REORDER_BOUND),
        "case {name}: a packet arrived {extent} packets late"
    );
}

/// Prints the case's targets, and asserts them.
fn scheduler_targets(name: &str, summary: &Summary) {
    let mut failed = Vec::new();
    for target in SCHEDULER_TARGETS.iter().filter(|t| t.case == name) {
        let result = (target.check)(summary);
        println!(
            "case {name}: target {}: {}",
            target.what,
            match &result {
                Ok(()) => "met".to_owned(),
                Err(why) => format!("NOT MET ({why})"),
            }
        );
        if let Err(why) = result {
            failed.push(format!("{}: {why}", target.what));
        }
    }
    println!("case {name}:\n{}", summary.table());
    assert!(failed.is_empty(), "case {name}: {failed:#?}");
}

/// A dead uplink stops carrying data and ACKs within a second of its cut
/// (DESIGN §6: "a dead path stops carrying data within a second").
fn leaves_the_dead_link_within_a_second(summary: &Summary, link: u8) {
    for what in ["data", "acks"] {
        let row = format!("uplink {link} {what} stopped after cut");
        let after = number(summary, &row);
        assert!(after <= 1_000.0, "{row}: {after} ms");
    }
}

/// Once link 1 is dead, uplink 2 (backup or metered) carries the flow back
/// to 80 % of its goodput before the cut within the run.
fn the_flow_recovers_on_link_2(summary: &Summary) {
    let row = "recovered after link 1 cut";
    let recovered = summary.get(row).unwrap_or_else(|| panic!("no row {row:?}"));
    assert_ne!(recovered, "never", "uplink 2 never carried the flow");
}

#[test]
fn a_two_matched_links() {
    let summary = run("a", 1);
    scheduler_targets("a", &summary);
}

#[test]
fn b_a_fast_short_link_and_a_slow_long_one() {
    let summary = run("b", 1);
    scheduler_targets("b", &summary);
    // The target, "goodput at least the best single link": against
    // the same TCP over the best link alone, in the same run (its anchor,
    // naive striping, falls below what the best link alone gives). With a
    // window sized for both links, smoltcp (no SACK, no HyStart) overflows
    // link 1 alone in slow start and crawls back through timeouts. Over
    // both, the slow link takes what overflows the fast one's queue once
    // the fast one's capacity is measured: the flow gets at least twice
    // what it gets over link 1 alone, and link 2 carries part of it.
    let alone = run("b-one-link", 1);
    let (both, one) = (number(&summary, "goodput"), number(&alone, "goodput"));
    assert!(both >= one * 2.0, "{both} Mbit/s against {one} alone");
    println!(
        "case b: target TCP goodput at least the best single link: met ({both} Mbit/s; \
         the same TCP over link 1 alone: {one} Mbit/s)"
    );
    // Reported, not a target at this window: the goodput against link 1's
    // rate. No scheduler that keeps arrivals in order holds this window
    // without loss: link 2 is used once link 1's queue is 30 ms (the delay
    // difference) of its 42, so no packet takes more than 63 ms one way,
    // and at 150 Mbit/s at most 1.6 MB is in flight with the ACKs back
    // over link 1 (2.1 MB were they all over link 2), against a 2.29 MB
    // window; and this TCP recovers from a loss in slow start through
    // timeouts. Where it fills link 1 alone, b gets at least link 1's rate
    // (`b_gets_at_least_link_1_alone_at_each_window`). Here it is held
    // above half of it, a floor against regressions (56.8 % now).
    let of_link_1 = number(&summary, "goodput / best link");
    println!("case b: {of_link_1} % of link 1's rate");
    assert!(of_link_1 >= 50.0, "{of_link_1} % of link 1's rate");
    let share = number(&summary, "uplink 2 data share");
    assert!(share >= 5.0, "link 2 carried {share} % of the data");
    // With a window link 1 can hold, the flow gets link 1's whole rate: the
    // slow link does not disturb it.
    let fit = run("b-fit", 1);
    scheduler_targets("b-fit", &fit);
}

/// Case b with `extra` parameters added, as a case of its own.
fn b_with(extra: &[&'static str]) -> Summary {
    let params: Vec<&'static str> = case("b").params.iter().chain(extra).copied().collect();
    let b = Case {
        name: "b",
        about: "b with other parameters",
        params: Box::leak(params.into_boxed_slice()),
    };
    let summary = b.run(1).unwrap();
    assert!(summary.violations.is_empty(), "{:?}", summary.violations);
    within_the_reorder_bound(&summary, &format!("b with {extra:?}"));
    summary
}

#[test]
fn b_gets_at_least_link_1_alone_at_each_window() {
    // Link 1 alone carries a window of 0.5 whole (97 Mbit/s), and
    // overflows in slow start from 0.6 on (48 Mbit/s at 0.75, 8 at 1.2).
    // Over both links the flow must not do worse than over link 1 alone at
    // any of them: at 0.5, a plan that took a lagging measured queue for
    // the truth sent packets to link 2 that link 1 would have delivered
    // sooner, and the flow got 22 Mbit/s.
    for (window, fills_link_1) in [
        ("window_bdp=0.5", true),
        ("window_bdp=0.75", false),
        ("window_bdp=1.2", false),
    ] {
        let both = number(&b_with(&[window]), "goodput");
        let alone = number(&b_with(&[window, "cut2_at_s=0.5"]), "goodput");
        println!("case b, {window}: {both} Mbit/s; over link 1 alone: {alone} Mbit/s");
        assert!(
            both >= alone * 0.97,
            "{window}: {both} Mbit/s against {alone} alone"
        );
        // Where the same TCP fills link 1 alone, the flow over both gets
        // at least link 1's rate: the best single link, whatever the TCP.
        if fills_link_1 {
            let link_1 = link_1_mbps();
            assert!(alone >= 0.95 * link_1, "{window}: {alone} alone");
            assert!(
                both >= link_1,
                "{window}: {both} Mbit/s, below link 1's {link_1}"
            );
        }
    }
}

/// Case b's faster link, Mbit/s, from its parameters.
fn link_1_mbps() -> f64 {
    case("b")
        .params
        .iter()
        .find_map(|p| p.strip_prefix("rate1_mbps="))
        .and_then(|v| v.parse().ok())
        .expect("case b sets rate1_mbps")
}

#[test]
fn c_a_link_dies_mid_transfer() {
    let summary = run("c", 1);
    leaves_the_dead_link_within_a_second(&summary, 2);
    // The stall and the recovery are reported.
    assert!(summary.get("stall after link 2 cut").is_some());
    assert!(summary.get("recovered after link 2 cut").is_some());
    scheduler_targets("c", &summary);
}

#[test]
fn d_five_percent_loss_on_one_link() {
    let summary = run("d", 1);
    scheduler_targets("d", &summary);
    // The lossy link must not cost the flow what the clean one alone
    // gives it: before a new path that loses one of its first pings was
    // held back until its loss was known, d got 2.3 Mbit/s against 26.3.
    let alone = run("d-one-link", 1);
    let (both, one) = (number(&summary, "goodput"), number(&alone, "goodput"));
    assert!(
        both >= 0.9 * one,
        "{both} Mbit/s beside the lossy link, {one} over the clean one alone"
    );
}

#[test]
fn e_a_backup_uplink_takes_over_when_the_primary_dies() {
    let summary = run("e-backup", 1);
    // Alpha knows its own policy: nothing on the backup while a primary
    // path is active.
    assert_eq!(
        summary.get("uplink 2 data while uplink 1 active"),
        Some("0"),
        "data on the backup uplink"
    );
    leaves_the_dead_link_within_a_second(&summary, 1);
    the_flow_recovers_on_link_2(&summary);
    scheduler_targets("e-backup", &summary);
}

#[test]
fn e_a_metered_uplink_takes_over_when_the_unmetered_one_dies() {
    let summary = run("e-metered", 1);
    leaves_the_dead_link_within_a_second(&summary, 1);
    the_flow_recovers_on_link_2(&summary);
    scheduler_targets("e-metered", &summary);
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let s = scenario::find(SCENARIO_NAME).unwrap();
    let params = [
        "duration_s=3".to_owned(),
        "cut2_at_s=2".to_owned(),
        "restore2_at_s=2.5".to_owned(),
    ];
    let one = s.run(5, &params).unwrap();
    let two = s.run(5, &params).unwrap();
    assert_eq!(one.trace_hash, two.trace_hash);
    assert_eq!(one.rows, two.rows);
    assert_ne!(one.trace_hash, s.run(6, &params).unwrap().trace_hash);
}

#[test]
fn a_restore_needs_an_earlier_cut() {
    let s = scenario::find(SCENARIO_NAME).unwrap();
    for params in [
        vec!["restore2_at_s=3".to_owned()],
        vec!["cut1_at_s=4".to_owned(), "restore1_at_s=3".to_owned()],
    ] {
        let err = s.run(1, &params).unwrap_err().to_string();
        assert!(err.contains("a restore needs an earlier cut"), "{err}");
    }
}

#[test]
fn tl_sim_table_is_only_for_a_scenario_with_cases() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tl-sim"))
        .args(["table", "tcp-mesh"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has no table"), "{stderr}");
    assert!(
        stderr.contains("multiwan") && stderr.contains("nat-matrix"),
        "{stderr}"
    );
}
