//! The coordinator's sans-IO state: the ordered operation log and the
//! registry it builds (admission, enrollment, admin-created associations),
//! and the machine that serves node and admin sessions over QUIC.

mod assoc;
mod lapse;
pub mod machine;
pub mod reflector;
pub mod registry;
mod relay_place;
pub mod replica;
mod throttle;

#[cfg(test)]
mod tests;

pub use crate::relay::RelayHosting;
pub use machine::RelayPlacement;
pub use machine::{
    Coordinator, CoordinatorConfig, CoordinatorCounters, CoordinatorError, CoordinatorEvent,
    PUNCH_LEAD_MAX, PUNCH_LEAD_MIN,
};
pub use throttle::HandshakeLimit;
