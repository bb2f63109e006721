//! The coordinator's certificates and keys, loaded from `pki_dir` and
//! `root_ca` and checked against each other before anything starts, so that
//! a mismatch is a configuration error naming the key instead of handshakes
//! that fail later on every node.

use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use transitloom_proto_core::control::tls_config::{
    server_config, ClientAuth, TlsConfigError, TlsIdentity,
};
use transitloom_proto_core::control::token::TokenVerifier;
use transitloom_proto_core::pki::{self, Role};
use transitloom_runtime_mio::config::ConfigError;

use super::config::CoordinatorSettings;
use crate::pki_files::{
    read_cert, read_key, INTERMEDIATE_CERT, INTERMEDIATE_KEY, SERVER_CERT, SERVER_KEY,
};

/// The coordinator's PKI material, checked.
#[derive(Clone)]
pub struct CoordinatorPki {
    /// The trust anchor (DER).
    pub root: Vec<u8>,
    /// The intermediate CA certificate (DER): signs node certificates.
    pub intermediate: Vec<u8>,
    /// Its key (PKCS#8): also signs admission tokens.
    pub intermediate_key: Vec<u8>,
    /// The TLS server certificate (DER).
    pub server: Vec<u8>,
    /// Its key (PKCS#8).
    pub server_key: Vec<u8>,
}

impl std::fmt::Debug for CoordinatorPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex = |der: &[u8]| crate::root_authority::fingerprint_hex(&pki::cert_fingerprint(der));
        f.debug_struct("CoordinatorPki")
            .field("root_sha256", &hex(&self.root))
            .field("intermediate_sha256", &hex(&self.intermediate))
            .field("server_sha256", &hex(&self.server))
            .finish_non_exhaustive()
    }
}

impl CoordinatorPki {
    /// Reads `root_ca` and the files of `pki_dir`, and checks that the keys
    /// belong to the certificates, that the server certificate names the
    /// coordinator `name`, and that it chains through the intermediate to
    /// `root_ca`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `root_ca`, `pki_dir` or `name`.
    pub fn load(settings: &CoordinatorSettings) -> Result<Self, ConfigError> {
        let root =
            read_cert(&settings.root_ca).map_err(|e| settings.error("root_ca", e.to_string()))?;
        let in_dir = |name: &str| settings.pki_dir.join(name);
        let pki_error =
            |e: crate::pki_files::PkiFileError| settings.error("pki_dir", e.to_string());
        let loaded = Self {
            root,
            intermediate: read_cert(&in_dir(INTERMEDIATE_CERT)).map_err(pki_error)?,
            intermediate_key: read_key(&in_dir(INTERMEDIATE_KEY)).map_err(pki_error)?,
            server: read_cert(&in_dir(SERVER_CERT)).map_err(pki_error)?,
            server_key: read_key(&in_dir(SERVER_KEY)).map_err(pki_error)?,
        };
        loaded.check(settings)?;
        Ok(loaded)
    }

    fn check(&self, settings: &CoordinatorSettings) -> Result<(), ConfigError> {
        let in_dir = |name: &str| settings.pki_dir.join(name).display().to_string();
        let inter_public = pki::ed25519_public_key(&self.intermediate).map_err(|e| {
            settings.error("pki_dir", format!("{}: {e}", in_dir(INTERMEDIATE_CERT)))
        })?;
        let key_public = pki::ed25519_key_pair(&self.intermediate_key)
            .map(|pair| pair.public_key_raw().to_vec())
            .map_err(|e| settings.error("pki_dir", format!("{}: {e}", in_dir(INTERMEDIATE_KEY))))?;
        if key_public != inter_public {
            return Err(settings.error(
                "pki_dir",
                format!(
                    "{} does not belong to {}",
                    in_dir(INTERMEDIATE_KEY),
                    in_dir(INTERMEDIATE_CERT)
                ),
            ));
        }
        let named = pki::role_name_of(&self.server, Role::Coordinator)
            .map_err(|e| settings.error("pki_dir", format!("{}: {e}", in_dir(SERVER_CERT))))?;
        if named != settings.name {
            return Err(settings.error(
                "name",
                format!(
                    "{:?} differs from the name in {} ({named:?}); set name = {named:?} \
                     or issue certificates with `tlctl pki issue-coordinator --name {}`",
                    settings.name,
                    in_dir(SERVER_CERT),
                    settings.name
                ),
            ));
        }
        self.verify_chain(&settings.name).map_err(|reason| {
            settings.error(
                "root_ca",
                format!(
                    "{} does not verify through {} to {}: {reason}",
                    in_dir(SERVER_CERT),
                    in_dir(INTERMEDIATE_CERT),
                    settings.root_ca.display()
                ),
            )
        })?;
        // Catches a server key that does not match its certificate.
        self.tls()
            .map_err(|e| settings.error("pki_dir", e.to_string()))?;
        Ok(())
    }

    /// Verifies the server certificate as a node would: through the
    /// intermediate to the root, for the server name `name`.
    fn verify_chain(&self, name: &str) -> Result<(), String> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.root.clone()))
            .map_err(|e| e.to_string())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| e.to_string())?;
        let server_name = ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
        verifier
            .verify_server_cert(
                &CertificateDer::from(self.server.clone()),
                &[CertificateDer::from(self.intermediate.clone())],
                &server_name,
                &[],
                UnixTime::now(),
            )
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The TLS server configuration: presents server.crt with the
    /// intermediate, and accepts clients without a certificate (they may
    /// only enroll) or with one that chains to the root.
    ///
    /// # Errors
    /// When the server key does not match its certificate.
    pub fn tls(&self) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
        let identity = TlsIdentity {
            chain: vec![
                CertificateDer::from(self.server.clone()),
                CertificateDer::from(self.intermediate.clone()),
            ],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone())),
        };
        server_config(
            &CertificateDer::from(self.root.clone()),
            identity,
            ClientAuth::Optional,
        )
    }

    /// Trusts this coordinator's own tokens (issuer `name`).
    ///
    /// # Errors
    /// When the intermediate certificate has no Ed25519 key (checked at load).
    pub fn token_verifier(&self, name: &str) -> Result<TokenVerifier, pki::PkiError> {
        let mut verifier = TokenVerifier::new();
        verifier.trust(name, pki::ed25519_public_key(&self.intermediate)?);
        Ok(verifier)
    }
}
