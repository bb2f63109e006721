//! The node's status (DESIGN §11): one snapshot type serialized as `/status`
//! JSON, rendered as `/metrics` Prometheus text, and read back by
//! `transitloom-node status` and `wg-peers`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use transitloom_proto_core::dataplane::{AssociationView, DataPlane, PathEventKind, PathState};

/// Everything `/status` says.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node itself.
    pub node: NodeInfo,
    /// Its uplinks.
    pub uplinks: Vec<UplinkStatus>,
    /// Its associations (configured ones not yet installed included).
    pub associations: Vec<AssociationStatus>,
    /// Configuration reloads (SIGHUP) since the node started.
    #[serde(default)]
    pub reload: ReloadStatus,
    /// The relay this node hosts for others (`[relay] data = true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<relay::RelayStatus>,
}

/// Configuration reloads since the node started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadStatus {
    /// Reloads applied.
    pub applied: u64,
    /// Reloads refused (an invalid file, or a change that takes a restart).
    pub refused: u64,
    /// `applied` or `refused`; absent before the first reload.
    pub last_result: Option<String>,
    /// When the last reload happened (Unix seconds).
    pub last_unix_s: Option<u64>,
    /// What the last reload changed, or why it was refused.
    pub last_detail: Option<String>,
}

/// The node's identity and standing with the coordinator.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Its name.
    pub name: String,
    /// `pending`, `admitted`, `revoked` (or `enrolling` before a certificate).
    pub admission: String,
    /// Seconds until the admission token expires, when there is one.
    pub token_expires_in_s: Option<u64>,
    /// What carries the control session: `quic`, or `tcp` when UDP to the
    /// coordinator is blocked; absent while no session is connected.
    #[serde(default)]
    pub control_transport: Option<String>,
    /// Seconds until the node's certificate expires, once enrolled (0 when
    /// it has: the node then needs a new join token).
    #[serde(default)]
    pub cert_expires_in_s: Option<u64>,
    /// Seconds until the certificate is due for renewal (at two thirds of
    /// its life; 0 when due, renewed as soon as the node is live).
    #[serde(default)]
    pub cert_renews_in_s: Option<u64>,
    /// The NAT behaviour the coordinator's reflectors show in front of
    /// the first uplink, as `MAPPING/ALLOCATION` (`none/unknown` on a
    /// public address, `unknown` before any answer); each uplink
    /// has its own in [`UplinkStatus::nat`].
    pub nat: String,
}

/// One uplink.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UplinkStatus {
    /// Its name.
    pub name: String,
    /// `up` or `down`.
    pub state: String,
    /// Bytes sent through it.
    pub tx_bytes: u64,
    /// Bytes received through it.
    pub rx_bytes: u64,
    /// The address its mesh sockets use; absent while it is down.
    #[serde(default)]
    pub address: Option<String>,
    /// The interface it follows (`interface = "…"`); absent for `bind`.
    #[serde(default)]
    pub interface: Option<String>,
    /// Why it is down, while it is.
    #[serde(default)]
    pub down_reason: Option<String>,
    /// `primary` or `backup`.
    #[serde(default)]
    pub priority: String,
    /// Metered (mobile data).
    #[serde(default)]
    pub metered: bool,
    /// The operator's capacity hint, Mbit/s.
    #[serde(default)]
    pub capacity_mbps: Option<f64>,
    /// Active paths through it, over every association.
    #[serde(default)]
    pub paths_active: u64,
    /// Times its address changed, appeared or went away since the node
    /// started.
    #[serde(default)]
    pub address_changes: u64,
    /// The NAT in front of it, as the reflectors show it:
    /// `MAPPING/ALLOCATION`, e.g. `endpoint-independent/preserving`.
    #[serde(default)]
    pub nat: String,
    /// Its outside address as the coordinator's reflector sees it.
    #[serde(default)]
    pub reflexive: Option<String>,
}

