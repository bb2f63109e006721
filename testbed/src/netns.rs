//! Network namespaces, veth links, userspace WireGuard and iperf3, for
//! whole-process tests that need root.
//!
//! Everything here shells out to the tools an operator would use (`ip`,
//! `wireguard-go`, `wg`, `iperf3`, `ping`, `nft`), and every handle is a
//! guard: dropping a [`Namespace`] deletes it (stopping whatever still runs
//! inside), dropping a [`WireGuard`] or an [`Iperf3`] stops the process. A
//! test that panics therefore leaves nothing behind; one that is killed
//! outright leaves namespaces that [`remove_leftovers`] clears on the next
//! run.
//!
//! Names are global on a host (namespaces, and the WireGuard control socket
//! `/var/run/wireguard/NAME.sock`, which every namespace shares), so callers
//! build them from a per-test prefix and the test's process id; see
//! [`run_prefix`].

use std::ffi::OsString;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The environment variable that turns a skipped root test into a failure.
pub const REQUIRE_ENV: &str = "TL_REQUIRE_NETNS";
/// Where userspace WireGuard keeps its control sockets.
const WG_SOCKET_DIR: &str = "/var/run/wireguard";
/// How long a stopping process gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// What went wrong while building or driving a namespace testbed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
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
    #[error("cannot read {what}: {reason}")]
    Parse { what: String, reason: String },
}

