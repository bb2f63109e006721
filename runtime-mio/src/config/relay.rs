//! The `[relay]` table, the same for a node and a coordinator (DESIGN §7:
//! node relays and the coordinator relay are the same code):
//!
//! ```toml
//! [relay]
//! data = true                   # relay for nodes whose NATs defeat a direct path
//! listen_ip = "203.0.113.5"     # where allocation ports bind
//! advertise_ip = "203.0.113.5"  # what nodes send to (default: listen_ip)
//! port_range = "40000-40999"    # default: any port
//! quota_per_node = 16           # allocations one node may take part in (1 to max_allocations)
//! max_allocations = 1024        # allocations in all (1 to 65535; at most the port range's size)
//! rate_limit_mbps = 1000        # each relayed path, each direction (1 to 100000)
//! idle_timeout_s = 30           # silent allocations are released (20 to 3600)
//! ```
//!
//! `listen_ip` defaults to the coordinator's `listen` address, or to a
//! node's first uplink with a `bind` address. The limits default to
//! [`RelayConfig::new`]'s; a `port_range` narrower than 1,024 ports lowers
//! the default `max_allocations` to its size (one port per allocation).

use std::net::IpAddr;
use std::time::Duration;

use transitloom_proto_core::dataplane::RELAY_REFRESH;
use transitloom_proto_core::relay::{RateLimit, RelayConfig};

use super::toml_walk::{key_error, KeyResult, Section};

/// Default `max_allocations` (as [`RelayConfig::new`]).
pub const DEFAULT_MAX_ALLOCATIONS: u32 = 1_024;
/// Default `quota_per_node` (as [`RelayConfig::new`]).
pub const DEFAULT_QUOTA_PER_NODE: u32 = 16;
/// Default `rate_limit_mbps`: 1 Gbit/s per path and direction.
pub const DEFAULT_RATE_LIMIT_MBPS: u64 = 1_000;
/// Highest `rate_limit_mbps`: 100 Gbit/s, beyond any one uplink.
pub const MAX_RATE_LIMIT_MBPS: u64 = 100_000;
/// Default `idle_timeout_s` (as [`RelayConfig::new`]).
pub const DEFAULT_IDLE_TIMEOUT_S: u64 = 30;
/// Shortest `idle_timeout_s`: endpoints refresh their binds every
/// [`RELAY_REFRESH`] (8 s), so an allocation outlives two lost refreshes.
pub const MIN_IDLE_TIMEOUT_S: u64 = 20;
const _: () = assert!(MIN_IDLE_TIMEOUT_S > 2 * RELAY_REFRESH.as_secs());
/// Longest `idle_timeout_s`: an abandoned port is given back within the
/// hour.
pub const MAX_IDLE_TIMEOUT_S: u64 = 3_600;

/// A UDP port range, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub low: u16,
    /// Last port.
    pub high: u16,
}

/// The `[relay]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySettings {
    /// Relay data for nodes.
    pub data: bool,
    /// Where relay ports bind.
    pub listen_ip: Option<IpAddr>,
    /// The address nodes send to (a public address in front of
    /// `listen_ip`); `listen_ip` when absent.
    pub advertise_ip: Option<IpAddr>,
    /// Which ports relay allocations use, in turn.
    pub port_range: Option<PortRange>,
    /// Allocations one node may take part in at once (either leg).
    pub quota_per_node: u32,
    /// Allocations at most, all nodes together.
    pub max_allocations: u32,
    /// Rate limit of each relayed path, each direction, in Mbit/s.
    pub rate_limit_mbps: u64,
    /// Seconds an allocation may stay silent before it is released.
    pub idle_timeout_s: u64,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            data: false,
            listen_ip: None,
            advertise_ip: None,
            port_range: None,
            quota_per_node: DEFAULT_QUOTA_PER_NODE,
            max_allocations: DEFAULT_MAX_ALLOCATIONS,
            rate_limit_mbps: DEFAULT_RATE_LIMIT_MBPS,
            idle_timeout_s: DEFAULT_IDLE_TIMEOUT_S,
        }
    }
}

impl PortRange {
    /// How many ports it holds.
    pub fn len(&self) -> u32 {
        u32::from(self.high) - u32::from(self.low) + 1
    }

    /// Never: a range holds at least one port.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl RelaySettings {
    /// Where allocation ports bind and the address nodes reach them at,
    /// given the default bind address (checked at parse time to be usable).
    pub fn addresses(&self, default_ip: IpAddr) -> (IpAddr, IpAddr) {
        let bind = self.listen_ip.unwrap_or(default_ip);
        (bind, self.advertise_ip.unwrap_or(bind))
    }

