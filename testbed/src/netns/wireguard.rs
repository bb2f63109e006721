//! Userspace WireGuard (`wireguard-go`, configured with `wg`) inside a
//! namespace, and reading what `transitloom-node wg-peers` prints.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{checked, Error, Namespace, Process, WG_SOCKET_DIR};

/// A userspace WireGuard interface (`wireguard-go -f NAME`) inside a
/// namespace, with a fresh key pair. Dropping it stops the daemon, which
/// removes the interface and its control socket.
#[derive(Debug)]
pub struct WireGuard {
    ns: String,
    name: String,
    public_key: String,
    daemon: Process,
}

impl WireGuard {
    /// The two ends of a test's tunnel: `NAMEa` in `a` at `SUBNET.1/24` and
    /// `NAMEb` in `b` at `SUBNET.2/24` (`subnet` is the first three octets),
    /// both listening on `listen_port`, as [`start`](Self::start) makes them.
    ///
    /// # Errors
    /// What [`start`](Self::start) returns, for either end.
    pub fn pair(
        a: &Namespace,
        b: &Namespace,
        name: &str,
        listen_port: u16,
        subnet: &str,
        dir: &Path,
    ) -> Result<(Self, Self), Error> {
        let first = Self::start(
            a,
            &format!("{name}a"),
            listen_port,
            &format!("{subnet}.1/24"),
            dir,
        )?;
        let second = Self::start(
            b,
            &format!("{name}b"),
            listen_port,
            &format!("{subnet}.2/24"),
            dir,
        )?;
        Ok((first, second))
    }

