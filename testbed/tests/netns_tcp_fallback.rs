//! The control plane's TCP fallback for real, in network namespaces (root
//! only; skipped loudly without root unless `TL_REQUIRE_NETNS=1`, which CI
//! sets, and then it fails).
//!
//! The netns_wireguard network, with alpha's UDP to the coordinator's port
//! dropped by nftables in alpha's namespace:
//!
//! ```text
//!  ns …-a                          ns …-hub                    ns …-b
//!  transitloom-node alpha          transitloom-coordinator     transitloom-node beta
//!  nft: udp to 10.77.1.1:7443      10.77.1.1:7443 UDP + TCP
//!       dropped (counted)
//!  uplink 10.77.1.2 ── veth ── hub-a    (forwards)    hub-b ── veth ── uplink 10.77.2.2
//! ```
//!
//! Checked: alpha enrolls and is admitted over TCP to the same address and
//! port (its QUIC attempts are dropped and counted, TCP to the port is
//! counted), beta stays on QUIC, both status pages say so
//! (`node.control_transport`), the association comes up (the data plane is
//! UDP node to node, not blocked), and WireGuard pings cross it; `tlctl` in
//! alpha's namespace gets its answer after trying QUIC for 3 s, and at once
//! with `--tcp`. Figures on standard error (`--nocapture`): how long alpha
//! took to be admitted over TCP from its start, and both `tlctl` runs. When the test fails, every process's log and config
//! stay in `target/tmp/tltcp-PID/` until the next run clears them.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use transitloom_testbed::netns::{self, HubAndTwo, Scratch, WireGuard};
use transitloom_testbed::{Binaries, LocalMesh};

/// Names of namespaces, interfaces and scratch folders start with this.
const PREFIX: &str = "tltcp";
const WG_PORT: u16 = 51820;
const COORDINATOR_PORT: u16 = 7443;
const TUNNEL_B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 99, 1, 2));

/// `node`'s control transport once it is admitted.
fn admitted_over(mesh: &LocalMesh, node: &str) -> Option<String> {
    let status = mesh.status(node).ok()?;
    (status["node"]["admission"] == "admitted")
        .then(|| {
            status["node"]["control_transport"]
                .as_str()
                .map(str::to_owned)
        })
        .flatten()
}

