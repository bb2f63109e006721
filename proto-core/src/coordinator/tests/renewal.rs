//! Certificate renewal at the coordinator, with scripted clients: who may
//! renew, when, for which key, and which certificates open sessions after.

use super::*;

/// A CSR for `key` (PKCS#8), as a node makes it.
fn csr(key: &[u8]) -> Bytes {
    Bytes::from(pki::node_csr(key).unwrap())
}

fn rejected(inbox: &[Message]) -> Option<RejectCode> {
    match inbox.last() {
        Some(Message::Reject { code, .. }) => Some(*code),
        _ => None,
    }
}

fn welcomed(inbox: &[Message]) -> bool {
    inbox.iter().any(|m| matches!(m, Message::Welcome { .. }))
}

/// A lab whose node certificates last a minute, with alpha enrolled and
/// admitted.
/// Also returns when the lab started (its wall clock reads `UNIX_NOW` then).
fn short_lived() -> (Lab, Creds, Instant) {
    let mut lab = Lab::new();
    let start = lab.now;
    lab.coordinator.set_node_cert_lifetime(60);
    assert_eq!(lab.coordinator.node_cert_lifetime_s(), 60);
    let alpha = lab.enroll("alpha", true);
    (lab, alpha, start)
}

/// The coordinator's wall clock (Unix seconds) at `now`, for a lab that
/// started at `start`.
fn unix_at(start: Instant, now: Instant) -> i64 {
    (UNIX_NOW + (now - start).as_secs()) as i64
}

#[test]
fn a_node_renews_for_its_key_and_the_old_certificate_stays_usable_until_it_expires() {
    let (mut lab, alpha, start) = short_lived();
    let unix = |lab: &Lab| unix_at(start, lab.now);
    let (from, until) = pki::validity(&alpha.chain[0]).unwrap();
    let issued = unix(&lab);
    assert_eq!(
        (from, until),
        (issued - 6, issued + 60),
        "valid a minute from issue, backdated a tenth of it"
    );

    // Too early: the certificate has not run half its life.
    let a = lab.session(&alpha, "alpha", &[]);
    assert!(welcomed(&lab.clients[a].inbox));
    lab.send(
        a,
        Message::Renew {
            csr_der: csr(&alpha.key),
        },
    );
    assert_eq!(
        rejected(&lab.clients[a].inbox),
        Some(RejectCode::RateLimited)
    );
    assert!(lab.clients[a].closed);

    lab.run(Duration::from_secs(35));
    let a = lab.session(&alpha, "alpha", &[]);
    lab.send(
        a,
        Message::Renew {
            csr_der: csr(&alpha.key),
        },
    );
    let Some(Message::Renewed { chain_der }) = lab.clients[a].inbox.last().cloned() else {
        panic!("not renewed: {:?}", lab.clients[a].inbox)
    };
    let renewed = Creds {
        chain: chain_der.iter().map(|c| c.to_vec()).collect(),
        key: alpha.key.clone(),
    };
    let leaf = &renewed.chain[0];
    assert_eq!(renewed.chain[1], lab.pki.intermediate);
    assert_eq!(pki::node_name_of(leaf).unwrap(), "alpha");
    assert_eq!(
        pki::ed25519_public_key(leaf).unwrap(),
        pki::ed25519_public_key(&alpha.chain[0]).unwrap(),
        "the key is kept"
    );
    let now = unix(&lab);
    assert_eq!(pki::validity(leaf).unwrap(), (now - 6, now + 60));
    let old = pki::cert_fingerprint(&alpha.chain[0]);
    let new = pki::cert_fingerprint(leaf);
    assert_eq!(
        lab.log.last(),
        Some(&Op::Renew {
            node: "alpha".into(),
            fingerprint: new,
            renewed_from: old,
            at_unix_s: now as u64,
        })
    );
    let record = lab.coordinator.registry().node("alpha").unwrap();
    assert_eq!(
        (record.fingerprint, record.previous_fingerprint),
        (new, Some(old))
    );
    assert_eq!(lab.coordinator.counters().renewed, 1);

    // One renewal per session.
    lab.send(
        a,
        Message::Renew {
            csr_der: csr(&alpha.key),
        },
    );
    assert_eq!(
        rejected(&lab.clients[a].inbox),
        Some(RejectCode::RateLimited)
    );
    assert_eq!(lab.coordinator.counters().renewals_refused, 2);
    assert_eq!(
        lab.coordinator.counters().refused.get("rate-limited"),
        Some(&2)
    );

    // The new certificate opens sessions; so does the old one while it is
    // valid (the node may never have received the new one).
    let b = lab.session(&renewed, "alpha", &[]);
    assert!(
        welcomed(&lab.clients[b].inbox),
        "{:?}",
        lab.clients[b].inbox
    );
    let c = lab.session(&alpha, "alpha", &[]);
    assert!(
        welcomed(&lab.clients[c].inbox),
        "{:?}",
        lab.clients[c].inbox
    );
    // Past its expiry, TLS refuses the old one; the new one still works.
    lab.run(Duration::from_secs(30));
    let d = lab.connect(Some(alpha.tls()));
    assert!(
        lab.clients[d].closed,
        "an expired certificate opens no session"
    );
    let e = lab.session(&renewed, "alpha", &[]);
    assert!(
        welcomed(&lab.clients[e].inbox),
        "{:?}",
        lab.clients[e].inbox
    );

    // The log replays to the same registry (a restart keeps the renewal).
    let mut replayed = Registry::new();
    for op in &lab.log {
        replayed.apply(&Op::decode(&op.encode()).unwrap()).unwrap();
    }
    assert_eq!(&replayed, lab.coordinator.registry());
}

