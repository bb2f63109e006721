//! Helpers of the coordinator daemon tests: a PKI in a temporary directory,
//! a coordinator child process that is killed when dropped, and proto-core
//! nodes on their own tokio thread, stopped when dropped.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls_pki_types::CertificateDer;
use tempfile::TempDir;
use transitloom_proto_core::control::quic::QuicTiming;
use transitloom_proto_core::dataplane::UplinkSpec;
use transitloom_proto_core::node::{Credentials, Node, NodeConfig, NodeEvent, ServiceSpec};
use transitloom_proto_core::{pki, ServiceId, UplinkId};
use transitloom_runtime_mio::http;
use transitloom_runtime_tokio::pki_files::read_cert;
use transitloom_runtime_tokio::{wall_clock_now, TokioDriver};

pub fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

pub fn free_udp() -> SocketAddr {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
}

pub fn free_tcp() -> SocketAddr {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
}

pub fn tlctl_ok(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tlctl"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tlctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub fn coordinator(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_transitloom-coordinator"))
        .args(args)
        .output()
        .unwrap()
}

/// A root, a coordinator `pki_dir` (name `coordinator`) and an admin dir.
pub struct Mesh {
    pub dir: TempDir,
    pub root: PathBuf,
    pub pki: PathBuf,
    pub admin: PathBuf,
}

impl Mesh {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str| dir.path().join(name);
        let (root, pki, admin) = (at("root"), at("pki"), at("admin"));
        tlctl_ok(&["pki", "init-root", "--out", s(&root)]);
        tlctl_ok(&[
            "pki",
            "issue-coordinator",
            "--root",
            s(&root),
            "--name",
            "coordinator",
            "--out",
            s(&pki),
        ]);
        tlctl_ok(&[
            "pki",
            "issue-admin",
            "--root",
            s(&root),
            "--name",
            "ops",
            "--out",
            s(&admin),
        ]);
        Self {
            dir,
            root,
            pki,
            admin,
        }
    }

    /// A configuration with relative paths (resolved against its folder).
    pub fn config(&self, listen: SocketAddr, status: SocketAddr) -> String {
        format!(
            "name = \"coordinator\"\ndata_dir = \"data\"\nlisten = \"{listen}\"\n\
             pki_dir = \"pki\"\nroot_ca = \"root/root.crt\"\nstatus_listen = \"{status}\"\n"
        )
    }

    pub fn root_der(&self) -> CertificateDer<'static> {
        CertificateDer::from(read_cert(&self.root.join("root.crt")).unwrap())
    }
}

/// A running coordinator; killed (SIGKILL) when dropped.
pub struct Daemon {
    child: Child,
    pub listen: SocketAddr,
    pub status_addr: SocketAddr,
    log: PathBuf,
    admin: PathBuf,
}

fn field(config: &str, key: &str) -> SocketAddr {
    let line = config
        .lines()
        .find(|l| l.starts_with(&format!("{key} =")))
        .unwrap();
    line.split('"').nth(1).unwrap().parse().unwrap()
}

impl Daemon {
    /// Writes `config` into the mesh folder, starts the coordinator and
    /// waits until its status endpoint answers.
    pub fn start(mesh: &Mesh, config: String) -> Self {
        Self::start_with(mesh, config, &[])
    }

