//! Admission tokens and join tokens (DESIGN §4).
//!
//! An **admission token** is a coordinator's signed statement that a node
//! (by id and name) holding a given certificate is admitted at an admission
//! epoch, for a short time. A control session needs a valid certificate
//! *and* a valid token. Tokens are signed with the Ed25519 key of the
//! issuing coordinator's intermediate CA, so every coordinator under the
//! same root verifies them with the intermediates' public keys
//! ([`TokenVerifier::trust`], keys from [`crate::pki::ed25519_public_key`]).
//!
//! The encoding is compact, versioned and big-endian; the signature covers
//! a domain-separation context followed by every byte before it:
//!
//! ```text
//!  0   1         9            41       49       57        65  66     66+n 67+n      67+n+m      +64
//!  | v | node id | cert SHA-256 | epoch  | issued | expires | n | node | m | issuer   | Ed25519 sig |
//! ```
//!
//! `v` is [`TOKEN_VERSION`]; times are Unix seconds; `node` is a node name
//! and `issuer` a coordinator name ([`crate::pki::naming`]), so a token is
//! at most [`MAX_TOKEN_LEN`] bytes. Parsing checks every length first and
//! cannot panic.
//!
//! A **join token** ([`JoinToken`]) is the one-time secret `tlctl node
//! invite` prints, as `tlj1-<node name>-<32 lowercase hex digits>`. The
//! coordinator keeps only its [`JoinToken::digest`] and an expiry.

mod claims;
mod join;
mod signer;
#[cfg(test)]
mod tests;

use thiserror::Error;

use crate::pki::NameError;

pub use claims::{refresh_at, AdmissionClaims, DEFAULT_LIFETIME_S, MAX_TOKEN_LEN, TOKEN_VERSION};
pub use join::{
    JoinToken, JoinTokenError, DEFAULT_JOIN_LIFETIME_S, JOIN_SECRET_LEN, JOIN_TOKEN_PREFIX,
};
pub use signer::{TokenSigner, TokenVerifier, MAX_CLOCK_SKEW_S};

/// Why an admission token was refused, or could not be made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The bytes are not an admission token of a version this build reads.
    #[error("malformed admission token: {0}")]
    Malformed(&'static str),
    /// No trusted key for the issuer the token names.
    #[error("admission token from an unknown issuer {0:?}")]
    UnknownIssuer(String),
    /// The signature does not verify under any key of the issuer.
    #[error("admission token signature does not verify")]
    BadSignature,
    /// The token's lifetime is over.
    #[error("admission token expired at {expires_unix_s} (now {now_unix_s})")]
    Expired {
        /// When it expired.
        expires_unix_s: u64,
        /// The verifier's time.
        now_unix_s: u64,
    },
    /// The token was issued in the future, beyond the allowed clock skew.
    #[error("admission token is issued at {issued_unix_s}, after now ({now_unix_s}) plus the allowed skew")]
    NotYetValid {
        /// When it claims to be issued.
        issued_unix_s: u64,
        /// The verifier's time.
        now_unix_s: u64,
    },
    /// The token was issued to another node.
    #[error("admission token is for node {found}, not {expected}")]
    WrongNode {
        /// The node the session belongs to.
        expected: u64,
        /// The node the token names.
        found: u64,
    },
    /// The token binds another certificate than the session's.
    #[error("admission token is bound to another certificate")]
    WrongCertificate,
    /// The signing key is not an Ed25519 PKCS#8 key.
    #[error("the token signing key is not an Ed25519 PKCS#8 key: {0}")]
    InvalidKey(String),
    /// A name in the claims breaks the naming rules.
    #[error("invalid {field} name {name:?} in admission claims: {source}")]
    InvalidName {
        /// `node` or `issuer`.
        field: &'static str,
        /// The name as given.
        name: String,
        /// The rule it breaks.
        source: NameError,
    },
    /// The claims cannot be signed as they are.
    #[error("admission claims cannot be signed: {0}")]
    InvalidClaims(&'static str),
}
