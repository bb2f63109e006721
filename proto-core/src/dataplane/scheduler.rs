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
//! standing, as the model expected), else a guess raised while the path takes all it is given
//! (see [`Estimates::rate`]). Paths of matched delay (within 2 ms, or
//! within the noise of their delays) and rate plan at one rate, so packets
//! alternate between them; a slower path carries only once the faster
//! paths' capacities are measured (a hint alone does not count), since a
//! spill onto it is timed by their queues.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use smallvec::SmallVec;

use super::path::Traffic;
use super::UplinkPolicy;
use super::UplinkPriority;
use crate::time::WallClock;

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
/// Delivery-rate maximum window: `delivered_max` is the most a path
/// delivered in the last one or two windows, and the capacity estimate
/// the most it delivered while its queue stood.
const MAX_WINDOW: Duration = Duration::from_secs(5);
/// A path's model is the flow's limit when a packet finds this much
/// modelled queue ahead of it: the plan sends no faster than the estimate.
const MODEL_BUSY: Duration = Duration::from_millis(2);
/// Growth of an unmeasured path's planning rate (and of a hinted path's
/// measured below its hint) per report in which the model was the limit
/// and the measured queue stayed short (the path took all it was given):
/// the rate is raised until a queue stands and the delivery rate under it
/// can be measured.
const PROBE_GAIN: f64 = 1.25;
/// Forward-delay minimum window: the path's delay with an empty queue is the
/// lowest sample in the last one or two windows.
const MIN_WINDOW: Duration = Duration::from_secs(10);
/// A forward-delay sample this far above the minimum found a queue: the
/// bottleneck was busy when the probe passed it.
const STANDING_QUEUE: Duration = Duration::from_millis(1);
/// Queueing above this means the path is congested.
const CONGESTED_QUEUE: Duration = Duration::from_millis(5);
/// Loss is not counted this long after a forward-delay sample last showed
/// congestion: drops at a full queue are the flow's own congestion, and the
/// reports and probe outcomes that tell of them arrive after the queue (and
/// its smoothed measure) may have drained.
const CONGESTION_GRACE: Duration = Duration::from_secs(1);
/// Probes whose modelled queue is remembered (as many as a path keeps
/// outstanding).
const PROBE_BACKLOGS: usize = super::path::MAX_PENDING;
/// Lowest capacity estimate, bytes per second (64 kbit/s).
const MIN_RATE: f64 = 8_000.0;
/// Weight of loss in a path's effective rate: rate × (1 − loss)^LOSS_POWER.
/// TCP inside the tunnel suffers from any loss, so a lossy path is used only
/// for what the clean ones cannot carry.
const LOSS_POWER: i32 = 60;
/// Tx snapshots kept per path to match receiver reports: taken as data is
/// sent, at most one per 64th of a round trip and a report interval (at
/// least 1 ms apart), so a report is matched to within about a millisecond
/// of sending however bursty the flow, and they reach back twice the span
/// reports need.
const HISTORY: usize = 128;
/// Data loss is sampled over windows of this many packets sent, or this
/// long: long enough that the matching error at their edges (a few
/// packets) is small against what was sent in them.
const LOSS_WINDOW_PACKETS: u64 = 1_000;
const LOSS_WINDOW: Duration = Duration::from_secs(2);
/// Probe-loss evidence fades by this factor per probe outcome: about the
/// last 16 probes (0.8 s on a path carrying data, 4 s on an idle one).
const PROBE_LOSS_DECAY: f64 = 15.0 / 16.0;
/// Probes a lossy path must answer in a row to be clean again: 16 s at the
/// idle probe interval. A path losing 5 % of round trips does that about
/// once in 30 tries, one losing 1 % about every other.
pub const CLEAN_RUN: u32 = 64;
/// Loss below this is not held against a path: estimates are never exact,
/// and a small error on one of two matched paths would unbalance them (and
/// the reordering that follows costs TCP more than the loss).
const LOSS_FLOOR: f64 = 0.02;

