//! Typed reads from a parsed TOML table that name the exact key on failure
//! and refuse keys the schema does not know. (The node's reader in
//! runtime-mio is private to that crate; this is the coordinator's.)

use std::net::{IpAddr, SocketAddr};

use toml::{Table, Value};

/// A refused value: its dotted key (`relay.port_range`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyError {
    pub(crate) key: String,
    pub(crate) reason: String,
}

pub(crate) type KeyResult<T> = Result<T, KeyError>;

pub(crate) fn key_error(key: impl Into<String>, reason: impl Into<String>) -> KeyError {
    KeyError {
        key: key.into(),
        reason: reason.into(),
    }
}

/// A table being read, with its path for error messages.
#[derive(Debug)]
pub(crate) struct Section<'a> {
    path: String,
    table: &'a Table,
}

impl<'a> Section<'a> {
    pub(crate) fn new(path: impl Into<String>, table: &'a Table) -> Self {
        Self {
            path: path.into(),
            table,
        }
    }

    /// The dotted name of `name` inside this table.
    pub(crate) fn key(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    /// Refuses any key not in `known`.
    pub(crate) fn only(&self, known: &[&str]) -> KeyResult<()> {
        match self.table.keys().find(|k| !known.contains(&k.as_str())) {
            Some(unknown) => Err(key_error(
                self.key(unknown),
                format!("unknown key (expected one of: {})", known.join(", ")),
            )),
            None => Ok(()),
        }
    }

    fn wrong_type(&self, name: &str, want: &str, got: &Value) -> KeyError {
        key_error(
            self.key(name),
            format!("expected {want}, found {}", got.type_str()),
        )
    }

    pub(crate) fn opt_str(&self, name: &str) -> KeyResult<Option<&'a str>> {
        match self.table.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong_type(name, "a string", other)),
        }
    }

    pub(crate) fn str(&self, name: &str) -> KeyResult<&'a str> {
        self.opt_str(name)?
            .ok_or_else(|| key_error(self.key(name), "missing (required)"))
    }

    pub(crate) fn opt_bool(&self, name: &str) -> KeyResult<Option<bool>> {
        match self.table.get(name) {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(*b)),
            Some(other) => Err(self.wrong_type(name, "true or false", other)),
        }
    }

    /// An integer within `min..=max`.
    pub(crate) fn opt_u64(&self, name: &str, min: u64, max: u64) -> KeyResult<Option<u64>> {
        let value = match self.table.get(name) {
            None => return Ok(None),
            Some(Value::Integer(i)) => *i,
            Some(other) => return Err(self.wrong_type(name, "a whole number", other)),
        };
        match u64::try_from(value) {
            Ok(v) if (min..=max).contains(&v) => Ok(Some(v)),
            _ => Err(key_error(
                self.key(name),
                format!("{value} is outside {min} to {max}"),
            )),
        }
    }

    /// A `[name]` table, if present.
    pub(crate) fn opt_table(&self, name: &str) -> KeyResult<Option<Section<'a>>> {
        match self.table.get(name) {
            None => Ok(None),
            Some(Value::Table(t)) => Ok(Some(Section::new(self.key(name), t))),
            Some(other) => Err(self.wrong_type(name, "a table", other)),
        }
    }

    /// An address with a non-zero port: a daemon listening on an ephemeral
    /// port could not be found by anyone.
    pub(crate) fn listen_addr(&self, name: &str) -> KeyResult<Option<SocketAddr>> {
        let Some(text) = self.opt_str(name)? else {
            return Ok(None);
        };
        let addr: SocketAddr = text.parse().map_err(|_| {
            key_error(
                self.key(name),
                format!("{text:?} is not an address with a port (like 0.0.0.0:7443 or [::]:7443)"),
            )
        })?;
        if addr.port() == 0 {
            return Err(key_error(
                self.key(name),
                format!("{addr}: port 0 would be a different port at every start"),
            ));
        }
        if addr.ip().is_multicast() {
            return Err(key_error(
                self.key(name),
                format!("{} is a multicast address", addr.ip()),
            ));
        }
        Ok(Some(addr))
    }

    pub(crate) fn opt_ip(&self, name: &str) -> KeyResult<Option<IpAddr>> {
        self.opt_str(name)?
            .map(|text| {
                text.parse::<IpAddr>().map_err(|_| {
                    key_error(self.key(name), format!("{text:?} is not an IP address"))
                })
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Table {
        text.parse().unwrap()
    }

    #[test]
    fn errors_name_the_dotted_key() {
        let t = table("a = 1\n[relay]\nport = \"x\"\n");
        let root = Section::new("", &t);
        assert_eq!(root.str("a").unwrap_err().key, "a");
        assert_eq!(root.str("b").unwrap_err().reason, "missing (required)");
        let relay = root.opt_table("relay").unwrap().unwrap();
        assert_eq!(relay.only(&["data"]).unwrap_err().key, "relay.port");
        assert_eq!(relay.opt_u64("port", 1, 2).unwrap_err().key, "relay.port");
    }

    #[test]
    fn integers_are_range_checked() {
        let t = table("n = 5\nm = -1\nf = 1.5\n");
        let root = Section::new("", &t);
        assert_eq!(root.opt_u64("n", 1, 10).unwrap(), Some(5));
        assert!(root.opt_u64("n", 6, 10).is_err());
        assert!(root.opt_u64("m", 0, 10).is_err());
        assert!(root
            .opt_u64("f", 0, 10)
            .unwrap_err()
            .reason
            .contains("whole number"));
        assert_eq!(root.opt_u64("absent", 0, 10).unwrap(), None);
    }

    #[test]
    fn listen_addresses_need_a_real_port() {
        let t = table("a = \"127.0.0.1:0\"\nb = \"localhost:7443\"\nc = \"[::1]:7443\"\n");
        let root = Section::new("", &t);
        assert!(root.listen_addr("a").unwrap_err().reason.contains("port 0"));
        assert!(root.listen_addr("b").is_err());
        assert_eq!(
            root.listen_addr("c").unwrap(),
            Some("[::1]:7443".parse().unwrap())
        );
    }
}
