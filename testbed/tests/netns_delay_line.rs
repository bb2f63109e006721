//! The testbed's delay line (root only; skipped loudly without root unless
//! `TL_REQUIRE_NETNS=1`, which CI sets): `tl-bench multiwan --delay1-ms
//! --delay2-ms` stands on it, since this kernel has no netem.
//!
//! In [`TwoUplinks`], wan1 is delayed 15 ms each way and wan2 40 ms. Pings
//! from beta to each of alpha's uplink addresses cross the line both ways,
//! so no echo can come back sooner than twice its uplink's delay; a ping to
//! the hub does not cross it. After the line stops, its device is gone.

use std::path::Path;

use transitloom_testbed::netns::{self, DelayLine, Scratch, TwoUplinks};

const PREFIX: &str = "tldl";

#[test]
fn each_uplink_is_delayed_by_its_own_delay_both_ways() {
    let test = "netns_delay_line";
    if !netns::require_root(test, &["ip", "ping", "sysctl", "tc", "kill"]) {
        return;
    }
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    netns::remove_leftovers(PREFIX, Some(tmp));
    let run = netns::run_prefix(PREFIX);
    let scratch = Scratch::create(tmp.join(&run)).unwrap();
    let net = TwoUplinks::build(&run, 77).unwrap();
    let exe = Path::new(env!("CARGO_BIN_EXE_tl-bench"));
    let mut line = net
        .delay(exe, [15, 40], &scratch.path().join("delay-line.log"))
        .unwrap();

    let rtt = |to| {
        let report = netns::ping(&net.b, to, 5).unwrap();
        assert_eq!(report.received, report.transmitted, "{to}: {report:?}");
        report.avg_rtt_ms.unwrap()
    };
    let (wan1, wan2, hub) = (rtt(net.a_addrs[0]), rtt(net.a_addrs[1]), rtt(net.hub_b));
    println!("{test}: round trips: wan1 {wan1:.1} ms, wan2 {wan2:.1} ms, hub {hub:.1} ms");
    assert!(wan1 >= 30.0, "wan1 is delayed 15 ms each way: {wan1} ms");
    assert!(wan2 >= 80.0, "wan2 is delayed 40 ms each way: {wan2} ms");
    assert!(hub < 30.0, "the hub's own address is not delayed: {hub} ms");
    assert!(
        wan2 - wan1 >= 30.0,
        "each uplink has its own delay (50 ms apart): {wan1} and {wan2} ms"
    );

    line.check().unwrap();
    drop(line);
    assert!(
        net.hub.ip(&["link", "show", DelayLine::DEV]).is_err(),
        "the device outlives its delay line"
    );
}
