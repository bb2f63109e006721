//! A deterministic discrete-event network simulator that runs the real
//! proto-core state machines in virtual time (DESIGN §10).
//!
//! A [`world::World`] holds hosts, segments, wires made of two one-way
//! [`link::Link`]s (delay, jitter, loss, rate with a drop-tail queue, MTU,
//! duplication, reordering, down/up) and RFC 4787 [`nat::NatBox`]es. Hosts
//! run any [`transitloom_proto_core::StateMachine`] through the same driver
//! contract and pump as the runtimes. The same seed gives the same run, which
//! the [`trace::TraceHash`] proves.

pub mod apps;
pub mod link;
pub mod nat;
pub mod plot;
pub mod scenario;
pub mod trace;
pub mod world;

/// Why a simulation could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// Impossible link parameters.
    #[error(transparent)]
    Link(#[from] link::LinkError),
    /// Impossible NAT parameters.
    #[error(transparent)]
    Nat(#[from] nat::NatError),
    /// An impossible topology (address clash, unknown element).
    #[error("topology: {0}")]
    Topology(String),
    /// A scenario parameter that is unknown or out of range.
    #[error("parameter {name}: {reason}")]
    Param {
        /// The parameter as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No scenario by that name.
    #[error("no scenario named {0:?} (see `tl-sim list`)")]
    UnknownScenario(String),
}
