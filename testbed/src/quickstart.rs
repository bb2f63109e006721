//! `tlctl quickstart`: a real mesh on loopback, with traffic, in one command.
//!
//! Three nodes (`alpha`, `beta`, `gamma`), each with its own loopback
//! address as its uplink (127.0.0.1, .2, .3), one local service `demo` and
//! an association with each of the other two. Each service is a UDP socket
//! of this process; it sends numbered datagrams to its node's ingress port
//! for every peer, and checks every datagram it receives byte-for-byte.
//! Half-way through, `beta`'s daemon is killed and restarted, as a crash
//! would: it keeps its identity and its ingress ports, and traffic resumes
//! without anyone reconfiguring anything.

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::localmesh::{
    free_port, Binaries, CoordinatorSpec, Error, LocalMesh, MeshSpec, NodeSpec, ServiceSpec,
};

/// The nodes and their uplink addresses.
const NODES: [(&str, [u8; 4]); 3] = [
    ("alpha", [127, 0, 0, 1]),
    ("beta", [127, 0, 0, 2]),
    ("gamma", [127, 0, 0, 3]),
];
/// The node whose daemon is killed and restarted half-way (or after
/// [`CRASH_AFTER`] when running until Ctrl-C).
const CRASHING: &str = "beta";
const CRASH_AFTER: Duration = Duration::from_secs(10);
/// Datagram size and rate per flow: 6 flows × 1,000/s × 1,200 bytes is
/// about 58 Mbit/s in all, light enough for any machine.
const PAYLOAD: usize = 1_200;
const PER_FLOW_RATE: u64 = 1_000;
const HEADER: usize = 9;

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
    eprintln!("quickstart: making a private PKI and starting a coordinator and three nodes");

    // The services: one UDP socket per node, owned by this process.
    let services: Vec<UdpSocket> = NODES
        .iter()
        .map(|_| UdpSocket::bind((lo, 0)).map_err(Error::io("binding a service socket")))
        .collect::<Result<_, _>>()?;
    let mut nodes = Vec::new();
    for (i, (name, ip)) in NODES.iter().enumerate() {
        let base = 47_000 + 100 * i as u16;
        nodes.push(NodeSpec {
            name: (*name).to_owned(),
            wrap: Vec::new(),
            uplinks: vec![("lo".to_owned(), IpAddr::from(*ip))],
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
    let running = Arc::new(AtomicBool::new(true));
    let mut threads = Vec::new();
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
        threads.push(std::thread::spawn(move || {
            receive(&socket, &inbound, &running)
        }));
    }
    for (i, socket) in services.iter().enumerate() {
        let socket = socket
            .try_clone()
            .map_err(Error::io("cloning a service socket"))?;
        let outbound: Vec<(usize, SocketAddr, Arc<Flow>)> = flows
            .iter()
            .filter(|f| f.0 == i)
            .map(|f| (i, f.2, f.3.clone()))
            .collect();
        let running = running.clone();
        threads.push(std::thread::spawn(move || {
            send(&socket, &outbound, &running)
        }));
    }

    let traffic_started = Instant::now();
    let crash_at = options.duration.map_or(CRASH_AFTER, |d| d / 2);
    let over = |elapsed: Duration| options.duration.is_some_and(|d| elapsed >= d);
    let mut crashed = false;
    let mut restarted_at = None;
    let mut last = snapshot(&flows);
    let mut last_at = Instant::now();
    let tty = std::io::stderr().is_terminal();
    while !over(traffic_started.elapsed()) && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(250));
        if !crashed && traffic_started.elapsed() >= crash_at {
            crashed = true;
            eprintln!(
                "{}quickstart: killing {CRASHING}'s daemon (SIGKILL) and starting it again",
                if tty { "\n" } else { "" }
            );
            mesh.kill_node(CRASHING)?;
            mesh.start_node(CRASHING)?;
            restarted_at = Some(Instant::now());
        }
        if last_at.elapsed() >= Duration::from_secs(1) {
            let now = snapshot(&flows);
            let secs = last_at.elapsed().as_secs_f64();
            let line = progress(traffic_started.elapsed(), &flows, &last, &now, secs);
            if tty {
                eprint!("\r{line}\x1b[K");
            } else {
                eprintln!("{line}");
            }
            let _ = std::io::stderr().flush();
            last = now;
            last_at = Instant::now();
        }
    }
    if tty {
        eprintln!();
    }
    running.store(false, Ordering::Relaxed);
    for thread in threads {
        let _ = thread.join();
    }
    // Datagrams still in flight when the senders stop are not losses.
    std::thread::sleep(Duration::from_millis(200));

    // Back up, on the very same ingress ports the senders have used all along.
    let recovered = restarted_at.map(|_| {
        mesh.wait_up(Duration::from_secs(10)).is_ok()
            && flows.iter().filter(|f| NODES[f.0].0 == CRASHING).all(|f| {
                mesh.ingress(CRASHING, &format!("{}/demo", NODES[f.1].0))
                    .ok()
                    == Some(f.2)
            })
    });
    let mut report = final_report(&mesh, &flows, traffic_started.elapsed(), recovered)?;
    report.interrupted = stop.load(Ordering::Relaxed);
    println!("{}", report.text);
    if options.keep {
        eprintln!("quickstart: kept {}", dir.display());
    }
    Ok(report)
}

