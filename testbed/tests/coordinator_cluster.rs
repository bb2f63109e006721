//! Three real `transitloom-coordinator` processes on loopback sharing one
//! replicated log (`[cluster]`), and a `transitloom-node` that lists all
//! three: a write made through any of them is in all three; with one
//! killed (`kill -9`) the other two go on and the node moves to the next
//! coordinator; with two killed the survivor holds its write as pending
//! and nothing takes it up; restarted from their data directories, the
//! killed ones come back with their log and the pending write commits.

use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use transitloom_testbed::{free_port, Binaries};

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

    /// Starts a node enrolled with `token` that lists every coordinator
    /// by name.
    fn start_node(&mut self, name: &str, token: &str) {
        let status = SocketAddr::new(LOOPBACK, free_port(LOOPBACK).unwrap());
        let coordinators: Vec<String> = NAMES
            .iter()
            .zip(&self.listen)
            .map(|(n, a)| format!("\"{n}@{a}\""))
            .collect();
        let text = format!(
            "name = \"{name}\"\ndata_dir = \"{name}-data\"\ncoordinators = [{}]\n\
             root_ca = \"root/root.crt\"\njoin_token = \"{token}\"\nstatus_listen = \"{status}\"\n\
             [[uplink]]\nname = \"lo\"\nbind = \"127.0.0.1\"\n",
            coordinators.join(", ")
        );
        let config = self.dir.join(format!("{name}.toml"));
        std::fs::write(&config, text).unwrap();
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap();
        let child = Command::new(&self.bins.node)
            .args(["run", "--config"])
            .arg(&config)
            .current_dir(&self.dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push(Some(child));
    }

    /// Whether coordinator `i` has `node`'s session.
    fn serves(&self, i: usize, node: &str) -> bool {
        self.status(i).is_some_and(|s| {
            s["nodes"].as_array().is_some_and(|n| {
                n.iter()
                    .any(|n| n["name"] == node && n["connected"] == true)
            })
        })
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
        self.invite_with(i, node, timeout_s, &[])
    }

    fn invite_with(
        &self,
        i: usize,
        node: &str,
        timeout_s: u32,
        extra: &[&str],
    ) -> std::process::Output {
        let timeout = timeout_s.to_string();
        let listen = self.listen[i].to_string();
        tlctl(
            &self.bins,
            &[
                &["node", "invite", node][..],
                extra,
                &[
                    "--admin",
                    "admin",
                    "--coordinator",
                    &listen,
                    "--coordinator-name",
                    NAMES[i],
                    "--timeout",
                    &timeout,
                ],
            ]
            .concat(),
            &self.dir,
        )
    }

    /// Polls `check` until it holds; on timeout, fails with the logs.
    fn wait(&self, what: &str, timeout: Duration, check: impl Fn(&Self) -> bool) {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if check(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}\n{}", self.logs());
    }

    fn logs(&self) -> String {
        NAMES
            .iter()
            .chain(&["delta"])
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

fn succeeded(c: &Cluster, out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.logs()
    );
}

#[test]
fn three_coordinators_share_one_log_and_a_minority_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = Cluster::new(tmp.path());

    // A leader is elected once the three have dialled each other; the
    // first write waits for it.
    c.wait("a cluster leader", Duration::from_secs(20), |c| {
        (0..3).any(|i| {
            c.status(i)
                .is_some_and(|s| s["cluster"]["role"] == "leader")
        })
    });
    succeeded(&c, &c.invite(1, "alpha", 10));
    c.wait("the invitation at all three", Duration::from_secs(5), |c| {
        (0..3).all(|i| c.operations(i) == Some(1))
    });

    // A node invited at one coordinator enrolls at the first it lists and
    // keeps its session there.
    let out = c.invite_with(0, "delta", 10, &["--admit"]);
    succeeded(&c, &out);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let token = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("tlj1-"))
        .expect("a join token");
    c.start_node("delta", token);
    c.wait("delta's session", Duration::from_secs(20), |c| {
        (0..3).any(|i| c.serves(i, "delta"))
    });
    c.wait("delta enrolled at all three", Duration::from_secs(5), |c| {
        (0..3).all(|i| c.operations(i) == Some(3))
    });
    let home = (0..3).find(|&i| c.serves(i, "delta")).unwrap();
    assert_eq!(home, 0, "the node stays where it enrolled");
    let (next, last) = (1, 2);

    // Its coordinator killed: the other two are a majority, and the node
    // moves to the next coordinator it lists, which knows it from the
    // shared log.
    c.kill(home);
    succeeded(&c, &c.invite(next, "beta", 10));
    c.wait("beta at the two left", Duration::from_secs(5), |c| {
        [next, last].iter().all(|&i| c.operations(i) == Some(4))
    });
    c.wait(
        "delta's session at the next coordinator it lists",
        Duration::from_secs(30),
        |c| c.serves(next, "delta"),
    );

    // Two killed: the survivor cannot commit; its write stays pending and
    // takes effect nowhere.
    c.kill(last);
    let out = c.invite(next, "gamma", 15);
    assert!(!out.status.success(), "a minority acknowledged a write");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no majority"), "{stderr}");
    let survivor = c.status(next).unwrap();
    assert_eq!(survivor["coordinator"]["operations"], 4, "{survivor}");
    assert_eq!(survivor["cluster"]["pending"], 1, "{survivor}");
    assert_ne!(survivor["cluster"]["role"], "leader", "{survivor}");

    // Both back from their data directories: nothing they had committed is
    // lost, and the pending write commits everywhere.
    c.start(home);
    c.start(last);
    c.wait(
        "the pending write at all three",
        Duration::from_secs(20),
        |c| (0..3).all(|i| c.operations(i) == Some(5)),
    );
    let survivor = c.status(next).unwrap();
    assert_eq!(survivor["cluster"]["pending"], 0, "{survivor}");
    c.wait(
        "every peer session up again",
        Duration::from_secs(10),
        |c| {
            (0..3).all(|i| {
                c.status(i).is_some_and(|s| {
                    s["cluster"]["peers"]
                        .as_array()
                        .is_some_and(|p| p.iter().all(|p| p["connected"] == true))
                })
            })
        },
    );
}
