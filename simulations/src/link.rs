//! One direction of a link: delay, jitter, loss (independent or
//! Gilbert-Elliott bursts), rate with a drop-tail queue, MTU, duplication,
//! reordering, and down/up.
//!
//! The model is sans-IO: [`Link::transmit`] decides a packet's fate at the
//! moment it is sent and returns the arrival time; the world's event queue
//! does the rest. A packet in flight when the link goes down is lost: the
//! world compares the [`Link::generation`] at arrival with the one at send.

#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use transitloom_proto_core::rng::Rng;

/// Longest delay, jitter or reorder delay accepted: far beyond any real path,
/// and small enough that virtual-time arithmetic cannot overflow.
pub const MAX_DELAY: Duration = Duration::from_secs(24 * 3600);
/// Smallest MTU accepted (the IPv4 minimum, RFC 791).
pub const MIN_MTU: usize = 68;
/// Largest MTU accepted (the largest UDP payload length field).
pub const MAX_MTU: usize = 65_535;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// How a link loses packets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Loss {
    /// No random loss.
    None,
    /// Each packet lost independently with this probability.
    Independent(f64),
    /// A two-state Markov chain (starting good), stepped once per packet,
    /// then a loss draw with the new state's probability: bursty loss.
    GilbertElliott {
        /// Chance per packet of moving from the good to the bad state.
        p_good_to_bad: f64,
        /// Chance per packet of moving from the bad to the good state.
        p_bad_to_good: f64,
        /// Loss probability in the good state.
        loss_good: f64,
        /// Loss probability in the bad state.
        loss_bad: f64,
    },
}

impl Loss {
    /// The long-run fraction of packets lost (the chain's stationary mix).
    pub fn mean(&self) -> f64 {
        match *self {
            Loss::None => 0.0,
            Loss::Independent(p) => p,
            Loss::GilbertElliott {
                p_good_to_bad,
                p_bad_to_good,
                loss_good,
                loss_bad,
            } => {
                let flow = p_good_to_bad + p_bad_to_good;
                if flow == 0.0 {
                    // Never leaves the initial (good) state.
                    return loss_good;
                }
                let bad = p_good_to_bad / flow;
                bad * loss_bad + (1.0 - bad) * loss_good
            }
        }
    }
}

/// The parameters of one direction of a link.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkParams {
    /// One-way propagation delay.
    pub delay: Duration,
    /// Extra delay drawn uniformly in `[0, jitter]` per packet; it never
    /// reorders on its own (arrivals are kept in FIFO order).
    pub jitter: Duration,
    /// Random loss.
    pub loss: Loss,
    /// Line rate in bit/s; `None` is unlimited (no serialization delay).
    pub rate_bps: Option<u64>,
    /// Drop-tail limit on the bytes waiting for serialization.
    pub queue_bytes: usize,
    /// Packets (UDP payload length) longer than this are dropped.
    pub mtu: usize,
    /// Probability that a packet is delivered twice.
    pub duplicate: f64,
    /// Probability that a packet gets `reorder_delay` extra and escapes FIFO order.
    pub reorder: f64,
    /// Extra delay of a reordered packet.
    pub reorder_delay: Duration,
}

impl LinkParams {
    /// A perfect link: no delay, loss, rate limit, duplication or reordering.
    pub fn ideal() -> Self {
        Self {
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: Loss::None,
            rate_bps: None,
            queue_bytes: 1 << 20,
            mtu: MAX_MTU,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::ZERO,
        }
    }

    /// Checks that the parameters describe a possible link.
    ///
    /// # Errors
    ///
    /// The first parameter found out of range, named in the message.
    pub fn validate(&self) -> Result<(), LinkError> {
        match self.loss {
            Loss::None => {}
            Loss::Independent(p) => probability("loss", p)?,
            Loss::GilbertElliott {
                p_good_to_bad,
                p_bad_to_good,
                loss_good,
                loss_bad,
            } => {
                probability("Gilbert-Elliott p_good_to_bad", p_good_to_bad)?;
                probability("Gilbert-Elliott p_bad_to_good", p_bad_to_good)?;
                probability("Gilbert-Elliott loss_good", loss_good)?;
                probability("Gilbert-Elliott loss_bad", loss_bad)?;
            }
        }
        probability("duplicate", self.duplicate)?;
        probability("reorder", self.reorder)?;
        for (name, value) in [
            ("delay", self.delay),
            ("jitter", self.jitter),
            ("reorder_delay", self.reorder_delay),
        ] {
            if value > MAX_DELAY {
                return Err(LinkError::TooLong { name, value });
            }
        }
        if !(MIN_MTU..=MAX_MTU).contains(&self.mtu) {
            return Err(LinkError::Mtu(self.mtu));
        }
        if let Some(rate) = self.rate_bps {
            if rate == 0 {
                return Err(LinkError::ZeroRate);
            }
            if self.queue_bytes < self.mtu {
                return Err(LinkError::QueueBelowMtu {
                    queue_bytes: self.queue_bytes,
                    mtu: self.mtu,
                });
            }
        }
        if self.reorder > 0.0 && self.reorder_delay.is_zero() {
            return Err(LinkError::ZeroReorderDelay(self.reorder));
        }
        Ok(())
    }
}

