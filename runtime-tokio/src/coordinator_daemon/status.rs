//! What the coordinator's `GET /status` (JSON) and `GET /metrics`
//! (Prometheus text) say, built from the machine after each pump.
//!
//! ```json
//! { "coordinator": { "name": "coordinator", "listen": "0.0.0.0:7443",
//!                    "transport": "quic+tcp", "uptime_s": 12, "operations": 3,
//!                    "token_lifetime_s": 600, "node_cert_lifetime_s": 7776000 },
//!   "nodes": [ { "name": "alpha", "id": "node#1", "admission": "admitted",
//!                "admission_epoch": 1, "connected": true } ],
//!   "associations": [ { "id": "assoc#1", "ends": ["alpha/wg0", "beta/wg0"],
//!                       "origin": "admin", "state": "installed", "epoch": 2,
//!                       "ends_online": true } ],
//!   "counters": { "sessions": { "node": 2, "admin": 5, "over_tcp": 1 },
//!                 "refused": { "pending": 1 }, "handshakes_failed": 0,
//!                 "handshakes_started": 7, "handshakes_throttled": 0,
//!                 "admissions_lapsed": 0,
//!                 "tokens_granted": 2, "enrollments": 2, "enrollments_repeated": 0,
//!                 "renewals": 1, "renewals_refused": 0, "assoc_rekeys": 0, "punches": 1,
//!                 "reflected": 12, "reflect_refused": {} },
//!   "reflectors": ["203.0.113.6:7443"],
//!   "cluster": { "id": 1, "role": "leader", "leader": 1, "term": 3,
//!                "commit": 12, "applied": 12, "last_index": 12, "pending": 0,
//!                "peers": [ { "id": 2, "name": "coordinator-b",
//!                             "addr": "192.0.2.12:7443", "connected": true } ],
//!                "counters": { "sent": 40, "received": 38, "dropped": 0,
//!                              "reproposed": 0, "skipped": 0 } } }
//! ```
//!
//! `cluster` is `null` for a coordinator without `[cluster]`. `pending`
//! counts this coordinator's writes not yet committed by a majority (they
//! take effect nowhere until they are); `role` is `leader`, `follower` or
//! `candidate` (no leader known).
//!
//! An association is `installed` when the coordinator has installed it on
//! both ends; one whose ends are not both admitted and declaring the service
//! (or that waits for its fresh key to be written) is `waiting`; one an
//! admin deleted is `deleted` until allowed again. `epoch` is its key
//! epoch (0: no key yet).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;
use transitloom_runtime_mio::status::label;
use transitloom_runtime_mio::status::relay::RelayStatus;

use serde_json::{json, Value};
use transitloom_proto_core::control::msg::RejectCode;
use transitloom_proto_core::control::msg::{AssocOrigin, AssocState};
use transitloom_proto_core::coordinator::reflector::Refusal;
use transitloom_proto_core::coordinator::registry::Admission;
use transitloom_proto_core::coordinator::replica::Role;
use transitloom_proto_core::coordinator::Coordinator;

/// Where the coordinator runs, for the status document.
#[derive(Debug, Clone)]
pub struct Place {
    /// Its name.
    pub name: String,
    /// The bound control address.
    pub listen: SocketAddr,
    /// Admission token lifetime.
    pub token_lifetime_s: u64,
}

