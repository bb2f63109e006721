//! `tl-bench relay`: the relay machine (proto-core's `Relay`, the same code
//! coordinators and nodes host) on real loopback sockets through the mio
//! driver, against a minimal forwarder on a plain socket, with the same
//! sender and receiver, in one run, and the ratio.
//!
//! The sender binds leg 0 and the receiver leg 1 of one allocation with
//! authentic binds from their own sockets (and check the acknowledgements);
//! then the sender goes flat out to the relay's port, and the relay
//! forwards to the receiver. Two baselines do nothing but
//! `match src { a => send to b, b => send to a }` on a socket with the
//! same buffers: `plain` with `recv_from` and `send_to`, one datagram per
//! call (the minimal forwarder), and `batched` with the same quinn-udp
//! batching the mio driver uses (recvmmsg with GRO in, each received train
//! sent back out as one GSO send), so the ratios separate what batching
//! buys from what the relay machine costs. Each forwarder runs on its own
//! thread of this process, so its CPU time is read per thread.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use mio::{Events, Interest, Poll, Token};
use quinn_udp::{RecvMeta, Transmit, UdpSocketState, BATCH_SIZE};
use transitloom_proto_core::driver::Discard;
use transitloom_proto_core::relay::{
    AllocationSpec, RateLimit, Relay, RelayConfig, RelayEvent, BIND_LEN,
};
use transitloom_proto_core::wire::{classify, AuthKey, Classified, ControlBody, ControlRepr};
use transitloom_proto_core::{AssocId, NodeId};
use transitloom_runtime_mio::{wall_clock_now, DriverHandle, Exit, MioDriver};

use crate::cpu::{current_tid, CpuReading, Task};
use crate::load::{self, Offer, Receiver, Sender};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const ALLOCATION: u64 = 1;

/// Options of `tl-bench relay`.
#[derive(Debug, Args)]
pub struct RelayArgs {
    /// UDP payload sizes to measure, in bytes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1400,200")]
    pub sizes: Vec<usize>,
    /// Length of each flat-out measurement window, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Rounds per size; each round measures both forwarders once
    /// (interleaved), and the spread across rounds is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Seconds of sending before each window's counters are read.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Datagrams per sendmsg call of the sender (GSO segments). 1 sends
    /// datagram by datagram.
    #[arg(long, default_value_t = 64)]
    pub burst: usize,
}

/// A forwarder under test: its address and its thread.
struct Forwarder {
    name: &'static str,
    addr: SocketAddr,
    tid: u32,
}

/// What one measured window saw.
#[derive(Debug, Clone, Copy)]
struct Window {
    seconds: f64,
    offered: u64,
    delivered: u64,
    bytes: u64,
    wrong_len: u64,
    forwarder: CpuReading,
    sender: CpuReading,
    receiver: CpuReading,
}

impl Window {
    fn delivered_pps(&self) -> f64 {
        self.delivered as f64 / self.seconds
    }
    fn gbps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.seconds / 1e9
    }
    fn loss(&self) -> f64 {
        if self.offered == 0 {
            return 0.0;
        }
        (1.0 - self.delivered as f64 / self.offered as f64).max(0.0)
    }
    /// The forwarder's CPU microseconds per delivered datagram.
    fn forwarder_us(&self) -> f64 {
        self.forwarder.cpu_s * 1e6 / self.delivered.max(1) as f64
    }
}

pub fn run(args: &RelayArgs) -> Result<()> {
    if args.sizes.iter().any(|&s| s == 0 || s > 65_000) {
        bail!("--sizes: each size must be 1..=65000 bytes");
    }
    let sender = Sender::bind(SocketAddr::new(LOOPBACK, 0)).context("binding the sender")?;
    let receiver_socket =
        load::bind(SocketAddr::new(LOOPBACK, 0)).context("binding the receiver")?;
    let (a, b) = (sender.local_addr()?, receiver_socket.local_addr()?);

    let plain = Baseline::start(a, b, false).context("starting the plain forwarder")?;
    let batched = Baseline::start(a, b, true).context("starting the batched forwarder")?;
    let relay =
        RelayHost::start(sender.socket(), &receiver_socket).context("starting the relay")?;
    let receiver = Receiver::start_on(receiver_socket).context("starting the receiver")?;
    let forwarders = [
        Forwarder {
            name: "plain",
            addr: plain.addr,
            tid: plain.tid,
        },
        Forwarder {
            name: "batched",
            addr: batched.addr,
            tid: batched.tid,
        },
        Forwarder {
            name: "relay",
            addr: relay.addr,
            tid: relay.tid,
        },
    ];
    for f in &forwarders {
        check_carries(&sender, &receiver, f)?;
    }
    eprintln!(
        "relay port {} (legs {a} and {b} bound), plain forwarder {}, batched forwarder {}",
        relay.addr, plain.addr, batched.addr
    );

    for &size in &args.sizes {
        let mut windows: [Vec<Window>; 3] = Default::default();
        for round in 0..args.runs {
            for (f, w) in forwarders.iter().zip(&mut windows) {
                eprintln!(
                    "{size} B, run {}/{}: {} flat out for {} s",
                    round + 1,
                    args.runs,
                    f.name,
                    args.seconds
                );
                w.push(window(args, &sender, &receiver, f, size)?);
            }
        }
        print_size(args, &sender, size, &forwarders, &windows);
    }

    let relay_driver = relay.stop()?;
    plain.stop()?;
    batched.stop()?;
    let view = relay_driver
        .machine()
        .allocation(ALLOCATION)
        .context("the allocation expired during the benchmark")?;
    let c = view.counters();
    println!();
    println!(
        "relay allocation: {} datagrams ({} bytes) forwarded leg 0 → leg 1, {} the other way, {} dropped",
        c.forwarded[0].packets,
        c.forwarded[0].bytes,
        c.forwarded[1].packets,
        c.dropped_total()
    );
    Ok(())
}

