//! The real thing on loopback: `tlctl` makes a PKI, a real
//! `transitloom-coordinator` runs, two real `transitloom-node` processes
//! enroll with join tokens, form an association by mutual consent and carry
//! UDP between two local "services" byte-for-byte; then the admin revokes
//! one node and every effect lands within a second.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Kills every child on drop, so a failing test leaves nothing behind.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn bin(name: &str) -> PathBuf {
    // Binaries of this package are built for its tests; the node daemon
    // belongs to runtime-mio, built alongside by `cargo test --workspace`.
    let tlctl = PathBuf::from(env!("CARGO_BIN_EXE_tlctl"));
    let path = tlctl.with_file_name(name);
    if !path.exists() {
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "-q",
                "-p",
                "transitloom-runtime-mio",
                "--bin",
                name,
            ])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "could not build {name}");
    }
    path
}

/// Daemon logs go to files in the test's folder, kept out of test output.
fn log(dir: &Path, name: &str) -> Stdio {
    Stdio::from(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
}

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn tlctl(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tlctl"));
    cmd.env("TL_ADMIN", dir.join("admin"))
        .env("TL_COORDINATOR_NAME", "coordinator");
    cmd
}

fn status(status_addr: SocketAddr) -> Option<serde_json::Value> {
    let out = Command::new(bin("transitloom-node"))
        .args(["status", "--json", "--status", &status_addr.to_string()])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

fn assoc_state(status: &serde_json::Value) -> Option<String> {
    status["associations"][0]["state"]
        .as_str()
        .map(str::to_owned)
}

#[allow(clippy::too_many_arguments)]
fn node_config(
    dir: &Path,
    name: &str,
    peer: &str,
    coordinator: SocketAddr,
    status: SocketAddr,
    target: SocketAddr,
    range: &str,
    token: &str,
) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "name = \"{name}\"\n\
         data_dir = \"{name}-data\"\n\
         coordinators = [\"{coordinator}\"]\n\
         coordinator_name = \"coordinator\"\n\
         root_ca = \"root/root.crt\"\n\
         join_token = \"{token}\"\n\
         status_listen = \"{status}\"\n\
         advertise_private = true\n\
         \n[[uplink]]\nname = \"lo\"\nbind = \"127.0.0.1\"\n\
         \n[[service]]\nname = \"wg0\"\ntarget = \"{target}\"\ningress_range = \"{range}\"\n\
         \n[[association]]\nservice = \"wg0\"\npeer = \"{peer}/wg0\"\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn two_nodes_enroll_carry_udp_and_a_revoke_takes_effect_within_a_second() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    run(Command::new(env!("CARGO_BIN_EXE_tlctl"))
        .args(["pki", "init-root", "--out"])
        .arg(dir.join("root")));
    run(Command::new(env!("CARGO_BIN_EXE_tlctl"))
        .args([
            "pki",
            "issue-coordinator",
            "--name",
            "coordinator",
            "--root",
        ])
        .arg(dir.join("root"))
        .arg("--out")
        .arg(dir.join("hub")));
    run(Command::new(env!("CARGO_BIN_EXE_tlctl"))
        .args(["pki", "issue-admin", "--name", "ops", "--root"])
        .arg(dir.join("root"))
        .arg("--out")
        .arg(dir.join("admin")));

    let coordinator: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let hub_status: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    std::fs::write(
        dir.join("hub.toml"),
        format!(
            "name = \"coordinator\"\ndata_dir = \"hub-data\"\nlisten = \"{coordinator}\"\npki_dir = \"hub\"\nroot_ca = \"root/root.crt\"\nstatus_listen = \"{hub_status}\"\n"
        ),
    )
    .unwrap();
    let mut procs = Procs(Vec::new());
    procs.0.push(
        Command::new(env!("CARGO_BIN_EXE_transitloom-coordinator"))
            .args(["run", "--config"])
            .arg(dir.join("hub.toml"))
            .stdout(Stdio::null())
            .stderr(log(dir, "coordinator"))
            .spawn()
            .unwrap(),
    );
    let mut tokens = Vec::new();
    for name in ["alpha", "beta"] {
        let mut token = None;
        wait_for(
            "the coordinator to accept an invite",
            Duration::from_secs(10),
            || {
                let out = tlctl(dir)
                    .args([
                        "node",
                        "invite",
                        name,
                        "--admit",
                        "--coordinator",
                        &coordinator.to_string(),
                    ])
                    .output()
                    .unwrap();
                token = out.status.success().then(|| {
                    String::from_utf8_lossy(&out.stdout)
                        .lines()
                        .last()
                        .unwrap_or_default()
                        .to_owned()
                });
                token.is_some()
            },
        );
        tokens.push(token.unwrap());
    }

    let services: Vec<UdpSocket> = (0..2)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let statuses: Vec<SocketAddr> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()).parse().unwrap())
        .collect();
    let names = [
        ("alpha", "beta", "127.0.0.1:42000-42099"),
        ("beta", "alpha", "127.0.0.1:42100-42199"),
    ];
    for (i, (name, peer, range)) in names.into_iter().enumerate() {
        let target = services[i].local_addr().unwrap();
        let config = node_config(
            dir,
            name,
            peer,
            coordinator,
            statuses[i],
            target,
            range,
            &tokens[i],
        );
        procs.0.push(
            Command::new(bin("transitloom-node"))
                .args(["run", "--config"])
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(log(dir, name))
                .spawn()
                .unwrap(),
        );
    }
    for &s in &statuses {
        wait_for(
            "both associations to come up",
            Duration::from_secs(20),
            || status(s).and_then(|j| assoc_state(&j)).as_deref() == Some("up"),
        );
    }

    // UDP from alpha's service to alpha's ingress arrives at beta's service
    // unchanged, from beta's ingress.
    let alpha = status(statuses[0]).unwrap();
    let beta = status(statuses[1]).unwrap();
    let alpha_ingress: SocketAddr = alpha["associations"][0]["ingress"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let beta_ingress: SocketAddr = beta["associations"][0]["ingress"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    services[1]
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 2048];
    for i in 0..200usize {
        let payload: Vec<u8> = (0..(1 + i * 7 % 1_400)).map(|j| (i + j) as u8).collect();
        services[0].send_to(&payload, alpha_ingress).unwrap();
        let (n, from) = services[1]
            .recv_from(&mut buf)
            .expect("the datagram crossed the mesh");
        assert_eq!(&buf[..n], &payload[..], "datagram {i} altered");
        assert_eq!(from, beta_ingress, "delivered from beta's ingress");
    }

    // Hard revoke: beta is told, alpha drops the association, data stops.
    let revoked_at = Instant::now();
    run(tlctl(dir).args([
        "node",
        "revoke",
        "beta",
        "--coordinator",
        &coordinator.to_string(),
    ]));
    wait_for(
        "alpha to withdraw the association",
        Duration::from_secs(1),
        // A status that answers, with the association no longer up (a
        // crashed node answering nothing does not count).
        || matches!(status(statuses[0]).and_then(|j| assoc_state(&j)).as_deref(), Some(s) if s != "up"),
    );
    wait_for("beta to show it is revoked", Duration::from_secs(1), || {
        status(statuses[1]).is_some_and(|j| j["node"]["admission"] == "revoked")
    });
    assert!(revoked_at.elapsed() < Duration::from_secs(2));
    services[1]
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    for _ in 0..10 {
        services[0].send_to(b"after revoke", alpha_ingress).unwrap();
    }
    assert!(
        services[1].recv_from(&mut buf).is_err(),
        "data crossed after the revoke"
    );
    // Both daemons are still running: the silence is the revoke, not a crash.
    for child in &mut procs.0 {
        assert!(child.try_wait().unwrap().is_none(), "a daemon exited");
    }
}
