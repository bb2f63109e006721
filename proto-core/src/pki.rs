//! The pure parts of the mesh's private PKI (DESIGN §4): certificate
//! profiles, signing with keys the caller supplies, and reading the few
//! fields the control plane needs from a certificate. Nothing here reads a
//! clock, touches a file or generates a key; `tlctl` and the coordinator
//! bring the time, the serial (from a [`Drbg`](crate::csprng::Drbg)) and the
//! keys.
//!
//! ```text
//! root CA (tlctl pki init-root, offline)
//! ├── coordinator intermediate CA (path length 0, name-constrained)
//! │   ├── coordinator server certificate   server auth
//! │   └── node certificates                client auth (sign_node_csr)
//! └── admin certificates                   client auth
//! ```
//!
//! Every key is Ed25519; the role of a certificate is in its DNS subject
//! alternative name ([`naming`]). The intermediate's name constraints permit
//! only `node.transitloom` and the coordinator's own names, so a coordinator
//! (or a stolen intermediate key) can mint node identities but never an
//! admin or another coordinator.

mod der;
mod issue;
pub mod naming;
#[cfg(test)]
mod tests;

use rcgen::{KeyPair, PKCS_ED25519};
use rustls_pki_types::PrivatePkcs8KeyDer;
use thiserror::Error;

pub use issue::{
    csr_public_key, self_signed_root, sign_admin, sign_coordinator_intermediate,
    sign_coordinator_server, sign_node, sign_node_csr, sign_node_csr_for, CertTerms,
    Ed25519PublicKey, MAX_VALIDITY_DAYS, SERIAL_LEN,
};
pub use naming::NameError;

/// A failure to issue a certificate or to read one.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PkiError {
    /// The certificate signing request cannot be parsed or its signature
    /// does not verify.
    #[error("the certificate signing request is invalid: {0}")]
    InvalidCsr(String),
    /// The certificate signing request is for a key other than Ed25519.
    #[error(
        "the certificate signing request's key is not Ed25519 (only Ed25519 keys are accepted)"
    )]
    CsrKeyNotEd25519,
    /// A name breaks the naming rules.
    #[error("invalid name {name:?}: {source}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// The rule it breaks.
        source: NameError,
    },
    /// The issuer's private key is not an Ed25519 PKCS#8 key.
    #[error("the issuer key is not an Ed25519 PKCS#8 private key: {0}")]
    InvalidIssuerKey(String),
    /// The issuer's certificate cannot be used to issue.
    #[error("the issuer certificate is unusable: {0}")]
    InvalidIssuerCert(String),
    /// The issuer's private key does not match its certificate.
    #[error("the issuer key does not belong to the issuer certificate")]
    IssuerKeyMismatch,
    /// The requested validity cannot be encoded.
    #[error("invalid validity: {0}")]
    InvalidValidity(&'static str),
    /// rcgen refused to build or sign the certificate.
    #[error("signing the certificate failed: {0}")]
    Signing(String),
    /// The bytes are not a DER certificate.
    #[error("the certificate is malformed: {0}")]
    MalformedCertificate(&'static str),
    /// The certificate's key is not Ed25519.
    #[error("the certificate's key is not Ed25519")]
    NotEd25519,
    /// The certificate has no identity of the wanted role.
    #[error("the certificate carries no {role} identity (no DNS name `NAME.{domain}`)")]
    NoIdentity {
        /// The role looked for.
        role: Role,
        /// Its domain.
        domain: &'static str,
    },
    /// The certificate names more than one identity of the role, or its
    /// common name disagrees with its identity.
    #[error("the certificate's {role} identity is ambiguous: {detail}")]
    AmbiguousIdentity {
        /// The role looked for.
        role: Role,
        /// What disagrees.
        detail: String,
    },
}

/// The role a certificate's identity names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Role {
    /// A mesh node (client auth, signed by a coordinator intermediate).
    Node,
    /// A coordinator's server certificate (signed by its intermediate).
    Coordinator,
    /// An administrator (client auth, signed by the root).
    Admin,
}

impl Role {
    /// The DNS domain under which this role's names live.
    pub fn domain(self) -> &'static str {
        match self {
            Self::Node => naming::NODE_DOMAIN,
            Self::Coordinator => naming::COORDINATOR_DOMAIN,
            Self::Admin => naming::ADMIN_DOMAIN,
        }
    }

    fn validate(self, name: &str) -> Result<(), NameError> {
        match self {
            Self::Node => naming::validate_node_name(name),
            Self::Coordinator => naming::validate_coordinator_name(name),
            Self::Admin => naming::validate_admin_name(name),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Node => "node",
            Self::Coordinator => "coordinator",
            Self::Admin => "admin",
        })
    }
}

