//! The node's side of the control session: enroll if needed, get a token,
//! say hello, register services, then follow the coordinator's pushes;
//! reconnect with jittered exponential backoff, refresh the token at half
//! its life, renew the certificate at two thirds of its life
//! ([`super::renewal`]) and reconnect with the new one.
//!
//! With the TCP fallback on ([`TcpFallback`]), an attempt starts over QUIC;
//! when its handshake does not complete within the bound (UDP blocked: no
//! answer at all), TCP to the same address and port is tried at once. An
//! answer that refuses (a TLS refusal, the coordinator's handshake limit)
//! is not a reason to fall back: that coordinator is reachable over UDP, and
//! the ordinary backoff applies. While a session runs over TCP, QUIC is
//! tried again every `quic_retry`; a QUIC handshake that completes takes the
//! session over (token, hello, services again; the coordinator replaces the
//! TCP session with it). After any session ends, the next attempt starts
//! over QUIC again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::{backoff, renewal, Credentials, NodeConfig, NodeEvent};
use crate::control::msg::{
    self, Candidate, CandidateKind, FrameDecoder, Message, Name, RejectCode, RelaySite,
};
use crate::control::quic::CloseReason;
use crate::control::tls_config::{client_config, TlsIdentity};
use crate::control::transport::{Carrier, ControlEvent, ControlTransport, SessionId};
use crate::csprng::Drbg;
use crate::dataplane::{DataPlane, PathKind, Predicted, RelayOffer};
use crate::id::AssocId;
use crate::wire::KEY_LEN;

/// When the node falls back to TCP, and how often it tries QUIC again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpFallback {
    /// How long a QUIC handshake may take before TCP is tried.
    pub quic_bound: Duration,
    /// While on TCP, how often a QUIC handshake is tried again.
    pub quic_retry: Duration,
}

impl Default for TcpFallback {
    /// TCP after 3 s without a QUIC handshake (a handshake over a working
    /// path takes a few round trips, well under a second even across a
    /// continent; quinn's first retransmissions are within 3 s); QUIC again
    /// every 60 s.
    fn default() -> Self {
        Self {
            quic_bound: Duration::from_secs(3),
            quic_retry: Duration::from_secs(60),
        }
    }
}

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
        epoch: u32,
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
    /// The reflector addresses, the session's own first.
    Reflectors(Vec<std::net::SocketAddr>),
    /// A relay leg for an association.
    Relay {
        assoc: AssocId,
        offer: RelayOffer,
    },
    /// Open an allocation on the relay this node hosts.
    HostAllocate {
        allocation: u64,
        assoc: AssocId,
        key: [u8; KEY_LEN],
        nodes: [crate::id::NodeId; 2],
    },
    /// An allocation is gone: the hosted one, or this node's leg of it.
    RelayRelease {
        assoc: AssocId,
        allocation: u64,
    },
    /// The coordinator refused the relay this node offers.
    RelayHostRefused {
        seen: std::net::IpAddr,
    },
    /// Start probing an association's candidates at this wall-clock time.
    Punch {
        assoc: AssocId,
        at_unix_ms: u64,
    },
}

#[derive(Debug)]
pub(super) struct Session {
    state: SessionState,
    conn: Option<SessionId>,
    /// What carries `conn`, and whether it completed its handshake.
    carrier: Carrier,
    connected: bool,
    /// The coordinator address of the current attempt (TCP goes there too).
    remote: Option<SocketAddr>,
    next_carrier: Carrier,
    fallback: Option<TcpFallback>,
    /// A QUIC attempt not connected by then falls back to TCP.
    handshake_deadline: Option<Instant>,
    /// A QUIC attempt made while the session runs over TCP.
    probe: Option<(SessionId, Instant)>,
    next_probe: Option<Instant>,
    decoder: FrameDecoder,
    attempt: u32,
    /// The index in the node's coordinator list tried next.
    coordinator: usize,
    /// The next attempt goes to the same coordinator (after enrolling or
    /// renewing there).
    stay: bool,
    /// The coordinator of the last live session: the first attempt after
    /// losing it passes it over (it has just failed).
    last_live: Option<SocketAddr>,
    next_attempt: Option<Instant>,
    token: Option<(Bytes, u64)>,
    refresh_at: Option<Instant>,
    revoked: bool,
    /// A renewal request is waiting for its answer on this session.
    renewing: bool,
    /// When the live session next checks whether the certificate is due.
    renew_at: Option<Instant>,
    /// No renewal before this (Unix seconds), after one that was refused.
    renew_hold_unix_s: i64,
}

