//! The node daemon behind `transitloom-node run` (DESIGN §9, §11): checks
//! the configuration, keeps the node's key, certificate and ingress
//! addresses in its data directory, runs the proto-core [`Node`] on a
//! [`MioDriver`], logs what the node reports, and serves `/status` and
//! `/metrics` until SIGTERM or SIGINT. SIGHUP reloads the services and
//! associations of the configuration file ([`reload`]). Each uplink's
//! address is followed while the node runs ([`uplink_watch`]): a new
//! address rebinds its mesh sockets, a lost one fails its paths, without a
//! restart.
//!
//! ```text
//! DATA_DIR/node.key      private key (0600), made once, never leaves the node
//! DATA_DIR/node.crt      certificate chain, kept when the coordinator issues it
//! DATA_DIR/ingress.toml  ingress addresses, so WireGuard endpoints stay valid
//! ```

mod identity;
mod interface;
mod reload;
mod report;
mod setup;
mod signals;
#[cfg(test)]
mod tests;
mod uplink_watch;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use transitloom_proto_core::control::msg::RejectCode;
use transitloom_proto_core::control::quic::QuicTiming;
use transitloom_proto_core::dataplane::{DataEvent, SocketRole};
use transitloom_proto_core::node::{self, Credentials, Node, NodeEvent, ServiceSpec, SessionState};
use transitloom_proto_core::ServiceId;

pub use identity::{CERT_FILE, KEY_FILE};
pub use setup::Setup;
pub use uplink_watch::UplinkReach;

use crate::config::ConfigError;
use crate::http::{Pages, SharedPages, StatusServer};
use crate::status::ReloadStatus;
use crate::{wall_clock_now, Exit, MioDriver};
use interface::HostSnapshot;
use report::Standing;
use signals::ReloadRequest;
use uplink_watch::{UplinkChange, UplinkWatch, WATCH_INTERVAL};

/// Why the daemon did not start, or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// Something the operator must fix in the configuration or the data
    /// directory (`FILE: KEY: REASON`).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file or directory could not be read or written.
    #[error("{}: cannot {action}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The operating system's error.
        source: io::Error,
    },
    /// Anything else that stops the node.
    #[error("{0}")]
    Runtime(String),
}

impl DaemonError {
    /// The process exit code (DESIGN §11): 2 for bad configuration, 1 for
    /// a runtime failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) => 2,
            Self::Io { .. } | Self::Runtime(_) => 1,
        }
    }
}

/// How often the status pages are rebuilt at most.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(250);

/// How long an issued certificate that could not be written waits before
/// the next attempt.
const SAVE_RETRY: Duration = Duration::from_secs(5);

/// What `check` adds to [`Setup::prepare`]: the trust anchor reads and the
/// node has a certificate or a join token, exactly as `run` requires (the
/// key is created if missing, as `run` would). Returns whether it is
/// enrolled.
///
/// # Errors
/// The [`DaemonError`] `run` would stop with.
pub fn check_identity(config: &crate::config::NodeConfig) -> Result<bool, DaemonError> {
    identity::read_root(config)?;
    let (_, enrolled) = identity::credentials(config)?;
    Ok(enrolled)
}