#[test]
fn a_node_whose_udp_to_the_coordinator_is_blocked_enrolls_and_carries_data_over_tcp() {
    let test = "netns_tcp_fallback";
    if !netns::require_root(
        test,
        &["ip", "wireguard-go", "wg", "nft", "ping", "kill", "sysctl"],
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
    let (ns_a, ns_b) = (&net.a, &net.b);
    // Alpha's UDP to the coordinator's port goes nowhere; its TCP to the
    // same port, and all its UDP to beta, pass. QUIC (a long header: the
    // first bit of the payload set) is counted apart from the node's
    // reflector probes (control packets, whose first byte is zero), which
    // go to the same port whenever the node refreshes its address.
    ns_a.nft(&format!(
        "table inet {PREFIX} {{\n\
           counter udp_dropped {{}}\n\
           counter udp_other {{}}\n\
           counter tcp_control {{}}\n\
           counter udp_to_beta {{}}\n\
           chain output {{\n\
             type filter hook output priority 0; policy accept;\n\
             ip daddr 10.77.1.1 udp dport {COORDINATOR_PORT} @th,64,1 1 counter name udp_dropped drop\n\
             ip daddr 10.77.1.1 udp dport {COORDINATOR_PORT} counter name udp_other drop\n\
             ip daddr 10.77.1.1 tcp dport {COORDINATOR_PORT} counter name tcp_control\n\
             ip daddr 10.77.2.2 meta l4proto udp counter name udp_to_beta\n\
           }}\n\
         }}\n"
    ))
    .unwrap();

    // WireGuard on both ends, no peers yet.
    let pid = std::process::id();
    let (wg_a, wg_b) = WireGuard::pair(
        ns_a,
        ns_b,
        &format!("{PREFIX}{pid}"),
        WG_PORT,
        "10.99.1",
        dir,
    )
    .unwrap();

    // The mesh: LocalMesh starts the coordinator, invites both nodes and
    // starts them; alpha has only its join token and must enroll over TCP.
    let spec = net.wg_mesh(COORDINATOR_PORT, WG_PORT);
    let mesh_started = Instant::now();
    let tlctl = bins.tlctl.clone();
    let mesh = LocalMesh::start(&dir.join("mesh"), bins, spec).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let alpha_over = loop {
        if let Some(transport) = admitted_over(&mesh, "alpha") {
            break transport;
        }
        assert!(
            Instant::now() < deadline,
            "alpha was not admitted within 30 s: {:?}",
            mesh.status("alpha")
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let alpha_admitted_after = mesh_started.elapsed();
    assert_eq!(alpha_over, "tcp");
    mesh.wait_up(Duration::from_secs(30)).unwrap();
    let up_after = mesh_started.elapsed();
    assert_eq!(admitted_over(&mesh, "beta").as_deref(), Some("quic"));
    assert_eq!(admitted_over(&mesh, "alpha").as_deref(), Some("tcp"));
    let (udp_dropped, _) = ns_a.nft_counter(PREFIX, "udp_dropped").unwrap();
    let (tcp_control, _) = ns_a.nft_counter(PREFIX, "tcp_control").unwrap();
    assert!(udp_dropped > 0, "alpha tried QUIC first");
    assert!(tcp_control > 0, "alpha's control session went over TCP");

    // Data crosses the association: WireGuard, pointed at the ingresses.
    let ingress_a = mesh.ingress("alpha", "beta/wg0").unwrap();
    let ingress_b = mesh.ingress("beta", "alpha/wg0").unwrap();
    wg_a.set_peer(wg_b.public_key(), ingress_a, "10.99.1.2/32")
        .unwrap();
    wg_b.set_peer(wg_a.public_key(), ingress_b, "10.99.1.1/32")
        .unwrap();
    let (to_beta_before, _) = ns_a.nft_counter(PREFIX, "udp_to_beta").unwrap();
    let ping = netns::ping(ns_a, TUNNEL_B, 10).unwrap();
    assert_eq!(ping.received, ping.transmitted, "{ping:?}");
    let (to_beta_after, _) = ns_a.nft_counter(PREFIX, "udp_to_beta").unwrap();
    assert!(
        to_beta_after >= to_beta_before + u64::from(ping.transmitted),
        "the data went node to node over UDP"
    );
    let alpha = mesh.status("alpha").unwrap();
    assert_eq!(alpha["node"]["control_transport"], "tcp", "{alpha}");
    assert_eq!(alpha["associations"][0]["state"], "up", "{alpha}");

    // tlctl in alpha's namespace falls back the same way; --tcp skips QUIC.
    let admin = |extra: &[&str]| {
        let began = Instant::now();
        let out = ns_a
            .command(&tlctl)
            .args([
                "node",
                "list",
                "--timeout",
                "10",
                "--coordinator-name",
                "coordinator",
            ])
            .args(["--coordinator", "10.77.1.1:7443", "--admin"])
            .arg(dir.join("mesh").join("admin"))
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && stdout.contains("alpha"),
            "tlctl {extra:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        began.elapsed()
    };
    let dropped = || ns_a.nft_counter(PREFIX, "udp_dropped").unwrap().0;
    let before = dropped();
    let tlctl_fallback = admin(&[]);
    let between = dropped();
    let tlctl_tcp = admin(&["--tcp"]);
    assert!(between > before, "tlctl tried QUIC first");
    assert_eq!(dropped(), between, "tlctl --tcp did not try QUIC");

    eprintln!(
        "netns_tcp_fallback: alpha admitted over TCP {:.2} s after the mesh started \
         (QUIC bound 3 s; {udp_dropped} QUIC datagrams dropped, {tcp_control} TCP packets to the port); \
         associations up after {:.2} s; ping through WireGuard {}/{} avg {:.2} ms; \
         tlctl node list from alpha's namespace {:.2} s (QUIC then TCP), {:.2} s with --tcp; \
         whole test {:.1} s",
        alpha_admitted_after.as_secs_f64(),
        up_after.as_secs_f64(),
        ping.received,
        ping.transmitted,
        ping.avg_rtt_ms.unwrap_or(f64::NAN),
        tlctl_fallback.as_secs_f64(),
        tlctl_tcp.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    // Stop the daemons before their namespaces go.
    drop(mesh);
}
