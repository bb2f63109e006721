//! Checked primitives of the control codec: a reader that never reads past
//! its body, a writer that refuses over-cap fields, names, and the
//! one-byte code enums.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use bytes::{BufMut, Bytes, BytesMut};

use super::MsgError;
use crate::wire::{AddrRepr, ADDR_LEN};

/// Longest [`Name`], in bytes.
pub const MAX_NAME_LEN: usize = 63;

/// Encoded size of a length-prefixed string or byte string.
pub(super) fn text_len(bytes: &[u8]) -> usize {
    2 + bytes.len()
}

/// Encoded size of a list of items with a u16 count.
pub(super) fn list_len<T: Codec>(items: &[T]) -> usize {
    2 + items.iter().map(Codec::wire_len).sum::<usize>()
}

/// A piece of a message body that knows its size and how to write and read
/// itself.
pub(super) trait Codec: Sized {
    /// Encoded size in bytes.
    fn wire_len(&self) -> usize;
    /// Appends the encoding.
    fn put(&self, w: &mut Writer<'_>) -> Result<(), MsgError>;
    /// Reads one value.
    fn take(r: &mut Reader<'_>) -> Result<Self, MsgError>;
}

/// A cursor over one frame body. Every read names the field it was reading,
/// so an error says where the body went wrong.
#[derive(Debug)]
pub(super) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn take_slice(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], MsgError> {
        if self.buf.len() < n {
            return Err(MsgError::Truncated { field });
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], MsgError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take_slice(field, N)?);
        Ok(out)
    }

    pub(super) fn u8(&mut self, field: &'static str) -> Result<u8, MsgError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(super) fn u16(&mut self, field: &'static str) -> Result<u16, MsgError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub(super) fn u32(&mut self, field: &'static str) -> Result<u32, MsgError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub(super) fn u64(&mut self, field: &'static str) -> Result<u64, MsgError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    pub(super) fn bool(&mut self, field: &'static str) -> Result<bool, MsgError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(MsgError::BadBool { field, value }),
        }
    }

    pub(super) fn key(&mut self, field: &'static str) -> Result<[u8; 32], MsgError> {
        self.array(field)
    }

    pub(super) fn addr(&mut self, field: &'static str) -> Result<SocketAddr, MsgError> {
        let bytes = self.take_slice(field, ADDR_LEN)?;
        AddrRepr::parse(bytes)
            .map(|repr| repr.0)
            .map_err(|_| MsgError::BadAddress { field })
    }

    /// An IP address: on the wire an address whose port is 0 (one
    /// encoding per value, so any other port is refused).
    pub(super) fn ip(&mut self, field: &'static str) -> Result<IpAddr, MsgError> {
        let addr = self.addr(field)?;
        if addr.port() != 0 {
            return Err(MsgError::BadAddress { field });
        }
        Ok(addr.ip())
    }

    /// The bytes of a u16-length-prefixed field, at most `max` long.
    fn prefixed(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], MsgError> {
        let len = usize::from(self.u16(field)?);
        if len > max {
            return Err(MsgError::TooLong { field, len, max });
        }
        self.take_slice(field, len)
    }

    pub(super) fn text(&mut self, field: &'static str, max: usize) -> Result<String, MsgError> {
        let bytes = self.prefixed(field, max)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| MsgError::NotUtf8 { field })
    }

    pub(super) fn blob(&mut self, field: &'static str, max: usize) -> Result<Bytes, MsgError> {
        Ok(Bytes::copy_from_slice(self.prefixed(field, max)?))
    }

    pub(super) fn name(&mut self, field: &'static str) -> Result<Name, MsgError> {
        let len = usize::from(self.u16(field)?);
        if len > MAX_NAME_LEN {
            return Err(MsgError::NameTooLong { len });
        }
        let bytes = self.take_slice(field, len)?;
        Name::from_bytes(bytes)
    }

    pub(super) fn list_with<T>(
        &mut self,
        field: &'static str,
        max: usize,
        mut item: impl FnMut(&mut Self) -> Result<T, MsgError>,
    ) -> Result<Vec<T>, MsgError> {
        let count = usize::from(self.u16(field)?);
        if count > max {
            return Err(MsgError::TooMany { field, count, max });
        }
        // Every item takes at least one byte: a short body cannot make us
        // reserve room for thousands of entries.
        let mut out = Vec::with_capacity(count.min(self.buf.len()));
        for _ in 0..count {
            out.push(item(self)?);
        }
        Ok(out)
    }

    pub(super) fn list<T: Codec>(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<Vec<T>, MsgError> {
        self.list_with(field, max, T::take)
    }

    /// Ends the body of `message`: nothing may follow.
    pub(super) fn finish(self, message: &'static str) -> Result<(), MsgError> {
        match self.buf.len() {
            0 => Ok(()),
            count => Err(MsgError::TrailingBytes { message, count }),
        }
    }
}

