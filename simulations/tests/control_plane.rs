//! The control plane end to end in virtual time, through the simulated
//! network: enrollment, tokens, mutual consent, candidates, data, and a hard
//! revoke whose effects must land within a second. Several seeds, with loss.

use transitloom_simulations::scenario;

fn millis(summary: &scenario::Summary, row: &str) -> f64 {
    let value = summary.get(row).unwrap_or_else(|| panic!("no row {row:?}"));
    value
        .trim_end_matches(" ms")
        .parse()
        .unwrap_or_else(|_| panic!("{row}: {value}"))
}

#[test]
fn nodes_enroll_associate_carry_data_and_a_revoke_lands_within_a_second() {
    let s = scenario::find("control-plane").unwrap();
    for seed in 1..=3 {
        let params = [
            "loss=0.02".to_owned(),
            "duration_s=10".to_owned(),
            "revoke_at_s=7".to_owned(),
        ];
        let summary = s.run(seed, &params).unwrap();
        assert!(
            summary.violations.is_empty(),
            "seed {seed}: {:?}",
            summary.violations
        );
        for node in ["alpha", "beta"] {
            let installed = millis(&summary, &format!("{node} association installed at"));
            assert!(
                installed < 3_000.0,
                "seed {seed}: {node} installed at {installed} ms"
            );
        }
        let delivered: u64 = summary.get("datagrams delivered").unwrap().parse().unwrap();
        assert!(
            delivered > 500,
            "seed {seed}: only {delivered} datagrams crossed"
        );
        assert_eq!(summary.get("altered"), Some("0"));
        for row in [
            "alpha withdrew the association after the revoke in",
            "beta told it is revoked after",
            "last datagram delivered after the revoke",
        ] {
            let after = millis(&summary, row);
            assert!(after < 1_000.0, "seed {seed}: {row} {after} ms");
        }
    }
}

#[test]
fn the_control_plane_run_is_deterministic() {
    let s = scenario::find("control-plane").unwrap();
    let params = ["duration_s=5".to_owned(), "revoke_at_s=4".to_owned()];
    let one = s.run(5, &params).unwrap();
    let two = s.run(5, &params).unwrap();
    assert_eq!(one.trace_hash, two.trace_hash);
    assert_eq!(one.rows, two.rows);
    assert_ne!(one.trace_hash, s.run(6, &params).unwrap().trace_hash);
}

#[test]
fn a_coordinator_restart_keeps_data_flowing_and_nodes_reassociate_from_the_log() {
    let s = scenario::find("control-plane").unwrap();
    let params = [
        "restart_at_s=6".to_owned(),
        "revoke_at_s=0".to_owned(),
        "duration_s=40".to_owned(),
    ];
    let summary = s.run(2, &params).unwrap();
    assert!(summary.violations.is_empty(), "{:?}", summary.violations);
    // The data plane does not need the coordinator: 2 Mbit/s of 1000-byte
    // datagrams is 250 per second, minus ~2% link loss.
    let during: f64 = summary
        .get("datagrams delivered in the 5 s after the restart")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        during > 0.9 * 1_250.0,
        "only {during} datagrams in the 5 s after the restart"
    );
    // Sessions notice the dead coordinator within the idle bound (15 s) and
    // reconnect with backoff; the replayed registry admits them again.
    let again = millis(&summary, "alpha re-associated after the restart in");
    assert!(again < 30_000.0, "re-associated after {again} ms");
}

#[test]
fn a_reconnect_storm_after_a_coordinator_restart_recovers_within_60_s() {
    let s = scenario::find("reconnect-storm").unwrap();
    // 100 nodes against 5 handshakes per second: the same pressure as 1,000
    // against 50 (the default), at a tenth of the cost.
    let params = ["nodes=100".to_owned(), "handshakes_per_s=5".to_owned()];
    let summary = s.run(1, &params).unwrap();
    assert!(summary.violations.is_empty(), "{:?}", summary.violations);
    assert_eq!(summary.get("nodes admitted again"), Some("100"));
    let seconds = |row: &str| -> f64 {
        let value = summary.get(row).unwrap_or_else(|| panic!("no row {row:?}"));
        value.trim_end_matches(" s").parse().unwrap()
    };
    let (half, all) = (
        seconds("50% admitted again after"),
        seconds("100% admitted again after"),
    );
    assert!(
        half <= all && all <= 60.0,
        "50% at {half} s, all at {all} s"
    );
    // The limit was binding: some attempts were refused, and no second saw
    // more session starts than the limit's burst plus its rate.
    let refused: u64 = summary
        .get("attempts refused by the limit after the restart")
        .unwrap()
        .parse()
        .unwrap();
    assert!(refused > 0, "the storm never met the limit");
    let peak: u64 = summary
        .get("peak session starts per second after the restart")
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(peak <= 10, "{peak} session starts in one second");
}

#[test]
fn a_thousand_nodes_reconnect_within_60_s_with_the_default_parameters() {
    let s = scenario::find("reconnect-storm").unwrap();
    let summary = s.run(1, &[]).unwrap();
    assert!(summary.violations.is_empty(), "{:?}", summary.violations);
    assert_eq!(summary.get("nodes admitted again"), Some("1000"));
}

