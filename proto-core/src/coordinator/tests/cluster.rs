//! Three coordinators of one root replicating one log over their own
//! mutual-TLS QUIC sessions, in virtual time, with scripted admins and
//! nodes: a write made at any of them takes effect at all of them; one
//! cut off from the others holds its writes as pending proposals.

use std::collections::BTreeSet;

use super::*;
use crate::coordinator::machine::{AppliedLog, ClusterConfig, ClusterPeer};
use crate::coordinator::registry::Admission;
use crate::coordinator::replica::{
    HardState, LogEntry, Replica, ReplicaConfig, Restored, Role, DEFAULT_TICK,
};

const NAMES: [&str; 3] = ["hub", "hub2", "hub3"];

/// A coordinator's (intermediate, its key, server certificate, its key).
type CoordinatorCreds = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);

struct Member {
    coordinator: Coordinator,
    listen: SocketAddr,
    hard_state: HardState,
    stored: Vec<LogEntry>,
}

struct ClusterLab {
    now: Instant,
    pki: Pki,
    creds: Vec<CoordinatorCreds>,
    members: Vec<Member>,
    clients: Vec<Client>,
    in_flight: BTreeMap<(Instant, u64), (SocketAddr, SocketAddr, Bytes)>,
    seq: u64,
    /// Coordinators whose traffic with the other coordinators is dropped.
    cut: BTreeSet<usize>,
}

impl ClusterLab {
    fn new() -> Self {
        let now = crate::test_epoch();
        let pki = Pki::new();
        let (root_key, _) = key(1);
        let mut creds = vec![(
            pki.intermediate.clone(),
            pki.intermediate_key.clone(),
            pki.server.clone(),
            pki.server_key.clone(),
        )];
        for (i, name) in NAMES.iter().enumerate().skip(1) {
            let seed = 10 + 2 * i as u8;
            let (inter_key, inter_pub) = key(seed);
            let inter = pki::sign_coordinator_intermediate(
                &pki.root,
                &root_key,
                &inter_pub,
                &terms(name, seed),
            )
            .unwrap();
            let (server_key, server_pub) = key(seed + 1);
            let server = pki::sign_coordinator_server(
                &inter,
                &inter_key,
                &server_pub,
                &terms(name, seed + 1),
            )
            .unwrap();
            creds.push((inter, inter_key, server, server_key));
        }
        let mut lab = Self {
            now,
            pki,
            creds,
            members: Vec::new(),
            clients: Vec::new(),
            in_flight: BTreeMap::new(),
            seq: 0,
            cut: BTreeSet::new(),
        };
        for i in 0..NAMES.len() {
            let member = lab.start(i, Restored::default());
            lab.members.push(member);
        }
        lab.step();
        lab
    }

    fn listen(i: usize) -> SocketAddr {
        format!("192.0.2.{}:7443", i + 1).parse().unwrap()
    }

