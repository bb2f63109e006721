//! The control-plane transport over QUIC (DESIGN §5): one QUIC connection per
//! control session, mutual TLS 1.3 from [`super::tls_config`], and one
//! bidirectional stream, opened by the client, carrying an opaque ordered
//! byte stream each way. Message framing is the caller's.
//!
//! Sans-IO like quinn-proto underneath: datagrams and `now` go in through
//! [`QuicEndpoint::handle_datagram`] and [`QuicEndpoint::handle_timeout`];
//! after any call the owner drains [`QuicEndpoint::poll_transmit`] and
//! [`QuicEvent`]s until `None`, then sleeps until
//! [`QuicEndpoint::poll_timeout`]. Nothing here reads a clock or the OS
//! random source: quinn's seeds, connection ids, reset and token keys come
//! from the [`Drbg`] given to the constructor, TLS randomness and wall-clock
//! time are lent to rustls around each call ([`super::tls_config::TlsInputs`]).
//!
//! A client reports [`QuicEvent::Connected`] only once the handshake is
//! *confirmed* (the server's HANDSHAKE_DONE, sent after it verified the
//! client certificate), so a refused client certificate ends in
//! [`CloseReason::HandshakeFailed`] on both sides and the client never sends
//! a byte to a server that refused it; it costs the client's first bytes one
//! round trip.
//!
//! The client speaks first: a QUIC stream becomes known to the server with
//! its first bytes, so what the server sends before that waits for them.
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use std::time::Instant;
//! use transitloom_proto_core::control::quic::{QuicEndpoint, QuicEvent};
//!
//! /// What an owner does after every `handle_*`, `connect`, `send` or `close`.
//! fn drain(
//!     quic: &mut QuicEndpoint,
//!     now: Instant,
//!     mut send_udp: impl FnMut(SocketAddr, &[u8]),
//!     mut feed_decoder: impl FnMut(&[u8]),
//! ) -> Option<Instant> {
//!     while let Some(transmit) = quic.poll_transmit(now) {
//!         send_udp(transmit.dst, &transmit.payload);
//!     }
//!     while let Some(event) = quic.poll_event() {
//!         match event {
//!             QuicEvent::Connected { peer_chain, .. } => { /* check the leaf */ }
//!             QuicEvent::Received { bytes, .. } => feed_decoder(&bytes),
//!             QuicEvent::Closed { reason, .. } => { /* reconnect with backoff */ }
//!             _ => {}
//!         }
//!     }
//!     quic.poll_timeout() // call `handle_timeout` then
//! }
//! ```

mod seeded;
mod session;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn_proto::crypto::rustls::QuicClientConfig;
use quinn_proto::{DatagramEvent, Endpoint, Incoming, Side, TransportConfig};
use rustls_pki_types::{CertificateDer, UnixTime};

use super::tls_config::TlsInputs;
use crate::csprng::Drbg;
use crate::time::WallClock;
use session::Session;

/// The application close code this transport uses when the peer ends or
/// stops the control stream (the session has no other way to continue).
pub const STREAM_ENDED: u32 = 0xffff_ff01;

/// Most bytes [`QuicEndpoint::send`] buffers for one session before the
/// stream accepts them.
pub const MAX_UNSENT: usize = 16 << 20;

/// Most stateless responses (version negotiation, resets, refusals) queued
/// at once; beyond it they are dropped, as UDP may.
const MAX_RESPONSES: usize = 256;

/// A control session's QUIC connection, numbered by its endpoint; never
/// reused.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "quic#{}", self.0)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Liveness timing of every session.
///
/// Each end sends a QUIC PING after `keepalive` without sending or receiving
/// anything, and closes a session as timed out when nothing authenticated
/// arrived for `idle_timeout`. QUIC restarts the idle timer also when it
/// sends its first ack-eliciting packet after a receipt (here, typically the
/// next keepalive), so a dead session is noticed at most
/// `idle_timeout + keepalive` after the last packet heard. Hence
/// `idle_timeout` is two keepalive intervals and the third is the margin: a
/// dead session is gone within 15 s by default, and a single lost keepalive
/// is retransmitted (after one probe timeout) long before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuicTiming {
    /// Longest quiet interval before a keepalive PING.
    pub keepalive: Duration,
    /// Silence (nothing received) after which a session counts as dead.
    pub idle_timeout: Duration,
}