    /// Sets the quotas, rate limit and idle expiry of `config` from these
    /// settings.
    pub fn apply_limits(&self, config: &mut RelayConfig) {
        config.quota_per_node = self.quota_per_node as usize;
        config.max_allocations = self.max_allocations as usize;
        config.rate_limit = Some(RateLimit::new(self.rate_limit_mbps * 125_000));
        config.idle_timeout = Duration::from_secs(self.idle_timeout_s);
    }
}

/// Parses `[relay]`; `default_ip` is where ports bind without `listen_ip`
/// (`None`: the unspecified address, so `data = true` needs an
/// `advertise_ip` or a `listen_ip`).
///
/// # Errors
/// An unknown key, a bad address or range, or relaying at an address
/// nodes cannot send to.
pub fn parse_relay(relay: &Section<'_>, default_ip: Option<IpAddr>) -> KeyResult<RelaySettings> {
    relay.only(&[
        "data",
        "listen_ip",
        "advertise_ip",
        "port_range",
        "quota_per_node",
        "max_allocations",
        "rate_limit_mbps",
        "idle_timeout_s",
    ])?;
    let listen_ip = relay.opt_ip("listen_ip")?;
    if let Some(ip) = listen_ip.filter(|ip| ip.is_multicast()) {
        return Err(key_error(
            relay.key("listen_ip"),
            format!("{ip} is a multicast address"),
        ));
    }
    let port_range = relay
        .opt_str("port_range")?
        .map(|text| parse_port_range(&relay.key("port_range"), text))
        .transpose()?;
    let advertise_ip = relay.opt_ip("advertise_ip")?;
    if let Some(ip) = advertise_ip.filter(|ip| ip.is_multicast() || ip.is_unspecified()) {
        return Err(key_error(
            relay.key("advertise_ip"),
            format!("{ip}: nodes send to this address, so it must be a unicast one"),
        ));
    }
    let data = relay.opt_bool("data")?.unwrap_or(false);
    let (max_allocations, quota_per_node) = parse_quotas(relay, port_range)?;
    let rate_limit_mbps = relay
        .opt_u64("rate_limit_mbps", 1, MAX_RATE_LIMIT_MBPS)?
        .unwrap_or(DEFAULT_RATE_LIMIT_MBPS);
    let idle_timeout_s = relay
        .opt_u64("idle_timeout_s", MIN_IDLE_TIMEOUT_S, MAX_IDLE_TIMEOUT_S)?
        .unwrap_or(DEFAULT_IDLE_TIMEOUT_S);
    let settings = RelaySettings {
        data,
        listen_ip,
        advertise_ip,
        port_range,
        quota_per_node,
        max_allocations,
        rate_limit_mbps,
        idle_timeout_s,
    };
    let default_ip = default_ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let (bind, advertised) = settings.addresses(default_ip);
    if data && advertised.is_unspecified() {
        return Err(key_error(
            relay.key("advertise_ip"),
            format!(
                "the relay binds to {bind} and nodes cannot send there; set advertise_ip \
                 (or listen_ip) to an address nodes reach"
            ),
        ));
    }
    Ok(settings)
}

/// `max_allocations` and `quota_per_node`: each allocation takes one port,
/// so an explicit `max_allocations` must fit the port range (the default
/// shrinks to it), and no node can hold more than the table.
fn parse_quotas(relay: &Section<'_>, ports: Option<PortRange>) -> KeyResult<(u32, u32)> {
    let ports = ports.map_or(u32::from(u16::MAX), |r| r.len());
    let max = match relay.opt_u64("max_allocations", 1, u64::from(u16::MAX))? {
        Some(max) if max > u64::from(ports) => {
            return Err(key_error(
                relay.key("max_allocations"),
                format!("{max} allocations need {max} ports, and port_range holds {ports}"),
            ))
        }
        Some(max) => max as u32,
        None => DEFAULT_MAX_ALLOCATIONS.min(ports),
    };
    let quota = match relay.opt_u64("quota_per_node", 1, u64::from(u16::MAX))? {
        Some(quota) if quota > u64::from(max) => {
            return Err(key_error(
                relay.key("quota_per_node"),
                format!("{quota} is more than max_allocations ({max}): no node can hold that many"),
            ))
        }
        Some(quota) => quota as u32,
        None => DEFAULT_QUOTA_PER_NODE.min(max),
    };
    Ok((max, quota))
}

/// Parses `40000-40999`.
///
/// # Errors
/// Not a range of non-zero ports in ascending order.
pub fn parse_port_range(key: &str, text: &str) -> KeyResult<PortRange> {
    let bad = || key_error(key, format!("{text:?} is not a range like 40000-40999"));
    let (low, high) = text.split_once('-').ok_or_else(bad)?;
    let low: u16 = low.trim().parse().map_err(|_| bad())?;
    let high: u16 = high.trim().parse().map_err(|_| bad())?;
    if low == 0 || low > high {
        return Err(key_error(
            key,
            format!("{low}-{high} is not an ascending range of non-zero ports"),
        ));
    }
    Ok(PortRange { low, high })
}
