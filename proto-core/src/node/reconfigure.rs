//! The operator changes the node's services and associations while it runs
//! (a reloaded configuration): what is unchanged keeps its sockets, paths
//! and counters; what is gone is withdrawn at once; what is new is declared
//! to the coordinator, which installs it as at start-up.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Instant;

use super::{Node, NodeEvent, ServiceSpec};
use crate::control::msg::{MsgError, Name, PeerRef};
use crate::id::AssocId;
use crate::machine::Output;

/// A local association by its names: (local service, `node/service` peer).
pub type AssociationName = (String, String);

/// What [`Node::reconfigure`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reconfigured {
    /// Services that are new.
    pub services_added: Vec<String>,
    /// Services that are gone.
    pub services_removed: Vec<String>,
    /// Services whose local address changed.
    pub services_retargeted: Vec<String>,
    /// Associations that are new (declared; installed when the coordinator
    /// pushes them).
    pub associations_added: Vec<AssociationName>,
    /// Associations that are gone.
    pub associations_removed: Vec<AssociationName>,
    /// Associations whose ingress address changed.
    pub ingress_moved: Vec<AssociationName>,
    /// Installed associations withdrawn because they are gone.
    pub withdrawn: Vec<AssocId>,
}

impl Reconfigured {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.services_added.is_empty()
            && self.services_removed.is_empty()
            && self.services_retargeted.is_empty()
            && self.associations_added.is_empty()
            && self.associations_removed.is_empty()
            && self.ingress_moved.is_empty()
    }
}

/// Why a new set of services was refused (nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReconfigureError {
    /// A service or peer name is not a mesh name.
    #[error("{name:?}: {source}")]
    Name {
        /// The name.
        name: String,
        /// Why.
        source: MsgError,
    },
    /// Two services have one name.
    #[error("service {0:?} is listed twice")]
    DuplicateService(String),
    /// Two associations would share one ingress address.
    #[error("ingress {ingress} is given to both {:?} and {:?}", .associations[0], .associations[1])]
    IngressShared {
        /// The address.
        ingress: SocketAddr,
        /// The two associations.
        associations: Box<[AssociationName; 2]>,
    },
}

/// Every association of `services`, with its ingress and its service.
fn associations(services: &[ServiceSpec]) -> BTreeMap<AssociationName, (SocketAddr, &ServiceSpec)> {
    services
        .iter()
        .flat_map(|s| {
            s.peers
                .iter()
                .map(move |(peer, &ingress)| ((s.name.clone(), peer.clone()), (ingress, s)))
        })
        .collect()
}

fn check(services: &[ServiceSpec]) -> Result<(), ReconfigureError> {
    let mut names = BTreeSet::new();
    for service in services {
        Name::new(&service.name).map_err(|source| ReconfigureError::Name {
            name: service.name.clone(),
            source,
        })?;
        if !names.insert(service.name.as_str()) {
            return Err(ReconfigureError::DuplicateService(service.name.clone()));
        }
        for peer in service.peers.keys() {
            peer.parse::<PeerRef>()
                .map_err(|source| ReconfigureError::Name {
                    name: peer.clone(),
                    source,
                })?;
        }
    }
    let mut owners: BTreeMap<SocketAddr, AssociationName> = BTreeMap::new();
    for (name, (ingress, _)) in associations(services) {
        if let Some(first) = owners.insert(ingress, name.clone()) {
            return Err(ReconfigureError::IngressShared {
                ingress,
                associations: Box::new([first, name]),
            });
        }
    }
    Ok(())
}

impl Node {
    /// The services this node runs with, and the peers they consent to.
    pub fn services(&self) -> &[ServiceSpec] {
        &self.config.services
    }

    /// Replaces the node's services and associations (an operator reloaded
    /// its configuration). An association that is in both keeps its id,
    /// sockets, validated paths and counters; a changed ingress address
    /// moves only its ingress socket, and a changed service address only
    /// changes where data is delivered. An installed association that is
    /// gone is withdrawn at once (its sockets close). The coordinator gets
    /// the new registration over the live session (or with the next
    /// welcome), withdraws what is gone on the peers' side too, and installs
    /// what is new where the peer consents.
    ///
    /// # Errors
    /// A bad name, a service listed twice, or an ingress address given to
    /// two associations; nothing changes then.
    pub fn reconfigure(
        &mut self,
        now: Instant,
        services: Vec<ServiceSpec>,
    ) -> Result<Reconfigured, ReconfigureError> {
        check(&services)?;
        let mut report = Reconfigured::default();
        let old_services: BTreeMap<&str, &ServiceSpec> = self
            .config
            .services
            .iter()
            .map(|s| (s.name.as_str(), s))
            .collect();
        let new_services: BTreeMap<&str, &ServiceSpec> =
            services.iter().map(|s| (s.name.as_str(), s)).collect();
        for (name, new) in &new_services {
            match old_services.get(name) {
                None => report.services_added.push((*name).to_owned()),
                Some(old) if old.target != new.target || old.id != new.id => {
                    report.services_retargeted.push((*name).to_owned())
                }
                Some(_) => {}
            }
        }
        report.services_removed = old_services
            .keys()
            .filter(|n| !new_services.contains_key(*n))
            .map(|n| (*n).to_owned())
            .collect();
        let old = associations(&self.config.services);
        let new = associations(&services);
        for (name, (ingress, _)) in &new {
            match old.get(name) {
                None => report.associations_added.push(name.clone()),
                Some((was, _)) if was != ingress => report.ingress_moved.push(name.clone()),
                Some(_) => {}
            }
        }
        report.associations_removed = old
            .keys()
            .filter(|n| !new.contains_key(*n))
            .cloned()
            .collect();

        // Withdraw what is gone first, so its ingress address is free.
        let installed: Vec<(AssocId, AssociationName)> = self
            .installed
            .iter()
            .map(|(&id, i)| (id, (i.service.clone(), i.peer.clone())))
            .collect();
        let mut moves = Vec::new();
        for (id, name) in installed {
            let Some(&(ingress, spec)) = new.get(&name) else {
                self.installed.remove(&id);
                let _ = self.plane.withdraw(id);
                tracing::info!(assoc = %id, service = %name.0, peer = %name.1, "association withdrawn: no longer configured");
                self.outputs
                    .push_back(Output::Event(NodeEvent::Withdrawn { assoc: id }));
                report.withdrawn.push(id);
                continue;
            };
            moves.push((id, ingress));
            if let Err(err) = self.plane.retarget(id, spec.id, spec.target) {
                tracing::warn!(assoc = %id, %err, "association not retargeted");
            }
        }
        // Checked above: the remaining addresses are distinct.
        if let Err(err) = self.plane.move_ingress(&moves) {
            tracing::warn!(%err, "ingress addresses not moved");
        }
        self.config.services = services;
        if !report.is_empty() {
            self.session
                .register(now, &mut self.transport, &self.config);
        }
        self.after(now);
        Ok(report)
    }
}