impl Error {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }

    fn parse(what: &str, reason: impl Into<String>) -> Self {
        Self::Parse {
            what: what.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Whether a root-only test can run: root, `/dev/net/tun`, and every tool in
/// `tools` on the PATH.
///
/// When something is missing the test should return early; this says so
/// loudly on standard error. With `TL_REQUIRE_NETNS=1` (CI sets it) it
/// panics instead, so a CI machine that lost its privileges or its packages
/// fails rather than passing by skipping.
pub fn require_root(test: &str, tools: &[&str]) -> bool {
    let mut missing = Vec::new();
    if effective_uid() != Some(0) {
        missing.push("root (effective uid 0)".to_owned());
    }
    if !Path::new("/dev/net/tun").exists() {
        missing.push("/dev/net/tun".to_owned());
    }
    for tool in tools {
        if !on_path(tool) {
            missing.push(format!("`{tool}` on the PATH"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let why = missing.join(", ");
    if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
        panic!("{test}: {REQUIRE_ENV}=1 but this machine lacks {why}");
    }
    eprintln!(
        "\n*** SKIPPED {test}: it needs {why}.\n\
         *** Run it as root with those installed; set {REQUIRE_ENV}=1 to make this a failure.\n"
    );
    false
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

/// `PREFIX-PID`: the stem of every name a test run makes, unique among
/// runs on this host while the run lives.
pub fn run_prefix(prefix: &str) -> String {
    format!("{prefix}-{}", std::process::id())
}

/// Deletes the namespaces, WireGuard sockets and scratch directories under
/// `scratch` that an earlier run with `prefix` left behind when it was
/// killed: those named `PREFIX-PID…` (namespaces, directories) or
/// `PREFIXPID…` (interfaces, whose names have no room for a dash) whose PID
/// no longer runs. Processes
/// still running inside such a namespace are killed first. Runs that are
/// alive are left alone, so two runs can share a host.
pub fn remove_leftovers(prefix: &str, scratch: Option<&Path>) {
    let dead = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix(prefix) else {
            return false;
        };
        let digits: String = rest
            .trim_start_matches('-')
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        match digits.parse::<u32>() {
            Ok(pid) => pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists(),
            Err(_) => false,
        }
    };
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            if dead(name) {
                eprintln!("removing namespace {name} left by an earlier run");
                kill_all_in(name);
                let _ = Command::new("ip").args(["netns", "del", name]).status();
            }
        }
    }
    // wireguard-go removes its socket on SIGTERM, not on SIGKILL.
    for dir in [Some(Path::new(WG_SOCKET_DIR)), scratch]
        .into_iter()
        .flatten()
    {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !dead(&name) {
                continue;
            }
            if dir == Path::new(WG_SOCKET_DIR) {
                if name.ends_with(".sock") {
                    let _ = std::fs::remove_file(entry.path());
                }
            } else {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Kills (SIGKILL) every process running in namespace `name`: all of them
/// were started there by the run that owns the namespace.
fn kill_all_in(name: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if pid.parse::<u32>().is_ok() {
            let _ = Command::new("kill")
                .args(["-KILL", pid])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A network namespace, deleted on drop (after SIGKILL to anything still
/// running in it). Loopback is up from the start.
#[derive(Debug)]
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// Creates namespace `name` (at most 15 characters are safe for names
    /// derived from it) with `lo` up.
    ///
    /// # Errors
    /// When `ip netns add` fails, for instance because the name is taken.
    pub fn create(name: &str) -> Result<Self, Error> {
        run(Command::new("ip").args(["netns", "add", name]))?;
        let ns = Self {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The command prefix that runs a program inside: `ip netns exec NAME`.
    /// `ip` execs the program, so a spawned child's pid is the program's.
    pub fn wrap(&self) -> Vec<OsString> {
        ["ip", "netns", "exec", &self.name]
            .into_iter()
            .map(OsString::from)
            .collect()
    }

    /// `program` set up to run inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `program args…` inside and returns its output.
    ///
    /// # Errors
    /// When it cannot start or exits unsuccessfully (stderr in the error).
    pub fn run(&self, program: &str, args: &[&str]) -> Result<Output, Error> {
        run(self.command(program).args(args))
    }

    /// `ip -n NAME args…`.
    ///
    /// # Errors
    /// When `ip` refuses.
    pub fn ip(&self, args: &[&str]) -> Result<(), Error> {
        run(Command::new("ip").args(["-n", &self.name]).args(args)).map(drop)
    }

    /// Adds `cidr` (such as `10.77.1.1/24`) to `dev`.
    ///
    /// # Errors
    /// When `ip` refuses.
    pub fn add_address(&self, dev: &str, cidr: &str) -> Result<(), Error> {
        self.ip(&["addr", "add", cidr, "dev", dev])
    }

    /// Routes `dest` (a prefix or `default`) via `gateway`.
    ///
    /// # Errors
    /// When `ip` refuses.
    pub fn add_route(&self, dest: &str, gateway: IpAddr) -> Result<(), Error> {
        self.ip(&["route", "add", dest, "via", &gateway.to_string()])
    }

    /// Lets the namespace route IPv4 between its interfaces.
    ///
    /// # Errors
    /// When `sysctl` fails.
    pub fn enable_forwarding(&self) -> Result<(), Error> {
        self.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])
            .map(drop)
    }

    /// Loads an nftables ruleset (`nft -f -`) inside.
    ///
    /// # Errors
    /// When `nft` refuses the rules.
    pub fn nft(&self, rules: &str) -> Result<(), Error> {
        let mut child = self
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(Error::io("starting nft"))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(rules.as_bytes())
                .map_err(Error::io("writing rules to nft"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(Error::io("waiting for nft"))?;
        checked(format!("nft -f - in {}", self.name), out).map(drop)
    }

    /// The packet and byte totals of the named nftables counter in `table`
    /// (family `inet`).
    ///
    /// # Errors
    /// When `nft` fails or prints something unexpected.
    pub fn nft_counter(&self, table: &str, counter: &str) -> Result<(u64, u64), Error> {
        let out = self.run("nft", &["list", "counter", "inet", table, counter])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let what = format!("nft counter {counter}");
        let words: Vec<&str> = text.split_whitespace().collect();
        let after = |key: &str| -> Result<u64, Error> {
            let i = words
                .iter()
                .position(|w| *w == key)
                .ok_or_else(|| Error::parse(&what, format!("no `{key}` in {text:?}")))?;
            words
                .get(i + 1)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| Error::parse(&what, format!("no number after `{key}`")))
        };
        Ok((after("packets")?, after("bytes")?))
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        kill_all_in(&self.name);
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// Links `a` and `b` with a veth pair: `a_dev` inside `a`, `b_dev` inside
/// `b`, both up. The pair goes away with either namespace.
///
/// # Errors
/// When `ip` refuses (a name taken, a namespace gone).
pub fn veth(a: &Namespace, a_dev: &str, b: &Namespace, b_dev: &str) -> Result<(), Error> {
    run(Command::new("ip").args([
        "link", "add", a_dev, "netns", &a.name, "type", "veth", "peer", "name", b_dev, "netns",
        &b.name,
    ]))?;
    a.ip(&["link", "set", a_dev, "up"])?;
    b.ip(&["link", "set", b_dev, "up"])
}

/// A child process that is stopped when dropped: SIGTERM, then SIGKILL
/// after two seconds.
#[derive(Debug)]
pub struct Process {
    what: String,
    child: Option<Child>,
}

impl Process {
    /// Spawns `cmd` with standard output and error appended to `log`.
    ///
    /// # Errors
    /// When the log cannot be opened or the program cannot start.
    pub fn spawn(what: &str, cmd: &mut Command, log: &Path) -> Result<Self, Error> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(Error::io(format!("opening {}", log.display())))?;
        let err = file
            .try_clone()
            .map_err(Error::io(format!("opening {}", log.display())))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(Error::io(format!("starting {what}")))?;
        Ok(Self {
            what: what.to_owned(),
            child: Some(child),
        })
    }

    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits up to `timeout` for it to exit by itself.
    ///
    /// # Errors
    /// On timeout (the process is then stopped).
    pub fn wait(&mut self, timeout: Duration) -> Result<std::process::ExitStatus, Error> {
        let deadline = Instant::now() + timeout;
        let Some(child) = self.child.as_mut() else {
            return Err(Error::parse(&self.what, "already stopped"));
        };
        loop {
            if let Some(status) = child.try_wait().map_err(Error::io("waiting"))? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.stop();
                return Err(Error::Timeout(timeout, format!("{} to exit", self.what)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within two seconds.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // std sends only SIGKILL and this crate has no unsafe code: kill(1).
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stderr(Stdio::null())
            .status();
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
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A userspace WireGuard interface (`wireguard-go -f NAME`) inside a
/// namespace, with a fresh key pair. Dropping it stops the daemon, which
/// removes the interface and its control socket.
#[derive(Debug)]
pub struct WireGuard {
    ns: String,
    name: String,
    public_key: String,
    daemon: Process,
}

impl WireGuard {
    /// Starts `wireguard-go` for interface `name` (at most 15 characters,
    /// unique on the host) in `ns`, gives it a new private key (written to
    /// `dir/NAME.conf`) and `listen_port`, adds `cidr` and brings it up.
    /// Its log is `dir/NAME.log`.
    ///
    /// # Errors
    /// When a tool fails or the control socket does not appear in five
    /// seconds.
    pub fn start(
        ns: &Namespace,
        name: &str,
        listen_port: u16,
        cidr: &str,
        dir: &Path,
    ) -> Result<Self, Error> {
        // Foreground: the child is the daemon itself, so its pid is the one
        // to stop (never WG_PROCESS_FOREGROUND=0, which forks away).
        let mut daemon = Process::spawn(
            &format!("wireguard-go {name}"),
            ns.command("wireguard-go").args(["-f", name]),
            &dir.join(format!("{name}.log")),
        )?;
        let socket = Path::new(WG_SOCKET_DIR).join(format!("{name}.sock"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !socket.exists() {
            if !daemon.running() || Instant::now() >= deadline {
                return Err(Error::Timeout(
                    Duration::from_secs(5),
                    format!("{} (see {name}.log)", socket.display()),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The daemon is stopped (by its guard) if anything below fails.
        let private = wg_in(&ns.name, &["genkey"], None)?;
        let public_key = wg_in(&ns.name, &["pubkey"], Some(&private))?;
        let conf = dir.join(format!("{name}.conf"));
        write_private(
            &conf,
            &format!("[Interface]\nPrivateKey = {private}\nListenPort = {listen_port}\n"),
        )?;
        wg_in(&ns.name, &["setconf", name, &conf.to_string_lossy()], None)?;
        ns.add_address(name, cidr)?;
        ns.ip(&["link", "set", name, "up"])?;
        Ok(Self {
            ns: ns.name.clone(),
            name: name.to_owned(),
            public_key,
            daemon,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// Adds (or updates) the peer `public_key` at `endpoint`, routing
    /// `allowed_ips` to it. No persistent keepalive: the mesh keeps its
    /// paths alive itself.
    ///
    /// # Errors
    /// When `wg set` refuses.
    pub fn set_peer(
        &self,
        public_key: &str,
        endpoint: SocketAddr,
        allowed_ips: &str,
    ) -> Result<(), Error> {
        self.wg(
            &[
                "set",
                &self.name,
                "peer",
                public_key,
                "endpoint",
                &endpoint.to_string(),
                "allowed-ips",
                allowed_ips,
            ],
            None,
        )
        .map(drop)
    }

    /// `wg showconf NAME`: keys, listen port and peers (endpoints included),
    /// without counters, for comparing before and after.
    ///
    /// # Errors
    /// When `wg` fails.
    pub fn showconf(&self) -> Result<String, Error> {
        self.wg(&["showconf", &self.name], None)
    }

    /// The peers as `wg show NAME dump` reports them.
    ///
    /// # Errors
    /// When `wg` fails or its output is not the dump format.
    pub fn peers(&self) -> Result<Vec<WgPeer>, Error> {
        let dump = self.wg(&["show", &self.name, "dump"], None)?;
        // The first line is the interface itself.
        dump.lines().skip(1).map(WgPeer::parse).collect()
    }

    /// The peer with `public_key`.
    ///
    /// # Errors
    /// When `wg` fails or there is no such peer.
    pub fn peer(&self, public_key: &str) -> Result<WgPeer, Error> {
        self.peers()?
            .into_iter()
            .find(|p| p.public_key == public_key)
            .ok_or_else(|| Error::parse("wg show dump", format!("no peer {public_key}")))
    }

    /// Whether the daemon still runs.
    pub fn running(&mut self) -> bool {
        self.daemon.running()
    }

    fn wg(&self, args: &[&str], input: Option<&str>) -> Result<String, Error> {
        wg_in(&self.ns, args, input)
    }
}

/// Runs `wg args…` inside namespace `ns`, with `input` on standard input.
fn wg_in(ns: &str, args: &[&str], input: Option<&str>) -> Result<String, Error> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "wg"])
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Error::io("starting wg"))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(format!("{text}\n").as_bytes())
            .map_err(Error::io("writing to wg"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(Error::io("waiting for wg"))?;
    // Never put a private key into an error message.
    let command = format!("wg {}", args.first().copied().unwrap_or_default());
    let out = checked(command, out)?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl Drop for WireGuard {
    fn drop(&mut self) {
        self.daemon.stop();
        // SIGKILL leaves the socket behind; SIGTERM removes it.
        let _ = std::fs::remove_file(Path::new(WG_SOCKET_DIR).join(format!("{}.sock", self.name)));
    }
}

/// One peer line of `wg show NAME dump`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WgPeer {
    pub public_key: String,
    /// `None` until the peer has an endpoint.
    pub endpoint: Option<String>,
    pub allowed_ips: String,
    /// Unix seconds of the latest handshake; `None` if there was none.
    pub latest_handshake: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// `None` when persistent keepalive is off.
    pub persistent_keepalive: Option<u16>,
}

impl WgPeer {
    fn parse(line: &str) -> Result<Self, Error> {
        let what = "a peer line of wg show dump";
        let f: Vec<&str> = line.split('\t').collect();
        let [public_key, _psk, endpoint, allowed_ips, handshake, rx, tx, keepalive] = f[..] else {
            return Err(Error::parse(what, format!("{} fields", f.len())));
        };
        let num = |s: &str| -> Result<u64, Error> {
            s.parse()
                .map_err(|_| Error::parse(what, format!("{s:?} is not a number")))
        };
        Ok(Self {
            public_key: public_key.to_owned(),
            endpoint: (endpoint != "(none)").then(|| endpoint.to_owned()),
            allowed_ips: allowed_ips.to_owned(),
            latest_handshake: Some(num(handshake)?).filter(|&t| t != 0),
            rx_bytes: num(rx)?,
            tx_bytes: num(tx)?,
            persistent_keepalive: match keepalive {
                "off" => None,
                secs => Some(
                    secs.parse()
                        .map_err(|_| Error::parse(what, format!("keepalive {secs:?}")))?,
                ),
            },
        })
    }
}

/// The `Endpoint = ` addresses in `transitloom-node wg-peers` output, with
/// the remote each belongs to (`node/service`, from the comment above it).
///
/// # Errors
/// When an endpoint is not an address.
pub fn wg_peer_endpoints(text: &str) -> Result<Vec<(String, SocketAddr)>, Error> {
    let mut out = Vec::new();
    let mut peer = String::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            peer = comment
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        } else if let Some(addr) = line.strip_prefix("Endpoint = ") {
            let addr = addr
                .trim()
                .parse()
                .map_err(|_| Error::parse("wg-peers output", format!("endpoint {addr:?}")))?;
            out.push((peer.clone(), addr));
        }
    }
    Ok(out)
}

/// What `ping` reported.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PingReport {
    pub transmitted: u32,
    pub received: u32,
    /// Average round-trip time; `None` when nothing came back.
    pub avg_rtt_ms: Option<f64>,
}

/// Pings `to` from inside `ns`: `count` echoes 200 ms apart, each waiting
/// at most two seconds. Lost echoes are not an error; read the report.
///
/// # Errors
/// When `ping` cannot run or prints no statistics.
pub fn ping(ns: &Namespace, to: IpAddr, count: u32) -> Result<PingReport, Error> {
    let out = ns
        .command("ping")
        .args(["-n", "-c", &count.to_string(), "-i", "0.2", "-W", "2"])
        .arg(to.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(Error::io("running ping"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let what = "ping output";
    let stats = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .ok_or_else(|| Error::parse(what, format!("no statistics in {text:?}")))?;
    // "10 packets transmitted, 10 received, 0% packet loss, time 1803ms"
    let count = |key: &str| -> Result<u32, Error> {
        stats
            .split(", ")
            .find(|part| part.contains(key))
            .and_then(|part| part.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| Error::parse(what, format!("no `{key}` count in {stats:?}")))
    };
    // rtt min/avg/max/mdev = 0.744/1.489/2.977/1.052 ms
    let avg_rtt_ms = text
        .lines()
        .find_map(|l| l.split_once(" = "))
        .and_then(|(_, v)| v.split('/').nth(1))
        .and_then(|v| v.parse().ok());
    Ok(PingReport {
        transmitted: count("transmitted")?,
        received: count("received")?,
        avg_rtt_ms,
    })
}

/// A one-off `iperf3` server (`-s -1`) inside a namespace; stopped on drop.
#[derive(Debug)]
pub struct Iperf3 {
    process: Process,
    bind: IpAddr,
    port: u16,
}

impl Iperf3 {
    /// Starts a server on `bind:port` in `ns` (log in `log`) and waits until
    /// it listens.
    ///
    /// # Errors
    /// When it cannot start or does not listen within five seconds.
    pub fn server(ns: &Namespace, bind: IpAddr, port: u16, log: &Path) -> Result<Self, Error> {
        let mut process = Process::spawn(
            "iperf3 server",
            ns.command("iperf3").args([
                "-s",
                "-1",
                "-B",
                &bind.to_string(),
                "-p",
                &port.to_string(),
                // In JSON, its intervals reach the client's report.
                "--json",
                "-i",
                "0.5",
            ]),
            log,
        )?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let listening = format!("{bind}:{port}");
        loop {
            let out = ns.run("ss", &["-Hltn"])?;
            if String::from_utf8_lossy(&out.stdout).contains(&listening) {
                break;
            }
            if !process.running() || Instant::now() >= deadline {
                return Err(Error::Timeout(
                    Duration::from_secs(5),
                    format!("iperf3 to listen on {listening} (see {})", log.display()),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            process,
            bind,
            port,
        })
    }

    /// Starts a TCP client in `ns` against this server for `seconds`,
    /// reporting every half second, its JSON report going to `output` (and
    /// anything else to the same path with `.log`);
    /// [`Iperf3Client::finish`] collects the result.
    ///
    /// # Errors
    /// When it cannot start.
    pub fn client(
        &self,
        ns: &Namespace,
        seconds: u32,
        output: &Path,
    ) -> Result<Iperf3Client, Error> {
        let output = output.to_path_buf();
        let log = output.with_extension("log");
        let process = Process::spawn(
            "iperf3 client",
            ns.command("iperf3").args([
                "-c",
                &self.bind.to_string(),
                "-p",
                &self.port.to_string(),
                "-t",
                &seconds.to_string(),
                "-i",
                "0.5",
                "--json",
                "--get-server-output",
                "--connect-timeout",
                "5000",
                "--logfile",
                &output.to_string_lossy(),
            ]),
            &log,
        )?;
        Ok(Iperf3Client {
            process,
            output,
            seconds,
        })
    }

    /// Whether the server still runs (a one-off server exits after a test).
    pub fn running(&mut self) -> bool {
        self.process.running()
    }
}

/// A running `iperf3` client.
#[derive(Debug)]
pub struct Iperf3Client {
    process: Process,
    output: PathBuf,
    seconds: u32,
}

impl Iperf3Client {
    /// Waits for the client (its run time plus `slack`) and reads its
    /// report.
    ///
    /// # Errors
    /// When it overruns, fails, or reports an error.
    pub fn finish(mut self, slack: Duration) -> Result<Iperf3Report, Error> {
        let status = self
            .process
            .wait(Duration::from_secs(self.seconds.into()) + slack)?;
        let text = std::fs::read_to_string(&self.output)
            .map_err(Error::io(format!("reading {}", self.output.display())))?;
        let report = Iperf3Report::parse(&text)?;
        if !status.success() {
            return Err(Error::Command {
                command: "iperf3 -c".to_owned(),
                status: status.to_string(),
                stderr: format!("see {}", self.output.display()),
            });
        }
        Ok(report)
    }
}

/// What one iperf3 TCP test measured.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Iperf3Report {
    /// Bytes the receiver got, and its goodput in bits per second.
    pub received_bytes: u64,
    pub received_bps: f64,
    /// Bytes the sender wrote.
    pub sent_bytes: u64,
    /// TCP retransmissions the sender counted.
    pub retransmits: u64,
    /// The receiver's intervals: (start s, end s, bytes).
    pub intervals: Vec<(f64, f64, u64)>,
}

impl Iperf3Report {
    /// Parses the client's `--json --get-server-output` document.
    ///
    /// # Errors
    /// When iperf3 reported an error or a field is missing.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let what = "iperf3 JSON";
        let doc: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::parse(what, e.to_string()))?;
        if let Some(err) = doc["error"].as_str() {
            return Err(Error::parse(what, format!("iperf3 reported: {err}")));
        }
        let num = |v: &serde_json::Value, name: &str| -> Result<f64, Error> {
            v.as_f64()
                .ok_or_else(|| Error::parse(what, format!("no {name}")))
        };
        let end = &doc["end"];
        // Byte counts are integers in iperf3's JSON.
        let received_bytes = num(&end["sum_received"]["bytes"], "end.sum_received.bytes")? as u64;
        let received_bps = num(
            &end["sum_received"]["bits_per_second"],
            "end.sum_received.bits_per_second",
        )?;
        let sent_bytes = num(&end["sum_sent"]["bytes"], "end.sum_sent.bytes")? as u64;
        let retransmits = end["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
        let server = &doc["server_output_json"]["intervals"];
        let intervals = server
            .as_array()
            .ok_or_else(|| Error::parse(what, "no server_output_json.intervals"))?
            .iter()
            .map(|i| {
                let sum = &i["sum"];
                Ok((
                    num(&sum["start"], "interval start")?,
                    num(&sum["end"], "interval end")?,
                    num(&sum["bytes"], "interval bytes")? as u64,
                ))
            })
            .collect::<Result<_, Error>>()?;
        Ok(Self {
            received_bytes,
            received_bps,
            sent_bytes,
            retransmits,
            intervals,
        })
    }

    /// The longest run of consecutive receiver intervals that each carried
    /// less than `min_bytes_per_s`, as (start s, length s).
    pub fn longest_stall(&self, min_bytes_per_s: f64) -> Option<(f64, f64)> {
        let mut best: Option<(f64, f64)> = None;
        let mut current: Option<(f64, f64)> = None;
        for &(start, end, bytes) in &self.intervals {
            let len = end - start;
            if len > 0.0 && (bytes as f64) / len < min_bytes_per_s {
                let (s, l) = current.unwrap_or((start, 0.0));
                current = Some((s, l + len));
            } else {
                current = None;
            }
            if let Some(c) = current {
                if best.is_none_or(|b| c.1 > b.1) {
                    best = Some(c);
                }
            }
        }
        best
    }

    /// Bytes received in the intervals that start at or after `second`.
    pub fn bytes_after(&self, second: f64) -> u64 {
        self.intervals
            .iter()
            .filter(|i| i.0 >= second)
            .map(|i| i.2)
            .sum()
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(Error::io(format!("writing {}", path.display())))?;
    file.write_all(text.as_bytes())
        .map_err(Error::io(format!("writing {}", path.display())))
}

fn run(cmd: &mut Command) -> Result<Output, Error> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(Error::io(format!("running {cmd:?}")))?;
    checked(format!("{cmd:?}"), out)
}

fn checked(command: String, out: Output) -> Result<Output, Error> {
    if out.status.success() {
        Ok(out)
    } else {
        Err(Error::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wg_peers_output_gives_each_remote_its_endpoint() {
        let text =
            "# beta/wg0 (service wg0, association 7)\n[Peer]\nEndpoint = 127.0.0.1:41002\n\n\
                    # gamma/wg0 via wg0: no ingress assigned yet\n\n\
                    # delta/wg0 (service wg0, association 9)\n[Peer]\nEndpoint = 127.0.0.1:41003\n";
        let peers = wg_peer_endpoints(text).unwrap();
        assert_eq!(
            peers,
            vec![
                ("beta/wg0".to_owned(), "127.0.0.1:41002".parse().unwrap()),
                ("delta/wg0".to_owned(), "127.0.0.1:41003".parse().unwrap()),
            ]
        );
        assert!(wg_peer_endpoints("Endpoint = nowhere\n").is_err());
    }

    #[test]
    fn wg_dump_peer_lines_parse() {
        let p = WgPeer::parse(
            "PK=\t(none)\t127.0.0.1:41002\t10.99.0.2/32\t1795643554\t1018572\t71500008\toff",
        )
        .unwrap();
        assert_eq!(p.endpoint.as_deref(), Some("127.0.0.1:41002"));
        assert_eq!(p.latest_handshake, Some(1_795_643_554));
        assert_eq!((p.rx_bytes, p.tx_bytes), (1_018_572, 71_500_008));
        assert_eq!(p.persistent_keepalive, None);
        let fresh = WgPeer::parse("PK=\t(none)\t(none)\t(none)\t0\t0\t0\t25").unwrap();
        assert_eq!(fresh.endpoint, None);
        assert_eq!(fresh.latest_handshake, None);
        assert_eq!(fresh.persistent_keepalive, Some(25));
        assert!(WgPeer::parse("PK=\t(none)").is_err());
    }

    #[test]
    fn iperf3_report_finds_goodput_and_the_longest_stall() {
        let doc = serde_json::json!({
            "end": { "sum_sent": { "bytes": 3000, "retransmits": 4 },
                     "sum_received": { "bytes": 2500, "bits_per_second": 10000.0 } },
            "server_output_json": { "intervals": [
                { "sum": { "start": 0.0, "end": 0.5, "bytes": 1000 } },
                { "sum": { "start": 0.5, "end": 1.0, "bytes": 0 } },
                { "sum": { "start": 1.0, "end": 1.5, "bytes": 10 } },
                { "sum": { "start": 1.5, "end": 2.0, "bytes": 1490 } } ] }
        });
        let r = Iperf3Report::parse(&doc.to_string()).unwrap();
        assert_eq!(
            (r.received_bytes, r.sent_bytes, r.retransmits),
            (2500, 3000, 4)
        );
        assert_eq!(r.longest_stall(100.0), Some((0.5, 1.0)));
        assert_eq!(r.longest_stall(1.0), Some((0.5, 0.5)));
        assert_eq!(r.bytes_after(1.0), 1500);
        let err = serde_json::json!({ "error": "unable to connect" }).to_string();
        assert!(Iperf3Report::parse(&err).is_err());
    }

    #[test]
    fn leftovers_of_live_runs_are_not_touched() {
        // Our own pid is alive: nothing with it may be considered dead.
        let scratch = std::env::temp_dir().join(format!("tlnstest-{}", std::process::id()));
        std::fs::create_dir_all(scratch.join(run_prefix("tlnstest"))).unwrap();
        // No process can have the largest u32 as its id.
        std::fs::create_dir_all(scratch.join("tlnstest-4294967295")).unwrap();
        remove_leftovers("tlnstest", Some(&scratch));
        assert!(scratch.join(run_prefix("tlnstest")).exists());
        assert!(!scratch.join("tlnstest-4294967295").exists());
        std::fs::remove_dir_all(&scratch).unwrap();
    }
}
