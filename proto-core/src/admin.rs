//! An admin client as a state machine: one control session with an admin
//! certificate, admin commands in, replies out. `tlctl` runs it on tokio;
//! the simulator runs it on a host. The session runs over QUIC, over TCP,
//! or over QUIC with a fallback to TCP ([`AdminCarrier`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rustls_pki_types::CertificateDer;

use crate::control::msg::{self, AdminCommand, AdminError, AdminReply, FrameDecoder, Message};
use crate::control::quic::{CloseReason, QuicConfig, QuicTiming};
use crate::control::tls_config::{client_config, TlsIdentity};
use crate::control::transport::{Carrier, ControlEvent, ControlTransport, SessionId};
use crate::csprng::Drbg;
use crate::id::SocketId;
use crate::machine::{Input, Output, StateMachine, Transmit};
use crate::time::WallClock;

/// The admin client's socket.
pub const ADMIN_SOCKET: SocketId = SocketId(0);

/// What carries the admin session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminCarrier {
    /// QUIC only.
    Quic,
    /// TCP only.
    Tcp,
    /// QUIC, then TCP to the same address when no QUIC handshake
    /// completes within the bound.
    QuicThenTcp(Duration),
}

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
    transport: ControlTransport,
    policy: AdminCarrier,
    tls: Option<Arc<rustls::ClientConfig>>,
    carrier: Carrier,
    /// A QUIC attempt not connected by then moves to TCP.
    fallback_at: Option<Instant>,
    coordinator: SocketAddr,
    server_name: String,
    root: CertificateDer<'static>,
    identity: Option<TlsIdentity>,
    bind: SocketAddr,
    local: Option<SocketAddr>,
    conn: Option<SessionId>,
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
        let transport = ControlTransport::new(
            QuicConfig {
                wall_clock,
                server: None,
                timing: QuicTiming::default(),
            },
            drbg,
        )?;
        Ok(Self {
            transport,
            policy: AdminCarrier::Quic,
            tls: None,
            carrier: Carrier::Quic,
            fallback_at: None,
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

    /// Chooses the carrier (before the first request; QUIC by default).
    pub fn set_carrier(&mut self, policy: AdminCarrier) {
        self.policy = policy;
    }

    /// What carries the session, once connected.
    pub fn carrier(&self) -> Option<Carrier> {
        self.connected.then_some(self.carrier)
    }

    fn start(&mut self, now: Instant, carrier: Carrier) {
        let tls = match (&self.tls, self.identity.take()) {
            (Some(tls), _) => Ok(tls.clone()),
            (None, Some(identity)) => client_config(&self.root, Some(identity))
                .inspect(|tls| self.tls = Some(tls.clone()))
                .map_err(|e| e.to_string()),
            (None, None) => return,
        };
        let result = tls.and_then(|tls| {
            self.transport
                .connect(now, carrier, self.coordinator, &self.server_name, tls)
                .map_err(|e| e.to_string())
        });
        match result {
            Ok(conn) => {
                self.conn = Some(conn);
                self.carrier = carrier;
                self.fallback_at = match self.policy {
                    AdminCarrier::QuicThenTcp(bound) if carrier == Carrier::Quic => {
                        Some(now + bound)
                    }
                    _ => None,
                };
            }
            Err(err) => self
                .outputs
                .push_back(Output::Event(AdminEvent::Closed(err))),
        }
    }

    /// The QUIC attempt got no answer: the same coordinator over TCP.
    fn fall_back(&mut self, now: Instant) {
        if let Some(conn) = self.conn.take() {
            let _ = self
                .transport
                .close(now, conn, 0, b"no QUIC handshake in time");
        }
        tracing::info!(coordinator = %self.coordinator, "no QUIC handshake in time; trying TCP");
        self.start(now, Carrier::Tcp);
    }

    /// Queues a command; returns its request id (the reply carries it).
    pub fn request(&mut self, now: Instant, command: AdminCommand) -> u32 {
        self.next_request += 1;
        self.queued.push_back((self.next_request, command));
        self.after(now);
        self.next_request
    }

    fn after(&mut self, now: Instant) {
        if self.conn.is_none() && self.local.is_some() && self.identity.is_some() {
            let carrier = match self.policy {
                AdminCarrier::Tcp => Carrier::Tcp,
                _ => Carrier::Quic,
            };
            self.start(now, carrier);
        }
        if !self.connected && self.fallback_at.is_some_and(|at| at <= now) {
            self.fallback_at = None;
            self.fall_back(now);
        }
        while let Some(event) = self.transport.poll_event() {
            match event {
                ControlEvent::Connected { session, .. } if Some(session) == self.conn => {
                    self.fallback_at = None;
                    self.connected = true;
                    self.outputs.push_back(Output::Event(AdminEvent::Connected));
                }
                ControlEvent::Received { session, bytes } if Some(session) == self.conn => {
                    self.decoder.push(&bytes);
                    loop {
                        let message = match self.decoder.next() {
                            Ok(Some(message)) => message,
                            Ok(None) => break,
                            Err(err) => {
                                // A bad frame ends the session: pending
                                // requests must not wait for nothing.
                                if let Some(conn) = self.conn {
                                    let _ = self.transport.close(now, conn, 1, b"malformed");
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
                ControlEvent::Closed { session, reason } if Some(session) == self.conn => {
                    let quic_unanswered = reason == CloseReason::TimedOut
                        && self.carrier == Carrier::Quic
                        && !self.connected
                        && matches!(self.policy, AdminCarrier::QuicThenTcp(_));
                    if quic_unanswered {
                        self.conn = None;
                        self.fall_back(now);
                        continue;
                    }
                    self.connected = false;
                    let why = match reason {
                        CloseReason::HandshakeFailed(why) => format!("handshake failed: {why}"),
                        CloseReason::TimedOut => "the coordinator did not answer".to_owned(),
                        other => format!("{other:?}"),
                    };
                    self.outputs
                        .push_back(Output::Event(AdminEvent::Closed(why)));
                }
                _ => {}
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
                        let _ = self.transport.send(now, conn, &buf);
                    }
                }
            }
        }
        while let Some(command) = self.transport.poll_stream_command() {
            self.outputs.push_back(command.into_output());
        }
        while let Some(t) = self.transport.poll_transmit(now) {
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
                self.transport.handle_datagram(now, local, d.src, d.payload);
            }
            Input::StreamOpened { stream, .. } => self.transport.handle_stream_opened(now, stream),
            Input::StreamData { stream, bytes } => {
                self.transport.handle_stream_data(now, stream, bytes)
            }
            Input::StreamClosed { stream, error } => {
                self.transport.handle_stream_closed(now, stream, error)
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
        self.transport.handle_timeout(now);
        self.after(now);
    }

    fn poll_output(&mut self) -> Option<Output<AdminEvent>> {
        self.outputs.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        [self.transport.poll_timeout(), self.fallback_at]
            .into_iter()
            .flatten()
            .min()
    }
}
