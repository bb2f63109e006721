//! The data plane in the simulator under faults: loss, duplication,
//! reordering, NAT rebinding and withdrawal, across many seeds, with the
//! scenario's invariants (nothing altered, nothing delivered after
//! withdrawal, tables bounded) checked after every event.

use transitloom_simulations::scenario;

fn percent(summary: &scenario::Summary, row: &str) -> f64 {
    let value = summary.get(row).unwrap_or_else(|| panic!("no row {row:?}"));
    value.trim_end_matches(" %").parse().unwrap()
}

#[test]
fn invariants_hold_across_seeds_under_faults_rebinding_and_withdrawal() {
    let s = scenario::find("mesh-udp").unwrap();
    let params: Vec<String> = [
        "nat=symmetric",
        "rebind_at_s=3",
        "withdraw_at_s=5",
        "duration_s=6",
        "loss=0.02",
        "duplicate=0.02",
        "reorder=0.05",
        "rate_mbps=2",
    ]
    .map(String::from)
    .to_vec();
    for seed in 1..=8 {
        let summary = s.run(seed, &params).unwrap();
        assert!(
            summary.violations.is_empty(),
            "seed {seed}: {:?}",
            summary.violations
        );
        assert_eq!(summary.get("altered"), Some("0"), "seed {seed}");
        let again = summary
            .get("beta validated a new path after rebind in")
            .unwrap();
        let again_ms: f64 = again
            .trim_end_matches(" ms")
            .parse()
            .unwrap_or_else(|_| panic!("seed {seed}: {again}"));
        // One probe interval (250 ms) plus a round trip, at most.
        assert!(
            again_ms < 250.0 + 100.0,
            "seed {seed}: revalidated after {again_ms} ms"
        );
    }
}

#[test]
fn the_delivered_share_follows_the_link_loss() {
    let s = scenario::find("mesh-udp").unwrap();
    let params: Vec<String> = [
        "loss=0.05",
        "duplicate=0",
        "reorder=0",
        "duration_s=20",
        "rate_mbps=2",
    ]
    .map(String::from)
    .to_vec();
    let summary = s.run(3, &params).unwrap();
    // Two lossy links in series (alpha's upload, beta's download): 0.95^2.
    let share = percent(&summary, "delivered (unique)") / 100.0;
    assert!((share - 0.9025).abs() < 0.015, "delivered share {share}");
    assert_eq!(summary.get("duplicates / reordered"), Some("0 / 0"));
}
