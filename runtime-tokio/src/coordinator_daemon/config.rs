//! The coordinator's TOML configuration (DESIGN §11), parsed strictly: every
//! mistake is refused at start-up as `FILE: KEY: REASON` (exit 2).
//!
//! ```toml
//! name = "coordinator"              # the name in its certificate (issue-coordinator --name)
//! data_dir = "/var/lib/transitloom-coordinator"
//! listen = "0.0.0.0:7443"           # UDP (QUIC); TCP fallback not built yet
//! pki_dir = "pki"                   # from `tlctl pki issue-coordinator --out`
//! root_ca = "root.crt"
//! status_listen = "127.0.0.1:7481"  # optional
//! token_lifetime_s = 600            # optional, 60 to 86400
//! node_cert_lifetime_s = 7776000    # optional, 60 s to 3650 days (default 90 days)
//! handshakes_per_s = 500            # optional, 1 to 100000: new sessions per second
//! reflectors = ["203.0.113.6:7443", "203.0.113.5:7444"] # optional, up to 4 more reflector addresses
//! assoc_key_lifetime_s = 86400      # optional, 60 s to 365 days: association keys are replaced after it
//!
//! [relay]                           # optional
//! data = true                       # relay for nodes whose NATs defeat a direct path
//! listen_ip = "203.0.113.5"         # where allocation ports bind (default: listen's IP)
//! advertise_ip = "203.0.113.5"      # what nodes send to (default: listen_ip)
//! port_range = "40000-40999"        # default: any port
//! quota_per_node = 16               # allocations one node may take part in (1 to max_allocations)
//! max_allocations = 1024            # allocations in all (1 to 65535, at most port_range's size)
//! rate_limit_mbps = 1000            # each relayed path, each direction (1 to 100000)
//! idle_timeout_s = 30               # a silent allocation is released after it (20 to 3600)
//!
//! [cluster]                         # optional: several coordinators, one replicated log
//! id = 1                            # this coordinator's replica id (1 to 65535), unique
//! [[cluster.peer]]                  # every other coordinator of the cluster
//! id = 2
//! name = "coordinator-b"            # the name in its certificate
//! addr = "192.0.2.12:7443"          # its `listen`
//! ```
//!
//! Relative paths resolve against the configuration file's folder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use transitloom_proto_core::control::msg::MAX_REFLECTORS;
use transitloom_proto_core::coordinator::machine::{
    ClusterPeer, DEFAULT_ASSOC_KEY_LIFETIME_S, DEFAULT_NODE_CERT_LIFETIME_S,
    MAX_ASSOC_KEY_LIFETIME_S, MAX_NODE_CERT_LIFETIME_S, MIN_ASSOC_KEY_LIFETIME_S,
    MIN_NODE_CERT_LIFETIME_S,
};
use transitloom_proto_core::coordinator::HandshakeLimit;
use transitloom_proto_core::pki::naming;
use transitloom_runtime_mio::config::ConfigError;

use transitloom_runtime_mio::config::relay::parse_relay;
pub use transitloom_runtime_mio::config::relay::{PortRange, RelaySettings};
use transitloom_runtime_mio::config::toml_walk::{key_error, KeyError, KeyResult, Section};

/// Default `status_listen` (the node's default is 7480).
pub const DEFAULT_STATUS_LISTEN: &str = "127.0.0.1:7481";
/// Default admission token lifetime (DESIGN §4: ten minutes).
pub const DEFAULT_TOKEN_LIFETIME_S: u64 = 600;
/// Shortest admission token lifetime: nodes refresh at half-life, so
/// anything shorter turns into refresh traffic.
pub const MIN_TOKEN_LIFETIME_S: u64 = 60;
/// Longest admission token lifetime: a revoked node's tokens die with the
/// epoch anyway, but a stolen token should not live for days.
pub const MAX_TOKEN_LIFETIME_S: u64 = 86_400;
/// Default handshake admission limit, new sessions per second.
pub const DEFAULT_HANDSHAKES_PER_S: u32 = HandshakeLimit::DEFAULT_PER_S;
/// The highest handshake admission limit accepted.
pub const MAX_HANDSHAKES_PER_S: u32 = 100_000;

