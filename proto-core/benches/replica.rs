//! What one replicated write costs in CPU: three replicas of the
//! coordinators' log (`coordinator::replica`) in one process, messages
//! handed over at once and every persist acknowledged at once, so the
//! figure is the consensus engine's and the codec's work per committed
//! write, without network or disk. Each iteration proposes a batch of
//! writes at the leader and runs until all three replicas applied them.
//!
//! `cargo bench -p transitloom-proto-core --bench replica`

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput};
use transitloom_proto_core::control::msg::{self, FrameDecoder, Message};
use transitloom_proto_core::coordinator::replica::{
    Replica, ReplicaConfig, ReplicaOutput, Restored, Role, DEFAULT_TICK,
};
use transitloom_proto_core::csprng::Drbg;

#[allow(clippy::disallowed_methods)]
fn clock() -> Instant {
    // A benchmark's only clock read: the replicas run on virtual time.
    Instant::now()
}

struct Cluster {
    replicas: Vec<Replica>,
    now: Instant,
    applied: Vec<u64>,
}

impl Cluster {
    fn new() -> Self {
        let now = clock();
        let replicas = (1..=3)
            .map(|id| {
                Replica::new(
                    &ReplicaConfig {
                        id,
                        voters: vec![1, 2, 3],
                        tick: DEFAULT_TICK,
                    },
                    Restored::default(),
                    Drbg::from_u64(id),
                    now,
                )
                .expect("a valid replica")
            })
            .collect();
        let mut cluster = Self {
            replicas,
            now,
            applied: vec![0; 3],
        };
        while cluster.leader().is_none() {
            cluster.now += DEFAULT_TICK;
            for r in &mut cluster.replicas {
                r.handle_timeout(cluster.now);
            }
            cluster.settle();
        }
        cluster
    }

    fn leader(&self) -> Option<usize> {
        self.replicas
            .iter()
            .position(|r| r.status().role == Role::Leader)
    }

    /// Delivers everything until no replica has output; every message
    /// goes through the control codec, as on the wire.
    fn settle(&mut self) {
        loop {
            let mut mail = Vec::new();
            for (i, r) in self.replicas.iter_mut().enumerate() {
                while let Some(out) = r.poll_output() {
                    match out {
                        ReplicaOutput::Send(m) => mail.push(m),
                        ReplicaOutput::Persist { .. } => r.persisted(),
                        ReplicaOutput::Commit(e) => {
                            if !e.data.is_empty() {
                                self.applied[i] += 1;
                            }
                        }
                    }
                }
            }
            if mail.is_empty() {
                return;
            }
            for m in mail {
                let to = usize::try_from(m.to).expect("small ids") - 1;
                let mut frame = bytes::BytesMut::new();
                msg::encode(&Message::Raft(m), &mut frame).expect("encodes");
                let mut decoder = FrameDecoder::new();
                decoder.push(&frame);
                if let Ok(Some(Message::Raft(m))) = decoder.next() {
                    self.replicas[to].step(&m);
                }
            }
        }
    }
}

fn bench(c: &mut Criterion) {
    const BATCH: u64 = 100;
    let mut group = c.benchmark_group("replicated_write");
    group.throughput(Throughput::Elements(BATCH));
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("3_replicas_batch_100", |b| {
        b.iter_batched(
            Cluster::new,
            |mut cluster| {
                let leader = cluster.leader().expect("elected");
                let target = cluster.applied[0] + BATCH;
                for n in 0..BATCH {
                    let context = Bytes::copy_from_slice(&n.to_be_bytes());
                    let data = Bytes::from(vec![0x07; 120]);
                    cluster.replicas[leader].propose(context, data);
                    cluster.settle();
                }
                assert!(cluster.applied.iter().all(|&a| a >= target));
                black_box(cluster.applied)
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
