//! [`AdmissionClaims`] and their encoding.

use bytes::{BufMut, BytesMut};

use super::TokenError;
use crate::pki::naming;

/// The only token version this build writes and reads.
pub const TOKEN_VERSION: u8 = 1;
/// Default lifetime of an admission token: ten minutes (DESIGN §4).
pub const DEFAULT_LIFETIME_S: u64 = 600;
/// Bytes of the Ed25519 signature that ends a token.
pub(super) const SIGNATURE_LEN: usize = 64;
/// Bytes before the node name: version, id, fingerprint, three times, n.
const FIXED_LEN: usize = 1 + 8 + 32 + 8 + 8 + 8 + 1;
/// The longest token: both names at their longest.
pub const MAX_TOKEN_LEN: usize =
    FIXED_LEN + naming::MAX_NODE_NAME_LEN + 1 + naming::MAX_COORDINATOR_NAME_LEN + SIGNATURE_LEN;
const _: () = assert!(MAX_TOKEN_LEN <= 512, "DESIGN: tokens stay under 512 bytes");

/// Prefixed to the signed bytes, so a signature over a token can never be
/// taken for one over anything else the intermediate key signs.
pub(super) const SIGNING_CONTEXT: &[u8] = b"transitloom admission token\0";

/// What an admission token states.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AdmissionClaims {
    /// The node's id, as numbered by the coordinator.
    pub node_id: u64,
    /// The node's name (a DNS label, see [`crate::pki::naming`]).
    pub node: String,
    /// SHA-256 of the node certificate's DER ([`crate::pki::cert_fingerprint`]).
    pub cert_fingerprint: [u8; 32],
    /// The node's admission epoch: bumped by every readmission, so tokens of
    /// an earlier admission are recognisably stale.
    pub admission_epoch: u64,
    /// When the token was issued, Unix seconds.
    pub issued_unix_s: u64,
    /// When the token stops being valid, Unix seconds.
    pub expires_unix_s: u64,
    /// The issuing coordinator's name.
    pub issuer: String,
}

/// When a holder should refresh its token: half way through its lifetime.
pub fn refresh_at(claims: &AdmissionClaims) -> u64 {
    let lifetime = claims.expires_unix_s.saturating_sub(claims.issued_unix_s);
    claims.issued_unix_s.saturating_add(lifetime / 2)
}

impl AdmissionClaims {
    /// Claims issued at `now_unix_s` with the [default lifetime](DEFAULT_LIFETIME_S).
    pub fn new(
        node_id: u64,
        node: &str,
        cert_fingerprint: [u8; 32],
        admission_epoch: u64,
        now_unix_s: u64,
        issuer: &str,
    ) -> Self {
        Self {
            node_id,
            node: node.to_owned(),
            cert_fingerprint,
            admission_epoch,
            issued_unix_s: now_unix_s,
            expires_unix_s: now_unix_s.saturating_add(DEFAULT_LIFETIME_S),
            issuer: issuer.to_owned(),
        }
    }

    /// When to refresh: see [`refresh_at`].
    pub fn refresh_at(&self) -> u64 {
        refresh_at(self)
    }

    /// Checks that the claims can be encoded.
    ///
    /// # Errors
    /// [`TokenError::InvalidName`] or [`TokenError::InvalidClaims`].
    pub(super) fn check(&self) -> Result<(), TokenError> {
        naming::validate_node_name(&self.node).map_err(|source| TokenError::InvalidName {
            field: "node",
            name: self.node.clone(),
            source,
        })?;
        naming::validate_coordinator_name(&self.issuer).map_err(|source| {
            TokenError::InvalidName {
                field: "issuer",
                name: self.issuer.clone(),
                source,
            }
        })?;
        if self.expires_unix_s <= self.issued_unix_s {
            return Err(TokenError::InvalidClaims("it expires before it is issued"));
        }
        Ok(())
    }

    /// Bytes of the signed part (everything before the signature).
    pub(super) fn body_len(&self) -> usize {
        FIXED_LEN + self.node.len() + 1 + self.issuer.len()
    }

    /// Writes the signed part; the claims must have passed [`Self::check`].
    pub(super) fn emit_body(&self, out: &mut BytesMut) {
        out.put_u8(TOKEN_VERSION);
        out.put_u64(self.node_id);
        out.put_slice(&self.cert_fingerprint);
        out.put_u64(self.admission_epoch);
        out.put_u64(self.issued_unix_s);
        out.put_u64(self.expires_unix_s);
        // Both names are at most 253 bytes once checked.
        out.put_u8(u8::try_from(self.node.len()).unwrap_or(u8::MAX));
        out.put_slice(self.node.as_bytes());
        out.put_u8(u8::try_from(self.issuer.len()).unwrap_or(u8::MAX));
        out.put_slice(self.issuer.as_bytes());
    }

    /// Reads the claims of a token **without verifying its signature**: for
    /// a node to learn when its own token expires, never to authorize.
    ///
    /// # Errors
    /// [`TokenError::Malformed`].
    pub fn parse_unverified(token: &[u8]) -> Result<Self, TokenError> {
        split(token).map(|(claims, _, _)| claims)
    }
}

/// Splits a token into its claims, signed bytes and signature, checking
/// every length before reading.
pub(super) fn split(token: &[u8]) -> Result<(AdmissionClaims, &[u8], &[u8]), TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed("longer than any token"));
    }
    let mut r = Cursor { rest: token };
    if r.take(1)?[0] != TOKEN_VERSION {
        return Err(TokenError::Malformed("unsupported version"));
    }
    let node_id = r.u64()?;
    let cert_fingerprint = r.array()?;
    let admission_epoch = r.u64()?;
    let issued_unix_s = r.u64()?;
    let expires_unix_s = r.u64()?;
    let node = r.name()?;
    let issuer = r.name()?;
    if r.rest.len() != SIGNATURE_LEN {
        return Err(TokenError::Malformed("the signature is not 64 bytes"));
    }
    let (body, signature) = token.split_at(token.len() - SIGNATURE_LEN);
    let claims = AdmissionClaims {
        node_id,
        node: node.to_owned(),
        cert_fingerprint,
        admission_epoch,
        issued_unix_s,
        expires_unix_s,
        issuer: issuer.to_owned(),
    };
    claims
        .check()
        .map_err(|_| TokenError::Malformed("invalid names or times"))?;
    Ok((claims, body, signature))
}

/// A checked reader: every read verifies the length first.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TokenError> {
        if self.rest.len() < n {
            return Err(TokenError::Malformed("truncated"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], TokenError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u64(&mut self) -> Result<u64, TokenError> {
        self.array().map(u64::from_be_bytes)
    }

    fn name(&mut self) -> Result<&'a str, TokenError> {
        let len = usize::from(self.take(1)?[0]);
        std::str::from_utf8(self.take(len)?)
            .map_err(|_| TokenError::Malformed("a name is not UTF-8"))
    }
}
