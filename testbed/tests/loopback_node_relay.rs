//! A node relay with real processes on loopback: a `transitloom-coordinator`
//! without a relay of its own, alpha and beta with one association, and
//! gamma with `[relay] data = true`. The coordinator places the
//! association's relay allocation on gamma; both ends bind their legs and
//! validate the `node-relay` path through gamma's port (their probes cross
//! it byte-for-byte); gamma's status shows the allocation with both legs
//! bound and bytes forwarded. When gamma stops, the ends drop the leg.
//!
//! On loopback alpha and beta also reach each other directly, so the data
//! takes the direct path; the relay path is the validated standby.
//! (Traffic that must cross a node relay is asserted in virtual time, in
//! proto-core's `node::tests::node_relay` and the simulator's
//! `tests/node_relay.rs`.)

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use transitloom_testbed::{
    free_port, service_socket, wait_for, Binaries, CoordinatorSpec, LocalMesh, MeshSpec, NodeSpec,
    ServiceSpec,
};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn get_json(addr: SocketAddr) -> serde_json::Value {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /status HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (_, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    serde_json::from_str(body).expect("JSON")
}

/// The `node-relay` paths in `node`'s status: (remote, state).
fn node_relay_paths(mesh: &LocalMesh, node: &str) -> Vec<(String, String)> {
    let Ok(status) = mesh.status(node) else {
        return Vec::new();
    };
    status["associations"][0]["paths"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["kind"] == "node-relay")
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap_or_default().to_owned();
            (s("remote"), s("state"))
        })
        .collect()
}

/// Gamma's relay table.
const RELAY: &str = "[relay]\ndata = true\nport_range = \"23900-23949\"";

#[test]
fn an_association_gets_a_validated_path_through_a_relaying_node() {
    let tmp = tempfile::tempdir().unwrap();
    let bind = || service_socket(LO, 23_500..=23_799).unwrap();
    let services = [bind(), bind()];
    let mut nodes = Vec::new();
    for (i, (name, peer)) in [("alpha", "beta"), ("beta", "alpha"), ("gamma", "")]
        .into_iter()
        .enumerate()
    {
        let low = 23_500 + 100 * i as u16;
        let (services, associations) = if peer.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            (
                vec![ServiceSpec {
                    name: "wg0".to_owned(),
                    target: services[i].local_addr().unwrap(),
                    ingress_range: format!("127.0.0.1:{low}-{}", low + 99),
                }],
                vec![("wg0".to_owned(), format!("{peer}/wg0"))],
            )
        };
        nodes.push(NodeSpec {
            name: name.to_owned(),
            wrap: Vec::new(),
            uplinks: vec![("lo".to_owned(), LO)],
            status_listen: SocketAddr::new(LO, free_port(LO).unwrap()),
            services,
            associations,
            advertise_private: true,
            extra: if peer.is_empty() {
                RELAY.to_owned()
            } else {
                String::new()
            },
        });
    }
    let coordinator_status = SocketAddr::new(LO, free_port(LO).unwrap());
    let spec = MeshSpec {
        coordinator: CoordinatorSpec {
            listen: SocketAddr::new(LO, free_port(LO).unwrap()),
            status_listen: coordinator_status,
            wrap: Vec::new(),
        },
        nodes,
    };
    let mut mesh = LocalMesh::start(tmp.path(), Binaries::for_tests().unwrap(), spec).unwrap();
    mesh.wait_up(Duration::from_secs(20)).unwrap();

    wait_for(
        "the allocation placed on gamma",
        Duration::from_secs(20),
        || {
            let placements = &get_json(coordinator_status)["relay_placements"];
            placements[0]["site"] == "gamma" && placements[0]["relay"].is_string()
        },
    );
    let placed = get_json(coordinator_status)["relay_placements"][0]["relay"]
        .as_str()
        .unwrap()
        .to_owned();
    let port: u16 = placed.rsplit(':').next().unwrap().parse().unwrap();
    assert!((23_900..=23_949).contains(&port), "{placed}");
    assert!(
        get_json(coordinator_status)["relay"].is_null(),
        "no coordinator relay"
    );

    for node in ["alpha", "beta"] {
        wait_for(
            &format!("{node}'s node-relay path"),
            Duration::from_secs(20),
            || {
                node_relay_paths(&mesh, node)
                    .iter()
                    .any(|(remote, state)| *remote == placed && state == "active")
            },
        );
    }
    // Gamma's own view, read after the ends': the three are separate
    // processes, and one CI run read gamma's allocation not yet ready
    // after both ends had shown the path active.
    wait_for(
        "gamma's allocation ready, with probes across it",
        Duration::from_secs(10),
        || {
            let gamma = mesh.status("gamma").unwrap();
            let alloc = &gamma["relay"]["allocations"][0];
            let forwarded = alloc["forwarded_bytes"][0].as_u64().unwrap_or(0)
                + alloc["forwarded_bytes"][1].as_u64().unwrap_or(0);
            let done =
                alloc["ready"] == true && alloc["local"].as_str() == Some(&placed) && forwarded > 0;
            if !done {
                eprintln!("gamma, not yet: {gamma}");
            }
            done
        },
    );

    // Data still crosses alpha to beta unchanged (on the direct path).
    let ingress = mesh.ingress("alpha", "beta/wg0").unwrap();
    services[1]
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 2048];
    for i in 0..20u8 {
        let payload = vec![i; 300];
        services[0].send_to(&payload, ingress).unwrap();
        let (n, _) = services[1].recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &payload[..]);
    }

    // Gamma stops: its allocation goes, and the ends drop their leg.
    mesh.stop_node("gamma").unwrap();
    wait_for("the placement to go", Duration::from_secs(10), || {
        get_json(coordinator_status)["relay_placements"]
            .as_array()
            .is_some_and(Vec::is_empty)
    });
    for node in ["alpha", "beta"] {
        wait_for(
            &format!("{node} to drop the leg"),
            Duration::from_secs(5),
            || node_relay_paths(&mesh, node).is_empty(),
        );
    }
}
