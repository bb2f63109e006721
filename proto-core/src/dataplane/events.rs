//! What happened to an association's paths lately, for operators
//! (`transitloom-node explain`; DESIGN §8: every decision is explainable).
//!
//! The history is kept by observation rather than by a hook at every
//! change: after anything that may move a path (a pong that validates it, a
//! liveness check that fails it, an uplink's address coming or going) and
//! at every probe and tick, the data plane compares the association with
//! what it was at the previous observation and records the differences,
//! stamped with wall-clock time. The scheduler's choices computed there are
//! kept too, so status reads them without touching the scheduler.
//!
//! The history is a ring of [`HISTORY_LEN`] events: an association that
//! flaps forgets its oldest events, never grows.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::association::PathChoice;
use super::path::{Path, PathState};
use super::scheduler::Reason;
use super::DataPlane;
use crate::id::{AssocId, PathId, UplinkId};

/// Events kept per association.
pub const HISTORY_LEN: usize = 32;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum PathEventKind {
    /// A path to a new remote address (a candidate from the coordinator,
    /// or an address the peer's authentic packets came from).
    Added,
    /// Its first authentic pong, or the first since it failed: it may
    /// carry data.
    Validated {
        /// The smoothed round trip then.
        rtt: Duration,
    },
    /// An active path stopped answering.
    Failed {
        /// How long it had gone without an answered probe when it was
        /// declared failed: the time detection took.
        silent_for: Option<Duration>,
    },
    /// Taken out of the path table: its uplink went down, or its slot was
    /// needed for a new address.
    Removed {
        /// It was active until then.
        was_active: bool,
    },
    /// The scheduler started to place data on it.
    StartedCarrying,
    /// The scheduler stopped placing data on it.
    StoppedCarrying {
        /// Why.
        reason: Reason,
    },
    /// An active path the scheduler leaves out, or leaves out for another
    /// reason than before.
    HeldBack {
        /// Why.
        reason: Reason,
    },
    /// The uplink lost its address: its mesh socket closed.
    UplinkDown,
    /// The uplink has an address again: its mesh socket is bound anew.
    UplinkUp,
}

impl PathEventKind {
    /// The one-word name status JSON uses.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Validated { .. } => "validated",
            Self::Failed { .. } => "failed",
            Self::Removed { .. } => "removed",
            Self::StartedCarrying => "carrying",
            Self::StoppedCarrying { .. } => "stopped-carrying",
            Self::HeldBack { .. } => "held-back",
            Self::UplinkDown => "uplink-down",
            Self::UplinkUp => "uplink-up",
        }
    }
}

impl fmt::Display for PathEventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        match self {
            Self::Added => f.write_str("new path: probing"),
            Self::Validated { rtt } => write!(f, "validated (rtt {:.2} ms)", ms(*rtt)),
            Self::Failed {
                silent_for: Some(d),
            } => write!(
                f,
                "failed: no probe answered for {:.0} ms (detection time)",
                ms(*d)
            ),
            Self::Failed { silent_for: None } => f.write_str("failed: no probe was ever answered"),
            Self::Removed { was_active: true } => {
                f.write_str("removed while active: data moved to the other paths at once")
            }
            Self::Removed { was_active: false } => f.write_str("removed"),
            Self::StartedCarrying => f.write_str("started carrying data"),
            Self::StoppedCarrying { reason } => {
                write!(f, "stopped carrying data: {}", reason.as_str())
            }
            Self::HeldBack { reason } => write!(f, "held back: {}", reason.as_str()),
            Self::UplinkDown => f.write_str("uplink down: its mesh socket closed"),
            Self::UplinkUp => f.write_str("uplink up: its mesh socket is bound again"),
        }
    }
}

/// One event of an association's history.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PathEvent {
    /// When, in wall-clock microseconds since the Unix epoch.
    pub at_unix_us: u64,
    /// The uplink (of the path, or the one that changed).
    pub uplink: UplinkId,
    /// The path; `None` for an uplink's own events.
    pub path: Option<PathId>,
    /// The path's remote address.
    pub remote: Option<SocketAddr>,
    /// What happened.
    pub kind: PathEventKind,
}

