//! A delay line for namespace testbeds. This kernel has no netem, so a
//! link's propagation delay is made in userspace: the hub routes the
//! link's packets into a TUN device, [`serve`] holds each for its link's
//! delay and writes it back into the device, and the kernel forwards it on
//! as if it had just arrived there. Packets of one link keep their order;
//! the rate limit stays with `tc … tbf` on the veths.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::Ipv4Addr;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{Error, Namespace, Process};

/// Packets from or to `net/prefix` are held for `delay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelayRule {
    pub net: Ipv4Addr,
    pub prefix: u8,
    pub delay: Duration,
}

impl DelayRule {
    fn matches(&self, addr: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        u32::from(addr) & mask == u32::from(self.net) & mask
    }
}

impl std::fmt::Display for DelayRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}={}",
            self.net,
            self.prefix,
            self.delay.as_secs_f64() * 1e3
        )
    }
}

/// `10.79.3.0/24=50`: the network and the delay in milliseconds.
impl FromStr for DelayRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?}: expected NET/PREFIX=MILLISECONDS, such as 10.79.3.0/24=50");
        let (net, ms) = s.split_once('=').ok_or_else(bad)?;
        let (addr, prefix) = net.split_once('/').ok_or_else(bad)?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        let ms: f64 = ms.parse().map_err(|_| bad())?;
        if prefix > 32 || !(0.0..=10_000.0).contains(&ms) {
            return Err(bad());
        }
        Ok(Self {
            net: addr.parse().map_err(|_| bad())?,
            prefix,
            delay: Duration::from_secs_f64(ms / 1e3),
        })
    }
}

/// The rule an IPv4 packet falls under, by source or destination (the
/// first that matches), if any.
fn rule_of(packet: &[u8], rules: &[DelayRule]) -> Option<usize> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    let addr =
        |at: usize| Ipv4Addr::new(packet[at], packet[at + 1], packet[at + 2], packet[at + 3]);
    let (src, dst) = (addr(12), addr(16));
    rules.iter().position(|r| r.matches(src) || r.matches(dst))
}

/// Held packets, one queue per rule (each in due order, as every packet
/// of a rule waits as long), whether the reader has stopped, and whether
/// the writer has (it failed).
#[derive(Debug, Default)]
struct Held {
    queues: Vec<VecDeque<(Instant, Vec<u8>)>>,
    closed: bool,
    failed: bool,
}

impl Held {
    /// The queue whose head is due first, and when.
    fn next(&self) -> Option<(usize, Instant)> {
        self.queues
            .iter()
            .enumerate()
            .filter_map(|(i, q)| q.front().map(|(due, _)| (i, *due)))
            .min_by_key(|&(_, due)| due)
    }
}