/// A few datagrams must cross before anything is measured.
fn check_carries(sender: &Sender, receiver: &Receiver, f: &Forwarder) -> Result<()> {
    let before = receiver.count().datagrams;
    let run = sender.start(Offer {
        dst: f.addr,
        size: 100,
        rate: Some(1_000.0),
        burst: 1,
    })?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while receiver.count().datagrams < before + 100 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    run.stop();
    if receiver.count().datagrams < before + 100 {
        bail!(
            "datagrams sent to the {} at {} did not arrive",
            f.name,
            f.addr
        );
    }
    std::thread::sleep(Duration::from_millis(100));
    Ok(())
}

/// One flat-out window through `f`.
fn window(
    args: &RelayArgs,
    sender: &Sender,
    receiver: &Receiver,
    f: &Forwarder,
    size: usize,
) -> Result<Window> {
    receiver.expect_len(size);
    let sending = sender.start(Offer {
        dst: f.addr,
        size,
        rate: None,
        burst: args.burst,
    })?;
    std::thread::sleep(Duration::from_secs_f64(args.warmup));
    let tasks = [
        Task::OwnThread(f.tid),
        Task::OwnThread(sending.tid()),
        Task::OwnThread(receiver.tid()),
    ];
    let read = || -> Result<Vec<CpuReading>> {
        tasks
            .iter()
            .map(|t| t.read().context("reading CPU time"))
            .collect()
    };
    let (s0, r0, c0, t0) = (sending.count(), receiver.count(), read()?, Instant::now());
    std::thread::sleep(Duration::from_secs_f64(args.seconds));
    let (s1, r1, c1, t1) = (sending.count(), receiver.count(), read()?, Instant::now());
    sending.stop();
    std::thread::sleep(Duration::from_millis(200));
    Ok(Window {
        seconds: (t1 - t0).as_secs_f64(),
        offered: s1.datagrams - s0.datagrams,
        delivered: r1.datagrams - r0.datagrams,
        bytes: r1.bytes - r0.bytes,
        wrong_len: r1.wrong_len - r0.wrong_len,
        forwarder: c1[0].since(c0[0]),
        sender: c1[1].since(c0[1]),
        receiver: c1[2].since(c0[2]),
    })
}

fn print_size(
    args: &RelayArgs,
    sender: &Sender,
    size: usize,
    forwarders: &[Forwarder; 3],
    windows: &[Vec<Window>; 3],
) {
    let burst = sender.effective_burst(&Offer {
        dst: forwarders[0].addr,
        size,
        rate: None,
        burst: args.burst,
    });
    println!();
    println!(
        "{size}-byte datagrams: {} run(s) of {} s per forwarder, flat out, sender {burst} datagram(s) per sendmsg",
        args.runs, args.seconds
    );
    println!(
        "{:<9} {:>3} {:>9} {:>9} {:>7} {:>6} | {:>8} {:>6} | {:>6} {:>6}",
        "forwarder",
        "run",
        "offer/s",
        "deliv/s",
        "Gbit/s",
        "loss%",
        "fwd µs",
        "cores",
        "send",
        "recv"
    );
    for (f, ws) in forwarders.iter().zip(windows) {
        for (i, w) in ws.iter().enumerate() {
            println!(
                "{:<9} {:>3} {:>9} {:>9} {:>7.2} {:>6.1} | {:>8.2} {:>6.2} | {:>6.2} {:>6.2}",
                f.name,
                i + 1,
                kilo(w.offered as f64 / w.seconds),
                kilo(w.delivered_pps()),
                w.gbps(),
                w.loss() * 100.0,
                w.forwarder_us(),
                w.forwarder.cpu_s / w.seconds,
                w.sender.cpu_s / w.seconds,
                w.receiver.cpu_s / w.seconds,
            );
            if w.wrong_len > 0 {
                println!(
                    "          ! {} datagram(s) arrived with another length",
                    w.wrong_len
                );
            }
        }
    }
    let ratios = |base: usize, f: fn(&Window) -> f64| -> Vec<f64> {
        windows[2]
            .iter()
            .zip(&windows[base])
            .map(|(r, b)| f(r) / f(b).max(1e-12))
            .collect()
    };
    for (base, name) in [(0, "plain"), (1, "batched")] {
        println!(
            "ratio relay/{name}: delivered {}; forwarder CPU per datagram {}",
            spread(&ratios(base, Window::delivered_pps)),
            spread(&ratios(base, Window::forwarder_us))
        );
    }
}