/// One association.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AssociationStatus {
    /// Its coordinator-assigned id, once installed.
    pub id: Option<String>,
    /// The local service.
    pub service: String,
    /// `node/service` of the peer.
    pub peer: String,
    /// The ingress address WireGuard's `Endpoint` points at.
    pub ingress: Option<String>,
    /// `up` (a path is active), `down`, or `waiting` (not installed yet).
    pub state: String,
    /// `whole-packet` or `segmented`.
    pub mode: String,
    /// Its paths.
    pub paths: Vec<PathStatus>,
    /// Datagrams dropped, by reason.
    pub dropped: Drops,
    /// What happened to its paths lately, oldest first (at most the last
    /// 32 events).
    #[serde(default)]
    pub events: Vec<PathEventStatus>,
    /// Events recorded since it was installed (older ones are forgotten).
    #[serde(default)]
    pub events_recorded: u64,
    /// Its leg of the coordinator's relay, when one is offered.
    #[serde(default)]
    pub relay: Option<RelayLegStatus>,
    /// The peer's candidate addresses the coordinator passed on
    /// (reflexive, predicted, host).
    #[serde(default)]
    pub candidates: u64,
    /// Candidate pairs (uplink, remote address) tried: every path, peer
    /// reflexive ones and the relay's included.
    #[serde(default)]
    pub pairs_tried: u64,
    /// Of those, the pairs that ever answered a probe.
    #[serde(default)]
    pub pairs_answered: u64,
    /// Birthday probes sent (or pings from temporary sockets), `[nat]
    /// birthday`.
    #[serde(default)]
    pub birthday_probes: u64,
    /// Temporary sockets opened for birthday probing.
    #[serde(default)]
    pub birthday_sockets: u64,
}

/// This node's leg of an association's relay allocation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RelayLegStatus {
    /// The relay port's address.
    pub address: String,
    /// The allocation at the relay.
    pub allocation: u64,
    /// Which leg this node binds (0 or 1).
    pub leg: u8,
    /// Uplinks whose mesh socket has the leg pinned (bound and refreshed).
    pub pinned: Vec<String>,
}

/// One event of an association's path history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PathEventStatus {
    /// When (Unix milliseconds).
    pub at_unix_ms: u64,
    /// The uplink.
    pub uplink: String,
    /// The path's id; absent for an uplink's own events.
    #[serde(default)]
    pub path: Option<String>,
    /// The path's remote address.
    #[serde(default)]
    pub remote: Option<String>,
    /// `added`, `validated`, `failed`, `removed`, `carrying`,
    /// `stopped-carrying`, `held-back`, `uplink-down`, `uplink-up`.
    pub kind: String,
    /// For `failed`: how long the path had gone without an answered probe
    /// when it was declared failed (the detection time).
    #[serde(default)]
    pub detection_ms: Option<f64>,
    /// For `validated`: the smoothed round trip then.
    #[serde(default)]
    pub rtt_ms: Option<f64>,
    /// For `stopped-carrying` and `held-back`: the scheduler's reason.
    #[serde(default)]
    pub reason: Option<String>,
    /// The event in words.
    pub detail: String,
}

/// Drops of one association, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drops {
    /// Ingress datagrams from someone other than the service.
    pub ingress_foreign: u64,
    /// Ingress datagrams with no active path.
    pub no_path: u64,
    /// Mesh data from an unvalidated source.
    pub unvalidated: u64,
    /// Replayed control packets.
    pub replays: u64,
}