    /// [`start`](Self::start) with more arguments to `run`.
    pub fn start_with(mesh: &Mesh, config: String, args: &[&str]) -> Self {
        let file = mesh.dir.path().join("coordinator.toml");
        fs::write(&file, &config).unwrap();
        let log = unique(mesh.dir.path().join("coordinator"));
        let child = Command::new(env!("CARGO_BIN_EXE_transitloom-coordinator"))
            .args(["run", "--config", s(&file)])
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut daemon = Self {
            child,
            listen: field(&config, "listen"),
            status_addr: field(&config, "status_listen"),
            log,
            admin: mesh.admin.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = daemon.child.try_wait().unwrap() {
                panic!("the coordinator exited with {status}: {}", daemon.log());
            }
            if http::get(daemon.status_addr, "/status", Duration::from_secs(1)).is_ok() {
                return daemon;
            }
            assert!(
                Instant::now() < deadline,
                "no status endpoint: {}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends `signal` (`-TERM`, `-INT`) and waits for the exit.
    pub fn signal(&mut self, signal: &str) -> ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "still running after {signal}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn tlctl(&self, args: &[&str]) -> Output {
        // Half the commands name the coordinator by flags, half by the
        // environment: both must work.
        let mut command = Command::new(env!("CARGO_BIN_EXE_tlctl"));
        command.args(args);
        if args.len().is_multiple_of(2) {
            command.env("TL_COORDINATOR", self.listen.to_string());
            command.env("TL_ADMIN", &self.admin);
        } else {
            command.args([
                "--coordinator",
                &self.listen.to_string(),
                "--admin",
                s(&self.admin),
            ]);
        }
        command.env_remove("TL_COORDINATOR_NAME").output().unwrap()
    }

    pub fn tlctl_ok(&self, args: &[&str]) -> String {
        let out = self.tlctl(args);
        assert!(
            out.status.success(),
            "tlctl {args:?}: {}\ncoordinator log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn tlctl_fails(&self, code: i32, args: &[&str]) -> String {
        let out = self.tlctl(args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "tlctl {args:?}: {stderr}");
        stderr
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http::get(self.status_addr, path, Duration::from_secs(2)).unwrap()
    }

    pub fn status(&self) -> serde_json::Value {
        let (code, body) = self.get("/status");
        assert_eq!(code, 200);
        serde_json::from_str(&body).unwrap()
    }

    pub fn metrics(&self) -> String {
        let (code, body) = self.get("/metrics");
        assert_eq!(code, 200);
        body
    }

    /// Polls `/status` until `done` holds.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status();
            if done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {status}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn unique(path: PathBuf) -> PathBuf {
    let mut n = 0;
    loop {
        let candidate = path.with_extension(format!("{n}.log"));
        if !candidate.exists() {
            return candidate;
        }
        n += 1;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A proto-core node enrolling with a join token, run on its own thread.
pub struct NodeRunner {
    name: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    events: Receiver<NodeEvent>,
}

static SEED: AtomicU8 = AtomicU8::new(1);

impl NodeRunner {
    /// Node `name` with one service `wg0` that declares `peers`.
    pub fn start(
        mesh: &Mesh,
        name: &str,
        join_token: Option<&str>,
        coordinator: SocketAddr,
        peers: &[&str],
    ) -> Self {
        let seed = [SEED.fetch_add(1, Ordering::Relaxed); 32];
        let key = pki::ed25519_pkcs8_from_seed(&seed);
        let csr = pki::node_csr(&key).unwrap();
        let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let config = NodeConfig {
            name: name.to_owned(),
            coordinators: vec![coordinator],
            coordinator_name: "coordinator".to_owned(),
            coordinator_names: Default::default(),
            root: mesh.root_der(),
            credentials: Credentials::Enroll {
                join_token: join_token.unwrap_or_default().to_owned(),
                key_pkcs8: key,
                csr_der: csr,
            },
            control_bind: local,
            advertise_private: false,
            services: vec![ServiceSpec {
                id: ServiceId(1),
                name: "wg0".to_owned(),
                target: free_udp(),
                peers: peers
                    .iter()
                    .map(|p| ((*p).to_owned(), free_udp()))
                    .collect::<BTreeMap<_, _>>(),
            }],
            uplinks: vec![UplinkSpec::new(
                UplinkId(0),
                "lo",
                Ipv4Addr::LOCALHOST.into(),
            )],
            wall_clock: wall_clock_now(),
            // A dead coordinator (kill -9) is noticed within about a second.
            timing: QuicTiming::from_keepalive(Duration::from_millis(400)),
            seed,
        };
        let node = Node::new(config).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, events) = mpsc::channel();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut driver = TokioDriver::new(node);
                let mut batch = Vec::new();
                while !flag.load(Ordering::Relaxed) {
                    let until = Instant::now() + Duration::from_millis(50);
                    driver
                        .run_until(&mut batch, Some(until), |_, e| !e.is_empty())
                        .await;
                    for event in batch.drain(..) {
                        let _ = tx.send(event);
                    }
                }
            });
        });
        Self {
            name: name.to_owned(),
            stop,
            thread: Some(thread),
            events,
        }
    }

    /// Waits for an event matching `want`, skipping others.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        want: impl Fn(&NodeEvent) -> bool,
    ) -> NodeEvent {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) if want(&event) => return event,
                Ok(event) => seen.push(format!("{event:?}")),
                Err(_) => panic!("{}: no {what}; saw {seen:#?}", self.name),
            }
        }
    }
}

impl Drop for NodeRunner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
