//! Enrollment retried with the same join token: the same key gets the same
//! certificate and id again while the token is valid (its first answer was
//! lost); any other key, or a retry after the token expired, finds it used.

use super::*;

fn csr_of(key: &[u8]) -> Bytes {
    Bytes::from(pki::node_csr(key).unwrap())
}

/// Sends an enrollment on a fresh session; returns what came back.
fn enroll_with(lab: &mut Lab, join_token: &str, key: &[u8]) -> Option<Message> {
    let c = lab.connect(None);
    lab.send(
        c,
        Message::Enroll {
            join_token: join_token.to_owned(),
            csr_der: csr_of(key),
        },
    );
    lab.clients[c].inbox.pop()
}

fn invite(lab: &mut Lab, node: &str, ttl_s: u32) -> String {
    let reply = lab
        .admin(AdminCommand::Invite {
            node: Name::new(node).unwrap(),
            admit: true,
            ttl_s,
        })
        .unwrap();
    let AdminReply::Invited { join_token } = reply else {
        panic!("{reply:?}")
    };
    join_token
}

#[test]
fn a_retried_enrollment_gets_the_same_certificate_and_id_while_the_token_lasts() {
    let mut lab = Lab::new();
    let token = invite(&mut lab, "alpha", 120);
    let (key_a, _) = key(60);
    let Some(Message::Enrolled { node_id, chain_der }) = enroll_with(&mut lab, &token, &key_a)
    else {
        panic!("not enrolled")
    };
    // Another enrollment in between moves the coordinator's random state on:
    // the repeat does not depend on it (nor would it after a restart).
    lab.enroll("beta", true);

    // The answer was lost: the node retries with its key and token.
    let again = enroll_with(&mut lab, &token, &key_a);
    assert_eq!(
        again,
        Some(Message::Enrolled {
            node_id,
            chain_der: chain_der.clone()
        }),
        "the same certificate and id"
    );
    let enrolls = lab
        .log
        .iter()
        .filter(|op| matches!(op, Op::Enroll { node, .. } if node == "alpha"))
        .count();
    assert_eq!(enrolls, 1, "nothing more was written");
    assert_eq!(lab.coordinator.counters().enrollments_repeated, 1);
    assert_eq!(lab.coordinator.counters().enrolled, 2);

    // Another key with the same token finds it used.
    let (key_b, _) = key(61);
    let other = enroll_with(&mut lab, &token, &key_b);
    assert!(
        matches!(
            other,
            Some(Message::Reject {
                code: RejectCode::JoinTokenUsed,
                ..
            })
        ),
        "{other:?}"
    );

    // The certificate works.
    let creds = Creds {
        chain: chain_der.iter().map(|c| c.to_vec()).collect(),
        key: key_a.clone(),
    };
    let s = lab.session(&creds, "alpha", &[]);
    assert!(lab.clients[s]
        .inbox
        .iter()
        .any(|m| matches!(m, Message::Welcome { .. })));

    // Once the token has expired, a retry is refused like any reuse.
    lab.run(Duration::from_secs(121));
    let late = enroll_with(&mut lab, &token, &key_a);
    assert!(
        matches!(
            late,
            Some(Message::Reject {
                code: RejectCode::JoinTokenUsed,
                ..
            })
        ),
        "{late:?}"
    );
    assert_eq!(lab.coordinator.counters().enrollments_repeated, 1);
}

#[test]
fn a_revoked_or_renewed_node_gets_nothing_for_its_old_join_token() {
    let mut lab = Lab::new();
    lab.coordinator.set_node_cert_lifetime(60);
    let token = invite(&mut lab, "alpha", 3_600);
    let (key_a, _) = key(60);
    let Some(Message::Enrolled { chain_der, .. }) = enroll_with(&mut lab, &token, &key_a) else {
        panic!("not enrolled")
    };
    // Renewed: the enrolled certificate is no longer the node's current
    // one, so the token does not hand it out again.
    lab.run(Duration::from_secs(35));
    let creds = Creds {
        chain: chain_der.iter().map(|c| c.to_vec()).collect(),
        key: key_a.clone(),
    };
    let s = lab.session(&creds, "alpha", &[]);
    lab.send(
        s,
        Message::Renew {
            csr_der: csr_of(&key_a),
        },
    );
    assert!(matches!(
        lab.clients[s].inbox.last(),
        Some(Message::Renewed { .. })
    ));
    let after_renewal = enroll_with(&mut lab, &token, &key_a);
    assert!(
        matches!(
            after_renewal,
            Some(Message::Reject {
                code: RejectCode::JoinTokenUsed,
                ..
            })
        ),
        "{after_renewal:?}"
    );
    // Revoked: nothing either.
    lab.admin(AdminCommand::Revoke {
        node: Name::new("alpha").unwrap(),
    })
    .unwrap();
    let revoked = enroll_with(&mut lab, &token, &key_a);
    assert!(
        matches!(
            revoked,
            Some(Message::Reject {
                code: RejectCode::JoinTokenUsed,
                ..
            })
        ),
        "{revoked:?}"
    );
    assert_eq!(lab.coordinator.counters().enrollments_repeated, 0);
}
