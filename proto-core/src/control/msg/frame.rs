//! Framing on a byte stream: encoding one frame, and reassembling frames
//! from arbitrary chunks with bounded buffering.

use bytes::{BufMut, BytesMut};

use super::prim::Writer;
use super::{Message, MsgError, LEN_PREFIX, MAX_FRAME, VERSION};

/// Appends `msg` to `out` as one frame. On error nothing is appended.
///
/// # Errors
/// [`MsgError::TooLong`] or [`MsgError::TooMany`] for the first field over
/// its cap, [`MsgError::FrameTooLarge`] when the whole message is over
/// [`MAX_FRAME`] (a long admin list: send fewer entries).
pub fn encode(msg: &Message, out: &mut BytesMut) -> Result<(), MsgError> {
    let total = msg.encoded_len();
    let len = total - LEN_PREFIX;
    if len > MAX_FRAME {
        return Err(MsgError::FrameTooLarge { len });
    }
    let start = out.len();
    out.reserve(total);
    // len <= MAX_FRAME, so it fits a u32.
    out.put_u32(len as u32);
    out.put_u8(VERSION);
    out.put_u8(msg.type_code());
    if let Err(err) = msg.put_body(&mut Writer::new(out)) {
        out.truncate(start);
        return Err(err);
    }
    debug_assert_eq!(out.len() - start, total, "encoded_len of {}", msg.name());
    Ok(())
}

/// Reassembles messages from a control stream delivered in arbitrary
/// chunks.
///
/// Call [`push`](Self::push) with whatever the transport delivered, then
/// [`next`](Self::next) until it yields `Ok(None)`. Doing so bounds the
/// buffer to one maximal frame plus one push. The first error is final:
/// `next` keeps returning it and pushed bytes are dropped, since the stream
/// is out of step; the caller closes the session.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
    failed: Option<MsgError>,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds received bytes. Pushing while a whole frame is still waiting to
    /// be decoded (the caller skipped draining [`next`](Self::next)) fails
    /// the decoder with [`MsgError::Undrained`].
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.buf.len() >= LEN_PREFIX + MAX_FRAME {
            self.fail(MsgError::Undrained);
            return;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, `Ok(None)` when more bytes are needed.
    ///
    /// # Errors
    /// The first framing or body error in the stream, detected as soon as
    /// the offending bytes arrive: a bad length, version or type is
    /// reported without waiting for the body.
    #[allow(clippy::should_implement_trait)] // fallible, and not an iterator
    pub fn next(&mut self) -> Result<Option<Message>, MsgError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        self.decode().inspect_err(|err| self.fail(err.clone()))
    }

    /// Bytes held, waiting for the rest of a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The error that ended the stream, if any.
    pub fn error(&self) -> Option<&MsgError> {
        self.failed.as_ref()
    }

    fn decode(&mut self) -> Result<Option<Message>, MsgError> {
        let Some(prefix) = self.buf.first_chunk::<LEN_PREFIX>() else {
            return Ok(None);
        };
        let len = usize::try_from(u32::from_be_bytes(*prefix)).unwrap_or(usize::MAX);
        if len > MAX_FRAME {
            return Err(MsgError::FrameTooLarge { len });
        }
        if len < 2 {
            return Err(MsgError::FrameTooShort { len });
        }
        if let Some(&version) = self.buf.get(LEN_PREFIX) {
            if version != VERSION {
                return Err(MsgError::UnsupportedVersion(version));
            }
        }
        if let Some(&code) = self.buf.get(LEN_PREFIX + 1) {
            if !Message::is_known_type(code) {
                return Err(MsgError::UnknownType(code));
            }
        }
        if self.buf.len() < LEN_PREFIX + len {
            return Ok(None);
        }
        let frame = self.buf.split_to(LEN_PREFIX + len);
        Message::take_body(frame[LEN_PREFIX + 1], &frame[LEN_PREFIX + 2..]).map(Some)
    }

    fn fail(&mut self, err: MsgError) {
        self.failed = Some(err);
        self.buf = BytesMut::new();
    }
}
