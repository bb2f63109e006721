//! One control session: a quinn connection, its single stream, the bytes
//! waiting for it, and what has been reported to the application.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use quinn_proto::{
    Connection, ConnectionError, ConnectionHandle, Dir, Endpoint, Event, ReadError, Side,
    StreamEvent, StreamId, VarInt, WriteError,
};
use rustls_pki_types::CertificateDer;

use super::{CloseReason, ConnId, QuicError, QuicEvent, MAX_UNSENT, STREAM_ENDED};

/// What the application has been told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing yet: the handshake runs (or, on a client, awaits
    /// confirmation).
    Handshaking,
    /// `Connected` was reported.
    Connected,
    /// `Closed` was reported; the connection may still be draining.
    Closed,
}

pub(super) struct Session {
    pub(super) handle: ConnectionHandle,
    pub(super) conn: Connection,
    phase: Phase,
    /// quinn reported the handshake complete (a client then waits for
    /// HANDSHAKE_DONE before it believes the server accepted it).
    handshake_complete: bool,
    stream: Option<StreamId>,
    unsent: BytesMut,
    /// Close with this code and reason once every queued byte is delivered
    /// (the stream is finished and the peer acknowledged it).
    linger: Option<(u32, Bytes)>,
    /// The stream's FIN was queued.
    finishing: bool,
    /// The connection's next timer, cached after every call into it so
    /// `poll_timeout` can take `&self`.
    pub(super) deadline: Option<Instant>,
}

impl Session {
    pub(super) fn new(handle: ConnectionHandle, conn: Connection) -> Self {
        Self {
            handle,
            conn,
            phase: Phase::Handshaking,
            handshake_complete: false,
            stream: None,
            unsent: BytesMut::new(),
            linger: None,
            finishing: false,
            deadline: None,
        }
    }

    /// Buffers `bytes` for the stream and writes what the stream takes.
    pub(super) fn queue(
        &mut self,
        id: ConnId,
        now: Instant,
        bytes: &[u8],
        events: &mut VecDeque<QuicEvent>,
    ) -> Result<(), QuicError> {
        // After close_when_sent the stream is (being) finished: nothing more.
        if self.phase == Phase::Closed || self.linger.is_some() {
            return Err(QuicError::Closed(id));
        }
        if self.unsent.len() + bytes.len() > MAX_UNSENT {
            return Err(QuicError::SendBufferFull {
                conn: id,
                buffered: self.unsent.len(),
            });
        }
        self.unsent.extend_from_slice(bytes);
        self.flush(id, now, events);
        Ok(())
    }

    /// Closes the connection on the application's behalf.
    pub(super) fn close(
        &mut self,
        id: ConnId,
        now: Instant,
        code: u32,
        reason: &[u8],
        events: &mut VecDeque<QuicEvent>,
    ) {
        if self.phase == Phase::Closed {
            return;
        }
        self.conn
            .close(now, VarInt::from_u32(code), Bytes::copy_from_slice(reason));
        self.report_closed(id, CloseReason::Local, events);
    }

    /// Closes the connection once what was queued has been delivered, so a
    /// final message (a refusal, a revocation) reaches the peer.
    pub(super) fn close_when_sent(
        &mut self,
        id: ConnId,
        now: Instant,
        code: u32,
        reason: &[u8],
        events: &mut VecDeque<QuicEvent>,
    ) {
        if self.phase == Phase::Closed || self.linger.is_some() {
            return;
        }
        self.linger = Some((code, Bytes::copy_from_slice(reason)));
        self.try_finish(id, now, events);
    }

    /// With a close pending and nothing left to write, finishes the stream;
    /// without a usable stream, closes at once.
    fn try_finish(&mut self, id: ConnId, now: Instant, events: &mut VecDeque<QuicEvent>) {
        let Some((code, reason)) = self.linger.clone() else {
            return;
        };
        match self.stream {
            Some(stream) if self.phase == Phase::Connected => {
                if self.unsent.is_empty() && !self.finishing {
                    self.finishing = self.conn.send_stream(stream).finish().is_ok();
                    if !self.finishing {
                        self.close(id, now, code, &reason, events);
                    }
                }
            }
            _ => self.close(id, now, code, &reason, events),
        }
    }

