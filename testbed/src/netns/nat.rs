//! Two hosts behind masquerading NAT routers, and a public coordinator
//! ([`NatPair`]): the network of the real-network NAT test.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::topology::wg_node;
use super::{veth, Error, Namespace};
use crate::localmesh::{CoordinatorSpec, MeshSpec};

/// How a NAT router picks the outside port of a new mapping
/// (nftables `masquerade`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Masquerade {
    /// Plain `masquerade`: Linux keeps the inside port when the outside
    /// tuple is free, so one socket shows the same outside address to
    /// every destination (cone-like).
    Preserving,
    /// `masquerade fully-random`: a random outside port per connection
    /// (per destination), the hard case.
    FullyRandom,
}

impl Masquerade {
    fn statement(self) -> &'static str {
        match self {
            Self::Preserving => "masquerade",
            Self::FullyRandom => "masquerade fully-random",
        }
    }
}

/// What a NAT router does with traffic from outside that answers no
/// mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firewall {
    /// Drops it (`policy drop` on input and forward, established and
    /// related let in), as a home or office gateway does.
    DropUnsolicited,
    /// Nothing but the masquerade rule: it is delivered to the router,
    /// which has no socket for it. Conntrack still records it, and the
    /// entry holds the tuple for 30 s after its last packet: a peer's
    /// probe arriving before the host's own first packet to that peer
    /// makes the NAT give the host's packet another outside port.
    None,
}

/// An "internet" namespace, where the coordinator runs on a public address
/// with a second one for its extra reflector, and two sites, each a NAT
/// router masquerading a host on a private network:
///
/// ```text
///  ns …-a            ns …-na                      ns …-inet                       ns …-nb            ns …-b
///  192.168.1.2 ── lan 192.168.1.1                 lo 203.0.113.5, 203.0.113.6                        192.168.2.1 lan ── 192.168.2.2
///                     wan 198.51.100.2 ── veth ── na 198.51.100.1   nb 192.0.2.1 ── veth ── wan 192.0.2.2
///                     (masquerade)                 (forwards)                  (masquerade)
/// ```
///
/// The NATs filter as conntrack does: only what answers a mapping comes
/// back in. The public addresses are documentation ranges, which the mesh
/// treats as public.
#[derive(Debug)]
pub struct NatPair {
    // Dropped in this order: the hosts, the NATs, then the internet.
    pub a: Namespace,
    pub b: Namespace,
    pub nat_a: Namespace,
    pub nat_b: Namespace,
    pub inet: Namespace,
}

