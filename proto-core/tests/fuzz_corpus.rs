//! Replays every file of the cargo-fuzz corpora as an ordinary test, so the
//! fuzz findings (and the seed inputs) are checked on every `cargo test`.

use std::path::Path;

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
