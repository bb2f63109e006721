//! One path's estimates and the model of its bottleneck queue: what the
//! scheduler knows of a path, and how probes and receiver reports keep it
//! true.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::super::path::Traffic;
use super::*;
use crate::time::WallClock;

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
const PROBE_BACKLOGS: usize = super::super::path::MAX_PENDING;
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
pub(super) const CLEAN_RUN: u32 = 64;
/// Loss below this is not held against a path: estimates are never exact,
/// and a small error on one of two matched paths would unbalance them (and
/// the reordering that follows costs TCP more than the loss).
pub(super) const LOSS_FLOOR: f64 = 0.02;

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
    /// whose probes all found a queue over 1 ms that the model held too
    /// (unhinted, no shorter than the model's; for a path of unknown rate
    /// carrying alone, whose model is the measure, past the delay's noise
    /// instead), and whose arrivals span at most one
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
    /// Lossy: its probe loss went past 2 %, and it has not answered 64
    /// probes (`CLEAN_RUN`) in a row since (hysteresis: a path losing a
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
    pub(super) fn lowered_for_loss(&self, rate: f64) -> f64 {
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
    /// Whether the latest pick set the model to the measured queue (see
    /// [`Lane::ground`]).
    pub(super) grounded: bool,
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
    /// standing queue, as [`Lane::on_timing`] judges it (`None`: no
    /// sample).
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

    /// Moves the modelled queue's end `by` earlier (never before `now`).
    pub(super) fn slide_model(&mut self, now: Instant, by: Duration) {
        if let Some(end) = self.busy_until {
            self.move_model(now, end.checked_sub(by).unwrap_or(now));
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
            // The rate may have become known since the last pick.
            grounded: self.grounded && !self.est.rate_known(),
        });
    }

    /// Moves the modelled queue's end to `to` (never before `now`) other
    /// than by charging data, and counts the move in
    /// [`Lane::adjusted_us`]. However wrong the estimates, the model never
    /// runs more than twice [`MAX_MODEL_QUEUE`] ahead.
    pub(super) fn move_model(&mut self, now: Instant, to: Instant) {
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
        let queue_us = sample.saturating_sub(min);
        if queue_us > micros(CONGESTED_QUEUE) {
            self.congested_at = Some(now);
        }
        self.last_queue = Duration::from_micros(queue_us.max(0).unsigned_abs());
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
        // decides, and only a queue past the delay's noise counts, twice
        // its mean deviation (this sample's included) above the standing
        // queue, at most a congested one (with the standing queue alone, the peer's ACK
        // path, given 2 to 10 Mbit/s, measured that and was held to it).
        let standing_us = micros(STANDING_QUEUE);
        let noise_us = standing_us
            .saturating_add(self.est.fwd_jitter_us.saturating_mul(2))
            .min(micros(CONGESTED_QUEUE));
        let queued = queue_us > standing_us
            && modelled.is_some_and(|(m, grounded)| {
                if grounded {
                    queue_us > noise_us
                } else {
                    m > standing_us && (self.est.hinted || queue_us >= m)
                }
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

    pub(super) fn queue_is_short(&self) -> bool {
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
    pub(super) fn replan(&mut self, now: Instant, rate: f64) {
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
    pub(super) fn arrival(&self, now: Instant, len: usize, delay: Duration, rate: f64) -> Instant {
        self.start(now) + service(len, rate) + delay
    }

    /// When a packet sent now would start to leave the bottleneck: after
    /// the modelled queue, as probes correct it (see [`Lane::correct`]).
    fn start(&self, now: Instant) -> Instant {
        self.busy_until.map_or(now, |b| b.max(now))
    }

    /// The modelled queue ahead of a packet sent now.
    pub(super) fn backlog(&self, now: Instant) -> Duration {
        self.busy_until
            .map_or(Duration::ZERO, |b| b.saturating_duration_since(now))
    }

    /// At each pick, whether the path carries `alone`: if so, and its rate
    /// is not known, sets the modelled queue to the latest measured one.
    /// For a path that carries alone, the model is compared with nothing,
    /// and one kept at a guessed rate would mistime the first spill once
    /// another path is eligible.
    pub(super) fn ground(&mut self, now: Instant, alone: bool) {
        self.grounded = alone && !self.est.rate_known();
        // Not a move counted against probes in flight: the model is the
        // measure here, reset at every packet, and what was charged since
        // a probe left would count as moved.
        if self.grounded {
            self.busy_until = Some(now + self.last_queue);
        }
    }

    pub(super) fn sent(&mut self, now: Instant, len: usize, rate: f64) {
        if self.backlog(now) >= MODEL_BUSY {
            self.model_busy_at = Some(now);
        }
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

pub(super) fn service(len: usize, rate: f64) -> Duration {
    Duration::from_secs_f64(len as f64 / rate.max(1.0))
}
