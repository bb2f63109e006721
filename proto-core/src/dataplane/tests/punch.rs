//! New candidates wait for the coordinator's punch, then are probed one
//! after the other, within the pace and the cap.

use super::*;

/// Candidates nobody answers (the harness drops what it cannot deliver).
fn silent(n: u16) -> Vec<SocketAddr> {
    (0..n)
        .map(|i| SocketAddr::from(([203, 0, 113, 7], 5_000 + i)))
        .collect()
}

/// Probes node 0 sent to each of `to`.
fn probes(net: &Net, to: &[SocketAddr]) -> Vec<u64> {
    to.iter()
        .map(|a| net.sent_to.get(a).map_or(0, |s| s.0))
        .collect()
}

/// The wall-clock millisecond `ahead` from now on node 0's clock.
fn unix_ms_in(net: &Net, ahead: Duration) -> u64 {
    let wall = net.nodes[0].plane.config().wall_clock;
    wall.unix_us(net.now + ahead).div_ceil(1_000)
}

#[test]
fn new_candidates_wait_for_the_punch_then_go_one_pace_apart() {
    let mut net = Net::new(false);
    net.advance(Duration::from_millis(50));
    assert!(net.view(0).is_up());
    let new = silent(3);
    let now = net.now;
    net.nodes[0].plane.add_remotes(now, ASSOC, &new).unwrap();
    net.advance(Duration::from_millis(100));
    assert_eq!(probes(&net, &new), [0, 0, 0], "held for the punch");
    let at = unix_ms_in(&net, Duration::from_millis(30));
    let start = net.nodes[0].plane.config().wall_clock.instant(at * 1_000);
    let now = net.now;
    net.nodes[0].plane.punch(now, ASSOC, at).unwrap();
    net.advance(start - net.now - Duration::from_micros(1));
    assert_eq!(probes(&net, &new), [0, 0, 0], "not before the moment");
    let pace = PunchConfig::default().pace;
    net.advance(Duration::from_micros(1));
    assert_eq!(probes(&net, &new), [1, 0, 0], "the first at the moment");
    net.advance(pace - Duration::from_micros(1));
    assert_eq!(probes(&net, &new), [1, 0, 0], "the second a pace later");
    net.advance(Duration::from_micros(1));
    assert_eq!(probes(&net, &new), [1, 1, 0]);
    net.advance(pace);
    assert_eq!(probes(&net, &new), [1, 1, 1]);
    // The active path kept its own pings going meanwhile.
    assert!(net.view(0).is_up());
}

#[test]
fn without_a_punch_new_candidates_are_probed_after_the_wait() {
    let mut net = Net::new(false);
    net.advance(Duration::from_millis(50));
    let new = silent(2);
    let now = net.now;
    net.nodes[0].plane.add_remotes(now, ASSOC, &new).unwrap();
    let wait = PunchConfig::default().wait;
    net.advance(wait - Duration::from_micros(1));
    assert_eq!(probes(&net, &new), [0, 0]);
    net.advance(Duration::from_millis(10));
    assert_eq!(probes(&net, &new), [1, 1]);
}

#[test]
fn a_punch_time_out_of_reach_starts_at_once() {
    let mut net = Net::new(false);
    net.advance(Duration::from_millis(50));
    let new = silent(1);
    let now = net.now;
    net.nodes[0].plane.add_remotes(now, ASSOC, &new).unwrap();
    // A coordinator clock far ahead of ours.
    let at = unix_ms_in(&net, PUNCH_SKEW_LIMIT * 10);
    net.nodes[0].plane.punch(now, ASSOC, at).unwrap();
    net.advance(Duration::from_micros(1));
    assert_eq!(probes(&net, &new), [1]);
}

#[test]
fn candidate_probes_never_exceed_the_cap() {
    let cap = 7;
    let mut net = Net::with(false, |c| {
        c.punch.max_probes_per_s = cap;
    });
    net.advance(Duration::from_millis(50));
    let new = silent(20);
    let now = net.now;
    net.nodes[0].plane.add_remotes(now, ASSOC, &new).unwrap();
    net.nodes[0].plane.punch(now, ASSOC, 0).unwrap();
    let mut seen = Vec::new();
    for _ in 0..4_000 {
        net.advance(Duration::from_millis(1));
        seen.push(probes(&net, &new).iter().sum::<u64>());
    }
    // Any 1 s window (1,000 steps of 1 ms) holds at most `cap` probes.
    let most = seen
        .windows(1_001)
        .map(|w| w[w.len() - 1] - w[0])
        .max()
        .unwrap();
    assert!(most <= u64::from(cap), "{most} probes in one second");
    assert!(
        seen[seen.len() - 1] >= 3 * u64::from(cap),
        "the cap slows probing, it does not stop it: {}",
        seen[seen.len() - 1]
    );
    assert!(net.view(0).is_up(), "the active path is pinged unpaced");
}
