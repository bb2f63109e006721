use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use transitloom_proto_core::control::msg::RejectCode;
use transitloom_proto_core::node::{Credentials, Node, NodeEvent, SessionState};
use transitloom_proto_core::pki::{self, CertTerms};

use super::report::{node_status, Standing};
use super::setup::refuse_unsupported;
use super::uplink_watch::DISABLED;
use super::*;
use crate::config::NodeConfig;

const NOW: i64 = 1_760_000_000;

fn terms(name: &str, serial: u8) -> CertTerms<'_> {
    CertTerms {
        name,
        not_before_unix_s: NOW - 3_600,
        validity_days: 30,
        serial: [serial; 16],
    }
}

/// A root and a coordinator intermediate with its key.
struct TestPki {
    root: Vec<u8>,
    intermediate: Vec<u8>,
    intermediate_key: Vec<u8>,
}

fn test_pki() -> TestPki {
    let root_key = pki::ed25519_pkcs8_from_seed(&[1; 32]);
    let inter_key = pki::ed25519_pkcs8_from_seed(&[2; 32]);
    let root = pki::self_signed_root(&root_key, &terms("transitloom root", 1)).unwrap();
    let public = pki::Ed25519PublicKey(
        pki::ed25519_key_pair(&inter_key)
            .unwrap()
            .public_key_raw()
            .try_into()
            .unwrap(),
    );
    let intermediate =
        pki::sign_coordinator_intermediate(&root, &root_key, &public, &terms("hub", 2)).unwrap();
    TestPki {
        root,
        intermediate,
        intermediate_key: inter_key,
    }
}

fn write_config(dir: &Path, extra: &str, uplink: &str) -> NodeConfig {
    let pki = test_pki();
    std::fs::write(
        dir.join("root.crt"),
        pem::encode(&pem::Pem::new("CERTIFICATE", pki.root)),
    )
    .unwrap();
    let text = format!(
        r#"
name = "alpha"
data_dir = "state"
coordinators = ["127.0.0.1:9"]
root_ca = "root.crt"
{extra}

[[uplink]]
name = "wan"
{uplink}

[[service]]
name = "wg0"
target = "127.0.0.1:51820"
ingress_range = "127.0.0.1:21000-21999"

[[association]]
service = "wg0"
peer = "beta/wg0"

[[association]]
service = "wg0"
peer = "gamma/wg0"
ingress = "127.0.0.1:21007"
"#
    );
    let file = dir.join("node.toml");
    std::fs::write(&file, text).unwrap();
    NodeConfig::load(&file).unwrap()
}

#[test]
fn admission_follows_the_certificate_the_session_and_refusals() {
    let mut standing = Standing::new(false);
    assert_eq!(standing.admission(SessionState::Connecting), "enrolling");
    standing.on_event(&NodeEvent::Enrolled { chain: Vec::new() });
    assert_eq!(standing.admission(SessionState::Backoff), "backoff");
    standing.on_event(&NodeEvent::Refused {
        code: RejectCode::Pending,
        reason: String::new(),
    });
    assert_eq!(standing.admission(SessionState::Backoff), "pending");
    standing.on_event(&NodeEvent::Session(SessionState::Live));
    assert_eq!(standing.admission(SessionState::Live), "admitted");
    assert_eq!(standing.admission(SessionState::Connecting), "connecting");
    standing.on_event(&NodeEvent::Revoked);
    assert_eq!(standing.admission(SessionState::Backoff), "revoked");
    assert_eq!(
        Standing::new(true).admission(SessionState::Revoked),
        "revoked"
    );
}

#[test]
fn settings_this_build_cannot_honour_are_refused_with_their_key() {
    let dir = tempfile::tempdir().unwrap();
    // Relaying for other nodes is honoured now (a node relay).
    let relaying = write_config(dir.path(), "", "bind = \"127.0.0.1\"\n[relay]\ndata = true");
    assert!(relaying.relay.data);
    refuse_unsupported(&relaying).unwrap();
    let config = write_config(dir.path(), "", "bind = \"127.0.0.1\"");
    refuse_unsupported(&config).unwrap();
    // The scheduler honours backup and metered uplinks.
    let policies = write_config(
        dir.path(),
        "",
        "bind = \"127.0.0.1\"\nmetered = true\n[[uplink]]\nname = \"lte\"\nbind = \"127.0.0.1\"\npriority = \"backup\"",
    );
    refuse_unsupported(&policies).unwrap();
    let mut segmented = config.clone();
    segmented.associations[1].mode = crate::config::Mode::Segmented;
    assert_eq!(
        refuse_unsupported(&segmented).unwrap_err().key,
        "association[1].mode"
    );
    let mut mixed = config;
    mixed.coordinators.push("[::1]:9".parse().unwrap());
    assert_eq!(refuse_unsupported(&mixed).unwrap_err().key, "coordinators");
}

