//! A node relay for real (issue 5), in network namespaces (root only;
//! skipped loudly without root unless `TL_REQUIRE_NETNS=1`, which CI sets,
//! and then it fails).
//!
//! Two nodes behind hard NATs (nftables `masquerade fully-random`, and
//! the routers drop what comes from outside unless it answers a mapping),
//! so no direct path can form, and a third node, gamma, on a public
//! address of the "internet" namespace with `[relay] data = true`. The
//! coordinator hosts no relay of its own:
//!
//! ```text
//!  alpha 192.168.1.2 ─ NAT 198.51.100.2 ─┐  internet: coordinator 203.0.113.5 (+ .6)  ┌─ 192.0.2.2 NAT ─ 192.168.2.2 beta
//!                     (fully-random)     └─ gamma 203.0.113.7 (relays) ────────────────┘  (fully-random)
//! ```
//!
//! Checked: the data path on both ends is `node-relay` through gamma's
//! port, WireGuard pings cross both ways, gamma's status shows the
//! allocation with both legs bound and the bytes it forwarded, the bytes
//! reached gamma's address (an nftables counter) and not the
//! coordinator's beyond control traffic. The figures go to standard
//! error (`--nocapture`). When the test fails, every process's log and
//! config stay in `target/tmp/tlnr-PID-h/` until the next run clears them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use transitloom_testbed::netns::{self, Firewall, Masquerade, NatPair, Scratch, WireGuard};
use transitloom_testbed::{Binaries, LocalMesh, NodeSpec};

/// Names of namespaces, interfaces and scratch folders start with this.
const PREFIX: &str = "tlnr";
const WG_PORT: u16 = 51820;
const COORDINATOR_PORT: u16 = 7443;
const TUNNEL_A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 97, 0, 1));
const TUNNEL_B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 97, 0, 2));
/// Gamma's public address, in the internet namespace.
const GAMMA: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
const GAMMA_PORTS: (u16, u16) = (45_000, 45_099);
const NODE_RELAY: &str = "node-relay";
/// The nftables table counting what reaches gamma's address.
const COUNT: &str = "tlnrcount";

/// The first association of `node`, from its status.
fn association(mesh: &LocalMesh, node: &str) -> Value {
    mesh.status(node)
        .map(|s| s["associations"][0].clone())
        .unwrap_or(Value::Null)
}

/// The path carrying `node`'s data (weight 1, active): (kind, remote).
fn carrying(mesh: &LocalMesh, node: &str) -> Option<(String, String)> {
    let assoc = association(mesh, node);
    let paths = assoc["paths"].as_array()?;
    paths
        .iter()
        .find(|p| p["weight"].as_f64() == Some(1.0) && p["state"] == "active")
        .map(|p| {
            let s = |k: &str| p[k].as_str().unwrap_or_default().to_owned();
            (s("kind"), s("remote"))
        })
}

/// Bytes of UDP that reached gamma's address and the coordinator's.
fn udp_in(net: &NatPair) -> (u64, u64) {
    (
        net.inet.nft_counter(COUNT, "gamma").unwrap().1,
        net.inet.nft_counter(COUNT, "coordinator").unwrap().1,
    )
}

