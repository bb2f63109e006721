//! Typed reads from a parsed TOML table that name the exact key on failure,
//! and refuse keys the schema does not know.

use std::net::{IpAddr, SocketAddr};

use toml::{Table, Value};

/// Where a value sits in the file (`uplink[1].bind`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// The dotted key path.
    pub key: String,
    /// Why it was refused.
    pub reason: String,
}

pub type KeyResult<T> = Result<T, KeyError>;

pub fn key_error(key: impl Into<String>, reason: impl Into<String>) -> KeyError {
    KeyError {
        key: key.into(),
        reason: reason.into(),
    }
}

/// A table being read, with its path for error messages.
#[derive(Debug)]
pub struct Section<'a> {
    pub path: String,
    table: &'a Table,
}

impl<'a> Section<'a> {
    pub fn new(path: impl Into<String>, table: &'a Table) -> Self {
        Self {
            path: path.into(),
            table,
        }
    }

    pub fn key(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    /// Refuses any key not in `known`.
    pub fn only(&self, known: &[&str]) -> KeyResult<()> {
        for key in self.table.keys() {
            if !known.contains(&key.as_str()) {
                return Err(key_error(
                    self.key(key),
                    format!("unknown key (expected one of: {})", known.join(", ")),
                ));
            }
        }
        Ok(())
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.table.get(name)
    }

    fn wrong_type(&self, name: &str, want: &str, got: &Value) -> KeyError {
        key_error(
            self.key(name),
            format!("expected {want}, found {}", got.type_str()),
        )
    }

    pub fn opt_str(&self, name: &str) -> KeyResult<Option<&'a str>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.wrong_type(name, "a string", other)),
        }
    }

    pub fn str(&self, name: &str) -> KeyResult<&'a str> {
        self.opt_str(name)?
            .ok_or_else(|| key_error(self.key(name), "missing (required)"))
    }

    pub fn opt_bool(&self, name: &str) -> KeyResult<Option<bool>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Boolean(b)) => Ok(Some(*b)),
            Some(other) => Err(self.wrong_type(name, "true or false", other)),
        }
    }

    pub fn opt_f64(&self, name: &str) -> KeyResult<Option<f64>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Float(f)) => Ok(Some(*f)),
            Some(Value::Integer(i)) => Ok(Some(*i as f64)),
            Some(other) => Err(self.wrong_type(name, "a number", other)),
        }
    }

    /// An integer within `min..=max`.
    pub fn opt_u64(&self, name: &str, min: u64, max: u64) -> KeyResult<Option<u64>> {
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

    /// An address with a non-zero port: a daemon listening on an ephemeral
    /// port could not be found by anyone.
    pub fn listen_addr(&self, name: &str) -> KeyResult<Option<SocketAddr>> {
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

    pub fn str_list(&self, name: &str) -> KeyResult<Vec<&'a str>> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.as_str()),
                    other => Err(key_error(
                        format!("{}[{i}]", self.key(name)),
                        format!("expected a string, found {}", other.type_str()),
                    )),
                })
                .collect(),
            Some(other) => Err(self.wrong_type(name, "a list of strings", other)),
        }
    }

    /// A `[name]` table (absent: empty).
    pub fn opt_table(&self, name: &str) -> KeyResult<Option<Section<'a>>> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Table(t)) => Ok(Some(Section::new(self.key(name), t))),
            Some(other) => Err(self.wrong_type(name, "a table", other)),
        }
    }

    /// A `[[name]]` array of tables (absent: empty).
    pub fn tables(&self, name: &str) -> KeyResult<Vec<Section<'a>>> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::Table(t) => Ok(Section::new(format!("{}[{i}]", self.key(name)), t)),
                    other => Err(key_error(
                        format!("{}[{i}]", self.key(name)),
                        format!("expected a table, found {}", other.type_str()),
                    )),
                })
                .collect(),
            Some(other) => Err(self.wrong_type(name, "an array of tables ([[...]])", other)),
        }
    }

    pub fn socket_addr(&self, name: &str) -> KeyResult<SocketAddr> {
        let text = self.str(name)?;
        parse_socket_addr(text).map_err(|reason| key_error(self.key(name), reason))
    }

    pub fn opt_socket_addr(&self, name: &str) -> KeyResult<Option<SocketAddr>> {
        self.opt_str(name)?
            .map(|text| parse_socket_addr(text).map_err(|reason| key_error(self.key(name), reason)))
            .transpose()
    }

    pub fn opt_ip(&self, name: &str) -> KeyResult<Option<IpAddr>> {
        self.opt_str(name)?
            .map(|text| {
                text.parse::<IpAddr>().map_err(|_| {
                    key_error(self.key(name), format!("{text:?} is not an IP address"))
                })
            })
            .transpose()
    }

    /// One of `words`, or `default` when absent.
    pub fn word<'w>(&self, name: &str, words: &[&'w str], default: &'w str) -> KeyResult<&'w str> {
        let Some(text) = self.opt_str(name)? else {
            return Ok(default);
        };
        words.iter().copied().find(|w| *w == text).ok_or_else(|| {
            key_error(
                self.key(name),
                format!("{text:?} is not one of: {}", words.join(", ")),
            )
        })
    }
}

pub fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>().map_err(|_| {
        format!(
            "{text:?} is not an address with a port (like 192.0.2.1:7443 or [2001:db8::1]:7443)"
        )
    })
}

/// Mesh names: 1 to 63 characters of `a-z 0-9 . _ -`.
pub fn check_name(key: &str, name: &str) -> KeyResult<()> {
    if name.is_empty() || name.len() > 63 {
        return Err(key_error(
            key,
            format!("{name:?} must be 1 to 63 characters"),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        return Err(key_error(
            key,
            format!("{name:?} has {c:?}; names use only a-z, 0-9, '.', '_' and '-'"),
        ));
    }
    Ok(())
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