#[test]
fn the_key_is_made_once_private_and_a_chain_must_match_it_and_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let key = identity::load_or_create_key(dir.path()).unwrap();
    let file = dir.path().join(KEY_FILE);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(identity::load_or_create_key(dir.path()).unwrap(), key);
    assert_eq!(std::fs::read(&file).unwrap(), bytes, "never rewritten");
    assert!(identity::load_chain(dir.path(), &key, "alpha")
        .unwrap()
        .is_none());

    let pki = test_pki();
    let csr = pki::node_csr(&key).unwrap();
    let leaf = pki::sign_node_csr(
        &pki.intermediate,
        &pki.intermediate_key,
        &csr,
        "alpha",
        NOW,
        30,
        [9; 16],
    )
    .unwrap();
    let chain = [leaf.clone(), pki.intermediate.clone()];
    identity::save_chain(dir.path(), &chain).unwrap();
    assert_eq!(
        identity::load_chain(dir.path(), &key, "alpha").unwrap(),
        Some(chain.to_vec())
    );
    let err = identity::load_chain(dir.path(), &key, "beta").unwrap_err();
    assert!(
        err.to_string().contains("issued to node \"alpha\""),
        "{err}"
    );
    assert_eq!(err.exit_code(), 2);
    let other = pki::ed25519_pkcs8_from_seed(&[5; 32]);
    let err = identity::load_chain(dir.path(), &other, "alpha").unwrap_err();
    assert!(err.to_string().contains("not for the key"), "{err}");

    // A certificate without its key is refused rather than replaced.
    std::fs::remove_file(&file).unwrap();
    let err = identity::load_or_create_key(dir.path()).unwrap_err();
    assert!(err.to_string().contains("node.crt is there"), "{err}");
}

#[test]
fn a_renewed_chain_replaces_the_old_one_and_the_key_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let key = identity::load_or_create_key(dir.path()).unwrap();
    let key_bytes = std::fs::read(dir.path().join(KEY_FILE)).unwrap();
    let pki = test_pki();
    let csr = pki::node_csr(&key).unwrap();
    let sign = |start, serial| {
        let leaf = pki::sign_node_csr_for(
            &pki.intermediate,
            &pki.intermediate_key,
            &csr,
            "alpha",
            start,
            600,
            [serial; 16],
        )
        .unwrap();
        vec![leaf, pki.intermediate.clone()]
    };
    identity::save_chain(dir.path(), &sign(NOW, 1)).unwrap();
    let renewed = sign(NOW + 400, 2);
    identity::save_chain(dir.path(), &renewed).unwrap();
    assert_eq!(
        identity::load_chain(dir.path(), &key, "alpha").unwrap(),
        Some(renewed)
    );
    assert_eq!(std::fs::read(dir.path().join(KEY_FILE)).unwrap(), key_bytes);
    // Nothing but the pair is left behind (the write went through a
    // temporary file renamed into place).
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [CERT_FILE, KEY_FILE]);
}

#[test]
fn a_loose_key_file_is_tightened() {
    let dir = tempfile::tempdir().unwrap();
    identity::load_or_create_key(dir.path()).unwrap();
    let file = dir.path().join(KEY_FILE);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    identity::load_or_create_key(dir.path()).unwrap();
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn without_a_certificate_or_join_token_the_node_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "", "bind = \"127.0.0.1\"");
    std::fs::create_dir_all(&config.data_dir).unwrap();
    let err = identity::credentials(&config).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(err.to_string().contains(": join_token: "), "{err}");

    let config = write_config(
        dir.path(),
        "join_token = \"tlj1-x\"",
        "bind = \"127.0.0.1\"",
    );
    let (credentials, enrolled) = identity::credentials(&config).unwrap();
    assert!(!enrolled);
    assert!(
        matches!(credentials, Credentials::Enroll { join_token, .. } if join_token == "tlj1-x")
    );
}

