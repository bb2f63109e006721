//! The driver contract shared by every runtime and by the simulator: a
//! non-blocking UDP I/O trait with batched receive and send (and optional
//! byte streams for the control plane's TCP fallback), a clock, and a
//! [`Pump`] that moves datagrams, timers and outputs through a
//! [`StateMachine`] within a work budget.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

use crate::id::{ServiceId, SocketId};
use crate::machine::{Datagram, Input, Output, StateMachine, StreamId, Transmit};

/// A monotonic clock. Runtimes read the OS; the simulator reads virtual time.
pub trait Clock {
    /// The current instant; never earlier than a previous answer.
    fn now(&self) -> Instant;
}

/// Where one received datagram (or one GRO train of equal-sized segments) sits
/// in a [`RecvBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    /// The socket it arrived on.
    pub socket: SocketId,
    /// The sender's address.
    pub src: SocketAddr,
    /// Bytes received into the slot.
    pub len: usize,
    /// Size of each segment when the kernel coalesced several datagrams
    /// (GRO); equal to `len` otherwise.
    pub stride: usize,
}

/// Receive buffers for one batch: fixed-size slots in one allocation.
#[derive(Debug)]
pub struct RecvBatch {
    buf: Vec<u8>,
    slot_len: usize,
    metas: Vec<RecvMeta>,
}

impl RecvBatch {
    /// `slots` buffers of `slot_len` bytes each.
    pub fn new(slots: usize, slot_len: usize) -> Self {
        assert!(slots > 0 && slot_len > 0, "a receive batch needs room");
        Self {
            buf: vec![0; slots * slot_len],
            slot_len,
            metas: Vec::with_capacity(slots),
        }
    }

    /// How many datagrams the batch holds at most.
    pub fn capacity(&self) -> usize {
        self.buf.len() / self.slot_len
    }

    /// How many slots are filled.
    pub fn len(&self) -> usize {
        self.metas.len()
    }

    /// True when nothing was received.
    pub fn is_empty(&self) -> bool {
        self.metas.is_empty()
    }

    /// True when no free slot is left.
    pub fn is_full(&self) -> bool {
        self.len() == self.capacity()
    }

    /// Forgets every filled slot.
    pub fn clear(&mut self) {
        self.metas.clear();
    }

    /// The free slots, in the order [`RecvBatch::commit`] fills them.
    pub fn unfilled_mut(&mut self) -> std::slice::ChunksExactMut<'_, u8> {
        let start = self.metas.len() * self.slot_len;
        self.buf[start..].chunks_exact_mut(self.slot_len)
    }

    /// Marks the first free slot as holding the datagram described by `meta`.
    ///
    /// # Panics
    /// If the batch is full or `meta.len` exceeds the slot.
    pub fn commit(&mut self, meta: RecvMeta) {
        assert!(!self.is_full(), "commit into a full batch");
        assert!(meta.len <= self.slot_len, "datagram longer than its slot");
        self.metas.push(meta);
    }

    /// Copies one datagram into the next free slot (for I/O that cannot
    /// receive in place, such as the simulator). Returns false when full.
    pub fn push(&mut self, socket: SocketId, src: SocketAddr, payload: &[u8]) -> bool {
        if self.is_full() {
            return false;
        }
        let len = payload.len().min(self.slot_len);
        let start = self.metas.len() * self.slot_len;
        self.buf[start..start + len].copy_from_slice(&payload[..len]);
        self.metas.push(RecvMeta {
            socket,
            src,
            len,
            stride: len,
        });
        true
    }

    /// Every received datagram, GRO trains split into their segments.
    pub fn datagrams(&self) -> impl Iterator<Item = Datagram<'_>> + '_ {
        self.metas.iter().enumerate().flat_map(move |(i, meta)| {
            let slot = &self.buf[i * self.slot_len..i * self.slot_len + meta.len];
            let stride = meta.stride.max(1);
            // An empty datagram is still a datagram: yield it once.
            let segments = meta.len.div_ceil(stride).max(1);
            (0..segments).map(move |k| Datagram {
                socket: meta.socket,
                src: meta.src,
                payload: &slot[(k * stride).min(slot.len())..((k + 1) * stride).min(slot.len())],
            })
        })
    }
}

