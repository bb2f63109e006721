//! CPU time of processes and threads, from `/proc`.
//!
//! `utime + stime` of `/proc/PID/stat` counts every thread of a process,
//! including threads that have exited; `/proc/self/task/TID/stat` counts one
//! thread of this program (the load generator's sender or receiver). Both
//! are in clock ticks (`getconf CLK_TCK`, 100 on Linux), so a window of a
//! few seconds resolves about one percent of a core.

use std::io;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// Seconds per clock tick of `/proc/*/stat`.
fn tick_seconds() -> f64 {
    static TICK: OnceLock<f64> = OnceLock::new();
    *TICK.get_or_init(|| {
        let hz = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|&hz| hz > 0.0)
            .unwrap_or(100.0);
        1.0 / hz
    })
}

/// What one `/proc/…/stat` and `/proc/…/status` reading says.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuReading {
    /// User plus system CPU time, in seconds.
    pub cpu_s: f64,
    /// Voluntary plus involuntary context switches (every sleep in a poll
    /// is one voluntary switch, so this counts wake-ups).
    pub switches: u64,
}

impl CpuReading {
    /// What happened between `earlier` and this reading.
    pub fn since(self, earlier: Self) -> Self {
        Self {
            cpu_s: (self.cpu_s - earlier.cpu_s).max(0.0),
            switches: self.switches.saturating_sub(earlier.switches),
        }
    }
}

/// Something whose CPU time can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// A whole process (every thread, living or exited).
    Process(u32),
    /// One thread of this program.
    OwnThread(u32),
}

impl Task {
    /// Reads its CPU time and context switches now.
    ///
    /// # Errors
    /// When `/proc` cannot be read (the task has exited) or is malformed.
    pub fn read(self) -> io::Result<CpuReading> {
        let dir = match self {
            Self::Process(pid) => format!("/proc/{pid}"),
            Self::OwnThread(tid) => format!("/proc/self/task/{tid}"),
        };
        let dir = Path::new(&dir);
        let stat = std::fs::read_to_string(dir.join("stat"))?;
        let status = std::fs::read_to_string(dir.join("status"))?;
        Ok(CpuReading {
            cpu_s: stat_ticks(&stat)? as f64 * tick_seconds(),
            switches: status_switches(&status),
        })
    }
}

/// `utime + stime` of a `stat` line. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
fn stat_ticks(stat: &str) -> io::Result<u64> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc stat format");
    let rest = &stat[stat.rfind(')').ok_or_else(bad)? + 1..];
    // After the name: state is field 3, utime field 14, stime field 15.
    let mut fields = rest.split_whitespace().skip(11);
    let mut next =
        || -> io::Result<u64> { fields.next().and_then(|f| f.parse().ok()).ok_or_else(bad) };
    Ok(next()? + next()?)
}

fn status_switches(status: &str) -> u64 {
    status
        .lines()
        .filter(|l| l.contains("ctxt_switches:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// The id of the calling thread, as `/proc/self/task` names it.
pub fn current_tid() -> Option<u32> {
    let link = std::fs::read_link("/proc/thread-self").ok()?;
    link.file_name()?.to_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let stat = "42 (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0";
        assert_eq!(stat_ticks(stat).unwrap(), 12);
    }

    #[test]
    fn this_thread_can_read_its_own_time() {
        let tid = current_tid().expect("a thread id");
        let reading = Task::OwnThread(tid).read().unwrap();
        assert!(reading.cpu_s >= 0.0);
        assert!(Task::Process(std::process::id()).read().is_ok());
    }
}