/// The `/status` document.
pub fn status_json(coordinator: &Coordinator, place: &Place, uptime: Duration) -> Value {
    let registry = coordinator.registry();
    let online: BTreeSet<&str> = coordinator.online().collect();
    let nodes: Vec<Value> = registry
        .nodes()
        .map(|n| {
            json!({
                "name": n.name,
                "id": n.id.to_string(),
                "admission": n.admission.as_str(),
                "admission_epoch": n.epoch,
                "connected": online.contains(n.name.as_str()),
            })
        })
        .collect();
    let associations: Vec<Value> = coordinator
        .association_list()
        .iter()
        .map(|a| {
            json!({
                "id": a.assoc.to_string(),
                "ends": [a.a.to_string(), a.b.to_string()],
                "origin": a.origin.as_str(),
                "state": a.state.as_str(),
                "epoch": a.epoch,
                "ends_online": a.up,
            })
        })
        .collect();
    let counters = coordinator.counters();
    json!({
        "coordinator": {
            "name": place.name,
            "listen": place.listen.to_string(),
            "transport": if coordinator.stream_listening().is_some() { "quic+tcp" } else { "quic" },
            "uptime_s": uptime.as_secs(),
            "operations": registry.applied(),
            "token_lifetime_s": place.token_lifetime_s,
            "node_cert_lifetime_s": coordinator.node_cert_lifetime_s(),
            "assoc_key_lifetime_s": coordinator.assoc_key_lifetime_s(),
        },
        "nodes": nodes,
        "associations": associations,
        "counters": {
            "sessions": {
                "node": counters.sessions_node,
                "admin": counters.sessions_admin,
                "over_tcp": counters.sessions_tcp,
            },
            "refused": counters.refused,
            "handshakes_failed": counters.handshakes_failed,
            "handshakes_started": counters.handshakes,
            "handshakes_throttled": counters.handshakes_throttled,
            "admissions_lapsed": counters.lapsed,
            "tokens_granted": counters.tokens_granted,
            "enrollments": counters.enrolled,
            "enrollments_repeated": counters.enrollments_repeated,
            "renewals": counters.renewed,
            "renewals_refused": counters.renewals_refused,
            "reflected": counters.reflected,
            "reflect_refused": counters.reflect_refused,
            "assoc_rekeys": counters.assoc_rekeys,
            "punches": counters.punches,
        },
        "reflectors": coordinator.reflectors().map(|a| a.to_string()).collect::<Vec<_>>(),
        "cluster": cluster_json(coordinator),
        "relay": coordinator.relay().map(RelayStatus::of),
        "relay_nodes": coordinator.relay_nodes().into_iter().map(|(node, ip)| json!({
            "node": node,
            "advertise_ip": ip.to_string(),
        })).collect::<Vec<_>>(),
        "relay_offers_refused": coordinator.relay_offers_refused().into_iter().map(|(node, offered, seen)| json!({
            "node": node,
            "advertise_ip": offered.to_string(),
            "seen_from": seen.to_string(),
            "reason": "behind a NAT: a local address other than the one its session comes from",
        })).collect::<Vec<_>>(),
        "relay_placements": coordinator.relay_placements().into_iter().map(|p| json!({
            "assoc": p.assoc.to_string(),
            "allocation": p.allocation,
            "site": p.node.as_deref().unwrap_or("coordinator"),
            "relay": p.addr.map(|a| a.to_string()),
        })).collect::<Vec<_>>(),
    })
}

fn cluster_json(coordinator: &Coordinator) -> Value {
    let Some(c) = coordinator.cluster_status() else {
        return Value::Null;
    };
    let r = c.replica;
    json!({
        "id": r.id,
        "role": r.role.as_str(),
        "leader": r.leader,
        "term": r.term,
        "commit": r.commit,
        "applied": r.applied,
        "last_index": r.last_index,
        "pending": c.pending,
        "peers": c.peers.iter().map(|(p, up)| json!({
            "id": p.id,
            "name": p.name,
            "addr": p.addr.to_string(),
            "connected": up,
        })).collect::<Vec<_>>(),
        "counters": {
            "sent": c.counters.sent,
            "received": c.counters.received,
            "dropped": c.counters.dropped,
            "reproposed": c.counters.reproposed,
            "skipped": c.counters.skipped,
        },
    })
}

