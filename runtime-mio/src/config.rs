//! The node's TOML configuration (DESIGN §11): parsed strictly, so that every
//! mistake is refused at start-up with the file, the key and the reason.

mod ingress;
pub mod nat;
pub mod relay;
pub mod toml_walk;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

pub use ingress::{IngressTable, INGRESS_FILE};
use toml_walk::{check_name, key_error, KeyError, KeyResult, Section};

/// A configuration the node refuses to start with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {key}: {reason}", file.display())]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// The key, dotted (`uplink[1].bind`), or `(file)` for the file as a whole.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl ConfigError {
    fn at(file: &Path, error: KeyError) -> Self {
        Self {
            file: file.to_owned(),
            key: error.key,
            reason: error.reason,
        }
    }
}

/// Where an uplink's mesh sockets bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UplinkSource {
    /// A source address on this host.
    Bind(IpAddr),
    /// A network interface, by name (its address may change at runtime).
    Interface(String),
}

/// Whether an uplink carries data normally or only when primaries cannot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Carries data.
    Primary,
    /// Carries data only when no primary can.
    Backup,
}

/// One `[[uplink]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct UplinkConfig {
    /// Its name.
    pub name: String,
    /// Where its sockets bind.
    pub source: UplinkSource,
    /// Metered (mobile data): no bulk traffic while unmetered capacity suffices.
    pub metered: bool,
    /// Primary or backup.
    pub priority: Priority,
    /// The operator's capacity hint, if given.
    pub capacity_mbps: Option<f64>,
    /// False takes the uplink out of service (`enabled = false`): no mesh
    /// socket, no path; a reload (SIGHUP) may change it at runtime.
    pub enabled: bool,
}

/// A loopback port range for a service's ingress sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngressRange {
    /// The loopback address.
    pub ip: IpAddr,
    /// First port.
    pub low: u16,
    /// Last port (inclusive).
    pub high: u16,
}

impl IngressRange {
    /// True when `addr` falls inside the range.
    pub fn contains(&self, addr: SocketAddr) -> bool {
        addr.ip() == self.ip && (self.low..=self.high).contains(&addr.port())
    }

    fn overlaps(&self, other: &IngressRange) -> bool {
        self.ip == other.ip && self.low <= other.high && other.low <= self.high
    }

    fn parse(key: &str, text: &str) -> KeyResult<Self> {
        let bad = || {
            key_error(
                key,
                format!("{text:?} is not a range like 127.0.0.1:41000-41999"),
            )
        };
        let (addr, high) = text.rsplit_once('-').ok_or_else(bad)?;
        let low_addr: SocketAddr = addr.parse().map_err(|_| bad())?;
        let high: u16 = high.parse().map_err(|_| bad())?;
        let range = Self {
            ip: low_addr.ip(),
            low: low_addr.port(),
            high,
        };
        if !range.ip.is_loopback() {
            return Err(key_error(
                key,
                format!(
                    "{} is not a loopback address: ingress sockets are local",
                    range.ip
                ),
            ));
        }
        if range.low == 0 || range.low > range.high {
            return Err(key_error(
                key,
                format!(
                    "ports {}-{} are not an ascending range of non-zero ports",
                    range.low, range.high
                ),
            ));
        }
        Ok(range)
    }
}

/// One `[[service]]`: a local UDP service the node exposes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    /// Its name.
    pub name: String,
    /// Where the service listens (WireGuard's ListenPort).
    pub target: SocketAddr,
    /// Where its ingress ports come from.
    pub ingress_range: IngressRange,
}

/// Relay use for an association.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayPolicy {
    /// Direct paths preferred, relays allowed.
    Allow,
    /// Never through a relay.
    Never,
    /// Only through a relay.
    Only,
}

/// How packets are carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Each packet on one path, unchanged (the default).
    WholePacket,
    /// Packets split into segments with a small header (opt-in).
    Segmented,
}

