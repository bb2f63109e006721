//! `transitloom-node explain` on real processes over loopback: alpha with
//! two uplinks, beta with one, traffic both ways; explain names the real
//! paths and why they carry, then one of alpha's uplinks is taken out of
//! service and both sides' explanations show what happened, with times and
//! the detection time of the failure.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use transitloom_testbed::{
    free_port, service_socket, wait_for, Binaries, CoordinatorSpec, Error, LocalMesh, MeshSpec,
    NodeSpec, ServiceSpec,
};

const WAN1: [u8; 4] = [127, 0, 0, 1];
const WAN2: [u8; 4] = [127, 0, 0, 5];
const BETA: [u8; 4] = [127, 0, 0, 6];

fn mesh(dir: &std::path::Path, services: &[UdpSocket; 2]) -> LocalMesh {
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let node = |i: usize, name: &str, peer: &str, uplinks: Vec<(&str, [u8; 4])>| NodeSpec {
        name: name.to_owned(),
        wrap: Vec::new(),
        uplinks: uplinks
            .into_iter()
            .map(|(n, ip)| (n.to_owned(), IpAddr::from(ip)))
            .collect(),
        status_listen: SocketAddr::new(lo, free_port(lo).unwrap()),
        services: vec![ServiceSpec {
            name: "wg0".to_owned(),
            target: services[i].local_addr().unwrap(),
            ingress_range: format!("127.0.0.1:{}-{}", 24_400 + 100 * i, 24_499 + 100 * i),
        }],
        associations: vec![("wg0".to_owned(), format!("{peer}/wg0"))],
        advertise_private: true,
        extra: String::new(),
    };
    let spec = MeshSpec {
        coordinator: CoordinatorSpec {
            listen: SocketAddr::new(lo, free_port(lo).unwrap()),
            status_listen: SocketAddr::new(lo, free_port(lo).unwrap()),
            wrap: Vec::new(),
        },
        nodes: vec![
            node(0, "alpha", "beta", vec![("wan1", WAN1), ("wan2", WAN2)]),
            node(1, "beta", "alpha", vec![("lo", BETA)]),
        ],
    };
    let mesh = LocalMesh::start(dir, Binaries::for_tests().unwrap(), spec).unwrap();
    mesh.wait_up(Duration::from_secs(20)).unwrap();
    mesh
}

