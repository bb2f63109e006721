//! `tlctl quickstart`'s engine, run short: every flow crosses the mesh
//! unaltered, alpha's traffic fails over to its second uplink within a
//! second of the first being taken out of service, the crashed node comes
//! back on the same ingress ports, and the scratch directory is gone
//! afterwards.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use transitloom_testbed::quickstart::{run, Options};
use transitloom_testbed::Binaries;

#[test]
fn quickstart_carries_every_flow_through_an_uplink_failover_and_a_node_restart() {
    let options = Options {
        duration: Some(Duration::from_secs(6)),
        binaries: Binaries::for_tests().unwrap(),
        keep: false,
    };
    let report = run(&options, &AtomicBool::new(false)).unwrap();
    assert!(report.ok, "{}", report.text);
    assert!(!report.interrupted);
    for flow in ["alpha → beta", "beta → gamma", "gamma → alpha"] {
        assert!(
            report.text.contains(flow),
            "{flow} missing:\n{}",
            report.text
        );
    }
    assert!(
        report
            .text
            .contains("admitted again, every association up, same ingress ports"),
        "{}",
        report.text
    );
    assert!(
        report.text.contains("Endpoint = 127.0.0.1:"),
        "{}",
        report.text
    );
    let failover = report.failover.as_ref().expect("the uplink was cut");
    assert_eq!(
        (failover.uplink.as_str(), failover.other.as_str()),
        ("wan1", "wan2")
    );
    // Both uplinks carried before the cut; only the second after it.
    assert!(failover.before_mbps[1] > 1.0, "{failover:?}");
    assert!(failover.after_bytes[1] > 100_000, "{failover:?}");
    assert!(
        failover.after_bytes[0] * 100 <= failover.after_bytes[1],
        "the cut uplink still carried: {failover:?}"
    );
    assert!(
        failover.stall < Duration::from_secs(1),
        "failover stall {:?}\n{}",
        failover.stall,
        report.text
    );
    for text in [
        "Failover stall: ",
        "uplink down: its mesh socket closed",
        "failed: no probe answered for",
    ] {
        assert!(
            report.text.contains(text),
            "{text:?} missing:\n{}",
            report.text
        );
    }
    let leftovers = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("transitloom-quickstart-{}-", std::process::id()))
        })
        .count();
    assert_eq!(leftovers, 0, "the scratch directory was not removed");
}
