//! The association lifecycle: ids and keys that survive a coordinator
//! restart, a fresh key per epoch (admin rekey, key lifetime), and admin
//! deletes of mutual-consent associations that stay deleted.

use super::*;
use crate::control::msg::{AssocState, WithdrawReason};

/// Two admitted nodes whose `wg0` services declare each other, with their
/// sessions; the association is installed on both.
fn consenting_pair(lab: &mut Lab) -> (Creds, Creds, usize, usize, AssocId) {
    let alpha = lab.enroll("alpha", true);
    let beta = lab.enroll("beta", true);
    let a = lab.session(&alpha, "alpha", &["beta"]);
    let b = lab.session(&beta, "beta", &["alpha"]);
    let at_a = installed(&lab.clients[a].inbox);
    assert_eq!(at_a.len(), 1, "{:?}", lab.clients[a].inbox);
    assert_eq!(at_a, installed(&lab.clients[b].inbox));
    let assoc = at_a[0].0;
    (alpha, beta, a, b, assoc)
}

fn list(lab: &mut Lab) -> Vec<msg::AssocInfo> {
    match lab.admin(AdminCommand::AssocList) {
        Ok(AdminReply::Assocs(list)) => list,
        other => panic!("{other:?}"),
    }
}

fn assoc_writes(log: &[Op]) -> usize {
    log.iter()
        .filter(|op| matches!(op, Op::AssocForm { .. } | Op::AssocKey { .. }))
        .count()
}

#[test]
fn a_restarted_coordinator_pushes_the_same_ids_and_keys() {
    let mut lab = Lab::new();
    let (alpha, beta, a, _, assoc) = consenting_pair(&mut lab);
    let before = installed(&lab.clients[a].inbox)[0];
    // The pair's record and its first key are in the log.
    assert_eq!(assoc_writes(&lab.log), 2, "{:?}", lab.log);
    lab.admin(AdminCommand::AssocCreate {
        a: PeerRef {
            node: Name::new("alpha").unwrap(),
            service: Name::new("wg0").unwrap(),
        },
        b: PeerRef {
            node: Name::new("beta").unwrap(),
            service: Name::new("wg0").unwrap(),
        },
    })
    .unwrap();
    let written = lab.log.len();

    lab.restart();
    let a = lab.session(&alpha, "alpha", &["beta"]);
    let b = lab.session(&beta, "beta", &["alpha"]);
    assert_eq!(installed(&lab.clients[a].inbox), [before]);
    assert_eq!(installed(&lab.clients[b].inbox), [before]);
    assert_eq!(epochs(&lab.clients[a].inbox), [1]);
    assert_eq!(lab.log.len(), written, "nothing new is written");
    let listed = list(&mut lab);
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].assoc, listed[0].state, listed[0].origin),
        (assoc, AssocState::Installed, msg::AssocOrigin::Admin),
        "creating a consented pair made it an admin association, same id"
    );
}

#[test]
fn an_admin_rekey_pushes_a_new_epoch_to_both_ends_under_the_same_id() {
    let mut lab = Lab::new();
    let (_, _, a, b, assoc) = consenting_pair(&mut lab);
    let (_, first) = installed(&lab.clients[a].inbox)[0];
    assert_eq!(
        lab.admin(AdminCommand::AssocRekey { assoc }),
        Ok(AdminReply::Done)
    );
    let at_a = installed(&lab.clients[a].inbox);
    let at_b = installed(&lab.clients[b].inbox);
    assert_eq!(at_a.len(), 2);
    assert_eq!(at_a, at_b);
    assert_eq!(at_a[1].0, assoc);
    assert_ne!(at_a[1].1, first, "a fresh key");
    assert_eq!(epochs(&lab.clients[a].inbox), [1, 2]);
    assert_eq!(epochs(&lab.clients[b].inbox), [1, 2]);
    assert!(!lab.clients[a]
        .inbox
        .iter()
        .any(|m| matches!(m, Message::AssociationWithdrawn { .. })));
    assert_eq!(lab.coordinator.counters().assoc_rekeys, 1);
    assert_eq!(list(&mut lab)[0].epoch, 2);
    // The new epoch survives a restart.
    let key = at_a[1];
    let mut replayed = Registry::new();
    for op in &lab.log {
        replayed.apply(op).unwrap();
    }
    let record = replayed.assoc(assoc).unwrap();
    assert_eq!(
        record.key.map(|k| (k.epoch, k.key.0)),
        Some((2, key.1)),
        "the log holds the new key"
    );
    let err = lab
        .admin(AdminCommand::AssocRekey {
            assoc: AssocId(404),
        })
        .unwrap_err();
    assert_eq!(err.code, RejectCode::UnknownAssociation);
}

#[test]
fn keys_are_replaced_after_their_lifetime_while_both_ends_are_online() {
    let mut lab = Lab::new();
    lab.coordinator.set_assoc_key_lifetime(120);
    let (_, _, a, b, assoc) = consenting_pair(&mut lab);
    lab.run(Duration::from_secs(100));
    assert_eq!(epochs(&lab.clients[a].inbox), [1]);
    // Both ends refresh their tokens, as live nodes do.
    lab.send(a, Message::TokenRequest);
    lab.send(b, Message::TokenRequest);
    lab.run(Duration::from_secs(25));
    assert_eq!(epochs(&lab.clients[a].inbox), [1, 2]);
    assert_eq!(epochs(&lab.clients[b].inbox), [1, 2]);
    assert_eq!(installed(&lab.clients[a].inbox)[1].0, assoc);
    lab.run(Duration::from_secs(120));
    assert_eq!(epochs(&lab.clients[b].inbox), [1, 2, 3]);
    assert_eq!(lab.coordinator.counters().assoc_rekeys, 2);
}

