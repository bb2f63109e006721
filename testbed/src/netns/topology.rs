//! The network most namespace tests and `tl-bench wireguard` stand on: two
//! hosts, A and B, each on its own /24 routed through a hub (where the
//! coordinator runs), and the node spec each host's node gets.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use super::{veth, Error, Namespace};
use crate::localmesh::{CoordinatorSpec, MeshSpec, NodeSpec, ServiceSpec};

/// Hub, A and B. A is `10.S.1.2` behind the hub's `10.S.1.1`, B `10.S.2.2`
/// behind `10.S.2.1`, where S is the `subnet` given to [`build`]; the hub
/// forwards between them. Each host's link to the hub is named `hub`.
///
/// [`build`]: HubAndTwo::build
#[derive(Debug)]
pub struct HubAndTwo {
    // Dropped in this order: the hosts, then the hub.
    pub a: Namespace,
    pub b: Namespace,
    pub hub: Namespace,
    /// A's and B's addresses.
    pub a_addr: IpAddr,
    pub b_addr: IpAddr,
    /// The hub's address on A's side (where a coordinator listens).
    pub hub_a: IpAddr,
}

impl HubAndTwo {
    /// Creates `{run}-hub`, `{run}-a` and `{run}-b` and wires them.
    ///
    /// # Errors
    /// When a namespace, link, address or route cannot be made.
    pub fn build(run: &str, subnet: u8) -> Result<Self, Error> {
        let at = |side: u8, host: u8| IpAddr::V4(Ipv4Addr::new(10, subnet, side, host));
        let hub = Namespace::create(&format!("{run}-hub"))?;
        let a = Namespace::create(&format!("{run}-a"))?;
        let b = Namespace::create(&format!("{run}-b"))?;
        veth(&hub, "hub-a", &a, "hub")?;
        veth(&hub, "hub-b", &b, "hub")?;
        hub.add_address("hub-a", &format!("{}/24", at(1, 1)))?;
        hub.add_address("hub-b", &format!("{}/24", at(2, 1)))?;
        hub.enable_forwarding()?;
        a.add_address("hub", &format!("{}/24", at(1, 2)))?;
        a.add_route("default", at(1, 1))?;
        b.add_address("hub", &format!("{}/24", at(2, 2)))?;
        b.add_route("default", at(2, 1))?;
        Ok(Self {
            a,
            b,
            hub,
            a_addr: at(1, 2),
            b_addr: at(2, 2),
            hub_a: at(1, 1),
        })
    }
}

impl HubAndTwo {
    /// The mesh most tests run here: a coordinator in the hub on
    /// `hub_a:coordinator_port`, node `alpha` on A and `beta` on B (see
    /// [`wg_node`]), associated, with ingress ports from 41000-41999 and
    /// 42000-42999.
    pub fn wg_mesh(&self, coordinator_port: u16, wg_port: u16) -> MeshSpec {
        MeshSpec {
            coordinator: CoordinatorSpec {
                listen: SocketAddr::new(self.hub_a, coordinator_port),
                status_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7481),
                wrap: self.hub.wrap(),
            },
            nodes: vec![
                wg_node(
                    "alpha",
                    &self.a,
                    self.a_addr,
                    "beta",
                    "127.0.0.1:41000-41999",
                    wg_port,
                ),
                wg_node(
                    "beta",
                    &self.b,
                    self.b_addr,
                    "alpha",
                    "127.0.0.1:42000-42999",
                    wg_port,
                ),
            ],
        }
    }
}

/// The node of a host in `ns`: one uplink `hub` at `uplink`, status on
/// 127.0.0.1:7480 (each namespace has its own loopback), one service `wg0`
/// whose target is a WireGuard listening on 127.0.0.1:`wg_port`, and the
/// association with `peer`'s `wg0`.
pub fn wg_node(
    name: &str,
    ns: &Namespace,
    uplink: IpAddr,
    peer: &str,
    ingress_range: &str,
    wg_port: u16,
) -> NodeSpec {
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    NodeSpec {
        name: name.to_owned(),
        wrap: ns.wrap(),
        uplinks: vec![("hub".to_owned(), uplink)],
        status_listen: SocketAddr::new(lo, 7480),
        services: vec![ServiceSpec {
            name: "wg0".to_owned(),
            target: SocketAddr::new(lo, wg_port),
            ingress_range: ingress_range.to_owned(),
        }],
        associations: vec![("wg0".to_owned(), format!("{peer}/wg0"))],
        advertise_private: true,
    }
}

/// A test's scratch folder: created now, removed when the test passes,
/// kept (and named on stderr) when it fails.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// Creates `path`.
    ///
    /// # Errors
    /// When it cannot be created.
    pub fn create(path: PathBuf) -> Result<Self, Error> {
        std::fs::create_dir_all(&path).map_err(|source| Error::Io {
            what: format!("creating {}", path.display()),
            source,
        })?;
        Ok(Self(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("logs and configs kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
