//! One control-session abstraction over both carriers of DESIGN §5: QUIC
//! ([`QuicEndpoint`]) as primary and TCP + TLS 1.3 as fallback on the same
//! port number. The coordinator, the node and `tlctl` see sessions
//! ([`SessionId`]) that connect, carry an ordered byte stream of control
//! frames each way, and close with a [`CloseReason`]; which carrier is under
//! a session is only reported ([`ControlEvent::Connected`]), never needed.
//!
//! Both carriers use the same rustls configurations
//! ([`super::tls_config`]): the same roots, the same client-auth rules, the
//! same ALPN `transitloom/1` (the application protocol is the same over
//! both: the same messages and the same framing, so one name is right), and
//! TLS 1.3 only. Randomness and wall-clock time are lent to rustls around
//! every call, as for QUIC.
//!
//! Liveness is the same bound on both: QUIC sends PINGs and times out after
//! its idle timeout; a TCP session writes a `Keepalive` frame after one
//! keepalive interval without writing and closes after the idle timeout
//! (two intervals) without hearing anything. So on either carrier a dead
//! session is noticed within two keepalive intervals of the last thing
//! heard (QUIC may take one more interval, see [`QuicTiming`]).
//!
//! Sans-IO: datagrams come in through [`ControlTransport::handle_datagram`]
//! and go out through [`ControlTransport::poll_transmit`]; stream inputs come
//! in through the `handle_stream_*` methods and leave as
//! [`StreamCommand`]s from [`ControlTransport::poll_stream_command`], which
//! a machine turns into its stream outputs.

#[cfg(test)]
mod tests;
mod tls_stream;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls_pki_types::{CertificateDer, UnixTime};

use super::quic::{
    CloseReason, ConnId, QuicConfig, QuicCounters, QuicEndpoint, QuicError, QuicEvent, QuicTiming,
    QuicTransmit, MAX_UNSENT,
};
use super::tls_config::TlsInputs;
use crate::csprng::Drbg;
use crate::machine::{Output, StreamId};
use crate::time::WallClock;
use tls_stream::{Sinks, TlsStream};

/// What carries a control session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Carrier {
    /// QUIC over UDP (primary).
    Quic,
    /// TLS over TCP (fallback when UDP is blocked).
    Tcp,
}

impl Carrier {
    /// The name status and logs use: `quic` or `tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Quic => "quic",
            Self::Tcp => "tcp",
        }
    }
}

impl fmt::Display for Carrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A control session, on either carrier; never reused.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session#{}", self.0)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What happened to a session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlEvent {
    /// The mutual handshake completed; the byte stream is open.
    Connected {
        /// The session.
        session: SessionId,
        /// What carries it.
        carrier: Carrier,
        /// The peer's certificate chain, leaf first; empty when a client
        /// presented none.
        peer_chain: Vec<CertificateDer<'static>>,
        /// The peer's address.
        remote: SocketAddr,
    },
    /// The next bytes of the peer's stream, in order.
    Received {
        /// The session.
        session: SessionId,
        /// The bytes.
        bytes: Bytes,
    },
    /// The session is over; its id is not used again.
    Closed {
        /// The session.
        session: SessionId,
        /// Why.
        reason: CloseReason,
    },
}

/// What the TCP side asks of the driver (the owner turns each into the
/// matching [`Output`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamCommand {
    /// Open a stream to `remote`.
    Connect {
        /// The stream.
        stream: StreamId,
        /// Where to.
        remote: SocketAddr,
    },
    /// Write bytes to a stream.
    Write {
        /// The stream.
        stream: StreamId,
        /// The bytes.
        bytes: Bytes,
    },
    /// Close a stream after what was written.
    Close {
        /// The stream.
        stream: StreamId,
    },
}

impl StreamCommand {
    /// The machine output this command is.
    pub fn into_output<E>(self) -> Output<E> {
        match self {
            Self::Connect { stream, remote } => Output::ConnectStream { stream, remote },
            Self::Write { stream, bytes } => Output::StreamWrite { stream, bytes },
            Self::Close { stream } => Output::CloseStream { stream },
        }
    }
}

/// Counts of the TCP side, for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamCounters {
    /// Streams accepted into a TLS session.
    pub accepted: u64,
    /// Streams closed unopened while not accepting (the handshake limit).
    pub throttled: u64,
    /// Sessions connected over TCP.
    pub connected: u64,
    /// Bytes received on streams (TLS records).
    pub bytes_received: u64,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// No session has this id (never existed, or gone).
    #[error("no control session {0}")]
    UnknownSession(SessionId),
    /// The session is closed.
    #[error("control session {0} is closed")]
    Closed(SessionId),
    /// Too many bytes wait already.
    #[error("control session {0} already buffers {MAX_UNSENT} unsent bytes")]
    SendBufferFull(SessionId),
    /// The QUIC side refused.
    #[error(transparent)]
    Quic(#[from] QuicError),
    /// The TLS configuration or server name is unusable over TCP.
    #[error("cannot start a TLS session over TCP: {0}")]
    Tls(String),
}