/// One path.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PathStatus {
    /// Its id within the association.
    pub id: String,
    /// `direct-public`, `direct-intranet`, `coordinator-relay`, `node-relay`.
    pub kind: String,
    /// The uplink it leaves from.
    pub uplink: String,
    /// The remote address.
    pub remote: String,
    /// `probing`, `active`, `failed`.
    pub state: String,
    /// Smoothed round-trip time.
    pub rtt_ms: Option<f64>,
    /// Loss estimate, 0 to 1.
    pub loss: f64,
    /// Share of data the scheduler gives it, 0 to 1.
    pub weight: f64,
    /// Data bytes sent.
    pub tx_bytes: u64,
    /// Data bytes received.
    pub rx_bytes: u64,
    /// Why the scheduler gives it that weight: `carrying`, `not-validated`,
    /// `stale`, `backup`, `metered`, `slow`, `lossy`, `relayed`,
    /// `settling`, `redundant`.
    #[serde(default)]
    pub reason: String,
    /// The reason in words.
    #[serde(default)]
    pub why: String,
    /// Its share of the data bytes the association's present paths sent,
    /// 0 to 1 (a path that is gone takes its bytes with it).
    #[serde(default)]
    pub tx_share: f64,
    /// Round-trip time variance (smoothed mean deviation).
    #[serde(default)]
    pub jitter_ms: Option<f64>,
    /// Smoothed forward one-way delay above the lowest of the association's
    /// paths (clock offsets cancel out between paths; the absolute value
    /// cannot be measured without synchronized clocks).
    #[serde(default)]
    pub fwd_delay_ms: Option<f64>,
    /// Queueing on the way out: forward delay above its recent minimum.
    #[serde(default)]
    pub queue_ms: f64,
    /// Delivery rate in the receiver's last report, Mbit/s.
    #[serde(default)]
    pub delivery_mbps: f64,
    /// The rate the scheduler plans with (the capacity hint, else the
    /// measured capacity, else the initial guess raised while the path
    /// takes all it is given; lowered for loss), Mbit/s.
    #[serde(default)]
    pub plan_mbps: f64,
    /// The path's capacity as measured: the most it delivered while its
    /// queue stood as the plan expected, over the last 5 to 10 s; absent
    /// when not measured lately.
    #[serde(default)]
    pub capacity_mbps: Option<f64>,
    /// Pings sent.
    #[serde(default)]
    pub pings: u64,
    /// Pongs matched.
    #[serde(default)]
    pub pongs: u64,
    /// Milliseconds since anything authentic came from its remote address.
    #[serde(default)]
    pub last_heard_ms: Option<u64>,
    /// Where the peer answers this path from, when not its remote address
    /// (the peer's NAT maps each destination to a new port).
    #[serde(default)]
    pub answers_from: Option<String>,
}

impl AssociationStatus {
    /// The status of an installed association of local service `service`
    /// at `now`.
    pub fn of(
        view: AssociationView<'_>,
        service: &str,
        mode: &str,
        now: Instant,
        uplink_name: impl Fn(u16) -> String,
    ) -> Self {
        let spec = view.spec();
        let history = view.history();
        let sent: u64 = view.paths().map(|p| p.tx.bytes).sum();
        let lowest = view
            .paths()
            .filter(|p| p.state == PathState::Active)
            .filter_map(|p| p.estimates().fwd_min_us)
            .min();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let paths = view
            .paths()
            .map(|p| {
                let est = p.estimates();
                let choice = history.choice(p.id);
                PathStatus {
                    id: p.id.0.to_string(),
                    kind: p.kind.as_str().to_owned(),
                    uplink: uplink_name(p.uplink.0),
                    remote: p.remote.to_string(),
                    state: p.state.as_str().to_owned(),
                    rtt_ms: p.srtt.map(ms),
                    loss: est.loss,
                    weight: choice.map_or(0.0, |c| c.weight),
                    tx_bytes: p.tx.bytes,
                    rx_bytes: p.rx.bytes,
                    reason: choice.map_or("", |c| c.reason.code()).to_owned(),
                    why: choice.map_or("", |c| c.reason.as_str()).to_owned(),
                    tx_share: if sent > 0 {
                        p.tx.bytes as f64 / sent as f64
                    } else {
                        0.0
                    },
                    jitter_ms: p.srtt.map(|_| ms(p.rttvar)),
                    fwd_delay_ms: est
                        .fwd_us
                        .zip(lowest)
                        .map(|(fwd, low)| (fwd - low).max(0) as f64 / 1e3),
                    queue_ms: ms(est.queue_delay()),
                    delivery_mbps: est.delivery * 8.0 / 1e6,
                    plan_mbps: est.effective_rate() * 8.0 / 1e6,
                    capacity_mbps: est.capacity.map(|c| c * 8.0 / 1e6),
                    pings: p.pings,
                    pongs: p.pongs,
                    last_heard_ms: p
                        .last_heard
                        .map(|at| now.saturating_duration_since(at).as_millis() as u64),
                    answers_from: p.answers_from.map(|a| a.to_string()),
                }
            })
            .collect();
        let events = history
            .events()
            .map(|e| PathEventStatus {
                at_unix_ms: e.at_unix_us / 1_000,
                uplink: uplink_name(e.uplink.0),
                path: e.path.map(|p| p.0.to_string()),
                remote: e.remote.map(|r| r.to_string()),
                kind: e.kind.code().to_owned(),
                detection_ms: match e.kind {
                    PathEventKind::Failed { silent_for } => silent_for.map(ms),
                    _ => None,
                },
                rtt_ms: match e.kind {
                    PathEventKind::Validated { rtt } => Some(ms(rtt)),
                    _ => None,
                },
                reason: match e.kind {
                    PathEventKind::StoppedCarrying { reason }
                    | PathEventKind::HeldBack { reason } => Some(reason.code().to_owned()),
                    _ => None,
                },
                detail: e.kind.to_string(),
            })
            .collect();
        let c = view.counters();
        Self {
            id: Some(spec.id.0.to_string()),
            service: service.to_owned(),
            peer: spec.peer.clone(),
            ingress: Some(view.ingress_local().unwrap_or(spec.ingress).to_string()),
            state: if view.is_up() { "up" } else { "down" }.to_owned(),
            mode: mode.to_owned(),
            paths,
            dropped: Drops {
                ingress_foreign: c.ingress_foreign,
                no_path: c.no_path,
                unvalidated: c.unvalidated,
                replays: c.replays,
            },
            events,
            events_recorded: history.recorded(),
            candidates: spec.remotes.len() as u64,
            pairs_tried: view.paths().count() as u64,
            pairs_answered: view.paths().filter(|p| p.pongs > 0).count() as u64,
            birthday_probes: c.birthday_probes,
            birthday_sockets: c.birthday_sockets,
            relay: view.relay().map(|(offer, pinned)| RelayLegStatus {
                address: offer.relay.to_string(),
                allocation: offer.allocation,
                leg: offer.leg,
                pinned: pinned.into_iter().map(|u| uplink_name(u.0)).collect(),
            }),
        }
    }
}

