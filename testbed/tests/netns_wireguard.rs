//! WireGuard for real across the mesh, in network namespaces (root only;
//! skipped loudly without root unless `TL_REQUIRE_NETNS=1`, which CI sets).
//!
//! Three namespaces, routed through the hub:
//!
//! ```text
//!  ns …-a                        ns …-hub                       ns …-b
//!  transitloom-node alpha        transitloom-coordinator        transitloom-node beta
//!  wireguard-go 10.99.0.1/24     10.77.1.1 ┐ forwards ┌ 10.77.2.1  wireguard-go 10.99.0.2/24
//!  uplink 10.77.1.2 ── veth ──── hub-a     └──────────┘ hub-b ─── veth ── uplink 10.77.2.2
//! ```
//!
//! In each node namespace WireGuard listens on 51820, which is the node's
//! service target (127.0.0.1:51820); its one peer's `Endpoint` is the
//! ingress address `transitloom-node wg-peers` prints (127.0.0.1:PORT), and
//! PersistentKeepalive is unset. An nftables counter in the hub counts the
//! UDP the mesh forwards from alpha's uplink to beta's, and another counts
//! forwarded TCP, which must stay zero: iperf3 has to go inside WireGuard.
//!
//! Checked: ping crosses the tunnel with a WireGuard handshake; a TCP iperf3
//! run has real goodput, and its bytes show up in both nodes' path counters
//! and the hub's counter; then, during a 12 s iperf3 run, alpha's daemon is
//! SIGKILLed and started again: its ingress port is the same, neither
//! WireGuard configuration changed (no endpoint roamed, nothing was
//! reconfigured), and the transfer stalls and resumes and completes.
//! Last, as a baseline, the two WireGuards are pointed straight at each
//! other and iperf3 runs again without the mesh. The figures (RTT, goodput,
//! retransmits, the stall, mesh/direct ratio) go to standard error; run with
//! `--nocapture` to see them. When the test fails, every process's log and
//! config stay in `target/tmp/tlwg-PID/` until the next run clears them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use transitloom_testbed::netns::{self, HubAndTwo, Iperf3, Scratch, WireGuard};
use transitloom_testbed::{Binaries, LocalMesh};

