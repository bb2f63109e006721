//! The quinn-udp layer all three runtimes share: opening a socket, receiving
//! one batch (recvmmsg, GRO) into a [`RecvBatch`], and sending transmits in
//! order with runs of equal-sized datagrams to one destination coalesced into
//! one GSO send. Readiness is each runtime's business: everything here is a
//! non-blocking call that reports `WouldBlock`.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use quinn_udp::{UdpSockRef, UdpSocketState, BATCH_SIZE};
use socket2::{Domain, Protocol, Socket, Type};
use transitloom_proto_core::driver::{RecvBatch, RecvMeta};
use transitloom_proto_core::{SocketId, Transmit};

/// Receive and send buffer size asked of the kernel (it caps the request at
/// its own limits): bursts from a fast link outrun the defaults.
pub const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Largest GSO send: below the 64 KiB IP limit with IPv6 and UDP headers.
const GSO_MAX_BYTES: usize = 64_000;

/// Consecutive receive errors after which a socket is reported drained, so
/// edge-triggered callers stop retrying it until its next readiness event.
const MAX_ERRORS_IN_ROW: u32 = 4;

/// Opens a non-blocking UDP socket bound to `local`, with large buffers.
///
/// # Errors
/// The operating system's error when the socket cannot be created or bound.
pub fn bind_socket(local: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(local), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    if let Err(err) = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES) {
        tracing::debug!(%local, error = %err, "receive buffer left at its default");
    }
    if let Err(err) = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES) {
        tracing::debug!(%local, error = %err, "send buffer left at its default");
    }
    socket.bind(&local.into())?;
    Ok(socket.into())
}

/// What one socket's I/O did, for status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketCounters {
    /// Datagrams received (GRO trains counted segment by segment).
    pub rx_datagrams: u64,
    /// Receive calls that returned data.
    pub rx_calls: u64,
    /// Receive buffers that held a GRO train of several datagrams.
    pub rx_gro_trains: u64,
    /// Receive calls that failed with something other than `WouldBlock`.
    pub rx_errors: u64,
    /// Datagrams handed to the kernel.
    pub tx_datagrams: u64,
    /// Send calls made.
    pub tx_calls: u64,
    /// Send calls that carried several datagrams as one GSO batch.
    pub tx_gso_batches: u64,
    /// Datagrams dropped because the send buffer was full.
    pub tx_would_block: u64,
    /// Datagrams dropped because the kernel refused them.
    pub tx_errors: u64,
}

/// quinn-udp's offload state of one socket (GSO and GRO support, fallbacks)
/// and its counters.
#[derive(Debug)]
pub struct SocketOffload {
    state: UdpSocketState,
    counters: SocketCounters,
    errors_in_row: u32,
}

impl SocketOffload {
    /// Probes the socket's offloads and configures it for quinn-udp.
    ///
    /// # Errors
    /// The operating system's error when the socket options cannot be set.
    pub fn new(socket: UdpSockRef<'_>) -> io::Result<Self> {
        Ok(Self {
            state: UdpSocketState::new(socket)?,
            counters: SocketCounters::default(),
            errors_in_row: 0,
        })
    }

    /// Datagrams one send may carry (1 without GSO).
    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Datagrams one receive buffer may hold (1 without GRO).
    pub fn gro_segments(&self) -> usize {
        self.state.gro_segments()
    }

    /// The counters so far.
    pub fn counters(&self) -> SocketCounters {
        self.counters
    }

