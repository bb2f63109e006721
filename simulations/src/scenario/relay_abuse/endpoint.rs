//! One leg of a relay path as an endpoint drives it: authenticated binds
//! (refreshed), numbered data through the relay, and a record of what came
//! back. Standing in for the node's data plane, which owns relay paths.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use transitloom_proto_core::machine::{Input, Output, StateMachine, Transmit};
use transitloom_proto_core::time::WallClock;
use transitloom_proto_core::wire::{
    classify, AuthKey, Classified, ControlBody, ControlRepr, MAGIC,
};
use transitloom_proto_core::SocketId;

/// The payload numbered `seq` from the endpoint tagged `tag`: every tenth
/// starts with the control magic (data that looks like control must still
/// cross unchanged).
pub(crate) fn payload(tag: u8, seq: u64) -> Bytes {
    let mut out = Vec::with_capacity(1_400);
    if seq.is_multiple_of(10) {
        out.extend_from_slice(&MAGIC);
    }
    out.push(tag);
    out.extend_from_slice(&seq.to_be_bytes());
    // Wrapping: the parser rebuilds whatever number a datagram claims.
    let len = out.len() + 8 + (seq.wrapping_mul(37) % 1_380) as usize;
    while out.len() < len {
        out.push(seq.wrapping_mul(31).wrapping_add(out.len() as u64) as u8 ^ tag);
    }
    Bytes::from(out)
}

/// The tag and number of a payload, if it is exactly what [`payload`] makes.
pub(crate) fn parse_payload(data: &[u8]) -> Option<(u8, u64)> {
    let body = data.strip_prefix(&MAGIC[..]).unwrap_or(data);
    let (&tag, rest) = body.split_first()?;
    let seq = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
    (payload(tag, seq) == data).then_some((tag, seq))
}

/// How soon an unconfirmed bind is sent again.
const RETRY: Duration = Duration::from_millis(100);

/// What an endpoint reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EndpointEvent {
    /// The relay answered a bind and saw us at `observed`; `pinned` when
    /// the bind carried the cookie it answered with.
    Acked { observed: SocketAddr, pinned: bool },
    /// The other endpoint's payload `seq` arrived unchanged.
    Received { seq: u64 },
    /// Something else arrived from the relay: a violation.
    Foreign { len: usize },
}

/// How an endpoint behaves.
#[derive(Debug, Clone)]
pub(crate) struct EndpointConfig {
    pub local: SocketAddr,
    pub relay: SocketAddr,
    pub key: [u8; 32],
    pub allocation: u64,
    pub leg: u8,
    /// This endpoint's payload tag, and the tag it expects from the other.
    pub tag: u8,
    pub peer_tag: u8,
    pub wall: WallClock,
    /// When binding starts, and how often a bind is refreshed.
    pub bind_from: Instant,
    pub bind_every: Duration,
    /// When data starts, and the gap between payloads.
    pub data_from: Instant,
    pub data_every: Duration,
    /// When the endpoint moves to another local port (its NAT rebinds).
    pub move_at: Option<Instant>,
}

/// The endpoint machine.
#[derive(Debug)]
pub(crate) struct LegEndpoint {
    config: EndpointConfig,
    key: AuthKey,
    socket: SocketId,
    bound: bool,
    moved: bool,
    next_bind: Instant,
    next_data: Instant,
    txid: u64,
    seq: u64,
    /// The cookie the relay gave our current address (0: none yet).
    cookie: u64,
    /// The relay pinned our current address.
    confirmed: bool,
    outputs: VecDeque<Output<EndpointEvent>>,
    /// The last bind sent (what an eavesdropper could capture).
    pub last_bind: Option<Bytes>,
    /// Payloads sent, with the time each left.
    pub sent: Vec<(Instant, u64)>,
}

