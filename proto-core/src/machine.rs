//! The one shape every Transitloom state machine has: inputs and timeouts go
//! in with `now`, outputs come out until there are none, and the machine says
//! when it next wants to be woken.
//!
//! Datagrams are the common case. Byte streams (TCP) exist for the control
//! plane's fallback (DESIGN §5): a machine asks for a listener
//! ([`Output::ListenStream`]) or an outgoing connection
//! ([`Output::ConnectStream`]), writes with [`Output::StreamWrite`] and ends
//! with [`Output::CloseStream`]; the driver reports what happens with the
//! `Stream*` inputs. A driver that carries no streams answers every request
//! with a failure ([`Input::SocketFailed`], [`Input::StreamClosed`]).

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

use crate::id::{ServiceId, SocketId};

/// A byte stream (a TCP connection) of one machine. The machine names the
/// streams it connects (ids below [`StreamId::ACCEPTED`]); the driver names
/// the streams a listener accepts (ids with that bit set), so the two never
/// collide.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamId(pub u64);

impl StreamId {
    /// The bit set in every id a driver gives an accepted stream.
    pub const ACCEPTED: u64 = 1 << 63;

    /// Whether the driver named this stream (it was accepted).
    pub fn is_accepted(self) -> bool {
        self.0 & Self::ACCEPTED != 0
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_accepted() {
            write!(f, "stream#a{}", self.0 & !Self::ACCEPTED)
        } else {
            write!(f, "stream#{}", self.0)
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

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
    /// A listener opened with [`Output::ListenStream`] accepted a stream.
    StreamAccepted {
        /// The listener (a socket id, answered like a socket).
        listener: SocketId,
        /// The new stream's id, chosen by the driver.
        stream: StreamId,
        /// The peer's address.
        remote: SocketAddr,
    },
    /// A stream asked for with [`Output::ConnectStream`] is connected.
    StreamOpened {
        /// The stream.
        stream: StreamId,
        /// The local address it got.
        local: SocketAddr,
    },
    /// The next bytes of a stream, in order.
    StreamData {
        /// The stream.
        stream: StreamId,
        /// The bytes, borrowed from the driver's buffer.
        bytes: &'a [u8],
    },
    /// A stream ended: the peer closed it (`None`), it broke, or it never
    /// connected (the operating system's reason). Nothing more comes from it.
    StreamClosed {
        /// The stream.
        stream: StreamId,
        /// Why, when it was not an orderly close by the peer.
        error: Option<std::io::ErrorKind>,
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
    /// Listen for byte streams on `local` (TCP); the listener is named like
    /// a socket and answered with [`Input::SocketBound`] or
    /// [`Input::SocketFailed`]; each accepted stream arrives as
    /// [`Input::StreamAccepted`].
    ListenStream {
        /// The machine's name for the listener.
        listener: SocketId,
        /// The address to listen on.
        local: SocketAddr,
    },
    /// Open a byte stream to `remote`; answered with [`Input::StreamOpened`]
    /// or [`Input::StreamClosed`].
    ConnectStream {
        /// The machine's name for the stream (below [`StreamId::ACCEPTED`]).
        stream: StreamId,
        /// Where to connect.
        remote: SocketAddr,
    },
    /// Write bytes to a stream, after everything written before. The driver
    /// buffers what the socket does not take at once.
    StreamWrite {
        /// The stream.
        stream: StreamId,
        /// The bytes.
        bytes: Bytes,
    },
    /// Close a stream once every byte written to it is sent; nothing more
    /// is reported for it.
    CloseStream {
        /// The stream.
        stream: StreamId,
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
            Self::ListenStream { listener, local } => Output::ListenStream { listener, local },
            Self::ConnectStream { stream, remote } => Output::ConnectStream { stream, remote },
            Self::StreamWrite { stream, bytes } => Output::StreamWrite { stream, bytes },
            Self::CloseStream { stream } => Output::CloseStream { stream },
            Self::Event(e) => Output::Event(f(e)),
        }
    }
}

/// The sans-IO contract: no sockets, no clock, no OS randomness.
///
/// After any `handle_*` call the driver drains [`StateMachine::poll_output`]
/// until it returns `None`, then sleeps until [`StateMachine::poll_timeout`]
/// or the next readable socket or stream. `now` never goes backwards.
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
