//! `tl-bench`: whole-process benchmarks of the Transitloom data plane.
//!
//! Each mode runs Transitloom and a baseline side by side in one run, with
//! the same load generator, and prints the ratio. Figures and how to read
//! them are in docs/performance.md.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod cpu;
mod load;
mod multiwan;
mod relay;
mod udp;
mod wireguard;

#[derive(Debug, Parser)]
#[command(
    name = "tl-bench",
    about = "Whole-process benchmarks: Transitloom against a baseline, in one run",
    long_about = "Whole-process benchmarks: Transitloom against a baseline, in one run.\n\n\
        Start the real programs from the build directory beside this one:\n\n  \
        cargo build --release -p transitloom-runtime-mio -p transitloom-runtime-tokio -p transitloom-testbed\n  \
        target/release/tl-bench udp\n\n\
        Nothing else should load the machine meanwhile: every process of the \
        benchmark shares its cores."
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// UDP from one sender to one receiver on loopback, directly and through
    /// two nodes (sender → node A's ingress → node B → receiver).
    ///
    /// For each size and each run the sender goes flat out for --seconds on
    /// each route (direct first, then the mesh) while the receiver counts
    /// what arrives; then, unless --no-search, a paced sender looks for the
    /// highest rate that loses less than --max-loss percent. CPU time per
    /// delivered datagram comes from /proc for the sender thread, the
    /// receiver thread and each node process.
    Udp(UdpArgs),
    /// Real WireGuard (wireguard-go) between two network namespaces routed
    /// through a third, with iperf3 TCP and UDP through the tunnel: each
    /// WireGuard's peer endpoint at its node's mesh ingress (as
    /// `transitloom-node wg-peers` prints it) against the same pair pointed
    /// straight at each other. Needs root, wireguard-go, wg, iperf3 and ip.
    ///
    /// Each run measures direct then mesh, TCP then UDP; goodput, TCP
    /// retransmits or UDP loss, and the CPU time of both WireGuards and
    /// (on the mesh route) both nodes.
    Wireguard(WireguardArgs),
    /// Real WireGuard through the mesh between two network namespaces, node
    /// A on two uplinks each limited with tc tbf: iperf3 TCP goodput with
    /// both uplinks against one (the other `ip link set down`), and the
    /// stall when the busier uplink goes down mid-transfer. Needs root,
    /// wireguard-go, wg, iperf3, tc, nft and ip.
    Multiwan(MultiwanArgs),
    /// The relay machine on loopback through the mio driver against minimal
    /// forwarders (plain recv_from/send_to, and batched with GRO/GSO like
    /// the driver), one sender and one receiver: packets/s, Gbit/s, CPU per
    /// datagram and the ratios.
    Relay(relay::RelayArgs),
    /// The delay line `multiwan --delay1-ms/--delay2-ms` runs in the hub
    /// namespace: makes TUN device --dev and holds each IPv4 packet routed
    /// into it for the delay of the first --rule its source or destination
    /// falls under, then writes it back (the kernel here has no netem).
    #[command(hide = true)]
    DelayLine(DelayLineArgs),
}

/// Options of `tl-bench delay-line`.
#[derive(Debug, Args)]
pub struct DelayLineArgs {
    /// The TUN device to make.
    #[arg(long)]
    pub dev: String,
    /// NET/PREFIX=MILLISECONDS, such as 10.79.3.0/24=50; repeatable.
    #[arg(long)]
    pub rule: Vec<transitloom_testbed::netns::DelayRule>,
}

