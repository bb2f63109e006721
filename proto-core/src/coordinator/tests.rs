//! The coordinator in virtual time with scripted QUIC clients: enrollment,
//! admission, tokens, mutual-consent associations, admin commands and hard
//! revocation, through real mutual-TLS sessions.

#![allow(clippy::disallowed_methods)] // rcgen key and CSR helpers, tests only

mod cluster;
mod enrollment;
mod lifecycle;
mod renewal;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::*;
use crate::control::msg::{
    self, AdminCommand, AdminReply, FrameDecoder, Message, Name, PeerRef, RejectCode, ServiceDecl,
};
use crate::control::quic::{ConnId, QuicConfig, QuicEndpoint, QuicEvent, QuicTiming};
use crate::control::tls_config::{client_config, server_config, ClientAuth, TlsIdentity};
use crate::control::token::TokenVerifier;
use crate::coordinator::machine::CONTROL_SOCKET;
use crate::coordinator::registry::{Op, Registry};
use crate::coordinator::HandshakeLimit;
use crate::csprng::Drbg;
use crate::id::AssocId;
use crate::machine::{Input, Output, StateMachine};
use crate::pki::{self, CertTerms, Ed25519PublicKey};
use crate::time::WallClock;

const UNIX_NOW: u64 = 1_760_000_000;
const DELAY: Duration = Duration::from_millis(5);
const COORDINATOR: &str = "hub";

fn key(seed: u8) -> (Vec<u8>, Ed25519PublicKey) {
    let pkcs8 = pki::ed25519_pkcs8_from_seed(&[seed; 32]);
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).unwrap();
    let mut public = [0u8; 32];
    public.copy_from_slice(ring::signature::KeyPair::public_key(&pair).as_ref());
    (pkcs8, Ed25519PublicKey(public))
}

fn terms(name: &str, serial: u8) -> CertTerms<'_> {
    CertTerms {
        name,
        not_before_unix_s: (UNIX_NOW - 3_600) as i64,
        validity_days: 30,
        serial: [serial; 16],
    }
}

struct Pki {
    root: Vec<u8>,
    intermediate: Vec<u8>,
    intermediate_key: Vec<u8>,
    server: Vec<u8>,
    server_key: Vec<u8>,
    admin: Vec<u8>,
    admin_key: Vec<u8>,
}

impl Pki {
    fn new() -> Self {
        let (root_key, root_pub) = key(1);
        let root = pki::self_signed_root(&root_key, &{
            let _ = root_pub;
            terms("transitloom root", 1)
        })
        .unwrap();
        let (intermediate_key, inter_pub) = key(2);
        let intermediate = pki::sign_coordinator_intermediate(
            &root,
            &root_key,
            &inter_pub,
            &terms(COORDINATOR, 2),
        )
        .unwrap();
        let (server_key, server_pub) = key(3);
        let server = pki::sign_coordinator_server(
            &intermediate,
            &intermediate_key,
            &server_pub,
            &terms(COORDINATOR, 3),
        )
        .unwrap();
        let (admin_key, admin_pub) = key(4);
        let admin = pki::sign_admin(&root, &root_key, &admin_pub, &terms("ops", 4)).unwrap();
        Self {
            root,
            intermediate,
            intermediate_key,
            server,
            server_key,
            admin,
            admin_key,
        }
    }

    fn root(&self) -> CertificateDer<'static> {
        CertificateDer::from(self.root.clone())
    }
}

fn identity(chain: &[&[u8]], key: &[u8]) -> TlsIdentity {
    TlsIdentity {
        chain: chain
            .iter()
            .map(|c| CertificateDer::from(c.to_vec()))
            .collect(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec())),
    }
}

/// A node's key and certificate chain, as it keeps them.
struct Creds {
    chain: Vec<Vec<u8>>,
    key: Vec<u8>,
}

impl Creds {
    fn tls(&self) -> TlsIdentity {
        let chain: Vec<&[u8]> = self.chain.iter().map(Vec::as_slice).collect();
        identity(&chain, &self.key)
    }
}

/// A scripted QUIC client.
struct Client {
    quic: QuicEndpoint,
    addr: SocketAddr,
    conn: Option<ConnId>,
    decoder: FrameDecoder,
    inbox: Vec<Message>,
    closed: bool,
}

