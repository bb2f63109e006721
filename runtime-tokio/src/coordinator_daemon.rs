//! `transitloom-coordinator run`: the coordinator daemon. It loads and
//! checks its configuration and PKI, replays the operation log from
//! `DATA_DIR/oplog.redb`, and runs proto-core's [`Coordinator`] on a
//! current-thread tokio runtime with a [`TokioDriver`].
//!
//! After every pump it makes each requested log write durable
//! ([`OpLog::append`] returns after the commit reaches the disk) and only
//! then calls [`Coordinator::committed`], which applies the write and
//! answers whoever asked: an acknowledged operation survives `kill -9`.
//! `/status` and `/metrics` are republished at most every 250 ms, and at
//! once after a write. SIGTERM or SIGINT stops it (exit 0).
//!
//! The control plane listens on UDP (QUIC) and, on the same port number, on
//! TCP (TLS 1.3, the fallback of DESIGN §5 for clients whose UDP is
//! blocked); both must open or the daemon does not start. With
//! `[relay] data = true` it also relays for its nodes: one port per
//! association, from `[relay] port_range`.
//!
//! With `[cluster]` it is one replica of a log shared with the other
//! coordinators (`cluster`): writes become [`CoordinatorEvent::Persist`]
//! events, stored in `DATA_DIR/raft.redb` ([`RaftStore::persist`] returns
//! after the commit reaches the disk) before [`Coordinator::persisted`],
//! and take effect once a majority holds them.

pub mod cluster;
pub mod config;
pub mod pki;
pub mod status;

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};
use tokio::signal::unix::{signal, SignalKind};
use transitloom_proto_core::control::quic::QuicTiming;
use transitloom_proto_core::coordinator::machine::CONTROL_SOCKET;
use transitloom_proto_core::coordinator::registry::Op;
use transitloom_proto_core::coordinator::{
    Coordinator, CoordinatorConfig, CoordinatorEvent, HandshakeLimit, RelayHosting,
};
use transitloom_proto_core::csprng::{Drbg, SEED_LEN};
use transitloom_proto_core::relay::RelayConfig;
use transitloom_runtime_mio::config::ConfigError;
use transitloom_runtime_mio::http::{Pages, SharedPages, StatusServer};

pub use config::CoordinatorSettings;
pub use pki::CoordinatorPki;

use crate::oplog::{OpLog, OpLogError};
use crate::raft_store::RaftStore;
use crate::{wall_clock_now, TokioDriver};

/// How often the status pages are rebuilt while nothing is written.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The configuration or the PKI it names is unusable (exit 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory could not be created.
    #[error("{}: cannot create the data directory: {source}", .path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The operation log could not be opened, replayed or written.
    #[error(transparent)]
    OpLog(#[from] OpLogError),
    /// The replicated log (a cluster's) could not be opened, read or
    /// written.
    #[error(transparent)]
    RaftStore(#[from] crate::raft_store::RaftStoreError),
    /// A listening address could not be bound.
    #[error("cannot listen on {addr} ({what}): {reason}")]
    Bind {
        /// `listen` or `status_listen`.
        what: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        reason: String,
    },
    /// Anything else that stops the start (the runtime, the random source).
    #[error("cannot start: {0}")]
    Start(String),
}

impl DaemonError {
    /// The process exit code (DESIGN §11): 2 for configuration, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => 2,
            _ => 1,
        }
    }
}