impl QuicTiming {
    /// `keepalive`, with an idle timeout of two keepalive intervals (see the
    /// type's docs for the detection bound).
    pub fn from_keepalive(keepalive: Duration) -> Self {
        Self {
            keepalive,
            idle_timeout: keepalive * 2,
        }
    }

    /// The longest a dead session can stay open: the idle timeout plus one
    /// keepalive interval.
    pub fn dead_session_bound(&self) -> Duration {
        self.idle_timeout + self.keepalive
    }
}

impl Default for QuicTiming {
    /// A keepalive every 5 s, idle timeout 10 s: a dead session is closed
    /// within 15 s.
    fn default() -> Self {
        Self::from_keepalive(Duration::from_secs(5))
    }
}

/// How to build a [`QuicEndpoint`].
#[derive(Debug, Clone)]
pub struct QuicConfig {
    /// Wall-clock anchor: certificates are checked against the time it gives
    /// for `now`.
    pub wall_clock: WallClock,
    /// The coordinator's TLS server configuration; `None` for a client-only
    /// endpoint (node, `tlctl`).
    pub server: Option<Arc<rustls::ServerConfig>>,
    /// Keepalive and idle timeout of every session.
    pub timing: QuicTiming,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicTransmit {
    /// Where to send it.
    pub dst: SocketAddr,
    /// The local address to send it from, when the session arrived on a
    /// specific one (a multi-homed coordinator answers from the address it
    /// was reached at).
    pub src_ip: Option<IpAddr>,
    /// The datagram, sent unchanged.
    pub payload: Bytes,
}

/// What happened to a session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuicEvent {
    /// The mutual handshake completed; the byte stream is open.
    Connected {
        /// The session.
        conn: ConnId,
        /// The peer's certificate chain, leaf first; empty when a client
        /// presented none ([`super::tls_config::ClientAuth::Optional`]).
        peer_chain: Vec<CertificateDer<'static>>,
        /// The peer's address.
        remote: SocketAddr,
    },
    /// The next bytes of the peer's stream, in order.
    Received {
        /// The session.
        conn: ConnId,
        /// The bytes.
        bytes: Bytes,
    },
    /// The session is over; its id is not used again.
    Closed {
        /// The session.
        conn: ConnId,
        /// Why.
        reason: CloseReason,
    },
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// [`QuicEndpoint::close`] was called.
    Local,
    /// The peer's application closed it.
    PeerClosed {
        /// The peer's close code.
        code: u64,
        /// The peer's reason text (bytes as sent).
        reason: Bytes,
    },
    /// Nothing was heard from the peer for the idle timeout.
    TimedOut,
    /// The connection broke after it was established.
    TransportError(String),
    /// The handshake failed: a certificate was refused, the ALPN or the
    /// server name did not match, or the peer reported such a failure.
    HandshakeFailed(String),
}

