//! The path history as the data plane keeps it: what a failure, an uplink
//! going away and coming back leave in it, with wall-clock times.

use super::*;

fn history(net: &Net, n: usize) -> Vec<PathEvent> {
    net.view(n).history().events().copied().collect()
}

/// Wall-clock microseconds of `at` in the harness (its anchor is `Net::new`'s).
fn wall(net: &Net, at: Instant) -> u64 {
    net.nodes[0].plane.config().wall_clock.unix_us(at)
}

#[test]
fn validation_and_carrying_are_recorded_when_they_happen() {
    let mut net = Net::new(false);
    net.advance(Duration::from_millis(50));
    let events = history(&net, 0);
    let codes: Vec<&str> = events.iter().map(|e| e.kind.code()).collect();
    assert_eq!(codes, ["added", "validated", "carrying"], "{events:?}");
    let validated = events[1];
    assert_eq!(validated.remote, Some(addr("198.51.100.2:40000")));
    // Stamped at the pong: one round trip (2 × 5 ms) after the first ping.
    let PathEventKind::Validated { rtt } = validated.kind else {
        unreachable!()
    };
    assert_eq!(rtt, 2 * DELAY);
    assert!(validated.at_unix_us > wall(&net, crate::test_epoch()));
    let choices = net.view(0).history().choices().to_vec();
    assert_eq!(choices.len(), 1);
    assert_eq!(choices[0].reason, Reason::Carrying);
    assert_eq!(choices[0].weight, 1.0);
    // A steady path, busy or idle, adds nothing to the history.
    let target = net.nodes[0].target;
    for _ in 0..50 {
        net.service_sends(0, target, &[7; 200]);
        net.advance(Duration::from_millis(20));
    }
    net.advance(Duration::from_secs(2));
    assert_eq!(
        net.view(0).history().recorded(),
        3,
        "{:?}",
        history(&net, 0)
    );
}

#[test]
fn a_failure_is_recorded_with_its_detection_time() {
    let mut net = Net::new(false);
    net.advance(Duration::from_millis(50));
    let target = net.nodes[0].target;
    net.blackhole = true;
    let cut = net.now;
    // Busy: the path is probed every 50 ms and fails within a few pings.
    for _ in 0..100 {
        net.service_sends(0, target, &[7; 200]);
        net.advance(Duration::from_millis(10));
    }
    let events = history(&net, 0);
    let failed = events
        .iter()
        .find(|e| matches!(e.kind, PathEventKind::Failed { .. }))
        .expect("a failure is recorded");
    let PathEventKind::Failed {
        silent_for: Some(silent),
    } = failed.kind
    else {
        unreachable!()
    };
    let detected_at = wall(&net, cut) + 1_000_000;
    assert!(failed.at_unix_us < detected_at, "failed within a second");
    assert!(
        silent >= Duration::from_millis(100) && silent < Duration::from_millis(600),
        "detection took {silent:?}"
    );
    // Stamped at the failure: the silence ends where the event is.
    let last_pong = failed.at_unix_us - silent.as_micros() as u64;
    assert!(last_pong <= wall(&net, cut) + 50_000);
    let after: Vec<PathEventKind> = events
        .iter()
        .skip_while(|e| !matches!(e.kind, PathEventKind::Failed { .. }))
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        after[1],
        PathEventKind::StoppedCarrying {
            reason: Reason::NotValidated
        }
    );
    net.blackhole = false;
    net.advance(Duration::from_millis(300));
    let last = history(&net, 0);
    let tail: Vec<&str> = last.iter().rev().take(2).map(|e| e.kind.code()).collect();
    assert_eq!(tail, ["carrying", "validated"], "back when answered");
}

#[test]
fn an_uplink_going_and_coming_back_is_in_the_history() {
    let mut net = Net::new(true);
    net.advance(Duration::from_millis(50));
    let lan = UplinkId(1);
    let before = net.view(1).history().recorded();
    net.nodes[1]
        .plane
        .set_uplink_address(net.now, lan, None)
        .unwrap();
    let gone_at = wall(&net, net.now);
    let events = history(&net, 1);
    let new: Vec<(Option<u16>, &str, u64)> = events
        .iter()
        .skip(before as usize)
        .map(|e| (e.path.map(|_| e.uplink.0), e.kind.code(), e.at_unix_us))
        .collect();
    assert_eq!(new[0], (None, "uplink-down", gone_at));
    assert_eq!(new[1], (Some(1), "removed", gone_at));
    net.nodes[1]
        .plane
        .set_uplink_address(net.now, lan, Some("10.0.0.3".parse().unwrap()))
        .unwrap();
    net.advance(Duration::from_millis(300));
    let events = history(&net, 1);
    let codes: Vec<&str> = events
        .iter()
        .skip(before as usize + 2)
        .filter(|e| e.uplink == lan)
        .map(|e| e.kind.code())
        .collect();
    assert_eq!(codes[0], "uplink-up");
    assert!(codes.contains(&"validated"), "{codes:?}");
    assert!(events
        .iter()
        .any(|e| e.remote == Some(addr("198.51.100.2:40000")) || e.uplink == lan));
}
