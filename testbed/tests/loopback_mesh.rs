//! The real thing on loopback: `tlctl` makes a PKI, a real
//! `transitloom-coordinator` runs, two real `transitloom-node` processes
//! enroll with join tokens, form an association by mutual consent and carry
//! UDP between two local "services" byte-for-byte; then the admin revokes
//! one node and every effect lands within a second.

use std::time::{Duration, Instant};

use transitloom_testbed::{wait_for, Binaries, LocalMesh, LoopbackPair};

fn assoc_state(mesh: &LocalMesh, node: &str) -> Option<String> {
    let status = mesh.status(node).ok()?;
    status["associations"][0]["state"]
        .as_str()
        .map(str::to_owned)
}

#[test]
fn two_nodes_enroll_carry_udp_and_a_revoke_takes_effect_within_a_second() {
    let tmp = tempfile::tempdir().unwrap();
    let LoopbackPair { mesh, services, .. } =
        LoopbackPair::start(tmp.path(), Binaries::for_tests().unwrap(), 22_000).unwrap();

    // UDP from alpha's service to alpha's ingress arrives at beta's service
    // unchanged, from beta's ingress.
    let alpha_ingress = mesh.ingress("alpha", "beta/wg0").unwrap();
    let beta_ingress = mesh.ingress("beta", "alpha/wg0").unwrap();
    services[1]
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 2048];
    for i in 0..200usize {
        let payload: Vec<u8> = (0..(1 + i * 7 % 1_400)).map(|j| (i + j) as u8).collect();
        services[0].send_to(&payload, alpha_ingress).unwrap();
        let (n, from) = services[1]
            .recv_from(&mut buf)
            .expect("the datagram crossed the mesh");
        assert_eq!(&buf[..n], &payload[..], "datagram {i} altered");
        assert_eq!(from, beta_ingress, "delivered from beta's ingress");
    }

    // Hard revoke: beta is told, alpha drops the association, data stops.
    let revoked_at = Instant::now();
    let out = mesh
        .tlctl()
        .args(["node", "revoke", "beta"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    wait_for(
        "alpha to withdraw the association",
        Duration::from_secs(1),
        // A status that answers, with the association no longer up (a
        // crashed node answering nothing does not count).
        || matches!(assoc_state(&mesh, "alpha").as_deref(), Some(s) if s != "up"),
    );
    wait_for("beta to show it is revoked", Duration::from_secs(1), || {
        mesh.status("beta")
            .is_ok_and(|j| j["node"]["admission"] == "revoked")
    });
    assert!(revoked_at.elapsed() < Duration::from_secs(2));
    services[1]
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    for _ in 0..10 {
        services[0].send_to(b"after revoke", alpha_ingress).unwrap();
    }
    assert!(
        services[1].recv_from(&mut buf).is_err(),
        "data crossed after the revoke"
    );
    // Both daemons are still running: the silence is the revoke, not a crash.
    for name in ["alpha", "beta"] {
        assert!(mesh.pid(name).is_some());
        mesh.status(name)
            .unwrap_or_else(|e| panic!("{name} stopped answering after the revoke: {e}"));
    }
}

/// How many nodes the coordinator has a session with (`tlctl status`).
fn online(mesh: &LocalMesh) -> Option<u64> {
    let out = mesh.tlctl().args(["status", "--json"]).output().ok()?;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    status["online"].as_u64()
}

#[test]
fn a_node_stopped_with_sigterm_is_offline_at_the_coordinator_within_a_second() {
    let tmp = tempfile::tempdir().unwrap();
    let LoopbackPair { mut mesh, .. } =
        LoopbackPair::start(tmp.path(), Binaries::for_tests().unwrap(), 22_200).unwrap();
    assert_eq!(online(&mesh), Some(2));
    let stopped = Instant::now();
    mesh.stop_node("beta").unwrap();
    // The coordinator's idle timeout is 10 s: within a second means the
    // node said goodbye.
    wait_for(
        "the coordinator to see beta go",
        Duration::from_secs(1),
        || online(&mesh) == Some(1),
    );
    assert!(stopped.elapsed() < Duration::from_secs(3));
    mesh.status("alpha").unwrap();
}
