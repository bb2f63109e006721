//! The seed corpus of `dataplane_receive`, written as scenarios in the
//! input's own record format, so `fuzz/corpus/dataplane_receive/` can be
//! regenerated and checked instead of being opaque bytes.

/// Builds one input record by record.
#[derive(Debug, Default)]
struct Input(Vec<u8>);

/// A socket selector.
#[derive(Debug, Clone, Copy)]
enum Sock {
    IngressA = 0,
    IngressB = 1,
    MeshA = 2,
    MeshB = 3,
    Unknown = 4,
}

/// A source selector.
#[derive(Debug, Clone, Copy)]
enum Src {
    PeerA,
    PeerB,
    TargetA,
    TargetB,
    ReboundA,
    Stranger(u8),
}

/// Body of a crafted control packet.
#[derive(Debug, Clone, Copy)]
enum Ctl {
    Ping(u16),
    /// A pong answering the plane's n-th outstanding ping to the source.
    PongToPing(u8),
    Reflect(u16),
}

impl Input {
    /// The opcode of a datagram record and its socket selector (an unknown
    /// socket takes one more byte: which).
    fn datagram(&mut self, sock: Sock) {
        self.0.extend([0, sock as u8]);
        if let Sock::Unknown = sock {
            self.0.push(7);
        }
    }

    fn src(&mut self, src: Src) {
        match src {
            Src::PeerA => self.0.push(0),
            Src::PeerB => self.0.push(1),
            Src::TargetA => self.0.push(2),
            Src::TargetB => self.0.push(3),
            Src::ReboundA => self.0.push(4),
            Src::Stranger(n) => self.0.extend([6, n]),
        }
    }

    fn raw(mut self, sock: Sock, src: Src, payload: &[u8]) -> Self {
        self.datagram(sock);
        self.src(src);
        self.0.extend([0, payload.len() as u8]);
        self.0.extend(&payload[..payload.len().min(255)]);
        self
    }

    fn magic(mut self, sock: Sock, src: Src, tail: &[u8]) -> Self {
        self.datagram(sock);
        self.src(src);
        self.0.extend([1, tail.len() as u8]);
        self.0.extend(tail);
        self
    }

    /// An authentic control packet under association A's (`b == false`) or
    /// B's key, with a timestamp skew in tenths of a second.
    fn control(mut self, sock: Sock, src: Src, b: bool, ctl: Ctl, skew: i8, txid: u64) -> Self {
        self.datagram(sock);
        self.src(src);
        self.0.push(if b { 3 } else { 2 });
        match ctl {
            Ctl::Ping(pad) => {
                self.0.push(0);
                self.0.extend(txid.to_be_bytes());
                self.0.push(skew as u8);
                self.0.extend(pad.to_be_bytes());
            }
            Ctl::PongToPing(n) => {
                self.0.extend([1, n]);
                self.0.push(skew as u8);
            }
            Ctl::Reflect(pad) => {
                self.0.push(3);
                self.0.extend(txid.to_be_bytes());
                self.0.push(skew as u8);
                self.0.extend(pad.to_be_bytes());
            }
        }
        self
    }

    fn big(mut self, sock: Sock, src: Src, len: u16, fill: u8) -> Self {
        self.datagram(sock);
        self.src(src);
        self.0.push(4);
        self.0.extend(len.to_be_bytes());
        self.0.push(fill);
        self
    }

    fn replay(mut self, sock: Sock, src: Src, which: u8) -> Self {
        self.datagram(sock);
        self.src(src);
        self.0.extend([5, which]);
        self
    }

    fn advance(mut self, ms: u16) -> Self {
        self.0.push(5);
        self.0.extend(ms.to_be_bytes());
        self
    }

    fn toggle_answering(mut self) -> Self {
        self.0.push(6);
        self
    }

