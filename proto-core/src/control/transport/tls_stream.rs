//! One control session over a byte stream: rustls' sans-IO connection
//! (`read_tls`, `process_new_packets`, `write_tls`) between the stream's
//! bytes and the application's, with the session's liveness timers.
//!
//! - The handshake is the QUIC one's twin: the same rustls configurations,
//!   so the same roots, client-auth rules and ALPN (`transitloom/1`, which
//!   both ends must have negotiated).
//! - A client reports `Connected` only after the server's first record
//!   (the server writes a `Keepalive` frame as soon as it verified the
//!   client certificate), as QUIC waits for HANDSHAKE_DONE: a refused
//!   client sees the server's alert, never a session.
//! - Each end writes a `Keepalive` frame after one keepalive interval
//!   without writing, and closes a session silent for the idle timeout (two
//!   intervals): a live peer is heard at least once per interval.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rustls::pki_types::ServerName;
use rustls_pki_types::CertificateDer;

use super::{ControlEvent, SessionId, StreamCommand};
use crate::control::msg::{self, Message};
use crate::control::quic::{CloseReason, QuicTiming, MAX_UNSENT};
use crate::control::tls_config::ALPN;
use crate::machine::StreamId;

/// What the application has been told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The TLS handshake runs.
    Handshaking,
    /// A client's handshake is done; it waits for the server's first record.
    Confirming,
    /// `Connected` was reported.
    Connected,
    /// `Closed` was reported.
    Closed,
}

/// Where a session's outputs go.
pub(super) struct Sinks<'a> {
    pub(super) session: SessionId,
    pub(super) stream: StreamId,
    pub(super) events: &'a mut VecDeque<ControlEvent>,
    pub(super) commands: &'a mut VecDeque<StreamCommand>,
}

pub(super) struct TlsStream {
    tls: rustls::Connection,
    phase: Phase,
    remote: SocketAddr,
    /// The byte stream is connected (a client waits for the driver).
    opened: bool,
    /// Application bytes waiting for `Connected`.
    unsent: BytesMut,
    /// The peer's close_notify arrived.
    peer_closed: bool,
    last_rx: Instant,
    last_tx: Instant,
    timing: QuicTiming,
    keepalive_seq: u64,
}

impl std::fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("phase", &self.phase)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl TlsStream {
    /// A client session; must run inside a TLS-inputs lend (the
    /// ClientHello draws randomness).
    pub(super) fn client(
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
        remote: SocketAddr,
        now: Instant,
        timing: QuicTiming,
    ) -> Result<Self, String> {
        let name = ServerName::try_from(server_name.to_owned()).map_err(|e| e.to_string())?;
        let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        Ok(Self::new(conn.into(), remote, now, timing, false))
    }

    /// A server session for an accepted stream.
    pub(super) fn server(
        config: Arc<rustls::ServerConfig>,
        remote: SocketAddr,
        now: Instant,
        timing: QuicTiming,
    ) -> Result<Self, String> {
        let conn = rustls::ServerConnection::new(config).map_err(|e| e.to_string())?;
        Ok(Self::new(conn.into(), remote, now, timing, true))
    }

