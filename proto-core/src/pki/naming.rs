//! Names in the mesh PKI. Every certificate carries its role in a DNS
//! subject alternative name under the reserved `transitloom` domain:
//!
//! | role        | subject CN | DNS SANs                                      |
//! |-------------|------------|-----------------------------------------------|
//! | node        | `NAME`     | `NAME.node.transitloom`                       |
//! | coordinator | `NAME`     | `NAME`, `NAME.coordinator.transitloom`        |
//! | admin       | `NAME`     | `NAME.admin.transitloom`                      |
//!
//! The SAN, not the CN, is what identifies a peer: webpki checks SANs
//! against the intermediates' name constraints, so a coordinator's
//! intermediate cannot mint an admin or another coordinator's identity.
//!
//! Node and admin names are one lowercase DNS label (node names also appear
//! in join tokens); coordinator names are lowercase DNS names (the server
//! certificate names the coordinator's host), outside the reserved domain.

use thiserror::Error;

/// The reserved domain under which roles are named.
pub const MESH_DOMAIN: &str = "transitloom";
/// The domain of node identities: `NAME.node.transitloom`.
pub const NODE_DOMAIN: &str = "node.transitloom";
/// The domain of coordinator identities: `NAME.coordinator.transitloom`.
pub const COORDINATOR_DOMAIN: &str = "coordinator.transitloom";
/// The domain of admin identities: `NAME.admin.transitloom`.
pub const ADMIN_DOMAIN: &str = "admin.transitloom";
/// Longest node name: one DNS label.
pub const MAX_NODE_NAME_LEN: usize = 63;
/// Longest admin name: one DNS label.
pub const MAX_ADMIN_NAME_LEN: usize = 63;
/// Longest coordinator name, so that its role name is still a DNS name
/// (253 bytes at most).
pub const MAX_COORDINATOR_NAME_LEN: usize = 253 - 1 - COORDINATOR_DOMAIN.len();

/// Why a name cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NameError {
    /// The name is empty.
    #[error("the name is empty")]
    Empty,
    /// The name is longer than allowed.
    #[error("the name is longer than {max} bytes")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// A character outside `a-z`, `0-9`, `-` (and `.` between labels).
    #[error("the name contains {0:?}: use lowercase letters, digits and '-'")]
    BadCharacter(char),
    /// A label starts or ends with `-`.
    #[error("a name or label cannot start or end with '-'")]
    HyphenAtEdge,
    /// Two dots in a row, or a dot at either end.
    #[error("the name has an empty label")]
    EmptyLabel,
    /// A label longer than 63 bytes.
    #[error("a label is longer than 63 bytes")]
    LabelTooLong,
    /// The name is inside the reserved `transitloom` domain.
    #[error("names in the reserved domain `{MESH_DOMAIN}` are not allowed")]
    Reserved,
}

fn check_label(label: &str) -> Result<(), NameError> {
    if label.is_empty() {
        return Err(NameError::EmptyLabel);
    }
    if label.len() > 63 {
        return Err(NameError::LabelTooLong);
    }
    if let Some(bad) = label
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(NameError::BadCharacter(bad));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(NameError::HyphenAtEdge);
    }
    Ok(())
}

/// Checks a node name: one lowercase DNS label (`a-z`, `0-9`, inner `-`).
///
/// # Errors
/// The first rule the name breaks.
pub fn validate_node_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NODE_NAME_LEN {
        return Err(NameError::TooLong {
            max: MAX_NODE_NAME_LEN,
        });
    }
    if let Some(bad) = name.chars().find(|&c| c == '.') {
        return Err(NameError::BadCharacter(bad));
    }
    check_label(name)
}

/// Checks an admin name: the same rules as a node name.
///
/// # Errors
/// The first rule the name breaks.
pub fn validate_admin_name(name: &str) -> Result<(), NameError> {
    validate_node_name(name)
}

/// Checks a coordinator name: a lowercase DNS name outside the reserved
/// domain (`coord-1`, `coord-1.example.net`).
///
/// # Errors
/// The first rule the name breaks.
pub fn validate_coordinator_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_COORDINATOR_NAME_LEN {
        return Err(NameError::TooLong {
            max: MAX_COORDINATOR_NAME_LEN,
        });
    }
    name.split('.').try_for_each(check_label)?;
    if name == MESH_DOMAIN || name.ends_with(&format!(".{MESH_DOMAIN}")) {
        return Err(NameError::Reserved);
    }
    Ok(())
}

