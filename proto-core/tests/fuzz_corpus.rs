//! Replays every file of the cargo-fuzz corpora as an ordinary test, so the
//! fuzz findings (and the seed inputs) are checked on every `cargo test`.

use std::path::Path;
use std::time::Instant;

use transitloom_proto_core::fuzzing;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("corpus {}: {err}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 8,
        "corpus {} is nearly empty: {} files",
        dir.display(),
        files.len()
    );
    for file in files {
        let data = std::fs::read(&file).unwrap_or_else(|err| panic!("{}: {err}", file.display()));
        run(&data);
    }
}

#[test]
fn control_packet_corpus_replays() {
    replay("control_packet", fuzzing::control_packet);
}

#[test]
fn control_message_corpus_replays() {
    replay("control_message", fuzzing::control_message);
}

#[test]
fn admission_token_corpus_replays() {
    replay("admission_token", fuzzing::admission_token);
}

#[test]
fn oplog_record_corpus_replays() {
    replay("oplog_record", fuzzing::oplog_record);
}

/// The monotonic start of a data-plane run (the harness never reads a clock).
#[allow(clippy::disallowed_methods)] // a test driver, like the runtimes' clocks
fn epoch() -> Instant {
    Instant::now()
}

#[test]
fn dataplane_receive_corpus_replays() {
    replay("dataplane_receive", |data| {
        fuzzing::dataplane_receive(data, epoch())
    });
}

/// The seeds are generated from scenarios in `fuzzing`; this keeps the
/// committed files equal to them. `TL_WRITE_SEEDS=1` rewrites them.
#[test]
fn dataplane_receive_seeds_are_in_the_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/dataplane_receive");
    let write = std::env::var_os("TL_WRITE_SEEDS").is_some();
    for (name, input) in fuzzing::dataplane_receive_seeds() {
        let file = dir.join(format!("seed-{name}"));
        if write {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&file, &input).unwrap();
        }
        let kept = std::fs::read(&file).unwrap_or_else(|err| panic!("{}: {err}", file.display()));
        assert_eq!(kept, input, "{} is not the current seed", file.display());
    }
}

#[test]
fn relay_receive_corpus_replays() {
    replay("relay_receive", |data| {
        fuzzing::relay_receive(data, epoch())
    });
}

/// The relay's seeds are generated from scenarios too; `TL_WRITE_SEEDS=1`
/// rewrites them.
#[test]
fn relay_receive_seeds_are_in_the_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/relay_receive");
    let write = std::env::var_os("TL_WRITE_SEEDS").is_some();
    for (name, input) in fuzzing::relay_receive_seeds() {
        let file = dir.join(format!("seed-{name}"));
        if write {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&file, &input).unwrap();
        }
        let kept = std::fs::read(&file).unwrap_or_else(|err| panic!("{}: {err}", file.display()));
        assert_eq!(kept, input, "{} is not the current seed", file.display());
    }
}

/// The seeds of the relay-hosting messages (`seed-48` … `seed-52`) and of
/// a replicated-log append (`seed-53`) decode to those messages, so the
/// fuzzer starts from inside their bodies.
#[test]
fn relay_hosting_message_seeds_decode() {
    use transitloom_proto_core::control::msg::{FrameDecoder, Message};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/control_message");
    let mut names = Vec::new();
    for n in 48..=53 {
        let data = std::fs::read(dir.join(format!("seed-{n}"))).expect("seed");
        let mut decoder = FrameDecoder::new();
        decoder.push(&data[1..]);
        let msg: Message = decoder.next().expect("decodes").expect("whole");
        names.push(msg.name());
    }
    assert_eq!(
        names,
        [
            "RelayHostOffer",
            "RelayAllocate",
            "RelayOpened",
            "RelayRelease",
            "RelayAllocation",
            "Raft"
        ]
    );
}
