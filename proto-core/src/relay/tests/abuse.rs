//! Abuse (issue 5, item 7): spoofed and replayed binds, unsolicited
//! traffic, traffic before both legs bind, binds for released allocations
//! and a third address — zero bytes forwarded, no state created, nothing
//! amplified.

use super::*;

/// Everything of an allocation that an attacker must not change (counters
/// apart): its legs and their replay caches.
fn legs(rig: &Rig, allocation: u64) -> Vec<(Option<SocketAddr>, Option<Instant>, usize)> {
    rig.relay
        .allocation(allocation)
        .unwrap()
        .legs()
        .iter()
        .map(|l| (l.addr, l.last_bind, l.replay_len()))
        .collect()
}

#[test]
fn spoofed_binds_under_another_key_are_dropped_silently() {
    let mut rig = Rig::new();
    let (socket, _) = rig.allocate(spec(ALLOC, [1, 2]));
    let before = legs(&rig, ALLOC);
    for leg in 0..2 {
        let spoofed = rig.bind_packet(&[0x13; KEY_LEN], ALLOC, leg, 0);
        assert!(rig.recv(socket, mallory(), &spoofed).is_empty());
        // From the address a real endpoint will use, too.
        assert!(rig.recv(socket, alice(), &spoofed).is_empty());
    }
    // A forged tag on an otherwise perfect bind.
    let mut forged = rig.bind_packet(&KEY, ALLOC, 0, 0).to_vec();
    *forged.last_mut().unwrap() ^= 1;
    assert!(rig.recv(socket, mallory(), &forged).is_empty());
    assert_eq!(legs(&rig, ALLOC), before, "state created");
    assert_eq!(rig.counters().dropped(DropReason::Unauthenticated), 5);
    assert_eq!(rig.counters().binds, 0);
}

#[test]
fn a_replayed_bind_is_refused_from_anywhere() {
    let (mut rig, socket, _) = Rig::ready();
    // Mallory captured alice's next bind on the wire.
    let cookie = rig.cookie(ALLOC, 0, alice());
    let captured = rig.bind_packet(&KEY, ALLOC, 0, cookie);
    assert_eq!(
        rig.recv(socket, alice(), &captured).len(),
        1,
        "the original"
    );
    let before = legs(&rig, ALLOC);
    // Replayed from mallory's address (a hijack attempt), and from alice's.
    assert!(rig.recv(socket, mallory(), &captured).is_empty());
    assert!(rig.recv(socket, alice(), &captured).is_empty());
    // A leg-1 bind replayed later still is refused too.
    let cookie = rig.cookie(ALLOC, 1, bob());
    let bobs = rig.bind_packet(&KEY, ALLOC, 1, cookie);
    assert_eq!(rig.recv(socket, bob(), &bobs).len(), 1);
    rig.advance(Duration::from_secs(5));
    assert!(rig.recv(socket, mallory(), &bobs).is_empty());
    let mut after = legs(&rig, ALLOC);
    after[1].1 = before[1].1;
    after[1].2 = before[1].2;
    assert_eq!(after, before, "a replay moved a leg");
    assert_eq!(rig.counters().dropped(DropReason::BindReplayed), 3);
    // Data still goes where the legs really are.
    let sent = rig.recv(socket, bob(), b"still alice");
    assert_eq!(sent[0].dst, alice());
}

#[test]
fn a_replay_that_outruns_its_original_pins_nothing() {
    let (mut rig, socket, _) = Rig::ready();
    // Mallory sees alice's next bind and gets a copy to the relay first
    // (the original is slower, or lost).
    let cookie = rig.cookie(ALLOC, 0, alice());
    let captured = rig.bind_packet(&KEY, ALLOC, 0, cookie);
    let before = legs(&rig, ALLOC);
    let sent = rig.recv(socket, mallory(), &captured);
    // Answered once, at its size, with mallory's own cookie, which is
    // worthless without the key; the leg stays with alice.
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].dst, sent[0].payload.len()),
        (mallory(), captured.len())
    );
    match classify(&sent[0].payload, &AuthKey::new(&KEY)) {
        Classified::Control(ControlRepr {
            body: ControlBody::RelayBindAck { cookie: theirs, .. },
            ..
        }) => assert_ne!(theirs, cookie, "mallory was told alice's cookie"),
        other => panic!("{other:?}"),
    }
    assert_eq!(legs(&rig, ALLOC)[0].0, before[0].0);
    assert_eq!(rig.recv(socket, bob(), b"to alice")[0].dst, alice());
    // The original, arriving second, is the replay now; alice's next bind
    // goes through.
    assert!(rig.recv(socket, alice(), &captured).is_empty());
    rig.bind(socket, ALLOC, 0, alice());
    let c = rig.counters();
    assert_eq!((c.challenges, c.dropped(DropReason::BindReplayed)), (3, 1));
}