    /// Handles quinn's application events and endpoint events until both
    /// queues are empty, then caches the next deadline. Returns true once
    /// the connection is drained and can be forgotten.
    pub(super) fn drive(
        &mut self,
        id: ConnId,
        now: Instant,
        endpoint: &mut Endpoint,
        events: &mut VecDeque<QuicEvent>,
    ) -> bool {
        let mut drained = false;
        loop {
            let mut progressed = false;
            while let Some(event) = self.conn.poll() {
                progressed = true;
                self.on_event(id, now, event, events);
            }
            self.confirm_client(id, now, events);
            while let Some(event) = self.conn.poll_endpoint_events() {
                progressed = true;
                drained |= event.is_drained();
                if let Some(reply) = endpoint.handle_event(self.handle, event) {
                    self.conn.handle_event(reply);
                }
            }
            if !progressed {
                break;
            }
        }
        self.deadline = self.conn.poll_timeout();
        if drained && self.phase != Phase::Closed {
            let reason = CloseReason::TransportError("connection drained".into());
            self.report_closed(id, reason, events);
        }
        drained
    }

    fn on_event(
        &mut self,
        id: ConnId,
        now: Instant,
        event: Event,
        events: &mut VecDeque<QuicEvent>,
    ) {
        match event {
            Event::Connected => {
                self.handshake_complete = true;
                // A server's handshake completes only after it verified the
                // client's certificate and Finished: that is acceptance.
                if self.conn.side() == Side::Server {
                    self.report_connected(id, events);
                    self.accept_stream(id, now, events);
                }
            }
            Event::ConnectionLost { reason } if self.phase != Phase::Closed => {
                let handshaking = self.phase == Phase::Handshaking;
                self.report_closed(id, close_reason(reason, handshaking), events);
            }
            Event::Stream(StreamEvent::Opened { dir: Dir::Bi }) => {
                self.accept_stream(id, now, events);
            }
            Event::Stream(StreamEvent::Readable { id: stream }) if Some(stream) == self.stream => {
                self.read(id, now, events);
            }
            Event::Stream(StreamEvent::Writable { id: stream }) if Some(stream) == self.stream => {
                self.flush(id, now, events);
            }
            Event::Stream(StreamEvent::Finished { id: stream }) if Some(stream) == self.stream => {
                // Every byte, FIN included, was acknowledged: now close.
                if let Some((code, reason)) = self.linger.clone() {
                    self.close(id, now, code, &reason, events);
                }
            }
            Event::Stream(StreamEvent::Stopped { id: stream, .. })
                if Some(stream) == self.stream =>
            {
                self.end_stream(
                    id,
                    now,
                    "the peer stopped reading the control stream",
                    events,
                );
            }
            _ => {}
        }
    }

    /// On a client: once the server confirmed the handshake, report
    /// `Connected`, open the stream and send what waits.
    fn confirm_client(&mut self, id: ConnId, now: Instant, events: &mut VecDeque<QuicEvent>) {
        if self.conn.side() != Side::Client
            || self.phase != Phase::Handshaking
            || !self.handshake_complete
            || self.conn.stats().frame_rx.handshake_done == 0
        {
            return;
        }
        self.report_connected(id, events);
        self.stream = self.conn.streams().open(Dir::Bi);
        if self.stream.is_none() {
            self.end_stream(id, now, "the server allows no control stream", events);
            return;
        }
        self.flush(id, now, events);
    }

    fn report_connected(&mut self, id: ConnId, events: &mut VecDeque<QuicEvent>) {
        let peer_chain = self
            .conn
            .crypto_session()
            .peer_identity()
            .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
            .map(|chain| *chain)
            .unwrap_or_default();
        let remote = self.conn.remote_address();
        tracing::debug!(conn = %id, %remote, peer_certs = peer_chain.len(), "control session connected");
        self.phase = Phase::Connected;
        events.push_back(QuicEvent::Connected {
            conn: id,
            peer_chain,
            remote,
        });
    }

