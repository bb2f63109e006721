//! `transitloom-node`: the Transitloom node daemon and its local inspection
//! commands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use transitloom_runtime_mio::config::{NodeConfig, UplinkSource, DEFAULT_STATUS_LISTEN};
use transitloom_runtime_mio::http;
use transitloom_runtime_mio::logging::{self, LogFormat};
use transitloom_runtime_mio::node_daemon::{self, Setup, UplinkReach};
use transitloom_runtime_mio::status::{explain, NodeStatus};

/// The Transitloom node: exposes local UDP services (WireGuard first) on
/// stable loopback ingress ports and carries them across the mesh.
#[derive(Debug, Parser)]
#[command(name = "transitloom-node", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the node: enrolls with the join token on first start, keeps its
    /// key, certificate and ingress addresses in the data directory, and
    /// serves `/status` and `/metrics` until SIGTERM or SIGINT. Logs go to
    /// standard error (`RUST_LOG`, default `info`).
    Run {
        /// The node configuration file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Log lines as human text or as one JSON object per line (for a
        /// log collector); `RUST_LOG` filters either (default `info`).
        #[arg(
            long,
            value_name = "FORMAT",
            env = "TL_LOG_FORMAT",
            default_value = "text"
        )]
        log_format: LogFormat,
    },
    /// Validates a configuration file and shows what the node would use:
    /// uplinks, services, and the ingress address of every association
    /// (assigning and keeping new ones in the data directory); warns of an
    /// ingress range among the system's ephemeral ports.
    Check {
        /// The node configuration file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
    /// Shows the running node's associations, paths, uplinks and admission
    /// (from its status endpoint).
    Status {
        /// Print the raw JSON of `GET /status` instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: StatusTarget,
    },
    /// Explains one association: why each of its paths has its state and
    /// its weight, in words and with the numbers behind the scheduler's
    /// reason (carrying, not validated, stale, backup, metered, slow), then
    /// the last events of its paths with their times: validations,
    /// failures with how long detection took, uplinks going down and up,
    /// the scheduler starting or stopping to carry on a path.
    ///
    /// ASSOC is the association's id (`status` shows it), its peer
    /// service (`beta/wg0`), or the peer node (`beta`) when only one
    /// association goes there. Reads the node's status endpoint, like
    /// `status`; docs/operators.md says what to do about each reason.
    Explain {
        /// The association: id, `node/service` of the peer, or peer node.
        #[arg(value_name = "ASSOC")]
        assoc: String,
        /// Print the explanation as JSON: the association as `status
        /// --json` has it (events included), the uplinks, and each path's
        /// explanation in words.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: StatusTarget,
    },
    /// Prints a WireGuard `[Peer]` snippet with `Endpoint = INGRESS` for each
    /// association, to paste into the WireGuard configuration.
    WgPeers {
        /// Print `wg set INTERFACE peer … endpoint …` commands instead.
        #[arg(long, value_name = "NAME")]
        interface: Option<String>,
        #[command(flatten)]
        target: StatusTarget,
    },
}

#[derive(Debug, clap::Args)]
struct StatusTarget {
    /// The node's status address (default: `status_listen` from --config,
    /// else 127.0.0.1:7480).
    #[arg(long, value_name = "ADDR")]
    status: Option<SocketAddr>,
    /// Read the status address from this configuration file.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Exit code for bad usage or configuration.
const BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, log_format } => {
            logging::init(log_format);
            match node_daemon::run(&config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    logging::fatal(log_format, "transitloom-node", &err);
                    ExitCode::from(err.exit_code())
                }
            }
        }
        Command::Check { config } => check(&config),
        Command::Status { json, target } => fetch_status(&target).map_or_else(
            |code| code,
            |(raw, status)| {
                if json {
                    println!("{raw}");
                } else {
                    print!("{}", table(&status));
                }
                ExitCode::SUCCESS
            },
        ),
        Command::Explain {
            assoc,
            json,
            target,
        } => fetch_status(&target).map_or_else(
            |code| code,
            |(_, status)| print_explanation(&status, &assoc, json),
        ),
        Command::WgPeers { interface, target } => fetch_status(&target).map_or_else(
            |code| code,
            |(_, status)| {
                print!("{}", status.wg_peers(interface.as_deref()));
                ExitCode::SUCCESS
            },
        ),
    }
}

fn print_explanation(status: &NodeStatus, query: &str, json: bool) -> ExitCode {
    let assoc = match explain::find(status, query) {
        Ok(assoc) => assoc,
        Err(why) => {
            eprintln!("transitloom-node: {why}");
            return ExitCode::from(BAD_CONFIG);
        }
    };
    let explanation = explain::explain(status, assoc);
    if json {
        match serde_json::to_string_pretty(&explanation) {
            Ok(text) => println!("{text}"),
            Err(err) => {
                eprintln!("transitloom-node: {err}");
                return ExitCode::from(1);
            }
        }
    } else {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        print!("{}", explain::render(&explanation, now_ms));
    }
    ExitCode::SUCCESS
}

