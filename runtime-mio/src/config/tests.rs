use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;

/// A fresh folder with a `root.crt` in it (content is not read here).
fn scratch() -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tl-config-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("root.crt"), "placeholder").unwrap();
    dir
}

const GOOD: &str = r#"
name = "alpha"
data_dir = "state"
coordinators = ["203.0.113.5:7443"]
root_ca = "root.crt"
join_token = "tlj1-alpha-00112233445566778899aabbccddeeff"
status_listen = "127.0.0.1:7480"
advertise_private = true

[[uplink]]
name = "fiber"
bind = "192.0.2.10"
metered = false
priority = "primary"
capacity_mbps = 500

[[uplink]]
name = "lte"
interface = "wwan0"
metered = true
priority = "backup"

[relay]
data = false

[[service]]
name = "wg0"
target = "127.0.0.1:51820"
ingress_range = "127.0.0.1:41000-41999"

[[association]]
service = "wg0"
peer = "beta/wg0"
ingress = "127.0.0.1:41002"
relay = "allow"
mode = "whole-packet"

[[association]]
service = "wg0"
peer = "gamma/wg0"
"#;

fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
    let dir = scratch();
    NodeConfig::parse(&dir.join("node.toml"), text)
}

#[test]
fn the_design_example_parses() {
    let config = parse(GOOD).unwrap();
    assert_eq!(config.name, "alpha");
    assert_eq!(config.coordinator_name, DEFAULT_COORDINATOR_NAME);
    assert!(config.data_dir.ends_with("state"));
    assert_eq!(config.uplinks.len(), 2);
    assert_eq!(
        config.uplinks[1].source,
        UplinkSource::Interface("wwan0".to_owned())
    );
    assert_eq!(config.uplinks[1].priority, Priority::Backup);
    assert_eq!(
        config.associations[0].ingress,
        Some("127.0.0.1:41002".parse().unwrap())
    );
    assert_eq!(config.associations[1].peer(), "gamma/wg0");
    assert_eq!(config.associations[1].relay, RelayPolicy::Allow);
    assert_eq!(config.associations[1].mode, Mode::WholePacket);
    assert!(
        config.uplinks.iter().all(|u| u.enabled),
        "enabled by default"
    );
    let config = parse(&mutate("metered = true", "metered = true\nenabled = false")).unwrap();
    assert!(config.uplinks[0].enabled && !config.uplinks[1].enabled);
}

#[test]
fn relay_binds_where_the_first_fixed_uplink_does_unless_told() {
    let config = parse(&mutate("[relay]\ndata = false", "[relay]\ndata = true")).unwrap();
    assert!(config.relay.data);
    let uplink: IpAddr = "192.0.2.10".parse().unwrap();
    assert_eq!(config.relay.addresses(uplink), (uplink, uplink));
    let config = parse(&mutate(
        "[relay]\ndata = false",
        "[relay]\ndata = true\nlisten_ip = \"0.0.0.0\"\nadvertise_ip = \"203.0.113.9\"\nport_range = \"40000-40099\"",
    ))
    .unwrap();
    let any: IpAddr = "0.0.0.0".parse().unwrap();
    let public: IpAddr = "203.0.113.9".parse().unwrap();
    assert_eq!(config.relay.addresses(uplink), (any, public));
    assert_eq!(
        config.relay.port_range,
        Some(relay::PortRange {
            low: 40_000,
            high: 40_099
        })
    );
    // With only interface uplinks there is no address to default to.
    let only_interfaces = mutate("bind = \"192.0.2.10\"", "interface = \"eth0\"")
        .replace("priority = \"backup\"", "priority = \"primary\"")
        .replace("[relay]\ndata = false", "[relay]\ndata = true");
    let err = parse(&only_interfaces).unwrap_err();
    assert_eq!(err.key, "relay.advertise_ip", "{err}");
}

