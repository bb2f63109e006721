//! `tl-bench udp`: the same sender and receiver, first directly on loopback,
//! then through two real nodes (sender → node A's ingress → node B → the
//! receiver), in one run, and the ratio.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};
use transitloom_testbed::{free_port, CoordinatorSpec, LocalMesh, MeshSpec, NodeSpec, ServiceSpec};

use crate::cpu::{CpuReading, Task};
use crate::load::{Offer, Receiver, Sender};
use crate::UdpArgs;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The service both nodes expose, and its peer name on the other node.
const SERVICE: &str = "bench";

/// One way from the sender to the receiver.
#[derive(Debug, Clone)]
struct Route {
    name: &'static str,
    dst: SocketAddr,
    /// Processes on the way whose CPU time counts, by name.
    nodes: Vec<(&'static str, u32)>,
}

/// What the receiver got during one measured window.
#[derive(Debug, Clone)]
struct Window {
    seconds: f64,
    offered: u64,
    delivered: u64,
    bytes: u64,
    wrong_len: u64,
    send_calls: u64,
    recv_calls: u64,
    /// Datagrams the sender could not hand over: full send buffer, errors.
    send_refused: u64,
    /// CPU per task, in the order sender, receiver, then the route's nodes.
    cpu: Vec<(&'static str, CpuReading)>,
}

impl Window {
    fn offered_pps(&self) -> f64 {
        self.offered as f64 / self.seconds
    }
    fn delivered_pps(&self) -> f64 {
        self.delivered as f64 / self.seconds
    }
    fn gbps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.seconds / 1e9
    }
    fn loss(&self) -> f64 {
        if self.offered == 0 {
            return 0.0;
        }
        (1.0 - self.delivered as f64 / self.offered as f64).max(0.0)
    }
    /// CPU microseconds per delivered datagram of one task.
    fn us_per_packet(&self, cpu: &CpuReading) -> f64 {
        cpu.cpu_s * 1e6 / self.delivered.max(1) as f64
    }
    fn total_us_per_packet(&self) -> f64 {
        self.cpu.iter().map(|(_, c)| self.us_per_packet(c)).sum()
    }
    fn busy_cores(&self) -> f64 {
        self.cpu.iter().map(|(_, c)| c.cpu_s).sum::<f64>() / self.seconds
    }
    fn json(&self) -> Value {
        let cpu: serde_json::Map<String, Value> = self
            .cpu
            .iter()
            .map(|(name, c)| {
                (
                    (*name).to_owned(),
                    json!({
                        "cpu_s": c.cpu_s,
                        "cores": c.cpu_s / self.seconds,
                        "us_per_packet": self.us_per_packet(c),
                        "context_switches": c.switches,
                    }),
                )
            })
            .collect();
        json!({
            "seconds": self.seconds,
            "offered_pps": self.offered_pps(),
            "delivered_pps": self.delivered_pps(),
            "gbit_per_s": self.gbps(),
            "loss": self.loss(),
            "wrong_length": self.wrong_len,
            "send_calls": self.send_calls,
            "recv_calls": self.recv_calls,
            "send_refused": self.send_refused,
            "cpu_us_per_packet": self.total_us_per_packet(),
            "busy_cores": self.busy_cores(),
            "cpu": cpu,
        })
    }
}

/// One route's results at one size: flat-out windows and the lossless
/// rates found, one per run.
#[derive(Debug, Default)]
struct RouteResult {
    flat: Vec<Window>,
    lossless: Vec<Option<Window>>,
}

/// Everything the benchmark needs running: the two load threads and the
/// mesh between them.
struct Bench<'a> {
    args: &'a UdpArgs,
    sender: Sender,
    receiver: Receiver,
    routes: Vec<Route>,
}

