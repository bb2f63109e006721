//! The node's identity in its data directory:
//!
//! ```text
//! DATA_DIR/node.key   Ed25519 private key, PEM PKCS#8, 0600; made once
//!                     from OS randomness and never leaves the node
//! DATA_DIR/node.crt   PEM chain, leaf then intermediate, 0644; written
//!                     when the coordinator issues it, so a restart never
//!                     enrolls again
//! ```

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use transitloom_proto_core::control::tls_config::TlsIdentity;
use transitloom_proto_core::node::Credentials;
use transitloom_proto_core::pki;

use super::DaemonError;
use crate::config::{ConfigError, NodeConfig};
use crate::fsutil::write_atomic;

/// The node's private key, in the data directory.
pub const KEY_FILE: &str = "node.key";
/// The node's certificate chain, in the data directory.
pub const CERT_FILE: &str = "node.crt";

const KEY_LABEL: &str = "PRIVATE KEY";
const CERT_LABEL: &str = "CERTIFICATE";
const KEY_MODE: u32 = 0o600;
const CERT_MODE: u32 = 0o644;

/// A file in the data directory that cannot be used (exit 2: the operator
/// has to look at it).
fn unusable(file: &Path, reason: impl Into<String>) -> DaemonError {
    DaemonError::Config(ConfigError {
        file: file.to_owned(),
        key: "(file)".to_owned(),
        reason: reason.into(),
    })
}

fn io_error<'a>(
    path: &'a Path,
    action: &'static str,
) -> impl FnOnce(io::Error) -> DaemonError + 'a {
    move |source| DaemonError::Io {
        path: path.to_owned(),
        action,
        source,
    }
}

/// 32 bytes from the operating system's generator.
///
/// # Errors
/// When the generator fails.
pub(crate) fn os_seed() -> Result<[u8; 32], DaemonError> {
    let mut seed = [0u8; 32];
    SystemRandom::new()
        .fill(&mut seed)
        .map_err(|_| DaemonError::Runtime("the OS random generator failed".to_owned()))?;
    Ok(seed)
}

/// The node's key (PKCS#8 DER), made and kept on first use.
///
/// # Errors
/// An unreadable or invalid key file, or a failed write.
pub(crate) fn load_or_create_key(data_dir: &Path) -> Result<Vec<u8>, DaemonError> {
    let file = data_dir.join(KEY_FILE);
    match fs::read(&file) {
        Ok(text) => read_key(&file, &text),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            if data_dir.join(CERT_FILE).exists() {
                return Err(unusable(
                    &file,
                    format!("missing, but {CERT_FILE} is there: restore the key, or remove both and enroll again with a new join token"),
                ));
            }
            let pkcs8 = pki::ed25519_pkcs8_from_seed(&os_seed()?);
            let text = pem::encode(&pem::Pem::new(KEY_LABEL, pkcs8.clone()));
            write_atomic(&file, text.as_bytes(), KEY_MODE).map_err(io_error(&file, "write"))?;
            tracing::info!(file = %file.display(), "made the node's private key");
            Ok(pkcs8)
        }
        Err(err) => Err(io_error(&file, "read")(err)),
    }
}

fn read_key(file: &Path, text: &[u8]) -> Result<Vec<u8>, DaemonError> {
    let block = pem::parse(text).map_err(|e| unusable(file, format!("not PEM: {e}")))?;
    if block.tag() != KEY_LABEL {
        return Err(unusable(
            file,
            format!("holds a {:?}, not a {KEY_LABEL:?}", block.tag()),
        ));
    }
    let pkcs8 = block.into_contents();
    pki::ed25519_key_pair(&pkcs8)
        .map_err(|e| unusable(file, format!("not an Ed25519 PKCS#8 key: {e}")))?;
    let mode = fs::metadata(file)
        .map_err(io_error(file, "stat"))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(file, fs::Permissions::from_mode(KEY_MODE))
            .map_err(io_error(file, "chmod"))?;
        tracing::warn!(file = %file.display(), mode = format!("{:o}", mode & 0o777), "the private key was readable by others; its mode is 0600 now");
    }
    Ok(pkcs8)
}

