//! The networks the namespace tests and `tl-bench` stand on: two hosts, A
//! and B, each on its own /24 routed through a hub (where the coordinator
//! runs) ([`HubAndTwo`]), or the same with A on two rate-limited uplinks
//! ([`TwoUplinks`]), and the node spec each host's node gets.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{veth, DelayLine, DelayRule, Error, Namespace};
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

/// Hub, A and B, where A has two uplinks to the hub, `wan1` (`10.S.1.2`
/// behind `10.S.1.1`) and `wan2` (`10.S.3.2` behind `10.S.3.1`), and B is
/// `10.S.2.2` behind `10.S.2.1`, S being the `subnet` given to [`build`].
///
/// A routes by source, as a multi-WAN host must: what leaves from an
/// uplink's address takes that uplink or nothing (an `unreachable`
/// fallback in its table), so an uplink that is down is really down rather
/// than quietly carried by the other one. Everything else (the control
/// session, which binds the unspecified address) takes `wan1` while it is
/// up, else `wan2`. The coordinator listens on the hub's B side, which
/// belongs to neither uplink.
///
/// ```text
///            wan1 10.S.1.2 ── veth ── hub-a1 10.S.1.1 ┐
///  ns …-a                                             ns …-hub ── hub-b 10.S.2.1 ── veth ── hub 10.S.2.2  ns …-b
///            wan2 10.S.3.2 ── veth ── hub-a2 10.S.3.1 ┘
/// ```
///
/// [`build`]: TwoUplinks::build
#[derive(Debug)]
pub struct TwoUplinks {
    // Dropped in this order: the hosts, then the hub.
    pub a: Namespace,
    pub b: Namespace,
    pub hub: Namespace,
    /// A's uplink addresses now, `wan1` then `wan2`
    /// ([`renumber`](Self::renumber) changes them).
    pub a_addrs: [IpAddr; 2],
    /// B's address.
    pub b_addr: IpAddr,
    /// The hub's address on B's side (where a coordinator listens).
    pub hub_b: IpAddr,
    subnet: u8,
}

impl TwoUplinks {
    /// A's uplinks: the interface names inside A, also the uplinks' names
    /// in A's node.
    pub const UPLINKS: [&'static str; 2] = ["wan1", "wan2"];
    /// The hub's end of each of A's uplinks.
    pub const HUB_ENDS: [&'static str; 2] = ["hub-a1", "hub-a2"];
    /// The nftables table [`count_uplinks`](Self::count_uplinks) makes in
    /// the hub.
    pub const COUNTERS: &'static str = "tlmultiwan";

    /// Creates `{run}-hub`, `{run}-a` and `{run}-b` and wires them.
    ///
    /// # Errors
    /// When a namespace, link, address, rule or route cannot be made.
    pub fn build(run: &str, subnet: u8) -> Result<Self, Error> {
        let hub = Namespace::create(&format!("{run}-hub"))?;
        let a = Namespace::create(&format!("{run}-a"))?;
        let b = Namespace::create(&format!("{run}-b"))?;
        let net = Self {
            a_addrs: [Self::at(subnet, 1, 2), Self::at(subnet, 3, 2)],
            b_addr: Self::at(subnet, 2, 2),
            hub_b: Self::at(subnet, 2, 1),
            subnet,
            a,
            b,
            hub,
        };
        for i in 0..2 {
            veth(&net.hub, Self::HUB_ENDS[i], &net.a, Self::UPLINKS[i])?;
            net.hub
                .add_address(Self::HUB_ENDS[i], &format!("{}/24", net.gateway(i)))?;
            net.a
                .add_address(Self::UPLINKS[i], &format!("{}/24", net.a_addrs[i]))?;
            net.route(i)?;
        }
        veth(&net.hub, "hub-b", &net.b, "hub")?;
        net.hub.add_address("hub-b", &format!("{}/24", net.hub_b))?;
        net.hub.enable_forwarding()?;
        net.b.add_address("hub", &format!("{}/24", net.b_addr))?;
        net.b.add_route("default", net.hub_b)?;
        Ok(net)
    }

    fn at(subnet: u8, side: u8, host: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, subnet, side, host))
    }

    /// The hub's address on uplink `i`.
    pub fn gateway(&self, i: usize) -> IpAddr {
        Self::at(self.subnet, [1, 3][i], 1)
    }