/// The DNS SAN of a node certificate: `NAME.node.transitloom`.
pub fn node_dns_name(name: &str) -> String {
    format!("{name}.{NODE_DOMAIN}")
}

/// The role SAN of a coordinator's server certificate:
/// `NAME.coordinator.transitloom`.
pub fn coordinator_dns_name(name: &str) -> String {
    format!("{name}.{COORDINATOR_DOMAIN}")
}

/// The DNS SAN of an admin certificate: `NAME.admin.transitloom`.
pub fn admin_dns_name(name: &str) -> String {
    format!("{name}.{ADMIN_DOMAIN}")
}

/// The (non-empty) name in front of `.domain` in `dns_name`.
pub(crate) fn name_under<'a>(dns_name: &'a str, domain: &str) -> Option<&'a str> {
    let prefix = dns_name.strip_suffix(domain)?.strip_suffix('.')?;
    (!prefix.is_empty()).then_some(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names() {
        for good in ["alpha", "a", "node-7", "0", &"x".repeat(63)] {
            assert_eq!(validate_node_name(good), Ok(()), "{good}");
            assert_eq!(validate_admin_name(good), Ok(()), "{good}");
        }
        let table: &[(&str, NameError)] = &[
            ("", NameError::Empty),
            (&"x".repeat(64), NameError::TooLong { max: 63 }),
            ("Alpha", NameError::BadCharacter('A')),
            ("al_pha", NameError::BadCharacter('_')),
            ("al.pha", NameError::BadCharacter('.')),
            ("-alpha", NameError::HyphenAtEdge),
            ("alpha-", NameError::HyphenAtEdge),
            ("é", NameError::BadCharacter('é')),
        ];
        for (name, error) in table {
            assert_eq!(validate_node_name(name).as_ref(), Err(error), "{name}");
        }
    }

    #[test]
    fn coordinator_names() {
        for good in ["coord-1", "coord-1.example.net", "a.b.c"] {
            assert_eq!(validate_coordinator_name(good), Ok(()), "{good}");
        }
        let table: &[(&str, NameError)] = &[
            ("", NameError::Empty),
            ("a..b", NameError::EmptyLabel),
            (".a", NameError::EmptyLabel),
            ("a.", NameError::EmptyLabel),
            ("a.-b", NameError::HyphenAtEdge),
            ("A.b", NameError::BadCharacter('A')),
            ("transitloom", NameError::Reserved),
            ("x.node.transitloom", NameError::Reserved),
            (&"x".repeat(64), NameError::LabelTooLong),
        ];
        for (name, error) in table {
            assert_eq!(
                validate_coordinator_name(name).as_ref(),
                Err(error),
                "{name}"
            );
        }
        let long = [
            "x".repeat(60),
            "x".repeat(60),
            "x".repeat(60),
            "x".repeat(60),
        ]
        .join(".");
        assert!(matches!(
            validate_coordinator_name(&long),
            Err(NameError::TooLong { .. })
        ));
        assert!(coordinator_dns_name(&"x".repeat(MAX_COORDINATOR_NAME_LEN)).len() <= 253);
    }

    #[test]
    fn role_names_round_trip() {
        assert_eq!(node_dns_name("alpha"), "alpha.node.transitloom");
        assert_eq!(
            name_under("alpha.node.transitloom", NODE_DOMAIN),
            Some("alpha")
        );
        assert_eq!(name_under("a.b.node.transitloom", NODE_DOMAIN), Some("a.b"));
        assert_eq!(name_under("node.transitloom", NODE_DOMAIN), None);
        assert_eq!(name_under(".node.transitloom", NODE_DOMAIN), None);
        assert_eq!(name_under("alphanode.transitloom", NODE_DOMAIN), None);
        assert_eq!(
            name_under(&admin_dns_name("ops"), ADMIN_DOMAIN),
            Some("ops")
        );
        assert_eq!(coordinator_dns_name("c1"), "c1.coordinator.transitloom");
    }
}
