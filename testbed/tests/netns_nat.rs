//! NAT traversal for real (issue 5, item 8), in network namespaces (root
//! only; skipped loudly without root unless `TL_REQUIRE_NETNS=1`, which CI
//! sets, and then it fails).
//!
//! Two nodes, each on a private network behind a Linux NAT router doing
//! nftables masquerade, and the coordinator on a public address in the
//! "internet" namespace with a second address as its extra reflector and
//! `[relay] data = true` on the first ([`NatPair`]):
//!
//! ```text
//!  alpha 192.168.1.2 ─ NAT 198.51.100.2 ─┐  internet: coordinator   ┌─ 192.0.2.2 NAT ─ 192.168.2.2 beta
//!                        (masquerade)    └─ 203.0.113.5 (+ .6) ─────┘  (masquerade)
//! ```
//!
//! The NAT routers drop what comes from outside unless it answers a mapping
//! (`policy drop` on input and forward), as gateways do, except in the
//! third case. Four cases, one after the other:
//! - cone: plain `masquerade` on both NATs. Linux keeps a socket's port
//!   while the outside tuple is free, so both nodes classify their NAT as
//!   `endpoint-independent/preserving` and meet directly: the path carrying
//!   data is `direct-public` on both ends. WireGuard pings cross, iperf3
//!   TCP has goodput, and then, in the middle of a transfer, the internet
//!   drops everything between the two NATs (the coordinator stays
//!   reachable): both ends move to the `coordinator-relay` path and the
//!   transfer goes on; when the drop is removed both return to
//!   `direct-public` once the direct path held its 2 s.
//! - hard: `masquerade fully-random` on both NATs. Each destination gets a
//!   random outside port, so both classify `endpoint-dependent/random` and
//!   no direct path can form: data goes by `coordinator-relay`, WireGuard
//!   pings cross and iperf3 TCP has goodput.
//! - bare: plain `masquerade` and no filter on the routers. A peer's probe
//!   that reaches a NAT before the host behind it has sent to that peer is
//!   delivered to the router itself, and conntrack keeps an entry for it;
//!   the host's own packet to the peer then clashes with that entry and
//!   leaves from another outside port, and both entries are refreshed by
//!   the probes, so the direct path may never form. The coordinator's
//!   punch starts both nodes at one moment, but two processes wake tens
//!   of microseconds or more apart and a packet crosses these veths in a
//!   few, so one NAT still hears the peer first (docs/performance.md).
//!   Checked: the NATs still classify as
//!   `endpoint-independent/preserving`, and whichever path the status
//!   says carries data (direct or relay) carries the pings and the
//!   transfer.
//! - mixed: `masquerade fully-random` on alpha's NAT, plain `masquerade`
//!   on beta's (both filtering), and `[nat] birthday = true` on both
//!   nodes: beta's random-port probes find one of alpha's temporary
//!   sockets and the data goes `direct-public` (the simulator's 99.97 %
//!   chance with the default caps; the relay carries until then).
//!
//! The figures (time from the association's install to its first
//! validated path, goodput direct and relayed, the stall when the direct
//! path is cut and how long the return took) go to standard error; run with
//! `--nocapture` to see them. When the test fails, every process's log and
//! config stay in `target/tmp/tlnat-PID-C/` (C the case's first letter)
//! until the next run clears them.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use transitloom_testbed::netns::{
    self, Firewall, Iperf3, Iperf3Report, Masquerade, NatPair, Scratch, WireGuard,
};
use transitloom_testbed::{Binaries, LocalMesh};

/// Names of namespaces, interfaces and scratch folders start with this.
const PREFIX: &str = "tlnat";
const WG_PORT: u16 = 51820;
const COORDINATOR_PORT: u16 = 7443;
const IPERF_PORT: u16 = 5201;
const TUNNEL_A: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1));
const TUNNEL_B: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 96, 0, 2));
/// iperf3's receiver reports this often, for reading stalls.
const INTERVAL: Duration = Duration::from_millis(100);
const DIRECT: &str = "direct-public";
const RELAY: &str = "coordinator-relay";