#[test]
fn renewal_needs_a_token_the_same_key_and_an_unrevoked_node() {
    let (mut lab, alpha, _) = short_lived();
    lab.run(Duration::from_secs(35));

    // A certificate alone is not enough: no hello, no renewal.
    let a = lab.connect(Some(alpha.tls()));
    lab.send(
        a,
        Message::Renew {
            csr_der: csr(&alpha.key),
        },
    );
    assert_eq!(
        rejected(&lab.clients[a].inbox),
        Some(RejectCode::TokenInvalid)
    );

    // Another key is refused: a renewal keeps the key the session proved.
    let (other, _) = key(99);
    let b = lab.session(&alpha, "alpha", &[]);
    lab.send(
        b,
        Message::Renew {
            csr_der: csr(&other),
        },
    );
    assert_eq!(
        rejected(&lab.clients[b].inbox),
        Some(RejectCode::BadCertificate)
    );

    // A request that is no CSR.
    let c = lab.session(&alpha, "alpha", &[]);
    lab.send(
        c,
        Message::Renew {
            csr_der: Bytes::from_static(b"not a csr"),
        },
    );
    assert_eq!(rejected(&lab.clients[c].inbox), Some(RejectCode::Malformed));

    // Revoked: the still-valid certificate renews nothing.
    lab.admin(AdminCommand::Revoke {
        node: Name::new("alpha").unwrap(),
    })
    .unwrap();
    let d = lab.connect(Some(alpha.tls()));
    lab.send(
        d,
        Message::Renew {
            csr_der: csr(&alpha.key),
        },
    );
    assert_eq!(rejected(&lab.clients[d].inbox), Some(RejectCode::Revoked));
    assert!(lab.clients[d].closed);

    let counters = lab.coordinator.counters();
    assert_eq!(counters.renewals_refused, 4);
    assert_eq!(counters.renewed, 0);
    assert_eq!(counters.refused.get("revoked"), Some(&1));
    assert!(!lab.log.iter().any(|op| matches!(op, Op::Renew { .. })));
    let record = lab.coordinator.registry().node("alpha").unwrap();
    assert_eq!(record.fingerprint, pki::cert_fingerprint(&alpha.chain[0]));
    assert_eq!(record.previous_fingerprint, None);
}

#[test]
fn a_renewal_waiting_for_its_commit_loses_to_a_revoke_before_it() {
    let (mut lab, alpha, _) = short_lived();
    lab.run(Duration::from_secs(35));
    let a = lab.session(&alpha, "alpha", &[]);
    let admin = identity(&[&lab.pki.admin], &lab.pki.admin_key);
    let c = lab.connect(Some(admin));
    lab.held = Some(0);
    let now = lab.now;
    lab.clients[c].send(
        now,
        &Message::AdminRequest {
            request_id: 1,
            command: AdminCommand::Revoke {
                node: Name::new("alpha").unwrap(),
            },
        },
    );
    lab.run(Duration::from_millis(20));
    let now = lab.now;
    lab.clients[a].send(
        now,
        &Message::Renew {
            csr_der: csr(&alpha.key),
        },
    );
    lab.run(Duration::from_millis(100));
    assert_eq!(lab.held, Some(1), "only the revoke was appended");
    assert_eq!(rejected(&lab.clients[a].inbox), Some(RejectCode::Revoked));
    lab.held = None;
    lab.coordinator.committed(lab.now);
    lab.run(Duration::from_millis(100));
    assert_eq!(lab.coordinator.counters().renewed, 0);
}