#[test]
fn relay_limits_default_to_the_relay_machine_and_are_keys() {
    use std::time::Duration;
    use transitloom_proto_core::relay::RelayConfig;
    let defaults = RelayConfig::new(crate::clock::wall_clock_now(), 1);
    let config = parse(GOOD).unwrap();
    let mut applied = RelayConfig::new(crate::clock::wall_clock_now(), 1);
    applied.quota_per_node = 1;
    applied.rate_limit = None;
    config.relay.apply_limits(&mut applied);
    assert_eq!(applied.quota_per_node, defaults.quota_per_node);
    assert_eq!(applied.max_allocations, defaults.max_allocations);
    assert_eq!(applied.rate_limit, defaults.rate_limit);
    assert_eq!(applied.idle_timeout, defaults.idle_timeout);

    let config = parse(&mutate(
        "[relay]\ndata = false",
        "[relay]\nquota_per_node = 4\nmax_allocations = 64\nrate_limit_mbps = 50\nidle_timeout_s = 120",
    ))
    .unwrap();
    config.relay.apply_limits(&mut applied);
    assert_eq!(applied.quota_per_node, 4);
    assert_eq!(applied.max_allocations, 64);
    assert_eq!(applied.rate_limit.map(|r| r.bytes_per_s), Some(6_250_000));
    assert_eq!(applied.idle_timeout, Duration::from_secs(120));

    // One port per allocation: a narrow range lowers the default table.
    let config = parse(&mutate(
        "[relay]\ndata = false",
        "[relay]\nport_range = \"40000-40009\"",
    ))
    .unwrap();
    assert_eq!(config.relay.max_allocations, 10);
    assert_eq!(config.relay.quota_per_node, 10);
}

/// Replaces the first occurrence of `from` in the good config.
fn mutate(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from:?} is not in the good config");
    GOOD.replacen(from, to, 1)
}