fn unix_s(config: &NodeConfig, now: Instant) -> u64 {
    config.wall_clock.unix_us(now) / 1_000_000
}

impl Session {
    pub(super) fn new() -> Self {
        Self {
            state: SessionState::Idle,
            conn: None,
            carrier: Carrier::Quic,
            connected: false,
            remote: None,
            next_carrier: Carrier::Quic,
            fallback: None,
            handshake_deadline: None,
            probe: None,
            next_probe: None,
            decoder: FrameDecoder::new(),
            attempt: 0,
            coordinator: 0,
            stay: false,
            last_live: None,
            next_attempt: None,
            token: None,
            refresh_at: None,
            revoked: false,
            renewing: false,
            renew_at: None,
            renew_hold_unix_s: i64::MIN,
        }
    }

    pub(super) fn state(&self) -> SessionState {
        self.state
    }

    /// Ends the control plane for good, as the node stops: the current
    /// session (and a QUIC probe under a TCP session) is closed at once, so
    /// the coordinator marks the node offline now rather than after its idle
    /// timeout, and no new attempt is ever made.
    pub(super) fn shut_down(&mut self, now: Instant, quic: &mut ControlTransport) {
        let sessions = [self.conn.take(), self.probe.take().map(|(p, _)| p)];
        for session in sessions.into_iter().flatten() {
            let _ = quic.close(now, session, 0, b"node stopping");
        }
        self.state = SessionState::Idle;
        self.connected = false;
        self.next_attempt = None;
        self.handshake_deadline = None;
        self.next_probe = None;
        self.refresh_at = None;
        self.renew_at = None;
        self.renewing = false;
    }

    /// The current session, if any.
    #[cfg(test)]
    pub(super) fn conn(&self) -> Option<SessionId> {
        self.conn
    }

    pub(super) fn set_fallback(&mut self, fallback: Option<TcpFallback>) {
        self.fallback = fallback;
    }

    /// What carries the session, once its handshake completed.
    pub(super) fn carrier(&self) -> Option<Carrier> {
        (self.conn.is_some() && self.connected).then_some(self.carrier)
    }

    pub(super) fn token_expires(&self) -> Option<u64> {
        self.token.as_ref().map(|(_, e)| *e)
    }

