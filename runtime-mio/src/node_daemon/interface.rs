//! The host's interfaces and addresses, for uplinks: rtnetlink dumps
//! (`RTM_GETLINK`, `RTM_GETADDR`) over a plain socket, so they need neither
//! `unsafe` nor another crate. Read at start-up and then about once a second
//! by the uplink watcher ([`super::uplink_watch`]), which follows an
//! uplink's address as it appears, changes or goes away.

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

const AF_NETLINK: i32 = 16;
const NETLINK_ROUTE: i32 = 0;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const IFA_F_DADFAILED: u32 = 0x08;
const IFA_F_DEPRECATED: u32 = 0x20;
const IFA_F_TENTATIVE: u32 = 0x40;
const IFLA_IFNAME: u16 = 3;
const IFF_UP: u32 = 0x1;
/// Operationally up (RFC 2863 `up` or `unknown`), as rtnetlink reports it.
const IFF_RUNNING: u32 = 0x40;
/// `struct nlmsghdr`.
const HEADER_LEN: usize = 16;
/// `struct ifaddrmsg`.
const IFADDRMSG_LEN: usize = 8;
/// `struct ifinfomsg`.
const IFINFOMSG_LEN: usize = 16;
const SEQ: u32 = 1;

/// One address the kernel reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InterfaceAddr {
    /// The interface index.
    pub(crate) index: u32,
    /// The local address.
    pub(crate) addr: IpAddr,
    /// `RT_SCOPE_*`: 0 universe (global) … 254 host.
    pub(crate) scope: u8,
    /// `IFA_F_*`.
    pub(crate) flags: u32,
}

/// One interface the kernel reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Link {
    /// The interface index.
    pub(crate) index: u32,
    /// Its name.
    pub(crate) name: String,
    /// `IFF_*` as rtnetlink reports them (`IFF_RUNNING` is the operational
    /// state).
    pub(crate) flags: u32,
}

impl Link {
    /// Administratively up and operationally up: packets can leave.
    pub(crate) fn is_up(&self) -> bool {
        self.flags & (IFF_UP | IFF_RUNNING) == IFF_UP | IFF_RUNNING
    }
}

/// Every interface and address of the host at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HostSnapshot {
    /// The interfaces.
    pub(crate) links: Vec<Link>,
    /// The addresses.
    pub(crate) addrs: Vec<InterfaceAddr>,
}

impl HostSnapshot {
    /// Reads both from the kernel.
    ///
    /// # Errors
    /// When the kernel's lists cannot be read.
    pub(crate) fn read() -> io::Result<Self> {
        let mut links = Vec::new();
        dump(RTM_GETLINK, IFINFOMSG_LEN, |kind, body| {
            if kind == RTM_NEWLINK {
                links.extend(parse_link(body));
            }
        })?;
        Ok(Self {
            links,
            addrs: addresses()?,
        })
    }

    /// The interface named `name`.
    pub(crate) fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    /// The interface with index `index`.
    pub(crate) fn link_at(&self, index: u32) -> Option<&Link> {
        self.links.iter().find(|l| l.index == index)
    }
}

impl InterfaceAddr {
    /// Whether a socket can bind it and send from it now: not tentative,
    /// failed or deprecated.
    pub(crate) fn is_usable(&self) -> bool {
        self.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED | IFA_F_DEPRECATED) == 0
    }

    /// Whether an interface uplink may take it: usable, and not IPv6
    /// link-local, which needs a scope id an uplink's address cannot carry.
    pub(crate) fn fits_uplink(&self) -> bool {
        self.is_usable()
            && !matches!(self.addr, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
    }
}

/// Picks the best address of interface `index`: one of the preferred
/// family first, then global scope before narrower ones.
pub(crate) fn choose(addrs: &[InterfaceAddr], index: u32, prefer_v6: bool) -> Option<IpAddr> {
    addrs
        .iter()
        .filter(|a| a.index == index && a.fits_uplink())
        .min_by_key(|a| (a.addr.is_ipv6() != prefer_v6, a.scope))
        .map(|a| a.addr)
}

/// Every address of every interface.
fn addresses() -> io::Result<Vec<InterfaceAddr>> {
    let mut out = Vec::new();
    dump(RTM_GETADDR, IFADDRMSG_LEN, |kind, body| {
        if kind == RTM_NEWADDR {
            out.extend(parse_addr(body));
        }
    })?;
    Ok(out)
}

