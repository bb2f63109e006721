//! Ingress ports that survive restarts: an explicit `ingress` wins; otherwise
//! a port is derived from the service's range by hashing the association's
//! names, probing upward past ports already taken, and the result is kept in
//! `DATA_DIR/ingress.toml` so WireGuard's `Endpoint` never goes stale.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::toml_walk::Section;
use super::{ConfigError, NodeConfig};
use crate::fsutil::write_atomic;

/// The file, inside the data directory.
pub const INGRESS_FILE: &str = "ingress.toml";

/// Ingress addresses by (service, peer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngressTable {
    entries: BTreeMap<(String, String), SocketAddr>,
}

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl IngressTable {
    /// Reads the table kept in `data_dir` (empty when there is none yet).
    ///
    /// # Errors
    /// When the file exists but cannot be read or is not a valid table.
    pub fn load(data_dir: &Path) -> Result<Self, ConfigError> {
        let file = data_dir.join(INGRESS_FILE);
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(err) => {
                return Err(ConfigError {
                    file,
                    key: "(file)".to_owned(),
                    reason: format!("cannot be read: {err}"),
                })
            }
        };
        let fail = |key: String, reason: String| ConfigError {
            file: file.clone(),
            key,
            reason,
        };
        let table: toml::Table = text.parse().map_err(|err: toml::de::Error| {
            fail(
                "(syntax)".to_owned(),
                err.to_string().trim().replace('\n', " "),
            )
        })?;
        let root = Section::new("", &table);
        root.only(&["ingress"]).map_err(|e| fail(e.key, e.reason))?;
        let mut entries = BTreeMap::new();
        for entry in root.tables("ingress").map_err(|e| fail(e.key, e.reason))? {
            let read = || -> Result<_, super::toml_walk::KeyError> {
                entry.only(&["service", "peer", "addr"])?;
                Ok((
                    entry.str("service")?.to_owned(),
                    entry.str("peer")?.to_owned(),
                    entry.socket_addr("addr")?,
                ))
            };
            let (service, peer, addr) = read().map_err(|e| fail(e.key, e.reason))?;
            entries.insert((service, peer), addr);
        }
        Ok(Self { entries })
    }

    /// Assigns an ingress address to every association of `config`, in
    /// config order, reusing kept assignments that are still valid.
    ///
    /// # Errors
    /// When a service's range has no free port left.
    pub fn assign(&mut self, config: &NodeConfig) -> Result<Vec<SocketAddr>, ConfigError> {
        let mut taken: BTreeMap<SocketAddr, usize> = BTreeMap::new();
        let mut result: Vec<Option<SocketAddr>> = vec![None; config.associations.len()];
        // Explicit addresses first: they always win.
        for (i, a) in config.associations.iter().enumerate() {
            if let Some(addr) = a.ingress {
                taken.insert(addr, i);
                result[i] = Some(addr);
            }
        }
        // Then kept assignments still inside their range and not taken.
        for (i, a) in config.associations.iter().enumerate() {
            if result[i].is_some() {
                continue;
            }
            let range = config.service(&a.service).expect("validated").ingress_range;
            if let Some(&addr) = self.entries.get(&(a.service.clone(), a.peer())) {
                if range.contains(addr) && !taken.contains_key(&addr) {
                    taken.insert(addr, i);
                    result[i] = Some(addr);
                }
            }
        }
        // Then derive the rest.
        for (i, a) in config.associations.iter().enumerate() {
            if result[i].is_some() {
                continue;
            }
            let range = config.service(&a.service).expect("validated").ingress_range;
            let size = u64::from(range.high - range.low) + 1;
            let start = fnv(&format!("{}\u{0}{}", a.service, a.peer())) % size;
            let free = (0..size)
                .map(|k| SocketAddr::new(range.ip, range.low + ((start + k) % size) as u16))
                .find(|addr| !taken.contains_key(addr));
            let Some(addr) = free else {
                let index = config
                    .services
                    .iter()
                    .position(|s| s.name == a.service)
                    .unwrap_or(0);
                return Err(ConfigError {
                    file: config.file.clone(),
                    key: format!("service[{index}].ingress_range"),
                    reason: format!(
                        "no free port left for association[{i}] ({} to {})",
                        a.service,
                        a.peer()
                    ),
                });
            };
            taken.insert(addr, i);
            result[i] = Some(addr);
        }
        for (a, addr) in config.associations.iter().zip(&result) {
            self.entries
                .insert((a.service.clone(), a.peer()), addr.expect("assigned above"));
        }
        Ok(result
            .into_iter()
            .map(|a| a.expect("assigned above"))
            .collect())
    }

    /// The address kept for (service, peer).
    pub fn get(&self, service: &str, peer: &str) -> Option<SocketAddr> {
        self.entries
            .get(&(service.to_owned(), peer.to_owned()))
            .copied()
    }

    /// Writes the table into `data_dir`, atomically.
    ///
    /// # Errors
    /// The I/O error, with the file's path.
    pub fn save(&self, data_dir: &Path) -> std::io::Result<PathBuf> {
        let mut text = String::from(
            "# Ingress addresses assigned to associations. Kept so that a WireGuard\n\
             # Endpoint pointing at one stays valid across restarts. Managed by\n\
             # transitloom-node; an explicit `ingress` in the config overrides it.\n",
        );
        for ((service, peer), addr) in &self.entries {
            text.push_str(&format!(
                "\n[[ingress]]\nservice = {service:?}\npeer = {peer:?}\naddr = \"{addr}\"\n"
            ));
        }
        let file = data_dir.join(INGRESS_FILE);
        write_atomic(&file, text.as_bytes(), 0o644)?;
        Ok(file)
    }
}
