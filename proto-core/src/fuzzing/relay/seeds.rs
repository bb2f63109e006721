//! The seed corpus of `relay_receive`, written as scenarios in the input's
//! own record format (see [`encode`]), so `fuzz/corpus/relay_receive/` can
//! be regenerated and checked instead of being opaque bytes. The property
//! test builds its random runs from the same records.

/// Which port a datagram arrives on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Sock {
    /// The port of the allocation in slot 0, 1 or 2.
    Slot(u8),
    /// The port of the allocation released last.
    Released,
    /// A socket id the relay never named.
    Unknown(u8),
}

/// Where a datagram comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Src {
    /// The endpoint of a slot's leg.
    Leg(u8, u8),
    /// The same endpoint after its NAT rebound.
    Rebound(u8, u8),
    /// One of 256 strangers.
    Stranger(u8),
    /// A slot's own relay port.
    OwnPort(u8),
    /// The relay's public address with a slot's port.
    OwnIp(u8),
    /// Loopback with a slot's port.
    Loopback(u8),
    /// Anyone.
    Random(u8, u8, u16),
}

/// The key a crafted packet is tagged with.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Key {
    /// The key of slot 0 (shared with slot 1), 1 or 2.
    Slot(u8),
    /// A key no allocation has.
    Foreign,
}

/// Which allocation id a crafted bind names.
#[derive(Debug, Clone, Copy)]
pub(crate) enum AllocSel {
    /// The allocation now in the slot.
    Current,
    /// The newest id the harness gave out, with the slot's index.
    Newest,
    /// Any id.
    Any(u64),
}

/// Which cookie a crafted bind (or acknowledgement) carries.
#[derive(Debug, Clone, Copy)]
pub(crate) enum CookieSel {
    /// None (0), as a first bind.
    None,
    /// The one the relay sent the datagram's source.
    Own,
    /// The one the relay sent the slot's endpoint of that leg (a bind
    /// captured and sent from elsewhere).
    Stolen,
    /// Any.
    Any(u64),
}

/// A crafted control packet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Crafted {
    pub slot: u8,
    pub key: Key,
    pub alloc: AllocSel,
    pub leg: u8,
    /// Timestamp offset in tenths of a second.
    pub skew: i8,
    pub txid: u64,
    pub cookie: CookieSel,
}

/// A datagram's payload.
#[derive(Debug, Clone)]
pub(crate) enum Pay {
    /// Raw bytes (at most 255).
    Raw(Vec<u8>),
    /// The control magic, then bytes (at most 255).
    Magic(Vec<u8>),
    /// A relay bind.
    Bind(Crafted),
    /// A bind acknowledgement (only relays send those).
    Ack(Crafted),
    /// An endpoint's probe under the key, padded to 28 + 100 × n bytes.
    Ping(Crafted, u8),
    /// `len` bytes of `fill` (the magic first when `fill` is odd).
    Big(u16, u8),
    /// One of the packets crafted so far, again (0: the newest).
    Replay(u8),
    /// Bind-sized bytes behind the magic (a spoofed bind).
    Junk(u8),
}

/// One record.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// One datagram.
    Datagram(Sock, Src, Pay),
    /// Time passes, in milliseconds (below 8,000).
    Advance(u16),
    /// Release a slot (`0`), revoke a slot's node (`1`, `0x81` for its
    /// second node), withdraw a slot's association (`2`), allocate the
    /// slot anew (`3`, `0x83` with a failing port), or an allocation beyond
    /// the slots (`0x43`).
    Command(u8, u8),
    /// The same datagram `n` times (1 to 64).
    Flood(Sock, Src, Pay, u8),
}

fn sock(out: &mut Vec<u8>, s: Sock) {
    match s {
        Sock::Slot(k) => out.push(k % 3),
        Sock::Released => out.push(6),
        Sock::Unknown(n) => out.extend([7, n]),
    }
}