#[test]
fn a_key_holder_cannot_pin_a_leg_to_an_address_it_does_not_receive_at() {
    let (mut rig, socket, _) = Rig::ready();
    // Bob holds the key and wants alice's leg aimed at a victim: without
    // the victim's cookie (sent only to the victim) nothing moves.
    let victim = addr("198.18.0.1:53");
    for cookie in [
        0,
        rig.cookie(ALLOC, 0, alice()),
        rig.cookie(ALLOC, 1, bob()),
        42,
    ] {
        let packet = rig.bind_packet(&KEY, ALLOC, 0, cookie);
        let sent = rig.recv(socket, victim, &packet);
        assert!(sent
            .iter()
            .all(|t| t.dst == victim && t.payload.len() <= packet.len()));
    }
    assert_eq!(legs(&rig, ALLOC)[0].0, Some(alice()));
}

#[test]
fn a_bind_older_than_the_window_is_refused_even_if_never_seen() {
    let (mut rig, socket, _) = Rig::ready();
    let old = ControlRepr {
        txid: 0xdead,
        timestamp_us: rig.wall.unix_us(rig.now) - 60_000_000,
        body: ControlBody::RelayBind {
            allocation: ALLOC,
            leg: 0,
            cookie: rig.cookie(ALLOC, 0, alice()),
        },
    }
    .to_bytes(&AuthKey::new(&KEY));
    assert!(rig.recv(socket, mallory(), &old).is_empty());
    assert_eq!(rig.counters().dropped(DropReason::BindReplayed), 1);
    assert_eq!(legs(&rig, ALLOC)[0].0, Some(alice()));
}

#[test]
fn unsolicited_traffic_to_a_relay_port_is_dropped_without_a_trace_of_state() {
    let mut rig = Rig::new();
    let (socket, _) = rig.allocate(spec(ALLOC, [1, 2]));
    let before = legs(&rig, ALLOC);
    let mut sent_in = 0;
    for (i, len) in [0, 1, 8, BIND_LEN, 200, 1_400, 65_535]
        .into_iter()
        .enumerate()
    {
        let mut p = payload(len, i as u8);
        if i % 2 == 1 && len >= 8 {
            p[..8].copy_from_slice(&MAGIC);
        }
        for port in 0..50u16 {
            let src = SocketAddr::new(mallory().ip(), 1_000 + port);
            assert!(rig.recv(socket, src, &p).is_empty());
            sent_in += 1;
        }
    }
    assert_eq!(legs(&rig, ALLOC), before);
    assert_eq!(rig.counters().dropped_total(), sent_in);
    assert_eq!(rig.relay.allocations().count(), 1);
}

#[test]
fn nothing_crosses_before_both_legs_are_bound() {
    let mut rig = Rig::new();
    let (socket, _) = rig.allocate(spec(ALLOC, [1, 2]));
    // Nobody bound: alice is a stranger.
    assert!(rig.recv(socket, alice(), b"too early").is_empty());
    rig.bind(socket, ALLOC, 0, alice());
    // Alice bound, bob not: nowhere to go, and bob is still a stranger.
    assert!(rig.recv(socket, alice(), b"still early").is_empty());
    assert!(rig.recv(socket, bob(), b"bob unbound").is_empty());
    let c = rig.counters();
    assert_eq!(c.dropped(DropReason::UnknownSource), 2);
    assert_eq!(c.dropped(DropReason::PeerUnbound), 1);
    assert_eq!(c.forwarded, [Traffic::default(); 2]);
    rig.bind(socket, ALLOC, 1, bob());
    assert_eq!(rig.recv(socket, alice(), b"now").len(), 1);
}

#[test]
fn a_third_address_gets_nothing_through_once_both_legs_are_bound() {
    let (mut rig, socket, _) = Rig::ready();
    for len in [1, 100, 1_400] {
        assert!(rig.recv(socket, mallory(), &payload(len, 1)).is_empty());
        // Same IP as a leg, another port: still a stranger.
        let near = SocketAddr::new(alice().ip(), alice().port() + 1);
        assert!(rig.recv(socket, near, &payload(len, 2)).is_empty());
    }
    assert_eq!(rig.counters().forwarded, [Traffic::default(); 2]);
    assert_eq!(rig.counters().dropped(DropReason::UnknownSource), 6);
}

#[test]
fn binds_for_another_allocation_or_leg_are_refused() {
    let mut rig = Rig::new();
    let (a, _) = rig.allocate(spec(ALLOC, [1, 2]));
    let (b, _) = rig.allocate(spec(ALLOC + 1, [1, 2]));
    // Same key, other allocation's id, sent to this port.
    let wrong_id = rig.bind_packet(&KEY, ALLOC + 1, 0, 0);
    assert!(rig.recv(a, alice(), &wrong_id).is_empty());
    // A withdrawn allocation's id.
    let gone = rig.bind_packet(&KEY, 12_345, 0, 0);
    assert!(rig.recv(a, alice(), &gone).is_empty());
    // A leg that does not exist.
    let leg2 = rig.bind_packet(&KEY, ALLOC, 2, 0);
    assert!(rig.recv(a, alice(), &leg2).is_empty());
    // An acknowledgement sent to the relay.
    let ack = ControlRepr {
        txid: 1,
        timestamp_us: rig.wall.unix_us(rig.now),
        body: ControlBody::RelayBindAck {
            allocation: ALLOC,
            leg: 0,
            cookie: 1,
            observed: AddrRepr(alice()),
        },
    }
    .to_bytes(&AuthKey::new(&KEY));
    assert!(rig.recv(a, alice(), &ack).is_empty());
    assert_eq!(rig.counters().dropped(DropReason::BindMismatch), 4);
    assert_eq!(legs(&rig, ALLOC)[0].0, None);
    // The other allocation saw nothing.
    assert_eq!(
        rig.relay
            .allocation(ALLOC + 1)
            .unwrap()
            .counters()
            .dropped_total(),
        0
    );
    let _ = b;
}

