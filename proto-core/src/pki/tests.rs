use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use rcgen::{CertificateParams, KeyPair};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, UnixTime};

use super::*;

/// 2030-01-01T00:00:00Z.
const T0: i64 = 1_893_456_000;
const DAY: i64 = 86_400;

fn key(seed: u8) -> (Vec<u8>, Ed25519PublicKey) {
    let pkcs8 = ed25519_pkcs8_from_seed(&[seed; 32]);
    let public = ed25519_key_pair(&pkcs8).unwrap().public_key_raw().to_vec();
    (pkcs8, Ed25519PublicKey(public.try_into().unwrap()))
}

fn terms(name: &str, serial: u8) -> CertTerms<'_> {
    CertTerms {
        name,
        not_before_unix_s: T0,
        validity_days: 30,
        serial: [serial; SERIAL_LEN],
    }
}

/// A root and one coordinator intermediate, from fixed seeds.
struct Authority {
    root_cert: Vec<u8>,
    root_key: Vec<u8>,
    inter_cert: Vec<u8>,
    inter_key: Vec<u8>,
}

fn authority() -> Authority {
    let (root_key, _) = key(1);
    let root_cert = self_signed_root(&root_key, &terms("transitloom root", 1)).unwrap();
    let (inter_key, inter_public) = key(2);
    let inter_cert =
        sign_coordinator_intermediate(&root_cert, &root_key, &inter_public, &terms("coord-1", 2))
            .unwrap();
    Authority {
        root_cert,
        root_key,
        inter_cert,
        inter_key,
    }
}

fn csr_for(key: &KeyPair, subject: &str) -> Vec<u8> {
    let params = CertificateParams::new(vec![format!("{subject}.example")]).unwrap();
    params.serialize_request(key).unwrap().der().to_vec()
}

fn node_key(seed: u8) -> KeyPair {
    ed25519_key_pair(&ed25519_pkcs8_from_seed(&[seed; 32])).unwrap()
}

/// Verifies a client certificate the way the coordinator's mTLS will.
fn verify_client(root: &[u8], chain: &[&[u8]], at_unix_s: i64) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(root.to_vec())).unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let (leaf, intermediates) = chain.split_first().unwrap();
    let intermediates: Vec<_> = intermediates
        .iter()
        .map(|c| CertificateDer::from(c.to_vec()))
        .collect();
    let now = UnixTime::since_unix_epoch(Duration::from_secs(at_unix_s.unsigned_abs()));
    verifier
        .verify_client_cert(&CertificateDer::from(leaf.to_vec()), &intermediates, now)
        .map(|_| ())
}

#[test]
fn a_signed_csr_names_the_node_and_chains_to_the_root() {
    let ca = authority();
    let node = node_key(9);
    let cert = sign_node_csr(
        &ca.inter_cert,
        &ca.inter_key,
        &csr_for(&node, "ignored"),
        "alpha",
        T0,
        90,
        [7; SERIAL_LEN],
    )
    .unwrap();
    assert_eq!(node_name_of(&cert).unwrap(), "alpha");
    assert_eq!(ed25519_public_key(&cert).unwrap(), node.public_key_raw());
    assert_eq!(
        role_name_of(&cert, Role::Admin),
        Err(PkiError::NoIdentity {
            role: Role::Admin,
            domain: "admin.transitloom"
        })
    );
    let chain: &[&[u8]] = &[&cert, &ca.inter_cert];
    verify_client(&ca.root_cert, chain, T0 + DAY).unwrap();
    // Validity is exactly what was asked: not before T0, not after 90 days.
    assert!(verify_client(&ca.root_cert, chain, T0 - 1).is_err());
    verify_client(&ca.root_cert, chain, T0 + 29 * DAY).unwrap();
    assert!(verify_client(&ca.root_cert, chain, T0 + 91 * DAY).is_err());
    // Without the intermediate the node does not chain.
    assert!(verify_client(&ca.root_cert, &[&cert], T0 + DAY).is_err());
}

