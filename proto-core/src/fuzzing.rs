//! Fuzz entry points, shared by the cargo-fuzz targets in `fuzz/` and by the
//! ordinary test that replays their corpora, so a corpus file that once
//! crashed keeps being checked by `cargo test`.

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