/// What is known of one path, measured without adding bytes to data.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimates {
    /// Forward one-way delay plus the two clocks' offset, smoothed, in
    /// microseconds: only differences between paths (and against the
    /// minimum) mean anything.
    pub fwd_us: Option<i64>,
    /// The lowest forward sample of the last 10 to 20 seconds: the path's
    /// forward delay with no queue (plus the same offset).
    pub fwd_min_us: Option<i64>,
    /// Mean deviation of the forward samples from the smoothed forward
    /// delay, microseconds: the delay's noise (queue swings, or the hosts'
    /// scheduling under load).
    pub fwd_jitter_us: i64,
    /// The capacity the scheduler plans with, bytes per second: the
    /// operator's hint (or, when [`Estimates::capacity`] is below four
    /// fifths of it, that capacity, raised by a quarter per report, up to
    /// the hint, while the plan was the flow's limit on this path and its
    /// queue stayed short); else [`Estimates::capacity`]; else the initial
    /// guess, raised the same way. Matched paths plan
    /// at the highest of their rates (measurement noise between them
    /// would unbalance them, and TCP takes the reordering for loss).
    pub rate: f64,
    /// The most the path delivered in the last 5 to 10 seconds, bytes per
    /// second.
    pub delivered_max: f64,
    /// True when the rate is the operator's hint (an upper bound).
    pub hinted: bool,
    /// The most the path delivered in the last 5 to 10 seconds while its
    /// queue stood (so it ran at capacity), bytes per second: in reports
    /// whose probes all found a queue, no shorter than the one the model
    /// held when they left, and whose arrivals span at most one
    /// and a half times the receiver's report cadence. `None` when no
    /// report was taken under a standing queue lately. Measured on hinted
    /// paths too.
    pub capacity: Option<f64>,
    /// Delivery rate in the receiver's last report, bytes per second.
    pub delivery: f64,
    /// Loss not caused by a queue, 0 to 1: the larger of what reports
    /// measure (data, one way, over windows of 1,000 packets or 2 s) and
    /// [`Estimates::probe_loss`].
    pub loss: f64,
    /// Probes lost not to a queue, 0 to 1, of about the last 16 round
    /// trips, less one lost probe's worth (one loss alone is not held
    /// against a path, two are). Exact (each probe is answered or not), so
    /// it judges a path lossy.
    pub probe_loss: f64,
    /// Lossy: its probe loss went past 2 %, and it has not answered
    /// [`CLEAN_RUN`] probes in a row since (hysteresis: a path losing a
    /// few per cent answers most probes, and must not win data back each
    /// time its few losses fade from the estimate).
    pub lossy: bool,
    /// Receiver reports taken.
    pub reports: u64,
}

impl Estimates {
    fn new(policy: &UplinkPolicy, config: &SchedulerConfig) -> Self {
        let (rate, hinted) = match policy.capacity_bps {
            Some(bps) => (bps as f64 / 8.0, true),
            None => (config.initial_rate_bps as f64 / 8.0, false),
        };
        Self {
            fwd_us: None,
            fwd_min_us: None,
            fwd_jitter_us: 0,
            rate: rate.max(MIN_RATE),
            delivered_max: 0.0,
            hinted,
            capacity: None,
            delivery: 0.0,
            loss: 0.0,
            probe_loss: 0.0,
            lossy: false,
            reports: 0,
        }
    }

    /// Whether the planning rate is known: the operator's hint, or a
    /// capacity measured under a standing queue.
    pub fn rate_known(&self) -> bool {
        self.hinted || self.capacity.is_some()
    }

    /// Queueing delay on the way out: smoothed forward delay above its minimum.
    pub fn queue_delay(&self) -> Duration {
        match (self.fwd_us, self.fwd_min_us) {
            (Some(fwd), Some(min)) => Duration::from_micros(fwd.saturating_sub(min).max(0) as u64),
            _ => Duration::ZERO,
        }
    }

    /// The rate the scheduler plans with: the capacity estimate lowered for
    /// probe loss. Not for the receiver reports' loss: matched to what was
    /// sent by departure times that are off by the queue's changes, it
    /// showed 4 % on a path that lost nothing in the simulator, and
    /// planning with it put a 100 Mbit/s path's model 75 ms behind reality.
    pub fn effective_rate(&self) -> f64 {
        self.lowered_for_loss(self.rate)
    }