    fn start(&self, i: usize, restored: Restored) -> Member {
        let (inter, inter_key, server, server_key) = &self.creds[i];
        let chain = identity(&[server, inter], server_key);
        let tls = server_config(&self.pki.root(), chain, ClientAuth::Optional).unwrap();
        let client_tls = client_config(
            &self.pki.root(),
            Some(identity(&[server, inter], server_key)),
        )
        .unwrap();
        // Its own tokens only, as the daemon starts: the peers' it learns.
        let mut verifier = TokenVerifier::new();
        verifier.trust(NAMES[i], pki::ed25519_public_key(inter).unwrap());
        let config = CoordinatorConfig {
            name: NAMES[i].to_owned(),
            listen: Self::listen(i),
            tls,
            intermediate_der: inter.clone(),
            intermediate_key: inter_key.clone(),
            verifier,
            token_lifetime_s: 600,
            wall_clock: WallClock::new(self.now, UNIX_NOW * 1_000_000),
            timing: QuicTiming::default(),
            handshake_limit: HandshakeLimit::default(),
        };
        let id = i as u64 + 1;
        let hard_state = restored.hard_state;
        let stored = restored.entries.clone();
        let committed: Vec<LogEntry> = stored
            .iter()
            .filter(|e| e.index <= hard_state.commit)
            .cloned()
            .collect();
        let applied = AppliedLog::replay(&committed);
        let replica = Replica::new(
            &ReplicaConfig {
                id,
                voters: vec![1, 2, 3],
                tick: DEFAULT_TICK,
            },
            Restored {
                applied: hard_state.commit,
                ..restored
            },
            Drbg::from_u64(500 + id),
            self.now,
        )
        .unwrap();
        let mut coordinator =
            Coordinator::new(config, applied.registry.clone(), Drbg::from_u64(900 + id)).unwrap();
        let peers = (0..NAMES.len())
            .filter(|&j| j != i)
            .map(|j| ClusterPeer {
                id: j as u64 + 1,
                name: NAMES[j].to_owned(),
                addr: Self::listen(j),
            })
            .collect();
        coordinator.join_cluster(
            ClusterConfig {
                id,
                peers,
                client_tls,
            },
            replica,
            &applied,
            self.now,
        );
        Member {
            coordinator,
            listen: Self::listen(i),
            hard_state,
            stored,
        }
    }

    fn step(&mut self) {
        for i in 0..self.members.len() {
            let m = &mut self.members[i];
            while let Some(output) = m.coordinator.poll_output() {
                match output {
                    Output::BindSocket { socket, local } => m
                        .coordinator
                        .handle_input(self.now, Input::SocketBound { socket, local }),
                    Output::Transmit(t) => {
                        self.seq += 1;
                        self.in_flight
                            .insert((self.now + DELAY, self.seq), (t.dst, m.listen, t.payload));
                    }
                    Output::Event(CoordinatorEvent::Persist {
                        hard_state,
                        entries,
                    }) => {
                        if let Some(hs) = hard_state {
                            m.hard_state = hs;
                        }
                        if let Some(first) = entries.first() {
                            m.stored.retain(|e| e.index < first.index);
                            m.stored.extend(entries);
                        }
                        m.coordinator.persisted(self.now);
                    }
                    Output::Event(CoordinatorEvent::Append(op)) => {
                        panic!("a coordinator of a cluster appended alone: {op:?}")
                    }
                    _ => {}
                }
            }
        }
        for client in &mut self.clients {
            client.drain_events();
            while let Some(t) = client.quic.poll_transmit(self.now) {
                self.seq += 1;
                self.in_flight.insert(
                    (self.now + DELAY, self.seq),
                    (t.dst, client.addr, t.payload),
                );
            }
        }
    }

    fn member_at(&self, addr: SocketAddr) -> Option<usize> {
        self.members.iter().position(|m| m.listen == addr)
    }

    fn run(&mut self, duration: Duration) {
        let until = self.now + duration;
        loop {
            self.step();
            let packet = self.in_flight.keys().next().map(|k| k.0);
            let timers = self
                .clients
                .iter()
                .filter_map(|c| c.quic.poll_timeout())
                .chain(
                    self.members
                        .iter()
                        .filter_map(|m| m.coordinator.poll_timeout()),
                )
                .min();
            let Some(next) = [packet, timers]
                .into_iter()
                .flatten()
                .min()
                .filter(|&t| t <= until)
            else {
                break;
            };
            self.now = next;
            if packet == Some(next) {
                let (_, (dst, src, payload)) = self.in_flight.pop_first().unwrap();
                let (from, to) = (self.member_at(src), self.member_at(dst));
                if let (Some(a), Some(b)) = (from, to) {
                    if self.cut.contains(&a) || self.cut.contains(&b) {
                        continue;
                    }
                }
                if let Some(i) = to {
                    let d = crate::machine::Datagram {
                        socket: CONTROL_SOCKET,
                        src,
                        payload: &payload,
                    };
                    self.members[i]
                        .coordinator
                        .handle_input(next, Input::Datagram(d));
                } else if let Some(c) = self.clients.iter_mut().find(|c| c.addr == dst) {
                    c.quic.handle_datagram(next, dst, src, &payload);
                }
            } else {
                for m in &mut self.members {
                    m.coordinator.handle_timeout(next);
                }
                for c in &mut self.clients {
                    c.quic.handle_timeout(next);
                }
            }
        }
        self.now = until;
    }

