//! `tlctl quickstart`: a real mesh on loopback, with traffic, in one command.
//!
//! Three nodes (`alpha`, `beta`, `gamma`), one local service `demo` each
//! and an association with each of the other two. `alpha` has two uplinks,
//! `wan1` on 127.0.0.1 and `wan2` on 127.0.0.4; `beta` and `gamma` one each,
//! on 127.0.0.2 and .3. Each service is a UDP socket of this process; it
//! sends numbered, timestamped datagrams to its node's ingress port for
//! every peer, and checks every datagram it receives byte-for-byte.
//!
//! Half-way through, `alpha`'s `wan1` is taken out of service the way an
//! operator would, by setting `enabled = false` in its configuration and
//! reloading it (SIGHUP): no root needed. Its paths go at once; the peers'
//! paths to it fail when their probes go unanswered, and all traffic moves
//! to `wan2`. The progress line shows alpha's throughput per uplink, and the
//! report how long the flows through alpha were disturbed. Three quarters
//! through, `beta`'s daemon is killed and restarted, as a crash would: it
//! keeps its identity and its ingress ports, and traffic resumes without
//! anyone reconfiguring anything.

mod failover;

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::localmesh::{
    free_port, service_socket, Binaries, CoordinatorSpec, Error, LocalMesh, MeshSpec, NodeSpec,
    ServiceSpec,
};

/// An uplink: its name and address.
type Uplink = (&'static str, [u8; 4]);

/// The nodes and their uplinks.
const NODES: [(&str, &[Uplink]); 3] = [
    (
        "alpha",
        &[("wan1", [127, 0, 0, 1]), ("wan2", [127, 0, 0, 4])],
    ),
    ("beta", &[("lo", [127, 0, 0, 2])]),
    ("gamma", &[("lo", [127, 0, 0, 3])]),
];
/// The node that loses an uplink half-way (or after [`CUT_AFTER`] when
/// running until Ctrl-C), the uplink it loses and the one left.
const FAILING_OVER: &str = "alpha";
const CUT: &str = "wan1";
const KEPT: &str = "wan2";
const CUT_AFTER: Duration = Duration::from_secs(10);
/// The nodes' ingress ranges: a hundred ports each from the first free
/// block of [`INGRESS_PORTS`] at or after this, below the system's
/// ephemeral ports, so no other program's socket holds one (and a second
/// quickstart on the same host takes the next block).
const INGRESS_BASE: u16 = 27_000;
/// Ports for the three nodes' ingress ranges together.
const INGRESS_PORTS: u16 = 300;
/// The node whose daemon is killed and restarted three quarters through
/// (or after [`CRASH_AFTER`] when running until Ctrl-C).
const CRASHING: &str = "beta";
const CRASH_AFTER: Duration = Duration::from_secs(20);
/// Datagram size and rate per flow: 6 flows × 1,000/s × 1,200 bytes is
/// about 58 Mbit/s in all, light enough for any machine.
const PAYLOAD: usize = 1_200;
const PER_FLOW_RATE: u64 = 1_000;
/// Sender index, sequence number, send time (µs since traffic started).
const HEADER: usize = 17;

pub use failover::Failover;

/// What the caller asks for.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long traffic runs; `None` runs until `stop` is set (Ctrl-C).
    pub duration: Option<Duration>,
    /// Where the programs are.
    pub binaries: Binaries,
    /// Keep the directory (PKI, configs, logs) instead of deleting it.
    pub keep: bool,
}

/// Traffic counters of one directed flow, from one service to another.
#[derive(Debug, Default)]
struct Flow {
    sent: AtomicU64,
    received: AtomicU64,
    bytes: AtomicU64,
    corrupt: AtomicU64,
}

/// The outcome of a run, for the caller's exit code.
#[derive(Debug)]
pub struct Report {
    /// Every flow delivered datagrams, and none arrived altered.
    pub ok: bool,
    /// Ctrl-C ended the run (the report still covers everything).
    pub interrupted: bool,
    /// The final report, as printed.
    pub text: String,
    /// What taking alpha's uplink out did, once it was.
    pub failover: Option<Failover>,
}

