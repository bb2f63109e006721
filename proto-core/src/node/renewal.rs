//! Certificate renewal, the node's side: when its certificate has run
//! [`RENEW_AFTER`] of its validity, a live node asks the coordinator it is
//! connected to for a new one, for the key it already holds, and reconnects
//! with it. A node that was offline past that point renews as soon as it is
//! live again, as long as its certificate is still valid (an expired one no
//! longer opens a session: that node needs a new join token).
//!
//! The key is kept, not rotated: the data directory then only ever swaps
//! one file (the chain, written atomically), so a crash at any moment
//! leaves a valid key and certificate pair, and the coordinator can check
//! that a renewal is for the key the session proved it holds.

use std::time::Duration;

use bytes::Bytes;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::Credentials;
use crate::control::tls_config::TlsIdentity;
use crate::pki;

/// The share of its validity after which a certificate is renewed: two
/// thirds, so a 90-day certificate is renewed after 60 days and a node has
/// a month to reach a coordinator before it expires.
pub const RENEW_AFTER: (i64, i64) = (2, 3);

/// After a refused or unanswered renewal, the next attempt waits a quarter
/// of the remaining validity, within these bounds.
const RETRY_MIN: Duration = Duration::from_secs(10);
const RETRY_MAX: Duration = Duration::from_secs(3_600);

/// `notBefore` and `notAfter` of the node's certificate, when enrolled.
pub(super) fn window(credentials: &Credentials) -> Option<(i64, i64)> {
    match credentials {
        Credentials::Enrolled(identity) => pki::validity(identity.chain.first()?).ok(),
        Credentials::Enroll { .. } => None,
    }
}

/// When a certificate valid over `window` is due for renewal (Unix seconds).
pub(super) fn due_unix_s((not_before, not_after): (i64, i64)) -> i64 {
    let (num, den) = RENEW_AFTER;
    not_before + (not_after - not_before) * num / den
}

/// How long to wait after a renewal that did not work, at `now_unix_s`.
pub(super) fn retry_after((_, not_after): (i64, i64), now_unix_s: i64) -> Duration {
    let remaining = u64::try_from(not_after.saturating_sub(now_unix_s)).unwrap_or(0);
    Duration::from_secs(remaining / 4).clamp(RETRY_MIN, RETRY_MAX)
}

/// A certificate signing request for the node's key (Ed25519 signatures
/// are deterministic: no randomness needed).
pub(super) fn request(credentials: &Credentials) -> Option<Vec<u8>> {
    let Credentials::Enrolled(identity) = credentials else {
        return None;
    };
    match &identity.key {
        PrivateKeyDer::Pkcs8(key) => pki::node_csr(key.secret_pkcs8_der()).ok(),
        _ => None,
    }
}

/// The identity a renewed chain gives, if the chain is for this node's key
/// and name.
///
/// # Errors
/// Why the chain is not usable; the node keeps its current certificate.
pub(super) fn accept(
    chain: &[Bytes],
    credentials: &Credentials,
    name: &str,
) -> Result<TlsIdentity, String> {
    let Credentials::Enrolled(current) = credentials else {
        return Err("the node is not enrolled".to_owned());
    };
    let leaf = chain.first().ok_or("the chain is empty")?;
    let PrivateKeyDer::Pkcs8(key) = &current.key else {
        return Err("the node's key is not PKCS#8".to_owned());
    };
    let ours = pki::ed25519_key_pair(key.secret_pkcs8_der()).map_err(|e| e.to_string())?;
    let theirs = pki::ed25519_public_key(leaf).map_err(|e| e.to_string())?;
    if ours.public_key_raw() != theirs {
        return Err("the certificate is for another key".to_owned());
    }
    let named = pki::node_name_of(leaf).map_err(|e| e.to_string())?;
    if named != name {
        return Err(format!("the certificate names {named:?}, not {name:?}"));
    }
    pki::validity(leaf).map_err(|e| e.to_string())?;
    Ok(TlsIdentity {
        chain: chain
            .iter()
            .map(|c| CertificateDer::from(c.to_vec()))
            .collect(),
        key: current.key.clone_key(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_at_two_thirds_and_retries_within_bounds() {
        assert_eq!(due_unix_s((1_000, 1_090)), 1_060);
        assert_eq!(due_unix_s((0, 90 * 86_400)), 60 * 86_400);
        assert_eq!(retry_after((0, 1_000), 960), RETRY_MIN);
        assert_eq!(retry_after((0, 1_000), 2_000), RETRY_MIN, "expired");
        assert_eq!(retry_after((0, 1_000), 0), Duration::from_secs(250));
        assert_eq!(retry_after((0, 90 * 86_400), 60 * 86_400), RETRY_MAX);
    }
}
