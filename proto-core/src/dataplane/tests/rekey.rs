//! A new key epoch switches an association without dropping its paths.

use super::*;

const NEW_KEY: [u8; 32] = [9; 32];

/// Data from node 0's service: never starts with the control magic's zero.
fn data(i: usize) -> Vec<u8> {
    vec![1 + (i % 200) as u8; 200]
}

#[test]
fn a_rekey_keeps_paths_up_and_data_flowing_while_the_ends_switch_apart() {
    let mut net = Net::new(false);
    net.advance(Duration::from_millis(50));
    assert!(net.view(0).is_up() && net.view(1).is_up());
    let target = net.nodes[0].target;
    let mut sent = Vec::new();
    let mut i = 0;
    let mut send_for = |net: &mut Net, span: Duration| {
        let until = net.now + span;
        while net.now < until {
            let p = data(i);
            net.service_sends(0, target, &p);
            sent.push(p);
            i += 1;
            net.advance(Duration::from_millis(2));
        }
    };
    send_for(&mut net, Duration::from_secs(2));
    // Node 0 gets the new epoch first; node 1 half a second later.
    let now = net.now;
    net.nodes[0].plane.rekey(now, ASSOC, 2, &NEW_KEY).unwrap();
    // The coordinator's reflector answers under the new key at once: that
    // says nothing of node 1.
    let answer = ControlRepr {
        txid: 9,
        timestamp_us: net.nodes[0].plane.config().wall_clock.unix_us(now),
        body: ControlBody::ReflectResponse {
            observed: AddrRepr(addr("192.0.2.1:40000")),
        },
    };
    let payload = answer.to_bytes(&AuthKey::new(&NEW_KEY));
    net.mesh_receives(0, addr("203.0.113.1:7443"), &payload);
    send_for(&mut net, Duration::from_millis(500));
    let now = net.now;
    net.nodes[1].plane.rekey(now, ASSOC, 2, &NEW_KEY).unwrap();
    send_for(&mut net, Duration::from_secs(5));
    net.advance(Duration::from_millis(20));

    // Nothing else: node 0 sent its pings and reports under the old key
    // until node 1 showed it held the new one, so none reached node 1's
    // service as data.
    let got: Vec<Vec<u8>> = net.nodes[1].delivered.iter().map(|b| b.to_vec()).collect();
    assert_eq!(
        got, sent,
        "every data packet crossed, in order, and only those"
    );
    for n in 0..2 {
        assert!(net.view(n).is_up());
        assert!(
            !net.nodes[n]
                .events
                .contains(&DataEvent::AssociationDown(ASSOC)),
            "node {n}: {:?}",
            net.nodes[n].events
        );
    }
    assert!(
        net.view(0).counters().previous_key > 0,
        "node 1's pings under the old key were answered"
    );
    assert_eq!(net.view(0).spec().key, NEW_KEY);
}

#[test]
fn ends_rekeyed_at_once_both_move_to_the_new_key() {
    let mut net = Net::new(false);
    net.advance(Duration::from_millis(50));
    for n in 0..2 {
        let now = net.now;
        net.nodes[n].plane.rekey(now, ASSOC, 2, &NEW_KEY).unwrap();
    }
    // Each waits for the other to show the new key, and each says in its
    // pings under the old key that it holds a newer one: neither waits on
    // the other for ever.
    net.advance(Duration::from_secs(2));
    let answered: Vec<u64> = (0..2)
        .map(|n| net.view(n).counters().previous_key)
        .collect();
    assert!(answered.iter().all(|&n| n > 0), "{answered:?}");
    net.advance(Duration::from_secs(10));
    for (n, &answered) in answered.iter().enumerate() {
        assert!(net.view(n).is_up());
        assert_eq!(
            net.view(n).counters().previous_key,
            answered,
            "node {n} still gets packets under the old key"
        );
    }
}

#[test]
fn the_previous_key_is_refused_after_its_grace_period() {
    let mut net = Net::new(false);
    net.advance(Duration::from_millis(50));
    for n in 0..2 {
        let now = net.now;
        net.nodes[n].plane.rekey(now, ASSOC, 2, &NEW_KEY).unwrap();
    }
    net.advance(PREVIOUS_KEY_GRACE + Duration::from_secs(1));
    assert!(net.view(0).is_up() && net.view(1).is_up());
    let now = net.now;
    let ping = ControlRepr {
        txid: 77,
        timestamp_us: net.nodes[1].plane.config().wall_clock.unix_us(now),
        body: ControlBody::Ping { pad: 19, policy: 0 },
    };
    let old = ping.to_bytes(&AuthKey::new(&[3; 32]));
    let answered = net.view(1).counters().previous_key;
    net.mesh_receives(1, addr("192.0.2.1:40000"), &old);
    net.drain(1);
    // Just data now: delivered unchanged, not answered.
    assert_eq!(
        net.nodes[1].delivered.last().map(|b| b.to_vec()),
        Some(old.to_vec())
    );
    assert_eq!(net.view(1).counters().previous_key, answered);
    assert_eq!(
        net.nodes[0].plane.rekey(now, AssocId(99), 2, &NEW_KEY),
        Err(DataPlaneError::NotInstalled(AssocId(99)))
    );
}
