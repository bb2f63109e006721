//! Replicas in virtual time, with messages delivered at once between the
//! ones that are not cut off.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

struct Member {
    replica: Replica,
    /// What the driver made durable.
    hard_state: HardState,
    stored: Vec<LogEntry>,
    /// Committed entries with data, in order.
    applied: Vec<Bytes>,
    applied_index: u64,
}

struct Cluster {
    members: BTreeMap<u64, Member>,
    cut: BTreeSet<u64>,
    now: Instant,
    seed: u64,
    /// Every message and commit, for the determinism check.
    trace: Vec<String>,
}

impl Cluster {
    fn new(n: u64, seed: u64) -> Self {
        let now = crate::test_epoch();
        let mut cluster = Self {
            members: BTreeMap::new(),
            cut: BTreeSet::new(),
            now,
            seed,
            trace: Vec::new(),
        };
        for id in 1..=n {
            cluster.start(id, n, Restored::default());
        }
        cluster
    }

    fn start(&mut self, id: u64, n: u64, restored: Restored) {
        let config = ReplicaConfig {
            id,
            voters: (1..=n).collect(),
            tick: DEFAULT_TICK,
        };
        let hard_state = restored.hard_state;
        let stored = restored.entries.clone();
        let applied_index = restored.applied;
        let replica = Replica::new(
            &config,
            restored,
            Drbg::from_u64(self.seed * 100 + id),
            self.now,
        )
        .unwrap();
        self.members.insert(
            id,
            Member {
                replica,
                hard_state,
                stored,
                applied: Vec::new(),
                applied_index,
            },
        );
    }

    /// Drains every replica's outputs until none has any, delivering
    /// messages between replicas that are not cut off.
    fn settle(&mut self) {
        loop {
            let mut mail = Vec::new();
            let ids: Vec<u64> = self.members.keys().copied().collect();
            for id in ids {
                let member = self.members.get_mut(&id).unwrap();
                while let Some(out) = member.replica.poll_output() {
                    match out {
                        ReplicaOutput::Send(m) => mail.push(m),
                        ReplicaOutput::Persist {
                            hard_state,
                            entries,
                        } => {
                            if let Some(hs) = hard_state {
                                member.hard_state = hs;
                            }
                            if let Some(first) = entries.first() {
                                member.stored.retain(|e| e.index < first.index);
                                member.stored.extend(entries);
                            }
                            member.replica.persisted();
                        }
                        ReplicaOutput::Commit(e) => {
                            assert_eq!(e.index, member.applied_index + 1, "commits in order");
                            member.applied_index = e.index;
                            self.trace.push(format!("{id} commit {}", e.index));
                            if !e.data.is_empty() {
                                member.applied.push(e.data);
                            }
                        }
                    }
                }
            }
            if mail.is_empty() {
                return;
            }
            for m in mail {
                self.trace.push(format!("{}->{} {}", m.from, m.to, m.kind));
                if self.cut.contains(&m.from) || self.cut.contains(&m.to) {
                    continue;
                }
                if let Some(member) = self.members.get_mut(&m.to) {
                    member.replica.step(&m);
                }
            }
        }
    }

    /// Advances virtual time in ticks for `ms` milliseconds.
    fn run(&mut self, ms: u64) {
        let end = self.now + Duration::from_millis(ms);
        while self.now < end {
            self.now += DEFAULT_TICK;
            for member in self.members.values_mut() {
                member.replica.handle_timeout(self.now);
            }
            self.settle();
        }
    }

    fn leader(&self) -> Option<u64> {
        let leaders: Vec<u64> = self
            .members
            .values()
            .filter(|m| m.replica.status().role == Role::Leader)
            .filter(|m| !self.cut.contains(&m.replica.status().id))
            .map(|m| m.replica.status().id)
            .collect();
        assert!(
            leaders.len() <= 1,
            "two leaders among the connected: {leaders:?}"
        );
        leaders.first().copied()
    }

    fn propose(&mut self, at: u64, data: &'static [u8]) -> bool {
        let context = Bytes::copy_from_slice(&at.to_be_bytes());
        let sent = self
            .members
            .get_mut(&at)
            .unwrap()
            .replica
            .propose(context, Bytes::from_static(data));
        self.settle();
        sent
    }

    fn applied(&self, id: u64) -> Vec<&[u8]> {
        self.members[&id].applied.iter().map(|b| &b[..]).collect()
    }
}

#[test]
fn three_replicas_elect_one_leader_and_commit_everywhere_in_order() {
    let mut c = Cluster::new(3, 1);
    c.run(3_000);
    let leader = c.leader().expect("a leader within 3 s");
    assert!(c.propose(leader, b"one"));
    let follower = (1..=3).find(|&id| id != leader).unwrap();
    // A follower forwards its proposal to the leader.
    assert!(c.propose(follower, b"two"));
    c.run(500);
    for id in 1..=3 {
        assert_eq!(c.applied(id), vec![&b"one"[..], b"two"], "replica {id}");
    }
}

