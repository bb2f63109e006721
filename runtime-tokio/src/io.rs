//! [`UdpIo`] over `tokio::net::UdpSocket`s, keyed by [`SocketId`].
//!
//! Receives go through `try_io(Interest::READABLE, ..)`, so tokio clears a
//! socket's readiness exactly when quinn-udp reports `WouldBlock` and the
//! driver's next wait sleeps until the reactor sees new data. Sends call
//! quinn-udp directly: a full send buffer drops the datagram, as UDP may, so
//! write readiness is never awaited and tokio need not track it. TCP
//! listeners and streams (the control plane's fallback) live in
//! [`crate::stream`].

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::ops::Bound;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use transitloom_proto_core::driver::{RecvBatch, StreamEvent, UdpIo};
use transitloom_proto_core::{SocketId, StreamId, Transmit};
use transitloom_runtime_mio::udp::{bind_socket, SocketCounters, SocketOffload};

/// One open socket.
#[derive(Debug)]
struct TokioSocket {
    socket: UdpSocket,
    offload: SocketOffload,
    local: SocketAddr,
}

/// Non-blocking UDP I/O over tokio sockets. Binding registers with the
/// current tokio runtime, so it must happen inside one.
#[derive(Debug, Default)]
pub struct TokioIo {
    sockets: BTreeMap<SocketId, TokioSocket>,
    /// The socket served last, so the next receive starts after it.
    cursor: Option<SocketId>,
    scratch: Vec<u8>,
    unknown_socket_drops: u64,
    streams: crate::stream::TokioStreams,
}

impl TokioIo {
    /// I/O with no socket open.
    pub fn new() -> Self {
        Self::default()
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

    /// Whether stream events wait to be fed to the machine.
    pub(crate) fn has_stream_events(&self) -> bool {
        self.streams.has_events()
    }

    /// Ready when tokio believes some socket, listener or stream has
    /// something; otherwise registers `cx` with all of them.
    pub(crate) fn poll_any_readable(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.streams.poll_ready(cx).is_ready() {
            return Poll::Ready(());
        }
        for (id, entry) in &self.sockets {
            if let Poll::Ready(result) = entry.socket.poll_recv_ready(cx) {
                if let Err(err) = result {
                    // Let the next receive meet (and count) the error.
                    tracing::warn!(socket = %id, error = %err, "readiness failed");
                }
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }

    /// The socket after the cursor, wrapping around.
    fn next_socket(&self) -> Option<SocketId> {
        let after = self.cursor.map_or(Bound::Unbounded, Bound::Excluded);
        self.sockets
            .range((after, Bound::Unbounded))
            .chain(self.sockets.iter())
            .map(|(&id, _)| id)
            .next()
    }
}

impl UdpIo for TokioIo {
    fn bind(&mut self, socket: SocketId, local: SocketAddr) -> io::Result<SocketAddr> {
        if self.sockets.contains_key(&socket) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{socket} is already in use"),
            ));
        }
        let std_socket = bind_socket(local)?;
        let bound = std_socket.local_addr()?;
        let offload = SocketOffload::new((&std_socket).into())?;
        let tokio_socket = UdpSocket::from_std(std_socket)?;
        tracing::debug!(
            %socket, local = %bound, gso = offload.max_gso_segments(),
            gro = offload.gro_segments(), "socket bound"
        );
        self.sockets.insert(
            socket,
            TokioSocket {
                socket: tokio_socket,
                offload,
                local: bound,
            },
        );
        Ok(bound)
    }

    fn close(&mut self, socket: SocketId) {
        if let Some(closed) = self.sockets.remove(&socket) {
            tracing::debug!(%socket, local = %closed.local, "socket closed");
        }
    }

    fn recv(&mut self, batch: &mut RecvBatch) {
        // Round-robin until every socket in turn would block. tokio answers
        // `WouldBlock` without a system call while it holds no readiness.
        let mut idle = 0;
        while !batch.is_full() && idle < self.sockets.len() {
            let Some(id) = self.next_socket() else {
                break;
            };
            self.cursor = Some(id);
            let Some(entry) = self.sockets.get_mut(&id) else {
                break;
            };
            let result = entry.socket.try_io(Interest::READABLE, || {
                entry.offload.recv(&entry.socket, id, batch)
            });
            match result {
                Ok(0) => idle += 1,
                Ok(_) => idle = 0,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => idle += 1,
                // Counted and logged by the offload, which reports WouldBlock
                // after a few in a row, so this cannot spin.
                Err(_) => idle = 0,
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

    fn listen_stream(&mut self, listener: SocketId, local: SocketAddr) -> io::Result<SocketAddr> {
        self.streams.listen(listener, local)
    }

    fn connect_stream(&mut self, stream: StreamId, remote: SocketAddr) -> io::Result<()> {
        self.streams.connect(stream, remote)
    }

    fn write_stream(&mut self, stream: StreamId, bytes: Bytes) {
        self.streams.write(stream, bytes);
    }

    fn close_stream(&mut self, stream: StreamId) {
        self.streams.close(stream);
    }

    fn poll_stream_event(&mut self) -> Option<StreamEvent> {
        self.streams.poll_event()
    }
}