#[test]
fn a_storm_that_cannot_recover_in_time_fails_the_run() {
    // One handshake per second cannot readmit 100 nodes within 60 s.
    let s = scenario::find("reconnect-storm").unwrap();
    let params = [
        "nodes=100".to_owned(),
        "handshakes_per_s=1".to_owned(),
        "restart_at_s=200".to_owned(),
        "duration_s=270".to_owned(),
    ];
    let summary = s.run(1, &params).unwrap();
    assert!(
        summary
            .violations
            .iter()
            .any(|v| v.contains("never admitted again") || v.contains("later than 60 s")),
        "{:?}",
        summary.violations
    );
}

#[test]
fn the_reconnect_storm_is_deterministic() {
    let s = scenario::find("reconnect-storm").unwrap();
    let params = [
        "nodes=20".to_owned(),
        "handshakes_per_s=2".to_owned(),
        "restart_at_s=30".to_owned(),
        "duration_s=90".to_owned(),
    ];
    let one = s.run(5, &params).unwrap();
    let two = s.run(5, &params).unwrap();
    assert_eq!(one.trace_hash, two.trace_hash);
    assert_eq!(one.rows, two.rows);
    assert_ne!(one.trace_hash, s.run(6, &params).unwrap().trace_hash);
}

fn secs(summary: &scenario::Summary, row: &str) -> f64 {
    let value = summary.get(row).unwrap_or_else(|| panic!("no row {row:?}"));
    value
        .trim_end_matches(" s")
        .parse()
        .unwrap_or_else(|_| panic!("{row}: {value}"))
}

#[test]
fn a_node_cut_off_from_the_coordinator_is_dropped_by_its_peer_when_its_token_expires() {
    let s = scenario::find("partition-expiry").unwrap();
    for seed in 1..=3 {
        let summary = s.run(seed, &[]).unwrap();
        assert!(
            summary.violations.is_empty(),
            "seed {seed}: {:?}",
            summary.violations
        );
        // The data plane outlives the control path until the expiry...
        let kept: u64 = summary
            .get("datagrams delivered between the cut and the expiry")
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            kept > 2_000,
            "seed {seed}: only {kept} datagrams after the cut"
        );
        // ...and stops at it: the peer is told at once.
        let expiry = secs(&summary, "alpha's token expires at");
        assert!(
            (59.0..=61.0).contains(&expiry),
            "seed {seed}: expiry {expiry}"
        );
        let after = secs(&summary, "beta withdrew it after the expiry in");
        assert!(
            after < 1.0,
            "seed {seed}: withdrawn {after} s after the expiry"
        );
        assert_eq!(
            summary.get("datagrams delivered later than 1 s after the expiry"),
            Some("0")
        );
        assert_eq!(
            summary.get("admissions lapsed at the coordinator"),
            Some("1")
        );
    }
}

#[test]
fn a_healed_partition_brings_a_fresh_token_and_the_association_back() {
    let s = scenario::find("partition-expiry").unwrap();
    let params = ["heal_at_s=75".to_owned(), "duration_s=90".to_owned()];
    let summary = s.run(4, &params).unwrap();
    assert!(summary.violations.is_empty(), "{:?}", summary.violations);
    // The node retries with backoff capped at 30 s, so it is back within one
    // cap plus the handshake.
    let again = secs(&summary, "alpha associated again after the heal in");
    assert!(again < 35.0, "re-associated after {again} s");
    let after: u64 = summary
        .get("datagrams delivered after the heal")
        .unwrap()
        .parse()
        .unwrap();
    assert!(after > 0, "no data after the heal");
}

#[test]
fn the_partition_expiry_run_is_deterministic() {
    let s = scenario::find("partition-expiry").unwrap();
    let params = ["token_lifetime_s=40".to_owned(), "duration_s=50".to_owned()];
    let one = s.run(5, &params).unwrap();
    let two = s.run(5, &params).unwrap();
    assert_eq!(one.trace_hash, two.trace_hash);
    assert_eq!(one.rows, two.rows);
    assert_ne!(one.trace_hash, s.run(6, &params).unwrap().trace_hash);
}

#[test]
fn a_coordinator_cluster_survives_a_cut_and_a_revoke_at_another_coordinator_stops_data() {
    let s = scenario::find("coordinator-cluster").unwrap();
    let mut leader_was_cut = false;
    for seed in 1..=8 {
        let summary = s.run(seed, &[]).unwrap();
        assert!(
            summary.violations.is_empty(),
            "seed {seed}: {:?}",
            summary.violations
        );
        // The nodes find the next coordinator, which knows them from the
        // shared log, within their dead-session bound and one attempt.
        let moved = secs(&summary, "alpha live at another coordinator after");
        assert!(moved < 20.0, "seed {seed}: moved after {moved} s");
        // The revoke, asked at the third coordinator, commits through the
        // majority and is pushed by the coordinator holding the sessions.
        let answered = secs(&summary, "revoke answered after");
        assert!(answered < 1.0, "seed {seed}: answered after {answered} s");
        leader_was_cut |= summary.get("terms with a leader") == Some("2");
    }
    assert!(leader_was_cut, "no seed cut the leader itself");
}

#[test]
fn the_coordinator_cluster_run_is_deterministic() {
    let s = scenario::find("coordinator-cluster").unwrap();
    let one = s.run(9, &[]).unwrap();
    let two = s.run(9, &[]).unwrap();
    assert_eq!(one.trace_hash, two.trace_hash);
    assert_eq!(one.rows, two.rows);
}
