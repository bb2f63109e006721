//! Random datagram sequences against the relay: the invariants of
//! `fuzzing::relay_receive` (every datagram accounted once, forwards only
//! between pinned legs and unchanged, answers only to fresh authentic binds
//! and never larger, no state from strangers, no leg on our own ports,
//! bounded tables, expiry, revocation) over runs built from its records,
//! weighted towards the cases that matter: binds, replays, legs, strangers.

use proptest::prelude::*;

use crate::fuzzing::relay_receive;
use crate::fuzzing::relay_records::{
    encode, AllocSel, CookieSel, Crafted, Key, Op, Pay, Sock, Src,
};

fn sock() -> impl Strategy<Value = Sock> {
    prop_oneof![
        8 => (0u8..3).prop_map(Sock::Slot),
        1 => Just(Sock::Released),
        1 => any::<u8>().prop_map(Sock::Unknown),
    ]
}

fn src() -> impl Strategy<Value = Src> {
    prop_oneof![
        6 => (0u8..3, 0u8..2).prop_map(|(k, l)| Src::Leg(k, l)),
        2 => (0u8..3, 0u8..2).prop_map(|(k, l)| Src::Rebound(k, l)),
        3 => (0u8..4).prop_map(Src::Stranger),
        1 => (0u8..3).prop_map(Src::OwnPort),
        1 => (0u8..3).prop_map(Src::OwnIp),
        1 => (0u8..3).prop_map(Src::Loopback),
        1 => (any::<u8>(), any::<u8>(), any::<u16>()).prop_map(|(a, b, p)| Src::Random(a, b, p)),
    ]
}

fn crafted() -> impl Strategy<Value = Crafted> {
    let key = prop_oneof![
        6 => (0u8..3).prop_map(Key::Slot),
        1 => Just(Key::Foreign),
    ];
    let alloc = prop_oneof![
        6 => Just(AllocSel::Current),
        1 => Just(AllocSel::Newest),
        1 => any::<u64>().prop_map(AllocSel::Any),
    ];
    let cookie = prop_oneof![
        3 => Just(CookieSel::None),
        4 => Just(CookieSel::Own),
        2 => Just(CookieSel::Stolen),
        1 => any::<u64>().prop_map(CookieSel::Any),
    ];
    (
        (0u8..3, key, alloc),
        (
            prop_oneof![8 => 0u8..2, 1 => 2u8..=255],
            -30i8..30,
            0u64..8,
            cookie,
        ),
    )
        .prop_map(|((slot, key, alloc), (leg, skew, txid, cookie))| Crafted {
            slot,
            key,
            alloc,
            leg,
            skew,
            txid,
            cookie,
        })
}

fn pay() -> impl Strategy<Value = Pay> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..200).prop_map(Pay::Raw),
        2 => prop::collection::vec(any::<u8>(), 0..80).prop_map(Pay::Magic),
        5 => crafted().prop_map(Pay::Bind),
        1 => crafted().prop_map(Pay::Ack),
        1 => (crafted(), 0u8..4).prop_map(|(c, n)| Pay::Ping(c, n)),
        1 => (0u16..=65_535, any::<u8>()).prop_map(|(len, fill)| Pay::Big(len, fill)),
        3 => (0u8..16).prop_map(Pay::Replay),
        1 => any::<u8>().prop_map(Pay::Junk),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        20 => (sock(), src(), pay()).prop_map(|(s, f, p)| Op::Datagram(s, f, p)),
        3 => (0u16..8_000).prop_map(Op::Advance),
        2 => (prop::sample::select(vec![0u8, 1, 0x81, 2, 3, 0x83, 0x43]), 0u8..3)
            .prop_map(|(w, k)| Op::Command(w, k)),
        2 => (sock(), src(), pay(), 1u8..=64).prop_map(|(s, f, p, n)| Op::Flood(s, f, p, n)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn random_datagram_sequences_keep_the_relay_invariants(
        ops in prop::collection::vec(op(), 0..120),
    ) {
        relay_receive(&encode(&ops), crate::test_epoch());
    }

    #[test]
    fn random_bytes_keep_the_relay_invariants(
        input in prop::collection::vec(any::<u8>(), 0..1_024),
    ) {
        relay_receive(&input, crate::test_epoch());
    }
}
