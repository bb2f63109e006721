//! Node certificates: issued at enrollment for a one-time join token, and
//! renewed before expiry for a node that holds a valid certificate and an
//! admission token. Any coordinator of the root issues with its own
//! intermediate; the registry records the fingerprint either way, through
//! the operation log, so every coordinator replaying it accepts the new
//! certificate.

use std::time::Instant;

use bytes::Bytes;

use super::{now_unix_s, Coordinator, Peer, Session, Waiting};
use crate::control::msg::RejectCode;
use crate::control::token::JoinToken;
use crate::control::transport::SessionId;
use crate::coordinator::registry::{Op, RegistryError};
use crate::pki;

/// Node certificates are valid this long unless configured otherwise:
/// 90 days, renewed after about 60.
pub const DEFAULT_NODE_CERT_LIFETIME_S: u64 = 90 * 86_400;
/// The shortest node certificate lifetime (tests and cautious operators).
pub const MIN_NODE_CERT_LIFETIME_S: u64 = 60;
/// The longest node certificate lifetime: ten years.
pub const MAX_NODE_CERT_LIFETIME_S: u64 = 3_650 * 86_400;

/// A certificate starts this long before it is issued, for node clocks a
/// little behind the coordinator's: five minutes, or a tenth of a short
/// lifetime.
const MAX_BACKDATE_S: u64 = 300;

/// A renewal is refused until the presented certificate has run this share
/// of its validity (nodes renew at two thirds): a node cannot make the
/// coordinator write to its log at will.
const EARLIEST_RENEWAL: (i64, i64) = (1, 2);

/// What renewal checks of a session's certificate, read once when the
/// session connects (after webpki verified it).
#[derive(Debug, Clone, Copy)]
pub(super) struct LeafFacts {
    /// Its Ed25519 key.
    key: Option<[u8; 32]>,
    /// `notBefore`, `notAfter` (Unix seconds).
    validity: Option<(i64, i64)>,
}

impl LeafFacts {
    pub(super) fn of(leaf: &[u8]) -> Self {
        Self {
            key: pki::ed25519_public_key(leaf).ok(),
            validity: pki::validity(leaf).ok(),
        }
    }
}

impl Coordinator {
    /// Signs `csr` for `node` with this coordinator's intermediate, valid
    /// for the configured lifetime from now (backdated a little); returns
    /// the chain to send and the leaf's fingerprint.
    fn issue(
        &mut self,
        unix_s: u64,
        node: &str,
        csr: &[u8],
    ) -> Result<(Vec<Bytes>, [u8; 32]), pki::PkiError> {
        let mut serial = [0u8; pki::SERIAL_LEN];
        self.drbg.fill(&mut serial);
        let backdate = MAX_BACKDATE_S.min(self.node_cert_lifetime_s / 10);
        let not_before = unix_s.saturating_sub(backdate);
        let cert = pki::sign_node_csr_for(
            &self.config.intermediate_der,
            &self.config.intermediate_key,
            csr,
            node,
            i64::try_from(not_before).unwrap_or(i64::MAX),
            self.node_cert_lifetime_s + (unix_s - not_before),
            serial,
        )?;
        let fingerprint = pki::cert_fingerprint(&cert);
        let chain = vec![
            Bytes::from(cert),
            Bytes::from(self.config.intermediate_der.clone()),
        ];
        Ok((chain, fingerprint))
    }

    pub(super) fn enroll(&mut self, now: Instant, conn: SessionId, join_token: &str, csr: &[u8]) {
        let token: JoinToken = match join_token.parse() {
            Ok(token) => token,
            Err(err) => {
                return self.refuse(now, conn, RejectCode::JoinTokenInvalid, err.to_string())
            }
        };
        let node = token.node().to_owned();
        if !self.registry.invite_matches(&node, &token.digest()) {
            return self.refuse(
                now,
                conn,
                RejectCode::JoinTokenInvalid,
                format!("no invitation for {node} matches"),
            );
        }
        let unix = now_unix_s(&self.config.wall_clock, now);
        let (chain, fingerprint) = match self.issue(unix, &node, csr) {
            Ok(issued) => issued,
            Err(err) => {
                return self.refuse(
                    now,
                    conn,
                    RejectCode::Malformed,
                    format!("certificate request: {err}"),
                )
            }
        };
        let op = Op::Enroll {
            node: node.clone(),
            fingerprint,
            at_unix_s: unix,
        };
        if let Err(err) = self.check_after_pending(&op, unix) {
            let code = match err {
                RegistryError::JoinTokenUsed(_) => RejectCode::JoinTokenUsed,
                RegistryError::JoinTokenExpired(_) => RejectCode::JoinTokenExpired,
                _ => RejectCode::JoinTokenInvalid,
            };
            return self.refuse(now, conn, code, err.to_string());
        }
        self.append(op, Waiting::Enroll { conn, chain });
    }