impl Client {
    fn new(addr: SocketAddr, seed: u64, now: Instant) -> Self {
        let quic = QuicEndpoint::new(
            QuicConfig {
                wall_clock: WallClock::new(now, UNIX_NOW * 1_000_000),
                server: None,
                timing: QuicTiming::default(),
            },
            Drbg::from_u64(seed),
        )
        .unwrap();
        Self {
            quic,
            addr,
            conn: None,
            decoder: FrameDecoder::new(),
            inbox: Vec::new(),
            closed: false,
        }
    }

    fn send(&mut self, now: Instant, message: &Message) {
        let mut buf = BytesMut::new();
        msg::encode(message, &mut buf).unwrap();
        self.quic
            .send(now, self.conn.expect("connected"), &buf)
            .unwrap();
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.quic.poll_event() {
            match event {
                QuicEvent::Received { bytes, .. } => {
                    self.decoder.push(&bytes);
                    while let Ok(Some(m)) = self.decoder.next() {
                        self.inbox.push(m);
                    }
                }
                QuicEvent::Closed { .. } => self.closed = true,
                QuicEvent::Connected { .. } => {}
            }
        }
    }
}

struct Lab {
    now: Instant,
    pki: Pki,
    config: CoordinatorConfig,
    coordinator: Coordinator,
    listen: SocketAddr,
    clients: Vec<Client>,
    log: Vec<Op>,
    events: Vec<CoordinatorEvent>,
    in_flight: BTreeMap<(Instant, u64), (SocketAddr, SocketAddr, Bytes)>,
    seq: u64,
    /// Appends not yet made durable, when commits are held back.
    held: Option<usize>,
}

impl Lab {
    fn new() -> Self {
        let now = crate::test_epoch();
        let pki = Pki::new();
        let tls = server_config(
            &pki.root(),
            identity(&[&pki.server, &pki.intermediate], &pki.server_key),
            ClientAuth::Optional,
        )
        .unwrap();
        let mut verifier = TokenVerifier::new();
        verifier.trust(
            COORDINATOR,
            pki::ed25519_public_key(&pki.intermediate).unwrap(),
        );
        let listen: SocketAddr = "192.0.2.1:7443".parse().unwrap();
        let config = CoordinatorConfig {
            name: COORDINATOR.to_owned(),
            listen,
            tls,
            intermediate_der: pki.intermediate.clone(),
            intermediate_key: pki.intermediate_key.clone(),
            verifier,
            token_lifetime_s: 600,
            wall_clock: WallClock::new(now, UNIX_NOW * 1_000_000),
            timing: QuicTiming::default(),
            handshake_limit: HandshakeLimit::default(),
        };
        let coordinator =
            Coordinator::new(config.clone(), Registry::new(), Drbg::from_u64(99)).unwrap();
        let mut lab = Self {
            now,
            pki,
            config,
            coordinator,
            listen,
            clients: Vec::new(),
            log: Vec::new(),
            events: Vec::new(),
            in_flight: BTreeMap::new(),
            seq: 0,
            held: None,
        };
        lab.step_coordinator();
        lab
    }

    /// Stops the coordinator and starts a new one from the replayed log
    /// (with other randomness); every session is gone.
    fn restart(&mut self) {
        let mut registry = Registry::new();
        for op in &self.log {
            registry.apply(op).unwrap();
        }
        let lifetime = self.coordinator.assoc_key_lifetime_s();
        self.coordinator =
            Coordinator::new(self.config.clone(), registry, Drbg::from_u64(7)).unwrap();
        self.coordinator.set_assoc_key_lifetime(lifetime);
        self.in_flight.clear();
        for client in &mut self.clients {
            client.closed = true;
        }
        self.step_coordinator();
    }

    fn step_coordinator(&mut self) {
        while let Some(output) = self.coordinator.poll_output() {
            match output {
                Output::BindSocket { socket, local } => self
                    .coordinator
                    .handle_input(self.now, Input::SocketBound { socket, local }),
                Output::Transmit(t) => {
                    self.seq += 1;
                    self.in_flight.insert(
                        (self.now + DELAY, self.seq),
                        (t.dst, self.listen, t.payload),
                    );
                }
                Output::Event(CoordinatorEvent::Append(op)) => {
                    // The store is durable at once here, unless held back.
                    self.log.push(op);
                    match &mut self.held {
                        Some(n) => *n += 1,
                        None => self.coordinator.committed(self.now),
                    }
                }
                Output::Event(e) => self.events.push(e),
                _ => {}
            }
        }
    }

