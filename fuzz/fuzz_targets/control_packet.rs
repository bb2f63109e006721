#![no_main]
//! The mesh control packet classifier and decoder on arbitrary bytes.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    transitloom_proto_core::fuzzing::control_packet(data);
});