    /// Installs (again) uplink `i`'s routes in A: its own table for what
    /// leaves from its address, and a default in the main table (wan1
    /// preferred). Bringing an interface down drops the routes through it,
    /// so [`set_link`](Self::set_link) calls this when it comes back, as a
    /// host's network manager would.
    fn route(&self, i: usize) -> Result<(), Error> {
        let (dev, gw, table) = (
            Self::UPLINKS[i],
            self.gateway(i).to_string(),
            (101 + i).to_string(),
        );
        let from = self.a_addrs[i].to_string();
        let pref = (1001 + i).to_string();
        // One rule per uplink, for its current address.
        let _ = self.a.ip(&["rule", "del", "pref", &pref]);
        self.a
            .ip(&["rule", "add", "pref", &pref, "from", &from, "table", &table])?;
        self.a.ip(&[
            "route", "replace", "default", "via", &gw, "dev", dev, "table", &table,
        ])?;
        self.a.ip(&[
            "route",
            "replace",
            "unreachable",
            "default",
            "table",
            &table,
            "metric",
            "4096",
        ])?;
        let metric = (100 * (i + 1)).to_string();
        self.a.ip(&[
            "route", "replace", "default", "via", &gw, "dev", dev, "metric", &metric,
        ])
    }

    /// Limits both directions of both of A's uplinks to `mbit` Mbit/s with
    /// a token bucket (`tc qdisc … tbf`; 64 KB burst, 50 ms of queue).
    ///
    /// # Errors
    /// When `tc` refuses.
    pub fn limit(&self, mbit: u32) -> Result<(), Error> {
        self.limit_each([mbit; 2])
    }