#[test]
fn a_csr_signed_for_seconds_is_valid_exactly_that_long_and_reads_back() {
    let ca = authority();
    let node = node_key(9);
    let csr = csr_for(&node, "ignored");
    let cert = sign_node_csr_for(
        &ca.inter_cert,
        &ca.inter_key,
        &csr,
        "alpha",
        T0,
        90,
        [7; SERIAL_LEN],
    )
    .unwrap();
    assert_eq!(node_name_of(&cert).unwrap(), "alpha");
    assert_eq!(ed25519_public_key(&cert).unwrap(), node.public_key_raw());
    assert_eq!(csr_public_key(&csr).unwrap().0, node.public_key_raw());
    assert_eq!(validity(&cert), Ok((T0, T0 + 90)));
    let chain: &[&[u8]] = &[&cert, &ca.inter_cert];
    verify_client(&ca.root_cert, chain, T0 + 89).unwrap();
    assert!(verify_client(&ca.root_cert, chain, T0 + 91).is_err());
    // Days-based certificates read back too (the window sign_node_csr asks).
    let days = sign_node_csr(
        &ca.inter_cert,
        &ca.inter_key,
        &csr,
        "alpha",
        T0,
        90,
        [7; 16],
    )
    .unwrap();
    assert_eq!(validity(&days), Ok((T0, T0 + 90 * DAY)));
    assert_eq!(validity(&ca.inter_cert), Ok((T0, T0 + 30 * DAY)));
    let err = sign_node_csr_for(&ca.inter_cert, &ca.inter_key, &csr, "alpha", T0, 0, [7; 16]);
    assert!(matches!(err, Err(PkiError::InvalidValidity(_))), "{err:?}");
    let err = sign_node_csr_for(
        &ca.inter_cert,
        &ca.inter_key,
        b"nope",
        "alpha",
        T0,
        9,
        [7; 16],
    );
    assert!(matches!(err, Err(PkiError::InvalidCsr(_))), "{err:?}");
    assert!(matches!(
        csr_public_key(b"nope"),
        Err(PkiError::InvalidCsr(_))
    ));
    assert!(validity(b"nope").is_err());
}

#[test]
fn signing_is_deterministic_for_the_same_inputs() {
    let ca = authority();
    let csr = csr_for(&node_key(9), "x");
    let sign = |serial| {
        sign_node_csr(&ca.inter_cert, &ca.inter_key, &csr, "alpha", T0, 1, serial).unwrap()
    };
    assert_eq!(sign([1; 16]), sign([1; 16]));
    assert_ne!(sign([1; 16]), sign([2; 16]));
    assert_eq!(
        cert_fingerprint(&sign([1; 16])),
        cert_fingerprint(&sign([1; 16]))
    );
    assert_ne!(
        cert_fingerprint(&sign([1; 16])),
        cert_fingerprint(&sign([2; 16]))
    );
    // The top bits of the serial are forced, so 0x00.. and 0xff.. both
    // give a positive 16-byte serial.
    sign([0; 16]);
    sign([0xFF; 16]);
}

