//! Whole-packet scheduling across an association's paths (DESIGN §8), and
//! the per-path estimates it stands on, measured without a byte added to
//! data.
//!
//! Each original packet goes on one path, whole. The choice is
//! *earliest arrival*: every path keeps a model of its bottleneck queue (the
//! time its last packet finishes leaving at the estimated rate) and its
//! forward delay; a packet goes where it is predicted to arrive first. This
//! one rule gives the three behaviours the design asks for:
//!
//! - **flowlets**: after a pause every modelled queue is empty, so a burst
//!   starts on the lowest-delay path and stays there until that path's queue
//!   grows past the paths' delay spread;
//! - **striping**: on closely matched paths packets alternate once a queue
//!   builds; where the plan cannot tell the paths apart at all (delays
//!   within each other's noise, one planned rate) their arrival times tie
//!   and packets take turns, however light the flow;
//! - **little reordering**: a packet is only put on a slower path when it
//!   would still arrive no later than one sent now on the faster path.
//!
//! A hysteresis margin keeps an idle previous path while it is within a
//! millisecond of the best but not tied with it (so estimates' noise does
//! not move a light flow back and forth), bounded so the reordering it may
//! add stays under the configured reorder bound (in packets, inside
//! WireGuard's replay window).
//! Backup uplinks are used only when no primary path is usable; metered
//! uplinks only when every unmetered path is saturated; paths that lose
//! probes (not to their queue) only when no clean path is usable.
//!
//! The estimates: forward one-way delay (plus the clocks' offset, which
//! cancels between paths) from each pong's timestamp; its minimum is the
//! path's delay with an empty queue, and the excess is queueing. Each
//! probe's measured queue is compared with what the model held when the
//! probe left, and the path's model is moved by the difference. Loss
//! and delivery rate come from the receiver's statistics reports. The rate
//! planned with is the operator's capacity hint, else the capacity measured
//! (the most the path delivered while every probe found its queue
//! standing, as the model expected; see [`Estimates::capacity`]), else a
//! guess raised while the path takes all it is given (see
//! [`Estimates::rate`]). Paths of matched delay (within 2 ms, or
//! within the noise of their delays) and rate plan at one rate, so packets
//! alternate between them; a slower path carries only once the faster
//! paths' capacities are measured (a hint alone does not count), since a
//! spill onto it is timed by their queues.

use std::time::{Duration, Instant};

use smallvec::SmallVec;

use super::UplinkPolicy;
use super::UplinkPriority;

mod lane;

use lane::service;
pub use lane::Estimates;
pub(crate) use lane::Lane;

/// Default reorder bound, in packets: well inside the replay windows of
/// WireGuard's kernel module and wireguard-go (about 8,000 packets) and of
/// boringtun (about 1,000).
pub const DEFAULT_REORDER_BOUND: u32 = 512;

/// How the scheduler behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SchedulerConfig {
    /// Most packets a packet may be overtaken by, as the scheduler predicts.
    pub reorder_bound: u32,
    /// Capacity assumed of a path with no hint before it is measured,
    /// bits per second.
    pub initial_rate_bps: u64,
    /// Time between the receiver's statistics reports on a path carrying data.
    pub stats_interval: Duration,
    /// Time between liveness probes on a path carrying data.
    pub active_probe_interval: Duration,
    /// While data goes through a relay, a direct path must have been
    /// validated this long before it takes over (hysteresis: a direct path
    /// that flaps does not pull the traffic back and forth).
    pub relay_return_hold: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            reorder_bound: DEFAULT_REORDER_BOUND,
            initial_rate_bps: 20_000_000,
            stats_interval: Duration::from_millis(100),
            active_probe_interval: Duration::from_millis(50),
            relay_return_hold: Duration::from_secs(2),
        }
    }
}