#[test]
fn status_lists_every_configured_association_while_it_waits() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "join_token = \"tlj1-x\"\ncoordinator_name = \"hub\"",
        "interface = \"lo\"",
    );
    let setup = Setup::prepare(&dir.path().join("node.toml")).unwrap();
    assert_eq!(setup.uplinks[0].bind.to_string(), "127.0.0.1");
    assert_eq!(setup.ingress[1].to_string(), "127.0.0.1:21007");
    let root = identity::read_root(&setup.config).unwrap();
    let (credentials, enrolled) = identity::credentials(&setup.config).unwrap();
    let config = node_config(&setup, root, credentials).unwrap();
    assert_eq!(config.coordinator_name, "hub");
    assert_eq!(config.control_bind.to_string(), "0.0.0.0:0");
    assert_eq!(
        config.services[0].peers.keys().collect::<Vec<_>>(),
        ["beta/wg0", "gamma/wg0"]
    );
    let node = Node::new(config).unwrap();
    let status = node_status(&node, &setup, &Standing::new(enrolled), &setup.watch, 0);
    assert_eq!(status.node.admission, "enrolling");
    assert_eq!(status.node.nat, "unknown");
    assert_eq!(status.node.token_expires_in_s, None);
    assert_eq!(status.uplinks[0].name, "wan");
    assert_eq!(status.uplinks[0].state, "up");
    assert_eq!(status.uplinks[0].address.as_deref(), Some("127.0.0.1"));
    assert_eq!(status.uplinks[0].interface.as_deref(), Some("lo"));
    assert_eq!(status.uplinks[0].priority, "primary");
    assert_eq!(status.uplinks[0].down_reason, None);
    assert_eq!(status.associations.len(), 2);
    for (a, ingress) in status.associations.iter().zip(&setup.ingress) {
        assert_eq!(a.state, "waiting");
        assert_eq!(a.ingress, Some(ingress.to_string()));
        assert_eq!(a.id, None);
    }
    assert!(status
        .metrics()
        .contains("transitloom_node_admitted{node=\"alpha\"} 0"));
    let mode = std::fs::metadata(&setup.config.data_dir)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn the_node_starts_with_the_settings_of_its_file() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "join_token = \"tlj1-x\"\nreorder_bound = 256",
        "interface = \"lo\"",
    );
    let setup = Setup::prepare(&dir.path().join("node.toml")).unwrap();
    let root = identity::read_root(&setup.config).unwrap();
    let (credentials, _) = identity::credentials(&setup.config).unwrap();
    let node = start_node(&setup, root, credentials).unwrap();
    // Not the default (512): the file's key reached the data plane.
    assert_eq!(node.data_plane().reorder_bound(), 256);
}

#[test]
fn a_root_that_is_not_a_certificate_is_refused_on_root_ca() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "", "bind = \"127.0.0.1\"");
    std::fs::write(&config.root_ca, "not pem").unwrap();
    let err = identity::read_root(&config).unwrap_err();
    assert_eq!(err.key, "root_ca");
}

