//! What the daemon tells operators: the node's standing with the
//! coordinator, kept from the node's events, the bytes each uplink carried,
//! and the `/status` snapshot assembled from the node and the
//! configuration.

use std::collections::BTreeMap;

use transitloom_proto_core::control::msg::RejectCode;
use transitloom_proto_core::dataplane::{DataEvent, DataPlane, NatClass, PathState, SocketRole};
use transitloom_proto_core::node::{Node, NodeEvent, SessionState};
use transitloom_proto_core::UplinkId;

use super::setup::Setup;
use super::uplink_watch::{UplinkReach, UplinkWatch};
use crate::config::UplinkSource;
use crate::status::{AssociationStatus, NodeInfo, NodeStatus, ReloadStatus, UplinkStatus};

/// The only carrying mode this build has.
const MODE: &str = "whole-packet";

/// The coordinator's last word on this node that outlives a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Pending,
    Revoked,
}

/// The node's standing, followed from its events.
#[derive(Debug, Clone, Default)]
pub(crate) struct Standing {
    enrolled: bool,
    refusal: Option<Refusal>,
    /// Uplinks whose last mesh socket bind failed.
    uplink_down: BTreeMap<UplinkId, bool>,
}

impl Standing {
    /// The standing of a node that starts enrolled (a kept certificate) or not.
    pub(crate) fn new(enrolled: bool) -> Self {
        Self {
            enrolled,
            ..Self::default()
        }
    }

    /// Follows one event.
    pub(crate) fn on_event(&mut self, event: &NodeEvent) {
        match event {
            NodeEvent::Enrolled { .. } => self.enrolled = true,
            NodeEvent::Session(SessionState::Live) => self.refusal = None,
            NodeEvent::Refused { code, .. } => match code {
                RejectCode::Pending => self.refusal = Some(Refusal::Pending),
                RejectCode::Revoked => self.refusal = Some(Refusal::Revoked),
                _ => {}
            },
            NodeEvent::Revoked => self.refusal = Some(Refusal::Revoked),
            NodeEvent::Data(DataEvent::Bound {
                role: SocketRole::Mesh(_, uplink),
                ..
            }) => {
                self.uplink_down.insert(*uplink, false);
            }
            NodeEvent::Data(DataEvent::BindFailed {
                role: SocketRole::Mesh(_, uplink),
                ..
            }) => {
                self.uplink_down.insert(*uplink, true);
            }
            _ => {}
        }
    }

    /// True when the last refusal kept is `code`'s.
    pub(crate) fn refused_with(&self, code: RejectCode) -> bool {
        match code {
            RejectCode::Pending => self.refusal == Some(Refusal::Pending),
            RejectCode::Revoked => self.refusal == Some(Refusal::Revoked),
            _ => false,
        }
    }

    /// `enrolling` without a certificate, `admitted` while the session is
    /// live, `pending` or `revoked` after such a refusal, else the session's
    /// state (`connecting`, `backoff`, …).
    pub(crate) fn admission(&self, session: SessionState) -> &'static str {
        if !self.enrolled {
            "enrolling"
        } else if session == SessionState::Live {
            "admitted"
        } else if session == SessionState::Revoked || self.refusal == Some(Refusal::Revoked) {
            "revoked"
        } else if self.refusal == Some(Refusal::Pending) {
            "pending"
        } else {
            session.as_str()
        }
    }

    /// Whether the last mesh socket bind on `uplink` failed.
    fn bind_failed(&self, uplink: UplinkId) -> bool {
        self.uplink_down.get(&uplink).copied().unwrap_or(false)
    }
}

