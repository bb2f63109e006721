use proptest::prelude::*;

use super::claims::SIGNATURE_LEN;
use super::*;
use crate::csprng::Drbg;
use crate::pki::ed25519_pkcs8_from_seed;

const NOW: u64 = 1_900_000_000;
const FP: [u8; 32] = [0xAB; 32];

fn signer(seed: u8, issuer: &str) -> TokenSigner {
    TokenSigner::from_pkcs8(&ed25519_pkcs8_from_seed(&[seed; 32]), issuer).unwrap()
}

fn claims(s: &TokenSigner) -> AdmissionClaims {
    s.claims(7, "alpha", FP, 3, NOW)
}

fn verifier_for(signers: &[&TokenSigner]) -> TokenVerifier {
    let mut v = TokenVerifier::new();
    for s in signers {
        v.trust(s.issuer(), s.public_key());
    }
    v
}

#[test]
fn a_token_round_trips() {
    let s = signer(1, "coord-1");
    let c = claims(&s);
    assert_eq!(c.expires_unix_s, NOW + DEFAULT_LIFETIME_S);
    assert_eq!(refresh_at(&c), NOW + 300);
    assert_eq!(c.refresh_at(), NOW + 300);
    let token = s.sign(&c).unwrap();
    assert_eq!(
        verifier_for(&[&s]).verify(&token, NOW + 1, &FP, 7),
        Ok(c.clone())
    );
    assert_eq!(AdmissionClaims::parse_unverified(&token), Ok(c));
}

#[test]
fn any_coordinator_of_the_root_verifies() {
    let (a, b) = (signer(1, "coord-1"), signer(2, "coord-2.example.net"));
    let v = verifier_for(&[&a, &b]);
    for s in [&a, &b] {
        let token = s.sign(&claims(s)).unwrap();
        assert!(v.verify(&token, NOW, &FP, 7).is_ok());
    }
}

#[test]
fn tokens_fit_the_size_limit() {
    // The longest coordinator name: labels of 63, joined by dots.
    let max = crate::pki::naming::MAX_COORDINATOR_NAME_LEN;
    let mut issuer = ["c".repeat(63), "c".repeat(63), "c".repeat(63)].join(".");
    issuer.push('.');
    issuer.push_str(&"c".repeat(max - issuer.len()));
    let s = signer(1, &issuer);
    let c = s.claims(u64::MAX, &"n".repeat(63), FP, u64::MAX, NOW);
    let token = s.sign(&c).unwrap();
    assert_eq!(token.len(), MAX_TOKEN_LEN);
    assert!(verifier_for(&[&s])
        .verify(&token, NOW, &FP, u64::MAX)
        .is_ok());
    let typical = signer(1, "coord-1");
    assert!(typical.sign(&claims(&typical)).unwrap().len() < 160);
}

