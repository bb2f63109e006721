//! Following each uplink's address while the node runs (DESIGN §8,
//! issue 6): the daemon reads the host's interfaces and addresses about
//! once a second ([`HostSnapshot`]) and this module says which uplinks
//! changed, so the node rebinds or fails their paths without a restart.
//!
//! An `interface = "…"` uplink is up while its interface exists, is up
//! (administratively and operationally) and has a usable address; it keeps
//! the address it has while that stays usable, so a second address added
//! beside it does not move it. A `bind = "…"` uplink is up while its
//! address is on the host and the interface holding it is up. A bind
//! address the address list does not show but which binds anyway (a
//! loopback address other than 127.0.0.1, an AnyIP route) is not followed:
//! it stays up, as before the watcher existed. An uplink the configuration
//! takes out of service (`enabled = false`, which a reload may change) is
//! down whatever the host shows.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use transitloom_proto_core::UplinkId;

use super::interface::{choose, HostSnapshot};
use crate::config::UplinkSource;

/// How often the daemon reads the host's addresses.
pub(crate) const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Whether an uplink can carry traffic, as the host shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UplinkReach {
    /// Its mesh sockets bind this address.
    Up(IpAddr),
    /// It has no usable address now; the reason, for logs and status.
    Down(String),
}

impl UplinkReach {
    /// The address, while it is up.
    pub fn address(&self) -> Option<IpAddr> {
        match self {
            Self::Up(ip) => Some(*ip),
            Self::Down(_) => None,
        }
    }
}

/// What the host shows for an uplink on `source` now; `current` is the
/// address it has (kept while still usable), `prefer_v6` the family an
/// interface's address is picked from first.
pub(crate) fn reach(
    source: &UplinkSource,
    host: &HostSnapshot,
    prefer_v6: bool,
    current: Option<IpAddr>,
) -> UplinkReach {
    match source {
        UplinkSource::Interface(name) => {
            let Some(link) = host.link(name) else {
                return UplinkReach::Down(format!("no interface named {name:?} on this host"));
            };
            if !link.is_up() {
                return UplinkReach::Down(format!("interface {name:?} is down"));
            }
            let kept = current.filter(|ip| {
                host.addrs
                    .iter()
                    .any(|a| a.index == link.index && a.addr == *ip && a.fits_uplink())
            });
            match kept.or_else(|| choose(&host.addrs, link.index, prefer_v6)) {
                Some(ip) => UplinkReach::Up(ip),
                None => UplinkReach::Down(format!(
                    "interface {name:?} has no usable address (none, tentative, or only IPv6 link-local)"
                )),
            }
        }
        UplinkSource::Bind(ip) => {
            let Some(addr) = host.addrs.iter().find(|a| a.addr == *ip) else {
                return UplinkReach::Down(format!("{ip} is not an address of this host"));
            };
            match host.link_at(addr.index) {
                Some(link) if !link.is_up() => UplinkReach::Down(format!(
                    "interface {:?}, which has {ip}, is down",
                    link.name
                )),
                _ if !addr.is_usable() => {
                    UplinkReach::Down(format!("{ip} is not usable yet (tentative or deprecated)"))
                }
                _ => UplinkReach::Up(*ip),
            }
        }
    }
}

/// Whether `host` lists a bind address at all (so the watcher can follow
/// it).
pub(crate) fn lists(host: &HostSnapshot, ip: IpAddr) -> bool {
    host.addrs.iter().any(|a| a.addr == ip)
}

/// Why an uplink the configuration takes out of service is down.
pub(crate) const DISABLED: &str = "disabled in the configuration (enabled = false)";

/// The address a down uplink's spec carries until it has one: unspecified,
/// of the preferred family.
pub(crate) fn placeholder(prefer_v6: bool) -> IpAddr {
    if prefer_v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
}

