//! An acknowledged operation survives `kill -9`: a child process appends
//! operations and prints each sequence number once `append` returns; the
//! parent kills it at an arbitrary moment, reopens the log, and finds every
//! acknowledged operation intact and the registry rebuilt from them.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use transitloom_proto_core::coordinator::registry::Op;
use transitloom_runtime_tokio::oplog::OpLog;

const CHILD_ENV: &str = "TL_OPLOG_KILL_CHILD";

fn invite(i: u64) -> Op {
    Op::Invite {
        node: format!("n{i}"),
        digest: [i as u8; 32],
        expires_unix_s: 4_000_000_000,
        admit: true,
    }
}

/// Appends until killed.
fn child(path: &str) {
    let mut log = OpLog::open(std::path::Path::new(path)).expect("open in child");
    let start = log.records().expect("read").len() as u64;
    for i in start.. {
        let seq = log.append(&invite(i)).expect("append");
        println!("committed {seq}");
    }
}

#[test]
fn kill_9_loses_no_acknowledged_operation() {
    if let Ok(path) = std::env::var(CHILD_ENV) {
        child(&path);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oplog.redb");
    let mut acknowledged = 0u64;
    for round in 1..=4u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "kill_9_loses_no_acknowledged_operation",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Kill after a different number of commits each round, mid-stream.
        let target = acknowledged + 20 * round;
        let deadline = Instant::now() + Duration::from_secs(60);
        while acknowledged < target && Instant::now() < deadline {
            let Some(Ok(line)) = lines.next() else { break };
            if let Some(seq) = line.strip_prefix("committed ") {
                acknowledged = seq.parse().unwrap();
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(
            acknowledged >= target,
            "round {round}: the child stalled at {acknowledged}"
        );

        let log = OpLog::open(&path).unwrap();
        let records = log.records().unwrap();
        assert!(
            records.len() as u64 >= acknowledged,
            "round {round}: {} records, {acknowledged} acknowledged",
            records.len()
        );
        for (i, (seq, bytes)) in records.iter().enumerate() {
            assert_eq!(*seq, i as u64 + 1, "sequence numbers are dense");
            assert_eq!(Op::decode(bytes).unwrap(), invite(i as u64));
        }
        let registry = log.replay().unwrap();
        assert_eq!(registry.applied(), records.len() as u64);
        acknowledged = records.len() as u64;
    }
}

#[test]
fn a_corrupt_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oplog.redb");
    let mut log = OpLog::open(&path).unwrap();
    log.append(&invite(0)).unwrap();
    log.append(&Op::Admit {
        node: "nobody".into(),
    })
    .unwrap();
    let err = log.replay().unwrap_err().to_string();
    assert!(err.contains("record 2 does not apply"), "{err}");
    assert!(err.contains("no node named \"nobody\""), "{err}");
}
