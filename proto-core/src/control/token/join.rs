//! One-time join tokens: `tlj1-<node name>-<32 lowercase hex digits>`.
//!
//! `tlctl node invite NAME` prints one; the node presents it once, with its
//! certificate signing request, to enroll. The 16 secret bytes come from the
//! coordinator's [`Drbg`]; the coordinator keeps only [`JoinToken::digest`]
//! (SHA-256 of the secret) and an expiry, so its database and operation log
//! never hold a usable token. The node name in the token says which invite
//! the secret is for.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use super::signer::constant_time_eq;
use crate::csprng::Drbg;
use crate::pki::naming::{self, NameError};

/// The prefix and version of the string form.
pub const JOIN_TOKEN_PREFIX: &str = "tlj1";
/// Bytes of secret in a join token.
pub const JOIN_SECRET_LEN: usize = 16;
/// A sensible default for how long an invite stays usable: one day.
pub const DEFAULT_JOIN_LIFETIME_S: u64 = 86_400;

/// Why a string is not a join token.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum JoinTokenError {
    /// It does not start with `tlj1-`.
    #[error("a join token starts with `{JOIN_TOKEN_PREFIX}-` (format: {JOIN_TOKEN_PREFIX}-<node name>-<32 hex digits>)")]
    MissingPrefix,
    /// No `-` separates the name from the secret.
    #[error("the join token has no secret after the node name (format: {JOIN_TOKEN_PREFIX}-<node name>-<32 hex digits>)")]
    MissingSecret,
    /// The secret is not 32 lowercase hex digits.
    #[error("the join token's secret must be 32 lowercase hex digits")]
    BadSecret,
    /// The node name breaks the naming rules.
    #[error("the join token's node name {name:?} is invalid: {source}")]
    BadName {
        /// The name as found.
        name: String,
        /// The rule it breaks.
        source: NameError,
    },
}

/// A one-time join token for one node. Its `Debug` form hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    node: String,
    secret: [u8; JOIN_SECRET_LEN],
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl JoinToken {
    /// A fresh token for `node`, its secret drawn from `drbg`.
    ///
    /// # Errors
    /// [`JoinTokenError::BadName`] when `node` is not a valid node name.
    pub fn generate(drbg: &mut Drbg, node: &str) -> Result<Self, JoinTokenError> {
        check_name(node)?;
        let mut secret = [0u8; JOIN_SECRET_LEN];
        drbg.fill(&mut secret);
        Ok(Self {
            node: node.to_owned(),
            secret,
        })
    }

    /// The node the token is for.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// SHA-256 of the secret: all the coordinator stores.
    pub fn digest(&self) -> [u8; 32] {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.secret);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        out
    }

    /// True when this token's secret has `digest`, compared in constant time.
    pub fn matches(&self, digest: &[u8; 32]) -> bool {
        constant_time_eq(&self.digest(), digest)
    }
}

fn check_name(node: &str) -> Result<(), JoinTokenError> {
    naming::validate_node_name(node).map_err(|source| JoinTokenError::BadName {
        name: node.to_owned(),
        source,
    })
}

/// The string form, `tlj1-<node>-<hex secret>`; treat it as a password.
impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{JOIN_TOKEN_PREFIX}-{}-", self.node)?;
        self.secret.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl FromStr for JoinToken {
    type Err = JoinTokenError;

    /// Parses the string form; surrounding whitespace (as from a pasted
    /// line) is ignored.
    fn from_str(s: &str) -> Result<Self, JoinTokenError> {
        let rest = s
            .trim()
            .strip_prefix(JOIN_TOKEN_PREFIX)
            .and_then(|rest| rest.strip_prefix('-'))
            .ok_or(JoinTokenError::MissingPrefix)?;
        let (node, hex) = rest.rsplit_once('-').ok_or(JoinTokenError::MissingSecret)?;
        check_name(node)?;
        if hex.len() != 2 * JOIN_SECRET_LEN {
            return Err(JoinTokenError::BadSecret);
        }
        let mut secret = [0u8; JOIN_SECRET_LEN];
        for (byte, pair) in secret.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        Ok(Self {
            node: node.to_owned(),
            secret,
        })
    }
}

fn nibble(digit: u8) -> Result<u8, JoinTokenError> {
    match digit {
        b'0'..=b'9' => Ok(digit - b'0'),
        b'a'..=b'f' => Ok(digit - b'a' + 10),
        _ => Err(JoinTokenError::BadSecret),
    }
}