/// The `/metrics` text (Prometheus exposition format 0.0.4).
pub fn metrics(coordinator: &Coordinator, place: &Place) -> String {
    let mut out = String::new();
    let base = format!("coordinator=\"{}\"", label(&place.name));
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    };
    let counters = coordinator.counters();
    let registry = coordinator.registry();
    if let Some(c) = coordinator.cluster_status() {
        let r = c.replica;
        family(
            "transitloom_cluster_leader",
            "gauge",
            "1 while this coordinator leads the cluster's log.",
            &[(base.clone(), u64::from(r.role == Role::Leader))],
        );
        family(
            "transitloom_cluster_term",
            "gauge",
            "The replicated log's current term.",
            &[(base.clone(), r.term)],
        );
        family(
            "transitloom_cluster_commit_index",
            "gauge",
            "The highest log index known committed by a majority.",
            &[(base.clone(), r.commit)],
        );
        family(
            "transitloom_cluster_pending_writes",
            "gauge",
            "This coordinator's writes not yet committed (in effect nowhere).",
            &[(base.clone(), c.pending as u64)],
        );
        let peers: Vec<(String, u64)> = c
            .peers
            .iter()
            .map(|(p, up)| {
                (
                    format!("{base},peer=\"{}\"", label(&p.name)),
                    u64::from(*up),
                )
            })
            .collect();
        family(
            "transitloom_cluster_peer_connected",
            "gauge",
            "1 while the session this coordinator dialled to the peer is up.",
            &peers,
        );
        family(
            "transitloom_cluster_writes_skipped_total",
            "counter",
            "Committed writes that no longer applied (another write came first).",
            &[(base.clone(), c.counters.skipped)],
        );
    }
    family(
        "transitloom_coordinator_sessions_total",
        "counter",
        "Sessions accepted, by the kind of certificate presented.",
        &[
            (format!("{base},kind=\"node\""), counters.sessions_node),
            (format!("{base},kind=\"admin\""), counters.sessions_admin),
        ],
    );
    let refused: Vec<(String, u64)> = RejectCode::ALL
        .iter()
        .map(|code| {
            let n = counters.refused.get(code.as_str()).copied().unwrap_or(0);
            (format!("{base},code=\"{}\"", code.as_str()), n)
        })
        .collect();
    family(
        "transitloom_coordinator_refused_total",
        "counter",
        "Sessions refused or ended by the coordinator, by reject code.",
        &refused,
    );
    family(
        "transitloom_coordinator_reflected_total",
        "counter",
        "Reflect requests answered with the address they came from.",
        &[(base.clone(), counters.reflected)],
    );
    let reflect_refused: Vec<(String, u64)> = Refusal::ALL
        .iter()
        .map(|r| {
            let n = counters
                .reflect_refused
                .get(r.as_str())
                .copied()
                .unwrap_or(0);
            (format!("{base},reason=\"{}\"", r.as_str()), n)
        })
        .collect();
    family(
        "transitloom_coordinator_reflect_refused_total",
        "counter",
        "Datagrams on a reflector address left unanswered, by reason.",
        &reflect_refused,
    );
    family(
        "transitloom_coordinator_sessions_tcp_total",
        "counter",
        "Sessions that connected over TCP (the fallback for clients whose UDP is blocked).",
        &[(base.clone(), counters.sessions_tcp)],
    );
    family(
        "transitloom_coordinator_handshakes_failed_total",
        "counter",
        "TLS handshakes refused before a session existed (untrusted, expired or unfit certificate, wrong ALPN).",
        &[(base.clone(), counters.handshakes_failed)],
    );
    family(
        "transitloom_coordinator_handshakes_started_total",
        "counter",
        "Sessions started within the handshake limit (handshakes_per_s).",
        &[(base.clone(), counters.handshakes)],
    );
    family(
        "transitloom_coordinator_handshakes_throttled_total",
        "counter",
        "Session attempts refused by the handshake limit before any TLS work.",
        &[(base.clone(), counters.handshakes_throttled)],
    );
    family(
        "transitloom_coordinator_admissions_lapsed_total",
        "counter",
        "Admissions that lapsed because a node's token expired unrefreshed.",
        &[(base.clone(), counters.lapsed)],
    );
    family(
        "transitloom_coordinator_tokens_granted_total",
        "counter",
        "Admission tokens granted.",
        &[(base.clone(), counters.tokens_granted)],
    );
    family(
        "transitloom_coordinator_enrollments_total",
        "counter",
        "Node certificates issued against a join token.",
        &[(base.clone(), counters.enrolled)],
    );
    family(
        "transitloom_coordinator_renewals_total",
        "counter",
        "Node certificates renewed before expiry, by result (a refusal is also in refused_total).",
        &[
            (format!("{base},result=\"renewed\""), counters.renewed),
            (
                format!("{base},result=\"refused\""),
                counters.renewals_refused,
            ),
        ],
    );
    let by_state: Vec<(String, u64)> =
        [Admission::Pending, Admission::Admitted, Admission::Revoked]
            .into_iter()
            .map(|state| {
                let n = registry.nodes().filter(|n| n.admission == state).count() as u64;
                (format!("{base},admission=\"{}\"", state.as_str()), n)
            })
            .collect();
    family(
        "transitloom_coordinator_nodes",
        "gauge",
        "Enrolled nodes, by admission state.",
        &by_state,
    );
    family(
        "transitloom_coordinator_nodes_online",
        "gauge",
        "Nodes with a live control session.",
        &[(base.clone(), coordinator.online().count() as u64)],
    );
    let list = coordinator.association_list();
    let by_origin: Vec<(String, u64)> = AssocOrigin::ALL
        .iter()
        .map(|o| {
            let n = list
                .iter()
                .filter(|a| a.origin == *o && a.state == AssocState::Installed)
                .count() as u64;
            (format!("{base},origin=\"{}\"", o.as_str()), n)
        })
        .collect();
    family(
        "transitloom_coordinator_associations",
        "gauge",
        "Installed associations, by origin.",
        &by_origin,
    );
    let deleted = list
        .iter()
        .filter(|a| a.state == AssocState::Deleted)
        .count() as u64;
    family(
        "transitloom_coordinator_associations_deleted",
        "gauge",
        "Associations an admin deleted (kept withdrawn until allowed again).",
        &[(base.clone(), deleted)],
    );
    family(
        "transitloom_coordinator_assoc_rekeys_total",
        "counter",
        "Keys of installed associations replaced by a new epoch (admin, readmission, key lifetime).",
        &[(base.clone(), counters.assoc_rekeys)],
    );
    family(
        "transitloom_coordinator_punches_total",
        "counter",
        "Punches sent: one moment for both ends of an association to start probing.",
        &[(base.clone(), counters.punches)],
    );
    family(
        "transitloom_coordinator_operations_total",
        "counter",
        "Operations in the durable log (replayed ones included).",
        &[(base.clone(), registry.applied())],
    );
    if let Some(relay) = coordinator.relay() {
        RelayStatus::of(relay).write_metrics(&base, &mut out);
    }
    out
}
