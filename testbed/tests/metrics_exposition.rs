//! Every daemon's `/metrics` is valid Prometheus text exposition, as
//! Prometheus's own `promtool check metrics` parses and lints it (exit 1 is
//! a parse error, 3 a lint problem such as a counter without `_total` or a
//! family without HELP), taken from a live mesh carrying traffic so that
//! association, path and uplink labels are all present.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use transitloom_testbed::netns::REQUIRE_ENV;
use transitloom_testbed::{Binaries, LoopbackPair};

fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_owned()
}

/// Runs `promtool check metrics` on `text`; its complaints on failure.
fn promtool(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn every_metrics_endpoint_passes_promtool() {
    if Command::new("promtool").arg("--version").output().is_err() {
        let why = "promtool (Debian package `prometheus`) is not installed";
        if std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1") {
            panic!("{REQUIRE_ENV}=1 but {why}");
        }
        eprintln!("\n*** SKIPPED every_metrics_endpoint_passes_promtool: {why}\n");
        return;
    }
    // promtool itself must refuse what is wrong, or its silence means nothing.
    assert!(promtool("foo{a=\"b\" 1\n").is_err());
    assert!(promtool("# TYPE foo counter\nfoo 1\n").is_err());

    let tmp = tempfile::tempdir().unwrap();
    let LoopbackPair {
        mesh,
        services,
        coordinator_status,
    } = LoopbackPair::start(tmp.path(), Binaries::for_tests().unwrap(), 23_000).unwrap();
    let statuses: Vec<SocketAddr> = ["alpha", "beta"]
        .iter()
        .map(|n| mesh.status_listen(n).unwrap())
        .collect();
    let ingress = mesh.ingress("alpha", "beta/wg0").unwrap();
    services[1]
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    for _ in 0..20 {
        services[0].send_to(&[7u8; 300], ingress).unwrap();
        services[1].recv_from(&mut [0u8; 512]).unwrap();
    }

    for (name, at) in [
        ("alpha", statuses[0]),
        ("beta", statuses[1]),
        ("coordinator", coordinator_status),
    ] {
        let text = get(at, "/metrics");
        if let Err(complaints) = promtool(&text) {
            panic!("{name}'s /metrics fails promtool:\n{complaints}\n---\n{text}");
        }
        if name != "coordinator" {
            for family in [
                "transitloom_association_up{",
                "transitloom_path_rtt_seconds{",
                "transitloom_path_weight{",
                "transitloom_path_carrying{",
                "transitloom_path_delivery_bytes_per_second{",
                "transitloom_association_path_events_total{",
                "transitloom_uplink_tx_bytes_total{",
            ] {
                assert!(text.contains(family), "{name}: no {family}\n{text}");
            }
            assert!(text.contains("kind=\"direct-intranet\""), "{text}");
        }
    }
}
