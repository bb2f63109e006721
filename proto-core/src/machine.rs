//! The one shape every Transitloom state machine has: inputs and timeouts go
//! in with `now`, outputs come out until there are none, and the machine says
//! when it next wants to be woken.

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

use crate::id::{ServiceId, SocketId};

/// Something that happened to the machine, handed over by the driver.
#[derive(Debug)]
#[non_exhaustive]
pub enum Input<'a> {
    /// A datagram arrived on one of the machine's sockets.
    Datagram(Datagram<'a>),
    /// A socket asked for with [`Output::BindSocket`] is open.
    SocketBound {
        /// The socket the machine named.
        socket: SocketId,
        /// The address the socket ended up bound to (port 0 resolved).
        local: SocketAddr,
    },
    /// A socket asked for with [`Output::BindSocket`] could not be opened.
    SocketFailed {
        /// The socket the machine named.
        socket: SocketId,
        /// The operating system's reason, for status and logs.
        reason: std::io::ErrorKind,
    },
}

/// A received datagram, borrowed from the driver's receive buffer.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// The socket it arrived on.
    pub socket: SocketId,
    /// Where it came from, as the socket saw it.
    pub src: SocketAddr,
    /// The payload, exactly as received.
    pub payload: &'a [u8],
}

/// A datagram the machine wants sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The socket to send from.
    pub socket: SocketId,
    /// Where to send it.
    pub dst: SocketAddr,
    /// The payload, sent unchanged.
    pub payload: Bytes,
}

/// What a machine asks of its driver, or tells it.
#[derive(Debug)]
#[non_exhaustive]
pub enum Output<E> {
    /// Send a datagram.
    Transmit(Transmit),
    /// Hand a payload to an in-process local service (embedders; daemons
    /// deliver through an ingress socket with [`Output::Transmit`] instead).
    Deliver {
        /// The local service it belongs to.
        service: ServiceId,
        /// The payload, unchanged.
        payload: Bytes,
    },
    /// Open a UDP socket bound to `local` and call it `socket`; the driver
    /// answers with [`Input::SocketBound`] or [`Input::SocketFailed`].
    BindSocket {
        /// The machine's name for the socket.
        socket: SocketId,
        /// The address to bind (port 0 lets the OS choose).
        local: SocketAddr,
    },
    /// Close a socket the machine no longer needs.
    CloseSocket {
        /// The socket to close.
        socket: SocketId,
    },
    /// Something for status, metrics or the embedding program.
    Event(E),
}

impl<E> Output<E> {
    /// The same output with its event (if it is one) turned into another
    /// type, for a machine that wraps another.
    pub fn map_event<F>(self, f: impl FnOnce(E) -> F) -> Output<F> {
        match self {
            Self::Transmit(t) => Output::Transmit(t),
            Self::Deliver { service, payload } => Output::Deliver { service, payload },
            Self::BindSocket { socket, local } => Output::BindSocket { socket, local },
            Self::CloseSocket { socket } => Output::CloseSocket { socket },
            Self::Event(e) => Output::Event(f(e)),
        }
    }
}

/// The sans-IO contract: no sockets, no clock, no OS randomness.
///
/// After any `handle_*` call the driver drains [`StateMachine::poll_output`]
/// until it returns `None`, then sleeps until [`StateMachine::poll_timeout`]
/// or the next readable socket. `now` never goes backwards.
pub trait StateMachine {
    /// Events the machine reports (status changes, measurements).
    type Event;

    /// Feeds one input. Network input never fails: bad datagrams are dropped,
    /// counted and traced.
    fn handle_input(&mut self, now: Instant, input: Input<'_>);

    /// Fires every timer due at `now`.
    fn handle_timeout(&mut self, now: Instant);

    /// The next output, if any.
    fn poll_output(&mut self) -> Option<Output<Self::Event>>;

    /// When the machine next needs [`StateMachine::handle_timeout`].
    fn poll_timeout(&self) -> Option<Instant>;
}
