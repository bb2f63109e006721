#![no_main]
//! The data plane's receive path: arbitrary datagrams on every socket of two
//! installed associations, from any source, with time passing.

use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;

/// One start for the whole run; the harness only adds to it.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fuzz_target!(|data: &[u8]| {
    transitloom_proto_core::fuzzing::dataplane_receive(data, epoch());
});
