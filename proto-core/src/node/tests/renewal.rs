//! Certificate renewal with real nodes and coordinators in virtual time:
//! certificates that last a minute are renewed before they expire, the
//! nodes reconnect with the new ones, a coordinator of the same root with
//! another intermediate (and the same log) accepts them and renews them in
//! turn, and a revoked node never gets one.

use std::sync::Arc;

use super::*;
use crate::coordinator::registry::Registry;

/// Node certificates last this long here.
const LIFETIME_S: u64 = 60;

/// The root, kept to issue coordinator intermediates from.
struct Root {
    der: Vec<u8>,
    key: Vec<u8>,
}

/// One coordinator's PKI: an intermediate of the root, named `HUB` like the
/// others (nodes know one coordinator name), with its own key.
struct Hub {
    inter: Vec<u8>,
    inter_key: Vec<u8>,
    tls: Arc<rustls::ServerConfig>,
}

fn root() -> Root {
    let (key, _) = key(1);
    let der = pki::self_signed_root(&key, &terms("transitloom root", 1)).unwrap();
    Root { der, key }
}

fn hub(root: &Root, seed: u8) -> Hub {
    let (inter_key, inter_pub) = key(seed);
    let inter =
        pki::sign_coordinator_intermediate(&root.der, &root.key, &inter_pub, &terms(HUB, seed))
            .unwrap();
    let (server_key, server_pub) = key(seed + 1);
    let server =
        pki::sign_coordinator_server(&inter, &inter_key, &server_pub, &terms(HUB, seed + 1))
            .unwrap();
    let tls = server_config(
        &CertificateDer::from(root.der.clone()),
        identity(&[&server, &inter], &server_key),
        ClientAuth::Optional,
    )
    .unwrap();
    Hub {
        inter,
        inter_key,
        tls,
    }
}

/// A coordinator with `hub`'s intermediate, trusting the tokens of every
/// hub in `trusted`, its registry replayed from `registry`; its wall clock
/// reads `UNIX_NOW` at `start`, like the nodes'.
fn coordinator(start: Instant, hub: &Hub, trusted: &[&Hub], registry: Registry) -> Coordinator {
    let mut verifier = TokenVerifier::new();
    for other in trusted {
        verifier.trust(HUB, pki::ed25519_public_key(&other.inter).unwrap());
    }
    let mut coordinator = Coordinator::new(
        CoordinatorConfig {
            name: HUB.to_owned(),
            listen: addr("203.0.113.1:7443"),
            tls: hub.tls.clone(),
            intermediate_der: hub.inter.clone(),
            intermediate_key: hub.inter_key.clone(),
            verifier,
            token_lifetime_s: 600,
            wall_clock: WallClock::new(start, UNIX_NOW * 1_000_000),
            timing: QuicTiming::default(),
            handshake_limit: Default::default(),
        },
        registry,
        crate::csprng::Drbg::from_u64(99),
    )
    .unwrap();
    coordinator.set_node_cert_lifetime(LIFETIME_S);
    coordinator
}

/// The two-node mesh of the parent module, with certificates issued as a
/// coordinator with a one-minute lifetime issues them (valid from 6 s
/// before `UNIX_NOW` to 60 s after), by hub `a`.
fn short_lived_mesh(root: &Root, a: &Hub, b: &Hub) -> Mesh {
    let mut mesh = Mesh::new(alpha_services(), beta_services());
    let now = mesh.now;
    let wall = WallClock::new(now, UNIX_NOW * 1_000_000);
    let mut registry = Registry::new();
    for (i, name) in ["alpha", "beta"].into_iter().enumerate() {
        let (node_key, _) = key(10 + i as u8);
        let csr = pki::node_csr(&node_key).unwrap();
        let cert = pki::sign_node_csr_for(
            &a.inter,
            &a.inter_key,
            &csr,
            name,
            (UNIX_NOW - 6) as i64,
            LIFETIME_S + 6,
            [30 + i as u8; 16],
        )
        .unwrap();
        for op in [
            Op::Invite {
                node: name.to_owned(),
                digest: [i as u8; 32],
                expires_unix_s: UNIX_NOW + 3_600,
                admit: true,
            },
            Op::Enroll {
                node: name.to_owned(),
                fingerprint: pki::cert_fingerprint(&cert),
                at_unix_s: UNIX_NOW,
            },
        ] {
            registry.apply(&op).unwrap();
        }
        let host = &mut mesh.hosts[i];
        host.node = Node::new(NodeConfig {
            name: name.to_owned(),
            coordinators: vec![mesh.listen],
            coordinator_name: HUB.to_owned(),
            coordinator_names: Default::default(),
            root: CertificateDer::from(root.der.clone()),
            credentials: Credentials::Enrolled(identity(&[&cert, &a.inter], &node_key)),
            control_bind: SocketAddr::new(host.public, 0),
            advertise_private: false,
            services: if i == 0 {
                alpha_services()
            } else {
                beta_services()
            },
            uplinks: vec![UplinkSpec::new(UplinkId(0), "wan", host.public)],
            wall_clock: wall,
            timing: QuicTiming::default(),
            seed: [20 + i as u8; 32],
        })
        .unwrap();
    }
    mesh.coordinator = coordinator(now, a, &[a, b], registry);
    mesh
}

