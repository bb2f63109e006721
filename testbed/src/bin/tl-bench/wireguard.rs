//! `tl-bench wireguard`: real WireGuard (wireguard-go) in network
//! namespaces, its peer endpoint at the mesh ingress (what `transitloom-node
//! wg-peers` prints) against the same pair pointed straight at each other,
//! with iperf3 TCP and UDP through the tunnel, routes interleaved, in one
//! run. Needs root.
//!
//! ```text
//!  ns …-a                        ns …-hub                       ns …-b
//!  transitloom-node alpha        transitloom-coordinator        transitloom-node beta
//!  wireguard-go 10.98.0.1/24     10.76.1.1 ┐ forwards ┌ 10.76.2.1  wireguard-go 10.98.0.2/24
//!  uplink 10.76.1.2 ── veth ──── hub-a     └──────────┘ hub-b ─── veth ── uplink 10.76.2.2
//! ```
//!
//! The same topology as the netns_wireguard test; only the direct route
//! skips the two nodes (WireGuard's UDP goes from uplink to uplink through
//! the hub either way).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};
use transitloom_testbed::netns::{self, Iperf3, Namespace, WireGuard};
use transitloom_testbed::{Binaries, CoordinatorSpec, LocalMesh, MeshSpec, NodeSpec, ServiceSpec};

use crate::cpu::{CpuReading, Task};
use crate::WireguardArgs;

/// Names of namespaces, interfaces and scratch folders start with this.
const PREFIX: &str = "tlbw";
const WG_PORT: u16 = 51820;
const IPERF_PORT: u16 = 5201;
const TUNNEL_A: &str = "10.98.0.1";
const TUNNEL_B: &str = "10.98.0.2";
const UPLINK_A: &str = "10.76.1.2";
const UPLINK_B: &str = "10.76.2.2";
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const TOOLS: &[&str] = &[
    "ip",
    "ss",
    "wireguard-go",
    "wg",
    "iperf3",
    "ping",
    "kill",
    "sysctl",
];

fn ip(text: &str) -> IpAddr {
    text.parse().expect("a literal address")
}

/// The namespaces, the two WireGuards and the mesh, torn down on drop
/// (mesh first, then WireGuard, then the namespaces).
struct Testbed {
    mesh: LocalMesh,
    wg_a: WireGuard,
    wg_b: WireGuard,
    ns_a: Namespace,
    ns_b: Namespace,
    _hub: Namespace,
    ingress_a: SocketAddr,
    ingress_b: SocketAddr,
    dir: PathBuf,
}

/// One measurement: which route, what iperf3 reported, what the processes
/// on the way spent.
#[derive(Debug, Clone)]
struct Sample {
    route: &'static str,
    test: &'static str,
    seconds: f64,
    /// Goodput the receiver saw, bits per second.
    bps: f64,
    /// TCP: sender retransmits. UDP: datagrams lost.
    lost: u64,
    /// UDP only: percent of datagrams lost.
    loss_percent: Option<f64>,
    cpu: Vec<(&'static str, CpuReading)>,
}

impl Sample {
    fn busy_cores(&self) -> f64 {
        self.cpu.iter().map(|(_, c)| c.cpu_s).sum::<f64>() / self.seconds
    }
    /// CPU nanoseconds per byte of goodput, all processes on the way.
    fn ns_per_byte(&self) -> f64 {
        let bytes = self.bps * self.seconds / 8.0;
        self.cpu.iter().map(|(_, c)| c.cpu_s).sum::<f64>() * 1e9 / bytes.max(1.0)
    }
    fn json(&self) -> Value {
        let cpu: serde_json::Map<String, Value> = self
            .cpu
            .iter()
            .map(|(n, c)| ((*n).to_owned(), json!(c.cpu_s / self.seconds)))
            .collect();
        json!({
            "route": self.route,
            "test": self.test,
            "seconds": self.seconds,
            "mbit_per_s": self.bps / 1e6,
            "lost": self.lost,
            "loss_percent": self.loss_percent,
            "busy_cores": self.busy_cores(),
            "cpu_ns_per_byte": self.ns_per_byte(),
            "cores_by_process": cpu,
        })
    }
}

pub fn run(args: &WireguardArgs) -> Result<()> {
    if !netns::require_root("tl-bench wireguard", TOOLS) {
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
            "building namespaces, WireGuard and the mesh in {}",
            dir.display()
        );
    }
    let bed = Testbed::build(&run, &dir, bins)
        .with_context(|| format!("building the testbed (logs in {})", dir.display()))?;

