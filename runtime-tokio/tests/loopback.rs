//! Two probers, each with its own driver, on one current-thread tokio
//! runtime over real loopback sockets: both validate the path, then one
//! carries a thousand payloads to the other, which must deliver every one
//! byte for byte.

use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use transitloom_proto_core::driver::Sink;
use transitloom_proto_core::probe::{ProbeEvent, Prober, PROBE_SOCKET};
use transitloom_proto_core::ServiceId;
use transitloom_runtime_tokio::{Exit, TokioDriver};

#[path = "../../runtime-mio/tests/support/prober_pair.rs"]
mod prober_pair;

use prober_pair::{config, free_port, payloads, PAYLOADS, WINDOW};

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
fn a_run_future_is_send_so_it_can_be_spawned_on_a_multi_thread_runtime() {
    fn assert_send<T: Send>(_: &T) {}
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let mut driver = TokioDriver::new(Prober::new(config(local, free_port(), 4)));
    let mut sink = Collector::default();
    assert_send(&driver.run_until(&mut sink, None, |_, _| false));
}