    fn step_clients(&mut self) {
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

    fn run(&mut self, duration: Duration) {
        let until = self.now + duration;
        loop {
            self.step_coordinator();
            self.step_clients();
            let packet = self.in_flight.keys().next().map(|k| k.0);
            let timers = self
                .clients
                .iter()
                .filter_map(|c| c.quic.poll_timeout())
                .chain(self.coordinator.poll_timeout())
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
                if dst == self.listen {
                    let d = crate::machine::Datagram {
                        socket: CONTROL_SOCKET,
                        src,
                        payload: &payload,
                    };
                    self.coordinator.handle_input(next, Input::Datagram(d));
                } else if let Some(c) = self.clients.iter_mut().find(|c| c.addr == dst) {
                    c.quic.handle_datagram(next, dst, src, &payload);
                }
            } else {
                self.coordinator.handle_timeout(next);
                for c in &mut self.clients {
                    c.quic.handle_timeout(next);
                }
            }
        }
        self.now = until;
    }

    /// A client connected with `identity` (none: enrollment session).
    fn connect(&mut self, identity: Option<TlsIdentity>) -> usize {
        let n = self.clients.len();
        let addr: SocketAddr = format!("198.51.100.{}:5000", n + 10).parse().unwrap();
        let mut client = Client::new(addr, 1_000 + n as u64, self.now);
        let config = client_config(&self.pki.root(), identity).unwrap();
        client.conn = Some(
            client
                .quic
                .connect(self.now, self.listen, COORDINATOR, config)
                .unwrap(),
        );
        self.clients.push(client);
        self.run(Duration::from_millis(100));
        n
    }

    fn send(&mut self, client: usize, message: Message) {
        let now = self.now;
        self.clients[client].send(now, &message);
        self.run(Duration::from_millis(100));
    }

    fn admin(&mut self, command: AdminCommand) -> Result<AdminReply, msg::AdminError> {
        let admin = identity(&[&self.pki.admin], &self.pki.admin_key);
        let c = self.connect(Some(admin));
        self.send(
            c,
            Message::AdminRequest {
                request_id: 1,
                command,
            },
        );
        match self.clients[c].inbox.pop() {
            Some(Message::AdminResponse { result, .. }) => result,
            other => panic!("no admin response: {other:?}"),
        }
    }

    /// Invites, enrolls with a fresh key and CSR, and returns the node's credentials.
    fn enroll(&mut self, name: &str, admit: bool) -> Creds {
        let reply = self
            .admin(AdminCommand::Invite {
                node: Name::new(name).unwrap(),
                admit,
                ttl_s: 3_600,
            })
            .unwrap();
        let AdminReply::Invited { join_token } = reply else {
            panic!("{reply:?}")
        };
        let (node_key, _) = key(50 + name.len() as u8 + name.as_bytes()[0]);
        let csr = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&pki::ed25519_key_pair(&node_key).unwrap())
            .unwrap();
        let c = self.connect(None);
        self.send(
            c,
            Message::Enroll {
                join_token,
                csr_der: Bytes::from(csr.der().to_vec()),
            },
        );
        let Some(Message::Enrolled { chain_der, .. }) = self.clients[c].inbox.pop() else {
            panic!("not enrolled: {:?}", self.clients[c].inbox)
        };
        Creds {
            chain: chain_der.iter().map(|b| b.to_vec()).collect(),
            key: node_key,
        }
    }

    /// Opens a node session: token, hello, services.
    fn session(&mut self, creds: &Creds, name: &str, peers: &[&str]) -> usize {
        let c = self.connect(Some(creds.tls()));
        self.send(c, Message::TokenRequest);
        let token = match self.clients[c].inbox.pop() {
            Some(Message::TokenGrant { token, .. }) => token,
            other => {
                return {
                    self.clients[c].inbox.extend(other);
                    c
                }
            }
        };
        self.send(
            c,
            Message::Hello {
                node: Name::new(name).unwrap(),
                token,
                advertise_private: false,
            },
        );
        let services = vec![ServiceDecl {
            name: Name::new("wg0").unwrap(),
            peers: peers
                .iter()
                .map(|p| PeerRef {
                    node: Name::new(p).unwrap(),
                    service: Name::new("wg0").unwrap(),
                })
                .collect(),
        }];
        self.send(c, Message::RegisterServices { services });
        c
    }
}

