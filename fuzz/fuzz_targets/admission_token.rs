#![no_main]
//! Admission token and join token parsing and verification on arbitrary bytes.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    transitloom_proto_core::fuzzing::admission_token(data);
});