#[derive(Debug, Clone, Copy)]
enum Route {
    Quic(ConnId),
    Tcp(StreamId),
}

#[derive(Debug)]
struct StreamSlot {
    session: SessionId,
    tls: TlsStream,
}

/// Control sessions over QUIC and TCP. See the module docs.
#[derive(Debug)]
pub struct ControlTransport {
    quic: QuicEndpoint,
    stream_tls: TlsInputs,
    wall_clock: WallClock,
    server: Option<Arc<rustls::ServerConfig>>,
    timing: QuicTiming,
    next_session: u64,
    next_stream: u64,
    by_conn: BTreeMap<ConnId, SessionId>,
    routes: BTreeMap<SessionId, Route>,
    streams: BTreeMap<StreamId, StreamSlot>,
    /// Each stream session's next deadline, earliest first.
    timers: BTreeSet<(Instant, StreamId)>,
    deadline_of: BTreeMap<StreamId, Instant>,
    events: VecDeque<ControlEvent>,
    commands: VecDeque<StreamCommand>,
    accepting: bool,
    stream_counters: StreamCounters,
}

impl ControlTransport {
    /// A transport whose every random choice derives from `rng`.
    ///
    /// # Errors
    /// As [`QuicEndpoint::new`].
    pub fn new(config: QuicConfig, mut rng: Drbg) -> Result<Self, QuicError> {
        let stream_tls = TlsInputs::new(rng.fork());
        let server = config.server.clone();
        let wall_clock = config.wall_clock;
        let timing = config.timing;
        let quic = QuicEndpoint::new(config, rng)?;
        Ok(Self {
            quic,
            stream_tls,
            wall_clock,
            server,
            timing,
            next_session: 0,
            next_stream: 1,
            by_conn: BTreeMap::new(),
            routes: BTreeMap::new(),
            streams: BTreeMap::new(),
            timers: BTreeSet::new(),
            deadline_of: BTreeMap::new(),
            events: VecDeque::new(),
            commands: VecDeque::new(),
            accepting: true,
            stream_counters: StreamCounters::default(),
        })
    }