/// The `/status` snapshot: every configured association, installed or
/// still waiting, in config order.
pub(crate) fn node_status(
    node: &Node,
    setup: &Setup,
    standing: &Standing,
    uplinks: &UplinkWatch,
    now_unix_s: u64,
) -> NodeStatus {
    let plane = node.data_plane();
    let now = std::time::Instant::now();
    let uplink_name = |u: u16| {
        setup
            .uplinks
            .iter()
            .find(|x| x.id.0 == u)
            .map_or_else(|| format!("uplink#{u}"), |x| x.name.clone())
    };
    let watch = uplinks;
    let uplinks = setup
        .uplinks
        .iter()
        .map(|u| uplink_status(plane, u, watch, standing))
        .collect();
    let associations = setup
        .config
        .associations
        .iter()
        .zip(&setup.ingress)
        .map(|(a, ingress)| {
            let peer = a.peer();
            let installed = plane.associations().find(|v| {
                node.association_names(v.spec().id) == Some((a.service.as_str(), peer.as_str()))
            });
            match installed {
                Some(view) => AssociationStatus::of(view, &a.service, MODE, now, uplink_name),
                None => AssociationStatus {
                    id: None,
                    service: a.service.clone(),
                    peer,
                    ingress: Some(ingress.to_string()),
                    state: "waiting".to_owned(),
                    mode: MODE.to_owned(),
                    ..AssociationStatus::default()
                },
            }
        })
        .collect();
    NodeStatus {
        node: NodeInfo {
            name: setup.config.name.clone(),
            admission: standing.admission(node.session_state()).to_owned(),
            token_expires_in_s: node
                .token_expires_unix_s()
                .map(|at| at.saturating_sub(now_unix_s)),
            control_transport: node.control_transport().map(|c| c.as_str().to_owned()),
            cert_expires_in_s: seconds_until(node.cert_expires_unix_s(), now_unix_s),
            cert_renews_in_s: seconds_until(node.cert_renews_unix_s(), now_unix_s),
            nat: nat_label(
                setup
                    .uplinks
                    .first()
                    .map_or(NatClass::UNKNOWN, |u| plane.nat_class(u.id)),
            ),
        },
        uplinks,
        associations,
        reload: ReloadStatus::default(),
        relay: node.relay().map(|relay| {
            let mut status = crate::status::relay::RelayStatus::of(relay);
            status.offer_refused = node.relay_refused().map(|(offered, seen)| {
                crate::status::relay::RelayOfferRefused {
                    offered: offered.to_string(),
                    seen: seen.to_string(),
                }
            });
            status
        }),
    }
}

/// Seconds from `now_unix_s` until `at`, 0 once past.
fn seconds_until(at: Option<i64>, now_unix_s: u64) -> Option<u64> {
    at.map(|at| u64::try_from(at).unwrap_or(0).saturating_sub(now_unix_s))
}

/// One uplink's status: the watcher's state, the configured policy, the
/// data plane's byte counts and the active paths through it now.
fn uplink_status(
    plane: &DataPlane,
    spec: &transitloom_proto_core::dataplane::UplinkSpec,
    watch: &UplinkWatch,
    standing: &Standing,
) -> UplinkStatus {
    let traffic = plane.uplink_traffic(spec.id);
    let (tx_bytes, rx_bytes) = (traffic.sent.bytes, traffic.received.bytes);
    let watched = watch.get(spec.id);
    let mut down_reason = match watched.map(|w| &w.reach) {
        Some(UplinkReach::Down(why)) => Some(why.clone()),
        _ => None,
    };
    if down_reason.is_none() && standing.bind_failed(spec.id) {
        down_reason = Some("a mesh socket could not be bound on its address".to_owned());
    }
    let address = match watched.map(|w| &w.reach) {
        Some(UplinkReach::Up(ip)) => Some(ip.to_string()),
        Some(UplinkReach::Down(_)) => None,
        None => Some(spec.bind.to_string()),
    };
    let paths_active = plane
        .associations()
        .map(|a| {
            a.paths()
                .filter(|p| p.uplink == spec.id && p.state == PathState::Active)
                .count() as u64
        })
        .sum();
    UplinkStatus {
        name: spec.name.clone(),
        state: if down_reason.is_some() { "down" } else { "up" }.to_owned(),
        tx_bytes,
        rx_bytes,
        address,
        interface: watched.and_then(|w| match &w.source {
            UplinkSource::Interface(name) => Some(name.clone()),
            UplinkSource::Bind(_) => None,
        }),
        down_reason,
        priority: spec.policy.priority.as_str().to_owned(),
        metered: spec.policy.metered,
        capacity_mbps: spec.policy.capacity_bps.map(|bps| bps as f64 / 1e6),
        paths_active,
        address_changes: watched.map_or(0, |w| w.changes),
        nat: nat_label(plane.nat_class(spec.id)),
        reflexive: plane.nat_class(spec.id).reflexive.map(|a| a.to_string()),
    }
}

/// `MAPPING/ALLOCATION`, as status shows a NAT (`unknown` before any
/// reflector answered).
fn nat_label(class: NatClass) -> String {
    if class == NatClass::UNKNOWN {
        return "unknown".to_owned();
    }
    format!("{}/{}", class.mapping.as_str(), class.allocation.as_str())
}