#[test]
fn hard_nats_meet_through_a_relaying_node_on_a_public_address() {
    if !netns::require_root(
        "netns_node_relay",
        &["ip", "wireguard-go", "wg", "nft", "ping", "kill", "sysctl"],
    ) {
        return;
    }
    let started = Instant::now();
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    netns::remove_leftovers(PREFIX, Some(tmp));
    let run = format!("{}-h", netns::run_prefix(PREFIX));
    let scratch = Scratch::create(tmp.join(&run)).unwrap();
    let dir = scratch.path();
    let bins = Binaries::for_tests().unwrap();

    let net = NatPair::build(&run, Masquerade::FullyRandom, Firewall::DropUnsolicited).unwrap();
    net.inet.add_address("lo", &format!("{GAMMA}/32")).unwrap();
    net.inet
        .nft(&format!(
            "table inet {COUNT} {{\n\
               counter gamma {{}}\n\
               counter coordinator {{}}\n\
               chain input {{\n\
                 type filter hook input priority 0; policy accept;\n\
                 ip daddr {GAMMA} meta l4proto udp counter name gamma\n\
                 ip daddr {} meta l4proto udp counter name coordinator\n\
               }}\n\
             }}\n",
            NatPair::COORDINATOR,
        ))
        .unwrap();
    let pid = std::process::id();
    let (wg_a, wg_b) = WireGuard::pair(
        &net.a,
        &net.b,
        &format!("{PREFIX}{pid}"),
        WG_PORT,
        "10.97.0",
        dir,
    )
    .unwrap();

    // Alpha and beta as in netns_nat; gamma relays from the internet
    // namespace (its loopback is the coordinator's, so another status
    // port). The coordinator relays nothing itself.
    let mut spec = net.wg_mesh(COORDINATOR_PORT, WG_PORT);
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    spec.nodes.push(NodeSpec {
        name: "gamma".to_owned(),
        wrap: net.inet.wrap(),
        uplinks: vec![("public".to_owned(), GAMMA)],
        status_listen: SocketAddr::new(lo, 7482),
        services: Vec::new(),
        associations: Vec::new(),
        advertise_private: false,
        extra: format!(
            "[relay]\ndata = true\nport_range = \"{}-{}\"\n",
            GAMMA_PORTS.0, GAMMA_PORTS.1
        ),
    });
    let coordinator = format!(
        "reflectors = [\"{}:{COORDINATOR_PORT}\"]\n",
        NatPair::REFLECTOR
    );
    let mesh =
        LocalMesh::start_with_coordinator_config(&dir.join("mesh"), bins, spec, &coordinator)
            .unwrap();
    mesh.wait_up(Duration::from_secs(30)).unwrap();
    let up = started.elapsed();

    // Both ends carry on gamma's port.
    let deadline = Instant::now() + Duration::from_secs(10);
    let ends = loop {
        let ends = [carrying(&mesh, "alpha"), carrying(&mesh, "beta")];
        let on_gamma = ends.iter().all(|c| {
            c.as_ref().is_some_and(|(kind, remote)| {
                kind == NODE_RELAY && remote.starts_with(&format!("{GAMMA}:"))
            })
        });
        if on_gamma {
            break ends;
        }
        assert!(
            Instant::now() < deadline,
            "not both on gamma's relay: {ends:?}\nalpha: {:#}\nbeta: {:#}",
            association(&mesh, "alpha"),
            association(&mesh, "beta")
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let relay_addr = ends[0].as_ref().unwrap().1.clone();
    let port: u16 = relay_addr.rsplit(':').next().unwrap().parse().unwrap();
    assert!(
        (GAMMA_PORTS.0..=GAMMA_PORTS.1).contains(&port),
        "{relay_addr}"
    );
    assert_eq!(ends[1].as_ref().unwrap().1, relay_addr, "one allocation");
    assert!(
        mesh.status("gamma").unwrap()["relay"]["allocations"][0]["ready"] == true,
        "both legs bound at gamma"
    );

    // WireGuard across, pointed at the ingresses.
    let ingress_a = mesh.ingress("alpha", "beta/wg0").unwrap();
    let ingress_b = mesh.ingress("beta", "alpha/wg0").unwrap();
    wg_a.set_peer(wg_b.public_key(), ingress_a, "10.97.0.2/32")
        .unwrap();
    wg_b.set_peer(wg_a.public_key(), ingress_b, "10.97.0.1/32")
        .unwrap();
    let forwarded = |mesh: &LocalMesh| {
        let gamma = mesh.status("gamma").unwrap();
        let a = &gamma["relay"]["allocations"][0];
        a["forwarded_bytes"][0].as_u64().unwrap_or(0)
            + a["forwarded_bytes"][1].as_u64().unwrap_or(0)
    };
    let (gamma_before, coordinator_before) = udp_in(&net);
    let forwarded_before = forwarded(&mesh);
    let ping = netns::ping(&net.a, TUNNEL_B, 20).unwrap();
    let ping_back = netns::ping(&net.b, TUNNEL_A, 10).unwrap();
    let (gamma_after, coordinator_after) = udp_in(&net);
    let forwarded_after = forwarded(&mesh);
    assert_eq!(ping.received, ping.transmitted, "{ping:?}");
    assert_eq!(ping_back.received, ping_back.transmitted, "{ping_back:?}");
    // 30 echoes and replies, each a WireGuard datagram of at least 116
    // bytes, crossed gamma (probes too, so more).
    let relayed = forwarded_after - forwarded_before;
    assert!(relayed >= 60 * 116, "gamma forwarded {relayed} bytes");
    let to_gamma = gamma_after - gamma_before;
    assert!(
        to_gamma >= relayed,
        "{to_gamma} bytes reached gamma's address"
    );
    let to_coordinator = coordinator_after - coordinator_before;
    assert!(
        to_coordinator < relayed,
        "{to_coordinator} bytes reached the coordinator's address for {relayed} relayed"
    );
    for node in ["alpha", "beta"] {
        assert_eq!(
            carrying(&mesh, node).map(|c| c.0).as_deref(),
            Some(NODE_RELAY),
            "{node} still on the node relay"
        );
    }
    eprintln!(
        "netns_node_relay: mesh up {:.1} s after start; both ends on {NODE_RELAY} via {relay_addr}; \
         ping avg {:.2} ms (back {:.2} ms); gamma forwarded {relayed} bytes, {to_gamma} reached its \
         address, {to_coordinator} the coordinator's; whole test {:.1} s",
        up.as_secs_f64(),
        ping.avg_rtt_ms.unwrap_or(f64::NAN),
        ping_back.avg_rtt_ms.unwrap_or(f64::NAN),
        started.elapsed().as_secs_f64(),
    );
    // Stop the daemons before their namespaces go.
    drop(mesh);
}