    /// `rate` lowered for this path's probe loss.
    fn lowered_for_loss(&self, rate: f64) -> f64 {
        let loss = (self.probe_loss - LOSS_FLOOR).clamp(0.0, 1.0);
        (rate * (1.0 - loss).powi(LOSS_POWER)).max(MIN_RATE / 8.0)
    }
}

/// A receiver report as the sender keeps it, with what had been sent by
/// then.
#[derive(Debug, Clone, Copy)]
struct Report {
    seq: u32,
    rx: Traffic,
    last_rx_us: u64,
    tx: Traffic,
    tx_at: Instant,
}

/// What an outstanding probe found in the path's model when it left.
#[derive(Debug, Clone, Copy)]
struct ProbeMark {
    txid: u64,
    /// The modelled queue.
    backlog: Duration,
    /// [`Lane::adjusted_us`] then.
    adjusted_us: i64,
    /// Whether the model was the measure (see [`Lane::ground`]).
    grounded: bool,
}

/// A path's scheduling and measurement state.
#[derive(Debug, Clone)]
pub(crate) struct Lane {
    pub(crate) est: Estimates,
    /// The operator's capacity hint, bytes per second.
    hint: Option<f64>,
    /// The longest span of arrivals a report may cover and still measure
    /// a capacity: one and a half times the receiver's report cadence (it
    /// reports at its ticks, a probe interval apart, once a report
    /// interval has passed: the report interval rounded up to whole probe
    /// intervals, 100 ms by default). A longer span had a pause in it, or
    /// follows a lost report.
    busy_span: Duration,
    /// When the modelled bottleneck queue empties.
    busy_until: Option<Instant>,
    /// The forward-delay minimum of this window and of the previous one.
    min_window: Option<(Instant, i64, Option<i64>)>,
    /// The delivery-rate maximum of this window and of the previous one.
    max_window: Option<(Instant, f64, Option<f64>)>,
    /// The same, of reports taken while the measured queue stood: the
    /// path was saturated, so it delivered at its capacity.
    capacity_window: Option<(Instant, f64, Option<f64>)>,
    /// When a packet last found the model busy (see [`MODEL_BUSY`]).
    model_busy_at: Option<Instant>,
    /// When the model was last set to the measured queue (see
    /// [`Lane::ground`]), and whether the latest packet charged was
    /// charged to a model set so.
    grounded_at: Option<Instant>,
    grounded: bool,
    /// Cumulative data sent, sampled each tick, to match reports.
    history: VecDeque<(Instant, Traffic)>,
    last_report: Option<Report>,
    /// The report the current loss window started at.
    loss_window: Option<Report>,
    /// Receiver side: the next report's sequence number and what was
    /// reported last.
    pub(crate) stats_seq: u32,
    pub(crate) reported: u64,
    pub(crate) stats_at: Option<Instant>,
    /// Loss measured by receiver reports; the estimate is the larger of it
    /// and the probes' (a path that collapsed a flow carries too little
    /// data to measure, its probes still tell).
    data_loss: f64,
    /// Probe outcomes, faded with age: sent and unanswered.
    probes_sent: f64,
    probes_lost: f64,
    /// Probes answered in a row.
    answered_run: u32,
    /// When a forward-delay sample last showed a congested queue.
    congested_at: Option<Instant>,
    /// Since the last report: whether every forward-delay sample found a
    /// queue (`None`: no sample).
    standing: Option<bool>,
    /// The latest forward-delay sample's queueing (not smoothed: the
    /// freshest the measurement gets).
    last_queue: Duration,
    /// What each outstanding probe found in the model when it left: its
    /// answer's measured queue is compared with what the model held then.
    probe_backlogs: VecDeque<ProbeMark>,
    /// The sum of the moves made to the modelled queue other than by
    /// charging data (corrections by probes, rescaling to a new rate,
    /// sliding, capping; not grounding, see [`Lane::ground`]),
    /// microseconds: a probe's answer counts those made after it left as
    /// part of the model it is compared with.
    adjusted_us: i64,
}