#[test]
fn sign_node_csr_errors() {
    let ca = authority();
    let csr = csr_for(&node_key(9), "x");
    let mut bad_signature = csr.clone();
    let last = bad_signature.len() - 1;
    bad_signature[last] ^= 1;
    let other_key_pkcs8 = ed25519_pkcs8_from_seed(&[3; 32]);
    /// What, issuer key, CSR, node name, start, days.
    type Case<'a> = (&'a str, &'a [u8], &'a [u8], &'a str, i64, u32);
    type Row<'a> = (Case<'a>, fn(&PkiError) -> bool);
    let cases: &[Row<'_>] = &[
        (
            ("garbage csr", &ca.inter_key, b"not a csr", "alpha", T0, 1),
            |e| matches!(e, PkiError::InvalidCsr(_)),
        ),
        (
            (
                "bad csr signature",
                &ca.inter_key,
                &bad_signature,
                "alpha",
                T0,
                1,
            ),
            |e| matches!(e, PkiError::InvalidCsr(_)),
        ),
        (("bad name", &ca.inter_key, &csr, "Alpha", T0, 1), |e| {
            matches!(e, PkiError::InvalidName { .. })
        }),
        (
            (
                "key of another issuer",
                &other_key_pkcs8,
                &csr,
                "alpha",
                T0,
                1,
            ),
            |e| matches!(e, PkiError::IssuerKeyMismatch),
        ),
        (
            ("issuer key not pkcs8", b"nope", &csr, "alpha", T0, 1),
            |e| matches!(e, PkiError::InvalidIssuerKey(_)),
        ),
        (
            ("negative start", &ca.inter_key, &csr, "alpha", -1, 1),
            |e| matches!(e, PkiError::InvalidValidity(_)),
        ),
        (("zero days", &ca.inter_key, &csr, "alpha", T0, 0), |e| {
            matches!(e, PkiError::InvalidValidity(_))
        }),
        (
            (
                "too many days",
                &ca.inter_key,
                &csr,
                "alpha",
                T0,
                MAX_VALIDITY_DAYS + 1,
            ),
            |e| matches!(e, PkiError::InvalidValidity(_)),
        ),
        (
            (
                "ends after 9999",
                &ca.inter_key,
                &csr,
                "alpha",
                253_402_000_000,
                30,
            ),
            |e| matches!(e, PkiError::InvalidValidity(_)),
        ),
    ];
    for ((what, issuer_key, csr, name, start, days), expected) in cases {
        let err = sign_node_csr(
            &ca.inter_cert,
            issuer_key,
            csr,
            name,
            *start,
            *days,
            [1; 16],
        )
        .expect_err(what);
        assert!(expected(&err), "{what}: {err}");
    }
    let err = sign_node_csr(b"junk", &ca.inter_key, &csr, "alpha", T0, 1, [1; 16]).unwrap_err();
    assert!(matches!(err, PkiError::InvalidIssuerCert(_)), "{err}");
}

#[test]
#[allow(clippy::disallowed_methods)] // a foreign key type, made only for this test
fn a_csr_for_a_non_ed25519_key_is_refused() {
    let ca = authority();
    let p256 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let err = sign_node_csr(
        &ca.inter_cert,
        &ca.inter_key,
        &csr_for(&p256, "x"),
        "alpha",
        T0,
        1,
        [1; 16],
    )
    .unwrap_err();
    assert_eq!(err, PkiError::CsrKeyNotEd25519);
    let cert = CertificateParams::new(vec!["x".to_owned()])
        .unwrap()
        .self_signed(&p256)
        .unwrap();
    assert_eq!(ed25519_public_key(cert.der()), Err(PkiError::NotEd25519));
}

#[test]
fn role_identities_are_read_from_the_sans() {
    let ca = authority();
    let (_, public) = key(5);
    let admin = sign_admin(&ca.root_cert, &ca.root_key, &public, &terms("ops", 5)).unwrap();
    assert_eq!(admin_name_of(&admin).unwrap(), "ops");
    assert!(matches!(
        node_name_of(&admin),
        Err(PkiError::NoIdentity { .. })
    ));
    verify_client(&ca.root_cert, &[&admin], T0 + DAY).unwrap();

    let server =
        sign_coordinator_server(&ca.inter_cert, &ca.inter_key, &public, &terms("coord-1", 6))
            .unwrap();
    assert_eq!(role_name_of(&server, Role::Coordinator).unwrap(), "coord-1");
    // Client auth too (coordinators of a cluster dial each other), but it
    // names a coordinator: never a node or an admin.
    verify_client(&ca.root_cert, &[&server, &ca.inter_cert], T0 + DAY).unwrap();
    assert!(matches!(
        node_name_of(&server),
        Err(PkiError::NoIdentity { .. })
    ));
    assert!(matches!(
        admin_name_of(&server),
        Err(PkiError::NoIdentity { .. })
    ));

    assert_eq!(
        ed25519_public_key(&ca.inter_cert).unwrap(),
        node_key(2).public_key_raw()
    );
    assert!(matches!(
        node_name_of(&ca.root_cert),
        Err(PkiError::NoIdentity { .. })
    ));
}

