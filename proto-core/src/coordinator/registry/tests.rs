use proptest::prelude::*;

use super::*;

fn invite(node: &str, admit: bool) -> Op {
    Op::Invite {
        node: node.to_owned(),
        digest: [node.len() as u8; 32],
        expires_unix_s: 1_000,
        admit,
    }
}

fn enroll(node: &str, at: u64) -> Op {
    Op::Enroll {
        node: node.to_owned(),
        fingerprint: [7; 32],
        at_unix_s: at,
    }
}

fn svc(node: &str, service: &str) -> ServiceRef {
    ServiceRef {
        node: node.to_owned(),
        service: service.to_owned(),
    }
}

/// Checks then applies, as the coordinator does.
fn run(registry: &mut Registry, op: Op, now: u64) -> Result<(), RegistryError> {
    registry.check(&op, now)?;
    registry.apply(&op)
}

#[test]
fn enrollment_admission_revocation_and_readmission() {
    let mut r = Registry::new();
    run(&mut r, invite("alpha", false), 0).unwrap();
    run(&mut r, enroll("alpha", 10), 10).unwrap();
    let alpha = r.node("alpha").unwrap().clone();
    assert_eq!((alpha.admission, alpha.epoch), (Admission::Pending, 1));
    assert_eq!(
        run(&mut r, enroll("alpha", 11), 11),
        Err(RegistryError::JoinTokenUsed("alpha".into()))
    );
    run(
        &mut r,
        Op::Admit {
            node: "alpha".into(),
        },
        12,
    )
    .unwrap();
    assert_eq!(r.node("alpha").unwrap().admission, Admission::Admitted);
    run(
        &mut r,
        Op::Revoke {
            node: "alpha".into(),
        },
        13,
    )
    .unwrap();
    assert_eq!(
        (
            r.node("alpha").unwrap().admission,
            r.node("alpha").unwrap().epoch
        ),
        (Admission::Revoked, 2)
    );
    assert!(matches!(
        run(
            &mut r,
            Op::Revoke {
                node: "alpha".into()
            },
            14
        ),
        Err(RegistryError::WrongState { .. })
    ));
    run(
        &mut r,
        Op::Readmit {
            node: "alpha".into(),
        },
        15,
    )
    .unwrap();
    assert_eq!(
        (
            r.node("alpha").unwrap().admission,
            r.node("alpha").unwrap().epoch
        ),
        (Admission::Admitted, 3)
    );
    assert_eq!(r.node("alpha").unwrap().id, alpha.id, "the id survives");
}

#[test]
fn join_tokens_expire_and_enrolled_nodes_are_not_reinvited() {
    let mut r = Registry::new();
    run(&mut r, invite("beta", true), 0).unwrap();
    assert_eq!(
        run(&mut r, enroll("beta", 2_000), 2_000),
        Err(RegistryError::JoinTokenExpired("beta".into()))
    );
    assert_eq!(
        run(&mut r, enroll("gamma", 5), 5),
        Err(RegistryError::JoinTokenInvalid("gamma".into()))
    );
    run(&mut r, enroll("beta", 5), 5).unwrap();
    assert_eq!(r.node("beta").unwrap().admission, Admission::Admitted);
    assert_eq!(
        run(&mut r, invite("beta", true), 6),
        Err(RegistryError::AlreadyEnrolled("beta".into()))
    );
    assert!(r.invite_matches("beta", &[4; 32]));
    assert!(!r.invite_matches("beta", &[5; 32]));
}

#[test]
fn admin_associations_are_unique_and_deletable() {
    let mut r = Registry::new();
    for n in ["alpha", "beta"] {
        run(&mut r, invite(n, true), 0).unwrap();
        run(&mut r, enroll(n, 1), 1).unwrap();
    }
    let create = Op::AssocCreate {
        a: svc("alpha", "wg0"),
        b: svc("beta", "wg0"),
    };
    run(&mut r, create, 2).unwrap();
    let reverse = Op::AssocCreate {
        a: svc("beta", "wg0"),
        b: svc("alpha", "wg0"),
    };
    assert!(matches!(
        run(&mut r, reverse, 3),
        Err(RegistryError::BadAssociation(..))
    ));
    let to_nobody = Op::AssocCreate {
        a: svc("alpha", "wg0"),
        b: svc("zeta", "wg0"),
    };
    assert_eq!(
        run(&mut r, to_nobody, 3),
        Err(RegistryError::UnknownNode("zeta".into()))
    );
    let id = r.assocs().next().unwrap().id;
    run(&mut r, Op::AssocDelete { assoc: id }, 4).unwrap();
    assert_eq!(
        run(&mut r, Op::AssocDelete { assoc: id }, 5),
        Err(RegistryError::UnknownAssociation(id))
    );
}

