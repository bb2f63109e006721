#![no_main]
//! Stored operation-log records (the coordinator's redb log) on arbitrary
//! bytes.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    transitloom_proto_core::fuzzing::oplog_record(data);
});