fn installed(inbox: &[Message]) -> Vec<(AssocId, [u8; 32])> {
    inbox
        .iter()
        .filter_map(|m| match m {
            Message::AssociationInstalled { assoc, key, .. } => Some((*assoc, *key)),
            _ => None,
        })
        .collect()
}

fn epochs(inbox: &[Message]) -> Vec<u32> {
    inbox
        .iter()
        .filter_map(|m| match m {
            Message::AssociationInstalled { epoch, .. } => Some(*epoch),
            _ => None,
        })
        .collect()
}

#[test]
fn enrollment_tokens_and_mutual_consent_install_one_association_on_both_ends() {
    let mut lab = Lab::new();
    let alpha = lab.enroll("alpha", true);
    let beta = lab.enroll("beta", true);
    let a = lab.session(&alpha, "alpha", &["beta"]);
    let b = lab.session(&beta, "beta", &["alpha"]);
    let at_a = installed(&lab.clients[a].inbox);
    let at_b = installed(&lab.clients[b].inbox);
    assert_eq!(at_a.len(), 1, "{:?}", lab.clients[a].inbox);
    assert_eq!(at_a, at_b, "same id and key on both ends");
    assert!(lab.clients[a]
        .inbox
        .iter()
        .any(|m| matches!(m, Message::Welcome { .. })));
    assert_eq!(
        lab.log
            .iter()
            .filter(|op| matches!(op, Op::Enroll { .. }))
            .count(),
        2
    );
    // Candidates are forwarded to the other end.
    let (assoc, _) = at_a[0];
    let candidate = msg::Candidate {
        addr: "203.0.113.9:40000".parse().unwrap(),
        kind: msg::CandidateKind::Host,
        uplink: Name::new("fiber").unwrap(),
    };
    lab.send(
        a,
        Message::Candidates {
            assoc,
            candidates: vec![candidate.clone()],
        },
    );
    assert!(lab.clients[b].inbox.contains(&Message::Candidates {
        assoc,
        candidates: vec![candidate]
    }));
}

/// The `Punch` times in a client's inbox for `assoc`.
fn punches(inbox: &[Message], assoc: AssocId) -> Vec<u64> {
    inbox
        .iter()
        .filter_map(|m| match m {
            Message::Punch {
                assoc: a,
                at_unix_ms,
            } if *a == assoc => Some(*at_unix_ms),
            _ => None,
        })
        .collect()
}

#[test]
fn both_ends_are_told_one_punch_time_once_both_reported_and_again_on_a_change() {
    let mut lab = Lab::new();
    let alpha = lab.enroll("alpha", true);
    let beta = lab.enroll("beta", true);
    let a = lab.session(&alpha, "alpha", &["beta"]);
    let b = lab.session(&beta, "beta", &["alpha"]);
    let (assoc, _) = installed(&lab.clients[a].inbox)[0];
    let candidate = |addr: &str| msg::Candidate {
        addr: addr.parse().unwrap(),
        kind: msg::CandidateKind::ServerReflexive,
        uplink: Name::new("fiber").unwrap(),
    };
    let report = |lab: &mut Lab, client: usize, addr: &str| {
        lab.send(
            client,
            Message::Candidates {
                assoc,
                candidates: vec![candidate(addr)],
            },
        );
    };
    report(&mut lab, a, "203.0.113.9:40000");
    assert!(
        punches(&lab.clients[a].inbox, assoc).is_empty(),
        "beta has not reported"
    );
    let before_unix_ms = lab.config.wall_clock.unix_us(lab.now) / 1_000;
    report(&mut lab, b, "198.51.100.7:40000");
    let (at_a, at_b) = (
        punches(&lab.clients[a].inbox, assoc),
        punches(&lab.clients[b].inbox, assoc),
    );
    assert_eq!(at_a.len(), 1);
    assert_eq!(at_a, at_b, "one moment for both ends");
    // Ahead of the report by the lead, plus the report's own way there
    // (within the 100 ms the lab runs after each send).
    let ahead = Duration::from_millis(at_a[0] - before_unix_ms);
    assert!(
        (PUNCH_LEAD_MIN..=PUNCH_LEAD_MAX + Duration::from_millis(100)).contains(&ahead),
        "{ahead:?} ahead"
    );
    // The same candidates again: no new punch; new ones: another.
    report(&mut lab, b, "198.51.100.7:40000");
    assert_eq!(punches(&lab.clients[b].inbox, assoc).len(), 1);
    report(&mut lab, b, "198.51.100.7:40001");
    assert_eq!(punches(&lab.clients[a].inbox, assoc).len(), 2);
    assert_eq!(punches(&lab.clients[b].inbox, assoc).len(), 2);
    assert_eq!(lab.coordinator.counters().punches, 2);
}

