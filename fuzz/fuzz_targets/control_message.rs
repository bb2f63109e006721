#![no_main]
//! The control-stream frame decoder on arbitrary bytes pushed in chunks.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    transitloom_proto_core::fuzzing::control_message(data);
});
