//! The current address of a network interface, for `interface = "…"`
//! uplinks: one rtnetlink address dump (`RTM_GETADDR`) over a plain socket,
//! so it needs neither `unsafe` nor another crate. It is read once at
//! start-up; following address changes at runtime is not built yet.

use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

const AF_NETLINK: i32 = 16;
const NETLINK_ROUTE: i32 = 0;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
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
/// `struct nlmsghdr`.
const HEADER_LEN: usize = 16;
/// `struct ifaddrmsg`.
const IFADDRMSG_LEN: usize = 8;
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

/// Why an interface has no address to use.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InterfaceError {
    /// No such interface on this host.
    #[error("no interface named {0:?} on this host")]
    Unknown(String),
    /// The interface exists but has no address a socket can bind.
    #[error("interface {0:?} has no usable address (none, tentative, or only IPv6 link-local)")]
    NoAddress(String),
    /// The kernel's address list could not be read.
    #[error(
        "cannot read the addresses of interface {name:?} ({source}); give `bind = ADDRESS` instead"
    )]
    Unreadable {
        /// The interface.
        name: String,
        /// Why.
        source: io::Error,
    },
}

/// The address an uplink on interface `name` binds to: a usable address of
/// the preferred family first, then global scope before narrower ones.
pub(crate) fn interface_address(name: &str, prefer_v6: bool) -> Result<IpAddr, InterfaceError> {
    let index = interface_index(name)?;
    let addrs = addresses().map_err(|source| InterfaceError::Unreadable {
        name: name.to_owned(),
        source,
    })?;
    choose(&addrs, index, prefer_v6).ok_or_else(|| InterfaceError::NoAddress(name.to_owned()))
}

fn interface_index(name: &str) -> Result<u32, InterfaceError> {
    let unknown = || InterfaceError::Unknown(name.to_owned());
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(unknown());
    }
    let text =
        std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex")).map_err(|_| unknown())?;
    text.trim().parse().map_err(|_| unknown())
}

/// Picks the best address of interface `index`.
pub(crate) fn choose(addrs: &[InterfaceAddr], index: u32, prefer_v6: bool) -> Option<IpAddr> {
    addrs
        .iter()
        .filter(|a| a.index == index)
        .filter(|a| a.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED | IFA_F_DEPRECATED) == 0)
        // A link-local IPv6 address needs a scope id, which an uplink's
        // bind address cannot carry.
        .filter(|a| !matches!(a.addr, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80))
        .min_by_key(|a| (a.addr.is_ipv6() != prefer_v6, a.scope))
        .map(|a| a.addr)
}

/// Every address of every interface.
fn addresses() -> io::Result<Vec<InterfaceAddr>> {
    let socket = Socket::new(
        Domain::from(AF_NETLINK),
        Type::DGRAM,
        Some(Protocol::from(NETLINK_ROUTE)),
    )?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    socket.send(&request())?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    loop {
        let len = (&socket).read(&mut buf)?;
        if len == 0 || parse_dump(&buf[..len], &mut out)? {
            return Ok(out);
        }
    }
}

/// An `RTM_GETADDR` dump request for every family.
fn request() -> Vec<u8> {
    let len = (HEADER_LEN + IFADDRMSG_LEN) as u32;
    let mut req = Vec::with_capacity(len as usize);
    req.extend_from_slice(&len.to_ne_bytes());
    req.extend_from_slice(&RTM_GETADDR.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&SEQ.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&[0; IFADDRMSG_LEN]);
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

/// Parses one datagram of the dump into `out`; true when the dump is done.
///
/// # Errors
/// An error the kernel reported, or a malformed message.
pub(crate) fn parse_dump(buf: &[u8], out: &mut Vec<InterfaceAddr>) -> io::Result<bool> {
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
            RTM_NEWADDR => {
                if let Some(addr) = parse_addr(body) {
                    out.push(addr);
                }
            }
            _ => {}
        }
    }
    Ok(false)
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
    fn loopback_resolves_and_unknown_interfaces_are_named() {
        assert_eq!(
            interface_address("lo", false).unwrap(),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        let err = interface_address("tl-no-such0", false).unwrap_err();
        assert!(err.to_string().contains("tl-no-such0"), "{err}");
        assert!(matches!(
            interface_address("../lo", false),
            Err(InterfaceError::Unknown(_))
        ));
    }
}
