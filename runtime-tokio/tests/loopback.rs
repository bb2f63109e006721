//! Two probers, each with its own driver, on one current-thread tokio
//! runtime over real loopback sockets: both validate the path, then one
//! carries a thousand payloads to the other, which must deliver every one
//! byte for byte.

use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use bytes::Bytes;
use transitloom_proto_core::driver::Sink;
use transitloom_proto_core::probe::{ProbeEvent, Prober, ProberConfig, PROBE_SOCKET};
use transitloom_proto_core::wire::MAGIC;
use transitloom_proto_core::ServiceId;
use transitloom_runtime_tokio::{wall_clock_now, Exit, TokioDriver};

const PAYLOADS: usize = 1_000;
/// Payloads in flight at once: the receiver's socket buffer holds them all.
const WINDOW: usize = 64;

fn free_port() -> SocketAddr {
    let probe = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    probe.local_addr().unwrap()
}

fn config(local: SocketAddr, remote: SocketAddr, seed: u64) -> ProberConfig {
    ProberConfig {
        local,
        key: [0x5a; 32],
        remotes: vec![remote],
        interval: Duration::from_millis(50),
        // Generous: a side pauses while the other drains a window.
        failed_after: 40,
        seed,
        wall_clock: wall_clock_now(),
    }
}

/// Varied sizes (1..=1400), runs of equal sizes (GSO material), and every
/// seventh payload starting with the control magic.
fn payloads() -> Vec<Bytes> {
    (0..PAYLOADS)
        .map(|i| {
            let len = if i % 100 < 24 {
                1_200
            } else {
                1 + (i * 7_919) % 1_400
            };
            let mut payload: Vec<u8> = (0..len).map(|j| (i * 31 + j) as u8).collect();
            if i % 7 == 0 {
                let n = len.min(MAGIC.len());
                payload[..n].copy_from_slice(&MAGIC[..n]);
            }
            if len >= MAGIC.len() + 4 {
                payload[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&(i as u32).to_be_bytes());
            }
            Bytes::from(payload)
        })
        .collect()
}

#[derive(Default)]
struct Collector {
    events: Vec<ProbeEvent>,
    delivered: Vec<Bytes>,
}

impl Sink<ProbeEvent> for Collector {
    fn event(&mut self, event: ProbeEvent) {
        self.events.push(event);
    }

    fn deliver(&mut self, _service: ServiceId, payload: Bytes) {
        self.delivered.push(payload);
    }
}

#[tokio::test]
async fn two_probers_carry_a_thousand_payloads_byte_for_byte() {
    let started = Instant::now();
    let deadline = Some(started + Duration::from_secs(4));
    let (addr_a, addr_b) = (free_port(), free_port());
    let payloads = payloads();
    let mut a = TokioDriver::new(Prober::new(config(addr_a, addr_b, 1)));
    let mut b = TokioDriver::new(Prober::new(config(addr_b, addr_a, 2)));
    let (mut sink_a, mut sink_b) = (Collector::default(), Collector::default());

    // Both run until both have validated: each keeps answering the other.
    let (a_ok, b_ok) = (Cell::new(false), Cell::new(false));
    let (exit_a, exit_b) = tokio::join!(
        a.run_until(&mut sink_a, deadline, |m, _| {
            a_ok.set(m.best_path().is_some());
            a_ok.get() && b_ok.get()
        }),
        b.run_until(&mut sink_b, deadline, |m, _| {
            b_ok.set(m.best_path().is_some());
            a_ok.get() && b_ok.get()
        }),
    );
    assert_eq!(
        (exit_a, exit_b),
        (Exit::Done, Exit::Done),
        "{:?} {:?}",
        sink_a.events,
        sink_b.events
    );
    assert!(sink_a
        .events
        .iter()
        .any(|e| matches!(e, ProbeEvent::PathValidated { remote, .. } if *remote == addr_b)));
    let validated_after = started.elapsed();

    // A sends a window, pumps once to flush it, and B runs until it has
    // delivered everything sent so far.
    let mut sent = 0;
    for window in payloads.chunks(WINDOW) {
        for payload in window {
            assert!(a.machine_mut().send_data(payload.clone()));
        }
        sent += window.len();
        a.pump(&mut sink_a);
        let exit = b
            .run_until(&mut sink_b, deadline, |_, s| s.delivered.len() >= sent)
            .await;
        assert_eq!(exit, Exit::Done, "receiver stalled at {sent} sent");
    }
    for (side, io) in [("sender", a.io()), ("receiver", b.io())] {
        let offload = io.offload(PROBE_SOCKET).unwrap();
        eprintln!(
            "{side}: gso={} gro={} {:?}",
            offload.max_gso_segments(),
            offload.gro_segments(),
            offload.counters()
        );
    }

    assert_eq!(b.machine().counters().data_delivered, PAYLOADS as u64);
    let mut got = std::mem::take(&mut sink_b.delivered);
    let mut want = payloads;
    if got != want {
        // Loopback keeps order in practice; what matters is nothing lost or altered.
        got.sort();
        want.sort();
    }
    assert_eq!(got, want);
    eprintln!(
        "validated after {validated_after:?}, done after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_run_is_cancelled_by_select_and_resumes() {
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let mut driver = TokioDriver::new(Prober::new(config(local, free_port(), 3)));
    let mut sink = Collector::default();
    tokio::select! {
        _ = driver.run_until(&mut sink, None, |_, _| false) => panic!("a run without end ended"),
        _ = tokio::time::sleep(Duration::from_millis(120)) => {}
    }
    let pings = driver.machine().counters().pings_sent;
    assert!(pings >= 2, "probe timer did not fire: {pings} pings");
    assert!(matches!(sink.events.first(), Some(ProbeEvent::Bound(addr)) if addr.port() != 0));
    // The driver is intact after cancellation.
    let deadline = Some(Instant::now() + Duration::from_secs(2));
    let exit = driver
        .run_until(&mut sink, deadline, |m, _| m.counters().pings_sent > pings)
        .await;
    assert_eq!(exit, Exit::Done);
}

#[test]
fn a_run_can_be_spawned_on_a_multi_thread_runtime() {
    fn assert_send<T: Send>(_: &T) {}
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let mut driver = TokioDriver::new(Prober::new(config(local, free_port(), 4)));
    let mut sink = Collector::default();
    assert_send(&driver.run_until(&mut sink, None, |_, _| false));
}