    fn unix_time(&self, now: Instant) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_micros(self.wall_clock.unix_us(now)))
    }

    fn new_session(&mut self) -> SessionId {
        let id = SessionId(self.next_session);
        self.next_session += 1;
        id
    }

    /// Re-anchors wall-clock time (after the driver noticed a clock step).
    pub fn set_wall_clock(&mut self, wall_clock: WallClock) {
        self.wall_clock = wall_clock;
        self.quic.set_wall_clock(wall_clock);
    }

    /// Starts a session to the coordinator at `remote` over `carrier`; its
    /// certificate must name `server_name`.
    ///
    /// # Errors
    /// [`TransportError::Quic`] or [`TransportError::Tls`] when the
    /// configuration or the name is unusable.
    pub fn connect(
        &mut self,
        now: Instant,
        carrier: Carrier,
        remote: SocketAddr,
        server_name: &str,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<SessionId, TransportError> {
        match carrier {
            Carrier::Quic => {
                let conn = self.quic.connect(now, remote, server_name, tls)?;
                let session = self.new_session();
                self.by_conn.insert(conn, session);
                self.routes.insert(session, Route::Quic(conn));
                Ok(session)
            }
            Carrier::Tcp => {
                let unix_time = self.unix_time(now);
                let tls = {
                    let _lent = self.stream_tls.lend(unix_time);
                    TlsStream::client(tls, server_name, remote, now, self.timing)
                }
                .map_err(TransportError::Tls)?;
                let stream = StreamId(self.next_stream);
                self.next_stream += 1;
                let session = self.new_session();
                self.routes.insert(session, Route::Tcp(stream));
                self.streams.insert(stream, StreamSlot { session, tls });
                self.commands
                    .push_back(StreamCommand::Connect { stream, remote });
                tracing::debug!(%session, %stream, %remote, server_name, "control session connecting over TCP");
                self.refile(stream);
                Ok(session)
            }
        }
    }

    /// Runs `f` on one stream session with the TLS inputs lent, then files
    /// its deadline and forgets it once closed.
    fn with_stream<T>(
        &mut self,
        now: Instant,
        stream: StreamId,
        f: impl FnOnce(&mut TlsStream, &mut Sinks<'_>) -> T,
    ) -> Option<T> {
        let unix_time = self.unix_time(now);
        let slot = self.streams.get_mut(&stream)?;
        let mut sinks = Sinks {
            session: slot.session,
            stream,
            events: &mut self.events,
            commands: &mut self.commands,
        };
        let out = {
            let _lent = self.stream_tls.lend(unix_time);
            f(&mut slot.tls, &mut sinks)
        };
        self.refile(stream);
        Some(out)
    }

    fn refile(&mut self, stream: StreamId) {
        if let Some(at) = self.deadline_of.remove(&stream) {
            self.timers.remove(&(at, stream));
        }
        let Some(slot) = self.streams.get(&stream) else {
            return;
        };
        if slot.tls.is_closed() {
            let session = slot.session;
            self.streams.remove(&stream);
            self.routes.remove(&session);
            return;
        }
        if let Some(at) = slot.tls.deadline() {
            self.timers.insert((at, stream));
            self.deadline_of.insert(stream, at);
        }
    }

    fn route(&self, session: SessionId) -> Result<Route, TransportError> {
        self.routes
            .get(&session)
            .copied()
            .ok_or(TransportError::UnknownSession(session))
    }

    /// Queues `bytes` (whole control frames) on the session's stream; they
    /// go out in order once the session is connected.
    ///
    /// # Errors
    /// [`TransportError::UnknownSession`], [`TransportError::Closed`], or
    /// [`TransportError::SendBufferFull`].
    pub fn send(
        &mut self,
        now: Instant,
        session: SessionId,
        bytes: &[u8],
    ) -> Result<(), TransportError> {
        match self.route(session)? {
            Route::Quic(conn) => Ok(self.quic.send(now, conn, bytes)?),
            Route::Tcp(stream) => {
                let room = self
                    .streams
                    .get(&stream)
                    .is_some_and(|s| s.tls.has_room(bytes.len()));
                if !room {
                    return Err(TransportError::SendBufferFull(session));
                }
                match self.with_stream(now, stream, |tls, sinks| tls.send(now, bytes, sinks)) {
                    Some(true) => Ok(()),
                    _ => Err(TransportError::Closed(session)),
                }
            }
        }
    }

    /// Closes a session at once; QUIC's peer sees `code` and `reason`, a
    /// TCP peer an orderly TLS close. Reports [`CloseReason::Local`].
    ///
    /// # Errors
    /// [`TransportError::UnknownSession`].
    pub fn close(
        &mut self,
        now: Instant,
        session: SessionId,
        code: u32,
        reason: &[u8],
    ) -> Result<(), TransportError> {
        match self.route(session)? {
            Route::Quic(conn) => Ok(self.quic.close(now, conn, code, reason)?),
            Route::Tcp(stream) => {
                self.with_stream(now, stream, |tls, sinks| {
                    tls.close(now, CloseReason::Local, sinks)
                });
                Ok(())
            }
        }
    }

    /// Closes a session once what was queued is delivered, so a final
    /// message reaches the peer. Reports [`CloseReason::Local`].
    ///
    /// # Errors
    /// [`TransportError::UnknownSession`].
    pub fn close_when_sent(
        &mut self,
        now: Instant,
        session: SessionId,
        code: u32,
        reason: &[u8],
    ) -> Result<(), TransportError> {
        match self.route(session)? {
            Route::Quic(conn) => Ok(self.quic.close_when_sent(now, conn, code, reason)?),
            // The driver sends every written byte before it closes.
            Route::Tcp(_) => self.close(now, session, code, reason),
        }
    }

    /// The carrier of a live session.
    pub fn carrier(&self, session: SessionId) -> Option<Carrier> {
        match self.routes.get(&session)? {
            Route::Quic(_) => Some(Carrier::Quic),
            Route::Tcp(_) => Some(Carrier::Tcp),
        }
    }

    /// A live session's round-trip time: QUIC's estimate; `None` over TCP
    /// (not measured) or for an unknown session.
    pub fn rtt(&self, session: SessionId) -> Option<std::time::Duration> {
        match self.routes.get(&session)? {
            Route::Quic(conn) => self.quic.rtt(*conn),
            Route::Tcp(_) => None,
        }
    }

    /// Feeds a QUIC datagram that arrived on `local` from `src`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        src: SocketAddr,
        data: &[u8],
    ) {
        self.quic.handle_datagram(now, local, src, data);
    }

    /// Whether new incoming sessions (QUIC and TCP) are accepted now.
    pub fn set_accepting(&mut self, accepting: bool) {
        self.accepting = accepting;
        self.quic.set_accepting(accepting);
    }

    /// A listener accepted `stream` from `remote`: starts a server TLS
    /// session on it, or closes it unopened while not accepting (or
    /// without a server configuration). Returns whether it was accepted.
    pub fn handle_stream_accepted(
        &mut self,
        now: Instant,
        stream: StreamId,
        remote: SocketAddr,
    ) -> bool {
        let server = match &self.server {
            Some(server) if self.accepting => server.clone(),
            _ => {
                if self.server.is_some() {
                    self.stream_counters.throttled += 1;
                }
                tracing::trace!(%stream, %remote, "incoming TCP session refused: not accepting now");
                self.commands.push_back(StreamCommand::Close { stream });
                return false;
            }
        };
        match TlsStream::server(server, remote, now, self.timing) {
            Ok(tls) => {
                let session = self.new_session();
                self.stream_counters.accepted += 1;
                self.routes.insert(session, Route::Tcp(stream));
                self.streams.insert(stream, StreamSlot { session, tls });
                tracing::debug!(%session, %stream, %remote, "control session accepted over TCP");
                self.refile(stream);
                true
            }
            Err(err) => {
                tracing::warn!(%stream, %err, "cannot start a TLS server session");
                self.commands.push_back(StreamCommand::Close { stream });
                false
            }
        }
    }

    /// A stream this transport asked for is connected.
    pub fn handle_stream_opened(&mut self, now: Instant, stream: StreamId) {
        self.with_stream(now, stream, |tls, sinks| tls.on_opened(now, sinks));
    }

    /// Bytes arrived on a stream.
    pub fn handle_stream_data(&mut self, now: Instant, stream: StreamId, bytes: &[u8]) {
        self.stream_counters.bytes_received += bytes.len() as u64;
        let before = self.events.len();
        self.with_stream(now, stream, |tls, sinks| tls.on_bytes(now, bytes, sinks));
        self.count_connected(before);
    }

    fn count_connected(&mut self, before: usize) {
        let connected = self
            .events
            .iter()
            .skip(before)
            .filter(|e| matches!(e, ControlEvent::Connected { .. }))
            .count();
        self.stream_counters.connected += connected as u64;
    }

    /// A stream ended under its session (or never connected).
    pub fn handle_stream_closed(
        &mut self,
        now: Instant,
        stream: StreamId,
        error: Option<std::io::ErrorKind>,
    ) {
        self.with_stream(now, stream, |tls, sinks| tls.on_stream_closed(error, sinks));
    }

    /// Whether `stream` belongs to this transport.
    pub fn owns_stream(&self, stream: StreamId) -> bool {
        self.streams.contains_key(&stream)
    }

    /// Fires every timer due at `now`, on both carriers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.quic.handle_timeout(now);
        let due: Vec<StreamId> = self
            .timers
            .range(..=(now, StreamId(u64::MAX)))
            .map(|&(_, id)| id)
            .collect();
        for stream in due {
            self.with_stream(now, stream, |tls, sinks| tls.handle_timeout(now, sinks));
        }
    }

    /// The next QUIC datagram to send.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<QuicTransmit> {
        self.quic.poll_transmit(now)
    }

    /// The next stream request for the driver.
    pub fn poll_stream_command(&mut self) -> Option<StreamCommand> {
        self.commands.pop_front()
    }

    /// The next event, QUIC sessions' and TCP sessions' alike.
    pub fn poll_event(&mut self) -> Option<ControlEvent> {
        while let Some(event) = self.quic.poll_event() {
            self.translate(event);
        }
        self.events.pop_front()
    }

    fn translate(&mut self, event: QuicEvent) {
        let session_of = |this: &mut Self, conn: ConnId| match this.by_conn.get(&conn) {
            Some(&session) => session,
            None => {
                let session = this.new_session();
                this.by_conn.insert(conn, session);
                this.routes.insert(session, Route::Quic(conn));
                session
            }
        };
        let event = match event {
            QuicEvent::Connected {
                conn,
                peer_chain,
                remote,
            } => ControlEvent::Connected {
                session: session_of(self, conn),
                carrier: Carrier::Quic,
                peer_chain,
                remote,
            },
            QuicEvent::Received { conn, bytes } => ControlEvent::Received {
                session: session_of(self, conn),
                bytes,
            },
            QuicEvent::Closed { conn, reason } => {
                let session = session_of(self, conn);
                self.by_conn.remove(&conn);
                self.routes.remove(&session);
                ControlEvent::Closed { session, reason }
            }
        };
        self.events.push_back(event);
    }

    /// When [`ControlTransport::handle_timeout`] is next needed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let stream = self.timers.first().map(|&(at, _)| at);
        [self.quic.poll_timeout(), stream]
            .into_iter()
            .flatten()
            .min()
    }

    /// The QUIC side's counters.
    pub fn quic_counters(&self) -> QuicCounters {
        self.quic.counters()
    }

    /// The TCP side's counters.
    pub fn stream_counters(&self) -> StreamCounters {
        self.stream_counters
    }

    /// Sessions open on TCP.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }
}