/// Runs the quickstart, printing progress to stderr and the report to
/// stdout. Returns early, cleaning up, once `stop` is set (Ctrl-C).
pub fn run(options: &Options, stop: &AtomicBool) -> Result<Report, Error> {
    let dir = scratch_dir()?;
    let guard = ScratchDir {
        path: dir.clone(),
        keep: options.keep,
    };
    let result = run_in(&dir, options, stop);
    drop(guard);
    result
}

fn run_in(dir: &Path, options: &Options, stop: &AtomicBool) -> Result<Report, Error> {
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    eprintln!("quickstart: working in {}", dir.display());
    eprintln!(
        "quickstart: making a private PKI and starting a coordinator and three nodes \
         ({FAILING_OVER} with two uplinks, {CUT} on 127.0.0.1 and {KEPT} on 127.0.0.4)"
    );

    let ingress_base = free_block(lo)?;
    // The services: one UDP socket per node, owned by this process.
    let services: Vec<UdpSocket> = NODES
        .iter()
        .map(|_| service_socket(lo, ingress_base..=ingress_base + INGRESS_PORTS - 1))
        .collect::<Result<_, _>>()?;
    let mut nodes = Vec::new();
    for (i, (name, uplinks)) in NODES.iter().enumerate() {
        let base = ingress_base + 100 * i as u16;
        nodes.push(NodeSpec {
            name: (*name).to_owned(),
            wrap: Vec::new(),
            uplinks: uplinks
                .iter()
                .map(|(uplink, ip)| ((*uplink).to_owned(), IpAddr::from(*ip)))
                .collect(),
            status_listen: SocketAddr::new(lo, free_port(lo)?),
            services: vec![ServiceSpec {
                name: "demo".to_owned(),
                target: services[i]
                    .local_addr()
                    .map_err(Error::io("a service address"))?,
                ingress_range: format!("127.0.0.1:{base}-{}", base + 99),
            }],
            associations: NODES
                .iter()
                .filter(|(peer, _)| peer != name)
                .map(|(peer, _)| ("demo".to_owned(), format!("{peer}/demo")))
                .collect(),
            advertise_private: true,
            extra: String::new(),
        });
    }
    let spec = MeshSpec {
        coordinator: CoordinatorSpec {
            listen: SocketAddr::new(lo, free_port(lo)?),
            status_listen: SocketAddr::new(lo, free_port(lo)?),
            wrap: Vec::new(),
        },
        nodes,
    };
    let started = Instant::now();
    let mut mesh = LocalMesh::start(dir, options.binaries.clone(), spec)?;
    mesh.wait_up(Duration::from_secs(30))?;
    eprintln!(
        "quickstart: all six association ends up after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Flows: (from node, to node) → the sender's ingress and counters.
    let mut flows = Vec::new();
    for (i, (from, _)) in NODES.iter().enumerate() {
        for (j, (to, _)) in NODES.iter().enumerate() {
            if i != j {
                let ingress = mesh.ingress(from, &format!("{to}/demo"))?;
                flows.push((i, j, ingress, Arc::new(Flow::default())));
            }
        }
    }
    // Senders stop first; receivers a moment later, so what is in flight
    // then still arrives.
    let sending = Arc::new(AtomicBool::new(true));
    let running = Arc::new(AtomicBool::new(true));
    let epoch = Instant::now();
    let mut receivers = Vec::new();
    for (j, socket) in services.iter().enumerate() {
        let socket = socket
            .try_clone()
            .map_err(Error::io("cloning a service socket"))?;
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .map_err(Error::io("setting a read timeout"))?;
        let inbound: Vec<(usize, Arc<Flow>)> = flows
            .iter()
            .filter(|f| f.1 == j)
            .map(|f| (f.0, f.3.clone()))
            .collect();
        let running = running.clone();
        receivers.push(std::thread::spawn(move || {
            receive(&socket, &inbound, &running)
        }));
    }
    let mut senders = Vec::new();
    for (i, socket) in services.iter().enumerate() {
        let socket = socket
            .try_clone()
            .map_err(Error::io("cloning a service socket"))?;
        let outbound: Vec<(usize, SocketAddr, Arc<Flow>)> = flows
            .iter()
            .filter(|f| f.0 == i)
            .map(|f| (i, f.2, f.3.clone()))
            .collect();
        let sending = sending.clone();
        senders.push(std::thread::spawn(move || {
            send(&socket, &outbound, epoch, &sending)
        }));
    }

    let cut_at = options.duration.map_or(CUT_AFTER, |d| d / 2);
    let crash_at = options.duration.map_or(CRASH_AFTER, |d| d * 3 / 4);
    let over = |elapsed: Duration| options.duration.is_some_and(|d| elapsed >= d);
    let mut cut: Option<Cut> = None;
    let mut crashed_at = None;
    let mut last = snapshot(&flows);
    let mut last_uplinks = uplink_bytes(&mesh);
    let mut last_at = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let say = |text: String| {
        eprintln!("{}quickstart: {text}", if tty { "\n" } else { "" });
    };
    while !over(epoch.elapsed()) && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(250));
        if cut.is_none() && epoch.elapsed() >= cut_at {
            say(format!(
                "taking {FAILING_OVER}'s uplink {CUT} out of service (enabled = false, SIGHUP); \
                 traffic moves to {KEPT}"
            ));
            let before = uplink_bytes(&mesh);
            let before_at = Instant::now();
            let wall_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            mesh.set_uplink_enabled(FAILING_OVER, CUT, false)?;
            let at = Instant::now();
            // The second before: from the last progress sample.
            let secs = before_at.duration_since(last_at).as_secs_f64().max(0.25);
            let rate =
                |k: usize| before[k].saturating_sub(last_uplinks[k]) as f64 * 8.0 / secs / 1e6;
            cut = Some(Cut {
                at: before_at.duration_since(epoch),
                wall_ms,
                before_mbps: [rate(0), rate(1)],
                bytes: uplink_bytes(&mesh),
                bytes_at: at,
                end: None,
            });
        }
        if crashed_at.is_none() && epoch.elapsed() >= crash_at {
            if let Some(cut) = cut.as_mut() {
                cut.end = Some((epoch.elapsed(), uplink_bytes(&mesh), Instant::now()));
            }
            say(format!(
                "killing {CRASHING}'s daemon (SIGKILL) and starting it again"
            ));
            mesh.kill_node(CRASHING)?;
            mesh.start_node(CRASHING)?;
            crashed_at = Some(epoch.elapsed());
        }
        if last_at.elapsed() >= Duration::from_secs(1) {
            let now = snapshot(&flows);
            let uplinks = uplink_bytes(&mesh);
            let secs = last_at.elapsed().as_secs_f64();
            let line = progress(
                epoch.elapsed(),
                (&last, &now),
                (&last_uplinks, &uplinks),
                secs,
            );
            if tty {
                eprint!("\r{line}\x1b[K");
            } else {
                eprintln!("{line}");
            }
            let _ = std::io::stderr().flush();
            last = now;
            last_uplinks = uplinks;
            last_at = Instant::now();
        }
    }
    if tty {
        eprintln!();
    }
    let traffic_ended = epoch.elapsed();
    if let Some(cut) = cut.as_mut() {
        cut.end
            .get_or_insert_with(|| (traffic_ended, uplink_bytes(&mesh), Instant::now()));
    }
    sending.store(false, Ordering::Relaxed);
    for thread in senders {
        let _ = thread.join();
    }
    // Datagrams still in flight when the senders stop are not losses.
    std::thread::sleep(Duration::from_millis(200));
    running.store(false, Ordering::Relaxed);
    let mut logs: Vec<(usize, usize, failover::FlowLog)> = Vec::new();
    for (j, thread) in receivers.into_iter().enumerate() {
        if let Ok(inbound) = thread.join() {
            logs.extend(inbound.into_iter().map(|(i, log)| (i, j, log)));
        }
    }
    let failover = cut.map(|cut| cut.measured(epoch, &logs));

    // Back up, on the very same ingress ports the senders have used all along.
    let recovered = crashed_at.map(|_| {
        mesh.wait_up(Duration::from_secs(10)).is_ok()
            && flows.iter().filter(|f| NODES[f.0].0 == CRASHING).all(|f| {
                mesh.ingress(CRASHING, &format!("{}/demo", NODES[f.1].0))
                    .ok()
                    == Some(f.2)
            })
    });
    let mut report = final_report(
        &mesh,
        &flows,
        traffic_ended,
        recovered,
        failover.as_ref().zip(cut.map(|c| c.wall_ms)),
    )?;
    report.failover = failover;
    report.interrupted = stop.load(Ordering::Relaxed);
    println!("{}", report.text);
    if options.keep {
        eprintln!("quickstart: kept {}", dir.display());
    }
    Ok(report)
}