/// One `[[association]]`: this node's consent to carry a local service to a
/// remote one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssociationConfig {
    /// The local service.
    pub service: String,
    /// The remote node.
    pub peer_node: String,
    /// The remote service.
    pub peer_service: String,
    /// An explicit ingress address, if given.
    pub ingress: Option<SocketAddr>,
    /// Relay policy.
    pub relay: RelayPolicy,
    /// Carrying mode.
    pub mode: Mode,
}

impl AssociationConfig {
    /// `node/service` of the peer.
    pub fn peer(&self) -> String {
        format!("{}/{}", self.peer_node, self.peer_service)
    }
}

/// A whole, validated node configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// The file it came from.
    pub file: PathBuf,
    /// The node's name in the mesh.
    pub name: String,
    /// Where keys, certificates and ingress assignments persist.
    pub data_dir: PathBuf,
    /// Coordinator control addresses, tried in turn.
    pub coordinators: Vec<SocketAddr>,
    /// The names of those written `NAME@ADDRESS` (each coordinator of a
    /// cluster has its own); the others carry `coordinator_name`.
    pub coordinator_names: BTreeMap<SocketAddr, String>,
    /// The name coordinator server certificates carry (the TLS server name;
    /// `tlctl pki issue-coordinator --name`).
    pub coordinator_name: String,
    /// The trust anchor (resolved against the config file's folder).
    pub root_ca: PathBuf,
    /// A one-time join token, until enrolled.
    pub join_token: Option<String>,
    /// Where `/status` and `/metrics` are served.
    pub status_listen: SocketAddr,
    /// Whether intranet addresses may be advertised as candidates.
    pub advertise_private: bool,
    /// The uplinks.
    pub uplinks: Vec<UplinkConfig>,
    /// Whether and where this node relays data for others (`[relay]`).
    pub relay: relay::RelaySettings,
    /// The local services.
    pub services: Vec<ServiceConfig>,
    /// The associations this node consents to.
    pub associations: Vec<AssociationConfig>,
    /// `[nat]`: punch pacing and birthday probing.
    pub punch: transitloom_proto_core::dataplane::PunchConfig,
    /// When the control session falls back to TCP, and how often QUIC is
    /// tried again (`tcp_fallback_after_ms`, `quic_retry_s`).
    pub tcp_fallback: transitloom_proto_core::node::TcpFallback,
    /// Most packets a packet this node sends may be overtaken by, as its
    /// scheduler predicts (`reorder_bound`).
    pub reorder_bound: u32,
}

/// Highest `reorder_bound`: the replay window of WireGuard's kernel module
/// and of wireguard-go (8,192 counters less one 64-bit word). A peer
/// behind a smaller window (boringtun's is about 1,000) needs a bound
/// inside it.
pub const MAX_REORDER_BOUND: u64 = 8_128;

/// Default `status_listen`.
pub const DEFAULT_STATUS_LISTEN: &str = "127.0.0.1:7480";

/// Default `coordinator_name`.
pub const DEFAULT_COORDINATOR_NAME: &str = "coordinator";

impl NodeConfig {
    /// Reads and validates `file`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, the key and the reason.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|err| ConfigError {
            file: file.to_owned(),
            key: "(file)".to_owned(),
            reason: format!("cannot be read: {err}"),
        })?;
        Self::parse(file, &text)
    }

    /// Validates `text` as if read from `file` (relative paths resolve
    /// against the file's folder).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, the key and the reason.
    pub fn parse(file: &Path, text: &str) -> Result<Self, ConfigError> {
        let table: toml::Table = text.parse().map_err(|err: toml::de::Error| ConfigError {
            file: file.to_owned(),
            key: "(syntax)".to_owned(),
            reason: err.to_string().trim().replace('\n', " "),
        })?;
        let base = file.parent().unwrap_or(Path::new("."));
        parse_root(file, base, &Section::new("", &table)).map_err(|e| ConfigError::at(file, e))
    }

    /// The service named `name`.
    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.services.iter().find(|s| s.name == name)
    }
}

fn resolve(base: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    }
}