#[test]
fn every_bad_config_names_the_key_and_the_reason() {
    let cases: Vec<(String, &str, &str)> = vec![
        (mutate("advertise_private = true", "advertise_private = true\ncolour = \"blue\""), "colour", "unknown key"),
        (mutate("metered = false", "metered = false\nspeed = 3"), "uplink[0].speed", "unknown key"),
        (mutate("name = \"alpha\"", "name = \"Alpha\""), "name", "names use only"),
        (mutate("name = \"alpha\"", ""), "name", "missing"),
        (mutate("data_dir = \"state\"", "data_dir = \"\""), "data_dir", "must not be empty"),
        (mutate("coordinators = [\"203.0.113.5:7443\"]", "coordinators = []"), "coordinators", "at least one"),
        (mutate("203.0.113.5:7443", "203.0.113.5"), "coordinators[0]", "not an address with a port"),
        (mutate("root_ca = \"root.crt\"", "root_ca = \"missing.crt\""), "root_ca", "does not exist"),
        (mutate("root_ca = \"root.crt\"", "root_ca = \"root.crt\"\ncoordinator_name = \"hub name\""), "coordinator_name", "not a DNS name"),
        (mutate("root_ca = \"root.crt\"", "root_ca = \"root.crt\"\ncoordinator_name = 7"), "coordinator_name", "expected"),
        (mutate("status_listen = \"127.0.0.1:7480\"", "status_listen = \"localhost\""), "status_listen", "not an address"),
        (mutate("status_listen = \"127.0.0.1:7480\"", "status_listen = \"127.0.0.1:0\""), "status_listen", "port 0"),
        (mutate("advertise_private = true", "advertise_private = \"yes\""), "advertise_private", "expected true or false"),
        (mutate("bind = \"192.0.2.10\"", "bind = \"192.0.2.300\""), "uplink[0].bind", "not an IP address"),
        (mutate("bind = \"192.0.2.10\"", "bind = \"0.0.0.0\""), "uplink[0].bind", "cannot be a source address"),
        (mutate("bind = \"192.0.2.10\"", "bind = \"192.0.2.10\"\ninterface = \"eth0\""), "uplink[0]", "not both"),
        (mutate("bind = \"192.0.2.10\"", ""), "uplink[0]", "needs bind"),
        (mutate("name = \"lte\"", "name = \"fiber\""), "uplink[1].name", "also the name of uplink[0]"),
        (mutate("priority = \"primary\"", "priority = \"main\""), "uplink[0].priority", "not one of"),
        (mutate("priority = \"primary\"", "priority = \"backup\""), "uplink", "every uplink is a backup"),
        (mutate("capacity_mbps = 500", "capacity_mbps = -5"), "uplink[0].capacity_mbps", "not a positive rate"),
        (mutate("capacity_mbps = 500", "capacity_mbps = 500\nenabled = 0"), "uplink[0].enabled", "expected true or false"),
        (
            mutate("capacity_mbps = 500", "capacity_mbps = 500\nenabled = false").replacen("metered = true", "metered = true\nenabled = false", 1),
            "uplink",
            "every uplink is disabled",
        ),
        (mutate("interface = \"wwan0\"", "interface = \"an-interface-name-too-long\""), "uplink[1].interface", "not an interface name"),
        (mutate("target = \"127.0.0.1:51820\"", "target = \"127.0.0.1:0\""), "service[0].target", "port 0"),
        (mutate("127.0.0.1:41000-41999", "192.0.2.1:41000-41999"), "service[0].ingress_range", "not a loopback"),
        (mutate("127.0.0.1:41000-41999", "127.0.0.1:41999-41000"), "service[0].ingress_range", "ascending"),
        (mutate("127.0.0.1:41000-41999", "41000-41999"), "service[0].ingress_range", "not a range"),
        (mutate("127.0.0.1:41000-41999", "127.0.0.1:51000-52000"), "service[0].target", "inside its own ingress range"),
        (
            mutate("[[association]]", "[[service]]\nname = \"dns\"\ntarget = \"127.0.0.1:53\"\ningress_range = \"127.0.0.1:41500-42500\"\n\n[[association]]"),
            "service[1].ingress_range",
            "overlaps",
        ),
        (mutate("service = \"wg0\"\npeer = \"beta/wg0\"", "service = \"wg1\"\npeer = \"beta/wg0\""), "association[0].service", "no [[service]]"),
        (mutate("peer = \"beta/wg0\"", "peer = \"beta\""), "association[0].peer", "not node/service"),
        (mutate("peer = \"gamma/wg0\"", "peer = \"beta/wg0\""), "association[1]", "repeats association[0]"),
        (mutate("ingress = \"127.0.0.1:41002\"", "ingress = \"192.0.2.1:41002\""), "association[0].ingress", "not a loopback"),
        (mutate("ingress = \"127.0.0.1:41002\"", "ingress = \"127.0.0.1:51820\""), "association[0].ingress", "own target"),
        (mutate("peer = \"gamma/wg0\"", "peer = \"gamma/wg0\"\ningress = \"127.0.0.1:41002\""), "association[1].ingress", "also the ingress"),
        (mutate("relay = \"allow\"", "relay = \"sometimes\""), "association[0].relay", "not one of"),
        (mutate("mode = \"whole-packet\"", "mode = \"striped\""), "association[0].mode", "not one of"),
        (mutate("[relay]\ndata = false", "[relay]\ndata = false\nports = 3"), "relay.ports", "unknown key"),
        (mutate("[relay]\ndata = false", "[relay]\ndata = true\nlisten_ip = \"0.0.0.0\""), "relay.advertise_ip", "nodes cannot send there"),
        (mutate("[relay]\ndata = false", "[relay]\ndata = true\nadvertise_ip = \"224.0.0.1\""), "relay.advertise_ip", "unicast"),
        (mutate("[relay]\ndata = false", "[relay]\nport_range = \"41000-40000\""), "relay.port_range", "ascending"),
        (mutate("[relay]\ndata = false", "[relay]\nlisten_ip = \"fiber\""), "relay.listen_ip", ""),
        (mutate("[relay]\ndata = false", "[relay]\nquota_per_node = 0"), "relay.quota_per_node", "outside 1 to 65535"),
        (mutate("[relay]\ndata = false", "[relay]\nquota_per_node = 20\nmax_allocations = 10"), "relay.quota_per_node", "more than max_allocations"),
        (mutate("[relay]\ndata = false", "[relay]\nmax_allocations = 0"), "relay.max_allocations", "outside 1 to 65535"),
        (mutate("[relay]\ndata = false", "[relay]\nmax_allocations = 70000"), "relay.max_allocations", "outside 1 to 65535"),
        (mutate("[relay]\ndata = false", "[relay]\nmax_allocations = 200\nport_range = \"40000-40099\""), "relay.max_allocations", "port_range holds 100"),
        (mutate("[relay]\ndata = false", "[relay]\nmax_allocations = \"many\""), "relay.max_allocations", "a whole number"),
        (mutate("[relay]\ndata = false", "[relay]\nrate_limit_mbps = 0"), "relay.rate_limit_mbps", "outside 1 to 100000"),
        (mutate("[relay]\ndata = false", "[relay]\nrate_limit_mbps = 1.5"), "relay.rate_limit_mbps", "a whole number"),
        (mutate("[relay]\ndata = false", "[relay]\nidle_timeout_s = 10"), "relay.idle_timeout_s", "outside 20 to 3600"),
        (mutate("[relay]\ndata = false", "[relay]\nidle_timeout_s = 86400"), "relay.idle_timeout_s", "outside 20 to 3600"),
        (mutate("name = \"alpha\"", "name = \"alpha"), "(syntax)", "TOML parse error"),
        (format!("{GOOD}\n[nat]\npunch_pace = 5\n"), "nat.punch_pace", "unknown key"),
        (format!("{GOOD}\n[nat]\npunch_pace_ms = 5000\n"), "nat.punch_pace_ms", "outside 0 to 1000"),
        (format!("{GOOD}\n[nat]\npunch_max_probes_per_s = 0\n"), "nat.punch_max_probes_per_s", "outside 1 to 1000"),
        (format!("{GOOD}\n[nat]\nbirthday = \"yes\"\n"), "nat.birthday", "expected true or false"),
        (format!("{GOOD}\n[nat]\nbirthday = true\nbirthday_sockets = 5000\n"), "nat.birthday_sockets", "outside 1 to 1024"),
        (format!("{GOOD}\n[nat]\nbirthday = true\nbirthday_probes = 0\n"), "nat.birthday_probes", "outside 1 to 16384"),
        (format!("{GOOD}\n[nat]\nbirthday = true\nbirthday_rate = 100000\n"), "nat.birthday_rate", "outside 1 to 1000"),
        (format!("{GOOD}\n[nat]\nbirthday_probes = 100\n"), "nat.birthday_probes", "no effect without birthday = true"),
    ];
    assert!(cases.len() >= 20);
    for (text, key, reason) in cases {
        let err = parse(&text).expect_err(&format!("accepted a config with a bad {key}"));
        assert_eq!(err.key, key, "{err}");
        assert!(err.reason.contains(reason), "{key}: {err}");
        assert!(
            err.to_string()
                .starts_with(&format!("{}: {key}: ", err.file.display())),
            "{err}"
        );
    }
}

