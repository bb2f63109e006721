//! `tlctl`: the Transitloom administration tool (DESIGN §11): the file-based
//! root authority (`tlctl pki …`) and the admin commands that talk to a
//! coordinator (`tlctl node …`, `tlctl assoc …`, `tlctl status`).
//!
//! Exit codes: 0 success, 1 runtime failure (unreachable or refusing
//! coordinator), 2 bad usage or configuration.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::signal::unix::SignalKind;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use transitloom_proto_core::admin::AdminCarrier;
use transitloom_proto_core::control::msg::{AdminCommand, AdminReply, Name, PeerRef};
use transitloom_proto_core::pki::{naming, MAX_VALIDITY_DAYS};
use transitloom_proto_core::AssocId;
use transitloom_runtime_tokio::admin_session::{self, render, AdminSessionError, AdminTarget};
use transitloom_runtime_tokio::pki_files::PkiFileError;
use transitloom_runtime_tokio::root_authority::{
    self, fingerprint_hex, Issued, ADMIN_DAYS, COORDINATOR_DAYS, ROOT_DAYS, ROOT_NAME,
};
use transitloom_testbed::{quickstart, Binaries};

const ABOUT_ADMIN: &str = "\
Admin commands (node, assoc, status) reach a coordinator over QUIC (or TCP,
when QUIC does not answer within 3 s, or at once with --tcp) with the admin
certificate of an `issue-admin` directory. Give them --coordinator ADDR
and --admin DIR, or set TL_COORDINATOR and TL_ADMIN (and TL_COORDINATOR_NAME
when the coordinator's certificate names something other than `coordinator`).

Exit codes: 0 success; 1 runtime failure (the coordinator is unreachable,
refuses the session, or refuses the command); 2 bad usage or configuration
(a bad name, a missing admin directory, files that exist without --force).";

/// Administer a Transitloom mesh.
#[derive(Debug, Parser)]
#[command(name = "tlctl", version, propagate_version = true, after_help = ABOUT_ADMIN)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a real mesh on this machine and watch it work (no setup, no root).
    ///
    /// A throw-away PKI, a coordinator and three nodes on loopback addresses
    /// (alpha with two uplinks), UDP traffic through their ingress ports
    /// with a live progress line of alpha's throughput per uplink; half-way
    /// (after 10 s without --duration) alpha's first uplink is taken out of
    /// service by a configuration reload and its traffic fails over to the
    /// second; three quarters through (after 20 s) one node daemon is killed
    /// and restarted; then a report with the measured failover stall, the
    /// nodes' record of it, and the WireGuard peers a user would paste. Runs until Ctrl-C or for --duration; everything is removed on
    /// the way out. Exits 0 when every flow crossed the mesh unaltered.
    /// Needs `transitloom-coordinator` and `transitloom-node` beside `tlctl`
    /// (as `cargo build --release` leaves them).
    Quickstart {
        /// How long traffic runs, in seconds (4 to 86400); without it, until
        /// Ctrl-C.
        #[arg(long, value_name = "SECONDS",
              value_parser = clap::value_parser!(u64).range(4..=86_400))]
        duration: Option<u64>,
        /// Keep the working directory (PKI, configs, logs) and print its path.
        #[arg(long)]
        keep: bool,
    },
    /// Manage the private PKI: root CA, coordinator and admin certificates.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Invite, admit, revoke, readmit and list nodes (asks a coordinator).
    #[command(subcommand)]
    Node(NodeCommand),
    /// List, create, delete, allow and rekey associations (asks a coordinator).
    #[command(subcommand)]
    Assoc(AssocCommand),
    /// Show the coordinator's status: its name, and how many nodes are
    /// enrolled and online and associations installed.
    Status {
        /// Print the coordinator's JSON document instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: TargetArgs,
    },
}

