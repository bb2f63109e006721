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
use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod delay;
mod nat;
mod topology;
mod traffic;
mod wireguard;

pub use delay::{serve as serve_delay_line, DelayLine, DelayRule};
pub use nat::{Firewall, Masquerade, NatPair};
pub use topology::{add_uplink_line, follow_interfaces, wg_node, HubAndTwo, Scratch, TwoUplinks};
pub use traffic::{ping, Iperf3, Iperf3Client, Iperf3Report, PingReport};
pub use wireguard::{wg_peer_endpoints, WgPeer, WireGuard};

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
    // Straight to the process's stderr: libtest captures eprintln! of a
    // passing test, and a skip must not pass silently.
    let _ = writeln!(
        std::io::stderr().lock(),
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

    /// Whether it is still running. Once it has exited it is forgotten, so
    /// a later stop signals nothing (its pid may be another's by then).
    pub fn running(&mut self) -> bool {
        let running = self
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        if !running {
            self.child = None;
        }
        running
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
        // std sends only SIGKILL: kill(1).
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