/// Paths whose delays with an empty queue are this close are matched
/// (microseconds): they plan at one rate, so packets alternate between
/// them once a queue builds; a path further than this above a faster one
/// waits for that one's capacity to be known. Paths whose delays are
/// noisier match over more, up to [`MATCHED_NOISE_MAX_US`] (see
/// [`MATCHED_JITTERS`]).
const MATCHED_DELAY_US: i64 = 2_000;
/// Paths whose delays with an empty queue differ by less than this many
/// of their forward-delay mean deviations (the smaller of the two) are
/// matched too: a difference inside the noise both paths see is not one
/// the plan can order packets by (on a loaded host, two identical
/// loopback paths' minima came out several milliseconds apart), and
/// ranking them by it leaves one idle. Four mean deviations cover most of
/// a delay's swing, as in a retransmission timeout.
const MATCHED_JITTERS: i64 = 4;
/// A difference of delays above this (microseconds) is never taken for
/// noise: under a flow, each path's delay swings with its own queue, and
/// four mean deviations of that can span any difference (case b for real,
/// 20 and 50 ms each way: 13 to 16 ms of mean deviation on both uplinks
/// under TCP, so the plan took them for equally fast and spread packets
/// across the 30 ms between them; one run of eight put 8 % of the flow on
/// the faster uplink, 24 Mbit/s against 45 over it alone).
const MATCHED_NOISE_MAX_US: u64 = 5_000;
/// Measured capacities within this ratio of each other are one rate to
/// matched paths: a few per cent of measurement noise must not unbalance
/// them (packets on the busier one fall behind, and TCP takes the
/// reordering for loss).
const MATCHED_RATE: f64 = 1.25;
/// The hysteresis margin: an idle previous path is kept while its
/// predicted arrival is within this of the best (a tie takes turns).
const SWITCH_MARGIN: Duration = Duration::from_millis(1);
/// The modelled queues never all run further ahead than this: past it the
/// estimates are too low, and reports will correct them.
const MAX_MODEL_QUEUE: Duration = Duration::from_millis(200);
/// A metered path is used only when every unmetered one has at least this
/// much modelled queue (it is saturated).
const METERED_OVERFLOW: Duration = Duration::from_millis(20);

/// Why a path gets the share it gets, for status and `explain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// It carries data, placed by earliest arrival.
    Carrying,
    /// It has not answered (yet, or any more).
    NotValidated,
    /// Its address stopped answering data-bearing traffic recently while
    /// another path did not.
    Stale,
    /// A backup: primaries can carry the traffic.
    Backup,
    /// Metered: unmetered paths have capacity left.
    Metered,
    /// Its forward delay is above a faster path's whose capacity is not
    /// measured yet (under a standing queue; a hint alone does not count):
    /// the plan cannot time a spill onto it.
    Slow,
    /// It lost more than 2 % of its probes lately (not to its queue; see
    /// [`Estimates::lossy`]) and a clean path is usable.
    Lossy,
    /// Validated lately and lost one of its first pings
    /// ([`super::path::PROVING_PINGS`]) while a clean path is usable: it
    /// carries once those pings tell what it loses.
    Proving,
    /// Through a relay: a direct path is usable.
    Relayed,
    /// Direct, validated lately while data goes through a relay: it takes
    /// over once it has held for the return hold.
    Settling,
    /// The peer answers it from another port, and another path to the
    /// same peer address through the same uplink carries.
    Redundant,
    /// Through a relay allocation being replaced: the new allocation's
    /// path is usable.
    Retiring,
}

impl Reason {
    /// The phrase status and `explain` show.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Carrying => "carrying: placed by earliest arrival",
            Self::NotValidated => "not validated: no authentic pong to its pings",
            Self::Stale => "stale: a fresher path to the peer exists",
            Self::Backup => "backup: a primary path is usable",
            Self::Metered => "metered: unmetered paths have capacity left",
            Self::Slow => "slow: behind a faster path whose capacity is not measured yet",
            Self::Lossy => "lossy: lost over 2 % of its probes lately and a clean path is usable",
            Self::Proving => {
                "proving: validated lately and lost a ping; carries once its first pings tell what it loses"
            }
            Self::Relayed => "relayed: a direct path is usable",
            Self::Settling => "settling: validated lately; the relay carries until it has held",
            Self::Redundant => {
                "redundant: answered from another port; a path to the same peer address carries"
            }
            Self::Retiring => "retiring: its relay allocation is being replaced by one that works",
        }
    }

    /// The one-word name status JSON and metrics use.
    pub fn code(self) -> &'static str {
        match self {
            Self::Carrying => "carrying",
            Self::NotValidated => "not-validated",
            Self::Stale => "stale",
            Self::Backup => "backup",
            Self::Metered => "metered",
            Self::Slow => "slow",
            Self::Lossy => "lossy",
            Self::Proving => "proving",
            Self::Relayed => "relayed",
            Self::Settling => "settling",
            Self::Redundant => "redundant",
            Self::Retiring => "retiring",
        }
    }
}

