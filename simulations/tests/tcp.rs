//! Real TCP (smoltcp) through the mesh, the way WireGuard's packets cross
//! it, against the same flow sent directly over an identical link: goodput
//! on a clean link, the mesh's cost, an intact stream under loss,
//! reordering and duplication, and determinism.

use transitloom_simulations::scenario::{self, Summary};

fn run(seed: u64, params: &[&str]) -> Summary {
    let params: Vec<String> = params.iter().map(|p| (*p).to_owned()).collect();
    let summary = scenario::find("tcp-mesh")
        .unwrap()
        .run(seed, &params)
        .unwrap();
    assert!(
        summary.violations.is_empty(),
        "seed {seed} {params:?}: {:?}",
        summary.violations
    );
    summary
}

/// The number a row starts with ("48.54 Mbit/s", "97.1 %", "1060.0 ms").
fn number(summary: &Summary, row: &str) -> f64 {
    let value = summary.get(row).unwrap_or_else(|| panic!("no row {row:?}"));
    value
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{row}: {value}"))
}

#[test]
fn a_clean_link_is_filled_and_the_mesh_costs_nothing_measurable() {
    for seed in [1, 2] {
        let summary = run(seed, &[]);
        for flow in ["mesh", "direct"] {
            // The ceiling is 1340/1380 = 97.1 % (TCP/IP headers in a 1380-byte
            // packet); measured: 97.1 % for both.
            let share = number(&summary, &format!("{flow} goodput / link rate"));
            assert!(
                share >= 90.0,
                "seed {seed}: {flow} at {share} % of the link"
            );
            assert_eq!(
                summary.get(&format!("{flow} corrupt bytes")),
                Some("0"),
                "seed {seed}"
            );
        }
        let ratio = number(&summary, "mesh / direct goodput");
        assert!(
            (98.0..=102.0).contains(&ratio),
            "seed {seed}: mesh at {ratio} % of direct"
        );
        // Goodput over time, per flow, for --plot.
        assert!(summary
            .series
            .iter()
            .any(|(name, _, _)| name == "mesh (Mbit/s)"));
        assert!(summary
            .series
            .iter()
            .any(|(name, _, _)| name == "direct (Mbit/s)"));
    }
}

#[test]
fn with_one_percent_loss_the_whole_stream_arrives_intact() {
    for seed in 1..=3 {
        let summary = run(seed, &["loss=0.01", "bytes=2000000", "duration_s=20"]);
        for flow in ["mesh", "direct"] {
            assert_eq!(
                summary.get(&format!("{flow} bytes delivered")),
                Some("2000000"),
                "seed {seed}: {flow}"
            );
            assert_eq!(
                summary.get(&format!("{flow} corrupt bytes")),
                Some("0"),
                "seed {seed}: {flow}"
            );
            let done = number(&summary, &format!("{flow} stream complete at"));
            assert!(done < 20_000.0, "seed {seed}: {flow} complete at {done} ms");
            // The loss was real: TCP had to repair it.
            let resent = number(&summary, &format!("{flow} retransmitted segments"));
            assert!(resent > 0.0, "seed {seed}: {flow} retransmitted nothing");
        }
    }
}

#[test]
fn reordering_and_duplication_leave_the_stream_intact() {
    let summary = run(
        4,
        &[
            "reorder=0.02",
            "duplicate=0.02",
            "bytes=1000000",
            "duration_s=20",
        ],
    );
    for flow in ["mesh", "direct"] {
        assert_eq!(
            summary.get(&format!("{flow} bytes delivered")),
            Some("1000000"),
            "{flow}"
        );
        assert_eq!(summary.get(&format!("{flow} corrupt bytes")), Some("0"));
    }
}

#[test]
fn the_tcp_run_is_deterministic() {
    let params = ["duration_s=4", "loss=0.005"];
    let one = run(7, &params);
    let two = run(7, &params);
    assert_eq!(one.trace_hash, two.trace_hash);
    assert_eq!(one.rows, two.rows);
    assert_ne!(one.trace_hash, run(8, &params).trace_hash);
}