#[test]
fn a_one_sided_declaration_forms_nothing() {
    let mut lab = Lab::new();
    let alpha = lab.enroll("alpha", true);
    let beta = lab.enroll("beta", true);
    let a = lab.session(&alpha, "alpha", &["beta"]);
    let b = lab.session(&beta, "beta", &[]);
    assert!(installed(&lab.clients[a].inbox).is_empty());
    assert!(installed(&lab.clients[b].inbox).is_empty());
}

#[test]
fn a_pending_node_gets_no_token_until_admitted() {
    let mut lab = Lab::new();
    let gamma = lab.enroll("gamma", false);
    let c = lab.session(&gamma, "gamma", &[]);
    assert!(
        matches!(
            lab.clients[c].inbox.last(),
            Some(Message::Reject {
                code: RejectCode::Pending,
                ..
            })
        ),
        "{:?}",
        lab.clients[c].inbox
    );
    lab.admin(AdminCommand::Admit {
        node: Name::new("gamma").unwrap(),
    })
    .unwrap();
    let c = lab.session(&gamma, "gamma", &[]);
    assert!(lab.clients[c]
        .inbox
        .iter()
        .any(|m| matches!(m, Message::Welcome { .. })));
}

#[test]
fn a_join_token_works_once() {
    let mut lab = Lab::new();
    let reply = lab
        .admin(AdminCommand::Invite {
            node: Name::new("delta").unwrap(),
            admit: true,
            ttl_s: 60,
        })
        .unwrap();
    let AdminReply::Invited { join_token } = reply else {
        panic!()
    };
    let (node_key, _) = key(77);
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&pki::ed25519_key_pair(&node_key).unwrap())
        .unwrap();
    let csr = Bytes::from(csr.der().to_vec());
    let c = lab.connect(None);
    lab.send(
        c,
        Message::Enroll {
            join_token: join_token.clone(),
            csr_der: csr,
        },
    );
    assert!(matches!(
        lab.clients[c].inbox.last(),
        Some(Message::Enrolled { .. })
    ));
    // Someone else with the token. (The same key retrying gets its
    // certificate again: tests/enrollment.rs.)
    let (other_key, _) = key(78);
    let c = lab.connect(None);
    lab.send(
        c,
        Message::Enroll {
            join_token,
            csr_der: Bytes::from(pki::node_csr(&other_key).unwrap()),
        },
    );
    assert!(
        matches!(
            lab.clients[c].inbox.last(),
            Some(Message::Reject {
                code: RejectCode::JoinTokenUsed,
                ..
            })
        ),
        "{:?}",
        lab.clients[c].inbox
    );
}