    fn report_closed(&mut self, id: ConnId, reason: CloseReason, events: &mut VecDeque<QuicEvent>) {
        tracing::debug!(conn = %id, ?reason, "control session closed");
        self.phase = Phase::Closed;
        self.unsent = BytesMut::new();
        events.push_back(QuicEvent::Closed { conn: id, reason });
    }

    /// On a server: takes the client's stream once the session is reported
    /// connected (nothing is read from a peer that is not authenticated).
    fn accept_stream(&mut self, id: ConnId, now: Instant, events: &mut VecDeque<QuicEvent>) {
        if self.phase != Phase::Connected || self.stream.is_some() {
            return;
        }
        self.stream = self.conn.streams().accept(Dir::Bi);
        if self.stream.is_some() {
            self.read(id, now, events);
            self.flush(id, now, events);
        }
    }

    /// Hands every readable byte to the application, in order.
    fn read(&mut self, id: ConnId, now: Instant, events: &mut VecDeque<QuicEvent>) {
        let Some(stream) = self.stream else {
            return;
        };
        if self.phase != Phase::Connected {
            return;
        }
        let mut ended = None;
        let mut recv = self.conn.recv_stream(stream);
        match recv.read(true) {
            Ok(mut chunks) => {
                loop {
                    match chunks.next(usize::MAX) {
                        Ok(Some(chunk)) => events.push_back(QuicEvent::Received {
                            conn: id,
                            bytes: chunk.bytes,
                        }),
                        Ok(None) => {
                            ended = Some("the peer finished the control stream");
                            break;
                        }
                        Err(ReadError::Blocked) => break,
                        Err(ReadError::Reset(_)) => {
                            ended = Some("the peer reset the control stream");
                            break;
                        }
                    }
                }
                // Flow-control credit goes out with the next transmit.
                let _ = chunks.finalize();
            }
            Err(_) => ended = Some("the control stream is closed"),
        }
        if let Some(why) = ended {
            self.end_stream(id, now, why, events);
        }
    }

    /// Writes waiting bytes until the stream blocks.
    fn flush(&mut self, id: ConnId, now: Instant, events: &mut VecDeque<QuicEvent>) {
        let Some(stream) = self.stream else {
            return;
        };
        if self.phase != Phase::Connected {
            return;
        }
        while !self.unsent.is_empty() {
            match self.conn.send_stream(stream).write(&self.unsent) {
                Ok(0) | Err(WriteError::Blocked) => break,
                Ok(written) => self.unsent.advance(written),
                Err(_) => {
                    self.end_stream(id, now, "the peer stopped the control stream", events);
                    break;
                }
            }
        }
        self.try_finish(id, now, events);
    }

    /// The stream cannot carry the session any further: close it.
    fn end_stream(
        &mut self,
        id: ConnId,
        now: Instant,
        why: &'static str,
        events: &mut VecDeque<QuicEvent>,
    ) {
        if self.phase == Phase::Closed {
            return;
        }
        self.conn.close(
            now,
            VarInt::from_u32(STREAM_ENDED),
            Bytes::from_static(why.as_bytes()),
        );
        self.report_closed(id, CloseReason::TransportError(why.into()), events);
    }
}

/// What a lost connection means to the application. Before the session was
/// reported connected, a transport or TLS error is a failed handshake.
pub(super) fn close_reason(error: ConnectionError, handshaking: bool) -> CloseReason {
    match error {
        ConnectionError::ApplicationClosed(close) => CloseReason::PeerClosed {
            code: close.error_code.into_inner(),
            reason: close.reason,
        },
        ConnectionError::TimedOut => CloseReason::TimedOut,
        ConnectionError::LocallyClosed => CloseReason::Local,
        error @ (ConnectionError::TransportError(_)
        | ConnectionError::ConnectionClosed(_)
        | ConnectionError::VersionMismatch)
            if handshaking =>
        {
            CloseReason::HandshakeFailed(error.to_string())
        }
        error => CloseReason::TransportError(error.to_string()),
    }
}