fn check(file: &std::path::Path) -> ExitCode {
    logging::init(LogFormat::Text);
    let setup = match Setup::prepare(file) {
        Ok(setup) => setup,
        Err(err) => {
            eprintln!("transitloom-node: {err}");
            return ExitCode::from(err.exit_code());
        }
    };
    let (config, ingress) = (&setup.config, &setup.ingress);
    let enrolled = match node_daemon::check_identity(config) {
        Ok(enrolled) => enrolled,
        Err(err) => {
            eprintln!("transitloom-node: {err}");
            return ExitCode::from(err.exit_code());
        }
    };
    println!("{}: valid", config.file.display());
    println!(
        "identity: {}",
        if enrolled {
            "enrolled (node.crt kept)"
        } else {
            "will enroll with join_token"
        }
    );
    for s in &config.services {
        println!(
            "service {} -> {} (ingress range {}:{}-{})",
            s.name, s.target, s.ingress_range.ip, s.ingress_range.low, s.ingress_range.high
        );
    }
    for warning in setup.ingress_warnings() {
        println!("warning: {warning}");
    }
    println!(
        "node {} (data in {})",
        config.name,
        config.data_dir.display()
    );
    for (u, reach) in config.uplinks.iter().zip(setup.uplink_reach()) {
        let source = match (&u.source, reach) {
            (UplinkSource::Bind(ip), UplinkReach::Up(_)) => format!("bind {ip}"),
            (UplinkSource::Interface(name), UplinkReach::Up(ip)) => {
                format!("interface {name}, now {ip}")
            }
            (UplinkSource::Bind(ip), UplinkReach::Down(why)) => {
                format!("bind {ip}, down now: {why}")
            }
            (UplinkSource::Interface(name), UplinkReach::Down(why)) => {
                format!("interface {name}, down now: {why}")
            }
        };
        let metered = if u.metered { ", metered" } else { "" };
        println!("uplink {} ({source}, {}{metered})", u.name, u.priority);
    }
    for (a, addr) in config.associations.iter().zip(ingress) {
        println!("association {} -> {}: ingress {addr}", a.service, a.peer());
    }
    ExitCode::SUCCESS
}

fn fetch_status(target: &StatusTarget) -> Result<(String, NodeStatus), ExitCode> {
    let addr = match (&target.status, &target.config) {
        (Some(addr), _) => *addr,
        (None, Some(file)) => match NodeConfig::load(file) {
            Ok(config) => config.status_listen,
            Err(err) => {
                eprintln!("transitloom-node: {err}");
                return Err(ExitCode::from(BAD_CONFIG));
            }
        },
        (None, None) => DEFAULT_STATUS_LISTEN.parse().expect("a valid default"),
    };
    let raw = match http::get(addr, "/status", Duration::from_secs(3)) {
        Ok((200, body)) => body,
        Ok((code, _)) => {
            eprintln!("transitloom-node: {addr} answered HTTP {code} for /status");
            return Err(ExitCode::from(1));
        }
        Err(err) => {
            eprintln!("transitloom-node: no node answers on {addr} ({err}); is it running, and is --status right?");
            return Err(ExitCode::from(1));
        }
    };
    match serde_json::from_str(&raw) {
        Ok(status) => Ok((raw, status)),
        Err(err) => {
            eprintln!("transitloom-node: {addr} sent a status this version does not read: {err}");
            Err(ExitCode::from(1))
        }
    }
}

