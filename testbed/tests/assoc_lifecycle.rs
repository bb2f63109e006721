//! Real processes on loopback: an association's key is replaced (`tlctl
//! assoc rekey`) and then the coordinator is killed with SIGKILL and
//! started again, while one service sends to the other every 2 ms. Every
//! datagram arrives and nothing else does: the nodes switch keys without
//! dropping their paths or sending a peer control packets under a key it
//! lacks, and the restarted coordinator pushes the same id and key they
//! hold.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use transitloom_testbed::{wait_for, Binaries, LocalMesh, LoopbackPair};

fn tlctl(mesh: &LocalMesh, args: &[&str]) -> String {
    let out = mesh.tlctl().args(args).output().unwrap();
    assert!(out.status.success(), "tlctl {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The only association's id and epoch, from `tlctl assoc list`.
fn listed(mesh: &LocalMesh) -> (String, u32) {
    let out = tlctl(mesh, &["assoc", "list"]);
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    (row[0].to_owned(), row[3].parse().unwrap())
}

fn online(mesh: &LocalMesh) -> Option<u64> {
    let out = mesh.tlctl().args(["status", "--json"]).output().ok()?;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    status["online"].as_u64()
}

#[test]
fn a_rekey_and_a_coordinator_restart_lose_no_datagram() {
    let tmp = tempfile::tempdir().unwrap();
    let LoopbackPair {
        mut mesh, services, ..
    } = LoopbackPair::start(tmp.path(), Binaries::for_tests().unwrap(), 22_400).unwrap();
    let ingress = mesh.ingress("alpha", "beta/wg0").unwrap();
    let [sender, receiver]: [UdpSocket; 2] = services;
    receiver
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sending = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seq = 0u32;
            while !stop.load(Ordering::Relaxed) {
                // A leading 0xAA: never the zero byte of the control magic.
                let mut datagram = vec![0xAA; 200];
                datagram[1..5].copy_from_slice(&seq.to_be_bytes());
                sender.send_to(&datagram, ingress).unwrap();
                seq += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            seq
        })
    };
    let receiving = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let mut others = 0usize;
            let mut buf = [0u8; 2048];
            let mut quiet_since = None;
            loop {
                match receiver.recv_from(&mut buf) {
                    Ok((n, _)) if n >= 5 && buf[0] == 0xAA => {
                        got.push(u32::from_be_bytes(buf[1..5].try_into().unwrap()));
                        quiet_since = None;
                    }
                    // Anything else would be a control packet the service
                    // got as data: one a node sent under a key its peer did
                    // not hold yet.
                    Ok(_) => others += 1,
                    Err(_) if stop.load(Ordering::Relaxed) => {
                        if *quiet_since.get_or_insert_with(Instant::now)
                            > Instant::now() - Duration::from_millis(500)
                        {
                            continue;
                        }
                        return (got, others);
                    }
                    Err(_) => {}
                }
            }
        })
    };

    std::thread::sleep(Duration::from_millis(500));
    let (id, epoch) = listed(&mesh);
    assert_eq!(epoch, 1);
    let out = tlctl(&mesh, &["assoc", "rekey", &id]);
    assert!(out.contains("rekeyed"), "{out}");
    wait_for("epoch 2", Duration::from_secs(5), || listed(&mesh).1 == 2);
    std::thread::sleep(Duration::from_secs(2));

    mesh.restart_coordinator().unwrap();
    wait_for(
        "both nodes back with the restarted coordinator",
        Duration::from_secs(30),
        || online(&mesh) == Some(2),
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        listed(&mesh),
        (id, 2),
        "same id, same epoch after the restart"
    );

    stop.store(true, Ordering::Relaxed);
    let sent = sending.join().unwrap();
    let (got, others) = receiving.join().unwrap();
    assert_eq!(
        others, 0,
        "datagrams that were not the sender's reached the service"
    );
    assert!(sent > 1_000, "only {sent} sent");
    let expected: Vec<u32> = (0..sent).collect();
    assert_eq!(
        got.len(),
        expected.len(),
        "lost {} datagrams",
        sent as usize - got.len()
    );
    assert_eq!(got, expected, "every datagram, in order");

    // Each node switched keys once and never dropped the association.
    for node in ["alpha", "beta"] {
        let log = std::fs::read_to_string(mesh.dir().join(format!("{node}.log"))).unwrap();
        assert_eq!(
            log.matches("association key replaced").count(),
            1,
            "{node}: {log}"
        );
        assert!(!log.contains("association withdrawn"), "{node}: {log}");
        assert_eq!(
            log.matches("association installed").count(),
            1,
            "{node}: {log}"
        );
    }
}