/// One path as the scheduler sees it for one decision.
#[derive(Debug)]
pub(crate) struct Candidate<'a, K> {
    pub(crate) key: K,
    pub(crate) lane: &'a mut Lane,
    pub(crate) policy: UplinkPolicy,
    /// Validated and not failed.
    pub(crate) active: bool,
    /// Heard from recently.
    pub(crate) fresh: bool,
    /// Added to the predicted arrival (e.g. a relay's).
    pub(crate) penalty: Duration,
    /// Crosses a relay: used only when no direct path of its priority is.
    pub(crate) relay: bool,
    /// Leads through the same NATs as another path, which carries.
    pub(crate) redundant: bool,
    /// A direct path validated less than the return hold ago while data
    /// goes through a relay: it waits (hysteresis).
    pub(crate) settling: bool,
    /// Crosses a relay allocation that is being replaced: used only when
    /// no other path of its priority is (make-before-break).
    pub(crate) retiring: bool,
    /// Forward delay fallback (half the smoothed RTT) when a path has no
    /// timed pong yet.
    pub(crate) half_rtt: Duration,
    /// Validated lately, its first pings still telling what it loses, and
    /// one of them lost already ([`super::path::Path::suspect`]).
    pub(crate) suspect: bool,
}

/// A path's forward delay with an empty queue, as the plan compares paths:
/// the pong-timed minimum when every compared path has one (`timed`), else
/// half the smoothed round trip (the clocks' offset would not cancel
/// between a timed and an untimed path).
fn base_delay<K>(c: &Candidate<'_, K>, timed: bool) -> i64 {
    if timed {
        c.lane.est.fwd_min_us.unwrap_or(0)
    } else {
        i64::try_from(c.half_rtt.as_micros()).unwrap_or(i64::MAX)
    }
}

/// Whether two paths' delays with an empty queue are matched: within
/// [`MATCHED_DELAY_US`], or within [`MATCHED_JITTERS`] of the quieter
/// one's forward-delay mean deviation.
fn delays_matched<K>(a: &Candidate<'_, K>, b: &Candidate<'_, K>, timed: bool) -> bool {
    let difference = base_delay(a, timed).abs_diff(base_delay(b, timed));
    difference <= MATCHED_DELAY_US.unsigned_abs() || within_noise(a, b, difference)
}

/// Whether a delay difference is inside the noise both paths see:
/// [`MATCHED_JITTERS`] of the quieter one's forward-delay mean deviation,
/// and at most [`MATCHED_NOISE_MAX_US`].
fn within_noise<K>(a: &Candidate<'_, K>, b: &Candidate<'_, K>, difference: u64) -> bool {
    let noise = a.lane.est.fwd_jitter_us.min(b.lane.est.fwd_jitter_us);
    difference
        <= noise
            .saturating_mul(MATCHED_JITTERS)
            .unsigned_abs()
            .min(MATCHED_NOISE_MAX_US)
}

/// The tier a path is in: lower tiers are used first. A relay path comes
/// after the direct paths of its uplink's priority, and a retiring relay
/// path after the relay path replacing it.
fn tier<K>(c: &Candidate<'_, K>) -> u8 {
    let priority = match c.policy.priority {
        UplinkPriority::Primary => 0,
        UplinkPriority::Backup => 3,
    };
    priority + u8::from(c.relay) + u8::from(c.retiring)
}

