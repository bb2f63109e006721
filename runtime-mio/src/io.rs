//! [`UdpIo`] over non-blocking mio sockets, keyed by [`SocketId`] (the id is
//! the mio [`Token`]).
//!
//! mio readiness is edge-triggered: an event says "something arrived", and
//! no further event comes until the socket has been drained. So every socket
//! is either *possibly readable* (after an event, or just bound) or *drained*
//! (a receive returned `WouldBlock`), and [`MioIo::recv`] only calls the
//! possibly readable ones, round-robin so one busy socket cannot starve the
//! rest. Outgoing byte streams (the control plane's TCP fallback) live in
//! [`crate::stream`], under tokens above every socket's.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::ops::Bound;

use bytes::Bytes;
use mio::{Interest, Registry, Token};
use transitloom_proto_core::driver::{RecvBatch, StreamEvent, UdpIo};
use transitloom_proto_core::{SocketId, StreamId, Transmit};

use crate::stream::MioStreams;

use crate::udp::{bind_socket, SocketCounters, SocketOffload};

/// The token [`crate::MioDriver`] gives its waker; no socket id maps to it.
pub const WAKER_TOKEN: Token = Token(usize::MAX);

/// One open socket.
#[derive(Debug)]
struct MioSocket {
    socket: mio::net::UdpSocket,
    offload: SocketOffload,
    local: SocketAddr,
    readable: bool,
}

/// Non-blocking UDP I/O over mio sockets registered with one [`Registry`].
#[derive(Debug)]
pub struct MioIo {
    registry: Registry,
    sockets: BTreeMap<SocketId, MioSocket>,
    /// The socket served last, so the next receive starts after it.
    cursor: Option<SocketId>,
    scratch: Vec<u8>,
    unknown_socket_drops: u64,
    streams: MioStreams,
}

impl MioIo {
    /// I/O whose sockets register with `registry` for read readiness.
    pub fn new(registry: Registry) -> Self {
        Self {
            registry,
            sockets: BTreeMap::new(),
            cursor: None,
            scratch: Vec::new(),
            unknown_socket_drops: 0,
            streams: MioStreams::new(),
        }
    }

    /// The mio token of a socket.
    pub fn token(socket: SocketId) -> Token {
        Token(socket.0 as usize)
    }

    /// Marks the socket behind `token` possibly readable (a readiness event
    /// arrived for it). Unknown tokens are ignored.
    pub fn mark_readable(&mut self, token: Token) {
        if self.streams.mark_ready(token) {
            return;
        }
        let Ok(id) = u32::try_from(token.0) else {
            return;
        };
        if let Some(socket) = self.sockets.get_mut(&SocketId(id)) {
            socket.readable = true;
        }
    }

    /// True when some socket may have data that has not been received yet.
    pub fn has_readable(&self) -> bool {
        self.sockets.values().any(|s| s.readable) || self.streams.has_work()
    }

    /// The address a socket is bound to.
    pub fn local_addr(&self, socket: SocketId) -> Option<SocketAddr> {
        self.sockets.get(&socket).map(|s| s.local)
    }

    /// A socket's quinn-udp offload state (GSO/GRO support and counters).
    pub fn offload(&self, socket: SocketId) -> Option<&SocketOffload> {
        self.sockets.get(&socket).map(|s| &s.offload)
    }

    /// A socket's counters.
    pub fn counters(&self, socket: SocketId) -> Option<SocketCounters> {
        self.offload(socket).map(SocketOffload::counters)
    }

    /// Transmits dropped because they named a socket that is not open.
    pub fn unknown_socket_drops(&self) -> u64 {
        self.unknown_socket_drops
    }

    /// The next possibly readable socket after the cursor, wrapping around.
    fn next_readable(&self) -> Option<SocketId> {
        let after = self.cursor.map_or(Bound::Unbounded, Bound::Excluded);
        self.sockets
            .range((after, Bound::Unbounded))
            .chain(self.sockets.iter())
            .find(|(_, s)| s.readable)
            .map(|(&id, _)| id)
    }
}

impl UdpIo for MioIo {
    fn bind(&mut self, socket: SocketId, local: SocketAddr) -> io::Result<SocketAddr> {
        let token = Self::token(socket);
        if token == WAKER_TOKEN || self.sockets.contains_key(&socket) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{socket} is already in use"),
            ));
        }
        let std_socket = bind_socket(local)?;
        let bound = std_socket.local_addr()?;
        let offload = SocketOffload::new((&std_socket).into())?;
        let mut mio_socket = mio::net::UdpSocket::from_std(std_socket);
        self.registry
            .register(&mut mio_socket, token, Interest::READABLE)?;
        tracing::debug!(
            %socket, local = %bound, gso = offload.max_gso_segments(),
            gro = offload.gro_segments(), "socket bound"
        );
        self.sockets.insert(
            socket,
            MioSocket {
                socket: mio_socket,
                offload,
                local: bound,
                // Data may have arrived between bind and register.
                readable: true,
            },
        );
        Ok(bound)
    }

    fn close(&mut self, socket: SocketId) {
        if let Some(mut closed) = self.sockets.remove(&socket) {
            if let Err(err) = self.registry.deregister(&mut closed.socket) {
                tracing::debug!(%socket, error = %err, "deregister failed");
            }
            tracing::debug!(%socket, local = %closed.local, "socket closed");
        }
    }

    fn recv(&mut self, batch: &mut RecvBatch) {
        while !batch.is_full() {
            let Some(id) = self.next_readable() else {
                break;
            };
            self.cursor = Some(id);
            let Some(entry) = self.sockets.get_mut(&id) else {
                break;
            };
            match entry.offload.recv(&entry.socket, id, batch) {
                Ok(0) => entry.readable = false,
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => entry.readable = false,
                // Counted and logged by the offload; it reports WouldBlock
                // after a few in a row, so this cannot spin.
                Err(_) => {}
            }
        }
    }

    fn send(&mut self, transmits: &[Transmit]) -> usize {
        let mut sent = 0;
        for run in transmits.chunk_by(|a, b| a.socket == b.socket) {
            let first = &run[0];
            match self.sockets.get_mut(&first.socket) {
                Some(entry) => sent += entry.offload.send(&entry.socket, run, &mut self.scratch),
                None => {
                    self.unknown_socket_drops += run.len() as u64;
                    tracing::debug!(socket = %first.socket, dropped = run.len(), "send on a socket that is not open");
                }
            }
        }
        sent
    }

    fn connect_stream(&mut self, stream: StreamId, remote: SocketAddr) -> io::Result<()> {
        self.streams.connect(&self.registry, stream, remote)
    }

    fn write_stream(&mut self, stream: StreamId, bytes: Bytes) {
        self.streams.write(stream, bytes);
    }

    fn close_stream(&mut self, stream: StreamId) {
        self.streams.close(&self.registry, stream);
    }

    fn poll_stream_event(&mut self) -> Option<StreamEvent> {
        self.streams.poll_event(&self.registry)
    }
}