/// Runs the coordinator until SIGTERM or SIGINT.
///
/// # Errors
/// See [`DaemonError`]; a corrupt log names the record.
pub fn serve(settings: &CoordinatorSettings) -> Result<(), DaemonError> {
    let pki = CoordinatorPki::load(settings)?;
    create_data_dir(&settings.data_dir)?;
    let oplog = OpLog::open(&settings.oplog_path())?;
    let cluster = match &settings.cluster {
        Some(cluster) => Some(cluster::open(
            settings,
            cluster,
            &pki,
            &oplog,
            os_seeded()?,
        )?),
        None => None,
    };
    let registry = match &cluster {
        Some(opened) => opened.applied.registry.clone(),
        None => {
            let registry = oplog.replay()?;
            tracing::info!(
                path = %settings.oplog_path().display(),
                operations = registry.applied(),
                "operation log replayed"
            );
            registry
        }
    };
    let config = CoordinatorConfig {
        name: settings.name.clone(),
        listen: settings.listen,
        tls: pki
            .tls()
            .map_err(|e| settings.error("pki_dir", e.to_string()))?,
        intermediate_der: pki.intermediate.clone(),
        intermediate_key: pki.intermediate_key.clone(),
        verifier: pki
            .token_verifier(&settings.name)
            .map_err(|e| settings.error("pki_dir", e.to_string()))?,
        token_lifetime_s: settings.token_lifetime_s,
        wall_clock: wall_clock_now(),
        timing: QuicTiming::default(),
        handshake_limit: HandshakeLimit::per_second(settings.handshakes_per_s),
    };
    let mut coordinator = Coordinator::new(config, registry, os_seeded()?)
        .map_err(|e| DaemonError::Start(e.to_string()))?;
    coordinator.set_node_cert_lifetime(settings.node_cert_lifetime_s);
    coordinator.set_reflectors(&settings.reflectors);
    if settings.relay.data {
        let (bind_ip, advertise_ip) = settings.relay.addresses(settings.listen.ip());
        let mut relay = RelayConfig::new(wall_clock_now(), os_seeded()?.next_u64());
        relay.own_ips = vec![bind_ip, advertise_ip, settings.listen.ip()];
        settings.relay.apply_limits(&mut relay);
        coordinator.host_relay(RelayHosting {
            relay,
            bind_ip,
            advertise_ip,
            ports: settings.relay.port_range.map(|r| (r.low, r.high)),
        });
    }
    coordinator.set_assoc_key_lifetime(settings.assoc_key_lifetime_s);
    let log = match cluster {
        Some(opened) => Log::Replicated(opened.join(&mut coordinator)),
        None => Log::Alone(oplog),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| DaemonError::Start(format!("tokio runtime: {e}")))?;
    runtime.block_on(run(settings, coordinator, log))
}

/// Where the coordinator's writes become durable.
enum Log {
    /// Its own operation log (no `[cluster]`).
    Alone(OpLog),
    /// Its replica of the cluster's log.
    Replicated(RaftStore),
}

fn create_data_dir(path: &Path) -> Result<(), DaemonError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| DaemonError::DataDir {
            path: path.to_owned(),
            source,
        })?;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the data directory is open to other users; 0700 is expected");
        }
    }
    Ok(())
}

fn os_seeded() -> Result<Drbg, DaemonError> {
    let mut seed = [0u8; SEED_LEN];
    SystemRandom::new()
        .fill(&mut seed)
        .map_err(|_| DaemonError::Start("the system random generator failed".to_owned()))?;
    Ok(Drbg::new(seed))
}

