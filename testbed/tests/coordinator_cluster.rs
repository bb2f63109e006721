//! Three real `transitloom-coordinator` processes on loopback sharing one
//! replicated log (`[cluster]`): a write made through any of them is in
//! all three; with one killed (`kill -9`) the other two go on; with two
//! killed the survivor holds its write as pending and nothing takes it
//! up; restarted from their data directories, the killed ones come back
//! with their log and the pending write commits.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use transitloom_testbed::{free_port, wait_for, Binaries};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const NAMES: [&str; 3] = ["hub-a", "hub-b", "hub-c"];

struct Cluster {
    dir: PathBuf,
    bins: Binaries,
    listen: Vec<SocketAddr>,
    status: Vec<SocketAddr>,
    children: Vec<Option<Child>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn tlctl(bins: &Binaries, args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(&bins.tlctl)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Cluster {
    fn new(dir: &Path) -> Self {
        let bins = Binaries::for_tests().unwrap();
        ok(tlctl(&bins, &["pki", "init-root", "--out", "root"], dir));
        for name in NAMES {
            ok(tlctl(
                &bins,
                &[
                    "pki",
                    "issue-coordinator",
                    "--name",
                    name,
                    "--root",
                    "root",
                    "--out",
                    name,
                ],
                dir,
            ));
        }
        ok(tlctl(
            &bins,
            &[
                "pki",
                "issue-admin",
                "--name",
                "ops",
                "--root",
                "root",
                "--out",
                "admin",
            ],
            dir,
        ));
        let port = || SocketAddr::new(LOOPBACK, free_port(LOOPBACK).unwrap());
        let listen: Vec<SocketAddr> = NAMES.iter().map(|_| port()).collect();
        let status: Vec<SocketAddr> = NAMES.iter().map(|_| port()).collect();
        for (i, name) in NAMES.iter().enumerate() {
            let mut text = format!(
                "name = \"{name}\"\ndata_dir = \"{name}-data\"\nlisten = \"{}\"\n\
                 pki_dir = \"{name}\"\nroot_ca = \"root/root.crt\"\nstatus_listen = \"{}\"\n\
                 [cluster]\nid = {}\n",
                listen[i],
                status[i],
                i + 1
            );
            for (j, peer) in NAMES.iter().enumerate().filter(|&(j, _)| j != i) {
                text += &format!(
                    "[[cluster.peer]]\nid = {}\nname = \"{peer}\"\naddr = \"{}\"\n",
                    j + 1,
                    listen[j]
                );
            }
            std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
        }
        let mut cluster = Self {
            dir: dir.to_owned(),
            bins,
            listen,
            status,
            children: vec![None, None, None],
        };
        for i in 0..NAMES.len() {
            cluster.start(i);
        }
        cluster
    }

    fn start(&mut self, i: usize) {
        let name = NAMES[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))
            .unwrap();
        let child = Command::new(&self.bins.coordinator)
            .args(["run", "--config"])
            .arg(self.dir.join(format!("{name}.toml")))
            .current_dir(&self.dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children[i] = Some(child);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn status(&self, i: usize) -> Option<serde_json::Value> {
        let addr = self.status[i];
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(
            stream,
            "GET /status HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (_, body) = response.split_once("\r\n\r\n")?;
        serde_json::from_str(body).ok()
    }

    fn operations(&self, i: usize) -> Option<u64> {
        self.status(i)?["coordinator"]["operations"].as_u64()
    }

    /// `tlctl node invite NAME` through coordinator `i`.
    fn invite(&self, i: usize, node: &str, timeout_s: u32) -> std::process::Output {
        let timeout = timeout_s.to_string();
        let listen = self.listen[i].to_string();
        tlctl(
            &self.bins,
            &[
                "node",
                "invite",
                node,
                "--admin",
                "admin",
                "--coordinator",
                &listen,
                "--coordinator-name",
                NAMES[i],
                "--timeout",
                &timeout,
            ],
            &self.dir,
        )
    }

    fn logs(&self) -> String {
        NAMES
            .iter()
            .map(|n| {
                let text =
                    std::fs::read_to_string(self.dir.join(format!("{n}.log"))).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                format!(
                    "--- {n}.log (last 30 lines, newest first)\n{}\n",
                    tail.join("\n")
                )
            })
            .collect()
    }
}

#[test]
fn three_coordinators_share_one_log_and_a_minority_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = Cluster::new(tmp.path());

    // A leader is elected once the three have dialled each other; the
    // first write waits for it.
    wait_for("a cluster leader", Duration::from_secs(20), || {
        (0..3).any(|i| {
            c.status(i)
                .is_some_and(|s| s["cluster"]["role"] == "leader")
        })
    });
    let out = c.invite(1, "alpha", 10);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
    wait_for(
        "the invitation at all three",
        Duration::from_secs(5),
        || (0..3).all(|i| c.operations(i) == Some(1)),
    );

    // One killed: the other two are a majority.
    c.kill(0);
    let out = c.invite(2, "beta", 10);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
    wait_for("beta at the two left", Duration::from_secs(5), || {
        (1..3).all(|i| c.operations(i) == Some(2))
    });

    // Two killed: the survivor cannot commit; its write stays pending and
    // takes effect nowhere.
    c.kill(2);
    let out = c.invite(1, "gamma", 3);
    assert!(!out.status.success(), "a minority answered a write");
    let survivor = c.status(1).unwrap();
    assert_eq!(survivor["coordinator"]["operations"], 2, "{survivor}");
    assert_eq!(survivor["cluster"]["pending"], 1, "{survivor}");
    assert_ne!(survivor["cluster"]["role"], "leader", "{survivor}");

    // Both back from their data directories: nothing they had committed is
    // lost, and the pending write commits everywhere.
    c.start(0);
    c.start(2);
    wait_for(
        "the pending write at all three",
        Duration::from_secs(20),
        || (0..3).all(|i| c.operations(i) == Some(3)),
    );
    let survivor = c.status(1).unwrap();
    assert_eq!(survivor["cluster"]["pending"], 0, "{survivor}");
    for i in 0..3 {
        let s = c.status(i).unwrap();
        assert!(
            s["cluster"]["peers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["connected"] == true),
            "{s}"
        );
    }
}