/// Counts for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuicCounters {
    /// Datagrams fed to [`QuicEndpoint::handle_datagram`].
    pub datagrams_received: u64,
    /// Datagrams quinn dropped (undecodable, unknown connection, stale).
    pub datagrams_dropped: u64,
    /// Datagrams handed out by [`QuicEndpoint::poll_transmit`].
    pub datagrams_sent: u64,
    /// Incoming connections accepted.
    pub accepted: u64,
    /// Incoming connections whose first flight already failed (reported
    /// as [`QuicEvent::Closed`] with an id of their own).
    pub refused: u64,
    /// Incoming connections refused unopened while not accepting
    /// ([`QuicEndpoint::set_accepting`]).
    pub throttled: u64,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QuicError {
    /// No session has this id (never existed, or long gone).
    #[error("no QUIC session {0}")]
    UnknownConnection(ConnId),
    /// The session is closed.
    #[error("QUIC session {0} is closed")]
    Closed(ConnId),
    /// Too many bytes wait for the stream already.
    #[error("QUIC session {conn} already buffers {buffered} unsent bytes (limit {MAX_UNSENT})")]
    SendBufferFull {
        /// The session.
        conn: ConnId,
        /// Bytes waiting.
        buffered: usize,
    },
    /// quinn refused to start the connection.
    #[error("cannot start a QUIC connection: {0}")]
    Connect(#[from] quinn_proto::ConnectError),
    /// The TLS configuration cannot protect QUIC (it lacks TLS 1.3 or the
    /// AES-128-GCM suite QUIC's Initial packets need).
    #[error("the TLS configuration is unusable for QUIC: {0}")]
    Tls(String),
    /// The timing cannot be used.
    #[error("invalid QUIC timing: {0}")]
    Timing(String),
}

/// A QUIC endpoint carrying control sessions: a coordinator's (accepting, and
/// possibly connecting too) or a node's and `tlctl`'s (connecting).
#[derive(Debug)]
pub struct QuicEndpoint {
    tls: TlsInputs,
    wall_clock: WallClock,
    core: Core,
}

/// Everything but the TLS inputs, so a lend can be held while it runs.
struct Core {
    endpoint: Endpoint,
    client_transport: Arc<TransportConfig>,
    sessions: BTreeMap<ConnId, Session>,
    /// quinn's connection handle (a reused slab index) → session.
    by_handle: BTreeMap<usize, ConnId>,
    /// Initial destination connection ids of outgoing connections.
    rng: Drbg,
    next_id: u64,
    /// The session that sent last, so sending rotates fairly.
    last_sender: Option<ConnId>,
    /// Sessions that may have a datagram to send: every session driven
    /// since its last empty poll. Only these are polled, so an idle session
    /// costs nothing per datagram of another.
    ready: BTreeSet<ConnId>,
    /// Each session's next deadline, earliest first.
    timers: BTreeSet<(Instant, ConnId)>,
    events: VecDeque<QuicEvent>,
    responses: VecDeque<QuicTransmit>,
    buf: Vec<u8>,
    counters: QuicCounters,
    /// Whether a new incoming connection is accepted now.
    accepting: bool,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("sessions", &self.sessions.keys().collect::<Vec<_>>())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl QuicEndpoint {
    /// An endpoint whose every random choice derives from `rng`.
    ///
    /// # Errors
    /// [`QuicError::Tls`] when the server configuration cannot protect QUIC,
    /// [`QuicError::Timing`] when the keepalive is zero or not shorter than
    /// the idle timeout.
    pub fn new(config: QuicConfig, mut rng: Drbg) -> Result<Self, QuicError> {
        let timing = config.timing;
        if timing.keepalive.is_zero() || timing.keepalive >= timing.idle_timeout {
            return Err(QuicError::Timing(format!(
                "keepalive {:?} must be positive and shorter than the idle timeout {:?}",
                timing.keepalive, timing.idle_timeout
            )));
        }
        let server = match config.server {
            Some(tls) => Some(Arc::new(seeded::server_config(tls, &timing, &mut rng)?)),
            None => None,
        };
        let endpoint_config = Arc::new(seeded::endpoint_config(&mut rng));
        let tls = TlsInputs::new(rng.fork());
        let core = Core {
            endpoint: Endpoint::new(endpoint_config, server, true, None),
            client_transport: Arc::new(seeded::transport(&timing, Side::Client)?),
            sessions: BTreeMap::new(),
            by_handle: BTreeMap::new(),
            rng,
            next_id: 0,
            last_sender: None,
            ready: BTreeSet::new(),
            timers: BTreeSet::new(),
            events: VecDeque::new(),
            responses: VecDeque::new(),
            buf: Vec::new(),
            counters: QuicCounters::default(),
            accepting: true,
        };
        Ok(Self {
            tls,
            wall_clock: config.wall_clock,
            core,
        })
    }

    /// Re-anchors wall-clock time (after the driver noticed a clock step).
    pub fn set_wall_clock(&mut self, wall_clock: WallClock) {
        self.wall_clock = wall_clock;
    }

    fn unix_time(&self, now: Instant) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_micros(self.wall_clock.unix_us(now)))
    }

    /// Starts a session to the coordinator at `remote`, whose certificate
    /// must name `server_name`.
    ///
    /// # Errors
    /// [`QuicError::Tls`] when `tls` cannot protect QUIC,
    /// [`QuicError::Connect`] when quinn refuses (an invalid server name, an
    /// unusable remote address).
    pub fn connect(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        server_name: &str,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<ConnId, QuicError> {
        let crypto = QuicClientConfig::try_from(tls).map_err(|e| QuicError::Tls(e.to_string()))?;
        let unix_time = self.unix_time(now);
        let _lent = self.tls.lend(unix_time);
        self.core.connect(now, remote, server_name, crypto)
    }

    /// Queues `bytes` on the session's stream; they go out, in order, once
    /// the stream is open and flow control allows.
    ///
    /// # Errors
    /// [`QuicError::UnknownConnection`], [`QuicError::Closed`], or
    /// [`QuicError::SendBufferFull`] when [`MAX_UNSENT`] bytes already wait.
    pub fn send(&mut self, now: Instant, conn: ConnId, bytes: &[u8]) -> Result<(), QuicError> {
        self.with_session(now, conn, |session, events| {
            session.queue(conn, now, bytes, events)
        })
    }

    /// Closes a session at once with an application `code` and `reason` the
    /// peer sees as [`CloseReason::PeerClosed`]; bytes not yet delivered are
    /// discarded. Reports [`CloseReason::Local`]; closing twice is a no-op.
    ///
    /// # Errors
    /// [`QuicError::UnknownConnection`] when no session has this id.
    pub fn close(
        &mut self,
        now: Instant,
        conn: ConnId,
        code: u32,
        reason: &[u8],
    ) -> Result<(), QuicError> {
        self.with_session(now, conn, |session, events| {
            session.close(conn, now, code, reason, events);
            Ok(())
        })
    }

    /// Closes a session with `code` and `reason` once every byte queued by
    /// [`QuicEndpoint::send`] has been delivered (the stream is finished and
    /// acknowledged), so a final message reaches the peer. Reports
    /// [`CloseReason::Local`] when it closes. Nothing more may be sent.
    ///
    /// # Errors
    /// [`QuicError::UnknownConnection`] when no session has this id.
    pub fn close_when_sent(
        &mut self,
        now: Instant,
        conn: ConnId,
        code: u32,
        reason: &[u8],
    ) -> Result<(), QuicError> {
        self.with_session(now, conn, |session, events| {
            session.close_when_sent(conn, now, code, reason, events);
            Ok(())
        })
    }

    /// Runs `f` on one session with the TLS inputs lent, then drives it.
    fn with_session(
        &mut self,
        now: Instant,
        conn: ConnId,
        f: impl FnOnce(&mut session::Session, &mut VecDeque<QuicEvent>) -> Result<(), QuicError>,
    ) -> Result<(), QuicError> {
        let unix_time = self.unix_time(now);
        let _lent = self.tls.lend(unix_time);
        let session = self
            .core
            .sessions
            .get_mut(&conn)
            .ok_or(QuicError::UnknownConnection(conn))?;
        f(session, &mut self.core.events)?;
        self.core.drive(conn, now);
        Ok(())
    }

    /// Feeds a datagram that arrived on socket address `local` from `src`.
    /// Anything that is not valid QUIC for this endpoint is dropped and
    /// counted.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        src: SocketAddr,
        data: &[u8],
    ) {
        let unix_time = self.unix_time(now);
        let _lent = self.tls.lend(unix_time);
        self.core.handle_datagram(now, local, src, data);
    }

    /// Whether datagrams that open a new incoming connection are accepted
    /// (the default). While not, each is answered with a stateless
    /// CONNECTION_REFUSED before any TLS work, no session is created and no
    /// event is reported: the client's handshake fails at once and it backs
    /// off. Counted in [`QuicCounters::throttled`].
    pub fn set_accepting(&mut self, accepting: bool) {
        self.core.accepting = accepting;
    }

    /// Fires every session timer due at `now` (loss detection, keepalive,
    /// idle timeout, draining).
    pub fn handle_timeout(&mut self, now: Instant) {
        let unix_time = self.unix_time(now);
        let _lent = self.tls.lend(unix_time);
        let mut due: Vec<ConnId> = self
            .core
            .timers
            .range(..=(now, ConnId(u64::MAX)))
            .map(|&(_, id)| id)
            .collect();
        due.sort_unstable();
        for id in due {
            if let Some(session) = self.core.sessions.get_mut(&id) {
                session.conn.handle_timeout(now);
                self.core.drive(id, now);
            }
        }
    }

    /// The next datagram to send, one at a time; sessions take turns.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<QuicTransmit> {
        let unix_time = self.unix_time(now);
        let _lent = self.tls.lend(unix_time);
        let transmit = self.core.poll_transmit(now)?;
        self.core.counters.datagrams_sent += 1;
        Some(transmit)
    }

    /// The next event, in the order things happened.
    pub fn poll_event(&mut self) -> Option<QuicEvent> {
        self.core.events.pop_front()
    }

    /// When [`QuicEndpoint::handle_timeout`] is next needed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.core.timers.first().map(|&(at, _)| at)
    }

    /// Sessions not yet fully drained (closed ones linger for about three
    /// round trips to absorb late packets).
    pub fn open_sessions(&self) -> usize {
        self.core.sessions.len()
    }

    /// Counters since construction.
    pub fn counters(&self) -> QuicCounters {
        self.core.counters
    }

    /// A session's smoothed round-trip time, as QUIC measures it.
    pub fn rtt(&self, conn: ConnId) -> Option<std::time::Duration> {
        self.core.sessions.get(&conn).map(|s| s.conn.rtt())
    }
}

