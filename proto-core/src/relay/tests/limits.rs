//! Quotas, the table's bound, the rate limit, idle expiry and revocation.

use super::*;

#[test]
fn a_node_holds_at_most_its_quota_on_either_leg() {
    let mut rig = Rig::with(|c| c.quota_per_node = 2);
    rig.allocate(spec(1, [1, 2]));
    rig.allocate(spec(2, [3, 1]));
    let refused = rig.relay.allocate(rig.now, spec(3, [1, 4]));
    assert_eq!(
        refused,
        Err(RelayError::QuotaExceeded {
            node: NodeId(1),
            quota: 2
        })
    );
    let refused = rig.relay.allocate(rig.now, spec(3, [4, 1]));
    assert!(matches!(refused, Err(RelayError::QuotaExceeded { .. })));
    assert!(rig.drain().is_empty(), "a refusal asks for no port");
    // Others are not affected; a release frees the quota.
    rig.allocate(spec(4, [2, 3]));
    rig.relay.release(1).unwrap();
    rig.allocate(spec(3, [1, 4]));
    assert_eq!(rig.relay.counters().refused_allocations, 2);
    assert_eq!(
        rig.relay.allocate(rig.now, spec(3, [5, 6])),
        Err(RelayError::Exists(3))
    );
}

#[test]
fn the_relay_holds_at_most_its_maximum() {
    let mut rig = Rig::with(|c| {
        c.max_allocations = 3;
        c.quota_per_node = 100;
    });
    for id in 0..3 {
        rig.allocate(spec(id, [1, 2]));
    }
    assert_eq!(
        rig.relay.allocate(rig.now, spec(9, [3, 4])),
        Err(RelayError::Full(3))
    );
    assert_eq!(rig.bound.len(), 3);
}

#[test]
fn each_direction_is_held_to_the_rate_limit() {
    let limit = RateLimit {
        bytes_per_s: 1_000_000,
        burst_bytes: 100_000,
    };
    let mut rig = Rig::with(|c| c.rate_limit = Some(limit));
    let (socket, _) = rig.allocate(spec(ALLOC, [1, 2]));
    rig.bind(socket, ALLOC, 0, alice());
    rig.bind(socket, ALLOC, 1, bob());
    let p = payload(1_000, 1);
    // One second of 1,000-byte datagrams every 100 µs (10 MB/s offered).
    let mut forwarded = [0u64; 2];
    for _ in 0..10_000 {
        rig.now += Duration::from_micros(100);
        forwarded[0] += rig.recv(socket, alice(), &p).len() as u64 * 1_000;
        forwarded[1] += rig.recv(socket, bob(), &p[..500]).len() as u64 * 500;
    }
    // At most the burst plus one second at the rate, each way; and not
    // much less (the limit is a rate, not a block).
    for (dir, bytes) in forwarded.iter().enumerate() {
        assert!(*bytes <= 1_100_000, "direction {dir}: {bytes} bytes");
        assert!(*bytes >= 1_000_000, "direction {dir}: {bytes} bytes");
    }
    let c = rig.counters();
    assert!(c.dropped(DropReason::RateLimited) > 16_000);
    assert_eq!(c.forwarded[0].bytes, forwarded[0]);
    // A quiet spell refills the burst.
    rig.advance(Duration::from_secs(1));
    for _ in 0..65 {
        assert_eq!(rig.recv(socket, alice(), &p).len(), 1);
    }
}

#[test]
fn an_idle_allocation_expires_and_traffic_or_binds_keep_it() {
    let mut rig = Rig::with(|c| c.idle_timeout = Duration::from_secs(10));
    let (socket, _) = rig.allocate(spec(ALLOC, [1, 2]));
    rig.advance(Duration::from_secs(6));
    rig.bind(socket, ALLOC, 0, alice());
    rig.advance(Duration::from_secs(6));
    rig.bind(socket, ALLOC, 1, bob());
    for _ in 0..5 {
        rig.advance(Duration::from_secs(6));
        assert_eq!(rig.recv(socket, alice(), b"keepalive").len(), 1);
    }
    // Dropped traffic is no activity: a stranger cannot keep it alive.
    for _ in 0..9 {
        rig.advance(Duration::from_secs(1));
        rig.recv(socket, mallory(), b"noise");
    }
    assert!(rig.relay.allocation(ALLOC).is_some());
    rig.advance(Duration::from_millis(999));
    assert!(rig.relay.allocation(ALLOC).is_some(), "expired early");
    rig.advance(Duration::from_millis(1));
    assert!(rig.relay.allocation(ALLOC).is_none(), "not expired");
    assert_eq!(rig.closed, vec![socket]);
    assert!(matches!(
        rig.events.last(),
        Some(RelayEvent::Released {
            reason: ReleaseReason::Expired,
            ..
        })
    ));
    assert_eq!(rig.relay.poll_timeout(), None);
    assert_eq!(rig.relay.node_allocations(NodeId(1)), 0);
}

#[test]
fn an_allocation_nobody_binds_expires_too() {
    let mut rig = Rig::with(|c| c.idle_timeout = Duration::from_secs(10));
    rig.allocate(spec(ALLOC, [1, 2]));
    rig.advance(Duration::from_secs(10));
    assert!(rig.relay.allocation(ALLOC).is_none());
}

#[test]
fn revoking_a_node_removes_all_its_allocations_at_once() {
    let mut rig = Rig::new();
    let (a, _) = rig.allocate(spec(1, [1, 2]));
    let (b, _) = rig.allocate(spec(2, [3, 1]));
    let (c, _) = rig.allocate(spec(3, [2, 3]));
    for (socket, id) in [(a, 1), (b, 2), (c, 3)] {
        rig.bind(socket, id, 0, alice());
        rig.bind(socket, id, 1, bob());
    }
    assert_eq!(rig.relay.release_node(NodeId(1)), 2);
    rig.drain();
    assert_eq!(rig.closed, vec![a, b]);
    let reasons: Vec<_> = rig
        .events
        .iter()
        .filter_map(|e| match e {
            RelayEvent::Released {
                allocation, reason, ..
            } => Some((*allocation, *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            (1, ReleaseReason::NodeRevoked(NodeId(1))),
            (2, ReleaseReason::NodeRevoked(NodeId(1)))
        ]
    );
    assert_eq!(rig.relay.node_allocations(NodeId(1)), 0);
    assert_eq!(rig.relay.node_allocations(NodeId(3)), 1);
    // Nothing crosses the revoked allocations, even in flight.
    rig.bound.insert(a, addr("192.0.2.1:1"));
    assert!(rig.recv(a, alice(), b"after revoke").is_empty());
    // The third allocation still works.
    assert_eq!(rig.recv(c, alice(), b"unaffected").len(), 1);
    assert_eq!(rig.relay.release_node(NodeId(1)), 0);
}
