//! Multi-WAN for real (issue 6), in network namespaces (root only; skipped
//! loudly without root unless `TL_REQUIRE_NETNS=1`, which CI sets).
//!
//! Node alpha has two uplinks, `wan1` and `wan2`, each its own veth to the
//! hub and each rate-limited with `tc … tbf` both ways; beta has one
//! ([`TwoUplinks`]). wireguard-go runs on both, each peer's endpoint at its
//! node's ingress, and iperf3 runs TCP from alpha to beta inside the tunnel.
//! Alpha's uplinks follow their interfaces (`interface = "wan1"`).
//!
//! Checked, with one mesh and no restart after the start:
//! (a) a TCP transfer completes with both uplinks up, what the uplinks
//!     carried (alpha's per-uplink counters, the hub's per-link counters)
//!     covers what iperf3 delivered, and each matched uplink carried at
//!     least a fifth of it;
//! (b) during a second transfer the uplink carrying more of it goes down
//!     (`ip link set … down`): the transfer completes, alpha's status shows
//!     that uplink down with the reason and its counters frozen, and the
//!     other uplink carries the rest (status and hub counters both); the
//!     stall is read from iperf3's 0.1 s receiver intervals and printed;
//! (c) the uplink comes back up with a new address: alpha rebinds without
//!     a restart (same process), status shows it up at the new address with
//!     a validated path, beta validates a path to the new address, and a
//!     third transfer uses it again.
//!
//! Performance is printed, never asserted: goodput, the stall, the time to
//! see each change. Run with `--nocapture` to see them. When the test fails,
//! every process's log and config stay in `target/tmp/tlmw-PID/` until the
//! next run clears them.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use transitloom_testbed::netns::{self, Iperf3, Iperf3Report, Scratch, TwoUplinks, WireGuard};
use transitloom_testbed::LocalMesh;

/// Names of namespaces, interfaces and scratch folders start with this.
const PREFIX: &str = "tlmw";
const WG_PORT: u16 = 51820;
const IPERF_PORT: u16 = 5201;
const TUNNEL_A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 97, 0, 1));
const TUNNEL_B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 97, 0, 2));
/// Each uplink's rate, both ways.
const RATE_MBIT: u32 = 20;
const INTERVAL: Duration = Duration::from_millis(100);

/// One uplink of alpha's status.
#[derive(Debug, Clone, PartialEq)]
struct Uplink {
    name: String,
    state: String,
    address: Option<String>,
    down_reason: Option<String>,
    paths_active: u64,
    address_changes: u64,
    tx: u64,
    rx: u64,
}

fn uplinks(mesh: &LocalMesh) -> Vec<Uplink> {
    let status = mesh.status("alpha").unwrap();
    status["uplinks"]
        .as_array()
        .unwrap_or_else(|| panic!("no uplinks in {status}"))
        .iter()
        .map(|u| Uplink {
            name: u["name"].as_str().unwrap_or_default().to_owned(),
            state: u["state"].as_str().unwrap_or_default().to_owned(),
            address: u["address"].as_str().map(str::to_owned),
            down_reason: u["down_reason"].as_str().map(str::to_owned),
            paths_active: u["paths_active"].as_u64().unwrap_or(0),
            address_changes: u["address_changes"].as_u64().unwrap_or(0),
            tx: u["tx_bytes"].as_u64().unwrap_or(0),
            rx: u["rx_bytes"].as_u64().unwrap_or(0),
        })
        .collect()
}