fn name() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["alpha", "beta", "gamma"]).prop_map(str::to_owned)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (name(), any::<bool>(), 0u64..200).prop_map(|(node, admit, e)| Op::Invite {
            node,
            digest: [1; 32],
            expires_unix_s: e,
            admit
        }),
        (name(), 0u64..200).prop_map(|(node, at)| Op::Enroll {
            node,
            fingerprint: [2; 32],
            at_unix_s: at
        }),
        (name(), 2u8..5, 2u8..5, 0u64..200).prop_map(|(node, to, from, at)| Op::Renew {
            node,
            fingerprint: [to; 32],
            renewed_from: [from; 32],
            at_unix_s: at
        }),
        name().prop_map(|node| Op::Admit { node }),
        name().prop_map(|node| Op::Revoke { node }),
        name().prop_map(|node| Op::Readmit { node }),
        (name(), name()).prop_map(|(a, b)| Op::AssocCreate {
            a: svc(&a, "wg0"),
            b: svc(&b, "wg1")
        }),
        (1u64..5).prop_map(|id| Op::AssocDelete { assoc: AssocId(id) }),
        (name(), name()).prop_map(|(a, b)| Op::AssocForm {
            a: svc(&a, "wg0"),
            b: svc(&b, "wg1")
        }),
        (assoc_id(), 1u32..4, any::<u8>(), 0u64..200).prop_map(|(assoc, epoch, k, at)| {
            Op::AssocKey {
                assoc,
                epoch,
                key: AssocSecret([k; 32]),
                at_unix_s: at,
            }
        }),
        assoc_id().prop_map(|assoc| Op::AssocDeny { assoc }),
        assoc_id().prop_map(|assoc| Op::AssocAllow { assoc }),
    ]
}

/// Admin ids from 1, consent ids from the top half.
fn assoc_id() -> impl Strategy<Value = AssocId> {
    (any::<bool>(), 1u64..4)
        .prop_map(|(consent, n)| AssocId(if consent { CONSENT_ASSOC_BASE + n } else { n }))
}

proptest! {
    #[test]
    fn replaying_the_log_rebuilds_the_same_registry(ops in prop::collection::vec((op(), 0u64..200), 0..60)) {
        let mut live = Registry::new();
        let mut log = Vec::new();
        for (op, now) in ops {
            if live.check(&op, now).is_ok() {
                live.apply(&op).unwrap();
                log.push(op.encode());
            }
        }
        let mut replayed = Registry::new();
        for record in &log {
            replayed.apply(&Op::decode(record).unwrap()).unwrap();
        }
        prop_assert_eq!(replayed, live);
    }

    #[test]
    fn records_round_trip_and_garbage_never_panics(op in op(), junk in prop::collection::vec(any::<u8>(), 0..100)) {
        prop_assert_eq!(Op::decode(&op.encode()), Ok(op.clone()));
        let _ = Op::decode(&junk);
        let mut longer = op.encode();
        longer.push(0);
        prop_assert_eq!(Op::decode(&longer), Err(codec::OpDecodeError::Trailing(1)));
    }
}

#[test]
fn a_readmitted_node_cannot_be_re_enrolled_with_an_earlier_invite() {
    let mut r = Registry::new();
    run(&mut r, invite("alpha", true), 0).unwrap();
    run(&mut r, enroll("alpha", 1), 1).unwrap();
    run(
        &mut r,
        Op::Revoke {
            node: "alpha".into(),
        },
        2,
    )
    .unwrap();
    run(&mut r, invite("alpha", true), 3).unwrap();
    run(
        &mut r,
        Op::Readmit {
            node: "alpha".into(),
        },
        4,
    )
    .unwrap();
    // The invite is still unused, but alpha is admitted with its old certificate.
    assert_eq!(
        run(&mut r, enroll("alpha", 5), 5),
        Err(RegistryError::AlreadyEnrolled("alpha".into()))
    );
}

fn renew(node: &str, to: u8, from: u8) -> Op {
    Op::Renew {
        node: node.to_owned(),
        fingerprint: [to; 32],
        renewed_from: [from; 32],
        at_unix_s: 50,
    }
}