    fn connect(&mut self, at: usize, identity: Option<TlsIdentity>) -> usize {
        let n = self.clients.len();
        let addr: SocketAddr = format!("198.51.100.{}:5000", n + 10).parse().unwrap();
        let mut client = Client::new(addr, 2_000 + n as u64, self.now);
        let config = client_config(&self.pki.root(), identity).unwrap();
        client.conn = Some(
            client
                .quic
                .connect(self.now, Self::listen(at), NAMES[at], config)
                .unwrap(),
        );
        self.clients.push(client);
        self.run(Duration::from_millis(100));
        n
    }

    fn send(&mut self, client: usize, message: Message) {
        let now = self.now;
        self.clients[client].send(now, &message);
    }

    /// Runs until client `c` has a message, for at most `limit`.
    fn wait(&mut self, c: usize, limit: Duration) -> Option<Message> {
        let until = self.now + limit;
        while self.now < until {
            self.run(Duration::from_millis(50));
            if !self.clients[c].inbox.is_empty() {
                return Some(self.clients[c].inbox.remove(0));
            }
        }
        None
    }

    /// Sends an admin command at coordinator `at`; returns the session.
    fn admin_at(&mut self, at: usize, command: AdminCommand) -> usize {
        let admin = identity(&[&self.pki.admin], &self.pki.admin_key);
        let c = self.connect(at, Some(admin));
        self.send(
            c,
            Message::AdminRequest {
                request_id: 1,
                command,
            },
        );
        c
    }

    fn admin_reply(&mut self, c: usize) -> Option<Result<AdminReply, msg::AdminError>> {
        match self.wait(c, Duration::from_secs(10))? {
            Message::AdminResponse { result, .. } => Some(result),
            other => panic!("not an admin response: {other:?}"),
        }
    }

    fn leader(&self) -> Option<usize> {
        (0..self.members.len()).find(|&i| {
            !self.cut.contains(&i)
                && self.members[i]
                    .coordinator
                    .cluster_status()
                    .is_some_and(|s| s.replica.role == Role::Leader)
        })
    }

    fn admission(&self, at: usize, node: &str) -> Option<Admission> {
        self.members[at]
            .coordinator
            .registry()
            .node(node)
            .map(|n| n.admission)
    }

    /// Invites `name` at coordinator `invite_at` and enrolls it at
    /// `enroll_at`.
    fn enroll(&mut self, name: &str, invite_at: usize, enroll_at: usize) -> Creds {
        let c = self.admin_at(
            invite_at,
            AdminCommand::Invite {
                node: Name::new(name).unwrap(),
                admit: true,
                ttl_s: 3_600,
            },
        );
        let Some(Ok(AdminReply::Invited { join_token })) = self.admin_reply(c) else {
            panic!("no invitation")
        };
        let (node_key, _) = key(50 + name.len() as u8 + name.as_bytes()[0]);
        let csr = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&pki::ed25519_key_pair(&node_key).unwrap())
            .unwrap();
        let c = self.connect(enroll_at, None);
        self.send(
            c,
            Message::Enroll {
                join_token,
                csr_der: Bytes::from(csr.der().to_vec()),
            },
        );
        let Some(Message::Enrolled { chain_der, .. }) = self.wait(c, Duration::from_secs(5)) else {
            panic!("not enrolled")
        };
        Creds {
            chain: chain_der.iter().map(|b| b.to_vec()).collect(),
            key: node_key,
        }
    }

    /// A node session at coordinator `at`: token, hello.
    fn session(&mut self, at: usize, creds: &Creds, name: &str) -> usize {
        let c = self.connect(at, Some(creds.tls()));
        self.send(c, Message::TokenRequest);
        let Some(Message::TokenGrant { token, .. }) = self.wait(c, Duration::from_secs(2)) else {
            panic!("no token")
        };
        self.send(
            c,
            Message::Hello {
                node: Name::new(name).unwrap(),
                token,
                advertise_private: false,
            },
        );
        assert!(matches!(
            self.wait(c, Duration::from_secs(2)),
            Some(Message::Welcome { .. })
        ));
        c
    }
}