#[test]
fn nat_punch_pacing_and_birthday_probing_are_read_with_defaults() {
    use transitloom_proto_core::dataplane::{BirthdayConfig, PunchConfig};
    assert_eq!(parse(GOOD).unwrap().punch, PunchConfig::default());
    let config = parse(&format!(
        "{GOOD}\n[nat]\npunch_pace_ms = 2\npunch_max_probes_per_s = 50\nbirthday = true\nbirthday_probes = 300\n"
    ))
    .unwrap();
    assert_eq!(config.punch.pace, std::time::Duration::from_millis(2));
    assert_eq!(config.punch.max_probes_per_s, 50);
    assert_eq!(
        config.punch.birthday,
        Some(BirthdayConfig {
            probes: 300,
            ..BirthdayConfig::default()
        })
    );
    let off = parse(&format!("{GOOD}\n[nat]\nbirthday = false\n")).unwrap();
    assert_eq!(off.punch.birthday, None);
}

#[test]
fn the_coordinator_name_is_read() {
    let text = mutate(
        "root_ca = \"root.crt\"",
        "root_ca = \"root.crt\"\ncoordinator_name = \"hub.coordinator.transitloom\"",
    );
    assert_eq!(
        parse(&text).unwrap().coordinator_name,
        "hub.coordinator.transitloom"
    );
}

