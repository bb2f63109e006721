//! `transitloom-node run` as a process: start-up refusals, a node waiting
//! for a coordinator that never answers, signals, and what survives a
//! restart (ingress ports, the private key). Enrollment against a real
//! coordinator is tested with the coordinator daemon.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use transitloom_proto_core::pki::{self, CertTerms};

const BIN: &str = env!("CARGO_BIN_EXE_transitloom-node");
const START_TIMEOUT: Duration = Duration::from_secs(15);
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A node's folder and configuration, with a UDP socket standing in for a
/// coordinator that never answers.
struct Fixture {
    dir: tempfile::TempDir,
    config: PathBuf,
    status: SocketAddr,
    _silent_coordinator: UdpSocket,
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn fixture(top: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key = pki::ed25519_pkcs8_from_seed(&[3; 32]);
    let root = pki::self_signed_root(
        &key,
        &CertTerms {
            name: "transitloom root",
            not_before_unix_s: 1_700_000_000,
            validity_days: 3_650,
            serial: [1; 16],
        },
    )
    .unwrap();
    std::fs::write(
        dir.path().join("root.crt"),
        pem::encode(&pem::Pem::new("CERTIFICATE", root)),
    )
    .unwrap();
    let coordinator = UdpSocket::bind("127.0.0.1:0").unwrap();
    let status: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let text = format!(
        r#"
name = "alpha"
data_dir = "state"
coordinators = ["{coordinator}"]
root_ca = "root.crt"
status_listen = "{status}"
{top}

[[uplink]]
name = "loop"
bind = "127.0.0.1"

[[service]]
name = "wg0"
target = "127.0.0.1:51820"
ingress_range = "127.0.0.1:22000-22999"

[[association]]
service = "wg0"
peer = "beta/wg0"

[[association]]
service = "wg0"
peer = "gamma/wg0"
ingress = "127.0.0.1:22017"
"#,
        coordinator = coordinator.local_addr().unwrap(),
    );
    let config = dir.path().join("node.toml");
    std::fs::write(&config, text).unwrap();
    Fixture {
        dir,
        config,
        status,
        _silent_coordinator: coordinator,
    }
}

const JOIN_TOKEN: &str = "join_token = \"tlj1-alpha-00112233445566778899aabbccddeeff\"";

/// A running daemon, killed when dropped (a failing test leaves nothing).
struct Daemon {
    child: Child,
    stderr: PathBuf,
}

impl Daemon {
    fn start(fixture: &Fixture, tag: &str) -> Self {
        let stderr = fixture.dir.path().join(format!("stderr-{tag}.log"));
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&fixture.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Self { child, stderr }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} failed");
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// `status --json` once the node answers.
    fn wait_status(&mut self, addr: SocketAddr) -> Value {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                panic!(
                    "the node exited ({exit}) before serving status:\n{}",
                    self.log()
                );
            }
            let out = cli(&["status", "--json", "--status", &addr.to_string()]);
            if out.status.success() {
                return serde_json::from_slice(&out.stdout).unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "no status within {START_TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `signal` and expects exit status 0.
    fn stop_with(mut self, signal: &str) -> String {
        self.signal(signal);
        let exit = self.wait_exit(EXIT_TIMEOUT);
        let log = self.log();
        assert_eq!(
            exit.and_then(|e| e.code()),
            Some(0),
            "after SIG{signal}:\n{log}"
        );
        log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cli(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn run_to_exit(fixture: &Fixture) -> (Option<i32>, String) {
    let mut daemon = Daemon::start(fixture, "once");
    let exit = daemon.wait_exit(EXIT_TIMEOUT);
    (exit.and_then(|e| e.code()), daemon.log())
}

fn ingress_of(status: &Value) -> Vec<(String, String)> {
    status["associations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["peer"].as_str().unwrap().to_owned(),
                a["ingress"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn key_file(fixture: &Fixture) -> PathBuf {
    fixture.dir.path().join("state").join("node.key")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn without_a_certificate_or_a_join_token_run_exits_2_naming_join_token() {
    let fixture = fixture("");
    let (code, log) = run_to_exit(&fixture);
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains(
            "node.toml: join_token: data_dir has no certificate and the config has no join_token"
        ),
        "{log}"
    );
    // `check` refuses what `run` refuses.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_transitloom-node"))
        .args(["check", "--config"])
        .arg(&fixture.config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("join_token: data_dir has no certificate")
    );
}

#[test]
fn check_warns_of_an_ingress_range_among_the_ephemeral_ports() {
    let fixture = fixture(JOIN_TOKEN);
    let check = |fixture: &Fixture| {
        let out = cli(&["check", "--config", fixture.config.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let quiet = check(&fixture);
    assert!(!quiet.contains("warning:"), "{quiet}");
    // The range Linux hands out by default; read what this host says.
    let system = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let low: u16 = system.split_whitespace().next().unwrap().parse().unwrap();
    let inside = format!("127.0.0.1:{low}-{}", low + 99);
    edit(&fixture, "127.0.0.1:22000-22999", &inside);
    let loud = check(&fixture);
    assert!(
        loud.contains(&format!(
            "warning: {}: service[0].ingress_range: {low}-{} overlaps the system's ephemeral ports",
            fixture.config.display(),
            low + 99
        )),
        "{loud}"
    );
}

#[test]
fn a_bad_configuration_exits_2_with_file_key_and_reason() {
    let unknown = fixture("colour = \"blue\"");
    let (code, log) = run_to_exit(&unknown);
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("node.toml: colour: unknown key"), "{log}");

    // An uplink address this host does not have.
    let fixture = fixture(JOIN_TOKEN);
    let text = std::fs::read_to_string(&fixture.config).unwrap();
    std::fs::write(
        &fixture.config,
        text.replace("bind = \"127.0.0.1\"", "bind = \"192.0.2.77\""),
    )
    .unwrap();
    let (code, log) = run_to_exit(&fixture);
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("node.toml: uplink[0].bind: 192.0.2.77"),
        "{log}"
    );
}

#[test]
fn a_node_waiting_for_its_coordinator_shows_every_association_and_keeps_its_ingress() {
    let fixture = fixture(JOIN_TOKEN);
    let mut daemon = Daemon::start(&fixture, "first");
    let status = daemon.wait_status(fixture.status);
    assert_eq!(status["node"]["name"], "alpha");
    assert_eq!(status["node"]["admission"], "enrolling");
    assert_eq!(status["node"]["nat"], "unknown");
    assert_eq!(status["uplinks"][0]["name"], "loop");
    let associations = status["associations"].as_array().unwrap();
    assert_eq!(associations.len(), 2);
    for a in associations {
        assert_eq!(a["state"], "waiting", "{a}");
        assert_eq!(a["service"], "wg0");
        assert_eq!(a["mode"], "whole-packet");
    }
    let ingress = ingress_of(&status);
    assert_eq!(ingress[0].0, "beta/wg0");
    let derived: SocketAddr = ingress[0].1.parse().unwrap();
    assert!((22000..=22999).contains(&derived.port()), "{derived}");
    assert_eq!(
        ingress[1],
        ("gamma/wg0".to_owned(), "127.0.0.1:22017".to_owned())
    );

    // The other inspection commands read the same node.
    let addr = fixture.status.to_string();
    let peers = cli(&["wg-peers", "--status", &addr]);
    assert!(peers.status.success());
    let peers = String::from_utf8(peers.stdout).unwrap();
    assert!(peers.contains(&format!("Endpoint = {derived}")), "{peers}");
    assert!(peers.contains("Endpoint = 127.0.0.1:22017"), "{peers}");
    let table = cli(&["status", "--config", fixture.config.to_str().unwrap()]);
    assert!(table.status.success());
    assert!(String::from_utf8(table.stdout)
        .unwrap()
        .contains("admission enrolling"));
    let (code, metrics) =
        transitloom_runtime_mio::http::get(fixture.status, "/metrics", Duration::from_secs(3))
            .unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("transitloom_node_admitted{node=\"alpha\"} 0"),
        "{metrics}"
    );
    daemon.stop_with("TERM");

    let mut again = Daemon::start(&fixture, "second");
    let status = again.wait_status(fixture.status);
    assert_eq!(
        ingress_of(&status),
        ingress,
        "the same ports after a restart"
    );
    assert_eq!(
        status["node"]["admission"], "enrolling",
        "still no certificate"
    );
    again.stop_with("INT");
}

#[test]
fn sigterm_exits_0_and_closes_the_status_address() {
    let fixture = fixture(JOIN_TOKEN);
    let mut daemon = Daemon::start(&fixture, "signals");
    daemon.wait_status(fixture.status);
    let log = daemon.stop_with("TERM");
    assert!(log.contains("node stopped"), "{log}");
    assert!(
        transitloom_runtime_mio::http::get(fixture.status, "/status", Duration::from_millis(300))
            .is_err(),
        "the status address is closed"
    );
}

/// Sends SIGHUP and waits until status counts `applied` and `refused` reloads.
fn reload(daemon: &mut Daemon, status: SocketAddr, applied: u64, refused: u64) -> Value {
    daemon.signal("HUP");
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let now = daemon.wait_status(status);
        let counts = (
            now["reload"]["applied"].as_u64(),
            now["reload"]["refused"].as_u64(),
        );
        if counts == (Some(applied), Some(refused)) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "no reload {applied}/{refused} in status: {now}\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn edit(fixture: &Fixture, from: &str, to: &str) {
    let text = std::fs::read_to_string(&fixture.config).unwrap();
    assert!(text.contains(from), "{from:?} not in the config");
    std::fs::write(&fixture.config, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn sighup_reloads_services_and_associations_and_refuses_what_takes_a_restart() {
    let fixture = fixture(JOIN_TOKEN);
    let mut daemon = Daemon::start(&fixture, "reload");
    let first = daemon.wait_status(fixture.status);
    assert_eq!(first["reload"]["applied"], 0);
    assert!(first["reload"]["last_result"].is_null());
    let beta = ingress_of(&first)[0].clone();
    assert_eq!(beta.0, "beta/wg0");

    // A new service with an association, and gamma's association gone.
    let text = std::fs::read_to_string(&fixture.config).unwrap();
    let gamma =
        "[[association]]\nservice = \"wg0\"\npeer = \"gamma/wg0\"\ningress = \"127.0.0.1:22017\"\n";
    assert!(text.contains(gamma));
    let text = text.replace(gamma, "")
        + "\n[[service]]\nname = \"wg1\"\ntarget = \"127.0.0.1:51821\"\ningress_range = \"127.0.0.1:23000-23999\"\n\n[[association]]\nservice = \"wg1\"\npeer = \"delta/wg1\"\n";
    std::fs::write(&fixture.config, text).unwrap();
    let status = reload(&mut daemon, fixture.status, 1, 0);
    assert_eq!(status["reload"]["last_result"], "applied", "{status}");
    assert!(status["reload"]["last_unix_s"].as_u64().unwrap() > 1_700_000_000);
    let detail = status["reload"]["last_detail"].as_str().unwrap();
    assert!(detail.contains("services added: wg1"), "{detail}");
    assert!(
        detail.contains("associations removed: wg0 to gamma/wg0"),
        "{detail}"
    );
    let ingress = ingress_of(&status);
    assert_eq!(ingress.len(), 2, "{status}");
    assert_eq!(ingress[0], beta, "the unchanged association keeps its port");
    assert_eq!(ingress[1].0, "delta/wg1");
    let delta: SocketAddr = ingress[1].1.parse().unwrap();
    assert!((23000..=23999).contains(&delta.port()), "{delta}");
    assert_eq!(status["associations"][1]["service"], "wg1");
    assert_eq!(status["associations"][1]["state"], "waiting");
    // Kept in the data directory, as at start-up.
    let kept = std::fs::read_to_string(fixture.dir.path().join("state/ingress.toml")).unwrap();
    assert!(kept.contains(&format!("addr = \"{delta}\"")), "{kept}");
    assert!(
        daemon.log().contains("configuration reloaded"),
        "{}",
        daemon.log()
    );

    // A change that takes a restart is refused; the node runs on.
    edit(&fixture, "name = \"alpha\"", "name = \"omega\"");
    let status = reload(&mut daemon, fixture.status, 1, 1);
    assert_eq!(status["reload"]["last_result"], "refused");
    assert_eq!(status["node"]["name"], "alpha");
    assert_eq!(ingress_of(&status), ingress, "nothing changed");
    assert!(
        daemon.log().contains("reload refused: ")
            && daemon
                .log()
                .contains("node.toml: name: changed (was \"alpha\")"),
        "{}",
        daemon.log()
    );

    // So is an invalid file, even one that would otherwise be fine.
    edit(
        &fixture,
        "name = \"omega\"",
        "name = \"alpha\"\ncolour = \"blue\"",
    );
    let status = reload(&mut daemon, fixture.status, 1, 2);
    assert!(
        status["reload"]["last_detail"]
            .as_str()
            .unwrap()
            .contains("node.toml: colour: unknown key"),
        "{status}"
    );
    assert_eq!(ingress_of(&status), ingress);
    assert!(
        daemon.wait_exit(Duration::from_millis(200)).is_none(),
        "still running"
    );
    let (code, metrics) =
        transitloom_runtime_mio::http::get(fixture.status, "/metrics", Duration::from_secs(3))
            .unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("transitloom_node_reloads_total{node=\"alpha\",result=\"applied\"} 1")
            && metrics
                .contains("transitloom_node_reloads_total{node=\"alpha\",result=\"refused\"} 2")
            && metrics.contains("transitloom_node_last_reload_success{node=\"alpha\"} 0"),
        "{metrics}"
    );

    // Fixed again: applied, with nothing to change.
    edit(&fixture, "\ncolour = \"blue\"", "");
    let status = reload(&mut daemon, fixture.status, 2, 2);
    assert_eq!(status["reload"]["last_detail"], "no change");
    assert_eq!(ingress_of(&status), ingress);
    daemon.stop_with("TERM");
}

#[test]
fn the_private_key_is_0600_and_kept_across_restarts() {
    let fixture = fixture(JOIN_TOKEN);
    let mut daemon = Daemon::start(&fixture, "first");
    daemon.wait_status(fixture.status);
    let key = key_file(&fixture);
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&fixture.dir.path().join("state")), 0o700);
    let first = std::fs::read(&key).unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("-----BEGIN PRIVATE KEY-----"));
    daemon.stop_with("TERM");

    let mut again = Daemon::start(&fixture, "second");
    again.wait_status(fixture.status);
    assert_eq!(std::fs::read(&key).unwrap(), first, "the same key");
    assert_eq!(mode(&key), 0o600);
    again.stop_with("TERM");
}

#[test]
fn an_uplink_whose_interface_is_missing_shows_down_and_alone_it_exits_2() {
    // Beside a working uplink: the node runs and says why lte carries
    // nothing, in its log, its status, its table and its metrics.
    let two = fixture(JOIN_TOKEN);
    let text = std::fs::read_to_string(&two.config).unwrap();
    let second = "[[uplink]]\nname = \"loop\"\nbind = \"127.0.0.1\"\n\n\
                  [[uplink]]\nname = \"lte\"\ninterface = \"tl-no-such0\"\ncapacity_mbps = 20\n";
    std::fs::write(
        &two.config,
        text.replace(
            "[[uplink]]\nname = \"loop\"\nbind = \"127.0.0.1\"\n",
            second,
        ),
    )
    .unwrap();
    let mut daemon = Daemon::start(&two, "missing");
    let status = daemon.wait_status(two.status);
    let uplinks = status["uplinks"].as_array().unwrap();
    assert_eq!(uplinks.len(), 2, "{status}");
    assert_eq!(uplinks[0]["state"], "up");
    assert_eq!(uplinks[0]["address"], "127.0.0.1");
    assert_eq!(uplinks[1]["name"], "lte");
    assert_eq!(uplinks[1]["state"], "down");
    assert_eq!(uplinks[1]["address"], Value::Null);
    assert_eq!(uplinks[1]["interface"], "tl-no-such0");
    assert_eq!(uplinks[1]["capacity_mbps"], 20.0);
    let why = uplinks[1]["down_reason"].as_str().unwrap();
    assert!(why.contains("no interface named \"tl-no-such0\""), "{why}");
    let table = cli(&["status", "--status", &two.status.to_string()]);
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table.contains("lte (interface tl-no-such0) is down: no interface named"),
        "{table}"
    );
    let (_, metrics) =
        transitloom_runtime_mio::http::get(two.status, "/metrics", Duration::from_secs(3)).unwrap();
    assert!(
        metrics.contains("transitloom_uplink_up{node=\"alpha\",uplink=\"lte\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("transitloom_uplink_up{node=\"alpha\",uplink=\"loop\"} 1"),
        "{metrics}"
    );
    let log = daemon.stop_with("TERM");
    assert!(
        log.contains("uplink down at start") && log.contains("tl-no-such0"),
        "{log}"
    );

    // Alone, the missing interface is refused at start-up: exit 2 with
    // the file, the key and the reason.
    let alone = fixture(JOIN_TOKEN);
    let text = std::fs::read_to_string(&alone.config).unwrap();
    std::fs::write(
        &alone.config,
        text.replace("bind = \"127.0.0.1\"", "interface = \"tl-no-such0\""),
    )
    .unwrap();
    let (code, log) = run_to_exit(&alone);
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("node.toml: uplink[0].interface: no interface named \"tl-no-such0\" on this host, and no other uplink is usable"),
        "{log}"
    );
}
