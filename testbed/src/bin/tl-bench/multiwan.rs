//! `tl-bench multiwan`: a node with two uplinks against the same node with
//! one, in one run. Real WireGuard (wireguard-go) in network namespaces,
//! each peer's endpoint at its node's mesh ingress, iperf3 TCP inside the
//! tunnel from A to B; A's two uplinks are veths to the hub, each limited
//! with `tc … tbf` both ways ([`TwoUplinks`]). Needs root.
//!
//! ```text
//!            wan1 10.79.1.2 ── tbf ── hub-a1 ┐
//!  ns …-a                                    ns …-hub (coordinator) ── hub-b ── 10.79.2.2  ns …-b
//!            wan2 10.79.3.2 ── tbf ── hub-a2 ┘
//! ```
//!
//! Each round measures, with the same mesh and the same processes:
//! *both* uplinks up; *one* (wan2 `ip link set down`, which the node sees
//! and stops using); then *failover*: both up, and the uplink carrying more
//! goes down a third of the way through, the stall read from iperf3's
//! 0.1 s receiver intervals.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};
use transitloom_testbed::netns::{self, DelayLine, Iperf3, Iperf3Report, TwoUplinks, WireGuard};
use transitloom_testbed::{Binaries, LocalMesh};

use crate::MultiwanArgs;

/// Names of namespaces, interfaces and scratch folders start with this.
const PREFIX: &str = "tlbm";
const SUBNET: u8 = 79;
const WG_PORT: u16 = 51820;
const IPERF_PORT: u16 = 5201;
const TUNNEL_B: &str = "10.96.0.2";
const INTERVAL: Duration = Duration::from_millis(100);
const TOOLS: &[&str] = &[
    "ip",
    "ss",
    "tc",
    "wireguard-go",
    "wg",
    "iperf3",
    "ping",
    "kill",
    "sysctl",
    "nft",
];

/// The namespaces, the two WireGuards and the mesh, torn down on drop
/// (mesh first, then WireGuard, then the namespaces).
struct Testbed {
    mesh: LocalMesh,
    _wg_a: WireGuard,
    _wg_b: WireGuard,
    /// Checked after each transfer: a delay line that stopped would leave
    /// the links undelayed.
    delay: Option<std::sync::Mutex<DelayLine>>,
    net: TwoUplinks,
    dir: PathBuf,
}

/// One round's figures.
#[derive(Debug, Clone)]
struct Round {
    both: Iperf3Report,
    one: Iperf3Report,
    /// Bytes alpha sent on wan1 and wan2 during the *both* test.
    both_split: [u64; 2],
    failover: Iperf3Report,
    /// Which uplink went down, and when (seconds into the transfer).
    downed: usize,
    down_at: f64,
    /// The longest run of 0.1 s intervals below a tenth of the *both*
    /// rate around the change: (start s, length s).
    stall: Option<(f64, f64)>,
    /// How long alpha's status took to show the uplink down.
    seen_in: Duration,
}

impl Round {
    fn ratio(&self) -> f64 {
        self.both.received_bps / self.one.received_bps.max(1.0)
    }

    fn json(&self) -> Value {
        let total = (self.both_split[0] + self.both_split[1]).max(1) as f64;
        json!({
            "both_mbit_per_s": self.both.received_bps / 1e6,
            "both_retransmits": self.both.retransmits,
            "both_share_wan1": self.both_split[0] as f64 / total,
            "one_mbit_per_s": self.one.received_bps / 1e6,
            "one_retransmits": self.one.retransmits,
            "ratio_both_one": self.ratio(),
            "failover_mbit_per_s": self.failover.received_bps / 1e6,
            "failover_retransmits": self.failover.retransmits,
            "failover_uplink": TwoUplinks::UPLINKS[self.downed],
            "failover_down_at_s": self.down_at,
            "failover_seen_in_s": self.seen_in.as_secs_f64(),
            "failover_stall_s": self.stall.map(|s| s.1),
        })
    }
}