impl Mesh {
    /// Seconds of virtual time since the mesh started.
    fn at(&self, start: Instant) -> u64 {
        (self.now - start).as_secs()
    }

    /// Runs until `second` after `start`.
    fn run_to(&mut self, start: Instant, second: u64) {
        let until = start + Duration::from_secs(second);
        self.run(until.saturating_duration_since(self.now));
    }

    /// The coordinator stops and another takes its address with `registry`
    /// (a restart, or a coordinator that replicates the same log).
    fn replace_coordinator(&mut self, coordinator: Coordinator) {
        self.coordinator = coordinator;
        self.hub_socket = None;
        self.hub_listener = None;
    }

    fn renewals(&self, host: usize) -> Vec<Vec<Bytes>> {
        self.hosts[host]
            .events
            .iter()
            .filter_map(|e| match e {
                NodeEvent::Renewed { chain } => Some(chain.clone()),
                _ => None,
            })
            .collect()
    }
}

fn expiry(mesh: &Mesh, host: usize) -> i64 {
    mesh.hosts[host]
        .node
        .cert_expires_unix_s()
        .expect("enrolled")
}

#[test]
fn certificates_renew_before_expiry_through_any_coordinator_of_the_root() {
    let root = root();
    let (a, b) = (hub(&root, 40), hub(&root, 50));
    let mut mesh = short_lived_mesh(&root, &a, &b);
    let start = mesh.now;
    let unix = |s: u64| (UNIX_NOW + s) as i64;
    mesh.run_to(start, 3);
    let assoc = mesh
        .assoc(0, "wg0", "beta/wg0")
        .expect("installed")
        .spec()
        .id;
    assert!(mesh.assoc(0, "wg0", "beta/wg0").unwrap().is_up());
    for host in 0..2 {
        assert_eq!(expiry(&mesh, host), unix(LIFETIME_S));
        // Due at two thirds of the 66 s window that starts 6 s early.
        assert_eq!(mesh.hosts[host].node.cert_renews_unix_s(), Some(unix(38)));
    }

    // Not before two thirds of the lifetime...
    mesh.run_to(start, 37);
    assert!(mesh.renewals(0).is_empty() && mesh.renewals(1).is_empty());
    // ...and well before the end.
    mesh.run_to(start, 41);
    for host in 0..2 {
        let renewed = mesh.renewals(host);
        assert_eq!(
            renewed.len(),
            1,
            "host {host}: {:?}",
            mesh.hosts[host].events
        );
        let leaf = &renewed[0][0];
        assert_eq!(renewed[0][1].as_ref(), a.inter.as_slice());
        let (_, not_after) = pki::validity(leaf).unwrap();
        assert!(not_after >= unix(38 + LIFETIME_S), "{not_after}");
        assert_eq!(expiry(&mesh, host), not_after, "the node uses the new one");
        let name = ["alpha", "beta"][host];
        let record = mesh.coordinator.registry().node(name).unwrap();
        assert_eq!(record.fingerprint, pki::cert_fingerprint(leaf));
        // It reconnected with it at once.
        let events = &mesh.hosts[host].events;
        let renewed_at = events
            .iter()
            .position(|e| matches!(e, NodeEvent::Renewed { .. }))
            .unwrap();
        assert!(
            events[renewed_at..].contains(&NodeEvent::Session(SessionState::Live)),
            "{events:?}"
        );
        assert_eq!(mesh.hosts[host].node.session_state(), SessionState::Live);
    }
    assert_eq!(mesh.coordinator.counters().renewed, 2);
    assert_eq!(mesh.coordinator.counters().renewals_refused, 0);
    // The association was not disturbed: same id, still carrying.
    let view = mesh.assoc(0, "wg0", "beta/wg0").expect("still installed");
    assert_eq!(view.spec().id, assoc);
    assert!(view.is_up());
    let delivered = mesh.hosts[1].local.len();
    mesh.service_sends(0, "wg0", "beta/wg0", b"after renewal");
    mesh.run(Duration::from_millis(50));
    assert_eq!(mesh.hosts[1].local.len(), delivered + 1);

    // Past the first certificates' expiry another coordinator of the root
    // (its own intermediate, the same log) takes over: the nodes connect
    // to it with their renewed certificates, since the old ones no longer
    // open a session.
    mesh.run_to(start, 62);
    let registry = mesh.coordinator.registry().clone();
    mesh.replace_coordinator(coordinator(start, &b, &[&a, &b], registry));
    mesh.run_to(start, 74);
    let online: Vec<&str> = mesh.coordinator.online().collect();
    assert_eq!(online, ["alpha", "beta"], "at {}", mesh.at(start));
    assert_eq!(mesh.coordinator.counters().handshakes_failed, 0);

    // Their second renewal is due at about 76 s: coordinator b issues it.
    mesh.run_to(start, 82);
    for host in 0..2 {
        let renewed = mesh.renewals(host);
        assert_eq!(
            renewed.len(),
            2,
            "host {host}: {:?}",
            mesh.hosts[host].events
        );
        assert_eq!(
            renewed[1][1].as_ref(),
            b.inter.as_slice(),
            "b's intermediate"
        );
        assert_eq!(mesh.hosts[host].node.session_state(), SessionState::Live);
    }
    assert_eq!(mesh.coordinator.counters().renewed, 2);
    assert!(mesh.assoc(0, "wg0", "beta/wg0").unwrap().is_up());
    let delivered = mesh.hosts[1].local.len();
    mesh.service_sends(0, "wg0", "beta/wg0", b"after the second renewal");
    mesh.run(Duration::from_millis(50));
    assert_eq!(mesh.hosts[1].local.len(), delivered + 1);
}