async fn run(
    settings: &CoordinatorSettings,
    coordinator: Coordinator,
    mut log: Log,
) -> Result<(), DaemonError> {
    let signals = |kind| signal(kind).map_err(|e| DaemonError::Start(format!("signals: {e}")));
    let mut terminate = signals(SignalKind::terminate())?;
    let mut interrupt = signals(SignalKind::interrupt())?;
    let started = Instant::now();
    let mut driver = TokioDriver::new(coordinator);
    let mut events: Vec<CoordinatorEvent> = Vec::new();
    driver.pump(&mut events);
    let Some(listen) = driver.io().local_addr(CONTROL_SOCKET) else {
        // The machine logged the failure; ask the OS again for the reason.
        let reason = std::net::UdpSocket::bind(settings.listen)
            .err()
            .map_or_else(
                || "the socket could not be bound".to_owned(),
                |e| e.to_string(),
            );
        return Err(DaemonError::Bind {
            what: "listen",
            addr: settings.listen,
            reason,
        });
    };
    if driver.machine().stream_listening().is_none() {
        let reason = transitloom_runtime_mio::tcp::listen(listen)
            .err()
            .map_or_else(
                || "the TCP listener could not be opened".to_owned(),
                |e| e.to_string(),
            );
        return Err(DaemonError::Bind {
            what: "listen (TCP)",
            addr: listen,
            reason,
        });
    }
    let place = status::Place {
        name: settings.name.clone(),
        listen,
        token_lifetime_s: settings.token_lifetime_s,
    };
    let pages: SharedPages = Arc::new(Mutex::new(Arc::new(Pages::default())));
    publish(&driver, &place, started, &pages);
    let status_server =
        StatusServer::start(settings.status_listen, pages.clone()).map_err(|e| {
            DaemonError::Bind {
                what: "status_listen",
                addr: settings.status_listen,
                reason: e.to_string(),
            }
        })?;
    tracing::info!(
        name = %settings.name,
        %listen,
        status = %status_server.local_addr(),
        "coordinator running (control plane on QUIC/UDP and TLS/TCP, same port)"
    );

    let mut tick = tokio::time::interval(PUBLISH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut published = Instant::now();
    loop {
        let wrote = commit(&mut driver, &mut log, &mut events)?;
        if wrote || published.elapsed() >= PUBLISH_EVERY {
            publish(&driver, &place, started, &pages);
            published = Instant::now();
        }
        tokio::select! {
            _ = driver.run_until(&mut events, None, |_, events| !events.is_empty()) => {}
            _ = tick.tick() => {}
            _ = terminate.recv() => {
                tracing::info!("SIGTERM: stopping");
                break;
            }
            _ = interrupt.recv() => {
                tracing::info!("SIGINT: stopping");
                break;
            }
        }
    }
    // Send what the last commits queued (answers, withdrawals) before the
    // socket closes.
    driver.pump(&mut events);
    drop(status_server);
    Ok(())
}

/// Handles the events of the last pump: each log write is made durable,
/// then committed. Returns whether anything was written.
fn commit(
    driver: &mut TokioDriver<Coordinator>,
    log: &mut Log,
    events: &mut Vec<CoordinatorEvent>,
) -> Result<bool, DaemonError> {
    let mut wrote = false;
    for event in events.drain(..) {
        match (event, &mut *log) {
            (CoordinatorEvent::Append(op), Log::Alone(oplog)) => {
                // The machine checked the write against every write still
                // pending, so it applies: make it durable, then commit.
                let seq = oplog.append(&op)?;
                tracing::info!(seq, op = %describe(&op), "operation committed");
                wrote = true;
                driver.machine_mut().committed(Instant::now());
            }
            (
                CoordinatorEvent::Persist {
                    hard_state,
                    entries,
                },
                Log::Replicated(store),
            ) => {
                // Votes and acknowledgements leave only after this.
                store.persist(hard_state, &entries)?;
                wrote = true;
                driver.machine_mut().persisted(Instant::now());
            }
            (event, _) => log_event(event),
        }
    }
    Ok(wrote)
}

fn log_event(event: CoordinatorEvent) {
    match event {
        CoordinatorEvent::NodeOnline(node) => tracing::info!(%node, "node online"),
        CoordinatorEvent::NodeOffline(node) => tracing::info!(%node, "node offline"),
        CoordinatorEvent::Refused { remote, code, .. } => {
            tracing::debug!(%remote, code = code.as_str(), "refusal sent");
        }
        other => tracing::debug!(?other, "coordinator event"),
    }
}

fn describe(op: &Op) -> String {
    match op {
        Op::Invite { node, admit, .. } => {
            format!("invite {node}{}", if *admit { " (admit)" } else { "" })
        }
        Op::Enroll { node, .. } => format!("enroll {node}"),
        Op::Renew { node, .. } => format!("renew {node}'s certificate"),
        Op::Admit { node } => format!("admit {node}"),
        Op::Revoke { node } => format!("revoke {node}"),
        Op::Readmit { node } => format!("readmit {node}"),
        Op::AssocCreate { a, b } => format!("create association {a} to {b}"),
        Op::AssocDelete { assoc } | Op::AssocDeny { assoc } => format!("delete {assoc}"),
        Op::AssocForm { a, b } => format!("form association {a} to {b} (mutual consent)"),
        Op::AssocAllow { assoc } => format!("allow {assoc} again"),
        // Never the key itself.
        Op::AssocKey { assoc, epoch, .. } => format!("key {assoc} epoch {epoch}"),
        other => format!("{other:?}"),
    }
}

fn publish(
    driver: &TokioDriver<Coordinator>,
    place: &status::Place,
    started: Instant,
    pages: &SharedPages,
) {
    let coordinator = driver.machine();
    let fresh = Arc::new(Pages {
        status: format!(
            "{}\n",
            status::status_json(coordinator, place, started.elapsed())
        ),
        metrics: status::metrics(coordinator, place),
    });
    if let Ok(mut slot) = pages.lock() {
        *slot = fresh;
    }
}
