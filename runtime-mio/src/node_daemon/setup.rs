//! Everything the node checks and prepares before it runs, shared by
//! `transitloom-node check` and `run`, so a configuration that checks is one
//! that starts: the file, the features this build can honour, each uplink's
//! source address, the data directory, and the ingress addresses.

use std::fs::DirBuilder;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use transitloom_proto_core::dataplane::{UplinkPolicy, UplinkPriority, UplinkSpec};
use transitloom_proto_core::UplinkId;

use super::interface::HostSnapshot;
use super::uplink_watch::{self, UplinkReach, UplinkWatch, Watched};
use super::DaemonError;
use crate::config::{
    ConfigError, IngressTable, Mode, NodeConfig, Priority, RelayPolicy, UplinkSource,
};

const DATA_DIR_MODE: u32 = 0o700;
/// Where Linux says which ports it hands out to sockets bound to port 0.
const EPHEMERAL_PORTS: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// `LOW HIGH` as the system writes its ephemeral port range.
fn parse_port_range(text: &str) -> Option<(u16, u16)> {
    let mut ports = text.split_whitespace().map(str::parse::<u16>);
    let (Some(Ok(low)), Some(Ok(high)), None) = (ports.next(), ports.next(), ports.next()) else {
        return None;
    };
    (low <= high).then_some((low, high))
}

/// A validated configuration with what start-up derived from it.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The configuration.
    pub config: NodeConfig,
    /// Each uplink's source address now (interfaces resolved), in config
    /// order; an uplink that is down has an unspecified address.
    pub uplinks: Vec<UplinkSpec>,
    /// Each association's ingress address, in config order.
    pub ingress: Vec<SocketAddr>,
    /// Each uplink's state at start-up, followed from then on.
    pub(crate) watch: UplinkWatch,
}

impl Setup {
    /// Loads and checks `file`, creates the data directory (0700), and
    /// assigns and keeps the ingress addresses.
    ///
    /// # Errors
    /// [`DaemonError::Config`] (exit 2) for anything the operator must fix,
    /// [`DaemonError::Io`] (exit 1) when the data directory cannot be written.
    pub fn prepare(file: &Path) -> Result<Self, DaemonError> {
        let config = NodeConfig::load(file)?;
        refuse_unsupported(&config)?;
        let (uplinks, watch) = resolve_uplinks(&config)?;
        create_data_dir(&config.data_dir).map_err(|source| DaemonError::Io {
            path: config.data_dir.clone(),
            action: "create",
            source,
        })?;
        let mut table = IngressTable::load(&config.data_dir)?;
        let ingress = table.assign(&config)?;
        table
            .save(&config.data_dir)
            .map_err(|source| DaemonError::Io {
                path: config.data_dir.clone(),
                action: "keep the ingress addresses in",
                source,
            })?;
        Ok(Self {
            config,
            uplinks,
            ingress,
            watch,
        })
    }

    /// Warnings about ingress ranges that reach into the system's
    /// ephemeral ports, where any program's outgoing socket may hold an
    /// ingress port when the node starts (`FILE: service[N].ingress_range:
    /// …`); none when the system's range cannot be read.
    pub fn ingress_warnings(&self) -> Vec<String> {
        let Some(ephemeral) = std::fs::read_to_string(EPHEMERAL_PORTS)
            .ok()
            .and_then(|text| parse_port_range(&text))
        else {
            return Vec::new();
        };
        self.config
            .services
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.ingress_range.low <= ephemeral.1 && ephemeral.0 <= s.ingress_range.high
            })
            .map(|(i, s)| {
                format!(
                    "{}: service[{i}].ingress_range: {}-{} overlaps the system's ephemeral ports \
                     {}-{} ({EPHEMERAL_PORTS}); another program's socket may hold an ingress \
                     port when the node starts, so pick a range outside it",
                    self.config.file.display(),
                    s.ingress_range.low,
                    s.ingress_range.high,
                    ephemeral.0,
                    ephemeral.1
                )
            })
            .collect()
    }

    /// Each uplink's state at start-up, in config order.
    pub fn uplink_reach(&self) -> impl Iterator<Item = &UplinkReach> + '_ {
        self.watch.uplinks().iter().map(|u| &u.reach)
    }

    /// The address the control socket binds: any address of the
    /// coordinators' family, any port.
    pub fn control_bind(&self) -> SocketAddr {
        let v6 = self
            .config
            .coordinators
            .first()
            .is_some_and(SocketAddr::is_ipv6);
        let ip = if v6 {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        SocketAddr::new(ip, 0)
    }
}