#[test]
fn a_revoked_node_never_renews_and_its_certificate_runs_out() {
    let root = root();
    let a = hub(&root, 40);
    let mut mesh = short_lived_mesh(&root, &a, &a);
    let start = mesh.now;
    mesh.run_to(start, 3);
    assert_eq!(mesh.hosts[0].node.session_state(), SessionState::Live);
    // Alpha is revoked while the coordinator is down; it comes back with
    // the revoke in its log.
    mesh.run_to(start, 20);
    let mut registry = mesh.coordinator.registry().clone();
    registry
        .apply(&Op::Revoke {
            node: "alpha".to_owned(),
        })
        .unwrap();
    mesh.replace_coordinator(coordinator(start, &a, &[&a], registry));
    mesh.run_to(start, 50);
    assert_eq!(mesh.renewals(1).len(), 1, "beta renews");
    assert!(mesh.renewals(0).is_empty(), "alpha does not");
    assert!(mesh.hosts[0].events.iter().any(|e| matches!(
        e,
        NodeEvent::Refused {
            code: RejectCode::Revoked,
            ..
        }
    )));
    assert_eq!(expiry(&mesh, 0), (UNIX_NOW + LIFETIME_S) as i64);
    let refused = mesh.coordinator.counters().refused.get("revoked").copied();
    assert!(refused >= Some(1), "{refused:?}");
    // Past its expiry alpha's certificate opens nothing at all.
    mesh.run_to(start, 70);
    let failed = mesh.coordinator.counters().handshakes_failed;
    mesh.run_to(start, 130);
    assert!(mesh.coordinator.counters().handshakes_failed > failed);
    assert!(mesh.renewals(0).is_empty());
    assert_ne!(mesh.hosts[0].node.session_state(), SessionState::Live);
    assert_eq!(mesh.hosts[1].node.session_state(), SessionState::Live);
}
