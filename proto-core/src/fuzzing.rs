//! Fuzz entry points, shared by the cargo-fuzz targets in `fuzz/` and by the
//! ordinary test that replays their corpora, so a corpus file that once
//! crashed keeps being checked by `cargo test`.

mod receive;
mod relay;

use bytes::BytesMut;

pub use receive::{dataplane_receive, dataplane_receive_seeds, ValidatedPlane};
#[cfg(test)]
pub(crate) use relay::records as relay_records;
pub use relay::{relay_receive, relay_receive_seeds};

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

/// The signing key the token corpus uses: a fixed Ed25519 key, so corpus
/// files can hold authentic tokens.
pub fn corpus_token_signer() -> crate::control::token::TokenSigner {
    let pkcs8 = crate::pki::ed25519_pkcs8_from_seed(&[7; 32]);
    crate::control::token::TokenSigner::from_pkcs8(&pkcs8, "hub").expect("a valid fixed key")
}

/// Admission tokens and join tokens from arbitrary bytes: parsing and
/// verification never panic, and only an authentic token for the expected
/// node and certificate, inside its validity, verifies.
///
/// # Panics
/// When an invariant is broken; that is the finding.
pub fn admission_token(data: &[u8]) {
    use crate::control::token::{AdmissionClaims, JoinToken, TokenVerifier};
    let signer = corpus_token_signer();
    let mut verifier = TokenVerifier::new();
    verifier.trust("hub", signer.public_key());
    let parsed = AdmissionClaims::parse_unverified(data);
    if let Ok(claims) = &parsed {
        let now = claims.issued_unix_s.saturating_add(1);
        if let Ok(verified) = verifier.verify(data, now, &claims.cert_fingerprint, claims.node_id) {
            assert_eq!(&verified, claims, "verification changed the claims");
            // Authentic: re-signing the same claims gives the same bytes
            // (Ed25519 is deterministic), so nothing outside the signed
            // encoding was accepted.
            assert_eq!(
                signer.sign(claims).ok().as_deref(),
                Some(data),
                "an authentic token is not canonical"
            );
            let wrong = [claims.cert_fingerprint[0] ^ 1; 32];
            assert!(
                verifier.verify(data, now, &wrong, claims.node_id).is_err(),
                "another certificate verified"
            );
            assert!(
                verifier
                    .verify(data, now, &claims.cert_fingerprint, claims.node_id ^ 1)
                    .is_err(),
                "another node verified"
            );
        }
    }
    // Unparsable tokens never verify.
    if parsed.is_err() {
        assert!(verifier.verify(data, 0, &[0; 32], 0).is_err());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(token) = text.parse::<JoinToken>() {
            assert_eq!(
                token
                    .to_string()
                    .parse::<JoinToken>()
                    .ok()
                    .map(|t| t.digest()),
                Some(token.digest())
            );
        }
    }
}

/// A stored operation-log record on arbitrary bytes: decoding never
/// panics, a record that decodes is canonical (encoding it gives the same
/// bytes), and checking and applying it to a registry never panics.
///
/// # Panics
/// When an invariant is broken; that is the finding.
pub fn oplog_record(data: &[u8]) {
    use crate::coordinator::registry::{Op, Registry};
    let Ok(op) = Op::decode(data) else {
        return;
    };
    assert_eq!(op.encode(), data, "a stored record is not canonical");
    let mut registry = Registry::new();
    if registry.check(&op, 0).is_ok() {
        registry.apply(&op).expect("a checked operation applies");
    }
}