    /// As [`limit`](Self::limit), uplink `i` to `mbit[i]` Mbit/s.
    ///
    /// # Errors
    /// When `tc` refuses.
    pub fn limit_each(&self, mbit: [u32; 2]) -> Result<(), Error> {
        for (i, mbit) in mbit.into_iter().enumerate() {
            let rate = format!("{mbit}mbit");
            for (ns, dev) in [(&self.a, Self::UPLINKS[i]), (&self.hub, Self::HUB_ENDS[i])] {
                ns.run(
                    "tc",
                    &[
                        "qdisc", "replace", "dev", dev, "root", "tbf", "rate", &rate, "burst",
                        "64kb", "latency", "50ms",
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// Delays each of A's uplinks by `ms[i]` milliseconds each way (a
    /// [`DelayLine`] in the hub, run as `exe delay-line`; this kernel has
    /// no netem); an uplink of 0 ms is not routed through it. The uplinks'
    /// whole /24s are delayed, so a renumbered uplink stays delayed. What
    /// the hub itself sends or receives (the coordinator's traffic) is
    /// not.
    ///
    /// # Errors
    /// When the delay line does not start or its routes are refused.
    pub fn delay(&self, exe: &Path, ms: [u32; 2], log: &Path) -> Result<DelayLine, Error> {
        let delayed: Vec<usize> = (0..2).filter(|&i| ms[i] > 0).collect();
        let rules: Vec<DelayRule> = delayed
            .iter()
            .map(|&i| DelayRule {
                net: Ipv4Addr::new(10, self.subnet, [1, 3][i], 0),
                prefix: 24,
                delay: Duration::from_millis(u64::from(ms[i])),
            })
            .collect();
        let from: Vec<&str> = delayed.iter().map(|&i| Self::HUB_ENDS[i]).collect();
        DelayLine::start(&self.hub, exe, &rules, &from, &["hub-b"], log)
    }

    /// Makes nftables counters in the hub of the UDP each of A's uplinks
    /// brings in and forwards (`from_wan1`, `from_wan2` in table
    /// [`COUNTERS`](Self::COUNTERS)), and of forwarded TCP (`tcp_forwarded`), which
    /// must stay zero when TCP goes inside WireGuard.
    ///
    /// # Errors
    /// When `nft` refuses.
    pub fn count_uplinks(&self) -> Result<(), Error> {
        self.hub.nft(&format!(
            "table inet {table} {{\n\
               counter from_wan1 {{}}\n\
               counter from_wan2 {{}}\n\
               counter tcp_forwarded {{}}\n\
               chain forward {{\n\
                 type filter hook forward priority 0; policy accept;\n\
                 iifname \"{}\" meta l4proto udp counter name from_wan1\n\
                 iifname \"{}\" meta l4proto udp counter name from_wan2\n\
                 meta l4proto tcp counter name tcp_forwarded\n\
               }}\n\
             }}\n",
            Self::HUB_ENDS[0],
            Self::HUB_ENDS[1],
            table = Self::COUNTERS,
        ))
    }

    /// Bytes of UDP the hub forwarded from each of A's uplinks
    /// (see [`count_uplinks`](Self::count_uplinks)).
    ///
    /// # Errors
    /// When `nft` fails.
    pub fn uplink_bytes(&self) -> Result<[u64; 2], Error> {
        Ok([
            self.hub.nft_counter(Self::COUNTERS, "from_wan1")?.1,
            self.hub.nft_counter(Self::COUNTERS, "from_wan2")?.1,
        ])
    }

    /// Brings A's end of uplink `i` down or up (`ip link set … down|up`);
    /// up, its routes are installed again.
    ///
    /// # Errors
    /// When `ip` refuses.
    pub fn set_link(&self, i: usize, up: bool) -> Result<(), Error> {
        let state = if up { "up" } else { "down" };
        self.a.ip(&["link", "set", Self::UPLINKS[i], state])?;
        if up {
            self.route(i)?;
        }
        Ok(())
    }

    /// Gives A's end of uplink `i` the address `10.S.x.host` in place of
    /// the one it has (the link's state is left as it is; routes follow
    /// when it is up).
    ///
    /// # Errors
    /// When `ip` refuses.
    pub fn renumber(&mut self, i: usize, host: u8) -> Result<IpAddr, Error> {
        let dev = Self::UPLINKS[i];
        let new = Self::at(self.subnet, [1, 3][i], host);
        self.a.ip(&[
            "addr",
            "del",
            &format!("{}/24", self.a_addrs[i]),
            "dev",
            dev,
        ])?;
        self.a.add_address(dev, &format!("{new}/24"))?;
        self.a_addrs[i] = new;
        let up = self
            .a
            .run("ip", &["-o", "link", "show", dev])
            .map(|out| String::from_utf8_lossy(&out.stdout).contains(",UP"))?;
        if up {
            self.route(i)?;
        }
        Ok(new)
    }

    /// The mesh on this network: a coordinator in the hub on
    /// `hub_b:coordinator_port`, node `alpha` on A with uplinks `wan1` and
    /// `wan2` bound to their addresses, `beta` on B (see [`wg_node`]),
    /// associated, with ingress ports from 41000-41999 and 42000-42999.
    pub fn wg_mesh(&self, coordinator_port: u16, wg_port: u16) -> MeshSpec {
        let mut alpha = wg_node(
            "alpha",
            &self.a,
            self.a_addrs[0],
            "beta",
            "127.0.0.1:41000-41999",
            wg_port,
        );
        alpha.uplinks = Self::UPLINKS
            .iter()
            .zip(self.a_addrs)
            .map(|(name, addr)| ((*name).to_owned(), addr))
            .collect();
        MeshSpec {
            coordinator: CoordinatorSpec {
                listen: SocketAddr::new(self.hub_b, coordinator_port),
                status_listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7481),
                wrap: self.hub.wrap(),
            },
            nodes: vec![
                alpha,
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

/// Rewrites node `name`'s configuration in `mesh_dir` (as
/// [`LocalMesh`](crate::LocalMesh) wrote it) so each uplink in `uplinks`
/// follows its interface (`interface = "NAME"`, the uplink's own name)
/// instead of binding the address it was given. The node must be stopped
/// and started again to read it.
///
/// # Errors
/// When the file cannot be read or written, or has no such uplink.
pub fn follow_interfaces(mesh_dir: &Path, name: &str, uplinks: &[&str]) -> Result<(), Error> {
    let file = mesh_dir.join(format!("{name}.toml"));
    let text =
        std::fs::read_to_string(&file).map_err(Error::io(format!("reading {}", file.display())))?;
    let mut out = String::with_capacity(text.len());
    let mut current: Option<String> = None;
    let mut done = 0;
    for line in text.lines() {
        if line.starts_with('[') {
            current = None;
        }
        if let Some(n) = line.strip_prefix("name = ") {
            current = Some(n.trim_matches('"').to_owned());
        }
        let follows = current.as_deref().filter(|n| uplinks.contains(n));
        match follows {
            Some(n) if line.starts_with("bind = ") => {
                out.push_str(&format!("interface = \"{n}\"\n"));
                done += 1;
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    if done != uplinks.len() {
        return Err(Error::parse(
            "a node configuration",
            format!("{} has {done} of the uplinks {uplinks:?}", file.display()),
        ));
    }
    std::fs::write(&file, out).map_err(Error::io(format!("writing {}", file.display())))
}

/// Adds the line `line` (such as `capacity_mbps = 50`) to uplink `uplink`
/// of node `name`'s configuration in `mesh_dir` (as
/// [`LocalMesh`](crate::LocalMesh) wrote it). The node must be stopped and
/// started again to read it.
///
/// # Errors
/// When the file cannot be read or written, or has no such uplink.
pub fn add_uplink_line(mesh_dir: &Path, name: &str, uplink: &str, line: &str) -> Result<(), Error> {
    let file = mesh_dir.join(format!("{name}.toml"));
    let text =
        std::fs::read_to_string(&file).map_err(Error::io(format!("reading {}", file.display())))?;
    let mut out = String::with_capacity(text.len() + line.len() + 1);
    let mut in_uplink = false;
    let mut done = false;
    for l in text.lines() {
        if l.starts_with('[') {
            in_uplink = l == "[[uplink]]";
        }
        out.push_str(l);
        out.push('\n');
        if in_uplink && !done && l == format!("name = \"{uplink}\"") {
            out.push_str(line);
            out.push('\n');
            done = true;
        }
    }
    if !done {
        return Err(Error::parse(
            "a node configuration",
            format!("{} has no uplink {uplink:?}", file.display()),
        ));
    }
    std::fs::write(&file, out).map_err(Error::io(format!("writing {}", file.display())))
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
        extra: String::new(),
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