/// Runs the node of configuration `file` until SIGTERM or SIGINT.
///
/// # Errors
/// A [`DaemonError`]; [`DaemonError::exit_code`] says how to exit.
pub fn run(file: &Path) -> Result<(), DaemonError> {
    let setup = Setup::prepare(file)?;
    let root = identity::read_root(&setup.config)?;
    let (credentials, enrolled) = identity::credentials(&setup.config)?;
    let mut node = start_node(&setup, root, credentials)?;
    if let Some(hosting) = setup.relay_hosting()? {
        tracing::info!(
            bind = %hosting.bind_ip, advertise = %hosting.advertise_ip,
            ports = ?hosting.ports, "relaying for other nodes"
        );
        node.host_relay(hosting);
    }
    // QUIC first; TCP to the same address and port when UDP is blocked.
    node.set_tcp_fallback(Some(setup.config.tcp_fallback));
    let mut driver = MioDriver::new(node)
        .map_err(|e| DaemonError::Runtime(format!("the event loop cannot start: {e}")))?;
    let mut daemon = Daemon {
        uplinks: setup.watch.clone(),
        host_unreadable: false,
        setup,
        standing: Standing::new(enrolled),
        shown_admission: "",
        unsaved_chain: None,
        next_save: Instant::now(),
        pages: SharedPages::default(),
        reloads: ReloadStatus::default(),
    };
    daemon.publish(driver.machine());
    // Signals first: whoever sees the status page may signal at once.
    let reload = ReloadRequest::default();
    let signals = signals::SignalThread::start(driver.handle(), reload.clone())
        .map_err(|e| DaemonError::Runtime(format!("cannot handle signals: {e}")))?;
    let server = start_status(&daemon.setup, daemon.pages.clone())?;
    daemon.shown_admission = daemon.standing.admission(driver.machine().session_state());
    for warning in daemon.setup.ingress_warnings() {
        tracing::warn!("{warning}");
    }
    let config = &daemon.setup.config;
    tracing::info!(
        node = %config.name, coordinators = ?config.coordinators,
        status = %server.local_addr(), data_dir = %config.data_dir.display(),
        admission = daemon.shown_admission, "node running"
    );

    let mut events: Vec<NodeEvent> = Vec::new();
    let mut next_publish = Instant::now() + PUBLISH_INTERVAL;
    let mut next_watch = Instant::now() + WATCH_INTERVAL;
    loop {
        let exit = driver
            .run_until(&mut events, Some(next_publish), |_, events| {
                !events.is_empty() || reload.pending()
            })
            .map_err(|e| DaemonError::Runtime(format!("the event loop failed: {e}")))?;
        for event in events.drain(..) {
            daemon.on_event(driver.machine(), event);
        }
        // Between pumps: no datagram is half handled while services change.
        if reload.take() {
            daemon.reload(driver.machine_mut());
            next_publish = Instant::now();
            // An uplink put in or out of service takes effect now.
            next_watch = next_publish;
        }
        let now = Instant::now();
        if now >= next_watch {
            if daemon.watch_uplinks(&mut driver) {
                next_publish = now;
            }
            next_watch = now + WATCH_INTERVAL;
        }
        if now >= next_publish {
            daemon.save_chain(now);
            daemon.publish(driver.machine());
            next_publish = now + PUBLISH_INTERVAL;
        }
        if exit == Exit::Stopped {
            break;
        }
    }
    // Goodbye: the control session's close leaves with one more pump, so
    // the coordinator sees the node go now rather than at its idle timeout.
    driver.machine_mut().shut_down(Instant::now());
    driver.pump(&mut events);
    drop(driver);
    drop(server);
    drop(signals);
    tracing::info!("node stopped");
    Ok(())
}

/// The node `setup` describes, with the settings its file gives beyond
/// the node's own configuration, and its uplinks that have no address yet
/// carrying nothing until one appears.
fn start_node(
    setup: &Setup,
    root: rustls_pki_types::CertificateDer<'static>,
    credentials: Credentials,
) -> Result<Node, DaemonError> {
    let cannot =
        |e: &dyn std::fmt::Display| DaemonError::Runtime(format!("the node cannot start: {e}"));
    let mut node = Node::new(node_config(setup, root, credentials)?).map_err(|e| cannot(&e))?;
    node.set_punch(setup.config.punch);
    node.set_reorder_bound(setup.config.reorder_bound);
    for u in setup.watch.uplinks() {
        if u.reach.address().is_none() {
            node.set_uplink_address(Instant::now(), u.id, None)
                .map_err(|e| cannot(&e))?;
        }
    }
    Ok(node)
}

/// The proto-core configuration of this node.
fn node_config(
    setup: &Setup,
    root: rustls_pki_types::CertificateDer<'static>,
    credentials: Credentials,
) -> Result<node::NodeConfig, DaemonError> {
    let config = &setup.config;
    let ids: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
    let services = service_specs(config, &setup.ingress, |name| {
        let at = ids.iter().position(|n| *n == name).unwrap_or(0);
        ServiceId(at as u32 + 1)
    });
    Ok(node::NodeConfig {
        name: config.name.clone(),
        coordinators: config.coordinators.clone(),
        coordinator_name: config.coordinator_name.clone(),
        coordinator_names: config.coordinator_names.clone(),
        root,
        credentials,
        control_bind: setup.control_bind(),
        advertise_private: config.advertise_private,
        services,
        uplinks: setup.uplinks.clone(),
        wall_clock: wall_clock_now(),
        timing: QuicTiming::default(),
        seed: identity::os_seed()?,
    })
}

