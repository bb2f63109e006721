//! [`UdpIo`] over `async_io::Async<std::net::UdpSocket>`s, keyed by
//! [`SocketId`].
//!
//! async-io reports readiness once per event (`poll_readable` is ready once
//! after each wake), so, as with mio, every socket is either *possibly
//! readable* (after an event, or just bound) or *drained* (a receive returned
//! `WouldBlock`); [`SmolIo::recv`] only calls the possibly readable ones,
//! round-robin, and the driver only asks async-io about the drained ones.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::ops::Bound;
use std::task::{Context, Poll};

use async_io::Async;
use transitloom_proto_core::driver::{RecvBatch, UdpIo};
use transitloom_proto_core::{SocketId, Transmit};
use transitloom_runtime_mio::udp::{bind_socket, SocketCounters, SocketOffload};

/// One open socket.
#[derive(Debug)]
struct SmolSocket {
    socket: Async<std::net::UdpSocket>,
    offload: SocketOffload,
    local: SocketAddr,
    readable: bool,
}

/// Non-blocking UDP I/O over sockets registered with async-io's reactor.
#[derive(Debug, Default)]
pub struct SmolIo {
    sockets: BTreeMap<SocketId, SmolSocket>,
    /// The socket served last, so the next receive starts after it.
    cursor: Option<SocketId>,
    scratch: Vec<u8>,
    unknown_socket_drops: u64,
}

impl SmolIo {
    /// I/O with no socket open.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when some socket may have data that has not been received yet.
    pub fn has_readable(&self) -> bool {
        self.sockets.values().any(|s| s.readable)
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

    /// Asks async-io about every drained socket, marking those with news
    /// possibly readable; ready when any socket is.
    pub(crate) fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let mut any = false;
        for (id, entry) in &mut self.sockets {
            if !entry.readable {
                if let Poll::Ready(result) = entry.socket.poll_readable(cx) {
                    if let Err(err) = result {
                        // Let the next receive meet (and count) the error.
                        tracing::warn!(socket = %id, error = %err, "readiness failed");
                    }
                    entry.readable = true;
                }
            }
            any |= entry.readable;
        }
        if any {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
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

impl UdpIo for SmolIo {
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
        let async_socket = Async::new(std_socket)?;
        tracing::debug!(
            %socket, local = %bound, gso = offload.max_gso_segments(),
            gro = offload.gro_segments(), "socket bound"
        );
        self.sockets.insert(
            socket,
            SmolSocket {
                socket: async_socket,
                offload,
                local: bound,
                readable: true,
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
        while !batch.is_full() {
            let Some(id) = self.next_readable() else {
                break;
            };
            self.cursor = Some(id);
            let Some(entry) = self.sockets.get_mut(&id) else {
                break;
            };
            match entry.offload.recv(entry.socket.get_ref(), id, batch) {
                Ok(0) => entry.readable = false,
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => entry.readable = false,
                // Counted and logged by the offload, which reports WouldBlock
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
                Some(entry) => {
                    sent += entry
                        .offload
                        .send(entry.socket.get_ref(), run, &mut self.scratch);
                }
                None => {
                    self.unknown_socket_drops += run.len() as u64;
                    tracing::debug!(socket = %first.socket, dropped = run.len(), "send on a socket that is not open");
                }
            }
        }
        sent
    }
}