#[test]
fn every_refusal_has_its_own_error() {
    let s = signer(1, "coord-1");
    let v = verifier_for(&[&s]);
    let good = s.sign(&claims(&s)).unwrap();
    let stranger = signer(9, "coord-9");
    let impostor = signer(9, "coord-1"); // right name, key not trusted
    let mut future = claims(&s);
    future.issued_unix_s = NOW + MAX_CLOCK_SKEW_S + 1;
    future.expires_unix_s = future.issued_unix_s + 600;
    let mut skewed = future.clone();
    skewed.issued_unix_s = NOW + MAX_CLOCK_SKEW_S;
    let mut bad_version = good.to_vec();
    bad_version[0] = 2;

    type Check = fn(&Result<AdmissionClaims, TokenError>) -> bool;
    /// What, token, now, expected fingerprint, expected node, outcome.
    type Row = (&'static str, Vec<u8>, u64, [u8; 32], u64, Check);
    let table: Vec<Row> = vec![
        ("empty", vec![], NOW, FP, 7, |r| {
            matches!(r, Err(TokenError::Malformed(_)))
        }),
        (
            "truncated",
            good[..good.len() - 1].to_vec(),
            NOW,
            FP,
            7,
            |r| matches!(r, Err(TokenError::Malformed(_))),
        ),
        (
            "trailing byte",
            [&good[..], &[0]].concat(),
            NOW,
            FP,
            7,
            |r| matches!(r, Err(TokenError::Malformed(_))),
        ),
        ("version 2", bad_version, NOW, FP, 7, |r| {
            matches!(r, Err(TokenError::Malformed(_)))
        }),
        (
            "untrusted intermediate",
            stranger.sign(&claims(&stranger)).unwrap().to_vec(),
            NOW,
            FP,
            7,
            |r| r == &Err(TokenError::UnknownIssuer("coord-9".into())),
        ),
        (
            "impostor key",
            impostor.sign(&claims(&impostor)).unwrap().to_vec(),
            NOW,
            FP,
            7,
            |r| r == &Err(TokenError::BadSignature),
        ),
        (
            "at expiry",
            good.to_vec(),
            NOW + 600,
            FP,
            7,
            |r| matches!(r, Err(TokenError::Expired { expires_unix_s, .. }) if *expires_unix_s == NOW + 600),
        ),
        ("long expired", good.to_vec(), u64::MAX, FP, 7, |r| {
            matches!(r, Err(TokenError::Expired { .. }))
        }),
        (
            "issued in the future",
            s.sign(&future).unwrap().to_vec(),
            NOW,
            FP,
            7,
            |r| matches!(r, Err(TokenError::NotYetValid { .. })),
        ),
        (
            "within the skew",
            s.sign(&skewed).unwrap().to_vec(),
            NOW,
            FP,
            7,
            |r| r.is_ok(),
        ),
        ("wrong node", good.to_vec(), NOW, FP, 8, |r| {
            r == &Err(TokenError::WrongNode {
                expected: 8,
                found: 7,
            })
        }),
        (
            "wrong certificate",
            good.to_vec(),
            NOW,
            [0xAC; 32],
            7,
            |r| r == &Err(TokenError::WrongCertificate),
        ),
        ("all good", good.to_vec(), NOW, FP, 7, |r| r.is_ok()),
    ];
    for (what, token, now, fp, node, check) in table {
        let result = v.verify(&token, now, &fp, node);
        assert!(check(&result), "{what}: {result:?}");
    }
}

#[test]
fn signing_refuses_bad_claims() {
    let s = signer(1, "coord-1");
    let mut c = claims(&s);
    c.node = "Not A Name".into();
    assert!(matches!(
        s.sign(&c),
        Err(TokenError::InvalidName { field: "node", .. })
    ));
    let mut c = claims(&s);
    c.issuer = "coord-2".into();
    assert!(matches!(s.sign(&c), Err(TokenError::InvalidClaims(_))));
    let mut c = claims(&s);
    c.expires_unix_s = c.issued_unix_s;
    assert!(matches!(s.sign(&c), Err(TokenError::InvalidClaims(_))));
    assert!(matches!(
        TokenSigner::from_pkcs8(b"not a key", "coord-1"),
        Err(TokenError::InvalidKey(_))
    ));
    assert!(matches!(
        TokenSigner::from_pkcs8(&ed25519_pkcs8_from_seed(&[1; 32]), "x.transitloom"),
        Err(TokenError::InvalidName {
            field: "issuer",
            ..
        })
    ));
}

#[test]
fn trust_can_hold_several_keys_and_be_withdrawn() {
    let (old, new) = (signer(1, "coord-1"), signer(2, "coord-1"));
    let mut v = verifier_for(&[&old, &new]);
    v.trust("coord-1", old.public_key()); // idempotent
    let token = old.sign(&claims(&old)).unwrap();
    assert!(v.verify(&token, NOW, &FP, 7).is_ok());
    assert!(v
        .verify(&new.sign(&claims(&new)).unwrap(), NOW, &FP, 7)
        .is_ok());
    v.distrust("coord-1");
    assert!(matches!(
        v.verify(&token, NOW, &FP, 7),
        Err(TokenError::UnknownIssuer(_))
    ));
}

#[test]
fn join_tokens() {
    let mut drbg = Drbg::from_u64(42);
    let token = JoinToken::generate(&mut drbg, "alpha-1").unwrap();
    let text = token.to_string();
    assert!(text.starts_with("tlj1-alpha-1-"), "{text}");
    assert_eq!(text.len(), "tlj1-alpha-1-".len() + 32);
    assert!(text[13..]
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    let parsed: JoinToken = format!("  {text}\n").parse().unwrap();
    assert_eq!(parsed, token);
    assert_eq!(parsed.node(), "alpha-1");
    assert!(parsed.matches(&token.digest()));
    assert!(
        !format!("{token:?}").contains(&text[13..]),
        "Debug leaks the secret"
    );

    let other = JoinToken::generate(&mut drbg, "alpha-1").unwrap();
    assert_ne!(other, token, "every invite draws a fresh secret");
    assert!(!other.matches(&token.digest()));
    assert_eq!(
        JoinToken::generate(&mut Drbg::from_u64(42), "alpha-1").unwrap(),
        token,
        "the same seed gives the same token"
    );
    assert!(matches!(
        JoinToken::generate(&mut drbg, "Alpha"),
        Err(JoinTokenError::BadName { .. })
    ));

    let hex = "00112233445566778899aabbccddeeff";
    let table: &[(String, Result<(), JoinTokenError>)] = &[
        (format!("tlj1-a-{hex}"), Ok(())),
        (format!("tlj2-a-{hex}"), Err(JoinTokenError::MissingPrefix)),
        (format!("a-{hex}"), Err(JoinTokenError::MissingPrefix)),
        ("tlj1-".to_owned(), Err(JoinTokenError::MissingSecret)),
        ("tlj1-abc".to_owned(), Err(JoinTokenError::MissingSecret)),
        (
            format!("tlj1-a-{}", &hex[..31]),
            Err(JoinTokenError::BadSecret),
        ),
        (format!("tlj1-a-{hex}0"), Err(JoinTokenError::BadSecret)),
        (
            format!("tlj1-a-{}", hex.to_uppercase()),
            Err(JoinTokenError::BadSecret),
        ),
        (
            format!("tlj1-a-{}g", &hex[..31]),
            Err(JoinTokenError::BadSecret),
        ),
        (
            format!("tlj1-a-{}é", &hex[..30]),
            Err(JoinTokenError::BadSecret),
        ),
    ];
    for (text, expected) in table {
        assert_eq!(&text.parse::<JoinToken>().map(|_| ()), expected, "{text}");
    }
    for bad_name in [
        format!("tlj1--{hex}"),
        format!("tlj1-A-{hex}"),
        format!("tlj1-a.b-{hex}"),
    ] {
        assert!(
            matches!(
                bad_name.parse::<JoinToken>(),
                Err(JoinTokenError::BadName { .. })
            ),
            "{bad_name}"
        );
    }
    // Names with hyphens parse: the secret is after the last one.
    let t: JoinToken = format!("tlj1-a-b-c-{hex}").parse().unwrap();
    assert_eq!(t.node(), "a-b-c");
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_verify(bytes in prop::collection::vec(any::<u8>(), 0..700)) {
        let s = signer(1, "coord-1");
        let v = verifier_for(&[&s]);
        prop_assert!(v.verify(&bytes, NOW, &FP, 7).is_err());
        let _ = AdmissionClaims::parse_unverified(&bytes);
    }

    #[test]
    fn any_flipped_bit_is_refused(bit in any::<prop::sample::Index>()) {
        let s = signer(1, "coord-1");
        let v = verifier_for(&[&s]);
        let mut token = s.sign(&claims(&s)).unwrap().to_vec();
        let bit = bit.index(token.len() * 8);
        token[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(v.verify(&token, NOW, &FP, 7).is_err());
    }

    #[test]
    fn mutated_tokens_never_panic(at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let s = signer(1, "coord-1");
        let v = verifier_for(&[&s]);
        let mut token = s.sign(&claims(&s)).unwrap().to_vec();
        let at = at.index(token.len());
        token[at] = byte;
        let _ = v.verify(&token, NOW, &FP, 7);
        token.truncate(cut.index(token.len()));
        prop_assert!(v.verify(&token, NOW, &FP, 7).is_err());
    }

    #[test]
    fn claims_round_trip(node_id: u64, epoch: u64, issued in 0u64..u64::MAX / 2, life in 1u64..100_000, fp: [u8; 32], name in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?") {
        let s = signer(1, "coord-1");
        let c = AdmissionClaims {
            node_id,
            node: name,
            cert_fingerprint: fp,
            admission_epoch: epoch,
            issued_unix_s: issued,
            expires_unix_s: issued + life,
            issuer: "coord-1".into(),
        };
        let token = s.sign(&c).unwrap();
        prop_assert_eq!(token.len(), c.body_len() + SIGNATURE_LEN);
        prop_assert_eq!(verifier_for(&[&s]).verify(&token, issued, &fp, node_id), Ok(c));
    }
}
