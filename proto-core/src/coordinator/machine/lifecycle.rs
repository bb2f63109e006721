//! The coordinator's own association writes and what follows them: a pair
//! that both ends consent to gets a record (its id, for good), and every
//! association gets a fresh key per epoch — when it is first installed,
//! when it comes back after a withdrawal (a revoke, a lapse, a removed
//! service, an admin delete), when an admin asks, and when its key has been
//! used for the key lifetime. Ids and keys live in the operation log, so a
//! restarted coordinator pushes exactly what the nodes already hold.
//!
//! Keys are written to the log rather than derived from a coordinator
//! secret: the log is the state every coordinator replays (and will
//! replicate, DESIGN §4), so any of them pushes the same key, and keys do
//! not change when a coordinator's own keys are rotated.

use std::time::Instant;

use super::super::assoc::{Ends, Need};
use super::super::registry::{AssocSecret, Op, Origin};
use super::{now_unix_s, Coordinator, Waiting};
use crate::control::msg::{AssocInfo, AssocOrigin, AssocState, Name, PeerRef};
use crate::id::AssocId;

impl Coordinator {
    /// Appends the writes a reconciliation found missing, each at most
    /// once while it waits for its commit.
    pub(super) fn write_needs(&mut self, now: Instant, needs: Vec<Need>) {
        for need in needs {
            match need {
                Need::Form(ends) => {
                    if !self.form_pending(&ends) {
                        let op = Op::AssocForm {
                            a: ends.0,
                            b: ends.1,
                        };
                        self.append_own(now, op);
                    }
                }
                Need::Key(id) => {
                    if !self.key_pending(id) {
                        self.write_key(now, id);
                    }
                }
            }
        }
    }

    /// Appends a fresh key for `id`'s next epoch.
    pub(super) fn write_key(&mut self, now: Instant, id: AssocId) {
        if let Some(op) = self.next_key(now, id) {
            self.append_own(now, op);
        }
    }

    /// A fresh key for the epoch after the newest one written or waiting.
    pub(super) fn next_key(&mut self, now: Instant, id: AssocId) -> Option<Op> {
        let record = self.registry.assoc(id)?;
        let waiting = self
            .waiting
            .iter()
            .filter_map(|w| match &w.op {
                Op::AssocKey { assoc, epoch, .. } if *assoc == id => Some(*epoch),
                _ => None,
            })
            .max();
        let epoch = waiting.map_or(record.next_epoch(), |e| e.saturating_add(1));
        Some(Op::AssocKey {
            assoc: id,
            epoch,
            key: AssocSecret(self.drbg.key()),
            at_unix_s: now_unix_s(&self.config.wall_clock, now),
        })
    }

    /// Appends a write of the coordinator's own, checked against every
    /// write still waiting (an admin's may have changed the pair): a write
    /// that would not apply is never logged, since the log must replay.
    fn append_own(&mut self, now: Instant, op: Op) {
        let unix = now_unix_s(&self.config.wall_clock, now);
        match self.check_after_pending(&op, unix) {
            Ok(()) => self.append(now, op, Waiting::Own),
            Err(err) => tracing::debug!(?op, %err, "association write skipped"),
        }
    }

    fn form_pending(&self, ends: &Ends) -> bool {
        self.waiting.iter().any(|w| match &w.op {
            Op::AssocForm { a, b } => (a, b) == (&ends.0, &ends.1),
            _ => false,
        })
    }

    fn key_pending(&self, id: AssocId) -> bool {
        self.waiting
            .iter()
            .any(|w| matches!(&w.op, Op::AssocKey { assoc, .. } if *assoc == id))
    }