    fn burst(mut self, b: bool, src: Src, payload: &[u8], times: u8) -> Self {
        self.0.extend([7, u8::from(b)]);
        self.src(src);
        self.0.push(payload.len() as u8);
        self.0.extend(payload);
        self.0.push(times.saturating_sub(1));
        self
    }
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// The named seeds, in order.
pub fn dataplane_receive_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let wg = data(148, 4);
    let mut strangers = Input::default();
    for n in 0..40 {
        strangers = strangers.burst(false, Src::Stranger(n), &data(100, n), 3);
    }
    let seeds = [
        ("empty", Input::default()),
        (
            "service-a-to-mesh",
            Input::default().raw(Sock::IngressA, Src::TargetA, &wg),
        ),
        (
            "service-b-to-mesh",
            Input::default().raw(Sock::IngressB, Src::TargetB, &data(32, 9)),
        ),
        (
            "peer-a-delivers",
            Input::default()
                .raw(Sock::MeshA, Src::PeerA, &wg)
                .raw(Sock::MeshB, Src::PeerB, &wg),
        ),
        (
            "peer-b-on-a-socket",
            Input::default().raw(Sock::MeshA, Src::PeerB, &data(200, 1)),
        ),
        (
            "key-b-packet-on-a",
            Input::default().control(Sock::MeshA, Src::PeerA, true, Ctl::Ping(19), 0, 5),
        ),
        (
            "key-a-packet-on-b",
            Input::default().control(Sock::MeshB, Src::PeerB, false, Ctl::Ping(40), 0, 6),
        ),
        (
            "magic-junk-from-peer",
            Input::default()
                .magic(Sock::MeshA, Src::PeerA, &data(60, 2))
                .magic(Sock::MeshA, Src::Stranger(3), &data(60, 2))
                .magic(Sock::IngressA, Src::TargetA, &[1, 0x01]),
        ),
        ("stranger-flood", strangers),
        (
            "larger-than-mtu",
            Input::default()
                .big(Sock::MeshA, Src::PeerA, 65_535, 0x41)
                .big(Sock::IngressA, Src::TargetA, 9_000, 0x43)
                .big(Sock::MeshB, Src::Stranger(1), 65_535, 0x01),
        ),
        (
            "replayed-ping",
            Input::default()
                .control(Sock::MeshA, Src::Stranger(7), false, Ctl::Ping(19), 0, 77)
                .replay(Sock::MeshA, Src::Stranger(7), 0)
                .replay(Sock::MeshA, Src::Stranger(8), 0)
                .replay(Sock::MeshB, Src::PeerB, 0),
        ),
        (
            "nat-rebinding",
            Input::default()
                .raw(Sock::MeshA, Src::ReboundA, &wg)
                .advance(30)
                .raw(Sock::MeshA, Src::ReboundA, &wg)
                .raw(Sock::IngressA, Src::TargetA, &wg),
        ),
        (
            "path-fails-and-returns",
            Input::default()
                .toggle_answering()
                .advance(1_500)
                .raw(Sock::IngressA, Src::TargetA, &wg)
                .raw(Sock::MeshA, Src::PeerA, &wg)
                .toggle_answering()
                .advance(600)
                .raw(Sock::IngressA, Src::TargetA, &wg),
        ),
        (
            "small-ping-from-stranger",
            Input::default().control(Sock::MeshA, Src::Stranger(9), false, Ctl::Ping(0), 0, 9),
        ),
        (
            "stranger-with-the-key-validates",
            Input::default()
                .raw(Sock::MeshA, Src::Stranger(5), &data(100, 5))
                .control(
                    Sock::MeshA,
                    Src::Stranger(5),
                    false,
                    Ctl::PongToPing(0),
                    0,
                    0,
                )
                .raw(Sock::MeshA, Src::Stranger(5), &wg)
                .raw(Sock::IngressA, Src::TargetA, &wg),
        ),
        (
            "unknown-socket",
            Input::default().raw(Sock::Unknown, Src::PeerA, &wg).raw(
                Sock::Unknown,
                Src::TargetA,
                &wg,
            ),
        ),
        (
            "foreign-source-into-ingress",
            Input::default()
                .raw(Sock::IngressA, Src::PeerA, &wg)
                .raw(Sock::IngressA, Src::TargetB, &wg)
                .raw(Sock::IngressB, Src::TargetA, &wg),
        ),
        (
            "skewed-timestamps",
            Input::default()
                .control(Sock::MeshA, Src::PeerA, false, Ctl::Ping(19), 127, 1)
                .control(Sock::MeshA, Src::PeerA, false, Ctl::Ping(19), -128, 2)
                .control(Sock::MeshA, Src::PeerA, false, Ctl::Ping(19), 0, 3),
        ),
        (
            "reflect-request",
            Input::default()
                .control(Sock::MeshA, Src::Stranger(2), false, Ctl::Reflect(19), 0, 4)
                .control(Sock::MeshB, Src::PeerB, true, Ctl::Reflect(1_400), 0, 4),
        ),
        (
            "long-mixed-run",
            Input::default()
                .raw(Sock::IngressA, Src::TargetA, &wg)
                .burst(true, Src::Stranger(11), &data(70, 11), 64)
                .advance(300)
                .control(Sock::MeshB, Src::PeerB, true, Ctl::Ping(100), 3, 12)
                .raw(Sock::MeshB, Src::PeerB, &wg)
                .toggle_answering()
                .advance(1_999)
                .raw(Sock::IngressB, Src::TargetB, &wg)
                .toggle_answering()
                .advance(1_000)
                .raw(Sock::IngressB, Src::TargetB, &wg)
                .raw(Sock::MeshA, Src::ReboundA, &data(10, 0)),
        ),
    ];
    seeds
        .into_iter()
        .map(|(name, input)| (name, input.0))
        .collect()
}
