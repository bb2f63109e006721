//! Socket addresses in a fixed 19-byte form: family, 16 address bytes, port.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::WireError;

/// Encoded size of an address.
pub const ADDR_LEN: usize = 19;

const FAMILY_V4: u8 = 4;
const FAMILY_V6: u8 = 6;

/// A socket address on the wire. IPv4 uses the first four address bytes and
/// requires the other twelve to be zero, so every address has one encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrRepr(pub SocketAddr);

impl AddrRepr {
    /// Parses the first [`ADDR_LEN`] bytes of `buf`.
    ///
    /// # Errors
    /// [`WireError::Truncated`] or [`WireError::BadAddress`].
    pub fn parse(buf: &[u8]) -> Result<Self, WireError> {
        let buf = buf.get(..ADDR_LEN).ok_or(WireError::Truncated)?;
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&buf[1..17]);
        let port = u16::from_be_bytes([buf[17], buf[18]]);
        let ip = match buf[0] {
            FAMILY_V4 if octets[4..].iter().all(|&b| b == 0) => {
                IpAddr::V4(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3]))
            }
            FAMILY_V6 => IpAddr::V6(Ipv6Addr::from(octets)),
            _ => return Err(WireError::BadAddress),
        };
        Ok(Self(SocketAddr::new(ip, port)))
    }

    /// Writes the address into the first [`ADDR_LEN`] bytes of `buf`.
    ///
    /// # Panics
    /// If `buf` is shorter than [`ADDR_LEN`].
    pub fn emit(&self, buf: &mut [u8]) {
        let buf = &mut buf[..ADDR_LEN];
        buf.fill(0);
        match self.0.ip() {
            IpAddr::V4(ip) => {
                buf[0] = FAMILY_V4;
                buf[1..5].copy_from_slice(&ip.octets());
            }
            IpAddr::V6(ip) => {
                buf[0] = FAMILY_V6;
                buf[1..17].copy_from_slice(&ip.octets());
            }
        }
        buf[17..19].copy_from_slice(&self.0.port().to_be_bytes());
    }
}