/// Why each candidate is (or is not) eligible, in the order given.
pub(crate) fn eligibility<K>(
    now: Instant,
    candidates: &[Candidate<'_, K>],
) -> SmallVec<[Reason; 8]> {
    let any_fresh = candidates.iter().any(|c| c.active && c.fresh);
    let usable =
        |c: &Candidate<'_, K>| c.active && !c.redundant && !c.settling && (c.fresh || !any_fresh);
    let Some(best_tier) = candidates
        .iter()
        .filter(|c| usable(c))
        .map(|c| tier(c))
        .min()
    else {
        return candidates
            .iter()
            .map(|c| {
                if c.active {
                    Reason::Stale
                } else {
                    Reason::NotValidated
                }
            })
            .collect();
    };
    let in_tier = |c: &Candidate<'_, K>| usable(c) && tier(c) == best_tier;
    // Metered paths of the chosen tier are used only when every unmetered
    // one there is saturated (or there is none): its modelled queue is long
    // and, unless its rate is the operator's hint, the measured one too (a
    // model planned at the initial guess fills long before a faster link
    // does).
    let saturated = |c: &Candidate<'_, K>| {
        c.lane.backlog(now) >= METERED_OVERFLOW && (c.lane.est.hinted || !c.lane.queue_is_short())
    };
    let lossy = |c: &Candidate<'_, K>| c.lane.est.lossy;
    // A lossy or suspect unmetered path carries nothing beside a clean
    // one, so it leaves a metered one nothing to wait for.
    let unmetered_saturated = candidates
        .iter()
        .filter(|c| in_tier(c) && !c.policy.metered && !c.lane.est.lossy && !c.suspect)
        .all(saturated);
    // Lossy paths are used only when the tier has no clean one: not even
    // as overflow, since TCP inside the tunnel backs off for every loss,
    // and what a lossy path adds costs the flow more than it brings.
    let any_clean = candidates.iter().any(|c| in_tier(c) && !lossy(c));
    // A path validated lately that lost one of its first pings carries
    // beside a clean one only once its loss is known: a TCP flow that lost
    // a few segments of its first window on it waits out a timeout for
    // each (multiwan case d: 2.3 Mbit/s, against 26.3 over the clean link
    // alone).
    let any_trusted = candidates
        .iter()
        .any(|c| in_tier(c) && !lossy(c) && !c.suspect);
    // A path slower than another of the tier carries only once that one's
    // capacity is measured: spilling onto it is timed by the faster path's
    // queue, and a queue modelled at a guessed rate reorders by up to the
    // whole delay spread. A hint is not enough: it is an upper bound, and
    // with both paths carrying from the first packet, slow start
    // overflowed the faster one's queue amid the reordering (multiwan
    // case b with hints, window 1.2: 1.7 Mbit/s, against 8.3 over link 1
    // alone and 51 waiting for the measure).
    let timed = candidates
        .iter()
        .filter(|c| in_tier(c))
        .all(|c| c.lane.est.fwd_min_us.is_some());
    let delay = |c: &Candidate<'_, K>| base_delay(c, timed);
    // The fastest of the paths that carry first: unmetered, clean and not
    // suspect ones if any, else unmetered ones, else any.
    let first = |c: &Candidate<'_, K>| in_tier(c) && !c.policy.metered && !lossy(c) && !c.suspect;
    let unmetered = |c: &Candidate<'_, K>| in_tier(c) && !c.policy.metered;
    let pool: &dyn Fn(&Candidate<'_, K>) -> bool = if candidates.iter().any(first) {
        &first
    } else if candidates.iter().any(unmetered) {
        &unmetered
    } else {
        &in_tier
    };
    let unknown_faster = |c: &Candidate<'_, K>| {
        candidates.iter().any(|o| {
            pool(o)
                && delay(o) < delay(c)
                && !delays_matched(o, c, timed)
                && o.lane.est.capacity.is_none()
        })
    };
    let mut reasons = candidates
        .iter()
        .map(|c| {
            if !c.active {
                Reason::NotValidated
            } else if c.redundant {
                Reason::Redundant
            } else if c.settling {
                Reason::Settling
            } else if !usable(c) {
                Reason::Stale
            } else if tier(c) > best_tier && c.retiring {
                Reason::Retiring
            } else if tier(c) > best_tier && c.relay {
                Reason::Relayed
            } else if tier(c) > best_tier {
                Reason::Backup
            } else if unknown_faster(c) {
                Reason::Slow
            } else if c.policy.metered && !unmetered_saturated {
                Reason::Metered
            } else if lossy(c) && any_clean {
                Reason::Lossy
            } else if c.suspect && any_trusted {
                Reason::Proving
            } else {
                Reason::Carrying
            }
        })
        .collect::<SmallVec<[Reason; 8]>>();
    // Holding a suspect path back must never leave nothing carrying (the
    // trusted path may itself wait for it, as `Slow` or `Metered`).
    if !reasons.contains(&Reason::Carrying) {
        for reason in &mut reasons {
            if *reason == Reason::Proving {
                *reason = Reason::Carrying;
            }
        }
    }
    reasons
}

