//! The coordinator under many sessions (issue 3, "Measure"): sessions
//! established per second with full mutual TLS and admission, memory per
//! session, and the cost of one revoke as the number of connected nodes
//! grows (it must not) and as the revoked node's peers grow (it must).
//!
//! Real machines on an in-memory network (`coordinator/mesh.rs`); only the
//! time spent inside the coordinator's own calls is reported, so node-side
//! TLS does not count. `cargo bench -p transitloom-proto-core --bench coordinator`

// A counting global allocator needs `unsafe impl GlobalAlloc`; it only
// forwards to the system allocator.
#![allow(unsafe_code)]

#[path = "coordinator/mesh.rs"]
mod mesh;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion};
use mesh::{clock, Member, Mesh, Pki};
use transitloom_proto_core::coordinator::registry::Op;
use transitloom_proto_core::csprng::Drbg;

/// Bytes allocated and not yet freed, process-wide.
static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: every call forwards to `System` with the caller's arguments; the
// counter is bookkeeping only.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as the caller promised for `layout`.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: as the caller promised for `ptr` and `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Node names and who consents to whom: `victims` (name, peer count) each
/// get peers of their own; the other nodes pair up with each other, so the
/// association table is full of associations that are not the victim's.
fn population(
    pki: &Pki,
    drbg: &mut Drbg,
    total: usize,
    victims: &[(&str, usize)],
) -> (Vec<Member>, Vec<Op>) {
    let mut plan: Vec<(String, Vec<String>)> = Vec::new();
    for (victim, peers) in victims {
        let names: Vec<String> = (0..*peers).map(|k| format!("{victim}-p{k}")).collect();
        for name in &names {
            plan.push((name.clone(), vec![(*victim).to_owned()]));
        }
        plan.push(((*victim).to_owned(), names));
    }
    let mut k = 0;
    while plan.len() < total {
        let (a, b) = (format!("n{k}"), format!("n{}", k + 1));
        plan.push((a.clone(), vec![b.clone()]));
        if plan.len() < total {
            plan.push((b, vec![a]));
        }
        k += 2;
    }
    let mut log = Vec::new();
    let members = plan
        .into_iter()
        .map(|(name, peers)| {
            let (tls, ops) = pki.enroll(drbg, &name);
            log.extend(ops);
            Member { name, tls, peers }
        })
        .collect();
    (members, log)
}

/// A mesh with every member connected, admitted and associated.
fn connected(pki: &Pki, drbg: &mut Drbg, members: &[Member], log: Vec<Op>) -> Mesh {
    let mut mesh = Mesh::new(pki, log, drbg);
    let nodes: Vec<usize> = members.iter().map(|m| mesh.join(m)).collect();
    mesh.until_live(&nodes, Duration::from_millis(100), Duration::from_secs(120));
    // Candidates and probes settle.
    mesh.run_for(Duration::from_secs(1));
    mesh
}

/// The coordinator's time for one revoke of `victim`, then (untimed) the
/// victim readmitted and reconnected with its associations back.
fn revoke_once(mesh: &mut Mesh, victim: &Member) -> Duration {
    let before = mesh.hub_busy;
    mesh.revoke(&victim.name);
    mesh.settle();
    let spent = mesh.hub_busy - before;
    assert!(
        mesh.hub().online().all(|n| n != victim.name),
        "the revoke did not land"
    );
    mesh.readmit(&victim.name);
    mesh.settle();
    let old = mesh.index[&victim.name];
    mesh.leave(old);
    let again = mesh.join(victim);
    mesh.until_live(&[again], Duration::from_millis(10), Duration::from_secs(10));
    mesh.run_for(Duration::from_millis(50));
    spent
}

fn revoke(c: &mut Criterion, sizes: &[usize]) {
    let mut drbg = Drbg::from_u64(7);
    let pki = Pki::new(&mut drbg);
    let mut group = c.benchmark_group("revoke");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(20))
        .measurement_time(Duration::from_millis(200));
    for &n in sizes {
        let mut victims = vec![("v4", 4)];
        if n == 1_000 {
            victims.extend([("v1", 1), ("v16", 16), ("v64", 64)]);
        }
        let (members, log) = population(&pki, &mut drbg, n, &victims);
        let mut mesh = connected(&pki, &mut drbg, &members, log);
        let live = mesh.hub().associations().count();
        println!("revoke: {n} nodes connected, {live} associations live");
        for (victim, peers) in &victims {
            let member = members.iter().find(|m| m.name == *victim).expect("planned");
            let id = BenchmarkId::new(format!("peers={peers}"), format!("nodes={n}"));
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| revoke_once(&mut mesh, member))
                        .sum::<Duration>()
                })
            });
        }
    }
    group.finish();
}

fn establish(c: &mut Criterion) {
    let mut drbg = Drbg::from_u64(8);
    let pki = Pki::new(&mut drbg);
    // 64 identities reconnect in turn; a newer session replaces the older.
    let (members, log) = population(&pki, &mut drbg, 64, &[]);
    let mut mesh = Mesh::new(&pki, log, &mut drbg);
    let mut turn = 0usize;
    let mut session = |mesh: &mut Mesh| -> (Duration, Duration) {
        let member = &members[turn % members.len()];
        turn += 1;
        let started = clock();
        let before = mesh.hub_busy;
        let i = mesh.join(member);
        mesh.until_live(&[i], Duration::from_millis(1), Duration::from_secs(5));
        let spent = (mesh.hub_busy - before, started.elapsed());
        mesh.leave(i);
        if turn.is_multiple_of(64) {
            // Let replaced sessions drain (untimed).
            mesh.run_for(Duration::from_secs(2));
        }
        spent
    };
    let mut group = c.benchmark_group("establish");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("coordinator", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| session(&mut mesh).0).sum::<Duration>())
    });
    group.bench_function("both-sides", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| session(&mut mesh).1).sum::<Duration>())
    });
    group.finish();
}

/// Live bytes the coordinator holds per established session: connect
/// `count` nodes, drop the node machines, and compare with before.
fn memory_per_session(count: usize) {
    let mut drbg = Drbg::from_u64(9);
    let pki = Pki::new(&mut drbg);
    let (members, log) = population(&pki, &mut drbg, count, &[]);
    // Pairs of nodes associate: count the association table too.
    let mut mesh = Mesh::new(&pki, log, &mut drbg);
    mesh.settle();
    let before = LIVE.load(Ordering::Relaxed);
    let nodes: Vec<usize> = members.iter().map(|m| mesh.join(m)).collect();
    mesh.until_live(&nodes, Duration::from_millis(100), Duration::from_secs(120));
    mesh.settle();
    for &i in &nodes {
        mesh.leave(i);
    }
    let after = LIVE.load(Ordering::Relaxed);
    let online = mesh.hub().online().count();
    let assocs = mesh.hub().associations().count();
    let per = (after - before) as f64 / count as f64;
    println!(
        "memory: {count} sessions ({online} online, {assocs} associations): {:.1} KiB per session \
         (live bytes after minus before, node machines dropped)",
        per / 1024.0
    );
    black_box(mesh);
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    // `cargo test --benches` runs this once as a smoke test, without
    // `--bench`: keep that run small.
    let full = std::env::args().any(|a| a == "--bench");
    memory_per_session(if full { 1_000 } else { 50 });
    establish(&mut c);
    revoke(&mut c, if full { &[10, 100, 1_000] } else { &[10] });
    c.final_summary();
}