#[test]
fn a_replica_cut_off_commits_nothing_and_catches_up_when_back() {
    let mut c = Cluster::new(3, 2);
    c.run(3_000);
    let leader = c.leader().unwrap();
    // Cut the leader off: its proposal stays uncommitted; the other two
    // elect a leader of their own and commit theirs.
    c.cut.insert(leader);
    c.propose(leader, b"minority");
    c.run(5_000);
    let new_leader = c.leader().expect("the majority elects a leader");
    assert_ne!(new_leader, leader);
    assert!(c.propose(new_leader, b"majority"));
    c.run(500);
    assert!(
        c.applied(leader).is_empty(),
        "the cut-off replica applied nothing"
    );
    assert_ne!(
        c.members[&leader].replica.status().role,
        Role::Leader,
        "a leader without its majority steps down"
    );
    // Back: it takes the majority's log; its own proposal was never
    // committed anywhere, and it proposes again.
    c.cut.clear();
    c.run(3_000);
    assert_eq!(c.applied(leader), vec![&b"majority"[..]]);
    assert!(c.propose(leader, b"minority"));
    c.run(500);
    for id in 1..=3 {
        assert_eq!(
            c.applied(id),
            vec![&b"majority"[..], b"minority"],
            "replica {id}"
        );
    }
}

#[test]
fn with_no_leader_a_proposal_is_refused_at_once() {
    let mut c = Cluster::new(3, 3);
    c.cut.extend([1, 2, 3]);
    c.run(3_000);
    assert!(!c.propose(1, b"alone"));
    assert!(c.applied(1).is_empty());
}

#[test]
fn a_restarted_replica_keeps_its_log_and_does_not_apply_twice() {
    let mut c = Cluster::new(3, 4);
    c.run(3_000);
    let leader = c.leader().unwrap();
    c.propose(leader, b"a");
    c.propose(leader, b"b");
    c.run(500);
    let victim = (1..=3).find(|&id| id != leader).unwrap();
    let m = c.members.remove(&victim).unwrap();
    let restored = Restored {
        hard_state: m.hard_state,
        entries: m.stored.clone(),
        applied: m.applied_index,
    };
    assert_eq!(m.applied.len(), 2);
    c.start(victim, 3, restored);
    c.propose(leader, b"c");
    c.run(1_000);
    // Only what came after the restart is applied again.
    assert_eq!(c.applied(victim), vec![&b"c"[..]]);
    assert_eq!(
        c.members[&victim]
            .stored
            .iter()
            .filter(|e| !e.data.is_empty())
            .count(),
        3
    );
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let run = |seed| {
        let mut c = Cluster::new(3, seed);
        c.run(3_000);
        let leader = c.leader().unwrap();
        c.propose(leader, b"x");
        c.cut.insert(leader);
        c.run(4_000);
        c.cut.clear();
        c.run(2_000);
        c.trace
    };
    assert_eq!(run(7), run(7));
}

#[test]
fn messages_from_strangers_or_for_others_are_dropped() {
    let mut c = Cluster::new(3, 5);
    c.run(3_000);
    let r = &mut c.members.get_mut(&1).unwrap().replica;
    let before = r.status();
    for m in [
        // From a replica outside the cluster.
        RaftMessage {
            kind: 8,
            to: 1,
            from: 9,
            term: before.term + 5,
            ..RaftMessage::default()
        },
        // For another replica.
        RaftMessage {
            kind: 8,
            to: 2,
            from: 3,
            term: before.term + 5,
            ..RaftMessage::default()
        },
        // A local-only kind (hup).
        RaftMessage {
            kind: 0,
            to: 1,
            from: 2,
            ..RaftMessage::default()
        },
        // TimeoutNow: an election past the pre-vote, never asked for.
        RaftMessage {
            kind: 14,
            to: 1,
            from: 2,
            term: before.term,
            ..RaftMessage::default()
        },
    ] {
        r.step(&m);
    }
    assert_eq!(r.refused(), 4);
    assert_eq!(r.status().term, before.term);
}

/// Many seeds of random cuts and proposals: every replica's applied
/// sequence is a prefix of the longest one (nothing committed is ever
/// lost or reordered), and once all are connected they converge.
#[test]
fn random_partitions_never_fork_the_log() {
    const DATA: [&[u8]; 4] = [b"p0", b"p1", b"p2", b"p3"];
    for seed in 0..40 {
        let mut c = Cluster::new(3, 1_000 + seed);
        let mut rng = Drbg::from_u64(seed);
        for _ in 0..30 {
            c.cut.clear();
            if rng.next_u64().is_multiple_of(2) {
                c.cut.insert(1 + rng.next_u64() % 3);
            }
            let at = 1 + rng.next_u64() % 3;
            c.propose(at, DATA[(rng.next_u64() % 4) as usize]);
            c.run(100 * (1 + rng.next_u64() % 20));
            let longest = (1..=3)
                .map(|id| c.applied(id))
                .max_by_key(Vec::len)
                .unwrap();
            for id in 1..=3 {
                let mine = c.applied(id);
                assert_eq!(
                    mine[..],
                    longest[..mine.len()],
                    "seed {seed}: replica {id} forked"
                );
            }
        }
        c.cut.clear();
        c.run(4_000);
        let last = c.applied(1);
        for id in 2..=3 {
            assert_eq!(
                c.applied(id),
                last,
                "seed {seed}: replica {id} did not converge"
            );
        }
    }
}