/// `mean (runs min–max)`.
fn spread(values: &[f64]) -> String {
    if values.is_empty() {
        return "-".to_owned();
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{mean:.2} (runs {min:.2}–{max:.2})")
}

/// `123.4k`, `1.23M`.
fn kilo(pps: f64) -> String {
    if pps >= 1e6 {
        format!("{:.2}M", pps / 1e6)
    } else {
        format!("{:.1}k", pps / 1e3)
    }
}

/// A baseline forwarder on one socket: what arrives from one side goes to
/// the other, nothing else.
struct Baseline {
    addr: SocketAddr,
    tid: u32,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<io::Result<()>>,
}

impl Baseline {
    /// `batched` receives and sends through quinn-udp (GRO and GSO) like
    /// the mio driver; otherwise one `recv_from` and one `send_to` per
    /// datagram.
    fn start(a: SocketAddr, b: SocketAddr, batched: bool) -> io::Result<Self> {
        let socket = load::bind(SocketAddr::new(LOOPBACK, 0))?;
        let addr = socket.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let tid = Arc::new(AtomicU32::new(0));
        let thread = {
            let (stop, tid) = (Arc::clone(&stop), Arc::clone(&tid));
            std::thread::Builder::new()
                .name("bench-baseline".into())
                .spawn(move || {
                    tid.store(current_tid().unwrap_or(u32::MAX), Ordering::Release);
                    if batched {
                        forward_batched(socket, a, b, &stop)
                    } else {
                        forward_plain(socket, a, b, &stop)
                    }
                })?
        };
        Ok(Self {
            addr,
            tid: wait_for_tid(&tid),
            stop,
            thread,
        })
    }

    fn stop(self) -> Result<()> {
        self.stop.store(true, Ordering::Release);
        match self.thread.join() {
            Ok(result) => result.context("a baseline forwarder failed"),
            Err(_) => bail!("a baseline forwarder panicked"),
        }
    }
}

fn forward_plain(
    socket: UdpSocket,
    a: SocketAddr,
    b: SocketAddr,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut socket = mio::net::UdpSocket::from_std(socket);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut socket, Token(0), Interest::READABLE)?;
    let mut events = Events::with_capacity(4);
    let mut buf = vec![0u8; 65_535];
    while !stop.load(Ordering::Acquire) {
        match poll.poll(&mut events, Some(Duration::from_millis(50))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        loop {
            let (len, src) = match socket.recv_from(&mut buf) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let dst = match src {
                src if src == a => b,
                src if src == b => a,
                _ => continue,
            };
            // A full send buffer drops the datagram, as UDP may.
            let _ = socket.send_to(&buf[..len], dst);
        }
    }
    Ok(())
}

/// Receive slot: a whole GRO train.
const SLOT_BYTES: usize = 65_535;

fn forward_batched(
    socket: UdpSocket,
    a: SocketAddr,
    b: SocketAddr,
    stop: &AtomicBool,
) -> io::Result<()> {
    let state = UdpSocketState::new((&socket).into())?;
    let max_segments = state.max_gso_segments().max(1);
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
        loop {
            let mut bufs: Vec<IoSliceMut<'_>> = storage
                .chunks_mut(SLOT_BYTES)
                .map(IoSliceMut::new)
                .collect();
            let n = match state.recv((&socket).into(), &mut bufs, &mut metas) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            for (meta, buf) in metas[..n].iter().zip(&bufs) {
                let dst = match meta.addr {
                    src if src == a => b,
                    src if src == b => a,
                    _ => continue,
                };
                let stride = if meta.stride == 0 {
                    meta.len
                } else {
                    meta.stride
                };
                // A train goes back out as GSO sends of at most what the
                // kernel takes per call.
                for chunk in buf[..meta.len].chunks(stride.max(1) * max_segments) {
                    let transmit = Transmit {
                        destination: dst,
                        ecn: None,
                        contents: chunk,
                        segment_size: (chunk.len() > stride).then_some(stride),
                        src_ip: None,
                    };
                    // A full send buffer drops the train, as UDP may.
                    let _ = state.try_send((&socket).into(), &transmit);
                }
            }
        }
    }
    Ok(())
}