#[test]
fn an_overdue_key_waits_for_both_ends_and_is_replaced_when_the_second_returns() {
    let mut lab = Lab::new();
    lab.coordinator.set_assoc_key_lifetime(60);
    let (alpha, _, a, b, _) = consenting_pair(&mut lab);
    // Alpha goes away before the key is due.
    let conn = lab.clients[a].conn.unwrap();
    let now = lab.now;
    lab.clients[a].quic.close(now, conn, 0, b"bye").unwrap();
    lab.run(Duration::from_secs(90));
    assert_eq!(
        epochs(&lab.clients[b].inbox),
        [1],
        "no rekey with one end away"
    );
    let back = lab.session(&alpha, "alpha", &["beta"]);
    lab.run(Duration::from_secs(1));
    assert_eq!(epochs(&lab.clients[back].inbox), [1, 2]);
    assert_eq!(epochs(&lab.clients[b].inbox), [1, 2]);
}

#[test]
fn a_deleted_consent_association_stays_deleted_until_allowed() {
    let mut lab = Lab::new();
    let (alpha, beta, a, b, assoc) = consenting_pair(&mut lab);
    let (_, first) = installed(&lab.clients[a].inbox)[0];
    assert_eq!(
        lab.admin(AdminCommand::AssocDelete { assoc }),
        Ok(AdminReply::Done)
    );
    let withdrawn = Message::AssociationWithdrawn {
        assoc,
        reason: WithdrawReason::Deleted,
    };
    assert!(lab.clients[a].inbox.contains(&withdrawn));
    assert!(lab.clients[b].inbox.contains(&withdrawn));
    // Both ends still declare each other: nothing comes back, not even
    // after they re-register or the coordinator restarts.
    let a = lab.session(&alpha, "alpha", &["beta"]);
    assert!(installed(&lab.clients[a].inbox).is_empty());
    lab.restart();
    let a = lab.session(&alpha, "alpha", &["beta"]);
    let b = lab.session(&beta, "beta", &["alpha"]);
    assert!(installed(&lab.clients[a].inbox).is_empty());
    assert!(installed(&lab.clients[b].inbox).is_empty());
    let listed = list(&mut lab);
    assert_eq!(
        (listed[0].assoc, listed[0].state, listed[0].up),
        (assoc, AssocState::Deleted, false)
    );
    assert_eq!(
        lab.admin(AdminCommand::AssocDelete { assoc })
            .unwrap_err()
            .code,
        RejectCode::Conflict
    );
    // Allowed again: the same id under a fresh key, on both ends.
    assert_eq!(
        lab.admin(AdminCommand::AssocAllow { assoc }),
        Ok(AdminReply::Done)
    );
    let at_a = installed(&lab.clients[a].inbox);
    assert_eq!(at_a.len(), 1);
    assert_eq!(at_a, installed(&lab.clients[b].inbox));
    assert_eq!(at_a[0].0, assoc);
    assert_ne!(at_a[0].1, first);
    assert_eq!(epochs(&lab.clients[a].inbox), [2]);
    assert_eq!(
        lab.admin(AdminCommand::AssocAllow { assoc })
            .unwrap_err()
            .code,
        RejectCode::Conflict
    );
}

#[test]
fn creating_a_deleted_pair_allows_it_again_as_an_admin_association() {
    let mut lab = Lab::new();
    let (_, _, a, _, assoc) = consenting_pair(&mut lab);
    lab.admin(AdminCommand::AssocDelete { assoc }).unwrap();
    let wg0 = |node: &str| PeerRef {
        node: Name::new(node).unwrap(),
        service: Name::new("wg0").unwrap(),
    };
    let created = lab.admin(AdminCommand::AssocCreate {
        a: wg0("beta"),
        b: wg0("alpha"),
    });
    assert_eq!(created, Ok(AdminReply::Created { assoc }));
    assert_eq!(epochs(&lab.clients[a].inbox), [1, 2]);
    let listed = list(&mut lab);
    assert_eq!(
        (listed[0].state, listed[0].origin),
        (AssocState::Installed, msg::AssocOrigin::Admin)
    );
    // Deleting it again keeps it deleted though both ends consent.
    lab.admin(AdminCommand::AssocDelete { assoc }).unwrap();
    assert_eq!(list(&mut lab)[0].state, AssocState::Deleted);
}

#[test]
fn a_key_withdrawn_by_a_removed_service_is_not_pushed_again_after_a_restart() {
    let mut lab = Lab::new();
    let (alpha, beta, a, _, assoc) = consenting_pair(&mut lab);
    let first = installed(&lab.clients[a].inbox)[0];
    // Alpha stops declaring beta: the association is withdrawn.
    lab.send(
        a,
        Message::RegisterServices {
            services: vec![ServiceDecl {
                name: Name::new("wg0").unwrap(),
                peers: Vec::new(),
            }],
        },
    );
    assert!(
        lab.clients[a].inbox.iter().any(|m| matches!(
            m,
            Message::AssociationWithdrawn {
                reason: WithdrawReason::ServiceRemoved,
                ..
            }
        )),
        "{:?}",
        lab.clients[a].inbox
    );
    // The coordinator restarts before the pair comes back.
    lab.restart();
    let a = lab.session(&alpha, "alpha", &["beta"]);
    let b = lab.session(&beta, "beta", &["alpha"]);
    let again = installed(&lab.clients[a].inbox);
    assert_eq!(again, installed(&lab.clients[b].inbox));
    assert_eq!(again.len(), 1, "{:?}", lab.clients[a].inbox);
    assert_eq!(again[0].0, assoc, "the same id");
    assert_ne!(again[0].1, first.1, "never the withdrawn key");
    assert_eq!(epochs(&lab.clients[a].inbox), [2]);
}
