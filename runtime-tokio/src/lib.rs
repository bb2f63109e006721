//! The tokio driver of Transitloom: runs one proto-core [`StateMachine`] as
//! a task of a tokio runtime, as the coordinator does. [`TokioIo`]
//! implements proto-core's [`UdpIo`] over `tokio::net::UdpSocket`s with the
//! same quinn-udp batching as the mio runtime (recvmmsg and GRO on receive,
//! GSO on send), receiving inside `try_io` so tokio's readiness stays exact;
//! [`TokioDriver`] pumps the machine and awaits any readable socket or the
//! machine's next deadline. Its futures are cancel-safe, so a run is stopped
//! by `tokio::select!` or by the condition given to
//! [`TokioDriver::run_until`].
//!
//! The crate's binaries are built from it: `transitloom-coordinator`
//! ([`coordinator_daemon`]: configuration, PKI checks, the durable
//! operation log in [`oplog`], status pages) and `tlctl` ([`root_authority`]
//! and [`pki_files`] for `tlctl pki …`, [`admin_session`] for the admin
//! commands that talk to a coordinator).
//!
//! ```no_run
//! use transitloom_proto_core::probe::{Prober, ProberConfig, ProbeEvent};
//! use transitloom_runtime_tokio::{wall_clock_now, TokioDriver};
//!
//! # async fn node() {
//! let config = ProberConfig {
//!     local: "0.0.0.0:40112".parse().unwrap(),
//!     key: [7; 32],
//!     remotes: vec!["198.51.100.7:40112".parse().unwrap()],
//!     interval: std::time::Duration::from_millis(250),
//!     failed_after: 4,
//!     seed: 1,
//!     wall_clock: wall_clock_now(),
//! };
//! let mut driver = TokioDriver::new(Prober::new(config));
//! let mut events: Vec<ProbeEvent> = Vec::new();
//! let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
//! loop {
//!     tokio::select! {
//!         _ = driver.run_until(&mut events, None, |_, events| !events.is_empty()) => {
//!             for event in events.drain(..) {
//!                 println!("{event:?}");
//!             }
//!         }
//!         _ = tick.tick() => println!("{:?}", driver.machine().counters()),
//!     }
//! }
//! # }
//! ```
//!
//! [`StateMachine`]: transitloom_proto_core::machine::StateMachine
//! [`UdpIo`]: transitloom_proto_core::driver::UdpIo

mod driver;
mod io;
mod stream;

pub use driver::{Exit, TokioDriver};
pub use io::TokioIo;
pub use transitloom_runtime_mio::clock::{wall_clock_now, SystemClock};
pub mod admin_session;
pub mod coordinator_daemon;
pub mod oplog;
pub mod pki_files;
pub mod raft_store;
pub mod root_authority;