/// Sends a `request` dump (for every family, its header `header_len` zero
/// bytes) and hands each message of the answer to `each`.
fn dump(request: u16, header_len: usize, mut each: impl FnMut(u16, &[u8])) -> io::Result<()> {
    let socket = Socket::new(
        Domain::from(AF_NETLINK),
        Type::DGRAM,
        Some(Protocol::from(NETLINK_ROUTE)),
    )?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    socket.send(&dump_request(request, header_len))?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let len = (&socket).read(&mut buf)?;
        if len == 0 || parse_messages(&buf[..len], &mut each)? {
            return Ok(());
        }
    }
}

/// A dump request of type `kind` for every family.
fn dump_request(kind: u16, header_len: usize) -> Vec<u8> {
    let len = (HEADER_LEN + header_len) as u32;
    let mut req = Vec::with_capacity(len as usize);
    req.extend_from_slice(&len.to_ne_bytes());
    req.extend_from_slice(&kind.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&SEQ.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.resize(len as usize, 0);
    req
}

fn u16_at(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Parses one datagram of an address dump into `out`; true when the dump
/// is done.
///
/// # Errors
/// An error the kernel reported, or a malformed message.
#[cfg(test)]
pub(crate) fn parse_dump(buf: &[u8], out: &mut Vec<InterfaceAddr>) -> io::Result<bool> {
    parse_messages(buf, &mut |kind, body| {
        if kind == RTM_NEWADDR {
            out.extend(parse_addr(body));
        }
    })
}

/// Hands each message of one datagram of a dump to `each` (kind, body);
/// true when the dump is done.
///
/// # Errors
/// An error the kernel reported, or a malformed message.
fn parse_messages(buf: &[u8], each: &mut impl FnMut(u16, &[u8])) -> io::Result<bool> {
    let malformed = || io::Error::new(io::ErrorKind::InvalidData, "malformed netlink message");
    let mut at = 0;
    while at + HEADER_LEN <= buf.len() {
        let len = u32_at(buf, at).ok_or_else(malformed)? as usize;
        let kind = u16_at(buf, at + 4).ok_or_else(malformed)?;
        let seq = u32_at(buf, at + 8).ok_or_else(malformed)?;
        if len < HEADER_LEN || at + len > buf.len() {
            return Err(malformed());
        }
        let body = &buf[at + HEADER_LEN..at + len];
        at += align4(len);
        if seq != SEQ {
            continue;
        }
        match kind {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let code = u32_at(body, 0).ok_or_else(malformed)? as i32;
                if code != 0 {
                    return Err(io::Error::from_raw_os_error(-code));
                }
            }
            _ => each(kind, body),
        }
    }
    Ok(false)
}

/// One `ifinfomsg` with its name.
fn parse_link(body: &[u8]) -> Option<Link> {
    let index = u32_at(body, 4)?;
    let flags = u32_at(body, 8)?;
    let mut at = IFINFOMSG_LEN;
    while at + 4 <= body.len() {
        let len = usize::from(u16_at(body, at)?);
        let kind = u16_at(body, at + 2)?;
        if len < 4 || at + len > body.len() {
            return None;
        }
        if kind == IFLA_IFNAME {
            let value = &body[at + 4..at + len];
            let name = value.split(|&b| b == 0).next()?;
            return Some(Link {
                index,
                name: String::from_utf8_lossy(name).into_owned(),
                flags,
            });
        }
        at += align4(len);
    }
    None
}

/// One `ifaddrmsg` with its attributes.
fn parse_addr(body: &[u8]) -> Option<InterfaceAddr> {
    let family = *body.first()?;
    let mut flags = u32::from(*body.get(2)?);
    let scope = *body.get(3)?;
    let index = u32_at(body, 4)?;
    let (mut address, mut local) = (None, None);
    let mut at = IFADDRMSG_LEN;
    while at + 4 <= body.len() {
        let len = usize::from(u16_at(body, at)?);
        let kind = u16_at(body, at + 2)?;
        if len < 4 || at + len > body.len() {
            return None;
        }
        let value = &body[at + 4..at + len];
        let ip = match (family, value.len()) {
            (AF_INET, 4) => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(value).ok()?))),
            (AF_INET6, 16) => Some(IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(value).ok()?,
            ))),
            _ => None,
        };
        match kind {
            IFA_ADDRESS => address = ip,
            IFA_LOCAL => local = ip,
            IFA_FLAGS => flags = u32_at(value, 0).unwrap_or(flags),
            _ => {}
        }
        at += align4(len);
    }
    // On point-to-point links IFA_ADDRESS is the peer; IFA_LOCAL is ours.
    let addr = local.or(address)?;
    Some(InterfaceAddr {
        index,
        addr,
        scope,
        flags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(value);
        a.resize(align4(a.len()), 0);
        a
    }

    fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((HEADER_LEN + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&SEQ.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(body);
        m.resize(align4(m.len()), 0);
        m
    }

    fn ifaddr(family: u8, scope: u8, index: u32, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut b = vec![family, 24, 0, scope];
        b.extend_from_slice(&index.to_ne_bytes());
        for a in attrs {
            b.extend_from_slice(a);
        }
        b
    }

    #[test]
    fn a_dump_parses_and_the_best_address_wins() {
        let mut dump = message(
            RTM_NEWADDR,
            &ifaddr(
                AF_INET,
                0,
                2,
                &[
                    attr(IFA_ADDRESS, &[198, 51, 100, 1]),
                    attr(IFA_LOCAL, &[192, 0, 2, 10]),
                ],
            ),
        );
        let link_local: Ipv6Addr = "fe80::1".parse().unwrap();
        dump.extend(message(
            RTM_NEWADDR,
            &ifaddr(AF_INET6, 253, 2, &[attr(IFA_ADDRESS, &link_local.octets())]),
        ));
        let tentative: Ipv6Addr = "2001:db8::9".parse().unwrap();
        dump.extend(message(
            RTM_NEWADDR,
            &ifaddr(
                AF_INET6,
                0,
                2,
                &[
                    attr(IFA_ADDRESS, &tentative.octets()),
                    attr(IFA_FLAGS, &IFA_F_TENTATIVE.to_ne_bytes()),
                ],
            ),
        ));
        dump.extend(message(NLMSG_DONE, &0u32.to_ne_bytes()));
        let mut addrs = Vec::new();
        assert!(parse_dump(&dump, &mut addrs).unwrap());
        assert_eq!(addrs.len(), 3);
        let v4: IpAddr = "192.0.2.10".parse().unwrap();
        assert_eq!(addrs[0].addr, v4, "IFA_LOCAL over the peer address");
        assert_eq!(choose(&addrs, 2, false), Some(v4));
        assert_eq!(
            choose(&addrs, 2, true),
            Some(v4),
            "link-local and tentative IPv6 addresses are never chosen"
        );
        assert_eq!(choose(&addrs, 3, false), None);
    }

    #[test]
    fn a_kernel_error_is_reported() {
        let dump = message(NLMSG_ERROR, &(-13i32).to_ne_bytes());
        let err = parse_dump(&dump, &mut Vec::new()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(13));
    }

    #[test]
    fn a_link_dump_parses_names_and_state() {
        let mut body = Vec::new();
        body.extend_from_slice(&[0, 0, 1, 0]);
        body.extend_from_slice(&7u32.to_ne_bytes());
        body.extend_from_slice(&(IFF_UP | IFF_RUNNING).to_ne_bytes());
        body.extend_from_slice(&0u32.to_ne_bytes());
        body.extend(attr(IFLA_IFNAME, b"wan1\0"));
        let link = parse_link(&body).unwrap();
        assert_eq!((link.index, link.name.as_str()), (7, "wan1"));
        assert!(link.is_up());
        let down = Link {
            flags: IFF_UP,
            ..link.clone()
        };
        assert!(!down.is_up(), "administratively up without carrier");
        assert_eq!(parse_link(&body[..IFINFOMSG_LEN]), None, "no name");
    }

    #[test]
    fn the_host_snapshot_has_loopback_up_with_its_address() {
        let host = HostSnapshot::read().unwrap();
        let lo = host.link("lo").expect("every host has lo");
        assert!(lo.is_up(), "{lo:?}");
        assert_eq!(host.link_at(lo.index), Some(lo));
        assert_eq!(
            choose(&host.addrs, lo.index, false),
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
        assert!(host.link("tl-no-such0").is_none());
    }
}
