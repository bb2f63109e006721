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
                                   operation log (admission, associations)
  listen = \"0.0.0.0:7443\"          UDP address of the control plane (QUIC with
                                   mutual TLS 1.3). The TCP + TLS fallback on the
                                   same port is NOT built yet: only UDP is served.
  pki_dir = \"pki\"                  from tlctl pki issue-coordinator --out: root.crt,
                                   intermediate.crt/.key, server.crt/.key
  root_ca = \"root.crt\"             the trust anchor node and admin certificates
                                   chain to (tlctl pki init-root)
  status_listen = \"127.0.0.1:7481\" optional; GET /status (JSON), GET /metrics
  token_lifetime_s = 600           optional; admission token lifetime, 60..86400
  handshakes_per_s = 500           optional; new sessions started per second at
                                   most, 1..100000 (excess attempts are refused
                                   and nodes retry after a jittered backoff)
  assoc_key_lifetime_s = 86400     optional; an association key is replaced by a
                                   fresh one (a new epoch) after this long,
                                   60..31536000 (365 days)

  [relay]                          optional. Relays are NOT built yet:
  data = false                     data = true is refused (exit 2)
  listen_ip = \"0.0.0.0\"            parsed and checked, unused for now
  port_range = \"40000-40999\"       parsed and checked, unused for now

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