    /// One batched receive into the free slots of `batch`, each committed as
    /// received on `id`. Returns the slots filled.
    ///
    /// # Errors
    /// `WouldBlock` when the socket is drained — also returned after several
    /// errors in a row, so a socket that keeps failing is not retried until
    /// it is readable again. Other errors are counted and logged here; the
    /// caller may retry.
    pub fn recv<S>(&mut self, socket: &S, id: SocketId, batch: &mut RecvBatch) -> io::Result<usize>
    where
        for<'s> UdpSockRef<'s>: From<&'s S>,
    {
        let mut metas = [quinn_udp::RecvMeta::default(); BATCH_SIZE];
        let mut bufs: [IoSliceMut<'_>; BATCH_SIZE] =
            std::array::from_fn(|_| IoSliceMut::new(&mut []));
        let mut offered = 0;
        let mut slot_len = 0;
        for (buf, slot) in bufs.iter_mut().zip(batch.unfilled_mut()) {
            slot_len = slot.len();
            *buf = IoSliceMut::new(slot);
            offered += 1;
        }
        if offered == 0 {
            return Ok(0);
        }
        let result = self
            .state
            .recv(socket.into(), &mut bufs[..offered], &mut metas[..offered]);
        match result {
            Ok(filled) => {
                self.errors_in_row = 0;
                self.counters.rx_calls += 1;
                for meta in &metas[..filled.min(offered)] {
                    self.commit(id, meta, slot_len, batch);
                }
                Ok(filled.min(offered))
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                self.errors_in_row = 0;
                Err(err)
            }
            Err(err) => {
                self.counters.rx_errors += 1;
                self.errors_in_row += 1;
                if self.counters.rx_errors.is_power_of_two() {
                    tracing::warn!(
                        socket = %id, error = %err, errors = self.counters.rx_errors,
                        "receive failed"
                    );
                }
                if self.errors_in_row >= MAX_ERRORS_IN_ROW {
                    self.errors_in_row = 0;
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Err(err)
            }
        }
    }

    fn commit(
        &mut self,
        id: SocketId,
        meta: &quinn_udp::RecvMeta,
        slot_len: usize,
        batch: &mut RecvBatch,
    ) {
        let len = meta.len.min(slot_len);
        // Without GRO quinn-udp reports `stride == len`; guard the odd cases.
        let stride = if meta.stride == 0 || meta.stride > len {
            len
        } else {
            meta.stride
        };
        let segments = if stride == 0 { 1 } else { len.div_ceil(stride) };
        if segments > 1 {
            self.counters.rx_gro_trains += 1;
        }
        self.counters.rx_datagrams += segments as u64;
        tracing::trace!(socket = %id, src = %meta.addr, len, stride, "received");
        batch.commit(RecvMeta {
            socket: id,
            src: meta.addr,
            len,
            stride,
        });
    }

    /// Sends `transmits` (all meant for this socket) in order and returns how
    /// many datagrams the kernel accepted; the rest are dropped and counted.
    /// `scratch` holds the coalesced payload of a GSO batch.
    pub fn send<S>(&mut self, socket: &S, transmits: &[Transmit], scratch: &mut Vec<u8>) -> usize
    where
        for<'s> UdpSockRef<'s>: From<&'s S>,
    {
        let mut sent = 0;
        let mut rest = transmits;
        while !rest.is_empty() {
            let (run, later) = rest.split_at(self.gso_run(rest));
            sent += match run {
                [one] => usize::from(self.send_one(socket, one)),
                _ => self.send_segments(socket, run, scratch),
            };
            rest = later;
        }
        sent
    }

    /// How many leading transmits can go as one GSO send: same socket and
    /// destination, equal sizes, the last one possibly shorter.
    fn gso_run(&self, transmits: &[Transmit]) -> usize {
        let Some((first, rest)) = transmits.split_first() else {
            return 0;
        };
        let segment = first.payload.len();
        let max = self.state.max_gso_segments();
        if max <= 1 || segment == 0 {
            return 1;
        }
        let mut total = segment;
        let mut run = 1;
        for next in rest {
            let len = next.payload.len();
            if run == max
                || next.socket != first.socket
                || next.dst != first.dst
                || len == 0
                || len > segment
                || total + len > GSO_MAX_BYTES
            {
                break;
            }
            total += len;
            run += 1;
            if len < segment {
                break;
            }
        }
        run
    }

    fn send_segments<S>(&mut self, socket: &S, run: &[Transmit], scratch: &mut Vec<u8>) -> usize
    where
        for<'s> UdpSockRef<'s>: From<&'s S>,
    {
        scratch.clear();
        for transmit in run {
            scratch.extend_from_slice(&transmit.payload);
        }
        let first = &run[0];
        let gso = quinn_udp::Transmit {
            destination: first.dst,
            ecn: None,
            contents: scratch,
            segment_size: Some(first.payload.len()),
            src_ip: None,
        };
        self.counters.tx_calls += 1;
        match self.state.try_send(socket.into(), &gso) {
            Ok(()) => {
                self.counters.tx_gso_batches += 1;
                self.counters.tx_datagrams += run.len() as u64;
                tracing::trace!(
                    socket = %first.socket, dst = %first.dst, segments = run.len(),
                    segment = first.payload.len(), "sent GSO batch"
                );
                run.len()
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                self.counters.tx_would_block += run.len() as u64;
                tracing::trace!(socket = %first.socket, segments = run.len(), "send buffer full");
                0
            }
            Err(err) => {
                // The kernel or the device refused segmentation (quinn-udp
                // then turns GSO off for this socket), or one destination is
                // bad: send one by one so neighbours do not share its fate.
                tracing::debug!(
                    socket = %first.socket, dst = %first.dst, error = %err,
                    "GSO send failed, sending one by one"
                );
                run.iter().filter(|t| self.send_one(socket, t)).count()
            }
        }
    }

    fn send_one<S>(&mut self, socket: &S, transmit: &Transmit) -> bool
    where
        for<'s> UdpSockRef<'s>: From<&'s S>,
    {
        let one = quinn_udp::Transmit {
            destination: transmit.dst,
            ecn: None,
            contents: &transmit.payload,
            segment_size: None,
            src_ip: None,
        };
        self.counters.tx_calls += 1;
        match self.state.try_send(socket.into(), &one) {
            Ok(()) => {
                self.counters.tx_datagrams += 1;
                tracing::trace!(
                    socket = %transmit.socket, dst = %transmit.dst,
                    len = transmit.payload.len(), "sent"
                );
                true
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                self.counters.tx_would_block += 1;
                if self.counters.tx_would_block.is_power_of_two() {
                    tracing::debug!(
                        socket = %transmit.socket, dropped = self.counters.tx_would_block,
                        "send buffer full, datagram dropped"
                    );
                }
                false
            }
            Err(err) => {
                self.counters.tx_errors += 1;
                if self.counters.tx_errors.is_power_of_two() {
                    tracing::warn!(
                        socket = %transmit.socket, dst = %transmit.dst, error = %err,
                        errors = self.counters.tx_errors, "send failed, datagram dropped"
                    );
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::net::Ipv4Addr;

    fn transmit(dst: SocketAddr, len: usize, fill: u8) -> Transmit {
        Transmit {
            socket: SocketId(0),
            dst,
            payload: Bytes::from(vec![fill; len]),
        }
    }

    fn pair() -> (std::net::UdpSocket, std::net::UdpSocket) {
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        (
            bind_socket(loopback).unwrap(),
            bind_socket(loopback).unwrap(),
        )
    }

    #[test]
    fn gso_runs_stop_at_a_shorter_datagram_or_another_destination() {
        let (tx, rx) = pair();
        let offload = SocketOffload::new((&tx).into()).unwrap();
        let dst = rx.local_addr().unwrap();
        let other = SocketAddr::from((Ipv4Addr::LOCALHOST, 9));
        let run = [
            transmit(dst, 100, 1),
            transmit(dst, 100, 2),
            transmit(dst, 60, 3),
            transmit(dst, 100, 4),
        ];
        let expected = if offload.max_gso_segments() > 1 { 3 } else { 1 };
        assert_eq!(offload.gso_run(&run), expected);
        let split = [transmit(dst, 100, 1), transmit(other, 100, 2)];
        assert_eq!(offload.gso_run(&split), 1);
        let growing = [transmit(dst, 60, 1), transmit(dst, 100, 2)];
        assert_eq!(offload.gso_run(&growing), 1);
    }

    #[test]
    fn a_gso_batch_arrives_as_the_datagrams_it_was_made_of() {
        let (tx, rx) = pair();
        let mut sender = SocketOffload::new((&tx).into()).unwrap();
        let mut receiver = SocketOffload::new((&rx).into()).unwrap();
        let dst = rx.local_addr().unwrap();
        let transmits: Vec<Transmit> = (0..10)
            .map(|i| transmit(dst, if i == 9 { 77 } else { 500 }, i))
            .chain([transmit(dst, 0, 0), transmit(dst, 3, 42)])
            .collect();
        let mut scratch = Vec::new();
        assert_eq!(sender.send(&tx, &transmits, &mut scratch), transmits.len());

        let mut batch = RecvBatch::new(8, 65_535);
        let mut got: Vec<Vec<u8>> = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while got.len() < transmits.len() && std::time::Instant::now() < deadline {
            batch.clear();
            match receiver.recv(&rx, SocketId(7), &mut batch) {
                Ok(_) => got.extend(batch.datagrams().map(|d| {
                    assert_eq!(d.socket, SocketId(7));
                    assert_eq!(d.src, tx.local_addr().unwrap());
                    d.payload.to_vec()
                })),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(err) => panic!("receive failed: {err}"),
            }
        }
        // The empty datagram arrives as an empty datagram.
        let expected: Vec<Vec<u8>> = transmits.iter().map(|t| t.payload.to_vec()).collect();
        assert_eq!(got, expected);
        let counters = sender.counters();
        assert_eq!(counters.tx_datagrams, transmits.len() as u64);
        if sender.max_gso_segments() > 1 {
            assert_eq!(counters.tx_gso_batches, 1);
        }
    }
}