/// A path as last observed.
#[derive(Debug, Clone, Copy)]
struct Seen {
    uplink: UplinkId,
    remote: SocketAddr,
    state: PathState,
    reason: Option<Reason>,
}

/// The bounded history of one association, and the scheduler's choices at
/// the last observation.
#[derive(Debug, Clone, Default)]
pub struct PathHistory {
    events: VecDeque<PathEvent>,
    recorded: u64,
    seen: BTreeMap<PathId, Seen>,
    /// Uplinks with a mesh socket at the last observation; `None` before
    /// the first, which records no uplink event.
    uplinks: Option<BTreeSet<UplinkId>>,
    choices: Vec<PathChoice>,
    observed_at_us: Option<u64>,
}

impl PathHistory {
    /// The events kept, oldest first.
    pub fn events(&self) -> impl DoubleEndedIterator<Item = &PathEvent> + ExactSizeIterator + '_ {
        self.events.iter()
    }

    /// Events recorded since the association was installed (those beyond
    /// [`HISTORY_LEN`] are forgotten).
    pub fn recorded(&self) -> u64 {
        self.recorded
    }

    /// Each path's share and reason at the last observation, in path-table
    /// order.
    pub fn choices(&self) -> &[PathChoice] {
        &self.choices
    }

    /// The choice of one path at the last observation.
    pub fn choice(&self, path: PathId) -> Option<&PathChoice> {
        self.choices.iter().find(|c| c.path == path)
    }

    /// When the last observation was made (wall-clock microseconds).
    pub fn observed_at_us(&self) -> Option<u64> {
        self.observed_at_us
    }

    fn push(&mut self, event: PathEvent) {
        if self.events.len() == HISTORY_LEN {
            self.events.pop_front();
        }
        self.events.push_back(event);
        self.recorded += 1;
    }

    /// Compares the association now (`mesh`: uplinks with a mesh socket;
    /// its paths; the scheduler's `choices` for them) with the previous
    /// observation and records what changed at `at_unix_us`.
    pub(crate) fn observe<'a>(
        &mut self,
        at_unix_us: u64,
        now: Instant,
        mesh: BTreeSet<UplinkId>,
        paths: impl Iterator<Item = &'a Path>,
        choices: Vec<PathChoice>,
    ) {
        let event = |uplink, path: Option<&Path>, kind| PathEvent {
            at_unix_us,
            uplink,
            path: path.map(|p| p.id),
            remote: path.map(|p| p.remote),
            kind,
        };
        let previous_uplinks = self.uplinks.replace(mesh.clone());
        let previous_uplinks = previous_uplinks.unwrap_or_else(|| mesh.clone());
        for &uplink in previous_uplinks.difference(&mesh) {
            self.push(event(uplink, None, PathEventKind::UplinkDown));
        }
        let mut seen = BTreeMap::new();
        let mut changes = Vec::new();
        for path in paths {
            // Addresses that only sent data are noise until they prove the
            // key (a spoofed flood must not wash the history out).
            if path.unproven {
                continue;
            }
            let reason = choices.iter().find(|c| c.path == path.id).map(|c| c.reason);
            let before = self.seen.remove(&path.id);
            if before.is_none() {
                changes.push(event(path.uplink, Some(path), PathEventKind::Added));
            }
            let state_before = before.map_or(PathState::Probing, |b| b.state);
            match (state_before, path.state) {
                (PathState::Active, PathState::Active) => {}
                (_, PathState::Active) => changes.push(event(
                    path.uplink,
                    Some(path),
                    PathEventKind::Validated {
                        rtt: path.srtt.unwrap_or_default(),
                    },
                )),
                (PathState::Active, PathState::Failed) => {
                    let silent_for = path.last_pong.map(|at| now.saturating_duration_since(at));
                    changes.push(event(
                        path.uplink,
                        Some(path),
                        PathEventKind::Failed { silent_for },
                    ));
                }
                _ => {}
            }
            let reason_before = before.and_then(|b| b.reason);
            let carrying = |r: Option<Reason>| r == Some(Reason::Carrying);
            let kind = match reason {
                Some(Reason::Carrying) if !carrying(reason_before) => {
                    Some(PathEventKind::StartedCarrying)
                }
                Some(Reason::Carrying) => None,
                Some(reason) if carrying(reason_before) => {
                    Some(PathEventKind::StoppedCarrying { reason })
                }
                Some(reason)
                    if path.state == PathState::Active && reason_before != Some(reason) =>
                {
                    Some(PathEventKind::HeldBack { reason })
                }
                _ => None,
            };
            if let Some(kind) = kind {
                changes.push(event(path.uplink, Some(path), kind));
            }
            seen.insert(
                path.id,
                Seen {
                    uplink: path.uplink,
                    remote: path.remote,
                    state: path.state,
                    reason,
                },
            );
        }
        // What is left of the previous observation is gone from the table.
        for (id, gone) in std::mem::replace(&mut self.seen, seen) {
            self.push(PathEvent {
                at_unix_us,
                uplink: gone.uplink,
                path: Some(id),
                remote: Some(gone.remote),
                kind: PathEventKind::Removed {
                    was_active: gone.state == PathState::Active,
                },
            });
        }
        for &uplink in mesh.difference(&previous_uplinks) {
            self.push(event(uplink, None, PathEventKind::UplinkUp));
        }
        for change in changes {
            self.push(change);
        }
        self.choices = choices;
        self.observed_at_us = Some(at_unix_us);
    }
}