/// The node's services with the peers each consents to and their ingress
/// addresses (`ingress` in association order); `id` numbers each service.
fn service_specs(
    config: &crate::config::NodeConfig,
    ingress: &[std::net::SocketAddr],
    id: impl Fn(&str) -> ServiceId,
) -> Vec<ServiceSpec> {
    config
        .services
        .iter()
        .map(|s| ServiceSpec {
            id: id(&s.name),
            name: s.name.clone(),
            target: s.target,
            peers: config
                .associations
                .iter()
                .zip(ingress)
                .filter(|(a, _)| a.service == s.name)
                .map(|(a, &ingress)| (a.peer(), ingress))
                .collect(),
        })
        .collect()
}

fn start_status(setup: &Setup, pages: SharedPages) -> Result<StatusServer, DaemonError> {
    let listen = setup.config.status_listen;
    StatusServer::start(listen, pages).map_err(|err| {
        let error = ConfigError {
            file: setup.config.file.clone(),
            key: "status_listen".to_owned(),
            reason: format!("cannot listen on {listen}: {err}"),
        };
        if err.kind() == io::ErrorKind::AddrInUse {
            // Not the file's fault: something else (another node?) has it.
            DaemonError::Runtime(error.to_string())
        } else {
            DaemonError::Config(error)
        }
    })
}

fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The daemon's own state around the node.
#[derive(Debug)]
struct Daemon {
    setup: Setup,
    standing: Standing,
    /// The admission last logged at info level.
    shown_admission: &'static str,
    /// An issued chain whose write failed: retried, as losing it means a
    /// new join token after the next restart.
    unsaved_chain: Option<Vec<Vec<u8>>>,
    next_save: Instant,
    pages: SharedPages,
    /// Reloads so far, for status.
    reloads: ReloadStatus,
    /// Each uplink's state, followed from the host.
    uplinks: UplinkWatch,
    /// The last read of the host's addresses failed (logged once).
    host_unreadable: bool,
}

impl Daemon {
    fn on_event(&mut self, node: &Node, event: NodeEvent) {
        let repeated =
            matches!(&event, NodeEvent::Refused { code, .. } if self.standing.refused_with(*code));
        self.standing.on_event(&event);
        match event {
            NodeEvent::Enrolled { chain } => {
                self.unsaved_chain = Some(chain.iter().map(|c| c.to_vec()).collect());
                self.save_chain(Instant::now());
            }
            // The key stays; only node.crt is replaced, atomically, so the
            // data directory always holds a valid pair (the old certificate
            // stays accepted until it expires).
            NodeEvent::Renewed { chain } => {
                tracing::info!(
                    expires_in_s = node
                        .cert_expires_unix_s()
                        .map(|at| u64::try_from(at).unwrap_or(0).saturating_sub(unix_now_s())),
                    "certificate renewed"
                );
                self.unsaved_chain = Some(chain.iter().map(|c| c.to_vec()).collect());
                self.next_save = Instant::now();
                self.save_chain(Instant::now());
            }
            NodeEvent::Session(state) => {
                if state == SessionState::Live {
                    let transport = node.control_transport().map_or("none", |c| c.as_str());
                    tracing::info!(transport, "control session live");
                }
                let admission = self.standing.admission(state);
                // Retries through the same standing are not news.
                if admission == self.shown_admission {
                    tracing::debug!(state = state.as_str(), admission, "control session");
                } else {
                    tracing::info!(state = state.as_str(), admission, "control session");
                    self.shown_admission = admission;
                }
            }
            NodeEvent::Refused { code, reason } if !repeated => self.log_refusal(code, &reason),
            NodeEvent::Token { expires_unix_s } => tracing::debug!(
                expires_in_s = expires_unix_s.saturating_sub(unix_now_s()),
                "admission token granted"
            ),
            NodeEvent::Revoked => {
                tracing::error!("revoked by the coordinator: every association is withdrawn")
            }
            NodeEvent::Installed { assoc, peer } => {
                let service = node.association_names(assoc).map_or("?", |(s, _)| s);
                let ingress = node
                    .data_plane()
                    .association(assoc)
                    .map(|v| v.spec().ingress);
                tracing::info!(%assoc, service, %peer, ingress = ?ingress, "association installed");
            }
            NodeEvent::Rekeyed { assoc, epoch } => {
                tracing::info!(%assoc, epoch, "association key replaced (paths kept)")
            }
            NodeEvent::Withdrawn { assoc } => tracing::info!(%assoc, "association withdrawn"),
            NodeEvent::Data(event) => log_data(&event),
            other => tracing::debug!(event = ?other, "node event"),
        }
    }