impl Lane {
    pub(crate) fn new(policy: &UplinkPolicy, config: &SchedulerConfig) -> Self {
        Self {
            est: Estimates::new(policy, config),
            hint: policy
                .capacity_bps
                .map(|bps| (bps as f64 / 8.0).max(MIN_RATE)),
            busy_span: report_cadence(config).mul_f64(1.5),
            busy_until: None,
            min_window: None,
            max_window: None,
            capacity_window: None,
            model_busy_at: None,
            grounded_at: None,
            grounded: false,
            history: VecDeque::new(),
            last_report: None,
            loss_window: None,
            stats_seq: 0,
            reported: 0,
            stats_at: None,
            data_loss: 0.0,
            probes_sent: 0.0,
            probes_lost: 0.0,
            answered_run: 0,
            congested_at: None,
            standing: None,
            last_queue: Duration::ZERO,
            probe_backlogs: VecDeque::new(),
            adjusted_us: 0,
        }
    }

    /// The probe `txid` leaves at `now`: remembers the modelled queue it
    /// finds.
    pub(crate) fn on_probe_sent(&mut self, now: Instant, txid: u64) {
        if self.probe_backlogs.len() == PROBE_BACKLOGS {
            self.probe_backlogs.pop_front();
        }
        self.probe_backlogs.push_back(ProbeMark {
            txid,
            backlog: self.backlog(now),
            adjusted_us: self.adjusted_us,
            grounded: self.grounded,
        });
    }

    /// Moves the modelled queue's end to `to` (never before `now`) other
    /// than by charging data, and counts the move in
    /// [`Lane::adjusted_us`]. However wrong the estimates, the model never
    /// runs more than twice [`MAX_MODEL_QUEUE`] ahead.
    fn move_model(&mut self, now: Instant, to: Instant) {
        let before = self.backlog(now);
        self.busy_until = Some(to.clamp(now, now + MAX_MODEL_QUEUE * 2));
        let after = self.backlog(now);
        self.adjusted_us = self
            .adjusted_us
            .saturating_add(micros(after) - micros(before));
    }