/// A whole, validated coordinator configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoordinatorSettings {
    /// The file it came from.
    pub file: PathBuf,
    /// The coordinator's name: its certificate's and its tokens' issuer.
    pub name: String,
    /// Where the operation log lives.
    pub data_dir: PathBuf,
    /// The UDP address of the control plane (QUIC).
    pub listen: SocketAddr,
    /// Intermediate CA and TLS server certificate with their keys.
    pub pki_dir: PathBuf,
    /// The trust anchor that node and admin certificates chain to.
    pub root_ca: PathBuf,
    /// Where `/status` and `/metrics` are served.
    pub status_listen: SocketAddr,
    /// Admission token lifetime.
    pub token_lifetime_s: u64,
    /// How long the node certificates it issues (at enrollment and
    /// renewal) are valid; nodes renew at two thirds of it.
    pub node_cert_lifetime_s: u64,
    /// New sessions started per second at most (one second's worth may
    /// start back to back); excess attempts are refused before any TLS work
    /// and the nodes retry after their jittered backoff.
    pub handshakes_per_s: u32,
    /// Extra reflector addresses (DESIGN §5), each its own UDP socket:
    /// nodes compare what two reflector addresses saw to classify their
    /// NAT. Each must be an address nodes reach as it is.
    pub reflectors: Vec<SocketAddr>,
    /// How long an association key is used before the coordinator replaces
    /// it with a fresh one (a new epoch).
    pub assoc_key_lifetime_s: u64,
    /// The relay table.
    pub relay: RelaySettings,
    /// The other coordinators sharing the log, if any.
    pub cluster: Option<ClusterSettings>,
}

/// The `[cluster]` table: this coordinator's replica id and its peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// This coordinator's replica id.
    pub id: u64,
    /// Every other coordinator of the cluster.
    pub peers: Vec<ClusterPeer>,
}

/// The highest replica id accepted.
pub const MAX_REPLICA_ID: u64 = 65_535;
/// The most peers a cluster takes (a majority of more than seven
/// coordinators only slows every write).
pub const MAX_PEERS: usize = 6;

impl CoordinatorSettings {
    /// Reads and validates `file`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, the key and the reason.
    pub fn load(file: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|err| ConfigError {
            file: file.to_owned(),
            key: "(file)".to_owned(),
            reason: format!("cannot be read: {err}"),
        })?;
        Self::parse(file, &text)
    }

    /// Validates `text` as if read from `file`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, the key and the reason.
    pub fn parse(file: &Path, text: &str) -> Result<Self, ConfigError> {
        let table: toml::Table = text.parse().map_err(|err: toml::de::Error| ConfigError {
            file: file.to_owned(),
            key: "(syntax)".to_owned(),
            reason: err.to_string().trim().replace('\n', " "),
        })?;
        let base = file.parent().unwrap_or(Path::new("."));
        parse_root(file, base, &Section::new("", &table)).map_err(|e| at(file, e))
    }

    /// The operation log's path.
    pub fn oplog_path(&self) -> PathBuf {
        self.data_dir.join("oplog.redb")
    }

    /// The replicated log's path (a coordinator of a cluster).
    pub fn raft_path(&self) -> PathBuf {
        self.data_dir.join("raft.redb")
    }

    /// A [`ConfigError`] about `key` of this file.
    pub fn error(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        at(&self.file, key_error(key, reason))
    }
}

fn at(file: &Path, error: KeyError) -> ConfigError {
    ConfigError {
        file: file.to_owned(),
        key: error.key,
        reason: error.reason,
    }
}

fn resolve(base: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    }
}

