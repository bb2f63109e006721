//! The same node machine on all three runtimes, end to end on loopback: a
//! real `transitloom-coordinator` (started by the testbed), two in-process
//! `Node`s that enroll with join tokens from `tlctl`, form an association
//! by mutual consent and carry 200 datagrams of every size byte-for-byte —
//! once on mio, once on tokio, once on smol.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls_pki_types::CertificateDer;
use transitloom_proto_core::dataplane::UplinkSpec;
use transitloom_proto_core::node::{Credentials, Node, NodeConfig, NodeEvent, ServiceSpec};
use transitloom_proto_core::{pki, ServiceId, UplinkId};
use transitloom_runtime_tokio::pki_files::read_cert;
use transitloom_testbed::{free_port, Binaries, CoordinatorSpec, LocalMesh, MeshSpec};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[derive(Debug, Clone, Copy)]
enum Runtime {
    Mio,
    Tokio,
    Smol,
}

fn addr() -> SocketAddr {
    SocketAddr::new(LOOPBACK, free_port(LOOPBACK).unwrap())
}

/// Runs `node` on `runtime` in a thread, forwarding its events, until
/// `stop` is set.
fn spawn(
    runtime: Runtime,
    node: Node,
    stop: Arc<AtomicBool>,
    tx: Sender<NodeEvent>,
) -> JoinHandle<()> {
    let tick = || Some(Instant::now() + Duration::from_millis(50));
    std::thread::spawn(move || {
        let mut batch: Vec<NodeEvent> = Vec::new();
        let forward = |batch: &mut Vec<NodeEvent>| {
            for event in batch.drain(..) {
                let _ = tx.send(event);
            }
        };
        match runtime {
            Runtime::Mio => {
                let mut driver = transitloom_runtime_mio::MioDriver::new(node).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    driver
                        .run_until(&mut batch, tick(), |_, e| !e.is_empty())
                        .unwrap();
                    forward(&mut batch);
                }
            }
            Runtime::Tokio => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let mut driver = transitloom_runtime_tokio::TokioDriver::new(node);
                    while !stop.load(Ordering::Relaxed) {
                        driver
                            .run_until(&mut batch, tick(), |_, e| !e.is_empty())
                            .await;
                        forward(&mut batch);
                    }
                });
            }
            Runtime::Smol => smol::block_on(async {
                let mut driver = transitloom_runtime_smol::SmolDriver::new(node);
                while !stop.load(Ordering::Relaxed) {
                    driver
                        .run_until(&mut batch, tick(), |_, e| !e.is_empty())
                        .await;
                    forward(&mut batch);
                }
            }),
        }
    })
}

struct Running {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn wait_installed(name: &str, events: &Receiver<NodeEvent>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(NodeEvent::Installed { .. }) => return,
            Ok(other) => seen.push(format!("{other:?}")),
            Err(_) => panic!("{name}: no association installed; saw {seen:#?}"),
        }
    }
}

static SEED: AtomicU8 = AtomicU8::new(1);

#[test]
fn one_node_machine_carries_udp_on_mio_tokio_and_smol() {
    let tmp = tempfile::tempdir().unwrap();
    let coordinator = addr();
    let mesh = LocalMesh::start(
        tmp.path(),
        Binaries::for_tests().unwrap(),
        MeshSpec {
            coordinator: CoordinatorSpec {
                listen: coordinator,
                status_listen: addr(),
                wrap: Vec::new(),
            },
            nodes: Vec::new(),
        },
    )
    .unwrap();
    let root = CertificateDer::from(read_cert(&tmp.path().join("root/root.crt")).unwrap());

    for runtime in [Runtime::Mio, Runtime::Tokio, Runtime::Smol] {
        let label = format!("{runtime:?}").to_lowercase();
        let names = [format!("{label}-a"), format!("{label}-b")];
        let services: Vec<UdpSocket> = (0..2)
            .map(|_| UdpSocket::bind((LOOPBACK, 0)).unwrap())
            .collect();
        let ingress: Vec<SocketAddr> = (0..2).map(|_| addr()).collect();
        let mut running = Running {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        let mut receivers = Vec::new();
        for i in 0..2 {
            let (name, peer) = (&names[i], &names[1 - i]);
            let out = mesh
                .tlctl()
                .args(["node", "invite", name, "--admit"])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            let token = String::from_utf8_lossy(&out.stdout)
                .lines()
                .last()
                .unwrap()
                .trim()
                .to_owned();
            let seed = [SEED.fetch_add(1, Ordering::Relaxed); 32];
            let key = pki::ed25519_pkcs8_from_seed(&seed);
            let csr = pki::node_csr(&key).unwrap();
            let config = NodeConfig {
                name: name.clone(),
                coordinators: vec![coordinator],
                coordinator_name: "coordinator".to_owned(),
                coordinator_names: Default::default(),
                root: root.clone(),
                credentials: Credentials::Enroll {
                    join_token: token,
                    key_pkcs8: key,
                    csr_der: csr,
                },
                control_bind: SocketAddr::new(LOOPBACK, 0),
                advertise_private: true,
                services: vec![ServiceSpec {
                    id: ServiceId(1),
                    name: "wg0".to_owned(),
                    target: services[i].local_addr().unwrap(),
                    peers: BTreeMap::from([(format!("{peer}/wg0"), ingress[i])]),
                }],
                uplinks: vec![UplinkSpec::new(UplinkId(0), "lo", LOOPBACK)],
                wall_clock: transitloom_runtime_mio::wall_clock_now(),
                timing: Default::default(),
                seed,
            };
            let (tx, rx) = mpsc::channel();
            let node = Node::new(config).unwrap();
            running
                .threads
                .push(spawn(runtime, node, running.stop.clone(), tx));
            receivers.push(rx);
        }
        for (name, rx) in names.iter().zip(&receivers) {
            wait_installed(name, rx);
        }

        // Datagrams of 1 to 1,400 bytes from a's service into a's ingress
        // arrive at b's service unchanged, from b's ingress. The path may
        // still be validating when the association is installed: allow the
        // first datagrams a retry.
        services[1]
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = [0u8; 2048];
        for i in 0..200usize {
            let payload: Vec<u8> = (0..(1 + i * 7 % 1_400)).map(|j| (i ^ j) as u8).collect();
            let mut attempts = 0;
            let (n, from) = loop {
                services[0].send_to(&payload, ingress[0]).unwrap();
                match services[1].recv_from(&mut buf) {
                    Ok(got) => break got,
                    Err(e) => {
                        attempts += 1;
                        assert!(i == 0 && attempts < 20, "{label}: datagram {i} lost: {e}");
                    }
                }
            };
            assert_eq!(&buf[..n], &payload[..], "{label}: datagram {i} altered");
            assert_eq!(from, ingress[1], "{label}: delivered from b's ingress");
        }
        drop(running);
    }
}
