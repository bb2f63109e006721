//! What the multiwan summary computes from timed byte counts: the receiver's
//! reads and each path's sends, both `(time since the start, bytes)` in
//! time order.

use std::time::Duration;

/// Bytes counted within `[from, until)`.
pub(super) fn bytes_in(log: &[(Duration, u64)], from: Duration, until: Duration) -> u64 {
    log.iter()
        .filter(|(at, _)| (from..until).contains(at))
        .map(|(_, bytes)| bytes)
        .sum()
}

/// The last time within `[from, until)` anything was counted.
pub(super) fn last_in(
    log: &[(Duration, u64)],
    from: Duration,
    until: Duration,
) -> Option<Duration> {
    log.iter()
        .rev()
        .map(|&(at, _)| at)
        .find(|at| (from..until).contains(at))
}

/// The first time at or after `from` anything was counted.
pub(super) fn first_from(log: &[(Duration, u64)], from: Duration) -> Option<Duration> {
    log.iter().map(|&(at, _)| at).find(|&at| at >= from)
}

/// The longest time within `[from, until)` with nothing counted: between
/// two counts, from `from` to the first, or from the last to `until`.
/// Returns the gap and when it ended.
pub(super) fn longest_gap(
    log: &[(Duration, u64)],
    from: Duration,
    until: Duration,
) -> (Duration, Duration) {
    let mut best = (Duration::ZERO, from);
    let mut previous = from;
    let times = log
        .iter()
        .map(|&(at, _)| at)
        .filter(|at| (from..until).contains(at))
        .chain(std::iter::once(until));
    for at in times {
        let gap = at - previous;
        if gap > best.0 {
            best = (gap, at);
        }
        previous = at;
    }
    best
}

/// The end of the first window `(t - window, t]` with `t - window >= from`
/// that counted at least `bytes`: when a flow that stalled is moving again
/// at the rate `bytes` per `window` asks for.
pub(super) fn recovered_at(
    log: &[(Duration, u64)],
    from: Duration,
    window: Duration,
    bytes: u64,
) -> Option<Duration> {
    let log: Vec<(Duration, u64)> = log.iter().copied().filter(|(at, _)| *at > from).collect();
    let mut sum = 0u64;
    let mut tail = 0usize;
    for &(at, n) in &log {
        sum += n;
        while log[tail].0 + window <= at {
            sum -= log[tail].1;
            tail += 1;
        }
        if at >= from + window && sum >= bytes {
            return Some(at);
        }
    }
    None
}

/// `log` in Mbit/s per `bucket`, from 0 to `until`.
pub(super) fn rates(log: &[(Duration, u64)], bucket: Duration, until: Duration) -> Vec<f64> {
    // Whole nanoseconds: a float division would put 1.9 s in the bucket of 1.8 s.
    let width = bucket.as_nanos().max(1);
    let mut bytes = vec![0u64; until.as_nanos().div_ceil(width) as usize];
    for (at, n) in log {
        if let Some(slot) = bytes.get_mut((at.as_nanos() / width) as usize) {
            *slot += n;
        }
    }
    bytes
        .iter()
        .map(|&b| b as f64 * 8.0 / bucket.as_secs_f64() / 1e6)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// 1,000 bytes every 10 ms from 0 to 990 ms, nothing until 1,500 ms,
    /// then 500 bytes every 10 ms until 1,990 ms.
    fn log() -> Vec<(Duration, u64)> {
        let mut log: Vec<(Duration, u64)> = (0..100).map(|i| (ms(i * 10), 1_000)).collect();
        log.extend((150..200).map(|i| (ms(i * 10), 500)));
        log
    }

    #[test]
    fn sums_and_ends() {
        let log = log();
        assert_eq!(bytes_in(&log, ms(0), ms(100)), 10_000);
        assert_eq!(bytes_in(&log, ms(900), ms(1_600)), 10_000 + 5_000);
        assert_eq!(last_in(&log, ms(500), ms(1_400)), Some(ms(990)));
        assert_eq!(last_in(&log, ms(1_000), ms(1_400)), None);
        assert_eq!(first_from(&log, ms(1_000)), Some(ms(1_500)));
        assert_eq!(first_from(&log, ms(2_000)), None);
    }

    #[test]
    fn the_longest_gap_counts_the_edges() {
        let log = log();
        assert_eq!(longest_gap(&log, ms(500), ms(2_000)), (ms(510), ms(1_500)));
        // From the start of the span to the first count.
        assert_eq!(
            longest_gap(&log, ms(1_100), ms(1_600)),
            (ms(400), ms(1_500))
        );
        // From the last count to the end of the span.
        assert_eq!(
            longest_gap(&log, ms(1_980), ms(3_000)),
            (ms(1_010), ms(3_000))
        );
    }

    #[test]
    fn recovery_needs_a_whole_window_after_the_start() {
        let log = log();
        // 100 ms windows of 10 reads: 10,000 bytes before the gap, 5,000 after.
        assert_eq!(recovered_at(&log, ms(0), ms(100), 10_000), Some(ms(100)));
        assert_eq!(recovered_at(&log, ms(990), ms(100), 5_000), Some(ms(1_590)));
        assert_eq!(recovered_at(&log, ms(990), ms(100), 5_001), None);
    }

    #[test]
    fn rates_per_bucket() {
        let rates = rates(&log(), ms(100), ms(2_000));
        assert_eq!(rates.len(), 20);
        // 10,000 bytes in 100 ms is 0.8 Mbit/s.
        assert!((rates[0] - 0.8).abs() < 1e-9);
        assert_eq!(rates[12], 0.0);
        assert!((rates[19] - 0.4).abs() < 1e-9);
    }
}