/// Something that happened to one of a machine's byte streams, as the I/O
/// layer reports it to the pump (which turns it into an [`Input`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamEvent {
    /// A listener accepted a stream; `stream` has [`StreamId::ACCEPTED`] set.
    Accepted {
        /// The listener.
        listener: SocketId,
        /// The new stream.
        stream: StreamId,
        /// The peer's address.
        remote: SocketAddr,
    },
    /// An outgoing stream connected.
    Opened {
        /// The stream.
        stream: StreamId,
        /// Its local address.
        local: SocketAddr,
    },
    /// Bytes arrived on a stream.
    Data {
        /// The stream.
        stream: StreamId,
        /// The bytes, in order.
        bytes: Vec<u8>,
    },
    /// A stream ended (`None`: the peer closed it in order).
    Closed {
        /// The stream.
        stream: StreamId,
        /// Why, when it broke or never connected.
        error: Option<io::ErrorKind>,
    },
}

impl StreamEvent {
    /// The machine input this event is.
    pub fn as_input(&self) -> Input<'_> {
        match self {
            Self::Accepted {
                listener,
                stream,
                remote,
            } => Input::StreamAccepted {
                listener: *listener,
                stream: *stream,
                remote: *remote,
            },
            Self::Opened { stream, local } => Input::StreamOpened {
                stream: *stream,
                local: *local,
            },
            Self::Data { stream, bytes } => Input::StreamData {
                stream: *stream,
                bytes,
            },
            Self::Closed { stream, error } => Input::StreamClosed {
                stream: *stream,
                error: *error,
            },
        }
    }
}

/// Non-blocking UDP I/O over the sockets one machine owns, and optionally
/// byte streams (TCP) for the control plane's fallback. The stream methods
/// default to "not supported", so an I/O layer without streams (the
/// simulator) answers every stream request with a failure.
pub trait UdpIo {
    /// Opens a socket bound to `local` and names it `socket`.
    ///
    /// # Errors
    /// The operating system's error when the address cannot be bound.
    fn bind(&mut self, socket: SocketId, local: SocketAddr) -> io::Result<SocketAddr>;

    /// Closes a socket; unknown ids are ignored.
    fn close(&mut self, socket: SocketId);

    /// Receives whatever is ready, from any socket, into the free slots of
    /// `batch`. Leaving the batch empty means every socket would block.
    /// Errors of a single socket are the implementation's to count and log.
    fn recv(&mut self, batch: &mut RecvBatch);

    /// Sends datagrams in order and returns how many were handed to the
    /// network; the rest were dropped (a full send buffer, an unreachable
    /// destination), as UDP may.
    fn send(&mut self, transmits: &[Transmit]) -> usize;

