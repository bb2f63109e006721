//! Mallory: sends the relay everything it should refuse, in turn, and
//! counts what comes back.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use transitloom_proto_core::machine::{Input, Output, StateMachine, Transmit};
use transitloom_proto_core::relay::BIND_LEN;
use transitloom_proto_core::time::WallClock;
use transitloom_proto_core::wire::{
    classify, AuthKey, Classified, ControlBody, ControlRepr, MAGIC,
};
use transitloom_proto_core::SocketId;

use super::endpoint::payload;

/// Mallory's payload tag.
pub(crate) const MALLORY: u8 = b'M';

/// What Mallory sends and where.
#[derive(Debug, Clone)]
pub(crate) struct AttackerConfig {
    pub local: SocketAddr,
    /// The port of the allocation Mallory has no key for.
    pub target: SocketAddr,
    pub target_allocation: u64,
    /// Mallory's own allocation (it holds the key) and its port; it is
    /// released during the run and Mallory keeps binding to it.
    pub own: SocketAddr,
    pub own_allocation: u64,
    pub own_key: [u8; 32],
    pub wall: WallClock,
    pub from: Instant,
    pub every: Duration,
    /// The target allocation's key, used only to tell what comes back
    /// (Mallory never tags anything with it).
    pub check_key: [u8; 32],
}

/// What came back to Mallory, for the invariants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Returns {
    /// Datagrams and bytes from the target allocation's port.
    pub from_target: (u64, u64),
    /// Of those, anything but an answer to a bind Mallory sent, naming
    /// Mallory's own address (a cookie worthless without the key).
    pub not_cookies: u64,
    /// Datagrams and bytes from Mallory's own allocation's port.
    pub from_own: (u64, u64),
    /// Datagrams larger than any request Mallory sent.
    pub oversized: u64,
}

/// The attacker machine.
#[derive(Debug)]
pub(crate) struct Attacker {
    config: AttackerConfig,
    socket: SocketId,
    next: Instant,
    step: u64,
    outputs: VecDeque<Output<()>>,
    /// A bind of one of the legitimate endpoints, as captured on the wire.
    pub captured: Option<Bytes>,
    /// Bytes sent to the target allocation and to Mallory's own.
    pub sent: (u64, u64),
    /// The largest datagram sent.
    pub largest: usize,
    pub returns: Returns,
    /// When something last came from Mallory's own allocation's port.
    pub last_from_own: Option<Instant>,
}

impl Attacker {
    pub(crate) fn new(config: AttackerConfig) -> Self {
        let socket = SocketId(1);
        Self {
            outputs: VecDeque::from([Output::BindSocket {
                socket,
                local: config.local,
            }]),
            socket,
            next: config.from,
            step: 0,
            captured: None,
            sent: (0, 0),
            largest: 0,
            returns: Returns::default(),
            last_from_own: None,
            config,
        }
    }

    fn bind(&self, now: Instant, key: [u8; 32], allocation: u64, leg: u8) -> Bytes {
        ControlRepr {
            txid: self.step,
            timestamp_us: self.config.wall.unix_us(now),
            body: ControlBody::RelayBind {
                allocation,
                leg,
                cookie: self.step,
            },
        }
        .to_bytes(&AuthKey::new(&key))
    }

    /// The next abuse, in turn.
    fn abuse(&mut self, now: Instant) -> (SocketAddr, Bytes) {
        let c = &self.config;
        let leg = (self.step / 8 % 2) as u8;
        match self.step % 8 {
            // Unsolicited data, some of it starting with the magic.
            0 | 1 => (c.target, payload(MALLORY, self.step)),
            // A bind under a key Mallory guessed.
            2 => (
                c.target,
                self.bind(now, [self.step as u8; 32], c.target_allocation, leg),
            ),
            // A captured bind of a real endpoint, from Mallory's address.
            3 => (
                c.target,
                self.captured
                    .clone()
                    .unwrap_or_else(|| payload(MALLORY, self.step)),
            ),
            // Bind-sized junk behind the magic.
            4 => {
                let mut junk = vec![self.step as u8; BIND_LEN];
                junk[..MAGIC.len()].copy_from_slice(&MAGIC);
                (c.target, Bytes::from(junk))
            }
            // Mallory's own allocation, authentic until it is released.
            5 => (c.own, self.bind(now, c.own_key, c.own_allocation, 0)),
            // The same key, naming its own allocation at the target's port.
            6 => (c.target, self.bind(now, c.own_key, c.own_allocation, leg)),
            // Data into its own allocation: it has no second leg.
            _ => (c.own, payload(MALLORY, self.step)),
        }
    }
}

impl StateMachine for Attacker {
    type Event = ();

    fn handle_input(&mut self, now: Instant, input: Input<'_>) {
        if let Input::Datagram(d) = input {
            let len = d.payload.len() as u64;
            if d.src == self.config.target {
                self.returns.from_target.0 += 1;
                self.returns.from_target.1 += len;
                let own_cookie = matches!(
                    classify(d.payload, &AuthKey::new(&self.config.check_key)),
                    Classified::Control(ControlRepr {
                        body: ControlBody::RelayBindAck { observed, .. },
                        ..
                    }) if observed.0 == self.config.local
                );
                if !own_cookie {
                    self.returns.not_cookies += 1;
                }
            } else if d.src == self.config.own {
                self.returns.from_own.0 += 1;
                self.returns.from_own.1 += len;
                self.last_from_own = Some(now);
            }
            if d.payload.len() > self.largest {
                self.returns.oversized += 1;
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        while self.next <= now {
            let (dst, payload) = self.abuse(now);
            self.step += 1;
            self.next += self.config.every;
            self.largest = self.largest.max(payload.len());
            if dst == self.config.target {
                self.sent.0 += payload.len() as u64;
            } else {
                self.sent.1 += payload.len() as u64;
            }
            self.outputs.push_back(Output::Transmit(Transmit {
                socket: self.socket,
                dst,
                payload,
            }));
        }
    }

    fn poll_output(&mut self) -> Option<Output<()>> {
        self.outputs.pop_front()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Some(self.next)
    }
}