/// `tcp_fallback_after_ms` (100 ms to 60 s) and `quic_retry_s` (5 s to
/// 1 hour), defaults filled in.
fn parse_tcp_fallback(root: &Section<'_>) -> KeyResult<transitloom_proto_core::node::TcpFallback> {
    let mut fallback = transitloom_proto_core::node::TcpFallback::default();
    if let Some(ms) = root.opt_u64("tcp_fallback_after_ms", 100, 60_000)? {
        fallback.quic_bound = std::time::Duration::from_millis(ms);
    }
    if let Some(s) = root.opt_u64("quic_retry_s", 5, 3_600)? {
        fallback.quic_retry = std::time::Duration::from_secs(s);
    }
    Ok(fallback)
}

fn parse_root(file: &Path, base: &Path, root: &Section<'_>) -> KeyResult<NodeConfig> {
    root.only(&[
        "name",
        "data_dir",
        "coordinators",
        "coordinator_name",
        "root_ca",
        "join_token",
        "status_listen",
        "advertise_private",
        "uplink",
        "relay",
        "service",
        "association",
        "nat",
        "tcp_fallback_after_ms",
        "quic_retry_s",
        "reorder_bound",
    ])?;
    let name = root.str("name")?;
    check_name("name", name)?;
    let data_dir = root.str("data_dir")?;
    if data_dir.is_empty() {
        return Err(key_error("data_dir", "must not be empty"));
    }
    let mut coordinators = Vec::new();
    let mut coordinator_names = BTreeMap::new();
    for (i, text) in root.str_list("coordinators")?.iter().enumerate() {
        let key = format!("coordinators[{i}]");
        // `NAME@ADDR`: a coordinator of a cluster, whose certificate
        // carries its own name.
        let (name, addr) = match text.split_once('@') {
            Some((name, addr)) => (Some(name), addr),
            None => (None, *text),
        };
        let addr = toml_walk::parse_socket_addr(addr).map_err(|r| key_error(&key, r))?;
        if coordinators.contains(&addr) {
            return Err(key_error(&key, format!("{addr} is listed twice")));
        }
        if let Some(name) = name {
            transitloom_proto_core::pki::naming::validate_coordinator_name(name).map_err(|e| {
                key_error(
                    &key,
                    format!("{name:?} is not a coordinator name: {e} (write NAME@ADDRESS)"),
                )
            })?;
            coordinator_names.insert(addr, name.to_owned());
        }
        coordinators.push(addr);
    }
    if coordinators.is_empty() {
        return Err(key_error(
            "coordinators",
            "at least one coordinator address is required",
        ));
    }
    let coordinator_name = root
        .opt_str("coordinator_name")?
        .unwrap_or(DEFAULT_COORDINATOR_NAME);
    if rustls_pki_types::DnsName::try_from(coordinator_name).is_err() {
        return Err(key_error(
            "coordinator_name",
            format!(
                "{coordinator_name:?} is not a DNS name (coordinator certificates carry DNS names)"
            ),
        ));
    }
    let root_ca = resolve(base, root.str("root_ca")?);
    if !root_ca.is_file() {
        return Err(key_error(
            "root_ca",
            format!("{} does not exist or is not a file", root_ca.display()),
        ));
    }
    let status_listen = root
        .listen_addr("status_listen")?
        .unwrap_or_else(|| DEFAULT_STATUS_LISTEN.parse().expect("a valid default"));

    let uplinks = root
        .tables("uplink")?
        .iter()
        .map(parse_uplink)
        .collect::<KeyResult<Vec<_>>>()?;
    if uplinks.is_empty() {
        return Err(key_error("uplink", "at least one [[uplink]] is required"));
    }
    unique(uplinks.iter().map(|u| u.name.as_str()), "uplink")?;
    if uplinks.iter().all(|u| u.priority == Priority::Backup) {
        return Err(key_error(
            "uplink",
            "every uplink is a backup: at least one must be primary",
        ));
    }
    if uplinks.iter().all(|u| !u.enabled) {
        return Err(key_error(
            "uplink",
            "every uplink is disabled (enabled = false): at least one must carry",
        ));
    }

    // Relay ports bind, by default, where the first fixed uplink does.
    let uplink_ip = uplinks.iter().find_map(|u| match u.source {
        UplinkSource::Bind(ip) if !ip.is_unspecified() => Some(ip),
        _ => None,
    });
    let relay = match root.opt_table("relay")? {
        Some(relay) => relay::parse_relay(&relay, uplink_ip)?,
        None => relay::RelaySettings::default(),
    };

    let services = root
        .tables("service")?
        .iter()
        .map(parse_service)
        .collect::<KeyResult<Vec<_>>>()?;
    unique(services.iter().map(|s| s.name.as_str()), "service")?;
    for (i, a) in services.iter().enumerate() {
        for (j, b) in services.iter().enumerate().skip(i + 1) {
            if a.ingress_range.overlaps(&b.ingress_range) {
                return Err(key_error(
                    format!("service[{j}].ingress_range"),
                    format!("overlaps the ingress range of service {:?}", a.name),
                ));
            }
        }
    }

    let associations = root
        .tables("association")?
        .iter()
        .map(|s| parse_association(s, &services))
        .collect::<KeyResult<Vec<_>>>()?;
    let mut seen = BTreeMap::new();
    let mut explicit = BTreeMap::new();
    for (i, a) in associations.iter().enumerate() {
        if let Some(j) = seen.insert((a.service.clone(), a.peer()), i) {
            return Err(key_error(
                format!("association[{i}]"),
                format!("repeats association[{j}] ({} to {})", a.service, a.peer()),
            ));
        }
        if let Some(ingress) = a.ingress {
            if let Some(j) = explicit.insert(ingress, i) {
                return Err(key_error(
                    format!("association[{i}].ingress"),
                    format!("{ingress} is also the ingress of association[{j}]"),
                ));
            }
            if let Some(s) = services
                .iter()
                .find(|s| s.name != a.service && s.ingress_range.contains(ingress))
            {
                return Err(key_error(
                    format!("association[{i}].ingress"),
                    format!(
                        "{ingress} lies in the ingress range of service {:?}",
                        s.name
                    ),
                ));
            }
        }
    }

    Ok(NodeConfig {
        file: file.to_owned(),
        name: name.to_owned(),
        data_dir: resolve(base, data_dir),
        coordinators,
        coordinator_name: coordinator_name.to_owned(),
        coordinator_names,
        root_ca,
        join_token: root.opt_str("join_token")?.map(str::to_owned),
        status_listen,
        advertise_private: root.opt_bool("advertise_private")?.unwrap_or(false),
        uplinks,
        relay,
        services,
        associations,
        punch: nat::parse(root)?,
        tcp_fallback: parse_tcp_fallback(root)?,
        reorder_bound: root.opt_u64("reorder_bound", 1, MAX_REORDER_BOUND)?.map_or(
            transitloom_proto_core::dataplane::DEFAULT_REORDER_BOUND,
            |n| n as u32,
        ),
    })
}