fn refused(config: &NodeConfig, key: String, reason: &str) -> ConfigError {
    ConfigError {
        file: config.file.clone(),
        key,
        reason: reason.to_owned(),
    }
}

/// Refuses settings this build would silently not honour.
///
/// # Errors
/// The first such setting, with its key.
pub(crate) fn refuse_unsupported(config: &NodeConfig) -> Result<(), ConfigError> {
    let families: Vec<bool> = config.coordinators.iter().map(|c| c.is_ipv6()).collect();
    if families.windows(2).any(|w| w[0] != w[1]) {
        return Err(refused(
            config,
            "coordinators".to_owned(),
            "mixing IPv4 and IPv6 coordinator addresses is not supported yet (the control socket binds one family)",
        ));
    }
    for (i, a) in config.associations.iter().enumerate() {
        if a.mode == Mode::Segmented {
            return Err(refused(
                config,
                format!("association[{i}].mode"),
                "segmented mode is not supported yet; use whole-packet",
            ));
        }
        if a.relay == RelayPolicy::Only {
            return Err(refused(
                config,
                format!("association[{i}].relay"),
                "relay paths are not supported yet, so \"only\" would carry nothing; use allow or never",
            ));
        }
    }
    Ok(())
}

/// Each uplink's source address now, checked bindable on this host, and
/// its state for the watcher to follow.
///
/// An interface that is down, has no address yet or does not exist starts
/// its uplink down (it comes up when the address appears), unless no
/// uplink is usable and one names an interface this host does not have:
/// that is almost always a typo, so it is refused.
///
/// # Errors
/// A bind address this host does not have; an interface this host does
/// not have when no other uplink is usable; an unreadable address list
/// with an interface uplink.
pub(crate) fn resolve_uplinks(
    config: &NodeConfig,
) -> Result<(Vec<UplinkSpec>, UplinkWatch), ConfigError> {
    let prefer_v6 = config.coordinators.first().is_some_and(SocketAddr::is_ipv6);
    let host = HostSnapshot::read();
    let mut specs = Vec::with_capacity(config.uplinks.len());
    let mut watched = Vec::with_capacity(config.uplinks.len());
    for (i, uplink) in config.uplinks.iter().enumerate() {
        let id = u16::try_from(i).map_err(|_| {
            refused(
                config,
                "uplink".to_owned(),
                "more uplinks than this node can number",
            )
        })?;
        let (key, reach, followed) = match (&uplink.source, &host) {
            (UplinkSource::Interface(_), Ok(host)) => (
                format!("uplink[{i}].interface"),
                uplink_watch::reach(&uplink.source, host, prefer_v6, None),
                true,
            ),
            (UplinkSource::Interface(name), Err(err)) => {
                return Err(refused(
                    config,
                    format!("uplink[{i}].interface"),
                    &format!(
                        "cannot read the addresses of interface {name:?} ({err}); give `bind = ADDRESS` instead"
                    ),
                ));
            }
            (UplinkSource::Bind(ip), Ok(host)) if uplink_watch::lists(host, *ip) => (
                format!("uplink[{i}].bind"),
                uplink_watch::reach(&uplink.source, host, prefer_v6, None),
                true,
            ),
            // Not in the list (a loopback address other than 127.0.0.1,
            // an AnyIP route) or no list: bindable is all that is known.
            (UplinkSource::Bind(ip), _) => {
                (format!("uplink[{i}].bind"), UplinkReach::Up(*ip), false)
            }
        };
        let reach = if uplink.enabled {
            reach
        } else {
            UplinkReach::Down(uplink_watch::DISABLED.to_owned())
        };
        match &reach {
            UplinkReach::Up(ip) => {
                if let Err(err) = std::net::UdpSocket::bind((*ip, 0)) {
                    return Err(refused(
                        config,
                        key,
                        &format!("{ip} is not usable on this host: {err}"),
                    ));
                }
                if let UplinkSource::Interface(name) = &uplink.source {
                    tracing::info!(
                        uplink = %uplink.name, interface = %name, address = %ip,
                        "uplink address read from its interface; followed while the node runs"
                    );
                }
            }
            UplinkReach::Down(_) if !uplink.enabled => tracing::info!(
                uplink = %uplink.name,
                "uplink disabled in the configuration: it carries nothing until a reload enables it"
            ),
            UplinkReach::Down(why) => tracing::warn!(
                uplink = %uplink.name, reason = %why,
                "uplink down at start: it carries nothing until its address appears"
            ),
        }
        let bind = reach
            .address()
            .unwrap_or_else(|| uplink_watch::placeholder(prefer_v6));
        let mut spec = UplinkSpec::new(UplinkId(id), uplink.name.clone(), bind);
        spec.policy = UplinkPolicy {
            priority: match uplink.priority {
                Priority::Primary => UplinkPriority::Primary,
                Priority::Backup => UplinkPriority::Backup,
            },
            metered: uplink.metered,
            capacity_bps: uplink.capacity_mbps.map(|mbps| (mbps * 1e6) as u64),
        };
        specs.push(spec);
        watched.push((
            key,
            Watched {
                id: UplinkId(id),
                name: uplink.name.clone(),
                source: uplink.source.clone(),
                followed,
                enabled: uplink.enabled,
                reach,
                changes: 0,
            },
        ));
    }
    if watched.iter().all(|(_, w)| w.reach.address().is_none()) {
        let missing = watched.iter().find(|(_, w)| match (&w.source, &host) {
            (UplinkSource::Interface(name), Ok(host)) => host.link(name).is_none(),
            _ => false,
        });
        if let Some((
            key,
            Watched {
                reach: UplinkReach::Down(why),
                ..
            },
        )) = missing
        {
            return Err(refused(
                config,
                key.clone(),
                &format!("{why}, and no other uplink is usable"),
            ));
        }
    }
    let watch = UplinkWatch::new(prefer_v6, watched.into_iter().map(|(_, w)| w).collect());
    Ok((specs, watch))
}

