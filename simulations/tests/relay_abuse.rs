//! The relay under abuse in virtual time, through the simulated network:
//! two endpoints' data crosses unchanged while an attacker's floods,
//! guessed-key binds, replays, junk and binds for a released allocation get
//! nothing through; nothing crosses before both legs are bound or after the
//! revoke. Several seeds, with loss and jitter.

use transitloom_simulations::scenario;

fn count(summary: &scenario::Summary, row: &str) -> u64 {
    let value = summary.get(row).unwrap_or_else(|| panic!("no row {row:?}"));
    value.parse().unwrap_or_else(|_| panic!("{row}: {value}"))
}

#[test]
fn an_attacker_gets_nothing_through_a_relay_that_carries_its_endpoints() {
    let s = scenario::find("relay-abuse").unwrap();
    for seed in 1..=6 {
        let params = ["loss=0.02".to_owned(), "jitter_ms=5".to_owned()];
        let summary = s.run(seed, &params).unwrap();
        assert!(
            summary.violations.is_empty(),
            "seed {seed}: {:?}",
            summary.violations
        );
        // Both ways carried most of what was sent while both legs were
        // bound (about 6 s of 200 payloads a second).
        for name in ["alpha", "beta"] {
            let received = count(&summary, &format!("{name} payloads received"));
            assert!(received > 1_000, "seed {seed}: {name} received {received}");
            assert_eq!(
                count(
                    &summary,
                    &format!("{name} payloads received after the revoke")
                ),
                0
            );
        }
        assert_eq!(
            summary.get("alpha's leg moved with its fresh bind"),
            Some("true"),
            "seed {seed}"
        );
        // Every kind of abuse reached the relay and was dropped.
        for reason in [
            "unknown-source",
            "unauthenticated",
            "peer-unbound",
            "bind-replayed",
        ] {
            let dropped = count(&summary, &format!("relay dropped: {reason}"));
            assert!(dropped > 0, "seed {seed}: nothing dropped as {reason}");
        }
        assert_eq!(
            count(&summary, "attacker received other than its own cookie"),
            0,
            "seed {seed}"
        );
        assert_eq!(
            summary.get("attacker answered after its allocation was released"),
            Some("false")
        );
    }
}

#[test]
fn the_relay_abuse_run_is_deterministic() {
    let s = scenario::find("relay-abuse").unwrap();
    let params = ["duration_s=5".to_owned(), "revoke_at_s=4".to_owned()];
    let one = s.run(9, &params).unwrap();
    let two = s.run(9, &params).unwrap();
    assert_eq!(one.trace_hash, two.trace_hash);
    assert_ne!(s.run(10, &params).unwrap().trace_hash, one.trace_hash);
}
