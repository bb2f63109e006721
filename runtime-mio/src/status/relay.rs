//! The status of a relay, the same shape on a relaying node's `/status`
//! and `/metrics` as on the coordinator's (its allocations, the bytes each
//! forwarded, what each dropped).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use transitloom_proto_core::relay::Relay;

/// A relay's allocations and counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayStatus {
    /// Every open allocation, in socket order.
    pub allocations: Vec<RelayAllocationStatus>,
    /// Allocations refused for a quota or the table's bound.
    pub refused_allocations: u64,
    /// The quotas, rate limit and idle expiry it applies.
    #[serde(default)]
    pub limits: RelayLimits,
    /// On a relaying node: the coordinator refused the relay offered, so
    /// no allocation comes (until an address other nodes reach is offered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer_refused: Option<RelayOfferRefused>,
}

/// Why the coordinator will not place allocations on this node's relay.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayOfferRefused {
    /// The address offered (`[relay] advertise_ip`, or the uplink's).
    pub offered: String,
    /// The address the coordinator sees the node's session come from.
    pub seen: String,
}

/// What a relay allows (the `[relay]` limits).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayLimits {
    /// Allocations one node may take part in at once.
    pub quota_per_node: u64,
    /// Allocations at most, all nodes together.
    pub max_allocations: u64,
    /// Each path's rate limit per direction, Mbit/s (`None`: unlimited).
    pub rate_limit_mbps: Option<u64>,
    /// Seconds of silence before an allocation is released.
    pub idle_timeout_s: u64,
}

/// One allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayAllocationStatus {
    /// Its id (the coordinator's).
    pub id: u64,
    /// The association it carries.
    pub assoc: String,
    /// Where its port is bound, once it is.
    pub local: Option<String>,
    /// Both legs are bound: data flows.
    pub ready: bool,
    /// Bytes forwarded from leg 0 and from leg 1.
    pub forwarded_bytes: [u64; 2],
    /// Datagrams forwarded from leg 0 and from leg 1.
    pub forwarded_packets: [u64; 2],
    /// Datagrams dropped, every reason together.
    pub dropped: u64,
}

impl RelayStatus {
    /// The status of `relay` now.
    pub fn of(relay: &Relay) -> Self {
        Self {
            allocations: relay
                .allocations()
                .map(|a| {
                    let c = a.counters();
                    RelayAllocationStatus {
                        id: a.id(),
                        assoc: a.assoc().to_string(),
                        local: a.local().map(|l| l.to_string()),
                        ready: a.is_ready(),
                        forwarded_bytes: [c.forwarded[0].bytes, c.forwarded[1].bytes],
                        forwarded_packets: [c.forwarded[0].packets, c.forwarded[1].packets],
                        dropped: c.dropped_total(),
                    }
                })
                .collect(),
            refused_allocations: relay.counters().refused_allocations,
            limits: {
                let c = relay.config();
                RelayLimits {
                    quota_per_node: c.quota_per_node as u64,
                    max_allocations: c.max_allocations as u64,
                    rate_limit_mbps: c.rate_limit.map(|r| r.bytes_per_s / 125_000),
                    idle_timeout_s: c.idle_timeout.as_secs(),
                }
            },
            offer_refused: None,
        }
    }

    /// Appends the relay's metric families, each sample labelled `base`
    /// (`coordinator="…"` or `node="…"`) and by allocation.
    pub fn write_metrics(&self, base: &str, out: &mut String) {
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        };
        let ready = self.allocations.iter().filter(|a| a.ready).count() as u64;
        family(
            "transitloom_relay_allocations",
            "gauge",
            "Relay allocations open (one port each), and how many have both legs bound.",
            &[
                (
                    format!("{base},state=\"open\""),
                    self.allocations.len() as u64,
                ),
                (format!("{base},state=\"ready\""), ready),
            ],
        );
        let per_allocation = |value: fn(&RelayAllocationStatus) -> u64| {
            self.allocations
                .iter()
                .map(|a| {
                    let labels = format!("{base},assoc=\"{}\",allocation=\"{}\"", a.assoc, a.id);
                    (labels, value(a))
                })
                .collect::<Vec<_>>()
        };
        family(
            "transitloom_relay_forwarded_bytes_total",
            "counter",
            "Bytes the relay forwarded between the legs of an allocation, both ways.",
            &per_allocation(|a| a.forwarded_bytes[0] + a.forwarded_bytes[1]),
        );
        family(
            "transitloom_relay_dropped_total",
            "counter",
            "Datagrams an allocation's port dropped (unknown source, unbound peer, rate limit, refused binds).",
            &per_allocation(|a| a.dropped),
        );
        family(
            "transitloom_relay_allocations_max",
            "gauge",
            "Allocations the relay takes at most (max_allocations).",
            &[(base.to_owned(), self.limits.max_allocations)],
        );
        if self.offer_refused.is_some() {
            family(
                "transitloom_relay_offer_refused",
                "gauge",
                "1 while the coordinator refuses this node's relay offer (a local address behind a NAT).",
                &[(base.to_owned(), 1)],
            );
        }
        family(
            "transitloom_relay_refused_allocations_total",
            "counter",
            "Allocations the relay refused for a quota or its table's bound.",
            &[(base.to_owned(), self.refused_allocations)],
        );
    }
}