impl DataPlane {
    /// Records what changed in association `id` since its last observation
    /// (see the module docs).
    pub(super) fn observe(&mut self, now: Instant, id: AssocId) {
        let fresh = self.config.probe_interval * 2;
        let at = self.config.wall_clock.unix_us(now);
        let Some(assoc) = self.assocs.get_mut(&id) else {
            return;
        };
        let choices = assoc.choices(now, fresh);
        let mesh = assoc.mesh.keys().copied().collect();
        assoc
            .history
            .observe(at, now, mesh, assoc.paths.values(), choices);
    }
}

#[cfg(test)]
mod tests {
    use super::super::scheduler::SchedulerConfig;
    use super::super::UplinkPolicy;
    use super::*;

    fn path(id: u32, uplink: u16, remote: &str) -> Path {
        Path::new(
            PathId(id),
            UplinkId(uplink),
            remote.parse().unwrap(),
            &UplinkPolicy::default(),
            &SchedulerConfig::default(),
        )
    }

    fn choice(id: u32, reason: Reason) -> PathChoice {
        PathChoice {
            path: PathId(id),
            weight: if reason == Reason::Carrying { 1.0 } else { 0.0 },
            reason,
        }
    }

    fn kinds(h: &PathHistory) -> Vec<(Option<u32>, &'static str)> {
        h.events()
            .map(|e| (e.path.map(|p| p.0), e.kind.code()))
            .collect()
    }

    fn uplinks(ids: &[u16]) -> BTreeSet<UplinkId> {
        ids.iter().map(|&u| UplinkId(u)).collect()
    }