/// Both services send to their ingress every millisecond until dropped.
struct Traffic {
    running: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(services: &[UdpSocket; 2], ingress: [SocketAddr; 2]) -> Self {
        let running = Arc::new(AtomicBool::new(true));
        let threads = services
            .iter()
            .zip(ingress)
            .map(|(socket, to)| {
                let socket = socket.try_clone().unwrap();
                let running = running.clone();
                std::thread::spawn(move || {
                    while running.load(Ordering::Relaxed) {
                        let _ = socket.send_to(&[0x5a; 400], to);
                        std::thread::sleep(Duration::from_millis(1));
                    }
                })
            })
            .collect();
        Self { running, threads }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.running.store(false, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn ip(a: [u8; 4]) -> String {
    Ipv4Addr::from(a).to_string()
}

#[test]
fn explain_shows_real_paths_their_reasons_and_a_failover_with_its_detection_time() {
    let tmp = tempfile::tempdir().unwrap();
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let services = [
        service_socket(lo, 24_400..=24_599).unwrap(),
        service_socket(lo, 24_400..=24_599).unwrap(),
    ];
    let mut mesh = mesh(tmp.path(), &services);
    let ingress = [
        mesh.ingress("alpha", "beta/wg0").unwrap(),
        mesh.ingress("beta", "alpha/wg0").unwrap(),
    ];
    let traffic = Traffic::start(&services, ingress);
    // Both of alpha's paths validated and carrying.
    wait_for(
        "alpha to carry on both uplinks",
        Duration::from_secs(5),
        || {
            mesh.explain("alpha", "beta", false)
                .is_ok_and(|t| t.matches("weight:   carrying").count() == 2)
        },
    );
    let text = mesh.explain("alpha", "beta/wg0", false).unwrap();
    for want in [
        "-> beta/wg0",
        &format!("wan1 -> {}:", ip(BETA)),
        &format!("wan2 -> {}:", ip(BETA)),
        "state:    active: an authentic pong came from this exact address",
        "weight:   carrying: each packet goes where it is predicted to arrive first",
        "measured: rtt ",
        "recent events (oldest first):",
        "validated (rtt ",
        "started carrying data",
        &format!("uplink wan1 (primary): up on {}", ip(WAN1)),
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    // The same by id, and as JSON.
    let status = mesh.status("alpha").unwrap();
    let id = status["associations"][0]["id"].as_str().unwrap().to_owned();
    let json: serde_json::Value =
        serde_json::from_str(&mesh.explain("alpha", &id, true).unwrap()).unwrap();
    assert_eq!(json["association"]["peer"], "beta/wg0");
    assert_eq!(json["paths"].as_array().unwrap().len(), 2);
    assert_eq!(json["association"]["paths"][0]["reason"], "carrying");

    // wan1 goes out of service while traffic flows.
    let cut = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    mesh.set_uplink_enabled("alpha", "wan1", false).unwrap();
    let failed = |mesh: &LocalMesh| {
        let out = mesh.explain("beta", "alpha", true).ok()?;
        let json: serde_json::Value = serde_json::from_str(&out).ok()?;
        json["association"]["events"]
            .as_array()?
            .iter()
            .find(|e| {
                e["kind"] == "failed"
                    && e["remote"]
                        .as_str()
                        .is_some_and(|r| r.starts_with(&format!("{}:", ip(WAN1))))
            })
            .cloned()
    };
    wait_for(
        "beta to fail its path to wan1",
        Duration::from_secs(3),
        || failed(&mesh).is_some(),
    );
    let event = failed(&mesh).unwrap();
    let at = event["at_unix_ms"].as_u64().unwrap();
    let detection = event["detection_ms"].as_f64().unwrap();
    assert!(
        at >= cut && at < cut + 1_000,
        "failed {} ms after the cut",
        at - cut
    );
    assert!(detection > 0.0 && detection < 1_000.0, "{event}");
    drop(traffic);

    let text = mesh.explain("alpha", "beta", false).unwrap();
    for want in [
        "uplink wan1 (primary): down: disabled in the configuration (enabled = false)",
        "uplink wan1: uplink down: its mesh socket closed",
        "removed while active: data moved to the other paths at once",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("path ") && l.contains(" wan1 -> ")),
        "a path through wan1 is left:\n{text}"
    );
    if std::env::var_os("TL_SHOW_EXPLAIN").is_some() {
        eprintln!("{text}\n{}", mesh.explain("beta", "alpha", false).unwrap());
    }
    let text = mesh.explain("beta", "alpha/wg0", false).unwrap();
    assert!(
        text.contains("failed: no probe answered for") && text.contains("(detection time)"),
        "{text}"
    );

    // A name that matches nothing is a usage error, and says what there is.
    match mesh.explain("alpha", "gamma", false) {
        Err(Error::Command { status, stderr, .. }) => {
            assert!(status.contains('2'), "{status}");
            assert!(
                stderr.contains("no association named \"gamma\""),
                "{stderr}"
            );
            assert!(stderr.contains("(beta/wg0)"), "{stderr}");
        }
        other => panic!("{other:?}"),
    }
    mesh.set_uplink_enabled("alpha", "wan1", true).unwrap();
    wait_for("alpha's wan1 to be back", Duration::from_secs(5), || {
        mesh.explain("alpha", "beta", false).is_ok_and(|t| {
            t.contains("uplink wan1 (primary): up on") && t.contains("uplink wan1: uplink up")
        })
    });
}