    /// Reads the configuration file again and applies its services and
    /// associations, or refuses it and keeps running as before.
    fn reload(&mut self, node: &mut Node) {
        let file = self.setup.config.file.clone();
        let refused = |reloads: &mut ReloadStatus, reason: String| {
            tracing::error!(
                "reload refused: {reason}; the node keeps running on its previous configuration"
            );
            reloads.refused(unix_now_s(), reason);
        };
        let plan = match reload::plan(&self.setup, node.services()) {
            Ok(plan) => plan,
            Err(err) => return refused(&mut self.reloads, err.to_string()),
        };
        match node.reconfigure(Instant::now(), plan.services) {
            Ok(report) => {
                let mut summary = reload::summary(&report);
                let toggled = self.enable_uplinks(&plan.config);
                if !toggled.is_empty() {
                    if report.is_empty() {
                        summary.clear();
                    } else {
                        summary.push_str("; ");
                    }
                    summary.push_str(&toggled);
                }
                for assoc in &report.withdrawn {
                    tracing::info!(%assoc, "association withdrawn by the reload");
                }
                tracing::info!(file = %file.display(), changes = %summary, "configuration reloaded");
                self.setup.config = plan.config;
                self.setup.ingress = plan.ingress;
                self.reloads.applied(unix_now_s(), summary);
            }
            Err(err) => refused(
                &mut self.reloads,
                ConfigError {
                    file,
                    key: "service".to_owned(),
                    reason: err.to_string(),
                }
                .to_string(),
            ),
        }
    }

    /// Puts uplinks in or out of service as `config` says (`enabled`);
    /// the next uplink watch applies it. Returns what changed, in words.
    fn enable_uplinks(&mut self, config: &crate::config::NodeConfig) -> String {
        let mut enabled = Vec::new();
        let mut disabled = Vec::new();
        for (spec, u) in self.setup.uplinks.iter().zip(&config.uplinks) {
            if self.uplinks.set_enabled(spec.id, u.enabled) {
                if u.enabled {
                    &mut enabled
                } else {
                    &mut disabled
                }
                .push(u.name.as_str());
            }
        }
        let mut parts = Vec::new();
        if !disabled.is_empty() {
            parts.push(format!("uplinks disabled: {}", disabled.join(", ")));
        }
        if !enabled.is_empty() {
            parts.push(format!("uplinks enabled: {}", enabled.join(", ")));
        }
        parts.join("; ")
    }

    fn log_refusal(&self, code: RejectCode, reason: &str) {
        let code_name = code.as_str();
        match code {
            RejectCode::JoinTokenInvalid
            | RejectCode::JoinTokenUsed
            | RejectCode::JoinTokenExpired => tracing::error!(
                code = code_name, %reason,
                "the join token was refused: get a new one (tlctl node invite {}), put it in join_token and restart",
                self.setup.config.name
            ),
            RejectCode::Pending => tracing::info!(
                "enrolled, not admitted yet: an admin runs `tlctl node admit {}`",
                self.setup.config.name
            ),
            // The session logs every refusal already; these need nothing more.
            _ => tracing::debug!(code = code_name, %reason, "refused"),
        }
    }

