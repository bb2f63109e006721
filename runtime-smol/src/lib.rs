//! The smol driver of Transitloom: embeds a node — any proto-core
//! [`StateMachine`] — in a program built on async-io or smol. [`SmolIo`]
//! implements proto-core's [`UdpIo`] over `Async<std::net::UdpSocket>` with
//! the same quinn-udp batching as the other runtimes (recvmmsg and GRO on
//! receive, GSO on send); [`SmolDriver`] needs no runtime of its own, only
//! async-io's reactor. Its API is three calls: [`SmolDriver::pump`] moves
//! what is ready and hands events and delivered payloads to a sink such as a
//! [`Mailbox`], [`SmolDriver::wait`] sleeps until the network or the
//! machine's next deadline and is cancel-safe, so the program races it
//! against its own futures, and [`SmolDriver::machine_mut`] gives commands
//! (the next pump sends what they queue).
//!
//! ```no_run
//! use bytes::Bytes;
//! use smol::{channel, future};
//! use transitloom_proto_core::probe::{Prober, ProberConfig, ProbeEvent};
//! use transitloom_runtime_smol::{wall_clock_now, Mailbox, SmolDriver};
//!
//! let config = ProberConfig {
//!     local: "0.0.0.0:40112".parse().unwrap(),
//!     key: [7; 32],
//!     remotes: vec!["198.51.100.7:40112".parse().unwrap()],
//!     interval: std::time::Duration::from_millis(250),
//!     failed_after: 4,
//!     seed: 1,
//!     wall_clock: wall_clock_now(),
//! };
//! let (to_mesh, from_app) = channel::bounded::<Bytes>(64);
//! # drop(to_mesh);
//! smol::block_on(async {
//!     let mut driver = SmolDriver::new(Prober::new(config));
//!     let mut mailbox: Mailbox<ProbeEvent> = Mailbox::new();
//!     loop {
//!         driver.pump(&mut mailbox);
//!         for (_service, payload) in mailbox.delivered.drain(..) {
//!             println!("from the mesh: {} bytes", payload.len());
//!         }
//!         mailbox.events.clear();
//!         // Whichever comes first: the program's next payload, or the network.
//!         let app = async { Some(from_app.recv().await) };
//!         let net = async {
//!             driver.wait(None).await;
//!             None
//!         };
//!         match future::or(app, net).await {
//!             Some(Ok(payload)) => {
//!                 driver.machine_mut().send_data(payload);
//!             }
//!             Some(Err(_closed)) => break,
//!             None => {}
//!         }
//!     }
//! });
//! ```
//!
//! [`StateMachine`]: transitloom_proto_core::machine::StateMachine
//! [`UdpIo`]: transitloom_proto_core::driver::UdpIo

mod driver;
mod io;
mod mailbox;

pub use driver::{Exit, SmolDriver};
pub use io::SmolIo;
pub use mailbox::Mailbox;
pub use transitloom_runtime_mio::clock::{wall_clock_now, SystemClock};