/// One uplink as the watcher knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Watched {
    /// Its id in the data plane.
    pub(crate) id: UplinkId,
    /// Its name.
    pub(crate) name: String,
    /// Where its address comes from.
    pub(crate) source: UplinkSource,
    /// False for a bind address the host's list does not show: never
    /// taken down by the host.
    pub(crate) followed: bool,
    /// False while the configuration takes it out of service: down
    /// whatever the host shows.
    pub(crate) enabled: bool,
    /// Its state now.
    pub(crate) reach: UplinkReach,
    /// Times its address changed, appeared or went away since start.
    pub(crate) changes: u64,
}

/// A change of one uplink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UplinkChange {
    /// The uplink.
    pub(crate) id: UplinkId,
    /// Its name.
    pub(crate) name: String,
    /// Before.
    pub(crate) from: UplinkReach,
    /// Now.
    pub(crate) to: UplinkReach,
}

/// Every uplink's state, followed from host snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UplinkWatch {
    prefer_v6: bool,
    uplinks: Vec<Watched>,
}

impl UplinkWatch {
    /// A watch of `uplinks` (their state at start-up).
    pub(crate) fn new(prefer_v6: bool, uplinks: Vec<Watched>) -> Self {
        Self { prefer_v6, uplinks }
    }

    /// The uplinks, in config order.
    pub(crate) fn uplinks(&self) -> &[Watched] {
        &self.uplinks
    }

    /// One uplink.
    pub(crate) fn get(&self, id: UplinkId) -> Option<&Watched> {
        self.uplinks.iter().find(|u| u.id == id)
    }

    /// Puts an uplink in or out of service (a reload changed `enabled`);
    /// the next [`observe`](Self::observe) reports the change. True if it
    /// changed.
    pub(crate) fn set_enabled(&mut self, id: UplinkId, enabled: bool) -> bool {
        match self.uplinks.iter_mut().find(|u| u.id == id) {
            Some(u) if u.enabled != enabled => {
                u.enabled = enabled;
                true
            }
            _ => false,
        }
    }

