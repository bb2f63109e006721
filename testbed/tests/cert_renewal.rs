//! Certificate renewal with the real programs on loopback: a coordinator
//! that issues node certificates for one minute, two `transitloom-node`
//! processes that enroll, renew before expiry (keeping their key, replacing
//! `node.crt`), keep carrying UDP, and a node that is stopped, stays down
//! past its first certificate's expiry and comes back with the renewed one.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use transitloom_testbed::{wait_for, Binaries, LocalMesh, LoopbackPair};

/// The coordinator's node certificate lifetime here (its minimum).
const LIFETIME_S: u64 = 60;

fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (_, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    body.to_owned()
}

/// `node`'s certificate horizon from its status: (expires in, renews in).
fn horizon(mesh: &LocalMesh, node: &str) -> (u64, u64) {
    let status = mesh.status(node).unwrap();
    let at = |key: &str| {
        status["node"][key]
            .as_u64()
            .unwrap_or_else(|| panic!("{node}: no node.{key} in {status}"))
    };
    (at("cert_expires_in_s"), at("cert_renews_in_s"))
}

fn cert_file(mesh: &LocalMesh, node: &str) -> Vec<u8> {
    std::fs::read(mesh.dir().join(format!("{node}-data/node.crt"))).unwrap()
}

fn key_file(mesh: &LocalMesh, node: &str) -> Vec<u8> {
    std::fs::read(mesh.dir().join(format!("{node}-data/node.key"))).unwrap()
}

/// A datagram from alpha's service arrives at beta's, unchanged.
fn carries(pair: &LoopbackPair, payload: &[u8]) {
    let alpha_ingress = pair.mesh.ingress("alpha", "beta/wg0").unwrap();
    pair.services[1]
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 2048];
    pair.services[0].send_to(payload, alpha_ingress).unwrap();
    let (n, _) = pair.services[1]
        .recv_from(&mut buf)
        .expect("the datagram crossed the mesh");
    assert_eq!(&buf[..n], payload);
}

#[test]
fn short_lived_certificates_renew_before_expiry_and_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut pair = LoopbackPair::start_with_coordinator_config(
        tmp.path(),
        Binaries::for_tests().unwrap(),
        22_400,
        &format!("node_cert_lifetime_s = {LIFETIME_S}\n"),
    )
    .unwrap();
    let started = Instant::now();
    let (expires, renews) = horizon(&pair.mesh, "alpha");
    assert!(
        (LIFETIME_S - 15..=LIFETIME_S).contains(&expires),
        "{expires}"
    );
    assert!(renews < expires, "{renews} {expires}");
    // The first certificate is gone for good by then.
    let first_expiry = started + Duration::from_secs(expires + 1);
    let first = cert_file(&pair.mesh, "alpha");
    let key = key_file(&pair.mesh, "alpha");
    carries(&pair, b"before renewal");

    // Both nodes renew at two thirds of the lifetime, before it ends.
    wait_for(
        "both nodes to renew",
        Duration::from_secs(renews + 15),
        || {
            ["alpha", "beta"].iter().all(|node| {
                pair.mesh
                    .status(node)
                    .ok()
                    .and_then(|s| s["node"]["cert_expires_in_s"].as_u64())
                    .is_some_and(|left| {
                        left > expires.saturating_sub(started.elapsed().as_secs()) + 20
                    })
            })
        },
    );
    assert!(Instant::now() < first_expiry, "renewed only after expiry");
    let renewed = cert_file(&pair.mesh, "alpha");
    assert_ne!(renewed, first, "node.crt was replaced");
    assert_eq!(key_file(&pair.mesh, "alpha"), key, "the key is kept");
    let metrics = get(pair.coordinator_status, "/metrics");
    assert!(
        metrics.contains("transitloom_coordinator_renewals_total{coordinator=\"coordinator\",result=\"renewed\"} 2"),
        "{metrics}"
    );
    let node_metrics = get(pair.mesh.status_listen("alpha").unwrap(), "/metrics");
    assert!(
        node_metrics.contains("transitloom_node_certificate_expires_in_seconds{node=\"alpha\"}"),
        "{node_metrics}"
    );
    wait_for("alpha to be live again", Duration::from_secs(10), || {
        pair.mesh
            .status("alpha")
            .is_ok_and(|s| s["node"]["admission"] == "admitted")
    });
    carries(&pair, b"after renewal");

    // Alpha stops and stays down until its first certificate has expired:
    // it can only come back with the renewed one from its data directory.
    pair.mesh.stop_node("alpha").unwrap();
    let wait = first_expiry.saturating_duration_since(Instant::now());
    std::thread::sleep(wait + Duration::from_secs(1));
    pair.mesh.start_node("alpha").unwrap();
    pair.mesh.wait_up(Duration::from_secs(20)).unwrap();
    carries(&pair, b"after a restart");
    let (expires_after, _) = horizon(&pair.mesh, "alpha");
    assert!(expires_after > 0, "{expires_after}");
    assert_eq!(key_file(&pair.mesh, "alpha"), key, "the key is kept");
    let log = std::fs::read_to_string(pair.mesh.dir().join("alpha.log")).unwrap_or_default();
    assert!(log.contains("certificate renewed"), "{log}");
    let refused = get(pair.coordinator_status, "/status");
    let status: serde_json::Value = serde_json::from_str(&refused).unwrap();
    assert_eq!(status["counters"]["renewals_refused"], 0, "{status}");
}