/// The relay machine under the mio driver, on its own thread.
struct RelayHost {
    addr: SocketAddr,
    tid: u32,
    handle: DriverHandle,
    thread: JoinHandle<io::Result<MioDriver<Relay>>>,
}

impl RelayHost {
    /// Opens one allocation, binds leg 0 from `leg0` and leg 1 from `leg1`
    /// (checking both acknowledgements), then runs the driver on a thread.
    fn start(leg0: &UdpSocket, leg1: &UdpSocket) -> Result<Self> {
        let wall = wall_clock_now();
        let mut config = RelayConfig::new(wall, u64::from(std::process::id()));
        // The token bucket runs on every datagram but never limits here.
        config.rate_limit = Some(RateLimit::new(100_000_000_000));
        config.idle_timeout = Duration::from_secs(3_600);
        let mut driver = MioDriver::new(Relay::new(config))?;
        let key: [u8; 32] =
            std::array::from_fn(|i| (i as u8).wrapping_mul(7) ^ std::process::id() as u8);
        driver
            .machine_mut()
            .allocate(
                Instant::now(),
                AllocationSpec {
                    allocation: ALLOCATION,
                    assoc: AssocId(1),
                    key,
                    nodes: [NodeId(1), NodeId(2)],
                    local: SocketAddr::new(LOOPBACK, 0),
                },
            )
            .context("allocating")?;
        let mut events = Vec::new();
        driver.pump(&mut events);
        let addr = events
            .iter()
            .find_map(|e| match e {
                RelayEvent::Allocated { local, .. } => Some(*local),
                _ => None,
            })
            .context("the relay opened no port")?;
        let auth = AuthKey::new(&key);
        // Each leg binds as an endpoint does: without a cookie, answered
        // with one, then with it, which pins the leg.
        for (leg, socket) in [(0u8, leg0), (1u8, leg1)] {
            let local = socket.local_addr()?;
            let mut cookie = 0;
            for step in 0..2u64 {
                let bind = ControlRepr {
                    txid: u64::from(leg) * 2 + step + 1,
                    timestamp_us: wall.unix_us(Instant::now()),
                    body: ControlBody::RelayBind {
                        allocation: ALLOCATION,
                        leg,
                        cookie,
                    },
                }
                .to_bytes(&auth);
                socket.send_to(&bind, addr)?;
                let answered = Instant::now() + Duration::from_secs(2);
                let mut ack = None;
                let exit = driver.run_until(&mut events, Some(answered), |_, _| {
                    ack = recv_now(socket);
                    ack.is_some()
                })?;
                let ack = match (exit, ack) {
                    (Exit::Done, Some(ack)) => ack,
                    _ => bail!("the relay did not answer leg {leg}'s bind"),
                };
                match classify(&ack, &auth) {
                    Classified::Control(ControlRepr {
                        body:
                            ControlBody::RelayBindAck {
                                leg: l,
                                cookie: c,
                                observed,
                                ..
                            },
                        ..
                    }) if l == leg && observed.0 == local && ack.len() == BIND_LEN => cookie = c,
                    other => bail!("leg {leg}: not the acknowledgement expected: {other:?}"),
                }
            }
            let pinned = driver
                .machine()
                .allocation(ALLOCATION)
                .is_some_and(|v| v.legs()[usize::from(leg)].addr == Some(local));
            if !pinned {
                bail!("the relay did not pin leg {leg} to {local}");
            }
        }
        let handle = driver.handle();
        let tid = Arc::new(AtomicU32::new(0));
        let thread = {
            let tid = Arc::clone(&tid);
            std::thread::Builder::new()
                .name("bench-relay".into())
                .spawn(move || {
                    tid.store(current_tid().unwrap_or(u32::MAX), Ordering::Release);
                    driver.run(&mut Discard)?;
                    Ok(driver)
                })?
        };
        Ok(Self {
            addr,
            tid: wait_for_tid(&tid),
            handle,
            thread,
        })
    }

    fn stop(self) -> Result<MioDriver<Relay>> {
        self.handle.stop();
        match self.thread.join() {
            Ok(result) => result.context("the relay's driver failed"),
            Err(_) => bail!("the relay's driver panicked"),
        }
    }
}

/// One datagram from a non-blocking socket, if one is there.
fn recv_now(socket: &UdpSocket) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 2_048];
    match socket.recv_from(&mut buf) {
        Ok((len, _)) => Some(buf[..len].to_vec()),
        Err(_) => None,
    }
}

/// A thread publishes its id first thing; CPU readings need it.
fn wait_for_tid(tid: &AtomicU32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(2);
    while tid.load(Ordering::Acquire) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    tid.load(Ordering::Acquire)
}