/// Names of namespaces, interfaces and scratch folders start with this.
const PREFIX: &str = "tlwg";
const WG_PORT: u16 = 51820;
const IPERF_PORT: u16 = 5201;
const TUNNEL_A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 0, 1));
const TUNNEL_B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 0, 2));

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Data bytes (sent, received) on every path of `node`'s association with
/// `peer`, from its status.
fn path_bytes(mesh: &LocalMesh, node: &str, peer: &str) -> (u64, u64) {
    let status = mesh.status(node).unwrap();
    let assocs = status["associations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let assoc = assocs
        .iter()
        .find(|a| a["peer"] == peer)
        .unwrap_or_else(|| panic!("{node} has no association with {peer}: {status}"));
    let paths = assoc["paths"].as_array().cloned().unwrap_or_default();
    paths.iter().fold((0, 0), |(tx, rx), p| {
        (
            tx + p["tx_bytes"].as_u64().unwrap_or(0),
            rx + p["rx_bytes"].as_u64().unwrap_or(0),
        )
    })
}

/// The one endpoint `node`'s `wg-peers` prints for `peer`.
fn wg_peers_endpoint(mesh: &LocalMesh, node: &str, peer: &str) -> SocketAddr {
    let text = mesh.wg_peers(node).unwrap();
    let endpoints = netns::wg_peer_endpoints(&text).unwrap();
    let found: Vec<SocketAddr> = endpoints
        .iter()
        .filter(|(p, _)| p == peer)
        .map(|(_, a)| *a)
        .collect();
    assert_eq!(found.len(), 1, "{node}: wg-peers printed {text:?}");
    found[0]
}

fn assoc_up(mesh: &LocalMesh, node: &str) -> bool {
    mesh.status(node)
        .ok()
        .is_some_and(|s| s["associations"][0]["state"] == "up")
}

fn mbit(bps: f64) -> f64 {
    bps / 1e6
}

#[test]
fn wireguard_crosses_the_mesh_in_namespaces_and_survives_a_node_restart() {
    let test = "netns_wireguard";
    if !netns::require_root(
        test,
        &[
            "ip",
            "ss",
            "wireguard-go",
            "wg",
            "iperf3",
            "nft",
            "ping",
            "kill",
            "sysctl",
        ],
    ) {
        return;
    }
    let started = Instant::now();
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    netns::remove_leftovers(PREFIX, Some(tmp));
    let run = netns::run_prefix(PREFIX);
    let scratch = Scratch::create(tmp.join(&run)).unwrap();
    let dir = scratch.path();
    let bins = Binaries::for_tests().unwrap();

    // The network.
    let net = HubAndTwo::build(&run, 77).unwrap();
    let (hub, ns_a, ns_b) = (&net.hub, &net.a, &net.b);
    hub.nft(
        "table inet tlwg {\n\
           counter mesh_udp {}\n\
           counter tcp_forwarded {}\n\
           chain forward {\n\
             type filter hook forward priority 0; policy accept;\n\
             ip saddr 10.77.1.2 ip daddr 10.77.2.2 meta l4proto udp counter name mesh_udp\n\
             meta l4proto tcp counter name tcp_forwarded\n\
           }\n\
         }\n",
    )
    .unwrap();

    // WireGuard on both ends, no peers yet.
    let pid = std::process::id();
    let (wg_a, wg_b) = WireGuard::pair(
        ns_a,
        ns_b,
        &format!("{PREFIX}{pid}"),
        WG_PORT,
        "10.99.0",
        dir,
    )
    .unwrap();

    // The mesh.
    let spec = net.wg_mesh(7443, WG_PORT);
    let mut mesh = LocalMesh::start(&dir.join("mesh"), bins, spec).unwrap();
    mesh.wait_up(Duration::from_secs(30)).unwrap();
    let up_after = started.elapsed();

    // Each WireGuard's peer endpoint is what its node's wg-peers prints.
    let ingress_a = wg_peers_endpoint(&mesh, "alpha", "beta/wg0");
    let ingress_b = wg_peers_endpoint(&mesh, "beta", "alpha/wg0");
    assert_eq!(ingress_a, mesh.ingress("alpha", "beta/wg0").unwrap());
    assert_eq!(ingress_b, mesh.ingress("beta", "alpha/wg0").unwrap());
    assert!(ingress_a.ip().is_loopback() && ingress_b.ip().is_loopback());
    wg_a.set_peer(wg_b.public_key(), ingress_a, "10.99.0.2/32")
        .unwrap();
    wg_b.set_peer(wg_a.public_key(), ingress_b, "10.99.0.1/32")
        .unwrap();
    for (wg, other) in [(&wg_a, &wg_b), (&wg_b, &wg_a)] {
        let peer = wg.peer(other.public_key()).unwrap();
        assert_eq!(peer.persistent_keepalive, None, "{}", wg.name());
        assert_eq!(peer.latest_handshake, None, "{}", wg.name());
    }

    // Ping across the tunnel; that is WireGuard's first handshake.
    let ping = netns::ping(ns_a, TUNNEL_B, 10).unwrap();
    assert_eq!(ping.received, ping.transmitted, "{ping:?}");
    for (wg, other) in [(&wg_a, &wg_b), (&wg_b, &wg_a)] {
        let peer = wg.peer(other.public_key()).unwrap();
        assert!(
            peer.latest_handshake.is_some(),
            "{}: no handshake",
            wg.name()
        );
        assert!(peer.rx_bytes > 0, "{}: nothing received", wg.name());
    }
    let ping_back = netns::ping(ns_b, TUNNEL_A, 5).unwrap();
    assert_eq!(ping_back.received, ping_back.transmitted, "{ping_back:?}");

    // A steady TCP transfer, alpha to beta, and proof it went through the
    // mesh: both nodes' path counters and the hub's counter grew by at
    // least what iperf3 delivered, and no TCP crossed the hub bare.
    let a_before = path_bytes(&mesh, "alpha", "beta/wg0");
    let b_before = path_bytes(&mesh, "beta", "alpha/wg0");
    let (_, hub_before) = hub.nft_counter("tlwg", "mesh_udp").unwrap();
    let server =
        Iperf3::server(ns_b, TUNNEL_B, IPERF_PORT, &dir.join("iperf3-server-1.log")).unwrap();
    let steady = server
        .client(ns_a, 5, &dir.join("iperf3-steady.json"))
        .unwrap()
        .finish(Duration::from_secs(15))
        .unwrap();
    drop(server);
    let a_after = path_bytes(&mesh, "alpha", "beta/wg0");
    let b_after = path_bytes(&mesh, "beta", "alpha/wg0");
    let (_, hub_after) = hub.nft_counter("tlwg", "mesh_udp").unwrap();
    assert!(
        steady.received_bps > 10e6,
        "goodput only {:.1} Mbit/s",
        mbit(steady.received_bps)
    );
    assert!(
        a_after.0 - a_before.0 >= steady.received_bytes,
        "alpha sent {a_before:?} → {a_after:?}"
    );
    assert!(
        b_after.1 - b_before.1 >= steady.received_bytes,
        "beta got {b_before:?} → {b_after:?}"
    );
    assert!(hub_after - hub_before >= steady.received_bytes);
    assert_eq!(hub.nft_counter("tlwg", "tcp_forwarded").unwrap(), (0, 0));

    // Kill and restart alpha's daemon in the middle of a 12 s transfer.
    let conf_a = wg_a.showconf().unwrap();
    let conf_b = wg_b.showconf().unwrap();
    let server =
        Iperf3::server(ns_b, TUNNEL_B, IPERF_PORT, &dir.join("iperf3-server-2.log")).unwrap();
    let transfer_started = Instant::now();
    let client = server
        .client(ns_a, 12, &dir.join("iperf3-restart.json"))
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let killed_at = transfer_started.elapsed().as_secs_f64();
    mesh.kill_node("alpha").unwrap();
    std::thread::sleep(Duration::from_secs(1));
    mesh.start_node("alpha").unwrap();
    let restarted = Instant::now();
    let deadline = restarted + Duration::from_secs(20);
    while !assoc_up(&mesh, "alpha") {
        assert!(
            Instant::now() < deadline,
            "alpha's association did not come back up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let back_up_in = restarted.elapsed();
    let restart = client.finish(Duration::from_secs(30)).unwrap();
    drop(server);

    // Same ingress, nothing reconfigured, nothing roamed.
    assert_eq!(mesh.ingress("alpha", "beta/wg0").unwrap(), ingress_a);
    assert_eq!(wg_peers_endpoint(&mesh, "alpha", "beta/wg0"), ingress_a);
    assert_eq!(mesh.ingress("beta", "alpha/wg0").unwrap(), ingress_b);
    assert_eq!(
        wg_a.showconf().unwrap(),
        conf_a,
        "alpha's WireGuard changed"
    );
    assert_eq!(wg_b.showconf().unwrap(), conf_b, "beta's WireGuard changed");
    // The restarted daemon carried the resumed transfer.
    let a_new = path_bytes(&mesh, "alpha", "beta/wg0");
    assert!(
        a_new.0 > 1_000_000,
        "the restarted alpha sent only {a_new:?}"
    );
    // The kill shows as a stall where it happened (the daemon was gone for
    // a second), and data flowed again after it.
    let floor = steady.received_bps / 8.0 / 20.0;
    let stalls = restart.stalls(floor);
    let (stall_start, stall) = stalls
        .iter()
        .copied()
        .find(|&(start, len)| start + len > killed_at && start < killed_at + 1.5)
        .unwrap_or_else(|| {
            panic!("no stall where alpha was killed ({killed_at:.1} s): {stalls:?}")
        });
    assert!(
        stall >= 0.5,
        "stall of {stall} s is shorter than the downtime"
    );
    let resumed = restart.bytes_after(stall_start + stall);
    assert!(resumed > 1_000_000, "only {resumed} bytes after the stall");
    let ping_after = netns::ping(ns_a, TUNNEL_B, 5).unwrap();
    assert_eq!(
        ping_after.received, ping_after.transmitted,
        "{ping_after:?}"
    );
    assert_eq!(hub.nft_counter("tlwg", "tcp_forwarded").unwrap(), (0, 0));

    // The baseline, in the same run: the same WireGuard pair pointed
    // straight at each other across the same routed network, no mesh.
    wg_a.set_peer(
        wg_b.public_key(),
        SocketAddr::new(ip("10.77.2.2"), WG_PORT),
        "10.99.0.2/32",
    )
    .unwrap();
    wg_b.set_peer(
        wg_a.public_key(),
        SocketAddr::new(ip("10.77.1.2"), WG_PORT),
        "10.99.0.1/32",
    )
    .unwrap();
    let server =
        Iperf3::server(ns_b, TUNNEL_B, IPERF_PORT, &dir.join("iperf3-server-3.log")).unwrap();
    let direct = server
        .client(ns_a, 5, &dir.join("iperf3-direct.json"))
        .unwrap()
        .finish(Duration::from_secs(15))
        .unwrap();
    drop(server);

    eprintln!(
        "netns_wireguard: mesh up in {:.1} s; ping {}/{} avg {:.2} ms (back {:.2} ms, after restart {:.2} ms)\n\
         netns_wireguard: iperf3 TCP 5 s: {:.1} Mbit/s goodput, {} retransmits; mesh carried {} bytes for {} delivered\n\
         netns_wireguard: iperf3 TCP 12 s with alpha killed at {killed_at:.1} s and restarted 1 s later \
         (association up {:.2} s after the restart): {:.1} Mbit/s overall, {} retransmits, \
         stall {stall:.1} s from {stall_start:.1} s, {} bytes after it\n\
         netns_wireguard: baseline, WireGuard direct without the mesh, iperf3 TCP 5 s: {:.1} Mbit/s, \
         {} retransmits; mesh/direct goodput {:.2}\n\
         netns_wireguard: whole test {:.1} s",
        up_after.as_secs_f64(),
        ping.received,
        ping.transmitted,
        ping.avg_rtt_ms.unwrap_or(f64::NAN),
        ping_back.avg_rtt_ms.unwrap_or(f64::NAN),
        ping_after.avg_rtt_ms.unwrap_or(f64::NAN),
        mbit(steady.received_bps),
        steady.retransmits,
        a_after.0 - a_before.0,
        steady.received_bytes,
        back_up_in.as_secs_f64(),
        mbit(restart.received_bps),
        restart.retransmits,
        resumed,
        mbit(direct.received_bps),
        direct.retransmits,
        steady.received_bps / direct.received_bps,
        started.elapsed().as_secs_f64(),
    );
    // Stop the daemons before their namespaces go.
    drop(mesh);
}
