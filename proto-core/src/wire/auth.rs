//! The 16-byte authentication tag that makes a mesh control packet: HMAC-SHA256
//! under the association's 32-byte key, truncated.

use ring::hmac;

/// Size of an association key.
pub const KEY_LEN: usize = 32;
/// Size of the tag that ends every control packet.
pub const TAG_LEN: usize = 16;

/// A keyed tag generator and verifier.
#[derive(Clone)]
pub struct AuthKey {
    key: hmac::Key,
}

impl std::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthKey(..)")
    }
}

impl AuthKey {
    /// A key for tagging and verifying.
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
        }
    }

    /// The tag of `data`.
    pub fn tag(&self, data: &[u8]) -> [u8; TAG_LEN] {
        let full = hmac::sign(&self.key, data);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full.as_ref()[..TAG_LEN]);
        tag
    }

    /// True when `tag` is the tag of `data`, compared in constant time.
    pub fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        if tag.len() != TAG_LEN {
            return false;
        }
        let expected = self.tag(data);
        let diff = expected
            .iter()
            .zip(tag)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}