/// Polls alpha's uplinks until `done` holds for them, or panics naming
/// `what` after `timeout`. Returns them and how long it took.
fn wait_uplinks(
    mesh: &LocalMesh,
    what: &str,
    timeout: Duration,
    done: impl Fn(&[Uplink]) -> bool,
) -> (Vec<Uplink>, Duration) {
    let start = Instant::now();
    loop {
        let now = uplinks(mesh);
        if done(&now) {
            return (now, start.elapsed());
        }
        assert!(
            start.elapsed() < timeout,
            "{what}: not within {timeout:?}; alpha's uplinks: {now:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The remotes of beta's active paths to alpha.
fn beta_active_remotes(mesh: &LocalMesh) -> Vec<String> {
    let status = mesh.status("beta").unwrap();
    let paths: Vec<Value> = status["associations"][0]["paths"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    paths
        .iter()
        .filter(|p| p["state"] == "active")
        .filter_map(|p| p["remote"].as_str().map(str::to_owned))
        .collect()
}

fn mbit(bps: f64) -> f64 {
    bps / 1e6
}

/// A TCP transfer alpha → beta inside WireGuard, reported every 0.1 s.
fn transfer(
    net: &TwoUplinks,
    dir: &Path,
    tag: &str,
    seconds: u32,
    during: impl FnOnce(Instant),
) -> Iperf3Report {
    let server = Iperf3::server_every(
        &net.b,
        TUNNEL_B,
        IPERF_PORT,
        INTERVAL,
        &dir.join(format!("iperf3-server-{tag}.log")),
    )
    .unwrap();
    let started = Instant::now();
    let client = server
        .client(&net.a, seconds, &dir.join(format!("iperf3-{tag}.json")))
        .unwrap();
    during(started);
    client.finish(Duration::from_secs(20)).unwrap()
}

#[test]
fn a_node_with_two_uplinks_carries_wireguard_and_survives_losing_one() {
    let test = "netns_multiwan";
    if !netns::require_root(
        test,
        &[
            "ip",
            "ss",
            "tc",
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
    let bins = transitloom_testbed::Binaries::for_tests().unwrap();

    // The network, rate-limited, with the hub counting each uplink.
    let mut net = TwoUplinks::build(&run, 78).unwrap();
    net.limit(RATE_MBIT).unwrap();
    net.count_uplinks().unwrap();

    // WireGuard on both ends, no peers yet.
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

    // The mesh; then alpha follows its interfaces instead of fixed
    // addresses (it keeps its identity and ingress across the restart).
    let mesh_dir = dir.join("mesh");
    let mut mesh = LocalMesh::start(&mesh_dir, bins, net.wg_mesh(7443, WG_PORT)).unwrap();
    mesh.wait_up(Duration::from_secs(30)).unwrap();
    mesh.stop_node("alpha").unwrap();
    netns::follow_interfaces(&mesh_dir, "alpha", &TwoUplinks::UPLINKS).unwrap();
    mesh.start_node("alpha").unwrap();
    mesh.wait_up(Duration::from_secs(30)).unwrap();
    let alpha_pid = mesh.pid("alpha");
    let (both, _) = wait_uplinks(
        &mesh,
        "both uplinks up with a validated path each",
        Duration::from_secs(20),
        |u| u.len() == 2 && u.iter().all(|u| u.state == "up" && u.paths_active >= 1),
    );
    for (u, addr) in both.iter().zip(net.a_addrs) {
        assert_eq!(u.address, Some(addr.to_string()), "{u:?}");
    }
    // Beta still holds paths to the ports alpha had before its restart
    // until their probes fail; WireGuard's first handshake answer could go
    // there and be retried only five seconds later.
    let deadline = Instant::now() + Duration::from_secs(20);
    while beta_active_remotes(&mesh).len() != 2 {
        assert!(
            Instant::now() < deadline,
            "beta should have one active path to each of alpha's uplinks: {:?}",
            beta_active_remotes(&mesh)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let up_after = started.elapsed();

    let ingress_a = mesh.ingress("alpha", "beta/wg0").unwrap();
    let ingress_b = mesh.ingress("beta", "alpha/wg0").unwrap();
    wg_a.set_peer(wg_b.public_key(), ingress_a, "10.97.0.2/32")
        .unwrap();
    wg_b.set_peer(wg_a.public_key(), ingress_b, "10.97.0.1/32")
        .unwrap();
    let ping = netns::ping(&net.a, TUNNEL_B, 10).unwrap();
    assert_eq!(
        ping.received,
        ping.transmitted,
        "{ping:?}\nalpha: {:#}\nbeta: {:#}",
        mesh.status("alpha").unwrap(),
        mesh.status("beta").unwrap()
    );
    let ping_back = netns::ping(&net.b, TUNNEL_A, 5).unwrap();
    assert_eq!(ping_back.received, ping_back.transmitted, "{ping_back:?}");

    // (a) Both uplinks: a transfer completes, and the uplinks carried it.
    let before = uplinks(&mesh);
    let hub_before = net.uplink_bytes().unwrap();
    let steady = transfer(&net, dir, "both", 6, |_| {});
    let after = uplinks(&mesh);
    let hub_after = net.uplink_bytes().unwrap();
    let sent: Vec<u64> = (0..2).map(|i| after[i].tx - before[i].tx).collect();
    let hub_sent: Vec<u64> = (0..2).map(|i| hub_after[i] - hub_before[i]).collect();
    assert!(steady.received_bytes > 1_000_000, "{steady:?}");
    assert!(
        sent.iter().sum::<u64>() >= steady.received_bytes,
        "alpha's uplinks sent {sent:?} for {} delivered",
        steady.received_bytes
    );
    assert!(
        hub_sent.iter().sum::<u64>() >= steady.received_bytes,
        "the hub forwarded {hub_sent:?} for {} delivered",
        steady.received_bytes
    );
    // The uplinks are matched, so both carry a good share of a flow that
    // fills them (a scheduler keeping to one would put it all on one).
    for (i, name) in TwoUplinks::UPLINKS.iter().enumerate() {
        assert!(
            hub_sent[i] * 5 >= steady.received_bytes,
            "{name} carried {} of {} delivered (alpha's uplinks sent {sent:?})",
            hub_sent[i],
            steady.received_bytes
        );
    }
    assert_eq!(
        net.hub
            .nft_counter(TwoUplinks::COUNTERS, "tcp_forwarded")
            .unwrap(),
        (0, 0)
    );

    // (b) The uplink carrying more goes down in the middle of a transfer.
    let mut down = 0;
    let mut down_at = 0.0;
    let mut seen_down_in = Duration::ZERO;
    let mut seen_at = 0.0;
    let mut at_down = Vec::new();
    let mut hub_at_down = [0u64; 2];
    let start_counts = uplinks(&mesh);
    let failover = transfer(&net, dir, "failover", 12, |t0| {
        std::thread::sleep(Duration::from_secs(4));
        let now = uplinks(&mesh);
        down = usize::from(now[1].tx - start_counts[1].tx > now[0].tx - start_counts[0].tx);
        down_at = t0.elapsed().as_secs_f64();
        net.set_link(down, false).unwrap();
        let (seen, took) = wait_uplinks(
            &mesh,
            "alpha to see the uplink down",
            Duration::from_secs(5),
            |u| u[down].state == "down",
        );
        seen_down_in = took;
        seen_at = t0.elapsed().as_secs_f64();
        at_down = seen;
        hub_at_down = net.uplink_bytes().unwrap();
    });
    let other = 1 - down;
    let end = uplinks(&mesh);
    let hub_end = net.uplink_bytes().unwrap();
    let (down_name, other_name) = (TwoUplinks::UPLINKS[down], TwoUplinks::UPLINKS[other]);
    assert!(
        end[down]
            .down_reason
            .as_deref()
            .is_some_and(|why| why.contains(&format!("interface \"{down_name}\" is down"))),
        "{:?}",
        end[down]
    );
    assert_eq!(end[down].address, None);
    assert_eq!(end[down].paths_active, 0);
    assert_eq!(
        (end[down].tx, end[down].rx),
        (at_down[down].tx, at_down[down].rx),
        "{down_name} carried nothing once down (and its counts were kept)"
    );
    assert!(
        end[down].tx >= start_counts[down].tx,
        "counters never go backwards"
    );
    // Received half a second after alpha showed the change: sent after it.
    let resumed = failover.bytes_after(seen_at + 0.5);
    assert!(
        resumed > 1_000_000,
        "only {resumed} bytes after the uplink went down at {down_at:.1} s (seen at {seen_at:.1} s)"
    );
    let other_sent = end[other].tx - at_down[other].tx;
    let hub_other = hub_end[other] - hub_at_down[other];
    assert!(
        other_sent >= resumed && hub_other >= resumed,
        "{other_name} sent {other_sent} (hub saw {hub_other}) for {resumed} delivered after the change"
    );
    let floor = steady.received_bps / 8.0 / 10.0;
    let stall = failover
        .stalls(floor)
        .into_iter()
        .filter(|&(start, len)| start + len >= down_at - 0.2 && start <= down_at + 3.0)
        .fold(None, |best: Option<(f64, f64)>, s| match best {
            Some(b) if b.1 >= s.1 => Some(b),
            _ => Some(s),
        });

    // (c) Back up, renumbered: rebound without a restart.
    let old_addr = net.a_addrs[down];
    let new_addr = net.renumber(down, 3).unwrap();
    net.set_link(down, true).unwrap();
    let (back, back_in) = wait_uplinks(
        &mesh,
        "alpha to rebind the renumbered uplink and validate a path on it",
        Duration::from_secs(20),
        |u| {
            u[down].state == "up"
                && u[down].address == Some(new_addr.to_string())
                && u[down].paths_active >= 1
        },
    );
    assert!(back[down].address_changes >= 2, "{:?}", back[down]);
    assert_eq!(mesh.pid("alpha"), alpha_pid, "alpha was not restarted");
    let beta_wait = Instant::now();
    let deadline = beta_wait + Duration::from_secs(20);
    let wanted = new_addr.to_string();
    while !beta_active_remotes(&mesh)
        .iter()
        .any(|r| r.starts_with(&format!("{wanted}:")))
    {
        assert!(
            Instant::now() < deadline,
            "beta has no active path to {wanted} (was {old_addr}): {:?}",
            beta_active_remotes(&mesh)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let beta_in = back_in + beta_wait.elapsed();
    let again_before = uplinks(&mesh);
    let again = transfer(&net, dir, "again", 5, |_| {});
    let again_after = uplinks(&mesh);
    let again_sent: Vec<u64> = (0..2)
        .map(|i| again_after[i].tx - again_before[i].tx)
        .collect();
    assert!(again.received_bytes > 1_000_000, "{again:?}");
    assert!(
        again_sent[down] > 0,
        "{down_name} carried nothing after coming back: {again_sent:?}"
    );
    let log = std::fs::read_to_string(mesh_dir.join("alpha.log")).unwrap_or_default();
    assert!(log.contains("uplink down"), "alpha logged no change");
    assert!(log.contains("uplink up"), "alpha logged no return");
    assert_eq!(
        net.hub
            .nft_counter(TwoUplinks::COUNTERS, "tcp_forwarded")
            .unwrap(),
        (0, 0)
    );

    eprintln!(
        "netns_multiwan: two uplinks of {RATE_MBIT} Mbit/s each (tc tbf); mesh up with both in {:.1} s; ping avg {:.2} ms\n\
         netns_multiwan: (a) iperf3 TCP 6 s, both uplinks: {:.1} Mbit/s, {} retransmits; alpha sent wan1 {} / wan2 {} bytes (hub: {} / {})\n\
         netns_multiwan: (b) iperf3 TCP 12 s, {down_name} down at {down_at:.1} s (alpha's status showed it in {:.2} s): \
         {:.1} Mbit/s overall, {} retransmits; stall {}; {resumed} bytes after it, {other_name} sent {other_sent}\n\
         netns_multiwan: (c) {down_name} back up at {new_addr} (was {old_addr}): alpha up and validated in {:.2} s, beta validated a path to it within {:.2} s; \
         iperf3 TCP 5 s: {:.1} Mbit/s, alpha sent wan1 {} / wan2 {} bytes\n\
         netns_multiwan: whole test {:.1} s",
        up_after.as_secs_f64(),
        ping.avg_rtt_ms.unwrap_or(f64::NAN),
        mbit(steady.received_bps),
        steady.retransmits,
        sent[0],
        sent[1],
        hub_sent[0],
        hub_sent[1],
        seen_down_in.as_secs_f64(),
        mbit(failover.received_bps),
        failover.retransmits,
        stall.map_or("none below a tenth of the steady rate".to_owned(), |(s, l)| format!(
            "{l:.1} s from {s:.1} s (0.1 s intervals below a tenth of the steady rate)"
        )),
        back_in.as_secs_f64(),
        beta_in.as_secs_f64(),
        mbit(again.received_bps),
        again_sent[0],
        again_sent[1],
        started.elapsed().as_secs_f64(),
    );
    // Stop the daemons before their namespaces go.
    drop(mesh);
}
