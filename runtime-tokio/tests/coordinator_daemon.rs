//! `transitloom-coordinator` and the admin commands of `tlctl`, end to end:
//! the built binaries on loopback with temporary directories, and real
//! proto-core nodes (on tokio, in this process) enrolling with the join
//! tokens `tlctl` prints.

mod support;

use std::fs;
use std::time::Duration;

use support::{free_tcp, free_udp, Daemon, Mesh, NodeRunner};
use transitloom_proto_core::control::msg::RejectCode;
use transitloom_proto_core::coordinator::registry::Op;
use transitloom_proto_core::node::{NodeEvent, SessionState};
use transitloom_runtime_tokio::oplog::OpLog;

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn bad_configurations_exit_2_naming_the_key() {
    let mesh = Mesh::new();
    let good = mesh.config(free_udp(), free_tcp());
    let other_root = mesh.dir.path().join("other-root");
    support::tlctl_ok(&["pki", "init-root", "--out", support::s(&other_root)]);
    fs::write(mesh.dir.path().join("plain-file"), "x").unwrap();
    let replace = |key: &str, line: &str| {
        let mut out: Vec<String> = good
            .lines()
            .filter(|l| !l.starts_with(&format!("{key} =")))
            .map(str::to_owned)
            .collect();
        if !line.is_empty() {
            out.insert(0, line.to_owned());
        }
        out.join("\n") + "\n"
    };
    let other_root_crt = format!("root_ca = \"{}\"", support::s(&other_root.join("root.crt")));
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown key",
            format!("{good}colour = \"blue\"\n"),
            "colour: unknown key",
        ),
        ("syntax", format!("{good}name = \n"), "(syntax)"),
        ("no name", replace("name", ""), "name: missing"),
        ("bad name", replace("name", "name = \"Hub!\""), "name: "),
        (
            "name not in the certificate",
            replace("name", "name = \"other\""),
            "name: \"other\" differs",
        ),
        (
            "listen not an address",
            replace("listen", "listen = \"localhost\""),
            "listen: ",
        ),
        (
            "listen port 0",
            replace("listen", "listen = \"127.0.0.1:0\""),
            "listen: ",
        ),
        ("listen missing", replace("listen", ""), "listen: missing"),
        (
            "pki_dir missing",
            replace("pki_dir", "pki_dir = \"nowhere\""),
            "pki_dir: ",
        ),
        (
            "root_ca missing",
            replace("root_ca", "root_ca = \"nowhere.crt\""),
            "root_ca: ",
        ),
        (
            "root_ca of another root",
            replace("root_ca", &other_root_crt),
            "root_ca: ",
        ),
        (
            "data_dir is a file",
            replace("data_dir", "data_dir = \"plain-file\""),
            "data_dir: ",
        ),
        (
            "status_listen",
            replace("status_listen", "status_listen = \"127.0.0.1\""),
            "status_listen: ",
        ),
        (
            "token lifetime as text",
            format!("{good}token_lifetime_s = \"600\"\n"),
            "token_lifetime_s: expected a whole number",
        ),
        (
            "token lifetime too short",
            format!("{good}token_lifetime_s = 5\n"),
            "token_lifetime_s: ",
        ),
        (
            "relay on an address nodes cannot send to",
            format!("{good}[relay]\ndata = true\nlisten_ip = \"0.0.0.0\"\n"),
            "relay.advertise_ip: the relay binds to 0.0.0.0",
        ),
        (
            "relay port range",
            format!("{good}[relay]\nport_range = \"9-1\"\n"),
            "relay.port_range: ",
        ),
        (
            "relay listen_ip",
            format!("{good}[relay]\nlisten_ip = \"nope\"\n"),
            "relay.listen_ip: ",
        ),
        (
            "relay unknown key",
            format!("{good}[relay]\nports = 3\n"),
            "relay.ports: unknown key",
        ),
        (
            "relay idle expiry shorter than the binds' refresh",
            format!("{good}[relay]\nidle_timeout_s = 5\n"),
            "relay.idle_timeout_s: 5 is outside 20 to 3600",
        ),
    ];
    let file = mesh.dir.path().join("bad.toml");
    for (what, text, want) in &cases {
        fs::write(&file, text).unwrap();
        let out = support::coordinator(&["run", "--config", support::s(&file)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
        let prefix = format!("{}: {want}", file.display());
        assert!(
            stderr.contains(&prefix),
            "{what}: wanted {prefix:?} in {stderr}"
        );
    }
    let missing = mesh.dir.path().join("absent.toml");
    let out = support::coordinator(&["run", "--config", support::s(&missing)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("absent.toml: (file): cannot be read"));
    assert!(!mesh.dir.path().join("data").exists(), "nothing created");
    // `check` says the same things, and accepts the good file.
    fs::write(&file, &good).unwrap();
    let out = support::coordinator(&["check", "--config", support::s(&file)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn invite_list_status_and_the_status_endpoints() {
    let mesh = Mesh::new();
    let daemon = Daemon::start(&mesh, mesh.config(free_udp(), free_tcp()));

    let out = daemon.tlctl_ok(&["node", "invite", "alpha", "--admit"]);
    let last = out.lines().last().unwrap();
    assert!(last.starts_with("tlj1-alpha-"), "{out}");
    assert!(!last.contains(' '), "the token alone: {last:?}");
    // Without --admit the node will wait for `tlctl node admit`.
    let out = daemon.tlctl_ok(&["node", "invite", "beta", "--ttl", "120"]);
    assert!(out.contains("tlctl node admit beta"), "{out}");

    // Invited nodes appear once they enroll.
    let out = daemon.tlctl_ok(&["node", "list"]);
    assert!(out.starts_with("no node has enrolled yet"), "{out}");
    let out = daemon.tlctl_ok(&["assoc", "list"]);
    assert!(out.starts_with("no association"), "{out}");
    let out = daemon.tlctl_ok(&["status"]);
    assert!(
        out.starts_with("coordinator           coordinator\n"),
        "{out}"
    );
    assert!(out.contains("\nassociations_deleted  0\n"), "{out}");
    let out = daemon.tlctl_ok(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["coordinator"], "coordinator");

    let status = daemon.status();
    assert_eq!(status["coordinator"]["name"], "coordinator");
    assert_eq!(status["coordinator"]["listen"], daemon.listen.to_string());
    assert_eq!(status["coordinator"]["operations"], 2);
    assert_eq!(status["nodes"], serde_json::json!([]));
    // Pages are rebuilt at most every 250 ms unless a write happened.
    daemon.wait_status("admin sessions counted", WAIT, |s| {
        s["counters"]["sessions"]["admin"].as_u64() >= Some(6)
    });
    let metrics = daemon.metrics();
    for line in [
        "transitloom_coordinator_operations_total{coordinator=\"coordinator\"} 2",
        "transitloom_coordinator_nodes{coordinator=\"coordinator\",admission=\"pending\"} 0",
        "transitloom_coordinator_nodes_online{coordinator=\"coordinator\"} 0",
        "transitloom_coordinator_refused_total{coordinator=\"coordinator\",code=\"revoked\"} 0",
        "# TYPE transitloom_coordinator_sessions_total counter",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    let (code, _) = daemon.get("/nope");
    assert_eq!(code, 404);

    // Refusals and failures: 1; bad usage: 2.
    let err = daemon.tlctl_fails(1, &["node", "admit", "ghost"]);
    assert!(err.contains("no node named \"ghost\""), "{err}");
    assert!(err.contains("(unknown-node)"), "{err}");
    let err = daemon.tlctl_fails(1, &["assoc", "delete", "assoc#7"]);
    assert!(
        err.contains("no association assoc#7 (unknown-association)"),
        "{err}"
    );
    daemon.tlctl_fails(2, &["node", "invite", "Not_A_Name"]);
    daemon.tlctl_fails(2, &["assoc", "create", "alpha", "beta/wg0"]);
    daemon.tlctl_fails(2, &["assoc", "delete", "seven"]);
    daemon.tlctl_fails(2, &["node", "invite", "gamma", "--ttl", "1"]);
    let err = daemon.tlctl_fails(2, &["node", "list", "--admin", "/nonexistent/admin"]);
    assert!(err.contains("/nonexistent/admin"), "{err}");
    let err = daemon.tlctl_fails(1, &["node", "list", "--coordinator-name", "other"]);
    assert!(err.contains("not valid for name \"other\""), "{err}");
    let silent = free_udp().to_string();
    let err = daemon.tlctl_fails(
        1,
        &["node", "list", "--coordinator", &silent, "--timeout", "1"],
    );
    assert!(err.contains("no answer within 1 s"), "{err}");
    // Nothing else reached the log.
    assert_eq!(daemon.status()["coordinator"]["operations"], 2);
}

#[test]
fn an_acknowledged_invite_and_enrollment_survive_kill_9() {
    let mesh = Mesh::new();
    let config = mesh.config(free_udp(), free_tcp());
    let mut daemon = Daemon::start(&mesh, config.clone());
    let out = daemon.tlctl_ok(&["node", "invite", "alpha", "--admit"]);
    let token = out.lines().last().unwrap().to_owned();
    daemon.kill_9(); // right after the acknowledgement
    let daemon = Daemon::start(&mesh, config.clone());
    assert_eq!(daemon.status()["coordinator"]["operations"], 1);

    // The invitation survived: alpha enrolls with its token.
    let alpha = NodeRunner::start(&mesh, "alpha", Some(&token), daemon.listen, &[]);
    alpha.wait_for("enrolled", WAIT, |e| {
        matches!(e, NodeEvent::Enrolled { .. })
    });
    alpha.wait_for("live", WAIT, |e| {
        *e == NodeEvent::Session(SessionState::Live)
    });
    let status = daemon.wait_status("alpha connected", WAIT, |s| {
        s["nodes"][0]["connected"] == true
    });
    assert_eq!(status["coordinator"]["operations"], 2);
    assert_eq!(status["nodes"][0]["admission"], "admitted");

    let mut daemon = daemon;
    daemon.kill_9();
    let daemon = Daemon::start(&mesh, config);
    let out = daemon.tlctl_ok(&["node", "list"]);
    assert!(out.contains("alpha  node#1  admitted"), "{out}");
    // The enrollment survived too: the token is spent...
    let again = NodeRunner::start(&mesh, "alpha", Some(&token), daemon.listen, &[]);
    again.wait_for("join token refused", WAIT, |e| {
        matches!(
            e,
            NodeEvent::Refused {
                code: RejectCode::JoinTokenUsed,
                ..
            }
        )
    });
    // ...and the enrolled node comes back on its own, with its certificate.
    daemon.wait_status("alpha back", WAIT, |s| s["nodes"][0]["connected"] == true);
}

#[test]
fn nodes_enroll_and_the_admin_manages_them() {
    let mesh = Mesh::new();
    let daemon = Daemon::start(&mesh, mesh.config(free_udp(), free_tcp()));
    let token = |name: &str, admit: bool| {
        let mut args = vec!["node", "invite", name];
        if admit {
            args.push("--admit");
        }
        daemon.tlctl_ok(&args).lines().last().unwrap().to_owned()
    };
    let (alpha_token, beta_token) = (token("alpha", true), token("beta", false));
    // alpha declares beta's wg0 as a peer; beta declares none, so only an
    // admin creates the association.
    let alpha = NodeRunner::start(
        &mesh,
        "alpha",
        Some(&alpha_token),
        daemon.listen,
        &["beta/wg0"],
    );
    // One after the other, so that their ids are node#1 and node#2.
    alpha.wait_for("alpha live", WAIT, |e| {
        *e == NodeEvent::Session(SessionState::Live)
    });
    let beta = NodeRunner::start(&mesh, "beta", Some(&beta_token), daemon.listen, &[]);
    beta.wait_for("pending", WAIT, |e| {
        matches!(
            e,
            NodeEvent::Refused {
                code: RejectCode::Pending,
                ..
            }
        )
    });
    let out = daemon.tlctl_ok(&["node", "list"]);
    assert!(out.contains("beta   node#2  pending    no"), "{out}");
    daemon.tlctl_ok(&["node", "admit", "beta"]);
    beta.wait_for("beta live", WAIT, |e| {
        *e == NodeEvent::Session(SessionState::Live)
    });
    let out = daemon.tlctl_ok(&["node", "list"]);
    assert!(out.contains("alpha  node#1  admitted   yes"), "{out}");
    assert!(out.contains("beta   node#2  admitted   yes"), "{out}");

    let created = daemon.tlctl_ok(&["assoc", "create", "alpha/wg0", "beta/wg0"]);
    assert_eq!(created.lines().last(), Some("assoc#1"), "{created}");
    let out = daemon.tlctl_ok(&["assoc", "list"]);
    assert!(
        out.contains("assoc#1  alpha/wg0  beta/wg0  1      admin   installed  yes"),
        "{out}"
    );
    alpha.wait_for("installed", WAIT, |e| {
        matches!(e, NodeEvent::Installed { .. })
    });
    let status = daemon.status();
    assert_eq!(
        status["associations"][0]["ends"],
        serde_json::json!(["alpha/wg0", "beta/wg0"])
    );
    assert_eq!(status["associations"][0]["state"], "installed");
    assert_eq!(status["associations"][0]["epoch"], 1);
    let refused = daemon.tlctl_fails(1, &["assoc", "create", "beta/wg0", "alpha/wg0"]);
    assert!(refused.contains("exists already"), "{refused}");
    assert!(refused.contains("(conflict)"), "{refused}");
    daemon.tlctl_ok(&["assoc", "delete", "assoc#1"]);
    alpha.wait_for("withdrawn", WAIT, |e| {
        matches!(e, NodeEvent::Withdrawn { .. })
    });
    // A delete is kept: the association is listed as deleted.
    let out = daemon.tlctl_ok(&["assoc", "list"]);
    assert!(
        out.contains("assoc#1  alpha/wg0  beta/wg0  1      admin   deleted  no"),
        "{out}"
    );

    daemon.tlctl_ok(&["node", "revoke", "beta"]);
    beta.wait_for("revoked", WAIT, |e| *e == NodeEvent::Revoked);
    let out = daemon.tlctl_ok(&["node", "list"]);
    assert!(out.contains("beta   node#2  revoked    no"), "{out}");
    let metrics = daemon.metrics();
    assert!(metrics.contains(
        "transitloom_coordinator_nodes{coordinator=\"coordinator\",admission=\"revoked\"} 1"
    ));
    assert!(metrics
        .contains("transitloom_coordinator_enrollments_total{coordinator=\"coordinator\"} 2"));
    let refused = daemon.tlctl_fails(1, &["node", "revoke", "beta"]);
    assert!(
        refused.contains("is revoked, so it cannot be revoked (wrong-state)"),
        "{refused}"
    );
    daemon.tlctl_ok(&["node", "readmit", "beta"]);
    let out = daemon.tlctl_ok(&["node", "list"]);
    assert!(out.contains("beta   node#2  admitted"), "{out}");
    // invite, invite, enroll, enroll, admit, create, the association's
    // first key, delete, revoke, readmit
    assert_eq!(daemon.status()["coordinator"]["operations"], 10);
}

#[test]
fn sigterm_and_sigint_stop_it_with_exit_0() {
    let mesh = Mesh::new();
    for signal in ["-TERM", "-INT"] {
        let listen = free_udp();
        let mut daemon = Daemon::start(&mesh, mesh.config(listen, free_tcp()));
        daemon.tlctl_ok(&["node", "list"]);
        let status = daemon.signal(signal);
        assert_eq!(status.code(), Some(0), "{signal}: {}", daemon.log());
        assert!(daemon.log().contains("stopping"), "{}", daemon.log());
        // The port is free again.
        std::net::UdpSocket::bind(listen).unwrap();
    }
}

/// `tlctl status` with the admin credentials in `dir`.
fn status_as(daemon: &Daemon, dir: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tlctl"))
        .args([
            "status",
            "--coordinator",
            &daemon.listen.to_string(),
            "--admin",
        ])
        .arg(dir)
        .env_remove("TL_COORDINATOR_NAME")
        .output()
        .unwrap()
}

#[test]
fn foreign_root_and_ca_as_client_certificates_are_refused_logged_and_counted() {
    let mesh = Mesh::new();
    let other = Mesh::new();
    let mut daemon = Daemon::start(&mesh, mesh.config(free_udp(), free_tcp()));
    let failed = |daemon: &Daemon| daemon.status()["counters"]["handshakes_failed"].clone();
    assert_eq!(failed(&daemon), 0);

    // An admin certificate of another root, the coordinator's root trusted:
    // the client accepts the server, the server refuses the client.
    let foreign = mesh.dir.path().join("foreign-admin");
    fs::create_dir(&foreign).unwrap();
    fs::copy(other.admin.join("admin.crt"), foreign.join("admin.crt")).unwrap();
    fs::copy(other.admin.join("admin.key"), foreign.join("admin.key")).unwrap();
    fs::copy(mesh.root.join("root.crt"), foreign.join("root.crt")).unwrap();
    let out = status_as(&daemon, &foreign);
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    // The coordinator's own intermediate CA presented as a client
    // certificate: it chains to the root, but a CA is not an end entity.
    let unfit = mesh.dir.path().join("ca-as-admin");
    fs::create_dir(&unfit).unwrap();
    fs::copy(mesh.pki.join("intermediate.crt"), unfit.join("admin.crt")).unwrap();
    fs::copy(mesh.pki.join("intermediate.key"), unfit.join("admin.key")).unwrap();
    fs::copy(mesh.root.join("root.crt"), unfit.join("root.crt")).unwrap();
    let out = status_as(&daemon, &unfit);
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    // Both show in status, in metrics and in the log, with TLS's reason;
    // no session was ever accepted and the daemon carries on.
    daemon.wait_status("both refusals counted", Duration::from_secs(5), |s| {
        s["counters"]["handshakes_failed"] == 2
    });
    assert_eq!(daemon.status()["counters"]["sessions"]["admin"], 0);
    assert!(
        daemon.metrics().contains(
            "transitloom_coordinator_handshakes_failed_total{coordinator=\"coordinator\"} 2"
        ),
        "{}",
        daemon.metrics()
    );
    let log = daemon.log();
    assert_eq!(log.matches("handshake refused").count(), 2, "{log}");
    daemon.tlctl_ok(&["status"]);
    assert_eq!(daemon.signal("-TERM").code(), Some(0));
}

#[test]
fn json_logs_are_one_object_per_line() {
    let mesh = Mesh::new();
    let mut daemon = Daemon::start_with(
        &mesh,
        mesh.config(free_udp(), free_tcp()),
        &["--log-format", "json"],
    );
    daemon.tlctl_ok(&["node", "invite", "alpha"]);
    assert_eq!(daemon.signal("-TERM").code(), Some(0));
    let log = daemon.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(lines.len() >= 2, "{log}");
    for line in &lines {
        assert!(line["timestamp"].is_string(), "{line}");
        assert!(line["level"].is_string(), "{line}");
        assert!(line["fields"]["message"].is_string(), "{line}");
    }
    assert!(
        lines.iter().any(|l| l["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("stopping")),
        "{log}"
    );
}

#[test]
fn a_corrupt_log_or_a_taken_port_exits_1() {
    let mesh = Mesh::new();
    fs::create_dir_all(mesh.dir.path().join("data")).unwrap();
    let log = mesh.dir.path().join("data/oplog.redb");
    let mut oplog = OpLog::open(&log).unwrap();
    oplog
        .append(&Op::Admit {
            node: "nobody".into(),
        })
        .unwrap();
    drop(oplog);
    let file = mesh.dir.path().join("coordinator.toml");
    fs::write(&file, mesh.config(free_udp(), free_tcp())).unwrap();
    let out = support::coordinator(&["run", "--config", support::s(&file)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("record 1 does not apply"), "{stderr}");
    fs::remove_file(&log).unwrap();

    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    fs::write(&file, mesh.config(taken.local_addr().unwrap(), free_tcp())).unwrap();
    let out = support::coordinator(&["run", "--config", support::s(&file)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("(listen)"), "{stderr}");
}