    /// Writes an issued chain that is not on disk yet, at most every
    /// [`SAVE_RETRY`] after a failure.
    fn save_chain(&mut self, now: Instant) {
        let Some(chain) = &self.unsaved_chain else {
            return;
        };
        if now < self.next_save {
            return;
        }
        match identity::save_chain(&self.setup.config.data_dir, chain) {
            Ok(file) => {
                tracing::info!(file = %file.display(), "certificate kept");
                self.unsaved_chain = None;
            }
            Err(err) => {
                self.next_save = now + SAVE_RETRY;
                tracing::error!(
                    error = %err,
                    "the issued certificate could not be written (retrying); a restart before it is would use the previous one, or need a new join token if there is none"
                );
            }
        }
    }

    /// Reads the host's interfaces and addresses and tells the node about
    /// every uplink that changed. Returns whether one did.
    fn watch_uplinks(&mut self, driver: &mut MioDriver<Node>) -> bool {
        let host = match HostSnapshot::read() {
            Ok(host) => {
                if std::mem::take(&mut self.host_unreadable) {
                    tracing::info!("the host's addresses can be read again");
                }
                host
            }
            Err(err) => {
                if !std::mem::replace(&mut self.host_unreadable, true) {
                    tracing::warn!(error = %err, "cannot read the host's addresses: uplink changes are not followed until this clears");
                }
                return false;
            }
        };
        let changes = self.uplinks.observe(&host);
        if changes.is_empty() {
            return false;
        }
        for change in changes {
            log_uplink_change(&change);
            let result = driver.machine_mut().set_uplink_address(
                Instant::now(),
                change.id,
                change.to.address(),
            );
            if let Err(err) = result {
                tracing::error!(uplink = %change.name, error = %err, "the node refused an uplink change");
            }
        }
        true
    }

    fn publish(&mut self, node: &Node) {
        let mut status = report::node_status(
            node,
            &self.setup,
            &self.standing,
            &self.uplinks,
            unix_now_s(),
        );
        status.reload = self.reloads.clone();
        let pages = Pages {
            status: serde_json::to_string_pretty(&status).unwrap_or_default(),
            metrics: status.metrics(),
        };
        match self.pages.lock() {
            Ok(mut shared) => *shared = Arc::new(pages),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(pages),
        }
    }
}

fn log_uplink_change(change: &UplinkChange) {
    let name = &change.name;
    match (&change.from, &change.to) {
        (_, UplinkReach::Down(why)) => tracing::warn!(
            uplink = %name, reason = %why,
            "uplink down: its paths failed; traffic moves to the other uplinks"
        ),
        (UplinkReach::Down(_), UplinkReach::Up(ip)) => tracing::info!(
            uplink = %name, address = %ip,
            "uplink up: binding its mesh sockets and probing its paths"
        ),
        (UplinkReach::Up(old), UplinkReach::Up(ip)) => tracing::info!(
            uplink = %name, from = %old, address = %ip,
            "uplink address changed: rebinding its mesh sockets and probing its paths"
        ),
    }
}

fn log_data(event: &DataEvent) {
    match event {
        DataEvent::Bound { role, local } => tracing::debug!(?role, %local, "socket bound"),
        DataEvent::BindFailed {
            role: SocketRole::Ingress(assoc),
            reason,
        } => {
            tracing::error!(%assoc, ?reason, "the ingress socket could not be bound: the local service cannot reach this association")
        }
        DataEvent::BindFailed {
            role: SocketRole::Mesh(assoc, uplink),
            reason,
        } => tracing::warn!(%assoc, %uplink, ?reason, "a mesh socket could not be bound"),
        DataEvent::PathValidated {
            assoc,
            path,
            remote,
            rtt,
        } => {
            tracing::info!(%assoc, %path, %remote, rtt_ms = rtt.as_secs_f64() * 1e3, "path validated")
        }
        DataEvent::PathFailed {
            assoc,
            path,
            remote,
        } => tracing::warn!(%assoc, %path, %remote, "path failed"),
        DataEvent::PathSwitched { assoc, from, to } => {
            tracing::debug!(%assoc, ?from, %to, "data moved to another path")
        }
        DataEvent::AssociationUp(assoc) => tracing::info!(%assoc, "association up"),
        DataEvent::AssociationDown(assoc) => {
            tracing::warn!(%assoc, "association down: no active path")
        }
        other => tracing::debug!(event = ?other, "data plane event"),
    }
}