    /// Takes in what the host shows now and returns the uplinks whose
    /// state changed (a new address, gone, back), in config order. A down
    /// uplink whose reason alone changed (no interface, then no address)
    /// is not a change for the node, but its reason is kept for status.
    pub(crate) fn observe(&mut self, host: &HostSnapshot) -> Vec<UplinkChange> {
        let mut changes = Vec::new();
        for u in self.uplinks.iter_mut() {
            let now = match &u.source {
                _ if !u.enabled => UplinkReach::Down(DISABLED.to_owned()),
                _ if u.followed => reach(&u.source, host, self.prefer_v6, u.reach.address()),
                UplinkSource::Bind(ip) => UplinkReach::Up(*ip),
                // Interfaces are always followed.
                UplinkSource::Interface(_) => continue,
            };
            if now == u.reach {
                continue;
            }
            let from = std::mem::replace(&mut u.reach, now.clone());
            if from.address().is_none() && now.address().is_none() {
                continue;
            }
            u.changes += 1;
            changes.push(UplinkChange {
                id: u.id,
                name: u.name.clone(),
                from,
                to: now,
            });
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::super::interface::{InterfaceAddr, Link};
    use super::*;

    const UP: u32 = 0x1 | 0x40;
    const TENTATIVE: u32 = 0x40;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn link(index: u32, name: &str, up: bool) -> Link {
        Link {
            index,
            name: name.to_owned(),
            flags: if up { UP } else { 0x1 },
        }
    }

    fn addr(index: u32, text: &str) -> InterfaceAddr {
        InterfaceAddr {
            index,
            addr: ip(text),
            scope: 0,
            flags: 0,
        }
    }

    fn host(links: Vec<Link>, addrs: Vec<InterfaceAddr>) -> HostSnapshot {
        HostSnapshot { links, addrs }
    }

    fn watched(id: u16, name: &str, source: UplinkSource, reach: UplinkReach) -> Watched {
        Watched {
            id: UplinkId(id),
            name: name.to_owned(),
            source,
            followed: true,
            enabled: true,
            reach,
            changes: 0,
        }
    }

    fn interface(name: &str) -> UplinkSource {
        UplinkSource::Interface(name.to_owned())
    }

    /// (uplink id, address after) of each change.
    fn moves(changes: &[UplinkChange]) -> Vec<(u16, Option<IpAddr>)> {
        changes.iter().map(|c| (c.id.0, c.to.address())).collect()
    }

    #[test]
    fn each_source_reaches_what_the_host_shows() {
        let h = host(
            vec![link(2, "wan1", true), link(3, "wan2", false)],
            vec![
                addr(2, "192.0.2.10"),
                addr(3, "198.51.100.4"),
                InterfaceAddr {
                    flags: TENTATIVE,
                    ..addr(2, "2001:db8::10")
                },
            ],
        );
        let cases: &[(UplinkSource, Option<&str>, UplinkReach)] = &[
            (interface("wan1"), None, UplinkReach::Up(ip("192.0.2.10"))),
            (
                interface("wan2"),
                None,
                UplinkReach::Down("interface \"wan2\" is down".to_owned()),
            ),
            (
                interface("wan3"),
                None,
                UplinkReach::Down("no interface named \"wan3\" on this host".to_owned()),
            ),
            (
                UplinkSource::Bind(ip("192.0.2.10")),
                None,
                UplinkReach::Up(ip("192.0.2.10")),
            ),
            (
                UplinkSource::Bind(ip("198.51.100.4")),
                None,
                UplinkReach::Down("interface \"wan2\", which has 198.51.100.4, is down".to_owned()),
            ),
            (
                UplinkSource::Bind(ip("203.0.113.9")),
                None,
                UplinkReach::Down("203.0.113.9 is not an address of this host".to_owned()),
            ),
            (
                UplinkSource::Bind(ip("2001:db8::10")),
                None,
                UplinkReach::Down(
                    "2001:db8::10 is not usable yet (tentative or deprecated)".to_owned(),
                ),
            ),
        ];
        for (source, current, want) in cases {
            let got = reach(source, &h, false, current.map(ip));
            assert_eq!(&got, want, "{source:?}");
        }
        let bare = host(vec![link(4, "wwan0", true)], Vec::new());
        assert!(matches!(
            reach(&interface("wwan0"), &bare, false, None),
            UplinkReach::Down(why) if why.contains("no usable address")
        ));
    }

    #[test]
    fn an_interface_keeps_its_address_while_it_stays_usable() {
        let both = host(
            vec![link(2, "wan1", true)],
            vec![addr(2, "192.0.2.10"), addr(2, "192.0.2.20")],
        );
        for current in ["192.0.2.10", "192.0.2.20"] {
            assert_eq!(
                reach(&interface("wan1"), &both, false, Some(ip(current))),
                UplinkReach::Up(ip(current))
            );
        }
        let moved = host(vec![link(2, "wan1", true)], vec![addr(2, "192.0.2.20")]);
        assert_eq!(
            reach(&interface("wan1"), &moved, false, Some(ip("192.0.2.10"))),
            UplinkReach::Up(ip("192.0.2.20"))
        );
    }

    #[test]
    fn the_watch_reports_address_changes_losses_and_returns_only() {
        let at = |text: &str| UplinkReach::Up(ip(text));
        let mut watch = UplinkWatch::new(
            false,
            vec![
                watched(0, "fiber", interface("wan1"), at("192.0.2.10")),
                watched(
                    1,
                    "lte",
                    UplinkSource::Bind(ip("198.51.100.4")),
                    at("198.51.100.4"),
                ),
                Watched {
                    followed: false,
                    ..watched(
                        2,
                        "lo",
                        UplinkSource::Bind(ip("127.0.0.2")),
                        at("127.0.0.2"),
                    )
                },
            ],
        );
        let links = || vec![link(2, "wan1", true), link(3, "wwan0", true)];
        let steady = host(
            links(),
            vec![addr(2, "192.0.2.10"), addr(3, "198.51.100.4")],
        );
        assert_eq!(moves(&watch.observe(&steady)), vec![], "nothing changed");

        // The interface's address changes; the bind address goes away.
        let renumbered = host(links(), vec![addr(2, "192.0.2.99")]);
        let changes = watch.observe(&renumbered);
        assert_eq!(
            moves(&changes),
            vec![(0, Some(ip("192.0.2.99"))), (1, None)]
        );
        assert_eq!(changes[0].from, at("192.0.2.10"));
        assert_eq!(changes[1].name, "lte");
        assert_eq!(watch.observe(&renumbered), vec![], "a change is told once");

        // The interface goes down: only the reason of lte changes (it was
        // gone already, now its interface is down too): not a change.
        let wan1_down = host(
            vec![link(2, "wan1", false), link(3, "wwan0", false)],
            vec![addr(2, "192.0.2.99"), addr(3, "198.51.100.4")],
        );
        let changes = watch.observe(&wan1_down);
        assert_eq!(moves(&changes), vec![(0, None)]);
        assert!(
            matches!(&watch.get(UplinkId(1)).unwrap().reach, UplinkReach::Down(why) if why.contains("is down")),
            "the newer reason is kept: {:?}",
            watch.get(UplinkId(1))
        );

        // Both come back; the unfollowed uplink never moved.
        let changes = watch.observe(&steady);
        assert_eq!(
            moves(&changes),
            vec![(0, Some(ip("192.0.2.10"))), (1, Some(ip("198.51.100.4")))]
        );
        let counts: Vec<u64> = watch.uplinks().iter().map(|u| u.changes).collect();
        assert_eq!(counts, vec![3, 2, 0]);
        assert_eq!(watch.get(UplinkId(2)).unwrap().reach, at("127.0.0.2"));
    }

    #[test]
    fn a_disabled_uplink_is_down_whatever_the_host_shows_until_enabled() {
        let at = |text: &str| UplinkReach::Up(ip(text));
        let mut watch = UplinkWatch::new(
            false,
            vec![
                watched(0, "fiber", interface("wan1"), at("192.0.2.10")),
                Watched {
                    followed: false,
                    ..watched(
                        1,
                        "lo",
                        UplinkSource::Bind(ip("127.0.0.4")),
                        at("127.0.0.4"),
                    )
                },
            ],
        );
        let steady = host(vec![link(2, "wan1", true)], vec![addr(2, "192.0.2.10")]);
        assert_eq!(moves(&watch.observe(&steady)), vec![]);
        // Taking the unfollowed loopback uplink out of service: the host
        // cannot take it down, the configuration can.
        assert!(watch.set_enabled(UplinkId(1), false));
        assert!(!watch.set_enabled(UplinkId(1), false), "no change twice");
        let changes = watch.observe(&steady);
        assert_eq!(moves(&changes), vec![(1, None)]);
        assert_eq!(changes[0].to, UplinkReach::Down(DISABLED.to_owned()));
        assert_eq!(moves(&watch.observe(&steady)), vec![], "told once");
        assert!(watch.set_enabled(UplinkId(0), false));
        assert!(watch.set_enabled(UplinkId(1), true));
        assert_eq!(
            moves(&watch.observe(&steady)),
            vec![(0, None), (1, Some(ip("127.0.0.4")))]
        );
        // Enabled again, an interface uplink takes what the host shows.
        assert!(watch.set_enabled(UplinkId(0), true));
        let renumbered = host(vec![link(2, "wan1", true)], vec![addr(2, "192.0.2.99")]);
        assert_eq!(
            moves(&watch.observe(&renumbered)),
            vec![(0, Some(ip("192.0.2.99")))]
        );
    }
}
