//! An acknowledged operation survives `kill -9`: a child process appends
//! operations (admissions, a mutual-consent association, then one fresh key
//! after another) and prints each sequence number once `append` returns;
//! the parent kills it at an arbitrary moment, reopens the log, and finds
//! every acknowledged operation intact and the registry rebuilt from them,
//! with the association's id and its newest key.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use transitloom_proto_core::coordinator::registry::{
    AssocSecret, Op, ServiceRef, CONSENT_ASSOC_BASE,
};
use transitloom_proto_core::AssocId;
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

const ASSOC: AssocId = AssocId(CONSENT_ASSOC_BASE + 1);

fn wg0(node: &str) -> ServiceRef {
    ServiceRef {
        node: node.to_owned(),
        service: "wg0".to_owned(),
    }
}

/// The `i`th operation of a log that replays: two nodes, their association
/// by mutual consent, then its keys, epoch after epoch.
fn op(i: u64) -> Op {
    let enroll = |node: &str| Op::Enroll {
        node: node.to_owned(),
        fingerprint: [9; 32],
        at_unix_s: 1,
    };
    match i {
        0 => invite(0),
        1 => enroll("n0"),
        2 => invite(1),
        3 => enroll("n1"),
        4 => Op::AssocForm {
            a: wg0("n0"),
            b: wg0("n1"),
        },
        _ => Op::AssocKey {
            assoc: ASSOC,
            epoch: (i - 4) as u32,
            key: AssocSecret([i as u8; 32]),
            at_unix_s: i,
        },
    }
}

/// Appends until killed.
fn child(path: &str) {
    let mut log = OpLog::open(std::path::Path::new(path)).expect("open in child");
    let start = log.records().expect("read").len() as u64;
    for i in start.. {
        let seq = log.append(&op(i)).expect("append");
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
            assert_eq!(Op::decode(bytes).unwrap(), op(i as u64));
        }
        let registry = log.replay().unwrap();
        assert_eq!(registry.applied(), records.len() as u64);
        // The association kept its id and holds the newest durable key.
        let n = records.len() as u64;
        let record = registry.assoc_between(&wg0("n1"), &wg0("n0")).unwrap();
        assert_eq!(record.id, ASSOC);
        let key = record.key.unwrap();
        assert_eq!(
            (key.epoch, key.key),
            ((n - 5) as u32, AssocSecret([(n - 1) as u8; 32]))
        );
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
