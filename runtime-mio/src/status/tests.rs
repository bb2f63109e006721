use super::*;

fn sample() -> NodeStatus {
    NodeStatus {
        node: NodeInfo {
            name: "alpha".to_owned(),
            admission: "admitted".to_owned(),
            token_expires_in_s: Some(540),
            control_transport: Some("tcp".to_owned()),
            cert_expires_in_s: Some(7_776_000),
            cert_renews_in_s: Some(5_184_000),
            nat: "endpoint-independent".to_owned(),
        },
        uplinks: vec![UplinkStatus {
            name: "fiber".to_owned(),
            state: "up".to_owned(),
            tx_bytes: 10,
            rx_bytes: 20,
            ..UplinkStatus::default()
        }],
        associations: vec![
            AssociationStatus {
                id: Some("7".to_owned()),
                service: "wg0".to_owned(),
                peer: "beta/wg0".to_owned(),
                ingress: Some("127.0.0.1:41002".to_owned()),
                state: "up".to_owned(),
                mode: "whole-packet".to_owned(),
                paths: vec![PathStatus {
                    id: "0".to_owned(),
                    kind: "direct-public".to_owned(),
                    uplink: "fiber".to_owned(),
                    remote: "198.51.100.7:40112".to_owned(),
                    state: "active".to_owned(),
                    rtt_ms: Some(12.5),
                    loss: 0.0,
                    weight: 1.0,
                    tx_bytes: 10,
                    rx_bytes: 20,
                    reason: "carrying".to_owned(),
                    why: "carrying: placed by earliest arrival".to_owned(),
                    tx_share: 1.0,
                    jitter_ms: Some(0.5),
                    fwd_delay_ms: Some(0.0),
                    delivery_mbps: 12.0,
                    plan_mbps: 20.0,
                    capacity_mbps: Some(18.5),
                    pings: 10,
                    pongs: 10,
                    last_heard_ms: Some(40),
                    ..PathStatus::default()
                }],
                dropped: Drops::default(),
                events: vec![PathEventStatus {
                    at_unix_ms: 1_760_000_000_000,
                    uplink: "fiber".to_owned(),
                    path: Some("0".to_owned()),
                    remote: Some("198.51.100.7:40112".to_owned()),
                    kind: "validated".to_owned(),
                    rtt_ms: Some(12.5),
                    detail: "validated (rtt 12.50 ms)".to_owned(),
                    ..PathEventStatus::default()
                }],
                events_recorded: 3,
                candidates: 9,
                pairs_tried: 10,
                pairs_answered: 1,
                birthday_probes: 0,
                birthday_sockets: 0,
                relay: Some(RelayLegStatus {
                    address: "203.0.113.5:40000".to_owned(),
                    allocation: 1,
                    leg: 0,
                    pinned: vec!["fiber".to_owned()],
                }),
            },
            AssociationStatus {
                id: None,
                service: "wg0".to_owned(),
                peer: "gamma/wg\"0".to_owned(),
                ingress: Some("127.0.0.1:41003".to_owned()),
                state: "waiting".to_owned(),
                mode: "whole-packet".to_owned(),
                ..AssociationStatus::default()
            },
        ],
        reload: ReloadStatus {
            applied: 2,
            refused: 1,
            last_result: Some("refused".to_owned()),
            last_unix_s: Some(1_760_000_000),
            last_detail: Some("node.toml: name: changed".to_owned()),
        },
        relay: Some(relay::RelayStatus {
            allocations: vec![relay::RelayAllocationStatus {
                id: 7,
                assoc: "assoc#9".to_owned(),
                local: Some("192.0.2.10:45000".to_owned()),
                ready: true,
                forwarded_bytes: [1_200, 800],
                forwarded_packets: [10, 8],
                dropped: 3,
            }],
            refused_allocations: 1,
            limits: relay::RelayLimits {
                quota_per_node: 16,
                max_allocations: 1_024,
                rate_limit_mbps: Some(1_000),
                idle_timeout_s: 30,
            },
            offer_refused: None,
        }),
    }
}

