//! `transitloom-coordinator`: the Transitloom coordinator daemon (DESIGN §1,
//! §11). See [`transitloom_runtime_tokio::coordinator_daemon`].
//!
//! Exit codes: 0 success (and after SIGTERM or SIGINT), 1 runtime failure,
//! 2 bad usage or configuration.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use transitloom_runtime_mio::logging::{self, LogFormat};
use transitloom_runtime_tokio::coordinator_daemon::{
    self, CoordinatorPki, CoordinatorSettings, DaemonError,
};

const CONFIG_HELP: &str = "\
Configuration keys (TOML; unknown keys, bad addresses, missing files and
impossible combinations are refused with FILE: KEY: REASON and exit 2):

  name = \"coordinator\"             its name: the one in its server certificate
                                   (tlctl pki issue-coordinator --name) and the
                                   issuer of its admission tokens
  data_dir = \"/var/lib/tl-coord\"   created 0700; holds oplog.redb, the durable
                                   operation log (admission, associations and
                                   their keys: keep it private), or raft.redb in
                                   a cluster
  listen = \"0.0.0.0:7443\"          the control plane: QUIC over UDP, and TLS over
                                   TCP on the same port (the fallback); both must
                                   open. Also the reflector nodes ask
  pki_dir = \"pki\"                  from tlctl pki issue-coordinator --out: root.crt,
                                   intermediate.crt/.key, server.crt/.key
  root_ca = \"root.crt\"             the trust anchor node and admin certificates
                                   chain to (tlctl pki init-root)
  status_listen = \"127.0.0.1:7481\" optional; GET /status (JSON), GET /metrics
  token_lifetime_s = 600           optional; admission token lifetime, 60..86400
  node_cert_lifetime_s = 7776000   optional; node certificates' lifetime, 60 s to
                                   3650 days; nodes renew at two thirds of it
  handshakes_per_s = 500           optional; new sessions started per second at
                                   most, 1..100000 (excess attempts are refused
                                   and nodes retry after a jittered backoff)
  reflectors = [\"203.0.113.6:7443\"] optional; up to 4 more reflector addresses,
                                   as nodes reach them, so nodes can classify
                                   their NAT
  assoc_key_lifetime_s = 86400     optional; an association key is replaced by a
                                   fresh one (a new epoch) after this long,
                                   60..31536000 (365 days)

  [relay]                          optional: relay for nodes whose NATs defeat a
  data = true                      direct path (one port per association)
  listen_ip = \"203.0.113.5\"        where relay ports bind (default: listen's IP)
  advertise_ip = \"203.0.113.5\"     what nodes send to (default: listen_ip)
  port_range = \"40000-40999\"       default: any free port
  quota_per_node = 16              allocations one node may take part in
  max_allocations = 1024           allocations in all, 1..65535
  rate_limit_mbps = 1000           each relayed path, each direction
  idle_timeout_s = 30              a silent allocation is released, 20..3600

  [cluster]                        optional: several coordinators share one
  id = 1                           replicated log; this one's replica id
  [[cluster.peer]]                 (1..65535), then every other coordinator:
  id = 2                           its replica id,
  name = \"coordinator-b\"           the name in its certificate,
  addr = \"192.0.2.12:7443\"         and its listen address. Writes take effect
                                   once a majority holds them; server.crt must
                                   carry client auth (check says so)

Relative paths resolve against the configuration file's folder.
Logs go to standard error; RUST_LOG sets the filter (default: info).
SIGTERM or SIGINT stops the coordinator cleanly (exit 0). Exit codes: 0 ok,
1 runtime failure (a port in use, a corrupt operation log), 2 bad usage or
configuration.";

/// The Transitloom coordinator: admission, enrollment, admission tokens,
/// hard revoke, the service registry and associations for a mesh of nodes.
#[derive(Debug, Parser)]
#[command(name = "transitloom-coordinator", version, after_long_help = CONFIG_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the coordinator until SIGTERM or SIGINT.
    #[command(after_long_help = CONFIG_HELP)]
    Run {
        /// The coordinator configuration file (see --help for its keys).
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
    /// Validates a configuration file and the PKI it names, then exits
    /// (0: usable, 2: not, with FILE: KEY: REASON).
    #[command(after_long_help = CONFIG_HELP)]
    Check {
        /// The coordinator configuration file.
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
    },
}

fn fail(format: LogFormat, error: &DaemonError) -> ExitCode {
    logging::fatal(format, "transitloom-coordinator", error);
    ExitCode::from(error.exit_code())
}

fn check(config: &Path) -> Result<(), DaemonError> {
    let settings = CoordinatorSettings::load(config)?;
    let pki = CoordinatorPki::load(&settings)?;
    println!("{}: usable", config.display());
    println!("  name           {}", settings.name);
    println!("  listen         {} (QUIC over UDP)", settings.listen);
    println!("  status_listen  {}", settings.status_listen);
    println!("  operation log  {}", settings.oplog_path().display());
    println!("  tokens         {} s", settings.token_lifetime_s);
    println!("  handshakes     {} per s", settings.handshakes_per_s);
    println!("  assoc keys     {} s", settings.assoc_key_lifetime_s);
    println!("  pki            {pki:?}");
    if let Some(cluster) = &settings.cluster {
        transitloom_runtime_tokio::coordinator_daemon::cluster::client_tls(&settings, &pki)?;
        println!(
            "  cluster        replica {} of {}, log {}",
            cluster.id,
            cluster.peers.len() + 1,
            settings.raft_path().display()
        );
        for peer in &cluster.peers {
            println!(
                "    peer         {} {} (replica {})",
                peer.name, peer.addr, peer.id
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    // Usage errors exit 2 and --help/--version exit 0, as clap does.
    let cli = Cli::parse();
    let format = match &cli.command {
        Command::Run { log_format, .. } => *log_format,
        Command::Check { .. } => LogFormat::Text,
    };
    logging::init(format);
    let result = match &cli.command {
        Command::Run { config, .. } => CoordinatorSettings::load(config)
            .map_err(DaemonError::from)
            .and_then(|settings| coordinator_daemon::serve(&settings)),
        Command::Check { config } => check(config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(format, &error),
    }
}
