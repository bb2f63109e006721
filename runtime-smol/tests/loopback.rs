//! Two probers, each with its own driver, on one `smol::block_on` thread
//! over real loopback sockets: both validate the path, then one
//! carries a thousand payloads to the other, which must deliver every one
//! byte for byte.

use std::cell::Cell;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use bytes::Bytes;
use transitloom_proto_core::probe::{ProbeEvent, Prober, ProberConfig, PROBE_SOCKET};
use transitloom_proto_core::wire::MAGIC;
use transitloom_runtime_smol::{wall_clock_now, Exit, Mailbox, SmolDriver};

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