/// How an admin command reaches its coordinator.
#[derive(Debug, Args)]
struct TargetArgs {
    /// The coordinator's control address (its `listen`): IP:PORT or
    /// HOST:PORT. QUIC (UDP) is tried first; when no QUIC handshake completes
    /// within 3 s, TLS over TCP to the same address and port.
    #[arg(long, value_name = "ADDR", env = "TL_COORDINATOR", value_parser = coordinator_addr)]
    coordinator: SocketAddr,
    /// The admin directory from `tlctl pki issue-admin --out DIR`
    /// (admin.crt, admin.key, root.crt).
    #[arg(long, value_name = "DIR", env = "TL_ADMIN")]
    admin: PathBuf,
    /// The name the coordinator's certificate carries (`tlctl pki
    /// issue-coordinator --name NAME`): TLS checks the coordinator against it.
    #[arg(
        long,
        value_name = "NAME",
        env = "TL_COORDINATOR_NAME",
        default_value = "coordinator"
    )]
    coordinator_name: String,
    /// Seconds to wait for the coordinator's answer, handshake included
    /// (1 to 600).
    #[arg(long, value_name = "SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    timeout: u64,
    /// Use TLS over TCP at once, without trying QUIC first (for a network
    /// known to block UDP).
    #[arg(long, env = "TL_TCP")]
    tcp: bool,
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Issue a one-time join token for node NAME and print it alone on the
    /// last line of standard output. The node presents it once to enroll
    /// (its `join_token` setting).
    Invite {
        /// The node's name: one lowercase DNS label (a-z, 0-9, '-').
        #[arg(value_parser = node_name)]
        name: Name,
        /// Admit the node as soon as it enrolls (otherwise it waits, pending,
        /// for `tlctl node admit NAME`).
        #[arg(long)]
        admit: bool,
        /// Lifetime of the join token in seconds (60 to 2592000, 30 days).
        #[arg(long, value_name = "SECONDS", default_value_t = 86_400,
              value_parser = clap::value_parser!(u32).range(60..=2_592_000))]
        ttl: u32,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Admit an enrolled node that is pending.
    Admit {
        /// The node's name.
        #[arg(value_parser = node_name)]
        name: Name,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Hard-revoke a node: its sessions close, its tokens are void, its
    /// associations are withdrawn from every peer at once.
    Revoke {
        /// The node's name.
        #[arg(value_parser = node_name)]
        name: Name,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Admit a revoked node again, as a fresh event (nothing transient is
    /// restored).
    Readmit {
        /// The node's name.
        #[arg(value_parser = node_name)]
        name: Name,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// List the enrolled nodes with their admission state and whether they
    /// are connected (invited nodes appear once they enroll).
    List {
        #[command(flatten)]
        target: TargetArgs,
    },
}

#[derive(Debug, Subcommand)]
enum AssocCommand {
    /// List every association with its key epoch, origin and state:
    /// installed, waiting (an end not admitted or not declaring the
    /// service) or deleted.
    List {
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Create an association between two services, each written
    /// NODE/SERVICE. It is installed once both ends are admitted and
    /// declare the service. For a pair that exists by mutual consent or
    /// was deleted, it becomes (again) an admin association, same id.
    /// Prints its id alone on the last line.
    Create {
        /// One end, NODE/SERVICE.
        #[arg(value_parser = peer_ref)]
        a: PeerRef,
        /// The other end, NODE/SERVICE.
        #[arg(value_parser = peer_ref)]
        b: PeerRef,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Delete an association, by id (`assoc#7` or `7`, as `tlctl assoc
    /// list` shows it): it is withdrawn from both ends and stays deleted,
    /// even if both ends declare each other, until `tlctl assoc allow` or
    /// `tlctl assoc create` for the same pair.
    Delete {
        /// The association's id.
        #[arg(value_parser = assoc_id)]
        id: AssocId,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Lift the deletion of an association: it is installed again (under a
    /// fresh key) once its ends want it.
    Allow {
        /// The association's id.
        #[arg(value_parser = assoc_id)]
        id: AssocId,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Replace an association's key now: a new epoch and a fresh random
    /// key, pushed to both ends, which switch without dropping paths.
    Rekey {
        /// The association's id.
        #[arg(value_parser = assoc_id)]
        id: AssocId,
        #[command(flatten)]
        target: TargetArgs,
    },
}

fn coordinator_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    text.to_socket_addrs()
        .map_err(|e| format!("{text:?} is not IP:PORT or HOST:PORT ({e})"))?
        .next()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

fn node_name(text: &str) -> Result<Name, String> {
    naming::validate_node_name(text).map_err(|e| format!("{text:?} is not a node name: {e}"))?;
    Name::new(text).map_err(|e| format!("{text:?} is not a node name: {e}"))
}

fn peer_ref(text: &str) -> Result<PeerRef, String> {
    text.parse()
        .map_err(|e| format!("{text:?} is not NODE/SERVICE: {e}"))
}

fn assoc_id(text: &str) -> Result<AssocId, String> {
    let digits = text.strip_prefix("assoc#").unwrap_or(text);
    digits
        .parse()
        .map(AssocId)
        .map_err(|_| format!("{text:?} is not an association id (like assoc#7)"))
}

#[derive(Debug, Subcommand)]
enum PkiCommand {
    /// Create the root CA: writes DIR/root.crt (the trust anchor that nodes
    /// and coordinators name as `root_ca`) and DIR/root.key (mode 0600).
    /// Keep the root directory offline.
    InitRoot(InitRoot),
    /// Issue a coordinator's intermediate CA and TLS server certificate into
    /// its pki_dir: intermediate.crt/.key, server.crt/.key and a copy of
    /// root.crt.
    IssueCoordinator(IssueCoordinator),
    /// Issue an admin client certificate signed by the root: admin.crt,
    /// admin.key and a copy of root.crt, for `tlctl --admin DIR`.
    IssueAdmin(IssueAdmin),
}

#[derive(Debug, Args)]
struct InitRoot {
    /// Directory to write root.crt and root.key into (created 0700 if
    /// missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Common name of the root CA.
    #[arg(long, value_name = "NAME", default_value = ROOT_NAME)]
    name: String,
    /// Validity of the issued certificates, in days (1 to 36525).
    #[arg(long, value_name = "N", default_value_t = ROOT_DAYS, value_parser = days())]
    days: u32,
    /// Replace existing files. Without it, nothing is overwritten and the
    /// command exits with status 2 naming the first existing file.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
struct IssueCoordinator {
    /// Root directory made by `tlctl pki init-root` (reads root.crt and
    /// root.key).
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// Coordinator name: a lowercase DNS name such as `coord-1` or
    /// `coord-1.example.net`. The server certificate is valid for NAME and
    /// NAME.coordinator.transitloom.
    #[arg(long, value_name = "NAME")]
    name: String,
    /// The coordinator's pki_dir to write into (created 0700 if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Validity of the issued certificates, in days (1 to 36525).
    #[arg(long, value_name = "N", default_value_t = COORDINATOR_DAYS, value_parser = days())]
    days: u32,
    /// Replace existing files. Without it, nothing is overwritten and the
    /// command exits with status 2 naming the first existing file.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
struct IssueAdmin {
    /// Root directory made by `tlctl pki init-root` (reads root.crt and
    /// root.key).
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// Admin name: one lowercase DNS label such as `ops`; the certificate
    /// names NAME.admin.transitloom.
    #[arg(long, value_name = "NAME")]
    name: String,
    /// Directory to write admin.crt, admin.key and root.crt into (created
    /// 0700 if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Validity of the issued certificates, in days (1 to 36525).
    #[arg(long, value_name = "N", default_value_t = ADMIN_DAYS, value_parser = days())]
    days: u32,
    /// Replace existing files. Without it, nothing is overwritten and the
    /// command exits with status 2 naming the first existing file.
    #[arg(long)]
    force: bool,
}

fn days() -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(1..=i64::from(MAX_VALIDITY_DAYS))
}

fn now_unix_s() -> anyhow::Result<i64> {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?;
    i64::try_from(since.as_secs()).context("the system clock is out of range")
}

fn report(issued: &Issued, what: &str) {
    for file in &issued.files {
        println!("wrote {}", file.display());
    }
    println!("{what} SHA-256: {}", fingerprint_hex(&issued.fingerprint));
}

fn ask(target: &TargetArgs, command: AdminCommand) -> Result<AdminReply, AdminSessionError> {
    admin_session::send(
        &AdminTarget {
            coordinator: target.coordinator,
            server_name: target.coordinator_name.clone(),
            admin_dir: target.admin.clone(),
            timeout: Duration::from_secs(target.timeout),
            carrier: if target.tcp {
                AdminCarrier::Tcp
            } else {
                AdminCarrier::QuicThenTcp(admin_session::QUIC_BOUND)
            },
        },
        command,
    )
}

fn unexpected(reply: &AdminReply) -> anyhow::Error {
    anyhow::anyhow!("the coordinator sent an unexpected answer: {reply:?}")
}

fn node(command: NodeCommand) -> anyhow::Result<()> {
    let (target, request, done) = match command {
        NodeCommand::Invite {
            name,
            admit,
            ttl,
            target,
        } => {
            let command = AdminCommand::Invite {
                node: name.clone(),
                admit,
                ttl_s: ttl,
            };
            let reply = ask(&target, command)?;
            let AdminReply::Invited { join_token } = reply else {
                return Err(unexpected(&reply));
            };
            if admit {
                println!("invited {name}: admitted as soon as it enrolls");
            } else {
                println!(
                    "invited {name}: after it enrolls, admit it with `tlctl node admit {name}`"
                );
            }
            println!("the join token works once, for {ttl} s; give it to {name} as join_token:");
            // DESIGN §11: the token alone on the last line.
            println!("{join_token}");
            return Ok(());
        }
        NodeCommand::Admit { name, target } => {
            let done = format!("admitted {name}");
            (target, AdminCommand::Admit { node: name }, done)
        }
        NodeCommand::Revoke { name, target } => {
            let done = format!("revoked {name}");
            (target, AdminCommand::Revoke { node: name }, done)
        }
        NodeCommand::Readmit { name, target } => {
            let done = format!("readmitted {name}");
            (target, AdminCommand::Readmit { node: name }, done)
        }
        NodeCommand::List { target } => {
            let reply = ask(&target, AdminCommand::ListNodes)?;
            let AdminReply::Nodes(nodes) = reply else {
                return Err(unexpected(&reply));
            };
            print!("{}", render::nodes(&nodes));
            return Ok(());
        }
    };
    match ask(&target, request)? {
        AdminReply::Done => {
            println!("{done}");
            Ok(())
        }
        other => Err(unexpected(&other)),
    }
}

fn assoc(command: AssocCommand) -> anyhow::Result<()> {
    let (target, request, done) = match command {
        AssocCommand::List { target } => {
            let reply = ask(&target, AdminCommand::AssocList)?;
            let AdminReply::Assocs(assocs) = reply else {
                return Err(unexpected(&reply));
            };
            print!("{}", render::assocs(&assocs));
            return Ok(());
        }
        AssocCommand::Create { a, b, target } => {
            let ends = format!("{a} to {b}");
            let reply = ask(&target, AdminCommand::AssocCreate { a, b })?;
            let AdminReply::Created { assoc } = reply else {
                return Err(unexpected(&reply));
            };
            // The id alone on the last line, for scripts (`tlctl assoc delete ID`).
            println!("created the association {ends}\n{assoc}");
            return Ok(());
        }
        AssocCommand::Delete { id, target } => {
            let done = format!("deleted {id}");
            (target, AdminCommand::AssocDelete { assoc: id }, done)
        }
        AssocCommand::Allow { id, target } => {
            let done = format!("allowed {id} again");
            (target, AdminCommand::AssocAllow { assoc: id }, done)
        }
        AssocCommand::Rekey { id, target } => {
            let done = format!("rekeyed {id}: a new epoch is pushed to both ends");
            (target, AdminCommand::AssocRekey { assoc: id }, done)
        }
    };
    match ask(&target, request)? {
        AdminReply::Done => {
            println!("{done}");
            Ok(())
        }
        other => Err(unexpected(&other)),
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Node(command) => node(command)?,
        Command::Assoc(command) => assoc(command)?,
        Command::Quickstart { duration, keep } => return quickstart(duration, keep),
        Command::Status { json, target } => {
            let reply = ask(&target, AdminCommand::Status)?;
            let AdminReply::Status { json: document } = reply else {
                return Err(unexpected(&reply));
            };
            if json {
                println!("{document}");
            } else {
                print!("{}", render::status(&document));
            }
        }
        Command::Pki(command) => {
            let now = now_unix_s()?;
            match command {
                PkiCommand::InitRoot(a) => {
                    let issued = root_authority::init_root(&a.out, &a.name, a.days, a.force, now)?;
                    report(&issued, "root certificate");
                }
                PkiCommand::IssueCoordinator(a) => {
                    let issued = root_authority::issue_coordinator(
                        &a.root, &a.name, &a.out, a.days, a.force, now,
                    )?;
                    report(&issued, "intermediate certificate");
                }
                PkiCommand::IssueAdmin(a) => {
                    let issued = root_authority::issue_admin(
                        &a.root, &a.name, &a.out, a.days, a.force, now,
                    )?;
                    report(&issued, "admin certificate");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn quickstart(duration: Option<u64>, keep: bool) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("finding tlctl's own path")?;
    let binaries = Binaries::beside(exe.parent().unwrap_or(Path::new(".")))?;
    // Ctrl-C (or SIGTERM) ends the traffic; the daemons, in process groups
    // of their own, keep running until the report is made, then the mesh
    // is torn down and the directory removed.
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
        else {
            return;
        };
        let signalled = rt.block_on(async {
            let mut term = tokio::signal::unix::signal(SignalKind::terminate())?;
            tokio::select! {
                r = tokio::signal::ctrl_c() => r,
                _ = term.recv() => Ok(()),
            }
        });
        if signalled.is_ok() {
            flag.store(true, Ordering::Relaxed);
        }
    });
    let options = quickstart::Options {
        duration: duration.map(Duration::from_secs),
        binaries,
        keep,
    };
    let report = quickstart::run(&options, &stop)?;
    anyhow::ensure!(
        report.ok,
        "the quickstart mesh did not carry every flow intact"
    );
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    // Usage errors exit 2 and --help/--version exit 0, as clap does.
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tlctl: {error:#}");
            let code = match (
                error.downcast_ref::<PkiFileError>(),
                error.downcast_ref::<AdminSessionError>(),
            ) {
                (Some(e), _) => e.exit_code(),
                (_, Some(e)) => e.exit_code(),
                _ => 1,
            };
            ExitCode::from(code)
        }
    }
}