#[test]
fn a_relaying_node_shows_its_allocations_like_the_coordinator() {
    let status = sample();
    let json = serde_json::to_value(&status).unwrap();
    let alloc = &json["relay"]["allocations"][0];
    assert_eq!(alloc["assoc"], "assoc#9");
    assert_eq!(alloc["forwarded_bytes"][1], 800);
    assert_eq!(alloc["dropped"], 3);
    assert_eq!(json["relay"]["limits"]["max_allocations"], 1_024);
    assert_eq!(json["relay"]["limits"]["rate_limit_mbps"], 1_000);
    let text = status.metrics();
    for line in [
        "transitloom_relay_allocations_max{node=\"alpha\"} 1024",
        "transitloom_relay_allocations{node=\"alpha\",state=\"ready\"} 1",
        "transitloom_relay_forwarded_bytes_total{node=\"alpha\",assoc=\"assoc#9\",allocation=\"7\"} 2000",
        "transitloom_relay_dropped_total{node=\"alpha\",assoc=\"assoc#9\",allocation=\"7\"} 3",
        "transitloom_relay_refused_allocations_total{node=\"alpha\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
    }
    assert!(json["relay"].get("offer_refused").is_none());
    assert!(!text.contains("transitloom_relay_offer_refused"));
    let mut refused = status.clone();
    if let Some(relay) = refused.relay.as_mut() {
        relay.offer_refused = Some(relay::RelayOfferRefused {
            offered: "10.0.0.30".to_owned(),
            seen: "198.51.100.30".to_owned(),
        });
    }
    let json = serde_json::to_value(&refused).unwrap();
    assert_eq!(json["relay"]["offer_refused"]["seen"], "198.51.100.30");
    assert!(refused
        .metrics()
        .lines()
        .any(|l| l == "transitloom_relay_offer_refused{node=\"alpha\"} 1"));
    let without = NodeStatus {
        relay: None,
        ..status
    };
    assert!(!without.metrics().contains("transitloom_relay_allocations"));
    let json = serde_json::to_value(&without).unwrap();
    assert!(json.get("relay").is_none(), "absent unless relaying");
}

#[test]
fn a_relay_status_shows_the_limits_its_relay_applies() {
    use transitloom_proto_core::relay::{RateLimit, Relay, RelayConfig};
    let mut config = RelayConfig::new(crate::clock::wall_clock_now(), 1);
    config.quota_per_node = 3;
    config.max_allocations = 40;
    config.rate_limit = Some(RateLimit::new(250 * 125_000));
    config.idle_timeout = std::time::Duration::from_secs(90);
    let limits = relay::RelayStatus::of(&Relay::new(config)).limits;
    assert_eq!(
        limits,
        relay::RelayLimits {
            quota_per_node: 3,
            max_allocations: 40,
            rate_limit_mbps: Some(250),
            idle_timeout_s: 90,
        }
    );
}