    fn new(
        mut tls: rustls::Connection,
        remote: SocketAddr,
        now: Instant,
        timing: QuicTiming,
        opened: bool,
    ) -> Self {
        // Everything rustls writes is drained after every call, so its own
        // buffers never hold much; the session's cap is on `unsent`.
        tls.set_buffer_limit(None);
        Self {
            tls,
            phase: Phase::Handshaking,
            remote,
            opened,
            unsent: BytesMut::new(),
            peer_closed: false,
            last_rx: now,
            last_tx: now,
            timing,
            keepalive_seq: 0,
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    fn is_server(&self) -> bool {
        matches!(self.tls, rustls::Connection::Server(_))
    }

    /// The byte stream connected: send the ClientHello.
    pub(super) fn on_opened(&mut self, now: Instant, sinks: &mut Sinks<'_>) {
        self.opened = true;
        self.flush_tls(now, sinks);
    }

    /// Bytes from the peer.
    pub(super) fn on_bytes(&mut self, now: Instant, mut bytes: &[u8], sinks: &mut Sinks<'_>) {
        if self.phase == Phase::Closed {
            return;
        }
        self.last_rx = now;
        while !bytes.is_empty() {
            if let Err(err) = self.tls.read_tls(&mut bytes) {
                return self.fail(now, err.to_string(), sinks);
            }
            if let Err(err) = self.tls.process_new_packets() {
                return self.fail(now, err.to_string(), sinks);
            }
            self.progress(now, sinks);
            if self.phase == Phase::Closed {
                return;
            }
        }
        self.flush_tls(now, sinks);
    }

    /// Moves the handshake phase along and hands plaintext up.
    fn progress(&mut self, now: Instant, sinks: &mut Sinks<'_>) {
        if self.phase == Phase::Handshaking && !self.tls.is_handshaking() {
            if self.tls.alpn_protocol() != Some(ALPN) {
                let why = "the peer did not negotiate the transitloom/1 protocol (ALPN)";
                return self.fail(now, why.to_owned(), sinks);
            }
            if self.is_server() {
                // The client certificate is verified: confirm with a first
                // record, as QUIC's HANDSHAKE_DONE does.
                self.connected(sinks);
                self.write_keepalive();
                self.flush_unsent(now, sinks);
            } else {
                self.phase = Phase::Confirming;
            }
        }
        let mut plain = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match self.tls.reader().read(&mut buf) {
                Ok(0) => {
                    self.peer_closed = true;
                    break;
                }
                Ok(n) => plain.extend_from_slice(&buf[..n]),
                Err(_) => break, // WouldBlock: nothing more decrypted yet
            }
        }
        if !plain.is_empty() {
            if self.phase == Phase::Confirming {
                self.connected(sinks);
                self.flush_unsent(now, sinks);
            }
            if self.phase == Phase::Connected {
                sinks.events.push_back(ControlEvent::Received {
                    session: sinks.session,
                    bytes: Bytes::from(plain),
                });
            }
        }
        if self.peer_closed {
            let reason = if self.phase == Phase::Connected {
                CloseReason::PeerClosed {
                    code: 0,
                    reason: Bytes::new(),
                }
            } else {
                CloseReason::HandshakeFailed("the peer closed during the handshake".to_owned())
            };
            self.close(now, reason, sinks);
        }
    }

    fn connected(&mut self, sinks: &mut Sinks<'_>) {
        self.phase = Phase::Connected;
        let peer_chain: Vec<CertificateDer<'static>> = self
            .tls
            .peer_certificates()
            .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
            .unwrap_or_default();
        sinks.events.push_back(ControlEvent::Connected {
            session: sinks.session,
            carrier: super::Carrier::Tcp,
            peer_chain,
            remote: self.remote,
        });
    }

    /// Queues application bytes (whole frames: keepalives go between them).
    pub(super) fn send(&mut self, now: Instant, bytes: &[u8], sinks: &mut Sinks<'_>) -> bool {
        if self.phase == Phase::Closed {
            return false;
        }
        self.unsent.extend_from_slice(bytes);
        self.flush_unsent(now, sinks);
        true
    }

    fn flush_unsent(&mut self, now: Instant, sinks: &mut Sinks<'_>) {
        if self.phase != Phase::Connected || self.unsent.is_empty() {
            return;
        }
        let bytes = self.unsent.split();
        // Unbounded buffer: the write takes everything.
        let _ = self.tls.writer().write_all(&bytes);
        self.flush_tls(now, sinks);
    }

    fn write_keepalive(&mut self) {
        self.keepalive_seq += 1;
        let mut frame = BytesMut::new();
        if msg::encode(
            &Message::Keepalive {
                seq: self.keepalive_seq,
            },
            &mut frame,
        )
        .is_ok()
        {
            let _ = self.tls.writer().write_all(&frame);
        }
    }

    /// Moves what rustls wants to send to the stream.
    fn flush_tls(&mut self, now: Instant, sinks: &mut Sinks<'_>) {
        if !self.opened {
            return;
        }
        let mut out = Vec::new();
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        if !out.is_empty() {
            self.last_tx = now;
            sinks.commands.push_back(StreamCommand::Write {
                stream: sinks.stream,
                bytes: Bytes::from(out),
            });
        }
    }

    /// TLS refused the peer (or the peer's record): the alert goes out,
    /// then the stream closes.
    fn fail(&mut self, now: Instant, why: String, sinks: &mut Sinks<'_>) {
        let reason = if self.phase == Phase::Connected {
            CloseReason::TransportError(why)
        } else {
            CloseReason::HandshakeFailed(why)
        };
        self.flush_tls(now, sinks);
        self.finish(reason, sinks);
    }

    /// Ends the session in order: close_notify, then the stream.
    pub(super) fn close(&mut self, now: Instant, reason: CloseReason, sinks: &mut Sinks<'_>) {
        if self.phase == Phase::Closed {
            return;
        }
        // What the application queued goes first (close_when_sent).
        self.flush_unsent(now, sinks);
        self.tls.send_close_notify();
        self.flush_tls(now, sinks);
        self.finish(reason, sinks);
    }

    fn finish(&mut self, reason: CloseReason, sinks: &mut Sinks<'_>) {
        self.phase = Phase::Closed;
        sinks.commands.push_back(StreamCommand::Close {
            stream: sinks.stream,
        });
        sinks.events.push_back(ControlEvent::Closed {
            session: sinks.session,
            reason,
        });
    }

    /// The byte stream ended under the session (the driver's report).
    pub(super) fn on_stream_closed(
        &mut self,
        error: Option<std::io::ErrorKind>,
        sinks: &mut Sinks<'_>,
    ) {
        if self.phase == Phase::Closed {
            return;
        }
        let why = match error {
            Some(kind) => format!("the stream broke: {kind}"),
            None => "the peer closed the stream without close_notify".to_owned(),
        };
        let reason = match self.phase {
            Phase::Connected => CloseReason::TransportError(why),
            _ if !self.opened => CloseReason::TransportError(why),
            _ => CloseReason::HandshakeFailed(why),
        };
        self.phase = Phase::Closed;
        sinks.events.push_back(ControlEvent::Closed {
            session: sinks.session,
            reason,
        });
    }

    /// When [`TlsStream::handle_timeout`] is next needed.
    pub(super) fn deadline(&self) -> Option<Instant> {
        if self.phase == Phase::Closed {
            return None;
        }
        let idle = self.last_rx + self.timing.idle_timeout;
        let keepalive = matches!(self.phase, Phase::Confirming | Phase::Connected)
            .then(|| self.last_tx + self.timing.keepalive);
        Some(keepalive.map_or(idle, |k| k.min(idle)))
    }

    /// Closes a silent session; writes a keepalive after a quiet interval.
    pub(super) fn handle_timeout(&mut self, now: Instant, sinks: &mut Sinks<'_>) {
        if self.phase == Phase::Closed {
            return;
        }
        if now >= self.last_rx + self.timing.idle_timeout {
            let reason = if self.phase == Phase::Connected {
                CloseReason::TimedOut
            } else if self.opened {
                CloseReason::HandshakeFailed("the handshake timed out".to_owned())
            } else {
                CloseReason::TimedOut
            };
            return self.close(now, reason, sinks);
        }
        let talking = matches!(self.phase, Phase::Confirming | Phase::Connected);
        if talking && now >= self.last_tx + self.timing.keepalive {
            self.write_keepalive();
            self.flush_tls(now, sinks);
        }
    }

    /// Whether queueing `extra` more bytes stays under the cap.
    pub(super) fn has_room(&self, extra: usize) -> bool {
        self.unsent.len() + extra <= MAX_UNSENT
    }
}