pub fn run(args: &UdpArgs) -> Result<()> {
    let bins = crate::binaries(args.bin_dir.as_deref())?;
    if args.sizes.iter().any(|&s| s == 0 || s > 65_000) {
        bail!("--sizes: each size must be 1..=65000 bytes");
    }

    let sender = Sender::bind(SocketAddr::new(LOOPBACK, 0)).context("binding the sender")?;
    let receiver = Receiver::start(SocketAddr::new(LOOPBACK, 0)).context("binding the receiver")?;
    let dir = std::env::temp_dir().join(format!("tl-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let spec = mesh_spec(
        sender.local_addr()?,
        receiver.local_addr(),
        std::process::id(),
    )?;
    if !args.json {
        eprintln!("starting a coordinator and two nodes in {}", dir.display());
    }
    let started = (|| -> Result<(LocalMesh, SocketAddr)> {
        let mesh = LocalMesh::start(&dir, bins, spec)?;
        mesh.wait_up(Duration::from_secs(30))?;
        let ingress = mesh.ingress("alpha", &format!("beta/{SERVICE}"))?;
        Ok((mesh, ingress))
    })();
    let (mesh, ingress) = match started {
        Ok(ok) => ok,
        Err(e) => {
            return Err(e.context(format!(
                "the mesh did not come up (logs in {})",
                dir.display()
            )));
        }
    };
    let node = |name: &str| {
        mesh.pid(name)
            .with_context(|| format!("node {name} is not running"))
    };
    let routes = vec![
        Route {
            name: "direct",
            dst: receiver.local_addr(),
            nodes: Vec::new(),
        },
        Route {
            name: "mesh",
            dst: ingress,
            nodes: vec![("node_a", node("alpha")?), ("node_b", node("beta")?)],
        },
    ];
    let bench = Bench {
        args,
        sender,
        receiver,
        routes,
    };
    bench.check_mesh_carries()?;

    let mut report = Vec::new();
    for &size in &args.sizes {
        let results = bench.measure_size(size)?;
        if args.json {
            report.push(bench.size_json(size, &results));
        } else {
            bench.print_size(size, &results);
        }
    }
    if args.json {
        let doc = json!({
            "machine": machine(),
            "sender_burst": args.burst,
            "seconds": args.seconds,
            "runs": args.runs,
            "max_loss": args.max_loss / 100.0,
            "sizes": report,
            "nodes": {
                "alpha": mesh.status("alpha").ok(),
                "beta": mesh.status("beta").ok(),
            },
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    drop(mesh);
    if args.keep {
        eprintln!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// A coordinator and two nodes on loopback; alpha's service is the sender,
/// beta's the receiver, and they are associated with each other.
fn mesh_spec(sender: SocketAddr, receiver: SocketAddr, pid: u32) -> Result<MeshSpec> {
    let port = || -> Result<SocketAddr> { Ok(SocketAddr::new(LOOPBACK, free_port(LOOPBACK)?)) };
    // Ingress ports come from a range below Linux's ephemeral ports (32768
    // and up), so the sender's and receiver's own ports never fall in it;
    // concurrent runs are spread apart.
    let base = 20_000 + (pid % 60) as u16 * 200;
    let node = |name: &str, peer: &str, target: SocketAddr, range: u16| -> Result<NodeSpec> {
        Ok(NodeSpec {
            name: name.to_owned(),
            wrap: Vec::new(),
            uplinks: vec![("lo".to_owned(), LOOPBACK)],
            status_listen: port()?,
            services: vec![ServiceSpec {
                name: SERVICE.to_owned(),
                target,
                ingress_range: format!("127.0.0.1:{range}-{}", range + 99),
            }],
            associations: vec![(SERVICE.to_owned(), format!("{peer}/{SERVICE}"))],
            advertise_private: true,
            extra: String::new(),
        })
    };
    Ok(MeshSpec {
        coordinator: CoordinatorSpec {
            listen: port()?,
            status_listen: port()?,
            wrap: Vec::new(),
        },
        nodes: vec![
            node("alpha", "beta", sender, base)?,
            node("beta", "alpha", receiver, base + 100)?,
        ],
    })
}

/// The machine the figures come from.
pub fn machine() -> Value {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    json!({ "cores": cores, "kernel": kernel, "loadavg": load })
}

impl Bench<'_> {
    /// A few datagrams must cross the mesh before anything is measured.
    fn check_mesh_carries(&self) -> Result<()> {
        let mesh = &self.routes[1];
        let before = self.receiver.count().datagrams;
        let run = self.sender.start(Offer {
            dst: mesh.dst,
            size: 100,
            rate: Some(1_000.0),
            burst: 1,
        })?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.receiver.count().datagrams < before + 100 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        run.stop();
        if self.receiver.count().datagrams < before + 100 {
            bail!(
                "datagrams sent to the mesh ingress {} did not arrive",
                mesh.dst
            );
        }
        std::thread::sleep(Duration::from_millis(100));
        Ok(())
    }

    /// Every route at one size: `runs` rounds, routes interleaved within a
    /// round so a disturbance from outside hits both alike.
    fn measure_size(&self, size: usize) -> Result<Vec<RouteResult>> {
        let a = self.args;
        let mut results: Vec<RouteResult> =
            self.routes.iter().map(|_| RouteResult::default()).collect();
        for run in 0..a.runs {
            for (route, result) in self.routes.iter().zip(&mut results) {
                if !a.json {
                    eprintln!(
                        "{size} B, run {}/{}: {} {} for {} s",
                        run + 1,
                        a.runs,
                        route.name,
                        a.rate
                            .map_or("flat out".to_owned(), |r| format!("at {r} datagrams/s")),
                        a.seconds
                    );
                }
                let flat = self.window(route, size, a.rate, a.seconds)?;
                let lossless = if a.no_search || a.rate.is_some() {
                    None
                } else {
                    self.lossless(route, size, &flat)?
                };
                result.flat.push(flat);
                result.lossless.push(lossless);
            }
        }
        Ok(results)
    }

    /// One measured window: the sender runs at `rate` (flat out when
    /// `None`), a warm-up passes, then counters and CPU times are read at
    /// both ends of `seconds`.
    fn window(
        &self,
        route: &Route,
        size: usize,
        rate: Option<f64>,
        seconds: f64,
    ) -> Result<Window> {
        self.receiver.expect_len(size);
        let sending = self.sender.start(Offer {
            dst: route.dst,
            size,
            rate,
            burst: self.args.burst,
        })?;
        std::thread::sleep(Duration::from_secs_f64(self.args.warmup));
        let mut tasks = vec![
            ("sender", Task::OwnThread(sending.tid())),
            ("receiver", Task::OwnThread(self.receiver.tid())),
        ];
        tasks.extend(route.nodes.iter().map(|&(n, pid)| (n, Task::Process(pid))));
        let read = |tasks: &[(&'static str, Task)]| -> Result<Vec<CpuReading>> {
            tasks
                .iter()
                .map(|(name, t)| {
                    t.read()
                        .with_context(|| format!("reading {name}'s CPU time"))
                })
                .collect()
        };
        let (s0, r0, c0, t0) = (
            sending.count(),
            self.receiver.count(),
            read(&tasks)?,
            Instant::now(),
        );
        std::thread::sleep(Duration::from_secs_f64(seconds));
        let (s1, r1, c1, t1) = (
            sending.count(),
            self.receiver.count(),
            read(&tasks)?,
            Instant::now(),
        );
        sending.stop();
        // Let the queues empty before the next window starts.
        std::thread::sleep(Duration::from_millis(200));
        Ok(Window {
            seconds: (t1 - t0).as_secs_f64(),
            offered: s1.datagrams - s0.datagrams,
            delivered: r1.datagrams - r0.datagrams,
            bytes: r1.bytes - r0.bytes,
            wrong_len: r1.wrong_len - r0.wrong_len,
            send_calls: s1.calls - s0.calls,
            recv_calls: r1.calls - r0.calls,
            send_refused: (s1.would_block + s1.errors) - (s0.would_block + s0.errors),
            cpu: tasks
                .iter()
                .zip(c1.iter().zip(&c0))
                .map(|((name, _), (after, before))| (*name, after.since(*before)))
                .collect(),
        })
    }

    /// The highest paced rate delivered with less than `--max-loss`: first
    /// the rate delivered flat out, then bisection between what held and
    /// what lost.
    fn lossless(&self, route: &Route, size: usize, flat: &Window) -> Result<Option<Window>> {
        let a = self.args;
        let max_loss = a.max_loss / 100.0;
        if flat.loss() < max_loss {
            // Flat out was already lossless: the sender is the limit.
            return Ok(Some(flat.clone()));
        }
        let (mut lo, mut hi) = (0.0, flat.offered_pps());
        let mut best: Option<Window> = None;
        let mut rate = flat.delivered_pps();
        for _ in 0..a.search_steps {
            if rate < 1.0 {
                break;
            }
            let w = self.window(route, size, Some(rate), a.probe_seconds)?;
            if w.loss() < max_loss {
                lo = rate;
                if best
                    .as_ref()
                    .is_none_or(|b| w.delivered_pps() > b.delivered_pps())
                {
                    best = Some(w);
                }
            } else {
                hi = rate;
            }
            rate = (lo + hi) / 2.0;
        }
        Ok(best)
    }

    fn size_json(&self, size: usize, results: &[RouteResult]) -> Value {
        let routes: serde_json::Map<String, Value> = self
            .routes
            .iter()
            .zip(results)
            .map(|(route, r)| {
                (
                    route.name.to_owned(),
                    json!({
                        "flat_out": r.flat.iter().map(Window::json).collect::<Vec<_>>(),
                        "lossless": r.lossless.iter()
                            .map(|w| w.as_ref().map(Window::json))
                            .collect::<Vec<_>>(),
                    }),
                )
            })
            .collect();
        let (flat, lossless) = ratios(results);
        json!({
            "size": size,
            "routes": routes,
            "ratio_delivered": flat,
            "ratio_lossless": lossless,
        })
    }

    fn print_size(&self, size: usize, results: &[RouteResult]) {
        let burst = self.sender.effective_burst(&Offer {
            dst: self.routes[0].dst,
            size,
            rate: None,
            burst: self.args.burst,
        });
        println!();
        println!(
            "{size}-byte datagrams: {} run(s) of {} s {} per route, sender {burst} datagram(s) per sendmsg",
            self.args.runs,
            self.args.seconds,
            self.args
                .rate
                .map_or("flat out".to_owned(), |r| format!("at {r} datagrams/s")),
        );
        println!(
            "{:<7} {:>3} {:>9} {:>9} {:>7} {:>6} {:>9} {:>7} | {:>6} {:>6} {:>6} {:>6} {:>6} | {:>5}",
            "route", "run", "offer/s", "deliv/s", "Gbit/s", "loss%", "lossless", "Gbit/s",
            "send", "recv", "nodeA", "nodeB", "total", "cores"
        );
        println!(
            "{:<7} {:>3} {:>9} {:>9} {:>7} {:>6} {:>9} {:>7} | {:^34} | {:>5}",
            "", "", "", "", "", "", "pkt/s", "", "CPU µs per delivered datagram", "busy"
        );
        for (route, r) in self.routes.iter().zip(results) {
            for (i, (w, l)) in r.flat.iter().zip(&r.lossless).enumerate() {
                let us = |name: &str| {
                    w.cpu.iter().find(|(n, _)| *n == name).map_or_else(
                        || "-".to_owned(),
                        |(_, c)| format!("{:.2}", w.us_per_packet(c)),
                    )
                };
                let (lpps, lgbps) = l.as_ref().map_or_else(
                    || ("-".to_owned(), "-".to_owned()),
                    |l| (kilo(l.delivered_pps()), format!("{:.2}", l.gbps())),
                );
                println!(
                    "{:<7} {:>3} {:>9} {:>9} {:>7.2} {:>6.1} {:>9} {:>7} | {:>6} {:>6} {:>6} {:>6} {:>6.2} | {:>5.2}",
                    route.name,
                    i + 1,
                    kilo(w.offered_pps()),
                    kilo(w.delivered_pps()),
                    w.gbps(),
                    w.loss() * 100.0,
                    lpps,
                    lgbps,
                    us("sender"),
                    us("receiver"),
                    us("node_a"),
                    us("node_b"),
                    w.total_us_per_packet(),
                    w.busy_cores(),
                );
                if w.wrong_len > 0 {
                    println!(
                        "        ! {} datagram(s) arrived with another length",
                        w.wrong_len
                    );
                }
            }
        }
        let (flat, lossless) = ratios(results);
        let show = |v: &Value| {
            let (Some(mean), Some(min), Some(max)) =
                (v["mean"].as_f64(), v["min"].as_f64(), v["max"].as_f64())
            else {
                return "-".to_owned();
            };
            format!("{mean:.2} (runs {min:.2}–{max:.2})")
        };
        println!(
            "ratio mesh/direct: delivered flat out {}; highest lossless rate {}",
            show(&flat),
            show(&lossless)
        );
    }
}

/// Mesh over direct, per run, for delivered flat-out rate and lossless rate:
/// `{mean, min, max}`, or nulls when a figure is missing.
fn ratios(results: &[RouteResult]) -> (Value, Value) {
    let [direct, mesh] = results else {
        return (Value::Null, Value::Null);
    };
    let flat: Vec<f64> = direct
        .flat
        .iter()
        .zip(&mesh.flat)
        .map(|(d, m)| m.delivered_pps() / d.delivered_pps().max(1e-9))
        .collect();
    let lossless: Vec<f64> = direct
        .lossless
        .iter()
        .zip(&mesh.lossless)
        .filter_map(|(d, m)| {
            Some(m.as_ref()?.delivered_pps() / d.as_ref()?.delivered_pps().max(1e-9))
        })
        .collect();
    (summary(&flat), summary(&lossless))
}

pub fn summary(values: &[f64]) -> Value {
    if values.is_empty() {
        return json!({ "mean": null, "min": null, "max": null, "runs": [] });
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    json!({ "mean": mean, "min": min, "max": max, "runs": values })
}

/// `123.4k`, `1.23M`.
fn kilo(pps: f64) -> String {
    if pps >= 1e6 {
        format!("{:.2}M", pps / 1e6)
    } else {
        format!("{:.1}k", pps / 1e3)
    }
}