#[test]
fn three_coordinators_elect_a_leader_over_their_own_sessions() {
    let mut lab = ClusterLab::new();
    lab.run(Duration::from_secs(4));
    let leader = lab.leader().expect("a leader");
    for m in &lab.members {
        let status = m.coordinator.cluster_status().unwrap();
        assert!(status.peers.iter().all(|(_, up)| *up), "{status:?}");
        assert_eq!(status.replica.leader, leader as u64 + 1);
    }
}

#[test]
fn a_node_invited_at_one_coordinator_enrolls_at_another_and_is_known_to_all() {
    let mut lab = ClusterLab::new();
    lab.run(Duration::from_secs(4));
    let creds = lab.enroll("alpha", 1, 2);
    for i in 0..3 {
        assert_eq!(
            lab.admission(i, "alpha"),
            Some(Admission::Admitted),
            "at {i}"
        );
    }
    lab.session(0, &creds, "alpha");
    // A token granted by one coordinator is good at the others: they
    // learnt its intermediate from the session they dialled to it.
    let c = lab.connect(0, Some(creds.tls()));
    lab.send(c, Message::TokenRequest);
    let Some(Message::TokenGrant { token, .. }) = lab.wait(c, Duration::from_secs(2)) else {
        panic!("no token")
    };
    for at in [1, 2] {
        let c = lab.connect(at, Some(creds.tls()));
        lab.send(
            c,
            Message::Hello {
                node: Name::new("alpha").unwrap(),
                token: token.clone(),
                advertise_private: false,
            },
        );
        let answer = lab.wait(c, Duration::from_secs(2));
        assert!(
            matches!(answer, Some(Message::Welcome { .. })),
            "at {at}: {answer:?}"
        );
    }
}

#[test]
fn a_revoke_written_at_one_coordinator_ends_the_session_held_at_another() {
    let mut lab = ClusterLab::new();
    lab.run(Duration::from_secs(4));
    let creds = lab.enroll("alpha", 0, 0);
    let s = lab.session(2, &creds, "alpha");
    let c = lab.admin_at(
        1,
        AdminCommand::Revoke {
            node: Name::new("alpha").unwrap(),
        },
    );
    assert!(matches!(lab.admin_reply(c), Some(Ok(AdminReply::Done))));
    lab.run(Duration::from_millis(500));
    assert!(lab.clients[s]
        .inbox
        .iter()
        .any(|m| matches!(m, Message::Revoked { .. })));
    assert!(
        lab.clients[s].closed,
        "the session at the third coordinator ended"
    );
    for i in 0..3 {
        assert_eq!(
            lab.admission(i, "alpha"),
            Some(Admission::Revoked),
            "at {i}"
        );
    }
}

