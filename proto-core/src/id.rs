//! Newtype identifiers, so a path id can never be passed where an association
//! id is expected.

use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident($inner:ty), $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub $inner);

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    };
}

id_type!(
    /// A node of the mesh, as numbered by the coordinator.
    NodeId(u64), "node#"
);
id_type!(
    /// A local service a node exposes (for example one WireGuard interface).
    ServiceId(u32), "svc#"
);
id_type!(
    /// An association between a local and a remote service, assigned by the coordinator.
    AssocId(u64), "assoc#"
);
id_type!(
    /// A path of one association: a local mesh socket and a remote address.
    PathId(u32), "path#"
);
id_type!(
    /// A WAN uplink of a node.
    UplinkId(u16), "uplink#"
);
id_type!(
    /// A UDP socket owned by a state machine and opened for it by the driver.
    SocketId(u32), "sock#"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_with_their_kind() {
        assert_eq!(AssocId(7).to_string(), "assoc#7");
        assert_eq!(format!("{:?}", SocketId(3)), "sock#3");
    }
}