/// The cases share two cores; one at a time keeps their figures honest.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The first association of `node`, from its status.
fn association(mesh: &LocalMesh, node: &str) -> Value {
    mesh.status(node)
        .map(|s| s["associations"][0].clone())
        .unwrap_or(Value::Null)
}

/// The kind of the path carrying `node`'s data (weight 1), if any.
fn carrying(mesh: &LocalMesh, node: &str) -> Option<String> {
    let assoc = association(mesh, node);
    let paths = assoc["paths"].as_array()?;
    paths
        .iter()
        .find(|p| p["weight"].as_f64() == Some(1.0) && p["state"] == "active")
        .and_then(|p| p["kind"].as_str())
        .map(str::to_owned)
}

/// Polls until both nodes carry data on a path of `kind`, or panics naming
/// `what` after `timeout`; returns how long it took.
fn wait_carrying(mesh: &LocalMesh, kind: &str, what: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let now = [carrying(mesh, "alpha"), carrying(mesh, "beta")];
        if now.iter().all(|k| k.as_deref() == Some(kind)) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "{what}: not within {timeout:?}; carrying (alpha, beta) {now:?}\nalpha: {:#}\nbeta: {:#}",
            association(mesh, "alpha"),
            association(mesh, "beta"),
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `node`'s only uplink: its NAT class and reflexive address.
fn uplink_nat(mesh: &LocalMesh, node: &str) -> (String, Option<String>) {
    let status = mesh.status(node).unwrap();
    let u = &status["uplinks"][0];
    (
        u["nat"].as_str().unwrap_or_default().to_owned(),
        u["reflexive"].as_str().map(str::to_owned),
    )
}

/// Seconds since midnight (UTC) of a log line's timestamp
/// (`2026-01-02T03:04:05.678901Z  INFO …`).
fn log_time(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?;
    let time = stamp.split_once('T')?.1.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// From both nodes' logs: seconds from the later of the two installs of
/// the association to the first path either validated, and that path's
/// remote address.
fn first_path(mesh_dir: &Path) -> (f64, String) {
    let mut installed = Vec::new();
    let mut validated = Vec::new();
    for node in ["alpha", "beta"] {
        let log = std::fs::read_to_string(mesh_dir.join(format!("{node}.log"))).unwrap();
        let find = |what: &str| {
            log.lines()
                .find(|l| l.contains(what))
                .and_then(|l| Some((log_time(l)?, l.to_owned())))
                .unwrap_or_else(|| panic!("{node}.log has no {what:?}"))
        };
        installed.push(find("association installed").0);
        validated.push(find("path validated"));
    }
    let install = installed.iter().copied().fold(f64::MIN, f64::max);
    let (at, line) = validated
        .into_iter()
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap_or_default();
    let remote = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("remote="))
        .unwrap_or("?")
        .to_owned();
    // Across midnight the difference wraps.
    ((at - install).rem_euclid(86_400.0), remote)
}

fn mbit(bps: f64) -> f64 {
    bps / 1e6
}

/// A TCP transfer alpha → beta inside WireGuard, the receiver reporting
/// every 0.1 s; `during` runs while it does, given when it started.
fn transfer(
    net: &NatPair,
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

/// The longest stall (start s, length s) of `report` that touches
/// `from..=to` seconds: receiver intervals below a tenth of `steady_bps`.
fn stall_near(report: &Iperf3Report, steady_bps: f64, from: f64, to: f64) -> Option<(f64, f64)> {
    report
        .stalls(steady_bps / 8.0 / 10.0)
        .into_iter()
        .filter(|&(start, len)| start + len >= from && start <= to)
        .fold(None, |best, s| match best {
            Some(b) if b.1 >= s.1 => Some(b),
            _ => Some(s),
        })
}

fn describe(stall: Option<(f64, f64)>) -> String {
    stall.map_or(
        "none (no 0.1 s interval below a tenth of the steady rate)".to_owned(),
        |(s, l)| format!("{l:.1} s from {s:.1} s"),
    )
}

/// One case of the module docs.
struct Case {
    /// Its name, in figures and in namespace names (first letter).
    name: &'static str,
    /// Alpha's NAT, beta's.
    masquerade: [Masquerade; 2],
    firewall: Firewall,
    /// Both nodes do birthday probing (`[nat] birthday = true`).
    birthday: bool,
    /// How long the path of `carried_by` may take once the pings cross.
    settle: Duration,
    /// The kind of path that must carry data; `None`: whichever the
    /// status says, as long as the traffic went there.
    carried_by: Option<&'static str>,
    /// Cut the direct path during a transfer, then restore it.
    cut: bool,
}

/// Runs `case`: the network, the mesh, WireGuard, and the checks.
fn nat_case(test: &str, case: Case) {
    let Case {
        name: case,
        masquerade,
        firewall,
        birthday,
        settle,
        carried_by,
        cut,
    } = case;
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
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    netns::remove_leftovers(PREFIX, Some(tmp));
    let run = format!("{}-{}", netns::run_prefix(PREFIX), &case[..1]);
    let scratch = Scratch::create(tmp.join(&run)).unwrap();
    let dir = scratch.path();
    let bins = Binaries::for_tests().unwrap();

    let net = NatPair::build_sides(&run, masquerade, firewall).unwrap();
    let pid = std::process::id();
    let tag = &case[..1];
    let (wg_a, wg_b) = WireGuard::pair(
        &net.a,
        &net.b,
        &format!("{PREFIX}{pid}{tag}"),
        WG_PORT,
        "10.96.0",
        dir,
    )
    .unwrap();

    // The mesh; how long the first path took is read from the logs.
    let mut spec = net.wg_mesh(COORDINATOR_PORT, WG_PORT);
    if birthday {
        for node in &mut spec.nodes {
            node.extra = "[nat]\nbirthday = true\n".to_owned();
        }
    }
    let mesh = LocalMesh::start_with_coordinator_config(
        &dir.join("mesh"),
        bins,
        spec,
        &NatPair::coordinator_config(COORDINATOR_PORT),
    )
    .unwrap();
    mesh.wait_up(Duration::from_secs(20)).unwrap();
    let first = first_path(mesh.dir());

    // The NAT classes, and the path that carries data.
    let mut nats = Vec::new();
    for ((node, public), nat) in [("alpha", NatPair::PUBLIC_A), ("beta", NatPair::PUBLIC_B)]
        .into_iter()
        .zip(masquerade)
    {
        let expected_nat = match nat {
            Masquerade::Preserving => "endpoint-independent/preserving",
            Masquerade::FullyRandom => "endpoint-dependent/random",
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let (nat, reflexive) = loop {
            let (nat, reflexive) = uplink_nat(&mesh, node);
            if nat == expected_nat || Instant::now() >= deadline {
                break (nat, reflexive);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(nat, expected_nat, "{node}'s NAT ({masquerade:?})");
        let reflexive = reflexive.unwrap_or_default();
        assert!(
            reflexive.starts_with(&format!("{public}:")),
            "{node}'s reflexive address {reflexive:?} is not its NAT's {public}"
        );
        nats.push(format!("{node} {nat} at {reflexive}"));
    }

    // WireGuard across, pointed at the ingresses.
    let ingress_a = mesh.ingress("alpha", "beta/wg0").unwrap();
    let ingress_b = mesh.ingress("beta", "alpha/wg0").unwrap();
    wg_a.set_peer(wg_b.public_key(), ingress_a, "10.96.0.2/32")
        .unwrap();
    wg_b.set_peer(wg_a.public_key(), ingress_b, "10.96.0.1/32")
        .unwrap();
    let ping = netns::ping(&net.a, TUNNEL_B, 10).unwrap();
    assert_eq!(
        ping.received,
        ping.transmitted,
        "{ping:?}\nalpha: {:#}\nbeta: {:#}",
        association(&mesh, "alpha"),
        association(&mesh, "beta")
    );
    let ping_back = netns::ping(&net.b, TUNNEL_A, 5).unwrap();
    assert_eq!(ping_back.received, ping_back.transmitted, "{ping_back:?}");
    // A path carries data (weight 1) once data was sent on it.
    let carried = match carried_by {
        Some(kind) => {
            let took = wait_carrying(&mesh, kind, "the pings on the expected path", settle);
            if birthday {
                let probes = |node: &str| association(&mesh, node)["birthday_probes"].clone();
                eprintln!(
                    "netns_nat {case}: both ends carried data on {kind} {:.1} s after the pings; \
                     birthday probes (alpha, beta): {}, {}; temporary sockets: {}, {}",
                    took.as_secs_f64(),
                    probes("alpha"),
                    probes("beta"),
                    association(&mesh, "alpha")["birthday_sockets"],
                    association(&mesh, "beta")["birthday_sockets"],
                );
            }
            kind.to_owned()
        }
        None => carrying(&mesh, "alpha").unwrap_or_default(),
    };
    assert!(
        [DIRECT, RELAY].contains(&carried.as_str()),
        "alpha's data on {carried:?}"
    );

    // A steady transfer, and where it went.
    let (direct_before, coord_before) = net.udp_bytes().unwrap();
    let steady = transfer(&net, dir, "steady", 4, |_| {});
    let (direct_after, coord_after) = net.udp_bytes().unwrap();
    let (direct, via_coordinator) = (direct_after - direct_before, coord_after - coord_before);
    assert!(steady.received_bytes > 1_000_000, "{steady:?}");
    if carried == DIRECT {
        assert!(
            direct >= steady.received_bytes,
            "the internet forwarded {direct} bytes between the NATs for {} delivered",
            steady.received_bytes
        );
    } else {
        assert!(
            via_coordinator >= steady.received_bytes,
            "the coordinator's address got {via_coordinator} bytes for {} delivered",
            steady.received_bytes
        );
        assert!(
            direct < 100_000,
            "{direct} bytes went between the NATs directly"
        );
    }
    assert_eq!(carrying(&mesh, "alpha"), Some(carried.clone()));
    assert_eq!(carrying(&mesh, "beta"), Some(carried.clone()));
    eprintln!(
        "netns_nat {case}: {}; first validated path ({}) {:.0} ms after the association was \
         installed on both ends; data on {carried}; ping avg {:.2} ms; \
         iperf3 TCP 4 s: {:.1} Mbit/s, {} retransmits",
        nats.join(", "),
        first.1,
        first.0 * 1e3,
        ping.avg_rtt_ms.unwrap_or(f64::NAN),
        mbit(steady.received_bps),
        steady.retransmits,
    );

    if cut {
        // The direct path is cut during a transfer, then restored.
        let mut cut_at = 0.0;
        let mut to_relay = Duration::ZERO;
        let mut restored_at = 0.0;
        let mut to_direct = Duration::ZERO;
        let mut relayed = 0;
        let failover = transfer(&net, dir, "cut", 12, |t0| {
            std::thread::sleep(Duration::from_secs(3));
            cut_at = t0.elapsed().as_secs_f64();
            net.cut_direct().unwrap();
            to_relay = wait_carrying(
                &mesh,
                RELAY,
                "both ends on the relay once the direct path is cut",
                Duration::from_secs(5),
            );
            let (_, before) = net.udp_bytes().unwrap();
            std::thread::sleep(Duration::from_secs(2));
            let (_, after) = net.udp_bytes().unwrap();
            relayed = after - before;
            restored_at = t0.elapsed().as_secs_f64();
            net.restore_direct().unwrap();
            to_direct = wait_carrying(
                &mesh,
                DIRECT,
                "both ends back on the direct path once it is restored",
                Duration::from_secs(10),
            );
        });
        assert!(
            relayed > 1_000_000,
            "the relay carried {relayed} bytes in 2 s"
        );
        let seen_at = cut_at + to_relay.as_secs_f64();
        let resumed: u64 = failover
            .intervals
            .iter()
            .filter(|i| i.0 >= seen_at + 0.2 && i.1 <= restored_at)
            .map(|i| i.2)
            .sum();
        assert!(
            resumed > 1_000_000,
            "only {resumed} bytes between the move to the relay and the restore"
        );
        let back_at = restored_at + to_direct.as_secs_f64();
        let after_back = failover.bytes_after(back_at + 0.2);
        assert!(
            after_back > 1_000_000,
            "only {after_back} bytes after returning to the direct path"
        );
        let cut_stall = stall_near(&failover, steady.received_bps, cut_at - 0.1, seen_at + 1.0);
        let back_stall = stall_near(&failover, steady.received_bps, restored_at, back_at + 1.0);
        let on_relay: Vec<&(f64, f64, u64)> = failover
            .intervals
            .iter()
            .filter(|i| i.0 >= seen_at + 0.2 && i.1 <= restored_at)
            .collect();
        let relay_bps = on_relay.iter().map(|i| i.2).sum::<u64>() as f64 * 8.0
            / on_relay.iter().map(|i| i.1 - i.0).sum::<f64>().max(0.1);
        eprintln!(
            "netns_nat {case}: iperf3 TCP 12 s, direct path cut at {cut_at:.1} s: both ends on {RELAY} after \
             {:.0} ms; transfer stall {}; {:.1} Mbit/s on the relay ({relayed} bytes reached the coordinator \
             in 2 s); restored at {restored_at:.1} s: both ends back on {DIRECT} after {:.0} ms; stall {}; \
             {:.1} Mbit/s overall, {} retransmits",
            to_relay.as_secs_f64() * 1e3,
            describe(cut_stall),
            mbit(relay_bps),
            to_direct.as_secs_f64() * 1e3,
            describe(back_stall),
            mbit(failover.received_bps),
            failover.retransmits,
        );
    }
    eprintln!(
        "netns_nat {case}: whole case {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Stop the daemons before their namespaces go.
    drop(mesh);
}

#[test]
fn cone_nats_meet_directly_and_fall_back_to_the_relay_when_the_direct_path_is_cut() {
    nat_case(
        "netns_nat (cone)",
        Case {
            name: "cone",
            masquerade: [Masquerade::Preserving; 2],
            firewall: Firewall::DropUnsolicited,
            birthday: false,
            settle: Duration::from_secs(5),
            carried_by: Some(DIRECT),
            cut: true,
        },
    );
}

#[test]
fn fully_random_nats_meet_through_the_coordinator_relay() {
    nat_case(
        "netns_nat (fully-random)",
        Case {
            name: "hard",
            masquerade: [Masquerade::FullyRandom; 2],
            firewall: Firewall::DropUnsolicited,
            birthday: false,
            settle: Duration::from_secs(5),
            carried_by: Some(RELAY),
            cut: false,
        },
    );
}

/// Bare masquerade routers (no input filter) can lose the punch to the
/// conntrack race ([`Firewall::None`]): whichever path the nodes end up
/// with must carry the traffic.
#[test]
fn bare_masquerade_nats_connect_directly_or_through_the_relay() {
    nat_case(
        "netns_nat (bare masquerade)",
        Case {
            name: "bare",
            masquerade: [Masquerade::Preserving; 2],
            firewall: Firewall::None,
            birthday: false,
            settle: Duration::from_secs(5),
            carried_by: None,
            cut: false,
        },
    );
}

/// One hard NAT (`fully-random`) against a filtering cone NAT: without
/// birthday probing that pair uses the relay; with `[nat] birthday = true`
/// on both nodes the cone side's random-port probes find one of the hard
/// side's temporary sockets and the data goes direct.
#[test]
fn birthday_probing_takes_a_fully_random_nat_direct_to_a_filtering_cone() {
    nat_case(
        "netns_nat (birthday)",
        Case {
            name: "mixed",
            masquerade: [Masquerade::FullyRandom, Masquerade::Preserving],
            firewall: Firewall::DropUnsolicited,
            birthday: true,
            // Probes start a second after the punch; all 2,048 go within
            // about 8 s.
            settle: Duration::from_secs(20),
            carried_by: Some(DIRECT),
            cut: false,
        },
    );
}