#[test]
fn status_json_has_the_documented_shape_and_round_trips() {
    let status = sample();
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["node"]["admission"], "admitted");
    assert_eq!(json["node"]["control_transport"], "tcp");
    assert_eq!(json["node"]["token_expires_in_s"], 540);
    assert_eq!(json["node"]["cert_expires_in_s"], 7_776_000);
    assert_eq!(json["node"]["cert_renews_in_s"], 5_184_000);
    assert_eq!(json["uplinks"][0]["state"], "up");
    assert_eq!(json["reload"]["applied"], 2);
    assert_eq!(json["reload"]["last_result"], "refused");
    // A status without reloads (an older node) still reads.
    let mut older = json.clone();
    older.as_object_mut().unwrap().remove("reload");
    let older: NodeStatus = serde_json::from_value(older).unwrap();
    assert_eq!(older.reload, ReloadStatus::default());
    let path = &json["associations"][0]["paths"][0];
    for key in [
        "id",
        "kind",
        "uplink",
        "remote",
        "state",
        "rtt_ms",
        "loss",
        "weight",
        "tx_bytes",
        "rx_bytes",
        "reason",
        "why",
        "tx_share",
        "jitter_ms",
        "fwd_delay_ms",
        "queue_ms",
        "delivery_mbps",
        "plan_mbps",
        "capacity_mbps",
        "last_heard_ms",
    ] {
        assert!(!path[key].is_null(), "path.{key} missing");
    }
    let event = &json["associations"][0]["events"][0];
    for key in [
        "at_unix_ms",
        "uplink",
        "path",
        "remote",
        "kind",
        "rtt_ms",
        "detail",
    ] {
        assert!(!event[key].is_null(), "event.{key} missing");
    }
    // A status from a node without path reasons and events still reads.
    let mut plain = json.clone();
    let assoc = plain["associations"][0].as_object_mut().unwrap();
    assoc.remove("events");
    assoc.remove("events_recorded");
    let path = plain["associations"][0]["paths"][0]
        .as_object_mut()
        .unwrap();
    for key in ["reason", "why", "tx_share", "jitter_ms", "fwd_delay_ms"] {
        path.remove(key);
    }
    let plain: NodeStatus = serde_json::from_value(plain).unwrap();
    assert!(plain.associations[0].events.is_empty());
    for key in [
        "id", "service", "peer", "ingress", "state", "mode", "paths", "events",
    ] {
        assert!(
            !json["associations"][0][key].is_null(),
            "association.{key} missing"
        );
    }
    let back: NodeStatus = serde_json::from_value(json).unwrap();
    assert_eq!(back, status);
}

#[test]
fn metrics_are_labelled_and_escaped() {
    let text = sample().metrics();
    assert!(text.contains("# TYPE transitloom_path_rtt_seconds gauge"));
    assert!(text.contains(
        "transitloom_path_rtt_seconds{node=\"alpha\",association=\"7\",service=\"wg0\",peer=\"beta/wg0\",path=\"0\",kind=\"direct-public\",uplink=\"fiber\",remote=\"198.51.100.7:40112\"} 0.0125"
    ));
    assert!(
        text.contains("peer=\"gamma/wg\\\"0\""),
        "quotes are escaped"
    );
    assert!(text.contains("transitloom_association_up{node=\"alpha\",association=\"7\",service=\"wg0\",peer=\"beta/wg0\"} 1"));
    assert!(text.contains("transitloom_relay_leg_bound{node=\"alpha\",association=\"7\",service=\"wg0\",peer=\"beta/wg0\",uplink=\"fiber\"} 1"));
    let path = "node=\"alpha\",association=\"7\",service=\"wg0\",peer=\"beta/wg0\",path=\"0\",kind=\"direct-public\",uplink=\"fiber\",remote=\"198.51.100.7:40112\"";
    for sample in [
        format!("transitloom_path_weight{{{path}}} 1"),
        format!("transitloom_path_carrying{{{path}}} 1"),
        format!("transitloom_path_jitter_seconds{{{path}}} 0.0005"),
        format!("transitloom_path_forward_delay_seconds{{{path}}} 0"),
        format!("transitloom_path_delivery_bytes_per_second{{{path}}} 1500000"),
        format!("transitloom_path_plan_bytes_per_second{{{path}}} 2500000"),
        format!("transitloom_path_capacity_bytes_per_second{{{path}}} 2312500"),
        "transitloom_association_path_events_total{node=\"alpha\",association=\"7\",service=\"wg0\",peer=\"beta/wg0\"} 3".to_owned(),
    ] {
        assert!(text.contains(&sample), "{sample} missing from:\n{text}");
    }
    assert!(
        !text.contains("transitloom_association_path_events_total{node=\"alpha\",association=\"\""),
        "no events for an association not installed"
    );
    assert!(text.contains("transitloom_node_reloads_total{node=\"alpha\",result=\"applied\"} 2"));
    assert!(
        text.contains("transitloom_node_certificate_expires_in_seconds{node=\"alpha\"} 7776000")
    );
    assert!(text.contains("transitloom_node_reloads_total{node=\"alpha\",result=\"refused\"} 1"));
    assert!(text.contains("transitloom_node_last_reload_success{node=\"alpha\"} 0"));
    assert!(
        text.contains("transitloom_node_last_reload_timestamp_seconds{node=\"alpha\"} 1760000000")
    );
    // No capacity sample for a path not measured yet.
    let mut unmeasured = sample();
    for path in unmeasured
        .associations
        .iter_mut()
        .flat_map(|a| &mut a.paths)
    {
        path.capacity_mbps = None;
    }
    assert!(!unmeasured
        .metrics()
        .contains("transitloom_path_capacity_bytes_per_second{"));
    // Every sample line is `name{labels} value` with a number for value.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = line.rsplit_once(' ').unwrap();
        value.parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
    }
}

