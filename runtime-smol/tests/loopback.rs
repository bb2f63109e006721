//! Two probers, each with its own driver, on one `smol::block_on` thread
//! over real loopback sockets: both validate the path, then one
//! carries a thousand payloads to the other, which must deliver every one
//! byte for byte.

use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use transitloom_proto_core::probe::{ProbeEvent, Prober, PROBE_SOCKET};
use transitloom_runtime_smol::{Exit, Mailbox, SmolDriver};

#[path = "../../runtime-mio/tests/support/prober_pair.rs"]
mod prober_pair;

use prober_pair::{config, free_port, payloads, PAYLOADS, WINDOW};

#[test]
fn two_probers_carry_a_thousand_payloads_byte_for_byte() {
    smol::block_on(carry_a_thousand_payloads());
}

async fn carry_a_thousand_payloads() {
    let started = Instant::now();
    let deadline = Some(started + Duration::from_secs(4));
    let (addr_a, addr_b) = (free_port(), free_port());
    let payloads = payloads();
    let mut a = SmolDriver::new(Prober::new(config(addr_a, addr_b, 1)));
    let mut b = SmolDriver::new(Prober::new(config(addr_b, addr_a, 2)));
    let (mut sink_a, mut sink_b) = (Mailbox::<ProbeEvent>::new(), Mailbox::<ProbeEvent>::new());

    // Both run until both have validated: each keeps answering the other.
    let (a_ok, b_ok) = (Cell::new(false), Cell::new(false));
    let (exit_a, exit_b) = smol::future::zip(
        a.run_until(&mut sink_a, deadline, |m, _| {
            a_ok.set(m.best_path().is_some());
            a_ok.get() && b_ok.get()
        }),
        b.run_until(&mut sink_b, deadline, |m, _| {
            b_ok.set(m.best_path().is_some());
            a_ok.get() && b_ok.get()
        }),
    )
    .await;
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
    let mut got: Vec<Bytes> = sink_b.delivered.drain(..).map(|(_, p)| p).collect();
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

#[test]
fn a_wait_raced_against_the_program_keeps_both_going() {
    smol::block_on(async {
        let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let mut driver = SmolDriver::new(Prober::new(config(local, free_port(), 3)));
        let mut mailbox = Mailbox::<ProbeEvent>::new();
        let started = Instant::now();
        // The embedding loop: pump, then race the wait against a timer of
        // the program's own, as `future::or` with a channel would.
        let mut program_ticks = 0;
        while started.elapsed() < Duration::from_millis(150) {
            driver.pump(&mut mailbox);
            let tick = async {
                async_io::Timer::after(Duration::from_millis(7)).await;
                true
            };
            let net = async {
                driver.wait(None).await;
                false
            };
            if smol::future::or(tick, net).await {
                program_ticks += 1;
            }
        }
        assert!(program_ticks > 5, "the program's own future starved");
        let pings = driver.machine().counters().pings_sent;
        assert!(pings >= 2, "probe timer did not fire: {pings} pings");
        assert!(
            matches!(mailbox.events.first(), Some(ProbeEvent::Bound(addr)) if addr.port() != 0)
        );
    });
}