fn parse_root(file: &Path, base: &Path, root: &Section<'_>) -> KeyResult<CoordinatorSettings> {
    root.only(&[
        "name",
        "data_dir",
        "listen",
        "pki_dir",
        "root_ca",
        "status_listen",
        "token_lifetime_s",
        "node_cert_lifetime_s",
        "handshakes_per_s",
        "reflectors",
        "assoc_key_lifetime_s",
        "relay",
        "cluster",
    ])?;
    let name = root.str("name")?;
    naming::validate_coordinator_name(name)
        .map_err(|e| key_error("name", format!("{name:?} is not a coordinator name: {e}")))?;

    let data_dir = root.str("data_dir")?;
    if data_dir.is_empty() {
        return Err(key_error("data_dir", "must not be empty"));
    }
    let data_dir = resolve(base, data_dir);
    if data_dir.exists() && !data_dir.is_dir() {
        return Err(key_error(
            "data_dir",
            format!("{} exists and is not a directory", data_dir.display()),
        ));
    }

    let listen = root
        .listen_addr("listen")?
        .ok_or_else(|| key_error("listen", "missing (required)"))?;

    let pki_dir = resolve(base, root.str("pki_dir")?);
    if !pki_dir.is_dir() {
        return Err(key_error(
            "pki_dir",
            format!(
                "{} is not a directory (make it with `tlctl pki issue-coordinator --out DIR`)",
                pki_dir.display()
            ),
        ));
    }
    let root_ca = resolve(base, root.str("root_ca")?);
    if !root_ca.is_file() {
        return Err(key_error(
            "root_ca",
            format!("{} does not exist or is not a file", root_ca.display()),
        ));
    }

    let status_listen = root
        .listen_addr("status_listen")?
        .unwrap_or_else(|| DEFAULT_STATUS_LISTEN.parse().expect("a valid default"));
    let token_lifetime_s = root
        .opt_u64(
            "token_lifetime_s",
            MIN_TOKEN_LIFETIME_S,
            MAX_TOKEN_LIFETIME_S,
        )?
        .unwrap_or(DEFAULT_TOKEN_LIFETIME_S);
    let node_cert_lifetime_s = root
        .opt_u64(
            "node_cert_lifetime_s",
            MIN_NODE_CERT_LIFETIME_S,
            MAX_NODE_CERT_LIFETIME_S,
        )?
        .unwrap_or(DEFAULT_NODE_CERT_LIFETIME_S);
    let handshakes_per_s = root
        .opt_u64("handshakes_per_s", 1, u64::from(MAX_HANDSHAKES_PER_S))?
        .map_or(DEFAULT_HANDSHAKES_PER_S, |v| {
            u32::try_from(v).expect("bounded above")
        });

    let reflectors = parse_reflectors(root, listen)?;
    let assoc_key_lifetime_s = root
        .opt_u64(
            "assoc_key_lifetime_s",
            MIN_ASSOC_KEY_LIFETIME_S,
            MAX_ASSOC_KEY_LIFETIME_S,
        )?
        .unwrap_or(DEFAULT_ASSOC_KEY_LIFETIME_S);

    let relay = match root.opt_table("relay")? {
        Some(relay) => parse_relay(&relay, Some(listen.ip()))?,
        None => RelaySettings::default(),
    };

    let cluster = match root.opt_table("cluster")? {
        Some(cluster) => Some(parse_cluster(&cluster, name, listen)?),
        None => None,
    };

    Ok(CoordinatorSettings {
        file: file.to_owned(),
        name: name.to_owned(),
        data_dir,
        listen,
        pki_dir,
        root_ca,
        status_listen,
        token_lifetime_s,
        node_cert_lifetime_s,
        handshakes_per_s,
        reflectors,
        assoc_key_lifetime_s,
        relay,
        cluster,
    })
}

