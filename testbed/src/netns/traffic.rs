//! Traffic across a testbed: `ping` and `iperf3` run inside namespaces,
//! with their reports parsed.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{Error, Namespace, Process};

/// What `ping` reported.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PingReport {
    pub transmitted: u32,
    pub received: u32,
    /// Average round-trip time; `None` when nothing came back.
    pub avg_rtt_ms: Option<f64>,
}

/// Pings `to` from inside `ns`: `count` echoes 200 ms apart, each waiting
/// at most two seconds. Lost echoes are not an error; read the report.
///
/// # Errors
/// When `ping` cannot run or prints no statistics.
pub fn ping(ns: &Namespace, to: IpAddr, count: u32) -> Result<PingReport, Error> {
    let out = ns
        .command("ping")
        .args(["-n", "-c", &count.to_string(), "-i", "0.2", "-W", "2"])
        .arg(to.to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(Error::io("running ping"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let what = "ping output";
    let stats = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .ok_or_else(|| Error::parse(what, format!("no statistics in {text:?}")))?;
    // "10 packets transmitted, 10 received, 0% packet loss, time 1803ms"
    let count = |key: &str| -> Result<u32, Error> {
        stats
            .split(", ")
            .find(|part| part.contains(key))
            .and_then(|part| part.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| Error::parse(what, format!("no `{key}` count in {stats:?}")))
    };
    // rtt min/avg/max/mdev = 0.744/1.489/2.977/1.052 ms
    let avg_rtt_ms = text
        .lines()
        .find_map(|l| l.split_once(" = "))
        .and_then(|(_, v)| v.split('/').nth(1))
        .and_then(|v| v.parse().ok());
    Ok(PingReport {
        transmitted: count("transmitted")?,
        received: count("received")?,
        avg_rtt_ms,
    })
}

/// A one-off `iperf3` server (`-s -1`) inside a namespace; stopped on drop.
#[derive(Debug)]
pub struct Iperf3 {
    process: Process,
    bind: IpAddr,
    port: u16,
}

impl Iperf3 {
    /// Starts a server on `bind:port` in `ns` (log in `log`) and waits until
    /// it listens.
    ///
    /// # Errors
    /// When it cannot start or does not listen within five seconds.
    pub fn server(ns: &Namespace, bind: IpAddr, port: u16, log: &Path) -> Result<Self, Error> {
        Self::server_every(ns, bind, port, Duration::from_millis(500), log)
    }

    /// [`server`](Self::server) reporting every `interval` (iperf3 takes
    /// 0.1 s at least) instead of every half second: the receiver's
    /// intervals that [`Iperf3Report::stalls`] reads.
    ///
    /// # Errors
    /// When it cannot start or does not listen within five seconds.
    pub fn server_every(
        ns: &Namespace,
        bind: IpAddr,
        port: u16,
        interval: Duration,
        log: &Path,
    ) -> Result<Self, Error> {
        let interval = format!("{:.1}", interval.as_secs_f64().max(0.1));
        let mut process = Process::spawn(
            "iperf3 server",
            ns.command("iperf3").args([
                "-s",
                "-1",
                "-B",
                &bind.to_string(),
                "-p",
                &port.to_string(),
                // In JSON, its intervals reach the client's report.
                "--json",
                "-i",
                &interval,
            ]),
            log,
        )?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let listening = format!("{bind}:{port}");
        loop {
            let out = ns.run("ss", &["-Hltn"])?;
            if String::from_utf8_lossy(&out.stdout).contains(&listening) {
                break;
            }
            if !process.running() || Instant::now() >= deadline {
                return Err(Error::Timeout(
                    Duration::from_secs(5),
                    format!("iperf3 to listen on {listening} (see {})", log.display()),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            process,
            bind,
            port,
        })
    }

    /// Starts a TCP client in `ns` against this server for `seconds`,
    /// reporting every half second, its JSON report going to `output` (and
    /// anything else to the same path with `.log`);
    /// [`Iperf3Client::finish`] collects the result.
    ///
    /// # Errors
    /// When it cannot start.
    pub fn client(
        &self,
        ns: &Namespace,
        seconds: u32,
        output: &Path,
    ) -> Result<Iperf3Client, Error> {
        let output = output.to_path_buf();
        let log = output.with_extension("log");
        let process = Process::spawn(
            "iperf3 client",
            ns.command("iperf3").args([
                "-c",
                &self.bind.to_string(),
                "-p",
                &self.port.to_string(),
                "-t",
                &seconds.to_string(),
                "-i",
                "0.5",
                "--json",
                "--get-server-output",
                "--connect-timeout",
                "5000",
                "--logfile",
                &output.to_string_lossy(),
            ]),
            &log,
        )?;
        Ok(Iperf3Client {
            process,
            output,
            seconds,
        })
    }

    /// Whether the server still runs (a one-off server exits after a test).
    pub fn running(&mut self) -> bool {
        self.process.running()
    }
}

/// A running `iperf3` client.
#[derive(Debug)]
pub struct Iperf3Client {
    process: Process,
    output: PathBuf,
    seconds: u32,
}

impl Iperf3Client {
    /// Waits for the client (its run time plus `slack`) and reads its
    /// report.
    ///
    /// # Errors
    /// When it overruns, fails, or reports an error.
    pub fn finish(mut self, slack: Duration) -> Result<Iperf3Report, Error> {
        let status = self
            .process
            .wait(Duration::from_secs(self.seconds.into()) + slack)?;
        let text = std::fs::read_to_string(&self.output)
            .map_err(Error::io(format!("reading {}", self.output.display())))?;
        let report = Iperf3Report::parse(&text)?;
        if !status.success() {
            return Err(Error::Command {
                command: "iperf3 -c".to_owned(),
                status: status.to_string(),
                stderr: format!("see {}", self.output.display()),
            });
        }
        Ok(report)
    }
}

/// What one iperf3 TCP test measured.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Iperf3Report {
    /// Bytes the receiver got, and its goodput in bits per second.
    pub received_bytes: u64,
    pub received_bps: f64,
    /// Bytes the sender wrote.
    pub sent_bytes: u64,
    /// TCP retransmissions the sender counted.
    pub retransmits: u64,
    /// The receiver's intervals: (start s, end s, bytes).
    pub intervals: Vec<(f64, f64, u64)>,
}

impl Iperf3Report {
    /// Parses the client's `--json --get-server-output` document.
    ///
    /// # Errors
    /// When iperf3 reported an error or a field is missing.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let what = "iperf3 JSON";
        let doc: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::parse(what, e.to_string()))?;
        if let Some(err) = doc["error"].as_str() {
            return Err(Error::parse(what, format!("iperf3 reported: {err}")));
        }
        let num = |v: &serde_json::Value, name: &str| -> Result<f64, Error> {
            v.as_f64()
                .ok_or_else(|| Error::parse(what, format!("no {name}")))
        };
        let end = &doc["end"];
        // Byte counts are integers in iperf3's JSON.
        let received_bytes = num(&end["sum_received"]["bytes"], "end.sum_received.bytes")? as u64;
        let received_bps = num(
            &end["sum_received"]["bits_per_second"],
            "end.sum_received.bits_per_second",
        )?;
        let sent_bytes = num(&end["sum_sent"]["bytes"], "end.sum_sent.bytes")? as u64;
        let retransmits = end["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
        let server = &doc["server_output_json"]["intervals"];
        let intervals = server
            .as_array()
            .ok_or_else(|| Error::parse(what, "no server_output_json.intervals"))?
            .iter()
            .map(|i| {
                let sum = &i["sum"];
                Ok((
                    num(&sum["start"], "interval start")?,
                    num(&sum["end"], "interval end")?,
                    num(&sum["bytes"], "interval bytes")? as u64,
                ))
            })
            .collect::<Result<_, Error>>()?;
        Ok(Self {
            received_bytes,
            received_bps,
            sent_bytes,
            retransmits,
            intervals,
        })
    }

    /// Every run of consecutive receiver intervals that each carried less
    /// than `min_bytes_per_s`, as (start s, length s), in time order.
    pub fn stalls(&self, min_bytes_per_s: f64) -> Vec<(f64, f64)> {
        let mut runs: Vec<(f64, f64)> = Vec::new();
        let mut in_run = false;
        for &(start, end, bytes) in &self.intervals {
            let len = end - start;
            let low = len > 0.0 && (bytes as f64) / len < min_bytes_per_s;
            match runs.last_mut() {
                Some(run) if low && in_run => run.1 += len,
                _ if low => runs.push((start, len)),
                _ => {}
            }
            in_run = low;
        }
        runs
    }

    /// The longest of [`stalls`](Self::stalls).
    pub fn longest_stall(&self, min_bytes_per_s: f64) -> Option<(f64, f64)> {
        self.stalls(min_bytes_per_s)
            .into_iter()
            .fold(None, |best, s| match best {
                Some(b) if b.1 >= s.1 => Some(b),
                _ => Some(s),
            })
    }

    /// Bytes received in the intervals that start at or after `second`.
    pub fn bytes_after(&self, second: f64) -> u64 {
        self.intervals
            .iter()
            .filter(|i| i.0 >= second)
            .map(|i| i.2)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iperf3_report_finds_goodput_and_the_longest_stall() {
        let doc = serde_json::json!({
            "end": { "sum_sent": { "bytes": 3000, "retransmits": 4 },
                     "sum_received": { "bytes": 2500, "bits_per_second": 10000.0 } },
            "server_output_json": { "intervals": [
                { "sum": { "start": 0.0, "end": 0.5, "bytes": 1000 } },
                { "sum": { "start": 0.5, "end": 1.0, "bytes": 0 } },
                { "sum": { "start": 1.0, "end": 1.5, "bytes": 10 } },
                { "sum": { "start": 1.5, "end": 2.0, "bytes": 1490 } },
                { "sum": { "start": 2.0, "end": 2.5, "bytes": 0 } } ] }
        });
        let r = Iperf3Report::parse(&doc.to_string()).unwrap();
        assert_eq!(
            (r.received_bytes, r.sent_bytes, r.retransmits),
            (2500, 3000, 4)
        );
        assert_eq!(r.longest_stall(100.0), Some((0.5, 1.0)));
        assert_eq!(r.longest_stall(1.0), Some((0.5, 0.5)));
        assert_eq!(r.stalls(100.0), vec![(0.5, 1.0), (2.0, 0.5)]);
        assert_eq!(r.stalls(2100.0), vec![(0.0, 1.5), (2.0, 0.5)]);
        assert_eq!(r.longest_stall(0.0), None);
        assert_eq!(r.bytes_after(1.0), 1500);
        let err = serde_json::json!({ "error": "unable to connect" }).to_string();
        assert!(Iperf3Report::parse(&err).is_err());
    }
}