#[test]
fn a_reload_plan_refuses_restart_keys_and_keeps_service_ids_and_ports() {
    let dir = tempfile::tempdir().unwrap();
    let uplink = "bind = \"127.0.0.1\"";
    write_config(dir.path(), "join_token = \"tlj1-x\"", uplink);
    let setup = Setup::prepare(&dir.path().join("node.toml")).unwrap();
    let running = service_specs(&setup.config, &setup.ingress, |_| ServiceId(7));
    let cases = [
        ("", uplink, "coordinators"),
        (
            "status_listen = \"127.0.0.1:7481\"",
            uplink,
            "status_listen",
        ),
        ("coordinator_name = \"hub2\"", uplink, "coordinator_name"),
        ("advertise_private = true", uplink, "advertise_private"),
        (
            "tcp_fallback_after_ms = 1000",
            uplink,
            "tcp_fallback_after_ms",
        ),
        ("quic_retry_s = 30", uplink, "quic_retry_s"),
        ("reorder_bound = 256", uplink, "reorder_bound"),
        ("", "interface = \"lo\"", "uplink[0]"),
        ("", "bind = \"127.0.0.1\"\nmetered = true", "uplink[0]"),
        (
            "",
            "bind = \"127.0.0.1\"\n[relay]\nidle_timeout_s = 60",
            "relay.idle_timeout_s",
        ),
        (
            "",
            "bind = \"127.0.0.1\"\n[relay]\nquota_per_node = 2",
            "relay.quota_per_node",
        ),
        (
            "",
            "bind = \"127.0.0.1\"\n[relay]\nmax_allocations = 99",
            "relay.max_allocations",
        ),
        (
            "",
            "bind = \"127.0.0.1\"\n[relay]\nrate_limit_mbps = 10",
            "relay.rate_limit_mbps",
        ),
    ];
    for (extra, uplink, key) in cases {
        let extra = format!("join_token = \"tlj1-x\"\n{extra}");
        write_config(dir.path(), &extra, uplink);
        if key == "coordinators" {
            let file = dir.path().join("node.toml");
            let text = std::fs::read_to_string(&file).unwrap();
            std::fs::write(&file, text.replacen("127.0.0.1:9\"", "127.0.0.1:10\"", 1)).unwrap();
        }
        let err = reload::plan(&setup, &running).expect_err(key);
        assert_eq!(err.key, key, "{err}");
    }
    // The join token may go once enrolled; a new service gets a fresh id.
    write_config(dir.path(), "", uplink);
    let file = dir.path().join("node.toml");
    let text = std::fs::read_to_string(&file).unwrap()
        + "\n[[service]]\nname = \"wg1\"\ntarget = \"127.0.0.1:51821\"\ningress_range = \"127.0.0.1:23000-23009\"\n";
    std::fs::write(&file, text).unwrap();
    let plan = reload::plan(&setup, &running).unwrap();
    assert_eq!(plan.ingress, setup.ingress, "kept ports");
    let ids: Vec<(String, u32)> = plan
        .services
        .iter()
        .map(|s| (s.name.clone(), s.id.0))
        .collect();
    assert_eq!(ids, [("wg0".to_owned(), 7), ("wg1".to_owned(), 8)]);

    // An uplink's `enabled` reloads; it starts the node down when false.
    write_config(
        dir.path(),
        "",
        &format!("{uplink}\nenabled = false\n\n[[uplink]]\nname = \"lo2\"\nbind = \"127.0.0.1\""),
    );
    let err = reload::plan(&setup, &running).expect_err("a second uplink");
    assert_eq!(err.key, "uplink");
    let two = "bind = \"127.0.0.1\"\n\n[[uplink]]\nname = \"lo2\"\nbind = \"127.0.0.1\"";
    write_config(dir.path(), "join_token = \"tlj1-x\"", two);
    let setup = Setup::prepare(&file).unwrap();
    write_config(dir.path(), "", &format!("{two}\nenabled = false"));
    let plan = reload::plan(&setup, &running).unwrap();
    assert!(!plan.config.uplinks[1].enabled);
    let setup = Setup::prepare(&file).unwrap();
    let reach: Vec<&UplinkReach> = setup.uplink_reach().collect();
    assert_eq!(reach[1], &UplinkReach::Down(DISABLED.to_owned()));
}

#[test]
fn an_uplink_on_a_missing_interface_starts_down_unless_no_uplink_is_usable() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("node.toml");
    // Beside a usable uplink, a missing interface starts down.
    write_config(
        dir.path(),
        "join_token = \"tlj1-x\"",
        "bind = \"127.0.0.1\"\n\n[[uplink]]\nname = \"lte\"\ninterface = \"tl-no-such0\"\ncapacity_mbps = 20",
    );
    let setup = Setup::prepare(&file).unwrap();
    let reach: Vec<&UplinkReach> = setup.uplink_reach().collect();
    assert_eq!(reach[0], &UplinkReach::Up("127.0.0.1".parse().unwrap()));
    assert!(
        matches!(reach[1], UplinkReach::Down(why) if why.contains("no interface named \"tl-no-such0\"")),
        "{reach:?}"
    );
    assert!(setup.uplinks[1].bind.is_unspecified());
    let root = identity::read_root(&setup.config).unwrap();
    let (credentials, enrolled) = identity::credentials(&setup.config).unwrap();
    let node = start_node(&setup, root, credentials).unwrap();
    let status = node_status(&node, &setup, &Standing::new(enrolled), &setup.watch, 0);
    let lte = &status.uplinks[1];
    assert_eq!((lte.name.as_str(), lte.state.as_str()), ("lte", "down"));
    assert_eq!(lte.address, None);
    assert_eq!(lte.capacity_mbps, Some(20.0));
    assert!(lte.down_reason.as_deref().unwrap().contains("tl-no-such0"));

    // Alone, it is refused as the typo it most likely is (exit 2).
    write_config(
        dir.path(),
        "join_token = \"tlj1-x\"",
        "interface = \"tl-no-such0\"",
    );
    let err = Setup::prepare(&file).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    let text = err.to_string();
    assert!(
        text.contains("node.toml: uplink[0].interface: no interface named \"tl-no-such0\" on this host, and no other uplink is usable"),
        "{text}"
    );

    // A bind address this host does not have is refused, named.
    write_config(
        dir.path(),
        "join_token = \"tlj1-x\"",
        "bind = \"127.0.0.1\"\n\n[[uplink]]\nname = \"lte\"\nbind = \"192.0.2.77\"",
    );
    let err = Setup::prepare(&file).unwrap_err();
    assert_eq!(err.exit_code(), 2);
    assert!(
        err.to_string().contains("uplink[1].bind: 192.0.2.77"),
        "{err}"
    );
}
