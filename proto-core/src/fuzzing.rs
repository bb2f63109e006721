//! Fuzz entry points, shared by the cargo-fuzz targets in `fuzz/` and by the
//! ordinary test that replays their corpora, so a corpus file that once
//! crashed keeps being checked by `cargo test`.

use bytes::BytesMut;

use crate::control::msg::{encode, FrameDecoder, LEN_PREFIX, MAX_FRAME};
use crate::replay::ReplayCache;
use crate::wire::{classify, AuthKey, Classified, ControlPacket, ControlRepr};

/// The key the fuzz corpus is tagged with: the first input byte selects it,
/// so the fuzzer can reach both authentic and foreign packets.
pub fn corpus_key(selector: u8) -> AuthKey {
    AuthKey::new(&[selector & 0x01; 32])
}

/// Classifies and decodes `data` (after a key-selector byte) and checks the
/// invariants that must hold for any input: no panic, authentic packets
/// re-encode to exactly the same bytes, and data is reported as data.
///
/// # Panics
/// When an invariant is broken; that is the finding.
pub fn control_packet(data: &[u8]) {
    let Some((&selector, datagram)) = data.split_first() else {
        return;
    };
    let key = corpus_key(selector);
    match classify(datagram, &key) {
        Classified::Control(repr) => {
            // Canonical encoding: what verified must re-encode byte-for-byte.
            assert_eq!(
                repr.to_bytes(&key).as_ref(),
                datagram,
                "control packet did not round-trip"
            );
            let mut cache = ReplayCache::new(1_000_000, 64);
            assert!(cache.check(repr.timestamp_us, repr.txid).is_ok());
            assert!(
                cache.check(repr.timestamp_us, repr.txid).is_err(),
                "replay accepted"
            );
        }
        Classified::Unintelligible(_) => {
            let packet = ControlPacket::new_checked(datagram).expect("framing was checked");
            assert!(packet.verify(&key));
            assert!(ControlRepr::parse(&packet).is_err());
        }
        Classified::Data => {
            if let Ok(packet) = ControlPacket::new_checked(datagram) {
                let authentic_and_parsable =
                    packet.verify(&key) && ControlRepr::parse(&packet).is_ok();
                assert!(
                    !authentic_and_parsable,
                    "a valid control packet was classified as data"
                );
            }
        }
    }
}

/// The chunk size a control-message fuzz input asks for: its first byte,
/// plus one; 255 means the whole stream in one push.
pub fn chunk_size(selector: u8, stream_len: usize) -> usize {
    if selector == u8::MAX {
        stream_len.max(1)
    } else {
        usize::from(selector) + 1
    }
}

/// Feeds `data` (after a chunk-size selector byte, see [`chunk_size`]) to a
/// control-stream [`FrameDecoder`] and checks the invariants that must hold
/// for any input: no panic, every decoded message re-encodes to exactly the
/// bytes of its frame, no byte is lost or invented between frames, the
/// buffer stays bounded, and an error is final.
///
/// # Panics
/// When an invariant is broken; that is the finding.
pub fn control_message(data: &[u8]) {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let mut decoder = FrameDecoder::new();
    // Start, in `stream`, of the first frame not decoded yet.
    let mut offset = 0;
    let mut pushed = 0;
    let mut out = BytesMut::new();
    for piece in stream.chunks(chunk_size(selector, stream.len())) {
        decoder.push(piece);
        pushed += piece.len();
        loop {
            match decoder.next() {
                Ok(Some(msg)) => {
                    out.clear();
                    encode(&msg, &mut out).expect("a decoded message re-encodes");
                    assert_eq!(out.len(), msg.encoded_len(), "encoded_len of {msg:?}");
                    let frame = stream
                        .get(offset..offset + out.len())
                        .expect("re-encoding is longer than the stream");
                    assert_eq!(frame, &out[..], "{msg:?} did not re-encode canonically");
                    offset += out.len();
                }
                Ok(None) => break,
                Err(err) => {
                    assert_eq!(decoder.next(), Err(err), "errors are final");
                    decoder.push(piece);
                    assert_eq!(decoder.buffered(), 0, "a failed decoder holds nothing");
                    return;
                }
            }
        }
        assert_eq!(
            offset + decoder.buffered(),
            pushed,
            "bytes lost or invented"
        );
        assert!(
            decoder.buffered() < LEN_PREFIX + MAX_FRAME,
            "a whole frame was left undecoded"
        );
    }
}
