//! The load generator: one UDP sender and one UDP receiver, each on its own
//! thread, used unchanged for the direct path and for the mesh path.
//!
//! Both go through quinn-udp, like the node: the sender hands the kernel up
//! to `burst` equal datagrams per `sendmsg` (one GSO send), the receiver
//! takes up to 32 buffers per `recvmmsg` with GRO on. So the sender costs
//! little per datagram and is not what limits either path.

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use quinn_udp::{RecvMeta, Transmit, UdpSocketState, BATCH_SIZE};
use socket2::{Domain, Protocol, Socket, Type};

use crate::cpu::current_tid;

/// Socket buffers asked for on both ends, as large as the node's own
/// (`SOCKET_BUFFER_BYTES` in runtime-mio), so neither path gets more room.
pub const SOCKET_BUFFER_BYTES: usize = 4 << 20;
/// The largest GSO send, as in the node.
const GSO_MAX_BYTES: usize = 64_000;
/// Receive slot: a whole GRO train.
const SLOT_BYTES: usize = 65_535;

/// Opens a non-blocking UDP socket bound to `local`, with large buffers.
pub fn bind(local: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(local), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES)?;
    socket.set_send_buffer_size(SOCKET_BUFFER_BYTES)?;
    socket.bind(&local.into())?;
    Ok(socket.into())
}

/// Running totals of a receiver.
#[derive(Debug, Default)]
struct RecvTotals {
    datagrams: AtomicU64,
    bytes: AtomicU64,
    calls: AtomicU64,
    /// Datagrams whose length was not the one expected.
    wrong_len: AtomicU64,
    expect_len: AtomicU64,
    tid: AtomicU32,
}

/// What a receiver has counted so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecvCount {
    pub datagrams: u64,
    pub bytes: u64,
    pub calls: u64,
    pub wrong_len: u64,
}

