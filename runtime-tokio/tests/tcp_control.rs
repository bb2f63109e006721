//! The control plane's TCP + TLS fallback with real processes on loopback:
//! the coordinator listens on TCP at its UDP port number, and `tlctl --tcp`
//! talks to it there with the same mutual TLS and the same messages.

mod support;

use std::time::Duration;

use support::{free_tcp, free_udp, Daemon, Mesh};

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn tlctl_over_tcp_reaches_the_coordinator_on_its_udp_port_number() {
    let mesh = Mesh::new();
    let daemon = Daemon::start(&mesh, mesh.config(free_udp(), free_tcp()));
    let status = daemon.status();
    assert_eq!(status["coordinator"]["transport"], "quic+tcp");
    assert_eq!(status["counters"]["sessions"]["over_tcp"], 0);

    let out = daemon.tlctl_ok(&["node", "invite", "alpha", "--admit", "--tcp"]);
    assert!(
        out.lines().last().unwrap().starts_with("tlj1-alpha-"),
        "{out}"
    );
    let out = daemon.tlctl_ok(&["status", "--json", "--tcp"]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["coordinator"], "coordinator");
    // Without --tcp the same commands go over QUIC.
    daemon.tlctl_ok(&["node", "list"]);

    daemon.wait_status("TCP sessions counted", WAIT, |s| {
        s["counters"]["sessions"]["over_tcp"].as_u64() == Some(2)
            && s["counters"]["sessions"]["admin"].as_u64() == Some(3)
    });
    let metrics = daemon.metrics();
    let line = "transitloom_coordinator_sessions_tcp_total{coordinator=\"coordinator\"} 2";
    assert!(metrics.contains(line), "{line} in {metrics}");
    // The invite went through the log like any other.
    assert_eq!(daemon.status()["coordinator"]["operations"], 1);

    // A wrong server name is refused over TCP as over QUIC.
    let err = daemon.tlctl_fails(1, &["node", "list", "--coordinator-name", "other", "--tcp"]);
    assert!(err.contains("not valid for name \"other\""), "{err}");
}
