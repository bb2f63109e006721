//! rustls configurations for the control plane (DESIGN §4, §5): TLS 1.3 only,
//! ALPN `transitloom/1` only, mutual authentication against the root CA,
//! Ed25519 keys, and a crypto provider that reads neither the OS random
//! source nor the wall clock.
//!
//! # Randomness and time are inputs
//!
//! rustls asks its [`CryptoProvider`](rustls::crypto::CryptoProvider) for
//! randomness through a `&'static dyn SecureRandom`, and for the time through
//! a `TimeProvider` (certificate validity); neither can carry a per-machine
//! seed. So the provider built here draws both from a slot *lent* for the
//! duration of one call: the owner of a TLS session (the QUIC transport, a
//! TCP fallback) keeps a [`TlsInputs`] — its own
//! [`Drbg`](crate::csprng::Drbg) — and wraps every call into rustls or
//! quinn-proto in [`TlsInputs::lend`], which also lends the wall-clock time
//! derived from `now`. When the guard drops, the advanced generator goes
//! back to its owner.
//!
//! - Each machine has its own generator, so its TLS randomness does not
//!   depend on how the simulator interleaves machines on one thread.
//! - Lending is scoped to one synchronous call on one thread, so it also
//!   holds on a multi-threaded runtime; nothing is shared between threads.
//! - Outside a lend, randomness and time fail closed (the handshake errors);
//!   a generator is never copied, so no output repeats.
//! - Daemons seed the `Drbg` from OS entropy (HMAC-DRBG, NIST SP 800-90A),
//!   the simulator from its world seed; the same seed gives the same bytes.
//!
//! rustls' ring key exchange would draw from ring's `SystemRandom`, so this
//! provider brings its own X25519 group fed from the lent generator. Only
//! Ed25519 keys are accepted: their signatures are deterministic, where ECDSA
//! and RSA signing in rustls' ring provider would draw OS randomness.

mod inputs;
mod provider;
#[cfg(test)]
pub(crate) mod test_pki;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

pub(crate) use inputs::lent_unix_time;
pub use inputs::{LentTlsInputs, TlsInputs};
pub use provider::control_plane_provider;

/// The only application protocol the control plane speaks.
pub const ALPN: &[u8] = b"transitloom/1";

/// A certificate chain and its private key.
pub struct TlsIdentity {
    /// The leaf certificate first, then the intermediates that lead to the
    /// root (the root itself is not sent).
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key (Ed25519, PKCS#8).
    pub key: PrivateKeyDer<'static>,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let leaf = self.chain.first().map(fingerprint);
        f.debug_struct("TlsIdentity")
            .field("chain_len", &self.chain.len())
            .field("leaf_sha256", &leaf.map(hex))
            .finish_non_exhaustive()
    }
}

/// Whether a server demands a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// Every client presents a certificate that chains to the root.
    Required,
    /// A client may present no certificate (enrollment, before a node has
    /// one); one it does present must still chain to the root. The
    /// application checks whether a peer certificate is present.
    Optional,
}

/// Why a control-plane TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsConfigError {
    /// The identity has no certificate.
    #[error("the certificate chain is empty: it needs at least the leaf certificate")]
    EmptyChain,
    /// The private key cannot be loaded.
    #[error("the private key is unusable (control-plane keys are Ed25519 in PKCS#8): {0}")]
    BadKey(String),
    /// The private key does not belong to the leaf certificate.
    #[error("the private key does not match the leaf certificate's public key")]
    KeyMismatch,
    /// The root certificate cannot serve as a trust anchor.
    #[error("the root certificate is unusable as a trust anchor: {0}")]
    BadRoot(String),
    /// rustls refused the configuration.
    #[error("rustls refused the configuration: {0}")]
    Rustls(String),
}

impl From<rustls::Error> for TlsConfigError {
    fn from(error: rustls::Error) -> Self {
        match error {
            rustls::Error::InconsistentKeys(_) => Self::KeyMismatch,
            other => Self::Rustls(other.to_string()),
        }
    }
}

