//! How `relay_receive` reads its input: records of an opcode byte and
//! arguments (sockets, sources, payloads), each turned into a step of the
//! harness. Missing bytes read as zero, so every input is valid.

use std::net::SocketAddr;
use std::time::Duration;

use super::{endpoint, v4, Rig, FOREIGN_KEY, KEYS, MAX_DATAGRAM, OWN_IP, SLOTS};
use crate::id::SocketId;
use crate::relay::BIND_LEN;
use crate::wire::{AddrRepr, ControlBody, MAGIC};

/// Reads the input; past its end every byte is zero.
pub(super) struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |v, _| (v << 8) | u64::from(self.byte()))
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let take = len.min(self.data.len());
        let (head, rest) = self.data.split_at(take);
        self.data = rest;
        head.to_vec()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

impl Rig {
    /// A source address the input picks.
    fn source(&self, r: &mut Reader<'_>) -> SocketAddr {
        let k = usize::from(r.byte()) % SLOTS;
        let port_of = |k: usize| self.slots[k].map_or(30_000, |l| l.local.port());
        match r.byte() % 8 {
            0 => endpoint(k, 0, false),
            1 => endpoint(k, 1, false),
            2 => endpoint(k, usize::from(r.byte() & 1), true),
            3 => v4([192, 0, 2, 66], 10_000 + u16::from(r.byte())),
            4 => self.slots[k].map_or(v4([192, 0, 2, 1], 30_000), |l| l.local),
            5 => v4(OWN_IP, port_of(k)),
            6 => v4([127, 0, 0, 1], port_of(k)),
            _ => v4([198, 18, r.byte(), r.byte()], r.u16()),
        }
    }

    fn payload(&mut self, r: &mut Reader<'_>, src: SocketAddr) -> Vec<u8> {
        match r.byte() % 8 {
            0 => {
                let len = usize::from(r.byte());
                r.bytes(len)
            }
            1 => {
                let len = usize::from(r.byte());
                let mut p = MAGIC.to_vec();
                p.extend(r.bytes(len));
                p
            }
            2 | 3 => {
                let kind = r.byte();
                let k = usize::from(r.byte()) % SLOTS;
                let key = match r.byte() % 4 {
                    3 => FOREIGN_KEY,
                    n => KEYS[usize::from(n)],
                };
                let allocation = match r.byte() % 3 {
                    0 => self.slots[k].map_or(k as u64, |l| l.id),
                    1 => (self.generation << 8) | k as u64,
                    _ => r.u64(),
                };
                let leg = r.byte() % 3;
                let skew_us = i64::from(r.byte() as i8) * 100_000;
                let txid = r.u64();
                let body = match kind % 4 {
                    n @ (0..=2) => {
                        // No cookie, the one the relay sent this source, one
                        // it sent another address (stolen), or any.
                        let cookie = match r.byte() % 4 {
                            0 => 0,
                            1 => self
                                .cookies
                                .get(&(allocation, leg, src))
                                .copied()
                                .unwrap_or(0),
                            2 => {
                                let other = endpoint(k, usize::from(leg & 1), false);
                                self.cookies
                                    .get(&(allocation, leg, other))
                                    .copied()
                                    .unwrap_or(0)
                            }
                            _ => r.u64(),
                        };
                        if n < 2 {
                            ControlBody::RelayBind {
                                allocation,
                                leg,
                                cookie,
                            }
                        } else {
                            ControlBody::RelayBindAck {
                                allocation,
                                leg,
                                cookie,
                                observed: AddrRepr(endpoint(k, usize::from(leg & 1), false)),
                            }
                        }
                    }
                    _ => ControlBody::Ping {
                        pad: 36 + (u16::from(r.byte()) % 4) * 100,
                        policy: 0,
                    },
                };
                self.control(body, key, skew_us, txid).to_vec()
            }
            4 => {
                let len = usize::from(r.u16()).min(MAX_DATAGRAM);
                let fill = r.byte();
                let mut p = vec![fill; len];
                if fill & 1 == 1 {
                    let n = MAGIC.len().min(len);
                    p[..n].copy_from_slice(&MAGIC[..n]);
                }
                p
            }
            5 => {
                let at = usize::from(r.byte());
                // Counted back from the newest, so a seed can name the
                // packet it just made.
                match self.crafted.len() {
                    0 => Vec::new(),
                    len => self.crafted[len - 1 - at % len].to_vec(),
                }
            }
            _ => {
                // Bind-sized junk behind the magic: a spoofed bind.
                let mut p = MAGIC.to_vec();
                p.extend(r.bytes(BIND_LEN - MAGIC.len()));
                p.resize(BIND_LEN, r.byte());
                p
            }
        }
    }

    fn socket(&self, r: &mut Reader<'_>) -> SocketId {
        let pick = r.byte();
        match pick % 8 {
            0..=5 => self.slots[usize::from(pick % 8) % SLOTS].map_or(SocketId(1), |l| l.socket),
            6 => self.released.last().copied().unwrap_or(SocketId(2)),
            _ => SocketId(u32::from(r.byte())),
        }
    }

    /// One record of the input.
    pub(super) fn step(&mut self, r: &mut Reader<'_>) {
        match r.byte() % 8 {
            0..=4 => {
                let socket = self.socket(r);
                let src = self.source(r);
                let payload = self.payload(r, src);
                self.receive(socket, src, &payload);
            }
            5 => {
                let ms = u64::from(r.u16() % 8_000);
                self.advance(Duration::from_millis(ms));
            }
            6 => {
                let which = r.byte();
                let k = usize::from(r.byte()) % SLOTS;
                self.release(which, k);
            }
            _ => {
                // A flood: the same datagram many times.
                let socket = self.socket(r);
                let src = self.source(r);
                let payload = self.payload(r, src);
                for _ in 0..(1 + r.byte() % 64) {
                    self.receive(socket, src, &payload);
                }
            }
        }
        self.check_bounds();
    }
}