/// Creates TUN device `dev` and delays what is routed into it by `rules`
/// (packets under no rule go back at once), until reading or writing it
/// fails.
///
/// # Errors
/// When the device cannot be made, or reading or writing it fails.
pub fn serve(dev: &str, rules: &[DelayRule]) -> Result<(), Error> {
    let mut tun = open_tun(dev)?;
    let mut out = tun
        .try_clone()
        .map_err(Error::io("cloning the TUN handle"))?;
    let held = Arc::new((
        Mutex::new(Held {
            queues: vec![VecDeque::new(); rules.len()],
            closed: false,
            failed: false,
        }),
        Condvar::new(),
    ));
    let writer = {
        let held = Arc::clone(&held);
        std::thread::spawn(move || -> Result<(), Error> {
            let (lock, ready) = &*held;
            let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                let now = Instant::now();
                match state.next() {
                    None if state.closed => return Ok(()),
                    None => state = ready.wait(state).unwrap_or_else(|e| e.into_inner()),
                    Some((i, due)) if due <= now => {
                        let Some((_, packet)) = state.queues[i].pop_front() else {
                            continue;
                        };
                        drop(state);
                        let written = out.write_all(&packet);
                        state = lock.lock().unwrap_or_else(|e| e.into_inner());
                        if let Err(e) = written {
                            // The reader stops at its next packet.
                            state.failed = true;
                            return Err(Error::io("writing to the TUN device")(e));
                        }
                    }
                    Some((_, due)) => {
                        state = ready
                            .wait_timeout(state, due - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                }
            }
        })
    };
    let mut buf = vec![0; 65_536];
    let read: Result<(), Error> = loop {
        let n = match tun.read(&mut buf) {
            Ok(0) => {
                let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
                break Err(Error::io("reading the TUN device")(eof));
            }
            Ok(n) => n,
            Err(e) => break Err(Error::io("reading the TUN device")(e)),
        };
        let packet = &buf[..n];
        let Some(i) = rule_of(packet, rules) else {
            if let Err(e) = tun.write_all(packet) {
                break Err(Error::io("writing to the TUN device")(e));
            }
            continue;
        };
        let (lock, ready) = &*held;
        let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
        if state.failed {
            break Ok(());
        }
        state.queues[i].push_back((Instant::now() + rules[i].delay, packet.to_vec()));
        drop(state);
        ready.notify_one();
    };
    let (lock, ready) = &*held;
    lock.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
    ready.notify_one();
    let written = writer
        .join()
        .unwrap_or_else(|_| Err(Error::parse("the delay line", "its writer panicked")));
    read.and(written)
}

/// Opens `/dev/net/tun` as the layer-3 device `dev` (no packet
/// information header: each read and write is one IP packet).
fn open_tun(dev: &str) -> Result<File, Error> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(Error::io("opening /dev/net/tun"))?;
    set_tun_interface(&file, dev).map_err(Error::io(format!("making TUN device {dev}")))?;
    Ok(file)
}

/// `ioctl(TUNSETIFF)`: std has no call for it, and this one ioctl is the
/// crate's only unsafe code.
#[allow(unsafe_code)]
fn set_tun_interface(file: &File, dev: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    /// `struct ifreq` as TUNSETIFF reads it: the name, the flags, and the
    /// rest of the union (40 bytes in all).
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _rest: [u8; 22],
    }
    const _: () = assert!(std::mem::size_of::<IfReq>() == std::mem::size_of::<libc::ifreq>());
    if dev.is_empty() || dev.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "an interface name is 1 to 15 bytes",
        ));
    }
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        // Both flags fit a short (0x0001 and 0x1000).
        flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
        _rest: [0; 22],
    };
    req.name[..dev.len()].copy_from_slice(dev.as_bytes());
    // SAFETY: the descriptor is open for the call's length (`file` is
    // borrowed), and `req` is a writable 40-byte `struct ifreq` with a
    // NUL-terminated name, which is all TUNSETIFF reads or writes.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A delay line running in a namespace: the device, the routes into it,
/// and the process ([`serve`] in `tl-bench delay-line`), which stops on
/// drop (the device goes with it).
#[derive(Debug)]
pub struct DelayLine {
    process: Process,
    log: std::path::PathBuf,
}

impl DelayLine {
    /// The device's name in the hub.
    pub const DEV: &'static str = "tl-delay";
    /// The routing table that sends into the device.
    const TABLE: &'static str = "250";