/// The coordinator's server configuration: presents `identity`, verifies
/// client certificates against `root` (node certificates arrive with the
/// coordinator intermediate that signed them; admin certificates are signed
/// by the root directly).
///
/// # Errors
/// [`TlsConfigError`] when the chain is empty, the key is not Ed25519 or does
/// not match the leaf, or the root is not a usable trust anchor.
pub fn server_config(
    root: &CertificateDer<'_>,
    identity: TlsIdentity,
    client_auth: ClientAuth,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let provider = Arc::new(control_plane_provider());
    check_identity(&provider, &identity)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(root_store(root)?, provider.clone());
    let verifier = match client_auth {
        ClientAuth::Required => verifier,
        ClientAuth::Optional => verifier.allow_unauthenticated(),
    }
    .build()
    .map_err(|e| TlsConfigError::Rustls(e.to_string()))?;
    let mut config = ServerConfig::builder_with_details(provider, inputs::wall_time())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain, identity.key)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    // Every session is a full mutual handshake: no tickets, no resumption,
    // no 0-RTT (a replayable hello has no place in admission).
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}

/// A client configuration (node or `tlctl`): verifies the coordinator's
/// certificate against `root` and the server name given at connect time, and
/// presents `identity` when there is one (a node that is not enrolled yet
/// has none).
///
/// # Errors
/// [`TlsConfigError`] as for [`server_config`].
pub fn client_config(
    root: &CertificateDer<'_>,
    identity: Option<TlsIdentity>,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let provider = Arc::new(control_plane_provider());
    if let Some(identity) = &identity {
        check_identity(&provider, identity)?;
    }
    let builder = ClientConfig::builder_with_details(provider, inputs::wall_time())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(root_store(root)?);
    let mut config = match identity {
        Some(identity) => builder.with_client_auth_cert(identity.chain, identity.key)?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.resumption = Resumption::disabled();
    config.enable_early_data = false;
    Ok(Arc::new(config))
}

/// Checks that `chain` (leaf first) would pass as a client certificate against
/// `root` at `at_unix_s`: a coordinator's server certificate must, to dial
/// the other coordinators of its cluster.
///
/// # Errors
/// [`TlsConfigError::Rustls`] with rustls's reason (a certificate without
/// client auth, of another root, or expired); [`TlsConfigError::BadRoot`].
pub fn check_client_chain(
    root: &CertificateDer<'_>,
    chain: &[CertificateDer<'_>],
    at_unix_s: u64,
) -> Result<(), TlsConfigError> {
    let provider = Arc::new(control_plane_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(root_store(root)?, provider)
        .build()
        .map_err(|e| TlsConfigError::Rustls(e.to_string()))?;
    let (leaf, intermediates) = chain.split_first().ok_or(TlsConfigError::EmptyChain)?;
    let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(at_unix_s));
    verifier
        .verify_client_cert(leaf, intermediates, now)
        .map(|_| ())
        .map_err(|e| TlsConfigError::Rustls(e.to_string()))
}

/// SHA-256 of a certificate's DER encoding: how admission tokens and status
/// name a certificate.
pub fn fingerprint(cert: &CertificateDer<'_>) -> [u8; 32] {
    crate::pki::cert_fingerprint(cert.as_ref())
}

/// Lower-case hex, for logs and debug output.
fn hex(bytes: [u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Rejects an empty chain and a key the provider cannot load, with errors
/// clearer than rustls' own.
fn check_identity(
    provider: &rustls::crypto::CryptoProvider,
    identity: &TlsIdentity,
) -> Result<(), TlsConfigError> {
    if identity.chain.is_empty() {
        return Err(TlsConfigError::EmptyChain);
    }
    provider
        .key_provider
        .load_private_key(identity.key.clone_key())
        .map_err(|e| TlsConfigError::BadKey(e.to_string()))?;
    Ok(())
}

fn root_store(root: &CertificateDer<'_>) -> Result<Arc<RootCertStore>, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(root.clone().into_owned())
        .map_err(|e| TlsConfigError::BadRoot(e.to_string()))?;
    Ok(Arc::new(roots))
}
