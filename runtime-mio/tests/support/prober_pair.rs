//! What the three runtimes' loopback tests share: free ports, two prober
//! configurations that point at each other, and the payload set. Included
//! by path from runtime-mio, runtime-tokio and runtime-smol tests.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use bytes::Bytes;
use transitloom_proto_core::probe::ProberConfig;
use transitloom_proto_core::wire::MAGIC;
use transitloom_runtime_mio::wall_clock_now;

pub const PAYLOADS: usize = 1_000;
/// Payloads in flight at once: the receiver's socket buffer holds them all.
pub const WINDOW: usize = 64;

pub fn free_port() -> SocketAddr {
    let probe = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    probe.local_addr().unwrap()
}

pub fn config(local: SocketAddr, remote: SocketAddr, seed: u64) -> ProberConfig {
    ProberConfig {
        local,
        key: [0x5a; 32],
        remotes: vec![remote],
        interval: Duration::from_millis(50),
        // Generous: a side may pause while the other drains a window.
        failed_after: 40,
        seed,
        wall_clock: wall_clock_now(),
    }
}

/// Varied sizes (1..=1400), runs of equal sizes (GSO material), and every
/// seventh payload starting with the control magic.
pub fn payloads() -> Vec<Bytes> {
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
