//! The control session's TCP fallback with real machines: a node whose UDP
//! to the coordinator is blocked goes live over TCP and its associations
//! come up (the data plane's UDP is not blocked); QUIC takes the session
//! back when UDP works again; a bad frame over TCP is refused and counted
//! as over QUIC.

use super::*;
use crate::control::msg::RejectCode;
use crate::control::quic::QuicTiming;
use crate::control::transport::Carrier;

const ALPHA: usize = 0;
const BETA: usize = 1;

/// Alpha's UDP to the coordinator is blocked; both nodes may fall back.
fn blocked_mesh(fallback: bool) -> Mesh {
    let mut mesh = Mesh::new(alpha_services(), beta_services());
    mesh.udp_blocked.insert(ALPHA);
    if fallback {
        for host in &mut mesh.hosts {
            host.node.set_tcp_fallback(Some(TcpFallback::default()));
        }
    }
    mesh
}

fn live_over(mesh: &Mesh, host: usize) -> Option<Carrier> {
    let node = &mesh.hosts[host].node;
    (node.session_state() == SessionState::Live)
        .then(|| node.control_transport())
        .flatten()
}

#[test]
fn a_node_whose_udp_is_blocked_goes_live_over_tcp_and_carries_data() {
    let mut mesh = blocked_mesh(true);
    // The QUIC bound is 3 s; TCP then needs a few round trips.
    mesh.run(TcpFallback::default().quic_bound + Duration::from_millis(500));
    assert_eq!(live_over(&mesh, ALPHA), Some(Carrier::Tcp));
    assert_eq!(live_over(&mesh, BETA), Some(Carrier::Quic));
    assert_eq!(mesh.coordinator.counters().sessions_tcp, 1);
    for (service, peer) in [("wg0", "beta/wg0"), ("wg1", "beta/wg1")] {
        let view = mesh.assoc(ALPHA, service, peer).expect("installed");
        assert!(view.is_up(), "{service} is up");
    }
    for i in 0..5u8 {
        mesh.service_sends(ALPHA, "wg0", "beta/wg0", &[i; 100]);
    }
    mesh.run(Duration::from_millis(50));
    assert_eq!(mesh.hosts[BETA].local.len(), 5, "data crosses node to node");

    // Keepalives hold the TCP session open while nothing else happens.
    mesh.run(Duration::from_secs(50));
    assert_eq!(live_over(&mesh, ALPHA), Some(Carrier::Tcp));
}

#[test]
fn without_the_fallback_a_node_whose_udp_is_blocked_stays_out() {
    let mut mesh = blocked_mesh(false);
    mesh.run(Duration::from_secs(20));
    assert_ne!(mesh.hosts[ALPHA].node.session_state(), SessionState::Live);
    assert_eq!(live_over(&mesh, BETA), Some(Carrier::Quic));
    assert_eq!(mesh.coordinator.counters().sessions_tcp, 0);
}

#[test]
fn quic_takes_the_session_back_when_udp_works_again() {
    let mut mesh = blocked_mesh(true);
    mesh.run(Duration::from_secs(5));
    assert_eq!(live_over(&mesh, ALPHA), Some(Carrier::Tcp));
    let before = kept(&mesh.assoc(ALPHA, "wg0", "beta/wg0").unwrap());

    // Still blocked at the first retry: it stays on TCP.
    mesh.run(TcpFallback::default().quic_retry);
    assert_eq!(live_over(&mesh, ALPHA), Some(Carrier::Tcp));

    mesh.udp_blocked.clear();
    mesh.run(TcpFallback::default().quic_retry + Duration::from_secs(5));
    assert_eq!(live_over(&mesh, ALPHA), Some(Carrier::Quic));
    assert_eq!(
        mesh.coordinator.online().collect::<Vec<_>>(),
        ["alpha", "beta"]
    );
    let after = kept(&mesh.assoc(ALPHA, "wg0", "beta/wg0").unwrap());
    assert_eq!(before.id, after.id, "the association survived the move");
    assert_eq!(before.ingress_local, after.ingress_local);
    mesh.service_sends(ALPHA, "wg0", "beta/wg0", b"after the move");
    mesh.run(Duration::from_millis(50));
    assert!(mesh.hosts[BETA]
        .local
        .iter()
        .any(|(_, _, p)| &p[..] == b"after the move"));
}

#[test]
fn an_oversize_frame_over_tcp_is_refused_and_counted() {
    let mut mesh = blocked_mesh(true);
    mesh.run(Duration::from_secs(5));
    assert_eq!(live_over(&mesh, ALPHA), Some(Carrier::Tcp));
    let now = mesh.now;
    let node = &mut mesh.hosts[ALPHA].node;
    let conn = node.session.conn().expect("a session");
    // A length prefix far over MAX_FRAME: the stream cannot be trusted.
    node.transport
        .send(now, conn, &[0xff, 0xff, 0xff, 0xff, 1, 0x06])
        .unwrap();
    node.handle_timeout(now);
    mesh.run(Duration::from_millis(200));
    assert_eq!(
        mesh.coordinator.counters().refused.get("malformed"),
        Some(&1)
    );
    assert!(mesh.hosts[ALPHA].events.iter().any(|e| matches!(
        e,
        NodeEvent::Refused {
            code: RejectCode::Malformed,
            ..
        }
    )));
    assert_ne!(
        live_over(&mesh, ALPHA),
        Some(Carrier::Tcp),
        "the session ended"
    );
    // It comes back after its backoff, over TCP again.
    mesh.run(Duration::from_secs(10));
    assert_eq!(live_over(&mesh, ALPHA), Some(Carrier::Tcp));
}

#[test]
fn a_dead_tcp_session_is_noticed_within_two_keepalive_intervals_on_both_ends() {
    let mut mesh = blocked_mesh(true);
    mesh.run(Duration::from_secs(5));
    assert_eq!(live_over(&mesh, ALPHA), Some(Carrier::Tcp));
    let timing = QuicTiming::default();
    mesh.streams_dead = true;
    let cut = mesh.now;
    // Each end gives up on its own, at most two intervals after the last
    // byte it heard, which came before the cut.
    let (mut node_noticed, mut hub_noticed) = (None, None);
    while node_noticed.is_none() || hub_noticed.is_none() {
        assert!(mesh.now - cut < timing.keepalive * 4, "never noticed");
        mesh.run(Duration::from_millis(10));
        if node_noticed.is_none() && live_over(&mesh, ALPHA).is_none() {
            node_noticed = Some(mesh.now - cut);
        }
        if hub_noticed.is_none() && !mesh.coordinator.online().any(|n| n == "alpha") {
            hub_noticed = Some(mesh.now - cut);
        }
    }
    for noticed in [node_noticed, hub_noticed] {
        let noticed = noticed.unwrap();
        assert!(
            noticed <= timing.keepalive * 2 + Duration::from_millis(10),
            "{noticed:?}"
        );
    }
    // The stream comes back to life: so does the session, over TCP again.
    mesh.streams_dead = false;
    mesh.run(Duration::from_secs(40));
    assert_eq!(live_over(&mesh, ALPHA), Some(Carrier::Tcp));
    assert_eq!(
        mesh.coordinator.online().collect::<Vec<_>>(),
        ["alpha", "beta"]
    );
}
