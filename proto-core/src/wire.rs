//! Wire formats. Untrusted bytes go through a checked view first; a parsed
//! `Repr` then has `parse`, `emit` and `buffer_len`, none of which can panic
//! once lengths are checked.

mod addr;
mod auth;
pub mod control;

pub use addr::{AddrRepr, ADDR_LEN};
pub use auth::{AuthKey, KEY_LEN, TAG_LEN};
pub use control::{classify, Classified, ControlBody, ControlPacket, ControlRepr, MAGIC};

/// Why bytes were not a valid wire message. Network input is dropped and
/// counted with these, never returned to an operator as a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Fewer bytes than the fixed header and tag.
    #[error("truncated")]
    Truncated,
    /// The 8-byte magic does not match.
    #[error("bad magic")]
    BadMagic,
    /// A version this build does not speak.
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    /// A message kind this build does not know.
    #[error("unknown kind {0}")]
    UnknownKind(u8),
    /// The length field disagrees with the datagram.
    #[error("length mismatch")]
    LengthMismatch,
    /// A body of the wrong size for its kind.
    #[error("bad body length for its kind")]
    BadBodyLength,
    /// An address with an unknown family or non-canonical bytes.
    #[error("bad address")]
    BadAddress,
    /// The authentication tag does not verify.
    #[error("bad tag")]
    BadTag,
}