/// The cut of alpha's uplink as the run saw it.
#[derive(Debug, Clone, Copy)]
struct Cut {
    /// When (just before the reload), from the start of traffic.
    at: Duration,
    /// When, in Unix milliseconds (to find its events).
    wall_ms: u64,
    before_mbps: [f64; 2],
    /// Bytes through each uplink once the reload was applied.
    bytes: [u64; 2],
    bytes_at: Instant,
    /// The end of the window: when, bytes through each uplink then.
    end: Option<(Duration, [u64; 2], Instant)>,
}

impl Cut {
    fn measured(&self, epoch: Instant, logs: &[(usize, usize, failover::FlowLog)]) -> Failover {
        let node = NODES
            .iter()
            .position(|(n, _)| *n == FAILING_OVER)
            .unwrap_or(0);
        let (end, bytes, bytes_at) = self.end.unwrap_or((self.at, self.bytes, self.bytes_at));
        // Datagrams sent in the last moments before the end are still in
        // flight then, not lost.
        let window_end = end.saturating_sub(Duration::from_millis(50)).max(self.at);
        let through: Vec<&failover::FlowLog> = logs
            .iter()
            .filter(|(i, j, _)| *i == node || *j == node)
            .map(|(_, _, log)| log)
            .collect();
        let (lost, longest_pause, stall) = failover::measure(&through, epoch, self.at, window_end);
        let after_bytes = [
            bytes[0].saturating_sub(self.bytes[0]),
            bytes[1].saturating_sub(self.bytes[1]),
        ];
        let secs = bytes_at.duration_since(self.bytes_at).as_secs_f64();
        let rate = |b: u64| {
            if secs > 0.0 {
                b as f64 * 8.0 / secs / 1e6
            } else {
                0.0
            }
        };
        Failover {
            node: FAILING_OVER.to_owned(),
            uplink: CUT.to_owned(),
            other: KEPT.to_owned(),
            at: self.at,
            window: window_end - self.at,
            lost,
            longest_pause,
            stall,
            before_mbps: self.before_mbps,
            after_mbps: [rate(after_bytes[0]), rate(after_bytes[1])],
            after_bytes,
        }
    }
}