/// `[cluster]`: an id, and peers with distinct ids, names and addresses,
/// none of them this coordinator.
fn parse_cluster(
    cluster: &Section<'_>,
    own_name: &str,
    listen: SocketAddr,
) -> KeyResult<ClusterSettings> {
    cluster.only(&["id", "peer"])?;
    let id = cluster
        .opt_u64("id", 1, MAX_REPLICA_ID)?
        .ok_or_else(|| key_error(cluster.key("id"), "missing (required)"))?;
    let tables = cluster.tables("peer")?;
    if tables.is_empty() {
        return Err(key_error(
            cluster.key("peer"),
            "no peers: list every other coordinator as a [[cluster.peer]] (or drop [cluster] to run alone)",
        ));
    }
    if tables.len() > MAX_PEERS {
        return Err(key_error(
            cluster.key("peer"),
            format!("{} peers; at most {MAX_PEERS}", tables.len()),
        ));
    }
    let mut peers: Vec<ClusterPeer> = Vec::new();
    for peer in &tables {
        peer.only(&["id", "name", "addr"])?;
        let peer_id = peer
            .opt_u64("id", 1, MAX_REPLICA_ID)?
            .ok_or_else(|| key_error(peer.key("id"), "missing (required)"))?;
        if peer_id == id || peers.iter().any(|p| p.id == peer_id) {
            return Err(key_error(
                peer.key("id"),
                format!("{peer_id} is taken (by this coordinator or another peer)"),
            ));
        }
        let name = peer.str("name")?;
        naming::validate_coordinator_name(name).map_err(|e| {
            key_error(
                peer.key("name"),
                format!("{name:?} is not a coordinator name: {e}"),
            )
        })?;
        if name == own_name || peers.iter().any(|p| p.name == name) {
            return Err(key_error(
                peer.key("name"),
                format!("{name:?} is listed twice (or is this coordinator's `name`)"),
            ));
        }
        let addr = peer.socket_addr("addr")?;
        if addr.port() == 0 || addr.ip().is_unspecified() {
            return Err(key_error(
                peer.key("addr"),
                format!("{addr}: the address this peer listens on, with its port"),
            ));
        }
        if addr == listen || peers.iter().any(|p| p.addr == addr) {
            return Err(key_error(
                peer.key("addr"),
                format!("{addr} is listed twice (or is `listen`)"),
            ));
        }
        peers.push(ClusterPeer {
            id: peer_id,
            name: name.to_owned(),
            addr,
        });
    }
    Ok(ClusterSettings { id, peers })
}

