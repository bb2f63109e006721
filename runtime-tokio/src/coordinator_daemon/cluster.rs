//! The daemon's side of a cluster (`[cluster]`): the replicated log on
//! disk, replayed at start; the replica; the TLS identity the coordinator
//! dials its peers with.

use std::time::Instant;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use transitloom_proto_core::control::tls_config::{check_client_chain, client_config, TlsIdentity};
use transitloom_proto_core::coordinator::machine::{AppliedLog, ClusterConfig};
use transitloom_proto_core::coordinator::registry::Op;
use transitloom_proto_core::coordinator::replica::{
    LogEntry, Replica, ReplicaConfig, DEFAULT_TICK,
};
use transitloom_proto_core::coordinator::Coordinator;
use transitloom_proto_core::csprng::Drbg;

use super::config::{ClusterSettings, CoordinatorSettings};
use super::pki::CoordinatorPki;
use super::DaemonError;
use crate::oplog::OpLog;
use crate::raft_store::RaftStore;

/// A cluster coordinator, ready to join once its machine exists.
pub(crate) struct Opened {
    pub(super) store: RaftStore,
    pub(super) applied: AppliedLog,
    replica: Replica,
    config: ClusterConfig,
    /// The operations of the log this coordinator kept alone, with their
    /// sequence numbers.
    imports: Vec<(u64, Op)>,
}

/// Opens `data_dir/raft.redb`, replays its committed entries, and builds
/// the replica and the dialling identity.
pub(crate) fn open(
    settings: &CoordinatorSettings,
    cluster: &ClusterSettings,
    pki: &CoordinatorPki,
    oplog: &OpLog,
    drbg: Drbg,
) -> Result<Opened, DaemonError> {
    let client_tls = client_tls(settings, pki)?;
    let path = settings.raft_path();
    let store = RaftStore::open(&path)?;
    let mut restored = store.load()?;
    let commit = restored.hard_state.commit;
    let committed: Vec<&LogEntry> = restored
        .entries
        .iter()
        .filter(|e| e.index <= commit)
        .collect();
    let applied = AppliedLog::replay(committed);
    restored.applied = commit;
    // Proposed at every start until the log holds them all (each under a
    // tag of its own, so none is applied twice).
    let imports = oplog.replay_ops()?;
    tracing::info!(
        path = %path.display(),
        entries = restored.entries.len(),
        committed = commit,
        term = restored.hard_state.term,
        "replicated log replayed"
    );
    let mut voters: Vec<u64> = cluster.peers.iter().map(|p| p.id).collect();
    voters.push(cluster.id);
    let replica = Replica::new(
        &ReplicaConfig {
            id: cluster.id,
            voters,
            tick: DEFAULT_TICK,
        },
        restored,
        drbg,
        Instant::now(),
    )
    .map_err(|e| DaemonError::Start(e.to_string()))?;
    Ok(Opened {
        store,
        applied,
        replica,
        config: ClusterConfig {
            id: cluster.id,
            peers: cluster.peers.clone(),
            client_tls,
        },
        imports,
    })
}

/// The TLS identity a cluster coordinator dials its peers with: its server
/// certificate, which must carry client auth.
///
/// # Errors
/// A configuration error naming `pki_dir` when the certificate cannot
/// serve as a client certificate, with the command that fixes it.
pub fn client_tls(
    settings: &CoordinatorSettings,
    pki: &CoordinatorPki,
) -> Result<std::sync::Arc<rustls::ClientConfig>, DaemonError> {
    // The server certificate is also the client certificate peers check.
    let identity = TlsIdentity {
        chain: [&pki.server, &pki.intermediate]
            .iter()
            .map(|der| CertificateDer::from(der.to_vec()))
            .collect(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key.clone())),
    };
    let root = CertificateDer::from(pki.root.clone());
    if let Err(err) = check_client_chain(&root, &identity.chain, now_unix_s()) {
        return Err(settings
            .error(
                "pki_dir",
                format!(
                    "server.crt cannot dial the other coordinators ({err}); it was issued before \
                     coordinators could form a cluster: issue it again with \
                     `tlctl pki issue-coordinator --force`"
                ),
            )
            .into());
    }
    client_config(&root, Some(identity))
        .map_err(|e| settings.error("pki_dir", e.to_string()).into())
}

impl Opened {
    /// Joins the machine to the cluster; returns the store the driver
    /// persists to.
    pub(super) fn join(self, coordinator: &mut Coordinator) -> RaftStore {
        let now = Instant::now();
        coordinator.join_cluster(self.config, self.replica, &self.applied, now);
        let mut proposed = 0;
        for (seq, op) in self.imports {
            proposed += usize::from(coordinator.import(now, seq, op));
        }
        if proposed > 0 {
            tracing::info!(
                operations = proposed,
                "proposing the operations this coordinator logged before it joined the cluster"
            );
        }
        self.store
    }
}

fn now_unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
