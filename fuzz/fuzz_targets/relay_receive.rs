#![no_main]
//! The relay: arbitrary datagrams on its allocation ports, from the legs,
//! strangers and its own ports, with binds, replays, releases, revocations
//! and time passing.

use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;

/// One start for the whole run; the harness only adds to it.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fuzz_target!(|data: &[u8]| {
    transitloom_proto_core::fuzzing::relay_receive(data, epoch());
});