impl Core {
    fn insert(&mut self, handle: quinn_proto::ConnectionHandle, session: Session) -> ConnId {
        let id = ConnId(self.next_id);
        self.next_id += 1;
        self.by_handle.insert(handle.0, id);
        self.sessions.insert(id, session);
        id
    }

    fn connect(
        &mut self,
        now: Instant,
        remote: SocketAddr,
        server_name: &str,
        crypto: QuicClientConfig,
    ) -> Result<ConnId, QuicError> {
        let config = seeded::client_config(crypto, self.client_transport.clone(), &mut self.rng);
        let (handle, conn) = self.endpoint.connect(now, config, remote, server_name)?;
        let id = self.insert(handle, Session::new(handle, conn));
        tracing::debug!(conn = %id, %remote, server_name, "control session connecting");
        self.drive(id, now);
        Ok(id)
    }

    fn handle_datagram(&mut self, now: Instant, local: SocketAddr, src: SocketAddr, data: &[u8]) {
        self.counters.datagrams_received += 1;
        let local_ip = Some(local.ip()).filter(|ip| !ip.is_unspecified());
        self.buf.clear();
        let event = self.endpoint.handle(
            now,
            src,
            local_ip,
            None,
            BytesMut::from(data),
            &mut self.buf,
        );
        match event {
            None => {
                self.counters.datagrams_dropped += 1;
                tracing::trace!(%src, len = data.len(), "QUIC datagram dropped");
            }
            Some(DatagramEvent::Response(transmit)) => self.respond(&transmit),
            Some(DatagramEvent::NewConnection(incoming)) => self.accept(now, incoming),
            Some(DatagramEvent::ConnectionEvent(handle, event)) => {
                let Some(&id) = self.by_handle.get(&handle.0) else {
                    self.counters.datagrams_dropped += 1;
                    return;
                };
                if let Some(session) = self.sessions.get_mut(&id) {
                    session.conn.handle_event(event);
                    self.drive(id, now);
                }
            }
        }
    }

