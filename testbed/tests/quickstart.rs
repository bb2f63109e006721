//! `tlctl quickstart`'s engine, run short: every flow crosses the mesh
//! unaltered, the crashed node comes back on the same ingress ports, and
//! the scratch directory is gone afterwards.

use std::sync::atomic::AtomicBool;
use std::time::Duration;

use transitloom_testbed::quickstart::{run, Options};
use transitloom_testbed::Binaries;

#[test]
fn quickstart_carries_every_flow_through_a_node_restart() {
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