#[test]
fn a_coordinator_cut_off_holds_its_writes_as_pending_until_it_is_back() {
    let mut lab = ClusterLab::new();
    lab.run(Duration::from_secs(4));
    lab.enroll("alpha", 0, 0);
    let lonely = lab.leader().unwrap();
    lab.cut.insert(lonely);
    let c = lab.admin_at(
        lonely,
        AdminCommand::Revoke {
            node: Name::new("alpha").unwrap(),
        },
    );
    // Not committed within NO_MAJORITY_AFTER: the admin is told so, and
    // the write stays pending.
    match lab.admin_reply(c) {
        Some(Err(e)) => assert_eq!(e.code, RejectCode::NoMajority, "{e:?}"),
        other => panic!("no pending answer: {other:?}"),
    }
    let status = lab.members[lonely].coordinator.cluster_status().unwrap();
    assert_eq!(status.pending, 1);
    assert_ne!(status.replica.role, Role::Leader);
    for i in 0..3 {
        assert_eq!(
            lab.admission(i, "alpha"),
            Some(Admission::Admitted),
            "nothing acts on a pending write (at {i})"
        );
    }
    // The others go on without it.
    let c2 = lab.admin_at(
        (lonely + 1) % 3,
        AdminCommand::Invite {
            node: Name::new("beta").unwrap(),
            admit: false,
            ttl_s: 600,
        },
    );
    assert!(matches!(
        lab.admin_reply(c2),
        Some(Ok(AdminReply::Invited { .. }))
    ));
    // Back: it catches up, proposes its write again, and it commits once
    // (the admin was answered already and is not answered again).
    lab.cut.clear();
    lab.run(Duration::from_secs(10));
    assert!(
        lab.clients[c].inbox.is_empty(),
        "{:?}",
        lab.clients[c].inbox
    );
    let commit = |lab: &ClusterLab, i: usize| {
        let status = lab.members[i].coordinator.cluster_status().unwrap();
        assert_eq!(status.pending, 0, "at {i}");
        status.replica.commit
    };
    for i in 0..3 {
        assert_eq!(
            lab.admission(i, "alpha"),
            Some(Admission::Revoked),
            "at {i}"
        );
        // The majority's write (the invitation) is in its log too.
        assert_eq!(commit(&lab, i), commit(&lab, lonely), "at {i}");
    }
}

#[test]
fn a_restarted_coordinator_replays_its_log_and_catches_up() {
    let mut lab = ClusterLab::new();
    lab.run(Duration::from_secs(4));
    lab.enroll("alpha", 0, 1);
    let victim = (lab.leader().unwrap() + 1) % 3;
    let (hard_state, entries) = {
        let m = &lab.members[victim];
        (m.hard_state, m.stored.clone())
    };
    lab.cut.insert(victim);
    let c = lab.admin_at(
        (victim + 1) % 3,
        AdminCommand::Revoke {
            node: Name::new("alpha").unwrap(),
        },
    );
    assert!(matches!(lab.admin_reply(c), Some(Ok(AdminReply::Done))));
    // Restart from what it had on disk, then let it back in.
    let member = lab.start(
        victim,
        Restored {
            hard_state,
            entries,
            applied: 0,
        },
    );
    lab.members[victim] = member;
    assert_eq!(
        lab.admission(victim, "alpha"),
        Some(Admission::Admitted),
        "the replayed log"
    );
    lab.cut.clear();
    lab.run(Duration::from_secs(8));
    assert_eq!(lab.admission(victim, "alpha"), Some(Admission::Revoked));
}