fn send(socket: &UdpSocket, outbound: &[(usize, SocketAddr, Arc<Flow>)], running: &AtomicBool) {
    let mut buf = vec![0u8; PAYLOAD];
    let started = Instant::now();
    let mut seq = 0u64;
    while running.load(Ordering::Relaxed) {
        // Paced: datagram `seq` of each flow leaves at seq / rate seconds.
        let due = started + Duration::from_secs_f64(seq as f64 / PER_FLOW_RATE as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        for (from, ingress, flow) in outbound {
            fill(&mut buf, *from as u8, seq);
            if socket.send_to(&buf, ingress).is_ok() {
                flow.sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        seq += 1;
    }
}

fn receive(socket: &UdpSocket, inbound: &[(usize, Arc<Flow>)], running: &AtomicBool) {
    let mut buf = vec![0u8; 2_048];
    let mut expect = vec![0u8; PAYLOAD];
    while running.load(Ordering::Relaxed) {
        let Ok(n) = socket.recv(&mut buf) else {
            continue;
        };
        let Some(&from) = buf.first() else { continue };
        let Some((_, flow)) = inbound.iter().find(|(i, _)| *i == usize::from(from)) else {
            continue;
        };
        let seq = buf
            .get(1..HEADER)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_be_bytes);
        fill(&mut expect, from, seq);
        if n == PAYLOAD && buf[..n] == expect[..] {
            flow.received.fetch_add(1, Ordering::Relaxed);
            flow.bytes.fetch_add(n as u64, Ordering::Relaxed);
        } else {
            flow.corrupt.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The datagram `seq` of the flow from node `from`: a header, then bytes
/// that depend on both, so any alteration shows.
fn fill(buf: &mut [u8], from: u8, seq: u64) {
    buf[0] = from;
    buf[1..HEADER].copy_from_slice(&seq.to_be_bytes());
    for (k, b) in buf[HEADER..].iter_mut().enumerate() {
        *b = (seq as u8)
            .wrapping_mul(31)
            .wrapping_add(k as u8)
            .wrapping_add(from);
    }
}

type Flows = [(usize, usize, SocketAddr, Arc<Flow>)];

fn snapshot(flows: &Flows) -> Vec<u64> {
    flows
        .iter()
        .map(|f| f.3.bytes.load(Ordering::Relaxed))
        .collect()
}

fn progress(elapsed: Duration, flows: &Flows, last: &[u64], now: &[u64], secs: f64) -> String {
    let mut line = format!("[{:>3} s]", elapsed.as_secs());
    for (k, (i, j, _, _)) in flows.iter().enumerate() {
        let mbit = (now[k] - last[k]) as f64 * 8.0 / secs / 1e6;
        let _ = write!(line, "  {}→{} {mbit:5.1}", short(*i), short(*j));
    }
    line.push_str(" Mbit/s");
    line
}

fn short(node: usize) -> &'static str {
    &NODES[node].0[..1]
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
    }
}

fn final_report(
    mesh: &LocalMesh,
    flows: &Flows,
    elapsed: Duration,
    recovered: Option<bool>,
) -> Result<Report, Error> {
    let Report {
        mut ok, mut text, ..
    } = flow_report(flows, elapsed);
    let _ = writeln!(
        text,
        "\nLoss is what was sent while {CRASHING}'s daemon was down and re-establishing \
         its paths; every datagram that arrived was checked byte-for-byte."
    );
    if let Some(recovered) = recovered {
        ok &= recovered;
        let _ = writeln!(
            text,
            "{CRASHING} after its restart: {}",
            if recovered {
                "admitted again, every association up, same ingress ports"
            } else {
                "NOT back up"
            }
        );
    }
    let _ = writeln!(text, "\nPaths:");
    for name in mesh.node_names() {
        let status = mesh.status(name)?;
        for assoc in status["associations"].as_array().into_iter().flatten() {
            for path in assoc["paths"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    text,
                    "  {name:<6} → {:<12} {:<16} {:<8} via {} to {} rtt {}",
                    assoc["peer"].as_str().unwrap_or("?"),
                    path["kind"].as_str().unwrap_or("?"),
                    path["state"].as_str().unwrap_or("?"),
                    path["uplink"].as_str().unwrap_or("?"),
                    path["remote"].as_str().unwrap_or("?"),
                    path["rtt_ms"]
                        .as_f64()
                        .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.2} ms")),
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
    })
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