/// The kept certificate chain (DER, leaf first), if the node is enrolled.
/// The leaf must hold `key_pkcs8`'s public key and name this node.
///
/// # Errors
/// An unreadable or invalid chain, or one for another key or node.
pub(crate) fn load_chain(
    data_dir: &Path,
    key_pkcs8: &[u8],
    node_name: &str,
) -> Result<Option<Vec<Vec<u8>>>, DaemonError> {
    let file = data_dir.join(CERT_FILE);
    let text = match fs::read(&file) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(io_error(&file, "read")(err)),
    };
    let blocks = pem::parse_many(&text).map_err(|e| unusable(&file, format!("not PEM: {e}")))?;
    if blocks.is_empty() || blocks.iter().any(|b| b.tag() != CERT_LABEL) {
        return Err(unusable(
            &file,
            "expected PEM certificates only, leaf first",
        ));
    }
    let chain: Vec<Vec<u8>> = blocks.into_iter().map(pem::Pem::into_contents).collect();
    let leaf = &chain[0];
    let public = pki::ed25519_public_key(leaf)
        .map_err(|e| unusable(&file, format!("the leaf certificate is unusable: {e}")))?;
    let pair = pki::ed25519_key_pair(key_pkcs8)
        .map_err(|e| unusable(&data_dir.join(KEY_FILE), e.to_string()))?;
    if pair.public_key_raw() != public {
        return Err(unusable(
            &file,
            format!("its leaf certificate is not for the key in {KEY_FILE}"),
        ));
    }
    let name = pki::node_name_of(leaf)
        .map_err(|e| unusable(&file, format!("not a node certificate: {e}")))?;
    if name != node_name {
        return Err(unusable(
            &file,
            format!("issued to node {name:?}, but the config names this node {node_name:?}"),
        ));
    }
    Ok(Some(chain))
}

/// Writes an issued chain, leaf first, atomically.
///
/// # Errors
/// The I/O error, with the path.
pub(crate) fn save_chain<C: AsRef<[u8]>>(data_dir: &Path, chain: &[C]) -> io::Result<PathBuf> {
    let blocks: Vec<pem::Pem> = chain
        .iter()
        .map(|der| pem::Pem::new(CERT_LABEL, der.as_ref()))
        .collect();
    let file = data_dir.join(CERT_FILE);
    write_atomic(&file, pem::encode_many(&blocks).as_bytes(), CERT_MODE)?;
    Ok(file)
}

/// The trust anchor named by `root_ca`: its first PEM certificate.
///
/// # Errors
/// A [`ConfigError`] on `root_ca` when it is unreadable or not a certificate.
pub(crate) fn read_root(config: &NodeConfig) -> Result<CertificateDer<'static>, ConfigError> {
    let fail = |reason: String| ConfigError {
        file: config.file.clone(),
        key: "root_ca".to_owned(),
        reason: format!("{}: {reason}", config.root_ca.display()),
    };
    let text = fs::read(&config.root_ca).map_err(|e| fail(format!("cannot be read: {e}")))?;
    let blocks = pem::parse_many(&text).map_err(|e| fail(format!("not PEM: {e}")))?;
    let root = blocks
        .into_iter()
        .find(|b| b.tag() == CERT_LABEL)
        .ok_or_else(|| fail(format!("holds no {CERT_LABEL:?}")))?;
    pki::ed25519_public_key(root.contents())
        .map_err(|e| fail(format!("not a Transitloom root certificate: {e}")))?;
    Ok(CertificateDer::from(root.into_contents()))
}

/// How the node authenticates: its kept certificate, or a join token and
/// a CSR when it has none yet. The second value is true when enrolled.
///
/// # Errors
/// Unusable identity files, or no certificate and no join token.
pub(crate) fn credentials(config: &NodeConfig) -> Result<(Credentials, bool), DaemonError> {
    let key = load_or_create_key(&config.data_dir)?;
    match load_chain(&config.data_dir, &key, &config.name)? {
        Some(chain) => {
            if config.join_token.is_some() {
                tracing::info!(
                    "join_token is ignored: the node is enrolled already (it may be removed from the config)"
                );
            }
            let identity = TlsIdentity {
                chain: chain.into_iter().map(CertificateDer::from).collect(),
                key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
            };
            Ok((Credentials::Enrolled(identity), true))
        }
        None => {
            let Some(join_token) = config.join_token.clone() else {
                return Err(DaemonError::Config(ConfigError {
                    file: config.file.clone(),
                    key: "join_token".to_owned(),
                    reason: "data_dir has no certificate and the config has no join_token"
                        .to_owned(),
                }));
            };
            let csr_der = pki::node_csr(&key)
                .map_err(|e| unusable(&config.data_dir.join(KEY_FILE), e.to_string()))?;
            Ok((
                Credentials::Enroll {
                    join_token,
                    key_pkcs8: key,
                    csr_der,
                },
                false,
            ))
        }
    }
}
