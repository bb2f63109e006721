//! A throwaway PKI for tests, shaped like the real one (DESIGN §4): root CA →
//! coordinator intermediate → coordinator server certificate and node
//! certificates; admin certificates signed by the root directly. Keys are
//! Ed25519 derived from a seed, so the whole PKI is reproducible.

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PKCS_ED25519,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::TlsIdentity;

/// An Ed25519 key as PKCS#8 v1 DER: a fixed prefix, then the 32-byte seed.
pub(crate) fn ed25519_pkcs8(seed: [u8; 32]) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&seed);
    der
}

fn key_pair(der: &[u8]) -> KeyPair {
    KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(der), &PKCS_ED25519)
        .expect("a valid Ed25519 PKCS#8 key")
}

/// One certificate chain and its key, as DER.
#[derive(Clone)]
pub(crate) struct TestIdentity {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: Vec<u8>,
}

impl TestIdentity {
    /// The identity in the form `server_config`/`client_config` take.
    pub(crate) fn tls(&self) -> TlsIdentity {
        TlsIdentity {
            chain: self.chain.clone(),
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone())),
        }
    }
}

/// Root, one coordinator intermediate, and identities issued under them.
pub(crate) struct TestPki {
    pub(crate) root: CertificateDer<'static>,
    /// Server certificate (SAN = the coordinator name) + intermediate.
    pub(crate) coordinator: TestIdentity,
    /// Node client certificate + intermediate.
    pub(crate) node: TestIdentity,
    /// Admin client certificate, signed by the root.
    pub(crate) admin: TestIdentity,
}

fn ca_params(common_name: &str, is_ca: IsCa) -> CertificateParams {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.is_ca = is_ca;
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn leaf_params(name: &str, usage: ExtendedKeyUsagePurpose) -> CertificateParams {
    let mut params = CertificateParams::new(vec![name.to_string()]).expect("a valid name");
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params
}

impl TestPki {
    /// A PKI whose keys all derive from `seed`; the coordinator's server
    /// certificate names `coordinator_name`.
    pub(crate) fn new(seed: u8, coordinator_name: &str) -> Self {
        let key = |n: u8| ed25519_pkcs8([seed.wrapping_mul(31).wrapping_add(n); 32]);
        let (root_key, inter_key, coord_key, node_key, admin_key) =
            (key(1), key(2), key(3), key(4), key(5));

        let root = CertifiedIssuer::self_signed(
            ca_params(
                &format!("transitloom root {seed}"),
                IsCa::Ca(BasicConstraints::Unconstrained),
            ),
            key_pair(&root_key),
        )
        .expect("root certificate");
        let intermediate = CertifiedIssuer::signed_by(
            ca_params(
                &format!("{coordinator_name} intermediate {seed}"),
                IsCa::Ca(BasicConstraints::Constrained(0)),
            ),
            key_pair(&inter_key),
            &root,
        )
        .expect("intermediate certificate");

        let issue = |name: &str, usage, der: &[u8], by_root: bool| {
            let params = leaf_params(name, usage);
            let leaf = if by_root {
                params.signed_by(&key_pair(der), &root)
            } else {
                params.signed_by(&key_pair(der), &intermediate)
            }
            .expect("leaf certificate");
            let mut chain = vec![leaf.der().clone()];
            if !by_root {
                chain.push(intermediate.der().clone());
            }
            TestIdentity {
                chain,
                key: der.to_vec(),
            }
        };
        let coordinator = issue(
            coordinator_name,
            ExtendedKeyUsagePurpose::ServerAuth,
            &coord_key,
            false,
        );
        let node = issue(
            "alpha",
            ExtendedKeyUsagePurpose::ClientAuth,
            &node_key,
            false,
        );
        let admin = issue(
            "admin",
            ExtendedKeyUsagePurpose::ClientAuth,
            &admin_key,
            true,
        );
        Self {
            root: root.der().clone(),
            coordinator,
            node,
            admin,
        }
    }
}