/// Bytes (sent and received) through alpha's two uplinks so far, from its
/// status; zeros while it does not answer.
fn uplink_bytes(mesh: &LocalMesh) -> [u64; 2] {
    let Ok(status) = mesh.status(FAILING_OVER) else {
        return [0, 0];
    };
    let of = |name: &str| {
        status["uplinks"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|u| u["name"] == name)
            .map_or(0, |u| {
                u["tx_bytes"].as_u64().unwrap_or(0) + u["rx_bytes"].as_u64().unwrap_or(0)
            })
    };
    [of(CUT), of(KEPT)]
}

fn send(
    socket: &UdpSocket,
    outbound: &[(usize, SocketAddr, Arc<Flow>)],
    epoch: Instant,
    running: &AtomicBool,
) {
    let mut buf = vec![0u8; PAYLOAD];
    let mut seq = 0u64;
    while running.load(Ordering::Relaxed) {
        // Paced: datagram `seq` of each flow leaves at seq / rate seconds.
        let due = epoch + Duration::from_secs_f64(seq as f64 / PER_FLOW_RATE as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        for (from, ingress, flow) in outbound {
            let sent_us = epoch.elapsed().as_micros() as u64;
            fill(&mut buf, *from as u8, seq, sent_us);
            if socket.send_to(&buf, ingress).is_ok() {
                flow.sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        seq += 1;
    }
}

/// Receives until `running` is cleared; returns each inbound flow's log.
fn receive(
    socket: &UdpSocket,
    inbound: &[(usize, Arc<Flow>)],
    running: &AtomicBool,
) -> Vec<(usize, failover::FlowLog)> {
    let mut buf = vec![0u8; 2_048];
    let mut expect = vec![0u8; PAYLOAD];
    let mut logs: Vec<(usize, failover::FlowLog)> = inbound
        .iter()
        .map(|(i, _)| (*i, failover::FlowLog::default()))
        .collect();
    while running.load(Ordering::Relaxed) {
        let Ok(n) = socket.recv(&mut buf) else {
            continue;
        };
        let at = Instant::now();
        let Some(&from) = buf.first() else { continue };
        let Some(k) = inbound.iter().position(|(i, _)| *i == usize::from(from)) else {
            continue;
        };
        let flow = &inbound[k].1;
        let word = |at: usize| {
            buf.get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_be_bytes)
        };
        let (seq, sent_us) = (word(1), word(9));
        fill(&mut expect, from, seq, sent_us);
        if n == PAYLOAD && buf[..n] == expect[..] {
            flow.received.fetch_add(1, Ordering::Relaxed);
            flow.bytes.fetch_add(n as u64, Ordering::Relaxed);
            logs[k].1.arrived(seq, sent_us, at);
        } else {
            flow.corrupt.fetch_add(1, Ordering::Relaxed);
        }
    }
    logs
}

/// The datagram `seq` of the flow from node `from`, sent `sent_us` after
/// traffic started: a header, then bytes that depend on all three, so any
/// alteration shows.
fn fill(buf: &mut [u8], from: u8, seq: u64, sent_us: u64) {
    buf[0] = from;
    buf[1..9].copy_from_slice(&seq.to_be_bytes());
    buf[9..HEADER].copy_from_slice(&sent_us.to_be_bytes());
    for (k, b) in buf[HEADER..].iter_mut().enumerate() {
        *b = (seq as u8)
            .wrapping_mul(31)
            .wrapping_add(k as u8)
            .wrapping_add(from)
            .wrapping_add(sent_us as u8);
    }
}

type Flows = [(usize, usize, SocketAddr, Arc<Flow>)];

fn snapshot(flows: &Flows) -> Vec<u64> {
    flows
        .iter()
        .map(|f| f.3.bytes.load(Ordering::Relaxed))
        .collect()
}

/// `[ 12 s]  57.6 Mbit/s delivered, 6/6 flows  |  alpha wan1 28.8  wan2 28.8 Mbit/s`
fn progress(
    elapsed: Duration,
    flows: (&[u64], &[u64]),
    uplinks: (&[u64; 2], &[u64; 2]),
    secs: f64,
) -> String {
    let mbit = |bytes: u64| bytes as f64 * 8.0 / secs / 1e6;
    let (last, now) = flows;
    let delivered: u64 = now.iter().zip(last).map(|(n, l)| n - l).sum();
    let moving = now.iter().zip(last).filter(|(n, l)| n > l).count();
    let (before, after) = uplinks;
    format!(
        "[{:>3} s]  {:5.1} Mbit/s delivered, {moving}/{} flows  |  {FAILING_OVER} {CUT} {:5.1}  {KEPT} {:5.1} Mbit/s",
        elapsed.as_secs(),
        mbit(delivered),
        now.len(),
        mbit(after[0].saturating_sub(before[0])),
        mbit(after[1].saturating_sub(before[1])),
    )
}

/// The per-flow table, from this process's own counters.
fn flow_report(flows: &Flows, elapsed: Duration) -> Report {
    let mut ok = true;
    let mut text = String::from("\nTransitloom quickstart: report\n\n");
    let _ = writeln!(
        text,
        "{:<16} {:>9} {:>9} {:>7} {:>9} {:>8}",
        "flow", "sent", "received", "loss", "Mbit/s", "altered"
    );
    for (i, j, _, flow) in flows {
        let sent = flow.sent.load(Ordering::Relaxed);
        let received = flow.received.load(Ordering::Relaxed);
        let corrupt = flow.corrupt.load(Ordering::Relaxed);
        let loss = 100.0 * sent.saturating_sub(received) as f64 / sent.max(1) as f64;
        let mbit = flow.bytes.load(Ordering::Relaxed) as f64 * 8.0 / elapsed.as_secs_f64() / 1e6;
        ok &= received > 0 && corrupt == 0;
        let _ = writeln!(
            text,
            "{:<16} {sent:>9} {received:>9} {loss:>6.2}% {mbit:>9.1} {corrupt:>8}",
            format!("{} → {}", NODES[*i].0, NODES[*j].0)
        );
    }
    Report {
        ok,
        interrupted: false,
        text,
        failover: None,
    }
}

fn final_report(
    mesh: &LocalMesh,
    flows: &Flows,
    elapsed: Duration,
    recovered: Option<bool>,
    failover: Option<(&Failover, u64)>,
) -> Result<Report, Error> {
    let Report {
        mut ok, mut text, ..
    } = flow_report(flows, elapsed);
    let _ = writeln!(
        text,
        "\nLoss is what was sent while {FAILING_OVER}'s paths through {CUT} were failing \
         over and while {CRASHING}'s daemon was down and re-establishing its paths; every \
         datagram that arrived was checked byte-for-byte."
    );
    if let Some((f, cut_ms)) = failover {
        let _ = writeln!(
            text,
            "\nFailover: {} took its uplink {} out of service at {:.1} s (enabled = false, \
             SIGHUP).\n  {} {:.1} and {} {:.1} Mbit/s in the second before; {:.1} and {:.1} \
             Mbit/s in the {:.1} s after.\n  Flows through {}: {} datagrams lost, {}.\n  \
             Failover stall: {:.0} ms (from the cut until the last datagram lost was sent, or \
             the longest pause if longer).",
            f.node,
            f.uplink,
            f.at.as_secs_f64(),
            f.uplink,
            f.before_mbps[0],
            f.other,
            f.before_mbps[1],
            f.after_mbps[0],
            f.after_mbps[1],
            f.window.as_secs_f64(),
            f.node,
            f.lost,
            if f.longest_pause.is_zero() {
                "no pause in delivery of 20 ms or more".to_owned()
            } else {
                format!(
                    "longest pause in delivery {:.0} ms",
                    f.longest_pause.as_secs_f64() * 1e3
                )
            },
            f.stall.as_secs_f64() * 1e3,
        );
        text.push_str(&failover_events(mesh, cut_ms));
    }
    if let Some(recovered) = recovered {
        ok &= recovered;
        let _ = writeln!(
            text,
            "\n{CRASHING} after its restart: {}",
            if recovered {
                "admitted again, every association up, same ingress ports"
            } else {
                "NOT back up"
            }
        );
    }
    let _ = writeln!(text, "\nPaths (`transitloom-node status`):");
    for name in mesh.node_names() {
        let status = mesh.status(name)?;
        for assoc in status["associations"].as_array().into_iter().flatten() {
            for path in assoc["paths"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    text,
                    "  {name:<6} → {:<12} {:<16} {:<8} via {:<4} to {:<16} rtt {:<8} weight {:.2} {}",
                    assoc["peer"].as_str().unwrap_or("?"),
                    path["kind"].as_str().unwrap_or("?"),
                    path["state"].as_str().unwrap_or("?"),
                    path["uplink"].as_str().unwrap_or("?"),
                    path["remote"].as_str().unwrap_or("?"),
                    path["rtt_ms"]
                        .as_f64()
                        .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.2} ms")),
                    path["weight"].as_f64().unwrap_or(0.0),
                    path["reason"].as_str().unwrap_or(""),
                );
            }
        }
    }
    let _ = writeln!(
        text,
        "\nWireGuard: with a real interface behind each service, these are the \
         peers alpha would paste (`transitloom-node wg-peers`):\n"
    );
    text.push_str(&mesh.wg_peers("alpha")?);
    let _ = writeln!(
        text,
        "\nResult: {}",
        if ok {
            "every flow crossed the mesh unaltered"
        } else {
            "FAILED: a flow delivered nothing, or a datagram arrived altered"
        }
    );
    Ok(Report {
        ok,
        interrupted: false,
        text,
        failover: None,
    })
}

