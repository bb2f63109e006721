//! The node's side of the control session: enroll if needed, get a token,
//! say hello, register services, then follow the coordinator's pushes;
//! reconnect with jittered exponential backoff, refresh the token at half
//! its life.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{backoff, Credentials, NodeConfig, NodeEvent};
use crate::control::msg::{
    self, Candidate, CandidateKind, FrameDecoder, Message, Name, RejectCode,
};
use crate::control::quic::{CloseReason, ConnId, QuicEndpoint, QuicEvent};
use crate::control::tls_config::{client_config, TlsIdentity};
use crate::csprng::Drbg;
use crate::dataplane::{DataPlane, PathKind};
use crate::id::AssocId;
use crate::wire::KEY_LEN;

/// Where the control session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionState {
    /// Not started.
    Idle,
    /// Handshaking with a coordinator.
    Connecting,
    /// Waiting for a certificate.
    Enrolling,
    /// Waiting for an admission token.
    Authenticating,
    /// Waiting for the coordinator to accept the token.
    Greeting,
    /// Admitted and following the coordinator.
    Live,
    /// Waiting before the next attempt.
    Backoff,
    /// Revoked (still retrying slowly, in case of readmission).
    Revoked,
}

impl SessionState {
    /// The name status uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Connecting => "connecting",
            Self::Enrolling => "enrolling",
            Self::Authenticating => "authenticating",
            Self::Greeting => "greeting",
            Self::Live => "live",
            Self::Backoff => "backoff",
            Self::Revoked => "revoked",
        }
    }
}

/// What the session asks the node to do.
#[derive(Debug)]
pub(super) enum Effect {
    Event(NodeEvent),
    Install {
        assoc: AssocId,
        service: String,
        peer: String,
        key: [u8; KEY_LEN],
    },
    Withdraw {
        assoc: AssocId,
    },
    WithdrawAll,
    Remotes {
        assoc: AssocId,
        remotes: Vec<std::net::SocketAddr>,
    },
    Identity(TlsIdentity),
    /// Tell the coordinator every association's candidates again.
    ReportCandidates,
}

#[derive(Debug)]
pub(super) struct Session {
    state: SessionState,
    conn: Option<ConnId>,
    decoder: FrameDecoder,
    attempt: u32,
    coordinator: usize,
    next_attempt: Option<Instant>,
    token: Option<(Bytes, u64)>,
    refresh_at: Option<Instant>,
    revoked: bool,
}

fn unix_s(config: &NodeConfig, now: Instant) -> u64 {
    config.wall_clock.unix_us(now) / 1_000_000
}

impl Session {
    pub(super) fn new() -> Self {
        Self {
            state: SessionState::Idle,
            conn: None,
            decoder: FrameDecoder::new(),
            attempt: 0,
            coordinator: 0,
            next_attempt: None,
            token: None,
            refresh_at: None,
            revoked: false,
        }
    }

    pub(super) fn state(&self) -> SessionState {
        self.state
    }

    pub(super) fn token_expires(&self) -> Option<u64> {
        self.token.as_ref().map(|(_, e)| *e)
    }

    pub(super) fn start(&mut self, now: Instant) {
        self.next_attempt = Some(now);
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        [self.next_attempt, self.refresh_at]
            .into_iter()
            .flatten()
            .min()
    }

    fn send(&mut self, now: Instant, quic: &mut QuicEndpoint, message: &Message) {
        let Some(conn) = self.conn else { return };
        let mut buf = BytesMut::new();
        if msg::encode(message, &mut buf).is_ok() {
            if let Err(err) = quic.send(now, conn, &buf) {
                tracing::debug!(%err, "control send failed");
            }
        }
    }

    /// Sends the node's services and the peers they consent to again (the
    /// operator changed them); on a session that is not live yet, the
    /// registration after the next welcome carries them.
    pub(super) fn register(&mut self, now: Instant, quic: &mut QuicEndpoint, config: &NodeConfig) {
        if self.state != SessionState::Live {
            return;
        }
        let services = config_decls(config);
        self.send(now, quic, &Message::RegisterServices { services });
    }