#[test]
fn revoke_closes_the_session_withdraws_from_peers_and_refuses_reconnection() {
    let mut lab = Lab::new();
    let alpha = lab.enroll("alpha", true);
    let beta = lab.enroll("beta", true);
    let a = lab.session(&alpha, "alpha", &["beta"]);
    let b = lab.session(&beta, "beta", &["alpha"]);
    let (assoc, old_key) = installed(&lab.clients[b].inbox)[0];
    let before = lab.now;
    lab.admin(AdminCommand::Revoke {
        node: Name::new("alpha").unwrap(),
    })
    .unwrap();
    assert!(lab.now - before < Duration::from_secs(1));
    assert!(lab.clients[a]
        .inbox
        .iter()
        .any(|m| matches!(m, Message::Revoked { .. })));
    assert!(lab.clients[a].closed, "the revoked session is closed");
    assert!(lab.clients[b]
        .inbox
        .contains(&Message::AssociationWithdrawn {
            assoc,
            reason: msg::WithdrawReason::Revoked
        }));
    // A still-valid certificate does not bring it back.
    let again = lab.connect(Some(alpha.tls()));
    lab.send(again, Message::TokenRequest);
    assert!(matches!(
        lab.clients[again].inbox.last(),
        Some(Message::Reject {
            code: RejectCode::Revoked,
            ..
        })
    ));
    // Readmission is a fresh event: the association comes back under its
    // id with a new epoch and a fresh key, on both ends.
    lab.admin(AdminCommand::Readmit {
        node: Name::new("alpha").unwrap(),
    })
    .unwrap();
    let alpha_again = lab.session(&alpha, "alpha", &["beta"]);
    let fresh = installed(&lab.clients[alpha_again].inbox);
    assert_eq!(fresh.len(), 1);
    assert_eq!(fresh[0].0, assoc, "the pair keeps its id");
    assert_ne!(fresh[0].1, old_key, "a fresh key after readmission");
    assert_eq!(installed(&lab.clients[b].inbox).last(), Some(&fresh[0]));
    assert_eq!(epochs(&lab.clients[alpha_again].inbox), [2]);
}

#[test]
fn admin_lists_show_nodes_and_associations() {
    let mut lab = Lab::new();
    let alpha = lab.enroll("alpha", true);
    let beta = lab.enroll("beta", true);
    lab.session(&alpha, "alpha", &["beta"]);
    lab.session(&beta, "beta", &["alpha"]);
    let Ok(AdminReply::Nodes(nodes)) = lab.admin(AdminCommand::ListNodes) else {
        panic!()
    };
    assert_eq!(
        nodes
            .iter()
            .map(|n| (n.name.as_str().to_owned(), n.connected))
            .collect::<Vec<_>>(),
        [("alpha".to_owned(), true), ("beta".to_owned(), true)]
    );
    let Ok(AdminReply::Assocs(assocs)) = lab.admin(AdminCommand::AssocList) else {
        panic!()
    };
    assert_eq!(assocs.len(), 1);
    assert!(assocs[0].up);
    let err = lab
        .admin(AdminCommand::Admit {
            node: Name::new("nobody").unwrap(),
        })
        .unwrap_err();
    assert!(err.reason.contains("no node named"), "{err:?}");
    assert_eq!(err.code, RejectCode::UnknownNode);
}

#[test]
fn registry_refusals_reach_the_admin_with_their_own_code() {
    let mut lab = Lab::new();
    lab.enroll("alpha", true);
    lab.enroll("beta", true);
    let code = |lab: &mut Lab, command| lab.admin(command).unwrap_err().code;
    let alpha = || Name::new("alpha").unwrap();
    let wg0 = |node: &str| PeerRef {
        node: Name::new(node).unwrap(),
        service: Name::new("wg0").unwrap(),
    };
    assert_eq!(
        code(&mut lab, AdminCommand::Admit { node: alpha() }),
        RejectCode::WrongState
    );
    assert_eq!(
        code(&mut lab, AdminCommand::Readmit { node: alpha() }),
        RejectCode::WrongState
    );
    assert_eq!(
        code(
            &mut lab,
            AdminCommand::Invite {
                node: alpha(),
                admit: true,
                ttl_s: 60
            }
        ),
        RejectCode::Conflict
    );
    let created = lab.admin(AdminCommand::AssocCreate {
        a: wg0("alpha"),
        b: wg0("beta"),
    });
    let id = lab.coordinator.registry().assocs().next().unwrap().id;
    assert_eq!(created, Ok(AdminReply::Created { assoc: id }));
    assert_eq!(
        code(
            &mut lab,
            AdminCommand::AssocCreate {
                a: wg0("beta"),
                b: wg0("alpha")
            }
        ),
        RejectCode::Conflict
    );
    assert_eq!(
        code(&mut lab, AdminCommand::AssocDelete { assoc: AssocId(77) }),
        RejectCode::UnknownAssociation
    );
    let err = lab
        .admin(AdminCommand::AssocDelete { assoc: AssocId(77) })
        .unwrap_err();
    assert_eq!(err.reason, "no association assoc#77");
    // None of them reached the log.
    assert_eq!(lab.log.len(), 5);
}

