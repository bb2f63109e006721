//! `tlctl`: the Transitloom administration tool (DESIGN §11).
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad usage or configuration.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use transitloom_proto_core::pki::MAX_VALIDITY_DAYS;
use transitloom_runtime_tokio::pki_files::PkiFileError;
use transitloom_runtime_tokio::root_authority::{
    self, fingerprint_hex, Issued, ADMIN_DAYS, COORDINATOR_DAYS, ROOT_DAYS, ROOT_NAME,
};

/// Administer a Transitloom mesh.
#[derive(Debug, Parser)]
#[command(name = "tlctl", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the private PKI: root CA, coordinator and admin certificates.
    #[command(subcommand)]
    Pki(PkiCommand),
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

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
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
    Ok(())
}

fn main() -> ExitCode {
    // Usage errors exit 2 and --help/--version exit 0, as clap does.
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tlctl: {error:#}");
            let code = error
                .downcast_ref::<PkiFileError>()
                .map_or(1, PkiFileError::exit_code);
            ExitCode::from(code)
        }
    }
}