#[test]
fn one_join_token_used_at_two_coordinators_at_once_enrolls_one_node() {
    let mut lab = ClusterLab::new();
    lab.run(Duration::from_secs(4));
    let c = lab.admin_at(
        0,
        AdminCommand::Invite {
            node: Name::new("alpha").unwrap(),
            admit: true,
            ttl_s: 3_600,
        },
    );
    let Some(Ok(AdminReply::Invited { join_token })) = lab.admin_reply(c) else {
        panic!("no invitation")
    };
    // Two keys race with the same token, at two coordinators: each checks
    // it against its own registry, both propose, one commits first.
    let mut sessions = Vec::new();
    for (at, seed) in [(1, 71u8), (2, 72u8)] {
        let (node_key, _) = key(seed);
        let csr = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&pki::ed25519_key_pair(&node_key).unwrap())
            .unwrap();
        let s = lab.connect(at, None);
        sessions.push((s, Bytes::from(csr.der().to_vec())));
    }
    for (s, csr_der) in &sessions {
        lab.send(
            *s,
            Message::Enroll {
                join_token: join_token.clone(),
                csr_der: csr_der.clone(),
            },
        );
    }
    lab.run(Duration::from_secs(3));
    let answers: Vec<&Message> = sessions
        .iter()
        .flat_map(|(s, _)| lab.clients[*s].inbox.first())
        .collect();
    let enrolled = answers
        .iter()
        .filter(|m| matches!(m, Message::Enrolled { .. }))
        .count();
    let refused = answers
        .iter()
        .filter(|m| {
            matches!(
                m,
                Message::Reject {
                    code: RejectCode::JoinTokenUsed,
                    ..
                }
            )
        })
        .count();
    assert_eq!((enrolled, refused), (1, 1), "{answers:?}");
    for m in &lab.members {
        let status = m.coordinator.cluster_status().unwrap();
        assert_eq!(status.pending, 0);
    }
    let skipped: u64 = lab
        .members
        .iter()
        .map(|m| m.coordinator.cluster_status().unwrap().counters.skipped)
        .sum();
    assert_eq!(
        skipped, 3,
        "every coordinator skipped the second enrollment"
    );
}

/// Restarts member `i` from what it has on disk.
fn restart(lab: &mut ClusterLab, i: usize) {
    let (hard_state, entries) = {
        let m = &lab.members[i];
        (m.hard_state, m.stored.clone())
    };
    let member = lab.start(
        i,
        Restored {
            hard_state,
            entries,
            applied: 0,
        },
    );
    lab.members[i] = member;
}

#[test]
fn operations_logged_alone_are_imported_once_even_across_a_restart() {
    let mut lab = ClusterLab::new();
    lab.run(Duration::from_secs(4));
    let ops = [
        Op::Invite {
            node: "zed".to_owned(),
            digest: [7; 32],
            expires_unix_s: UNIX_NOW + 3_600,
            admit: true,
        },
        Op::Enroll {
            node: "zed".to_owned(),
            fingerprint: [8; 32],
            at_unix_s: UNIX_NOW,
        },
    ];
    // Cut off, the first coordinator proposes its old log; it is
    // restarted before any of it commits, and proposes it again.
    lab.cut.insert(0);
    let now = lab.now;
    for (seq, op) in ops.iter().enumerate() {
        assert!(lab.members[0]
            .coordinator
            .import(now, seq as u64 + 1, op.clone()));
    }
    lab.run(Duration::from_secs(1));
    restart(&mut lab, 0);
    let now = lab.now;
    for (seq, op) in ops.iter().enumerate() {
        assert!(
            lab.members[0]
                .coordinator
                .import(now, seq as u64 + 1, op.clone()),
            "not in the log yet: proposed again"
        );
    }
    lab.cut.clear();
    lab.run(Duration::from_secs(10));
    let applied: Vec<u64> = (0..3)
        .map(|i| lab.members[i].coordinator.registry().applied())
        .collect();
    for i in 0..3 {
        assert_eq!(lab.admission(i, "zed"), Some(Admission::Admitted), "at {i}");
        assert_eq!(applied[i], applied[0], "at {i}");
    }
    // Restarted once more, it finds both in the log and proposes nothing.
    restart(&mut lab, 0);
    let now = lab.now;
    for (seq, op) in ops.iter().enumerate() {
        assert!(!lab.members[0]
            .coordinator
            .import(now, seq as u64 + 1, op.clone()));
    }
    lab.run(Duration::from_secs(3));
    assert_eq!(lab.members[1].coordinator.registry().applied(), applied[1]);
}