/// Sums path traffic per uplink over every association.
pub fn uplink_traffic(plane: &DataPlane, uplink: u16) -> (u64, u64) {
    plane
        .associations()
        .flat_map(|a| {
            a.paths()
                .filter(|p| p.uplink.0 == uplink)
                .map(|p| (p.tx.bytes, p.rx.bytes))
                .collect::<Vec<_>>()
        })
        .fold((0, 0), |(tx, rx), (t, r)| (tx + t, rx + r))
}

/// A Prometheus label value, escaped (backslash, quote, newline).
pub fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl NodeStatus {
    /// The snapshot as Prometheus text exposition (version 0.0.4).
    pub fn metrics(&self) -> String {
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        };
        let node = format!("node=\"{}\"", label(&self.node.name));
        family(
            "transitloom_node_admitted",
            "gauge",
            "1 when the coordinator admits this node.",
            vec![(
                node.clone(),
                f64::from(u8::from(self.node.admission == "admitted")),
            )],
        );
        family(
            "transitloom_node_control_transport",
            "gauge",
            "1 for the carrier of the connected control session (quic or tcp).",
            ["quic", "tcp"]
                .into_iter()
                .map(|carrier| {
                    let on = self.node.control_transport.as_deref() == Some(carrier);
                    (
                        format!("{node},transport=\"{carrier}\""),
                        f64::from(u8::from(on)),
                    )
                })
                .collect(),
        );
        if let Some(left) = self.node.cert_expires_in_s {
            family(
                "transitloom_node_certificate_expires_in_seconds",
                "gauge",
                "Seconds until the node certificate expires (renewed at two thirds of its life).",
                vec![(node.clone(), left as f64)],
            );
        }
        family(
            "transitloom_node_reloads_total",
            "counter",
            "Configuration reloads (SIGHUP), by result.",
            vec![
                (
                    format!("{node},result=\"applied\""),
                    self.reload.applied as f64,
                ),
                (
                    format!("{node},result=\"refused\""),
                    self.reload.refused as f64,
                ),
            ],
        );
        if let (Some(result), Some(at)) = (&self.reload.last_result, self.reload.last_unix_s) {
            family(
                "transitloom_node_last_reload_success",
                "gauge",
                "1 when the last configuration reload was applied, 0 when it was refused.",
                vec![(node.clone(), f64::from(u8::from(result == "applied")))],
            );
            family(
                "transitloom_node_last_reload_timestamp_seconds",
                "gauge",
                "When the last configuration reload happened (Unix time).",
                vec![(node.clone(), at as f64)],
            );
        }
        let uplink = |u: &UplinkStatus| format!("{node},uplink=\"{}\"", label(&u.name));
        family(
            "transitloom_uplink_tx_bytes_total",
            "counter",
            "Data bytes sent through the uplink.",
            self.uplinks
                .iter()
                .map(|u| (uplink(u), u.tx_bytes as f64))
                .collect(),
        );
        family(
            "transitloom_uplink_rx_bytes_total",
            "counter",
            "Data bytes received through the uplink.",
            self.uplinks
                .iter()
                .map(|u| (uplink(u), u.rx_bytes as f64))
                .collect(),
        );
        family(
            "transitloom_uplink_info",
            "gauge",
            "Always 1: the uplink's address (empty while down), priority and metering.",
            self.uplinks
                .iter()
                .map(|u| {
                    let labels = format!(
                        "{},address=\"{}\",priority=\"{}\",metered=\"{}\"",
                        uplink(u),
                        label(u.address.as_deref().unwrap_or("")),
                        label(&u.priority),
                        u.metered
                    );
                    (labels, 1.0)
                })
                .collect(),
        );
        family(
            "transitloom_uplink_up",
            "gauge",
            "1 while the uplink has a usable address and its sockets are bound.",
            self.uplinks
                .iter()
                .map(|u| (uplink(u), f64::from(u8::from(u.state == "up"))))
                .collect(),
        );
        family(
            "transitloom_uplink_paths_active",
            "gauge",
            "Active paths through the uplink, over every association.",
            self.uplinks
                .iter()
                .map(|u| (uplink(u), u.paths_active as f64))
                .collect(),
        );
        family(
            "transitloom_uplink_capacity_hint_bits_per_second",
            "gauge",
            "The operator's capacity hint for the uplink (capacity_mbps), where given.",
            self.uplinks
                .iter()
                .filter_map(|u| u.capacity_mbps.map(|c| (uplink(u), c * 1e6)))
                .collect(),
        );
        family(
            "transitloom_uplink_address_changes_total",
            "counter",
            "Times the uplink's address changed, appeared or went away while the node ran.",
            self.uplinks
                .iter()
                .map(|u| (uplink(u), u.address_changes as f64))
                .collect(),
        );
        let assoc = |a: &AssociationStatus| {
            format!(
                "{node},association=\"{}\",service=\"{}\",peer=\"{}\"",
                label(a.id.as_deref().unwrap_or("")),
                label(&a.service),
                label(&a.peer)
            )
        };
        family(
            "transitloom_association_up",
            "gauge",
            "1 when at least one path of the association is active.",
            self.associations
                .iter()
                .map(|a| (assoc(a), f64::from(u8::from(a.state == "up"))))
                .collect(),
        );
        let mut drops = Vec::new();
        for a in &self.associations {
            for (reason, n) in [
                ("ingress_foreign", a.dropped.ingress_foreign),
                ("no_path", a.dropped.no_path),
                ("unvalidated", a.dropped.unvalidated),
                ("replay", a.dropped.replays),
            ] {
                drops.push((format!("{},reason=\"{reason}\"", assoc(a)), n as f64));
            }
        }
        family(
            "transitloom_relay_leg_bound",
            "gauge",
            "1 for each uplink whose mesh socket has the association's relay leg bound.",
            self.associations
                .iter()
                .filter_map(|a| a.relay.as_ref().map(|r| (a, r)))
                .flat_map(|(a, r)| {
                    r.pinned
                        .iter()
                        .map(move |u| (format!("{},uplink=\"{}\"", assoc(a), label(u)), 1.0))
                })
                .collect(),
        );
        family(
            "transitloom_association_path_events_total",
            "counter",
            "Path events recorded (validations, failures, uplink changes, scheduling changes).",
            self.associations
                .iter()
                .filter(|a| a.id.is_some())
                .map(|a| (assoc(a), a.events_recorded as f64))
                .collect(),
        );
        family(
            "transitloom_association_dropped_total",
            "counter",
            "Datagrams dropped, by reason.",
            drops,
        );
        let path_samples = |value: &dyn Fn(&PathStatus) -> Option<f64>| {
            self.associations
                .iter()
                .flat_map(|a| {
                    a.paths.iter().filter_map(move |p| {
                        let labels = format!(
                            "{},path=\"{}\",kind=\"{}\",uplink=\"{}\",remote=\"{}\"",
                            assoc(a),
                            label(&p.id),
                            label(&p.kind),
                            label(&p.uplink),
                            label(&p.remote)
                        );
                        value(p).map(|v| (labels, v))
                    })
                })
                .collect::<Vec<_>>()
        };
        family(
            "transitloom_path_active",
            "gauge",
            "1 when the path is active.",
            path_samples(&|p| Some(f64::from(u8::from(p.state == "active")))),
        );
        family(
            "transitloom_path_rtt_seconds",
            "gauge",
            "Smoothed round-trip time of the path.",
            path_samples(&|p| p.rtt_ms.map(|ms| ms / 1e3)),
        );
        family(
            "transitloom_path_loss_ratio",
            "gauge",
            "Loss estimate of the path.",
            path_samples(&|p| Some(p.loss)),
        );
        family(
            "transitloom_path_weight",
            "gauge",
            "Share of data the scheduler gives the path.",
            path_samples(&|p| Some(p.weight)),
        );
        family(
            "transitloom_path_carrying",
            "gauge",
            "1 while the scheduler places data on the path (reason carrying).",
            path_samples(&|p| Some(f64::from(u8::from(p.reason == "carrying")))),
        );
        family(
            "transitloom_path_jitter_seconds",
            "gauge",
            "Round-trip time variance of the path.",
            path_samples(&|p| p.jitter_ms.map(|ms| ms / 1e3)),
        );
        family(
            "transitloom_path_forward_delay_seconds",
            "gauge",
            "Forward one-way delay of the path above the association's lowest.",
            path_samples(&|p| p.fwd_delay_ms.map(|ms| ms / 1e3)),
        );
        family(
            "transitloom_path_delivery_bytes_per_second",
            "gauge",
            "Delivery rate of the path in the receiver's last report.",
            path_samples(&|p| Some(p.delivery_mbps * 1e6 / 8.0)),
        );
        family(
            "transitloom_path_plan_bytes_per_second",
            "gauge",
            "The rate the scheduler plans the path with (the capacity hint, the measured capacity or the initial guess, lowered for loss).",
            path_samples(&|p| Some(p.plan_mbps * 1e6 / 8.0)),
        );
        family(
            "transitloom_path_capacity_bytes_per_second",
            "gauge",
            "Capacity of the path as measured: the most it delivered while its queue stood as the plan expected, over the last 5 to 10 s; absent until measured.",
            path_samples(&|p| p.capacity_mbps.map(|mbps| mbps * 1e6 / 8.0)),
        );
        family(
            "transitloom_path_tx_bytes_total",
            "counter",
            "Data bytes sent on the path.",
            path_samples(&|p| Some(p.tx_bytes as f64)),
        );
        family(
            "transitloom_path_rx_bytes_total",
            "counter",
            "Data bytes received on the path.",
            path_samples(&|p| Some(p.rx_bytes as f64)),
        );
        if let Some(relay) = &self.relay {
            relay.write_metrics(&node, &mut out);
        }
        out
    }

    /// A WireGuard `[Peer]` snippet per association: the remote service as a
    /// comment and `Endpoint = INGRESS`. With `interface`, `wg set` commands.
    pub fn wg_peers(&self, interface: Option<&str>) -> String {
        let mut out = String::new();
        for a in &self.associations {
            let Some(ingress) = &a.ingress else {
                let _ = writeln!(
                    out,
                    "# {} via {}: no ingress assigned yet\n",
                    a.peer, a.service
                );
                continue;
            };
            match interface {
                None => {
                    let _ = writeln!(
                        out,
                        "# {} (service {}, association {})",
                        a.peer,
                        a.service,
                        a.id.as_deref().unwrap_or("not installed yet")
                    );
                    let _ = writeln!(out, "[Peer]\nEndpoint = {ingress}\n");
                }
                Some(ifname) => {
                    let _ = writeln!(
                        out,
                        "# {} (service {}): put {}'s WireGuard public key for PUBKEY",
                        a.peer, a.service, a.peer
                    );
                    let _ = writeln!(out, "wg set {ifname} peer PUBKEY endpoint {ingress}\n");
                }
            }
        }
        out
    }
}

pub mod explain;
pub mod relay;

#[cfg(test)]
mod tests;
