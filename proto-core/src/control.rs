//! The control plane (DESIGN §4, §5): the control message codec, the QUIC
//! transport with mutual TLS, its TCP + TLS fallback behind one session
//! abstraction ([`transport`]), admission and join tokens.

pub mod msg;
pub mod quic;
pub mod tls_config;
pub mod token;
pub mod transport;