fn table(status: &NodeStatus) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let n = &status.node;
    let token = n
        .token_expires_in_s
        .map_or("none".to_owned(), |s| format!("expires in {s} s"));
    let control = n.control_transport.as_deref().unwrap_or("none");
    let _ = writeln!(
        out,
        "node {}  admission {}  token {token}  control {control}  nat {}",
        n.name, n.admission, n.nat
    );
    if let Some(left) = n.cert_expires_in_s {
        let renews = n
            .cert_renews_in_s
            .map_or(String::new(), |s| format!(", renewed in {s} s"));
        let _ = writeln!(out, "certificate expires in {left} s{renews}");
    }
    let _ = writeln!(
        out,
        "\nUPLINK           STATE  ADDRESS                  PRIORITY METERED CAPACITY    PATHS  TX BYTES      RX BYTES"
    );
    for u in &status.uplinks {
        let capacity = u
            .capacity_mbps
            .map_or("-".to_owned(), |c| format!("{c} Mbit/s"));
        let _ = writeln!(
            out,
            "{:<16} {:<6} {:<24} {:<8} {:<7} {:<11} {:<6} {:<13} {}",
            u.name,
            u.state,
            u.address.as_deref().unwrap_or("-"),
            if u.priority.is_empty() {
                "-"
            } else {
                &u.priority
            },
            if u.metered { "yes" } else { "no" },
            capacity,
            u.paths_active,
            u.tx_bytes,
            u.rx_bytes
        );
    }
    for u in &status.uplinks {
        let from = u
            .interface
            .as_ref()
            .map_or(String::new(), |i| format!(" (interface {i})"));
        if let Some(why) = &u.down_reason {
            let _ = writeln!(out, "  {}{from} is down: {why}", u.name);
        } else if let Some(outside) = &u.reflexive {
            let nat = if u.nat.is_empty() { "unknown" } else { &u.nat };
            let _ = writeln!(out, "  {} is seen outside as {outside} (nat {nat})", u.name);
        }
    }
    for a in &status.associations {
        let id = a.id.as_deref().unwrap_or("-");
        let ingress = a.ingress.as_deref().unwrap_or("-");
        let _ = writeln!(
            out,
            "\nassociation {id}  {} -> {}  ingress {ingress}  {}  {}",
            a.service, a.peer, a.state, a.mode
        );
        if a.id.is_some() {
            let _ = writeln!(
                out,
                "candidates {} from the coordinator; {} pairs tried, {} answered",
                a.candidates, a.pairs_tried, a.pairs_answered
            );
        }
        if a.birthday_sockets > 0 || a.birthday_probes > 0 {
            let _ = writeln!(
                out,
                "birthday probing: {} probes sent, {} temporary sockets opened",
                a.birthday_probes, a.birthday_sockets
            );
        }
        if let Some(r) = &a.relay {
            let pinned = if r.pinned.is_empty() {
                "not bound yet".to_owned()
            } else {
                format!("bound from {}", r.pinned.join(", "))
            };
            let _ = writeln!(
                out,
                "relay {} (allocation {}, leg {}): {pinned}",
                r.address, r.allocation, r.leg
            );
        }
        if a.paths.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "  PATH  KIND              UPLINK       REMOTE                   STATE    RTT ms   JITTER  LOSS   FWD +ms  DELIV Mbit/s  WEIGHT  SHARE   REASON         TX BYTES     RX BYTES"
        );
        for p in &a.paths {
            let ms = |v: Option<f64>, digits: usize| {
                v.map_or("-".to_owned(), |v| format!("{v:.digits$}"))
            };
            let _ = writeln!(
                out,
                "  {:<5} {:<17} {:<12} {:<24} {:<8} {:<8} {:<7} {:<6.3} {:<8} {:<13.1} {:<7.2} {:<7} {:<14} {:<12} {}",
                p.id,
                p.kind,
                p.uplink,
                p.remote,
                p.state,
                ms(p.rtt_ms, 1),
                ms(p.jitter_ms, 2),
                p.loss,
                ms(p.fwd_delay_ms, 2),
                p.delivery_mbps,
                p.weight,
                format!("{:.1}%", p.tx_share * 100.0),
                if p.reason.is_empty() { "-" } else { &p.reason },
                p.tx_bytes,
                p.rx_bytes
            );
        }
        if let Some(id) = &a.id {
            let _ = writeln!(
                out,
                "  why each path has its weight, and what happened lately: transitloom-node explain {id}"
            );
        }
    }
    if let Some(relay) = &status.relay {
        let _ = writeln!(
            out,
            "\nRELAY ALLOCATION  ASSOCIATION  PORT                     READY  FORWARDED BYTES   DROPPED"
        );
        for a in &relay.allocations {
            let _ = writeln!(
                out,
                "{:<17} {:<12} {:<24} {:<6} {:<17} {}",
                a.id,
                a.assoc,
                a.local.as_deref().unwrap_or("-"),
                if a.ready { "yes" } else { "no" },
                a.forwarded_bytes[0] + a.forwarded_bytes[1],
                a.dropped
            );
        }
        let l = &relay.limits;
        let rate = l.rate_limit_mbps.map_or("no rate limit".to_owned(), |r| {
            format!("{r} Mbit/s per path and direction")
        });
        let _ = writeln!(
            out,
            "relaying for other nodes: {} of {} allocations open ({} per node), {} refused; {rate}; idle expiry {} s",
            relay.allocations.len(),
            l.max_allocations,
            l.quota_per_node,
            relay.refused_allocations,
            l.idle_timeout_s
        );
        if let Some(r) = &relay.offer_refused {
            let _ = writeln!(
                out,
                "relay offer REFUSED by the coordinator: {} is a local address and this node is \
                 seen from {}; set [relay] advertise_ip to the public address, with the relay \
                 ports forwarded",
                r.offered, r.seen
            );
        }
    }
    out
}