#[test]
fn a_pinned_legs_address_cannot_become_the_other_leg() {
    let mut rig = Rig::new();
    let (socket, _) = rig.allocate(spec(ALLOC, [1, 2]));
    rig.bind(socket, ALLOC, 0, alice());
    let packet = rig.bind_packet(&KEY, ALLOC, 1, 0);
    assert!(rig.recv(socket, alice(), &packet).is_empty());
    assert_eq!(rig.counters().dropped(DropReason::LegConflict), 1);
    assert_eq!(legs(&rig, ALLOC)[1].0, None);
}

#[test]
fn no_leg_is_ever_pinned_to_one_of_our_own_ports() {
    let mut rig = Rig::with(|c| c.own_ips = vec![addr("203.0.113.200:0").ip()]);
    let (a, a_local) = rig.allocate(spec(ALLOC, [1, 2]));
    let (b, b_local) = rig.allocate(spec(ALLOC + 1, [3, 4]));
    // A bind that arrives from allocation b's own port (a spoofed source,
    // or a datagram we forwarded ourselves), from our public address with
    // that port, and from loopback with that port.
    let sources = [
        b_local,
        SocketAddr::new(addr("203.0.113.200:0").ip(), b_local.port()),
        SocketAddr::new(addr("127.0.0.1:0").ip(), b_local.port()),
        a_local,
    ];
    for src in sources {
        let packet = rig.bind_packet(&KEY, ALLOC, 0, 0);
        assert!(rig.recv(a, src, &packet).is_empty(), "bound from {src}");
    }
    assert_eq!(rig.counters().dropped(DropReason::OwnSource), 4);
    assert_eq!(legs(&rig, ALLOC)[0].0, None);
    // So a datagram from there is never forwarded either.
    rig.bind(a, ALLOC, 1, bob());
    assert!(rig.recv(a, b_local, b"loop").is_empty());
    let _ = b;
}

#[test]
fn a_leg_on_an_address_that_becomes_our_port_is_unpinned() {
    let mut rig = Rig::new();
    let (a, _) = rig.allocate(spec(ALLOC, [1, 2]));
    let next = addr(&format!("192.0.2.1:{}", rig.next_port));
    rig.bind(a, ALLOC, 0, next);
    rig.bind(a, ALLOC, 1, bob());
    // The next port the host hands out is exactly that address.
    rig.allocate(spec(ALLOC + 1, [3, 4]));
    assert_eq!(legs(&rig, ALLOC)[0].0, None);
    assert!(rig.recv(a, bob(), b"to ourselves").is_empty());
}

#[test]
fn refused_binds_are_reported_at_most_once_a_second() {
    let (mut rig, socket, _) = Rig::ready();
    let cookie = rig.cookie(ALLOC, 0, alice());
    let captured = rig.bind_packet(&KEY, ALLOC, 0, cookie);
    rig.recv(socket, alice(), &captured);
    let before = rig.events.len();
    for _ in 0..100 {
        assert!(rig.recv(socket, mallory(), &captured).is_empty());
    }
    rig.advance(Duration::from_millis(1_000));
    rig.recv(socket, mallory(), &captured);
    let refusals: Vec<_> = rig.events[before..]
        .iter()
        .filter(|e| matches!(e, RelayEvent::BindRefused { .. }))
        .collect();
    assert_eq!(refusals.len(), 2);
    assert_eq!(rig.counters().dropped(DropReason::BindReplayed), 101);
}

#[test]
fn no_answer_is_ever_larger_than_what_it_answers() {
    let mut rig = Rig::new();
    let (socket, _) = rig.allocate(spec(ALLOC, [1, 2]));
    let mut inputs: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    for len in 0..=200 {
        let mut p = payload(len, 7);
        if len >= 8 {
            p[..8].copy_from_slice(&MAGIC);
        }
        inputs.push((mallory(), p));
    }
    let bind = rig.bind_packet(&KEY, ALLOC, 0, 0);
    inputs.push((alice(), bind.to_vec()));
    inputs.push((mallory(), bind.to_vec()));
    for (src, p) in inputs {
        for t in rig.recv(socket, src, &p) {
            // Anything not forwarded between bound legs answers the sender.
            assert_eq!(t.dst, src);
            assert!(t.payload.len() <= p.len());
        }
    }
}
