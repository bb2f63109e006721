//! The mio driver of Transitloom: runs one proto-core [`StateMachine`] on the
//! calling thread over non-blocking UDP sockets, the way the node daemon
//! does. [`MioIo`] implements proto-core's [`UdpIo`] with quinn-udp
//! (recvmmsg and GRO on receive, GSO on send, each where the kernel has it)
//! and tracks mio's edge-triggered readiness per socket; [`MioDriver`] pumps
//! the machine and polls until a socket is readable or the machine's next
//! deadline, and a [`DriverHandle`] wakes or stops it from another thread.
//! Outgoing TCP streams carry the node's control session when UDP to the
//! coordinator is blocked. The quinn-udp layer ([`udp`]) and the clocks
//! ([`clock`]) are shared with the tokio and smol runtimes, so all three
//! move datagrams the same way.
//!
//! ```no_run
//! use transitloom_proto_core::probe::{Prober, ProberConfig, ProbeEvent};
//! use transitloom_runtime_mio::{wall_clock_now, MioDriver};
//!
//! # fn main() -> std::io::Result<()> {
//! let config = ProberConfig {
//!     local: "0.0.0.0:40112".parse().unwrap(),
//!     key: [7; 32],
//!     remotes: vec!["198.51.100.7:40112".parse().unwrap()],
//!     interval: std::time::Duration::from_millis(250),
//!     failed_after: 4,
//!     seed: 1,
//!     wall_clock: wall_clock_now(),
//! };
//! let mut driver = MioDriver::new(Prober::new(config))?;
//! let stop = driver.handle(); // `stop.stop()` from a signal thread ends the run
//! let mut events: Vec<ProbeEvent> = Vec::new();
//! driver.run(&mut events)?;
//! # drop(stop);
//! # Ok(())
//! # }
//! ```
//!
//! [`StateMachine`]: transitloom_proto_core::machine::StateMachine
//! [`UdpIo`]: transitloom_proto_core::driver::UdpIo

pub mod clock;
pub mod config;
mod driver;
pub mod fsutil;
pub mod http;
mod io;
pub mod logging;
pub mod node_daemon;
pub mod status;
mod stream;
pub mod tcp;
pub mod udp;

pub use clock::{wall_clock_now, SystemClock};
pub use driver::{DriverHandle, Exit, MioDriver, DEFAULT_BATCH, DEFAULT_BUDGET};
pub use io::{MioIo, WAKER_TOKEN};
