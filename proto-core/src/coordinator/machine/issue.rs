//! Node certificates: issued at enrollment for a one-time join token (and
//! issued again, the same, to the same key retrying with that token while it
//! is valid, when the first answer was lost), and renewed before expiry for a node that holds a valid certificate and an
//! admission token. Any coordinator of the root issues with its own
//! intermediate; the registry records the fingerprint either way, through
//! the operation log, so every coordinator replaying it accepts the new
//! certificate.

use std::time::Instant;

use bytes::Bytes;
use ring::hmac;

use super::{now_unix_s, Coordinator, Peer, Session, Waiting};
use crate::control::msg::{Message, RejectCode};
use crate::control::token::JoinToken;
use crate::control::transport::SessionId;
use crate::coordinator::registry::{Op, RegistryError};
use crate::id::NodeId;
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
    /// The serial of the certificate an invitation (`digest`) gives `key`:
    /// derived, under a key only this coordinator holds, so that answering
    /// a repeated enrollment re-issues exactly the same certificate (Ed25519
    /// signatures are deterministic), also after a restart.
    fn enrollment_serial(&self, digest: &[u8; 32], key: &[u8; 32]) -> [u8; pki::SERIAL_LEN] {
        let mac = hmac::Key::new(hmac::HMAC_SHA256, &self.config.intermediate_key);
        let mut context = hmac::Context::with_key(&mac);
        context.update(b"transitloom enrollment serial\0");
        context.update(digest);
        context.update(key);
        let tag = context.sign();
        let mut serial = [0u8; pki::SERIAL_LEN];
        serial.copy_from_slice(&tag.as_ref()[..pki::SERIAL_LEN]);
        serial
    }

    /// Signs `csr` for `node` with this coordinator's intermediate, valid
    /// for the configured lifetime from `unix_s` (backdated a little);
    /// returns the chain to send and the leaf's fingerprint.
    fn issue(
        &self,
        unix_s: u64,
        node: &str,
        csr: &[u8],
        serial: [u8; pki::SERIAL_LEN],
    ) -> Result<(Vec<Bytes>, [u8; 32]), pki::PkiError> {
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
        let serial = match pki::csr_public_key(csr) {
            Ok(key) => self.enrollment_serial(&token.digest(), &key.0),
            Err(err) => {
                return self.refuse(
                    now,
                    conn,
                    RejectCode::Malformed,
                    format!("certificate request: {err}"),
                )
            }
        };
        if let Some(record) = self
            .registry
            .repeatable_enrollment(&node, &token.digest(), unix)
        {
            let (id, at, fingerprint) = (record.id, record.enrolled_at_unix_s, record.fingerprint);
            return self.repeat_enrollment(now, conn, &node, csr, serial, (id, at, fingerprint));
        }
        let (chain, fingerprint) = match self.issue(unix, &node, csr, serial) {
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
        self.append(now, op, Waiting::Enroll { conn, chain });
    }

    /// The join token was used, by this node's enrollment: if `csr` is for
    /// the same key (the certificate re-issued for it is the one enrolled),
    /// the answer was lost and is sent again; nothing is written. Any other
    /// key finds the token used.
    fn repeat_enrollment(
        &mut self,
        now: Instant,
        conn: SessionId,
        node: &str,
        csr: &[u8],
        serial: [u8; pki::SERIAL_LEN],
        (node_id, at_unix_s, fingerprint): (NodeId, u64, [u8; 32]),
    ) {
        match self.issue(at_unix_s, node, csr, serial) {
            Ok((chain_der, again)) if again == fingerprint => {
                tracing::info!(%node, "enrollment repeated with the same key: the same certificate again");
                self.counters.enrollments_repeated += 1;
                self.send(now, conn, &Message::Enrolled { node_id, chain_der });
            }
            _ => self.refuse(
                now,
                conn,
                RejectCode::JoinTokenUsed,
                format!("the join token for {node} was used already, by another key"),
            ),
        }
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
        let mut serial = [0u8; pki::SERIAL_LEN];
        self.drbg.fill(&mut serial);
        let (chain, fingerprint) = match self.issue(unix, &node.name, csr, serial) {
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
        self.append(now, op, Waiting::Renew { conn, chain });
    }

    fn refuse_renewal(&mut self, now: Instant, conn: SessionId, code: RejectCode, reason: String) {
        self.counters.renewals_refused += 1;
        self.refuse(now, conn, code, format!("renewal refused: {reason}"));
    }
}