/// Appends a body to a frame buffer, refusing fields over their caps.
#[derive(Debug)]
pub(super) struct Writer<'a> {
    out: &'a mut BytesMut,
}

impl<'a> Writer<'a> {
    pub(super) fn new(out: &'a mut BytesMut) -> Self {
        Self { out }
    }

    pub(super) fn u8(&mut self, value: u8) {
        self.out.put_u8(value);
    }

    pub(super) fn u32(&mut self, value: u32) {
        self.out.put_u32(value);
    }

    pub(super) fn u64(&mut self, value: u64) {
        self.out.put_u64(value);
    }

    pub(super) fn bool(&mut self, value: bool) {
        self.out.put_u8(u8::from(value));
    }

    pub(super) fn key(&mut self, key: &[u8; 32]) {
        self.out.put_slice(key);
    }

    /// Writes an address; an IPv6 flow label and scope id are local to the
    /// sender and not carried.
    pub(super) fn addr(&mut self, addr: SocketAddr) {
        let mut buf = [0u8; ADDR_LEN];
        AddrRepr(addr).emit(&mut buf);
        self.out.put_slice(&buf);
    }

    /// An IP address, as an address with port 0.
    pub(super) fn ip(&mut self, ip: IpAddr) {
        self.addr(SocketAddr::new(ip, 0));
    }

    fn prefixed(&mut self, field: &'static str, bytes: &[u8], max: usize) -> Result<(), MsgError> {
        let len = bytes.len();
        let Some(prefix) = u16::try_from(len).ok().filter(|_| len <= max) else {
            return Err(MsgError::TooLong { field, len, max });
        };
        self.out.put_u16(prefix);
        self.out.put_slice(bytes);
        Ok(())
    }

    pub(super) fn text(
        &mut self,
        field: &'static str,
        s: &str,
        max: usize,
    ) -> Result<(), MsgError> {
        self.prefixed(field, s.as_bytes(), max)
    }

    pub(super) fn blob(
        &mut self,
        field: &'static str,
        b: &[u8],
        max: usize,
    ) -> Result<(), MsgError> {
        self.prefixed(field, b, max)
    }

    pub(super) fn name(&mut self, name: &Name) {
        // A Name is at most 63 bytes by construction.
        self.out.put_u16(name.0.len() as u16);
        self.out.put_slice(name.0.as_bytes());
    }

    pub(super) fn list_with<T>(
        &mut self,
        field: &'static str,
        items: &[T],
        max: usize,
        mut item: impl FnMut(&mut Self, &T) -> Result<(), MsgError>,
    ) -> Result<(), MsgError> {
        let count = items.len();
        let Some(prefix) = u16::try_from(count).ok().filter(|_| count <= max) else {
            return Err(MsgError::TooMany { field, count, max });
        };
        self.out.put_u16(prefix);
        items.iter().try_for_each(|it| item(self, it))
    }

    pub(super) fn list<T: Codec>(
        &mut self,
        field: &'static str,
        items: &[T],
        max: usize,
    ) -> Result<(), MsgError> {
        self.list_with(field, items, max, |w, it| it.put(w))
    }
}