    #[test]
    fn changes_are_recorded_once_with_their_reasons_and_detection_time() {
        let t0 = crate::test_epoch();
        let ms = Duration::from_millis;
        let mut h = PathHistory::default();
        let mut a = path(0, 0, "192.0.2.1:1");
        let mut b = path(1, 1, "192.0.2.1:1");
        let both = uplinks(&[0, 1]);
        let waiting = vec![
            choice(0, Reason::NotValidated),
            choice(1, Reason::NotValidated),
        ];
        h.observe(
            1_000,
            t0,
            both.clone(),
            [&a, &b].into_iter(),
            waiting.clone(),
        );
        assert_eq!(kinds(&h), [(Some(0), "added"), (Some(1), "added")]);
        // Nothing changed: nothing recorded.
        h.observe(2_000, t0, both.clone(), [&a, &b].into_iter(), waiting);
        assert_eq!(h.recorded(), 2);

        a.on_probe(1, t0);
        a.on_pong(1, t0 + ms(10)).unwrap();
        b.on_probe(2, t0);
        b.on_pong(2, t0 + ms(40)).unwrap();
        let choices = vec![choice(0, Reason::Carrying), choice(1, Reason::Slow)];
        h.observe(
            3_000,
            t0 + ms(40),
            both.clone(),
            [&a, &b].into_iter(),
            choices.clone(),
        );
        // Carrying on, and held back for the same reason: nothing new.
        h.observe(
            3_500,
            t0 + ms(45),
            both.clone(),
            [&a, &b].into_iter(),
            choices,
        );
        assert_eq!(h.recorded(), 6);
        let tail: Vec<_> = h.events().skip(2).map(|e| e.kind).collect();
        assert_eq!(
            tail,
            [
                PathEventKind::Validated { rtt: ms(10) },
                PathEventKind::StartedCarrying,
                PathEventKind::Validated { rtt: ms(40) },
                PathEventKind::HeldBack {
                    reason: Reason::Slow
                },
            ]
        );
        assert_eq!(h.choice(PathId(1)).unwrap().reason, Reason::Slow);

        // Path 0 stops answering 300 ms after its last pong; path 1 takes over.
        a.on_probe(3, t0 + ms(100));
        assert!(a.fail());
        let choices = vec![choice(0, Reason::NotValidated), choice(1, Reason::Carrying)];
        h.observe(4_000, t0 + ms(310), both, [&a, &b].into_iter(), choices);
        let tail: Vec<_> = h.events().skip(6).map(|e| (e.path, e.kind)).collect();
        assert_eq!(
            tail,
            [
                (
                    Some(PathId(0)),
                    PathEventKind::Failed {
                        silent_for: Some(ms(300))
                    }
                ),
                (
                    Some(PathId(0)),
                    PathEventKind::StoppedCarrying {
                        reason: Reason::NotValidated
                    }
                ),
                (Some(PathId(1)), PathEventKind::StartedCarrying),
            ]
        );
        assert!(h.events().all(|e| e.at_unix_us >= 1_000));
        assert_eq!(h.events().last().unwrap().at_unix_us, 4_000);
    }

    #[test]
    fn an_uplink_going_and_coming_back_is_recorded_with_its_paths() {
        let t0 = crate::test_epoch();
        let mut h = PathHistory::default();
        let mut a = path(0, 0, "192.0.2.1:1");
        let b = path(1, 1, "192.0.2.1:1");
        a.on_probe(1, t0);
        a.on_pong(1, t0).unwrap();
        let choices = vec![choice(0, Reason::Carrying), choice(1, Reason::NotValidated)];
        h.observe(1, t0, uplinks(&[0, 1]), [&a, &b].into_iter(), choices);
        // The first observation takes the uplinks as they are.
        assert!(!h.events().any(|e| e.kind == PathEventKind::UplinkUp));
        let before = h.recorded() as usize;
        h.observe(
            2,
            t0,
            uplinks(&[1]),
            [&b].into_iter(),
            vec![choice(1, Reason::NotValidated)],
        );
        h.observe(
            3,
            t0,
            uplinks(&[0, 1]),
            [&b].into_iter(),
            vec![choice(1, Reason::NotValidated)],
        );
        let tail: Vec<_> = h
            .events()
            .skip(before)
            .map(|e| (e.uplink.0, e.path, e.kind))
            .collect();
        assert_eq!(
            tail,
            [
                (0, None, PathEventKind::UplinkDown),
                (
                    0,
                    Some(PathId(0)),
                    PathEventKind::Removed { was_active: true }
                ),
                (0, None, PathEventKind::UplinkUp),
            ]
        );
    }

    #[test]
    fn the_history_is_bounded_and_skips_addresses_that_only_sent_data() {
        let t0 = crate::test_epoch();
        let mut h = PathHistory::default();
        let mut spoofed = path(0, 0, "203.0.113.9:1");
        spoofed.unproven = true;
        h.observe(0, t0, uplinks(&[0]), [&spoofed].into_iter(), Vec::new());
        assert_eq!(h.recorded(), 0);
        for round in 0..40u64 {
            // The uplink flaps: two events a round.
            let mesh = if round % 2 == 0 {
                uplinks(&[])
            } else {
                uplinks(&[0])
            };
            h.observe(round + 1, t0, mesh, std::iter::empty(), Vec::new());
        }
        assert_eq!(h.recorded(), 40);
        assert_eq!(h.events().len(), HISTORY_LEN);
        assert_eq!(h.events().next().unwrap().at_unix_us, 9, "oldest forgotten");
        assert_eq!(h.events().last().unwrap().at_unix_us, 40);
    }
}