/// Extra reflector addresses: specific (nodes send to them as written),
/// with a port, distinct, and none the control address itself.
fn parse_reflectors(root: &Section<'_>, listen: SocketAddr) -> KeyResult<Vec<SocketAddr>> {
    let texts = root.str_list("reflectors")?;
    if texts.len() > MAX_REFLECTORS {
        return Err(key_error(
            "reflectors",
            format!("{} addresses; at most {MAX_REFLECTORS}", texts.len()),
        ));
    }
    let mut out: Vec<SocketAddr> = Vec::new();
    for (i, text) in texts.into_iter().enumerate() {
        let key = format!("reflectors[{i}]");
        let addr: SocketAddr = text.parse().map_err(|_| {
            key_error(
                key.clone(),
                format!("{text:?} is not an address with a port (like 203.0.113.6:7443)"),
            )
        })?;
        if addr.port() == 0 {
            return Err(key_error(
                key.clone(),
                format!("{addr}: nodes need a fixed port"),
            ));
        }
        if addr.ip().is_unspecified() || addr.ip().is_multicast() {
            return Err(key_error(
                &key,
                format!(
                    "{}: nodes send to this address as written, so it must be one of this host's own",
                    addr.ip()
                ),
            ));
        }
        if addr == listen || out.contains(&addr) {
            return Err(key_error(
                key.clone(),
                format!("{addr} is listed twice (or is `listen`)"),
            ));
        }
        out.push(addr);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in(dir: &Path, text: &str) -> Result<CoordinatorSettings, ConfigError> {
        CoordinatorSettings::parse(&dir.join("coordinator.toml"), text)
    }

    fn fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pki")).unwrap();
        std::fs::write(dir.path().join("root.crt"), "x").unwrap();
        dir
    }

    const GOOD: &str = "name = \"coordinator\"\ndata_dir = \"data\"\nlisten = \"127.0.0.1:7443\"\npki_dir = \"pki\"\nroot_ca = \"root.crt\"\n";

    #[test]
    fn a_minimal_file_gets_the_defaults() {
        let dir = fixture();
        let s = parse_in(dir.path(), GOOD).unwrap();
        assert_eq!(s.status_listen, DEFAULT_STATUS_LISTEN.parse().unwrap());
        assert_eq!(s.token_lifetime_s, DEFAULT_TOKEN_LIFETIME_S);
        assert_eq!(s.node_cert_lifetime_s, 90 * 86_400);
        assert_eq!(s.handshakes_per_s, DEFAULT_HANDSHAKES_PER_S);
        assert_eq!(s.assoc_key_lifetime_s, 86_400);
        assert_eq!(s.data_dir, dir.path().join("data"));
        assert_eq!(s.oplog_path(), dir.path().join("data/oplog.redb"));
        assert_eq!(s.relay, RelaySettings::default());
    }

    #[test]
    fn relay_is_parsed_and_data_refused() {
        let dir = fixture();
        let text = format!(
            "{GOOD}[relay]\ndata = false\nlisten_ip = \"0.0.0.0\"\nport_range = \"40000-40999\"\n"
        );
        let s = parse_in(dir.path(), &text).unwrap();
        assert_eq!(
            s.relay.port_range,
            Some(PortRange {
                low: 40_000,
                high: 40_999
            })
        );
        let s = parse_in(dir.path(), &format!("{GOOD}[relay]\ndata = true\n")).unwrap();
        assert!(s.relay.data);
        let listen = s.listen;
        assert_eq!(s.relay.addresses(listen.ip()), (listen.ip(), listen.ip()));
        let err = parse_in(
            dir.path(),
            &format!("{GOOD}[relay]\ndata = true\nlisten_ip = \"0.0.0.0\"\n"),
        )
        .unwrap_err();
        assert_eq!(err.key, "relay.advertise_ip", "{err}");
        let s = parse_in(
            dir.path(),
            &format!(
                "{GOOD}[relay]\ndata = true\nlisten_ip = \"0.0.0.0\"\nadvertise_ip = \"127.0.0.9\"\n"
            ),
        )
        .unwrap();
        assert_eq!(
            s.relay.addresses(listen.ip()),
            ("0.0.0.0".parse().unwrap(), "127.0.0.9".parse().unwrap())
        );
        for bad in ["\"1-\"", "\"9-8\"", "\"0-10\"", "\"a-b\"", "5"] {
            let err =
                parse_in(dir.path(), &format!("{GOOD}[relay]\nport_range = {bad}\n")).unwrap_err();
            assert_eq!(err.key, "relay.port_range", "{bad}: {err}");
        }
    }

    #[test]
    fn relay_limits_are_the_nodes_keys() {
        let dir = fixture();
        let text = format!(
            "{GOOD}[relay]\ndata = true\nquota_per_node = 8\nmax_allocations = 500\nrate_limit_mbps = 200\nidle_timeout_s = 45\n"
        );
        let s = parse_in(dir.path(), &text).unwrap();
        assert_eq!(
            (
                s.relay.quota_per_node,
                s.relay.max_allocations,
                s.relay.rate_limit_mbps,
                s.relay.idle_timeout_s
            ),
            (8, 500, 200, 45)
        );
        let bad = [
            ("quota_per_node = 0", "relay.quota_per_node", "outside"),
            (
                "max_allocations = 4\nquota_per_node = 5",
                "relay.quota_per_node",
                "more than max_allocations",
            ),
            (
                "max_allocations = 20\nport_range = \"40000-40009\"",
                "relay.max_allocations",
                "port_range holds 10",
            ),
            (
                "rate_limit_mbps = 200000",
                "relay.rate_limit_mbps",
                "outside",
            ),
            (
                "idle_timeout_s = 5",
                "relay.idle_timeout_s",
                "outside 20 to 3600",
            ),
        ];
        for (keys, key, reason) in bad {
            let err = parse_in(dir.path(), &format!("{GOOD}[relay]\n{keys}\n")).unwrap_err();
            assert_eq!(err.key, key, "{keys}: {err}");
            assert!(err.reason.contains(reason), "{keys}: {err}");
            assert!(err.to_string().contains(&format!(": {key}: ")), "{err}");
        }
    }

    #[test]
    fn extra_reflectors_are_specific_distinct_addresses() {
        let dir = fixture();
        let s = parse_in(
            dir.path(),
            &format!("{GOOD}reflectors = [\"127.0.0.2:7443\", \"127.0.0.1:7444\"]\n"),
        )
        .unwrap();
        assert_eq!(
            s.reflectors,
            vec![
                "127.0.0.2:7443".parse::<SocketAddr>().unwrap(),
                "127.0.0.1:7444".parse().unwrap()
            ]
        );
        assert!(parse_in(dir.path(), GOOD).unwrap().reflectors.is_empty());
        for (bad, key) in [
            ("[\"0.0.0.0:7443\"]", "reflectors[0]"),
            ("[\"127.0.0.2:0\"]", "reflectors[0]"),
            ("[\"127.0.0.2\"]", "reflectors[0]"),
            ("[\"127.0.0.1:7443\"]", "reflectors[0]"),
            ("[\"127.0.0.2:1\", \"127.0.0.2:1\"]", "reflectors[1]"),
            ("[1]", "reflectors[0]"),
            ("\"127.0.0.2:7443\"", "reflectors"),
            (
                "[\"127.0.0.2:1\", \"127.0.0.2:2\", \"127.0.0.2:3\", \"127.0.0.2:4\", \"127.0.0.2:5\"]",
                "reflectors",
            ),
        ] {
            let err = parse_in(dir.path(), &format!("{GOOD}reflectors = {bad}\n")).unwrap_err();
            assert_eq!(err.key, key, "{bad}: {err}");
        }
    }

    #[test]
    fn the_handshake_limit_is_bounded() {
        let dir = fixture();
        let s = parse_in(dir.path(), &format!("{GOOD}handshakes_per_s = 50\n")).unwrap();
        assert_eq!(s.handshakes_per_s, 50);
        for bad in ["0", "100001", "-1", "\"50\"", "2.5"] {
            let err =
                parse_in(dir.path(), &format!("{GOOD}handshakes_per_s = {bad}\n")).unwrap_err();
            assert_eq!(err.key, "handshakes_per_s", "{bad}: {err}");
        }
    }

    #[test]
    fn the_association_key_lifetime_is_bounded() {
        let dir = fixture();
        let s = parse_in(dir.path(), &format!("{GOOD}assoc_key_lifetime_s = 3600\n")).unwrap();
        assert_eq!(s.assoc_key_lifetime_s, 3_600);
        for bad in ["59", "31536001", "0", "-5", "\"1d\"", "1.5"] {
            let err =
                parse_in(dir.path(), &format!("{GOOD}assoc_key_lifetime_s = {bad}\n")).unwrap_err();
            assert_eq!(err.key, "assoc_key_lifetime_s", "{bad}: {err}");
        }
        let err = parse_in(dir.path(), &format!("{GOOD}assoc_key_lifetime_s = 10\n")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: assoc_key_lifetime_s: 10 is outside 60 to 31536000",
                dir.path().join("coordinator.toml").display()
            )
        );
    }

    #[test]
    fn the_node_certificate_lifetime_is_bounded() {
        let dir = fixture();
        let s = parse_in(dir.path(), &format!("{GOOD}node_cert_lifetime_s = 60\n")).unwrap();
        assert_eq!(s.node_cert_lifetime_s, 60);
        let s = parse_in(
            dir.path(),
            &format!("{GOOD}node_cert_lifetime_s = 315360000\n"),
        )
        .unwrap();
        assert_eq!(s.node_cert_lifetime_s, 3_650 * 86_400);
        for bad in ["59", "315360001", "0", "-5", "\"90d\"", "1.5"] {
            let err =
                parse_in(dir.path(), &format!("{GOOD}node_cert_lifetime_s = {bad}\n")).unwrap_err();
            assert_eq!(err.key, "node_cert_lifetime_s", "{bad}: {err}");
        }
        let err = parse_in(dir.path(), &format!("{GOOD}node_cert_lifetime_s = 30\n")).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "{}: node_cert_lifetime_s: ",
                dir.path().join("coordinator.toml").display()
            )),
            "{err}"
        );
    }

    #[test]
    fn the_message_is_file_key_reason() {
        let dir = fixture();
        let err = parse_in(dir.path(), &format!("{GOOD}token_lifetime_s = 10\n")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "{}: token_lifetime_s: ",
                dir.path().join("coordinator.toml").display()
            )),
            "{text}"
        );
    }

    const PEERS: &str = "[cluster]\nid = 1\n[[cluster.peer]]\nid = 2\nname = \"coordinator-b\"\naddr = \"192.0.2.12:7443\"\n[[cluster.peer]]\nid = 3\nname = \"coordinator-c\"\naddr = \"192.0.2.13:7443\"\n";

    #[test]
    fn a_cluster_lists_its_peers() {
        let dir = fixture();
        let s = parse_in(dir.path(), &format!("{GOOD}{PEERS}")).unwrap();
        let cluster = s.cluster.unwrap();
        assert_eq!(cluster.id, 1);
        assert_eq!(
            cluster.peers,
            vec![
                ClusterPeer {
                    id: 2,
                    name: "coordinator-b".to_owned(),
                    addr: "192.0.2.12:7443".parse().unwrap(),
                },
                ClusterPeer {
                    id: 3,
                    name: "coordinator-c".to_owned(),
                    addr: "192.0.2.13:7443".parse().unwrap(),
                },
            ]
        );
        assert_eq!(parse_in(dir.path(), GOOD).unwrap().cluster, None);
    }

    #[test]
    fn cluster_mistakes_name_the_key() {
        let dir = fixture();
        for (edit, key, reason) in [
            (("id = 1", "id = 0"), "cluster.id", "0"),
            (("id = 2", "id = 1"), "cluster.peer[0].id", "1 is taken"),
            (("id = 3", "id = 2"), "cluster.peer[1].id", "2 is taken"),
            (
                ("\"coordinator-c\"", "\"coordinator\""),
                "cluster.peer[1].name",
                "listed twice",
            ),
            (
                ("192.0.2.13:7443", "192.0.2.12:7443"),
                "cluster.peer[1].addr",
                "listed twice",
            ),
            (
                ("192.0.2.13:7443", "127.0.0.1:7443"),
                "cluster.peer[1].addr",
                "is `listen`",
            ),
            (
                ("name = \"coordinator-b\"\n", ""),
                "cluster.peer[0].name",
                "missing",
            ),
        ] {
            let text = format!("{GOOD}{}", PEERS.replacen(edit.0, edit.1, 1));
            let err = parse_in(dir.path(), &text).unwrap_err();
            assert_eq!(err.key, key, "{edit:?}: {err}");
            assert!(err.reason.contains(reason), "{edit:?}: {err}");
        }
        let err = parse_in(dir.path(), &format!("{GOOD}[cluster]\nid = 1\n")).unwrap_err();
        assert_eq!(err.key, "cluster.peer");
    }
}