/// Creates the data directory (and missing parents) with mode 0700.
fn create_data_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DATA_DIR_MODE)
        .create(dir)?;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            dir = %dir.display(), mode = format!("{:o}", mode & 0o777),
            "the data directory is open to other users; 0700 is advised"
        );
    }
    Ok(())
}

impl Setup {
    /// How the node relays for others (`[relay] data = true`), if it does:
    /// the same relay the coordinator hosts, on this node's UDP ports.
    ///
    /// # Errors
    /// When the operating system has no randomness for the relay's cookie
    /// secret.
    pub(crate) fn relay_hosting(
        &self,
    ) -> Result<Option<transitloom_proto_core::relay::RelayHosting>, DaemonError> {
        use transitloom_proto_core::relay::{RelayConfig, RelayHosting};
        let settings = &self.config.relay;
        if !settings.data {
            return Ok(None);
        }
        let default_ip = self
            .uplinks
            .iter()
            .map(|u| u.bind)
            .find(|ip| !ip.is_unspecified())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let (bind_ip, advertise_ip) = settings.addresses(default_ip);
        let seed = super::identity::os_seed()?;
        let mut relay = RelayConfig::new(
            crate::clock::wall_clock_now(),
            u64::from_be_bytes(seed[..8].try_into().unwrap_or_default()),
        );
        // A datagram from any of this node's addresses on a relay port is
        // its own, never forwarded (one hop at most).
        relay.own_ips = [bind_ip, advertise_ip]
            .into_iter()
            .chain(self.uplinks.iter().map(|u| u.bind))
            .collect();
        settings.apply_limits(&mut relay);
        Ok(Some(RelayHosting {
            relay,
            bind_ip,
            advertise_ip,
            ports: settings.port_range.map(|r| (r.low, r.high)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::parse_port_range;

    #[test]
    fn the_ephemeral_port_range_is_read_as_the_system_writes_it() {
        assert_eq!(parse_port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(parse_port_range("1024 65535"), Some((1024, 65535)));
        for bad in ["", "32768", "60999 32768", "a b", "1 2 3", "1 70000"] {
            assert_eq!(parse_port_range(bad), None, "{bad:?}");
        }
    }
}