    /// Listens for streams on `local`, naming the listener `listener`.
    ///
    /// # Errors
    /// The operating system's error, or `Unsupported` without streams.
    fn listen_stream(&mut self, listener: SocketId, local: SocketAddr) -> io::Result<SocketAddr> {
        let _ = (listener, local);
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Starts connecting `stream` to `remote`; completion (or failure) comes
    /// later from [`UdpIo::poll_stream_event`].
    ///
    /// # Errors
    /// When the connection cannot even start (`Unsupported` without
    /// streams).
    fn connect_stream(&mut self, stream: StreamId, remote: SocketAddr) -> io::Result<()> {
        let _ = (stream, remote);
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Writes to a stream after what was written before, buffering what the
    /// socket does not take yet. Unknown streams are ignored.
    fn write_stream(&mut self, stream: StreamId, bytes: Bytes) {
        let _ = (stream, bytes);
    }

    /// Closes a stream once its buffered bytes are sent (or at once when
    /// they cannot be). Unknown streams are ignored.
    fn close_stream(&mut self, stream: StreamId) {
        let _ = stream;
    }

    /// The next stream event, or `None` when every stream would block.
    fn poll_stream_event(&mut self) -> Option<StreamEvent> {
        None
    }
}

/// Where a pump hands what is meant for the embedding program.
pub trait Sink<E> {
    /// An event from the machine.
    fn event(&mut self, event: E);

    /// A payload for an in-process local service.
    fn deliver(&mut self, service: ServiceId, payload: Bytes) {
        let _ = (service, payload);
    }
}

impl<E> Sink<E> for Vec<E> {
    fn event(&mut self, event: E) {
        self.push(event);
    }
}

/// A sink that discards everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Discard;

impl<E> Sink<E> for Discard {
    fn event(&mut self, _event: E) {}
}

/// What one [`Pump::run`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PumpReport {
    /// When the machine wants its next timeout.
    pub next_deadline: Option<Instant>,
    /// Datagrams fed to the machine.
    pub received: usize,
    /// Datagrams handed to the network.
    pub sent: usize,
    /// Datagrams the I/O layer dropped on send.
    pub send_dropped: usize,
    /// True when the budget ran out before the sockets were drained: call
    /// again without waiting for readiness.
    pub more_pending: bool,
}

/// Moves datagrams, timers and outputs through a machine.
#[derive(Debug)]
pub struct Pump {
    batch: RecvBatch,
    transmits: Vec<Transmit>,
    send_batch: usize,
    budget: usize,
}

/// Largest UDP payload; receive slots are this big so nothing is truncated.
pub const MAX_DATAGRAM: usize = 65_535;

impl Pump {
    /// A pump that feeds at most `budget` datagrams per run, received in
    /// batches of `batch` slots.
    pub fn new(batch: usize, budget: usize) -> Self {
        Self::with_slot_len(batch, budget, MAX_DATAGRAM)
    }

    /// Like [`Pump::new`] with receive slots of `slot_len` bytes, for drivers
    /// whose kernel coalesces more than 64 KiB per GRO train.
    pub fn with_slot_len(batch: usize, budget: usize, slot_len: usize) -> Self {
        Self {
            batch: RecvBatch::new(batch, slot_len.max(1)),
            transmits: Vec::with_capacity(batch.max(1)),
            send_batch: batch.max(1),
            budget: budget.max(1),
        }
    }

    /// Receives until every socket would block or the budget is spent, fires
    /// due timers, drains every output, and returns the next deadline.
    pub fn run<M, I, C, S>(
        &mut self,
        machine: &mut M,
        io: &mut I,
        clock: &C,
        sink: &mut S,
    ) -> PumpReport
    where
        M: StateMachine + ?Sized,
        I: UdpIo + ?Sized,
        C: Clock + ?Sized,
        S: Sink<M::Event> + ?Sized,
    {
        let mut report = PumpReport::default();
        let mut now = clock.now();
        self.drain(machine, io, now, sink, &mut report);

        while report.received < self.budget {
            self.batch.clear();
            io.recv(&mut self.batch);
            if self.batch.is_empty() {
                break;
            }
            now = clock.now();
            for datagram in self.batch.datagrams() {
                machine.handle_input(now, Input::Datagram(datagram));
                report.received += 1;
                Self::drain_into(
                    machine,
                    io,
                    now,
                    sink,
                    (&mut self.transmits, self.send_batch),
                    &mut report,
                );
            }
        }
        while report.received < self.budget {
            let Some(event) = io.poll_stream_event() else {
                break;
            };
            now = clock.now();
            machine.handle_input(now, event.as_input());
            report.received += 1;
            Self::drain_into(
                machine,
                io,
                now,
                sink,
                (&mut self.transmits, self.send_batch),
                &mut report,
            );
        }
        if report.received >= self.budget {
            report.more_pending = true;
        }

        now = clock.now();
        if machine.poll_timeout().is_some_and(|at| at <= now) {
            machine.handle_timeout(now);
        }
        self.drain(machine, io, now, sink, &mut report);
        self.flush(io, &mut report);
        report.next_deadline = machine.poll_timeout();
        report
    }

    fn drain<M, I, S>(
        &mut self,
        machine: &mut M,
        io: &mut I,
        now: Instant,
        sink: &mut S,
        report: &mut PumpReport,
    ) where
        M: StateMachine + ?Sized,
        I: UdpIo + ?Sized,
        S: Sink<M::Event> + ?Sized,
    {
        Self::drain_into(
            machine,
            io,
            now,
            sink,
            (&mut self.transmits, self.send_batch),
            report,
        );
    }