    /// Starts `wireguard-go` for interface `name` (at most 15 characters,
    /// unique on the host) in `ns`, gives it a new private key (written to
    /// `dir/NAME.conf`) and `listen_port`, adds `cidr` and brings it up.
    /// Its log is `dir/NAME.log`.
    ///
    /// # Errors
    /// When a tool fails or the control socket does not appear in five
    /// seconds.
    pub fn start(
        ns: &Namespace,
        name: &str,
        listen_port: u16,
        cidr: &str,
        dir: &Path,
    ) -> Result<Self, Error> {
        // Foreground: the child is the daemon itself, so its pid is the one
        // to stop (never WG_PROCESS_FOREGROUND=0, which forks away).
        let mut daemon = Process::spawn(
            &format!("wireguard-go {name}"),
            ns.command("wireguard-go").args(["-f", name]),
            &dir.join(format!("{name}.log")),
        )?;
        let socket = Path::new(WG_SOCKET_DIR).join(format!("{name}.sock"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !socket.exists() {
            if !daemon.running() || Instant::now() >= deadline {
                return Err(Error::Timeout(
                    Duration::from_secs(5),
                    format!("{} (see {name}.log)", socket.display()),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // The daemon is stopped (by its guard) if anything below fails.
        let private = wg_in(&ns.name, &["genkey"], None)?;
        let public_key = wg_in(&ns.name, &["pubkey"], Some(&private))?;
        let conf = dir.join(format!("{name}.conf"));
        write_private(
            &conf,
            &format!("[Interface]\nPrivateKey = {private}\nListenPort = {listen_port}\n"),
        )?;
        wg_in(&ns.name, &["setconf", name, &conf.to_string_lossy()], None)?;
        ns.add_address(name, cidr)?;
        ns.ip(&["link", "set", name, "up"])?;
        Ok(Self {
            ns: ns.name.clone(),
            name: name.to_owned(),
            public_key,
            daemon,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// Adds (or updates) the peer `public_key` at `endpoint`, routing
    /// `allowed_ips` to it. No persistent keepalive: the mesh keeps its
    /// paths alive itself.
    ///
    /// # Errors
    /// When `wg set` refuses.
    pub fn set_peer(
        &self,
        public_key: &str,
        endpoint: SocketAddr,
        allowed_ips: &str,
    ) -> Result<(), Error> {
        self.wg(
            &[
                "set",
                &self.name,
                "peer",
                public_key,
                "endpoint",
                &endpoint.to_string(),
                "allowed-ips",
                allowed_ips,
            ],
            None,
        )
        .map(drop)
    }

    /// `wg showconf NAME`: keys, listen port and peers (endpoints included),
    /// without counters, for comparing before and after.
    ///
    /// # Errors
    /// When `wg` fails.
    pub fn showconf(&self) -> Result<String, Error> {
        self.wg(&["showconf", &self.name], None)
    }

    /// The peers as `wg show NAME dump` reports them.
    ///
    /// # Errors
    /// When `wg` fails or its output is not the dump format.
    pub fn peers(&self) -> Result<Vec<WgPeer>, Error> {
        let dump = self.wg(&["show", &self.name, "dump"], None)?;
        // The first line is the interface itself.
        dump.lines().skip(1).map(WgPeer::parse).collect()
    }

    /// The peer with `public_key`.
    ///
    /// # Errors
    /// When `wg` fails or there is no such peer.
    pub fn peer(&self, public_key: &str) -> Result<WgPeer, Error> {
        self.peers()?
            .into_iter()
            .find(|p| p.public_key == public_key)
            .ok_or_else(|| Error::parse("wg show dump", format!("no peer {public_key}")))
    }

    /// Whether the daemon still runs.
    pub fn running(&mut self) -> bool {
        self.daemon.running()
    }

    fn wg(&self, args: &[&str], input: Option<&str>) -> Result<String, Error> {
        wg_in(&self.ns, args, input)
    }
}

/// Runs `wg args…` inside namespace `ns`, with `input` on standard input.
fn wg_in(ns: &str, args: &[&str], input: Option<&str>) -> Result<String, Error> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "wg"])
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Error::io("starting wg"))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(format!("{text}\n").as_bytes())
            .map_err(Error::io("writing to wg"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(Error::io("waiting for wg"))?;
    // Never put a private key into an error message.
    let command = format!("wg {}", args.first().copied().unwrap_or_default());
    let out = checked(command, out)?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl Drop for WireGuard {
    fn drop(&mut self) {
        self.daemon.stop();
        // SIGKILL leaves the socket behind; SIGTERM removes it.
        let _ = std::fs::remove_file(Path::new(WG_SOCKET_DIR).join(format!("{}.sock", self.name)));
    }
}

/// One peer line of `wg show NAME dump`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WgPeer {
    pub public_key: String,
    /// `None` until the peer has an endpoint.
    pub endpoint: Option<String>,
    pub allowed_ips: String,
    /// Unix seconds of the latest handshake; `None` if there was none.
    pub latest_handshake: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// `None` when persistent keepalive is off.
    pub persistent_keepalive: Option<u16>,
}

impl WgPeer {
    fn parse(line: &str) -> Result<Self, Error> {
        let what = "a peer line of wg show dump";
        let f: Vec<&str> = line.split('\t').collect();
        let [public_key, _psk, endpoint, allowed_ips, handshake, rx, tx, keepalive] = f[..] else {
            return Err(Error::parse(what, format!("{} fields", f.len())));
        };
        let num = |s: &str| -> Result<u64, Error> {
            s.parse()
                .map_err(|_| Error::parse(what, format!("{s:?} is not a number")))
        };
        Ok(Self {
            public_key: public_key.to_owned(),
            endpoint: (endpoint != "(none)").then(|| endpoint.to_owned()),
            allowed_ips: allowed_ips.to_owned(),
            latest_handshake: Some(num(handshake)?).filter(|&t| t != 0),
            rx_bytes: num(rx)?,
            tx_bytes: num(tx)?,
            persistent_keepalive: match keepalive {
                "off" => None,
                secs => Some(
                    secs.parse()
                        .map_err(|_| Error::parse(what, format!("keepalive {secs:?}")))?,
                ),
            },
        })
    }
}

/// The `Endpoint = ` addresses in `transitloom-node wg-peers` output, with
/// the remote each belongs to (`node/service`, from the comment above it).
///
/// # Errors
/// When an endpoint is not an address.
pub fn wg_peer_endpoints(text: &str) -> Result<Vec<(String, SocketAddr)>, Error> {
    let mut out = Vec::new();
    let mut peer = String::new();
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            peer = comment
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        } else if let Some(addr) = line.strip_prefix("Endpoint = ") {
            let addr = addr
                .trim()
                .parse()
                .map_err(|_| Error::parse("wg-peers output", format!("endpoint {addr:?}")))?;
            out.push((peer.clone(), addr));
        }
    }
    Ok(out)
}

fn write_private(path: &Path, text: &str) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(Error::io(format!("writing {}", path.display())))?;
    file.write_all(text.as_bytes())
        .map_err(Error::io(format!("writing {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wg_peers_output_gives_each_remote_its_endpoint() {
        let text =
            "# beta/wg0 (service wg0, association 7)\n[Peer]\nEndpoint = 127.0.0.1:41002\n\n\
                    # gamma/wg0 via wg0: no ingress assigned yet\n\n\
                    # delta/wg0 (service wg0, association 9)\n[Peer]\nEndpoint = 127.0.0.1:41003\n";
        let peers = wg_peer_endpoints(text).unwrap();
        assert_eq!(
            peers,
            vec![
                ("beta/wg0".to_owned(), "127.0.0.1:41002".parse().unwrap()),
                ("delta/wg0".to_owned(), "127.0.0.1:41003".parse().unwrap()),
            ]
        );
        assert!(wg_peer_endpoints("Endpoint = nowhere\n").is_err());
    }

    #[test]
    fn wg_dump_peer_lines_parse() {
        let p = WgPeer::parse(
            "PK=\t(none)\t127.0.0.1:41002\t10.99.0.2/32\t1795643554\t1018572\t71500008\toff",
        )
        .unwrap();
        assert_eq!(p.endpoint.as_deref(), Some("127.0.0.1:41002"));
        assert_eq!(p.latest_handshake, Some(1_795_643_554));
        assert_eq!((p.rx_bytes, p.tx_bytes), (1_018_572, 71_500_008));
        assert_eq!(p.persistent_keepalive, None);
        let fresh = WgPeer::parse("PK=\t(none)\t(none)\t(none)\t0\t0\t0\t25").unwrap();
        assert_eq!(fresh.endpoint, None);
        assert_eq!(fresh.latest_handshake, None);
        assert_eq!(fresh.persistent_keepalive, Some(25));
        assert!(WgPeer::parse("PK=\t(none)").is_err());
    }
}
