//! The stored form of a log entry: a tag byte and its fields (strings as a
//! length byte plus UTF-8, integers big-endian). Decoding is checked and
//! canonical, so a corrupt record is refused rather than misread.

use super::{AssocSecret, Op, ServiceRef};
use crate::id::AssocId;

/// Why a stored record could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpDecodeError {
    /// Ended early.
    #[error("record truncated")]
    Truncated,
    /// Unknown entry kind.
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// A string that is not UTF-8.
    #[error("record holds invalid UTF-8")]
    BadText,
    /// A boolean other than 0 or 1.
    #[error("record holds a bad flag")]
    BadFlag,
    /// Bytes after the record.
    #[error("{0} bytes after the record")]
    Trailing(usize),
}

const INVITE: u8 = 1;
const ENROLL: u8 = 2;
const ADMIT: u8 = 3;
const REVOKE: u8 = 4;
const READMIT: u8 = 5;
const ASSOC_CREATE: u8 = 6;
const ASSOC_DELETE: u8 = 7;
const RENEW: u8 = 8;
const ASSOC_FORM: u8 = 9;
const ASSOC_KEY: u8 = 10;
const ASSOC_DENY: u8 = 11;
const ASSOC_ALLOW: u8 = 12;

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Names are at most 63 bytes; longer text is cut at a char boundary.
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.push(end as u8);
    out.extend_from_slice(&s.as_bytes()[..end]);
}

impl Op {
    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        match self {
            Op::Invite {
                node,
                digest,
                expires_unix_s,
                admit,
            } => {
                out.push(INVITE);
                put_str(&mut out, node);
                out.extend_from_slice(digest);
                out.extend_from_slice(&expires_unix_s.to_be_bytes());
                out.push(u8::from(*admit));
            }
            Op::Enroll {
                node,
                fingerprint,
                at_unix_s,
            } => {
                out.push(ENROLL);
                put_str(&mut out, node);
                out.extend_from_slice(fingerprint);
                out.extend_from_slice(&at_unix_s.to_be_bytes());
            }
            Op::Renew {
                node,
                fingerprint,
                renewed_from,
                at_unix_s,
            } => {
                out.push(RENEW);
                put_str(&mut out, node);
                out.extend_from_slice(fingerprint);
                out.extend_from_slice(renewed_from);
                out.extend_from_slice(&at_unix_s.to_be_bytes());
            }
            Op::Admit { node } | Op::Revoke { node } | Op::Readmit { node } => {
                out.push(match self {
                    Op::Admit { .. } => ADMIT,
                    Op::Revoke { .. } => REVOKE,
                    _ => READMIT,
                });
                put_str(&mut out, node);
            }
            Op::AssocCreate { a, b } | Op::AssocForm { a, b } => {
                out.push(if matches!(self, Op::AssocCreate { .. }) {
                    ASSOC_CREATE
                } else {
                    ASSOC_FORM
                });
                for end in [a, b] {
                    put_str(&mut out, &end.node);
                    put_str(&mut out, &end.service);
                }
            }
            Op::AssocDelete { assoc } | Op::AssocDeny { assoc } | Op::AssocAllow { assoc } => {
                out.push(match self {
                    Op::AssocDelete { .. } => ASSOC_DELETE,
                    Op::AssocDeny { .. } => ASSOC_DENY,
                    _ => ASSOC_ALLOW,
                });
                out.extend_from_slice(&assoc.0.to_be_bytes());
            }
            Op::AssocKey {
                assoc,
                epoch,
                key,
                at_unix_s,
            } => {
                out.push(ASSOC_KEY);
                out.extend_from_slice(&assoc.0.to_be_bytes());
                out.extend_from_slice(&epoch.to_be_bytes());
                out.extend_from_slice(&key.0);
                out.extend_from_slice(&at_unix_s.to_be_bytes());
            }
        }
        out
    }

    /// Reads a stored record.
    ///
    /// # Errors
    /// [`OpDecodeError`] for anything but an exact encoding.
    pub fn decode(bytes: &[u8]) -> Result<Self, OpDecodeError> {
        let mut r = Reader { bytes, at: 0 };
        let op = match r.u8()? {
            INVITE => Op::Invite {
                node: r.string()?,
                digest: r.array()?,
                expires_unix_s: r.u64()?,
                admit: r.flag()?,
            },
            ENROLL => Op::Enroll {
                node: r.string()?,
                fingerprint: r.array()?,
                at_unix_s: r.u64()?,
            },
            RENEW => Op::Renew {
                node: r.string()?,
                fingerprint: r.array()?,
                renewed_from: r.array()?,
                at_unix_s: r.u64()?,
            },
            ADMIT => Op::Admit { node: r.string()? },
            REVOKE => Op::Revoke { node: r.string()? },
            READMIT => Op::Readmit { node: r.string()? },
            ASSOC_CREATE => Op::AssocCreate {
                a: ServiceRef {
                    node: r.string()?,
                    service: r.string()?,
                },
                b: ServiceRef {
                    node: r.string()?,
                    service: r.string()?,
                },
            },
            ASSOC_DELETE => Op::AssocDelete {
                assoc: AssocId(r.u64()?),
            },
            ASSOC_FORM => Op::AssocForm {
                a: ServiceRef {
                    node: r.string()?,
                    service: r.string()?,
                },
                b: ServiceRef {
                    node: r.string()?,
                    service: r.string()?,
                },
            },
            ASSOC_KEY => Op::AssocKey {
                assoc: AssocId(r.u64()?),
                epoch: r.u32()?,
                key: AssocSecret(r.array()?),
                at_unix_s: r.u64()?,
            },
            ASSOC_DENY => Op::AssocDeny {
                assoc: AssocId(r.u64()?),
            },
            ASSOC_ALLOW => Op::AssocAllow {
                assoc: AssocId(r.u64()?),
            },
            kind => return Err(OpDecodeError::UnknownKind(kind)),
        };
        match bytes.len() - r.at {
            0 => Ok(op),
            n => Err(OpDecodeError::Trailing(n)),
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], OpDecodeError> {
        let end = self.at.checked_add(n).ok_or(OpDecodeError::Truncated)?;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or(OpDecodeError::Truncated)?;
        self.at = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, OpDecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, OpDecodeError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }

    fn u32(&mut self) -> Result<u32, OpDecodeError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(b))
    }

    fn array(&mut self) -> Result<[u8; 32], OpDecodeError> {
        let mut b = [0u8; 32];
        b.copy_from_slice(self.take(32)?);
        Ok(b)
    }

    fn flag(&mut self) -> Result<bool, OpDecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(OpDecodeError::BadFlag),
        }
    }

    fn string(&mut self) -> Result<String, OpDecodeError> {
        let len = usize::from(self.u8()?);
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| OpDecodeError::BadText)
    }
}