    /// Host candidates of one association's mesh sockets.
    pub(super) fn report_candidates(
        &mut self,
        now: Instant,
        quic: &mut QuicEndpoint,
        plane: &DataPlane,
        assoc: AssocId,
        config: &NodeConfig,
    ) {
        if self.state != SessionState::Live {
            return;
        }
        let Some(view) = plane.association(assoc) else {
            return;
        };
        let candidates: Vec<Candidate> = view
            .mesh_locals()
            .filter_map(|(uplink, local)| {
                let local = local?;
                if local.ip().is_unspecified() {
                    return None;
                }
                let intranet = PathKind::of(local) == PathKind::DirectIntranet;
                if intranet && !config.advertise_private && !local.ip().is_loopback() {
                    return None;
                }
                let name = config.uplinks.iter().find(|u| u.id == uplink)?.name.clone();
                Some(Candidate {
                    addr: local,
                    kind: if intranet {
                        CandidateKind::Intranet
                    } else {
                        CandidateKind::Host
                    },
                    uplink: Name::new(&name).ok()?,
                })
            })
            .collect();
        if !candidates.is_empty() {
            self.send(now, quic, &Message::Candidates { assoc, candidates });
        }
    }

    fn connect(
        &mut self,
        now: Instant,
        quic: &mut QuicEndpoint,
        config: &NodeConfig,
        drbg: &mut Drbg,
    ) -> Vec<Effect> {
        let identity = match &config.credentials {
            Credentials::Enrolled(identity) => Some(TlsIdentity {
                chain: identity.chain.clone(),
                key: identity.key.clone_key(),
            }),
            Credentials::Enroll { .. } => None,
        };
        let remote = config.coordinators[self.coordinator % config.coordinators.len()];
        self.coordinator += 1;
        let tls = match client_config(&config.root, identity) {
            Ok(tls) => tls,
            Err(err) => {
                tracing::error!(%err, "the node's TLS identity is unusable");
                return self.lost(now, drbg);
            }
        };
        match quic.connect(now, remote, &config.coordinator_name, tls) {
            Ok(conn) => {
                tracing::debug!(%remote, %conn, "connecting to the coordinator");
                self.conn = Some(conn);
                self.decoder = FrameDecoder::new();
                self.state = SessionState::Connecting;
                vec![Effect::Event(NodeEvent::Session(self.state))]
            }
            Err(err) => {
                tracing::warn!(%remote, %err, "cannot connect");
                self.lost(now, drbg)
            }
        }
    }

    fn lost(&mut self, now: Instant, drbg: &mut Drbg) -> Vec<Effect> {
        self.conn = None;
        self.refresh_at = None;
        let wait = backoff(self.attempt, drbg);
        self.attempt = self.attempt.saturating_add(1);
        self.next_attempt = Some(now + wait);
        self.state = if self.revoked {
            SessionState::Revoked
        } else {
            SessionState::Backoff
        };
        tracing::info!(?wait, "control session down; retrying");
        vec![Effect::Event(NodeEvent::Session(self.state))]
    }

    pub(super) fn drive(
        &mut self,
        now: Instant,
        quic: &mut QuicEndpoint,
        config: &NodeConfig,
        drbg: &mut Drbg,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        if self.conn.is_none() && self.next_attempt.is_some_and(|at| at <= now) {
            self.next_attempt = None;
            effects.extend(self.connect(now, quic, config, drbg));
        }
        if self.state == SessionState::Live && self.refresh_at.is_some_and(|at| at <= now) {
            self.refresh_at = None;
            self.send(now, quic, &Message::TokenRequest);
        }
        while let Some(event) = quic.poll_event() {
            match event {
                QuicEvent::Connected { conn, .. } if Some(conn) == self.conn => {
                    match &config.credentials {
                        Credentials::Enroll {
                            join_token,
                            csr_der,
                            ..
                        } => {
                            self.state = SessionState::Enrolling;
                            let message = Message::Enroll {
                                join_token: join_token.clone(),
                                csr_der: Bytes::from(csr_der.clone()),
                            };
                            self.send(now, quic, &message);
                            effects.push(Effect::Event(NodeEvent::Session(self.state)));
                        }
                        Credentials::Enrolled(_) => {
                            self.state = SessionState::Authenticating;
                            self.send(now, quic, &Message::TokenRequest);
                            effects.push(Effect::Event(NodeEvent::Session(self.state)));
                        }
                    }
                }
                QuicEvent::Received { conn, bytes } if Some(conn) == self.conn => {
                    self.decoder.push(&bytes);
                    loop {
                        match self.decoder.next() {
                            Ok(Some(message)) => {
                                effects.extend(self.on_message(now, quic, config, message))
                            }
                            Ok(None) => break,
                            Err(err) => {
                                tracing::warn!(%err, "bad frame from the coordinator");
                                let _ = quic.close(now, conn, 1, b"malformed");
                                break;
                            }
                        }
                    }
                }
                QuicEvent::Closed { conn, reason } if Some(conn) == self.conn => {
                    if let CloseReason::HandshakeFailed(why) = &reason {
                        tracing::warn!(%why, "coordinator handshake failed");
                    }
                    effects.extend(self.lost(now, drbg));
                }
                _ => {}
            }
        }
        effects
    }

