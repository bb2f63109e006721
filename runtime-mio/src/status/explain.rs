//! `transitloom-node explain ASSOC`: one association's paths in words (why
//! each has its state and weight, and the numbers behind the reason), then
//! what happened to them lately. Everything comes from the `/status`
//! snapshot, so explain needs nothing status does not already serve.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::{AssociationStatus, NodeStatus, PathEventStatus, PathStatus, UplinkStatus};

/// What `explain --json` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// The node's name.
    pub node: String,
    /// The association as status shows it, its events included.
    pub association: AssociationStatus,
    /// The node's uplinks.
    pub uplinks: Vec<UplinkStatus>,
    /// Each path's state and weight in words.
    pub paths: Vec<PathExplanation>,
}

/// One path in words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathExplanation {
    /// The path's id.
    pub id: String,
    /// Its state and why.
    pub state: String,
    /// Its weight and why, with the numbers behind it.
    pub weight: String,
    /// What is measured of it.
    pub measured: String,
}

/// Finds the association `query` names: its id, its peer (`node/service`),
/// or the peer node alone when only one association goes there.
///
/// # Errors
/// A message saying what matched nothing, or what matched more than once,
/// with what there is.
pub fn find<'a>(status: &'a NodeStatus, query: &str) -> Result<&'a AssociationStatus, String> {
    let all = &status.associations;
    let by_id: Vec<_> = all
        .iter()
        .filter(|a| a.id.as_deref() == Some(query))
        .collect();
    let by_peer: Vec<_> = all.iter().filter(|a| a.peer == query).collect();
    let by_node: Vec<_> = all
        .iter()
        .filter(|a| a.peer.split('/').next() == Some(query))
        .collect();
    for found in [by_id, by_peer, by_node.clone()] {
        if let [one] = found.as_slice() {
            return Ok(one);
        }
    }
    let known = all
        .iter()
        .map(|a| {
            format!(
                "{} ({})",
                a.id.as_deref().unwrap_or("not installed"),
                a.peer
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    if by_node.len() > 1 {
        return Err(format!(
            "{query:?} names {} associations; give the id or the peer service: {known}",
            by_node.len()
        ));
    }
    if known.is_empty() {
        return Err(format!(
            "no association named {query:?}: this node has none"
        ));
    }
    Err(format!(
        "no association named {query:?}; there are: {known}"
    ))
}

/// The explanation of `assoc`, a part of `status`.
pub fn explain(status: &NodeStatus, assoc: &AssociationStatus) -> Explanation {
    // Every uplink: one without a path through it is part of the story.
    let uplinks = status.uplinks.clone();
    let paths = assoc
        .paths
        .iter()
        .map(|p| PathExplanation {
            id: p.id.clone(),
            state: state_words(p),
            weight: weight_words(p, assoc, &status.uplinks),
            measured: measured_words(p),
        })
        .collect();
    Explanation {
        node: status.node.name.clone(),
        association: assoc.clone(),
        uplinks,
        paths,
    }
}

/// `explain`'s text: the association, each path, then the events, with
/// times shown in UTC and relative to `now_unix_ms`.
pub fn render(x: &Explanation, now_unix_ms: u64) -> String {
    let mut out = String::new();
    let a = &x.association;
    let _ = writeln!(
        out,
        "association {}  {} -> {}  ingress {}  {}  {}",
        a.id.as_deref().unwrap_or("-"),
        a.service,
        a.peer,
        a.ingress.as_deref().unwrap_or("-"),
        a.state,
        a.mode
    );
    if a.id.is_none() {
        let _ = writeln!(
            out,
            "not installed yet: the coordinator installs it once {} declares this node's service too",
            a.peer
        );
        return out;
    }
    for u in &x.uplinks {
        let how = match (&u.address, &u.down_reason) {
            (_, Some(why)) => format!("down: {why}"),
            (Some(ip), None) => format!("up on {ip}"),
            (None, None) => "up".to_owned(),
        };
        let _ = writeln!(
            out,
            "uplink {} ({}{}): {how}",
            u.name,
            if u.priority.is_empty() {
                "primary"
            } else {
                &u.priority
            },
            if u.metered { ", metered" } else { "" }
        );
    }
    if a.paths.is_empty() {
        let _ = writeln!(
            out,
            "\nno path: no uplink has a bound mesh socket, or the peer's addresses are not known yet"
        );
    }
    for (p, words) in a.paths.iter().zip(&x.paths) {
        let _ = writeln!(
            out,
            "\npath {}  {} -> {}  {}  {}  weight {:.2}",
            p.id, p.uplink, p.remote, p.kind, p.state, p.weight
        );
        let _ = writeln!(out, "  state:    {}", words.state);
        let _ = writeln!(out, "  weight:   {}", words.weight);
        let _ = writeln!(out, "  measured: {}", words.measured);
    }
    let shown = a.events.len() as u64;
    let _ = writeln!(
        out,
        "\nrecent events ({}oldest first):",
        if a.events_recorded > shown {
            format!("last {shown} of {} recorded, ", a.events_recorded)
        } else {
            String::new()
        }
    );
    if a.events.is_empty() {
        let _ = writeln!(out, "  none yet");
    }
    for e in &a.events {
        let _ = writeln!(out, "  {}", event_line(e, now_unix_ms));
    }
    out
}

/// One event: when (UTC, and how long ago), which path or uplink, what.
pub fn event_line(e: &PathEventStatus, now_unix_ms: u64) -> String {
    let ago = now_unix_ms.saturating_sub(e.at_unix_ms) as f64 / 1e3;
    let what = match (&e.path, &e.remote) {
        (Some(id), Some(remote)) => format!("path {id} ({} -> {remote})", e.uplink),
        (Some(id), None) => format!("path {id} ({})", e.uplink),
        (None, _) => format!("uplink {}", e.uplink),
    };
    format!(
        "{} ({ago:.1} s ago)  {what}: {}",
        utc(e.at_unix_ms),
        e.detail
    )
}

fn state_words(p: &PathStatus) -> String {
    let heard = p.last_heard_ms.map_or("never heard from".to_owned(), |ms| {
        format!("last heard {}", ago_ms(ms))
    });
    match p.state.as_str() {
        "active" => format!(
            "active: an authentic pong came from this exact address; {} of {} pings answered, {heard}",
            p.pongs, p.pings
        ),
        "probing" if p.pings == 0 => {
            "probing: no ping sent yet (its mesh socket is not bound yet)".to_owned()
        }
        "probing" => format!(
            "probing: {} pings sent, none answered by this address yet ({heard})",
            p.pings
        ),
        "failed" => format!(
            "failed: it stopped answering probes ({heard}); pings go on, and the first pong brings it back"
        ),
        other => other.to_owned(),
    }
}

fn weight_words(p: &PathStatus, a: &AssociationStatus, uplinks: &[UplinkStatus]) -> String {
    let uplink = uplinks.iter().find(|u| u.name == p.uplink);
    let carrying: Vec<&PathStatus> = a.paths.iter().filter(|q| q.reason == "carrying").collect();
    let others = |f: &dyn Fn(&PathStatus) -> bool| {
        a.paths
            .iter()
            .filter(|q| q.id != p.id && f(q))
            .map(|q| format!("path {} ({})", q.id, q.uplink))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match p.reason.as_str() {
        "carrying" => {
            let total: f64 = carrying.iter().map(|q| q.plan_mbps).sum();
            let mut text = format!(
                "carrying: each packet goes where it is predicted to arrive first; its planned \
                 rate {:.1} Mbit/s of the carrying paths' {total:.1} Mbit/s gives it {:.0} % \
                 ({:.1} % of the bytes sent so far)",
                p.plan_mbps,
                p.weight * 100.0,
                p.tx_share * 100.0
            );
            if p.loss > 0.02 {
                let _ = write!(
                    text,
                    "; its loss of {:.1} % (over the 2 % ignored) lowers its share steeply",
                    p.loss * 100.0
                );
            }
            if carrying.len() == 1 {
                text.push_str("; the only path carrying");
            }
            text
        }
        "not-validated" => format!(
            "0 (not validated): no authentic pong to its pings to {} on this uplink{}",
            p.remote,
            if p.state == "failed" {
                " since it failed"
            } else {
                ""
            }
        ),
        "stale" => format!(
            "0 (stale): {} while {} answered within the last 0.5 s (a NAT may have rebound \
             the peer to another address)",
            p.last_heard_ms
                .map_or("never heard from".to_owned(), |ms| format!(
                    "last heard {}",
                    ago_ms(ms)
                )),
            others(&|q| q.state == "active" && q.last_heard_ms.is_some_and(|ms| ms <= 500))
        ),
        "backup" => format!(
            "0 (backup): uplink {} (or the peer's uplink at {}, as its pings say) is a backup \
             and primary paths carry: {}",
            p.uplink,
            p.remote,
            others(&|q| q.reason == "carrying")
        ),
        "metered" => format!(
            "0 (metered): uplink {} (or the peer's uplink at {}, as its pings say) is metered \
             and the unmetered paths have room (it takes traffic once they are saturated: \
             planned queues past 20 ms and a measured queue): {}",
            p.uplink,
            p.remote,
            others(&|q| q.reason == "carrying")
        ),
        "lossy" => format!(
            "0 (lossy): it lost more than 2 % of its probes lately (loss {:.1} %), not to a full \
             queue, and a clean path carries: {}; it is used again after 64 probes answered \
             in a row, or if the clean paths fail",
            p.loss * 100.0,
            others(&|q| q.reason == "carrying")
        ),
        "slow" => format!(
            "0 (slow): its forward delay is {} above the fastest path's, whose capacity is \
             not measured yet (under a standing queue; a capacity_mbps hint alone does not \
             count), so a spill onto it could not be timed; it carries overflow once that \
             capacity is measured, and takes over if the faster paths fail",
            p.fwd_delay_ms
                .map_or("unknown".to_owned(), |d| format!("{d:.1} ms"))
        ),
        "relayed" => format!(
            "0 (relayed): it crosses the coordinator's relay and a direct path carries: {}; \
             it takes over within about 300 ms if they fail",
            others(&|q| q.reason == "carrying")
        ),
        "redundant" => format!(
            "0 (redundant): the peer answers it from {} (its NAT maps each destination to a \
             new port), and a path to the same address through uplink {} carries: {}; it \
             stands by, validated",
            p.answers_from.as_deref().unwrap_or("another port"),
            p.uplink,
            others(&|q| q.reason == "carrying")
        ),
        "settling" => String::from(
            "0 (settling): validated lately while data goes through the relay; it takes over \
             once it has held 2 s, so a flapping path does not pull the traffic back and forth",
        ),
        "retiring" => format!(
            "0 (retiring): its relay allocation is being replaced, and the new one's path \
             carries: {}; it goes once the coordinator releases it",
            others(&|q| q.reason == "carrying")
        ),
        "" => format!(
            "{:.2}: no decision recorded yet{}",
            p.weight,
            uplink.map_or(String::new(), |u| format!(
                " (uplink {} {})",
                u.name, u.state
            ))
        ),
        other => format!("{:.2}: {} ({other})", p.weight, p.why),
    }
}

fn measured_words(p: &PathStatus) -> String {
    let mut parts = Vec::new();
    match (p.rtt_ms, p.jitter_ms) {
        (Some(rtt), Some(j)) => parts.push(format!("rtt {rtt:.2} ms ± {j:.2}")),
        (Some(rtt), None) => parts.push(format!("rtt {rtt:.2} ms")),
        _ => parts.push("rtt not measured".to_owned()),
    }
    parts.push(format!("loss {:.1} %", p.loss * 100.0));
    if let Some(fwd) = p.fwd_delay_ms {
        parts.push(format!("forward delay +{fwd:.2} ms over the lowest path"));
    }
    parts.push(format!("queue {:.1} ms", p.queue_ms));
    parts.push(format!("delivery {:.1} Mbit/s", p.delivery_mbps));
    parts.push(format!("planned {:.1} Mbit/s", p.plan_mbps));
    if let Some(capacity) = p.capacity_mbps {
        parts.push(format!("measured capacity {capacity:.1} Mbit/s"));
    }
    parts.push(format!("sent {} B, received {} B", p.tx_bytes, p.rx_bytes));
    parts.join(", ")
}

fn ago_ms(ms: u64) -> String {
    if ms < 10_000 {
        format!("{ms} ms ago")
    } else {
        format!("{:.0} s ago", ms as f64 / 1e3)
    }
}

/// `YYYY-MM-DD HH:MM:SS.mmm UTC` of Unix milliseconds.
pub fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03} UTC",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60,
        unix_ms % 1_000
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{Drops, NodeInfo};

    fn path(id: &str, uplink: &str, reason: &str, weight: f64) -> PathStatus {
        PathStatus {
            id: id.to_owned(),
            kind: "direct-intranet".to_owned(),
            uplink: uplink.to_owned(),
            remote: "10.0.0.2:41000".to_owned(),
            state: "active".to_owned(),
            rtt_ms: Some(12.5),
            jitter_ms: Some(1.25),
            weight,
            reason: reason.to_owned(),
            plan_mbps: 20.0,
            pings: 40,
            pongs: 39,
            last_heard_ms: Some(30),
            ..PathStatus::default()
        }
    }

    fn status() -> NodeStatus {
        let assoc = AssociationStatus {
            id: Some("7".to_owned()),
            service: "wg0".to_owned(),
            peer: "beta/wg0".to_owned(),
            ingress: Some("127.0.0.1:41002".to_owned()),
            state: "up".to_owned(),
            mode: "whole-packet".to_owned(),
            paths: vec![
                path("0", "fiber", "carrying", 1.0),
                PathStatus {
                    fwd_delay_ms: Some(31.0),
                    ..path("1", "lte", "slow", 0.0)
                },
            ],
            dropped: Drops::default(),
            events: vec![PathEventStatus {
                at_unix_ms: 1_760_000_000_250,
                uplink: "lte".to_owned(),
                path: Some("1".to_owned()),
                remote: Some("10.0.0.2:41000".to_owned()),
                kind: "failed".to_owned(),
                detection_ms: Some(210.0),
                detail: "failed: no probe answered for 210 ms (detection time)".to_owned(),
                ..PathEventStatus::default()
            }],
            events_recorded: 40,
            relay: None,
            candidates: 2,
            pairs_tried: 2,
            pairs_answered: 2,
            birthday_probes: 0,
            birthday_sockets: 0,
        };
        NodeStatus {
            node: NodeInfo {
                name: "alpha".to_owned(),
                ..NodeInfo::default()
            },
            associations: vec![
                assoc.clone(),
                AssociationStatus {
                    id: Some("9".to_owned()),
                    peer: "beta/dns".to_owned(),
                    ..assoc
                },
            ],
            ..NodeStatus::default()
        }
    }

    #[test]
    fn an_association_is_found_by_id_peer_or_unique_node() {
        let s = status();
        assert_eq!(find(&s, "7").unwrap().peer, "beta/wg0");
        assert_eq!(find(&s, "beta/dns").unwrap().id.as_deref(), Some("9"));
        let err = find(&s, "beta").unwrap_err();
        assert!(err.contains("names 2 associations"), "{err}");
        let err = find(&s, "gamma").unwrap_err();
        assert!(err.contains("7 (beta/wg0), 9 (beta/dns)"), "{err}");
    }

    #[test]
    fn each_reason_is_explained_with_its_numbers_and_events_are_timed() {
        let s = status();
        let x = explain(&s, find(&s, "7").unwrap());
        let text = render(&x, 1_760_000_002_250);
        for want in [
            "association 7  wg0 -> beta/wg0",
            "path 0  fiber -> 10.0.0.2:41000",
            "carrying: each packet goes where it is predicted to arrive first",
            "gives it 100 %",
            "the only path carrying",
            "39 of 40 pings answered, last heard 30 ms ago",
            "0 (slow): its forward delay is 31.0 ms above the fastest path's",
            "rtt 12.50 ms ± 1.25",
            "recent events (last 1 of 40 recorded, oldest first):",
            "2025-10-09 08:53:20.250 UTC (2.0 s ago)  path 1 (lte -> 10.0.0.2:41000): failed: no probe answered for 210 ms",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
        let json = serde_json::to_value(&x).unwrap();
        assert_eq!(json["paths"][1]["id"], "1");
        assert_eq!(json["association"]["events"][0]["detection_ms"], 210.0);
    }

    #[test]
    fn utc_dates_are_civil() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00.000 UTC");
        assert_eq!(utc(1_709_251_199_999), "2024-02-29 23:59:59.999 UTC");
    }
}