    pub(super) fn start(&mut self, now: Instant) {
        self.next_attempt = Some(now);
    }

    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        [
            self.next_attempt,
            self.refresh_at,
            self.handshake_deadline,
            self.next_probe,
            self.probe.map(|(_, at)| at),
            self.renew_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn send(&mut self, now: Instant, quic: &mut ControlTransport, message: &Message) {
        let Some(conn) = self.conn else { return };
        let mut buf = BytesMut::new();
        if msg::encode(message, &mut buf).is_ok() {
            if let Err(err) = quic.send(now, conn, &buf) {
                tracing::debug!(%err, "control send failed");
            }
        }
    }

    /// Sends a message on the live session (nothing otherwise).
    pub(super) fn send_live(
        &mut self,
        now: Instant,
        quic: &mut ControlTransport,
        message: &Message,
    ) {
        if self.state == SessionState::Live {
            self.send(now, quic, message);
        }
    }

    /// Sends the node's services and the peers they consent to again (the
    /// operator changed them); on a session that is not live yet, the
    /// registration after the next welcome carries them.
    pub(super) fn register(
        &mut self,
        now: Instant,
        quic: &mut ControlTransport,
        config: &NodeConfig,
    ) {
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
        quic: &mut ControlTransport,
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
        let mut candidates: Vec<Candidate> = view
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
        // What the NAT in front of each socket shows the world: the
        // reflexive address, or the predicted mappings of a sequential
        // allocator.
        for (uplink, through_nat) in view.mesh_reflexive() {
            let Some(name) = config.uplinks.iter().find(|u| u.id == uplink) else {
                continue;
            };
            let Ok(name) = Name::new(&name.name) else {
                continue;
            };
            for (addr, predicted) in through_nat {
                if candidates.iter().any(|c| c.addr == addr) {
                    continue;
                }
                candidates.push(Candidate {
                    addr,
                    kind: match predicted {
                        Predicted::No => CandidateKind::ServerReflexive,
                        Predicted::Yes => CandidateKind::Predicted,
                    },
                    uplink: name.clone(),
                });
            }
        }
        candidates.truncate(msg::MAX_CANDIDATES);
        if !candidates.is_empty() {
            self.send(now, quic, &Message::Candidates { assoc, candidates });
        }
    }

    fn client_tls(config: &NodeConfig) -> Result<Arc<rustls::ClientConfig>, String> {
        let identity = match &config.credentials {
            Credentials::Enrolled(identity) => Some(TlsIdentity {
                chain: identity.chain.clone(),
                key: identity.key.clone_key(),
            }),
            Credentials::Enroll { .. } => None,
        };
        client_config(&config.root, identity).map_err(|e| e.to_string())
    }

    fn connect(
        &mut self,
        now: Instant,
        quic: &mut ControlTransport,
        config: &NodeConfig,
        drbg: &mut Drbg,
    ) -> Vec<Effect> {
        let carrier = self.next_carrier;
        self.next_carrier = Carrier::Quic;
        let stay = std::mem::take(&mut self.stay);
        let remote = match (carrier, self.remote) {
            (Carrier::Tcp, Some(remote)) => remote,
            (_, Some(remote)) if stay => remote,
            _ => {
                let n = config.coordinators.len();
                let mut remote = config.coordinators[self.coordinator % n];
                self.coordinator += 1;
                if n > 1 && self.last_live.take() == Some(remote) {
                    remote = config.coordinators[self.coordinator % n];
                    self.coordinator += 1;
                }
                remote
            }
        };
        self.remote = Some(remote);
        let tls = match Self::client_tls(config) {
            Ok(tls) => tls,
            Err(err) => {
                tracing::error!(%err, "the node's TLS identity is unusable");
                return self.lost(now, quic, drbg);
            }
        };
        let name = config
            .coordinator_names
            .get(&remote)
            .unwrap_or(&config.coordinator_name);
        match quic.connect(now, carrier, remote, name, tls) {
            Ok(conn) => {
                tracing::debug!(%remote, %conn, %carrier, "connecting to the coordinator");
                self.conn = Some(conn);
                self.carrier = carrier;
                self.connected = false;
                self.handshake_deadline = match (carrier, self.fallback) {
                    (Carrier::Quic, Some(fallback)) => Some(now + fallback.quic_bound),
                    _ => None,
                };
                self.decoder = FrameDecoder::new();
                self.state = SessionState::Connecting;
                vec![Effect::Event(NodeEvent::Session(self.state))]
            }
            Err(err) => {
                tracing::warn!(%remote, %err, %carrier, "cannot connect");
                self.lost(now, quic, drbg)
            }
        }
    }

    /// The QUIC attempt got no answer in time: TCP to the same address, now.
    fn fall_back(
        &mut self,
        now: Instant,
        quic: &mut ControlTransport,
        config: &NodeConfig,
        drbg: &mut Drbg,
    ) -> Vec<Effect> {
        if let Some(conn) = self.conn.take() {
            let _ = quic.close(now, conn, 0, b"no QUIC handshake in time");
        }
        self.handshake_deadline = None;
        tracing::info!(remote = ?self.remote, "no QUIC handshake with the coordinator in time; trying TCP");
        self.next_carrier = Carrier::Tcp;
        self.connect(now, quic, config, drbg)
    }

    fn lost(&mut self, now: Instant, quic: &mut ControlTransport, drbg: &mut Drbg) -> Vec<Effect> {
        self.conn = None;
        self.connected = false;
        self.handshake_deadline = None;
        self.next_probe = None;
        if let Some((probe, _)) = self.probe.take() {
            let _ = quic.close(now, probe, 0, b"session lost");
        }
        self.refresh_at = None;
        self.renewing = false;
        self.renew_at = None;
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

    /// While on TCP: starts a QUIC attempt when due, gives up on one that
    /// took too long.
    fn probe_quic(&mut self, now: Instant, quic: &mut ControlTransport, config: &NodeConfig) {
        let Some(fallback) = self.fallback else {
            return;
        };
        if let Some((probe, deadline)) = self.probe {
            if deadline <= now {
                tracing::debug!("QUIC still gets no handshake; staying on TCP");
                let _ = quic.close(now, probe, 0, b"no QUIC handshake in time");
                self.probe = None;
                self.next_probe = Some(now + fallback.quic_retry);
            }
            return;
        }
        if self.next_probe.is_none_or(|at| at > now) {
            return;
        }
        self.next_probe = None;
        let (Some(remote), Ok(tls)) = (self.remote, Self::client_tls(config)) else {
            return;
        };
        let name = config
            .coordinator_names
            .get(&remote)
            .unwrap_or(&config.coordinator_name);
        match quic.connect(now, Carrier::Quic, remote, name, tls) {
            Ok(probe) => self.probe = Some((probe, now + fallback.quic_bound)),
            Err(_) => self.next_probe = Some(now + fallback.quic_retry),
        }
    }

    /// A QUIC attempt made while on TCP connected: the session moves to it.
    fn adopt_probe(
        &mut self,
        now: Instant,
        quic: &mut ControlTransport,
        probe: SessionId,
    ) -> Vec<Effect> {
        self.probe = None;
        if let Some(old) = self.conn.replace(probe) {
            let _ = quic.close(now, old, 0, b"moving to QUIC");
        }
        tracing::info!("QUIC works again; the control session moves from TCP to QUIC");
        self.carrier = Carrier::Quic;
        self.connected = true;
        self.decoder = FrameDecoder::new();
        self.refresh_at = None;
        self.renewing = false;
        self.renew_at = None;
        self.state = SessionState::Authenticating;
        self.send(now, quic, &Message::TokenRequest);
        vec![Effect::Event(NodeEvent::Session(self.state))]
    }

    pub(super) fn drive(
        &mut self,
        now: Instant,
        quic: &mut ControlTransport,
        config: &NodeConfig,
        drbg: &mut Drbg,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        if self.conn.is_none() && self.next_attempt.is_some_and(|at| at <= now) {
            self.next_attempt = None;
            effects.extend(self.connect(now, quic, config, drbg));
        }
        if self.conn.is_some()
            && !self.connected
            && self.handshake_deadline.is_some_and(|at| at <= now)
        {
            effects.extend(self.fall_back(now, quic, config, drbg));
        }
        if self.state == SessionState::Live && self.carrier == Carrier::Tcp {
            self.probe_quic(now, quic, config);
        }
        if self.state == SessionState::Live && self.refresh_at.is_some_and(|at| at <= now) {
            self.refresh_at = None;
            self.send(now, quic, &Message::TokenRequest);
        }
        while let Some(event) = quic.poll_event() {
            match event {
                ControlEvent::Connected {
                    session, carrier, ..
                } if Some(session) == self.conn => {
                    self.connected = true;
                    self.handshake_deadline = None;
                    tracing::info!(%carrier, "control session connected");
                    if carrier == Carrier::Tcp {
                        self.next_probe = self.fallback.map(|f| now + f.quic_retry);
                    }
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
                ControlEvent::Connected { session, .. }
                    if self.probe.is_some_and(|(p, _)| p == session) =>
                {
                    effects.extend(self.adopt_probe(now, quic, session));
                }
                ControlEvent::Received { session, bytes } if Some(session) == self.conn => {
                    self.decoder.push(&bytes);
                    loop {
                        match self.decoder.next() {
                            Ok(Some(message)) => {
                                effects.extend(self.on_message(now, quic, config, message))
                            }
                            Ok(None) => break,
                            Err(err) => {
                                tracing::warn!(%err, "bad frame from the coordinator");
                                let _ = quic.close(now, session, 1, b"malformed");
                                break;
                            }
                        }
                    }
                }
                ControlEvent::Closed { session, reason } if Some(session) == self.conn => {
                    if let CloseReason::HandshakeFailed(why) = &reason {
                        tracing::warn!(%why, carrier = %self.carrier, "coordinator handshake failed");
                    }
                    let unanswered = reason == CloseReason::TimedOut;
                    if !self.connected
                        && self.carrier == Carrier::Quic
                        && self.fallback.is_some()
                        && unanswered
                    {
                        self.conn = None;
                        effects.extend(self.fall_back(now, quic, config, drbg));
                    } else {
                        effects.extend(self.lost(now, quic, drbg));
                    }
                }
                ControlEvent::Closed { session, .. }
                    if self.probe.is_some_and(|(p, _)| p == session) =>
                {
                    self.probe = None;
                    self.next_probe = self.fallback.map(|f| now + f.quic_retry);
                }
                _ => {}
            }
        }
        if self.state == SessionState::Live && self.renew_at.is_some_and(|at| at <= now) {
            self.renew_at = None;
            self.renew_if_due(now, quic, config);
        }
        effects
    }

    /// Asks for a new certificate when the current one is due, or sets the
    /// timer for when it will be.
    fn renew_if_due(&mut self, now: Instant, quic: &mut ControlTransport, config: &NodeConfig) {
        if self.renewing {
            return;
        }
        let Some(window) = renewal::window(&config.credentials) else {
            return;
        };
        let unix = i64::try_from(unix_s(config, now)).unwrap_or(i64::MAX);
        let due = renewal::due_unix_s(window).max(self.renew_hold_unix_s);
        if unix < due {
            let wait = u64::try_from(due - unix).unwrap_or(0);
            self.renew_at = Some(now + Duration::from_secs(wait));
            return;
        }
        let Some(csr) = renewal::request(&config.credentials) else {
            tracing::error!("no certificate request can be made for the node's key; not renewing");
            return;
        };
        tracing::info!(
            not_after = window.1,
            "the certificate is due for renewal; asking the coordinator"
        );
        self.renewing = true;
        self.send(
            now,
            quic,
            &Message::Renew {
                csr_der: Bytes::from(csr),
            },
        );
    }

    /// Ends the session and connects again at once, over the carrier that
    /// worked: after enrollment or renewal, to present the new certificate.
    fn reconnect_now(&mut self, now: Instant, quic: &mut ControlTransport, why: &'static [u8]) {
        if let Some(conn) = self.conn.take() {
            let _ = quic.close(now, conn, 0, why);
        }
        if let Some((probe, _)) = self.probe.take() {
            let _ = quic.close(now, probe, 0, why);
        }
        self.next_carrier = self.carrier;
        self.stay = true;
        self.connected = false;
        self.attempt = 0;
        self.next_attempt = Some(now);
        self.refresh_at = None;
        self.renewing = false;
        self.renew_at = None;
        self.next_probe = None;
        self.state = SessionState::Backoff;
    }

    fn on_message(
        &mut self,
        now: Instant,
        quic: &mut ControlTransport,
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
                // Reconnect with the certificate at once, over what worked.
                self.reconnect_now(now, quic, b"enrolled");
            }
            Message::Renewed { chain_der } => {
                self.renewing = false;
                match renewal::accept(&chain_der, &config.credentials, &config.name) {
                    Ok(identity) => {
                        tracing::info!("certificate renewed; reconnecting with it");
                        effects.push(Effect::Event(NodeEvent::Renewed { chain: chain_der }));
                        effects.push(Effect::Identity(identity));
                        self.reconnect_now(now, quic, b"renewed");
                        effects.push(Effect::Event(NodeEvent::Session(self.state)));
                    }
                    Err(why) => {
                        tracing::warn!(%why, "the renewed certificate is unusable; keeping the current one");
                        self.hold_renewal(now, config);
                    }
                }
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
                // Once this session is lost, the list is tried from its
                // first coordinator again (passing over this one once):
                // nodes that list coordinators in one order meet at the
                // first one they reach.
                self.coordinator = 0;
                self.last_live = self.remote;
                self.revoked = false;
                // Checked once the welcome is handled: a node that was
                // offline past the renewal point renews now.
                self.renew_at = Some(now);
                effects.push(Effect::Event(NodeEvent::Session(self.state)));
                let services = config_decls(config);
                self.send(now, quic, &Message::RegisterServices { services });
                // The reflector answers on the session's own address.
                effects.push(Effect::Reflectors(self.remote.into_iter().collect()));
                effects.push(Effect::ReportCandidates);
            }
            Message::RelayAllocation {
                assoc,
                relay,
                allocation,
                leg,
                key,
                site,
            } => effects.push(Effect::Relay {
                assoc,
                offer: RelayOffer {
                    relay,
                    allocation,
                    leg,
                    key,
                    kind: match site {
                        RelaySite::Coordinator => PathKind::CoordinatorRelay,
                        RelaySite::Node => PathKind::NodeRelay,
                    },
                },
            }),
            Message::RelayAllocate {
                allocation,
                assoc,
                key,
                nodes,
            } => effects.push(Effect::HostAllocate {
                allocation,
                assoc,
                key,
                nodes,
            }),
            Message::RelayRelease { assoc, allocation } => {
                effects.push(Effect::RelayRelease { assoc, allocation })
            }
            Message::RelayHostRefused { seen } => effects.push(Effect::RelayHostRefused { seen }),
            Message::Reflectors { extra } => effects.push(Effect::Reflectors(
                self.remote.into_iter().chain(extra).collect(),
            )),
            Message::AssociationInstalled {
                assoc,
                epoch,
                service,
                peer,
                key,
                ..
            } => effects.push(Effect::Install {
                assoc,
                service: service.as_str().to_owned(),
                peer: peer.to_string(),
                epoch,
                key,
            }),
            Message::AssociationWithdrawn { assoc, .. } => effects.push(Effect::Withdraw { assoc }),
            Message::Candidates { assoc, candidates } => effects.push(Effect::Remotes {
                assoc,
                remotes: candidates.iter().map(|c| c.addr).collect(),
            }),
            Message::Punch { assoc, at_unix_ms } => {
                effects.push(Effect::Punch { assoc, at_unix_ms });
            }
            Message::Revoked { .. } => {
                self.revoked = true;
                self.token = None;
                effects.push(Effect::WithdrawAll);
                effects.push(Effect::Event(NodeEvent::Revoked));
            }
            Message::Reject { code, reason } => {
                tracing::warn!(code = code.as_str(), %reason, "the coordinator refused this node");
                if self.renewing {
                    self.renewing = false;
                    self.hold_renewal(now, config);
                }
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

impl Session {
    /// A renewal did not work: the next attempt waits, so a coordinator
    /// that refuses is not asked again on every reconnect.
    fn hold_renewal(&mut self, now: Instant, config: &NodeConfig) {
        let Some(window) = renewal::window(&config.credentials) else {
            return;
        };
        let unix = i64::try_from(unix_s(config, now)).unwrap_or(i64::MAX);
        let wait = renewal::retry_after(window, unix);
        self.renew_hold_unix_s = unix.saturating_add(i64::try_from(wait.as_secs()).unwrap_or(0));
        tracing::info!(?wait, "certificate renewal postponed");
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