    /// A node asks for a new certificate for the key it holds: it must be
    /// admitted, hold its current (or previous) certificate, have said hello
    /// with a valid token in this session, and its certificate must be past
    /// half its life.
    pub(super) fn renew(&mut self, now: Instant, conn: SessionId, csr: &[u8]) {
        let node = match self.admitted(conn) {
            Ok(node) => node,
            Err((code, reason)) => return self.refuse_renewal(now, conn, code, reason),
        };
        let Some(Session {
            peer:
                Peer::Node {
                    welcomed,
                    leaf,
                    renewed,
                    ..
                },
            ..
        }) = self.sessions.get(&conn)
        else {
            return;
        };
        let (welcomed, leaf, renewed) = (*welcomed, *leaf, *renewed);
        let unix = now_unix_s(&self.config.wall_clock, now);
        let refusal = if !welcomed {
            Some((
                RejectCode::TokenInvalid,
                "a renewal needs a session opened with a valid admission token".to_owned(),
            ))
        } else if renewed {
            Some((
                RejectCode::RateLimited,
                "this session renewed already: reconnect with the new certificate".to_owned(),
            ))
        } else if let Some((not_before, not_after)) = leaf.validity.filter(|&(from, until)| {
            let (num, den) = EARLIEST_RENEWAL;
            i64::try_from(unix).unwrap_or(i64::MAX) < from + (until - from) * num / den
        }) {
            Some((
                RejectCode::RateLimited,
                format!(
                    "the certificate (valid {not_before} to {not_after}) is not past half its life"
                ),
            ))
        } else {
            None
        };
        if let Some((code, reason)) = refusal {
            return self.refuse_renewal(now, conn, code, reason);
        }
        match pki::csr_public_key(csr) {
            Ok(key) if Some(key.0) == leaf.key => {}
            Ok(_) => {
                return self.refuse_renewal(
                    now,
                    conn,
                    RejectCode::BadCertificate,
                    "a renewal keeps the node's key; the request is for another one".to_owned(),
                )
            }
            Err(err) => {
                return self.refuse_renewal(
                    now,
                    conn,
                    RejectCode::Malformed,
                    format!("certificate request: {err}"),
                )
            }
        }
        let (chain, fingerprint) = match self.issue(unix, &node.name, csr) {
            Ok(issued) => issued,
            Err(err) => {
                return self.refuse_renewal(
                    now,
                    conn,
                    RejectCode::Internal,
                    format!("the certificate could not be issued: {err}"),
                )
            }
        };
        let op = Op::Renew {
            node: node.name.clone(),
            fingerprint,
            renewed_from: node.fingerprint,
            at_unix_s: unix,
        };
        // A revoke (or another renewal) may be waiting for its commit.
        if let Err(err) = self.check_after_pending(&op, unix) {
            let code = match &err {
                RegistryError::WrongState {
                    state: "revoked", ..
                } => RejectCode::Revoked,
                RegistryError::WrongState { .. } => RejectCode::Pending,
                RegistryError::UnknownNode(_) => RejectCode::UnknownNode,
                _ => RejectCode::BadCertificate,
            };
            return self.refuse_renewal(now, conn, code, err.to_string());
        }
        if let Some(Session {
            peer: Peer::Node { renewed, .. },
            ..
        }) = self.sessions.get_mut(&conn)
        {
            *renewed = true;
        }
        self.append(op, Waiting::Renew { conn, chain });
    }

    fn refuse_renewal(&mut self, now: Instant, conn: SessionId, code: RejectCode, reason: String) {
        self.counters.renewals_refused += 1;
        self.refuse(now, conn, code, format!("renewal refused: {reason}"));
    }
}