#[test]
fn wg_peers_prints_one_endpoint_per_association() {
    let text = sample().wg_peers(None);
    assert!(text
        .contains("# beta/wg0 (service wg0, association 7)\n[Peer]\nEndpoint = 127.0.0.1:41002\n"));
    assert_eq!(text.matches("Endpoint = ").count(), 2);
    let set = sample().wg_peers(Some("wg0"));
    assert!(set.contains("wg set wg0 peer PUBKEY endpoint 127.0.0.1:41002"));
}

#[test]
fn uplinks_show_their_address_policy_and_paths_and_older_statuses_still_read() {
    let mut status = sample();
    status.uplinks = vec![
        UplinkStatus {
            name: "fiber".to_owned(),
            state: "up".to_owned(),
            tx_bytes: 10,
            rx_bytes: 20,
            address: Some("192.0.2.10".to_owned()),
            interface: Some("eth0".to_owned()),
            priority: "primary".to_owned(),
            capacity_mbps: Some(500.0),
            paths_active: 1,
            address_changes: 2,
            ..UplinkStatus::default()
        },
        UplinkStatus {
            name: "lte".to_owned(),
            state: "down".to_owned(),
            down_reason: Some("interface \"wwan0\" is down".to_owned()),
            priority: "backup".to_owned(),
            metered: true,
            ..UplinkStatus::default()
        },
    ];
    let json = serde_json::to_value(&status).unwrap();
    assert_eq!(json["uplinks"][0]["address"], "192.0.2.10");
    assert_eq!(json["uplinks"][0]["paths_active"], 1);
    assert_eq!(json["uplinks"][1]["address"], serde_json::Value::Null);
    assert_eq!(
        json["uplinks"][1]["down_reason"],
        "interface \"wwan0\" is down"
    );
    let text = status.metrics();
    for line in [
        "transitloom_uplink_up{node=\"alpha\",uplink=\"fiber\"} 1",
        "transitloom_uplink_up{node=\"alpha\",uplink=\"lte\"} 0",
        "transitloom_uplink_paths_active{node=\"alpha\",uplink=\"fiber\"} 1",
        "transitloom_uplink_info{node=\"alpha\",uplink=\"fiber\",address=\"192.0.2.10\",priority=\"primary\",metered=\"false\"} 1",
        "transitloom_uplink_info{node=\"alpha\",uplink=\"lte\",address=\"\",priority=\"backup\",metered=\"true\"} 1",
        "transitloom_uplink_capacity_hint_bits_per_second{node=\"alpha\",uplink=\"fiber\"} 500000000",
        "transitloom_uplink_address_changes_total{node=\"alpha\",uplink=\"fiber\"} 2",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    assert!(
        !text.contains("capacity_hint_bits_per_second{node=\"alpha\",uplink=\"lte\"}"),
        "no hint, no sample"
    );
    // A status from a node without these fields still reads.
    let older = serde_json::json!({ "name": "fiber", "state": "up", "tx_bytes": 1, "rx_bytes": 2 });
    let older: UplinkStatus = serde_json::from_value(older).unwrap();
    assert_eq!((older.address, older.paths_active), (None, 0));
}