    /// A pong matched a ping sent at wall time `ping_us`; the peer stamped
    /// it `pong_us`. The difference is the forward delay plus the clocks'
    /// offset.
    pub(crate) fn on_timing(&mut self, now: Instant, txid: u64, ping_us: u64, pong_us: u64) {
        let sample = i64::try_from(pong_us)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(ping_us).unwrap_or(i64::MAX));
        self.est.fwd_us = Some(match self.est.fwd_us {
            None => sample,
            Some(fwd) => {
                let jitter = self.est.fwd_jitter_us;
                let deviation = i64::try_from(sample.abs_diff(fwd)).unwrap_or(i64::MAX);
                self.est.fwd_jitter_us = jitter + (deviation - jitter) / 4;
                fwd + (sample - fwd) / 4
            }
        });
        let window = self.min_window.get_or_insert((now, sample, None));
        if now.saturating_duration_since(window.0) >= MIN_WINDOW {
            *window = (now, sample, Some(window.1));
        }
        window.1 = window.1.min(sample);
        let min = window.2.map_or(window.1, |prev| prev.min(window.1));
        self.est.fwd_min_us = Some(min);
        if sample.saturating_sub(min) > CONGESTED_QUEUE.as_micros() as i64 {
            self.congested_at = Some(now);
        }
        self.last_queue = Duration::from_micros(sample.saturating_sub(min).max(0) as u64);
        let modelled = self.modelled_for(txid);
        if let Some((modelled_us, _)) = modelled {
            self.correct(now, modelled_us);
        }
        // The queue stood for this probe only if the model held one as
        // well when the probe left, and no more than the probe found. A
        // queue the model did not hold (the path was given less than its
        // plan) is noise or another's traffic, and what the path delivered
        // then is what it was given: a delay line in a process on a busy
        // host delays a probe by a millisecond or two now and then, and
        // unhinted, a 50 Mbit/s uplink given 15 to 25 measured 16 and was
        // planned at that (`tl-bench multiwan` at case b's rates). Less
        // than the model held means the path drains faster than planned:
        // not at its capacity either. But a hinted path's model is only
        // ever moved later (see `correct`), so each noisy probe leaves it
        // further ahead of the real queue: there the model need only have
        // held a queue (compared too, hinted case b for real gave wan2 4 %
        // of the flow in two rounds of four, waiting for wan1's capacity).
        // A model set to the measure (a path of unknown rate carrying
        // alone) tells nothing apart from it: there the measure alone
        // decides.
        let queue_us = micros(self.last_queue);
        let standing_us = micros(STANDING_QUEUE);
        let hinted = self.hint.is_some();
        let queued = queue_us > standing_us
            && modelled.is_some_and(|(m, grounded)| {
                grounded || (m > standing_us && (hinted || queue_us >= m))
            });
        self.standing = Some(self.standing.unwrap_or(true) && queued);
    }

    /// The modelled queue the answered probe `txid` found when it left,
    /// counting the moves made to the model since (see
    /// [`Lane::adjusted_us`]), microseconds, and whether the model was
    /// set to the measure then; forgets it and every older probe. `None`
    /// for a probe not remembered.
    fn modelled_for(&mut self, txid: u64) -> Option<(i64, bool)> {
        let at = self.probe_backlogs.iter().position(|m| m.txid == txid)?;
        let mark = self.probe_backlogs[at];
        self.probe_backlogs.drain(..=at);
        let moved_since = self.adjusted_us.saturating_sub(mark.adjusted_us);
        Some((
            micros(mark.backlog).saturating_add(moved_since),
            mark.grounded,
        ))
    }

    /// Moves the path's modelled queue by what the answered probe found
    /// beyond (or short of) the model when it left, `modelled_us` (see
    /// [`Lane::modelled_for`]). The two
    /// are compared as of the probe's departure, so the measure does not
    /// lag the model (the smoothed queue, over probes 50 ms apart, lags it
    /// by a few hundred milliseconds: a drained queue still measured full
    /// held traffic off a path and reordered it, multiwan case b at window
    /// 0.5: 105 packets late, 22 Mbit/s against 105 now). The moves made
    /// to the model after the probe left count as part of the model it is
    /// compared with, so two probes that saw one error move it once. The
    /// error moves the end of the modelled queue, not the queue now: by
    /// the answer, the queue the probe waited behind has left, and only
    /// what was modelled after it still stands. A hinted path's model is
    /// moved later too, never earlier (the hint is an upper bound): the
    /// hint is a rate in the data's bytes, and a link that
    /// counts its headers as well (a `tc tbf` at the hinted rate) drains
    /// a few per cent slower than planned, so a model left alone ran
    /// ahead of the real queue, packets on the other path overtook the
    /// ones behind it, and TCP retransmitted (`tl-bench multiwan` with
    /// hints, case b at half its rates: 1.12 to 1.41 times the faster
    /// uplink alone, 1.40 to 1.47 with the model corrected; at its rates,
    /// corrected only later, 1.33 to 1.47).
    fn correct(&mut self, now: Instant, modelled_us: i64) {
        let error_us = micros(self.last_queue).saturating_sub(modelled_us);
        if error_us.unsigned_abs() <= STANDING_QUEUE.as_micros() as u64 {
            return;
        }
        let Some(end) = self.busy_until else {
            return;
        };
        // A hint is an upper bound: a probe may find a hinted path slower
        // than planned, never faster.
        if self.hint.is_some() && error_us < 0 {
            return;
        }
        let error = Duration::from_micros(error_us.unsigned_abs());
        let to = if error_us > 0 {
            end + error.min(MAX_MODEL_QUEUE * 2)
        } else {
            end.checked_sub(error).unwrap_or(now)
        };
        self.move_model(now, to);
    }

    /// A probe was answered (`true`) or given up on: the loss estimate when
    /// no data flows to measure it.
    /// A probe lost to a full queue says nothing of the path's own loss,
    /// and is not counted.
    pub(crate) fn on_probe_outcome(&mut self, now: Instant, answered: bool) {
        if self.congested_lately(now) {
            return;
        }
        self.probes_sent = self.probes_sent * PROBE_LOSS_DECAY + 1.0;
        self.probes_lost = self.probes_lost * PROBE_LOSS_DECAY + f64::from(!answered);
        self.answered_run = if answered { self.answered_run + 1 } else { 0 };
        self.update_loss();
        self.est.lossy = if self.est.lossy {
            self.answered_run < CLEAN_RUN
        } else {
            self.est.probe_loss > LOSS_FLOOR
        };
    }

    fn update_loss(&mut self) {
        self.est.probe_loss = if self.probes_sent > 0.0 {
            ((self.probes_lost - 1.0).max(0.0) / self.probes_sent).min(1.0)
        } else {
            0.0
        };
        self.est.loss = self.data_loss.max(self.est.probe_loss);
    }

    /// Data of the path's cumulative count `tx` goes out at `now`: sampled
    /// when the last sample is at least a 64th of `span` (a round trip and
    /// a report interval) old, and at least a millisecond.
    pub(crate) fn on_sent(&mut self, now: Instant, tx: Traffic, span: Duration) {
        let spacing = (span / (HISTORY as u32 / 2)).max(Duration::from_millis(1));
        if self
            .history
            .back()
            .is_none_or(|&(at, _)| now.saturating_duration_since(at) >= spacing)
        {
            self.record(now, tx);
        }
    }

    fn record(&mut self, now: Instant, tx: Traffic) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back((now, tx));
    }

    /// Samples what has been sent, once a tick.
    pub(crate) fn snapshot(&mut self, now: Instant, tx: Traffic) {
        self.record(now, tx);
    }

    /// What had been sent by `at`, interpolated between the snapshots
    /// around it (the oldest if none is that old, the newest if none is
    /// younger).
    fn sent_by(&self, at: Instant) -> Option<Traffic> {
        let after = self.history.iter().position(|(t, _)| *t > at);
        let (t1, tx1) = match after {
            Some(0) => return self.history.front().map(|s| s.1),
            Some(i) => self.history[i],
            None => return self.history.back().map(|s| s.1),
        };
        let (t0, tx0) = self.history[after? - 1];
        let span = t1.saturating_duration_since(t0).as_secs_f64();
        let part = if span > 0.0 {
            at.saturating_duration_since(t0).as_secs_f64() / span
        } else {
            1.0
        };
        let lerp = |a: u64, b: u64| a + ((b.saturating_sub(a)) as f64 * part) as u64;
        Some(Traffic {
            packets: lerp(tx0.packets, tx1.packets),
            bytes: lerp(tx0.bytes, tx1.bytes),
        })
    }

    /// True when the queue was congested within the grace before `now`.
    pub(crate) fn congested_lately(&self, now: Instant) -> bool {
        !self.queue_is_short()
            || self
                .congested_at
                .is_some_and(|at| now.saturating_duration_since(at) < CONGESTION_GRACE)
    }

    fn queue_is_short(&self) -> bool {
        self.est.queue_delay() <= CONGESTED_QUEUE
    }

    /// A receiver report arrived at `now`. It counts data up to the last
    /// packet the receiver saw, at its wall time `last_rx_us`; that packet
    /// left here at `last_rx_us` less the forward delay (offset included),
    /// so the report is matched against what had been sent by then.
    pub(crate) fn on_report(
        &mut self,
        now: Instant,
        wall: &WallClock,
        report: (u32, Traffic, u64),
    ) {
        let (seq, rx, last_rx_us) = report;
        if self.last_report.is_some_and(|r| seq <= r.seq) {
            return;
        }
        let departed = match self.est.fwd_us {
            Some(fwd) => wall.instant(last_rx_us.saturating_add_signed(-fwd)),
            None => now,
        }
        .min(now);
        let Some(tx) = self.sent_by(departed) else {
            return;
        };
        let report = Report {
            seq,
            rx,
            last_rx_us,
            tx,
            tx_at: departed,
        };
        let start = *self.loss_window.get_or_insert(report);
        let Some(prev) = self.last_report.replace(report) else {
            return;
        };
        self.est.reports += 1;
        // Loss over windows long enough that the matching error at their
        // edges is small against what was sent in them. Drops at a full
        // queue are the flow's congestion, not the path's loss.
        let sent = tx.packets.saturating_sub(start.tx.packets);
        let long = now.saturating_duration_since(start.tx_at) >= LOSS_WINDOW;
        if sent >= LOSS_WINDOW_PACKETS || (long && sent >= 50) {
            let got = rx.packets.saturating_sub(start.rx.packets);
            if !self.congested_lately(now) {
                let sample = (1.0 - got as f64 / sent as f64).clamp(0.0, 1.0);
                self.data_loss = 0.5 * self.data_loss + 0.5 * sample;
                self.update_loss();
            }
            self.loss_window = Some(report);
        } else if long {
            self.loss_window = Some(report);
        }
        let rx_span = last_rx_us.saturating_sub(prev.last_rx_us);
        if rx_span >= 10_000 {
            self.est.delivery =
                rx.bytes.saturating_sub(prev.rx.bytes) as f64 / (rx_span as f64 / 1e6);
            self.est.delivered_max = windowed_max(&mut self.max_window, now, self.est.delivery);
            // Delivered while every probe found a queue: the path ran at
            // capacity. Not when the report's span of arrivals is longer
            // than a busy path's reports cover (reports go only once data
            // came in, so a pause in the arrivals lengthens the span): a
            // sender stalled in a retransmission timeout after it
            // overflowed the queue left one probe that saw the queue, and
            // a capacity of 1.2 Mbit/s on a 50 Mbit/s uplink held it to
            // that for ten seconds. A pause shorter than half a report
            // interval goes unseen.
            let continuous = rx_span <= micros(self.busy_span).unsigned_abs();
            let standing = self.standing.take() == Some(true) && continuous;
            let capacity = if !standing {
                current_max(&mut self.capacity_window, now)
            } else {
                Some(windowed_max(
                    &mut self.capacity_window,
                    now,
                    self.est.delivery,
                ))
            };
            let rate = match self.hint {
                // The hint is an upper bound: a path measured clearly
                // slower (past the measurement's noise, MATCHED_RATE)
                // plans at what it delivers, or more while it takes all
                // it is given.
                Some(hint) => {
                    self.est.capacity = capacity;
                    match capacity {
                        Some(c) if c * MATCHED_RATE < hint => {
                            self.measured_rate(now, c, standing).min(hint)
                        }
                        _ => hint,
                    }
                }
                None => self.planning_rate(now, capacity),
            };
            self.replan(now, rate);
        }
    }

    /// Plans with `rate` from now on. The modelled queue holds bytes, not
    /// time: it is rescaled, so a queue modelled at a low guess does not
    /// linger once the path is found faster.
    fn replan(&mut self, now: Instant, rate: f64) {
        if self.busy_until.is_some() {
            let backlog = self.backlog(now);
            self.move_model(now, now + backlog.mul_f64(self.est.rate / rate));
        }
        self.est.rate = rate;
    }

    /// The rate to plan with, unhinted: the capacity measured under a
    /// standing queue when there is one lately; else the current plan,
    /// raised by [`PROBE_GAIN`] when the model was the flow's limit and the
    /// measured queue stayed short. (Not raised past a measured capacity:
    /// in multiwan case b that put link 1's model behind its queue, and
    /// slow start overflowed it before link 2 took a share, 8.3 Mbit/s
    /// against 56.8.)
    fn planning_rate(&mut self, now: Instant, capacity: Option<f64>) -> f64 {
        self.est.capacity = capacity;
        match capacity {
            Some(capacity) => capacity.max(MIN_RATE),
            None => self.probed_rate(now),
        }
    }

    /// The rate a hinted path measured clearly below its hint plans with:
    /// the capacity, when this report's span found the queue standing or
    /// the path was congested lately; otherwise no less than it, and
    /// raised as [`Lane::probed_rate`] raises an unmeasured path's while
    /// the path takes all it is given (the caller caps it at the hint).
    /// A hint that is too high is thus tried again about once a
    /// congestion grace (a second), for a report or two. A capacity
    /// measured too low would otherwise hold the path to it until the
    /// measure aged out, ten seconds later, since a path planned below its
    /// capacity never builds the queue that would measure it again
    /// (`tl-bench multiwan` with hints: 1.2 Mbit/s on a 50 Mbit/s uplink,
    /// the flow on the 25 Mbit/s one).
    fn measured_rate(&self, now: Instant, capacity: f64, standing: bool) -> f64 {
        let rate = if standing || self.congested_lately(now) {
            capacity
        } else {
            self.probed_rate(now).max(capacity)
        };
        rate.max(MIN_RATE)
    }

    /// The current plan, raised by [`PROBE_GAIN`] when the model was the
    /// flow's limit and the measured queue stayed short.
    fn probed_rate(&self, now: Instant) -> f64 {
        let rate = self.est.rate;
        let limited = self
            .model_busy_at
            .is_some_and(|at| now.saturating_duration_since(at) < MAX_MODEL_QUEUE);
        if limited && !self.congested_lately(now) {
            rate * PROBE_GAIN
        } else {
            rate
        }
    }

    /// When a packet of `len` bytes sent now would arrive, relative to the
    /// association's reference delay; `delay` is this path's forward delay
    /// above the fastest path's, `rate` the one planned with.
    fn arrival(&self, now: Instant, len: usize, delay: Duration, rate: f64) -> Instant {
        self.start(now) + service(len, rate) + delay
    }

    /// When a packet sent now would start to leave the bottleneck: after
    /// the modelled queue, as probes correct it (see [`Lane::correct`]).
    fn start(&self, now: Instant) -> Instant {
        self.busy_until.map_or(now, |b| b.max(now))
    }

    /// The modelled queue ahead of a packet sent now.
    fn backlog(&self, now: Instant) -> Duration {
        self.busy_until
            .map_or(Duration::ZERO, |b| b.saturating_duration_since(now))
    }

    /// Sets the modelled queue to the latest measured one, unless the rate
    /// is known: for a path that carries alone, the model is compared with
    /// nothing, and one kept at a guessed rate would mistime the first spill
    /// once another path is eligible.
    fn ground(&mut self, now: Instant) {
        // Not a move counted against probes in flight: the model is the
        // measure here, reset at every packet, and what was charged since
        // a probe left would count as moved.
        if !self.est.rate_known() {
            self.busy_until = Some(now + self.last_queue);
            self.grounded_at = Some(now);
        }
    }

    fn sent(&mut self, now: Instant, len: usize, rate: f64) {
        if self.backlog(now) >= MODEL_BUSY {
            self.model_busy_at = Some(now);
        }
        self.grounded = self.grounded_at == Some(now);
        let until = self.start(now) + service(len, rate);
        self.busy_until = Some(until);
        // However wrong the estimate, one path alone never gets a model
        // queue it could not drain in a moment once corrected.
        if until > now + MAX_MODEL_QUEUE * 2 {
            self.move_model(now, until);
        }
    }
}