    /// Accepts every incoming connection: the application refuses a peer
    /// after inspecting its certificate, by closing the session.
    fn accept(&mut self, now: Instant, incoming: Incoming) {
        let remote = incoming.remote_address();
        if !self.accepting {
            self.counters.throttled += 1;
            tracing::trace!(%remote, "incoming QUIC connection refused: not accepting now");
            self.buf.clear();
            let transmit = self.endpoint.refuse(incoming, &mut self.buf);
            self.respond(&transmit);
            return;
        }
        self.buf.clear();
        match self.endpoint.accept(incoming, now, &mut self.buf, None) {
            Ok((handle, conn)) => {
                self.counters.accepted += 1;
                let id = self.insert(handle, Session::new(handle, conn));
                tracing::debug!(conn = %id, %remote, "control session accepted");
                self.drive(id, now);
            }
            Err(refusal) => {
                // The first flight already failed (a wrong ALPN, a bad
                // ClientHello): report it like any failed handshake.
                self.counters.refused += 1;
                let id = ConnId(self.next_id);
                self.next_id += 1;
                tracing::debug!(conn = %id, %remote, cause = %refusal.cause, "incoming QUIC connection refused");
                let reason = session::close_reason(refusal.cause, true);
                self.events
                    .push_back(QuicEvent::Closed { conn: id, reason });
                if let Some(transmit) = refusal.response {
                    self.respond(&transmit);
                }
            }
        }
    }