/// A node or service name: 1 to 63 bytes of `[a-z0-9._-]`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    /// Checks and wraps `name`.
    ///
    /// # Errors
    /// [`MsgError::NameEmpty`], [`MsgError::NameTooLong`] or
    /// [`MsgError::NameCharset`].
    pub fn new(name: &str) -> Result<Self, MsgError> {
        Self::from_bytes(name.as_bytes())
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, MsgError> {
        if bytes.is_empty() {
            return Err(MsgError::NameEmpty);
        }
        if bytes.len() > MAX_NAME_LEN {
            return Err(MsgError::NameTooLong { len: bytes.len() });
        }
        let allowed = |b: &u8| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-');
        if !bytes.iter().all(allowed) {
            return Err(MsgError::NameCharset {
                name: String::from_utf8_lossy(bytes).into_owned(),
            });
        }
        // All bytes are ASCII, so this is valid UTF-8.
        Ok(Self(String::from_utf8_lossy(bytes).into_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for Name {
    type Err = MsgError;

    fn from_str(s: &str) -> Result<Self, MsgError> {
        Self::new(s)
    }
}

/// A service of another node, written `node/service`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerRef {
    /// The node.
    pub node: Name,
    /// The service on that node.
    pub service: Name,
}

impl fmt::Display for PeerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.node, self.service)
    }
}

impl FromStr for PeerRef {
    type Err = MsgError;

    /// Parses `node/service`.
    fn from_str(s: &str) -> Result<Self, MsgError> {
        let Some((node, service)) = s.split_once('/') else {
            return Err(MsgError::BadPeerRef { text: s.to_owned() });
        };
        Ok(Self {
            node: Name::new(node)?,
            service: Name::new(service)?,
        })
    }
}

impl Codec for PeerRef {
    fn wire_len(&self) -> usize {
        text_len(self.node.0.as_bytes()) + text_len(self.service.0.as_bytes())
    }

    fn put(&self, w: &mut Writer<'_>) -> Result<(), MsgError> {
        w.name(&self.node);
        w.name(&self.service);
        Ok(())
    }

    fn take(r: &mut Reader<'_>) -> Result<Self, MsgError> {
        Ok(Self {
            node: r.name("PeerRef.node")?,
            service: r.name("PeerRef.service")?,
        })
    }
}

/// Encoded size of a name.
pub(super) fn name_len(name: &Name) -> usize {
    text_len(name.0.as_bytes())
}

/// Declares a one-byte code enum with stable wire codes and kebab-case
/// names, and its codec (an unknown code is an error).
macro_rules! wire_enum {
    (
        $(#[$doc:meta])*
        $name:ident {
            $( $(#[$vdoc:meta])* $variant:ident = $code:literal => $text:literal, )+
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vdoc])* $variant, )+
        }

        impl $name {
            /// Every value, in code order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The stable wire code.
            pub fn code(self) -> u8 {
                match self {
                    $(Self::$variant => $code,)+
                }
            }

            /// The value of a wire code, if this build knows it.
            pub fn from_code(code: u8) -> Option<Self> {
                match code {
                    $($code => Some(Self::$variant),)+
                    _ => None,
                }
            }

            /// The kebab-case name used in status, logs and configuration.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }

            /// The value named `name` (as [`Self::as_str`] spells it).
            pub fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($text => Some(Self::$variant),)+
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl $crate::control::msg::prim::Codec for $name {
            fn wire_len(&self) -> usize {
                1
            }

            fn put(
                &self,
                w: &mut $crate::control::msg::prim::Writer<'_>,
            ) -> Result<(), $crate::control::msg::MsgError> {
                w.u8(self.code());
                Ok(())
            }

            fn take(
                r: &mut $crate::control::msg::prim::Reader<'_>,
            ) -> Result<Self, $crate::control::msg::MsgError> {
                let value = r.u8(stringify!($name))?;
                Self::from_code(value).ok_or($crate::control::msg::MsgError::UnknownCode {
                    kind: stringify!($name),
                    value,
                })
            }
        }
    };
}
pub(super) use wire_enum;