#[test]
fn an_intermediate_cannot_mint_admins_or_other_coordinators() {
    let ca = authority();
    let (_, public) = key(6);
    // sign_admin with the intermediate as issuer: the profile is an admin's,
    // but the intermediate's name constraints forbid the name.
    let forged = sign_admin(&ca.inter_cert, &ca.inter_key, &public, &terms("ops", 7)).unwrap();
    assert_eq!(admin_name_of(&forged).unwrap(), "ops");
    let err = verify_client(&ca.root_cert, &[&forged, &ca.inter_cert], T0 + DAY).unwrap_err();
    assert!(format!("{err:?}").contains("NameConstraint"), "{err:?}");
    // A node certificate from the same intermediate does chain.
    let node = sign_node(&ca.inter_cert, &ca.inter_key, &public, &terms("beta", 8)).unwrap();
    verify_client(&ca.root_cert, &[&node, &ca.inter_cert], T0 + DAY).unwrap();
}

#[test]
fn names_are_checked_before_signing() {
    let ca = authority();
    let (_, public) = key(5);
    let err = sign_admin(&ca.root_cert, &ca.root_key, &public, &terms("a.b", 1)).unwrap_err();
    assert!(matches!(err, PkiError::InvalidName { .. }), "{err}");
    let err = sign_coordinator_intermediate(
        &ca.root_cert,
        &ca.root_key,
        &public,
        &terms("x.coordinator.transitloom", 1),
    )
    .unwrap_err();
    assert!(matches!(err, PkiError::InvalidName { .. }), "{err}");
    let (root_key, _) = key(1);
    assert!(self_signed_root(&root_key, &terms("", 1)).is_err());
    assert!(self_signed_root(&root_key, &terms("bad\nname", 1)).is_err());
    assert!(self_signed_root(&root_key, &terms(&"x".repeat(65), 1)).is_err());
}

#[test]
fn pkcs8_from_seed_matches_ring() {
    let pkcs8 = ed25519_pkcs8_from_seed(&[4; 32]);
    let ring_key = ring::signature::Ed25519KeyPair::from_seed_unchecked(&[4; 32]).unwrap();
    use ring::signature::KeyPair as _;
    assert_eq!(
        ed25519_key_pair(&pkcs8).unwrap().public_key_raw(),
        ring_key.public_key().as_ref()
    );
}

proptest! {
    #[test]
    fn certificate_readers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = ed25519_public_key(&bytes);
        let _ = node_name_of(&bytes);
        let _ = admin_name_of(&bytes);
        let _ = cert_fingerprint(&bytes);
        let _ = validity(&bytes);
        let _ = csr_public_key(&bytes);
    }

    #[test]
    fn mutated_certificates_never_panic(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let ca = authority();
        let mut cert = ca.inter_cert.clone();
        let at = at.index(cert.len());
        cert[at] = byte;
        let _ = ed25519_public_key(&cert);
        let _ = role_name_of(&cert, Role::Coordinator);
        let _ = node_name_of(&cert);
        let _ = validity(&cert);
        cert.truncate(at);
        let _ = node_name_of(&cert);
        let _ = validity(&cert);
    }

    #[test]
    fn arbitrary_csrs_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let ca = authority();
        let _ = sign_node_csr(&ca.inter_cert, &ca.inter_key, &bytes, "alpha", T0, 1, [1; 16]);
    }
}