/// A thread that receives and counts everything sent to its socket.
#[derive(Debug)]
pub struct Receiver {
    local: SocketAddr,
    totals: Arc<RecvTotals>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Receiver {
    /// Binds `local` and starts receiving.
    pub fn start(local: SocketAddr) -> io::Result<Self> {
        Self::start_on(bind(local)?)
    }

    /// Starts receiving on a socket opened with [`bind`] (one that first
    /// had something else to do, such as binding a relay leg).
    pub fn start_on(socket: UdpSocket) -> io::Result<Self> {
        let local = socket.local_addr()?;
        let state = UdpSocketState::new((&socket).into())?;
        let totals = Arc::new(RecvTotals::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (totals, stop) = (Arc::clone(&totals), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("bench-recv".into())
                .spawn(move || receive(socket, &state, &totals, &stop))?
        };
        // The thread publishes its id first thing; CPU readings need it.
        let deadline = Instant::now() + Duration::from_secs(2);
        while totals.tid.load(Ordering::Acquire) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(Self {
            local,
            totals,
            stop,
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The receiving thread's id (0 if it has not said yet).
    pub fn tid(&self) -> u32 {
        self.totals.tid.load(Ordering::Acquire)
    }

    /// Datagrams of any other length are counted as `wrong_len`.
    pub fn expect_len(&self, len: usize) {
        self.totals.expect_len.store(len as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> RecvCount {
        let t = &self.totals;
        RecvCount {
            datagrams: t.datagrams.load(Ordering::Relaxed),
            bytes: t.bytes.load(Ordering::Relaxed),
            calls: t.calls.load(Ordering::Relaxed),
            wrong_len: t.wrong_len.load(Ordering::Relaxed),
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn receive(
    socket: UdpSocket,
    state: &UdpSocketState,
    totals: &RecvTotals,
    stop: &AtomicBool,
) -> io::Result<()> {
    totals
        .tid
        .store(current_tid().unwrap_or(u32::MAX), Ordering::Release);
    let mut socket = mio::net::UdpSocket::from_std(socket);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut socket, Token(0), Interest::READABLE)?;
    let mut events = Events::with_capacity(4);
    let mut storage = vec![0u8; BATCH_SIZE * SLOT_BYTES];
    let mut metas = [RecvMeta::default(); BATCH_SIZE];
    while !stop.load(Ordering::Acquire) {
        match poll.poll(&mut events, Some(Duration::from_millis(50))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        // Edge-triggered: drain until the kernel says it would block.
        loop {
            let mut bufs: Vec<IoSliceMut<'_>> = storage
                .chunks_mut(SLOT_BYTES)
                .map(IoSliceMut::new)
                .collect();
            match state.recv((&socket).into(), &mut bufs, &mut metas) {
                Ok(n) => {
                    totals.calls.fetch_add(1, Ordering::Relaxed);
                    let expect = totals.expect_len.load(Ordering::Relaxed) as usize;
                    let (mut datagrams, mut bytes, mut wrong) = (0u64, 0u64, 0u64);
                    for meta in &metas[..n] {
                        let stride = if meta.stride == 0 {
                            meta.len
                        } else {
                            meta.stride
                        };
                        let segments = meta.len.div_ceil(stride.max(1)).max(1);
                        datagrams += segments as u64;
                        bytes += meta.len as u64;
                        // A train's last segment may be shorter; every
                        // datagram sent here has the same length.
                        if expect != 0 && (stride != expect || meta.len % expect != 0) {
                            wrong += segments as u64;
                        }
                    }
                    totals.datagrams.fetch_add(datagrams, Ordering::Relaxed);
                    totals.bytes.fetch_add(bytes, Ordering::Relaxed);
                    totals.wrong_len.fetch_add(wrong, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// What a sender should do.
#[derive(Debug, Clone, Copy)]
pub struct Offer {
    pub dst: SocketAddr,
    /// Bytes of UDP payload per datagram.
    pub size: usize,
    /// Datagrams per second; `None` sends as fast as the kernel takes them.
    pub rate: Option<f64>,
    /// Datagrams per send call (GSO segments); capped by the kernel's limit
    /// and 64,000 bytes.
    pub burst: usize,
}

/// The sending socket, kept across runs: the mesh's ingress only takes
/// datagrams from the service's configured address, which is this one.
#[derive(Debug)]
pub struct Sender {
    socket: Arc<UdpSocket>,
    state: Arc<UdpSocketState>,
}

/// Running totals of one sending run.
#[derive(Debug, Default)]
struct SendTotals {
    datagrams: AtomicU64,
    calls: AtomicU64,
    /// Datagrams not sent because the send buffer was full.
    would_block: AtomicU64,
    errors: AtomicU64,
    tid: AtomicU32,
}

/// What a sending run has counted so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct SendCount {
    pub datagrams: u64,
    pub calls: u64,
    pub would_block: u64,
    pub errors: u64,
}

/// A sending run on its own thread; dropping it stops it.
#[derive(Debug)]
pub struct Sending {
    totals: Arc<SendTotals>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sender {
    /// Binds the sending socket at `local`.
    pub fn bind(local: SocketAddr) -> io::Result<Self> {
        let socket = bind(local)?;
        let state = UdpSocketState::new((&socket).into())?;
        Ok(Self {
            socket: Arc::new(socket),
            state: Arc::new(state),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The sending socket itself, for a datagram outside a sending run
    /// (such as a relay bind) and its answer.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }

    /// The burst `offer` will actually use.
    pub fn effective_burst(&self, offer: &Offer) -> usize {
        let by_bytes = (GSO_MAX_BYTES / offer.size.max(1)).max(1);
        offer
            .burst
            .clamp(1, self.state.max_gso_segments().max(1))
            .min(by_bytes)
    }

    /// Sends `offer` on a new thread until the returned run is stopped.
    pub fn start(&self, offer: Offer) -> io::Result<Sending> {
        let burst = self.effective_burst(&offer);
        let totals = Arc::new(SendTotals::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (socket, state) = (Arc::clone(&self.socket), Arc::clone(&self.state));
            let (totals, stop) = (Arc::clone(&totals), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("bench-send".into())
                .spawn(move || send(&socket, &state, offer, burst, &totals, &stop))?
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while totals.tid.load(Ordering::Acquire) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(Sending {
            totals,
            stop,
            thread: Some(thread),
        })
    }
}

impl Sending {
    pub fn tid(&self) -> u32 {
        self.totals.tid.load(Ordering::Acquire)
    }

    pub fn count(&self) -> SendCount {
        let t = &self.totals;
        SendCount {
            datagrams: t.datagrams.load(Ordering::Relaxed),
            calls: t.calls.load(Ordering::Relaxed),
            would_block: t.would_block.load(Ordering::Relaxed),
            errors: t.errors.load(Ordering::Relaxed),
        }
    }

    /// Stops sending and waits for the thread.
    pub fn stop(mut self) -> SendCount {
        self.halt();
        self.count()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        self.halt();
    }
}

fn send(
    socket: &UdpSocket,
    state: &UdpSocketState,
    offer: Offer,
    burst: usize,
    totals: &SendTotals,
    stop: &AtomicBool,
) {
    totals
        .tid
        .store(current_tid().unwrap_or(u32::MAX), Ordering::Release);
    let payload: Vec<u8> = (0..offer.size * burst).map(|i| (i % 251) as u8).collect();
    let transmit = Transmit {
        destination: offer.dst,
        ecn: None,
        contents: &payload,
        segment_size: (burst > 1).then_some(offer.size),
        src_ip: None,
    };
    let start = Instant::now();
    let mut sent: u64 = 0;
    while !stop.load(Ordering::Acquire) {
        if let Some(rate) = offer.rate {
            // Token bucket: the datagrams due by now. A sleep overshoots
            // by tens of microseconds, so up to 2 ms of backlog is caught
            // up with back-to-back sends; more than that is forgiven, so a
            // long stall does not turn into a long burst.
            let due = (start.elapsed().as_secs_f64() * rate) as u64;
            if due < sent + burst as u64 {
                let wait = (sent + burst as u64 - due) as f64 / rate;
                std::thread::sleep(Duration::from_secs_f64(wait.min(0.01)));
                continue;
            }
            let slack = (2 * burst as u64).max((rate * 0.002) as u64);
            if due > sent + slack {
                sent = due - slack;
            }
        }
        totals.calls.fetch_add(1, Ordering::Relaxed);
        match state.try_send(socket.into(), &transmit) {
            Ok(()) => {
                totals.datagrams.fetch_add(burst as u64, Ordering::Relaxed);
                sent += burst as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                totals
                    .would_block
                    .fetch_add(burst as u64, Ordering::Relaxed);
                // Give the kernel a moment to free the buffer.
                std::thread::sleep(Duration::from_micros(50));
            }
            Err(_) => {
                totals.errors.fetch_add(burst as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}