/// Each candidate's planned share of the traffic: its effective rate over
/// the eligible paths' total, zero for the others. A distribution: the
/// shares sum to 1 when any path is eligible.
pub(crate) fn weights<K>(now: Instant, candidates: &[Candidate<'_, K>]) -> SmallVec<[f64; 8]> {
    let reasons = eligibility(now, candidates);
    let rates = plan_rates(candidates, &reasons);
    let total: f64 = rates.iter().sum();
    rates
        .iter()
        .map(|r| if total > 0.0 { r / total } else { 0.0 })
        .collect()
}

/// Whether every carrying candidate's delay is pong-timed (see
/// [`base_delay`]).
fn all_timed<K>(candidates: &[Candidate<'_, K>], reasons: &[Reason]) -> bool {
    candidates
        .iter()
        .zip(reasons)
        .filter(|(_, r)| **r == Reason::Carrying)
        .all(|(c, _)| c.lane.est.fwd_min_us.is_some())
}

/// Each carrying candidate's planning rate, zero for the others: its
/// rate, or, unhinted, the highest rate of the unhinted carrying paths
/// matched with it, lowered for its own probe loss (delays matched, see
/// [`delays_matched`]; capacities within [`MATCHED_RATE`] or not both
/// measured). Matched paths thus plan
/// at one rate and alternate packet by packet, whichever was measured
/// first.
fn plan_rates<K>(candidates: &[Candidate<'_, K>], reasons: &[Reason]) -> SmallVec<[f64; 8]> {
    let timed = all_timed(candidates, reasons);
    let carrying = |i: usize| reasons[i] == Reason::Carrying;
    let matched = |a: &Candidate<'_, K>, b: &Candidate<'_, K>| {
        let close = delays_matched(a, b, timed);
        let rates = match (a.lane.est.capacity, b.lane.est.capacity) {
            (Some(x), Some(y)) => x.max(y) <= x.min(y) * MATCHED_RATE,
            _ => true,
        };
        !a.lane.est.hinted && !b.lane.est.hinted && close && rates
    };
    (0..candidates.len())
        .map(|i| {
            if !carrying(i) {
                return 0.0;
            }
            let c = &candidates[i];
            let rate = (0..candidates.len())
                .filter(|&j| carrying(j) && matched(c, &candidates[j]))
                .map(|j| candidates[j].lane.est.rate)
                .fold(c.lane.est.rate, f64::max);
            c.lane.est.lowered_for_loss(rate)
        })
        .collect()
}

/// Keeps the model from running more than MAX_MODEL_QUEUE ahead: past it
/// the estimates are too low, and every eligible path's queue slides back
/// together, so the paths keep their proportions while reports correct the
/// rates.
fn slide<K>(now: Instant, candidates: &mut [Candidate<'_, K>], reasons: &[Reason]) {
    let ahead = candidates
        .iter()
        .zip(reasons)
        .filter(|(_, r)| **r == Reason::Carrying)
        .map(|(c, _)| c.lane.backlog(now))
        .min()
        .unwrap_or_default();
    let by = ahead.saturating_sub(MAX_MODEL_QUEUE);
    if !by.is_zero() {
        for c in candidates.iter_mut() {
            c.lane.slide_model(now, by);
        }
    }
}

/// Chooses the path for one packet of `len` bytes, given the previous
/// choice, and charges it to that path's model. Returns its index, or
/// `None` when no path is eligible.
pub(crate) fn pick<K: PartialEq>(
    now: Instant,
    candidates: &mut [Candidate<'_, K>],
    len: usize,
    previous: Option<&K>,
    config: &SchedulerConfig,
) -> Option<usize> {
    // The common case: one candidate, nothing to weigh.
    if let [only] = candidates {
        only.lane.ground(now, only.active);
        if only.active {
            let rate = only.lane.est.effective_rate();
            only.lane.sent(now, len, rate);
            return Some(0);
        }
        return None;
    }
    let reasons = eligibility(now, candidates);
    let timed = all_timed(candidates, &reasons);
    let rates = plan_rates(candidates, &reasons);
    let mut carrying = reasons
        .iter()
        .enumerate()
        .filter(|(_, r)| **r == Reason::Carrying);
    let alone = match (carrying.next(), carrying.next()) {
        (Some((alone, _)), None) => Some(alone),
        _ => None,
    };
    for (i, c) in candidates.iter_mut().enumerate() {
        c.lane.ground(now, alone == Some(i));
    }
    // The path's delay with an empty queue: its queue is what the model
    // keeps (counting the measured queue as well would count it twice).
    let delay = |c: &Candidate<'_, K>| base_delay(c, timed);
    let fastest = candidates
        .iter()
        .zip(&reasons)
        .enumerate()
        .filter(|(_, (_, r))| **r == Reason::Carrying)
        .min_by_key(|(_, (c, _))| delay(c))
        .map(|(i, _)| i)?;
    let base = delay(&candidates[fastest]);
    // A delay above the fastest path's by no more than both paths' noise
    // does not rank them: the plan treats them as equally fast.
    let spreads: SmallVec<[Duration; 8]> = candidates
        .iter()
        .map(|c| {
            let above = (delay(c) - base).max(0).unsigned_abs();
            if within_noise(c, &candidates[fastest], above) {
                Duration::ZERO
            } else {
                Duration::from_micros(above)
            }
        })
        .collect();
    slide(now, candidates, &reasons);
    let arrivals: SmallVec<[Option<Instant>; 8]> = candidates
        .iter()
        .zip(&reasons)
        .zip(&rates)
        .zip(&spreads)
        .map(|(((c, r), &rate), &spread)| {
            (*r == Reason::Carrying).then(|| c.lane.arrival(now, len, spread + c.penalty, rate))
        })
        .collect();
    let (best, earliest) = arrivals
        .iter()
        .enumerate()
        .filter_map(|(i, a)| a.map(|a| (i, a)))
        .min_by_key(|&(_, a)| a)?;
    // Keep the previous path while it is nearly as good, within what the
    // reorder bound allows: `bound` packets at the eligible paths' total rate.
    let total_rate: f64 = rates.iter().sum();
    let bound = service(len * config.reorder_bound as usize, total_rate);
    let margin = SWITCH_MARGIN.min(bound);
    // Paths the plan cannot tell apart (delays within each other's noise,
    // one planned rate, no penalty between them, queues alike: their
    // arrivals tie exactly) take turns after the previous one, so they
    // stripe a light flow too, packet by packet: a flow kept on one of
    // them got an arbitrary one, and the quickstart's four flows
    // sometimes all got the same uplink. The real delays of such paths
    // may differ within that noise, and a light flow then sees the
    // reordering the noise itself brings. The margin is for near ties,
    // which the plan can rank: the flow stays unless the gain is clear.
    // Only an idle previous path is kept that way: once it has a queue,
    // the other paths win.
    let tied = |i: usize| arrivals[i] == Some(earliest);
    let chosen = match previous.and_then(|p| candidates.iter().position(|c| &c.key == p)) {
        Some(p) if tied(p) => (1..=candidates.len())
            .map(|k| (p + k) % candidates.len())
            .find(|&i| tied(i))
            .unwrap_or(p),
        Some(p)
            if candidates[p].lane.backlog(now).is_zero()
                && arrivals[p].is_some_and(|a| a <= earliest + margin) =>
        {
            p
        }
        _ => best,
    };
    candidates[chosen].lane.sent(now, len, rates[chosen]);
    Some(chosen)
}

#[cfg(test)]
mod tests;
