//! Throw-away meshes of real Transitloom processes.
//!
//! [`localmesh`] makes a private PKI with `tlctl`, starts a real
//! `transitloom-coordinator`, enrolls real `transitloom-node` processes with
//! join tokens and waits until their associations are up. `tlctl
//! quickstart`, the whole-process tests and the whole-process benchmarks all
//! stand on it, so what they exercise is exactly what an operator runs.
//!
//! Every process can be started through a command prefix (`wrap`), such as
//! `ip netns exec NS`, so the same mesh runs inside network namespaces.

pub mod localmesh;
pub mod netns;
pub mod quickstart;

pub use localmesh::{
    free_port, service_socket, wait_for, Binaries, CoordinatorSpec, Error, LocalMesh, LoopbackPair,
    MeshSpec, NodeSpec, ServiceSpec,
};
