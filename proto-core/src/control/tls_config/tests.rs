use std::time::Duration;

use rustls::crypto::SecureRandom;
use rustls::pki_types::{ServerName, UnixTime};
use rustls::{ClientConnection, ServerConnection};

use super::test_pki::TestPki;
use super::*;
use crate::csprng::Drbg;

fn unix_time() -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(1_700_000_000))
}

#[test]
fn fingerprint_is_sha256_of_the_der() {
    let cert = CertificateDer::from(b"abc".to_vec());
    assert_eq!(
        hex(fingerprint(&cert)),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn configs_are_tls13_with_the_control_alpn_only() {
    let pki = TestPki::new(1, "coord-1");
    let server = server_config(&pki.root, pki.coordinator.tls(), ClientAuth::Required).unwrap();
    let client = client_config(&pki.root, Some(pki.node.tls())).unwrap();
    let anonymous = client_config(&pki.root, None).unwrap();
    assert_eq!(server.alpn_protocols, vec![ALPN.to_vec()]);
    for config in [&client, &anonymous] {
        assert_eq!(config.alpn_protocols, vec![ALPN.to_vec()]);
        assert!(!config.enable_early_data);
    }
    let provider = control_plane_provider();
    assert!(provider.cipher_suites.iter().all(|s| s.tls13().is_some()));
    assert_eq!(server.max_early_data_size, 0);
    assert_eq!(server.send_tls13_tickets, 0);
}

#[test]
fn bad_identities_are_named() {
    let pki = TestPki::new(2, "coord-1");
    let empty = TlsIdentity {
        chain: Vec::new(),
        key: pki.node.tls().key,
    };
    assert!(matches!(
        client_config(&pki.root, Some(empty)),
        Err(TlsConfigError::EmptyChain)
    ));

    let mismatched = TlsIdentity {
        chain: pki.coordinator.chain.clone(),
        key: pki.node.tls().key,
    };
    assert!(matches!(
        server_config(&pki.root, mismatched, ClientAuth::Required),
        Err(TlsConfigError::KeyMismatch)
    ));

    #[allow(clippy::disallowed_methods)] // a test-only key; never in the crate itself
    let ecdsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["coord-1".to_string()])
        .unwrap()
        .self_signed(&ecdsa)
        .unwrap();
    let ecdsa_identity = TlsIdentity {
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(ecdsa.serialize_der().into()),
    };
    let err = server_config(&pki.root, ecdsa_identity, ClientAuth::Required).unwrap_err();
    assert!(matches!(err, TlsConfigError::BadKey(_)), "{err}");
    assert!(err.to_string().contains("Ed25519"), "{err}");

    let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
    assert!(matches!(
        client_config(&garbage, None),
        Err(TlsConfigError::BadRoot(_))
    ));
}

#[test]
fn randomness_fails_closed_outside_a_lend() {
    let mut buf = [0u8; 8];
    assert!(inputs::LentRandom.fill(&mut buf).is_err());
    assert_eq!(lent_unix_time(), None);
}

#[test]
fn lends_return_the_advanced_generator_and_nest() {
    let draw = |inputs: &mut TlsInputs| {
        let _lent = inputs.lend(unix_time());
        let mut buf = [0u8; 16];
        inputs::LentRandom.fill(&mut buf).unwrap();
        buf
    };
    let mut a = TlsInputs::new(Drbg::new([3; 32]));
    let mut b = TlsInputs::new(Drbg::new([3; 32]));
    let first = draw(&mut a);
    assert_eq!(first, draw(&mut b), "same seed, same bytes");
    assert_ne!(first, draw(&mut a), "the generator came back advanced");

    let mut outer = TlsInputs::new(Drbg::new([4; 32]));
    let mut inner = TlsInputs::new(Drbg::new([5; 32]));
    let _outer = outer.lend(unix_time());
    let later = UnixTime::since_unix_epoch(Duration::from_secs(1_800_000_000));
    {
        let _inner = inner.lend(later);
        assert_eq!(lent_unix_time(), Some(later));
    }
    assert_eq!(lent_unix_time(), Some(unix_time()));
    let mut buf = [0u8; 16];
    inputs::LentRandom.fill(&mut buf).unwrap();
    assert_eq!(buf, Drbg::new([4; 32]).key()[..16]);
}

/// Runs a TLS-over-TCP style handshake in memory (the fallback transport uses
/// these same configurations) and returns every flight's bytes.
fn tls_handshake(pki: &TestPki, seed: u8) -> Result<Vec<Vec<u8>>, rustls::Error> {
    let server_cfg = server_config(&pki.root, pki.coordinator.tls(), ClientAuth::Required).unwrap();
    let client_cfg = client_config(&pki.root, Some(pki.node.tls())).unwrap();
    let mut client_rng = TlsInputs::new(Drbg::new([seed; 32]));
    let mut server_rng = TlsInputs::new(Drbg::new([seed.wrapping_add(1); 32]));
    let name = ServerName::try_from("coord-1").unwrap();
    let mut client = {
        let _lent = client_rng.lend(unix_time());
        ClientConnection::new(client_cfg, name)?
    };
    let mut server = ServerConnection::new(server_cfg)?;
    let mut flights = Vec::new();
    for _ in 0..8 {
        let mut wire = Vec::new();
        {
            let _lent = client_rng.lend(unix_time());
            while client.wants_write() {
                client.write_tls(&mut wire).unwrap();
            }
        }
        if !wire.is_empty() {
            let _lent = server_rng.lend(unix_time());
            server.read_tls(&mut &wire[..]).unwrap();
            server.process_new_packets()?;
            flights.push(wire);
        }
        let mut wire = Vec::new();
        {
            let _lent = server_rng.lend(unix_time());
            while server.wants_write() {
                server.write_tls(&mut wire).unwrap();
            }
        }
        if !wire.is_empty() {
            let _lent = client_rng.lend(unix_time());
            client.read_tls(&mut &wire[..]).unwrap();
            client.process_new_packets()?;
            flights.push(wire);
        }
        if !client.is_handshaking() && !server.is_handshaking() {
            let peer = server.peer_certificates().unwrap();
            assert_eq!(peer[0], pki.node.chain[0]);
            return Ok(flights);
        }
    }
    panic!("handshake did not finish");
}

#[test]
fn a_handshake_is_reproducible_from_its_seeds() {
    let pki = TestPki::new(3, "coord-1");
    let first = tls_handshake(&pki, 10).unwrap();
    assert_eq!(first, tls_handshake(&pki, 10).unwrap());
    assert_ne!(first, tls_handshake(&pki, 11).unwrap());
}

#[test]
fn only_a_chain_with_client_auth_of_this_root_passes_as_a_client() {
    const AT: u64 = 1_760_000_000;
    let pki = TestPki::new(3, "hub");
    let other = TestPki::new(4, "hub");
    check_client_chain(&pki.root, &pki.node.chain, AT).unwrap();
    // A server-auth-only certificate (a coordinator's from before
    // clusters) cannot dial a peer.
    assert!(check_client_chain(&pki.root, &pki.coordinator.chain, AT).is_err());
    assert!(check_client_chain(&other.root, &pki.node.chain, AT).is_err());
    assert!(matches!(
        check_client_chain(&pki.root, &[], AT),
        Err(TlsConfigError::EmptyChain)
    ));
}