    /// A key was committed: a live association's ends get it now (the
    /// epoch changes under the same id; they keep their paths), one that
    /// waited for it is installed.
    pub(super) fn key_committed(&mut self, now: Instant, id: AssocId) {
        let Some(record) = self.registry.assoc(id) else {
            return;
        };
        let Some(key) = record.key else {
            return;
        };
        let (a, b) = (record.a.node.clone(), record.b.node.clone());
        if self.assocs.rekeyed(id, key.epoch, key.key.0, key.at_unix_s) {
            self.counters.assoc_rekeys += 1;
            tracing::info!(assoc = %id, epoch = key.epoch, "association key replaced");
            if let Some(ends) = self.assocs.ends_of(id).cloned() {
                self.push_install(now, &ends);
            }
        } else {
            self.reconcile_node(now, &a);
            self.reconcile_node(now, &b);
        }
    }

    /// Keys used for the key lifetime are replaced, when both ends are
    /// online to take the new one together; otherwise when the second of
    /// them says hello (see [`Coordinator::reschedule_keys_of`]).
    pub(super) fn rekey_due(&mut self, now: Instant) {
        let unix = now_unix_s(&self.config.wall_clock, now);
        for id in self.assocs.take_due(unix) {
            let Some(ends) = self.assocs.ends_of(id) else {
                continue;
            };
            let both =
                self.online.contains_key(&ends.0.node) && self.online.contains_key(&ends.1.node);
            if both && !self.key_pending(id) {
                tracing::debug!(assoc = %id, "association key lifetime reached");
                self.write_key(now, id);
            }
        }
    }

    /// `node` said hello: its associations go back on the rekey schedule
    /// (one whose key is overdue is replaced at the next timeout, if the
    /// other end is online too).
    pub(super) fn reschedule_keys_of(&mut self, node: &str) {
        let ids: Vec<AssocId> = self.assocs.of_node(node).map(|(_, l)| l.id).collect();
        for id in ids {
            self.assocs.reschedule(id);
        }
    }

    /// When the next key is due (wall clock).
    pub(super) fn next_rekey_unix_s(&self) -> Option<u64> {
        self.assocs.next_rekey()
    }

    /// Every association the registry knows, as `tlctl assoc list` shows
    /// them: installed, waiting or deleted.
    pub fn association_list(&self) -> Vec<AssocInfo> {
        let peer = |r: &super::ServiceRef| {
            Some(PeerRef {
                node: Name::new(&r.node).ok()?,
                service: Name::new(&r.service).ok()?,
            })
        };
        self.registry
            .assocs()
            .filter_map(|r| {
                let live = self.assocs.ends_of(r.id).is_some();
                let state = if live {
                    AssocState::Installed
                } else if r.deleted {
                    AssocState::Deleted
                } else {
                    AssocState::Waiting
                };
                Some(AssocInfo {
                    assoc: r.id,
                    a: peer(&r.a)?,
                    b: peer(&r.b)?,
                    epoch: r.key.map_or(0, |k| k.epoch),
                    origin: match r.origin {
                        Origin::Admin => AssocOrigin::Admin,
                        Origin::MutualConsent => AssocOrigin::MutualConsent,
                    },
                    state,
                    up: live
                        && self.online.contains_key(&r.a.node)
                        && self.online.contains_key(&r.b.node),
                })
            })
            .collect()
    }

    /// Sets how long an association key is used before it is replaced,
    /// clamped to [`MIN_ASSOC_KEY_LIFETIME_S`](super::MIN_ASSOC_KEY_LIFETIME_S)
    /// ..= [`MAX_ASSOC_KEY_LIFETIME_S`](super::MAX_ASSOC_KEY_LIFETIME_S);
    /// [`DEFAULT_ASSOC_KEY_LIFETIME_S`](super::DEFAULT_ASSOC_KEY_LIFETIME_S)
    /// until set.
    pub fn set_assoc_key_lifetime(&mut self, lifetime_s: u64) {
        self.assocs.set_key_lifetime(lifetime_s.clamp(
            super::MIN_ASSOC_KEY_LIFETIME_S,
            super::MAX_ASSOC_KEY_LIFETIME_S,
        ));
    }

    /// How long an association key is used before it is replaced.
    pub fn assoc_key_lifetime_s(&self) -> u64 {
        self.assocs.key_lifetime_s()
    }
}