    /// Queues the stateless response quinn wrote into `buf`.
    fn respond(&mut self, transmit: &quinn_proto::Transmit) {
        if self.responses.len() < MAX_RESPONSES {
            let response = self.transmit(transmit);
            self.responses.push_back(response);
        }
    }

    /// Copies the datagram quinn wrote into `buf`.
    fn transmit(&self, transmit: &quinn_proto::Transmit) -> QuicTransmit {
        QuicTransmit {
            dst: transmit.destination,
            src_ip: transmit.src_ip,
            payload: Bytes::copy_from_slice(&self.buf[..transmit.size]),
        }
    }

    /// Moves a session's internal events along, files its next deadline,
    /// marks it as possibly having something to send, and forgets it once
    /// drained.
    fn drive(&mut self, id: ConnId, now: Instant) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        let before = session.deadline;
        let drained = session.drive(id, now, &mut self.endpoint, &mut self.events);
        let after = session.deadline;
        if let Some(at) = before {
            self.timers.remove(&(at, id));
        }
        if drained {
            self.ready.remove(&id);
            if let Some(session) = self.sessions.remove(&id) {
                self.by_handle.remove(&session.handle.0);
            }
            tracing::trace!(conn = %id, "control session drained");
            return;
        }
        if let Some(at) = after {
            self.timers.insert((at, id));
        }
        self.ready.insert(id);
    }

    /// One datagram of session `id`, driving it after.
    fn poll_session(&mut self, id: ConnId, now: Instant) -> Option<QuicTransmit> {
        let session = self.sessions.get_mut(&id)?;
        self.buf.clear();
        let transmit = session
            .conn
            .poll_transmit(now, 1, &mut self.buf)
            .map(|t| self.transmit(&t));
        self.drive(id, now);
        transmit
    }

    fn poll_transmit(&mut self, now: Instant) -> Option<QuicTransmit> {
        if let Some(response) = self.responses.pop_front() {
            return Some(response);
        }
        let mut cursor = self.last_sender;
        while let Some(id) = self.sender_after(cursor) {
            // Driving after an empty poll can queue frames (new connection
            // ids, say): look once more before the session rests.
            let transmit = self
                .poll_session(id, now)
                .or_else(|| self.poll_session(id, now));
            if transmit.is_some() {
                self.last_sender = Some(id);
                return transmit;
            }
            self.ready.remove(&id);
            cursor = Some(id);
        }
        None
    }

    /// The ready session after `id` in id order, wrapping around.
    fn sender_after(&self, id: Option<ConnId>) -> Option<ConnId> {
        let after = match id {
            Some(id) => self
                .ready
                .range((Bound::Excluded(id), Bound::Unbounded))
                .next(),
            None => None,
        };
        after.or_else(|| self.ready.first()).copied()
    }
}