#[test]
fn a_renewal_replaces_the_certificate_and_keeps_the_one_it_came_from() {
    let mut r = Registry::new();
    run(&mut r, invite("alpha", true), 0).unwrap();
    run(&mut r, enroll("alpha", 1), 1).unwrap();
    let id = r.node("alpha").unwrap().id;
    run(&mut r, renew("alpha", 8, 7), 2).unwrap();
    let alpha = r.node("alpha").unwrap().clone();
    assert_eq!(
        (
            alpha.fingerprint,
            alpha.previous_fingerprint,
            alpha.id,
            alpha.epoch
        ),
        ([8; 32], Some([7; 32]), id, 1),
        "the id and the admission epoch survive a renewal"
    );
    assert!(alpha.holds(&[7; 32]) && alpha.holds(&[8; 32]) && !alpha.holds(&[9; 32]));
    // The renewal was lost on its way: the node asks again with the old one.
    run(&mut r, renew("alpha", 9, 7), 3).unwrap();
    let alpha = r.node("alpha").unwrap();
    assert_eq!(alpha.fingerprint, [9; 32]);
    assert_eq!(alpha.previous_fingerprint, Some([7; 32]));
    assert!(
        !alpha.holds(&[8; 32]),
        "the lost certificate is not accepted"
    );
    // From the new one: the old one is no longer needed.
    run(&mut r, renew("alpha", 10, 9), 4).unwrap();
    let alpha = r.node("alpha").unwrap();
    assert_eq!(alpha.previous_fingerprint, Some([9; 32]));
    assert!(!alpha.holds(&[7; 32]));
    // Only with a certificate the node holds.
    assert_eq!(
        run(&mut r, renew("alpha", 11, 7), 5),
        Err(RegistryError::NotItsCertificate("alpha".into()))
    );
    assert_eq!(
        run(&mut r, renew("zeta", 11, 7), 5),
        Err(RegistryError::UnknownNode("zeta".into()))
    );
}

#[test]
fn revoked_and_pending_nodes_cannot_renew_and_re_enrolment_forgets_the_old_certificate() {
    let mut r = Registry::new();
    run(&mut r, invite("alpha", false), 0).unwrap();
    run(&mut r, enroll("alpha", 1), 1).unwrap();
    assert!(matches!(
        run(&mut r, renew("alpha", 8, 7), 2),
        Err(RegistryError::WrongState {
            state: "pending",
            ..
        })
    ));
    run(
        &mut r,
        Op::Admit {
            node: "alpha".into(),
        },
        3,
    )
    .unwrap();
    run(&mut r, renew("alpha", 8, 7), 4).unwrap();
    run(
        &mut r,
        Op::Revoke {
            node: "alpha".into(),
        },
        5,
    )
    .unwrap();
    assert!(matches!(
        run(&mut r, renew("alpha", 9, 8), 6),
        Err(RegistryError::WrongState {
            state: "revoked",
            ..
        })
    ));
    run(&mut r, invite("alpha", true), 7).unwrap();
    run(&mut r, enroll("alpha", 8), 8).unwrap();
    let alpha = r.node("alpha").unwrap();
    assert_eq!(
        (alpha.fingerprint, alpha.previous_fingerprint),
        ([7; 32], None)
    );
    assert!(!alpha.holds(&[8; 32]));
}

#[test]
fn a_renewal_record_has_a_fixed_encoding() {
    let mut expected = vec![8, 5];
    expected.extend_from_slice(b"alpha");
    expected.extend_from_slice(&[8; 32]);
    expected.extend_from_slice(&[7; 32]);
    expected.extend_from_slice(&50u64.to_be_bytes());
    assert_eq!(renew("alpha", 8, 7).encode(), expected);
    assert_eq!(Op::decode(&expected), Ok(renew("alpha", 8, 7)));
    assert_eq!(
        Op::decode(&expected[..expected.len() - 1]),
        Err(codec::OpDecodeError::Truncated)
    );
}

fn admitted_pair() -> Registry {
    let mut r = Registry::new();
    for n in ["alpha", "beta"] {
        run(&mut r, invite(n, true), 0).unwrap();
        run(&mut r, enroll(n, 1), 1).unwrap();
    }
    r
}

fn key_op(assoc: AssocId, epoch: u32, byte: u8) -> Op {
    Op::AssocKey {
        assoc,
        epoch,
        key: AssocSecret([byte; 32]),
        at_unix_s: 100,
    }
}

#[test]
fn a_consent_pair_keeps_its_id_and_its_keys_follow_epochs() {
    let mut r = admitted_pair();
    let form = Op::AssocForm {
        a: svc("beta", "wg0"),
        b: svc("alpha", "wg0"),
    };
    run(&mut r, form.clone(), 2).unwrap();
    assert!(matches!(
        run(&mut r, form, 2),
        Err(RegistryError::BadAssociation(..))
    ));
    let record = r
        .assoc_between(&svc("alpha", "wg0"), &svc("beta", "wg0"))
        .unwrap()
        .clone();
    assert_eq!(record.id, AssocId(CONSENT_ASSOC_BASE + 1));
    assert_eq!((record.origin, record.key), (Origin::MutualConsent, None));
    assert_eq!(record.a, svc("alpha", "wg0"), "stored in order");
    // Epochs follow one another from 1.
    assert!(run(&mut r, key_op(record.id, 2, 1), 3).is_err());
    run(&mut r, key_op(record.id, 1, 1), 3).unwrap();
    assert!(run(&mut r, key_op(record.id, 1, 2), 3).is_err());
    run(&mut r, key_op(record.id, 2, 2), 3).unwrap();
    let key = r.assoc(record.id).unwrap().usable_key().copied().unwrap();
    assert_eq!((key.epoch, key.key), (2, AssocSecret([2; 32])));
    assert_eq!(format!("{:?}", key.key), "AssocSecret(..)", "never logged");
    // A revoke retires the key: readmission needs a fresh one.
    run(
        &mut r,
        Op::Revoke {
            node: "beta".into(),
        },
        4,
    )
    .unwrap();
    assert!(r.assoc(record.id).unwrap().usable_key().is_none());
    run(
        &mut r,
        Op::Readmit {
            node: "beta".into(),
        },
        5,
    )
    .unwrap();
    assert!(r.assoc(record.id).unwrap().usable_key().is_none());
    run(&mut r, key_op(record.id, 3, 3), 6).unwrap();
    assert_eq!(r.assoc(record.id).unwrap().usable_key().unwrap().epoch, 3);
}

