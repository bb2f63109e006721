//! The `[relay]` table, the same for a node and a coordinator (DESIGN §7:
//! node relays and the coordinator relay are the same code):
//!
//! ```toml
//! [relay]
//! data = true                   # relay for nodes whose NATs defeat a direct path
//! listen_ip = "203.0.113.5"     # where allocation ports bind
//! advertise_ip = "203.0.113.5"  # what nodes send to (default: listen_ip)
//! port_range = "40000-40999"    # default: any port
//! ```
//!
//! `listen_ip` defaults to the coordinator's `listen` address, or to a
//! node's first uplink with a `bind` address.

use std::net::IpAddr;

use super::toml_walk::{key_error, KeyResult, Section};

/// A UDP port range, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub low: u16,
    /// Last port.
    pub high: u16,
}

/// The `[relay]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
}

impl RelaySettings {
    /// Where allocation ports bind and the address nodes reach them at,
    /// given the default bind address (checked at parse time to be usable).
    pub fn addresses(&self, default_ip: IpAddr) -> (IpAddr, IpAddr) {
        let bind = self.listen_ip.unwrap_or(default_ip);
        (bind, self.advertise_ip.unwrap_or(bind))
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
    relay.only(&["data", "listen_ip", "advertise_ip", "port_range"])?;
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
    let settings = RelaySettings {
        data,
        listen_ip,
        advertise_ip,
        port_range,
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