/// SHA-256 of a certificate's DER bytes: what an admission token binds.
pub fn cert_fingerprint(der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The raw Ed25519 public key of a certificate: for a coordinator
/// intermediate, the key that [`TokenVerifier`](crate::control::token::TokenVerifier)
/// trusts.
///
/// # Errors
/// [`PkiError::MalformedCertificate`] for bytes that are not a certificate,
/// [`PkiError::NotEd25519`] for another key type.
pub fn ed25519_public_key(cert_der: &[u8]) -> Result<[u8; 32], PkiError> {
    der::CertView::parse(cert_der)?.ed25519_public_key()
}

/// When a certificate's validity starts and ends, in seconds since the
/// Unix epoch (`notBefore`, `notAfter`). It does not check the chain: a
/// node reads its own certificate to know when to renew it.
///
/// # Errors
/// [`PkiError::MalformedCertificate`] for bytes that are not a certificate
/// or a validity time that is not UTCTime or GeneralizedTime.
pub fn validity(cert_der: &[u8]) -> Result<(i64, i64), PkiError> {
    der::CertView::parse(cert_der)?.validity()
}

/// The identity of `role` a certificate carries: the one DNS SAN
/// `NAME.<role domain>`, whose `NAME` must also be the subject's common
/// name. It does not check the chain; call it on a certificate that webpki
/// has verified.
///
/// # Errors
/// A malformed certificate, no identity of that role, an identity that
/// breaks the naming rules, several identities, or a common name that
/// disagrees.
pub fn role_name_of(cert_der: &[u8], role: Role) -> Result<String, PkiError> {
    let view = der::CertView::parse(cert_der)?;
    let domain = role.domain();
    let mut names = view
        .dns_names()?
        .into_iter()
        .filter_map(|dns| naming::name_under(dns, domain));
    let name = names.next().ok_or(PkiError::NoIdentity { role, domain })?;
    if let Some(other) = names.next() {
        return Err(PkiError::AmbiguousIdentity {
            role,
            detail: format!("both {name:?} and {other:?}"),
        });
    }
    role.validate(name)
        .map_err(|source| PkiError::InvalidName {
            name: name.to_owned(),
            source,
        })?;
    match view.common_name()? {
        Some(cn) if cn == name => Ok(name.to_owned()),
        cn => Err(PkiError::AmbiguousIdentity {
            role,
            detail: format!("common name {cn:?} differs from {name:?}"),
        }),
    }
}

/// The node name of a node certificate (see [`role_name_of`]).
///
/// # Errors
/// As [`role_name_of`].
pub fn node_name_of(cert_der: &[u8]) -> Result<String, PkiError> {
    role_name_of(cert_der, Role::Node)
}

/// The admin name of an admin certificate (see [`role_name_of`]).
///
/// # Errors
/// As [`role_name_of`].
pub fn admin_name_of(cert_der: &[u8]) -> Result<String, PkiError> {
    role_name_of(cert_der, Role::Admin)
}

/// An Ed25519 private key in PKCS#8 (v1, RFC 8410) form, from its 32-byte
/// seed. With a seed drawn from a [`Drbg`](crate::csprng::Drbg) this gives
/// the simulator and tests reproducible keys without OS randomness.
pub fn ed25519_pkcs8_from_seed(seed: &[u8; 32]) -> Vec<u8> {
    const PREFIX: [u8; 16] = [
        0x30, 0x2E, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let mut der = Vec::with_capacity(PREFIX.len() + seed.len());
    der.extend_from_slice(&PREFIX);
    der.extend_from_slice(seed);
    der
}

/// Loads an Ed25519 PKCS#8 private key (v1 or v2) for signing.
///
/// # Errors
/// [`PkiError::InvalidIssuerKey`] when it is not one.
pub fn ed25519_key_pair(pkcs8: &[u8]) -> Result<KeyPair, PkiError> {
    KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(pkcs8), &PKCS_ED25519)
        .map_err(|e| PkiError::InvalidIssuerKey(e.to_string()))
}

/// A certificate signing request for the node key `key_pkcs8` (Ed25519
/// signing is deterministic, so this needs no randomness). The coordinator
/// takes only the key from it; names come from the join token.
///
/// # Errors
/// [`PkiError`] when the key is not a usable Ed25519 key.
pub fn node_csr(key_pkcs8: &[u8]) -> Result<Vec<u8>, PkiError> {
    let key = ed25519_key_pair(key_pkcs8)?;
    let params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| PkiError::Signing(e.to_string()))?;
    let csr = params
        .serialize_request(&key)
        .map_err(|e| PkiError::Signing(e.to_string()))?;
    Ok(csr.der().to_vec())
}