fn src(out: &mut Vec<u8>, s: Src) {
    match s {
        Src::Leg(k, leg) => out.extend([k, leg & 1]),
        Src::Rebound(k, leg) => out.extend([k, 2, leg & 1]),
        Src::Stranger(n) => out.extend([0, 3, n]),
        Src::OwnPort(k) => out.extend([k, 4]),
        Src::OwnIp(k) => out.extend([k, 5]),
        Src::Loopback(k) => out.extend([k, 6]),
        Src::Random(a, b, port) => {
            out.extend([0, 7, a, b]);
            out.extend(port.to_be_bytes());
        }
    }
}

fn crafted(out: &mut Vec<u8>, kind: u8, c: Crafted) {
    out.extend([2, kind, c.slot]);
    out.push(match c.key {
        Key::Slot(n) => n % 3,
        Key::Foreign => 3,
    });
    match c.alloc {
        AllocSel::Current => out.push(0),
        AllocSel::Newest => out.push(1),
        AllocSel::Any(id) => {
            out.push(2);
            out.extend(id.to_be_bytes());
        }
    }
    out.extend([c.leg, c.skew as u8]);
    out.extend(c.txid.to_be_bytes());
}

fn cookie(out: &mut Vec<u8>, c: CookieSel) {
    match c {
        CookieSel::None => out.push(0),
        CookieSel::Own => out.push(1),
        CookieSel::Stolen => out.push(2),
        CookieSel::Any(v) => {
            out.push(3);
            out.extend(v.to_be_bytes());
        }
    }
}

fn pay(out: &mut Vec<u8>, p: &Pay) {
    match p {
        Pay::Raw(bytes) => {
            let bytes = &bytes[..bytes.len().min(255)];
            out.extend([0, bytes.len() as u8]);
            out.extend(bytes);
        }
        Pay::Magic(tail) => {
            let tail = &tail[..tail.len().min(255)];
            out.extend([1, tail.len() as u8]);
            out.extend(tail);
        }
        Pay::Bind(c) => {
            crafted(out, 0, *c);
            cookie(out, c.cookie);
        }
        Pay::Ack(c) => {
            crafted(out, 2, *c);
            cookie(out, c.cookie);
        }
        Pay::Ping(c, n) => {
            crafted(out, 3, *c);
            out.push(*n);
        }
        Pay::Big(len, fill) => {
            out.push(4);
            out.extend(len.to_be_bytes());
            out.push(*fill);
        }
        Pay::Replay(n) => out.extend([5, *n]),
        Pay::Junk(fill) => {
            out.push(6);
            let body_len = crate::relay::BIND_LEN - super::MAGIC.len();
            out.extend(std::iter::repeat_n(*fill, body_len));
            out.push(*fill);
        }
    }
}

/// The input bytes of a run of records.
pub(crate) fn encode(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        match op {
            Op::Datagram(s, from, p) => {
                out.push(0);
                sock(&mut out, *s);
                src(&mut out, *from);
                pay(&mut out, p);
            }
            Op::Advance(ms) => {
                out.push(5);
                out.extend((ms % 8_000).to_be_bytes());
            }
            Op::Command(which, k) => out.extend([6, *which, *k]),
            Op::Flood(s, from, p, n) => {
                out.push(7);
                sock(&mut out, *s);
                src(&mut out, *from);
                pay(&mut out, p);
                out.push(n.saturating_sub(1) % 64);
            }
        }
    }
    out
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A bind of a slot's leg under its key, without a cookie.
fn bind(slot: u8, leg: u8, txid: u64) -> Crafted {
    Crafted {
        slot,
        key: Key::Slot(slot),
        alloc: AllocSel::Current,
        leg,
        skew: 5,
        txid,
        cookie: CookieSel::None,
    }
}

/// The same bind carrying the cookie the relay sent its source.
fn with_cookie(slot: u8, leg: u8, txid: u64) -> Crafted {
    Crafted {
        cookie: CookieSel::Own,
        ..bind(slot, leg, txid)
    }
}

