//! An admin client as a state machine: one QUIC session with an admin
//! certificate, admin commands in, replies out. `tlctl` runs it on tokio;
//! the simulator runs it on a host.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;
use rustls_pki_types::CertificateDer;

use crate::control::msg::{self, AdminCommand, AdminError, AdminReply, FrameDecoder, Message};
use crate::control::quic::{CloseReason, ConnId, QuicConfig, QuicEndpoint, QuicEvent, QuicTiming};
use crate::control::tls_config::{client_config, TlsIdentity};
use crate::csprng::Drbg;
use crate::id::SocketId;
use crate::machine::{Input, Output, StateMachine, Transmit};
use crate::time::WallClock;

/// The admin client's socket.
pub const ADMIN_SOCKET: SocketId = SocketId(0);

/// What the admin client reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdminEvent {
    /// The session is up.
    Connected,
    /// The answer to request `request_id`.
    Reply {
        /// Which request.
        request_id: u32,
        /// The answer.
        result: Result<AdminReply, AdminError>,
    },
    /// The session ended (refused, timed out, or closed by the coordinator).
    Closed(String),
}

/// An admin session. See the module docs.
#[derive(Debug)]
pub struct AdminClient {
    quic: QuicEndpoint,
    coordinator: SocketAddr,
    server_name: String,
    root: CertificateDer<'static>,
    identity: Option<TlsIdentity>,
    bind: SocketAddr,
    local: Option<SocketAddr>,
    conn: Option<ConnId>,
    connected: bool,
    decoder: FrameDecoder,
    queued: VecDeque<(u32, AdminCommand)>,
    next_request: u32,
    outputs: VecDeque<Output<AdminEvent>>,
}

impl AdminClient {
    /// A client that binds `bind` and connects to `coordinator` (whose
    /// certificate names `server_name`) with `identity`.
    ///
    /// # Errors
    /// When the QUIC endpoint refuses the timing.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        bind: SocketAddr,
        coordinator: SocketAddr,
        server_name: &str,
        root: CertificateDer<'static>,
        identity: TlsIdentity,
        wall_clock: WallClock,
        drbg: Drbg,
    ) -> Result<Self, crate::control::quic::QuicError> {
        let quic = QuicEndpoint::new(
            QuicConfig {
                wall_clock,
                server: None,
                timing: QuicTiming::default(),
            },
            drbg,
        )?;
        Ok(Self {
            quic,
            coordinator,
            server_name: server_name.to_owned(),
            root,
            identity: Some(identity),
            bind,
            local: None,
            conn: None,
            connected: false,
            decoder: FrameDecoder::new(),
            queued: VecDeque::new(),
            next_request: 0,
            outputs: VecDeque::from([Output::BindSocket {
                socket: ADMIN_SOCKET,
                local: bind,
            }]),
        })
    }

    /// Queues a command; returns its request id (the reply carries it).
    pub fn request(&mut self, now: Instant, command: AdminCommand) -> u32 {
        self.next_request += 1;
        self.queued.push_back((self.next_request, command));
        self.after(now);
        self.next_request
    }

    fn after(&mut self, now: Instant) {
        if self.conn.is_none() && self.local.is_some() {
            if let Some(identity) = self.identity.take() {
                let result = client_config(&self.root, Some(identity))
                    .map_err(|e| e.to_string())
                    .and_then(|tls| {
                        self.quic
                            .connect(now, self.coordinator, &self.server_name, tls)
                            .map_err(|e| e.to_string())
                    });
                match result {
                    Ok(conn) => self.conn = Some(conn),
                    Err(err) => self
                        .outputs
                        .push_back(Output::Event(AdminEvent::Closed(err))),
                }
            }
        }
        while let Some(event) = self.quic.poll_event() {
            match event {
                QuicEvent::Connected { .. } => {
                    self.connected = true;
                    self.outputs.push_back(Output::Event(AdminEvent::Connected));
                }
                QuicEvent::Received { bytes, .. } => {
                    self.decoder.push(&bytes);
                    loop {
                        let message = match self.decoder.next() {
                            Ok(Some(message)) => message,
                            Ok(None) => break,
                            Err(err) => {
                                // A bad frame ends the session: pending
                                // requests must not wait for nothing.
                                if let Some(conn) = self.conn {
                                    let _ = self.quic.close(now, conn, 1, b"malformed");
                                }
                                self.outputs
                                    .push_back(Output::Event(AdminEvent::Closed(format!(
                                        "the coordinator sent a bad frame: {err}"
                                    ))));
                                break;
                            }
                        };
                        match message {
                            Message::AdminResponse { request_id, result } => self
                                .outputs
                                .push_back(Output::Event(AdminEvent::Reply { request_id, result })),
                            Message::Reject { code, reason } => {
                                self.outputs
                                    .push_back(Output::Event(AdminEvent::Closed(format!(
                                        "refused ({}): {reason}",
                                        code.as_str()
                                    ))))
                            }
                            _ => {}
                        }
                    }
                }
                QuicEvent::Closed { reason, .. } => {
                    self.connected = false;
                    let why = match reason {
                        CloseReason::HandshakeFailed(why) => format!("handshake failed: {why}"),
                        CloseReason::TimedOut => "the coordinator did not answer".to_owned(),
                        other => format!("{other:?}"),
                    };
                    self.outputs
                        .push_back(Output::Event(AdminEvent::Closed(why)));
                }
            }
        }
        if self.connected {
            if let Some(conn) = self.conn {
                while let Some((request_id, command)) = self.queued.pop_front() {
                    let mut buf = BytesMut::new();
                    if msg::encode(
                        &Message::AdminRequest {
                            request_id,
                            command,
                        },
                        &mut buf,
                    )
                    .is_ok()
                    {
                        let _ = self.quic.send(now, conn, &buf);
                    }
                }
            }
        }
        while let Some(t) = self.quic.poll_transmit(now) {
            self.outputs.push_back(Output::Transmit(Transmit {
                socket: ADMIN_SOCKET,
                dst: t.dst,
                payload: t.payload,
            }));
        }
    }
}

impl StateMachine for AdminClient {
    type Event = AdminEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        match input {
            Input::Datagram(d) if d.socket == ADMIN_SOCKET => {
                let local = self.local.unwrap_or(self.bind);
                self.quic.handle_datagram(now, local, d.src, d.payload);
            }
            Input::SocketBound {
                socket: ADMIN_SOCKET,
                local,
            } => self.local = Some(local),
            Input::SocketFailed {
                socket: ADMIN_SOCKET,
                reason,
            } => self
                .outputs
                .push_back(Output::Event(AdminEvent::Closed(format!(
                    "cannot bind {}: {reason:?}",
                    self.bind
                )))),
            _ => {}
        }
        self.after(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.quic.handle_timeout(now);
        self.after(now);
    }

    fn poll_output(&mut self) -> Option<Output<AdminEvent>> {
        self.outputs.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.quic.poll_timeout()
    }
}