fn unique<'a>(names: impl Iterator<Item = &'a str>, table: &str) -> KeyResult<()> {
    let mut seen = BTreeMap::new();
    for (i, name) in names.enumerate() {
        if let Some(j) = seen.insert(name, i) {
            return Err(key_error(
                format!("{table}[{i}].name"),
                format!("{name:?} is also the name of {table}[{j}]"),
            ));
        }
    }
    Ok(())
}

fn parse_uplink(s: &Section<'_>) -> KeyResult<UplinkConfig> {
    s.only(&[
        "name",
        "bind",
        "interface",
        "metered",
        "priority",
        "capacity_mbps",
        "enabled",
    ])?;
    let name = s.str("name")?;
    check_name(&s.key("name"), name)?;
    let source = match (s.opt_ip("bind")?, s.opt_str("interface")?) {
        (Some(ip), None) => {
            if ip.is_unspecified() || ip.is_multicast() {
                return Err(key_error(
                    s.key("bind"),
                    format!("{ip} cannot be a source address"),
                ));
            }
            UplinkSource::Bind(ip)
        }
        (None, Some(interface)) if !interface.is_empty() && interface.len() < 16 => {
            UplinkSource::Interface(interface.to_owned())
        }
        (None, Some(interface)) => {
            return Err(key_error(
                s.key("interface"),
                format!("{interface:?} is not an interface name (1 to 15 characters)"),
            ));
        }
        (Some(_), Some(_)) => {
            return Err(key_error(
                s.path.clone(),
                "give bind or interface, not both",
            ))
        }
        (None, None) => {
            return Err(key_error(
                s.path.clone(),
                "needs bind (a source address) or interface (a name)",
            ))
        }
    };
    let priority = match s.word("priority", &["primary", "backup"], "primary")? {
        "backup" => Priority::Backup,
        _ => Priority::Primary,
    };
    let capacity_mbps = s.opt_f64("capacity_mbps")?;
    if let Some(c) = capacity_mbps {
        if !(c.is_finite() && c > 0.0) {
            return Err(key_error(
                s.key("capacity_mbps"),
                format!("{c} is not a positive rate"),
            ));
        }
    }
    Ok(UplinkConfig {
        name: name.to_owned(),
        source,
        metered: s.opt_bool("metered")?.unwrap_or(false),
        priority,
        capacity_mbps,
        enabled: s.opt_bool("enabled")?.unwrap_or(true),
    })
}

