//! The control plane's rustls [`CryptoProvider`]: ring's TLS 1.3 cipher
//! suites and signature verification, X25519 key exchange and every other
//! random draw from the lent generator, Ed25519 keys only.

use std::sync::Arc;

use ring::agreement;
use rustls::crypto::ring::{cipher_suite, default_provider, sign};
use rustls::crypto::{
    ActiveKeyExchange, CryptoProvider, KeyProvider, SharedSecret, SupportedKxGroup,
};
use rustls::sign::SigningKey;
use rustls::{Error, NamedGroup, PeerMisbehaved};
use rustls_pki_types::PrivateKeyDer;

use super::inputs::{self, LentRandom};

/// The provider behind every control-plane configuration. Randomness comes
/// only from a [`super::TlsInputs`] lend; a handshake step outside one fails.
pub fn control_plane_provider() -> CryptoProvider {
    CryptoProvider {
        // TLS13_AES_128_GCM_SHA256 must be present: QUIC protects its
        // Initial packets with it.
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: vec![&LentX25519],
        signature_verification_algorithms: default_provider().signature_verification_algorithms,
        secure_random: &LentRandom,
        key_provider: &Ed25519Keys,
    }
}

/// X25519 whose ephemeral secret comes from the lent generator.
#[derive(Debug)]
struct LentX25519;

impl SupportedKxGroup for LentX25519 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, Error> {
        let mut secret = [0u8; 32];
        inputs::draw(&mut secret)?;
        // ring builds ephemeral keys only from its own sealed `SecureRandom`;
        // its fixed-bytes source is the one way to hand it our secret. X25519
        // reads exactly 32 bytes once, which is what the source holds.
        #[allow(deprecated)]
        let source = ring::test::rand::FixedSliceRandom { bytes: &secret };
        let private = agreement::EphemeralPrivateKey::generate(&agreement::X25519, &source)
            .map_err(|_| rustls::crypto::GetRandomFailed)?;
        let public = private
            .compute_public_key()
            .map_err(|_| rustls::crypto::GetRandomFailed)?;
        Ok(Box::new(X25519Share { private, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// One key exchange in progress.
struct X25519Share {
    private: agreement::EphemeralPrivateKey,
    public: agreement::PublicKey,
}

impl ActiveKeyExchange for X25519Share {
    fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, Error> {
        if peer.len() != 32 {
            return Err(PeerMisbehaved::InvalidKeyShare.into());
        }
        let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, peer);
        agreement::agree_ephemeral(self.private, &peer, |secret: &[u8]| {
            SharedSecret::from(secret)
        })
        .map_err(|_| PeerMisbehaved::InvalidKeyShare.into())
    }

    fn pub_key(&self) -> &[u8] {
        self.public.as_ref()
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// Loads Ed25519 PKCS#8 keys only (DESIGN §4): their signatures need no
/// randomness, where rustls' ring ECDSA and RSA signers draw from the OS.
#[derive(Debug)]
struct Ed25519Keys;

impl KeyProvider for Ed25519Keys {
    fn load_private_key(
        &self,
        key_der: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn SigningKey>, Error> {
        match &key_der {
            PrivateKeyDer::Pkcs8(pkcs8) => sign::any_eddsa_type(pkcs8),
            _ => Err(Error::General(
                "not a PKCS#8 key (control-plane keys are Ed25519 in PKCS#8)".into(),
            )),
        }
    }
}
