//! Sans-IO state machines of the Transitloom overlay mesh.
//!
//! Nothing in this crate opens a socket, reads a clock or asks the operating
//! system for randomness: time comes in as `now`, wall-clock time as a
//! [`time::WallClock`] anchor, randomness from a seed given to each
//! constructor, and datagrams through [`machine::Input`]. A clippy
//! `disallowed-methods` list (`proto-core/clippy.toml`) keeps it that way.
//!
//! Every machine has one shape ([`machine::StateMachine`]):
//! `handle_input(now, input)`, `handle_timeout(now)`, `poll_output()` and
//! `poll_timeout()`. A driver runs it like this — the runtimes and the
//! simulator all do exactly this, through [`driver::Pump`]:
//!
//! ```no_run
//! use std::time::{Duration, Instant};
//! use transitloom_proto_core::driver::{Clock, Pump, UdpIo};
//! use transitloom_proto_core::machine::StateMachine;
//!
//! fn run<M: StateMachine>(
//!     machine: &mut M,
//!     io: &mut impl UdpIo,
//!     clock: &impl Clock,
//!     wait_readable_until: impl Fn(Option<Instant>),
//! ) where
//!     M::Event: std::fmt::Debug,
//! {
//!     let mut pump = Pump::new(32, 1024);
//!     let mut events = Vec::new();
//!     loop {
//!         // Receive until every socket would block (or the budget is
//!         // spent), feed each datagram with `handle_input(now, ..)`, fire
//!         // due timers with `handle_timeout(now)`, and drain `poll_output`
//!         // until `None`: transmits go to the sockets, events to the sink.
//!         let report = pump.run(machine, io, clock, &mut events);
//!         for event in events.drain(..) {
//!             println!("{event:?}");
//!         }
//!         if !report.more_pending {
//!             // Sleep until a socket is readable or the next deadline.
//!             wait_readable_until(report.next_deadline);
//!         }
//!     }
//! }
//! ```

pub mod admin;
pub mod control;
pub mod coordinator;
pub mod csprng;
pub mod dataplane;
pub mod driver;
#[doc(hidden)]
pub mod fuzzing;
pub mod id;
pub mod machine;
pub mod node;
pub mod pki;
pub mod probe;
pub mod relay;
pub mod replay;
pub mod rng;
pub mod time;
pub mod timer;
pub mod wire;

#[cfg(feature = "lint-proof")]
mod lint_proof;

pub use id::{AssocId, NodeId, PathId, ServiceId, SocketId, UplinkId};
pub use machine::{Datagram, Input, Output, StateMachine, StreamId, Transmit};

/// A fixed starting instant for unit tests; the only clock read in this
/// crate, and only in tests.
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
pub(crate) fn test_epoch() -> std::time::Instant {
    std::time::Instant::now()
}
