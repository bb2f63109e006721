//! A mesh of real processes in a throw-away directory.
//!
//! [`LocalMesh::start`] does what an operator does by hand in
//! `docs/operators.md`, with the same binaries: `tlctl pki` makes a root, a
//! coordinator certificate and an admin certificate; the coordinator starts;
//! `tlctl node invite --admit` gives each node a join token; each node gets a
//! config file and starts. Nothing is done in-process, so a test or a
//! benchmark on top of it exercises the shipped programs.
//!
//! Dropping the mesh stops every process: SIGTERM first, SIGKILL for any
//! that has not exited within two seconds.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long [`LocalMesh::start`] waits for the coordinator to take invites.
const COORDINATOR_START: Duration = Duration::from_secs(15);
/// How long a stopping process gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// The name on the coordinator's certificate.
const COORDINATOR_NAME: &str = "coordinator";

/// What went wrong while building or inspecting a mesh.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: not found ({hint})")]
    MissingBinary { path: PathBuf, hint: &'static str },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    #[error("no node named {0:?} in this mesh")]
    UnknownNode(String),
    #[error("node {node}: {reason}")]
    Status { node: String, reason: String },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

/// Where the three programs are.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub tlctl: PathBuf,
    pub coordinator: PathBuf,
    pub node: PathBuf,
}

impl Binaries {
    /// The three programs in one directory, as `cargo build` leaves them.
    pub fn beside(dir: &Path) -> Result<Self, Error> {
        let bins = Self::in_dir(dir);
        for path in [&bins.tlctl, &bins.coordinator, &bins.node] {
            if !path.is_file() {
                return Err(Error::MissingBinary {
                    path: path.clone(),
                    hint: "build them with `cargo build --release`",
                });
            }
        }
        Ok(bins)
    }

    /// The programs of the build profile a test or benchmark executable
    /// belongs to, built with cargo first if any is missing.
    pub fn for_tests() -> Result<Self, Error> {
        let exe = std::env::current_exe().map_err(Error::io("the test executable's path"))?;
        // target/<profile>/deps/<test> or target/<profile>/<bin>
        let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        if dir.ends_with("deps") {
            dir.pop();
        }
        let bins = Self::in_dir(&dir);
        if [&bins.tlctl, &bins.coordinator, &bins.node]
            .iter()
            .all(|p| p.is_file())
        {
            return Ok(bins);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build.args([
            "build",
            "-q",
            "-p",
            "transitloom-runtime-mio",
            "-p",
            "transitloom-runtime-tokio",
            "--bins",
        ]);
        if let Some(profile) = dir.file_name().and_then(|n| n.to_str()) {
            if profile != "debug" {
                build.args([
                    "--profile",
                    if profile == "release" {
                        "release"
                    } else {
                        profile
                    },
                ]);
            }
        }
        run(&mut build)?;
        Self::beside(&dir)
    }

    fn in_dir(dir: &Path) -> Self {
        Self {
            tlctl: dir.join("tlctl"),
            coordinator: dir.join("transitloom-coordinator"),
            node: dir.join("transitloom-node"),
        }
    }
}

/// The coordinator of a mesh.
#[derive(Debug, Clone)]
pub struct CoordinatorSpec {
    /// Its control address (UDP), which the nodes dial.
    pub listen: SocketAddr,
    pub status_listen: SocketAddr,
    /// Command prefix for the coordinator and for `tlctl` commands that
    /// reach it, such as `ip netns exec hub`; empty runs them here.
    pub wrap: Vec<OsString>,
}

/// A local service a node exposes to the mesh.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    pub name: String,
    /// Where packets from the mesh are delivered (the WireGuard port).
    pub target: SocketAddr,
    /// The `ingress_range` ingress ports are derived from, `IP:LO-HI`.
    pub ingress_range: String,
}