#[test]
fn a_deny_is_kept_until_allowed_or_created_again() {
    let mut r = admitted_pair();
    let (a, b) = (svc("alpha", "wg0"), svc("beta", "wg0"));
    run(
        &mut r,
        Op::AssocForm {
            a: a.clone(),
            b: b.clone(),
        },
        2,
    )
    .unwrap();
    let id = r.assoc_between(&a, &b).unwrap().id;
    run(&mut r, key_op(id, 1, 1), 2).unwrap();
    run(&mut r, Op::AssocDeny { assoc: id }, 3).unwrap();
    let record = r.assoc(id).unwrap();
    assert!(record.deleted && record.usable_key().is_none());
    assert!(run(&mut r, Op::AssocDeny { assoc: id }, 3).is_err());
    run(&mut r, Op::AssocAllow { assoc: id }, 4).unwrap();
    assert!(!r.assoc(id).unwrap().deleted);
    assert!(run(&mut r, Op::AssocAllow { assoc: id }, 4).is_err());
    // Creating the pair makes it an admin association under the same id;
    // creating it again is refused.
    run(&mut r, Op::AssocDeny { assoc: id }, 5).unwrap();
    run(
        &mut r,
        Op::AssocCreate {
            a: b.clone(),
            b: a.clone(),
        },
        6,
    )
    .unwrap();
    let record = r.assoc(id).unwrap();
    assert_eq!((record.origin, record.deleted), (Origin::Admin, false));
    assert_eq!(r.assocs().count(), 1);
    assert!(run(&mut r, Op::AssocCreate { a, b }, 7).is_err());
    assert!(matches!(
        run(&mut r, Op::AssocDeny { assoc: AssocId(9) }, 8),
        Err(RegistryError::UnknownAssociation(_))
    ));
}

#[test]
fn association_records_have_a_fixed_encoding() {
    // Older logs hold creates and deletes: their encoding is unchanged.
    let create = Op::AssocCreate {
        a: svc("a", "w"),
        b: svc("b", "w"),
    };
    let old_create = [6, 1, b'a', 1, b'w', 1, b'b', 1, b'w'];
    assert_eq!(create.encode(), old_create);
    assert_eq!(Op::decode(&old_create), Ok(create));
    let old_delete = [7, 0, 0, 0, 0, 0, 0, 0, 3];
    assert_eq!(
        Op::decode(&old_delete),
        Ok(Op::AssocDelete { assoc: AssocId(3) })
    );
    let mut key = vec![10];
    key.extend_from_slice(&5u64.to_be_bytes());
    key.extend_from_slice(&2u32.to_be_bytes());
    key.extend_from_slice(&[9; 32]);
    key.extend_from_slice(&100u64.to_be_bytes());
    assert_eq!(key_op(AssocId(5), 2, 9).encode(), key);
    assert_eq!(Op::decode(&key), Ok(key_op(AssocId(5), 2, 9)));
    assert_eq!(
        Op::decode(&key[..key.len() - 1]),
        Err(codec::OpDecodeError::Truncated)
    );
    assert_eq!(
        Op::AssocDeny { assoc: AssocId(1) }.encode()[0],
        11,
        "a deny is not the old delete"
    );
}

#[test]
fn an_old_delete_still_forgets_the_record_on_replay() {
    let mut r = admitted_pair();
    let (a, b) = (svc("alpha", "wg0"), svc("beta", "wg0"));
    run(
        &mut r,
        Op::AssocCreate {
            a: a.clone(),
            b: b.clone(),
        },
        2,
    )
    .unwrap();
    run(&mut r, Op::AssocDelete { assoc: AssocId(1) }, 3).unwrap();
    assert_eq!(r.assocs().count(), 0);
    run(&mut r, Op::AssocCreate { a, b }, 4).unwrap();
    assert_eq!(r.assocs().next().unwrap().id, AssocId(2));
}