#[test]
fn coordinators_of_a_cluster_carry_their_own_names() {
    let text = mutate(
        r#"coordinators = ["203.0.113.5:7443"]"#,
        r#"coordinators = ["hub-a@203.0.113.5:7443", "hub-b@203.0.113.6:7443", "203.0.113.7:7443"]"#,
    );
    let config = parse(&text).unwrap();
    assert_eq!(config.coordinators.len(), 3);
    let names: Vec<(String, &str)> = config
        .coordinator_names
        .iter()
        .map(|(a, n)| (a.to_string(), n.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("203.0.113.5:7443".to_owned(), "hub-a"),
            ("203.0.113.6:7443".to_owned(), "hub-b")
        ]
    );
    for (bad, reason) in [
        (r#"["Hub A@203.0.113.5:7443"]"#, "not a coordinator name"),
        (
            r#"["a@203.0.113.5:7443", "b@203.0.113.5:7443"]"#,
            "listed twice",
        ),
        (r#"["a@203.0.113.5"]"#, "not an address with a port"),
    ] {
        let text = mutate(
            r#"coordinators = ["203.0.113.5:7443"]"#,
            &format!("coordinators = {bad}"),
        );
        let err = parse(&text).unwrap_err();
        assert!(err.key.starts_with("coordinators["), "{bad}: {err}");
        assert!(err.reason.contains(reason), "{bad}: {err}");
    }
}

#[test]
fn a_missing_file_names_itself() {
    let err = NodeConfig::load(std::path::Path::new("/nonexistent/node.toml")).unwrap_err();
    assert_eq!(
        err.to_string().split(": ").take(2).collect::<Vec<_>>(),
        ["/nonexistent/node.toml", "(file)"]
    );
}

#[test]
fn ingress_ports_are_derived_once_and_kept_across_restarts() {
    let config = parse(GOOD).unwrap();
    let dir = scratch();
    let mut table = IngressTable::load(&dir).unwrap();
    let first = table.assign(&config).unwrap();
    assert_eq!(
        first[0],
        "127.0.0.1:41002".parse().unwrap(),
        "explicit wins"
    );
    assert!(config.services[0].ingress_range.contains(first[1]));
    table.save(&dir).unwrap();

    // A restart reads the same assignment back.
    let mut again = IngressTable::load(&dir).unwrap();
    assert_eq!(again.assign(&config).unwrap(), first);

    // Adding an association does not move the existing ones.
    let more = GOOD.to_owned() + "\n[[association]]\nservice = \"wg0\"\npeer = \"delta/wg0\"\n";
    let bigger = parse(&more).unwrap();
    let assigned = again.assign(&bigger).unwrap();
    assert_eq!(&assigned[..2], &first[..]);
    assert!(!first.contains(&assigned[2]));
}

#[test]
fn a_full_range_is_refused_with_the_service_named() {
    let text = mutate("127.0.0.1:41000-41999", "127.0.0.1:41002-41002");
    let config = parse(&text).unwrap();
    let err = IngressTable::default().assign(&config).unwrap_err();
    assert_eq!(err.key, "service[0].ingress_range");
    assert!(err.reason.contains("no free port"), "{err}");
}

#[test]
fn a_corrupt_ingress_file_is_refused_with_its_path() {
    let dir = scratch();
    std::fs::write(dir.join(INGRESS_FILE_NAME), "[[ingress]]\nservice = 3\n").unwrap();
    let err = IngressTable::load(&dir).unwrap_err();
    assert!(err.file.ends_with(INGRESS_FILE_NAME));
    assert_eq!(err.key, "ingress[0].service");
}

const INGRESS_FILE_NAME: &str = ingress::INGRESS_FILE;

#[test]
fn the_tcp_fallback_timings_are_read_with_defaults_and_bounds() {
    use std::time::Duration;
    use transitloom_proto_core::node::TcpFallback;
    assert_eq!(parse(GOOD).unwrap().tcp_fallback, TcpFallback::default());
    let set = |lines: &str| {
        mutate(
            "root_ca = \"root.crt\"",
            &format!("root_ca = \"root.crt\"\n{lines}"),
        )
    };
    let config = parse(&set("tcp_fallback_after_ms = 1500\nquic_retry_s = 300")).unwrap();
    assert_eq!(config.tcp_fallback.quic_bound, Duration::from_millis(1_500));
    assert_eq!(config.tcp_fallback.quic_retry, Duration::from_secs(300));
    for (lines, key) in [
        ("tcp_fallback_after_ms = 50", "tcp_fallback_after_ms"),
        ("tcp_fallback_after_ms = 60001", "tcp_fallback_after_ms"),
        ("quic_retry_s = 4", "quic_retry_s"),
        ("quic_retry_s = \"60\"", "quic_retry_s"),
    ] {
        let err = parse(&set(lines)).unwrap_err();
        assert_eq!(err.key, key, "{lines}: {err}");
    }
}

#[test]
fn the_reorder_bound_is_read_with_its_default_and_bounds() {
    use transitloom_proto_core::dataplane::DEFAULT_REORDER_BOUND;
    assert_eq!(parse(GOOD).unwrap().reorder_bound, DEFAULT_REORDER_BOUND);
    let set = |line: &str| {
        mutate(
            "root_ca = \"root.crt\"",
            &format!("root_ca = \"root.crt\"\n{line}"),
        )
    };
    assert_eq!(
        parse(&set("reorder_bound = 256")).unwrap().reorder_bound,
        256
    );
    assert_eq!(
        parse(&set("reorder_bound = 8128")).unwrap().reorder_bound,
        8_128
    );
    for line in [
        "reorder_bound = 0",
        "reorder_bound = 8129",
        "reorder_bound = \"512\"",
    ] {
        let err = parse(&set(line)).unwrap_err();
        assert_eq!(err.key, "reorder_bound", "{line}: {err}");
    }
}