/// One node of a mesh.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    /// Command prefix for every process of this node; empty runs it here.
    pub wrap: Vec<OsString>,
    /// Uplinks as (name, bind address).
    pub uplinks: Vec<(String, IpAddr)>,
    pub status_listen: SocketAddr,
    pub services: Vec<ServiceSpec>,
    /// Associations as (local service, peer `node/service`).
    pub associations: Vec<(String, String)>,
    pub advertise_private: bool,
    /// TOML appended to the node's config as it is (e.g. a `[nat]` table).
    pub extra: String,
}

/// A whole mesh.
#[derive(Debug, Clone)]
pub struct MeshSpec {
    pub coordinator: CoordinatorSpec,
    pub nodes: Vec<NodeSpec>,
}

#[derive(Debug)]
struct RunningNode {
    spec: NodeSpec,
    config: PathBuf,
    child: Option<Child>,
    /// Its join token, kept in its config file.
    token: String,
    /// Uplinks its config file takes out of service (`enabled = false`).
    disabled: Vec<String>,
}

/// A running mesh of real processes; dropping it stops them all.
#[derive(Debug)]
pub struct LocalMesh {
    dir: PathBuf,
    bins: Binaries,
    coordinator: CoordinatorSpec,
    coordinator_child: Option<Child>,
    nodes: Vec<RunningNode>,
    /// Appended to the coordinator's configuration file.
    coordinator_extra: String,
}

impl LocalMesh {
    /// Makes the PKI in `dir`, starts the coordinator, invites and admits
    /// every node and starts it. Returns once every process is running; use
    /// [`wait_up`](Self::wait_up) to wait for the associations.
    pub fn start(dir: &Path, bins: Binaries, spec: MeshSpec) -> Result<Self, Error> {
        Self::start_with_coordinator_config(dir, bins, spec, "")
    }

