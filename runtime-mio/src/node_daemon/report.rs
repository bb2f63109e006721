//! What the daemon tells operators: the node's standing with the
//! coordinator, kept from the node's events, and the `/status` snapshot
//! assembled from the node and the configuration.

use std::collections::BTreeMap;

use transitloom_proto_core::control::msg::RejectCode;
use transitloom_proto_core::dataplane::{DataEvent, SocketRole};
use transitloom_proto_core::node::{Node, NodeEvent, SessionState};
use transitloom_proto_core::UplinkId;

use super::setup::Setup;
use crate::status::{
    uplink_traffic, AssociationStatus, NodeInfo, NodeStatus, ReloadStatus, UplinkStatus,
};

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

    fn uplink_state(&self, uplink: UplinkId) -> &'static str {
        if self.uplink_down.get(&uplink).copied().unwrap_or(false) {
            "down"
        } else {
            "up"
        }
    }
}

/// The `/status` snapshot: every configured association, installed or
/// still waiting, in config order.
pub(crate) fn node_status(
    node: &Node,
    setup: &Setup,
    standing: &Standing,
    now_unix_s: u64,
) -> NodeStatus {
    let plane = node.data_plane();
    let uplink_name = |u: u16| {
        setup
            .uplinks
            .iter()
            .find(|x| x.id.0 == u)
            .map_or_else(|| format!("uplink#{u}"), |x| x.name.clone())
    };
    let uplinks = setup
        .uplinks
        .iter()
        .map(|u| {
            let (tx_bytes, rx_bytes) = uplink_traffic(plane, u.id.0);
            UplinkStatus {
                name: u.name.clone(),
                state: standing.uplink_state(u.id).to_owned(),
                tx_bytes,
                rx_bytes,
            }
        })
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
                Some(view) => AssociationStatus::of(view, &a.service, MODE, uplink_name),
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
            nat: "unknown".to_owned(),
        },
        uplinks,
        associations,
        reload: ReloadStatus::default(),
    }
}
