//! Signing admission tokens with a coordinator intermediate's key, and
//! verifying them with the keys of every intermediate under the root.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

use super::claims::{split, AdmissionClaims, SIGNATURE_LEN, SIGNING_CONTEXT};
use super::TokenError;
use crate::pki::naming;

/// How far in the future a token's issue time may lie, for clocks that
/// disagree a little.
pub const MAX_CLOCK_SKEW_S: u64 = 60;

fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGNING_CONTEXT.len() + body.len());
    message.extend_from_slice(SIGNING_CONTEXT);
    message.extend_from_slice(body);
    message
}

/// Signs admission tokens as one coordinator.
pub struct TokenSigner {
    key: Ed25519KeyPair,
    issuer: String,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("issuer", &self.issuer)
            .field("public_key", &self.key.public_key())
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// A signer with the intermediate's Ed25519 private key (PKCS#8 v1 or
    /// v2 DER, as in `intermediate.key`) for the coordinator `issuer`.
    ///
    /// # Errors
    /// [`TokenError::InvalidKey`] for a key that is not Ed25519 PKCS#8,
    /// [`TokenError::InvalidName`] for a bad coordinator name.
    pub fn from_pkcs8(der: &[u8], issuer: &str) -> Result<Self, TokenError> {
        naming::validate_coordinator_name(issuer).map_err(|source| TokenError::InvalidName {
            field: "issuer",
            name: issuer.to_owned(),
            source,
        })?;
        let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| TokenError::InvalidKey(e.to_string()))?;
        Ok(Self {
            key,
            issuer: issuer.to_owned(),
        })
    }

    /// The coordinator name tokens are issued under.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The public key verifiers must trust for [`Self::issuer`].
    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.key.public_key().as_ref());
        out
    }

    /// Claims from this issuer, issued now, with the default lifetime.
    pub fn claims(
        &self,
        node_id: u64,
        node: &str,
        cert_fingerprint: [u8; 32],
        admission_epoch: u64,
        now_unix_s: u64,
    ) -> AdmissionClaims {
        AdmissionClaims::new(
            node_id,
            node,
            cert_fingerprint,
            admission_epoch,
            now_unix_s,
            &self.issuer,
        )
    }

    /// The signed token for `claims` (at most
    /// [`MAX_TOKEN_LEN`](super::MAX_TOKEN_LEN) bytes).
    ///
    /// # Errors
    /// [`TokenError::InvalidName`] for a bad node name,
    /// [`TokenError::InvalidClaims`] when the claims name another issuer or
    /// expire before they are issued. Nothing is signed then.
    pub fn sign(&self, claims: &AdmissionClaims) -> Result<Bytes, TokenError> {
        claims.check()?;
        if claims.issuer != self.issuer {
            return Err(TokenError::InvalidClaims(
                "the claims name another issuer than the signer",
            ));
        }
        let mut out = BytesMut::with_capacity(claims.body_len() + SIGNATURE_LEN);
        claims.emit_body(&mut out);
        let signature = self.key.sign(&signed_message(&out));
        out.extend_from_slice(signature.as_ref());
        Ok(out.freeze())
    }
}

/// Verifies admission tokens against the intermediates of one root.
#[derive(Debug, Clone, Default)]
pub struct TokenVerifier {
    keys: BTreeMap<String, Vec<[u8; 32]>>,
}

impl TokenVerifier {
    /// A verifier that trusts nobody yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts `public_key` (an intermediate's, from
    /// [`crate::pki::ed25519_public_key`]) for tokens naming `issuer`. An
    /// issuer may have several keys, as while its intermediate is replaced.
    pub fn trust(&mut self, issuer: &str, public_key: [u8; 32]) {
        let keys = self.keys.entry(issuer.to_owned()).or_default();
        if !keys.contains(&public_key) {
            keys.push(public_key);
        }
    }

    /// Stops trusting every key of `issuer`.
    pub fn distrust(&mut self, issuer: &str) {
        self.keys.remove(issuer);
    }

    /// The claims of `token` if it is authentic, current, and issued to
    /// `expected_node` holding the certificate whose SHA-256 is
    /// `expected_fingerprint`. The admission epoch is the caller's to
    /// compare with its registry.
    ///
    /// The checks run in this order, and the first failure is returned:
    /// framing, issuer, signature, expiry, issue time (with
    /// [`MAX_CLOCK_SKEW_S`] of slack), node, certificate.
    ///
    /// # Errors
    /// One [`TokenError`] variant per failed check; any input is safe.
    pub fn verify(
        &self,
        token: &[u8],
        now_unix_s: u64,
        expected_fingerprint: &[u8; 32],
        expected_node: u64,
    ) -> Result<AdmissionClaims, TokenError> {
        let (claims, body, signature) = split(token)?;
        let keys = self
            .keys
            .get(&claims.issuer)
            .ok_or_else(|| TokenError::UnknownIssuer(claims.issuer.clone()))?;
        let message = signed_message(body);
        let authentic = keys.iter().any(|key| {
            UnparsedPublicKey::new(&ED25519, key)
                .verify(&message, signature)
                .is_ok()
        });
        if !authentic {
            return Err(TokenError::BadSignature);
        }
        if now_unix_s >= claims.expires_unix_s {
            return Err(TokenError::Expired {
                expires_unix_s: claims.expires_unix_s,
                now_unix_s,
            });
        }
        if claims.issued_unix_s > now_unix_s.saturating_add(MAX_CLOCK_SKEW_S) {
            return Err(TokenError::NotYetValid {
                issued_unix_s: claims.issued_unix_s,
                now_unix_s,
            });
        }
        if claims.node_id != expected_node {
            return Err(TokenError::WrongNode {
                expected: expected_node,
                found: claims.node_id,
            });
        }
        if !constant_time_eq(&claims.cert_fingerprint, expected_fingerprint) {
            return Err(TokenError::WrongCertificate);
        }
        Ok(claims)
    }
}

pub(super) fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}