impl Default for LinkParams {
    fn default() -> Self {
        Self::ideal()
    }
}

fn probability(name: &'static str, value: f64) -> Result<(), LinkError> {
    // `contains` is false for NaN, so NaN is rejected too.
    if (0.0..=1.0).contains(&value) {
        Ok(())
    } else {
        Err(LinkError::Probability { name, value })
    }
}

/// Why link parameters were rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// A probability that is not a number in `[0, 1]`.
    #[error("link {name} probability {value} is outside [0, 1]")]
    Probability {
        /// Which probability.
        name: &'static str,
        /// The value given.
        value: f64,
    },
    /// An MTU outside what IP and UDP allow.
    #[error("link mtu {0} is outside [{MIN_MTU}, {MAX_MTU}]")]
    Mtu(usize),
    /// A rate of zero (use `None` for unlimited).
    #[error("link rate_bps must be positive when set (None means unlimited)")]
    ZeroRate,
    /// A queue that could never hold a full-size packet.
    #[error("link queue_bytes {queue_bytes} is below the mtu {mtu}: a full-size packet could never be queued")]
    QueueBelowMtu {
        /// The queue limit given.
        queue_bytes: usize,
        /// The MTU given.
        mtu: usize,
    },
    /// Reordering asked for with no extra delay to reorder by.
    #[error("link reorder_delay must be positive when the reorder probability is {0}")]
    ZeroReorderDelay(f64),
    /// A delay beyond [`MAX_DELAY`].
    #[error("link {name} {value:?} is longer than the {MAX_DELAY:?} limit")]
    TooLong {
        /// Which delay.
        name: &'static str,
        /// The value given.
        value: Duration,
    },
}

/// Why a link dropped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DropReason {
    /// The link is down.
    Down,
    /// Longer than the MTU.
    Mtu,
    /// The drop-tail queue was full.
    Queue,
    /// Random loss (after it consumed its share of the line).
    Loss,
}

/// What becomes of a packet handed to [`Link::transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fate {
    /// Never arrives.
    Dropped(DropReason),
    /// Arrives at `at` (unless the link goes down first); a duplicate copy,
    /// if any, arrives at the same instant.
    Delivered {
        /// Arrival time.
        at: Instant,
        /// Arrival time of the duplicate copy.
        duplicate_at: Option<Instant>,
    },
}

/// Counters of one link direction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets handed to [`Link::transmit`].
    pub offered: u64,
    /// Packets given an arrival time (duplicate copies not included).
    pub delivered: u64,
    /// Extra duplicate copies given an arrival time.
    pub duplicated: u64,
    /// Dropped because the link was down.
    pub dropped_down: u64,
    /// Dropped for exceeding the MTU.
    pub dropped_mtu: u64,
    /// Dropped by the full drop-tail queue.
    pub dropped_queue: u64,
    /// Lost at random.
    pub dropped_loss: u64,
    /// Bytes of delivered packets (duplicate copies not included).
    pub bytes_delivered: u64,
}

/// Independent random streams, one per effect, so that changing one
/// parameter (say duplication) leaves the others' draws (say loss) unchanged.
#[derive(Debug, Clone)]
struct Streams {
    loss: Rng,
    jitter: Rng,
    reorder: Rng,
    duplicate: Rng,
}

/// One direction of a link.
#[derive(Debug, Clone)]
pub struct Link {
    params: LinkParams,
    streams: Streams,
    up: bool,
    generation: u64,
    /// When the line finishes serializing everything accepted so far.
    busy_until: Option<Instant>,
    /// The latest arrival of a non-reordered packet: later ones never arrive
    /// before it, so jitter alone does not reorder.
    fifo_floor: Option<Instant>,
    /// Gilbert-Elliott state.
    bad: bool,
    stats: LinkStats,
}

impl Link {
    /// A link that is up, with an empty queue, drawing from `rng`.
    ///
    /// # Errors
    ///
    /// When `params` fail [`LinkParams::validate`].
    pub fn new(params: LinkParams, mut rng: Rng) -> Result<Self, LinkError> {
        params.validate()?;
        let streams = Streams {
            loss: rng.fork(),
            jitter: rng.fork(),
            reorder: rng.fork(),
            duplicate: rng.fork(),
        };
        Ok(Self {
            params,
            streams,
            up: true,
            generation: 0,
            busy_until: None,
            fifo_floor: None,
            bad: false,
            stats: LinkStats::default(),
        })
    }