impl NatPair {
    /// The coordinator's address (control, reflector and relay).
    pub const COORDINATOR: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 5));
    /// Its second address, the extra reflector.
    pub const REFLECTOR: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 6));
    /// The NAT routers' outside addresses.
    pub const PUBLIC_A: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2));
    pub const PUBLIC_B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
    /// The hosts' private addresses.
    pub const PRIVATE_A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 2));
    pub const PRIVATE_B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 168, 2, 2));
    /// The nftables table [`cut_direct`](Self::cut_direct) makes in the
    /// internet namespace, and the one with its counters.
    const CUT: &'static str = "tlcut";
    const COUNTERS: &'static str = "tlcount";

    /// Creates `{run}-inet`, `{run}-na`, `{run}-nb`, `{run}-a` and `{run}-b`,
    /// wires them and loads the NATs' rules: `nat` for the mapping, and
    /// `firewall` for what else the routers let in.
    ///
    /// # Errors
    /// When a namespace, link, address, route or rule cannot be made.
    pub fn build(run: &str, nat: Masquerade, firewall: Firewall) -> Result<Self, Error> {
        Self::build_sides(run, [nat, nat], firewall)
    }

    /// As [`build`](Self::build), alpha's NAT masquerading as `nats[0]`
    /// and beta's as `nats[1]`.
    ///
    /// # Errors
    /// When a namespace, link, address, route or rule cannot be made.
    pub fn build_sides(
        run: &str,
        nats: [Masquerade; 2],
        firewall: Firewall,
    ) -> Result<Self, Error> {
        let inet = Namespace::create(&format!("{run}-inet"))?;
        let nat_a = Namespace::create(&format!("{run}-na"))?;
        let nat_b = Namespace::create(&format!("{run}-nb"))?;
        let a = Namespace::create(&format!("{run}-a"))?;
        let b = Namespace::create(&format!("{run}-b"))?;
        for addr in [Self::COORDINATOR, Self::REFLECTOR] {
            inet.add_address("lo", &format!("{addr}/32"))?;
        }
        inet.enable_forwarding()?;
        let sites = [
            (&nat_a, "na", [198, 51, 100], &a, 1, nats[0]),
            (&nat_b, "nb", [192, 0, 2], &b, 2, nats[1]),
        ];
        for (router, inet_dev, [p0, p1, p2], host, lan, nat) in sites {
            let outside = |h: u8| IpAddr::V4(Ipv4Addr::new(p0, p1, p2, h));
            let inside = |h: u8| IpAddr::V4(Ipv4Addr::new(192, 168, lan, h));
            veth(&inet, inet_dev, router, "wan")?;
            inet.add_address(inet_dev, &format!("{}/24", outside(1)))?;
            router.add_address("wan", &format!("{}/24", outside(2)))?;
            router.add_route("default", outside(1))?;
            veth(router, "lan", host, "wan")?;
            router.add_address("lan", &format!("{}/24", inside(1)))?;
            host.add_address("wan", &format!("{}/24", inside(2)))?;
            host.add_route("default", inside(1))?;
            router.enable_forwarding()?;
            router.nft(&format!(
                "table ip tlnat {{\n\
                   chain postrouting {{\n\
                     type nat hook postrouting priority srcnat; policy accept;\n\
                     oifname \"wan\" {}\n\
                   }}\n\
                 }}\n",
                nat.statement()
            ))?;
            if firewall == Firewall::DropUnsolicited {
                // A packet dropped before it is delivered never gets its
                // conntrack entry confirmed, so a peer's early probe
                // cannot claim the tuple the host's own mapping needs.
                router.nft(
                    "table inet tlfw {\n\
                       chain input {\n\
                         type filter hook input priority filter; policy drop;\n\
                         ct state established,related accept\n\
                         iifname != \"wan\" accept\n\
                       }\n\
                       chain forward {\n\
                         type filter hook forward priority filter; policy drop;\n\
                         ct state established,related accept\n\
                         iifname \"lan\" accept\n\
                       }\n\
                     }\n",
                )?;
            }
        }
        // What crosses the internet between the two sites (the direct
        // path) and between a site and the coordinator's address.
        inet.nft(&format!(
            "table inet {t} {{\n\
               counter direct {{}}\n\
               counter via_coordinator {{}}\n\
               chain forward {{\n\
                 type filter hook forward priority 0; policy accept;\n\
                 ip saddr {a} ip daddr {b} meta l4proto udp counter name direct\n\
                 ip saddr {b} ip daddr {a} meta l4proto udp counter name direct\n\
               }}\n\
               chain input {{\n\
                 type filter hook input priority 0; policy accept;\n\
                 ip daddr {c} meta l4proto udp counter name via_coordinator\n\
               }}\n\
             }}\n",
            t = Self::COUNTERS,
            a = Self::PUBLIC_A,
            b = Self::PUBLIC_B,
            c = Self::COORDINATOR,
        ))?;
        Ok(Self {
            a,
            b,
            nat_a,
            nat_b,
            inet,
        })
    }

    /// Drops everything between the two NATs' outside addresses in the
    /// internet namespace (both ways); the coordinator stays reachable.
    ///
    /// # Errors
    /// When `nft` refuses.
    pub fn cut_direct(&self) -> Result<(), Error> {
        self.inet.nft(&format!(
            "table inet {t} {{\n\
               chain forward {{\n\
                 type filter hook forward priority -10; policy accept;\n\
                 ip saddr {a} ip daddr {b} drop\n\
                 ip saddr {b} ip daddr {a} drop\n\
               }}\n\
             }}\n",
            t = Self::CUT,
            a = Self::PUBLIC_A,
            b = Self::PUBLIC_B,
        ))
    }

    /// Undoes [`cut_direct`](Self::cut_direct).
    ///
    /// # Errors
    /// When `nft` refuses (no cut in place).
    pub fn restore_direct(&self) -> Result<(), Error> {
        self.inet
            .run("nft", &["delete", "table", "inet", Self::CUT])
            .map(drop)
    }

    /// Bytes of UDP the internet forwarded between the two sites, and
    /// bytes of UDP that reached the coordinator's address (control,
    /// reflector and relay).
    ///
    /// # Errors
    /// When `nft` fails.
    pub fn udp_bytes(&self) -> Result<(u64, u64), Error> {
        Ok((
            self.inet.nft_counter(Self::COUNTERS, "direct")?.1,
            self.inet.nft_counter(Self::COUNTERS, "via_coordinator")?.1,
        ))
    }

    /// The mesh on this network: the coordinator in the internet namespace
    /// on `COORDINATOR:coordinator_port`, node `alpha` on A and `beta` on
    /// B (see [`wg_node`]), each with one uplink `nat` at its private
    /// address and `advertise_private = false` (their private networks do
    /// not reach each other), associated. The coordinator's extra lines
    /// (reflector, relay) are [`coordinator_config`](Self::coordinator_config).
    pub fn wg_mesh(&self, coordinator_port: u16, wg_port: u16) -> MeshSpec {
        let node = |name: &str, ns: &Namespace, addr: IpAddr, peer: &str, range: &str| {
            let mut spec = wg_node(name, ns, addr, peer, range, wg_port);
            spec.uplinks = vec![("nat".to_owned(), addr)];
            spec.advertise_private = false;
            spec
        };
        MeshSpec {
            coordinator: CoordinatorSpec {
                listen: SocketAddr::new(Self::COORDINATOR, coordinator_port),
                status_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7481),
                wrap: self.inet.wrap(),
            },
            nodes: vec![
                node(
                    "alpha",
                    &self.a,
                    Self::PRIVATE_A,
                    "beta",
                    "127.0.0.1:41000-41999",
                ),
                node(
                    "beta",
                    &self.b,
                    Self::PRIVATE_B,
                    "alpha",
                    "127.0.0.1:42000-42999",
                ),
            ],
        }
    }

    /// The coordinator's configuration lines for this network: the second
    /// address as an extra reflector, and the relay on the public address.
    pub fn coordinator_config(coordinator_port: u16) -> String {
        format!(
            "reflectors = [\"{}:{coordinator_port}\"]\n\
             \n\
             [relay]\n\
             data = true\n\
             listen_ip = \"{}\"\n",
            Self::REFLECTOR,
            Self::COORDINATOR,
        )
    }
}