    fn on_message(
        &mut self,
        now: Instant,
        quic: &mut QuicEndpoint,
        config: &NodeConfig,
        message: Message,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        match message {
            Message::Enrolled { chain_der, .. } => {
                let Credentials::Enroll { key_pkcs8, .. } = &config.credentials else {
                    return effects;
                };
                let identity = TlsIdentity {
                    chain: chain_der
                        .iter()
                        .map(|c| CertificateDer::from(c.to_vec()))
                        .collect(),
                    key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8.clone())),
                };
                effects.push(Effect::Event(NodeEvent::Enrolled { chain: chain_der }));
                effects.push(Effect::Identity(identity));
                // Reconnect with the certificate at once.
                if let Some(conn) = self.conn.take() {
                    let _ = quic.close(now, conn, 0, b"enrolled");
                }
                self.attempt = 0;
                self.next_attempt = Some(now);
                self.state = SessionState::Backoff;
            }
            Message::TokenGrant {
                token,
                expires_unix_s,
            } => {
                let lifetime = expires_unix_s.saturating_sub(unix_s(config, now));
                // Half-life, but never sooner than 30 s: a node clock far ahead of
                // the coordinator's must not turn refreshes into a loop.
                self.refresh_at = Some(now + Duration::from_secs((lifetime / 2).max(30)));
                self.token = Some((token.clone(), expires_unix_s));
                effects.push(Effect::Event(NodeEvent::Token { expires_unix_s }));
                if self.state == SessionState::Authenticating {
                    self.state = SessionState::Greeting;
                    let Ok(node) = Name::new(&config.name) else {
                        return effects;
                    };
                    let hello = Message::Hello {
                        node,
                        token,
                        advertise_private: config.advertise_private,
                    };
                    self.send(now, quic, &hello);
                }
            }
            Message::Welcome { .. } => {
                self.state = SessionState::Live;
                self.attempt = 0;
                self.revoked = false;
                effects.push(Effect::Event(NodeEvent::Session(self.state)));
                let services = config_decls(config);
                self.send(now, quic, &Message::RegisterServices { services });
                effects.push(Effect::ReportCandidates);
            }
            Message::AssociationInstalled {
                assoc,
                service,
                peer,
                key,
                ..
            } => effects.push(Effect::Install {
                assoc,
                service: service.as_str().to_owned(),
                peer: peer.to_string(),
                key,
            }),
            Message::AssociationWithdrawn { assoc, .. } => effects.push(Effect::Withdraw { assoc }),
            Message::Candidates { assoc, candidates } => effects.push(Effect::Remotes {
                assoc,
                remotes: candidates.iter().map(|c| c.addr).collect(),
            }),
            Message::Revoked { .. } => {
                self.revoked = true;
                self.token = None;
                effects.push(Effect::WithdrawAll);
                effects.push(Effect::Event(NodeEvent::Revoked));
            }
            Message::Reject { code, reason } => {
                tracing::warn!(code = code.as_str(), %reason, "the coordinator refused this node");
                if code == RejectCode::Revoked {
                    self.revoked = true;
                    self.token = None;
                    effects.push(Effect::WithdrawAll);
                }
                effects.push(Effect::Event(NodeEvent::Refused { code, reason }));
            }
            _ => {}
        }
        effects
    }
}

fn config_decls(config: &NodeConfig) -> Vec<msg::ServiceDecl> {
    config
        .services
        .iter()
        .filter_map(|s| {
            let peers = s
                .peers
                .keys()
                .filter_map(|p| p.parse::<msg::PeerRef>().ok())
                .collect();
            Some(msg::ServiceDecl {
                name: Name::new(&s.name).ok()?,
                peers,
            })
        })
        .collect()
}