/// Adds `sample` to a maximum kept over this window and the previous one
/// ([`MAX_WINDOW`] each) and returns that maximum.
fn windowed_max(
    window: &mut Option<(Instant, f64, Option<f64>)>,
    now: Instant,
    sample: f64,
) -> f64 {
    let w = window.get_or_insert((now, 0.0, None));
    if now.saturating_duration_since(w.0) >= MAX_WINDOW {
        *w = (now, 0.0, Some(w.1));
    }
    w.1 = w.1.max(sample);
    w.2.map_or(w.1, |prev| prev.max(w.1))
}

/// The maximum such a window holds at `now` without a new sample, if its
/// samples are recent enough (none older than two windows).
fn current_max(window: &mut Option<(Instant, f64, Option<f64>)>, now: Instant) -> Option<f64> {
    let w = window.as_mut()?;
    let age = now.saturating_duration_since(w.0);
    if age >= MAX_WINDOW * 2 {
        *window = None;
        return None;
    }
    if age >= MAX_WINDOW {
        *w = (now, 0.0, Some(w.1));
    }
    let max = w.2.map_or(w.1, |prev| prev.max(w.1));
    (max > 0.0).then_some(max)
}

/// How often a receiver reports on a path carrying data: at its ticks, a
/// probe interval apart, once a report interval has passed.
fn report_cadence(config: &SchedulerConfig) -> Duration {
    let tick = config.active_probe_interval.max(Duration::from_millis(1));
    let ticks = config
        .stats_interval
        .as_nanos()
        .div_ceil(tick.as_nanos())
        .max(1);
    tick * u32::try_from(ticks).unwrap_or(u32::MAX)
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn service(len: usize, rate: f64) -> Duration {
    Duration::from_secs_f64(len as f64 / rate.max(1.0))
}

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
            if let Some(end) = c.lane.busy_until {
                c.lane.move_model(now, end.checked_sub(by).unwrap_or(now));
            }
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
        if only.active {
            only.lane.ground(now);
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
    if let (Some((alone, _)), None) = (carrying.next(), carrying.next()) {
        candidates[alone].lane.ground(now);
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