    let mut samples = Vec::new();
    for round in 0..args.runs {
        for route in ["direct", "mesh"] {
            bed.point(route)?;
            for test in ["tcp", "udp"] {
                if !args.json {
                    eprintln!(
                        "run {}/{}: WireGuard {route}, iperf3 {test} for {} s",
                        round + 1,
                        args.runs,
                        args.seconds
                    );
                }
                let sample = bed.measure(route, test, args, round)?;
                samples.push(sample);
            }
        }
    }
    if args.json {
        let doc = json!({
            "machine": crate::udp::machine(),
            "seconds": args.seconds,
            "runs": args.runs,
            "udp_bitrate": args.udp_bitrate,
            "udp_length": args.udp_length,
            "samples": samples.iter().map(Sample::json).collect::<Vec<_>>(),
            "ratio_tcp": ratio(&samples, "tcp"),
            "ratio_udp": ratio(&samples, "udp"),
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print(&samples, args);
    }
    drop(bed);
    if args.keep {
        eprintln!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

fn node(name: &str, ns: &Namespace, uplink: IpAddr, peer: &str, range: &str) -> NodeSpec {
    NodeSpec {
        name: name.to_owned(),
        wrap: ns.wrap(),
        uplinks: vec![("hub".to_owned(), uplink)],
        status_listen: SocketAddr::new(LOOPBACK, 7480),
        services: vec![ServiceSpec {
            name: "wg0".to_owned(),
            target: SocketAddr::new(LOOPBACK, WG_PORT),
            ingress_range: range.to_owned(),
        }],
        associations: vec![("wg0".to_owned(), format!("{peer}/wg0"))],
        advertise_private: true,
        extra: String::new(),
    }
}

impl Testbed {
    fn build(run: &str, dir: &Path, bins: Binaries) -> Result<Self> {
        let hub = Namespace::create(&format!("{run}-hub"))?;
        let ns_a = Namespace::create(&format!("{run}-a"))?;
        let ns_b = Namespace::create(&format!("{run}-b"))?;
        netns::veth(&hub, "hub-a", &ns_a, "hub")?;
        netns::veth(&hub, "hub-b", &ns_b, "hub")?;
        hub.add_address("hub-a", "10.76.1.1/24")?;
        hub.add_address("hub-b", "10.76.2.1/24")?;
        hub.enable_forwarding()?;
        ns_a.add_address("hub", &format!("{UPLINK_A}/24"))?;
        ns_a.add_route("default", ip("10.76.1.1"))?;
        ns_b.add_address("hub", &format!("{UPLINK_B}/24"))?;
        ns_b.add_route("default", ip("10.76.2.1"))?;

        let pid = std::process::id();
        let wg_a = WireGuard::start(
            &ns_a,
            &format!("{PREFIX}{pid}a"),
            WG_PORT,
            &format!("{TUNNEL_A}/24"),
            dir,
        )?;
        let wg_b = WireGuard::start(
            &ns_b,
            &format!("{PREFIX}{pid}b"),
            WG_PORT,
            &format!("{TUNNEL_B}/24"),
            dir,
        )?;
        let spec = MeshSpec {
            coordinator: CoordinatorSpec {
                listen: SocketAddr::new(ip("10.76.1.1"), 7443),
                status_listen: SocketAddr::new(LOOPBACK, 7481),
                wrap: hub.wrap(),
            },
            nodes: vec![
                node(
                    "alpha",
                    &ns_a,
                    ip(UPLINK_A),
                    "beta",
                    "127.0.0.1:41000-41999",
                ),
                node(
                    "beta",
                    &ns_b,
                    ip(UPLINK_B),
                    "alpha",
                    "127.0.0.1:42000-42999",
                ),
            ],
        };
        let mesh = LocalMesh::start(&dir.join("mesh"), bins, spec)?;
        mesh.wait_up(Duration::from_secs(30))?;
        // The endpoints WireGuard is given are exactly what wg-peers prints.
        let endpoint = |node: &str, peer: &str| -> Result<SocketAddr> {
            let text = mesh.wg_peers(node)?;
            netns::wg_peer_endpoints(&text)?
                .into_iter()
                .find(|(p, _)| p == peer)
                .map(|(_, a)| a)
                .with_context(|| format!("{node}'s wg-peers names no {peer}: {text:?}"))
        };
        let ingress_a = endpoint("alpha", "beta/wg0")?;
        let ingress_b = endpoint("beta", "alpha/wg0")?;
        Ok(Self {
            mesh,
            wg_a,
            wg_b,
            ns_a,
            ns_b,
            _hub: hub,
            ingress_a,
            ingress_b,
            dir: dir.to_path_buf(),
        })
    }

    /// Points both WireGuards along `route` and checks the tunnel answers.
    fn point(&self, route: &str) -> Result<()> {
        let (to_b, to_a) = match route {
            "mesh" => (self.ingress_a, self.ingress_b),
            _ => (
                SocketAddr::new(ip(UPLINK_B), WG_PORT),
                SocketAddr::new(ip(UPLINK_A), WG_PORT),
            ),
        };
        self.wg_a
            .set_peer(self.wg_b.public_key(), to_b, &format!("{TUNNEL_B}/32"))?;
        self.wg_b
            .set_peer(self.wg_a.public_key(), to_a, &format!("{TUNNEL_A}/32"))?;
        let ping = netns::ping(&self.ns_a, ip(TUNNEL_B), 3)?;
        if ping.received == 0 {
            bail!("nothing crosses the tunnel on the {route} route: {ping:?}");
        }
        Ok(())
    }

    /// The processes whose CPU time counts on `route`.
    fn tasks(&self, route: &str) -> Result<Vec<(&'static str, Task)>> {
        let pid = |name: &str| -> Result<u32> {
            let out = Command::new("pgrep")
                .args(["-f", &format!("wireguard-go -f {name}$")])
                .stderr(Stdio::null())
                .output()
                .context("running pgrep")?;
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .and_then(|l| l.trim().parse().ok())
                .with_context(|| format!("no wireguard-go process for {name}"))
        };
        let mut tasks = vec![
            ("wg_a", Task::Process(pid(self.wg_a.name())?)),
            ("wg_b", Task::Process(pid(self.wg_b.name())?)),
        ];
        if route == "mesh" {
            for (label, node) in [("node_a", "alpha"), ("node_b", "beta")] {
                let pid = self
                    .mesh
                    .pid(node)
                    .with_context(|| format!("node {node} is not running"))?;
                tasks.push((label, Task::Process(pid)));
            }
        }
        Ok(tasks)
    }

    fn measure(
        &self,
        route: &'static str,
        test: &'static str,
        args: &WireguardArgs,
        round: usize,
    ) -> Result<Sample> {
        let tag = format!("{route}-{test}-{}", round + 1);
        let server = Iperf3::server(
            &self.ns_b,
            ip(TUNNEL_B),
            IPERF_PORT,
            &self.dir.join(format!("iperf3-server-{tag}.log")),
        )?;
        let tasks = self.tasks(route)?;
        let read = |tasks: &[(&'static str, Task)]| -> Result<Vec<CpuReading>> {
            tasks
                .iter()
                .map(|(n, t)| t.read().with_context(|| format!("reading {n}'s CPU time")))
                .collect()
        };
        let output = self.dir.join(format!("iperf3-{tag}.json"));
        let before = read(&tasks)?;
        let started = Instant::now();
        let mut client = self.ns_a.command("iperf3");
        client.args([
            "-c",
            TUNNEL_B,
            "-p",
            &IPERF_PORT.to_string(),
            "-t",
            &args.seconds.to_string(),
            "--json",
            "--connect-timeout",
            "5000",
            "--logfile",
            &output.to_string_lossy(),
        ]);
        if test == "udp" {
            client.args([
                "-u",
                "-b",
                &args.udp_bitrate,
                "-l",
                &args.udp_length.to_string(),
            ]);
        }
        let status = client
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running iperf3")?;
        let seconds = started.elapsed().as_secs_f64();
        let after = read(&tasks)?;
        drop(server);
        let text = std::fs::read_to_string(&output)
            .with_context(|| format!("reading {}", output.display()))?;
        if !status.success() {
            bail!("iperf3 {tag} failed ({status}); see {}", output.display());
        }
        let doc: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", output.display()))?;
        if let Some(err) = doc["error"].as_str() {
            bail!("iperf3 {tag}: {err}");
        }
        let end = &doc["end"];
        let (bps, lost, loss_percent) = if test == "udp" {
            // The client's end.sum carries the server's count of what
            // arrived: bits per second sent, and the datagrams lost.
            let sum = &end["sum"];
            let sent_bps = sum["bits_per_second"].as_f64().unwrap_or(0.0);
            let loss = sum["lost_percent"].as_f64().unwrap_or(0.0);
            (
                sent_bps * (1.0 - loss / 100.0),
                sum["lost_packets"].as_u64().unwrap_or(0),
                Some(loss),
            )
        } else {
            (
                end["sum_received"]["bits_per_second"]
                    .as_f64()
                    .unwrap_or(0.0),
                end["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
                None,
            )
        };
        Ok(Sample {
            route,
            test,
            seconds,
            bps,
            lost,
            loss_percent,
            cpu: tasks
                .iter()
                .zip(after.iter().zip(&before))
                .map(|((n, _), (a, b))| (*n, a.since(*b)))
                .collect(),
        })
    }
}

/// Mesh over direct goodput, per round, for one test: `{mean, min, max}`.
fn ratio(samples: &[Sample], test: &str) -> Value {
    let of = |route: &str| -> Vec<f64> {
        samples
            .iter()
            .filter(|s| s.route == route && s.test == test)
            .map(|s| s.bps)
            .collect()
    };
    let ratios: Vec<f64> = of("direct")
        .iter()
        .zip(of("mesh"))
        .map(|(d, m)| m / d.max(1.0))
        .collect();
    crate::udp::summary(&ratios)
}

fn print(samples: &[Sample], args: &WireguardArgs) {
    println!();
    println!(
        "WireGuard (wireguard-go) in namespaces, iperf3 {} s per test; UDP offered at {} with {}-byte datagrams",
        args.seconds, args.udp_bitrate, args.udp_length
    );
    println!(
        "{:<7} {:<4} {:>9} {:>12} {:>7} | {:>5} {:>5} {:>6} {:>6} | {:>5} {:>7}",
        "route",
        "test",
        "Mbit/s",
        "retr/lost",
        "loss%",
        "wgA",
        "wgB",
        "nodeA",
        "nodeB",
        "cores",
        "ns/B"
    );
    for s in samples {
        let core = |name: &str| {
            s.cpu.iter().find(|(n, _)| *n == name).map_or_else(
                || "-".to_owned(),
                |(_, c)| format!("{:.2}", c.cpu_s / s.seconds),
            )
        };
        println!(
            "{:<7} {:<4} {:>9.1} {:>12} {:>7} | {:>5} {:>5} {:>6} {:>6} | {:>5.2} {:>7.2}",
            s.route,
            s.test,
            s.bps / 1e6,
            s.lost,
            s.loss_percent
                .map_or_else(|| "-".to_owned(), |l| format!("{l:.2}")),
            core("wg_a"),
            core("wg_b"),
            core("node_a"),
            core("node_b"),
            s.busy_cores(),
            s.ns_per_byte(),
        );
    }
    let show = |v: &Value| match (v["mean"].as_f64(), v["min"].as_f64(), v["max"].as_f64()) {
        (Some(mean), Some(min), Some(max)) => format!("{mean:.2} (runs {min:.2}–{max:.2})"),
        _ => "-".to_owned(),
    };
    println!(
        "ratio mesh/direct goodput: TCP {}; UDP {}",
        show(&ratio(samples, "tcp")),
        show(&ratio(samples, "udp"))
    );
    println!("(cores: CPU time of each process over the test, in cores; ns/B: CPU ns of all of them per byte of goodput)");
}