    /// The current parameters.
    pub fn params(&self) -> &LinkParams {
        &self.params
    }

    /// Changes the parameters; packets already accepted keep their fates,
    /// and the queue backlog carries over at the new rate.
    ///
    /// # Errors
    ///
    /// When `params` fail [`LinkParams::validate`]; nothing changes then.
    pub fn set_params(&mut self, params: LinkParams) -> Result<(), LinkError> {
        params.validate()?;
        if params.rate_bps.is_none() {
            // An unlimited line has no backlog; a later rate starts empty.
            self.busy_until = None;
        }
        self.params = params;
        Ok(())
    }

    /// Takes the link down or up; going down loses everything in flight or
    /// queued (a new [`generation`](Self::generation)).
    pub fn set_up(&mut self, up: bool) {
        if self.up && !up {
            self.generation += 1;
            self.busy_until = None;
            self.fifo_floor = None;
        }
        self.up = up;
    }

    /// Whether the link is up.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Increases each time the link goes down: a packet whose send generation
    /// differs at arrival was lost in flight.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The counters so far.
    pub fn stats(&self) -> &LinkStats {
        &self.stats
    }

    /// Sends a packet of `len` bytes at `now`: dropped, or when it arrives.
    pub fn transmit(&mut self, now: Instant, len: usize) -> Fate {
        self.stats.offered += 1;
        if !self.up {
            self.stats.dropped_down += 1;
            return Fate::Dropped(DropReason::Down);
        }
        if len > self.params.mtu {
            self.stats.dropped_mtu += 1;
            return Fate::Dropped(DropReason::Mtu);
        }
        let sent = match self.params.rate_bps {
            None => now,
            Some(rate) => {
                let start = self.busy_until.filter(|&b| b > now).unwrap_or(now);
                let waiting = backlog_bytes(start - now, rate);
                if waiting + len as u128 > self.params.queue_bytes as u128 {
                    self.stats.dropped_queue += 1;
                    return Fate::Dropped(DropReason::Queue);
                }
                let end = start + serialization(len, rate);
                self.busy_until = Some(end);
                end
            }
        };
        // Every admitted packet draws from every stream, so each stream's
        // sequence depends only on the packet count, not on other effects.
        let lost = self.draw_loss();
        let jitter = self.draw_jitter();
        let reordered = self.streams.reorder.chance(self.params.reorder);
        let duplicated = self.streams.duplicate.chance(self.params.duplicate);
        if lost {
            self.stats.dropped_loss += 1;
            return Fate::Dropped(DropReason::Loss);
        }
        let base = sent + self.params.delay + jitter;
        let at = if reordered {
            // Escapes FIFO order and leaves the floor alone, so the packets
            // after it overtake it.
            base + self.params.reorder_delay
        } else {
            let at = self.fifo_floor.map_or(base, |floor| base.max(floor));
            self.fifo_floor = Some(at);
            at
        };
        self.stats.delivered += 1;
        self.stats.bytes_delivered += len as u64;
        let duplicate_at = duplicated.then(|| {
            self.stats.duplicated += 1;
            at
        });
        Fate::Delivered { at, duplicate_at }
    }

    fn draw_loss(&mut self) -> bool {
        let rng = &mut self.streams.loss;
        match self.params.loss {
            Loss::None => false,
            Loss::Independent(p) => rng.chance(p),
            Loss::GilbertElliott {
                p_good_to_bad,
                p_bad_to_good,
                loss_good,
                loss_bad,
            } => {
                let flip = if self.bad {
                    p_bad_to_good
                } else {
                    p_good_to_bad
                };
                if rng.chance(flip) {
                    self.bad = !self.bad;
                }
                rng.chance(if self.bad { loss_bad } else { loss_good })
            }
        }
    }

    fn draw_jitter(&mut self) -> Duration {
        // Bounded by MAX_DELAY (validated), so the nanoseconds fit a u64.
        let max = self.params.jitter.as_nanos() as u64;
        if max == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.streams.jitter.range(0, max + 1))
    }
}

/// Time to put `len` bytes on a line of `rate` bit/s, rounded up to the
/// nanosecond so a saturated line never exceeds its rate.
pub fn serialization(len: usize, rate: u64) -> Duration {
    let bits = len as u128 * 8 * NANOS_PER_SEC;
    let nanos = bits.div_ceil(u128::from(rate));
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Bytes a line of `rate` bit/s serializes in `time` (rounded down).
fn backlog_bytes(time: Duration, rate: u64) -> u128 {
    time.as_nanos() * u128::from(rate) / (8 * NANOS_PER_SEC)
}