/// What the nodes recorded of the failover (`transitloom-node explain`):
/// alpha's side with gamma (its uplink going, its paths removed) and
/// gamma's side (its path to alpha's lost address failing, and how long
/// detection took). Gamma is never restarted, so its record is whole.
fn failover_events(mesh: &LocalMesh, cut_ms: u64) -> String {
    let mut text = String::new();
    let other = NODES[2].0;
    for (node, peer) in [(FAILING_OVER, other), (other, FAILING_OVER)] {
        let Ok(status) = mesh.status(node) else {
            continue;
        };
        let Some(assoc) = status["associations"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["peer"] == format!("{peer}/demo"))
        else {
            continue;
        };
        let _ = writeln!(
            text,
            "\n  {node}'s record (`transitloom-node explain {peer}` on {node}), since the cut:"
        );
        let events = assoc["events"].as_array().cloned().unwrap_or_default();
        let since: Vec<&serde_json::Value> = events
            .iter()
            .filter(|e| e["at_unix_ms"].as_u64().is_some_and(|at| at + 5 >= cut_ms))
            .take(6)
            .collect();
        if since.is_empty() {
            let _ = writeln!(text, "    nothing recorded");
        }
        for e in since {
            let at = e["at_unix_ms"].as_u64().unwrap_or(cut_ms);
            let what = match (e["path"].as_str(), e["remote"].as_str()) {
                (Some(path), Some(remote)) => format!(
                    "path {path} ({} -> {remote})",
                    e["uplink"].as_str().unwrap_or("?")
                ),
                _ => format!("uplink {}", e["uplink"].as_str().unwrap_or("?")),
            };
            let _ = writeln!(
                text,
                "    +{:>4} ms  {what}: {}",
                at as i64 - cut_ms as i64,
                e["detail"].as_str().unwrap_or("?")
            );
        }
    }
    text
}

/// A fresh directory under the system's temporary directory.
fn scratch_dir() -> Result<PathBuf, Error> {
    let base = std::env::temp_dir();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let dir = base.join(format!(
        "transitloom-quickstart-{}-{stamp}",
        std::process::id()
    ));
    std::fs::create_dir(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    Ok(dir)
}

/// The first block of [`INGRESS_PORTS`] UDP ports on `ip`, from
/// [`INGRESS_BASE`] up to the ephemeral ports, of which none is bound now
/// (another quickstart may be running).
fn free_block(ip: IpAddr) -> Result<u16, Error> {
    let free = |port: u16| UdpSocket::bind((ip, port)).is_ok();
    (INGRESS_BASE..32_768 - INGRESS_PORTS)
        .step_by(usize::from(INGRESS_PORTS))
        .find(|&base| (base..base + INGRESS_PORTS).all(free))
        .ok_or_else(|| Error::Io {
            what: format!(
                "finding {INGRESS_PORTS} free UDP ports in a row on {ip} from {INGRESS_BASE} \
                 to 32767 for the ingress ranges"
            ),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        })
}

/// Deletes the scratch directory on every way out, unless asked to keep it.
#[derive(Debug)]
struct ScratchDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}