fn parse_service(s: &Section<'_>) -> KeyResult<ServiceConfig> {
    s.only(&["name", "target", "ingress_range"])?;
    let name = s.str("name")?;
    check_name(&s.key("name"), name)?;
    let target = s.socket_addr("target")?;
    if target.port() == 0 {
        return Err(key_error(s.key("target"), "port 0 is not a service port"));
    }
    let ingress_range = IngressRange::parse(&s.key("ingress_range"), s.str("ingress_range")?)?;
    if ingress_range.contains(target) {
        return Err(key_error(
            s.key("target"),
            format!("{target} lies inside its own ingress range"),
        ));
    }
    Ok(ServiceConfig {
        name: name.to_owned(),
        target,
        ingress_range,
    })
}

fn parse_association(s: &Section<'_>, services: &[ServiceConfig]) -> KeyResult<AssociationConfig> {
    s.only(&["service", "peer", "ingress", "relay", "mode"])?;
    let service = s.str("service")?;
    let Some(svc) = services.iter().find(|x| x.name == service) else {
        return Err(key_error(
            s.key("service"),
            format!("no [[service]] is named {service:?}"),
        ));
    };
    let peer = s.str("peer")?;
    let Some((peer_node, peer_service)) = peer.split_once('/') else {
        return Err(key_error(
            s.key("peer"),
            format!("{peer:?} is not node/service"),
        ));
    };
    check_name(&s.key("peer"), peer_node)?;
    check_name(&s.key("peer"), peer_service)?;
    let ingress = s.opt_socket_addr("ingress")?;
    if let Some(addr) = ingress {
        if !addr.ip().is_loopback() || addr.port() == 0 {
            return Err(key_error(
                s.key("ingress"),
                format!("{addr} is not a loopback address with a port"),
            ));
        }
        if addr == svc.target {
            return Err(key_error(
                s.key("ingress"),
                format!("{addr} is the service's own target"),
            ));
        }
    }
    let relay = match s.word("relay", &["allow", "never", "only"], "allow")? {
        "never" => RelayPolicy::Never,
        "only" => RelayPolicy::Only,
        _ => RelayPolicy::Allow,
    };
    let mode = match s.word("mode", &["whole-packet", "segmented"], "whole-packet")? {
        "segmented" => Mode::Segmented,
        _ => Mode::WholePacket,
    };
    Ok(AssociationConfig {
        service: service.to_owned(),
        peer_node: peer_node.to_owned(),
        peer_service: peer_service.to_owned(),
        ingress,
        relay,
        mode,
    })
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Primary => "primary",
            Self::Backup => "backup",
        })
    }
}

#[cfg(test)]
mod tests;