    /// As [`start`](Self::start), with `extra` TOML lines appended to the
    /// coordinator's configuration (such as `node_cert_lifetime_s = 60`).
    pub fn start_with_coordinator_config(
        dir: &Path,
        bins: Binaries,
        spec: MeshSpec,
        extra: &str,
    ) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        let mut mesh = Self {
            dir: dir.to_path_buf(),
            bins,
            coordinator: spec.coordinator,
            coordinator_child: None,
            nodes: Vec::new(),
            coordinator_extra: extra.to_owned(),
        };
        mesh.make_pki()?;
        mesh.start_coordinator()?;
        for node in spec.nodes {
            let token = mesh.invite(&node.name)?;
            let config = mesh.write_node_config(&node, &token, &[])?;
            mesh.nodes.push(RunningNode {
                spec: node,
                config,
                child: None,
                token,
                disabled: Vec::new(),
            });
        }
        let names: Vec<String> = mesh.nodes.iter().map(|n| n.spec.name.clone()).collect();
        for name in names {
            mesh.start_node(&name)?;
        }
        Ok(mesh)
    }

    /// The directory holding the PKI, configs, data directories and logs
    /// (`NAME.log` per process).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The names of the nodes, in the order of the spec.
    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|n| n.spec.name.as_str())
    }

    /// Waits until every node is admitted and every association it declares
    /// is installed and up.
    pub fn wait_up(&self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        for node in &self.nodes {
            let want = node.spec.associations.len();
            loop {
                let up = self.status(&node.spec.name).ok().is_some_and(|s| {
                    let assocs = s["associations"].as_array().cloned().unwrap_or_default();
                    s["node"]["admission"] == "admitted"
                        && assocs.len() >= want
                        && assocs.iter().all(|a| a["state"] == "up")
                });
                if up {
                    break;
                }
                if Instant::now() >= deadline {
                    // On stderr, which a test prints when it fails: the
                    // logs may be gone by the time anyone looks.
                    eprintln!("{}", self.report(&node.spec.name));
                    return Err(Error::Timeout(
                        timeout,
                        format!(
                            "node {} to be admitted with {want} association(s) up \
                             (its status and the end of every log are on stderr)",
                            node.spec.name,
                        ),
                    ));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// What a failed wait shows: the node's status and the end of every
    /// log, since the directory holding them is usually a temporary one
    /// that goes when the test fails.
    pub fn report(&self, node: &str) -> String {
        const TAIL: usize = 40;
        let mut out = String::new();
        match self.status(node) {
            Ok(status) => {
                let _ = writeln!(out, "status of {node}: {status}");
            }
            Err(e) => {
                let _ = writeln!(out, "status of {node}: {e}");
            }
        }
        let names = std::iter::once("coordinator").chain(self.node_names());
        for name in names {
            let path = self.dir.join(format!("{name}.log"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let _ = writeln!(
                out,
                "--- last {} of {} line(s) of {}",
                lines.len().min(TAIL),
                lines.len(),
                path.display()
            );
            for line in &lines[lines.len().saturating_sub(TAIL)..] {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }

    /// The node's status document (`transitloom-node status --json`).
    pub fn status(&self, node: &str) -> Result<serde_json::Value, Error> {
        let n = self.node(node)?;
        let out = run(self
            .node_command(&n.spec)
            .args(["status", "--json", "--status"])
            .arg(n.spec.status_listen.to_string()))?;
        serde_json::from_slice(&out.stdout).map_err(|e| Error::Status {
            node: node.to_owned(),
            reason: format!("status is not JSON: {e}"),
        })
    }

    /// The ingress address of `node`'s association with `peer`
    /// (`node/service`).
    pub fn ingress(&self, node: &str, peer: &str) -> Result<SocketAddr, Error> {
        let status = self.status(node)?;
        let assocs = status["associations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let assoc = assocs
            .iter()
            .find(|a| a["peer"] == peer)
            .ok_or_else(|| Error::Status {
                node: node.to_owned(),
                reason: format!("no association with {peer}"),
            })?;
        assoc["ingress"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::Status {
                node: node.to_owned(),
                reason: format!("the association with {peer} has no ingress address"),
            })
    }

    /// The WireGuard peer blocks of `node` (`transitloom-node wg-peers`).
    pub fn wg_peers(&self, node: &str) -> Result<String, Error> {
        let n = self.node(node)?;
        let out = run(self
            .node_command(&n.spec)
            .args(["wg-peers", "--status"])
            .arg(n.spec.status_listen.to_string()))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The process id of the node's daemon, while it runs. Through an
    /// `ip netns exec` wrap this is still the daemon: `ip` execs it.
    pub fn pid(&self, node: &str) -> Option<u32> {
        let n = self.nodes.iter().find(|n| n.spec.name == node)?;
        n.child.as_ref().map(Child::id)
    }

    /// The node's status address (its `status_listen`).
    pub fn status_listen(&self, node: &str) -> Option<SocketAddr> {
        let n = self.nodes.iter().find(|n| n.spec.name == node)?;
        Some(n.spec.status_listen)
    }

    /// The coordinator's process id.
    pub fn coordinator_pid(&self) -> Option<u32> {
        self.coordinator_child.as_ref().map(Child::id)
    }

    /// Kills the coordinator with SIGKILL, as a crash would, and starts it
    /// again with the same configuration and data directory (its operation
    /// log). Returns once the new process runs; the nodes reconnect on their
    /// own.
    ///
    /// # Errors
    /// When the coordinator cannot be started again.
    pub fn restart_coordinator(&mut self) -> Result<(), Error> {
        if let Some(mut child) = self.coordinator_child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.start_coordinator()
    }

    /// Kills the node's daemon with SIGKILL, as a crash would.
    pub fn kill_node(&mut self, node: &str) -> Result<(), Error> {
        let n = self.node_mut(node)?;
        if let Some(mut child) = n.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(())
    }

    /// Stops the node's daemon with SIGTERM, waiting for it to exit.
    pub fn stop_node(&mut self, node: &str) -> Result<(), Error> {
        let n = self.node_mut(node)?;
        if let Some(child) = n.child.take() {
            stop(child);
        }
        Ok(())
    }

    /// Starts the node's daemon (again): same config, same data directory,
    /// so it keeps its identity and its ingress ports.
    pub fn start_node(&mut self, node: &str) -> Result<(), Error> {
        let log = self.log(node)?;
        let n = self.node(node)?;
        if n.child.is_some() {
            return Ok(());
        }
        let child = self
            .node_command(&n.spec)
            .args(["run", "--config"])
            .arg(&n.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(Error::io(format!("starting node {node}")))?;
        self.node_mut(node)?.child = Some(child);
        Ok(())
    }

    /// Puts one of the node's uplinks in or out of service as an operator
    /// would: edits `enabled` in its config file and reloads it (SIGHUP).
    /// Returns once the node has applied the reload.
    pub fn set_uplink_enabled(
        &mut self,
        node: &str,
        uplink: &str,
        enabled: bool,
    ) -> Result<(), Error> {
        let n = self.node(node)?;
        if !n.spec.uplinks.iter().any(|(name, _)| name == uplink) {
            return Err(Error::Status {
                node: node.to_owned(),
                reason: format!("no uplink named {uplink:?}"),
            });
        }
        let mut disabled = n.disabled.clone();
        disabled.retain(|u| u != uplink);
        if !enabled {
            disabled.push(uplink.to_owned());
        }
        let (spec, token) = (n.spec.clone(), n.token.clone());
        // (applied, refused, what the last reload said)
        let reloads = |mesh: &Self| {
            mesh.status(node).ok().map(|s| {
                let r = &s["reload"];
                (
                    r["applied"].as_u64().unwrap_or(0),
                    r["refused"].as_u64().unwrap_or(0),
                    r["last_detail"].as_str().unwrap_or("").to_owned(),
                )
            })
        };
        let (applied, refused, _) = reloads(self).unwrap_or_default();
        self.write_node_config(&spec, &token, &disabled)?;
        self.node_mut(node)?.disabled = disabled;
        let pid = self.pid(node).ok_or_else(|| Error::Status {
            node: node.to_owned(),
            reason: "not running".to_owned(),
        })?;
        run(Command::new("kill").args(["-HUP", &pid.to_string()]))?;
        let wait = Duration::from_secs(5);
        let deadline = Instant::now() + wait;
        loop {
            match reloads(self) {
                Some((a, _, _)) if a > applied => break,
                Some((_, r, why)) if r > refused => {
                    return Err(Error::Status {
                        node: node.to_owned(),
                        reason: format!("reload refused: {why}"),
                    })
                }
                _ if Instant::now() >= deadline => {
                    return Err(Error::Timeout(
                        wait,
                        format!("node {node} to apply its reload (see its log)"),
                    ))
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        Ok(())
    }

    /// `transitloom-node explain ASSOC` of the node, as text or JSON.
    pub fn explain(&self, node: &str, assoc: &str, json: bool) -> Result<String, Error> {
        let n = self.node(node)?;
        let mut cmd = self.node_command(&n.spec);
        cmd.args(["explain", assoc, "--status"])
            .arg(n.spec.status_listen.to_string());
        if json {
            cmd.arg("--json");
        }
        let out = run(&mut cmd)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `tlctl` set up to administer this mesh's coordinator: run through the
    /// coordinator's wrap, with `TL_ADMIN`, `TL_COORDINATOR` and
    /// `TL_COORDINATOR_NAME` set.
    pub fn tlctl(&self) -> Command {
        let mut cmd = wrapped(&self.coordinator.wrap, &self.bins.tlctl);
        cmd.env("TL_ADMIN", self.dir.join("admin"))
            .env("TL_COORDINATOR", self.coordinator.listen.to_string())
            .env("TL_COORDINATOR_NAME", COORDINATOR_NAME);
        cmd
    }

    fn make_pki(&self) -> Result<(), Error> {
        let dir = &self.dir;
        run(Command::new(&self.bins.tlctl)
            .args(["pki", "init-root", "--out"])
            .arg(dir.join("root")))?;
        run(Command::new(&self.bins.tlctl)
            .args(["pki", "issue-coordinator", "--name", COORDINATOR_NAME])
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--out")
            .arg(dir.join("hub")))?;
        run(Command::new(&self.bins.tlctl)
            .args(["pki", "issue-admin", "--name", "admin", "--root"])
            .arg(dir.join("root"))
            .arg("--out")
            .arg(dir.join("admin")))?;
        Ok(())
    }

    fn start_coordinator(&mut self) -> Result<(), Error> {
        let c = &self.coordinator;
        let config = self.dir.join("coordinator.toml");
        let text = format!(
            "name = \"{COORDINATOR_NAME}\"\n\
             data_dir = \"coordinator-data\"\n\
             listen = \"{}\"\n\
             pki_dir = \"hub\"\n\
             root_ca = \"root/root.crt\"\n\
             status_listen = \"{}\"\n\
             {}",
            c.listen, c.status_listen, self.coordinator_extra
        );
        write(&config, &text)?;
        let log = self.log("coordinator")?;
        let child = wrapped(&c.wrap, &self.bins.coordinator)
            .args(["run", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(Error::io("starting the coordinator"))?;
        self.coordinator_child = Some(child);
        Ok(())
    }

    /// Invites and admits `name`, retrying while the coordinator starts.
    fn invite(&mut self, name: &str) -> Result<String, Error> {
        let deadline = Instant::now() + COORDINATOR_START;
        loop {
            if let Some(child) = &mut self.coordinator_child {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(Error::Command {
                        command: "transitloom-coordinator run".to_owned(),
                        status: status.to_string(),
                        stderr: format!(
                            "it exited; see {}",
                            self.dir.join("coordinator.log").display()
                        ),
                    });
                }
            }
            let result = run(self.tlctl().args(["node", "invite", name, "--admit"]));
            match result {
                Ok(out) => {
                    let stdout = String::from_utf8_lossy(&out.stdout);
                    return stdout
                        .lines()
                        .rev()
                        .map(str::trim)
                        .find(|l| l.starts_with("tlj1-"))
                        .map(str::to_owned)
                        .ok_or_else(|| Error::Command {
                            command: format!("tlctl node invite {name}"),
                            status: "ok".to_owned(),
                            stderr: format!("no join token in its output: {stdout}"),
                        });
                }
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn write_node_config(
        &self,
        node: &NodeSpec,
        token: &str,
        disabled: &[String],
    ) -> Result<PathBuf, Error> {
        let name = &node.name;
        let mut text = format!(
            "name = \"{name}\"\n\
             data_dir = \"{name}-data\"\n\
             coordinators = [\"{}\"]\n\
             coordinator_name = \"{COORDINATOR_NAME}\"\n\
             root_ca = \"root/root.crt\"\n\
             join_token = \"{token}\"\n\
             status_listen = \"{}\"\n\
             advertise_private = {}\n",
            self.coordinator.listen, node.status_listen, node.advertise_private
        );
        for (uplink, bind) in &node.uplinks {
            let _ = write!(
                text,
                "\n[[uplink]]\nname = \"{uplink}\"\nbind = \"{bind}\"\n"
            );
            if disabled.contains(uplink) {
                text.push_str("enabled = false\n");
            }
        }
        for s in &node.services {
            let _ = write!(
                text,
                "\n[[service]]\nname = \"{}\"\ntarget = \"{}\"\ningress_range = \"{}\"\n",
                s.name, s.target, s.ingress_range
            );
        }
        for (service, peer) in &node.associations {
            let _ = write!(
                text,
                "\n[[association]]\nservice = \"{service}\"\npeer = \"{peer}\"\n"
            );
        }
        if !node.extra.is_empty() {
            text.push('\n');
            text.push_str(&node.extra);
        }
        let path = self.dir.join(format!("{name}.toml"));
        write(&path, &text)?;
        Ok(path)
    }

    fn node(&self, name: &str) -> Result<&RunningNode, Error> {
        self.nodes
            .iter()
            .find(|n| n.spec.name == name)
            .ok_or_else(|| Error::UnknownNode(name.to_owned()))
    }

    fn node_mut(&mut self, name: &str) -> Result<&mut RunningNode, Error> {
        self.nodes
            .iter_mut()
            .find(|n| n.spec.name == name)
            .ok_or_else(|| Error::UnknownNode(name.to_owned()))
    }

    fn node_command(&self, spec: &NodeSpec) -> Command {
        wrapped(&spec.wrap, &self.bins.node)
    }

    /// Appends to `NAME.log`, so a restarted daemon keeps the earlier log.
    fn log(&self, name: &str) -> Result<Stdio, Error> {
        let path = self.dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(Error::io(format!("opening {}", path.display())))?;
        Ok(Stdio::from(file))
    }
}

impl Drop for LocalMesh {
    fn drop(&mut self) {
        let children = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.child.take())
            .chain(self.coordinator_child.take());
        // Signal all first, then wait: the nodes get to say goodbye to the
        // coordinator while it still runs.
        let children: Vec<Child> = children.collect();
        for child in &children {
            terminate(child);
        }
        for child in children {
            reap(child);
        }
    }
}

/// SIGTERM, then SIGKILL after [`STOP_GRACE`].
fn stop(child: Child) {
    terminate(&child);
    reap(child);
}

fn terminate(child: &Child) {
    // std has no SIGTERM: ask kill(1).
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stderr(Stdio::null())
        .status();
}

fn reap(mut child: Child) {
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Polls `check` every 20 ms until it holds.
///
/// # Panics
/// When `timeout` passes first, naming `what` (for tests).
pub fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

/// A UDP socket on `ip` for a service, on a port the system picks outside
/// `avoid` (the ingress ranges: a node refuses a service target inside
/// its own range, and another node's ingress could not bind it). The
/// tests' ranges lie below the system's ephemeral ports, so this is a
/// guard for hosts whose `ip_local_port_range` reaches down to them.
pub fn service_socket(
    ip: IpAddr,
    avoid: std::ops::RangeInclusive<u16>,
) -> Result<std::net::UdpSocket, Error> {
    for _ in 0..64 {
        let socket =
            std::net::UdpSocket::bind((ip, 0)).map_err(Error::io("binding a service socket"))?;
        let port = socket
            .local_addr()
            .map_err(Error::io("reading a bound port"))?
            .port();
        if !avoid.contains(&port) {
            return Ok(socket);
        }
    }
    Err(Error::Io {
        what: format!("binding a service socket on {ip} outside ports {avoid:?}"),
        source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
    })
}

/// A port on `ip` that is free for both UDP and TCP right now (the
/// coordinator listens on UDP, status servers on TCP). Another process may
/// take it before it is used; tests accept that small race.
pub fn free_port(ip: IpAddr) -> Result<u16, Error> {
    for _ in 0..64 {
        let udp = std::net::UdpSocket::bind((ip, 0)).map_err(Error::io(format!("binding {ip}")))?;
        let port = udp
            .local_addr()
            .map_err(Error::io("reading a bound port"))?
            .port();
        if std::net::TcpListener::bind((ip, port)).is_ok() {
            return Ok(port);
        }
    }
    Err(Error::Io {
        what: format!("finding a port free for UDP and TCP on {ip}"),
        source: std::io::ErrorKind::AddrInUse.into(),
    })
}

/// `program` behind the command prefix `wrap`, in a process group of its
/// own: a Ctrl-C at the terminal reaches the program that owns the mesh,
/// which then stops the daemons in order, rather than every daemon at once.
fn wrapped(wrap: &[OsString], program: &Path) -> Command {
    let mut cmd = match wrap.split_first() {
        None => Command::new(program),
        Some((first, rest)) => {
            let mut cmd = Command::new(first);
            cmd.args(rest).arg(program);
            cmd
        }
    };
    cmd.process_group(0);
    cmd
}

fn run(cmd: &mut Command) -> Result<Output, Error> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(Error::io(format!("running {cmd:?}")))?;
    if !out.status.success() {
        return Err(Error::Command {
            command: format!("{cmd:?}"),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out)
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(Error::io(format!("writing {}", path.display())))
}

/// The smallest mesh on loopback: nodes `alpha` and `beta`, one uplink on
/// 127.0.0.1 each, each with a service `wg0` associated with the other's;
/// the services are UDP sockets of the caller's process.
#[derive(Debug)]
pub struct LoopbackPair {
    pub mesh: LocalMesh,
    /// alpha's and beta's service sockets (the ingress takes only these).
    pub services: [std::net::UdpSocket; 2],
    /// The coordinator's status address.
    pub coordinator_status: SocketAddr,
}

impl LoopbackPair {
    /// Starts it in `dir` and waits until both associations are up. Ingress
    /// ports come from `127.0.0.1:BASE-BASE+99` (alpha) and the next hundred
    /// (beta), so tests running side by side give different bases; keep
    /// them below 32768, where the system hands out no ephemeral port.
    ///
    /// # Errors
    /// What [`LocalMesh::start`] and [`LocalMesh::wait_up`] return.
    pub fn start(dir: &Path, bins: Binaries, base: u16) -> Result<Self, Error> {
        Self::start_with_coordinator_config(dir, bins, base, "")
    }

    /// As [`start`](Self::start), with `extra` TOML lines appended to the
    /// coordinator's configuration.
    ///
    /// # Errors
    /// What [`LocalMesh::start`] and [`LocalMesh::wait_up`] return.
    pub fn start_with_coordinator_config(
        dir: &Path,
        bins: Binaries,
        base: u16,
        extra: &str,
    ) -> Result<Self, Error> {
        let lo = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
        let ranges = base..=base.saturating_add(199);
        let services = [
            service_socket(lo, ranges.clone())?,
            service_socket(lo, ranges)?,
        ];
        let mut nodes = Vec::new();
        for (i, (name, peer)) in [("alpha", "beta"), ("beta", "alpha")]
            .into_iter()
            .enumerate()
        {
            let low = base + 100 * i as u16;
            nodes.push(NodeSpec {
                name: name.to_owned(),
                wrap: Vec::new(),
                uplinks: vec![("lo".to_owned(), lo)],
                status_listen: SocketAddr::new(lo, free_port(lo)?),
                services: vec![ServiceSpec {
                    name: "wg0".to_owned(),
                    target: services[i]
                        .local_addr()
                        .map_err(Error::io("a service address"))?,
                    ingress_range: format!("127.0.0.1:{low}-{}", low + 99),
                }],
                associations: vec![("wg0".to_owned(), format!("{peer}/wg0"))],
                advertise_private: true,
                extra: String::new(),
            });
        }
        let coordinator_status = SocketAddr::new(lo, free_port(lo)?);
        let spec = MeshSpec {
            coordinator: CoordinatorSpec {
                listen: SocketAddr::new(lo, free_port(lo)?),
                status_listen: coordinator_status,
                wrap: Vec::new(),
            },
            nodes,
        };
        let mesh = LocalMesh::start_with_coordinator_config(dir, bins, spec, extra)?;
        mesh.wait_up(Duration::from_secs(20))?;
        Ok(Self {
            mesh,
            services,
            coordinator_status,
        })
    }
}