#[test]
fn a_node_certificate_cannot_send_admin_commands() {
    let mut lab = Lab::new();
    let alpha = lab.enroll("alpha", true);
    let c = lab.connect(Some(alpha.tls()));
    lab.send(
        c,
        Message::AdminRequest {
            request_id: 1,
            command: AdminCommand::ListNodes,
        },
    );
    assert!(matches!(
        lab.clients[c].inbox.last(),
        Some(Message::Reject {
            code: RejectCode::Malformed,
            ..
        })
    ));
    assert!(lab.clients[c].closed);
}

#[test]
fn writes_waiting_for_their_commit_are_checked_against_each_other() {
    let mut lab = Lab::new();
    let alpha = lab.enroll("alpha", true);
    let _ = alpha;
    let admin = identity(&[&lab.pki.admin], &lab.pki.admin_key);
    let c = lab.connect(Some(admin));
    lab.held = Some(0);
    let now = lab.now;
    for request_id in [1, 2] {
        let revoke = AdminCommand::Revoke {
            node: Name::new("alpha").unwrap(),
        };
        lab.clients[c].send(
            now,
            &Message::AdminRequest {
                request_id,
                command: revoke,
            },
        );
    }
    lab.run(Duration::from_millis(100));
    assert_eq!(lab.held, Some(1), "only the first revoke was appended");
    lab.held = None;
    lab.coordinator.committed(lab.now);
    lab.run(Duration::from_millis(100));
    let replies: Vec<(u32, bool)> = lab.clients[c]
        .inbox
        .iter()
        .filter_map(|m| match m {
            Message::AdminResponse { request_id, result } => Some((*request_id, result.is_ok())),
            _ => None,
        })
        .collect();
    assert_eq!(replies, [(2, false), (1, true)]);
    // The log replays.
    let mut replayed = Registry::new();
    for op in &lab.log {
        replayed.apply(op).unwrap();
    }
}

#[test]
fn an_unrefreshed_token_lapses_admission_and_the_peer_is_told() {
    let mut lab = Lab::new();
    let alpha = lab.enroll("alpha", true);
    let beta = lab.enroll("beta", true);
    let a = lab.session(&alpha, "alpha", &["beta"]);
    let b = lab.session(&beta, "beta", &["alpha"]);
    let (assoc, old_key) = installed(&lab.clients[b].inbox)[0];
    // Beta refreshes at half-life; alpha, cut off, never does.
    lab.run(Duration::from_secs(300));
    lab.send(b, Message::TokenRequest);
    assert!(matches!(
        lab.clients[b].inbox.last(),
        Some(Message::TokenGrant { .. })
    ));
    lab.run(Duration::from_secs(290));
    let withdrawn = Message::AssociationWithdrawn {
        assoc,
        reason: msg::WithdrawReason::PeerGone,
    };
    assert!(
        !lab.clients[b].inbox.contains(&withdrawn),
        "withdrawn before alpha's token expired"
    );
    // Alpha's token (600 s) expires: its session ends, beta is told.
    lab.run(Duration::from_secs(15));
    assert!(lab.clients[b].inbox.contains(&withdrawn));
    assert!(lab.clients[a].inbox.iter().any(|m| matches!(
        m,
        Message::Reject {
            code: RejectCode::TokenExpired,
            ..
        }
    )));
    assert!(lab.clients[a].closed);
    assert!(!lab.clients[b].closed, "beta's refreshed session stays");
    assert_eq!(lab.coordinator.counters().lapsed, 1);
    // A fresh token restores alpha and the association re-forms.
    let before = installed(&lab.clients[b].inbox).len();
    let again = lab.session(&alpha, "alpha", &["beta"]);
    assert_eq!(installed(&lab.clients[again].inbox).len(), 1);
    let now_installed = installed(&lab.clients[b].inbox);
    assert_eq!(now_installed.len(), before + 1);
    // Same id; both ends dropped the old key, so it comes back under a fresh one.
    assert_eq!(now_installed.last().unwrap().0, assoc);
    assert_ne!(now_installed.last().unwrap().1, old_key);
}