impl LegEndpoint {
    pub(crate) fn new(config: EndpointConfig) -> Self {
        let socket = SocketId(1);
        Self {
            key: AuthKey::new(&config.key),
            outputs: VecDeque::from([Output::BindSocket {
                socket,
                local: config.local,
            }]),
            socket,
            bound: false,
            moved: false,
            next_bind: config.bind_from,
            next_data: config.data_from,
            txid: u64::from(config.leg) << 48,
            seq: 0,
            cookie: 0,
            confirmed: false,
            last_bind: None,
            sent: Vec::new(),
            config,
        }
    }

    fn send_bind(&mut self, now: Instant) {
        self.txid += 1;
        let bind = ControlRepr {
            txid: self.txid,
            timestamp_us: self.config.wall.unix_us(now),
            body: ControlBody::RelayBind {
                allocation: self.config.allocation,
                leg: self.config.leg,
                cookie: self.cookie,
            },
        }
        .to_bytes(&self.key);
        self.last_bind = Some(bind.clone());
        self.transmit(bind);
    }

    fn transmit(&mut self, payload: Bytes) {
        self.outputs.push_back(Output::Transmit(Transmit {
            socket: self.socket,
            dst: self.config.relay,
            payload,
        }));
    }
}

impl StateMachine for LegEndpoint {
    type Event = EndpointEvent;

    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        match input {
            Input::SocketBound { socket, .. } if socket == self.socket => self.bound = true,
            Input::Datagram(d) if d.socket == self.socket => {
                let event = if d.src != self.config.relay {
                    EndpointEvent::Foreign {
                        len: d.payload.len(),
                    }
                } else if let Classified::Control(repr) = classify(d.payload, &self.key) {
                    match repr.body {
                        ControlBody::RelayBindAck {
                            allocation,
                            leg,
                            cookie,
                            observed,
                        } if allocation == self.config.allocation && leg == self.config.leg => {
                            let pinned = cookie == self.cookie;
                            if pinned {
                                self.confirmed = true;
                            } else {
                                // A new cookie for this address: bind with it
                                // at once.
                                self.cookie = cookie;
                                self.next_bind = now;
                            }
                            EndpointEvent::Acked {
                                observed: observed.0,
                                pinned,
                            }
                        }
                        _ => EndpointEvent::Foreign {
                            len: d.payload.len(),
                        },
                    }
                } else {
                    match parse_payload(d.payload) {
                        Some((tag, seq)) if tag == self.config.peer_tag => {
                            EndpointEvent::Received { seq }
                        }
                        _ => EndpointEvent::Foreign {
                            len: d.payload.len(),
                        },
                    }
                };
                self.outputs.push_back(Output::Event(event));
            }
            _ => {}
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if !self.bound {
            return;
        }
        if let Some(at) = self.config.move_at.filter(|&at| at <= now && !self.moved) {
            // A new local port: the relay sees a new source until we bind
            // again, which we do at once.
            let _ = at;
            self.moved = true;
            self.outputs.push_back(Output::CloseSocket {
                socket: self.socket,
            });
            self.socket = SocketId(2);
            let mut local = self.config.local;
            local.set_port(local.port() + 1);
            self.outputs.push_back(Output::BindSocket {
                socket: self.socket,
                local,
            });
            self.bound = false;
            self.confirmed = false;
            self.next_bind = now;
            return;
        }
        if self.next_bind <= now {
            self.send_bind(now);
            // Until the relay confirms our address, a lost bind or answer
            // is retried soon instead of at the next refresh.
            self.next_bind = now
                + if self.confirmed {
                    self.config.bind_every
                } else {
                    RETRY
                };
        }
        while self.next_data <= now {
            let payload = payload(self.config.tag, self.seq);
            self.sent.push((now, self.seq));
            self.seq += 1;
            self.transmit(payload);
            self.next_data += self.config.data_every;
        }
    }

    fn poll_output(&mut self) -> Option<Output<EndpointEvent>> {
        self.outputs.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.next_bind.min(self.next_data);
        if let Some(at) = self.config.move_at.filter(|_| !self.moved) {
            next = next.min(at);
        }
        Some(next)
    }
}