/// Both steps of binding a leg from `src`: a bind, answered with the
/// cookie, and the bind that carries it.
fn pin(slot: u8, leg: u8, src: Src, txid: u64) -> [Op; 2] {
    [
        Op::Datagram(Sock::Slot(slot), src, Pay::Bind(bind(slot, leg, txid))),
        Op::Datagram(
            Sock::Slot(slot),
            src,
            Pay::Bind(with_cookie(slot, leg, txid + 1)),
        ),
    ]
}

/// The named seeds, in order.
pub fn relay_receive_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use Op::{Advance, Command, Datagram, Flood};
    let wg = data(148, 4);
    let seeds: Vec<(&'static str, Vec<Op>)> = vec![
        ("empty", vec![]),
        (
            "forward-both-ways",
            vec![
                Datagram(Sock::Slot(0), Src::Leg(0, 0), Pay::Raw(wg.clone())),
                Datagram(Sock::Slot(0), Src::Leg(0, 1), Pay::Raw(data(1, 9))),
                Datagram(Sock::Slot(0), Src::Leg(0, 0), Pay::Big(1_400, 0x42)),
                Datagram(Sock::Slot(0), Src::Leg(0, 1), Pay::Big(1_400, 0x43)),
            ],
        ),
        (
            "magic-that-does-not-verify-crosses",
            vec![
                Datagram(Sock::Slot(0), Src::Leg(0, 0), Pay::Magic(data(64, 1))),
                Datagram(Sock::Slot(0), Src::Leg(0, 1), Pay::Junk(7)),
                Datagram(Sock::Slot(0), Src::Leg(0, 0), Pay::Ping(bind(0, 0, 5), 0)),
                Datagram(
                    Sock::Slot(0),
                    Src::Leg(0, 1),
                    Pay::Bind(Crafted {
                        key: Key::Foreign,
                        ..bind(0, 1, 6)
                    }),
                ),
            ],
        ),
        (
            "spoofed-binds",
            vec![
                Datagram(Sock::Slot(2), Src::Stranger(1), Pay::Junk(0)),
                Datagram(
                    Sock::Slot(2),
                    Src::Stranger(2),
                    Pay::Bind(Crafted {
                        key: Key::Foreign,
                        ..bind(2, 0, 1)
                    }),
                ),
                Datagram(
                    Sock::Slot(2),
                    Src::Leg(2, 0),
                    Pay::Bind(Crafted {
                        key: Key::Slot(0),
                        ..bind(2, 0, 2)
                    }),
                ),
            ],
        ),
        (
            "replayed-binds",
            [
                pin(2, 0, Src::Leg(2, 0), 10).to_vec(),
                vec![
                    Datagram(Sock::Slot(2), Src::Stranger(3), Pay::Replay(0)),
                    Datagram(Sock::Slot(2), Src::Leg(2, 0), Pay::Replay(0)),
                    Datagram(Sock::Slot(2), Src::Stranger(3), Pay::Replay(1)),
                    Advance(1_500),
                    Datagram(Sock::Slot(2), Src::Rebound(2, 0), Pay::Replay(0)),
                ],
            ]
            .concat(),
        ),
        (
            "replay-outruns-the-original",
            vec![
                // A bind carrying slot 0's endpoint's cookie reaches the
                // relay from a stranger first: it is answered with the
                // stranger's own cookie and pins nothing; the original
                // from the endpoint is then a replay.
                Datagram(
                    Sock::Slot(0),
                    Src::Stranger(9),
                    Pay::Bind(Crafted {
                        cookie: CookieSel::Stolen,
                        ..bind(0, 0, 11)
                    }),
                ),
                Datagram(Sock::Slot(0), Src::Leg(0, 0), Pay::Replay(0)),
                Datagram(Sock::Slot(0), Src::Leg(0, 1), Pay::Raw(wg.clone())),
                // A guessed cookie does no better.
                Datagram(
                    Sock::Slot(0),
                    Src::Stranger(10),
                    Pay::Bind(Crafted {
                        cookie: CookieSel::Any(0x1234_5678),
                        ..bind(0, 0, 13)
                    }),
                ),
                // The stranger sends back its own cookie: it has the key
                // here, so this is a legitimate move of the leg.
                Datagram(
                    Sock::Slot(0),
                    Src::Stranger(9),
                    Pay::Bind(with_cookie(0, 0, 12)),
                ),
                Datagram(Sock::Slot(0), Src::Leg(0, 1), Pay::Raw(wg.clone())),
            ],
        ),
        (
            "unsolicited-traffic",
            (0..32)
                .map(|n| Datagram(Sock::Slot(n % 3), Src::Stranger(n), Pay::Raw(data(100, n))))
                .collect(),
        ),
        (
            "before-both-legs",
            vec![
                Datagram(Sock::Slot(1), Src::Leg(1, 0), Pay::Raw(wg.clone())),
                Datagram(Sock::Slot(1), Src::Leg(1, 1), Pay::Raw(wg.clone())),
                Datagram(Sock::Slot(2), Src::Leg(2, 0), Pay::Raw(wg.clone())),
                pin(1, 1, Src::Leg(1, 1), 20)[0].clone(),
                pin(1, 1, Src::Leg(1, 1), 20)[1].clone(),
                Datagram(Sock::Slot(1), Src::Leg(1, 0), Pay::Raw(wg.clone())),
            ],
        ),
        (
            "binds-for-released-allocations",
            vec![
                Command(0, 0),
                Datagram(Sock::Released, Src::Leg(0, 0), Pay::Bind(bind(0, 0, 30))),
                Datagram(Sock::Released, Src::Leg(0, 0), Pay::Raw(wg.clone())),
                Command(2, 2),
                Datagram(Sock::Released, Src::Leg(2, 0), Pay::Bind(bind(2, 0, 31))),
                Datagram(
                    Sock::Slot(1),
                    Src::Leg(1, 0),
                    Pay::Bind(Crafted {
                        alloc: AllocSel::Any(0),
                        ..bind(1, 0, 32)
                    }),
                ),
            ],
        ),
        (
            "bind-for-the-neighbour-under-a-shared-key",
            vec![Datagram(
                Sock::Slot(1),
                Src::Leg(1, 1),
                Pay::Bind(Crafted {
                    key: Key::Slot(0),
                    alloc: AllocSel::Any(1 << 8),
                    ..bind(1, 1, 33)
                }),
            )],
        ),
        (
            "third-address",
            vec![
                Datagram(Sock::Slot(0), Src::Rebound(0, 0), Pay::Raw(wg.clone())),
                Datagram(Sock::Slot(0), Src::Random(1, 2, 3), Pay::Raw(wg.clone())),
                Datagram(Sock::Slot(0), Src::Leg(1, 0), Pay::Raw(wg.clone())),
            ],
        ),
        (
            "leg-moves-with-a-fresh-bind",
            vec![
                Datagram(Sock::Slot(0), Src::Rebound(0, 0), Pay::Bind(bind(0, 0, 40))),
                Datagram(Sock::Slot(0), Src::Rebound(0, 0), Pay::Raw(wg.clone())),
                Datagram(
                    Sock::Slot(0),
                    Src::Rebound(0, 0),
                    Pay::Bind(with_cookie(0, 0, 41)),
                ),
                Datagram(Sock::Slot(0), Src::Leg(0, 0), Pay::Raw(wg.clone())),
                Datagram(Sock::Slot(0), Src::Leg(0, 1), Pay::Raw(wg.clone())),
                Datagram(Sock::Slot(0), Src::Rebound(0, 0), Pay::Raw(wg.clone())),
            ],
        ),
        (
            "leg-conflict-and-acks",
            vec![
                Datagram(Sock::Slot(0), Src::Leg(0, 0), Pay::Bind(bind(0, 1, 50))),
                Datagram(Sock::Slot(0), Src::Leg(0, 0), Pay::Ack(bind(0, 0, 51))),
                Datagram(Sock::Slot(0), Src::Leg(0, 0), Pay::Bind(bind(0, 2, 52))),
            ],
        ),
        (
            "own-ports",
            vec![
                Datagram(Sock::Slot(0), Src::OwnPort(1), Pay::Bind(bind(0, 0, 60))),
                Datagram(Sock::Slot(0), Src::OwnIp(2), Pay::Bind(bind(0, 0, 61))),
                Datagram(Sock::Slot(0), Src::Loopback(0), Pay::Bind(bind(0, 1, 62))),
                Datagram(Sock::Slot(0), Src::OwnPort(1), Pay::Raw(wg.clone())),
            ],
        ),
        (
            "rate-limit",
            vec![Flood(
                Sock::Slot(0),
                Src::Leg(0, 0),
                Pay::Big(60_000, 2),
                64,
            )],
        ),
        (
            "idle-expiry-and-refresh",
            vec![
                Advance(4_000),
                Datagram(
                    Sock::Slot(1),
                    Src::Leg(1, 0),
                    Pay::Bind(with_cookie(1, 0, 70)),
                ),
                Datagram(Sock::Slot(0), Src::Leg(0, 0), Pay::Raw(wg.clone())),
                Advance(4_000),
                Advance(2_000),
                Datagram(Sock::Slot(2), Src::Leg(2, 0), Pay::Bind(bind(2, 0, 71))),
                Command(3, 2),
            ],
        ),
        (
            "revoke-a-node",
            vec![
                Command(1, 0),
                Datagram(Sock::Released, Src::Leg(0, 0), Pay::Raw(wg.clone())),
                Command(3, 0),
                Command(3, 1),
                Command(0x43, 2),
                Command(0x81, 2),
                Command(0x43, 2),
            ],
        ),
        (
            "failing-port",
            vec![
                Command(0, 1),
                Command(0x83, 1),
                Datagram(
                    Sock::Released,
                    Src::Leg(1, 0),
                    Pay::Bind(Crafted {
                        alloc: AllocSel::Newest,
                        ..bind(1, 0, 90)
                    }),
                ),
                Command(3, 1),
                Datagram(
                    Sock::Slot(1),
                    Src::Leg(1, 0),
                    Pay::Bind(Crafted {
                        alloc: AllocSel::Newest,
                        ..bind(1, 0, 91)
                    }),
                ),
            ],
        ),
        (
            "unknown-socket",
            vec![Datagram(
                Sock::Unknown(9),
                Src::Leg(0, 0),
                Pay::Raw(wg.clone()),
            )],
        ),
        (
            "larger-than-mtu",
            vec![
                Datagram(Sock::Slot(0), Src::Leg(0, 0), Pay::Big(65_535, 0x41)),
                Datagram(Sock::Slot(0), Src::Stranger(1), Pay::Big(65_535, 0x01)),
            ],
        ),
        (
            "stranger-flood-then-bind",
            vec![
                Flood(Sock::Slot(2), Src::Stranger(4), Pay::Junk(3), 64),
                Flood(Sock::Slot(2), Src::Leg(2, 0), Pay::Raw(wg.clone()), 64),
                pin(2, 0, Src::Leg(2, 0), 80)[0].clone(),
                pin(2, 0, Src::Leg(2, 0), 80)[1].clone(),
                pin(2, 1, Src::Leg(2, 1), 82)[0].clone(),
                pin(2, 1, Src::Leg(2, 1), 82)[1].clone(),
                Datagram(Sock::Slot(2), Src::Leg(2, 1), Pay::Raw(wg.clone())),
            ],
        ),
    ];
    seeds
        .into_iter()
        .map(|(name, ops)| (name, encode(&ops)))
        .collect()
}