    fn drain_into<M, I, S>(
        machine: &mut M,
        io: &mut I,
        now: Instant,
        sink: &mut S,
        (transmits, send_batch): (&mut Vec<Transmit>, usize),
        report: &mut PumpReport,
    ) where
        M: StateMachine + ?Sized,
        I: UdpIo + ?Sized,
        S: Sink<M::Event> + ?Sized,
    {
        while let Some(output) = machine.poll_output() {
            match output {
                Output::Transmit(transmit) => {
                    transmits.push(transmit);
                    if transmits.len() >= send_batch {
                        Self::flush_into(io, transmits, report);
                    }
                }
                Output::Deliver { service, payload } => sink.deliver(service, payload),
                Output::BindSocket { socket, local } => {
                    let input = match io.bind(socket, local) {
                        Ok(local) => Input::SocketBound { socket, local },
                        Err(err) => {
                            tracing::warn!(%socket, %local, error = %err, "bind failed");
                            Input::SocketFailed {
                                socket,
                                reason: err.kind(),
                            }
                        }
                    };
                    machine.handle_input(now, input);
                }
                Output::CloseSocket { socket } => io.close(socket),
                Output::ListenStream { listener, local } => {
                    let input = match io.listen_stream(listener, local) {
                        Ok(local) => Input::SocketBound {
                            socket: listener,
                            local,
                        },
                        Err(err) if err.kind() == io::ErrorKind::Unsupported => {
                            tracing::debug!(%listener, "this I/O carries no streams");
                            Input::SocketFailed {
                                socket: listener,
                                reason: err.kind(),
                            }
                        }
                        Err(err) => {
                            tracing::warn!(%listener, %local, error = %err, "stream listen failed");
                            Input::SocketFailed {
                                socket: listener,
                                reason: err.kind(),
                            }
                        }
                    };
                    machine.handle_input(now, input);
                }
                Output::ConnectStream { stream, remote } => {
                    // Datagrams queued before it go first, as they were
                    // asked for first.
                    Self::flush_into(io, transmits, report);
                    if let Err(err) = io.connect_stream(stream, remote) {
                        tracing::debug!(%stream, %remote, error = %err, "stream connect failed");
                        machine.handle_input(
                            now,
                            Input::StreamClosed {
                                stream,
                                error: Some(err.kind()),
                            },
                        );
                    }
                }
                Output::StreamWrite { stream, bytes } => io.write_stream(stream, bytes),
                Output::CloseStream { stream } => io.close_stream(stream),
                Output::Event(event) => sink.event(event),
            }
        }
    }

    fn flush<I: UdpIo + ?Sized>(&mut self, io: &mut I, report: &mut PumpReport) {
        Self::flush_into(io, &mut self.transmits, report);
    }

    fn flush_into<I: UdpIo + ?Sized>(
        io: &mut I,
        transmits: &mut Vec<Transmit>,
        report: &mut PumpReport,
    ) {
        if transmits.is_empty() {
            return;
        }
        let sent = io.send(transmits).min(transmits.len());
        report.sent += sent;
        report.send_dropped += transmits.len() - sent;
        transmits.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(len: usize, stride: usize) -> RecvMeta {
        RecvMeta {
            socket: SocketId(1),
            src: "127.0.0.1:9".parse().unwrap(),
            len,
            stride,
        }
    }

    #[test]
    fn gro_trains_split_and_empty_datagrams_survive() {
        let mut batch = RecvBatch::new(4, 64);
        let slot = batch.unfilled_mut().next().unwrap();
        slot[..10].copy_from_slice(b"aaaabbbbcc");
        batch.commit(meta(10, 4));
        batch.commit(meta(0, 0));
        assert!(batch.push(SocketId(2), "127.0.0.1:10".parse().unwrap(), b"xyz"));
        let got: Vec<(u32, Vec<u8>)> = batch
            .datagrams()
            .map(|d| (d.socket.0, d.payload.to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![
                (1, b"aaaa".to_vec()),
                (1, b"bbbb".to_vec()),
                (1, b"cc".to_vec()),
                (1, Vec::new()),
                (2, b"xyz".to_vec()),
            ]
        );
    }
}