/// Options of `tl-bench multiwan`.
#[derive(Debug, Args)]
pub struct MultiwanArgs {
    /// Length of each iperf3 test, in seconds.
    #[arg(long, default_value_t = 10)]
    pub seconds: u32,
    /// Rounds; each measures both uplinks, one uplink and a failover.
    #[arg(long, default_value_t = 2)]
    pub runs: usize,
    /// Each uplink's rate, both ways, in Mbit/s.
    #[arg(long, default_value_t = 50)]
    pub rate_mbit: u32,
    /// wan2's rate, both ways, in Mbit/s, when it is not --rate-mbit's
    /// (wan1 keeps --rate-mbit; *one* measures wan1 alone).
    #[arg(long)]
    pub rate2_mbit: Option<u32>,
    /// Delay added to wan1 each way, in milliseconds (a userspace delay
    /// line in the hub: `tl-bench delay-line`).
    #[arg(long, default_value_t = 0)]
    pub delay1_ms: u32,
    /// Delay added to wan2 each way, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub delay2_ms: u32,
    /// Give node A's uplinks that rate as their capacity hint
    /// (`capacity_mbps`).
    #[arg(long)]
    pub capacity_hint: bool,
    /// Print one JSON document on standard output instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Keep the scratch directory (configs, logs, iperf3 reports).
    #[arg(long)]
    pub keep: bool,
    /// Directory of tlctl, transitloom-coordinator and transitloom-node
    /// (default: the directory this program is in).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

/// Options of `tl-bench wireguard`.
#[derive(Debug, Args)]
pub struct WireguardArgs {
    /// Length of each iperf3 test, in seconds.
    #[arg(long, default_value_t = 8)]
    pub seconds: u32,
    /// Rounds; each measures every route and test once, and the spread
    /// across rounds is reported.
    #[arg(long, default_value_t = 2)]
    pub runs: usize,
    /// iperf3 UDP target bitrate (`-b`), such as 500M or 0 for unlimited.
    #[arg(long, default_value = "1G")]
    pub udp_bitrate: String,
    /// iperf3 UDP datagram size inside the tunnel (`-l`); 1,392 fills
    /// WireGuard's 1,420-byte MTU.
    #[arg(long, default_value_t = 1392)]
    pub udp_length: usize,
    /// Print one JSON document on standard output instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Keep the scratch directory (configs, logs, iperf3 reports).
    #[arg(long)]
    pub keep: bool,
    /// Directory of tlctl, transitloom-coordinator and transitloom-node
    /// (default: the directory this program is in).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

/// Options of `tl-bench udp`.
#[derive(Debug, Args)]
pub struct UdpArgs {
    /// UDP payload sizes to measure, in bytes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1400,200")]
    pub sizes: Vec<usize>,
    /// Length of each flat-out measurement window, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Rounds per size; each round measures every route once (routes
    /// interleaved), and the spread across rounds is reported.
    #[arg(long, default_value_t = 2)]
    pub runs: usize,
    /// Seconds of sending before each window's counters are read, so queues
    /// and caches are in their steady state.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Datagrams per sendmsg call of the sender (GSO segments; capped by the
    /// kernel's limit and at 64,000 bytes per call). 1 sends datagram by
    /// datagram.
    #[arg(long, default_value_t = 64)]
    pub burst: usize,
    /// Pace the sender at this many datagrams per second in the measured
    /// windows instead of sending flat out (the search is then skipped).
    #[arg(long, value_name = "PPS")]
    pub rate: Option<f64>,
    /// Skip the search for the highest rate with less than --max-loss loss.
    #[arg(long)]
    pub no_search: bool,
    /// Loss (percent) below which a paced rate counts as lossless.
    #[arg(long, default_value_t = 1.0)]
    pub max_loss: f64,
    /// Paced rates tried per search (bisection steps).
    #[arg(long, default_value_t = 6)]
    pub search_steps: usize,
    /// Length of each paced window of the search, in seconds.
    #[arg(long, default_value_t = 1.5)]
    pub probe_seconds: f64,
    /// Print one JSON document on standard output instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Keep the mesh's directory (configs, PKI, daemon logs) afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Directory of tlctl, transitloom-coordinator and transitloom-node
    /// (default: the directory this program is in).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
}

/// The Transitloom programs in `dir`, or beside this one.
fn binaries(dir: Option<&Path>) -> anyhow::Result<transitloom_testbed::Binaries> {
    use anyhow::Context as _;
    let dir = match dir {
        Some(dir) => dir.to_path_buf(),
        None => {
            let exe = std::env::current_exe().context("finding tl-bench's own path")?;
            exe.parent().map(Path::to_path_buf).unwrap_or_default()
        }
    };
    transitloom_testbed::Binaries::beside(&dir)
        .context("the Transitloom programs must sit beside tl-bench (or pass --bin-dir)")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.mode {
        Mode::Udp(args) => udp::run(args),
        Mode::Wireguard(args) => wireguard::run(args),
        Mode::Multiwan(args) => multiwan::run(args),
        Mode::Relay(args) => relay::run(args),
        Mode::DelayLine(args) => {
            transitloom_testbed::netns::serve_delay_line(&args.dev, &args.rule).map_err(Into::into)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tl-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