pub fn run(args: &MultiwanArgs) -> Result<()> {
    if !netns::require_root("tl-bench multiwan", TOOLS) {
        bail!("this mode needs root and {}", TOOLS.join(", "));
    }
    let bins = crate::binaries(args.bin_dir.as_deref())?;
    let scratch = std::env::temp_dir();
    netns::remove_leftovers(PREFIX, Some(&scratch));
    let run = netns::run_prefix(PREFIX);
    let dir = scratch.join(&run);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    if !args.json {
        eprintln!(
            "building namespaces ({}), WireGuard and the mesh in {}",
            links(args),
            dir.display()
        );
    }
    let bed = Testbed::build(&run, &dir, bins, args)
        .with_context(|| format!("building the testbed (logs in {})", dir.display()))?;
    let mut rounds = Vec::new();
    for round in 0..args.runs {
        let say = |what: &str| {
            if !args.json {
                eprintln!("run {}/{}: {what}", round + 1, args.runs);
            }
        };
        say(&format!("both uplinks, iperf3 TCP for {} s", args.seconds));
        bed.both_up()?;
        let before = bed.sent()?;
        let both = bed.transfer(&format!("both-{round}"), args.seconds, |_| Ok(()))?;
        let after = bed.sent()?;
        let both_split = [after[0] - before[0], after[1] - before[1]];
        // Alpha's paths, estimates and weights as the transfer ended.
        let status = serde_json::to_string_pretty(&bed.mesh.status("alpha")?)?;
        let file = dir.join(format!("alpha-status-both-{round}.json"));
        std::fs::write(&file, status).with_context(|| format!("writing {}", file.display()))?;

        say(&format!("wan2 down, iperf3 TCP for {} s", args.seconds));
        bed.net.set_link(1, false)?;
        bed.wait_alpha("wan2 down and wan1 carrying", |u| {
            u[1]["state"] == "down" && u[0]["paths_active"].as_u64().unwrap_or(0) >= 1
        })?;
        let one = bed.transfer(&format!("one-{round}"), args.seconds, |_| Ok(()))?;
        bed.net.set_link(1, true)?;
        bed.both_up()?;

        say(&format!(
            "failover: iperf3 TCP for {} s, the busier uplink down after {:.1} s",
            args.seconds,
            f64::from(args.seconds) / 3.0
        ));
        let mut downed = 0;
        let mut down_at = 0.0;
        let mut seen_in = Duration::ZERO;
        let start = bed.sent()?;
        let failover = bed.transfer(&format!("failover-{round}"), args.seconds, |t0| {
            std::thread::sleep(Duration::from_secs_f64(f64::from(args.seconds) / 3.0));
            let now = bed.sent()?;
            downed = usize::from(now[1] - start[1] > now[0] - start[0]);
            down_at = t0.elapsed().as_secs_f64();
            let changed = Instant::now();
            bed.net.set_link(downed, false)?;
            bed.wait_alpha("the uplink down", |u| u[downed]["state"] == "down")?;
            seen_in = changed.elapsed();
            Ok(())
        })?;
        bed.net.set_link(downed, true)?;
        let floor = both.received_bps / 8.0 / 10.0;
        let stall = failover
            .stalls(floor)
            .into_iter()
            .filter(|&(s, l)| s + l >= down_at - 0.2 && s <= down_at + 3.0)
            .fold(None, |best: Option<(f64, f64)>, s| match best {
                Some(b) if b.1 >= s.1 => Some(b),
                _ => Some(s),
            });
        rounds.push(Round {
            both,
            one,
            both_split,
            failover,
            downed,
            down_at,
            stall,
            seen_in,
        });
    }
    let ratios: Vec<f64> = rounds.iter().map(Round::ratio).collect();
    if args.json {
        let doc = json!({
            "machine": crate::udp::machine(),
            "seconds": args.seconds,
            "runs": args.runs,
            "rate_mbit": rates(args),
            "delay_ms": [args.delay1_ms, args.delay2_ms],
            "capacity_hint": args.capacity_hint,
            "rounds": rounds.iter().map(Round::json).collect::<Vec<_>>(),
            "ratio_both_one": crate::udp::summary(&ratios),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print(&rounds, &ratios, args);
    }
    drop(bed);
    if args.keep {
        eprintln!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// Each uplink's rate, Mbit/s.
fn rates(args: &MultiwanArgs) -> [u32; 2] {
    [args.rate_mbit, args.rate2_mbit.unwrap_or(args.rate_mbit)]
}

/// The uplinks as the run was asked for, for its headings.
fn links(args: &MultiwanArgs) -> String {
    let [r1, r2] = rates(args);
    let delays = match (args.delay1_ms, args.delay2_ms) {
        (0, 0) => String::new(),
        (d1, d2) => format!(", {d1} and {d2} ms added each way"),
    };
    if r1 == r2 {
        format!("two uplinks of {r1} Mbit/s each{delays}")
    } else {
        format!("uplinks of {r1} and {r2} Mbit/s{delays}")
    }
}

impl Testbed {
    fn build(run: &str, dir: &Path, bins: Binaries, args: &MultiwanArgs) -> Result<Self> {
        let net = TwoUplinks::build(run, SUBNET)?;
        let rates = rates(args);
        net.limit_each(rates)?;
        let delay = if (args.delay1_ms, args.delay2_ms) == (0, 0) {
            None
        } else {
            let exe = std::env::current_exe().context("finding this program")?;
            let ms = [args.delay1_ms, args.delay2_ms];
            Some(std::sync::Mutex::new(net.delay(
                &exe,
                ms,
                &dir.join("delay-line.log"),
            )?))
        };
        let pid = std::process::id();
        let wg_a = WireGuard::start(
            &net.a,
            &format!("{PREFIX}{pid}a"),
            WG_PORT,
            "10.96.0.1/24",
            dir,
        )?;
        let wg_b = WireGuard::start(
            &net.b,
            &format!("{PREFIX}{pid}b"),
            WG_PORT,
            "10.96.0.2/24",
            dir,
        )?;
        let mesh_dir = dir.join("mesh");
        let mut mesh = LocalMesh::start(&mesh_dir, bins, net.wg_mesh(7443, WG_PORT))?;
        mesh.wait_up(Duration::from_secs(30))?;
        if args.capacity_hint {
            // Enrolled now: restarted, alpha keeps its identity.
            mesh.stop_node("alpha")?;
            for (uplink, mbit) in TwoUplinks::UPLINKS.into_iter().zip(rates) {
                netns::add_uplink_line(
                    &mesh_dir,
                    "alpha",
                    uplink,
                    &format!("capacity_mbps = {mbit}"),
                )?;
            }
            mesh.start_node("alpha")?;
            mesh.wait_up(Duration::from_secs(30))?;
            // Until the paths to alpha's ports before the restart fail,
            // beta could answer WireGuard's first handshake there.
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let status = mesh.status("beta")?;
                let paths = status["associations"][0]["paths"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                if paths.iter().filter(|p| p["state"] == "active").count() == 2 {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!("beta kept paths to alpha's old ports: {paths:?}");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let endpoint = |node: &str, peer: &str| -> Result<std::net::SocketAddr> {
            let text = mesh.wg_peers(node)?;
            netns::wg_peer_endpoints(&text)?
                .into_iter()
                .find(|(p, _)| p == peer)
                .map(|(_, a)| a)
                .with_context(|| format!("{node}'s wg-peers names no {peer}: {text:?}"))
        };
        wg_a.set_peer(
            wg_b.public_key(),
            endpoint("alpha", "beta/wg0")?,
            "10.96.0.2/32",
        )?;
        wg_b.set_peer(
            wg_a.public_key(),
            endpoint("beta", "alpha/wg0")?,
            "10.96.0.1/32",
        )?;
        let bed = Self {
            mesh,
            _wg_a: wg_a,
            _wg_b: wg_b,
            delay,
            net,
            dir: dir.to_path_buf(),
        };
        bed.both_up()?;
        let ping = netns::ping(&bed.net.a, TUNNEL_B.parse()?, 3)?;
        if ping.received == 0 {
            bail!("nothing crosses the tunnel: {ping:?}");
        }
        Ok(bed)
    }

    /// Alpha's uplinks, from its status.
    fn uplinks(&self) -> Result<Vec<Value>> {
        let status = self.mesh.status("alpha")?;
        status["uplinks"]
            .as_array()
            .cloned()
            .with_context(|| format!("alpha's status has no uplinks: {status}"))
    }

    /// Bytes alpha has sent on each uplink.
    fn sent(&self) -> Result<[u64; 2]> {
        let u = self.uplinks()?;
        let tx = |i: usize| u.get(i).and_then(|u| u["tx_bytes"].as_u64()).unwrap_or(0);
        Ok([tx(0), tx(1)])
    }

    /// Waits (20 s at most) until alpha's uplinks satisfy `done`.
    fn wait_alpha(&self, what: &str, done: impl Fn(&[Value]) -> bool) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let u = self.uplinks()?;
            if u.len() == 2 && done(&u) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("alpha: {what}: not within 20 s; its uplinks: {u:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until both uplinks are up with a validated path each.
    fn both_up(&self) -> Result<()> {
        self.wait_alpha("both uplinks up with a validated path each", |u| {
            u.iter()
                .all(|u| u["state"] == "up" && u["paths_active"].as_u64().unwrap_or(0) >= 1)
        })
    }

    /// An iperf3 TCP transfer alpha → beta for `seconds`, `during` run
    /// while it goes (given when it started).
    fn transfer(
        &self,
        tag: &str,
        seconds: u32,
        during: impl FnOnce(Instant) -> Result<()>,
    ) -> Result<Iperf3Report> {
        let server = Iperf3::server_every(
            &self.net.b,
            TUNNEL_B.parse()?,
            IPERF_PORT,
            INTERVAL,
            &self.dir.join(format!("iperf3-server-{tag}.log")),
        )?;
        let started = Instant::now();
        let client = server.client(
            &self.net.a,
            seconds,
            &self.dir.join(format!("iperf3-{tag}.json")),
        )?;
        during(started)?;
        let report = client.finish(Duration::from_secs(20))?;
        if let Some(delay) = &self.delay {
            delay.lock().unwrap_or_else(|e| e.into_inner()).check()?;
        }
        Ok(report)
    }
}

fn print(rounds: &[Round], ratios: &[f64], args: &MultiwanArgs) {
    println!();
    println!(
        "Multi-WAN: WireGuard (wireguard-go) through the mesh, node A on {} (tc tbf, {}), iperf3 TCP {} s per test",
        links(args),
        if args.capacity_hint { "given as capacity_mbps" } else { "no capacity hint" },
        args.seconds
    );
    println!(
        "{:<4} {:>11} {:>6} {:>10} | {:>11} {:>6} | {:>6} | {:>9} {:>8} {:>10} {:>11}",
        "run",
        "both Mbit/s",
        "retr",
        "wan1 share",
        "one Mbit/s",
        "retr",
        "ratio",
        "failover",
        "down at",
        "seen in",
        "stall"
    );
    for (i, r) in rounds.iter().enumerate() {
        let total = (r.both_split[0] + r.both_split[1]).max(1) as f64;
        println!(
            "{:<4} {:>11.1} {:>6} {:>9.0}% | {:>11.1} {:>6} | {:>6.2} | {:>4} {:>4.1} {:>7.1} s {:>8.2} s {:>11}",
            i + 1,
            r.both.received_bps / 1e6,
            r.both.retransmits,
            r.both_split[0] as f64 * 100.0 / total,
            r.one.received_bps / 1e6,
            r.one.retransmits,
            r.ratio(),
            TwoUplinks::UPLINKS[r.downed],
            r.failover.received_bps / 1e6,
            r.down_at,
            r.seen_in.as_secs_f64(),
            r.stall
                .map_or_else(|| "none".to_owned(), |(_, l)| format!("{l:.1} s")),
        );
    }
    let s = crate::udp::summary(ratios);
    if let (Some(mean), Some(min), Some(max)) =
        (s["mean"].as_f64(), s["min"].as_f64(), s["max"].as_f64())
    {
        println!("ratio both/one uplink goodput: {mean:.2} (runs {min:.2}–{max:.2})");
    }
    println!(
        "(failover: the uplink taken down and the transfer's overall Mbit/s; seen in: until alpha's status showed it down; \
         stall: the longest run of 0.1 s receiver intervals below a tenth of the both-uplinks rate around the change)"
    );
}
