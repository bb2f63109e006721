//! One admin command over one session, as `tlctl node …`, `tlctl assoc …`
//! and `tlctl status` send it: proto-core's [`AdminClient`] on a
//! current-thread tokio runtime, with the admin certificate from an
//! `issue-admin` directory, waiting for the reply or a deadline. [`render`]
//! turns replies into the tables `tlctl` prints.

pub mod render;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use transitloom_proto_core::admin::{AdminCarrier, AdminClient, AdminEvent};
use transitloom_proto_core::control::msg::{AdminCommand, AdminReply, RejectCode};
use transitloom_proto_core::control::tls_config::TlsIdentity;
use transitloom_proto_core::csprng::{Drbg, SEED_LEN};

use crate::pki_files::{
    read_cert, read_key, require_dir, PkiFileError, ADMIN_CERT, ADMIN_KEY, ROOT_CERT,
};
use crate::{wall_clock_now, Exit, TokioDriver};

/// How long `tlctl` waits for a QUIC handshake before it tries TCP.
pub const QUIC_BOUND: Duration = Duration::from_secs(3);

/// Where and as whom an admin command goes.
#[derive(Debug, Clone)]
pub struct AdminTarget {
    /// The coordinator's control address (QUIC over UDP, and TCP on the
    /// same port).
    pub coordinator: SocketAddr,
    /// The name its certificate carries (`issue-coordinator --name`).
    pub server_name: String,
    /// The directory from `tlctl pki issue-admin`.
    pub admin_dir: PathBuf,
    /// How long to wait for the answer, handshake included.
    pub timeout: Duration,
    /// QUIC, TCP, or QUIC then TCP.
    pub carrier: AdminCarrier,
}

/// Why an admin command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminSessionError {
    /// The admin directory is missing or holds unusable files (exit 2).
    #[error("--admin: {0}")]
    AdminDir(PkiFileError),
    /// The session ended without an answer: refused, handshake failed.
    #[error("{coordinator}: {reason}")]
    Closed {
        /// The coordinator.
        coordinator: SocketAddr,
        /// Why.
        reason: String,
    },
    /// No answer in time.
    #[error(
        "{coordinator}: no answer within {} s (is the coordinator running there, \
         and does its certificate carry the name {server_name:?}? see --coordinator-name)",
        timeout.as_secs_f64()
    )]
    Timeout {
        /// The coordinator.
        coordinator: SocketAddr,
        /// The expected server name.
        server_name: String,
        /// How long it waited.
        timeout: Duration,
    },
    /// The coordinator answered with an error.
    #[error("refused by the coordinator: {reason} ({})", code.as_str())]
    Refused {
        /// What kind of refusal.
        code: RejectCode,
        /// Details.
        reason: String,
    },
    /// A local failure (runtime, random source, TLS setup).
    #[error("{0}")]
    Local(String),
}

impl AdminSessionError {
    /// The process exit code: 2 for a bad admin directory, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::AdminDir(e) => e.exit_code(),
            _ => 1,
        }
    }
}

/// The admin's credentials: the trust anchor and the certificate with key.
#[derive(Debug)]
pub struct AdminCredentials {
    /// root.crt (DER).
    pub root: CertificateDer<'static>,
    /// admin.crt and admin.key.
    pub identity: TlsIdentity,
}

impl AdminCredentials {
    /// Reads admin.crt, admin.key and root.crt from `dir`.
    ///
    /// # Errors
    /// A [`PkiFileError`] naming the missing or unusable file.
    pub fn load(dir: &Path) -> Result<Self, PkiFileError> {
        require_dir(
            dir,
            "admin directory (from `tlctl pki issue-admin --out DIR`)",
        )?;
        let cert = read_cert(&dir.join(ADMIN_CERT))?;
        let key = read_key(&dir.join(ADMIN_KEY))?;
        let root = read_cert(&dir.join(ROOT_CERT))?;
        Ok(Self {
            root: CertificateDer::from(root),
            identity: TlsIdentity {
                chain: vec![CertificateDer::from(cert)],
                key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
            },
        })
    }
}

/// Sends `command` and waits for its answer.
///
/// # Errors
/// See [`AdminSessionError`].
pub fn send(target: &AdminTarget, command: AdminCommand) -> Result<AdminReply, AdminSessionError> {
    let credentials =
        AdminCredentials::load(&target.admin_dir).map_err(AdminSessionError::AdminDir)?;
    let mut seed = [0u8; SEED_LEN];
    SystemRandom::new()
        .fill(&mut seed)
        .map_err(|_| AdminSessionError::Local("the system random generator failed".to_owned()))?;
    let bind = match target.coordinator {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let mut client = AdminClient::new(
        bind,
        target.coordinator,
        &target.server_name,
        credentials.root,
        credentials.identity,
        wall_clock_now(),
        Drbg::new(seed),
    )
    .map_err(|e| AdminSessionError::Local(e.to_string()))?;
    client.set_carrier(target.carrier);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AdminSessionError::Local(format!("tokio runtime: {e}")))?;
    runtime.block_on(exchange(target, client, command))
}

async fn exchange(
    target: &AdminTarget,
    client: AdminClient,
    command: AdminCommand,
) -> Result<AdminReply, AdminSessionError> {
    let deadline = Instant::now() + target.timeout;
    let mut driver = TokioDriver::new(client);
    let request = driver.machine_mut().request(Instant::now(), command);
    let mut events: Vec<AdminEvent> = Vec::new();
    let answered = |events: &Vec<AdminEvent>| {
        events.iter().any(|e| match e {
            AdminEvent::Reply { request_id, .. } => *request_id == request,
            AdminEvent::Closed(_) => true,
            _ => false,
        })
    };
    let exit = driver
        .run_until(&mut events, Some(deadline), |_, events| answered(events))
        .await;
    for event in events {
        match event {
            AdminEvent::Reply { request_id, result } if request_id == request => {
                return result.map_err(|e| AdminSessionError::Refused {
                    code: e.code,
                    reason: e.reason,
                });
            }
            AdminEvent::Closed(reason) => {
                return Err(AdminSessionError::Closed {
                    coordinator: target.coordinator,
                    reason,
                })
            }
            _ => {}
        }
    }
    debug_assert_eq!(exit, Exit::Deadline);
    Err(AdminSessionError::Timeout {
        coordinator: target.coordinator,
        server_name: target.server_name.clone(),
        timeout: target.timeout,
    })
}