    /// Starts `exe delay-line` in `ns` with `rules`, and routes into it
    /// what arrives on each of `from` (the interfaces a delayed link's
    /// packets come in on) and what arrives anywhere else for a rule's
    /// network. Its output goes to `log`.
    ///
    /// # Errors
    /// When the process does not make its device within 5 seconds, or a
    /// route or rule is refused.
    pub fn start(
        ns: &Namespace,
        exe: &Path,
        rules: &[DelayRule],
        from: &[&str],
        others: &[&str],
        log: &Path,
    ) -> Result<Self, Error> {
        let mut cmd = ns.command(exe);
        cmd.args(["delay-line", "--dev", Self::DEV]);
        for rule in rules {
            cmd.arg("--rule").arg(rule.to_string());
        }
        let mut process = Process::spawn("the delay line", &mut cmd, log)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while ns.ip(&["link", "show", Self::DEV]).is_err() {
            if !process.running() || Instant::now() >= deadline {
                return Err(Error::Timeout(
                    Duration::from_secs(5),
                    format!("{} in {} (log: {})", Self::DEV, ns.name(), log.display()),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // A queue into the reader long enough for a stall of the reader
        // thread on a loaded host (the default 500 packets are 38 ms at
        // 150 Mbit/s).
        ns.ip(&["link", "set", Self::DEV, "txqueuelen", "10000", "up"])?;
        // Packets come back out of the device with their own source
        // addresses, which are not routed through it.
        for conf in ["all", Self::DEV] {
            ns.run(
                "sysctl",
                &["-q", "-w", &format!("net.ipv4.conf.{conf}.rp_filter=0")],
            )?;
        }
        ns.ip(&[
            "route",
            "replace",
            "default",
            "dev",
            Self::DEV,
            "table",
            Self::TABLE,
        ])?;
        let mut pref = 200;
        let mut route_in = |matching: &[&str]| -> Result<(), Error> {
            let at = pref.to_string();
            let mut args = vec!["rule", "add", "pref", at.as_str()];
            args.extend_from_slice(matching);
            args.extend_from_slice(&["table", Self::TABLE]);
            pref += 1;
            ns.ip(&args)
        };
        for dev in from {
            route_in(&["iif", dev])?;
        }
        for dev in others {
            for rule in rules {
                let net = format!("{}/{}", rule.net, rule.prefix);
                route_in(&["iif", dev, "to", &net])?;
            }
        }
        Ok(Self {
            process,
            log: log.to_path_buf(),
        })
    }

    /// Whether it still runs: past its end, its routes fall through to the
    /// main table and the links carry traffic undelayed.
    ///
    /// # Errors
    /// When the process has exited.
    pub fn check(&mut self) -> Result<(), Error> {
        if self.process.running() {
            return Ok(());
        }
        Err(Error::Io {
            what: "the delay line".to_owned(),
            source: std::io::Error::other(format!("it has exited (log: {})", self.log.display())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p
    }

    #[test]
    fn a_rule_reads_as_written_and_refuses_what_is_not_one() {
        let rule: DelayRule = "10.79.3.0/24=50".parse().unwrap();
        assert_eq!(rule.net, Ipv4Addr::new(10, 79, 3, 0));
        assert_eq!(rule.prefix, 24);
        assert_eq!(rule.delay, Duration::from_millis(50));
        assert_eq!(rule.to_string().parse::<DelayRule>(), Ok(rule));
        for bad in [
            "10.79.3.0/24",
            "10.79.3.0=5",
            "10.79.3.0/33=5",
            "x/24=5",
            "10.0.0.0/8=-1",
        ] {
            assert!(bad.parse::<DelayRule>().is_err(), "{bad}");
        }
    }

    #[test]
    fn packets_fall_under_the_rule_of_their_source_or_destination() {
        let rules: Vec<DelayRule> = ["10.79.1.0/24=20", "10.79.3.0/24=50"]
            .iter()
            .map(|r| r.parse().unwrap())
            .collect();
        assert_eq!(
            rule_of(&packet([10, 79, 1, 2], [10, 79, 2, 2]), &rules),
            Some(0)
        );
        assert_eq!(
            rule_of(&packet([10, 79, 2, 2], [10, 79, 3, 2]), &rules),
            Some(1)
        );
        assert_eq!(
            rule_of(&packet([10, 79, 2, 2], [10, 79, 2, 1]), &rules),
            None
        );
        let mut v6 = packet([10, 79, 1, 2], [10, 79, 1, 2]);
        v6[0] = 0x60;
        assert_eq!(rule_of(&v6, &rules), None);
        assert_eq!(rule_of(&[0x45; 10], &rules), None);
        let everything: DelayRule = "0.0.0.0/0=1".parse().unwrap();
        assert!(everything.matches(Ipv4Addr::new(192, 0, 2, 1)));
    }
}
