//! The coordinator's sans-IO state: the ordered operation log and the
//! registry it builds (admission, enrollment, admin-created associations).

pub mod registry;
